/* cudaemu_api.h — the C part of the stand-in CUDA headers of tests/cudaemu:
 * the runtime API types and calls (cudaError_t, cudaStream_t, memory copies
 * on host memory) and the emulator's own controls. Included by C and C++
 * alike, through cuda_runtime_api.h and cuda_runtime.h.
 *
 * In the emulation "device memory" is an arena of host memory
 * (CUDAEMU_DEVICE_MEM bytes, 1 GiB by default) that cudaMalloc carves up and
 * cudaMemGetInfo reports on; outside kernels, copies and the cuBLASLt
 * stand-in it is inaccessible to host code (not in AddressSanitizer builds),
 * so a device pointer dereferenced on the host faults, reported as such.
 * Every operation runs to completion before the call returns, so
 * synchronisation has nothing to wait for; but a stream being captured
 * (cudaStreamBeginCapture) records what is queued on it instead, into a
 * graph that cudaGraphLaunch replays, and refuses what CUDA refuses during a
 * capture (synchronising, cudaMalloc, cudaFree, synchronous copies from the
 * capturing thread unless it switched to relaxed mode).
 */
#ifndef ASK_CUDAEMU_API_H
#define ASK_CUDAEMU_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ASK_CUDAEMU 1

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidSymbol = 13,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchTimeout = 702,
  cudaErrorAssert = 710,
  cudaErrorMisalignedAddress = 716,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorIllegalState = 401,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureWrongThread = 908,
  cudaErrorUnknown = 999
} cudaError_t;

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef struct CUgraph_st *cudaGraph_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9
};
enum cudaSharedCarveout {
  cudaSharedmemCarveoutDefault = -1,
  cudaSharedmemCarveoutMaxShared = 100,
  cudaSharedmemCarveoutMaxL1 = 0
};

/* What cudaFuncGetAttributes reports (the fields kernels/cuda reads): the
 * emulator stands for the sm_90a build. */
struct cudaFuncAttributes {
  int ptxVersion, binaryVersion;
};

/* Shared memory a block may have at most (H100: 227 KiB, with
 * cudaFuncSetAttribute's MaxDynamicSharedMemorySize). */
#define ASK_EMU_SMEM_OPTIN 232448

#define cudaStreamNonBlocking 0x01
#define cudaStreamDefault 0x00

/* The fields of the device's properties that kernels/cuda reads (an H100
 * as the emulator stands for it; totalGlobalMem: the arena). */
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin;
  int major, minor, multiProcessorCount, warpSize, maxThreadsPerBlock;
};

enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2
};

cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t err);
const char *cudaGetErrorName(cudaError_t err);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemset(void *p, int v, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *status);
cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
/* Events (work runs when queued: an event is reached when recorded) and
 * page-locked host memory (plain host memory here). */
#define cudaEventDefault 0u
#define cudaEventDisableTiming 2u
#define cudaHostAllocDefault 0u
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *p);

/* ---- the emulator's own controls (tests) ---- */

/* The schedule of the threads of a block (a race-free kernel gives the same
 * results under every one; a missing __syncthreads usually does not):
 *   bit 0: threads released by a barrier run in ascending (0) or
 *          descending (1) thread index;
 *   bit 1: the lanes released by a warp collective wait behind the other
 *          runnable threads (0: every warp advances evenly), or go first
 *          (1: a warp runs ahead of the others up to its next __syncthreads);
 *   bit 2: the blocks of a grid run in ascending (0) or descending (1)
 *          order (a kernel whose blocks hand work to each other, such as
 *          "the last block merges", must not depend on which comes last).
 * 0 is the default, or CUDAEMU_ORDER from the environment. Returns the
 * previous schedule. */
int ask_emu_set_order(int order);
/* What went wrong in the last failed launch (deadlock, divergent barrier,
 * undefined shuffle, bad configuration, ...), or "" when none failed since
 * ask_emu_clear_error. */
const char *ask_emu_last_error(void);
void ask_emu_clear_error(void);
/* Statistics since the start: launches, blocks, thread resumptions. */
unsigned long long ask_emu_stat_launches(void);
unsigned long long ask_emu_stat_blocks(void);
unsigned long long ask_emu_stat_switches(void);
/* Name of the last kernel launched ("" before the first). */
const char *ask_emu_last_kernel(void);
/* Declares [p, p + bytes) (page-aligned, readable and writable) global
 * memory (add = 1) or no longer (add = 0). In a programmatic dependent
 * launch the first warp of block (0,0,0) runs with all of it inaccessible
 * until it passes griddepcontrol.wait: a kernel that reads or writes global
 * memory before its wait (a race with the kernel before it on the GPU)
 * faults there, and the fault is reported as such. At most 1024 ranges. */
void ask_emu_global(void *p, size_t bytes, int add);
/* Work of a library on the device (the cuBLASLt stand-in's matmul): runs
 * fn(arg) now with device memory accessible, or, while s is being
 * captured, records it (a copy of the `bytes` at arg) for the graph to run.
 * Returns cudaSuccess or why not. */
cudaError_t ask_emu_enqueue(cudaStream_t s, void (*fn)(void *arg), const void *arg,
                            size_t bytes);
/* Whether [p, p + bytes) lies inside one live cudaMalloc allocation. */
int ask_emu_is_device(const void *p, size_t bytes);
/* Bytes of device memory allocated now (the tests check for leaks). */
size_t ask_emu_device_used(void);

#ifdef __cplusplus
}
#endif

#endif /* ASK_CUDAEMU_API_H */

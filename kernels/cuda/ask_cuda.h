/* ask_cuda.h — the CUDA backend's own knobs, beside the ops table that
 * kernels.h declares (ask_cuda_ops). Included by tests and benchmarks that
 * need to steer or inspect the backend; the engine needs only kernels.h.
 * Everything here exists only in a build with AS_HAVE_CUDA.
 */
#ifndef ASK_CUDA_H
#define ASK_CUDA_H

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Why ask_cuda_ops() returned NULL ("cudaGetDeviceCount: no CUDA-capable
 * device is detected"), or "" when it did not. Initialises like it. */
const char *ask_cuda_unavailable(void);

/* matmul_bf16 uses the matrix-vector kernel for T <= rows (0: cuBLASLt
 * always; at most 16). Default 16, or ASK_CUDA_GEMV_ROWS from the
 * environment; build/bench_gemv (tests/gpu/bench_gemv.c) measures both
 * paths on the device and prints the value to use. Returns the previous
 * value. */
int ask_cuda_set_gemv_rows(int rows);

/* The decode fusions (norm_matmul_bf16, glu_matmul_bf16) run their fused
 * kernels for T <= rows where matmul_bf16 would use the matrix-vector
 * kernel, the separate ops otherwise (0: never fused; at most 16).
 * Default 16 (as far as gemv_rows goes), or ASK_CUDA_FUSE_ROWS from the
 * environment; build/bench_gemv times both and prints the value to use.
 * Returns the previous value. */
int ask_cuda_set_fuse_rows(int rows);

/* cuBLASLt plans (descriptors, layouts and the chosen algorithm) cached so
 * far, one per (dtype, T, K, N, bias, alignment). */
int ask_cuda_plan_count(void);

/* Programmatic dependent launch (kernels/cuda/common.cuh): on = 1 turns it
 * on where the start-up probe passed (a 9.0+ device, ASK_NO_PDL unset),
 * 0 off; kernels launched afterwards (and graphs captured afterwards)
 * follow. Returns the previous state. ask_cuda_pdl_state: "on", or why
 * it is off. */
int ask_cuda_set_pdl(int on);
const char *ask_cuda_pdl_state(void);

/* Device name and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)". */
const char *ask_cuda_device_name(void);

#ifdef __cplusplus
}
#endif

#endif /* ASK_CUDA_H */

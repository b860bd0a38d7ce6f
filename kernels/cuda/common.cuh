/* common.cuh — device helpers shared by the .cu files of kernels/cuda:
 * block reductions, bf16 loads and rounding, the activations and the launch
 * check. Internal.
 */
#ifndef ASK_CUDA_COMMON_CUH
#define ASK_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda_int.h"

/* Records a failed launch of `name` (the kernel's own launch errors: bad
 * configuration, no kernel image for this device), and that the stream's
 * last launch was not the attention's (ask__cu_after_attn). */
#define ASK__LAUNCHED(name)                                                                      \
  (ask__cu_after_attn = 0, ask__cu_check(cudaGetLastError(), "launch of " name))

/* ---- programmatic dependent launch (PDL, sm_90+) ---------------------------
 * Every kernel of kernels/cuda is launched with ASK__LAUNCH:
 *   ASK__LAUNCH(grid, block, smem, stream, kernel)(args...);
 * which, while ask__cu_pdl is set (backend.c: a device of compute
 * capability 9.0 or newer, ASK_NO_PDL unset, and a probe at start-up that
 * captured and ran two dependent launches), asks CUDA to let the kernel
 * start before the one before it in the stream has finished (the
 * cudaLaunchAttributeProgrammaticStreamSerialization attribute; kept in
 * captured graphs as programmatic edges). A decode step is a chain of ~130
 * short kernels at batch 1; without this every kernel pays the launch and
 * the drain of its predecessor's last blocks with HBM idle.
 *
 * The rule every kernel keeps, which makes this safe: each thread first
 * calls ask__pdl_start() (its successor may be scheduled as soon as every
 * block of this one has started), may then read memory that no kernel ever
 * writes (weights: the GEMVs send their first pieces to L2) or, where its
 * caller promises it, that nothing launched since the stream's last full
 * dependency writes (ASK_CUDA_ATTN_EARLY: the cache rows of earlier steps,
 * the step's copied inputs), and calls
 * ask__pdl_wait() (griddepcontrol.wait: returns when every kernel this one
 * depends on has completed and its writes are visible) before it reads
 * anything else or writes anything, and before it returns. Because each
 * kernel waits for its predecessor, a kernel's completion implies all
 * earlier kernels' completion, so waiting for the direct predecessor is
 * enough. tests/cudaemu checks that every thread of every launch passes
 * the wait. Without the attribute (ASK_NO_PDL=1, older devices) the wait
 * returns at once and launches serialise as usual. */
static __device__ __forceinline__ void ask__pdl_start(void) {
#if defined(ASK_CUDAEMU) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
static __device__ __forceinline__ void ask__pdl_wait(void) {
#if defined(ASK_CUDAEMU) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Both, for kernels with nothing to do before the wait. */
static __device__ __forceinline__ void ask__pdl_enter(void) {
  ask__pdl_start();
  ask__pdl_wait();
}

/* ASK__LAUNCH_COOP(grid, block, smem, stream, coop, kernel)(args...): the
 * same, as a cooperative launch when coop is set (every block resident at
 * once, or the launch fails: gemv_chain.cu's grid barrier). */
#ifdef ASK_CUDAEMU
#define ASK__LAUNCH(g, b, smem, s, ...)                                                          \
  ::ask_emu::make_launch_pdl(&__VA_ARGS__, #__VA_ARGS__, __FILE__, __LINE__, g, b, smem, s)
#define ASK__LAUNCH_COOP(g, b, smem, s, coop, ...)                                               \
  ((void)(coop), ::ask_emu::make_launch_pdl(&__VA_ARGS__, #__VA_ARGS__, __FILE__, __LINE__, g, \
                                            b, smem, s))
#else
template <class... P> struct ask__launcher {
  void (*k)(P...);
  const char *name;
  dim3 g, b;
  size_t smem;
  cudaStream_t s;
  int coop;
  template <class... A> void operator()(A &&...a) const {
    cudaLaunchAttribute at[2] = {};
    unsigned na = 0;
    if (ask__cu_pdl) {
      at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      at[na++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (coop) {
      at[na].id = cudaLaunchAttributeCooperative;
      at[na++].val.cooperative = 1;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = g;
    cfg.blockDim = b;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = na;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, static_cast<A &&>(a)...);
    if (e != cudaSuccess) {
      char what[160];
      snprintf(what, sizeof what, "launch of %.140s", name);
      ask__cu_check(e, what);
    }
  }
};
template <class... P>
static ask__launcher<P...> ask__launch(void (*k)(P...), const char *name, dim3 g, dim3 b,
                                       size_t smem, cudaStream_t s, int coop = 0) {
  return ask__launcher<P...>{k, name, g, b, smem, s, coop};
}
#define ASK__LAUNCH(g, b, smem, s, ...) ask__launch(__VA_ARGS__, #__VA_ARGS__, g, b, smem, s)
#define ASK__LAUNCH_COOP(g, b, smem, s, coop, ...)                                               \
  ask__launch(__VA_ARGS__, #__VA_ARGS__, g, b, smem, s, coop)
#endif

static __device__ __forceinline__ float ask__bf16f(uint16_t h) {
  return __uint_as_float((uint32_t)h << 16);
}

/* f32 -> bf16 bits, rounded to nearest even (as kernels/ref rounds). */
static __device__ __forceinline__ uint16_t ask__bf16_rn(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* The activations of kernels.h (ASK_ACT_*), written as kernels/ref/act.c.
 * The products and sums are rounded one by one (no fused multiply-add that
 * nvcc may or may not form, differently from kernel to kernel), so that
 * every kernel applying an activation (glu_rows, the fused gate/up
 * product, a chained phase, the staging of a fused down product) gives the
 * same bits for the same input. */
static __device__ __forceinline__ float ask__act(float x, int act) {
  switch (act) {
  case 1: { /* ASK_ACT_GELU_TANH */
    const float k = 0.7978845608028654f;
    const float c = __fmul_rn(__fmul_rn(__fmul_rn(0.044715f, x), x), x);
    return __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, tanhf(__fmul_rn(k, __fadd_rn(x, c)))));
  }
  case 2: /* ASK_ACT_GELU */
    return __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, erff(__fmul_rn(x, 0.7071067811865476f))));
  default: /* ASK_ACT_SILU */
    return __fdiv_rn(x, __fadd_rn(1.0f, expf(-x)));
  }
}

/* Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the total. sh holds 32 values; the block must not be inside a
 * divergent branch. */
template <typename V>
static __device__ __forceinline__ V ask__block_sum(V v, V *sh) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0)
    sh[wid] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : (V)0;
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename V>
static __device__ __forceinline__ V ask__block_max(V v, V *sh) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0)
    sh[wid] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : (V)-INFINITY;
  for (int o = 16; o > 0; o >>= 1)
    v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* The "last block" pattern: every thread of each of the n blocks sharing
 * counter cnt calls it once, after writing what the last one will read
 * (which that one should read through L2, __ldcg); true in the block that
 * came last, whose counter is then back at 0 for the next launch. The
 * writes are fenced before the ticket is taken. */
static __device__ __forceinline__ bool ask__last_block(unsigned *cnt, unsigned n) {
  __shared__ unsigned ticket;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0)
    ticket = atomicAdd(cnt, 1u);
  __syncthreads();
  if (ticket != n - 1)
    return false;
  __threadfence();
  if (threadIdx.x == 0)
    *cnt = 0u;
  return true;
}

/* Threads for a row of n elements: a multiple of 32 in [32, 1024]. */
static inline int ask__row_threads(int n) {
  int t = 32;
  while (t < 1024 && t < n)
    t <<= 1;
  return t;
}

/* Blocks for a grid-stride loop over n elements with 256 threads. */
static inline unsigned ask__grid(size_t n) {
  size_t b = (n + 255) / 256;
  return (unsigned)(b < 1 ? 1 : b > 65535 * 8 ? 65535 * 8 : b);
}

#endif /* ASK_CUDA_COMMON_CUH */

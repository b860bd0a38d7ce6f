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

#include "cuda_int.h"

/* Records a failed launch of `name` (the kernel's own launch errors: bad
 * configuration, no kernel image for this device). */
#define ASK__LAUNCHED(name) ask__cu_check(cudaGetLastError(), "launch of " name)

static __device__ __forceinline__ float ask__bf16f(uint16_t h) {
  return __uint_as_float((uint32_t)h << 16);
}

/* f32 -> bf16 bits, rounded to nearest even (as kernels/ref rounds). */
static __device__ __forceinline__ uint16_t ask__bf16_rn(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* The activations of kernels.h (ASK_ACT_*), written as kernels/ref/act.c. */
static __device__ __forceinline__ float ask__act(float x, int act) {
  switch (act) {
  case 1: { /* ASK_ACT_GELU_TANH */
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
  }
  case 2: /* ASK_ACT_GELU */
    return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
  default: /* ASK_ACT_SILU */
    return x / (1.0f + expf(-x));
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

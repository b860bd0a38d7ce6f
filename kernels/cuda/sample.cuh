/* sample.cuh — what sample.cu (argmax) and sample_rows.cu (sampling) share:
 * order-preserving keys of floats, argmax's 64-bit (value, index) keys, and
 * the temperature rule.
 */
#ifndef ASK_CUDA_SAMPLE_CUH
#define ASK_CUDA_SAMPLE_CUH

#include "common.cuh"

/* Order-preserving key of a float (larger float, larger key; -0 and +0 the
 * same key, as they compare equal). */
static __device__ __forceinline__ uint32_t ask__okey(float f) {
  uint32_t u = __float_as_uint(f) == 0x80000000u ? 0u : __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ float ask__unkey(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* argmax's key of value v at index i: larger for the better answer (the
 * value's key above, 0 for NaN, never chosen unless all are NaN; the index
 * complemented below, so the first of equal values wins). */
static __device__ __forceinline__ unsigned long long ask__amkey(float v, int i) {
  const uint32_t hi = v != v ? 0u : ask__okey(v);
  return (unsigned long long)hi << 32 | (uint32_t)~(uint32_t)i;
}

static __device__ __forceinline__ unsigned long long ask__amax(unsigned long long a,
                                                               unsigned long long b) {
  return a > b ? a : b;
}

/* The row's value after temperature (f32 division, as kernels/ref). */
static __device__ __forceinline__ float ask__tv(const float *xr, int i, float temp) {
  return temp == 1.0f ? xr[i] : xr[i] / temp;
}

#endif

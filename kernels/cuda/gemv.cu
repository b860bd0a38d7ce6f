/* gemv.cu — out (T,N) = x (T,K) · wᵀ + bias for decode shapes (T <= 16):
 * w (N,K) bf16 as torch.nn.Linear stores it, x and out f32, fp32
 * accumulation. The weight matrix is read once for all T rows, which is all
 * that matters at batch 1..16 (the product is bound by reading w).
 *
 * One warp per output column n: lanes stream the row w[n] in 16-byte pieces
 * (8 bf16, cache-streaming loads), multiply them with the matching 8 floats
 * of every x row (read through the read-only cache: x is small and shared by
 * all warps), and reduce with shuffles. Rows are compile-time (MT in 1, 2, 4,
 * 8, 16) so the accumulators stay in registers. Misaligned or K % 8 != 0
 * inputs take a scalar path. To be measured against cuBLASLt on the H100
 * (issue 7) before it becomes the default for any shape.
 */
#include "common.cuh"

#define ASK__GEMV_WARPS 8

template <int MT>
static __global__ void ask__k_gemv(float *out, const float *__restrict__ x,
                                   const uint16_t *__restrict__ w,
                                   const float *__restrict__ bias, int T, int K, int N,
                                   int vec) {
  int lane = threadIdx.x & 31;
  int n = blockIdx.x * ASK__GEMV_WARPS + (threadIdx.x >> 5);
  if (n >= N)
    return;
  const uint16_t *wr = w + (size_t)n * K;
  float acc[MT];
#pragma unroll
  for (int t = 0; t < MT; t++)
    acc[t] = 0.0f;
  if (vec) {
    const uint4 *w8 = reinterpret_cast<const uint4 *>(wr);
    int K8 = K / 8;
#pragma unroll 2
    for (int c = lane; c < K8; c += 32) {
      uint4 p = __ldcs(w8 + c);
      float wf[8];
      wf[0] = __uint_as_float(p.x << 16);
      wf[1] = __uint_as_float(p.x & 0xffff0000u);
      wf[2] = __uint_as_float(p.y << 16);
      wf[3] = __uint_as_float(p.y & 0xffff0000u);
      wf[4] = __uint_as_float(p.z << 16);
      wf[5] = __uint_as_float(p.z & 0xffff0000u);
      wf[6] = __uint_as_float(p.w << 16);
      wf[7] = __uint_as_float(p.w & 0xffff0000u);
#pragma unroll
      for (int t = 0; t < MT; t++) {
        if (t < T) {
          const float4 *xr = reinterpret_cast<const float4 *>(x + (size_t)t * K) + 2 * c;
          float4 a = __ldg(xr), b = __ldg(xr + 1);
          acc[t] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x +
                    wf[5] * b.y + wf[6] * b.z + wf[7] * b.w;
        }
      }
    }
  } else {
    for (int c = lane; c < K; c += 32) {
      float wf = ask__bf16f(wr[c]);
#pragma unroll
      for (int t = 0; t < MT; t++)
        if (t < T)
          acc[t] += wf * x[(size_t)t * K + c];
    }
  }
#pragma unroll
  for (int t = 0; t < MT; t++) {
    float a = acc[t];
    for (int o = 16; o > 0; o >>= 1)
      a += __shfl_xor_sync(0xffffffffu, a, o);
    if (lane == 0 && t < T)
      out[(size_t)t * N + n] = a + (bias != NULL ? bias[n] : 0.0f);
  }
}

extern "C" void ask__cu_gemv_bf16(cudaStream_t s, float *out, const float *x, const uint16_t *w,
                                  const float *bias, int T, int K, int N) {
  if (T <= 0 || N <= 0 || ask__cu_failed())
    return;
  if (T > 16) {
    ask__cu_check(cudaErrorInvalidValue, "gemv_bf16: more than 16 rows");
    return;
  }
  int vec = K % 8 == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)x & 15) == 0;
  unsigned grid = (unsigned)((N + ASK__GEMV_WARPS - 1) / ASK__GEMV_WARPS);
  unsigned thr = 32 * ASK__GEMV_WARPS;
  if (T == 1)
    ask__k_gemv<1><<<grid, thr, 0, s>>>(out, x, w, bias, T, K, N, vec);
  else if (T == 2)
    ask__k_gemv<2><<<grid, thr, 0, s>>>(out, x, w, bias, T, K, N, vec);
  else if (T <= 4)
    ask__k_gemv<4><<<grid, thr, 0, s>>>(out, x, w, bias, T, K, N, vec);
  else if (T <= 8)
    ask__k_gemv<8><<<grid, thr, 0, s>>>(out, x, w, bias, T, K, N, vec);
  else
    ask__k_gemv<16><<<grid, thr, 0, s>>>(out, x, w, bias, T, K, N, vec);
  ASK__LAUNCHED("gemv_bf16");
}

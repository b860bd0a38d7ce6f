/* gemv.cu — out (T,N) = x (T,K) · wᵀ + bias for decode shapes (T <= 16):
 * w (N,K) bf16 as torch.nn.Linear stores it, x and out f32, fp32
 * accumulation, bias f32 or NULL. At batch 1..16 the product is bound by
 * reading w once, so everything here is about keeping HBM busy.
 *
 * Vector path (K % 8 == 0, w and x 16-byte aligned): each warp owns R
 * consecutive output rows; per step its lanes load U x R pieces of 16 bytes
 * (8 bf16) of those rows at once (non-coherent, no L1 allocation, 256-byte
 * L2 prefetch: the weights are read once and must not evict x), then for
 * each x row t read the matching 8 floats (through the read-only cache: x
 * is small and shared by every warp of the SM) and multiply them into the R
 * rows' accumulators, so one x load serves R rows and one w load serves T
 * x rows. Lanes then reduce with shuffles and spread the R*T stores. MT
 * (the largest T of the instance: 1, 2, 4, 8, 16), R and U are template
 * constants so that the accumulators stay in registers; MB, the launch
 * bounds' blocks per SM, gives ptxas the registers to issue a step's loads
 * together (without it ptxas aims at full occupancy and spaces them out,
 * one load in flight at a time). Other inputs take a
 * scalar path (one warp per row). Whether this or cuBLASLt wins for a given
 * T is measured by tests/gpu/bench_gemv.c (the backend's gemv_rows).
 */
#include "common.cuh"

#define ASK__GEMV_WARPS 4

/* 16 bytes of w, read once: no L1 allocation, 256-byte L2 prefetch. */
static __device__ __forceinline__ uint4 ask__ld_w(const uint4 *p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

/* acc + the dot product of 8 bf16 (p) with 8 floats (a, b). */
static __device__ __forceinline__ float ask__dot8(float acc, uint4 p, float4 a, float4 b) {
  acc = fmaf(__uint_as_float(p.x << 16), a.x, acc);
  acc = fmaf(__uint_as_float(p.x & 0xffff0000u), a.y, acc);
  acc = fmaf(__uint_as_float(p.y << 16), a.z, acc);
  acc = fmaf(__uint_as_float(p.y & 0xffff0000u), a.w, acc);
  acc = fmaf(__uint_as_float(p.z << 16), b.x, acc);
  acc = fmaf(__uint_as_float(p.z & 0xffff0000u), b.y, acc);
  acc = fmaf(__uint_as_float(p.w << 16), b.z, acc);
  acc = fmaf(__uint_as_float(p.w & 0xffff0000u), b.w, acc);
  return acc;
}

template <int MT, int R, int U, int MB>
static __global__ void __launch_bounds__(32 * ASK__GEMV_WARPS, MB)
    ask__k_gemv_vec(float *__restrict__ out, const float *__restrict__ x,
                    const uint16_t *__restrict__ w, const float *__restrict__ bias, int T,
                    int K, int N) {
  int lane = threadIdx.x & 31;
  int n0 = (blockIdx.x * ASK__GEMV_WARPS + (threadIdx.x >> 5)) * R;
  if (n0 >= N)
    return;
  int K8 = K >> 3;
  int xrow = K >> 2; /* float4s per x row (16 * K fits an int) */
  const float4 *x4 = reinterpret_cast<const float4 *>(x);
  /* x rows t >= T repeat row T-1 (their sums are not stored): no branch in
   * the loop, so the compiler issues all U*R weight loads before any use. */
  int xo[MT];
#pragma unroll
  for (int t = 0; t < MT; t++)
    xo[t] = min(t, T - 1) * xrow;
  const uint4 *wr[R];
#pragma unroll
  for (int r = 0; r < R; r++) /* rows past N read row N-1 and store nothing */
    wr[r] = reinterpret_cast<const uint4 *>(w + (size_t)min(n0 + r, N - 1) * K);
  float acc[R][MT];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < MT; t++)
      acc[r][t] = 0.0f;

  int c = lane;
  for (; c + 32 * (U - 1) < K8; c += 32 * U) {
    uint4 p[U][R];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int r = 0; r < R; r++)
        p[u][r] = ask__ld_w(wr[r] + c + 32 * u);
#pragma unroll
    for (int u = 0; u < U; u++) {
      const float4 *xc = x4 + 2 * (size_t)(c + 32 * u);
#pragma unroll
      for (int t = 0; t < MT; t++) {
        float4 a = __ldg(xc + xo[t]), b = __ldg(xc + xo[t] + 1);
#pragma unroll
        for (int r = 0; r < R; r++)
          acc[r][t] = ask__dot8(acc[r][t], p[u][r], a, b);
      }
    }
  }
  for (; c < K8; c += 32) { /* the last K8 % (32 U) pieces */
    uint4 p[R];
#pragma unroll
    for (int r = 0; r < R; r++)
      p[r] = ask__ld_w(wr[r] + c);
    const float4 *xc = x4 + 2 * (size_t)c;
#pragma unroll
    for (int t = 0; t < MT; t++) {
      float4 a = __ldg(xc + xo[t]), b = __ldg(xc + xo[t] + 1);
#pragma unroll
      for (int r = 0; r < R; r++)
        acc[r][t] = ask__dot8(acc[r][t], p[r], a, b);
    }
  }

#pragma unroll
  for (int r = 0; r < R; r++) {
#pragma unroll
    for (int t = 0; t < MT; t++) {
      float v = acc[r][t];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
      int n = n0 + r;
      if (t < T && n < N && lane == ((r * MT + t) & 31))
        out[(size_t)t * N + n] = v + (bias != NULL ? bias[n] : 0.0f);
    }
  }
}

/* Any alignment and K: one warp per row, one bf16 at a time. */
template <int MT>
static __global__ void __launch_bounds__(32 * ASK__GEMV_WARPS)
    ask__k_gemv_scalar(float *__restrict__ out, const float *__restrict__ x,
                       const uint16_t *__restrict__ w, const float *__restrict__ bias, int T,
                       int K, int N) {
  int lane = threadIdx.x & 31;
  int n = blockIdx.x * ASK__GEMV_WARPS + (threadIdx.x >> 5);
  if (n >= N)
    return;
  const uint16_t *wr = w + (size_t)n * K;
  float acc[MT];
#pragma unroll
  for (int t = 0; t < MT; t++)
    acc[t] = 0.0f;
  for (int c = lane; c < K; c += 32) {
    float wf = ask__bf16f(wr[c]);
#pragma unroll
    for (int t = 0; t < MT; t++)
      if (t < T)
        acc[t] += wf * __ldg(x + (size_t)t * K + c);
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

template <int MT, int R, int U, int MB>
static void ask__gemv_vec(cudaStream_t s, float *out, const float *x, const uint16_t *w,
                          const float *bias, int T, int K, int N) {
  size_t warps = ((size_t)N + R - 1) / R;
  unsigned grid = (unsigned)((warps + ASK__GEMV_WARPS - 1) / ASK__GEMV_WARPS);
  ask__k_gemv_vec<MT, R, U, MB><<<grid, 32 * ASK__GEMV_WARPS, 0, s>>>(out, x, w, bias, T, K, N);
}

template <int MT>
static void ask__gemv_scalar(cudaStream_t s, float *out, const float *x, const uint16_t *w,
                             const float *bias, int T, int K, int N) {
  unsigned grid = (unsigned)(((size_t)N + ASK__GEMV_WARPS - 1) / ASK__GEMV_WARPS);
  ask__k_gemv_scalar<MT><<<grid, 32 * ASK__GEMV_WARPS, 0, s>>>(out, x, w, bias, T, K, N);
}

extern "C" void ask__cu_gemv_bf16(cudaStream_t s, float *out, const float *x, const uint16_t *w,
                                  const float *bias, int T, int K, int N) {
  if (T <= 0 || N <= 0 || ask__cu_failed())
    return;
  if (T > 16 || K < 0) {
    ask__cu_check(cudaErrorInvalidValue, "gemv_bf16: more than 16 rows");
    return;
  }
  int vec = K % 8 == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)x & 15) == 0;
  if (!vec) {
    if (T == 1)
      ask__gemv_scalar<1>(s, out, x, w, bias, T, K, N);
    else if (T <= 4)
      ask__gemv_scalar<4>(s, out, x, w, bias, T, K, N);
    else
      ask__gemv_scalar<16>(s, out, x, w, bias, T, K, N);
  } else if (T == 1) { /* one row a warp, 8 loads a lane in flight: a 2048-wide row at once */
    ask__gemv_vec<1, 1, 8, 4>(s, out, x, w, bias, T, K, N);
  } else if (T == 2) {
    ask__gemv_vec<2, 1, 8, 4>(s, out, x, w, bias, T, K, N);
  } else if (T <= 4) { /* more rows a warp as T grows: each x load serves R rows */
    ask__gemv_vec<4, 2, 4, 4>(s, out, x, w, bias, T, K, N);
  } else if (T <= 8) {
    ask__gemv_vec<8, 4, 2, 2>(s, out, x, w, bias, T, K, N);
  } else {
    ask__gemv_vec<16, 4, 1, 2>(s, out, x, w, bias, T, K, N);
  }
  ASK__LAUNCHED("gemv_bf16");
}

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
 *
 * Decode fusions (kernels.h's norm_matmul_bf16 and glu_matmul_bf16): the
 * same loops (ask__gemv_vec_loop, ask__gemv_scalar_loop and their stores
 * are shared), but x is not in memory: each block makes the x it needs
 * (every block needs whole x rows for its dot products) from the op's
 * inputs into shared memory before its loop, "staging" it (x policies
 * ask__xp_norm and ask__xp_glu):
 *   norm: x + r (one block, blockIdx 0, also writes it to xo; every block
 *     reads x and r, which nobody writes) times (w_offset + nw); the sum of
 *     squares of x + r is reduced in the block (double, per row) and the
 *     inverse RMS, a per-row factor, multiplies each finished dot product
 *     (sum w (v inv g) = inv sum w (v g)), so nothing waits for the
 *     reduction before the loop;
 *   glu: act(gate) * up, as glu_rows (common.cuh's ask__act).
 * Staging reads each input once per block (the read-only cache shares them
 * between the blocks of an SM); up to 4 rows, blocks have 8 warps (twice
 * the plain kernels', half as many blocks an SM) so each activation serves
 * more output rows. A block stages at
 * most ASK__GEMV_STAGE floats (32 KB): longer rows are done in chunks of
 * kc columns (kc a multiple of 256), staged between two barriers. Before
 * staging a chunk each warp sends its first step's weight pieces towards
 * L2 (prefetch) so HBM is busy while x is made. In the vector kernel the
 * staged row is laid out so that a step's x loads read consecutive
 * shared-memory words (ask__slot); the scalar kernel keeps the columns in
 * order. Which path a shape takes follows matmul_bf16's rules (K % 8 and
 * w's alignment); the staging itself uses 16-byte loads when its inputs
 * allow and single floats otherwise.
 *
 * At one x row each entry point first offers the product to the persistent
 * kernel (gemv_pw.cu); the loads, the dot product, the x policies and the
 * staging both use are in gemv.cuh.
 */
#include "gemv.cuh"

#define ASK__GEMV_WARPS 4    /* warps per block of the plain kernels */
#define ASK__GEMV_STAGE 8192 /* floats of staged x per block (the fused kernels) */

/* ---- the shared loops and stores ---------------------------------------- */

/* The R rows of w a warp owns from row n0 on (rows past N read row N-1
 * and store nothing), as 16-byte pieces. */
template <int R>
static __device__ __forceinline__ void ask__gemv_rows(const uint4 *(&wr)[R], const uint16_t *w,
                                                      int n0, int N, int K) {
#pragma unroll
  for (int r = 0; r < R; r++)
    wr[r] = reinterpret_cast<const uint4 *>(w + (size_t)min(n0 + r, N - 1) * K);
}

/* The pieces of one step of the vector loop starting at piece c (this
 * lane's: c, c + 32, ... below c1) of the R rows, on their way to L2. */
template <int R, int U>
static __device__ __forceinline__ void ask__gemv_pf_step(const uint4 *const (&wr)[R], int c,
                                                         int c1) {
#pragma unroll
  for (int u = 0; u < U; u++)
#pragma unroll
    for (int r = 0; r < R; r++)
      if (c + 32 * u < c1)
        ask__pf_l2(wr[r] + c + 32 * u);
}

/* acc[r][t] += w row r's pieces [c, c1) (this lane's: c, c + 32, ...) times
 * x row t's, for the vector kernels (see the header). */
template <int MT, int R, int U, class XS>
static __device__ __forceinline__ void ask__gemv_vec_loop(float (&acc)[R][MT],
                                                          const uint4 *const (&wr)[R],
                                                          const XS &xs, const int (&xo)[MT],
                                                          int c, int c1) {
  for (; c + 32 * (U - 1) < c1; c += 32 * U) {
    uint4 p[U][R];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int r = 0; r < R; r++)
        p[u][r] = ask__ld_w(wr[r] + c + 32 * u);
#pragma unroll
    for (int u = 0; u < U; u++) {
      const float4 *xc = xs.p + 2 * (size_t)(c + 32 * u);
#pragma unroll
      for (int t = 0; t < MT; t++) {
        float4 a = xs.ld(xc + xo[t]), b = xs.ld(xc + xo[t] + XS::B);
#pragma unroll
        for (int r = 0; r < R; r++)
          acc[r][t] = ask__dot8(acc[r][t], p[u][r], a, b);
      }
    }
  }
  for (; c < c1; c += 32) { /* the last pieces (fewer than 32 U) */
    uint4 p[R];
#pragma unroll
    for (int r = 0; r < R; r++)
      p[r] = ask__ld_w(wr[r] + c);
    const float4 *xc = xs.p + (size_t)(unsigned)(2 * c); /* c >= 0 */
#pragma unroll
    for (int t = 0; t < MT; t++) {
      float4 a = xs.ld(xc + xo[t]), b = xs.ld(xc + xo[t] + XS::B);
#pragma unroll
      for (int r = 0; r < R; r++)
        acc[r][t] = ask__dot8(acc[r][t], p[r], a, b);
    }
  }
}

/* The warp's sums to out rows n0.. (lanes spread the R*MT stores). SCALED:
 * row t's sums are multiplied by lane t's sc (a per-row factor). */
template <int MT, int R, bool SCALED>
static __device__ __forceinline__ void ask__gemv_vec_store(float (&acc)[R][MT], float *out,
                                                           const float *bias, float sc, int lane,
                                                           int n0, int T, int N) {
#pragma unroll
  for (int r = 0; r < R; r++) {
#pragma unroll
    for (int t = 0; t < MT; t++) {
      float v = acc[r][t];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
      if constexpr (SCALED)
        v *= __shfl_sync(0xffffffffu, sc, t);
      int n = n0 + r;
      if (t < T && n < N && lane == ((r * MT + t) & 31))
        out[(size_t)t * N + n] = v + (bias != NULL ? bias[n] : 0.0f);
    }
  }
}

/* acc[t] += w row wr's columns [c, c1) (this lane's) times x row t's. */
template <int MT, class XS>
static __device__ __forceinline__ void ask__gemv_scalar_loop(float (&acc)[MT], const uint16_t *wr,
                                                             const XS &xs, int T, int c, int c1) {
  for (; c < c1; c += 32) {
    float wf = ask__bf16f(wr[c]);
#pragma unroll
    for (int t = 0; t < MT; t++)
      if (t < T)
        acc[t] += wf * xs.ld(xs.p + (size_t)t * xs.stride + c);
  }
}

template <int MT, bool SCALED>
static __device__ __forceinline__ void ask__gemv_scalar_store(float (&acc)[MT], float *out,
                                                              const float *bias, float sc,
                                                              int lane, int n, int T, int N) {
#pragma unroll
  for (int t = 0; t < MT; t++) {
    float a = acc[t];
    for (int o = 16; o > 0; o >>= 1)
      a += __shfl_xor_sync(0xffffffffu, a, o);
    if constexpr (SCALED)
      a *= __shfl_sync(0xffffffffu, sc, t);
    if (lane == 0 && t < T)
      out[(size_t)t * N + n] = a + (bias != NULL ? bias[n] : 0.0f);
  }
}

/* ---- the plain kernels (matmul_bf16) ------------------------------------ */

template <int MT, int R, int U, int MB>
static __global__ void __launch_bounds__(32 * ASK__GEMV_WARPS, MB)
    ask__k_gemv_vec(float *__restrict__ out, const float *__restrict__ x,
                    const uint16_t *__restrict__ w, const float *__restrict__ bias, int T,
                    int K, int N) {
  ask__pdl_start();
  int lane = threadIdx.x & 31;
  int n0 = (blockIdx.x * ASK__GEMV_WARPS + (threadIdx.x >> 5)) * R;
  int K8 = K >> 3;
  int xrow = K >> 2; /* float4s per x row (16 * K fits an int) */
  /* x rows t >= T repeat row T-1 (their sums are not stored): no branch in
   * the loop, so the compiler issues all U*R weight loads before any use. */
  int xo[MT];
#pragma unroll
  for (int t = 0; t < MT; t++)
    xo[t] = min(t, T - 1) * xrow;
  const uint4 *wr[R];
  ask__gemv_rows<R>(wr, w, n0, N, K);
  /* While the kernel before finishes (PDL): the first step's weights, which
   * no kernel writes, on their way to L2. */
  if (n0 < N)
    ask__gemv_pf_step<R, U>(wr, lane, K8);
  ask__pdl_wait();
  if (n0 >= N)
    return;
  float acc[R][MT] = {};
  ask__gemv_vec_loop<MT, R, U>(acc, wr, ask__xv_global{reinterpret_cast<const float4 *>(x)}, xo,
                               lane, K8);
  ask__gemv_vec_store<MT, R, false>(acc, out, bias, 1.0f, lane, n0, T, N);
}

/* Any alignment and K: one warp per row, one bf16 at a time. */
template <int MT>
static __global__ void __launch_bounds__(32 * ASK__GEMV_WARPS)
    ask__k_gemv_scalar(float *__restrict__ out, const float *__restrict__ x,
                       const uint16_t *__restrict__ w, const float *__restrict__ bias, int T,
                       int K, int N) {
  ask__pdl_enter();
  int lane = threadIdx.x & 31;
  int n = blockIdx.x * ASK__GEMV_WARPS + (threadIdx.x >> 5);
  if (n >= N)
    return;
  float acc[MT] = {};
  ask__gemv_scalar_loop<MT>(acc, w + (size_t)n * K, ask__xs_global{x, (size_t)K}, T, lane, K);
  ask__gemv_scalar_store<MT, false>(acc, out, bias, 1.0f, lane, n, T, N);
}

/* ---- the fused kernels --------------------------------------------------- */

/* Dynamic shared memory of the fused kernels (ask__gemv_sh): W * 16
 * doubles (part), then T rows of kc staged floats. */

/* The vector kernel on staged x: W warps of R rows each, chunks of kc
 * columns (K % 8 == 0, w 16-byte aligned). */
template <int MT, int R, int U, int W, int MB, class XP>
static __global__ void __launch_bounds__(32 * W, MB)
    ask__k_gemv_vec_st(float *__restrict__ out, const XP xp, const uint16_t *__restrict__ w,
                       const float *__restrict__ bias, int T, int K, int N, int kc) {
  extern __shared__ float4 ask__gemv_sh[];
  ask__pdl_start();
  double *part = reinterpret_cast<double *>(ask__gemv_sh);
  float4 *sh = ask__gemv_sh + W * 8; /* W * 16 doubles */
  int lane = threadIdx.x & 31;
  int n0 = (blockIdx.x * W + (threadIdx.x >> 5)) * R;
  bool live = n0 < N; /* a warp past N still stages and meets the barriers */
  int xrow = kc >> 2; /* float4s per staged row */
  const uint4 *wr[R];
  ask__gemv_rows<R>(wr, w, n0, N, K);
  float acc[R][MT] = {};

  for (int k0 = 0; k0 < K; k0 += kc) {
    int n = min(kc, K - k0), c0 = k0 >> 3, c1 = c0 + (n >> 3);
    if (live) /* the first step's weights on their way while x is staged */
      ask__gemv_pf_step<R, U>(wr, c0 + lane, c1);
    if (k0 == 0)
      ask__pdl_wait(); /* PDL: x's inputs are the kernel before's output */
    else
      __syncthreads(); /* the previous chunk is read */
    ask__stage<true>(xp, reinterpret_cast<float *>(sh), part, T, K, k0, n, kc);
    __syncthreads();
    if (live) {
      /* piece c = c0 + lane + 32 g of row t: float4 t * xrow + 64 g + lane */
      int xo[MT];
#pragma unroll
      for (int t = 0; t < MT; t++)
        xo[t] = min(t, T - 1) * xrow - lane;
      ask__gemv_vec_loop<MT, R, U>(acc, wr, ask__xv_staged{sh - 2 * c0}, xo, c0 + lane, c1);
    }
  }
  if (live) {
    float sc = XP::kScaled ? xp.scale(part, min(lane, T - 1), K) : 1.0f; /* row lane's */
    ask__gemv_vec_store<MT, R, XP::kScaled>(acc, out, bias, sc, lane, n0, T, N);
  }
}

/* The scalar kernel on staged x: one warp per row, any K and alignment. */
template <int MT, int W, class XP>
static __global__ void __launch_bounds__(32 * W)
    ask__k_gemv_scalar_st(float *__restrict__ out, const XP xp, const uint16_t *__restrict__ w,
                          const float *__restrict__ bias, int T, int K, int N, int kc) {
  extern __shared__ float4 ask__gemv_sh[];
  ask__pdl_enter();
  double *part = reinterpret_cast<double *>(ask__gemv_sh);
  float *sh = reinterpret_cast<float *>(ask__gemv_sh + W * 8);
  int lane = threadIdx.x & 31;
  int n = blockIdx.x * W + (threadIdx.x >> 5);
  bool live = n < N;
  const uint16_t *wr = w + (size_t)min(n, N - 1) * K;
  float acc[MT] = {};
  for (int k0 = 0; k0 < K; k0 += kc) {
    int cn = min(kc, K - k0);
    if (k0 > 0)
      __syncthreads();
    ask__stage<false>(xp, sh, part, T, K, k0, cn, kc);
    __syncthreads();
    if (live)
      ask__gemv_scalar_loop<MT>(acc, wr, ask__xs_staged{sh - k0, (size_t)kc}, T, k0 + lane,
                                k0 + cn);
  }
  if (live) {
    float sc = XP::kScaled ? xp.scale(part, min(lane, T - 1), K) : 1.0f; /* row lane's */
    ask__gemv_scalar_store<MT, XP::kScaled>(acc, out, bias, sc, lane, n, T, N);
  }
}

/* ---- launchers ----------------------------------------------------------- */

template <int MT, int R, int U, int MB>
static void ask__gemv_vec(cudaStream_t s, float *out, const float *x, const uint16_t *w,
                          const float *bias, int T, int K, int N) {
  size_t warps = ((size_t)N + R - 1) / R;
  unsigned grid = (unsigned)((warps + ASK__GEMV_WARPS - 1) / ASK__GEMV_WARPS);
  ASK__LAUNCH(grid, 32 * ASK__GEMV_WARPS, 0, s, ask__k_gemv_vec<MT, R, U, MB>)(out, x, w, bias, T,
                                                                               K, N);
}

template <int MT>
static void ask__gemv_scalar(cudaStream_t s, float *out, const float *x, const uint16_t *w,
                             const float *bias, int T, int K, int N) {
  unsigned grid = (unsigned)(((size_t)N + ASK__GEMV_WARPS - 1) / ASK__GEMV_WARPS);
  ASK__LAUNCH(grid, 32 * ASK__GEMV_WARPS, 0, s, ask__k_gemv_scalar<MT>)(out, x, w, bias, T, K, N);
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
  if (vec && ask__cu_gemv_pw_copy(s, out, x, w, bias, T, K, N)) {
    /* launched */
  } else if (!vec) {
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

/* The fused kernels' dynamic shared memory: W * 16 doubles, T rows of kc. */
static size_t ask__gemv_smem(int W, int T, int kc) {
  return (size_t)W * 16 * sizeof(double) + (size_t)T * kc * sizeof(float);
}

template <int MT, int R, int U, int W, int MB, class XP>
static void ask__gemv_vec_st(cudaStream_t s, float *out, const XP &xp, const uint16_t *w,
                             const float *bias, int T, int K, int N, int kc) {
  size_t warps = ((size_t)N + R - 1) / R, smem = ask__gemv_smem(W, T, kc);
  unsigned grid = (unsigned)((warps + W - 1) / W);
  ASK__LAUNCH(grid, 32 * W, smem, s, ask__k_gemv_vec_st<MT, R, U, W, MB, XP>)(out, xp, w, bias, T,
                                                                              K, N, kc);
}

template <int MT, int W, class XP>
static void ask__gemv_scalar_st(cudaStream_t s, float *out, const XP &xp, const uint16_t *w,
                                const float *bias, int T, int K, int N, int kc) {
  size_t smem = ask__gemv_smem(W, T, kc);
  unsigned grid = (unsigned)(((size_t)N + W - 1) / W);
  ASK__LAUNCH(grid, 32 * W, smem, s, ask__k_gemv_scalar_st<MT, W, XP>)(out, xp, w, bias, T, K, N,
                                                                       kc);
}

/* A fused product (x made by xp): the kernel for T and the shape, as
 * ask__cu_gemv_bf16 chooses (x's alignment is the staging's business).
 * Blocks of 8 warps up to 4 rows, of 4 beyond (2 blocks an SM either way:
 * while one waits at a barrier, the other loads). Returns 0, or 1 when the
 * shape is refused. */
template <class XP>
static int ask__gemv_fused(cudaStream_t s, float *out, const XP &xp, const uint16_t *w,
                           const float *bias, int T, int K, int N) {
  if (T > 16 || K <= 0)
    return 1;
  int kc = (ASK__GEMV_STAGE / T) & ~255, kr = (K + 255) & ~255;
  if (kc > kr)
    kc = kr;
  int vec = K % 8 == 0 && ((uintptr_t)w & 15) == 0;
  if (!vec) {
    if (T == 1)
      ask__gemv_scalar_st<1, 8>(s, out, xp, w, bias, T, K, N, kc);
    else if (T <= 4)
      ask__gemv_scalar_st<4, 8>(s, out, xp, w, bias, T, K, N, kc);
    else
      ask__gemv_scalar_st<16, 8>(s, out, xp, w, bias, T, K, N, kc);
  } else if (T == 1) {
    ask__gemv_vec_st<1, 1, 8, 8, 2>(s, out, xp, w, bias, T, K, N, kc);
  } else if (T == 2) {
    ask__gemv_vec_st<2, 1, 8, 8, 2>(s, out, xp, w, bias, T, K, N, kc);
  } else if (T <= 4) {
    ask__gemv_vec_st<4, 2, 4, 8, 2>(s, out, xp, w, bias, T, K, N, kc);
  } else if (T <= 8) {
    ask__gemv_vec_st<8, 4, 2, 4, 2>(s, out, xp, w, bias, T, K, N, kc);
  } else {
    ask__gemv_vec_st<16, 4, 1, 4, 2>(s, out, xp, w, bias, T, K, N, kc);
  }
  return 0;
}

extern "C" void ask__cu_gemv_norm_bf16(cudaStream_t s, float *out, float *xo, const float *x,
                                       const float *r, const float *nw, float eps,
                                       float w_offset, const uint16_t *w, const float *bias,
                                       int T, int K, int N) {
  if (T <= 0 || N <= 0 || ask__cu_failed())
    return;
  ask__xp_norm xp = {x, r, nw, r != NULL ? xo : NULL, eps, w_offset, 0};
  if (!ask__cu_gemv_pw_norm(s, out, xo, x, r, nw, eps, w_offset, w, bias, T, K, N) &&
      ask__gemv_fused(s, out, xp, w, bias, T, K, N)) {
    ask__cu_check(cudaErrorInvalidValue, "gemv_norm_bf16: more than 16 rows or K < 1");
    return;
  }
  ASK__LAUNCHED("gemv_norm_bf16");
}

extern "C" void ask__cu_gemv_glu_bf16(cudaStream_t s, float *out, const float *gu, int act,
                                      const uint16_t *w, const float *bias, int T, int F, int N) {
  if (T <= 0 || N <= 0 || ask__cu_failed())
    return;
  ask__xp_glu xp = {gu, act};
  if (!ask__cu_gemv_pw_glu(s, out, gu, act, w, bias, T, F, N) &&
      ask__gemv_fused(s, out, xp, w, bias, T, F, N)) {
    ask__cu_check(cudaErrorInvalidValue, "gemv_glu_bf16: more than 16 rows or F < 1");
    return;
  }
  ASK__LAUNCHED("gemv_glu_bf16");
}

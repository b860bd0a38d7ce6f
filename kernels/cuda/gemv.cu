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
 */
#include "common.cuh"

#define ASK__GEMV_WARPS 4    /* warps per block of the plain kernels */
#define ASK__GEMV_STAGE 8192 /* floats of staged x per block (the fused kernels) */

/* 16 bytes of w, read once: no L1 allocation, 256-byte L2 prefetch. */
static __device__ __forceinline__ uint4 ask__ld_w(const uint4 *p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

/* The line holding p on its way to L2 (nothing waits for it). */
static __device__ __forceinline__ void ask__pf_l2(const void *p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
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

/* ---- where the loops read x ----------------------------------------------
 * Vector loop: the 8 floats of piece c of x row t are a = ld(p + 2c + xo[t])
 * and b = ld(p + 2c + xo[t] + B). */
struct ask__xv_global { /* x in memory, rows of K floats: b follows a */
  const float4 *p;
  static constexpr int B = 1;
  __device__ __forceinline__ float4 ld(const float4 *q) const { return __ldg(q); }
};
struct ask__xv_staged { /* staged (ask__slot): b 32 float4 after a */
  const float4 *p;
  static constexpr int B = 32;
  __device__ __forceinline__ float4 ld(const float4 *q) const { return *q; }
};
/* Scalar loop: column c of x row t is ld(p + t * stride + c). */
struct ask__xs_global {
  const float *p;
  size_t stride;
  __device__ __forceinline__ float ld(const float *q) const { return __ldg(q); }
};
struct ask__xs_staged {
  const float *p;
  size_t stride;
  __device__ __forceinline__ float ld(const float *q) const { return *q; }
};

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

/* ---- x policies of the fused kernels --------------------------------------
 * load4(t, k, K) then make4(raw, t, k, K, ss) / get1: x[t][k..k+3] /
 * x[t][k] made from the inputs (rows of K columns), ss collecting what
 * row_done needs; load4 only reads (the staging issues kBatch of them
 * before it makes any, so their latencies overlap); the 4-wide pair only when
 * aligned() and K % 4 == 0. row_done(part, t, ss, first): the row's
 * statistics of this chunk into part (16 doubles per warp, the warp's own
 * slots: no race). kScaled: scale(part, t, K) is the factor of row t's dot
 * products (read after the last barrier). */

/* x = (xin + r) * (off + nw); xo = xin + r by block 0; inverse RMS of xin + r. */
struct ask__xp_norm {
  static constexpr bool kScaled = true;
  const float *x, *r, *nw;
  float *xo;
  float eps, off;

  __device__ __forceinline__ bool aligned() const {
    return (((uintptr_t)x | (uintptr_t)r | (uintptr_t)nw | (uintptr_t)xo) & 15) == 0;
  }
  static constexpr int kBatch = 4;
  struct raw4 {
    float4 x, r, g;
  };
  __device__ __forceinline__ raw4 load4(int t, int k, int K) const {
    size_t i = (size_t)t * K + k;
    raw4 a;
    a.x = __ldg(reinterpret_cast<const float4 *>(x + i));
    a.r = r != NULL ? __ldg(reinterpret_cast<const float4 *>(r + i)) : make_float4(0, 0, 0, 0);
    a.g = __ldg(reinterpret_cast<const float4 *>(nw + k));
    return a;
  }
  __device__ __forceinline__ float4 make4(const raw4 &a, int t, int k, int K, double &ss) const {
    float4 v = a.x;
    if (r != NULL) {
      v.x += a.r.x, v.y += a.r.y, v.z += a.r.z, v.w += a.r.w;
      if (blockIdx.x == 0)
        *reinterpret_cast<float4 *>(xo + (size_t)t * K + k) = v;
    }
    ss += (double)v.x * v.x;
    ss += (double)v.y * v.y;
    ss += (double)v.z * v.z;
    ss += (double)v.w * v.w;
    const float4 g = a.g;
    return make_float4(v.x * (off + g.x), v.y * (off + g.y), v.z * (off + g.z),
                       v.w * (off + g.w));
  }
  __device__ __forceinline__ float get1(int t, int k, int K, double &ss) const {
    size_t i = (size_t)t * K + k;
    float v = __ldg(x + i);
    if (r != NULL) {
      v += __ldg(r + i);
      if (blockIdx.x == 0)
        xo[i] = v;
    }
    ss += (double)v * v;
    return v * (off + __ldg(nw + k));
  }
  __device__ __forceinline__ void row_done(double *part, int t, double ss, bool first) const {
    for (int o = 16; o > 0; o >>= 1)
      ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) {
      double *p = part + (threadIdx.x >> 5) * 16 + t;
      *p = first ? ss : *p + ss;
    }
  }
  /* As kernels/ref's rmsnorm: 1 / sqrt(mean of squares + eps), in double. */
  __device__ __forceinline__ float scale(const double *part, int t, int K) const {
    double ss = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++)
      ss += part[w * 16 + t];
    return (float)(1.0 / sqrt(ss / K + (double)eps));
  }
};

/* x = act(gu[t, k]) * gu[t, K + k]: gu rows of 2K. */
struct ask__xp_glu {
  static constexpr bool kScaled = false;
  const float *gu;
  int act;

  __device__ __forceinline__ bool aligned() const { return ((uintptr_t)gu & 15) == 0; }
  static constexpr int kBatch = 8;
  struct raw4 {
    float4 a, b;
  };
  __device__ __forceinline__ raw4 load4(int t, int k, int K) const {
    const float *g = gu + (size_t)t * 2 * K + k;
    return raw4{__ldg(reinterpret_cast<const float4 *>(g)),
                __ldg(reinterpret_cast<const float4 *>(g + K))};
  }
  __device__ __forceinline__ float4 make4(const raw4 &v, int, int, int, double &) const {
    const float4 a = v.a, b = v.b;
    return make_float4(ask__act(a.x, act) * b.x, ask__act(a.y, act) * b.y,
                       ask__act(a.z, act) * b.z, ask__act(a.w, act) * b.w);
  }
  __device__ __forceinline__ float get1(int t, int k, int K, double &) const {
    const float *g = gu + (size_t)t * 2 * K + k;
    return ask__act(__ldg(g), act) * __ldg(g + K);
  }
  __device__ __forceinline__ void row_done(double *, int, double, bool) const {}
  __device__ __forceinline__ float scale(const double *, int, int) const { return 1.0f; }
};

/* Where column k of a staged chunk row goes. PERM (vector kernels): piece
 * c = k / 8 of group c / 32 has its first 4 floats at float4 slot
 * 64 (c / 32) + c % 32 and its last 4 at 32 slots further, so a warp's
 * 16-byte loads of one step read 512 consecutive bytes (no bank conflict);
 * otherwise in order. */
template <bool PERM>
static __device__ __forceinline__ int ask__slot(int k) {
  if (!PERM)
    return k;
  int c = k >> 3;
  return ((((c >> 5) << 6) + (((k >> 2) & 1) << 5) + (c & 31)) << 2) + (k & 3);
}

/* Every thread of the block: columns [k0, k0 + n) of x rows 0..T-1 into sh
 * (rows of kc floats), then each row's statistics into part. 16-byte
 * pieces go in batches of XP::kBatch a thread, every load of a batch
 * issued before the first piece is made (one L2 round trip a batch, not
 * one a piece: a 64 KB glu row of 8192 columns is 16 pieces a thread). */
template <bool PERM, class XP>
static __device__ __forceinline__ void ask__stage(const XP &xp, float *sh, double *part, int T,
                                                  int K, int k0, int n, int kc) {
  bool v4 = (K & 3) == 0 && xp.aligned(); /* the same for every thread */
  for (int t = 0; t < T; t++) {
    float *row = sh + (size_t)t * kc;
    double ss = 0.0;
    if (v4) {
      constexpr int B = XP::kBatch;
      const int st = 4 * blockDim.x;
      for (int j = 4 * threadIdx.x; j < n; j += B * st) {
        typename XP::raw4 raw[B] = {};
#pragma unroll
        for (int b = 0; b < B; b++)
          if (j + b * st < n)
            raw[b] = xp.load4(t, k0 + j + b * st, K);
#pragma unroll
        for (int b = 0; b < B; b++)
          if (j + b * st < n)
            *reinterpret_cast<float4 *>(row + ask__slot<PERM>(j + b * st)) =
                xp.make4(raw[b], t, k0 + j + b * st, K, ss);
      }
    } else {
      for (int j = threadIdx.x; j < n; j += blockDim.x)
        row[ask__slot<PERM>(j)] = xp.get1(t, k0 + j, K, ss);
    }
    xp.row_done(part, t, ss, k0 == 0);
  }
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

/* ---- the persistent kernels (T = 1) ---------------------------------------
 * At one row the product is a stream of weights, and what the kernels above
 * lose is the start and end of many short blocks: every block stages its x
 * (the fused kernels: x, r and the norm weight, 24 KB of L2 reads for an
 * 8-row block of a 2048-wide product) and every warp waits for its row's
 * one load before it can compute. Here the grid is at most
 * ask__cu_gemv_pw blocks an SM of ASK__PW_WARPS warps; a block stages x once
 * (policy XP, copy/norm/glu, the whole row: K <= ASK__PW_STAGE), and each
 * warp walks its rows n, n + G, ... (G warps in the grid) in steps of
 * 32 U pieces (K % (256 U) == 0), loading the next step's weights before
 * it multiplies the current one, across row ends too, so that every warp
 * has a step in flight all the time. Each lane sums its own pieces (two
 * accumulators), the warp reduces at a row's end. */
int ask__cu_sms = 0;   /* cuda_int.h: SMs of the device (backend.c) */
int ask__cu_gemv_pw = 2; /* cuda_int.h: blocks an SM of the persistent kernels; 0: not used */

#define ASK__PW_WARPS 8
#define ASK__PW_STAGE 16384 /* floats of x a block stages: K at most */

/* x = xin, as it is. */
struct ask__xp_copy {
  static constexpr bool kScaled = false;
  const float *x;

  __device__ __forceinline__ bool aligned() const { return ((uintptr_t)x & 15) == 0; }
  static constexpr int kBatch = 8;
  typedef float4 raw4;
  __device__ __forceinline__ raw4 load4(int t, int k, int K) const {
    return __ldg(reinterpret_cast<const float4 *>(x + (size_t)t * K + k));
  }
  __device__ __forceinline__ float4 make4(const raw4 &v, int, int, int, double &) const {
    return v;
  }
  __device__ __forceinline__ float get1(int t, int k, int K, double &) const {
    return __ldg(x + (size_t)t * K + k);
  }
  __device__ __forceinline__ void row_done(double *, int, double, bool) const {}
  __device__ __forceinline__ float scale(const double *, int, int) const { return 1.0f; }
};

/* ---- which rows a warp of the persistent kernel takes, and where each
 * finished row goes (RW). units(): work units in all; a warp takes units
 * gw, gw + G, ... (gw its index, G warps in the grid). begin(u, G) returns
 * the first row (-1: none); peek() the row after the current one (-1: no
 * more), which advance() then makes current; done(row, v) gets the current
 * row's finished value (in every lane; lane 0 writes). */

/* One unit a row: out[row] = v. */
struct ask__rw_rows {
  float *out;
  int N;
  int u, G;
  __host__ __device__ __forceinline__ int units() const { return N; }
  __device__ __forceinline__ int begin(int u0, int g) {
    u = u0, G = g;
    return u < N ? u : -1;
  }
  __device__ __forceinline__ int peek() const { return u + G < N ? u + G : -1; }
  __device__ __forceinline__ void advance() { u += G; }
  __device__ __forceinline__ void done(int row, float v, int lane) {
    if (lane == 0)
      out[row] = v;
  }
};

/* The fused qkv product's rope_kv (kernels.h's rope_kv on its one row, the
 * same arithmetic, so the same bits): a unit is a rotated pair, rows
 * h D + i and h D + i + D/2 of a q or k head (i < D/2, the second row
 * right after the first, so one warp holds both), or a v row. q pairs are
 * rotated in place in out; k pairs rotated and v rows are rounded to bf16
 * into row slot[0] of kc and vc (none when slot[0] < 0); the k and v rows
 * of out keep their unrotated values, as after rope_kv. */
struct ask__rw_rope {
  float *out;
  uint16_t *kc, *vc;
  const int32_t *pos, *slot;
  const float *inv_freq;
  int nh, nkv, D;
  int u, G, second;
  float x0;
  __host__ __device__ __forceinline__ int pairs() const { return (nh + nkv) * (D / 2); }
  __host__ __device__ __forceinline__ int units() const { return pairs() + nkv * D; }
  __device__ __forceinline__ int row0(int v) const {
    const int half = D / 2, P = pairs();
    return v < P ? (v / half) * D + v % half : (nh + nkv) * D + (v - P);
  }
  __device__ __forceinline__ int begin(int u0, int g) {
    u = u0, G = g, second = 0;
    return u < units() ? row0(u) : -1;
  }
  __device__ __forceinline__ int peek() const {
    if (u < pairs() && !second)
      return row0(u) + D / 2;
    return u + G < units() ? row0(u + G) : -1;
  }
  __device__ __forceinline__ void advance() {
    if (u < pairs() && !second) {
      second = 1;
    } else {
      u += G;
      second = 0;
    }
  }
  __device__ __forceinline__ void done(int row, float v, int lane) {
    const int P = pairs(), half = D / 2, kvd = nkv * D;
    const long long sl = (long long)slot[0];
    if (u >= P) { /* a v row */
      if (lane == 0) {
        out[row] = v;
        if (sl >= 0)
          vc[(size_t)sl * kvd + (u - P)] = ask__bf16_rn(v);
      }
      return;
    }
    if (!second) {
      x0 = v;
      return;
    }
    if (lane != 0)
      return;
    const int h = u / half, i = u - h * half;
    const float a = (float)pos[0] * inv_freq[i];
    const float c = (float)cos((double)a), sn = (float)sin((double)a);
    const float r0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(v, sn));
    const float r1 = __fadd_rn(__fmul_rn(v, c), __fmul_rn(x0, sn));
    if (h < nh) {
      out[row - half] = r0;
      out[row] = r1;
    } else {
      out[row - half] = x0;
      out[row] = v;
      if (sl >= 0) {
        uint16_t *dst = kc + (size_t)sl * kvd + (size_t)(h - nh) * D;
        dst[i] = ask__bf16_rn(r0);
        dst[i + half] = ask__bf16_rn(r1);
      }
    }
  }
};

template <int U, class XP, class RW>
static __global__ void __launch_bounds__(32 * ASK__PW_WARPS, 2)
    ask__k_gemv_pw(RW rw, const XP xp, const uint16_t *__restrict__ w,
                   const float *__restrict__ bias, int K) {
  extern __shared__ float4 ask__gemv_sh[];
  ask__pdl_start();
  double *part = reinterpret_cast<double *>(ask__gemv_sh);
  const float4 *sh = ask__gemv_sh + ASK__PW_WARPS * 8; /* W * 16 doubles */
  const int lane = threadIdx.x & 31, S = (K >> 3) / (32 * U);
  const uint4 *w4 = reinterpret_cast<const uint4 *>(w) + lane;
  int n = rw.begin(blockIdx.x * ASK__PW_WARPS + (threadIdx.x >> 5), gridDim.x * ASK__PW_WARPS);
  /* this lane's first piece of the current step */
  const uint4 *cur = w4 + (size_t)max(n, 0) * (K >> 3);
  /* the first step on its way to L2 before the PDL wait, into registers
   * while x is staged. Loading it into registers before the wait (allowed:
   * no kernel writes weights) measured 5% slower on an H200 at batch 1. */
#pragma unroll
  for (int u = 0; u < U; u++)
    ask__pf_l2(cur + 32 * u);
  ask__pdl_wait();
  uint4 p[U];
#pragma unroll
  for (int u = 0; u < U; u++)
    p[u] = ask__ld_w(cur + 32 * u);
  ask__stage<true>(xp, reinterpret_cast<float *>(ask__gemv_sh + ASK__PW_WARPS * 8), part, 1, K, 0,
                   K, K);
  __syncthreads();
  if (n < 0)
    return;
  const float sc = XP::kScaled ? xp.scale(part, 0, K) : 1.0f;
  float a0 = 0.0f, a1 = 0.0f;
  int s = 0;
  for (;;) {
    /* the next step: this row's next, or the first of the warp's next row */
    const bool last = s == S - 1;
    const int n1 = last ? rw.peek() : n;
    const uint4 *nxt = last ? w4 + (size_t)max(n1, 0) * (K >> 3) : cur + 32 * U;
    const bool more = n1 >= 0;
    uint4 q[U];
    if (more) {
#pragma unroll
      for (int u = 0; u < U; u++)
        q[u] = ask__ld_w(nxt + 32 * u);
    }
    /* piece c = lane + 32 g of the row: float4 64 g + lane, its second half 32 further */
    const float4 *xc = sh + 64 * U * s + lane;
#pragma unroll
    for (int u = 0; u < U; u += 2) {
      a0 = ask__dot8(a0, p[u], xc[64 * u], xc[64 * u + 32]);
      if (u + 1 < U)
        a1 = ask__dot8(a1, p[u + 1], xc[64 * (u + 1)], xc[64 * (u + 1) + 32]);
    }
    if (last) {
      float v = a0 + a1;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
      rw.done(n, v * sc + (bias != NULL ? bias[n] : 0.0f), lane);
      rw.advance();
      a0 = a1 = 0.0f;
    }
    if (!more)
      break;
#pragma unroll
    for (int u = 0; u < U; u++)
      p[u] = q[u];
    s = last ? 0 : s + 1;
    n = n1;
    cur = nxt;
  }
}

/* The persistent kernel's U for K (0: it cannot take K). */
static int ask__pw_unroll(int K) {
  if (K <= 0 || K > ASK__PW_STAGE)
    return 0;
  return K % 2048 == 0 ? 8 : K % 1024 == 0 ? 4 : K % 512 == 0 ? 2 : K % 256 == 0 ? 1 : 0;
}

static size_t ask__pw_smem(int K) {
  return (size_t)ASK__PW_WARPS * 16 * sizeof(double) + (size_t)K * sizeof(float);
}

/* Whether the persistent kernel takes a product of T rows, K columns and
 * weights w: one row, on, K as ask__pw_unroll, w 16-byte aligned. */
static int ask__pw_takes(int T, int K, const uint16_t *w) {
  return T == 1 && ask__cu_gemv_pw > 0 && ask__cu_sms > 0 && ask__pw_unroll(K) != 0 &&
         ((uintptr_t)w & 15) == 0;
}

/* The persistent kernel over rw's units (the caller checked ask__pw_takes):
 * units a warp so that the grid fits ask__cu_gemv_pw blocks an SM, then as
 * few warps as give every warp that many. */
template <class XP, class RW>
static void ask__gemv_pw_launch(cudaStream_t s, const RW &rw, int units, const XP &xp,
                                const uint16_t *w, const float *bias, int K) {
  long most = (long)ask__cu_sms * ask__cu_gemv_pw * ASK__PW_WARPS;
  long rpw = ((long)units + most - 1) / most, warps = ((long)units + rpw - 1) / rpw;
  unsigned grid = (unsigned)((warps + ASK__PW_WARPS - 1) / ASK__PW_WARPS);
  size_t smem = ask__pw_smem(K);
  dim3 b(32 * ASK__PW_WARPS);
  switch (ask__pw_unroll(K)) {
  case 8:
    ASK__LAUNCH(grid, b, smem, s, ask__k_gemv_pw<8, XP, RW>)(rw, xp, w, bias, K);
    break;
  case 4:
    ASK__LAUNCH(grid, b, smem, s, ask__k_gemv_pw<4, XP, RW>)(rw, xp, w, bias, K);
    break;
  case 2:
    ASK__LAUNCH(grid, b, smem, s, ask__k_gemv_pw<2, XP, RW>)(rw, xp, w, bias, K);
    break;
  default:
    ASK__LAUNCH(grid, b, smem, s, ask__k_gemv_pw<1, XP, RW>)(rw, xp, w, bias, K);
  }
}

/* The persistent kernel for a plain one-row product when it takes the
 * shape: returns 1 when launched. */
template <class XP>
static int ask__gemv_pw(cudaStream_t s, float *out, const XP &xp, const uint16_t *w,
                        const float *bias, int T, int K, int N) {
  if (!ask__pw_takes(T, K, w))
    return 0;
  ask__rw_rows rw = {out, N, 0, 0};
  ask__gemv_pw_launch(s, rw, N, xp, w, bias, K);
  return 1;
}

template <class XP, class RW> static cudaError_t ask__pw_attr(void) {
  int most = (int)ask__pw_smem(ASK__PW_STAGE);
  cudaError_t e = cudaSuccess;
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(ask__k_gemv_pw<8, XP, RW>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, most);
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(ask__k_gemv_pw<4, XP, RW>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, most);
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(ask__k_gemv_pw<2, XP, RW>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, most);
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(ask__k_gemv_pw<1, XP, RW>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, most);
  return e;
}

/* cuda_int.h: the persistent kernels' shared-memory limit raised (once,
 * before any capture), ask__cu_sms set. */
extern "C" cudaError_t ask__cu_gemv_init(int sms) {
  cudaError_t e = ask__pw_attr<ask__xp_copy, ask__rw_rows>();
  if (e == cudaSuccess)
    e = ask__pw_attr<ask__xp_norm, ask__rw_rows>();
  if (e == cudaSuccess)
    e = ask__pw_attr<ask__xp_glu, ask__rw_rows>();
  if (e == cudaSuccess)
    e = ask__pw_attr<ask__xp_norm, ask__rw_rope>();
  ask__cu_sms = e == cudaSuccess ? sms : 0;
  return e;
}

/* cuda_int.h: norm_matmul_bf16 of one row into the qkv row out ((nh + 2 nkv)
 * D outputs) with rope_kv fused (ask__rw_rope), when the persistent kernel
 * takes the shape and D is even: returns 1 when launched, 0 when the
 * caller must run the two ops. */
extern "C" int ask__cu_gemv_norm_rope_bf16(cudaStream_t s, float *out, float *xo, const float *x,
                                           const float *r, const float *nw, float eps,
                                           float w_offset, const uint16_t *w, const float *bias,
                                           int T, int K, uint16_t *kc, uint16_t *vc,
                                           const int32_t *pos, const int32_t *slot,
                                           const float *inv_freq, int nh, int nkv, int D) {
  if (ask__cu_failed() || !ask__pw_takes(T, K, w) || D <= 0 || D % 2 != 0 || nh <= 0 ||
      nkv <= 0 || kc == NULL || vc == NULL)
    return 0;
  ask__xp_norm xp = {x, r, nw, r != NULL ? xo : NULL, eps, w_offset};
  ask__rw_rope rw = {out, kc, vc, pos, slot, inv_freq, nh, nkv, D, 0, 0, 0, 0.0f};
  ask__gemv_pw_launch(s, rw, rw.units(), xp, w, bias, K);
  ASK__LAUNCHED("gemv_norm_rope_bf16");
  return 1;
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
  if (vec && ask__gemv_pw(s, out, ask__xp_copy{x}, w, bias, T, K, N)) {
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
  if (ask__gemv_pw(s, out, xp, w, bias, T, K, N)) {
    /* launched */
  } else if (!vec) {
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
  ask__xp_norm xp = {x, r, nw, r != NULL ? xo : NULL, eps, w_offset};
  if (ask__gemv_fused(s, out, xp, w, bias, T, K, N)) {
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
  if (ask__gemv_fused(s, out, xp, w, bias, T, F, N)) {
    ask__cu_check(cudaErrorInvalidValue, "gemv_glu_bf16: more than 16 rows or F < 1");
    return;
  }
  ASK__LAUNCHED("gemv_glu_bf16");
}

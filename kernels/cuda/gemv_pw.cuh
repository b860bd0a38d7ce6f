/* gemv_pw.cuh — what the persistent one-row kernels share (gemv_pw.cu, one
 * product a launch; gemv_chain.cu, several dependent products a launch):
 * the row orders (which rows a warp takes, where a finished row goes) and
 * a block's walk (stage x once, stream the warp's rows). Internal to
 * kernels/cuda.
 */
#ifndef ASK_CUDA_GEMV_PW_CUH
#define ASK_CUDA_GEMV_PW_CUH

#include "gemv.cuh"

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
#define ASK__PW_WARPS 8
#define ASK__PW_STAGE 16384 /* floats of x a block stages: K at most */

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

/* The fused gate/up product's gated activation (kernels.h's glu_rows on
 * its one row, the same arithmetic, so the same bits): unit i is the pair
 * of rows i (gate) and F + i (up), one warp holding both; g[i] =
 * act(gate) * up. The gate/up values themselves are not written. */
struct ask__rw_glu {
  float *g;
  int F, act;
  int u, G, second;
  float x0;
  __host__ __device__ __forceinline__ int units() const { return F; }
  __device__ __forceinline__ int begin(int u0, int gw) {
    u = u0, G = gw, second = 0;
    return u < F ? u : -1;
  }
  __device__ __forceinline__ int peek() const {
    if (!second)
      return F + u;
    return u + G < F ? u + G : -1;
  }
  __device__ __forceinline__ void advance() {
    if (!second) {
      second = 1;
    } else {
      u += G;
      second = 0;
    }
  }
  __device__ __forceinline__ void done(int, float v, int lane) {
    if (!second)
      x0 = v;
    else if (lane == 0)
      g[u] = ask__act(x0, act) * v;
  }
};

/* a0, a1 += a step's U pieces p times their 8 floats of staged x (xc: the
 * lane's first slot; piece u's halves at 64 u and 64 u + 32), alternate
 * pieces into the two accumulators. */
template <int U>
static __device__ __forceinline__ void ask__pw_dot_step(float &a0, float &a1, const uint4 (&p)[U],
                                                        const float4 *xc) {
#pragma unroll
  for (int u = 0; u < U; u += 2) {
    a0 = ask__dot8(a0, p[u], xc[64 * u], xc[64 * u + 32]);
    if (u + 1 < U)
      a1 = ask__dot8(a1, p[u + 1], xc[64 * (u + 1)], xc[64 * (u + 1) + 32]);
  }
}

/* The sum of v over the warp, in every lane. */
static __device__ __forceinline__ float ask__warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* A block's walk: x staged (policy xp, the whole row of K) into sm, then
 * each warp computes its rows from n (rw begun; n its first row, -1: none)
 * with p holding the first step of row n (loaded by the caller, so that it
 * can be in flight before a wait). sm: ASK__PW_WARPS * 8 float4 of the
 * norm's partial sums, then K floats. Every thread of the block calls it. */
template <int U, class XP, class RW>
static __device__ __forceinline__ void ask__pw_walk(RW &rw, const XP &xp,
                                                    const uint16_t *__restrict__ w,
                                                    const float *__restrict__ bias, int K, int n,
                                                    uint4 (&p)[U], float4 *sm) {
  double *part = reinterpret_cast<double *>(sm);
  const float4 *sh = sm + ASK__PW_WARPS * 8; /* W * 16 doubles */
  const int lane = threadIdx.x & 31, S = (K >> 3) / (32 * U);
  const uint4 *w4 = reinterpret_cast<const uint4 *>(w) + lane;
  /* this lane's first piece of the current step */
  const uint4 *cur = w4 + (size_t)max(n, 0) * (K >> 3);
  ask__stage<true>(xp, reinterpret_cast<float *>(sm + ASK__PW_WARPS * 8), part, 1, K, 0, K, K);
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
    ask__pw_dot_step<U>(a0, a1, p, sh + 64 * U * s + lane);
    if (last) {
      const float v = ask__warp_sum(a0 + a1);
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
  int u = K % 2048 == 0 ? 8 : K % 1024 == 0 ? 4 : K % 512 == 0 ? 2 : K % 256 == 0 ? 1 : 0;
  while (u > 1 && u > ask__cu_pw_umax)
    u /= 2;
  return u;
}

static inline __host__ __device__ size_t ask__pw_smem(int K) {
  return (size_t)ASK__PW_WARPS * 16 * sizeof(double) + (size_t)K * sizeof(float);
}

/* Whether the persistent kernel takes a product of T rows, K columns and
 * weights w: one row, on, K as ask__pw_unroll, w 16-byte aligned. */
static inline int ask__pw_takes(int T, int K, const uint16_t *w) {
  return T == 1 && ask__cu_gemv_pw > 0 && ask__cu_sms > 0 && ask__pw_unroll(K) != 0 &&
         ((uintptr_t)w & 15) == 0;
}

#endif /* ASK_CUDA_GEMV_PW_CUH */

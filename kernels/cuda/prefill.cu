/* prefill.cu — attention of one prefill chunk over the paged bf16 KV cache
 * (the attention_prefill op of kernels.h): n query rows of ONE sequence at
 * positions p0 .. p0 + n - 1, row i seeing keys 0 .. p0 + i, key j at cache
 * row pages[j / page] * page + j % page (rows of nkv*D bf16, kv head g at
 * columns [g*D, g*D+D)); query head h reads kv head h / (nh / nkv). D even
 * and <= 256, scores and softmax in f32. The same result as attention_paged
 * on those rows (kernels/ref/dev.c's pf_run is the twin).
 *
 * Why a kernel of its own: attention_paged gives every query row its own
 * block(s) that read all the row's keys, so a prompt of n rows reads about
 * n^2 / 2 (key, value) rows per kv head (Llama-3.2-1B, 2048 rows: ~4 GB of
 * L2 traffic a layer). Here a block takes a tile of query rows (all the
 * query heads of one kv head at once) and streams the keys 0 .. (the tile's
 * last position) through shared memory once: flash attention's tiling, on
 * CUDA cores, in f32.
 *
 * Block: 256 threads (8 warps), one kv head g, a chunk of Gc of its G query
 * heads (Gc = G when G <= 16, else balanced chunks of at most 16), and BR =
 * 64 / Gc consecutive query rows r0 .. r0 + BR - 1: M = 64 "pairs" (row,
 * head), pair m = row * Gc + head (m >= BR * Gc, rows >= n and heads past
 * the chunk are padding: zero queries, the position of the block's last
 * row, never written). So gemma-2b (G 8) takes 8 rows, Llama-3.2-1B (G 4)
 * 16, Qwen2-0.5B (G 7) 9 (63 pairs), multi-head models 64. Blocks are
 * numbered so that the row tiles with the most keys start first (the
 * causal triangle makes the last tiles the longest).
 *
 * Warp w owns pairs 8w .. 8w + 7, for the whole kernel: lane = 16 * mg + ln
 * (mg 0/1, ln 0..15) holds pairs mb .. mb + 3, mb = 8w + 4 mg, and
 *   scores   keys ln*TN .. ln*TN + TN - 1 of the tile (TN = BC / 16): a
 *            4 x TN register tile of S = Q K^T, per dim one 16-byte load
 *            of the 4 queries (a broadcast: 2 addresses a warp) and one
 *            TN-wide load of the keys (16 addresses, consecutive);
 *   softmax  per pair: the tile max over the 16 lanes of the half warp
 *            (shuffles), the running max m (the same in those 16 lanes),
 *            corr = exp(m_old - m), p = exp(s - m), and a lane-partial
 *            running sum l (reduced once, at the end); no block barrier;
 *   values   dims ln*4 + 64t .. +3 (t < DP/64) of the 4 pairs: a 4 x DP/16
 *            register tile of O += P V, per key one 16-byte load of the 4
 *            weights (a broadcast) and DP/64 16-byte loads of the value row
 *            (16 consecutive chunks a half warp).
 * The weights P go through a per-warp shared buffer ([TN][16][8] floats,
 * the write conflict-free), since the lanes of a pair split the keys in the
 * score phase and the dims in the value phase.
 *
 * Shared memory (dynamic, f32):
 *   Qt  [DP][64]   the queries, transposed (dims past D zero), loaded once;
 *   KV  [DP*BC]    the K tile transposed, Kt[d][key ^ 4*((d/8)%8)] (the
 *                  XOR swizzle makes both the transposing stores and the
 *                  score loads conflict-free), then the V tile, [key][DP],
 *                  in the same space;
 *   P   [8][BC*8]  the weights;  srow [BC] the tile's cache rows.
 * Tiles: BC = 64 keys for DP = 64 and 128, 32 for DP = 256 (DP: D rounded
 * up to 64, 128 or 256, a template argument; loops over dims stop at D
 * rounded up to 8). 48, 80 and 104 KB.
 * Registers (sm_90a, CUDA 13, -Xptxas -v), with the launch bounds' blocks
 * an SM: DP 64: 80, no spills (3 blocks, 24 warps); DP 128: 128, 68 bytes
 * of spills (the staged K chunks, once a tile; 2 blocks); DP 256: 128, 28
 * bytes (block constants; 2 blocks: 64 accumulators + 16 staged words).
 * The score and value loops themselves never touch local memory; their
 * unroll factors are the ones that keep it so.
 *
 * Per key tile (4 barriers; K and V are staged in registers so that their
 * global loads are in flight during the phase before they are stored):
 *   [A] barrier; K tile (registers) -> Kt; barrier
 *   [B] issue the V tile's loads; scores (masked on diagonal tiles only:
 *       those holding a key past the block's first row), softmax, P
 *   [C] barrier; V tile (registers) -> KV; the next tile's cache rows ->
 *       srow (one division each); barrier
 *   [D] issue the next K tile's loads; rescale O by corr; O += P V.
 * A tile's chunk x (16 bytes: 8 dims of one key) is loaded by warp-group
 * x / 32, lane = 8 * (key % 4) + (chunk % 8): a warp reads 4 keys x 128
 * contiguous bytes. 16-byte __ldg when D % 8 == 0 and the caches are
 * 16-byte aligned, bf16 pairs otherwise; keys past the block's last row are
 * never loaded (zeros), nor their page entries read.
 *
 * Work: 2 * 64 * BC * D FMAs a tile for 2 * BC * D bf16 read (from L2):
 * Llama-3.2-1B, 2048 rows, reads a key 64 times a kv head on average (once
 * per row tile at or past it) instead of 1024 (once per row): 0.27 GB a
 * layer instead of 4.3.
 * Per dim the score loop issues 4 * TN FMAs and 2 shared loads, per key the
 * value loop 4 * DP/16 FMAs and 1 + DP/64 loads: 16:2 (D 64) and 8:2 /
 * 64:5 (D 256), so the FMA pipe, not shared memory, should be the limit.
 * A tensor-core version (mma.sync m16n8k16 bf16 for Q K^T and P V with f32
 * accumulation, as FlashAttention-2) would cut the ~4 ms of f32 FMAs per
 * 2048-token Llama-3.2-1B prompt (16 layers at the H100's ~34 T FMA/s)
 * to well under 1 ms, at the cost of rounding q and p to bf16 (a looser
 * tolerance than 1e-4) and of code the CPU emulator (tests/cudaemu) cannot
 * run; this version keeps the f32 results of the twin.
 *
 * Limits: the grid has n / BR * nkv blocks (times the head chunks), and a
 * block walks all the keys of its rows. Long chunks of the model shapes
 * give plenty (Llama-3.2-1B, 2048 rows: 1024 blocks; gemma-2b: 256, about
 * one wave at 2 blocks an SM, so the causal imbalance shows). A short chunk
 * continuing a long sequence (16 rows at p0 = 2000) gives nkv * nchunk
 * blocks that each read all p0 keys: fewer blocks than attention_paged,
 * which has a block per row. Splitting the keys over blocks and merging
 * the parts (attention.cu's merge) would fix both, but needs scratch memory
 * that the op does not take.
 */
#include "common.cuh"

#define ASK__PF_T 256   /* threads a block (8 warps) */
#define ASK__PF_M 64    /* (row, head) pairs a block: 8 per warp */
#define ASK__PF_GMAX 16 /* query heads a block at most */

/* The two floats of a bf16 pair (the lower address in the low half); as
 * paged.cu's. */
static __device__ __forceinline__ float ask__pf_lo(uint32_t u) {
  return __uint_as_float(u << 16);
}
static __device__ __forceinline__ float ask__pf_hi(uint32_t u) {
  return __uint_as_float(u & 0xffff0000u);
}

/* Dims [c8, c8 + 8) of the cache row r (bf16), zeros past D: one 16-byte
 * load when vec16, else bf16 pairs (D is even); as paged.cu's. */
static __device__ __forceinline__ uint4 ask__pf_chunk(const uint16_t *r, int c8, int D,
                                                      int vec16) {
  if (vec16)
    return c8 < D ? __ldg(reinterpret_cast<const uint4 *>(r + c8)) : make_uint4(0u, 0u, 0u, 0u);
  const uint32_t *w = reinterpret_cast<const uint32_t *>(r + c8);
  return make_uint4(c8 < D ? __ldg(w) : 0u, c8 + 2 < D ? __ldg(w + 1) : 0u,
                    c8 + 4 < D ? __ldg(w + 2) : 0u, c8 + 6 < D ? __ldg(w + 3) : 0u);
}

/* Cache row of key j of the page list. */
static __device__ __forceinline__ int ask__pf_row(const int32_t *pages, int j, int page) {
  int pi = j / page;
  return pages[pi] * page + (j - pi * page);
}

/* Tile key and chunk of this thread's staged chunk r (see the header). */
template <int BC>
static __device__ __forceinline__ void ask__pf_slot(int r, int wid, int lane, int &key, int &c) {
  const int gi = wid + 8 * r;
  key = (gi % (BC / 4)) * 4 + (lane >> 3);
  c = (gi / (BC / 4)) * 8 + (lane & 7);
}

/* Loads this thread's chunks of the tile at jt0 (keys < jend) of the kv
 * head's cache columns base. */
template <int BC, int NPER>
static __device__ __forceinline__ void ask__pf_stage(uint4 *stg, const uint16_t *base,
                                                     const int *srow, int jt0, int jend,
                                                     size_t kvd, int D, int vec16, int wid,
                                                     int lane) {
#pragma unroll
  for (int r = 0; r < NPER; r++) {
    int key, c;
    ask__pf_slot<BC>(r, wid, lane, key, c);
    stg[r] = jt0 + key < jend ? ask__pf_chunk(base + (size_t)srow[key] * kvd, c * 8, D, vec16)
                              : make_uint4(0u, 0u, 0u, 0u);
  }
}

template <int DP, int BC>
static __global__ void __launch_bounds__(ASK__PF_T, DP == 64 ? 3 : 2)
    ask__k_attention_prefill(float *out, const float *q, const uint16_t *kc, const uint16_t *vc,
                             const int32_t *pages, int p0, int n, int nh, int nkv, int D,
                             int q_stride, int page, float scale, int Gc, int nchunk, int BR,
                             int vec16, int vecq) {
  ask__pdl_enter();
  constexpr int TN = BC / 16;             /* keys a lane in the score phase */
  constexpr int NT4 = DP / 64;            /* 16-byte dim chunks a lane in the value phase */
  constexpr int NPER = BC * DP / 2048;    /* staged 16-byte chunks a thread */
  constexpr int M = ASK__PF_M;
  extern __shared__ float4 ask__pf_sh[];
  float *Qt = reinterpret_cast<float *>(ask__pf_sh);     /* [DP][M] */
  float *KV = Qt + DP * M;                               /* Kt [DP][BC] | V [BC][DP] */
  float *P = KV + DP * BC;                               /* [8 warps][TN][16][8] */
  int *srow = reinterpret_cast<int *>(P + M * BC);      /* [BC] */

  const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
  const int ln = lane & 15, mg = lane >> 4, mb = wid * 8 + mg * 4;
  const int nhc = nkv * nchunk, hcg = (int)(blockIdx.x % (unsigned)nhc);
  const int rt = (int)(gridDim.x / (unsigned)nhc) - 1 - (int)(blockIdx.x / (unsigned)nhc);
  const int g = hcg / nchunk, hc = hcg - g * nchunk;
  const int G = nh / nkv, h0 = g * G + hc * Gc, Gn = min(Gc, G - hc * Gc);
  const int r0 = rt * BR, rn = min(BR, n - r0); /* the block's rows */
  const int jend = p0 + r0 + rn;                /* keys 0 .. jend - 1 */
  const int ntile = (jend + BC - 1) / BC;
  const size_t kvd = (size_t)nkv * (size_t)D;
  const uint16_t *kg = kc + (size_t)g * D, *vg = vc + (size_t)g * D;

  /* The queries, transposed: pair m = x % 64 (consecutive lanes,
   * conflict-free stores), 4 dims (vecq) or 1 a step. */
  {
    const float *qb = q + (size_t)h0 * D;
    const int per = vecq ? 4 : 1;
    for (int x = tid; x < (DP / per) * M; x += ASK__PF_T) {
      const int m = x % M, d = x / M * per, row = m / Gc, hh = m - row * Gc;
      const bool ok = row < rn && hh < Gn && d < D;
      const float *src = qb + (size_t)(r0 + row) * q_stride + (size_t)hh * D + d;
      if (vecq) {
        float4 v = ok ? __ldg(reinterpret_cast<const float4 *>(src)) : make_float4(0, 0, 0, 0);
        Qt[(d + 0) * M + m] = v.x;
        Qt[(d + 1) * M + m] = v.y;
        Qt[(d + 2) * M + m] = v.z;
        Qt[(d + 3) * M + m] = v.w;
      } else {
        Qt[d * M + m] = ok ? __ldg(src) : 0.0f;
      }
    }
  }
  float mrun[4], lrun[4], acc[4][NT4 * 4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    mrun[i] = -INFINITY;
    lrun[i] = 0.0f;
#pragma unroll
    for (int e = 0; e < NT4 * 4; e++)
      acc[i][e] = 0.0f;
  }
  const int Dq = (D + 7) & ~7; /* the score loop's dims (zeros past D) */
  float *Pw = P + wid * (BC * 8);

  uint4 stg[NPER];
  if (tid < BC && tid < jend)
    srow[tid] = ask__pf_row(pages, tid, page);
  __syncthreads();
  ask__pf_stage<BC, NPER>(stg, kg, srow, 0, jend, kvd, D, vec16, wid, lane);

  for (int it = 0; it < ntile; it++) {
    const int jt0 = it * BC, jn = jt0 + BC;
    /* [A] the K tile, transposed and swizzled */
    __syncthreads();
#pragma unroll
    for (int r = 0; r < NPER; r++) {
      int key, c;
      ask__pf_slot<BC>(r, wid, lane, key, c);
      const uint4 u = stg[r];
      const int col = key ^ (4 * (c & 7));
      float *dst = KV + (c * 8) * BC + col;
      dst[0 * BC] = ask__pf_lo(u.x), dst[1 * BC] = ask__pf_hi(u.x);
      dst[2 * BC] = ask__pf_lo(u.y), dst[3 * BC] = ask__pf_hi(u.y);
      dst[4 * BC] = ask__pf_lo(u.z), dst[5 * BC] = ask__pf_hi(u.z);
      dst[6 * BC] = ask__pf_lo(u.w), dst[7 * BC] = ask__pf_hi(u.w);
    }
    __syncthreads();

    /* [B] the V tile's loads, in flight during the scores */
    ask__pf_stage<BC, NPER>(stg, vg, srow, jt0, jend, kvd, D, vec16, wid, lane);
    float s[4][TN];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int k = 0; k < TN; k++)
        s[i][k] = 0.0f;
    for (int d0 = 0; d0 < Dq; d0 += 8) {
      const int col = (ln * TN) ^ (4 * ((d0 >> 3) & 7));
#pragma unroll(DP == 128 ? 4 : 8) /* 8 spills at DP 128 */
      for (int e = 0; e < 8; e++) {
        const float4 qv = *reinterpret_cast<const float4 *>(Qt + (d0 + e) * M + mb);
        const float *kr = KV + (d0 + e) * BC + col;
        float kv[TN];
        if constexpr (TN == 4) {
          const float4 k4 = *reinterpret_cast<const float4 *>(kr);
          kv[0] = k4.x, kv[1] = k4.y, kv[2] = k4.z, kv[3] = k4.w;
        } else {
          const float2 k2 = *reinterpret_cast<const float2 *>(kr);
          kv[0] = k2.x, kv[TN - 1] = k2.y;
        }
#pragma unroll
        for (int k = 0; k < TN; k++) {
          s[0][k] += qv.x * kv[k];
          s[1][k] += qv.y * kv[k];
          s[2][k] += qv.z * kv[k];
          s[3][k] += qv.w * kv[k];
        }
      }
    }
    /* Softmax of the tile, per pair over the 16 lanes of the half warp. */
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int k = 0; k < TN; k++)
        s[i][k] *= scale;
    if (jn - 1 > p0 + r0) /* a key past the block's first row: mask */
#pragma unroll
      for (int i = 0; i < 4; i++) {
        /* the pair's last key (padding pairs: the block's last row's) */
        const int last = p0 + r0 + min((mb + i) / Gc, rn - 1) - jt0 - ln * TN;
#pragma unroll
        for (int k = 0; k < TN; k++)
          if (k > last)
            s[i][k] = -INFINITY;
      }
    float corr[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float mx = -INFINITY;
#pragma unroll
      for (int k = 0; k < TN; k++)
        mx = fmaxf(mx, s[i][k]);
#pragma unroll
      for (int o = 1; o < 16; o <<= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      /* finite: key 0 is in every pair's first tile */
      const float mn = fmaxf(mrun[i], mx);
      corr[i] = mrun[i] == -INFINITY ? 0.0f : expf(mrun[i] - mn);
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < TN; k++) {
        const float p = s[i][k] == -INFINITY ? 0.0f : expf(s[i][k] - mn);
        s[i][k] = p;
        sum += p;
      }
      lrun[i] = lrun[i] * corr[i] + sum;
      mrun[i] = mn;
    }
#pragma unroll
    for (int k = 0; k < TN; k++)
      *reinterpret_cast<float4 *>(Pw + (k * 16 + ln) * 8 + mg * 4) =
          make_float4(s[0][k], s[1][k], s[2][k], s[3][k]);

    /* [C] the V tile; the next tile's cache rows */
    __syncthreads();
#pragma unroll
    for (int r = 0; r < NPER; r++) {
      int key, c;
      ask__pf_slot<BC>(r, wid, lane, key, c);
      const uint4 u = stg[r];
      float4 *dst = reinterpret_cast<float4 *>(KV + key * DP + c * 8);
      dst[0] = make_float4(ask__pf_lo(u.x), ask__pf_hi(u.x), ask__pf_lo(u.y), ask__pf_hi(u.y));
      dst[1] = make_float4(ask__pf_lo(u.z), ask__pf_hi(u.z), ask__pf_lo(u.w), ask__pf_hi(u.w));
    }
    if (tid < BC && jn + tid < jend)
      srow[tid] = ask__pf_row(pages, jn + tid, page);
    __syncthreads();

    /* [D] the next K tile's loads, in flight during the values */
    if (jn < jend)
      ask__pf_stage<BC, NPER>(stg, kg, srow, jn, jend, kvd, D, vec16, wid, lane);
#pragma unroll
    for (int i = 0; i < 4; i++)
      if (corr[i] != 1.0f)
#pragma unroll
        for (int e = 0; e < NT4 * 4; e++)
          acc[i][e] *= corr[i];
    const float *Pr = Pw + mg * 4;
    const float *Vr = KV + ln * 4;
#pragma unroll
    for (int k = 0; k < TN; k++)
#pragma unroll(4 / NT4 > 0 ? 4 / NT4 : 1) /* more spills at DP 256 */
      for (int l2 = 0; l2 < 16; l2++) {
        const float4 p = *reinterpret_cast<const float4 *>(Pr + (k * 16 + l2) * 8);
        const float *vrow = Vr + (l2 * TN + k) * DP;
#pragma unroll
        for (int t = 0; t < NT4; t++) {
          const float4 v = *reinterpret_cast<const float4 *>(vrow + 64 * t);
          acc[0][4 * t + 0] += p.x * v.x, acc[0][4 * t + 1] += p.x * v.y;
          acc[0][4 * t + 2] += p.x * v.z, acc[0][4 * t + 3] += p.x * v.w;
          acc[1][4 * t + 0] += p.y * v.x, acc[1][4 * t + 1] += p.y * v.y;
          acc[1][4 * t + 2] += p.y * v.z, acc[1][4 * t + 3] += p.y * v.w;
          acc[2][4 * t + 0] += p.z * v.x, acc[2][4 * t + 1] += p.z * v.y;
          acc[2][4 * t + 2] += p.z * v.z, acc[2][4 * t + 3] += p.z * v.w;
          acc[3][4 * t + 0] += p.w * v.x, acc[3][4 * t + 1] += p.w * v.y;
          acc[3][4 * t + 2] += p.w * v.z, acc[3][4 * t + 3] += p.w * v.w;
        }
      }
  }

  /* out = acc / l for the block's real pairs. */
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float l = lrun[i];
#pragma unroll
    for (int o = 1; o < 16; o <<= 1)
      l += __shfl_xor_sync(0xffffffffu, l, o);
    const int m = mb + i, row = m / Gc, hh = m - row * Gc;
    if (row >= rn || hh >= Gn)
      continue;
    float *dst = out + (size_t)(r0 + row) * nh * D + (size_t)(h0 + hh) * D;
#pragma unroll
    for (int t = 0; t < NT4; t++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int d = ln * 4 + 64 * t + e;
        if (d < D)
          dst[d] = l > 0.0f ? acc[i][4 * t + e] / l : 0.0f;
      }
  }
}

/* Bytes of dynamic shared memory of the <DP, BC> kernel. */
static size_t ask__pf_smem(int DP, int BC) {
  return ((size_t)DP * ASK__PF_M + (size_t)DP * BC + (size_t)ASK__PF_M * BC) * sizeof(float) +
         (size_t)BC * sizeof(int);
}

extern "C" void ask__cu_attention_prefill(cudaStream_t s, float *out, const float *q,
                                          const uint16_t *kc, const uint16_t *vc,
                                          const int32_t *pages, int p0, int n, int nh, int nkv,
                                          int D, int q_stride, int page, float scale) {
  if (n <= 0 || ask__cu_failed())
    return;
  if (D <= 0 || D % 2 != 0 || D > 256 || nkv <= 0 || nh <= 0 || nh % nkv != 0 || page <= 0 ||
      p0 < 0 || q_stride < nh * D || p0 > INT32_MAX - n) {
    ask__cu_check(cudaErrorInvalidValue,
                  "attention_prefill: head_dim odd or over 256, bad head counts, page size, "
                  "position or query stride");
    return;
  }
  const int G = nh / nkv, nchunk = (G + ASK__PF_GMAX - 1) / ASK__PF_GMAX;
  const int Gc = (G + nchunk - 1) / nchunk, BR = ASK__PF_M / Gc;
  const long rtiles = (n + BR - 1) / BR, blocks = rtiles * nkv * nchunk;
  if (blocks > INT32_MAX) {
    ask__cu_check(cudaErrorInvalidValue, "attention_prefill: too many blocks");
    return;
  }
  const int vec16 = D % 8 == 0 && ((uintptr_t)kc | (uintptr_t)vc) % 16 == 0;
  const int vecq = D % 4 == 0 && q_stride % 4 == 0 && (uintptr_t)q % 16 == 0;
  const int DP = D <= 64 ? 64 : D <= 128 ? 128 : 256;
  static int attr_set[3]; /* the dynamic shared memory limit raised, per instance */
#define ASK__PF_LAUNCH(DPV, BCV, I)                                                          \
  do {                                                                                       \
    const size_t smem = ask__pf_smem(DPV, BCV);                                              \
    if (!attr_set[I]) {                                                                      \
      if (ask__cu_check(cudaFuncSetAttribute(ask__k_attention_prefill<DPV, BCV>,             \
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,    \
                                             (int)smem),                                     \
                        "attention_prefill: cudaFuncSetAttribute"))                          \
        return;                                                                              \
      attr_set[I] = 1;                                                                       \
    }                                                                                        \
    ASK__LAUNCH((unsigned)blocks, ASK__PF_T, smem, s, ask__k_attention_prefill<DPV, BCV>)(   \
        out, q, kc, vc, pages, p0, n, nh, nkv, D, q_stride, page, scale, Gc, nchunk, BR,     \
        vec16, vecq);                                                                        \
  } while (0)
  if (DP == 64)
    ASK__PF_LAUNCH(64, 64, 0);
  else if (DP == 128)
    ASK__PF_LAUNCH(128, 64, 1);
  else
    ASK__PF_LAUNCH(256, 32, 2);
#undef ASK__PF_LAUNCH
  ASK__LAUNCHED("attention_prefill");
}

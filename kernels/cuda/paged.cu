/* paged.cu — attention over the paged bf16 KV cache (the attention_paged op
 * of kernels.h): T query rows, each of its own sequence (page list
 * table[seq[t] * table_width ...]) at its own position pos[t], so decode
 * rows of many sequences and prefill chunks run in one launch.
 *
 * Both kernels below cut the keys 0..pos[t] of a row into nsplit equal
 * parts (nsplit fixed by the caller), each of at least kmin keys
 * (ask__pg_kmin: ask__cu_split_min keys, or ask__cu_split_kb KB of keys
 * and values; a launch argument; so a short row fills fewer parts
 * and the others have no key: at 130 keys, 32 parts and kmin 64, 3 blocks
 * do the work instead of 32 doing 4 keys each, and the merge reads 3
 * partials, not 32), and, with nsplit > 1, write one partial
 * (m, l, acc[D]) per (row, query head, part); the block that finishes last
 * among the nsplit parts of its (heads, row) merges them into out
 * (ask__pg_merge_last: a ticket from a per-(block, row) counter that the
 * merging block sets back to 0), so a split step is one launch, not two
 * (at batch 1 that is one launch less per layer). Without the counters
 * (ask__cu_paged_init not called, or more than ASK__PG_NCNT (block, row)
 * pairs) attention.cu's merge kernel combines them after. A part (or a
 * whole row: pos[t] < 0) with no key has max -inf and weighs 0; a row with
 * no key gets zeros. The launcher picks
 * the kernel and its shape from the scalar arguments only, so a captured
 * step stays valid for whatever lengths and positions the device buffers
 * hold later. D even and <= 256; scores and softmax in f32.
 *
 * Per-head kernel (ask__k_attention_paged, the design of attention.cu): one
 * block of 4 warps per (query head, row, part); the keys are dealt to the
 * warps, each warp keeps an online softmax (running max, sum and a D-wide
 * accumulator, lane holding the pairs of dims 2*lane + 64*r) and the 4
 * warps merge in shared memory. Keys and values are read as bf16 pairs (4
 * bytes a lane), two keys at a time. With grouped-query attention it reads
 * every key and value row of a kv head once per query head of the group
 * (G = nh / nkv times), so it serves G == 1 only, and the grouped kernel's
 * fallback when there are too few blocks to share (below).
 *
 * Grouped kernel (ask__k_attention_paged_grouped<GB>): one block of 256
 * threads per (kv head g, chunk of up to 8 of its query heads, row, part)
 * reads each key and value row of its part once and serves every query head
 * of the chunk. GB (2, 4 or 8, a template argument) is the chunk's head
 * count rounded up to a power of two; the extra heads have zero queries and
 * are never written. Dims are padded (with zeros in shared memory and in
 * the queries) to DP, a power of two >= max(D, 8 * GB): a tile row is DP/8
 * chunks of 16 bytes, KL = DP/8. The part's keys go through shared memory
 * in tiles of TK = min(128, 8192 / DP) keys (32 for D = 256, 128 for
 * D = 64): a K tile and a V tile of TK * DP bf16 each, at most 2 * 16 KB.
 * Per tile, separated by __syncthreads:
 *   staging  the tile loaded during the previous tile's compute (16-byte
 *            __ldg of bf16 chunks when D % 8 == 0 and the caches are 16-byte
 *            aligned, else bf16 pairs; chunk x of the tile is thread
 *            x % 256's, so a warp reads whole rows, and each thread keeps
 *            up to 4 K + 4 V chunks in registers) is stored, and the cache
 *            rows of the next tile are looked up in the page table (one
 *            division per key) into srow; then the next tile's loads are
 *            issued, to be in flight during the compute below;
 *   scores   warps over keys: KL lanes per key (32/KL keys a warp at once,
 *            256/KL a pass over the block), lane holding 8 dims of the key
 *            (one 16-byte shared load, conflict-free: a warp reads
 *            consecutive chunks) and the same 8 dims of the GB queries in
 *            registers (8 * GB floats, read once by the block in coalesced
 *            order through the tile buffer), GB partial dots reduced across
 *            the KL lanes by a transposing butterfly (each of the first
 *            log2 GB xor steps sends half of the values and keeps the other
 *            half, so GB sums take GB - 1 + log2(KL / GB) shuffles, not
 *            GB * log2 KL);
 *            scores * scale go to sp[key][head];
 *   softmax  warp h (< GB) for head h: tile max, the running max m and
 *            sum l (held by that warp), sp turned into exp(s - m) in place,
 *            corr = exp(m_old - m) for the accumulators;
 *   values   threads over (key group, head set, 16-byte chunk of dims):
 *            a thread owns 8 dims of HS = min(GB, 4) heads (HS * 8 f32
 *            accumulators), and its key group (one of KG = 256 / (KL *
 *            GB / HS)) takes every KG-th key of the tile: per key one
 *            16-byte V load (a warp reads consecutive rows) and one HS-wide
 *            load of the weights (a broadcast), 8 * HS FMAs. Accumulators
 *            are rescaled by corr only when it is not 1.
 * So all 8 warps work in the score and value phases for both common shapes:
 *   gemma-2b (8/1/256, GB 8): scores 1 key a warp, 4 passes of 8 keys per
 *     32-key tile, 64 FMAs and 9 shuffles per key a lane; values 2 head
 *     sets x 4 key groups, 8 keys a thread per tile, 32 FMAs a key;
 *   Llama-3.2-1B (32/8/64, GB 4): scores 4 keys a warp (8 lanes each),
 *     4 passes of 32 keys per 128-key tile, 32 FMAs and 4 shuffles per key
 *     a lane; values 32 key groups, 4 keys a thread per tile.
 * At the end the KG partial accumulators of each (head, dim) are summed in
 * shared memory (KG * GB * DP = 2048 * HS floats, in the tile buffer) and
 * written with m and l as the per-head kernel writes them.
 * Shared memory: 32 KB tiles + TK * GB f32 weights (4 KB) + 128 row
 * indices, static (35-37 KB). Registers (sm_90a, no spills): 197 for GB 8
 * (8 * GB queries, 8 * HS accumulators, 8 staged uint4: one block a SM),
 * 128 for GB 4 and 126 for GB 2 (__launch_bounds__ asks for two blocks a
 * SM, so one block's first tile load and barriers overlap the other's
 * compute).
 *
 * Memory traffic: the grouped kernel reads each (kv head, key) row once per
 * head chunk, the per-head kernel once per query head (G times; L2 catches
 * part of it, since the heads of a group run side by side). A decode step
 * of 256 sequences at ~500 cached tokens reads per layer 256 * 500 * kvd *
 * 4 bytes of K and V once: 262 MB for Llama-3.2-1B (kvd 512; the per-head
 * kernel: 4x, 1 GB), 131 MB for gemma-2b (kvd 256; per head: 8x, 1 GB).
 *
 * Which kernel: the caller's nsplit aims at about 256 per-head blocks
 * (nh * T * nsplit, actors/llm/forward_dev.c), G times more than grouped
 * blocks of all G heads would give; with few rows that leaves most SMs
 * idle and each block latency-bound. So the launcher takes the largest
 * chunk among min(G, 8) heads (balanced chunks when G > 8), 4 and 2 whose
 * grid (nkv * chunks * T * nsplit blocks) has at least 128 blocks (about
 * one a SM), else chunks of 2 (still half the reads of the per-head kernel,
 * with half its blocks); G == 1 takes the per-head kernel. With that
 * nsplit, gemma-2b gets chunks of 8 from 128 decode rows on, of 4 at 64, of
 * 2 up to 32; Llama-3.2-1B chunks of 4 from 16 rows on, of 2 below.
 * ask__cu_attention_paged_gb (cuda_int.h) lets tests force either kernel
 * and any chunk size.
 */
#include "paged.cuh"

int ask__cu_split_min = 64; /* cuda_int.h: keys a part at least (short rows use fewer parts) */
int ask__cu_split_kb = 0;   /* cuda_int.h: or KB of keys and values a part at least */

/* cuda_int.h. By bytes, a shape's parts cost about the same whatever its
 * head dim: 64 KB is 256 keys at D 64 (Llama-3.2-1B), 64 at D 256
 * (gemma-2b), where 64 keys make a Llama part a quarter of a gemma one. */
int ask__pg_kmin(int D) {
  const long k = ask__cu_split_kb > 0 ? (long)ask__cu_split_kb * 1024 / (4L * (D > 0 ? D : 1))
                                      : (long)ask__cu_split_min;
  return k < 1 ? 1 : k > (1L << 30) ? 1 << 30 : (int)k;
}

/* The merge counters (device memory, all 0 between launches), or NULL. */
unsigned *ask__pg_cnt;

extern "C" int ask__cu_paged_init(cudaStream_t s) {
  void *p = NULL;
  if (ask__pg_cnt != NULL)
    return 0;
  if (ask__cu_check(cudaMalloc(&p, ASK__PG_NCNT * sizeof(unsigned)),
                    "cudaMalloc (attention_paged merge counters)"))
    return 1;
  /* zeroed on the ops' own (non-blocking) stream, and waited for */
  if (ask__cu_check(cudaMemsetAsync(p, 0, ASK__PG_NCNT * sizeof(unsigned), s),
                    "cudaMemsetAsync (attention_paged merge counters)") ||
      ask__cu_check(cudaStreamSynchronize(s), "cudaStreamSynchronize (merge counters)")) {
    cudaFree(p);
    return 1;
  }
  ask__pg_cnt = static_cast<unsigned *>(p);
  return 0;
}

/* Loads key j's k and v pairs (kv head g) for this lane. */
static __device__ __forceinline__ void ask__pg_load(uint32_t *kw, uint32_t *vw,
                                                    const uint16_t *kc, const uint16_t *vc,
                                                    const int32_t *tab, int j, int page,
                                                    size_t kvd, int g, int D, int lane) {
  int pi = j / page;
  size_t row = (size_t)tab[pi] * (size_t)page + (size_t)(j - pi * page);
  const uint32_t *kr = reinterpret_cast<const uint32_t *>(kc + row * kvd + (size_t)g * D);
  const uint32_t *vr = reinterpret_cast<const uint32_t *>(vc + row * kvd + (size_t)g * D);
#pragma unroll
  for (int r = 0; r < ASK__PG_NP; r++) {
    int d = 2 * lane + 64 * r;
    kw[r] = d < D ? __ldg(kr + lane + 32 * r) : 0u;
    vw[r] = d < D ? __ldg(vr + lane + 32 * r) : 0u;
  }
}

/* One online-softmax step of a warp with key (kw, vw). */
static __device__ __forceinline__ void ask__pg_step(const uint32_t *kw, const uint32_t *vw,
                                                    const float2 *qv, float2 *acc, float &m,
                                                    float &l, float scale) {
  float dot = 0.0f;
#pragma unroll
  for (int r = 0; r < ASK__PG_NP; r++)
    dot += qv[r].x * ask__lo(kw[r]) + qv[r].y * ask__hi(kw[r]);
  for (int o = 16; o > 0; o >>= 1)
    dot += __shfl_xor_sync(0xffffffffu, dot, o);
  float sc = dot * scale, mn = fmaxf(m, sc);
  float corr = m == -INFINITY ? 0.0f : expf(m - mn), p = expf(sc - mn);
  l = l * corr + p;
#pragma unroll
  for (int r = 0; r < ASK__PG_NP; r++) {
    acc[r].x = acc[r].x * corr + p * ask__lo(vw[r]);
    acc[r].y = acc[r].y * corr + p * ask__hi(vw[r]);
  }
  m = mn;
}

static __global__ void ask__k_attention_paged(float *out, float *part, const float *q,
                                              const uint16_t *kc, const uint16_t *vc,
                                              const int32_t *table, const int32_t *seq,
                                              const int32_t *pos, int nh, int nkv, int D,
                                              int q_stride, int tw, int page, int nsplit,
                                              int kmin, float scale, unsigned *cnt) {
  ask__pdl_enter();
  __shared__ float sm[ASK__PG_WARPS], sl[ASK__PG_WARPS];
  __shared__ float sacc[ASK__PG_WARPS][64 * ASK__PG_NP];
  int h = blockIdx.x, t = blockIdx.y, sp = blockIdx.z;
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  int g = h / (nh / nkv);
  int L = pos[t] < 0 ? 0 : pos[t] + 1; /* keys 0..pos[t] */
  int per = max((L + nsplit - 1) / nsplit, kmin), j0 = sp * per,
      j1 = min(L, j0 + per);
  const int32_t *tab = table + (L > 0 ? (size_t)seq[t] * (size_t)tw : 0);
  size_t kvd = (size_t)nkv * (size_t)D;
  const float *qr = q + (size_t)t * q_stride + (size_t)h * D;
  float2 qv[ASK__PG_NP], acc[ASK__PG_NP];
#pragma unroll
  for (int r = 0; r < ASK__PG_NP; r++) {
    int d = 2 * lane + 64 * r;
    qv[r] = d < D ? make_float2(qr[d], qr[d + 1]) : make_float2(0.0f, 0.0f);
    acc[r] = make_float2(0.0f, 0.0f);
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = j0 + wid; j < j1; j += 2 * ASK__PG_WARPS) {
    uint32_t kw0[ASK__PG_NP], vw0[ASK__PG_NP], kw1[ASK__PG_NP], vw1[ASK__PG_NP];
    int j2 = j + ASK__PG_WARPS;
    ask__pg_load(kw0, vw0, kc, vc, tab, j, page, kvd, g, D, lane);
    if (j2 < j1)
      ask__pg_load(kw1, vw1, kc, vc, tab, j2, page, kvd, g, D, lane);
    ask__pg_step(kw0, vw0, qv, acc, m, l, scale);
    if (j2 < j1)
      ask__pg_step(kw1, vw1, qv, acc, m, l, scale);
  }
  if (lane == 0) {
    sm[wid] = m;
    sl[wid] = l;
  }
#pragma unroll
  for (int r = 0; r < ASK__PG_NP; r++) {
    sacc[wid][2 * lane + 64 * r] = acc[r].x;
    sacc[wid][2 * lane + 64 * r + 1] = acc[r].y;
  }
  __syncthreads();
  float M = -INFINITY, Ls = 0.0f, wt[ASK__PG_WARPS];
  for (int w = 0; w < ASK__PG_WARPS; w++)
    M = fmaxf(M, sm[w]);
  for (int w = 0; w < ASK__PG_WARPS; w++) {
    wt[w] = sm[w] == -INFINITY ? 0.0f : expf(sm[w] - M);
    Ls += sl[w] * wt[w];
  }
  float *dst;
  if (nsplit == 1) {
    dst = out + (size_t)t * nh * D + (size_t)h * D;
  } else {
    dst = part + (((size_t)t * nh + h) * nsplit + sp) * (size_t)(D + 2);
    if (threadIdx.x == 0) {
      dst[0] = M;
      dst[1] = Ls;
    }
    dst += 2;
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < ASK__PG_WARPS; w++)
      a += sacc[w][d] * wt[w];
    dst[d] = nsplit > 1 ? a : Ls > 0.0f ? a / Ls : 0.0f;
  }
  if (nsplit > 1 && cnt != NULL)
    ask__pg_merge_last(out, part, cnt + (size_t)t * gridDim.x + blockIdx.x, t, nh, h, 1, D,
                       nsplit, ask__pg_live(L, per, nsplit));
}

/* ---- the grouped kernel ---------------------------------------------------- */

#define ASK__PG_GT 256         /* threads of a grouped block */
#define ASK__PG_TILE 8192      /* bf16 of a K tile (TK * DP) at most */
#define ASK__PG_TKMAX 128      /* keys of a tile at most */

/* Dims [c8, c8 + 8) of the cache row r (bf16), zeros past D: one 16-byte
 * load when vec16 (D % 8 == 0, 16-byte aligned caches), else bf16 pairs. */
static __device__ __forceinline__ uint4 ask__pg_chunk(const uint16_t *r, int c8, int D,
                                                      int vec16, bool cg = false) {
  if (vec16)
    return c8 < D ? (cg ? __ldcg(reinterpret_cast<const uint4 *>(r + c8))
                        : __ldg(reinterpret_cast<const uint4 *>(r + c8)))
                  : make_uint4(0u, 0u, 0u, 0u);
  uint32_t w[4];
#pragma unroll
  for (int e = 0; e < 4; e++)
    w[e] = c8 + 2 * e < D ? (cg ? __ldcg(reinterpret_cast<const uint32_t *>(r + c8 + 2 * e))
                                : __ldg(reinterpret_cast<const uint32_t *>(r + c8 + 2 * e)))
                          : 0u;
  return make_uint4(w[0], w[1], w[2], w[3]);
}

/* Block (g * nchunk + chunk, t, part): query heads h0 .. h0 + Gn - 1 of kv
 * head g, Gc heads a chunk (Gn < Gc in the last one), GB >= Gc; dims padded
 * to DP (a power of two, 8 * GB <= DP <= 256); see the header. EARLY
 * (ASK_CUDA_ATTN_EARLY, as paged.cuh's decode unit): the first tile's
 * cache rows and its keys and values before the PDL wait, all but a row's
 * last gridDim.y keys, which come after it through L2 (in every tile). */
template <int GB, bool EARLY>
static __global__ void __launch_bounds__(ASK__PG_GT, GB == 8 ? 1 : 2)
    ask__k_attention_paged_grouped(float *out, float *part, const float *q, const uint16_t *kc,
                                   const uint16_t *vc, const int32_t *table, const int32_t *seq,
                                   const int32_t *pos, int nh, int nkv, int D, int q_stride,
                                   int tw, int page, int nsplit, int kmin, float scale,
                                   int Gc, int nchunk, int DP, int vec16, unsigned *cnt) {
  if (EARLY)
    ask__pdl_start(); /* the wait is below, after the first tile's early loads */
  else
    ask__pdl_enter();
  constexpr int HS = GB >= 4 ? 4 : 2, NHG = GB / HS;
  /* The queries first; then the K tile and the V tile (TK rows of KL
   * chunks each); after the last tile, the key groups' partial
   * accumulators (KG * GB * DP floats). */
  __shared__ uint4 skv[ASK__PG_TILE / 4];
  __shared__ __align__(16) float sp[ASK__PG_TKMAX * GB]; /* [key][head]: scores, weights */
  __shared__ int srow[ASK__PG_TKMAX];                    /* cache rows of the next tile */
  __shared__ float scorr[GB], sm[GB], sl[GB];

  const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
  const int G = nh / nkv, g = blockIdx.x / nchunk, hc = blockIdx.x - g * nchunk;
  const int h0 = g * G + hc * Gc, Gn = min(Gc, G - hc * Gc);
  const int t = blockIdx.y, spl = blockIdx.z;
  const int KL = DP >> 3, lkl = __ffs(DP) - 4; /* lanes (chunks) a key; log2 KL */
  const int TK = min(ASK__PG_TKMAX, ASK__PG_TILE / DP);
  const int nper = (TK * KL) / ASK__PG_GT; /* chunks a thread stages; score passes */
  const int KG = ASK__PG_GT / (NHG * KL);  /* key groups of the value phase */
  const int L = pos[t] < 0 ? 0 : pos[t] + 1; /* keys 0..pos[t] */
  const int per = max((L + nsplit - 1) / nsplit, kmin), j0 = spl * per,
            j1 = min(L, j0 + per);
  const int ntile = j1 > j0 ? (j1 - j0 + TK - 1) / TK : 0;
  const int32_t *tab = table + (L > 0 ? (size_t)seq[t] * (size_t)tw : 0);
  const size_t kvd = (size_t)nkv * (size_t)D;
  const uint16_t *kr = kc + (size_t)g * D, *vr = vc + (size_t)g * D;
  uint4 *ks = skv, *vs = skv + TK * KL;
  /* keys from jnew on may be the kernel before's (EARLY: read after the wait) */
  const int jnew = EARLY ? max(L - (int)gridDim.y, 0) : 0;
  uint4 pk[4], pv[4]; /* the next tile's chunks tid + 256 * r, r < nper */
  /* The first tile's chunks: all of them (not EARLY); with EARLY those of
   * keys before jnew (pre, before the wait, clearing the rest) or from jnew
   * on (after it, through L2). */
  auto first_tile = [&](bool pre) {
#pragma unroll
    for (int r = 0; r < 4; r++) {
      int x = tid + r * ASK__PG_GT, jt = x >> lkl;
      if (!EARLY || pre)
        pk[r] = pv[r] = make_uint4(0u, 0u, 0u, 0u);
      if (r < nper && j0 + jt < j1 && (!EARLY || (pre ? j0 + jt < jnew : j0 + jt >= jnew))) {
        size_t off = (size_t)srow[jt] * kvd;
        pk[r] = ask__pg_chunk(kr + off, (x & (KL - 1)) * 8, D, vec16, EARLY && !pre);
        pv[r] = ask__pg_chunk(vr + off, (x & (KL - 1)) * 8, D, vec16, EARLY && !pre);
      }
    }
  };
  if (EARLY) { /* the first tile's rows and its keys before jnew, then the wait */
    if (ntile > 0 && tid < TK && j0 + tid < j1)
      srow[tid] = ask__pg_row(tab, j0 + tid, page);
    __syncthreads();
    first_tile(true);
    ask__pdl_wait();
  }

  /* The queries: 8 dims (slice * 8 ...) of the GB heads, zeros past D and
   * past the chunk's heads, read by the block in coalesced order into the
   * tile buffer ([head][DP] floats), then into registers. */
  const int slice = lane & (KL - 1);
  float qr[GB][8];
  {
    float *qs = reinterpret_cast<float *>(skv);
    const float *qrow = q + (size_t)t * q_stride + (size_t)h0 * D;
    for (int x = tid; x < GB * DP; x += ASK__PG_GT) {
      int h = x >> (lkl + 3), d = x & (DP - 1);
      qs[x] = ntile > 0 && h < Gn && d < D ? qrow[(size_t)h * D + d] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < GB; h++) {
      const float4 *q4 = reinterpret_cast<const float4 *>(qs + h * DP + slice * 8);
      float4 a = q4[0], b = q4[1];
      qr[h][0] = a.x, qr[h][1] = a.y, qr[h][2] = a.z, qr[h][3] = a.w;
      qr[h][4] = b.x, qr[h][5] = b.y, qr[h][6] = b.z, qr[h][7] = b.w;
    }
  }
  /* The value phase's share: dims chunk * 8 .. of heads hg * HS .., keys
   * grp, grp + KG, ... of each tile. */
  const int chunk = tid & (KL - 1), hg = (tid >> lkl) % NHG, grp = tid / (KL * NHG);
  float acc[HS][8];
#pragma unroll
  for (int hh = 0; hh < HS; hh++)
#pragma unroll
    for (int e = 0; e < 8; e++)
      acc[hh][e] = 0.0f;
  float m = -INFINITY, l = 0.0f; /* running max and sum of head wid (warps < GB) */

  if (!EARLY) {
    if (ntile > 0 && tid < TK && j0 + tid < j1)
      srow[tid] = ask__pg_row(tab, j0 + tid, page);
    __syncthreads();
  }
  first_tile(false);

  for (int it = 0; it < ntile; it++) {
    const int jt0 = j0 + it * TK, nv = min(TK, j1 - jt0), jn = jt0 + TK;
    __syncthreads(); /* the previous tile's values are done with, srow read */
#pragma unroll
    for (int r = 0; r < 4; r++)
      if (r < nper) {
        ks[tid + r * ASK__PG_GT] = pk[r];
        vs[tid + r * ASK__PG_GT] = pv[r];
      }
    if (tid < TK && jn + tid < j1)
      srow[tid] = ask__pg_row(tab, jn + tid, page);
    __syncthreads();
    if (jn < j1) /* the next tile's loads, in flight during this one */
#pragma unroll
      for (int r = 0; r < 4; r++) {
        int x = tid + r * ASK__PG_GT, jt = x >> lkl;
        pk[r] = pv[r] = make_uint4(0u, 0u, 0u, 0u);
        if (r < nper && jn + jt < j1) {
          size_t off = (size_t)srow[jt] * kvd;
          const bool cg = EARLY && jn + jt >= jnew; /* a new key: through L2 */
          pk[r] = ask__pg_chunk(kr + off, (x & (KL - 1)) * 8, D, vec16, cg);
          pv[r] = ask__pg_chunk(vr + off, (x & (KL - 1)) * 8, D, vec16, cg);
        }
      }

    /* Scores: KL lanes a key, keys jb .. jb + 32/KL - 1 for this warp. */
    for (int ps = 0; ps < nper; ps++) {
      const int jb = (ps * (ASK__PG_GT / 32) + wid) * (32 >> lkl);
      if (jb >= nv) /* the same for the whole warp; later passes are further */
        break;
      float kf[8], s[GB];
      ask__pg_unpack(kf, ks[(jb << lkl) + lane]);
#pragma unroll
      for (int h = 0; h < GB; h++) {
        s[h] = qr[h][0] * kf[0];
#pragma unroll
        for (int e = 1; e < 8; e++)
          s[h] += qr[h][e] * kf[e];
      }
      /* Transposing butterfly: after the step with lane mask o, a lane
       * keeps the upper half of its values when its bit o is set, the lower
       * half when not, and adds its partner's copy of the same half. */
      int o = KL >> 1;
#pragma unroll
      for (int n = GB; n > 1; n >>= 1, o >>= 1) {
        const bool hi = (lane & o) != 0;
#pragma unroll
        for (int i = 0; i < n / 2; i++) {
          float send = hi ? s[i] : s[i + n / 2], keep = hi ? s[i + n / 2] : s[i];
          s[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
      }
      for (; o > 0; o >>= 1)
        s[0] += __shfl_xor_sync(0xffffffffu, s[0], o);
      /* lane holds head (lane % KL) / (KL / GB) of key jb + lane / KL */
      const int rest = KL / GB;
      if ((lane & (rest - 1)) == 0)
        sp[(jb + (lane >> lkl)) * GB + (lane & (KL - 1)) / rest] = s[0] * scale;
    }
    __syncthreads();

    /* Softmax: warp h for head h. */
    if (wid < GB) {
      float sv[ASK__PG_TKMAX / 32], mx = -INFINITY;
#pragma unroll
      for (int i = 0; i < ASK__PG_TKMAX / 32; i++) {
        int j = lane + 32 * i;
        sv[i] = j < nv ? sp[j * GB + wid] : -INFINITY;
        mx = fmaxf(mx, sv[i]);
      }
      for (int o2 = 16; o2 > 0; o2 >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
      const float mn = fmaxf(m, mx), corr = m == -INFINITY ? 0.0f : expf(m - mn);
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < ASK__PG_TKMAX / 32; i++) {
        int j = lane + 32 * i;
        if (j < nv) {
          float p = expf(sv[i] - mn);
          sp[j * GB + wid] = p;
          sum += p;
        }
      }
      for (int o2 = 16; o2 > 0; o2 >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o2);
      l = l * corr + sum;
      m = mn;
      if (lane == 0)
        scorr[wid] = corr;
    }
    __syncthreads();

    /* Values. */
    float cr[HS];
    bool rescale = false;
#pragma unroll
    for (int hh = 0; hh < HS; hh++) {
      cr[hh] = scorr[hg * HS + hh];
      rescale |= cr[hh] != 1.0f;
    }
    if (rescale)
#pragma unroll
      for (int hh = 0; hh < HS; hh++)
#pragma unroll
        for (int e = 0; e < 8; e++)
          acc[hh][e] *= cr[hh];
    for (int j = grp; j < nv; j += KG) {
      float vf[8], pw[HS];
      ask__pg_unpack(vf, vs[(j << lkl) + chunk]);
      if (HS == 4) {
        float4 p4 = *reinterpret_cast<const float4 *>(&sp[j * GB + hg * HS]);
        pw[0] = p4.x, pw[1] = p4.y, pw[HS - 2] = p4.z, pw[HS - 1] = p4.w;
      } else {
        float2 p2 = *reinterpret_cast<const float2 *>(&sp[j * GB + hg * HS]);
        pw[0] = p2.x, pw[HS - 1] = p2.y;
      }
#pragma unroll
      for (int hh = 0; hh < HS; hh++)
#pragma unroll
        for (int e = 0; e < 8; e++)
          acc[hh][e] += pw[hh] * vf[e];
    }
  }

  /* The key groups' accumulators summed in shared memory, then out (or the
   * part) as the per-head kernel writes them. */
  __syncthreads();
  float *red = reinterpret_cast<float *>(skv); /* [key group][head][DP] */
#pragma unroll
  for (int hh = 0; hh < HS; hh++) { /* 16-byte stores: 2-way bank conflicts at most */
    float4 *r4 = reinterpret_cast<float4 *>(red + ((grp * GB + hg * HS + hh) << (lkl + 3)) +
                                            chunk * 8);
    r4[0] = make_float4(acc[hh][0], acc[hh][1], acc[hh][2], acc[hh][3]);
    r4[1] = make_float4(acc[hh][4], acc[hh][5], acc[hh][6], acc[hh][7]);
  }
  if (wid < GB && lane == 0) {
    sm[wid] = m;
    sl[wid] = l;
  }
  __syncthreads();
  for (int x = tid; x < Gn * D; x += ASK__PG_GT) {
    const int h = x / D, d = x - h * D;
    float a = 0.0f;
    for (int k = 0; k < KG; k++)
      a += red[((k * GB + h) << (lkl + 3)) + d];
    const size_t hq = (size_t)(h0 + h);
    if (nsplit == 1)
      out[(size_t)t * nh * D + hq * D + d] = sl[h] > 0.0f ? a / sl[h] : 0.0f;
    else
      part[(((size_t)t * nh + hq) * nsplit + spl) * (size_t)(D + 2) + 2 + d] = a;
  }
  if (nsplit > 1 && tid < Gn) {
    float *pp = part + (((size_t)t * nh + h0 + tid) * nsplit + spl) * (size_t)(D + 2);
    pp[0] = sm[tid];
    pp[1] = sl[tid];
  }
  if (nsplit > 1 && cnt != NULL)
    ask__pg_merge_last(out, part, cnt + (size_t)t * gridDim.x + blockIdx.x, t, nh, h0, Gn, D,
                       nsplit, ask__pg_live(L, per, nsplit));
}

/* ---- the decode kernel: paged.cuh's ask__pd_unit, a block of
 * ASK__PD_W(GB) warps per (kv head chunk, row, part) ---- */
int ask__cu_attn_dec = -1; /* cuda_int.h; -1: automatic (ask__pg_dec_rows) */

/* cuda_int.h: rows up to which attention_paged takes the decode kernel for
 * nkv kv heads: ask__cu_attn_dec, or automatically 16 where the cache is
 * read before the PDL wait (ask__cu_attn_early) or a layer has at most 2
 * kv heads, else 0. An H200 at batch 1 without the early reads (sixth
 * session): gemma-2b, 1 kv head, +1.6% and +1.7% in two runs;
 * Llama-3.2-1B, 8 kv heads, -1.7% and -2.1%. An H100 (ninth session):
 * Llama-3.2-1B -2.0% without the early reads, +0.8% at batch 1 and +3.0%
 * at batch 8 with them (against the grouped kernel with them). */
int ask__pg_dec_rows(int nkv) {
  return ask__cu_attn_dec >= 0 ? ask__cu_attn_dec : nkv <= 2 || ask__cu_attn_early ? 16 : 0;
}

/* cuda_int.h: 1: the decode and grouped kernels read the cache before the
 * PDL wait (ask_cuda_set_attn_early; backend.c's initialisation turns it
 * on, except on the emulator) */
int ask__cu_attn_early = 0;

/* EARLY: the keys of earlier steps and the step's inputs are read before
 * the PDL wait, all but the last gridDim.y keys of a row (ask__pd_unit). */
template <int GB, int KL, bool EARLY>
static __global__ void __launch_bounds__(32 * ASK__PD_W(GB))
    ask__k_attention_dec(float *out, float *part, const float *q, const uint16_t *kc,
                         const uint16_t *vc, const int32_t *table, const int32_t *seq,
                         const int32_t *pos, int nh, int nkv, int D, int q_stride, int tw,
                         int page, int nsplit, int kmin, float scale, int Gc, int nchunk,
                         unsigned *cnt) {
  __shared__ float sh[ASK__PD_SH(GB, KL)];
  if (EARLY)
    ask__pdl_start(); /* the unit waits */
  else
    ask__pdl_enter();
  ask__pd_unit<GB, KL, false, 0, EARLY>(
      out, part, q, kc, vc, table, seq, pos, nh, nkv, D, q_stride, tw, page, nsplit, kmin, scale,
      Gc, nchunk, blockIdx.x, blockIdx.y, blockIdx.z,
      cnt != NULL ? cnt + (size_t)blockIdx.y * gridDim.x + blockIdx.x : NULL, sh,
      (int)gridDim.y);
}

static void ask__attention_paged_launch(cudaStream_t s, float *out, float *part,
                                        const float *q, const uint16_t *kc, const uint16_t *vc,
                                        const int32_t *table, const int32_t *seq,
                                        const int32_t *pos, int T, int nh, int nkv, int D,
                                        int q_stride, int table_width, int page, int nsplit,
                                        float scale, int heads) {
  if (T <= 0 || ask__cu_failed())
    return;
  if (D <= 0 || D % 2 != 0 || D > 64 * ASK__PG_NP || nkv <= 0 || nh <= 0 || nh % nkv != 0 ||
      page <= 0 || table_width < 0 || T > 65535 || nh > 65535) {
    ask__cu_check(cudaErrorInvalidValue,
                  "attention_paged: head_dim odd or over 256, bad head counts or page size");
    return;
  }
  if (nsplit < 1)
    nsplit = 1;
  if (nsplit > 65535 || (nsplit > 1 && part == NULL)) {
    ask__cu_check(cudaErrorInvalidValue, "attention_paged: nsplit over 65535 or no part buffer");
    return;
  }
  int G = nh / nkv, kmin = ask__pg_kmin(D);
  int Gc = heads <= 0 ? ask__pg_heads(G, nkv, T, nsplit) : min(min(heads, 8), G);
  /* the merge inside the kernel when the counters cover the grid's (x, row) pairs */
  size_t xs = Gc <= 1 ? (size_t)nh : (size_t)nkv * (size_t)((G + Gc - 1) / Gc);
  unsigned *cnt = nsplit > 1 && xs * (size_t)T <= ASK__PG_NCNT ? ask__pg_cnt : NULL;
  const int vec16 = D % 8 == 0 && ((uintptr_t)kc | (uintptr_t)vc) % 16 == 0;
  if (T <= ask__pg_dec_rows(nkv) && vec16 && D >= 32 && q_stride % 4 == 0 &&
      (uintptr_t)q % 16 == 0) {
    const int GB = Gc <= 1 ? 1 : Gc <= 2 ? 2 : Gc <= 4 ? 4 : 8, nchunk = (G + Gc - 1) / Gc;
    const int KL = D <= 32 ? 4 : D <= 64 ? 8 : D <= 128 ? 16 : 32;
    dim3 grid((unsigned)(nkv * nchunk), (unsigned)T, (unsigned)nsplit);
    /* the grid's (x, row) pairs are nkv * nchunk * T: counters as above */
    unsigned *dcnt = nsplit > 1 && (size_t)nkv * nchunk * T <= ASK__PG_NCNT ? ask__pg_cnt : NULL;
#define ASK__PD_GO(B, K, E)                                                                  \
  ASK__LAUNCH(grid, 32 * ASK__PD_W(B), 0, s, ask__k_attention_dec<B, K, E>)(                   \
      out, part, q, kc, vc, table, seq, pos, nh, nkv, D, q_stride, table_width, page, nsplit, \
      kmin, scale, Gc, nchunk, dcnt)
#define ASK__PD_LAUNCH(B, K)                                                                 \
  do {                                                                                       \
    if (ask__cu_attn_early)                                                                  \
      ASK__PD_GO(B, K, true);                                                                \
    else                                                                                     \
      ASK__PD_GO(B, K, false);                                                               \
  } while (0)
#define ASK__PD_KL(B)                                                                        \
  do {                                                                                       \
    if (KL == 4)                                                                             \
      ASK__PD_LAUNCH(B, 4);                                                                  \
    else if (KL == 8)                                                                        \
      ASK__PD_LAUNCH(B, 8);                                                                  \
    else if (KL == 16)                                                                       \
      ASK__PD_LAUNCH(B, 16);                                                                 \
    else                                                                                     \
      ASK__PD_LAUNCH(B, 32);                                                                 \
  } while (0)
    if (GB == 1)
      ASK__PD_KL(1);
    else if (GB == 2)
      ASK__PD_KL(2);
    else if (GB == 4)
      ASK__PD_KL(4);
    else
      ASK__PD_KL(8);
#undef ASK__PD_KL
#undef ASK__PD_LAUNCH
#undef ASK__PD_GO
    if (ASK__LAUNCHED("attention_paged (decode)") || nsplit == 1 || dcnt != NULL)
      return;
    ask__cu_attention_merge(s, out, part, nsplit, T, nh, D);
    return;
  }
  if (Gc <= 1) {
    dim3 grid((unsigned)nh, (unsigned)T, (unsigned)nsplit);
    ASK__LAUNCH(grid, 32 * ASK__PG_WARPS, 0, s, ask__k_attention_paged)(
        out, part, q, kc, vc, table, seq, pos, nh, nkv, D, q_stride, table_width, page, nsplit,
        kmin, scale, cnt);
  } else {
    int GB = Gc <= 2 ? 2 : Gc <= 4 ? 4 : 8, nchunk = (G + Gc - 1) / Gc, DP = 8;
    while (DP < D || DP < 8 * GB)
      DP *= 2;
    dim3 grid((unsigned)(nkv * nchunk), (unsigned)T, (unsigned)nsplit);
#define ASK__PG_GO(N, E)                                                                     \
  ASK__LAUNCH(grid, ASK__PG_GT, 0, s, ask__k_attention_paged_grouped<N, E>)(                  \
      out, part, q, kc, vc, table, seq, pos, nh, nkv, D, q_stride, table_width, page, nsplit, \
      kmin, scale, Gc, nchunk, DP, vec16, cnt)
#define ASK__PG_LAUNCH(N)                                                                    \
  do {                                                                                       \
    if (ask__cu_attn_early)                                                                  \
      ASK__PG_GO(N, true);                                                                   \
    else                                                                                     \
      ASK__PG_GO(N, false);                                                                  \
  } while (0)
    if (GB == 2)
      ASK__PG_LAUNCH(2);
    else if (GB == 4)
      ASK__PG_LAUNCH(4);
    else
      ASK__PG_LAUNCH(8);
#undef ASK__PG_LAUNCH
#undef ASK__PG_GO
  }
  if (ASK__LAUNCHED("attention_paged") || nsplit == 1 || cnt != NULL)
    return;
  ask__cu_attention_merge(s, out, part, nsplit, T, nh, D);
}

/* The launches, then ask__cu_after_attn set (gemv_pw.cu's early loads
 * after the attention). */
extern "C" void ask__cu_attention_paged_gb(cudaStream_t s, float *out, float *part,
                                           const float *q, const uint16_t *kc,
                                           const uint16_t *vc, const int32_t *table,
                                           const int32_t *seq, const int32_t *pos, int T, int nh,
                                           int nkv, int D, int q_stride, int table_width,
                                           int page, int nsplit, float scale, int heads) {
  ask__attention_paged_launch(s, out, part, q, kc, vc, table, seq, pos, T, nh, nkv, D, q_stride,
                              table_width, page, nsplit, scale, heads);
  ask__cu_after_attn = 1;
}

extern "C" void ask__cu_attention_paged(cudaStream_t s, float *out, float *part, const float *q,
                                        const uint16_t *kc, const uint16_t *vc,
                                        const int32_t *table, const int32_t *seq,
                                        const int32_t *pos, int T, int nh, int nkv, int D,
                                        int q_stride, int table_width, int page, int nsplit,
                                        float scale) {
  ask__cu_attention_paged_gb(s, out, part, q, kc, vc, table, seq, pos, T, nh, nkv, D, q_stride,
                             table_width, page, nsplit, scale, 0);
}

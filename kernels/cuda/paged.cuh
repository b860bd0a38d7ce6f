/* paged.cuh — what paged.cu's attention kernels share with the chained
 * one-row products (gemv_chain.cu, whose first phase can be a layer's
 * decode attention): the merge of a row's parts by the block that comes
 * last, cache rows and bf16 unpacking, the heads a block serves, and the
 * decode kernel's body as a unit that any block can run. Internal to
 * kernels/cuda.
 */
#ifndef ASK_CUDA_PAGED_CUH
#define ASK_CUDA_PAGED_CUH

#include "common.cuh"

#define ASK__PG_WARPS 4
#define ASK__PG_NP 4 /* bf16 pairs a lane: D <= 2 * 32 * ASK__PG_NP */
#define ASK__PG_NCNT 65536 /* merge counters: (block, row) pairs of a launch at most */
#define ASK__PG_MIN_BLOCKS 128 /* grouped blocks wanted (see paged.cu's header) */

/* paged.cu: the merge counters (device memory, all 0 between launches), or
 * NULL before ask__cu_paged_init. */
extern unsigned *ask__pg_cnt;

/* Called by every thread of a block at its end, after it wrote its part
 * rows (row t, query heads h0 .. h0 + Gn - 1, its split): the block that
 * comes last among the nsplit splits of (blockIdx.x, t) merges the partials
 * of those heads into out, as attention.cu's merge kernel (only the first
 * nlive: the parts after them have no key, see the header), and
 * sets the counter back to 0 for the next launch. The partials are written
 * and fenced before the ticket is taken, and the merging block reads them
 * through L2 (__ldcg), never through a possibly stale L1 line. Each part's
 * weight exp(m - M) / L is made once per head (up to ASK__PG_MW heads x
 * parts; more take the per-element loop), so an output element costs one
 * load a part: with 24 parts of 8 heads of 256 the per-element loop read
 * every part's max twice and its sum once for each of the 2048 outputs. */
#define ASK__PG_MW 256
static __device__ void ask__pg_merge_last(float *out, const float *part, unsigned *cnt, int t,
                                          int nh, int h0, int Gn, int D, int nsplit,
                                          int nlive) {
  __shared__ float sm[ASK__PG_MW], sw[ASK__PG_MW];
  if (!ask__last_block(cnt, (unsigned)nsplit))
    return;
  const size_t rs = (size_t)(D + 2);
  const float *p0 = part + ((size_t)t * nh + h0) * nsplit * rs;
  float *o = out + (size_t)t * nh * D + (size_t)h0 * D;
  if (Gn * nlive <= ASK__PG_MW) {
    for (int i = threadIdx.x; i < Gn * nlive; i += blockDim.x) {
      const float *pp = p0 + ((size_t)(i / nlive) * nsplit + (size_t)(i % nlive)) * rs;
      sm[i] = __ldcg(pp);
      sw[i] = __ldcg(pp + 1); /* the part's sum, until it becomes the weight */
    }
    __syncthreads();
    for (int h = threadIdx.x; h < Gn; h += blockDim.x) {
      float M = -INFINITY, Ls = 0.0f;
      for (int s = 0; s < nlive; s++)
        M = fmaxf(M, sm[h * nlive + s]);
      for (int s = 0; s < nlive; s++) {
        const float ms = sm[h * nlive + s], w = ms == -INFINITY ? 0.0f : expf(ms - M);
        Ls += sw[h * nlive + s] * w;
        sm[h * nlive + s] = w;
      }
      for (int s = 0; s < nlive; s++)
        sw[h * nlive + s] = Ls > 0.0f ? sm[h * nlive + s] / Ls : 0.0f;
    }
    __syncthreads();
    for (int x = threadIdx.x; x < Gn * D; x += blockDim.x) {
      const int h = x / D, d = x - h * D;
      const float *pp = p0 + (size_t)h * nsplit * rs + 2 + d;
      float a = 0.0f;
      for (int s = 0; s < nlive; s++) {
        const float w = sw[h * nlive + s];
        if (w != 0.0f) /* an empty part's values are never read */
          a += w * __ldcg(pp + s * rs);
      }
      o[x] = a;
    }
    return;
  }
  for (int x = threadIdx.x; x < Gn * D; x += blockDim.x) {
    const int h = x / D, d = x - h * D;
    const float *pp = p0 + (size_t)h * nsplit * rs;
    float M = -INFINITY, Ls = 0.0f, a = 0.0f;
    for (int s = 0; s < nlive; s++)
      M = fmaxf(M, __ldcg(pp + s * rs));
    for (int s = 0; s < nlive; s++) {
      float ms = __ldcg(pp + s * rs);
      if (ms != -INFINITY) {
        float w = expf(ms - M);
        Ls += __ldcg(pp + s * rs + 1) * w;
        a += __ldcg(pp + s * rs + 2 + d) * w;
      }
    }
    o[x] = Ls > 0.0f ? a / Ls : 0.0f;
  }
}

/* The parts of a row of L keys cut in parts of per that hold a key. */
static __device__ __forceinline__ int ask__pg_live(int L, int per, int nsplit) {
  return L > 0 ? min(nsplit, (L + per - 1) / per) : 0;
}

/* The two floats of a bf16 pair (the lower address in the low half). */
static __device__ __forceinline__ float ask__lo(uint32_t u) { return __uint_as_float(u << 16); }
static __device__ __forceinline__ float ask__hi(uint32_t u) {
  return __uint_as_float(u & 0xffff0000u);
}

/* The 8 floats of a 16-byte chunk of bf16 (the lowest address first). */
static __device__ __forceinline__ void ask__pg_unpack(float *f, uint4 u) {
  f[0] = ask__lo(u.x), f[1] = ask__hi(u.x), f[2] = ask__lo(u.y), f[3] = ask__hi(u.y);
  f[4] = ask__lo(u.z), f[5] = ask__hi(u.z), f[6] = ask__lo(u.w), f[7] = ask__hi(u.w);
}

/* Cache row of key j of the page list tab. */
static __device__ __forceinline__ int ask__pg_row(const int32_t *tab, int j, int page) {
  int pi = j / page;
  return tab[pi] * page + (j - pi * page);
}

/* Query heads a grouped block serves (1: the per-head kernel) for G query
 * heads a kv head: the largest of min(G, 8) (balanced chunks when G > 8),
 * 4 and 2 whose grid has ASK__PG_MIN_BLOCKS blocks, else 2 (see the
 * header). */
static inline int ask__pg_heads(int G, int nkv, int T, int nsplit) {
  if (G <= 1)
    return 1;
  int c0 = (G + 7) / 8, Gc = (G + c0 - 1) / c0;
  for (;;) {
    long blocks = (long)nkv * ((G + Gc - 1) / Gc) * T * nsplit;
    if (Gc <= 2 || blocks >= ASK__PG_MIN_BLOCKS)
      return Gc;
    Gc = Gc > 4 ? 4 : 2;
  }
}

/* ---- the decode unit (paged.cu's decode kernel) ----
 * For decode rows at short contexts the grouped and per-head kernels are a
 * chain of short phases between block-wide barriers (staging, scores,
 * softmax, values, the key groups' reduction). The decode unit has a single
 * barrier: ASK__PD_W(GB) warps per (kv head, chunk of Gc <= GB query heads,
 * row, part) like the grouped kernel (the same parts, partial rows and
 * merge), but each warp streams its own keys straight from the cache into
 * registers and keeps its own online softmax. KL = DP / 8 lanes hold a key
 * (8 dims each, one 16-byte load of k and of v; D % 8 == 0, caches 16-byte
 * aligned), so a warp takes 32 / KL keys at once, KB of those batches
 * loaded before any is used (the page-table reads of a batch first, then
 * its k and v loads); the dot products of the GB heads are reduced across
 * the KL lanes (xor shuffles), and each lane group updates its running max,
 * sum and the 8 accumulated dims of every head one key at a time. At the
 * end the lane groups of a warp merge by shuffles, the warps through
 * shared memory, and the block writes its partial (or the row) as the
 * grouped kernel. paged.cu runs it as a kernel of ASK__PD_W(GB) warps a
 * block; a chained launch (gemv_chain.cu), whose blocks have 8 warps, runs
 * it with all of them (GB <= 4), so the two give the same bits. 8 warps
 * for up to 4 heads (twice the keys in flight of the first version, and a
 * chained block's every warp); 4 for 8 heads, whose accumulators would
 * need 64 KB of shared memory at 8 warps. */
#define ASK__PD_W(GB) ((GB) >= 8 ? 4 : 8) /* warps of a decode unit */
/* Shared floats of a unit: the warps' max and sum of each head, then their
 * accumulators. */
#define ASK__PD_SH(GB, KL) (2 * ASK__PD_W(GB) * (GB) + ASK__PD_W(GB) * (GB) * 8 * (KL))

/* Unit (bx = g * nchunk + chunk, row t, part spl): every thread of the
 * block calls it; threads from 32 * ASK__PD_W(GB) on only pass its barriers.
 * cnt: this (bx, t)'s merge counter, or NULL (nsplit == 1, or the caller
 * merges). sh: ASK__PD_SH(GB, KL) floats of shared memory. COH: q and the
 * page table through L2 (__ldcg), for a caller whose earlier work in the
 * same launch wrote them. KBX: key batches a warp loads before it uses
 * them (0: the decode kernel's own choice); fewer hold fewer registers
 * (the chained kernel has 128 a thread) and give the same bits, since a
 * lane group takes its keys in the same order either way. EARLY: the
 * caller has not passed its PDL wait (only ask__pdl_start): the unit reads
 * pos, seq, the page table and each warp's first batch of keys and values
 * before it waits, all but a row's last nnew keys, then waits and reads q
 * and those last keys; the same keys in the same order, so the same bits.
 * The caller's promise: nothing launched since the stream's last full
 * dependency writes what is read before the wait (the engine: a launch's
 * rows hold at most nnew new positions of a sequence; the keys before
 * them, and the step's inputs, were written before the step's input copy,
 * which waits for every kernel before it). The last keys are read through
 * L2 (__ldcg) in every batch: where a cache row is not a multiple of 32
 * bytes, a key read early (by any block on the SM) may have brought a
 * sector of a new one into L1 before it was written. */
template <int GB, int KL, bool COH, int KBX = 0, bool EARLY = false>
static __device__ __forceinline__ void
ask__pd_unit(float *out, float *part, const float *q, const uint16_t *kc, const uint16_t *vc,
             const int32_t *table, const int32_t *seq, const int32_t *pos, int nh, int nkv,
             int D, int q_stride, int tw, int page, int nsplit, int kmin, float scale, int Gc,
             int nchunk, int bx, int t, int spl, unsigned *cnt, float *sh, int nnew = 0) {
  constexpr int KPW = 32 / KL, KB = KBX > 0 ? KBX : GB >= 8 ? 2 : GB == 4 ? 4 : 8;
  constexpr int W = ASK__PD_W(GB);
  float(*sm)[GB] = reinterpret_cast<float(*)[GB]>(sh);
  float(*sl)[GB] = reinterpret_cast<float(*)[GB]>(sh + W * GB);
  float(*sacc)[GB][8 * KL] = reinterpret_cast<float(*)[GB][8 * KL]>(sh + 2 * W * GB);
  const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
  const bool work = wid < W; /* warp-uniform */
  const int grp = lane / KL, slice = lane % KL;
  const int G = nh / nkv, g = bx / nchunk, hc = bx - g * nchunk;
  const int h0 = g * G + hc * Gc, Gn = min(Gc, G - hc * Gc);
  const int L = pos[t] < 0 ? 0 : pos[t] + 1; /* keys 0..pos[t] */
  const int per = max((L + nsplit - 1) / nsplit, kmin), j0 = spl * per,
            j1 = min(L, j0 + per);
  const int32_t *tab = table + (L > 0 ? (size_t)seq[t] * (size_t)tw : 0);
  const size_t kvd = (size_t)nkv * (size_t)D;
  const bool dl = slice * 8 < D;
  const uint16_t *kr = kc + (size_t)g * D + slice * 8, *vr = vc + (size_t)g * D + slice * 8;

  /* A batch of the warp: keys jw + grp + k * step (k < KB), jw warp-uniform;
   * rows() looks their cache rows up, fetch() loads them (zero: after
   * clearing the batch; sub: only the keys in [lo, hi)); with EARLY the
   * keys from jnew on through L2, whose rows may share a sector with a key
   * read early. */
  const int step = W * KPW;
  int row[KB];
  uint4 kk[KB], vv[KB];
  auto rows = [&](int jw) {
#pragma unroll
    for (int k = 0; k < KB; k++) {
      const int j = jw + grp + k * step;
      row[k] = j < j1 ? ask__pg_row(tab, j, page) : -1;
    }
  };
  /* keys from jnew on may be the kernel before's (EARLY: fetched after the wait) */
  const int jnew = EARLY ? max(L - nnew, 0) : 0;
  auto fetch = [&](int jw, bool zero, bool sub, int lo, int hi) {
#pragma unroll
    for (int k = 0; k < KB; k++) {
      const int j = jw + grp + k * step;
      if (zero)
        kk[k] = vv[k] = make_uint4(0u, 0u, 0u, 0u);
      if (row[k] >= 0 && dl && (!sub || (j >= lo && j < hi))) {
        const uint4 *kp = reinterpret_cast<const uint4 *>(kr + (size_t)row[k] * kvd),
                    *vp = reinterpret_cast<const uint4 *>(vr + (size_t)row[k] * kvd);
        const bool cg = COH || (EARLY && j >= jnew);
        kk[k] = cg ? __ldcg(kp) : __ldg(kp);
        vv[k] = cg ? __ldcg(vp) : __ldg(vp);
      }
    }
  };
  int jw = j0 + wid * KPW;
  if (EARLY) {
    if (work && jw < j1) {
      rows(jw);
      fetch(jw, true, true, 0, jnew);
    }
    ask__pdl_wait();
  }
  if (work) {
    float qr[GB][8], acc[GB][8], m[GB], l[GB];
#pragma unroll
    for (int h = 0; h < GB; h++) {
      m[h] = -INFINITY, l[h] = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; e++)
        qr[h][e] = acc[h][e] = 0.0f;
      if (h < Gn && dl && j1 > j0) {
        const float4 *q4 =
            reinterpret_cast<const float4 *>(q + (size_t)t * q_stride + (size_t)(h0 + h) * D) +
            2 * slice;
        float4 a = COH ? __ldcg(q4) : q4[0], b = COH ? __ldcg(q4 + 1) : q4[1];
        qr[h][0] = a.x, qr[h][1] = a.y, qr[h][2] = a.z, qr[h][3] = a.w;
        qr[h][4] = b.x, qr[h][5] = b.y, qr[h][6] = b.z, qr[h][7] = b.w;
      }
    }
    for (bool first = true; jw < j1; jw += step * KB, first = false) {
      if (EARLY && first) {
        fetch(jw, false, true, jnew, j1);
      } else {
        rows(jw);
        fetch(jw, true, false, 0, 0);
      }
#pragma unroll
      for (int k = 0; k < KB; k++) {
        float kf[8], vf[8], sc[GB];
        ask__pg_unpack(kf, kk[k]);
        ask__pg_unpack(vf, vv[k]);
#pragma unroll
        for (int h = 0; h < GB; h++) {
          float d = 0.0f;
#pragma unroll
          for (int e = 0; e < 8; e++)
            d += qr[h][e] * kf[e];
#pragma unroll
          for (int o = KL / 2; o > 0; o >>= 1)
            d += __shfl_xor_sync(0xffffffffu, d, o);
          sc[h] = d * scale;
        }
        if (row[k] < 0) /* the same for the KL lanes of the group */
          continue;
#pragma unroll
        for (int h = 0; h < GB; h++) {
          const float mn = fmaxf(m[h], sc[h]);
          const float corr = m[h] == -INFINITY ? 0.0f : expf(m[h] - mn), p = expf(sc[h] - mn);
          l[h] = l[h] * corr + p;
#pragma unroll
          for (int e = 0; e < 8; e++)
            acc[h][e] = acc[h][e] * corr + p * vf[e];
          m[h] = mn;
        }
      }
    }
    /* the warp's lane groups into group 0 */
#pragma unroll
    for (int o = KL; o < 32; o <<= 1) {
#pragma unroll
      for (int h = 0; h < GB; h++) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m[h], o),
                    l2 = __shfl_xor_sync(0xffffffffu, l[h], o), mx = fmaxf(m[h], m2);
        const float c1 = m[h] == -INFINITY ? 0.0f : expf(m[h] - mx),
                    c2 = m2 == -INFINITY ? 0.0f : expf(m2 - mx);
        l[h] = l[h] * c1 + l2 * c2;
#pragma unroll
        for (int e = 0; e < 8; e++)
          acc[h][e] = acc[h][e] * c1 + __shfl_xor_sync(0xffffffffu, acc[h][e], o) * c2;
        m[h] = mx;
      }
    }
    if (lane < KL) {
#pragma unroll
      for (int h = 0; h < GB; h++) {
        if (lane == 0)
          sm[wid][h] = m[h], sl[wid][h] = l[h];
#pragma unroll
        for (int e = 0; e < 8; e++)
          sacc[wid][h][slice * 8 + e] = acc[h][e];
      }
    }
  }
  __syncthreads();
  for (int x = tid; work && x < Gn * D; x += 32 * W) {
    const int h = x / D, d = x - h * D;
    float M = -INFINITY, Ls = 0.0f, a = 0.0f;
#pragma unroll
    for (int w = 0; w < W; w++)
      M = fmaxf(M, sm[w][h]);
#pragma unroll
    for (int w = 0; w < W; w++) {
      const float wt = sm[w][h] == -INFINITY ? 0.0f : expf(sm[w][h] - M);
      Ls += sl[w][h] * wt;
      a += sacc[w][h][d] * wt;
    }
    const size_t hq = (size_t)(h0 + h);
    if (nsplit == 1) {
      out[(size_t)t * nh * D + hq * D + d] = Ls > 0.0f ? a / Ls : 0.0f;
    } else {
      float *pp = part + (((size_t)t * nh + hq) * nsplit + spl) * (size_t)(D + 2);
      pp[2 + d] = a;
      if (d == 0)
        pp[0] = M, pp[1] = Ls;
    }
  }
  if (nsplit > 1 && cnt != NULL)
    ask__pg_merge_last(out, part, cnt, t, nh, h0, Gn, D, nsplit, ask__pg_live(L, per, nsplit));
}

#endif /* ASK_CUDA_PAGED_CUH */

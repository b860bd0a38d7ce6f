/* sample_rows.cu — sampling next tokens on the device (temperature, top-k,
 * top-p, one draw of the row's generator), rows of logits cut in parts over
 * many blocks, so that only token ids come back to the host. The rules are
 * kernels/ref/sample.c's (transformers' warpers); rows with temperature <= 0
 * are greedy (argmax's rules).
 *
 * No sort: values map to order-preserving 32-bit keys and each threshold is
 * found by a radix search over the key space, 8 bits a pass, from the top:
 *   top-k: the k-th largest key (count histograms); keys below it are
 *          removed, ties with it stay;
 *   top-p: the largest key t with mass(kept, key < t) <= (1 - p) * total
 *          (mass histograms); every key below t is removed, and of the
 *          tokens at key t the highest ids go first while the removed mass
 *          stays within bound (the reference's ascending order puts equal
 *          values by descending id); the largest token always stays.
 * Weights w = exp(v - max) (double) are summed as integers, w rounded to
 * multiples of 2^-sh (sh = 44, fewer for rows over 2^18 values so that a
 * row's sum fits 64 bits): exact and independent of the order blocks and
 * threads add them, so a seed draws the same token on every run and any
 * block schedule. The reference sums doubles: a threshold or draw within
 * ~n 2^-(sh+1) of a boundary may fall the other way.
 *
 * A launch is 10 kernels over (parts, rows), 256 threads a block:
 *   prep      argmax keys (greedy rows, and the fallback when every value is
 *             -inf), the max value, top-k's first count histogram;
 *   kdigit x3 top-k's next three digits (rows with top-k only);
 *   pdigit    the kept mass (total), the count of values equal to the max,
 *             top-p's first mass histogram; then x3 its next digits;
 *   sums      per part: the mass above the top-p key and the ties at it;
 *             the last part draws the uniform and finds the drawing part;
 *   draw      that part walks its values in id order to the token; with
 *             probs, every part writes the final distribution.
 * Each kernel's blocks add to row-wide accumulators with integer atomics,
 * then take a ticket; the last block of a row decides (a digit, a sum) and
 * sets the accumulators and the ticket back to 0 for the next kernel.
 */
#include "sample.cuh"

#define ASK__SR_T 256        /* threads a block */
#define ASK__SR_ROWS 1024    /* rows of one launch; more go in several */
#define ASK__SR_CHUNK 2048   /* values a part at least */
#define ASK__SR_BLOCKS 256   /* parts of a launch: about this many blocks */

enum { ASK__SR_TOPK = 1, ASK__SR_TOPP = 2, ASK__SR_PDONE = 4 };

/* A row's state between the kernels of a launch. */
struct ask__srow {
  unsigned long long amax;  /* prep: argmax key (atomics) */
  unsigned long long total; /* pdigit 0: kept mass (atomics) */
  unsigned long long thr;   /* (1 - p) * total */
  unsigned long long below; /* top-p: kept mass below the prefix */
  unsigned long long we;    /* the weight at the top-p key */
  unsigned long long total2; /* the draw's mass */
  unsigned mxk;             /* prep: largest key of a non-NaN value (atomics; 0: none) */
  unsigned cmax;            /* pdigit 0: kept values equal to the max (atomics) */
  unsigned cnt;             /* the ticket */
  unsigned kpre, ppre;      /* the top-k and top-p keys as far as decided */
  unsigned cpre;            /* top-p: values at the key decided (its last digit) */
  int kneed;                /* top-k: values still wanted at or above the prefix */
  int mode;                 /* 1 sampling; 0 done (greedy, fallback) */
  int flags;                /* ASK__SR_* */
  int tiekeep;              /* values at the top-p key kept (the lowest ids); -1 all */
  int blk;                  /* the part that draws */
  int gid;                  /* argmax of the raw values */
  float mx;                 /* the largest value after temperature */
};

struct ask__sr_args {
  int32_t *ids;
  float *probs;
  const float *x, *temperature, *top_p;
  const int32_t *top_k;
  uint64_t *rng;
  int n, chunk, sh;
  ask__srow *st;
  unsigned long long *hm; /* [row][256] mass histograms */
  unsigned *hc;           /* [row][256] count histograms */
  unsigned long long *pa; /* [row][part] */
  unsigned *pt;           /* [row][part] */
};

static ask__srow *ask__sr_st;
static unsigned long long *ask__sr_hm, *ask__sr_pa;
static unsigned *ask__sr_hc, *ask__sr_pt;

/* cuda_int.h (through ask__cu_sample_init): the rows' state, zeroed. */
extern "C" int ask__cu_sample_rows_init(cudaStream_t s) {
  const size_t R = ASK__SR_ROWS, B = ASK__SR_ROWS; /* parts: R * P <= max(R, 256) */
  const size_t bytes = R * sizeof(ask__srow) + R * 256 * 8 + B * 8 + R * 256 * 4 + B * 4;
  void *p = NULL;
  if (ask__sr_st != NULL)
    return 0;
  if (ask__cu_check(cudaMalloc(&p, bytes), "cudaMalloc (sample_rows state)"))
    return 1;
  if (ask__cu_check(cudaMemsetAsync(p, 0, bytes, s), "cudaMemsetAsync (sample_rows state)") ||
      ask__cu_check(cudaStreamSynchronize(s), "cudaStreamSynchronize (sample_rows state)")) {
    cudaFree(p);
    return 1;
  }
  char *c = static_cast<char *>(p);
  ask__sr_st = reinterpret_cast<ask__srow *>(c);
  c += R * sizeof(ask__srow);
  ask__sr_hm = reinterpret_cast<unsigned long long *>(c);
  c += R * 256 * 8;
  ask__sr_pa = reinterpret_cast<unsigned long long *>(c);
  c += B * 8;
  ask__sr_hc = reinterpret_cast<unsigned *>(c);
  c += R * 256 * 4;
  ask__sr_pt = reinterpret_cast<unsigned *>(c);
  return 0;
}

/* The fixed-point weight of value v under max mx. */
static __device__ __forceinline__ unsigned long long ask__sr_w(float v, double mx, int sh) {
  const double w = exp((double)v - mx);
  return w > 0.0 ? (unsigned long long)(w * (double)(1ull << sh) + 0.5) : 0ull;
}

/* Inclusive scan over the block's 256 threads (sh: 8 values). */
template <typename V> static __device__ __forceinline__ V ask__sr_scan(V v, V *sh) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  for (int o = 1; o < 32; o <<= 1) {
    const V y = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o)
      v += y;
  }
  __syncthreads();
  if (lane == 31)
    sh[wid] = v;
  __syncthreads();
  for (int w = 0; w < wid; w++)
    v += sh[w];
  return v;
}

/* Sum over the block, in thread 0. */
template <typename V> static __device__ __forceinline__ V ask__sr_sum(V v, V *sh) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0)
    sh[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < ASK__SR_T / 32; w++)
      v += sh[w];
  return v;
}

/* A block's histogram (bin b += m, count c) into the row's, by thread b. */
static __device__ __forceinline__ void ask__sr_flush(unsigned long long *hm, unsigned *hc,
                                                     const unsigned long long *sm,
                                                     const unsigned *sc) {
  __syncthreads();
  const int b = threadIdx.x;
  if (hm != NULL && sm[b] != 0)
    atomicAdd(hm + b, sm[b]);
  if (sc[b] != 0)
    atomicAdd(hc + b, sc[b]);
}

#define ASK__SR_ROW                                                                          \
  const int P = (int)gridDim.x, row = blockIdx.y, tid = threadIdx.x;                         \
  const int i0 = (int)blockIdx.x * a.chunk, i1 = min(a.n, i0 + a.chunk);                     \
  const float *xr = a.x + (size_t)row * a.n;                                                 \
  ask__srow *st = a.st + row;                                                                \
  (void)P, (void)i1, (void)xr

/* For each value x at index i of the block's part: 8 values a thread are
 * loaded before any is used (one load in flight at a time would make a
 * pass as slow as the L2's latency times the values a thread). */
#define ASK__SR_EACH(body)                                                                   \
  for (int ib = i0 + tid; ib < i1; ib += 8 * ASK__SR_T) {                                    \
    float xb[8];                                                                             \
    _Pragma("unroll") for (int u = 0; u < 8; u++) xb[u] =                                    \
        ib + u * ASK__SR_T < i1 ? xr[ib + u * ASK__SR_T] : 0.0f;                             \
    _Pragma("unroll") for (int u = 0; u < 8; u++) {                                          \
      const int i = ib + u * ASK__SR_T;                                                      \
      const float x = xb[u];                                                                 \
      if (i < i1) {                                                                          \
        body                                                                                 \
      }                                                                                      \
    }                                                                                        \
  }

/* top-p's digits (last block, thread b holds bin b's mass and count): the
 * largest bin whose mass below stays within thr - below; true in the
 * thread that found it (it updates the state). */
static __device__ bool ask__sr_pick_p(ask__srow *st, unsigned long long m, unsigned c, int shift,
                                      unsigned long long *sh) {
  const unsigned long long room = st->thr - st->below; /* read before the scan's barriers */
  const unsigned long long incl = ask__sr_scan(m, sh), excl = incl - m;
  const int b = threadIdx.x;
  if (!(excl <= room && (b == 255 || incl > room)))
    return false;
  st->ppre |= (unsigned)b << shift;
  st->below += excl;
  st->cpre = c;
  return true;
}

/* After top-p's last digit (or without top-p): how many values at its key
 * stay. Thread 0 of the last block. */
static __device__ void ask__sr_ties(ask__srow *st, int sh, float p) {
  if (!(st->flags & ASK__SR_TOPP) || !(p < 1.0f)) {
    st->ppre = 0u;
    st->tiekeep = -1;
    return;
  }
  const unsigned c = st->cpre, maxkey = ask__okey(st->mx);
  if (c == 0) {
    st->tiekeep = 0;
    st->we = 0;
    return;
  }
  const unsigned long long we = ask__sr_w(ask__unkey(st->ppre), (double)st->mx, sh);
  const unsigned rmax = st->ppre == maxkey ? c - 1 : c;
  unsigned long long r = rmax;
  if (we > 0) {
    r = (st->thr - st->below) / we;
    r = r > rmax ? rmax : r;
  }
  st->we = we;
  st->tiekeep = (int)(c - (unsigned)r);
}

/* prep: argmax keys over the raw values, the max after temperature, and
 * top-k's first digit. */
static __global__ void __launch_bounds__(ASK__SR_T) ask__k_sr_prep(ask__sr_args a) {
  ask__pdl_enter();
  ASK__SR_ROW;
  __shared__ unsigned long long skey[8];
  __shared__ unsigned sc[256], smk[8];
  const float temp = a.temperature[row];
  const int k = a.top_k[row];
  const bool samp = temp > 0.0f, topk = samp && k > 0 && k < a.n;
  sc[tid] = 0u;
  __syncthreads();
  unsigned long long best = 0;
  unsigned mk = 0u;
  ASK__SR_EACH({
    best = ask__amax(best, ask__amkey(x, i));
    if (samp) {
      const float v = temp == 1.0f ? x : x / temp;
      const unsigned key = ask__okey(v);
      if (v == v)
        mk = max(mk, key);
      if (topk)
        atomicAdd(sc + (key >> 24), 1u);
    }
  })
  for (int o = 16; o > 0; o >>= 1) {
    best = ask__amax(best, __shfl_xor_sync(0xffffffffu, best, o));
    mk = max(mk, __shfl_xor_sync(0xffffffffu, mk, o));
  }
  if ((tid & 31) == 0)
    skey[tid >> 5] = best, smk[tid >> 5] = mk;
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < 8; w++)
      best = ask__amax(best, skey[w]), mk = max(mk, smk[w]);
    atomicMax(&st->amax, best);
    if (samp)
      atomicMax(&st->mxk, mk);
  }
  if (topk)
    ask__sr_flush(NULL, a.hc + (size_t)row * 256, NULL, sc);
  if (!ask__last_block(&st->cnt, (unsigned)P))
    return;
  if (tid == 0) {
    const unsigned long long am = __ldcg(&st->amax);
    const unsigned mxk = __ldcg(&st->mxk);
    st->amax = 0ull, st->mxk = 0u;
    st->gid = (int)~(uint32_t)am;
    st->mx = mxk != 0u ? ask__unkey(mxk) : -INFINITY;
    /* greedy, or every value -inf (the reference then takes argmax) */
    st->mode = samp && st->mx > -INFINITY ? 1 : 0;
    if (st->mode == 0)
      a.ids[row] = st->gid;
    st->flags = (topk ? ASK__SR_TOPK : 0) | (a.top_p[row] < 1.0f ? ASK__SR_TOPP : 0);
    st->kpre = 0u, st->kneed = k, st->ppre = 0u, st->below = 0ull, st->cpre = 0u;
    st->tiekeep = -1; /* without top-p every kept value stays */
  }
  if (!topk)
    return;
  /* top-k's first digit: the bin where the count from the top reaches k */
  unsigned *hc = a.hc + (size_t)row * 256;
  const unsigned c = __ldcg(hc + 255 - tid);
  hc[255 - tid] = 0u;
  __shared__ unsigned ssc[8];
  const unsigned incl = ask__sr_scan(c, ssc); /* its barriers: st written above */
  if (st->mode == 1 && incl >= (unsigned)k && incl - c < (unsigned)k) {
    st->kpre = (unsigned)(255 - tid) << 24;
    st->kneed = k - (int)(incl - c);
  }
}

/* top-k's digit at shift (16, 8, 0): counts of the values whose key has the
 * prefix decided so far. */
static __global__ void __launch_bounds__(ASK__SR_T) ask__k_sr_kdigit(ask__sr_args a, int shift) {
  ask__pdl_enter();
  ASK__SR_ROW;
  __shared__ unsigned sc[256];
  if (st->mode != 1 || !(st->flags & ASK__SR_TOPK))
    return;
  const float temp = a.temperature[row];
  const unsigned pre = st->kpre >> (shift + 8);
  sc[tid] = 0u;
  __syncthreads();
  ASK__SR_EACH({
    const unsigned key = ask__okey(temp == 1.0f ? x : x / temp);
    if (key >> (shift + 8) == pre)
      atomicAdd(sc + ((key >> shift) & 255u), 1u);
  })
  unsigned *hc = a.hc + (size_t)row * 256;
  ask__sr_flush(NULL, hc, NULL, sc);
  if (!ask__last_block(&st->cnt, (unsigned)P))
    return;
  const unsigned c = __ldcg(hc + 255 - tid), need = (unsigned)st->kneed;
  __syncthreads(); /* every thread read kneed before it changes */
  hc[255 - tid] = 0u;
  __shared__ unsigned ssc[8];
  const unsigned incl = ask__sr_scan(c, ssc);
  if (incl >= need && incl - c < need) {
    st->kpre |= (unsigned)(255 - tid) << shift;
    st->kneed = (int)(need - (incl - c));
  }
}

/* top-p's digit at shift (24: the first, which also sums the kept mass and
 * counts the values equal to the max, then decides thr). */
static __global__ void __launch_bounds__(ASK__SR_T) ask__k_sr_pdigit(ask__sr_args a, int shift) {
  ask__pdl_enter();
  ASK__SR_ROW;
  __shared__ unsigned long long sm[256], ssum[8];
  __shared__ unsigned sc[256], scm[8];
  const bool first = shift == 24;
  if (st->mode != 1 || (st->flags & (ASK__SR_TOPP | ASK__SR_PDONE)) != ASK__SR_TOPP)
    return;
  const float temp = a.temperature[row];
  const double mx = (double)st->mx;
  const unsigned kmin = st->flags & ASK__SR_TOPK ? st->kpre : 0u, mxkey = ask__okey(st->mx);
  const unsigned pre = first ? 0u : st->ppre >> (shift + 8);
  sm[tid] = 0ull, sc[tid] = 0u;
  __syncthreads();
  unsigned long long tot = 0;
  unsigned cm = 0;
  ASK__SR_EACH({
    const float v = temp == 1.0f ? x : x / temp;
    const unsigned key = ask__okey(v);
    if (key >= kmin && (first || key >> (shift + 8) == pre)) {
      const unsigned long long w = ask__sr_w(v, mx, a.sh);
      if (first) {
        tot += w;
        cm += key == mxkey;
      }
      atomicAdd(sm + ((key >> shift) & 255u), w);
      atomicAdd(sc + ((key >> shift) & 255u), 1u);
    }
  })

  if (first) {
    tot = ask__sr_sum(tot, ssum);
    cm = ask__sr_sum(cm, scm);
    if (tid == 0) {
      atomicAdd(&st->total, tot);
      atomicAdd(&st->cmax, cm);
    }
  }
  unsigned long long *hm = a.hm + (size_t)row * 256;
  unsigned *hc = a.hc + (size_t)row * 256;
  ask__sr_flush(hm, hc, sm, sc);
  if (!ask__last_block(&st->cnt, (unsigned)P))
    return;
  const float p = a.top_p[row];
  __shared__ int s_go;
  if (first && tid == 0) {
    const unsigned long long total = __ldcg(&st->total);
    const unsigned cmax = __ldcg(&st->cmax);
    st->total = 0ull, st->cmax = 0u;
    const double t = (1.0 - (double)p) * (double)total;
    const unsigned long long thr = t >= (double)total ? total : (unsigned long long)t;
    st->thr = thr;
    s_go = 1;
    if (thr >= total) { /* p near 0: only the largest (and its ties) stay */
      st->ppre = mxkey;
      st->below = total - (unsigned long long)cmax * (1ull << a.sh);
      st->cpre = cmax;
      st->flags |= ASK__SR_PDONE;
      s_go = 0;
    }
  }
  if (first)
    __syncthreads();
  if (first && !s_go) {
    if (tid == 0)
      ask__sr_ties(st, a.sh, p);
    hm[tid] = 0ull; /* the histograms back to 0 */
    hc[tid] = 0u;
    return;
  }
  const unsigned long long m = __ldcg(hm + tid);
  const unsigned c = __ldcg(hc + tid);
  hm[tid] = 0ull;
  hc[tid] = 0u;
  __shared__ unsigned long long sscan[8];
  ask__sr_pick_p(st, m, c, shift, sscan);
  __syncthreads();
  if (shift == 0 && tid == 0)
    ask__sr_ties(st, a.sh, p);
}

/* sums: each part's mass above the top-p key and its values at that key;
 * the row's last block keeps each part's ties in id order, draws the
 * uniform, and finds the part whose mass holds the target. */
static __global__ void __launch_bounds__(ASK__SR_T) ask__k_sr_sums(ask__sr_args a) {
  ask__pdl_enter();
  ASK__SR_ROW;
  __shared__ unsigned long long ssum[8], sl[8], s_target, s_total;
  __shared__ unsigned sct[8], slt[8];
  if (st->mode != 1)
    return;
  const float temp = a.temperature[row];
  const double mx = (double)st->mx;
  const unsigned kmin = st->flags & ASK__SR_TOPK ? st->kpre : 0u, pmin = st->ppre;
  const bool topp = st->tiekeep >= 0;
  unsigned long long A = 0;
  unsigned tc = 0;
  ASK__SR_EACH({
    const float v = temp == 1.0f ? x : x / temp;
    const unsigned key = ask__okey(v);
    if (key >= kmin && !(topp && key < pmin)) {
      if (topp && key == pmin)
        tc++;
      else
        A += ask__sr_w(v, mx, a.sh);
    }
  })

  A = ask__sr_sum(A, ssum);
  tc = ask__sr_sum(tc, sct);
  if (tid == 0) {
    a.pa[(size_t)row * P + blockIdx.x] = A;
    a.pt[(size_t)row * P + blockIdx.x] = tc;
  }
  if (!ask__last_block(&st->cnt, (unsigned)P))
    return;
  /* thread b: part b (P <= 256) */
  const bool has = tid < P;
  const unsigned long long Ab = has ? __ldcg(a.pa + (size_t)row * P + tid) : 0ull;
  const unsigned tb = has ? __ldcg(a.pt + (size_t)row * P + tid) : 0u;
  const unsigned tincl = ask__sr_scan(tb, slt), tex = tincl - tb;
  unsigned keep = tb;
  if (topp) {
    const unsigned want = (unsigned)st->tiekeep;
    keep = want > tex ? min(tb, want - tex) : 0u;
  }
  const unsigned long long alive = Ab + (unsigned long long)keep * st->we;
  const unsigned long long incl = ask__sr_scan(alive, sl);
  if (tid == P - 1)
    s_total = incl;
  if (has)
    a.pt[(size_t)row * P + tid] = keep; /* the draw's ties a part */
  __syncthreads();
  if (tid == 0) {
    const unsigned long long total = s_total;
    unsigned long long tg = 0;
    if (total > 0) {
      uint64_t g = a.rng[row];
      g ^= g >> 12;
      g ^= g << 25;
      g ^= g >> 27;
      a.rng[row] = g;
      const double u = (double)((g * 0x2545f4914f6cdd1dull) >> 11) * (1.0 / 9007199254740992.0);
      const double t = u * (double)total;
      tg = t >= (double)total ? total - 1 : (unsigned long long)t;
    } else { /* nothing to draw from (cannot happen: the largest stays): greedy */
      st->mode = 0;
      a.ids[row] = st->gid;
    }
    s_target = tg;
    st->total2 = total;
  }
  __syncthreads();
  const unsigned long long tg = s_target;
  if (has && st->mode == 1 && incl - alive <= tg && tg < incl && alive > 0) {
    st->blk = tid;
    a.pa[(size_t)row * P + tid] = tg - (incl - alive);
  }
}

/* draw: the drawing part walks its values in id order to the target; with
 * probs, every part writes the final distribution (greedy rows: 1 at the
 * chosen id). */
static __global__ void __launch_bounds__(ASK__SR_T) ask__k_sr_draw(ask__sr_args a) {
  ask__pdl_enter();
  ASK__SR_ROW;
  __shared__ unsigned long long sl[8];
  __shared__ unsigned slt[8];
  const bool mine = st->mode == 1 && st->blk == (int)blockIdx.x;
  if (!mine && a.probs == NULL)
    return;
  float *pr = a.probs != NULL ? a.probs + (size_t)row * a.n : NULL;
  if (st->mode != 1) { /* greedy */
    const int id = a.ids[row];
    for (int i = i0 + tid; i < i1; i += ASK__SR_T)
      pr[i] = i == id ? 1.0f : 0.0f;
    return;
  }
  const float temp = a.temperature[row];
  const double mx = (double)st->mx;
  const unsigned kmin = st->flags & ASK__SR_TOPK ? st->kpre : 0u, pmin = st->ppre;
  const bool topp = st->tiekeep >= 0;
  const unsigned keep = a.pt[(size_t)row * P + blockIdx.x];
  /* thread t: values [j0, j1) of the part, in order */
  const int per = (a.chunk + ASK__SR_T - 1) / ASK__SR_T, j0 = min(i1, i0 + tid * per),
            j1 = min(i1, j0 + per);
#define ASK__SR_TIE(key) (topp && (key) == pmin)
#define ASK__SR_IN(key) ((key) >= kmin && (!topp || (key) >= pmin))
  unsigned ties = 0;
  for (int i = j0; i < j1; i++) {
    const unsigned key = ask__okey(ask__tv(xr, i, temp));
    ties += ASK__SR_IN(key) && ASK__SR_TIE(key);
  }
  unsigned rank = ask__sr_scan(ties, slt) - ties; /* ties of the part before j0 */
  unsigned long long mass = 0;
  for (int i = j0, r = (int)rank; i < j1; i++) {
    const float v = ask__tv(xr, i, temp);
    const unsigned key = ask__okey(v);
    if (!ASK__SR_IN(key))
      continue;
    if (ASK__SR_TIE(key) && (unsigned)r++ >= keep)
      continue;
    mass += ask__sr_w(v, mx, a.sh);
  }
  const unsigned long long incl = ask__sr_scan(mass, sl), excl = incl - mass;
  const unsigned long long total = st->total2;
  const unsigned long long tg = mine ? a.pa[(size_t)row * P + blockIdx.x] : 0ull;
  const bool walk = mine && excl <= tg && tg < incl;
  unsigned long long cum = excl;
  bool found = false;
  for (int i = j0, r = (int)rank; i < j1 && ((walk && !found) || pr != NULL); i++) {
    const float v = ask__tv(xr, i, temp);
    const unsigned key = ask__okey(v);
    unsigned long long w = 0;
    if (ASK__SR_IN(key) && !(ASK__SR_TIE(key) && (unsigned)r++ >= keep))
      w = ask__sr_w(v, mx, a.sh);
    if (pr != NULL)
      pr[i] = (float)((double)w / (double)total);
    if (walk && !found && w > 0) {
      cum += w;
      if (tg < cum) {
        a.ids[row] = i;
        found = true;
      }
    }
  }
#undef ASK__SR_TIE
#undef ASK__SR_IN
}

extern "C" void ask__cu_sample_rows(cudaStream_t s, int32_t *ids, float *probs, const float *x,
                                    const float *temperature, const int32_t *top_k,
                                    const float *top_p, uint64_t *rng, int T, int n) {
  if (T <= 0 || ask__cu_failed())
    return;
  if (ask__sr_st == NULL || n <= 0) {
    ask__cu_check(cudaErrorInvalidValue, "sample_rows: no state (ask__cu_sample_init) or n < 1");
    return;
  }
  int bits = 0;
  while (bits < 31 && (1u << bits) <= (unsigned)n)
    bits++;
  const int sh = 63 - bits < 44 ? 63 - bits : 44;
  for (int r0 = 0; r0 < T; r0 += ASK__SR_ROWS) {
    const int R = T - r0 < ASK__SR_ROWS ? T - r0 : ASK__SR_ROWS;
    int P = (n + ASK__SR_CHUNK - 1) / ASK__SR_CHUNK, cap = ASK__SR_BLOCKS / R;
    P = P < cap ? P : cap;
    P = P < 1 ? 1 : P;
    const int chunk = (n + P - 1) / P;
    const size_t o = (size_t)r0;
    ask__sr_args a = {ids + o,       probs != NULL ? probs + o * (size_t)n : NULL,
                      x + o * (size_t)n, temperature + o, top_p + o, top_k + o, rng + o, n,
                      chunk, sh, ask__sr_st, ask__sr_hm, ask__sr_hc, ask__sr_pa, ask__sr_pt};
    dim3 grid((unsigned)P, (unsigned)R);
    ASK__LAUNCH(grid, ASK__SR_T, 0, s, ask__k_sr_prep)(a);
    for (int sh8 = 16; sh8 >= 0; sh8 -= 8)
      ASK__LAUNCH(grid, ASK__SR_T, 0, s, ask__k_sr_kdigit)(a, sh8);
    for (int sh8 = 24; sh8 >= 0; sh8 -= 8)
      ASK__LAUNCH(grid, ASK__SR_T, 0, s, ask__k_sr_pdigit)(a, sh8);
    ASK__LAUNCH(grid, ASK__SR_T, 0, s, ask__k_sr_sums)(a);
    ASK__LAUNCH(grid, ASK__SR_T, 0, s, ask__k_sr_draw)(a);
    if (ASK__LAUNCHED("sample_rows"))
      return;
  }
}

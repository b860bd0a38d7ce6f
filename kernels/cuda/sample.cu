/* sample.cu — choosing next tokens on the device, one block of 1024
 * threads per row of logits, so that only token ids come back to the host:
 * greedy (the first largest, NaNs never chosen, as torch.argmax and
 * kernels/ref's argmax) and sampling with temperature, top-k and top-p under
 * the rules of kernels/ref/sample.c (transformers' warpers).
 *
 * No sort: values are mapped to order-preserving 32-bit keys, and each
 * threshold is found by a bitwise search over the key space, one block-wide
 * count or sum per bit (32 passes over the row):
 *   top-k: the largest key t with count(key >= t) >= k is the k-th largest;
 *          keys below it are removed (ties stay, as in the reference);
 *   top-p: with weights w = exp(v - max) (double), the largest key t with
 *          mass(key < t) <= (1 - p) * total: every key below t is removed,
 *          and of the tokens at key t, the highest ids go first while the
 *          removed mass stays within bound (the reference's ascending order
 *          puts equal values by descending id); the largest token stays.
 * The draw uses one uniform of the row's xorshift64* state (the same stream
 * as ask_rng_uniform) and walks the kept weights in id order, as the
 * reference does; sums run in another order, so a uniform within ~1e-12 of
 * a boundary may pick the neighbour.
 */
#include "common.cuh"

#define ASK__SAMPLE_THREADS 1024

/* Order-preserving key of a float (larger float, larger key). */
static __device__ __forceinline__ uint32_t ask__okey(float f) {
  uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ float ask__unkey(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/* a (value av at index ai) comes before b as argmax's answer. */
static __device__ __forceinline__ bool ask__better(float av, int ai, float bv, int bi) {
  if (av != av)
    return false;
  if (bv != bv)
    return true;
  return av > bv || (av == bv && ai < bi);
}

/* First index of the largest of xr (n) over the block; 0 when all NaN.
 * Each thread loads 8 values before it compares them: a compare-then-load
 * loop keeps one load in flight, which made a 128k-entry row take 56 us
 * in one block on an H200 (Nsight Compute, 2026-11-26). */
static __device__ int ask__block_argmax(const float *xr, int n) {
  __shared__ float sv[32];
  __shared__ int si[32];
  float bv = NAN;
  int bi = n, i = threadIdx.x, B = blockDim.x;
  for (; i + 7 * B < n; i += 8 * B) {
    float v[8];
#pragma unroll
    for (int u = 0; u < 8; u++)
      v[u] = xr[i + u * B];
#pragma unroll
    for (int u = 0; u < 8; u++)
      if (ask__better(v[u], i + u * B, bv, bi)) {
        bv = v[u];
        bi = i + u * B;
      }
  }
  for (; i < n; i += B)
    if (ask__better(xr[i], i, bv, bi)) {
      bv = xr[i];
      bi = i;
    }
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ask__better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) {
    sv[wid] = bv;
    si[wid] = bi;
  }
  __syncthreads();
  bv = lane < nw ? sv[lane] : NAN;
  bi = lane < nw ? si[lane] : n;
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ask__better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  return bi < n ? bi : 0;
}

static __global__ void ask__k_argmax_rows(int32_t *ids, const float *x, int n) {
  ask__pdl_enter();
  int r = ask__block_argmax(x + (size_t)blockIdx.x * n, n);
  if (threadIdx.x == 0)
    ids[blockIdx.x] = r;
}

/* ---- argmax over many blocks a row ----
 * One block a row reads a 128k-256k vocabulary at ~30 GB/s (the loads of
 * one SM in flight): 17 us (Llama-3.2-1B) and 33 us (gemma-2b) of a batch-1
 * step (ASK_PROFILE, 2026-11-26). With few rows the row is cut in parts of
 * ASK__AM_CHUNK values, one block of 256 threads each (8 loads in flight a
 * thread). An (index, value) pair is a 64-bit key, larger for the better
 * answer: the value's order-preserving key above (0 for NaN, never chosen
 * unless the row is all NaN), the index complemented below (the first of
 * equal values wins), so a part's answer is the largest key, whatever the
 * order the comparisons ran in. Each block writes its key, fences, takes a
 * ticket from the row's counter; the last one takes the largest of the
 * row's keys (read through L2) and sets the counter back to 0. */
#define ASK__AM_SLOTS 512 /* rows and keys of one launch at most */
#define ASK__AM_CHUNK 2048 /* values a part: 8 loads of 256 threads */
#define ASK__AM_BLOCKS 256 /* the parts of a launch at most */
int ask__cu_argmax_parts = -1; /* cuda_int.h */
static unsigned *ask__am_cnt;            /* ASK__AM_SLOTS counters, 0 between launches */
static unsigned long long *ask__am_part; /* ASK__AM_SLOTS keys */

extern "C" int ask__cu_sample_init(cudaStream_t s) {
  void *p = NULL;
  if (ask__am_cnt != NULL)
    return 0;
  size_t bytes = ASK__AM_SLOTS * (sizeof(unsigned) + sizeof(unsigned long long));
  if (ask__cu_check(cudaMalloc(&p, bytes), "cudaMalloc (argmax_rows parts)"))
    return 1;
  if (ask__cu_check(cudaMemsetAsync(p, 0, bytes, s), "cudaMemsetAsync (argmax_rows parts)") ||
      ask__cu_check(cudaStreamSynchronize(s), "cudaStreamSynchronize (argmax_rows parts)")) {
    cudaFree(p);
    return 1;
  }
  ask__am_part = static_cast<unsigned long long *>(p);
  ask__am_cnt = reinterpret_cast<unsigned *>(ask__am_part + ASK__AM_SLOTS);
  return 0;
}

static __device__ __forceinline__ unsigned long long ask__amkey(float v, int i) {
  const uint32_t hi = v != v ? 0u : ask__okey(v);
  return (unsigned long long)hi << 32 | (uint32_t)~(uint32_t)i;
}

static __device__ __forceinline__ unsigned long long ask__amax(unsigned long long a,
                                                               unsigned long long b) {
  return a > b ? a : b;
}

static __global__ void __launch_bounds__(256)
    ask__k_argmax_parts(int32_t *ids, const float *x, int n, int chunk,
                        unsigned long long *part, unsigned *cnt) {
  ask__pdl_enter();
  __shared__ unsigned long long sk[8];
  __shared__ unsigned ticket;
  const int P = (int)gridDim.x, row = blockIdx.y, B = 256;
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  const float *xr = x + (size_t)row * n;
  const int i1 = min(n, (int)blockIdx.x * chunk + chunk);
  unsigned long long best = 0;
  int i = (int)blockIdx.x * chunk + threadIdx.x;
  for (; i + 7 * B < i1; i += 8 * B) {
    float v[8];
#pragma unroll
    for (int u = 0; u < 8; u++)
      v[u] = xr[i + u * B];
#pragma unroll
    for (int u = 0; u < 8; u++)
      best = ask__amax(best, ask__amkey(v[u], i + u * B));
  }
  for (; i < i1; i += B)
    best = ask__amax(best, ask__amkey(xr[i], i));
  for (int o = 16; o > 0; o >>= 1)
    best = ask__amax(best, __shfl_xor_sync(0xffffffffu, best, o));
  if (lane == 0)
    sk[wid] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < 8; w++)
      best = ask__amax(best, sk[w]);
    part[(size_t)row * P + blockIdx.x] = best;
    __threadfence();
    ticket = atomicAdd(cnt + row, 1u);
  }
  __syncthreads();
  if (ticket != (unsigned)P - 1 || wid != 0)
    return;
  __threadfence();
  best = 0;
  for (int k = lane; k < P; k += 32)
    best = ask__amax(best, __ldcg(part + (size_t)row * P + k));
  for (int o = 16; o > 0; o >>= 1)
    best = ask__amax(best, __shfl_xor_sync(0xffffffffu, best, o));
  if (lane == 0) {
    ids[row] = (int32_t)~(uint32_t)best;
    cnt[row] = 0u;
  }
}

/* Parts a row for T rows of n: about ASK__AM_BLOCKS blocks in all, 1 (the
 * one-block kernel) from ASK__AM_BLOCKS / 2 rows on or for short rows. */
static int ask__am_parts(int T, int n) {
  int p = (n + ASK__AM_CHUNK - 1) / ASK__AM_CHUNK, cap = ASK__AM_BLOCKS / T;
  return p < cap ? p : cap;
}

extern "C" void ask__cu_argmax_rows(cudaStream_t s, int32_t *ids, const float *x, int T, int n) {
  if (T <= 0 || ask__cu_failed())
    return;
  const int P = ask__cu_argmax_parts >= 0 ? ask__cu_argmax_parts : ask__am_parts(T, n);
  if (P >= 2 && ask__am_cnt != NULL && (size_t)T * (size_t)P <= ASK__AM_SLOTS && T <= 65535) {
    const int chunk = (n + P - 1) / P;
    dim3 grid((unsigned)P, (unsigned)T);
    ASK__LAUNCH(grid, 256, 0, s, ask__k_argmax_parts)(ids, x, n, chunk, ask__am_part,
                                                      ask__am_cnt);
  } else {
    ASK__LAUNCH(T, ask__row_threads(n), 0, s, ask__k_argmax_rows)(ids, x, n);
  }
  ASK__LAUNCHED("argmax_rows");
}

/* The row's value after temperature (f32 division, as the reference). */
static __device__ __forceinline__ float ask__tv(const float *xr, int i, float temp) {
  return temp == 1.0f ? xr[i] : xr[i] / temp;
}

static __global__ void ask__k_sample_rows(int32_t *ids, float *probs, const float *x,
                                          const float *temperature, const int32_t *top_k,
                                          const float *top_p, uint64_t *rng, int n) {
  ask__pdl_enter();
  __shared__ double shd[32];
  __shared__ float shf[32];
  __shared__ double ps[ASK__SAMPLE_THREADS];
  __shared__ double s_u;
  __shared__ int s_found;
  int row = blockIdx.x, tid = threadIdx.x;
  const float *xr = x + (size_t)row * n;
  float *pr = probs != NULL ? probs + (size_t)row * n : NULL;
  float temp = temperature[row];
  int k = top_k[row];
  float p = top_p[row];

  if (!(temp > 0.0f)) { /* greedy; the generator is not used */
    int best = ask__block_argmax(xr, n);
    if (tid == 0)
      ids[row] = best;
    if (pr != NULL)
      for (int i = tid; i < n; i += blockDim.x)
        pr[i] = i == best ? 1.0f : 0.0f;
    return;
  }

  /* top-k: kmin = key of the k-th largest value; keys below are removed. */
  uint32_t kmin = 0;
  if (k > 0 && k < n) {
    for (int b = 31; b >= 0; b--) {
      uint32_t cand = kmin | (1u << b);
      double c = 0.0;
      for (int i = tid; i < n; i += blockDim.x)
        c += ask__okey(ask__tv(xr, i, temp)) >= cand ? 1.0 : 0.0;
      if (ask__block_sum(c, shd) >= (double)k)
        kmin = cand;
    }
  }
#define ASK__KEPT(key) ((key) >= kmin)

  float mxf = -INFINITY;
  for (int i = tid; i < n; i += blockDim.x) {
    float v = ask__tv(xr, i, temp);
    if (ASK__KEPT(ask__okey(v)))
      mxf = fmaxf(mxf, v);
  }
  mxf = ask__block_max(mxf, shf);
  double mx = (double)mxf, total = 0.0;
  uint32_t maxkey = ask__okey(mxf); /* the largest token always stays */
#define ASK__W(v) exp((double)(v)-mx)
  for (int i = tid; i < n; i += blockDim.x) {
    float v = ask__tv(xr, i, temp);
    if (ASK__KEPT(ask__okey(v)))
      total += ASK__W(v);
  }
  total = ask__block_sum(total, shd);

  /* top-p: keys below pmin removed; at key pmin, ids >= tie_cut removed. */
  uint32_t pmin = 0;
  int tie_cut = n;
  if (p < 1.0f) {
    double thr = (1.0 - (double)p) * total;
    for (int b = 31; b >= 0; b--) {
      uint32_t cand = pmin | (1u << b);
      double m = 0.0;
      for (int i = tid; i < n; i += blockDim.x) {
        float v = ask__tv(xr, i, temp);
        uint32_t key = ask__okey(v);
        if (ASK__KEPT(key) && key < cand)
          m += ASK__W(v);
      }
      if (ask__block_sum(m, shd) <= thr)
        pmin = cand;
    }
    if (pmin > maxkey) /* thr rounded up to the total (p near 0) */
      pmin = maxkey;
    double S = 0.0, c = 0.0;
    for (int i = tid; i < n; i += blockDim.x) {
      float v = ask__tv(xr, i, temp);
      uint32_t key = ask__okey(v);
      if (ASK__KEPT(key) && key < pmin)
        S += ASK__W(v);
      c += ASK__KEPT(key) && key == pmin ? 1.0 : 0.0;
    }
    S = ask__block_sum(S, shd);
    c = ask__block_sum(c, shd);
    double we = ASK__W(ask__unkey(pmin));
    double rmax = pmin == maxkey ? c - 1.0 : c, r = rmax;
    if (we > 0.0) {
      r = floor((thr - S) / we);
      r = r < 0.0 ? 0.0 : r > rmax ? rmax : r;
    }
    if (r > 0.0) { /* keep the c - r lowest ids at key pmin */
      int lo = 0, hi = n; /* smallest b with count(tie, id < b) >= c - r */
      while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        double cnt = 0.0;
        for (int i = tid; i < mid; i += blockDim.x)
          cnt += ASK__KEPT(ask__okey(ask__tv(xr, i, temp))) &&
                         ask__okey(ask__tv(xr, i, temp)) == pmin
                     ? 1.0
                     : 0.0;
        if (ask__block_sum(cnt, shd) >= c - r)
          hi = mid;
        else
          lo = mid + 1;
      }
      tie_cut = lo;
    }
  }
#define ASK__ALIVE(key, i)                                                                  \
  (ASK__KEPT(key) && (key) >= pmin && !((key) == pmin && (i) >= tie_cut))

  /* The draw: chunks of ids per thread, an exclusive scan of their sums. */
  int chunk = (n + blockDim.x - 1) / blockDim.x, i0 = tid * chunk,
      i1 = min(n, i0 + chunk);
  double local = 0.0, total2;
  int lastalive = -1;
  for (int i = i0; i < i1; i++) {
    float v = ask__tv(xr, i, temp);
    uint32_t key = ask__okey(v);
    if (ASK__ALIVE(key, i)) {
      double w = ASK__W(v);
      if (w > 0.0) {
        local += w;
        lastalive = i;
      }
    }
  }
  total2 = ask__block_sum(local, shd);
  if (tid == 0) {
    uint64_t st = rng[row];
    st ^= st >> 12;
    st ^= st << 25;
    st ^= st >> 27;
    rng[row] = st;
    s_u = (double)((st * 0x2545f4914f6cdd1dull) >> 11) * (1.0 / 9007199254740992.0);
    s_found = n;
  }
  ps[tid] = local;
  __syncthreads();
  for (int off = 1; off < (int)blockDim.x; off <<= 1) { /* inclusive scan */
    double add = tid >= off ? ps[tid - off] : 0.0;
    __syncthreads();
    ps[tid] += add;
    __syncthreads();
  }
  double target = s_u * total2, prefix = ps[tid] - local;
  if (local > 0.0 && prefix <= target && target < ps[tid]) {
    double cum = prefix;
    int hit = lastalive; /* rounding: the chunk's last kept id */
    for (int i = i0; i < i1; i++) {
      float v = ask__tv(xr, i, temp);
      uint32_t key = ask__okey(v);
      if (!ASK__ALIVE(key, i))
        continue;
      double w = ASK__W(v);
      if (w <= 0.0)
        continue;
      cum += w;
      if (target < cum) {
        hit = i;
        break;
      }
    }
    atomicMin(&s_found, hit);
  }
  double la = ask__block_max((double)lastalive, shd);
  __syncthreads();
  if (tid == 0)
    ids[row] = s_found < n ? s_found : (int)la;
  if (pr != NULL)
    for (int i = tid; i < n; i += blockDim.x) {
      float v = ask__tv(xr, i, temp);
      uint32_t key = ask__okey(v);
      pr[i] = ASK__ALIVE(key, i) ? (float)(ASK__W(v) / total2) : 0.0f;
    }
#undef ASK__KEPT
#undef ASK__W
#undef ASK__ALIVE
}

extern "C" void ask__cu_sample_rows(cudaStream_t s, int32_t *ids, float *probs, const float *x,
                                    const float *temperature, const int32_t *top_k,
                                    const float *top_p, uint64_t *rng, int T, int n) {
  if (T <= 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(T, ASK__SAMPLE_THREADS, 0, s, ask__k_sample_rows)(ids, probs, x, temperature, top_k,
                                                                top_p, rng, n);
  ASK__LAUNCHED("sample_rows");
}

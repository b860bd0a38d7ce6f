/* paged.cu — attention over the paged bf16 KV cache (the attention_paged op
 * of kernels.h): T query rows, each of its own sequence (page list
 * table[seq[t] * table_width ...]) at its own position pos[t], so decode
 * rows of many sequences and prefill chunks run in one launch.
 *
 * The design of attention.cu: one block of 4 warps per (query head, row,
 * split); the keys 0..pos[t] are cut into nsplit equal parts (nsplit fixed
 * by the caller: the launch depends only on scalar arguments, so a captured
 * step stays valid for whatever lengths the device buffers hold later), the
 * keys of a part are dealt to the warps, each warp keeps an online softmax
 * (running max, sum and a D-wide accumulator, lane holding the pairs of
 * dims 2*lane + 64*r), the 4 warps merge in shared memory, and with
 * nsplit > 1 the parts go through part to attention.cu's merge kernel. A
 * part (or a whole row: pos[t] < 0) with no key has max -inf and weighs 0;
 * a row with no key gets zeros. Keys and values are read as bf16 pairs (4
 * bytes a lane, 128 bytes a warp), two keys at a time to keep more loads in
 * flight. D even and <= 256; scores and softmax in f32.
 */
#include "common.cuh"

#define ASK__PG_WARPS 4
#define ASK__PG_NP 4 /* bf16 pairs a lane: D <= 2 * 32 * ASK__PG_NP */

/* The two floats of a bf16 pair (the lower address in the low half). */
static __device__ __forceinline__ float ask__lo(uint32_t u) { return __uint_as_float(u << 16); }
static __device__ __forceinline__ float ask__hi(uint32_t u) {
  return __uint_as_float(u & 0xffff0000u);
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
                                              float scale) {
  __shared__ float sm[ASK__PG_WARPS], sl[ASK__PG_WARPS];
  __shared__ float sacc[ASK__PG_WARPS][64 * ASK__PG_NP];
  int h = blockIdx.x, t = blockIdx.y, sp = blockIdx.z;
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  int g = h / (nh / nkv);
  int L = pos[t] < 0 ? 0 : pos[t] + 1; /* keys 0..pos[t] */
  int per = (L + nsplit - 1) / nsplit, j0 = sp * per, j1 = min(L, j0 + per);
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
}

extern "C" void ask__cu_attention_paged(cudaStream_t s, float *out, float *part, const float *q,
                                        const uint16_t *kc, const uint16_t *vc,
                                        const int32_t *table, const int32_t *seq,
                                        const int32_t *pos, int T, int nh, int nkv, int D,
                                        int q_stride, int table_width, int page, int nsplit,
                                        float scale) {
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
  dim3 grid((unsigned)nh, (unsigned)T, (unsigned)nsplit);
  ask__k_attention_paged<<<grid, 32 * ASK__PG_WARPS, 0, s>>>(
      out, part, q, kc, vc, table, seq, pos, nh, nkv, D, q_stride, table_width, page, nsplit,
      scale);
  if (ASK__LAUNCHED("attention_paged") || nsplit == 1)
    return;
  ask__cu_attention_merge(s, out, part, nsplit, T, nh, D);
}

/* attention.cu — scaled dot-product attention of T query rows over L cached
 * keys/values of one sequence (the attention op of kernels.h: grouped-query
 * heads, causal rule, BERT key mask), for decode and prefill alike.
 *
 * One block of 4 warps per (head, query row, split). The keys of a split
 * are dealt to the warps; each warp keeps an online softmax (running max m,
 * sum l, and its share of the D-wide accumulator: lane d holds dims d,
 * d+32, ...), then the 4 warps are merged in shared memory. Long contexts are
 * split along the sequence (flash-decoding): each split writes (m, l, acc)
 * and a second kernel merges the splits. A row that sees no key gets zeros.
 * Head dimension up to 256. Scores stay f32, as in kernels/ref. The merge
 * kernel also serves the paged attention of paged.cu.
 */
#include "common.cuh"

#define ASK__ATT_WARPS 4
#define ASK__ATT_NR 8 /* dims per lane: D <= 32 * 8 */

static __global__ void ask__k_attention(float *out, float *part, int nsplit, const float *q,
                                        const float *k, const float *v,
                                        const int32_t *key_mask, int T, int L, int nh, int nkv,
                                        int D, int kv_stride, float scale, int causal) {
  ask__pdl_enter();
  __shared__ float sm[ASK__ATT_WARPS], sl[ASK__ATT_WARPS];
  __shared__ float sacc[ASK__ATT_WARPS][32 * ASK__ATT_NR];
  int h = blockIdx.x, t = blockIdx.y, sp = blockIdx.z;
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  int g = h / (nh / nkv);
  int last = causal ? L - T + t : L - 1; /* last key this query may see */
  int per = (L + nsplit - 1) / nsplit, j0 = sp * per, j1 = min(L, j0 + per);
  if (j1 > last + 1)
    j1 = last + 1;
  const float *qr = q + (size_t)t * nh * D + (size_t)h * D;
  float qv[ASK__ATT_NR], acc[ASK__ATT_NR];
#pragma unroll
  for (int r = 0; r < ASK__ATT_NR; r++) {
    int d = lane + 32 * r;
    qv[r] = d < D ? qr[d] : 0.0f;
    acc[r] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = j0 + wid; j < j1; j += ASK__ATT_WARPS) {
    if (key_mask != NULL && key_mask[j] == 0)
      continue;
    const float *kr = k + (size_t)j * kv_stride + (size_t)g * D;
    const float *vr = v + (size_t)j * kv_stride + (size_t)g * D;
    float dot = 0.0f;
#pragma unroll
    for (int r = 0; r < ASK__ATT_NR; r++) {
      int d = lane + 32 * r;
      if (d < D)
        dot += qv[r] * kr[d];
    }
    for (int o = 16; o > 0; o >>= 1)
      dot += __shfl_xor_sync(0xffffffffu, dot, o);
    float sc = dot * scale, mn = fmaxf(m, sc);
    float corr = m == -INFINITY ? 0.0f : expf(m - mn), p = expf(sc - mn);
    l = l * corr + p;
#pragma unroll
    for (int r = 0; r < ASK__ATT_NR; r++) {
      int d = lane + 32 * r;
      acc[r] = acc[r] * corr + (d < D ? p * vr[d] : 0.0f);
    }
    m = mn;
  }
  if (lane == 0) {
    sm[wid] = m;
    sl[wid] = l;
  }
#pragma unroll
  for (int r = 0; r < ASK__ATT_NR; r++)
    sacc[wid][lane + 32 * r] = acc[r];
  __syncthreads();
  float M = -INFINITY, Ls = 0.0f;
  for (int w = 0; w < ASK__ATT_WARPS; w++)
    M = fmaxf(M, sm[w]);
  float wt[ASK__ATT_WARPS];
  for (int w = 0; w < ASK__ATT_WARPS; w++) {
    wt[w] = sm[w] == -INFINITY ? 0.0f : expf(sm[w] - M);
    Ls += sl[w] * wt[w];
  }
  if (nsplit == 1) {
    float *o = out + (size_t)t * nh * D + (size_t)h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float a = 0.0f;
      for (int w = 0; w < ASK__ATT_WARPS; w++)
        a += sacc[w][d] * wt[w];
      o[d] = Ls > 0.0f ? a / Ls : 0.0f;
    }
  } else {
    float *pp = part + (((size_t)t * nh + h) * nsplit + sp) * (size_t)(D + 2);
    if (threadIdx.x == 0) {
      pp[0] = M;
      pp[1] = Ls;
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float a = 0.0f;
      for (int w = 0; w < ASK__ATT_WARPS; w++)
        a += sacc[w][d] * wt[w];
      pp[2 + d] = a;
    }
  }
}

/* Merges the nsplit partial (m, l, acc) rows of each (head, query row). */
static __global__ void ask__k_attention_merge(float *out, const float *part, int nsplit,
                                              int nh, int D) {
  ask__pdl_enter();
  int h = blockIdx.x, t = blockIdx.y;
  const float *pp = part + ((size_t)t * nh + h) * nsplit * (size_t)(D + 2);
  float M = -INFINITY, Ls = 0.0f;
  for (int s = 0; s < nsplit; s++)
    M = fmaxf(M, pp[(size_t)s * (D + 2)]);
  for (int s = 0; s < nsplit; s++) {
    float ms = pp[(size_t)s * (D + 2)];
    if (ms != -INFINITY)
      Ls += pp[(size_t)s * (D + 2) + 1] * expf(ms - M);
  }
  float *o = out + (size_t)t * nh * D + (size_t)h * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.0f;
    for (int s = 0; s < nsplit; s++) {
      float ms = pp[(size_t)s * (D + 2)];
      if (ms != -INFINITY)
        a += pp[(size_t)s * (D + 2) + 2 + d] * expf(ms - M);
    }
    o[d] = Ls > 0.0f ? a / Ls : 0.0f;
  }
}

extern "C" void ask__cu_attention(cudaStream_t s, float *out, float *part, int nsplit,
                                  const float *q, const float *k, const float *v,
                                  const int32_t *key_mask, int T, int L, int nh, int nkv, int D,
                                  int kv_stride, float scale, int causal) {
  if (T <= 0 || ask__cu_failed())
    return;
  if (D > 32 * ASK__ATT_NR || nkv <= 0 || nh % nkv != 0 || L <= 0) {
    ask__cu_check(cudaErrorInvalidValue, "attention: head_dim over 256 or bad head counts");
    return;
  }
  if (nsplit < 1 || part == NULL)
    nsplit = 1;
  dim3 grid((unsigned)nh, (unsigned)T, (unsigned)nsplit);
  ASK__LAUNCH(grid, 32 * ASK__ATT_WARPS, 0, s, ask__k_attention)(
      out, part, nsplit, q, k, v, key_mask, T, L, nh, nkv, D, kv_stride, scale, causal);
  if (ASK__LAUNCHED("attention") || nsplit == 1)
    return;
  ask__cu_attention_merge(s, out, part, nsplit, T, nh, D);
}

extern "C" void ask__cu_attention_merge(cudaStream_t s, float *out, const float *part,
                                        int nsplit, int T, int nh, int D) {
  if (T <= 0 || nh <= 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(dim3((unsigned)nh, (unsigned)T), 128, 0, s, ask__k_attention_merge)(out, part,
                                                                                 nsplit, nh, D);
  ASK__LAUNCHED("attention_merge");
}

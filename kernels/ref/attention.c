/* attention.c — scaled dot-product attention of new query rows over one
 * sequence's keys and values (its KV cache), with grouped-/multi-query heads,
 * a causal rule for decoders and a key mask for BERT's padding.
 *
 * Per query head: S = scale · Q_h K_gᵀ (BLAS, strided views of the packed
 * rows), hidden keys set to -inf, a row softmax, then O_h = P V_g (BLAS).
 * The scores are kept in f32, as transformers' eager attention does.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "ref.h"

/* out (T, nh*D); scratch (T*L); q (T, nh*D); k, v (L, kv_stride);
 * key_mask (L) or NULL. See kernels.h for the rules. */
void ask_ref_attention(float *out, float *scratch, const float *q, const float *k,
                       const float *v, const int32_t *key_mask, int T, int L, int nh, int nkv,
                       int D, int kv_stride, float scale, int causal) {
  int group = nh / nkv, past = L - T, qs = nh * D;
  for (int h = 0; h < nh; h++) {
    int g = h / group;
    float *S = scratch;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, L, D, scale, q + (size_t)h * D,
                qs, k + (size_t)g * D, kv_stride, 0.0f, S, L);
    for (int t = 0; t < T; t++) {
      float *row = S + (size_t)t * L;
      int last = causal ? past + t : L - 1; /* last key this query may see */
      float mx = -INFINITY;
      int seen = 0;
      for (int j = 0; j < L; j++) {
        if (j > last || (key_mask != NULL && key_mask[j] == 0)) {
          row[j] = -INFINITY;
        } else {
          seen = 1;
          if (row[j] > mx)
            mx = row[j];
        }
      }
      if (!seen) {
        memset(row, 0, (size_t)L * sizeof(float));
        continue;
      }
      double sum = 0.0;
      for (int j = 0; j < L; j++) {
        float e = row[j] == -INFINITY ? 0.0f : expf(row[j] - mx);
        row[j] = e;
        sum += e;
      }
      float inv = (float)(1.0 / sum);
      for (int j = 0; j < L; j++)
        row[j] *= inv;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, L, 1.0f, S, L,
                v + (size_t)g * D, kv_stride, 0.0f, out + (size_t)h * D, qs);
  }
}

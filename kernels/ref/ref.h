/* ref.h — internal header of kernels/ref: the plain-C operations that
 * ask_ref_ops() puts in the ops table. Never included from outside kernels/ref.
 * Shapes and semantics are documented once, in kernels/kernels.h.
 */
#ifndef ASK_REF_H
#define ASK_REF_H

#include "kernels.h"

void ask_ref_embedding(float *out, const float *table, const int32_t *ids, int T, int C,
                       float scale);
void ask_ref_rmsnorm(float *out, const float *x, const float *w, int T, int C, float eps,
                     float w_offset);
void ask_ref_layernorm(float *out, const float *x, const float *w, const float *b, int T,
                       int C, float eps);
void ask_ref_matmul(float *out, const float *x, const float *w, const float *bias, int T,
                    int K, int N);
void ask_ref_rope(float *x, const int32_t *pos, const float *inv_freq, int T, int nh, int D,
                  int stride);
void ask_ref_attention(float *out, float *scratch, const float *q, const float *k,
                       const float *v, const int32_t *key_mask, int T, int L, int nh, int nkv,
                       int D, int kv_stride, float scale, int causal);
void ask_ref_glu(float *out, const float *gate, const float *up, size_t n, int act);
void ask_ref_activate(float *out, const float *x, size_t n, int act);
void ask_ref_softmax(float *out, const float *x, int T, int N);
void ask_ref_add(float *out, const float *a, const float *b, size_t n);
int ask_ref_argmax(const float *x, int n);

#endif /* ASK_REF_H */

/* norm.c — normalisations: RMSNorm (Llama, Qwen2; Gemma with the (1 + w)
 * offset) and LayerNorm (BERT). Statistics are accumulated in double, then
 * applied in f32, matching torch's f32 results to rounding.
 */
#include <math.h>

#include "ref.h"

/* out (T,C) = x / sqrt(mean(x^2) + eps) * (w_offset + w); x (T,C), w (C).
 * Matches transformers' LlamaRMSNorm (w_offset 0) and GemmaRMSNorm (1). */
void ask_ref_rmsnorm(float *out, const float *x, const float *w, int T, int C, float eps,
                     float w_offset) {
  for (int t = 0; t < T; t++) {
    const float *xr = x + (size_t)t * C;
    float *o = out + (size_t)t * C;
    double ss = 0.0;
    for (int c = 0; c < C; c++)
      ss += (double)xr[c] * xr[c];
    float inv = (float)(1.0 / sqrt(ss / C + (double)eps));
    for (int c = 0; c < C; c++)
      o[c] = (xr[c] * inv) * (w_offset + w[c]);
  }
}

/* out (T,C) = (x - mean) / sqrt(var + eps) * w + b; biased variance, as
 * torch.nn.LayerNorm; x (T,C), w and b (C). */
void ask_ref_layernorm(float *out, const float *x, const float *w, const float *b, int T,
                       int C, float eps) {
  for (int t = 0; t < T; t++) {
    const float *xr = x + (size_t)t * C;
    float *o = out + (size_t)t * C;
    double mean = 0.0, var = 0.0;
    for (int c = 0; c < C; c++)
      mean += xr[c];
    mean /= C;
    for (int c = 0; c < C; c++) {
      double d = xr[c] - mean;
      var += d * d;
    }
    var /= C;
    float inv = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
    for (int c = 0; c < C; c++)
      o[c] = (xr[c] - m) * inv * w[c] + b[c];
  }
}

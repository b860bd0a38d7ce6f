/* rope.c — rotary position embeddings in Hugging Face's rotate-half layout
 * (the first and second halves of each head are the two coordinates of each
 * rotated pair). The angle is pos * inv_freq rounded to f32 as transformers
 * does before taking cos and sin.
 */
#include <math.h>

#include "ref.h"

/* In place: x (T, nh*D) with row stride `stride`; pos (T); inv_freq (D/2). */
void ask_ref_rope(float *x, const int32_t *pos, const float *inv_freq, int T, int nh, int D,
                  int stride) {
  int half = D / 2;
  for (int t = 0; t < T; t++) {
    float *row = x + (size_t)t * stride;
    for (int i = 0; i < half; i++) {
      float a = (float)pos[t] * inv_freq[i];
      float c = (float)cos((double)a), s = (float)sin((double)a);
      for (int h = 0; h < nh; h++) {
        float *hx = row + (size_t)h * D;
        float x0 = hx[i], x1 = hx[i + half];
        hx[i] = x0 * c - x1 * s;
        hx[i + half] = x1 * c + x0 * s;
      }
    }
  }
}

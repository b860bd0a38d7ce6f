/* embedding.c — token embedding gather: one row of the (V,C) table per id,
 * optionally scaled (Gemma multiplies by sqrt(hidden_size)).
 */
#include <string.h>

#include "ref.h"

/* out (T,C) = table[ids[t]] * scale; table (V,C); ids (T) in [0, V). */
void ask_ref_embedding(float *out, const float *table, const int32_t *ids, int T, int C,
                       float scale) {
  for (int t = 0; t < T; t++) {
    const float *row = table + (size_t)ids[t] * C;
    float *o = out + (size_t)t * C;
    if (scale == 1.0f) {
      memcpy(o, row, (size_t)C * sizeof(float));
    } else {
      for (int c = 0; c < C; c++)
        o[c] = row[c] * scale;
    }
  }
}

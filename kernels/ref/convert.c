/* convert.c — half-precision weights to f32 at load time: bf16 (the top 16
 * bits of an f32) and IEEE f16 (subnormals, infinities and NaNs kept).
 */
#include <string.h>

#include "kernels.h"

/* out (n) f32 = in (n) bf16. */
void ask_bf16_to_f32(float *out, const uint16_t *in, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)in[i] << 16;
    memcpy(&out[i], &u, 4);
  }
}

/* out (n) f32 = in (n) IEEE binary16. */
void ask_f16_to_f32(float *out, const uint16_t *in, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t h = in[i], sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) {
      u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
      u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
      u = sign;
    } else { /* subnormal: normalise */
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    memcpy(&out[i], &u, 4);
  }
}

/* out (n) bf16 = in (n) f32, rounded to nearest even (as __float2bfloat16_rn
 * and torch's .to(torch.bfloat16)); NaNs stay NaNs (quiet). */
void ask_f32_to_bf16(uint16_t *out, const float *in, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &in[i], 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
      out[i] = (uint16_t)((u >> 16) | 0x40u);
    else
      out[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

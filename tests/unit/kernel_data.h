/* kernel_data.h — the random test data and bf16 conversions shared by the
 * two programs that check kernels/cuda against its twins: test_cuda_ops
 * (on a GPU) and tests/cudaemu (the same kernels on the CPU emulator), so
 * both draw the same values from the same stream. Header-only.
 */
#ifndef AS_KERNEL_DATA_H
#define AS_KERNEL_DATA_H

#include <stdint.h>

#include "kernels.h"

static uint64_t rs = 0x243f6a8885a308d3ull;

/* Uniform in [-1, 1) from a fixed xorshift64* stream. */
static inline float frand(void) {
  rs ^= rs >> 12;
  rs ^= rs << 25;
  rs ^= rs >> 27;
  return (float)((double)((rs * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* One value through kernels/ref's converters (round to nearest even). */
static inline uint16_t to_bf16(float f) {
  uint16_t h;
  ask_f32_to_bf16(&h, &f, 1);
  return h;
}

static inline float from_bf16(uint16_t h) {
  float f;
  ask_bf16_to_f32(&f, &h, 1);
  return f;
}

#endif /* AS_KERNEL_DATA_H */

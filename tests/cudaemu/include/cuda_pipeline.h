/* Stand-in for <cuda_pipeline.h> (tests/cudaemu): the asynchronous copies
 * into shared memory (cp.async) of one thread. The emulator runs a
 * thread's copy at once, so every commit is complete when made and a wait
 * has nothing to wait for; what a kernel can get wrong (reading a slot
 * before its copy, a copy's alignment) still shows: alignment is checked,
 * and the data a slot holds is whatever the last copy into it wrote. */
#ifndef ASK_CUDAEMU_CUDA_PIPELINE_H
#define ASK_CUDAEMU_CUDA_PIPELINE_H
#include <string.h>

#include "cuda_runtime.h"

static inline void __pipeline_memcpy_async(void *dst, const void *src, size_t size,
                                           size_t zfill = 0) {
  ask_emu::check_align(dst, size, "__pipeline_memcpy_async (shared)");
  ask_emu::check_align(src, size, "__pipeline_memcpy_async (global)");
  memcpy(dst, src, size - zfill);
  memset((char *)dst + (size - zfill), 0, zfill);
}
static inline void __pipeline_commit(void) {}
static inline void __pipeline_wait_prior(size_t prior) { (void)prior; }
#endif

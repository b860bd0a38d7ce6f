/* Stand-in for <cuda_fp16.h> (tests/cudaemu): everything is in cudaemu.h. */
#ifndef ASK_CUDAEMU_CUDA_FP16_H
#define ASK_CUDAEMU_CUDA_FP16_H
#include "cuda_runtime.h"
#endif

/* Stand-in for the CUDA runtime API header (tests/cudaemu). */
#ifndef ASK_CUDAEMU_CUDA_RUNTIME_API_H
#define ASK_CUDAEMU_CUDA_RUNTIME_API_H
#include "cudaemu_api.h"
#endif

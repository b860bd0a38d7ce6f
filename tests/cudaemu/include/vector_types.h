/* Stand-in for <vector_types.h> (tests/cudaemu): everything is in cudaemu.h. */
#ifndef ASK_CUDAEMU_VECTOR_TYPES_H
#define ASK_CUDAEMU_VECTOR_TYPES_H
#include "cuda_runtime.h"
#endif

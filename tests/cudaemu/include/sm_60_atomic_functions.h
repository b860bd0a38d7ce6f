/* Stand-in for <sm_60_atomic_functions.h> (tests/cudaemu): everything is in cudaemu.h. */
#ifndef ASK_CUDAEMU_SM_60_ATOMIC_FUNCTIONS_H
#define ASK_CUDAEMU_SM_60_ATOMIC_FUNCTIONS_H
#include "cuda_runtime.h"
#endif

/* Stand-in for <device_functions.h> (tests/cudaemu): everything is in cudaemu.h. */
#ifndef ASK_CUDAEMU_DEVICE_FUNCTIONS_H
#define ASK_CUDAEMU_DEVICE_FUNCTIONS_H
#include "cuda_runtime.h"
#endif

/* Stand-in for <device_launch_parameters.h> (tests/cudaemu): everything is in cudaemu.h. */
#ifndef ASK_CUDAEMU_DEVICE_LAUNCH_PARAMETERS_H
#define ASK_CUDAEMU_DEVICE_LAUNCH_PARAMETERS_H
#include "cuda_runtime.h"
#endif

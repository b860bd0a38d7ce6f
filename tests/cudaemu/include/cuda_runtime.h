/* Stand-in for <cuda_runtime.h> (tests/cudaemu): the runtime API and, in
 * C++, the device-side language of the kernels run on the CPU. */
#ifndef ASK_CUDAEMU_CUDA_RUNTIME_H
#define ASK_CUDAEMU_CUDA_RUNTIME_H
#include "cudaemu_api.h"
#ifdef __cplusplus
#include "cudaemu.h"
#endif
#endif

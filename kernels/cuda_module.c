/* cuda_module.c — the entry of libactorserve_cuda.so, the CUDA backend as a
 * module that kernels/load.c opens on first use of device "cuda". The
 * module is kernels/cuda linked whole (its ask_cuda_ops and
 * ask_cuda_unavailable are what load.c looks up) plus this version check:
 * a module built from another kernels.h (an older build folder, a copied
 * file) is refused instead of being called with the wrong ops table.
 */
#include "kernels.h"

int ask_cuda_module_abi(void) { return ASK_ABI; }

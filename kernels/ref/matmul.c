/* matmul.c — y = x · Wᵀ + b, the linear layer, on OpenBLAS.
 *
 * This is the one op where plain loops are not good enough to serve: OpenBLAS
 * (Debian's libopenblas, pthreads build) runs f32 GEMM for prefill batches and
 * GEMV for single-row decode on every core with tuned kernels. W stays in the
 * (N,K) layout torch.nn.Linear stores, so mmap'ed f32 weights are used as
 * they are (the transposed operand costs nothing in BLAS).
 */
#include <cblas.h>
#include <string.h>

#include "ref.h"

/* out (T,N) = x (T,K) · wᵀ + bias; w (N,K); bias (N) or NULL. */
void ask_ref_matmul(float *out, const float *x, const float *w, const float *bias, int T,
                    int K, int N) {
  float beta = 0.0f;
  if (bias != NULL) {
    for (int t = 0; t < T; t++)
      memcpy(out + (size_t)t * N, bias, (size_t)N * sizeof(float));
    beta = 1.0f;
  }
  if (T == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, beta, out, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, x, K, w, K, beta,
                out, N);
}

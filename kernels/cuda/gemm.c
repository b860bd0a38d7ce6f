/* gemm.c — the linear layers of the CUDA backend through cuBLASLt:
 * out (T,N) = x (T,K) · wᵀ + bias, w (N,K) as torch.nn.Linear stores it,
 * bf16 or f32 operands, f32 output, fp32 accumulation (CUBLAS_COMPUTE_32F:
 * no TF32 for the f32 path, which must match kernels/ref).
 *
 * Row-major out = x · wᵀ is, in cuBLAS's column-major terms, D (N×T) =
 * op(A) · B with A = w seen as (K×N), transposed, and B = x seen as (K×T).
 * A plan (operation descriptor, the three layouts and the heuristic's best
 * algorithm for a 32 MiB workspace) is made the first time a (dtype, T, K,
 * N, bias, alignment of each pointer) is seen and kept in a fixed table; the
 * bias goes into the BIAS epilogue, or, when no algorithm takes it, into a
 * separate broadcast add. Pointers must be aligned to their element size
 * (checked: AS_EINVAL otherwise); the alignment actually found is passed to
 * the heuristic so misaligned-but-legal pointers get a kernel that copes.
 * A matmul call never allocates or synchronises (the workspace is fixed), so
 * it can be captured into a CUDA graph (graph.c); see ask__plan_make_on for
 * a plan made during a capture.
 */
#include <stdio.h>
#include <string.h>

#include <cublasLt.h>

#include "cuda_int.h"

#define ASK__WS_BYTES ((size_t)32 << 20)
#define ASK__NPLANS 1024

typedef struct ask__plan_s {
  int used;                           /* slot holds a plan */
  int bf16, T, K, N, bias;            /* the key ... */
  int al_x, al_w, al_out;             /* ... with the pointers' alignments (bytes, <= 16) */
  int bias_epi;                       /* the bias is in the epilogue */
  cublasLtMatmulDesc_t op;            /* descriptor */
  cublasLtMatrixLayout_t la, lb, lc;  /* w, x, out layouts */
  cublasLtMatmulAlgo_t algo;          /* heuristic's first choice */
} ask__plan_t;

static cublasLtHandle_t ask__lt;
static void *ask__ws;
static ask__plan_t ask__plans[ASK__NPLANS];
static int ask__nplans;

int ask__lt_check(int status, const char *what) {
  if (status == CUBLAS_STATUS_SUCCESS)
    return 0;
  cudaError_t e = status == CUBLAS_STATUS_ALLOC_FAILED ? cudaErrorMemoryAllocation
                  : status == CUBLAS_STATUS_INVALID_VALUE || status == CUBLAS_STATUS_NOT_SUPPORTED
                      ? cudaErrorInvalidValue
                      : cudaErrorUnknown;
  char buf[192];
  snprintf(buf, sizeof buf, "%s: %s (%s)", what,
           cublasLtGetStatusString((cublasStatus_t)status),
           cublasLtGetStatusName((cublasStatus_t)status));
  return ask__cu_check(e, buf);
}

int ask__gemm_init(char *why, size_t whylen) {
  cublasStatus_t st = cublasLtCreate(&ask__lt);
  if (st != CUBLAS_STATUS_SUCCESS) {
    snprintf(why, whylen, "cublasLtCreate: %s", cublasLtGetStatusString(st));
    return -1;
  }
  cudaError_t e = cudaMalloc(&ask__ws, ASK__WS_BYTES);
  if (e != cudaSuccess) {
    snprintf(why, whylen, "cudaMalloc (cuBLASLt workspace, 32 MiB): %s", cudaGetErrorString(e));
    cublasLtDestroy(ask__lt);
    return -1;
  }
  return 0;
}

int ask__gemm_plans(void) { return ask__nplans; }

static int ask__align(const void *p) {
  uintptr_t u = (uintptr_t)p;
  int a = 16;
  while (a > 1 && (u & (uintptr_t)(a - 1)) != 0)
    a >>= 1;
  return a;
}

static void ask__plan_destroy(ask__plan_t *p) {
  if (p->op != NULL)
    cublasLtMatmulDescDestroy(p->op);
  if (p->la != NULL)
    cublasLtMatrixLayoutDestroy(p->la);
  if (p->lb != NULL)
    cublasLtMatrixLayoutDestroy(p->lb);
  if (p->lc != NULL)
    cublasLtMatrixLayoutDestroy(p->lc);
  memset(p, 0, sizeof *p);
}

/* Fills p (key already set): descriptors, layouts, the algorithm. Tries
 * with the bias epilogue first when there is a bias. Returns 0 or -1
 * (recorded). */
static int ask__plan_make(ask__plan_t *p) {
  cudaDataType_t in = p->bf16 ? CUDA_R_16BF : CUDA_R_32F;
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  cublasLtMatmulPreference_t pref = NULL;
  cublasLtMatmulHeuristicResult_t res;
  size_t ws = ASK__WS_BYTES;
  uint32_t ax = (uint32_t)p->al_x, aw = (uint32_t)p->al_w, ao = (uint32_t)p->al_out;
  int nres = 0;

  if (ask__lt_check(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                    "cublasLtMatmulDescCreate") ||
      ask__lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                                   sizeof ta),
                    "cublasLtMatmulDescSetAttribute(TRANSA)") ||
      ask__lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                                   sizeof tb),
                    "cublasLtMatmulDescSetAttribute(TRANSB)") ||
      ask__lt_check(cublasLtMatrixLayoutCreate(&p->la, in, (uint64_t)p->K, (uint64_t)p->N,
                                               (int64_t)p->K),
                    "cublasLtMatrixLayoutCreate(w)") ||
      ask__lt_check(cublasLtMatrixLayoutCreate(&p->lb, in, (uint64_t)p->K, (uint64_t)p->T,
                                               (int64_t)p->K),
                    "cublasLtMatrixLayoutCreate(x)") ||
      ask__lt_check(cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_32F, (uint64_t)p->N,
                                               (uint64_t)p->T, (int64_t)p->N),
                    "cublasLtMatrixLayoutCreate(out)") ||
      ask__lt_check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate"))
    goto fail;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof ws);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw,
                                       sizeof aw);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax,
                                       sizeof ax);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ao,
                                       sizeof ao);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ao,
                                       sizeof ao);
  for (int attempt = p->bias ? 0 : 1; attempt < 2 && nres == 0; attempt++) {
    cublasLtEpilogue_t epi = attempt == 0 ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    cudaDataType_t bt = CUDA_R_32F;
    if (ask__lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                     sizeof epi),
                      "cublasLtMatmulDescSetAttribute(EPILOGUE)"))
      goto fail;
    if (attempt == 0 &&
        ask__lt_check(cublasLtMatmulDescSetAttribute(
                          p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt),
                      "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE)"))
      goto fail;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ask__lt, p->op, p->la, p->lb, p->lc,
                                                       p->lc, pref, 1, &res, &nres);
    if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) {
      ask__lt_check(st, "cublasLtMatmulAlgoGetHeuristic");
      goto fail;
    }
    if (st != CUBLAS_STATUS_SUCCESS)
      nres = 0;
    p->bias_epi = attempt == 0;
  }
  if (nres == 0) {
    char buf[128];
    snprintf(buf, sizeof buf, "cublasLtMatmulAlgoGetHeuristic: no algorithm for %s T=%d K=%d N=%d",
             p->bf16 ? "bf16" : "f32", p->T, p->K, p->N);
    ask__cu_check(cudaErrorNotSupported, buf);
    goto fail;
  }
  p->algo = res.algo;
  cublasLtMatmulPreferenceDestroy(pref);
  return 0;
fail:
  if (pref != NULL)
    cublasLtMatmulPreferenceDestroy(pref);
  ask__plan_destroy(p);
  return -1;
}

/* ask__plan_make for a matmul queued on s. While s is being captured into
 * a graph (graph.c, thread-local mode) this thread is switched to relaxed
 * mode for the plan's host-only calls: cublasLtMatmulAlgoGetHeuristic
 * queries the device and is refused under a strict capture by some
 * cuBLASLt releases (CUBLAS_STATUS_INTERNAL_ERROR). Nothing here queues
 * work, so the captured graph is unchanged. */
static int ask__plan_make_on(ask__plan_t *p, cudaStream_t s) {
  enum cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  int capturing = 0, rc;
  if (cudaStreamIsCapturing(s, &st) != cudaSuccess)
    (void)cudaGetLastError();
  if (st == cudaStreamCaptureStatusActive &&
      cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess)
    capturing = 1;
  rc = ask__plan_make(p);
  if (capturing)
    cudaThreadExchangeStreamCaptureMode(&mode); /* back to the capture's mode */
  return rc;
}

/* The cached plan for this key (made on first use), or NULL (recorded). */
static ask__plan_t *ask__plan_get(const ask__plan_t *key, cudaStream_t s) {
  unsigned h = 2166136261u;
  const int f[] = {key->bf16, key->T, key->K, key->N, key->bias, key->al_x, key->al_w,
                   key->al_out};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    h = (h ^ (unsigned)f[i]) * 16777619u;
  for (int probe = 0; probe < ASK__NPLANS; probe++) {
    ask__plan_t *p = &ask__plans[(h + (unsigned)probe) % ASK__NPLANS];
    if (p->used && p->bf16 == key->bf16 && p->T == key->T && p->K == key->K &&
        p->N == key->N && p->bias == key->bias && p->al_x == key->al_x &&
        p->al_w == key->al_w && p->al_out == key->al_out)
      return p;
    if (!p->used || probe == ASK__NPLANS - 1) { /* free slot, or evict the last probed */
      if (p->used) {
        ask__plan_destroy(p);
        ask__nplans--;
      }
      *p = *key;
      if (ask__plan_make_on(p, s) != 0)
        return NULL;
      p->used = 1;
      ask__nplans++;
      return p;
    }
  }
  return NULL;
}

void ask__gemm(cudaStream_t s, int bf16, float *out, const void *x, const void *w,
               const float *bias, int T, int K, int N) {
  ask__plan_t key;
  int es = bf16 ? 2 : 4;
  if (T <= 0 || N <= 0 || ask__cu_failed())
    return;
  ask__cu_after_attn = 0; /* cuda_int.h: this launch is the stream's last now */
  memset(&key, 0, sizeof key);
  key.bf16 = bf16;
  key.T = T;
  key.K = K;
  key.N = N;
  key.bias = bias != NULL;
  key.al_x = ask__align(x);
  key.al_w = ask__align(w);
  key.al_out = ask__align(out);
  if (key.al_x < es || key.al_w < es || key.al_out < 4 || (bias != NULL && ask__align(bias) < 4)) {
    ask__cu_check(cudaErrorInvalidValue, "matmul: a pointer is not aligned to its element size");
    return;
  }
  ask__plan_t *p = ask__plan_get(&key, s);
  if (p == NULL)
    return;
  if (p->bias_epi &&
      ask__lt_check(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                   &bias, sizeof bias),
                    "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"))
    return;
  const float one = 1.0f, zero = 0.0f;
  if (ask__lt_check(cublasLtMatmul(ask__lt, p->op, &one, w, p->la, x, p->lb, &zero, out, p->lc,
                                   out, p->lc, &p->algo, ask__ws, ASK__WS_BYTES, s),
                    "cublasLtMatmul"))
    return;
  if (bias != NULL && !p->bias_epi)
    ask__cu_add_bias(s, out, bias, T, N);
}

/* cublaslt.cc — the stand-in cuBLASLt of tests/cudaemu (include/cublasLt.h)
 * on the CPU, so that kernels/cuda/gemm.c runs unchanged in the emulated
 * backend, and strict enough to catch a misuse that the real library would
 * punish with wrong numbers, a misaligned-address fault or a refusal:
 *
 *   descriptors: compute type CUBLAS_COMPUTE_32F (or _FAST_TF32) with f32
 *     scale; only the attributes gemm.c sets, each with its exact size;
 *   layouts: f32 or bf16, ld >= rows (column-major);
 *   heuristic: op(A) (m x k), op(B) (k x n), C and D (m x n) must agree
 *     (CUBLAS_STATUS_INVALID_VALUE); A and B of one type, C and D f32 or that
 *     type (NOT_SUPPORTED otherwise); a BIAS epilogue's bias is of D's type
 *     unless BIAS_DATA_TYPE names another, which the library refuses
 *     (INVALID_VALUE, as an H200 answered); the algorithm remembers the alignments the preference
 *     promised (256 bytes each, the library's default, unless set) and asks
 *     for min(4 MiB, the preference's maximum) of workspace;
 *   cublasLtMatmul: the same shapes as the algorithm was chosen for, every
 *     pointer at least as aligned as promised, the workspace large enough
 *     and in device memory, A, B, C (when beta != 0), D and the bias inside
 *     live device allocations (ask_emu_is_device); else
 *     CUBLAS_STATUS_INVALID_VALUE with the reason on stderr.
 *
 * The product runs through ask_emu_enqueue: now, or recorded in the graph of
 * a stream being captured, with the descriptor's attributes (the bias
 * pointer) as they were at the call, as the real library bakes them into
 * the launch. Arithmetic: operands widened to f32, dot products in f32 with
 * eight partial sums (the library's order differs: tests compare with a
 * tolerance), D = alpha * op(A) op(B) + beta * C + bias, rounded to D's type
 * (bf16: to nearest even). beta == 0 never reads C, as the library.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cublasLt.h"

struct ask_emu_lt {
  unsigned magic;
};
struct ask_emu_lt_desc {
  cublasComputeType_t compute;
  int32_t ta, tb, epi, bias_type;
  const void *bias;
};
struct ask_emu_lt_layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct ask_emu_lt_pref {
  uint64_t ws;
  uint32_t align[4]; /* A, B, C, D */
};

namespace {

const unsigned MAGIC = 0x4c74656du; /* "mteL" */
unsigned long long g_matmuls;

size_t esize(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

cublasStatus_t bad(cublasStatus_t st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cublasStatus_t bad(cublasStatus_t st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cudaemu cuBLASLt: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return st;
}

/* The shape of the product: m, n, k from the layouts, or an error. */
cublasStatus_t shape(const ask_emu_lt_desc *op, const ask_emu_lt_layout *a,
                     const ask_emu_lt_layout *b, const ask_emu_lt_layout *c,
                     const ask_emu_lt_layout *d, uint64_t *m, uint64_t *n, uint64_t *k) {
  if (op == NULL || a == NULL || b == NULL || c == NULL || d == NULL)
    return bad(CUBLAS_STATUS_INVALID_VALUE, "a NULL descriptor or layout");
  uint64_t am = op->ta ? a->cols : a->rows, ak = op->ta ? a->rows : a->cols;
  uint64_t bk = op->tb ? b->cols : b->rows, bn = op->tb ? b->rows : b->cols;
  if (ak != bk || c->rows != am || c->cols != bn || d->rows != am || d->cols != bn)
    return bad(CUBLAS_STATUS_INVALID_VALUE,
               "shapes disagree: op(A) %llux%llu, op(B) %llux%llu, C %llux%llu, D %llux%llu",
               (unsigned long long)am, (unsigned long long)ak, (unsigned long long)bk,
               (unsigned long long)bn, (unsigned long long)c->rows, (unsigned long long)c->cols,
               (unsigned long long)d->rows, (unsigned long long)d->cols);
  if (a->type != b->type || (c->type != CUDA_R_32F && c->type != a->type) ||
      d->type != c->type)
    return bad(CUBLAS_STATUS_NOT_SUPPORTED, "types A %d, B %d, C %d, D %d: no algorithm",
               (int)a->type, (int)b->type, (int)c->type, (int)d->type);
  /* the bias is of D's type unless BIAS_DATA_TYPE says otherwise, and must
   * be (as the library answers: INVALID_VALUE, no algorithm) */
  if (op->epi == CUBLASLT_EPILOGUE_BIAS && op->bias_type != -1 && op->bias_type != (int)d->type)
    return bad(CUBLAS_STATUS_INVALID_VALUE, "bias type %d with D of type %d", op->bias_type,
               (int)d->type);
  *m = am;
  *n = bn;
  *k = ak;
  return CUBLAS_STATUS_SUCCESS;
}

/* One product, as queued (all values, no pointers to descriptors). */
struct job {
  const void *A, *B, *C, *bias;
  void *D;
  cudaDataType_t ta_, tc; /* A and B's type; C, D and the bias's */
  int trans_a, trans_b;
  uint64_t m, n, k;
  int64_t lda, ldb, ldc, ldd;
  float alpha, beta;
};

float load(const void *p, cudaDataType_t t, size_t i) {
  if (t == CUDA_R_32F)
    return ((const float *)p)[i];
  uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

void store(void *p, cudaDataType_t t, size_t i, float v) {
  if (t == CUDA_R_32F) {
    ((float *)p)[i] = v;
    return;
  }
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    u |= 0x00400000u; /* NaN stays a quiet NaN */
  else
    u += 0x7fffu + ((u >> 16) & 1u);
  ((uint16_t *)p)[i] = (uint16_t)(u >> 16);
}

void run(void *arg) {
  const job &j = *(const job *)arg;
  /* op(A) as m rows of k, op(B) as n rows of k: both walked contiguously */
  float *a = (float *)malloc(j.m * j.k * sizeof(float) + 4);
  float *b = (float *)malloc(j.n * j.k * sizeof(float) + 4);
  if (a == NULL || b == NULL) {
    fprintf(stderr, "cudaemu cuBLASLt: out of host memory\n");
    abort(); /* the emulator's own failure, not the code under test's */
  }
  for (uint64_t i = 0; i < j.m; i++)
    for (uint64_t x = 0; x < j.k; x++)
      a[i * j.k + x] = load(j.A, j.ta_, j.trans_a ? x + i * (uint64_t)j.lda : i + x * (uint64_t)j.lda);
  for (uint64_t c = 0; c < j.n; c++)
    for (uint64_t x = 0; x < j.k; x++)
      b[c * j.k + x] = load(j.B, j.ta_, j.trans_b ? c + x * (uint64_t)j.ldb : x + c * (uint64_t)j.ldb);
  for (uint64_t c = 0; c < j.n; c++)
    for (uint64_t i = 0; i < j.m; i++) {
      const float *ar = a + i * j.k, *br = b + c * j.k;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      uint64_t x = 0;
      for (; x + 8 <= j.k; x += 8)
        for (int l = 0; l < 8; l++)
          acc[l] += ar[x + l] * br[x + l];
      for (; x < j.k; x++)
        acc[x % 8] += ar[x] * br[x];
      float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      float v = j.alpha * s;
      if (j.beta != 0.0f)
        v += j.beta * load(j.C, j.tc, i + c * (uint64_t)j.ldc);
      if (j.bias != NULL)
        v += load(j.bias, j.tc, i);
      store(j.D, j.tc, i + c * (uint64_t)j.ldd, v);
    }
  free(a);
  free(b);
}

int align_of(const void *p) {
  uintptr_t u = (uintptr_t)p;
  int al = 256;
  while (al > 1 && (u & (uintptr_t)(al - 1)) != 0)
    al >>= 1;
  return al;
}

/* [p, p + the layout's extent) in device memory, as aligned as promised. */
cublasStatus_t operand(const char *what, const void *p, const ask_emu_lt_layout *l,
                       uint32_t promised) {
  size_t bytes = ((size_t)l->ld * (l->cols - 1) + l->rows) * esize(l->type);
  if ((uint32_t)align_of(p) < promised)
    return bad(CUBLAS_STATUS_INVALID_VALUE,
               "%s at %p is aligned to %d bytes; the algorithm was chosen for %u (on the GPU: "
               "a misaligned-address fault)",
               what, p, align_of(p), promised);
  if (!ask_emu_is_device(p, bytes))
    return bad(CUBLAS_STATUS_INVALID_VALUE,
               "%s: %zu bytes at %p are not inside one device allocation", what, bytes, p);
  return CUBLAS_STATUS_SUCCESS;
}

} /* namespace */

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
  *h = new ask_emu_lt{MAGIC};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  if (h == NULL || h->magic != MAGIC)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  h->magic = 0;
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}

const char *cublasLtGetStatusName(cublasStatus_t st) {
  switch (st) {
  case CUBLAS_STATUS_SUCCESS:
    return "CUBLAS_STATUS_SUCCESS";
  case CUBLAS_STATUS_NOT_INITIALIZED:
    return "CUBLAS_STATUS_NOT_INITIALIZED";
  case CUBLAS_STATUS_ALLOC_FAILED:
    return "CUBLAS_STATUS_ALLOC_FAILED";
  case CUBLAS_STATUS_INVALID_VALUE:
    return "CUBLAS_STATUS_INVALID_VALUE";
  case CUBLAS_STATUS_NOT_SUPPORTED:
    return "CUBLAS_STATUS_NOT_SUPPORTED";
  case CUBLAS_STATUS_INTERNAL_ERROR:
    return "CUBLAS_STATUS_INTERNAL_ERROR";
  default:
    return "CUBLAS_STATUS_UNKNOWN";
  }
}

const char *cublasLtGetStatusString(cublasStatus_t st) {
  switch (st) {
  case CUBLAS_STATUS_SUCCESS:
    return "success";
  case CUBLAS_STATUS_INVALID_VALUE:
    return "an invalid value was used as an argument (cudaemu: see stderr)";
  case CUBLAS_STATUS_NOT_SUPPORTED:
    return "the functionality requested is not supported";
  default:
    return cublasLtGetStatusName(st);
  }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  *d = NULL;
  if ((compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) ||
      scale != CUDA_R_32F)
    return bad(CUBLAS_STATUS_NOT_SUPPORTED, "compute type %d, scale type %d", (int)compute,
               (int)scale);
  *d = new ask_emu_lt_desc{compute, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, -1,
                           NULL};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t bytes) {
  int32_t v = 0;
  if (d == NULL || buf == NULL)
    return bad(CUBLAS_STATUS_INVALID_VALUE, "MatmulDescSetAttribute: NULL");
  if (attr == CUBLASLT_MATMUL_DESC_BIAS_POINTER) {
    if (bytes != sizeof(void *))
      return bad(CUBLAS_STATUS_INVALID_VALUE, "BIAS_POINTER: %zu bytes, not a pointer", bytes);
    memcpy(&d->bias, buf, sizeof(void *));
    return CUBLAS_STATUS_SUCCESS;
  }
  if (bytes != sizeof(int32_t))
    return bad(CUBLAS_STATUS_INVALID_VALUE, "attribute %d: %zu bytes, not 4", (int)attr, bytes);
  memcpy(&v, buf, 4);
  switch (attr) {
  case CUBLASLT_MATMUL_DESC_TRANSA:
  case CUBLASLT_MATMUL_DESC_TRANSB:
    if (v != CUBLAS_OP_N && v != CUBLAS_OP_T)
      return bad(CUBLAS_STATUS_INVALID_VALUE, "TRANS%c = %d", attr == 3 ? 'A' : 'B', (int)v);
    (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->ta : d->tb) = v;
    return CUBLAS_STATUS_SUCCESS;
  case CUBLASLT_MATMUL_DESC_EPILOGUE:
    if (v != CUBLASLT_EPILOGUE_DEFAULT && v != CUBLASLT_EPILOGUE_BIAS)
      return bad(CUBLAS_STATUS_NOT_SUPPORTED, "epilogue %d not emulated", (int)v);
    d->epi = v;
    return CUBLAS_STATUS_SUCCESS;
  case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
    d->bias_type = v;
    return CUBLAS_STATUS_SUCCESS;
  default:
    return bad(CUBLAS_STATUS_INVALID_VALUE, "attribute %d not emulated", (int)attr);
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  *l = NULL;
  if (type != CUDA_R_32F && type != CUDA_R_16BF)
    return bad(CUBLAS_STATUS_NOT_SUPPORTED, "layout type %d not emulated", (int)type);
  if (rows == 0 || cols == 0 || ld < (int64_t)rows)
    return bad(CUBLAS_STATUS_INVALID_VALUE, "layout %llux%llu with ld %lld",
               (unsigned long long)rows, (unsigned long long)cols, (long long)ld);
  *l = new ask_emu_lt_layout{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
  *p = new ask_emu_lt_pref{0, {256, 256, 256, 256}};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t bytes) {
  if (p == NULL || buf == NULL)
    return bad(CUBLAS_STATUS_INVALID_VALUE, "MatmulPreferenceSetAttribute: NULL");
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
    if (bytes != sizeof(uint64_t))
      return bad(CUBLAS_STATUS_INVALID_VALUE, "MAX_WORKSPACE_BYTES: %zu bytes, not 8", bytes);
    memcpy(&p->ws, buf, 8);
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
      attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
    if (bytes != sizeof(uint32_t))
      return bad(CUBLAS_STATUS_INVALID_VALUE, "MIN_ALIGNMENT: %zu bytes, not 4", bytes);
    memcpy(&p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, 4);
    return CUBLAS_STATUS_SUCCESS;
  }
  return bad(CUBLAS_STATUS_INVALID_VALUE, "preference %d not emulated", (int)attr);
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *returned) {
  uint64_t m, n, k;
  *returned = 0;
  if (h == NULL || h->magic != MAGIC)
    return bad(CUBLAS_STATUS_NOT_INITIALIZED, "heuristic: not a handle");
  if (pref == NULL || requested < 1 || results == NULL)
    return bad(CUBLAS_STATUS_INVALID_VALUE, "heuristic: no preference or room for results");
  cublasStatus_t st = shape(op, a, b, c, d, &m, &n, &k);
  if (st != CUBLAS_STATUS_SUCCESS)
    return st;
  memset(&results[0], 0, sizeof results[0]);
  uint64_t *x = results[0].algo.data;
  x[0] = MAGIC;
  x[1] = m;
  x[2] = n;
  x[3] = k;
  x[4] = (uint64_t)pref->align[0] | (uint64_t)pref->align[1] << 16 |
         (uint64_t)pref->align[2] << 32 | (uint64_t)pref->align[3] << 48;
  results[0].workspaceSize = pref->ws < ((size_t)4 << 20) ? pref->ws : (size_t)4 << 20;
  x[5] = results[0].workspaceSize;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t la, const void *B,
                              cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                              cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  uint64_t m, n, k;
  if (h == NULL || h->magic != MAGIC)
    return bad(CUBLAS_STATUS_NOT_INITIALIZED, "matmul: not a handle");
  if (alpha == NULL || beta == NULL || algo == NULL)
    return bad(CUBLAS_STATUS_INVALID_VALUE, "matmul: NULL alpha, beta or algorithm");
  cublasStatus_t st = shape(op, la, lb, lc, ld, &m, &n, &k);
  if (st != CUBLAS_STATUS_SUCCESS)
    return st;
  const uint64_t *x = algo->data;
  if (x[0] != MAGIC || x[1] != m || x[2] != n || x[3] != k)
    return bad(CUBLAS_STATUS_INVALID_VALUE,
               "matmul: the algorithm was not chosen for this %llux%llux%llu product",
               (unsigned long long)m, (unsigned long long)n, (unsigned long long)k);
  if (workspace_bytes < x[5] || (x[5] > 0 && !ask_emu_is_device(workspace, x[5])))
    return bad(CUBLAS_STATUS_INVALID_VALUE,
               "matmul: the algorithm needs %llu bytes of device workspace; given %zu at %p",
               (unsigned long long)x[5], workspace_bytes, workspace);
  job j;
  memset(&j, 0, sizeof j);
  memcpy(&j.alpha, alpha, 4);
  memcpy(&j.beta, beta, 4);
  if ((st = operand("A", A, la, (uint32_t)(x[4] & 0xffff))) != CUBLAS_STATUS_SUCCESS ||
      (st = operand("B", B, lb, (uint32_t)(x[4] >> 16 & 0xffff))) != CUBLAS_STATUS_SUCCESS ||
      (j.beta != 0.0f &&
       (st = operand("C", C, lc, (uint32_t)(x[4] >> 32 & 0xffff))) != CUBLAS_STATUS_SUCCESS) ||
      (st = operand("D", D, ld, (uint32_t)(x[4] >> 48 & 0xffff))) != CUBLAS_STATUS_SUCCESS)
    return st;
  if (op->epi == CUBLASLT_EPILOGUE_BIAS && !ask_emu_is_device(op->bias, m * esize(ld->type)))
    return bad(CUBLAS_STATUS_INVALID_VALUE,
               "matmul: BIAS epilogue, but the bias pointer %p does not hold %llu values of "
               "device memory",
               op->bias, (unsigned long long)m);
  j.A = A;
  j.B = B;
  j.C = C;
  j.D = D;
  j.bias = op->epi == CUBLASLT_EPILOGUE_BIAS ? op->bias : NULL;
  j.ta_ = la->type;
  j.tc = ld->type;
  j.trans_a = op->ta;
  j.trans_b = op->tb;
  j.m = m;
  j.n = n;
  j.k = k;
  j.lda = la->ld;
  j.ldb = lb->ld;
  j.ldc = lc->ld;
  j.ldd = ld->ld;
  g_matmuls++;
  if (ask_emu_enqueue(stream, run, &j, sizeof j) != cudaSuccess)
    return CUBLAS_STATUS_EXECUTION_FAILED;
  return CUBLAS_STATUS_SUCCESS;
}

unsigned long long ask_emu_lt_matmuls(void) { return g_matmuls; }

} /* extern "C" */

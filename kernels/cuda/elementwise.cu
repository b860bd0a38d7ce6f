/* elementwise.cu — the memory-bound ops of the CUDA backend: embedding
 * gather (f32 or bf16 table), RMSNorm fused with the residual add (Gemma's
 * 1 + w through w_offset), LayerNorm, RoPE fused with the write into the
 * paged bf16 KV cache (also the plain rope op), gated activations (separate
 * gate and up, or the two halves of one fused row), residual add, row
 * softmax and the f32 -> bf16 rounding of GEMM inputs.
 *
 * Each kernel follows its kernels/ref twin step by step (statistics in
 * double, then f32, angles rounded to f32 before a double cos/sin) so the
 * results agree to a few f32 ulps; tests/unit/test_cuda_ops.c checks them.
 * One block per row for the row ops, grid-stride loops for the rest.
 */
#include "common.cuh"

extern "C" {
int ask__cu_pdl = 0; /* cuda_int.h */
}

/* out (T,C) = table[ids[t]] * scale; table f32 or (table16) bf16. */
static __global__ void ask__k_embedding(float *out, const float *table, const uint16_t *table16,
                                        const int32_t *ids, const int32_t *prev, int C,
                                        float scale) {
  ask__pdl_enter();
  int t = blockIdx.x, id = ids[t];
  if (id < 0 && prev != NULL) /* an id a previous step sampled, still on the device */
    id = prev[-(id + 1)];
  size_t row = (size_t)id * C;
  float *o = out + (size_t)t * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float v = table != NULL ? table[row + c] : ask__bf16f(table16[row + c]);
    o[c] = scale == 1.0f ? v : v * scale;
  }
}

extern "C" void ask__cu_embedding(cudaStream_t s, float *out, const float *table,
                                  const uint16_t *table16, const int32_t *ids,
                                  const int32_t *prev, int T, int C, float scale) {
  if (T <= 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(T, 256, 0, s, ask__k_embedding)(out, table, table16, ids, prev, C, scale);
  ASK__LAUNCHED("embedding");
}

/* x (T,C) += r (r not NULL), then out = x / sqrt(mean(x^2) + eps) * (off + w).
 * Each thread reads back only the elements it wrote, so out may equal x when
 * r is NULL. */
static __global__ void ask__k_rmsnorm(float *out, float *x, const float *r, const float *w, int C,
                                      float eps, float off) {
  ask__pdl_enter();
  __shared__ double sh[32];
  size_t base = (size_t)blockIdx.x * C;
  double ss = 0.0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float v = x[base + c];
    if (r != NULL) {
      v = v + r[base + c];
      x[base + c] = v;
    }
    ss += (double)v * v;
  }
  ss = ask__block_sum(ss, sh);
  float inv = (float)(1.0 / sqrt(ss / C + (double)eps));
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    out[base + c] = (x[base + c] * inv) * (off + w[c]);
}

extern "C" void ask__cu_rmsnorm(cudaStream_t s, float *out, float *x, const float *r,
                                const float *w, int T, int C, float eps, float w_offset) {
  if (T <= 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(T, ask__row_threads(C), 0, s, ask__k_rmsnorm)(out, x, r, w, C, eps, w_offset);
  ASK__LAUNCHED("rmsnorm");
}

/* out (T,C) = (x - mean) / sqrt(var + eps) * w + b, biased variance. */
static __global__ void ask__k_layernorm(float *out, const float *x, const float *w,
                                        const float *b, int C, float eps) {
  ask__pdl_enter();
  __shared__ double sh[32];
  size_t base = (size_t)blockIdx.x * C;
  double sum = 0.0, var = 0.0;
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    sum += x[base + c];
  double mean = ask__block_sum(sum, sh) / C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    double d = x[base + c] - mean;
    var += d * d;
  }
  var = ask__block_sum(var, sh) / C;
  float inv = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    out[base + c] = (x[base + c] - m) * inv * w[c] + b[c];
}

extern "C" void ask__cu_layernorm(cudaStream_t s, float *out, const float *x, const float *w,
                                  const float *b, int T, int C, float eps) {
  if (T <= 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(T, ask__row_threads(C), 0, s, ask__k_layernorm)(out, x, w, b, C, eps);
  ASK__LAUNCHED("layernorm");
}

/* Row t of qkv (rows of `stride` floats) is blockIdx.y (and every gridDim.y
 * rows after it); its work items are spread over gridDim.x blocks of
 * ASK__ROPE_THREADS (a decode step has one row: one block would leave the
 * kernel one long latency chain). Item j below npairs rotates the pair
 * (head, i) with cos and sin of pos[t] * inv_freq[i] (the angle rounded to
 * f32, cos and sin in double, as kernels/ref; each item computes its own,
 * no shared memory, no barrier): q heads in place; with kc and slot[t] >= 0,
 * the nkv k heads that follow q, rotated and rounded to bf16, into row
 * slot[t] of kc. Item j below nkv * D (with a slot) also copies v column j,
 * rounded, into row slot[t] of vc. Products and sums are rounded one by one
 * (no fused multiply-add) so that the results are those of the reference
 * bit for bit. */
#define ASK__ROPE_THREADS 128
static __global__ void ask__k_rope_kv(float *qkv, uint16_t *kc, uint16_t *vc,
                                      const int32_t *pos, const int32_t *slot,
                                      const float *inv_freq, int T, int nh, int nkv, int D,
                                      int stride) {
  ask__pdl_enter();
  int half = D / 2, kvd = nkv * D;
  for (int t = blockIdx.y; t < T; t += gridDim.y) {
    long long s = kc != NULL ? (long long)slot[t] : -1;
    float p = (float)pos[t];
    float *row = qkv + (size_t)t * stride;
    int npairs = (nh + (s >= 0 ? nkv : 0)) * half;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < npairs || (s >= 0 && j < kvd);
         j += gridDim.x * blockDim.x) {
      if (j < npairs) {
        int h = j / half, i = j - h * half;
        float a = p * inv_freq[i];
        float c = (float)cos((double)a), sn = (float)sin((double)a);
        float *hx = row + (size_t)h * D;
        float x0 = hx[i], x1 = hx[i + half];
        float r0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn));
        float r1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, sn));
        if (h < nh) {
          hx[i] = r0;
          hx[i + half] = r1;
        } else {
          uint16_t *dst = kc + (size_t)s * kvd + (size_t)(h - nh) * D;
          dst[i] = ask__bf16_rn(r0);
          dst[i + half] = ask__bf16_rn(r1);
        }
      }
      if (s >= 0 && j < kvd)
        vc[(size_t)s * kvd + j] = ask__bf16_rn(row[(size_t)(nh + nkv) * D + j]);
    }
  }
}

/* kc NULL: the rope op (q heads only, nkv ignored). */
extern "C" void ask__cu_rope_kv(cudaStream_t s, float *qkv, uint16_t *kc, uint16_t *vc,
                                const int32_t *pos, const int32_t *slot,
                                const float *inv_freq, int T, int nh, int nkv, int D,
                                int stride) {
  if (T <= 0 || ask__cu_failed())
    return;
  if (kc == NULL)
    nkv = 0;
  if (D <= 0 || D % 2 != 0 || D > 8192 || nh < 0 || nkv < 0) {
    ask__cu_check(cudaErrorInvalidValue, "rope_kv: head_dim odd or over 8192, or bad head counts");
    return;
  }
  int work = (nh + nkv) * (D / 2);
  if (work < nkv * D)
    work = nkv * D;
  dim3 grid((unsigned)((work + ASK__ROPE_THREADS - 1) / ASK__ROPE_THREADS),
            (unsigned)(T < 65535 ? T : 65535));
  ASK__LAUNCH(grid, ASK__ROPE_THREADS, 0, s, ask__k_rope_kv)(qkv, kc, vc, pos, slot, inv_freq, T,
                                                              nh, nkv, D, stride);
  ASK__LAUNCHED("rope_kv");
}

/* out (n) = act(gate) * up, or act(gate) when up is NULL. */
static __global__ void ask__k_glu(float *out, const float *gate, const float *up, size_t n,
                                  int act) {
  ask__pdl_enter();
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float a = ask__act(gate[i], act);
    out[i] = up != NULL ? a * up[i] : a;
  }
}

extern "C" void ask__cu_glu(cudaStream_t s, float *out, const float *gate, const float *up,
                            size_t n, int act) {
  if (n == 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(ask__grid(n), 256, 0, s, ask__k_glu)(out, gate, up, n, act);
  ASK__LAUNCHED("glu");
}

/* out (T,F) = act(gu[t, 0:F]) * gu[t, F:2F]: the gate and up halves of one
 * fused product. */
static __global__ void ask__k_glu_rows(float *out, const float *gu, size_t n, int F, int act) {
  ask__pdl_enter();
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t t = i / (size_t)F, f = i - t * (size_t)F;
    const float *g = gu + t * 2 * (size_t)F;
    out[i] = ask__act(g[f], act) * g[F + f];
  }
}

extern "C" void ask__cu_glu_rows(cudaStream_t s, float *out, const float *gu, int T, int F,
                                 int act) {
  if (T <= 0 || F <= 0 || ask__cu_failed())
    return;
  size_t n = (size_t)T * (size_t)F;
  ASK__LAUNCH(ask__grid(n), 256, 0, s, ask__k_glu_rows)(out, gu, n, F, act);
  ASK__LAUNCHED("glu_rows");
}

static __global__ void ask__k_add(float *out, const float *a, const float *b, size_t n) {
  ask__pdl_enter();
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = a[i] + b[i];
}

extern "C" void ask__cu_add(cudaStream_t s, float *out, const float *a, const float *b,
                            size_t n) {
  if (n == 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(ask__grid(n), 256, 0, s, ask__k_add)(out, a, b, n);
  ASK__LAUNCHED("add");
}

/* Row softmax: max, exp in f32, sum in double, one f32 reciprocal. */
static __global__ void ask__k_softmax(float *out, const float *x, int N) {
  ask__pdl_enter();
  __shared__ float shf[32];
  __shared__ double shd[32];
  size_t base = (size_t)blockIdx.x * N;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < N; j += blockDim.x)
    mx = fmaxf(mx, x[base + j]);
  mx = ask__block_max(mx, shf);
  double sum = 0.0;
  for (int j = threadIdx.x; j < N; j += blockDim.x) {
    float e = expf(x[base + j] - mx);
    out[base + j] = e;
    sum += e;
  }
  sum = ask__block_sum(sum, shd);
  float inv = (float)(1.0 / sum);
  for (int j = threadIdx.x; j < N; j += blockDim.x)
    out[base + j] *= inv;
}

extern "C" void ask__cu_softmax(cudaStream_t s, float *out, const float *x, int T, int N) {
  if (T <= 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(T, ask__row_threads(N), 0, s, ask__k_softmax)(out, x, N);
  ASK__LAUNCHED("softmax");
}

/* out (n) bf16 = x (n) rounded to nearest even. */
static __global__ void ask__k_f32_to_bf16(uint16_t *out, const float *x, size_t n) {
  ask__pdl_enter();
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

extern "C" void ask__cu_f32_to_bf16(cudaStream_t s, uint16_t *out, const float *x, size_t n) {
  if (n == 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(ask__grid(n), 256, 0, s, ask__k_f32_to_bf16)(out, x, n);
  ASK__LAUNCHED("f32_to_bf16");
}

/* out (T,N) += bias (N) on every row: the bias of a GEMM whose cuBLASLt
 * plan has no bias epilogue. */
static __global__ void ask__k_add_bias(float *out, const float *bias, size_t n, int N) {
  ask__pdl_enter();
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] += bias[i % (size_t)N];
}

extern "C" void ask__cu_add_bias(cudaStream_t s, float *out, const float *bias, int T, int N) {
  size_t n = (size_t)T * (size_t)N;
  if (n == 0 || ask__cu_failed())
    return;
  ASK__LAUNCH(ask__grid(n), 256, 0, s, ask__k_add_bias)(out, bias, n, N);
  ASK__LAUNCHED("add_bias");
}

/* ---- the PDL probe's pair (backend.c) ------------------------------------ */

/* a[i] = i + seed, late: each block first sleeps ~20 us, so that a
 * dependent kernel that did not wait would read the zeros before. */
static __global__ void ask__k_pdl_first(int *a, int n, int seed) {
  ask__pdl_enter();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  for (int k = 0; k < 20; k++)
    __nanosleep(1000);
#endif
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    a[i] = i + seed;
}

static __global__ void ask__k_pdl_second(int *b, const int *a, int n) {
  ask__pdl_enter();
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    b[i] = 3 * a[i] + 1;
}

/* 1 when the kernel image this device runs was compiled for compute
 * capability 9.0+ (the sm_90a code, so the kernels contain
 * griddepcontrol.wait); 0 when it is the compute_80 PTX (JIT-compiled for
 * a newer GPU: no wait compiled in, so PDL would race). */
extern "C" int ask__cu_pdl_built(void) {
  cudaFuncAttributes fa;
  if (cudaFuncGetAttributes(&fa, ask__k_pdl_second) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return fa.ptxVersion >= 90;
}

extern "C" void ask__cu_pdl_pair(cudaStream_t s, int *a, int *b, int n, int seed) {
  if (n <= 0 || ask__cu_failed())
    return;
  unsigned grid = (unsigned)((n + 255) / 256);
  ASK__LAUNCH(grid, 256, 0, s, ask__k_pdl_first)(a, n, seed);
  ASK__LAUNCHED("pdl_first");
  ASK__LAUNCH(grid, 256, 0, s, ask__k_pdl_second)(b, a, n);
  ASK__LAUNCHED("pdl_second");
}

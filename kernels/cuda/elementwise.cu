/* elementwise.cu — the memory-bound ops of the CUDA backend: embedding
 * gather (f32 or bf16 table), RMSNorm fused with the residual add (Gemma's
 * 1 + w through w_offset), LayerNorm, RoPE fused with the KV-cache write,
 * gated activations, residual add, row softmax and the f32 -> bf16 rounding
 * of GEMM inputs.
 *
 * Each kernel follows its kernels/ref twin step by step (statistics in
 * double, then f32, angles rounded to f32 before a double cos/sin) so the
 * results agree to a few f32 ulps; tests/unit/test_cuda_ops.c checks them.
 * One block per row for the row ops, grid-stride loops for the rest.
 */
#include "common.cuh"

/* out (T,C) = table[ids[t]] * scale; table f32 or (table16) bf16. */
static __global__ void ask__k_embedding(float *out, const float *table, const uint16_t *table16,
                                        const int32_t *ids, int C, float scale) {
  int t = blockIdx.x;
  size_t row = (size_t)ids[t] * C;
  float *o = out + (size_t)t * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float v = table != NULL ? table[row + c] : ask__bf16f(table16[row + c]);
    o[c] = scale == 1.0f ? v : v * scale;
  }
}

extern "C" void ask__cu_embedding(cudaStream_t s, float *out, const float *table,
                                  const uint16_t *table16, const int32_t *ids, int T, int C,
                                  float scale) {
  if (T <= 0 || ask__cu_failed())
    return;
  ask__k_embedding<<<T, 256, 0, s>>>(out, table, table16, ids, C, scale);
  ASK__LAUNCHED("embedding");
}

/* x (T,C) += r (r not NULL), then out = x / sqrt(mean(x^2) + eps) * (off + w).
 * Each thread reads back only the elements it wrote, so out may equal x when
 * r is NULL. */
static __global__ void ask__k_rmsnorm(float *out, float *x, const float *r, const float *w, int C,
                                      float eps, float off) {
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
  ask__k_rmsnorm<<<T, ask__row_threads(C), 0, s>>>(out, x, r, w, C, eps, w_offset);
  ASK__LAUNCHED("rmsnorm");
}

/* out (T,C) = (x - mean) / sqrt(var + eps) * w + b, biased variance. */
static __global__ void ask__k_layernorm(float *out, const float *x, const float *w,
                                        const float *b, int C, float eps) {
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
  ask__k_layernorm<<<T, ask__row_threads(C), 0, s>>>(out, x, w, b, C, eps);
  ASK__LAUNCHED("layernorm");
}

/* One block per row t. Pairs (head, i) of q are rotated in place; with kc,
 * pairs of k are rotated into row slot[t] of kc and v's row is copied to
 * row slot[t] of vc (rows of nkv*D floats). */
static __global__ void ask__k_rope_kv(float *q, float *kc, float *vc, const float *k,
                                      const float *v, const int32_t *pos, const int32_t *slot,
                                      const float *inv_freq, int nh, int nkv, int D,
                                      int q_stride, int k_stride) {
  int t = blockIdx.x, half = D / 2, kvd = nkv * D;
  int npairs = (nh + (kc != NULL ? nkv : 0)) * half;
  float p = (float)pos[t];
  float *qr = q + (size_t)t * q_stride;
  for (int j = threadIdx.x; j < npairs; j += blockDim.x) {
    int h = j / half, i = j - h * half;
    float a = p * inv_freq[i];
    float c = (float)cos((double)a), sn = (float)sin((double)a);
    if (h < nh) {
      float *hx = qr + (size_t)h * D;
      float x0 = hx[i], x1 = hx[i + half];
      hx[i] = x0 * c - x1 * sn;
      hx[i + half] = x1 * c + x0 * sn;
    } else {
      h -= nh;
      const float *hk = k + (size_t)t * k_stride + (size_t)h * D;
      float *dst = kc + (size_t)slot[t] * kvd + (size_t)h * D;
      float x0 = hk[i], x1 = hk[i + half];
      dst[i] = x0 * c - x1 * sn;
      dst[i + half] = x1 * c + x0 * sn;
    }
  }
  if (kc != NULL)
    for (int j = threadIdx.x; j < kvd; j += blockDim.x)
      vc[(size_t)slot[t] * kvd + j] = v[(size_t)t * k_stride + j];
}

extern "C" void ask__cu_rope_kv(cudaStream_t s, float *q, float *kc, float *vc, const float *k,
                                const float *v, const int32_t *pos, const int32_t *slot,
                                const float *inv_freq, int T, int nh, int nkv, int D,
                                int q_stride, int k_stride) {
  if (T <= 0 || ask__cu_failed())
    return;
  int pairs = (nh + nkv) * (D / 2);
  ask__k_rope_kv<<<T, ask__row_threads(pairs), 0, s>>>(q, kc, vc, k, v, pos, slot, inv_freq,
                                                       nh, nkv, D, q_stride, k_stride);
  ASK__LAUNCHED("rope_kv");
}

static __device__ __forceinline__ float ask__act(float x, int act) {
  switch (act) {
  case 1: { /* ASK_ACT_GELU_TANH */
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
  }
  case 2: /* ASK_ACT_GELU */
    return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
  default: /* ASK_ACT_SILU */
    return x / (1.0f + expf(-x));
  }
}

/* out (n) = act(gate) * up, or act(gate) when up is NULL. */
static __global__ void ask__k_glu(float *out, const float *gate, const float *up, size_t n,
                                  int act) {
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
  ask__k_glu<<<ask__grid(n), 256, 0, s>>>(out, gate, up, n, act);
  ASK__LAUNCHED("glu");
}

static __global__ void ask__k_add(float *out, const float *a, const float *b, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = a[i] + b[i];
}

extern "C" void ask__cu_add(cudaStream_t s, float *out, const float *a, const float *b,
                            size_t n) {
  if (n == 0 || ask__cu_failed())
    return;
  ask__k_add<<<ask__grid(n), 256, 0, s>>>(out, a, b, n);
  ASK__LAUNCHED("add");
}

/* Row softmax: max, exp in f32, sum in double, one f32 reciprocal. */
static __global__ void ask__k_softmax(float *out, const float *x, int N) {
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
  ask__k_softmax<<<T, ask__row_threads(N), 0, s>>>(out, x, N);
  ASK__LAUNCHED("softmax");
}

/* out (n) bf16 = x (n) rounded to nearest even. */
static __global__ void ask__k_f32_to_bf16(uint16_t *out, const float *x, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

extern "C" void ask__cu_f32_to_bf16(cudaStream_t s, uint16_t *out, const float *x, size_t n) {
  if (n == 0 || ask__cu_failed())
    return;
  ask__k_f32_to_bf16<<<ask__grid(n), 256, 0, s>>>(out, x, n);
  ASK__LAUNCHED("f32_to_bf16");
}

/* out (T,N) += bias (N) on every row: the bias of a GEMM whose cuBLASLt
 * plan has no bias epilogue. */
static __global__ void ask__k_add_bias(float *out, const float *bias, size_t n, int N) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] += bias[i % (size_t)N];
}

extern "C" void ask__cu_add_bias(cudaStream_t s, float *out, const float *bias, int T, int N) {
  size_t n = (size_t)T * (size_t)N;
  if (n == 0 || ask__cu_failed())
    return;
  ask__k_add_bias<<<ask__grid(n), 256, 0, s>>>(out, bias, n, N);
  ASK__LAUNCHED("add_bias");
}

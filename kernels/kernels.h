/* kernels.h — the one public header of kernels/: the ops table of the model
 * engine.
 *
 * Every tensor operation the forward pass needs is one function pointer in
 * ask_ops_t. kernels/ref fills the table with plain C (plus OpenBLAS for the
 * f32 matrix products) and is the source of truth; kernels/cuda fills the same
 * table later and is tested against it. Conventions, as in llm.c: outputs
 * first, then inputs, then sizes; every pointer is a row-major f32 array
 * whose shape the comment gives ((T,C) is T rows of C floats). Ops never
 * allocate and never fail: the caller (actors/llm) checks sizes and token ids
 * before calling, and passes any scratch memory an op needs.
 *
 * Weights are f32 in memory (bf16/f16 are converted when a model loads, f32
 * tensors are used straight from the mmap when aligned): OpenBLAS's portable
 * GEMM/GEMV is f32, a per-call conversion would cost more than the product on
 * the decode path, and the f32 path is the exact reference the GPU backend is
 * measured against. See docs/engine.md.
 */
#ifndef ASK_KERNELS_H
#define ASK_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Activations (hidden_act / hidden_activation in config.json). */
enum {
  ASK_ACT_SILU = 0,      /* "silu" / "swish": x * sigmoid(x) */
  ASK_ACT_GELU_TANH = 1, /* "gelu_pytorch_tanh" / "gelu_new": tanh approximation */
  ASK_ACT_GELU = 2,      /* "gelu": exact, 0.5 * x * (1 + erf(x / sqrt(2))) */
};

/* Version of the ops table's layout: a CUDA module built from another
 * kernels.h is refused (kernels/load.c). Bump it with every change of
 * ask_ops_t or ask_dev_t. */
#define ASK_ABI 5

typedef struct ask_ops_s {
  const char *name; /* "ref", "cuda" */

  /* out (T,C) = table[ids[t]] (V,C) * scale. ids are in [0, V) (checked by
   * the caller). scale is 1, or sqrt(C) for Gemma's normalised embeddings. */
  void (*embedding)(float *out, const float *table, const int32_t *ids, int T, int C,
                    float scale);

  /* out (T,C) = x / sqrt(mean(x^2) + eps) * (w_offset + w), per row; w (C).
   * w_offset is 0 for Llama/Qwen2 and 1 for Gemma's (1 + w) RMSNorm.
   * out may equal x. */
  void (*rmsnorm)(float *out, const float *x, const float *w, int T, int C, float eps,
                  float w_offset);

  /* out (T,C) = (x - mean) / sqrt(var + eps) * w + b, per row (biased
   * variance, as torch.nn.LayerNorm); w, b (C). out may equal x. */
  void (*layernorm)(float *out, const float *x, const float *w, const float *b, int T,
                    int C, float eps);

  /* out (T,N) = x (T,K) · wᵀ + bias, w (N,K) as torch.nn.Linear stores it,
   * bias (N) or NULL. out must not alias x or w. Uses every core (BLAS). */
  void (*matmul)(float *out, const float *x, const float *w, const float *bias, int T,
                 int K, int N);

  /* In place RoPE, Hugging Face's rotate-half layout: for each row t, head
   * h, and i < D/2, with a = pos[t] * inv_freq[i]:
   *   x0 = x[i], x1 = x[i + D/2]
   *   x[i] = x0 cos a - x1 sin a,  x[i + D/2] = x1 cos a + x0 sin a.
   * x (T, nh*D) with row stride `stride` floats; pos (T); inv_freq (D/2),
   * already Llama-3 scaled where the config asks (actors/llm does it at load). */
  void (*rope)(float *x, const int32_t *pos, const float *inv_freq, int T, int nh, int D,
               int stride);

  /* Scaled dot-product attention of T new query rows over L keys/values
   * (the KV cache of one sequence, the new rows last):
   *   out (T, nh*D), q (T, nh*D);
   *   k, v (L, *) with row stride kv_stride, kv head g at columns [g*D, g*D+D);
   *   query head h reads kv head h / (nh / nkv) (grouped-query; nkv = 1 is
   *   multi-query, nkv = nh multi-head);
   *   causal: query t is at position L - T + t and sees keys [0, L - T + t];
   *   key_mask (L) or NULL: key j is hidden when key_mask[j] == 0 (BERT padding);
   *   scale multiplies q·k (1/sqrt(D) for every supported family);
   *   scratch holds T*L floats. A row that sees no key at all gets zeros. */
  void (*attention)(float *out, float *scratch, const float *q, const float *k,
                    const float *v, const int32_t *key_mask, int T, int L, int nh, int nkv,
                    int D, int kv_stride, float scale, int causal);

  /* Gated MLP activation: out (n) = act(gate) * up (SwiGLU with
   * ASK_ACT_SILU, GeGLU with ASK_ACT_GELU_TANH). out may equal gate or up. */
  void (*glu)(float *out, const float *gate, const float *up, size_t n, int act);

  /* out (n) = act(x) (BERT's intermediate GELU). out may equal x. */
  void (*activate)(float *out, const float *x, size_t n, int act);

  /* out (T,N) = softmax of each row of x (T,N), max-subtracted. out may equal x. */
  void (*softmax)(float *out, const float *x, int T, int N);

  /* out (n) = a + b (residual connections). out may equal a or b. */
  void (*add)(float *out, const float *a, const float *b, size_t n);

  /* Index of the largest of x (n), the first one on ties (torch.argmax). */
  int (*argmax)(const float *x, int n);

  /* Next token from one row of logits x (n), as transformers' generate()
   * with do_sample: temperature (x / temperature), then top-k (values below
   * the k-th largest removed, ties kept; top_k <= 0 or >= n: off), then top-p
   * (ascending cumulative softmax <= 1 - top_p removed, the largest kept;
   * top_p >= 1: off), then a draw from the softmax of what is left using one
   * uniform of *rng (ask_rng_*). temperature <= 0 is greedy: the argmax,
   * *rng untouched. probs (n) or NULL receives the final distribution; w (n
   * doubles) and idx (n) are scratch. Returns the token id. */
  int (*sample)(float *probs, double *w, int32_t *idx, const float *x, int n,
                float temperature, int top_k, float top_p, uint64_t *rng);

  /* Device backends only: memory, error reporting and the device-only ops
   * (below). NULL in the "ref" table, whose pointers are all host memory. */
  const struct ask_dev_s *dev;
} ask_ops_t;

/* What a device backend (kernels/cuda) adds to its ops table.
 *
 * In a table whose `dev` is not NULL, every array argument of every op is
 * device memory (allocated with dev->alloc), except sample's rng, which stays
 * a host pointer as in the reference (its w and idx are unused and may be
 * NULL). Ops are queued on the backend's stream and return at once; argmax
 * and sample wait for their result. A failing CUDA or cuBLASLt call never
 * aborts: the first failure is recorded, later ops are skipped, and sync()
 * reports it (and clears it). The backend is used from one thread at a time
 * (a replica's engine thread). */
/* ASK_COPY_H2D_ASYNC: host to device, queued behind the ops without
 * waiting (the step's staged inputs: the ops queued after it see them, and
 * the host does not sit idle for a round trip before the step's launch).
 * src must be pageable memory (malloc), which CUDA's drivers copy into a
 * staging buffer before the call returns; the caller must still not write
 * src again before a copy that waits or a sync (the device path never
 * does: each step ends with one, failed steps included), since the CUDA
 * documentation promises that staging only loosely. A failure may only
 * show at that next wait. */
/* ASK_COPY_D2H_ASYNC: device to host, queued behind the ops without
 * waiting, into memory from host_alloc (page-locked, so the copy runs when
 * its turn comes); its bytes may be read after wait_mark of a mark queued
 * after it. */
enum {
  ASK_COPY_H2D = 1,
  ASK_COPY_D2H = 2,
  ASK_COPY_D2D = 3,
  ASK_COPY_H2D_ASYNC = 4,
  ASK_COPY_D2H_ASYNC = 5
};
#define ASK_MARKS 2 /* mark slots of a backend */

/* One product of a chain (gemv_chain below): one of the one-row device ops
 * (T = 1) with its arguments, named as in that op. */
enum {
  ASK_CHAIN_MATMUL = 1,   /* matmul_bf16 (out, xs, x, w, bias, K, N) */
  ASK_CHAIN_NORM_MATMUL,  /* norm_matmul_bf16 (out, xo, h, xs, x, r, nw, eps, w_offset, w,
                             bias, K, N) */
  ASK_CHAIN_NORM_ROPE_KV, /* norm_matmul_rope_kv (those but N, and kc, vc, pos, slot,
                             inv_freq, nh, nkv, D) */
  ASK_CHAIN_GLU_MATMUL,   /* glu_matmul_bf16 (out, g, xs, x = gu, act, w, bias, K = F, N) */
  ASK_CHAIN_ATTENTION     /* attention_paged of one row (out, part, x = q, kc, vc, table, seq,
                             pos, nh, nkv, D, q_stride, table_width, page, nsplit, scale) */
};
typedef struct ask_chain_op_s {
  int kind; /* ASK_CHAIN_* */
  float *out, *xo, *h, *g;
  uint16_t *xs;
  const float *x, *r, *nw;
  float eps, w_offset;
  const uint16_t *w;
  const float *bias;
  int K, N, act;
  uint16_t *kc, *vc;
  const int32_t *pos, *slot;
  const float *inv_freq;
  int nh, nkv, D;
  float *part;
  const int32_t *table, *seq;
  int q_stride, table_width, page, nsplit;
  float scale;
} ask_chain_op_t;

typedef struct ask_dev_s {
  /* *p = bytes of device memory (cudaMalloc, never managed memory), 256-byte
   * aligned. Returns 0, AS_ENOMEM, or AS_EIO with err naming the call. */
  int (*alloc)(void **p, size_t bytes, char *err, size_t errlen);
  void (*free)(void *p); /* p may be NULL; waits for queued work */
  /* Copies bytes in direction dir (ASK_COPY_*) after the queued ops; waits
   * (except ASK_COPY_H2D_ASYNC and ASK_COPY_D2H_ASYNC). */
  int (*copy)(void *dst, const void *src, size_t bytes, int dir, char *err, size_t errlen);
  /* Waits for every queued op. Returns 0 or the first failure since the last
   * sync (AS_ENOMEM, AS_EINVAL, AS_EIO) with err naming the call and why. */
  int (*sync)(char *err, size_t errlen);
  /* Host memory for ASK_COPY_D2H_ASYNC (page-locked; cudaHostAlloc), and
   * its release (NULL is fine). Returns as alloc. */
  int (*host_alloc)(void **p, size_t bytes, char *err, size_t errlen);
  void (*host_free)(void *p);
  /* mark queues marker `slot` (0 .. ASK_MARKS-1) behind the ops queued so
   * far; wait_mark waits until the ops before the last mark of that slot
   * are done, so that the host may read what they copied out while later
   * ops still run. Both return 0 or the first failure since the last sync
   * or wait (as sync). Not inside a capture. */
  int (*mark)(int slot, char *err, size_t errlen);
  int (*wait_mark)(int slot, char *err, size_t errlen);

  /* out (T,N) = x (T,K) · wᵀ + bias with w (N,K) in bf16, fp32 accumulation:
   * cuBLASLt on x rounded to bf16 in xs (T*K bf16 scratch), or, for T up to
   * the backend's matrix-vector limit (and any T <= 16 whose rows are not
   * 16-byte aligned), a kernel reading x in f32. bias (N) f32 or NULL. out
   * must not alias x. */
  void (*matmul_bf16)(float *out, uint16_t *xs, const float *x, const uint16_t *w,
                      const float *bias, int T, int K, int N);
  /* out (T,C) = table[ids[t]] (V,C bf16) * scale, as embedding; ids[t] < 0
   * stands for prev[-ids[t] - 1], an id an earlier step sampled and left on
   * the device (prev may be NULL when no id is negative). */
  void (*embedding_bf16)(float *out, const uint16_t *table, const int32_t *ids,
                         const int32_t *prev, int T, int C, float scale);
  /* The residual add fused into the next norm: x (T,C) += r (when r is not
   * NULL), then out = rmsnorm(x) as the rmsnorm op. out must not alias x. */
  void (*add_rmsnorm)(float *out, float *x, const float *r, const float *w, int T, int C,
                      float eps, float w_offset);
  /* RoPE fused with the write into a paged bf16 KV cache. Row t of the
   * fused projection qkv (T rows of `stride` floats: q at columns
   * [0, nh*D), k at [nh*D, (nh+nkv)*D), v at [(nh+nkv)*D, (nh+2*nkv)*D)):
   * its q heads are rotated in place (as the rope op, position pos[t]);
   * its k heads, rotated, and its v heads are rounded to bf16 (nearest
   * even) and written to row slot[t] of kc and vc (rows of nkv*D bf16; a
   * slot is page * page_size + offset, see attention_paged). slot[t] < 0:
   * the row's k and v are not written (padding rows of a captured step).
   * The k and v columns of qkv are left as they were. */
  void (*rope_kv)(float *qkv, uint16_t *kc, uint16_t *vc, const int32_t *pos,
                  const int32_t *slot, const float *inv_freq, int T, int nh, int nkv, int D,
                  int stride);
  /* Attention of T query rows, each over its own sequence in the paged
   * cache (decode rows of many sequences and prefill chunks mixed):
   *   out (T, nh*D); query row t is q + t*q_stride (nh heads of D floats);
   *   row t belongs to the sequence whose page list is
   *   table[seq[t] * table_width ...] and sits at position pos[t]: it sees
   *   keys 0..pos[t] of that sequence (causal); key j is cache row
   *   table[seq[t] * table_width + j / page] * page + j % page of kc, vc
   *   (bf16 rows of nkv*D, kv head g at columns [g*D, g*D+D)); query head h
   *   reads kv head h / (nh / nkv). pos[t] < 0: the row is padding and gets
   *   zeros. The rows' own keys must already be in the cache (rope_kv).
   *   seq and table are not read for padding rows. D even, page >= 1.
   *   Work is split along the keys into nsplit parts (>= 1, fixed by the
   *   caller so that a captured step stays valid for any length) merged
   *   exactly; part holds nsplit * T * nh * (D + 2) floats when nsplit > 1.
   *   D <= 256. Scores and softmax in f32. */
  void (*attention_paged)(float *out, float *part, const float *q, const uint16_t *kc,
                          const uint16_t *vc, const int32_t *table, const int32_t *seq,
                          const int32_t *pos, int T, int nh, int nkv, int D, int q_stride,
                          int table_width, int page, int nsplit, float scale);
  /* Attention of one prefill chunk (optional: NULL when a backend has
   * none; attention_paged then does it): n query rows of ONE sequence at
   * positions p0 .. p0 + n - 1, row i at q + i * q_stride, seeing keys
   * 0 .. p0 + i (causal) of that sequence, whose pages are pages[0 ..]
   * (device memory, e.g. inside the staged page lists); out (n, nh*D).
   * The same result as attention_paged on those rows (the rows' own keys
   * must already be in the cache); a kernel can tile the query rows and
   * read each key once per tile. Never captured (a prefill step runs its
   * ops directly), so the launch may depend on n and p0. */
  void (*attention_prefill)(float *out, const float *q, const uint16_t *kc, const uint16_t *vc,
                            const int32_t *pages, int p0, int n, int nh, int nkv, int D,
                            int q_stride, int page, float scale);
  /* Gated activation of a fused gate/up product: out (T,F) =
   * act(gu[t, 0:F]) * gu[t, F:2F] for gu (T, 2F). out must not alias gu. */
  void (*glu_rows)(float *out, const float *gu, int T, int F, int act);
  /* Decode fusions (optional: NULL when a backend has none; the engine then
   * runs the separate ops).
   * norm_matmul_bf16: out (T,N) = rmsnorm(x + r) · wᵀ + bias with w (N,K)
   * bf16, K = C: the residual add and the norm (weight nw, eps, w_offset
   * as rmsnorm) fused into the product; with r not NULL, xo (T,K) = x + r is
   * written too (the new residual); r NULL: rmsnorm(x), xo unused. xo must
   * not alias x or r (blocks of one launch all read x). h (T,K) f32 and xs
   * (T,K) bf16 are scratch for T beyond the fused kernel's rows. */
  void (*norm_matmul_bf16)(float *out, float *xo, float *h, uint16_t *xs, const float *x,
                           const float *r, const float *nw, float eps, float w_offset,
                           const uint16_t *w, const float *bias, int T, int K, int N);
  /* norm_matmul_rope_kv: norm_matmul_bf16 into the qkv rows out (N = (nh +
   * 2 nkv) D columns), then rope_kv on them (stride N), as one op, so that
   * a backend may fuse the two (the CUDA backend can at one row). Optional
   * (NULL: the engine runs the two ops). */
  void (*norm_matmul_rope_kv)(float *out, float *xo, float *h, uint16_t *xs, const float *x,
                              const float *r, const float *nw, float eps, float w_offset,
                              const uint16_t *w, const float *bias, int T, int K, uint16_t *kc,
                              uint16_t *vc, const int32_t *pos, const int32_t *slot,
                              const float *inv_freq, int nh, int nkv, int D);
  /* norm_matmul_glu: gu (T,2F) = norm_matmul_bf16(x, r, nw, ..., w (2F,K)),
   * then, when the backend fuses the gated activation into that product,
   * g (T,F) = glu_rows(gu, act) instead of gu, and returns 1; returns 0
   * when it wrote gu only (the caller goes on with glu_matmul_bf16). The
   * answer depends only on the scalar arguments and the backend's settings,
   * so a captured step keeps it. Optional (NULL: norm_matmul_bf16). */
  int (*norm_matmul_glu)(float *g, float *gu, float *xo, float *h, uint16_t *xs, const float *x,
                         const float *r, const float *nw, float eps, float w_offset,
                         const uint16_t *w, const float *bias, int T, int K, int F, int act);
  /* glu_matmul_bf16: out (T,N) = glu_rows(gu, act) · wᵀ + bias with w (N,F)
   * bf16 and gu (T,2F): the gated activation fused into the down product.
   * g (T,F) f32 and xs (T,F) bf16 are scratch for T beyond the fused
   * kernel's rows. */
  void (*glu_matmul_bf16)(float *out, float *g, uint16_t *xs, const float *gu, int act,
                          const uint16_t *w, const float *bias, int T, int F, int N);
  /* norm_matmul_mlp: a layer's gated MLP of one row (T = 1) as one op:
   *   g (F) = glu_rows(norm_matmul_bf16(x, r, nw, eps, w_offset, gu (2F,K), gu_b), act)
   *   acc (K) += g · down_t + down_b, down_t (F,K) bf16 (down_proj's weight
   *   transposed), acc holding zeros before (the sums may be in any order,
   *   so the bits may differ from run to run);
   *   clear (K) = 0 unless NULL, once every op queued before is done (it
   *   may be what the op before read);
   * xo = x + r as norm_matmul_bf16's. acc and clear alias nothing else.
   * Returns 1 when queued, 0 when the backend does not take the shape or
   * the alignments (acc and the matrices 16-byte aligned, K % 256 == 0 on
   * CUDA); with down_t NULL it queues nothing and says whether it would
   * take (T, K, F) (the engine then uploads down_t). The answer depends
   * only on the arguments, never on device data. Optional (NULL). */
  int (*norm_matmul_mlp)(float *acc, float *clear, float *xo, const float *x, const float *r,
                         const float *nw, float eps, float w_offset, const uint16_t *gu,
                         const float *gu_b, const uint16_t *down_t, const float *down_b, int T,
                         int K, int F, int act);
  /* gemv_chain: the n one-row products of ops, one after the other, as one
   * launch: the same results, bit for bit, as calling their ops in order
   * (a NORM_MATMUL of 2F rows followed by the GLU_MATMUL that reads it
   * included: norm_matmul_glu's choice, then the down product; the pair's
   * gate/up rows are then scratch like g, and may be left unwritten). Returns 1
   * when queued, 0 when the backend does not chain these (its settings, a
   * shape or an alignment its chained kernel does not take); the caller
   * then calls the ops one by one. The answer depends only on the
   * arguments' values, never on device data, so a captured step keeps it.
   * Optional (NULL). */
  int (*gemv_chain)(const ask_chain_op_t *ops, int n);
  /* ids (T) = argmax of each row of x (T,n), as the argmax op; stays on the
   * device. */
  void (*argmax_rows)(int32_t *ids, const float *x, int T, int n);
  /* ids (T) = the sample op on each row of x (T,n) with that row's
   * temperature (T), top_k (T), top_p (T) and generator state rng (T),
   * updated in place; probs (T,n) or NULL. Only ids need come back. The
   * CUDA backend sums the weights in fixed point (exact, so a seed gives
   * the same token on every run): a top-p cut or a draw within ~n 2^-45 of
   * a boundary may fall the other way than the reference's doubles. */
  void (*sample_rows)(int32_t *ids, float *probs, const float *x, const float *temperature,
                      const int32_t *top_k, const float *top_p, uint64_t *rng, int T, int n);

  /* Bytes of device memory free and in all (cudaMemGetInfo). */
  int (*mem_info)(size_t *free_bytes, size_t *total_bytes, char *err, size_t errlen);

  /* Captured steps (CUDA graphs). graph_capture calls fn(ud) once while
   * recording: the ops fn queues are recorded with their arguments as
   * given (pointers and sizes), NOT run. graph_launch runs the recorded
   * ops again, in order, reading whatever the device buffers hold then;
   * graph_free releases it. So everything that changes from one step to
   * the next must be in device memory (copied in before the launch), never
   * in an op's scalar arguments. fn must not call copy, sync, alloc or
   * free, nor the host-facing argmax and sample of ask_ops_t (they wait). Returns 0, or an AS_E* code with err saying why (the caller then
   * runs its ops directly). */
  int (*graph_capture)(void **graph, void (*fn)(void *ud), void *ud, char *err,
                       size_t errlen);
  int (*graph_launch)(void *graph, char *err, size_t errlen);
  void (*graph_free)(void *graph); /* NULL is fine */

  /* One line on the device and how the backend drives it (name, kernel
   * choices, programmatic dependent launch), for logs and benchmark
   * records. Optional (NULL). */
  const char *(*describe)(void);
} ask_dev_t;

/* The plain-C reference backend (kernels/ref). Never NULL. */
const ask_ops_t *ask_ref_ops(void);

/* The device contract on the host (kernels/ref/dev.c): the reference ops
 * plus an ask_dev_t whose "device memory" is host memory, whose ops are the
 * plain-C twins of the device-only ops (the CUDA kernels are tested against
 * them) and whose captured steps are recorded op lists replayed with the
 * recorded arguments. The engine's device path runs on it unchanged, so the
 * path is tested on machines without a GPU. Never NULL. */
const ask_ops_t *ask_refdev_ops(void);

/* A backend by name: "cpu" (or "ref"), "refdev", "cuda" (kernels/load.c).
 * NULL when it cannot be used, with *why (when why is not NULL) saying why.
 * "cuda" loads the module libactorserve_cuda.so (kernels/cuda) on first
 * use and takes the first device that CUDA_VISIBLE_DEVICES leaves. */
const ask_ops_t *ask_backend(const char *name, const char **why);

/* The CUDA backend itself, exported by the module (and linked directly into
 * its tests): NULL when no device, driver or cuBLASLt can be used
 * (kernels/cuda/ask_cuda.h's ask_cuda_unavailable says why). */
const ask_ops_t *ask_cuda_ops(void);

/* The per-sequence random generator of sampling (kernels/ref/sample.c):
 * xorshift64*, 64 bits of state. ask_rng_seed turns any seed into a valid
 * (non-zero) state through splitmix64; ask_rng_uniform returns [0, 1) from
 * the top 53 bits of one output. The same seed gives the same stream. */
uint64_t ask_rng_seed(uint64_t seed);
uint64_t ask_rng_next(uint64_t *state);
double ask_rng_uniform(uint64_t *state);

/* Conversions used at load time (kernels/ref/convert.c): n values. */
void ask_bf16_to_f32(float *out, const uint16_t *in, size_t n);
void ask_f16_to_f32(float *out, const uint16_t *in, size_t n);
/* f32 to bf16, rounded to nearest even (NaNs stay NaNs). */
void ask_f32_to_bf16(uint16_t *out, const float *in, size_t n);

#endif /* ASK_KERNELS_H */

/* cuda_int.h — internal header of kernels/cuda: the launchers that the .cu
 * files define (plain C names, callable from C) and the error recorder of
 * backend.c. Never included from outside kernels/cuda.
 *
 * Every launcher queues its kernel on `stream` and reports a launch failure
 * through ask__cu_fail (the first failure sticks until sync reports it).
 * Shapes and rules are those of the op of kernels.h that it implements.
 */
#ifndef ASK_CUDA_INT_H
#define ASK_CUDA_INT_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* gemm.c: out (T,N) = x (T,K) · w (N,K)ᵀ + bias through cuBLASLt, x and w
 * f32 (bf16 = 0) or bf16 (bf16 = 1), out and bias f32, fp32 accumulation.
 * Plans are made once per shape and alignment and cached. Failures are
 * recorded (ask__cu_check). */
void ask__gemm(cudaStream_t s, int bf16, float *out, const void *x, const void *w,
               const float *bias, int T, int K, int N);
int ask__gemm_init(char *why, size_t whylen); /* handle + 32 MiB workspace */
int ask__gemm_plans(void);
/* Records a cuBLASLt failure of `what` (status from cublasStatus_t). */
int ask__lt_check(int status, const char *what);

/* Records the first failure (code from cudaError_t) of `what`; returns 1 when
 * err is not cudaSuccess. Defined in backend.c. */
int ask__cu_check(cudaError_t err, const char *what);
/* 1 when an earlier failure is pending: ops are then skipped until sync. */
int ask__cu_failed(void);
/* 1: launches use programmatic dependent launch (common.cuh's ASK__LAUNCH);
 * set by backend.c's initialisation (elementwise.cu defines it, 0). */
extern int ask__cu_pdl;
/* paged.cu: the fewest keys a part of a split attention row holds
 * (ask_cuda_set_split_min). */
extern int ask__cu_split_min;
/* paged.cu: KB of keys and values (bf16, 4 D bytes a key) a part holds at
 * least, 0: ask__cu_split_min keys (ask_cuda_set_split_kb); ask__pg_kmin:
 * the fewest keys a part holds for head dim D, by whichever is set. */
extern int ask__cu_split_kb;
int ask__pg_kmin(int D);
/* paged.cu: attention_paged takes its decode kernel (one barrier, keys
 * straight into registers) for up to this many rows when the shape allows
 * (D % 8 == 0 and >= 32, 16-byte aligned caches and queries); 0: never;
 * -1: automatic, by the kv heads (ask_cuda_set_attn_decode). ask__pg_dec_rows
 * says the rows for nkv kv heads. */
extern int ask__cu_attn_dec;
/* paged.cu: 1: the decode and grouped kernels read the keys of earlier
 * steps before their PDL wait (ask_cuda_set_attn_early). */
extern int ask__cu_attn_early;
int ask__pg_dec_rows(int nkv);
/* elementwise.cu: two dependent launches for backend.c's PDL probe: a[i] =
 * i + seed (after a delay), then b[i] = 3 a[i] + 1 (n ints each). */
void ask__cu_pdl_pair(cudaStream_t s, int *a, int *b, int n, int seed);
/* 1 when the kernels this device runs were compiled with the PDL waits
 * (compute capability 9.0+ code, not the compute_80 PTX). */
int ask__cu_pdl_built(void);

/* elementwise.cu. embedding: ids[t] < 0 takes prev[-ids[t] - 1] (prev may
 * be NULL when no id is negative). */
void ask__cu_embedding(cudaStream_t s, float *out, const float *table, const uint16_t *table16,
                       const int32_t *ids, const int32_t *prev, int T, int C, float scale);
void ask__cu_rmsnorm(cudaStream_t s, float *out, float *x, const float *r, const float *w,
                     int T, int C, float eps, float w_offset);
void ask__cu_layernorm(cudaStream_t s, float *out, const float *x, const float *w,
                       const float *b, int T, int C, float eps);
/* The rope_kv op (paged bf16 cache); with kc NULL the rope op on qkv's
 * first nh heads (nkv, vc and slot unused). */
void ask__cu_rope_kv(cudaStream_t s, float *qkv, uint16_t *kc, uint16_t *vc,
                     const int32_t *pos, const int32_t *slot, const float *inv_freq, int T,
                     int nh, int nkv, int D, int stride);
void ask__cu_glu(cudaStream_t s, float *out, const float *gate, const float *up, size_t n,
                 int act);
void ask__cu_glu_rows(cudaStream_t s, float *out, const float *gu, int T, int F, int act);
void ask__cu_add(cudaStream_t s, float *out, const float *a, const float *b, size_t n);
void ask__cu_softmax(cudaStream_t s, float *out, const float *x, int T, int N);
void ask__cu_f32_to_bf16(cudaStream_t s, uint16_t *out, const float *x, size_t n);
void ask__cu_add_bias(cudaStream_t s, float *out, const float *bias, int T, int N);

/* attention.cu: nsplit partial rows of (D + 2) floats in part when > 1. */
void ask__cu_attention(cudaStream_t s, float *out, float *part, int nsplit, const float *q,
                       const float *k, const float *v, const int32_t *key_mask, int T, int L,
                       int nh, int nkv, int D, int kv_stride, float scale, int causal);
/* Merges the nsplit partial rows (m, l, acc[D]) of part, laid out
 * ((t * nh + h) * nsplit + split) * (D + 2), into out (T, nh*D); a split
 * with m = -inf weighs 0, a row with no key at all gets zeros. */
void ask__cu_attention_merge(cudaStream_t s, float *out, const float *part, int nsplit, int T,
                             int nh, int D);

/* paged.cu: the merge counters of attention_paged (256 KB of device memory,
 * zeroed on stream s; backend initialisation): without them a split launch
 * is followed by attention.cu's merge kernel. Returns 0, or 1 with the
 * failure recorded. */
int ask__cu_paged_init(cudaStream_t s);
/* paged.cu: the attention_paged op. */
void ask__cu_attention_paged(cudaStream_t s, float *out, float *part, const float *q,
                             const uint16_t *kc, const uint16_t *vc, const int32_t *table,
                             const int32_t *seq, const int32_t *pos, int T, int nh, int nkv,
                             int D, int q_stride, int table_width, int page, int nsplit,
                             float scale);
/* The same with the kernel chosen by the caller (tests): heads <= 0 picks
 * as ask__cu_attention_paged does; 1 the per-head kernel; 2..8 the grouped
 * kernel with blocks of up to `heads` query heads of one kv head (the
 * per-head kernel when nh == nkv). */
void ask__cu_attention_paged_gb(cudaStream_t s, float *out, float *part, const float *q,
                                const uint16_t *kc, const uint16_t *vc, const int32_t *table,
                                const int32_t *seq, const int32_t *pos, int T, int nh, int nkv,
                                int D, int q_stride, int table_width, int page, int nsplit,
                                float scale, int heads);

/* prefill.cu: the attention_prefill op (one prefill chunk of one sequence:
 * rows at positions p0 .. p0 + n - 1 over keys 0 .. p0 + i, pages its page
 * list). q_stride >= nh * D. */
void ask__cu_attention_prefill(cudaStream_t s, float *out, const float *q, const uint16_t *kc,
                               const uint16_t *vc, const int32_t *pages, int p0, int n, int nh,
                               int nkv, int D, int q_stride, int page, float scale);

/* gemv_pw.cu: SMs of the device, set by ask__cu_gemv_init (which also raises
 * the persistent kernels' shared-memory limit; call once, before any
 * capture), and the persistent one-row kernels' blocks an SM (0: the
 * one-row products take the per-row-block kernels; ask_cuda_set_gemv_pw). */
extern int ask__cu_sms;
extern int ask__cu_gemv_pw;
/* gemv_pw.cu: 1 loads each warp's first weight step into registers before
 * the PDL wait (weights are never written by a kernel), 2 only in the
 * launch right after the attention's (ask__cu_after_attn);
 * ask_cuda_set_pw_early. ask__cu_pw_early_now: whether the next
 * persistent launch will. */
extern int ask__cu_pw_early;
int ask__cu_pw_early_now(void);
/* paged.cu sets it after attention_paged's launches, ASK__LAUNCHED clears it
 * after any other: 1 while the stream's last launch is the attention's,
 * whose few blocks leave most of the device to the next kernel's blocks
 * before its PDL wait. */
extern int ask__cu_after_attn;
/* gemv_pw.cu: the persistent kernel's steps of at most 32 * this many
 * 16-byte pieces a warp (8, 4, 2, 1; ASK_CUDA_PW_UMAX). At 4 or less it
 * keeps to 80 registers, so that a block of the next kernel fits beside two
 * of it on an SM. */
extern int ask__cu_pw_umax;
cudaError_t ask__cu_gemv_init(int sms, size_t optin);
/* gemv_pw.cu: the one-row products (plain, fused norm, fused glu) on the
 * persistent kernel; each returns 1 when launched, 0 when it does not take
 * the shape (gemv.cu's entry points then use their own kernels). */
int ask__cu_gemv_pw_copy(cudaStream_t s, float *out, const float *x, const uint16_t *w,
                         const float *bias, int T, int K, int N);
int ask__cu_gemv_pw_norm(cudaStream_t s, float *out, float *xo, const float *x, const float *r,
                         const float *nw, float eps, float w_offset, const uint16_t *w,
                         const float *bias, int T, int K, int N);
int ask__cu_gemv_pw_glu(cudaStream_t s, float *out, const float *gu, int act, const uint16_t *w,
                        const float *bias, int T, int F, int N);
/* gemv_pw.cu: gemv_norm_bf16 of one row into the gate/up rows (2F columns)
 * with glu_rows fused: g (F) = act(gate) * up; 1 when launched, 0 when the
 * shape is not taken (the caller runs the two). */
int ask__cu_gemv_norm_glu_bf16(cudaStream_t s, float *g, float *xo, const float *x,
                               const float *r, const float *nw, float eps, float w_offset,
                               const uint16_t *w, const float *bias, int T, int K, int F,
                               int act);
/* gemv_mlp.cu: kernels.h's norm_matmul_mlp at one row in one launch, the
 * down product split along F and added into acc (zeros before) by atomic
 * adds; clear (K floats or NULL) zeroed after every earlier kernel is done.
 * ask__cu_mlp_init sets its shared-memory limit (from ask__cu_gemv_init);
 * ask__cu_mlp_takes says whether it takes the shape (acc's alignment is
 * the caller's). */
cudaError_t ask__cu_mlp_init(size_t optin);
extern int ask__cu_mlp_warps; /* warps a block: 8 or 16 (ask_cuda_set_mlp_warps) */
int ask__cu_mlp_takes(int T, int K, int F, const uint16_t *gu, const uint16_t *dt);
void ask__cu_gemv_mlp(cudaStream_t s, float *acc, float *clear, float *xo, const float *x,
                      const float *r, const float *nw, float eps, float w_offset,
                      const uint16_t *gu, const float *gu_b, const uint16_t *dt,
                      const float *down_b, int K, int F, int act);
/* gemv_pw.cu: gemv_norm_bf16 of one row into the qkv row out ((nh + 2 nkv) D
 * columns) with rope_kv fused into the persistent kernel; returns 1 when
 * launched, 0 when it does not take the shape (the caller runs the two). */
int ask__cu_gemv_norm_rope_bf16(cudaStream_t s, float *out, float *xo, const float *x,
                                const float *r, const float *nw, float eps, float w_offset,
                                const uint16_t *w, const float *bias, int T, int K, uint16_t *kc,
                                uint16_t *vc, const int32_t *pos, const int32_t *slot,
                                const float *inv_freq, int nh, int nkv, int D);
/* gemv_chain.cu: kernels.h's gemv_chain on the persistent kernel, every op
 * a phase of one launch with a grid barrier between phases; 1 when
 * launched, 0 when an op is not taken (the caller runs them one by one).
 * The caller checks that each op's own path is the persistent kernel (the
 * same bits). fuse_rope: rope_kv may be fused into the qkv product.
 * ask__cu_chain_init: shared-memory limits, blocks an SM, the barrier
 * (once, after ask__cu_gemv_init, before any capture). ask__cu_chain_coop:
 * launched as cooperative kernels (backend.c's probe). */
extern int ask__cu_chain_coop;
cudaError_t ask__cu_chain_init(void);
int ask__cu_gemv_chain(cudaStream_t s, const ask_chain_op_t *ops, int n, int fuse_rope);
/* gemv.cu: out (T,N) = x (T,K) f32 · w (N,K) bf16ᵀ + bias, T <= 16. */
void ask__cu_gemv_bf16(cudaStream_t s, float *out, const float *x, const uint16_t *w,
                       const float *bias, int T, int K, int N);
/* gemv.cu, the decode fusions for T <= 16 (kernels.h's norm_matmul_bf16 and
 * glu_matmul_bf16 without their scratch): out (T,N) = rmsnorm(x + r) ·
 * wᵀ + bias, with xo = x + r written when r is not NULL (xo must not alias
 * x or r); and out (T,N) = glu_rows(gu, act) · wᵀ + bias for gu (T,2F), w
 * (N,F). More than 16 rows, or K (F) < 1, are refused (cudaErrorInvalidValue). */
void ask__cu_gemv_norm_bf16(cudaStream_t s, float *out, float *xo, const float *x,
                            const float *r, const float *nw, float eps, float w_offset,
                            const uint16_t *w, const float *bias, int T, int K, int N);
void ask__cu_gemv_glu_bf16(cudaStream_t s, float *out, const float *gu, int act,
                           const uint16_t *w, const float *bias, int T, int F, int N);

/* graph.c: CUDA graphs on stream s (the graph_* ops of kernels.h). Each
 * records its failure (ask__cu_check) and returns 1 on failure, 0 if not;
 * a failed capture leaves s out of capture mode. */
int ask__graph_capture(cudaStream_t s, void **graph, void (*fn)(void *ud), void *ud);
int ask__graph_launch(cudaStream_t s, void *graph);
void ask__graph_free(cudaStream_t s, void *graph);

/* sample.cu. ask__cu_sample_init allocates argmax_rows' parts and counters
 * (zeroed; 1 on failure, recorded). ask__cu_argmax_parts forces the parts a
 * row (tests; -1: about 256 blocks a launch, 1: one block a row). */
extern int ask__cu_argmax_parts;
int ask__cu_sample_init(cudaStream_t s);
/* sample_rows.cu: its rows' state (called by ask__cu_sample_init). */
int ask__cu_sample_rows_init(cudaStream_t s);
void ask__cu_argmax_rows(cudaStream_t s, int32_t *ids, const float *x, int T, int n);
void ask__cu_sample_rows(cudaStream_t s, int32_t *ids, float *probs, const float *x,
                         const float *temperature, const int32_t *top_k, const float *top_p,
                         uint64_t *rng, int T, int n);

#ifdef __cplusplus
}
#endif

#endif /* ASK_CUDA_INT_H */

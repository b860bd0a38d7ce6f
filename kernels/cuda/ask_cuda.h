/* ask_cuda.h — the CUDA backend's own knobs, beside the ops table that
 * kernels.h declares (ask_cuda_ops). Included by tests and benchmarks that
 * need to steer or inspect the backend; the engine needs only kernels.h.
 * Everything here exists only in a build with AS_HAVE_CUDA.
 */
#ifndef ASK_CUDA_H
#define ASK_CUDA_H

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Why ask_cuda_ops() returned NULL ("cudaGetDeviceCount: no CUDA-capable
 * device is detected"), or "" when it did not. Initialises like it. */
const char *ask_cuda_unavailable(void);

/* matmul_bf16 uses the matrix-vector kernel for T <= rows (0: cuBLASLt
 * always; at most 16) and N below max_n (wider matrices, lm_head, go to
 * cuBLASLt, which reads them faster). Defaults 1 and 65536, or
 * ASK_CUDA_GEMV_ROWS and ASK_CUDA_GEMV_MAX_N from the environment, as
 * build/bench_gemv (tests/gpu/bench_gemv.c) measured on an H200. Odd
 * shapes that cuBLASLt cannot take use the kernel up to 16 rows whatever
 * these say. Each returns the previous value. */
int ask_cuda_set_gemv_rows(int rows);
int ask_cuda_set_gemv_max_n(int n);
/* The same for the matrix's size: the kernel only below `bytes` of
 * weights (default: any size; ASK_CUDA_GEMV_MAX_MB in MiB), to try
 * cuBLASLt on the large decode products (tests/gpu/sweep.sh). */
size_t ask_cuda_set_gemv_max_bytes(size_t bytes);

/* One-row products (the plain and the fused ones) on gemv.cu's persistent
 * kernel: at most `blocks` blocks of 8 warps an SM (1 or 2), each staging
 * x once and streaming many rows; 0 turns it off (the kernels of a block
 * per few rows). Default 2 (tests/gpu/sweep.sh on an H200: Llama-3.2-1B
 * 961 -> 1,036 tok/s at batch 1, gemma-2b 533 -> 576; 1 block an SM is
 * slower than the old kernels), or ASK_CUDA_GEMV_PW. Returns the previous
 * value. */
int ask_cuda_set_gemv_pw(int blocks);
/* The persistent kernel's first weight step loaded into registers before
 * the programmatic-launch wait (1) rather than only sent to L2 (0, the
 * default, or ASK_CUDA_PW_EARLY); 2: only in the product launched right
 * after attention_paged (the o projection), whose small grid leaves room
 * on every SM for a block of the product while it runs. 1 measured 3-6%
 * slower at 2 blocks an SM on an H200 (the product before holds the
 * register file until its blocks leave), 10-15% slower at 1 block an SM
 * on an H100; 2 measured 1-2% slower on an H100 (ninth session). Returns
 * the previous value. */
int ask_cuda_set_pw_early(int on);
/* Warps a block of the fused MLP kernel (norm_matmul_mlp, gemv_mlp.cu): 8
 * (the default: two blocks an SM) or 16 (one block an SM: half the blocks,
 * so half the atomic adds of the block sums). ASK_CUDA_MLP_WARPS at start.
 * Read when the engine opens a model and at each launch. Returns the
 * previous value. */
int ask_cuda_set_mlp_warps(int warps);

/* The decode fusions run their fused kernels for T <= rows where
 * matmul_bf16 would use the matrix-vector kernel, the separate ops
 * otherwise (0: never fused; at most 16): norm_matmul_bf16 always so,
 * glu_matmul_bf16 only when fuse_glu is on (its kernel recomputes the
 * activation in every block: 2x slower than glu_rows + the matrix-vector
 * kernel on an H200). Defaults 1 row and glu off, or ASK_CUDA_FUSE_ROWS
 * and ASK_CUDA_FUSE_GLU=1 from the environment. Each returns the previous
 * value. */
int ask_cuda_set_fuse_rows(int rows);
int ask_cuda_set_fuse_glu(int on);
/* norm_matmul_rope_kv at one row: rope_kv done by the persistent kernel's
 * warps as they finish the qkv rows (no rope_kv launch) when on. Default
 * on (an H200 at batch 1: Llama-3.2-1B 1,061 -> 1,088 tok/s, gemma-2b
 * unchanged), ASK_CUDA_FUSE_ROPE=0 turns it off. Returns the previous
 * value. */
int ask_cuda_set_fuse_rope(int on);
/* norm_matmul_glu at one row: the gated activation done by the persistent
 * kernel's warps as they finish a gate row and its up row (no glu_rows
 * launch; the down product then reads g). Default on (an H200 at batch 1,
 * with the pipeline: Llama-3.2-1B +1.5%, gemma-2b +1.1%), or
 * ASK_CUDA_FUSE_GATE=0 to turn it off. Returns the previous value. */
int ask_cuda_set_fuse_gate(int on);

/* gemv_chain (kernels.h) as one launch of the persistent kernel with a
 * grid barrier between the products (kernels/cuda/gemv_chain.cu), where a
 * probe found the chained bits equal to the separate ones (run at the
 * first request: ASK_CUDA_CHAIN=1 at start-up, or ask_cuda_set_chain(1),
 * never inside a capture); otherwise gemv_chain returns 0 and the engine
 * launches each product. Default off: on an H200 a chained layer is
 * 2.4-3 µs slower than its launches and decode at batch 1 7-9% slower
 * (sixth session). ask_cuda_set_chain returns the previous value;
 * ask_cuda_chain_state says "on", "off", or why the probe failed. */
int ask_cuda_set_chain(int on);
const char *ask_cuda_chain_state(void);

/* attention_paged cuts a row's keys into the caller's nsplit parts of at
 * least `keys` keys each (>= 1), so that a short row fills fewer parts
 * (kernels/cuda/paged.cu). Default 64, or ASK_CUDA_SPLIT_MIN. Returns the
 * previous value. */
int ask_cuda_set_split_min(int keys);
/* Parts of at least `kb` KB of keys and values (4 D bytes a key) instead,
 * whatever the head dim D: 64 gives Llama-3.2-1B's D 64 parts of 256 keys
 * and gemma-2b's D 256 parts of 64. 0 (the default, or ASK_CUDA_SPLIT_KB
 * unset): ask_cuda_set_split_min's keys. Returns the previous value. */
int ask_cuda_set_split_kb(int kb);

/* attention_paged takes its decode kernel (kernels/cuda/paged.cu: a single
 * barrier, each warp streaming its keys into registers) for up to `rows`
 * rows when the shape allows; 0 never; -1 (the default, or
 * ASK_CUDA_ATTN_DECODE from the environment) automatic: up to 16 rows
 * where the cache is read before the wait (ask_cuda_set_attn_early, on by
 * default) or a layer has at most 2 kv heads, never otherwise (without the
 * early reads, an H200 at batch 1: gemma-2b's one kv head +1.6%,
 * Llama-3.2-1B's eight -1.7%; with them, an H100: Llama-3.2-1B +0.8%).
 * Returns the previous value. */
int ask_cuda_set_attn_decode(int rows);
/* attention_paged's decode and grouped kernels read the page table and
 * their first batch (tile) of keys and values before the programmatic-launch
 * wait, all but a row's last T keys (T: the launch's rows), so that they
 * load while the kernel before (the qkv product) finishes; q and those last
 * keys after it (1: the default since the ninth session, or
 * ASK_CUDA_ATTN_EARLY unset or not 0; but 0 on the emulated backend, which
 * guards all its device memory before the wait), or everything after it
 * (0). The per-head kernel (no grouped-query heads) does not. The caller
 * promises that nothing launched since the stream's last copy or other
 * full dependency writes what is read before the wait: pos, seq, the page
 * table and a row's keys before its last T (the engine: earlier steps
 * wrote them, and each step starts with its inputs' copy); a caller that
 * cannot promise it turns this off first. The same bits either way. An
 * H100 at batch 1: +0.8% (Llama-3.2-1B), +2.6% (gemma-2b). Returns the
 * previous value. */
int ask_cuda_set_attn_early(int on);

/* argmax_rows (greedy sampling) cuts each row into `parts` parts of one
 * block each, merged by the last block to finish (kernels/cuda/sample.cu);
 * 1: one block a row (the only kernel until the fourth session); 0 or
 * less: automatic, parts of 2048 values and about 256 blocks a launch (the
 * default), or ASK_CUDA_ARGMAX_PARTS. Returns the previous value (-1:
 * automatic). */
int ask_cuda_set_argmax_parts(int parts);

/* cuBLASLt plans (descriptors, layouts and the chosen algorithm) cached so
 * far, one per (dtype, T, K, N, bias, alignment). */
int ask_cuda_plan_count(void);

/* Programmatic dependent launch (kernels/cuda/common.cuh): on = 1 turns it
 * on where the start-up probe passed (a 9.0+ device, ASK_NO_PDL unset),
 * 0 off; kernels launched afterwards (and graphs captured afterwards)
 * follow. Returns the previous state. ask_cuda_pdl_state: "on", or why
 * it is off. */
int ask_cuda_set_pdl(int on);
const char *ask_cuda_pdl_state(void);

/* Device name and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)". */
const char *ask_cuda_device_name(void);

#ifdef __cplusplus
}
#endif

#endif /* ASK_CUDA_H */

/* gemv_pw.cu — the persistent one-row matrix-vector kernel (decode at
 * batch 1): out = x · wᵀ + bias for one x row, w (N,K) bf16, x made by a
 * gemv.cuh policy (copy for matmul_bf16, norm for norm_matmul_bf16, glu for
 * glu_matmul_bf16), the qkv product with rope_kv fused
 * (norm_matmul_rope_kv) and the gate/up product with the gated activation
 * fused (norm_matmul_glu). gemv.cu's entry points call these first and fall
 * back to their own kernels when the shape is not taken.
 */
#include "gemv_pw.cuh"

int ask__cu_sms = 0;   /* cuda_int.h: SMs of the device (backend.c) */
int ask__cu_gemv_pw = 2; /* cuda_int.h: blocks an SM of the persistent kernels; 0: not used */
int ask__cu_pw_early = 0; /* cuda_int.h: the first weight step loaded before the PDL wait */
int ask__cu_after_attn = 0; /* cuda_int.h: the stream's last launch was the attention's */
int ask__cu_pw_umax = 8;  /* cuda_int.h: U (pieces a lane a step) at most: 8, 4, 2 or 1 */

/* U <= 4 keeps to 80 registers (3 blocks of 8 warps an SM fit): with 2
 * blocks of this kernel an SM, one block of the next fits beside them. */
template <int U, class XP, class RW>
static __global__ void __launch_bounds__(32 * ASK__PW_WARPS, U <= 4 ? 3 : 2)
    ask__k_gemv_pw(RW rw, const XP xp, const uint16_t *__restrict__ w,
                   const float *__restrict__ bias, int K, int early) {
  extern __shared__ float4 ask__gemv_sh[];
  ask__pdl_start();
  const int lane = threadIdx.x & 31;
  int n = rw.begin(blockIdx.x * ASK__PW_WARPS + (threadIdx.x >> 5), gridDim.x * ASK__PW_WARPS);
  /* this lane's first piece of the first step */
  const uint4 *cur = reinterpret_cast<const uint4 *>(w) + lane + (size_t)max(n, 0) * (K >> 3);
  /* the first step on its way to L2 before the PDL wait, into registers
   * while x is staged. Loading it into registers before the wait (allowed:
   * no kernel writes weights) measured 5% slower on an H200 at batch 1 with
   * 2 blocks an SM, where the kernel before holds every register until its
   * blocks leave; `early` (ASK_CUDA_PW_EARLY) does it. With 1 block an SM,
   * where the next kernel's block fits beside the running one, it measured
   * 10-15% slower on an H100 (ninth session): one block holds too few
   * bytes in flight. */
  uint4 p[U];
  if (early) {
#pragma unroll
    for (int u = 0; u < U; u++)
      p[u] = ask__ld_w(cur + 32 * u);
    ask__pdl_wait();
  } else {
#pragma unroll
    for (int u = 0; u < U; u++)
      ask__pf_l2(cur + 32 * u);
    ask__pdl_wait();
#pragma unroll
    for (int u = 0; u < U; u++)
      p[u] = ask__ld_w(cur + 32 * u);
  }
  ask__pw_walk<U>(rw, xp, w, bias, K, n, p, ask__gemv_sh);
}

/* cuda_int.h. After the attention (ASK_CUDA_PW_EARLY=2) the product is
 * the o projection, and the attention's grid (at one row ~128 blocks with
 * work in a few dozen) leaves a block of it room on every SM while the
 * attention runs: its first step, at K 2048 the whole row, can load then.
 * After a persistent product, whose blocks fill the register file, it
 * cannot, and the early loads only slow that product's tail (all
 * products early: 3-6% slower on an H200). */
int ask__cu_pw_early_now(void) {
  return ask__cu_pw_early == 1 || (ask__cu_pw_early == 2 && ask__cu_after_attn);
}

/* The persistent kernel over rw's units (the caller checked ask__pw_takes):
 * units a warp so that the grid fits ask__cu_gemv_pw blocks an SM, then as
 * few warps as give every warp that many. */
template <class XP, class RW>
static void ask__gemv_pw_launch(cudaStream_t s, const RW &rw, int units, const XP &xp,
                                const uint16_t *w, const float *bias, int K) {
  const int U = ask__pw_unroll(K);
  const size_t smem = ask__pw_smem(K);
  long most = (long)ask__cu_sms * ask__cu_gemv_pw * ASK__PW_WARPS;
  long rpw = ((long)units + most - 1) / most, warps = ((long)units + rpw - 1) / rpw;
  unsigned grid = (unsigned)((warps + ASK__PW_WARPS - 1) / ASK__PW_WARPS);
  dim3 b(32 * ASK__PW_WARPS);
  const int e = ask__cu_pw_early_now();
  ask__cu_after_attn = 0; /* this launch is the stream's last now */
#define ASK__PW_GO(UU) \
  ASK__LAUNCH(grid, b, smem, s, ask__k_gemv_pw<UU, XP, RW>)(rw, xp, w, bias, K, e)
  switch (U) {
  case 8:
    ASK__PW_GO(8);
    break;
  case 4:
    ASK__PW_GO(4);
    break;
  case 2:
    ASK__PW_GO(2);
    break;
  default:
    ASK__PW_GO(1);
  }
#undef ASK__PW_GO
}

/* The persistent kernel for a plain one-row product when it takes the
 * shape: returns 1 when launched. */
template <class XP>
static int ask__gemv_pw(cudaStream_t s, float *out, const XP &xp, const uint16_t *w,
                        const float *bias, int T, int K, int N) {
  if (!ask__pw_takes(T, K, w))
    return 0;
  ask__rw_rows rw = {out, N, 0, 0};
  ask__gemv_pw_launch(s, rw, N, xp, w, bias, K);
  return 1;
}

template <class XP, class RW> static cudaError_t ask__pw_attr(void) {
  void (*const k[4])(RW, const XP, const uint16_t *, const float *, int, int) = {
      ask__k_gemv_pw<8, XP, RW>, ask__k_gemv_pw<4, XP, RW>, ask__k_gemv_pw<2, XP, RW>,
      ask__k_gemv_pw<1, XP, RW>};
  cudaError_t e = cudaSuccess;
  for (int i = 0; i < 4 && e == cudaSuccess; i++)
    e = cudaFuncSetAttribute(k[i], cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)ask__pw_smem(ASK__PW_STAGE));
  return e;
}

/* cuda_int.h: the persistent kernels' shared-memory limit raised (x
 * staged; for the fused MLP's kernels, to what the device lets a block opt
 * in to; once, before any capture), ask__cu_sms set. */
extern "C" cudaError_t ask__cu_gemv_init(int sms, size_t optin) {
  const size_t most = optin > ask__pw_smem(ASK__PW_STAGE) ? optin : ask__pw_smem(ASK__PW_STAGE);
  cudaError_t e = ask__pw_attr<ask__xp_copy, ask__rw_rows>();
  if (e == cudaSuccess)
    e = ask__pw_attr<ask__xp_norm, ask__rw_rows>();
  if (e == cudaSuccess)
    e = ask__pw_attr<ask__xp_glu, ask__rw_rows>();
  if (e == cudaSuccess)
    e = ask__pw_attr<ask__xp_norm, ask__rw_rope>();
  if (e == cudaSuccess)
    e = ask__pw_attr<ask__xp_norm, ask__rw_glu>();
  if (e == cudaSuccess)
    e = ask__cu_mlp_init(most);
  ask__cu_sms = e == cudaSuccess ? sms : 0;
  return e;
}

/* cuda_int.h: norm_matmul_bf16 of one row into the qkv row out ((nh + 2 nkv)
 * D outputs) with rope_kv fused (ask__rw_rope), when the persistent kernel
 * takes the shape and D is even: returns 1 when launched, 0 when the
 * caller must run the two ops. */
extern "C" int ask__cu_gemv_norm_rope_bf16(cudaStream_t s, float *out, float *xo, const float *x,
                                           const float *r, const float *nw, float eps,
                                           float w_offset, const uint16_t *w, const float *bias,
                                           int T, int K, uint16_t *kc, uint16_t *vc,
                                           const int32_t *pos, const int32_t *slot,
                                           const float *inv_freq, int nh, int nkv, int D) {
  if (ask__cu_failed() || !ask__pw_takes(T, K, w) || D <= 0 || D % 2 != 0 || nh <= 0 ||
      nkv <= 0 || kc == NULL || vc == NULL)
    return 0;
  ask__xp_norm xp = {x, r, nw, r != NULL ? xo : NULL, eps, w_offset, 0};
  ask__rw_rope rw = {out, kc, vc, pos, slot, inv_freq, nh, nkv, D, 0, 0, 0, 0.0f};
  ask__gemv_pw_launch(s, rw, rw.units(), xp, w, bias, K);
  ASK__LAUNCHED("gemv_norm_rope_bf16");
  return 1;
}

/* cuda_int.h: gemv_norm_bf16 of one row into the gate/up rows (2F outputs)
 * with glu_rows fused (ask__rw_glu): g (F) = act(gate) * up. Returns 1 when
 * launched, 0 when it does not take the shape (the caller runs the two). */
extern "C" int ask__cu_gemv_norm_glu_bf16(cudaStream_t s, float *g, float *xo, const float *x,
                                          const float *r, const float *nw, float eps,
                                          float w_offset, const uint16_t *w, const float *bias,
                                          int T, int K, int F, int act) {
  if (ask__cu_failed() || !ask__pw_takes(T, K, w) || F <= 0)
    return 0;
  ask__xp_norm xp = {x, r, nw, r != NULL ? xo : NULL, eps, w_offset, 0};
  ask__rw_glu rw = {g, F, act, 0, 0, 0, 0.0f};
  ask__gemv_pw_launch(s, rw, F, xp, w, bias, K);
  ASK__LAUNCHED("gemv_norm_glu_bf16");
  return 1;
}

/* cuda_int.h: the plain and fused one-row products on the persistent kernel
 * when it takes the shape (1: launched; 0: the caller's own kernels). */
extern "C" int ask__cu_gemv_pw_copy(cudaStream_t s, float *out, const float *x,
                                    const uint16_t *w, const float *bias, int T, int K, int N) {
  return ask__gemv_pw(s, out, ask__xp_copy{x, 0}, w, bias, T, K, N);
}

extern "C" int ask__cu_gemv_pw_norm(cudaStream_t s, float *out, float *xo, const float *x,
                                    const float *r, const float *nw, float eps, float w_offset,
                                    const uint16_t *w, const float *bias, int T, int K, int N) {
  ask__xp_norm xp = {x, r, nw, r != NULL ? xo : NULL, eps, w_offset, 0};
  return ask__gemv_pw(s, out, xp, w, bias, T, K, N);
}

extern "C" int ask__cu_gemv_pw_glu(cudaStream_t s, float *out, const float *gu, int act,
                                   const uint16_t *w, const float *bias, int T, int F, int N) {
  return ask__gemv_pw(s, out, ask__xp_glu{gu, act}, w, bias, T, F, N);
}

/* gemv_mlp.cu — a layer's gated MLP at one row in one launch (kernels.h's
 * norm_matmul_mlp; the engine uses it with ASK_FUSE_MLP=1): the gate/up
 * product with the norm and the activation fused, and the down product,
 * with no kernel boundary between them.
 *
 * The down product is split along F. A warp of the persistent grid takes
 * units i, i + G, ... (G warps in the grid); a unit is three rows of K:
 * gate row i and up row F + i of gu, whose dot products with the staged x
 * give g_i exactly as the fused gate/up kernel makes it (gemv_pw.cuh's
 * ask__rw_glu), and row i of down_t (down_proj's weight transposed), which
 * the warp scales by g_i and adds into its own accumulator row in shared
 * memory. The walk is ask__pw_walk's: the next step's weights in flight
 * while the current one is used, across row and unit ends. A block then
 * sums its warps' rows and adds them to acc with atomic adds, so the down
 * product's sums are in no fixed order: the bits may change from run to
 * run (every other kernel here gives the same bits every time).
 */
#include "gemv_pw.cuh"

int ask__cu_mlp_warps = 8; /* cuda_int.h: warps a block (8: 2 blocks an SM, 16: 1) */

/* Shared memory of a block of W warps: the norm's partial sums (16 doubles
 * a warp), staged x (K floats), then W accumulator rows of K floats, in the
 * staged x's order (ask__slot<true>), so that a lane adds its pieces into
 * the slots it reads x from. */
static __host__ __device__ size_t ask__mlp_smem(int K, int W) {
  return (size_t)W * 16 * sizeof(double) + (size_t)K * sizeof(float) +
         (size_t)W * K * sizeof(float);
}

static size_t ask__mlp_optin; /* ask__cu_mlp_init: the limit set on the kernels */

/* acc[0..3] += v: one vector atomic on sm_90, else four. */
static __device__ __forceinline__ void ask__red4(float *p, float4 v) {
#if !defined(ASK_CUDAEMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float4 *>(p), v);
#else
  atomicAdd(p, v.x);
  atomicAdd(p + 1, v.y);
  atomicAdd(p + 2, v.z);
  atomicAdd(p + 3, v.w);
#endif
}

/* a += g * the 8 bf16 of p (a: the piece's first 4 slots, b: its last 4). */
static __device__ __forceinline__ void ask__axpy8(float4 *a, float4 *b, uint4 p, float g) {
  float4 u = *a, v = *b;
  u.x = fmaf(__uint_as_float(p.x << 16), g, u.x);
  u.y = fmaf(__uint_as_float(p.x & 0xffff0000u), g, u.y);
  u.z = fmaf(__uint_as_float(p.y << 16), g, u.z);
  u.w = fmaf(__uint_as_float(p.y & 0xffff0000u), g, u.w);
  v.x = fmaf(__uint_as_float(p.z << 16), g, v.x);
  v.y = fmaf(__uint_as_float(p.z & 0xffff0000u), g, v.y);
  v.z = fmaf(__uint_as_float(p.w << 16), g, v.z);
  v.w = fmaf(__uint_as_float(p.w & 0xffff0000u), g, v.w);
  *a = u;
  *b = v;
}

template <int U, int W>
static __global__ void __launch_bounds__(32 * W, 16 / W)
    ask__k_gemv_mlp(const ask__xp_norm xp, const uint16_t *__restrict__ gu,
                    const float *__restrict__ gu_b, const uint16_t *__restrict__ dt,
                    const float *__restrict__ down_b, float *__restrict__ acc,
                    float *__restrict__ clear, int K, int F, int act) {
  extern __shared__ float4 ask__gemv_sh[];
  ask__pdl_start();
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, K4 = K >> 2;
  const int G = gridDim.x * W, S = (K >> 3) / (32 * U);
  const size_t rs = (size_t)(K >> 3); /* uint4 a row */
  float4 *accs = ask__gemv_sh + W * 8 + K4; /* the block's rows, after part and x */
  float4 *accw = accs + (size_t)wid * K4; /* this warp's */
  const uint4 *wg = reinterpret_cast<const uint4 *>(gu) + lane,
              *wd = reinterpret_cast<const uint4 *>(dt) + lane;
  /* unit i's row of phase ph (0 gate, 1 up, 2 down_t), this lane's first piece */
  auto row = [&](int i, int ph) {
    return ph == 2 ? wd + (size_t)i * rs : wg + (size_t)(ph == 1 ? F + i : i) * rs;
  };
  int i = blockIdx.x * W + wid, ph = 0;
  const uint4 *cur = row(i < F ? i : 0, 0);
  uint4 p[U];
#pragma unroll
  for (int u = 0; u < U; u++)
    ask__pf_l2(cur + 32 * u);
  for (int j = threadIdx.x; j < W * K4; j += blockDim.x)
    accs[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  ask__pdl_wait();
#pragma unroll
  for (int u = 0; u < U; u++)
    p[u] = ask__ld_w(cur + 32 * u);
  /* the buffer the op before read: every kernel before this one is done */
  if (clear != NULL)
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < K; j += gridDim.x * blockDim.x)
      clear[j] = 0.0f;
  double *part = reinterpret_cast<double *>(ask__gemv_sh);
  const float4 *sh = ask__gemv_sh + W * 8;
  ask__stage<true>(xp, reinterpret_cast<float *>(ask__gemv_sh + W * 8), part, 1, K, 0, K, K);
  __syncthreads();
  if (i < F) {
    const float sc = xp.scale(part, 0, K);
    float a0 = 0.0f, a1 = 0.0f, gate = 0.0f, g = 0.0f;
    int s = 0;
    for (;;) {
      /* the next step: this row's next, the unit's next row, or the next unit's gate row */
      const bool last = s == S - 1;
      const int ph1 = last ? (ph == 2 ? 0 : ph + 1) : ph, i1 = last && ph == 2 ? i + G : i;
      const bool more = i1 < F;
      const uint4 *nxt = last ? row(more ? i1 : i, ph1) : cur + 32 * U;
      uint4 q[U];
      if (more) {
#pragma unroll
        for (int u = 0; u < U; u++)
          q[u] = ask__ld_w(nxt + 32 * u);
      }
      if (ph < 2) { /* gate or up: the dot product with x, as ask__pw_walk */
        ask__pw_dot_step<U>(a0, a1, p, sh + 64 * U * s + lane);
        if (last) {
          const float v =
              ask__warp_sum(a0 + a1) * sc + (gu_b != NULL ? gu_b[ph == 1 ? F + i : i] : 0.0f);
          if (ph == 0)
            gate = v;
          else
            g = ask__act(gate, act) * v; /* ask__rw_glu's g: the same bits */
          a0 = a1 = 0.0f;
        }
      } else { /* down_t's row i times g into this warp's accumulators */
        float4 *ac = accw + 64 * U * s + lane;
#pragma unroll
        for (int u = 0; u < U; u++)
          ask__axpy8(ac + 64 * u, ac + 64 * u + 32, p[u], g);
      }
      if (!more)
        break;
#pragma unroll
      for (int u = 0; u < U; u++)
        p[u] = q[u];
      s = last ? 0 : s + 1;
      i = i1;
      ph = ph1;
      cur = nxt;
    }
  }
  __syncthreads();
  /* columns k .. k + 3 (k = 4 q) are slot j (ask__slot<true>): the warps'
   * sums, block 0 adding the bias, into acc; a warp's atomics cover 512
   * contiguous bytes */
  for (int q = threadIdx.x; q < K4; q += blockDim.x) {
    const int c = q >> 1, k = 4 * q, j = ((c >> 5) << 6) + ((q & 1) << 5) + (c & 31);
    float4 v = accs[j];
#pragma unroll 4
    for (int w = 1; w < W; w++) {
      const float4 a = accs[(size_t)w * K4 + j];
      v.x += a.x, v.y += a.y, v.z += a.z, v.w += a.w;
    }
    if (blockIdx.x == 0 && down_b != NULL)
      v.x += down_b[k], v.y += down_b[k + 1], v.z += down_b[k + 2], v.w += down_b[k + 3];
    ask__red4(acc + k, v);
  }
}

/* The kernels for U (8, 4, 2, 1) and W (8, 16). */
typedef void (*ask__mlp_fn)(const ask__xp_norm, const uint16_t *, const float *, const uint16_t *,
                            const float *, float *, float *, int, int, int);
template <int W> static ask__mlp_fn ask__mlp_kernel(int U) {
  return U == 8 ? ask__k_gemv_mlp<8, W>
       : U == 4 ? ask__k_gemv_mlp<4, W>
       : U == 2 ? ask__k_gemv_mlp<2, W>
                : ask__k_gemv_mlp<1, W>;
}
static ask__mlp_fn ask__mlp_pick(int U, int W) {
  return W == 16 ? ask__mlp_kernel<16>(U) : ask__mlp_kernel<8>(U);
}

/* cuda_int.h: the kernels' shared-memory limit and the whole carveout as
 * shared memory (so that the blocks an SM the launch counts are what the
 * driver gives, whatever ran before); once, before any capture. */
extern "C" cudaError_t ask__cu_mlp_init(size_t optin) {
  static const int Us[4] = {8, 4, 2, 1}, Ws[2] = {8, 16};
  cudaError_t e = cudaSuccess;
  for (int i = 0; i < 8 && e == cudaSuccess; i++) {
    ask__mlp_fn k = ask__mlp_pick(Us[i % 4], Ws[i / 4]);
    e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)optin);
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout,
                               (int)cudaSharedmemCarveoutMaxShared);
  }
  ask__mlp_optin = e == cudaSuccess ? optin : 0;
  return e;
}

/* cuda_int.h: whether the fused MLP takes one row of K columns and F units:
 * K as the persistent kernel takes it (a multiple of 256, at most
 * ASK__PW_STAGE), the weights 16-byte aligned, a block's shared memory
 * within the limit. Not the persistent kernel's on/off setting
 * (ask__cu_gemv_pw): the engine asks once, when it loads the weights. */
extern "C" int ask__cu_mlp_takes(int T, int K, int F, const uint16_t *gu, const uint16_t *dt) {
  return T == 1 && F > 0 && ask__cu_sms > 0 && K > 0 && K % 256 == 0 && K <= ASK__PW_STAGE &&
         (((uintptr_t)gu | (uintptr_t)dt) & 15) == 0 &&
         ask__mlp_smem(K, ask__cu_mlp_warps) <= ask__mlp_optin;
}

/* cuda_int.h: norm_matmul_mlp at one row (the caller checked
 * ask__cu_mlp_takes and that acc is 16-byte aligned). As many blocks an SM
 * as the device runs at once (the occupancy query: registers and shared
 * memory), so one wave; units a warp so that every warp has as many. */
extern "C" void ask__cu_gemv_mlp(cudaStream_t s, float *acc, float *clear, float *xo,
                                 const float *x, const float *r, const float *nw, float eps,
                                 float w_offset, const uint16_t *gu, const float *gu_b,
                                 const uint16_t *dt, const float *down_b, int K, int F,
                                 int act) {
  const int W = ask__cu_mlp_warps == 16 ? 16 : 8, U = ask__pw_unroll(K);
  const size_t smem = ask__mlp_smem(K, W);
  const ask__mlp_fn k = ask__mlp_pick(U, W);
  int bps = 0;
  if (ask__cu_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&bps, k, 32 * W, smem),
                    "occupancy of gemv_mlp"))
    return;
  bps = bps < 1 ? 1 : bps > 16 / W ? 16 / W : bps; /* the registers' bound on a GPU */
  const long most = (long)ask__cu_sms * bps * W;
  const long upw = ((long)F + most - 1) / most, warps = ((long)F + upw - 1) / upw;
  const unsigned grid = (unsigned)((warps + W - 1) / W);
  const dim3 b(32 * W);
  ask__xp_norm xp = {x, r, nw, r != NULL ? xo : NULL, eps, w_offset, 0};
#define ASK__MLP_GO(UU, WW)                                                                  \
  ASK__LAUNCH(grid, b, smem, s, ask__k_gemv_mlp<UU, WW>)(xp, gu, gu_b, dt, down_b, acc, clear, \
                                                        K, F, act)
  switch (U * 100 + W) {
  case 808: ASK__MLP_GO(8, 8); break;
  case 408: ASK__MLP_GO(4, 8); break;
  case 208: ASK__MLP_GO(2, 8); break;
  case 108: ASK__MLP_GO(1, 8); break;
  case 816: ASK__MLP_GO(8, 16); break;
  case 416: ASK__MLP_GO(4, 16); break;
  case 216: ASK__MLP_GO(2, 16); break;
  default: ASK__MLP_GO(1, 16);
  }
#undef ASK__MLP_GO
  ASK__LAUNCHED("gemv_mlp");
}

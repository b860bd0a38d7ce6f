/* gemv.cuh — what the matrix-vector kernels of gemv.cu (a block per few
 * rows, 1..16 x rows) and gemv_pw.cu (persistent, one x row) share:
 * the weight loads, the 8-wide dot product, where a loop reads x, and the
 * x policies with the staging that makes x in shared memory from a fused
 * op's inputs (copy, norm, glu). Internal to kernels/cuda.
 */
#ifndef ASK_CUDA_GEMV_CUH
#define ASK_CUDA_GEMV_CUH

#include "common.cuh"

/* 16 bytes of w, read once: no L1 allocation, 256-byte L2 prefetch. */
static __device__ __forceinline__ uint4 ask__ld_w(const uint4 *p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

/* The line holding p on its way to L2 (nothing waits for it). */
static __device__ __forceinline__ void ask__pf_l2(const void *p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* An activation: through the read-only path, or, with coh, through L2
 * only (__ldcg: written by other blocks of the same launch, which the
 * read-only path may not see). */
template <class T> static __device__ __forceinline__ T ask__ldx(const T *p, int coh) {
  return coh ? __ldcg(p) : __ldg(p);
}

/* acc + the dot product of 8 bf16 (p) with 8 floats (a, b). */
static __device__ __forceinline__ float ask__dot8(float acc, uint4 p, float4 a, float4 b) {
  acc = fmaf(__uint_as_float(p.x << 16), a.x, acc);
  acc = fmaf(__uint_as_float(p.x & 0xffff0000u), a.y, acc);
  acc = fmaf(__uint_as_float(p.y << 16), a.z, acc);
  acc = fmaf(__uint_as_float(p.y & 0xffff0000u), a.w, acc);
  acc = fmaf(__uint_as_float(p.z << 16), b.x, acc);
  acc = fmaf(__uint_as_float(p.z & 0xffff0000u), b.y, acc);
  acc = fmaf(__uint_as_float(p.w << 16), b.z, acc);
  acc = fmaf(__uint_as_float(p.w & 0xffff0000u), b.w, acc);
  return acc;
}

/* ---- where the loops read x ----------------------------------------------
 * Vector loop: the 8 floats of piece c of x row t are a = ld(p + 2c + xo[t])
 * and b = ld(p + 2c + xo[t] + B). */
struct ask__xv_global { /* x in memory, rows of K floats: b follows a */
  const float4 *p;
  static constexpr int B = 1;
  __device__ __forceinline__ float4 ld(const float4 *q) const { return __ldg(q); }
};
struct ask__xv_staged { /* staged (ask__slot): b 32 float4 after a */
  const float4 *p;
  static constexpr int B = 32;
  __device__ __forceinline__ float4 ld(const float4 *q) const { return *q; }
};
/* Scalar loop: column c of x row t is ld(p + t * stride + c). */
struct ask__xs_global {
  const float *p;
  size_t stride;
  __device__ __forceinline__ float ld(const float *q) const { return __ldg(q); }
};
struct ask__xs_staged {
  const float *p;
  size_t stride;
  __device__ __forceinline__ float ld(const float *q) const { return *q; }
};

/* ---- x policies of the fused and persistent kernels --------------------------------------
 * load4(t, k, K) then make4(raw, t, k, K, ss) / get1: x[t][k..k+3] /
 * x[t][k] made from the inputs (rows of K columns), ss collecting what
 * row_done needs; load4 only reads (the staging issues kBatch of them
 * before it makes any, so their latencies overlap); the 4-wide pair only when
 * aligned() and K % 4 == 0. row_done(part, t, ss, first): the row's
 * statistics of this chunk into part (16 doubles per warp, the warp's own
 * slots: no race). kScaled: scale(part, t, K) is the factor of row t's dot
 * products (read after the last barrier). */

/* x = (xin + r) * (off + nw); xo = xin + r by block 0; inverse RMS of xin + r. */
struct ask__xp_norm {
  static constexpr bool kScaled = true;
  const float *x, *r, *nw;
  float *xo;
  float eps, off;
  int coh; /* x and r through L2 (__ldcg): written earlier in the same launch (gemv_chain.cu) */

  __device__ __forceinline__ bool aligned() const {
    return (((uintptr_t)x | (uintptr_t)r | (uintptr_t)nw | (uintptr_t)xo) & 15) == 0;
  }
  static constexpr int kBatch = 4;
  struct raw4 {
    float4 x, r, g;
  };
  __device__ __forceinline__ raw4 load4(int t, int k, int K) const {
    size_t i = (size_t)t * K + k;
    raw4 a;
    a.x = ask__ldx(reinterpret_cast<const float4 *>(x + i), coh);
    a.r = r != NULL ? ask__ldx(reinterpret_cast<const float4 *>(r + i), coh)
                    : make_float4(0, 0, 0, 0);
    a.g = __ldg(reinterpret_cast<const float4 *>(nw + k));
    return a;
  }
  __device__ __forceinline__ float4 make4(const raw4 &a, int t, int k, int K, double &ss) const {
    float4 v = a.x;
    if (r != NULL) {
      v.x += a.r.x, v.y += a.r.y, v.z += a.r.z, v.w += a.r.w;
      if (blockIdx.x == 0)
        *reinterpret_cast<float4 *>(xo + (size_t)t * K + k) = v;
    }
    ss += (double)v.x * v.x;
    ss += (double)v.y * v.y;
    ss += (double)v.z * v.z;
    ss += (double)v.w * v.w;
    const float4 g = a.g;
    return make_float4(v.x * (off + g.x), v.y * (off + g.y), v.z * (off + g.z),
                       v.w * (off + g.w));
  }
  __device__ __forceinline__ float get1(int t, int k, int K, double &ss) const {
    size_t i = (size_t)t * K + k;
    float v = ask__ldx(x + i, coh);
    if (r != NULL) {
      v += ask__ldx(r + i, coh);
      if (blockIdx.x == 0)
        xo[i] = v;
    }
    ss += (double)v * v;
    return v * (off + __ldg(nw + k));
  }
  __device__ __forceinline__ void row_done(double *part, int t, double ss, bool first) const {
    for (int o = 16; o > 0; o >>= 1)
      ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) {
      double *p = part + (threadIdx.x >> 5) * 16 + t;
      *p = first ? ss : *p + ss;
    }
  }
  /* As kernels/ref's rmsnorm: 1 / sqrt(mean of squares + eps), in double. */
  __device__ __forceinline__ float scale(const double *part, int t, int K) const {
    double ss = 0.0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++)
      ss += part[w * 16 + t];
    return (float)(1.0 / sqrt(ss / K + (double)eps));
  }
};

/* x = act(gu[t, k]) * gu[t, K + k]: gu rows of 2K. */
struct ask__xp_glu {
  static constexpr bool kScaled = false;
  const float *gu;
  int act;

  __device__ __forceinline__ bool aligned() const { return ((uintptr_t)gu & 15) == 0; }
  static constexpr int kBatch = 8;
  struct raw4 {
    float4 a, b;
  };
  __device__ __forceinline__ raw4 load4(int t, int k, int K) const {
    const float *g = gu + (size_t)t * 2 * K + k;
    return raw4{__ldg(reinterpret_cast<const float4 *>(g)),
                __ldg(reinterpret_cast<const float4 *>(g + K))};
  }
  __device__ __forceinline__ float4 make4(const raw4 &v, int, int, int, double &) const {
    const float4 a = v.a, b = v.b;
    return make_float4(ask__act(a.x, act) * b.x, ask__act(a.y, act) * b.y,
                       ask__act(a.z, act) * b.z, ask__act(a.w, act) * b.w);
  }
  __device__ __forceinline__ float get1(int t, int k, int K, double &) const {
    const float *g = gu + (size_t)t * 2 * K + k;
    return ask__act(__ldg(g), act) * __ldg(g + K);
  }
  __device__ __forceinline__ void row_done(double *, int, double, bool) const {}
  __device__ __forceinline__ float scale(const double *, int, int) const { return 1.0f; }
};

/* Where column k of a staged chunk row goes. PERM (vector kernels): piece
 * c = k / 8 of group c / 32 has its first 4 floats at float4 slot
 * 64 (c / 32) + c % 32 and its last 4 at 32 slots further, so a warp's
 * 16-byte loads of one step read 512 consecutive bytes (no bank conflict);
 * otherwise in order. */
template <bool PERM>
static __device__ __forceinline__ int ask__slot(int k) {
  if (!PERM)
    return k;
  int c = k >> 3;
  return ((((c >> 5) << 6) + (((k >> 2) & 1) << 5) + (c & 31)) << 2) + (k & 3);
}

/* Every thread of the block: columns [k0, k0 + n) of x rows 0..T-1 into sh
 * (rows of kc floats), then each row's statistics into part. 16-byte
 * pieces go in batches of XP::kBatch a thread, every load of a batch
 * issued before the first piece is made (one L2 round trip a batch, not
 * one a piece: a 64 KB glu row of 8192 columns is 16 pieces a thread). */
template <bool PERM, class XP>
static __device__ __forceinline__ void ask__stage(const XP &xp, float *sh, double *part, int T,
                                                  int K, int k0, int n, int kc) {
  bool v4 = (K & 3) == 0 && xp.aligned(); /* the same for every thread */
  for (int t = 0; t < T; t++) {
    float *row = sh + (size_t)t * kc;
    double ss = 0.0;
    if (v4) {
      constexpr int B = XP::kBatch;
      const int st = 4 * blockDim.x;
      for (int j = 4 * threadIdx.x; j < n; j += B * st) {
        typename XP::raw4 raw[B] = {};
#pragma unroll
        for (int b = 0; b < B; b++)
          if (j + b * st < n)
            raw[b] = xp.load4(t, k0 + j + b * st, K);
#pragma unroll
        for (int b = 0; b < B; b++)
          if (j + b * st < n)
            *reinterpret_cast<float4 *>(row + ask__slot<PERM>(j + b * st)) =
                xp.make4(raw[b], t, k0 + j + b * st, K, ss);
      }
    } else {
      for (int j = threadIdx.x; j < n; j += blockDim.x)
        row[ask__slot<PERM>(j)] = xp.get1(t, k0 + j, K, ss);
    }
    xp.row_done(part, t, ss, k0 == 0);
  }
}

/* ---- x policies of the persistent kernel ---------------------------------- */

/* x = xin, as it is. */
struct ask__xp_copy {
  static constexpr bool kScaled = false;
  const float *x;
  int coh; /* as ask__xp_norm's */

  __device__ __forceinline__ bool aligned() const { return ((uintptr_t)x & 15) == 0; }
  static constexpr int kBatch = 8;
  typedef float4 raw4;
  __device__ __forceinline__ raw4 load4(int t, int k, int K) const {
    return ask__ldx(reinterpret_cast<const float4 *>(x + (size_t)t * K + k), coh);
  }
  __device__ __forceinline__ float4 make4(const raw4 &v, int, int, int, double &) const {
    return v;
  }
  __device__ __forceinline__ float get1(int t, int k, int K, double &) const {
    return ask__ldx(x + (size_t)t * K + k, coh);
  }
  __device__ __forceinline__ void row_done(double *, int, double, bool) const {}
  __device__ __forceinline__ float scale(const double *, int, int) const { return 1.0f; }
};

#endif /* ASK_CUDA_GEMV_CUH */

/* gemv_chain.cu — several dependent one-row products in one launch of the
 * persistent kernel (kernels.h's gemv_chain): at batch 1 a layer's o,
 * gate/up (with the gated activation), down and the next layer's qkv (with
 * rope_kv) are four launches, each paying the ramp of its first loads and
 * the drain of its last warps with HBM idle. Here one grid walks them as
 * phases: after its part of phase i each warp loads its first weights of
 * phase i + 1 (weights are never written, so they may be in flight early),
 * then the grid waits at a barrier for phase i's outputs, and the loads
 * overlap the wait. The phases are gemv_pw.cuh's walks, so the results are
 * the separate kernels' bits. The layer's attention may come first, as a
 * phase of paged.cuh's decode units (the decode attention kernel's body,
 * the same bits as that kernel): then a layer is one launch.
 *
 * The barrier needs every block resident at once: the grid is at most the
 * blocks an SM that the occupancy calculator allows times the SMs, the
 * launch asks for a cooperative launch where the device takes one with
 * programmatic dependent launch (backend.c's probe decides), and the
 * kernel after this one is only scheduled once all of this one's blocks
 * have started (griddepcontrol.launch_dependents is at the top). On the
 * CPU emulator (tests/cudaemu), which runs blocks one after another, the
 * launcher launches each phase alone, so there the barrier is never
 * reached; the phases, their row orders and the coherent loads are the
 * same code.
 *
 * Measured on an H200 (sixth session): a chained layer is still 2.4-3 µs
 * slower than its four launches with programmatic dependent launch, and
 * decode 7-9% slower at batch 1, so the chain stays off by default: a
 * barrier costs more than the hardware's handover between two grids.
 */
#include <string.h>

#include "gemv_pw.cuh"
#include "paged.cuh"

int ask__cu_chain_coop = 0; /* cuda_int.h: launch the chain as a cooperative kernel */
static int ask__chain_bps;  /* blocks an SM the chained kernel may have (all U), 0: none */
static unsigned long long *ask__chain_bar; /* the grid barrier's count of arrivals */

enum { ASK__PH_COPY, ASK__PH_NORM, ASK__PH_ROPE, ASK__PH_GLU };
/* The attention phase's kind: the decode unit's head group GB and lanes a
 * key KL in one constant (ask__ph_attn_gb, ask__ph_attn_kl take them out). */
static constexpr int ask__ph_attn(int GB, int KL) { return 16 + 64 * GB + KL; }
static __host__ __device__ constexpr int ask__ph_attn_gb(int k) { return (k - 16) / 64; }
static __host__ __device__ constexpr int ask__ph_attn_kl(int k) { return (k - 16) % 64; }
static __host__ __device__ constexpr bool ask__ph_is_attn(int k) { return k >= 16; }
#define ASK__CHAIN_MAX 5

/* One phase: the product of one ask_chain_op_t, as the persistent kernel
 * would run it alone (kind: the x policy and row order), with G warps. */
struct ask__chain_ph {
  int kind, K, N, act; /* N: rows (COPY, NORM), F (GLU: 2F rows); ROPE: from nh, nkv, D */
  int nh, nkv, D, G;
  const uint16_t *w;
  const float *bias, *x, *r, *nw;
  float *xo, *out; /* out: the rows; ROPE: the qkv row; GLU: g */
  float eps, off;
  uint16_t *kc, *vc;
  const int32_t *pos, *slot;
  const float *inv_freq;
  /* the attention phase (x: the qkv rows, out: the attention row) */
  float *part;
  unsigned *cnt; /* paged.cu's merge counters */
  const int32_t *table, *seq;
  int q_stride, tw, page, nsplit, kmin, Gc, nchunk, units;
  float scale;
};

struct ask__chain_k {
  ask__chain_ph ph[ASK__CHAIN_MAX];
  int first, last; /* the phases this launch runs */
  unsigned long long *bar;
};

static __host__ __device__ __forceinline__ ask__rw_rows ask__ph_rows(const ask__chain_ph &p) {
  return ask__rw_rows{p.out, p.N, 0, 0};
}
static __host__ __device__ __forceinline__ ask__rw_rope ask__ph_rope(const ask__chain_ph &p) {
  return ask__rw_rope{p.out, p.kc, p.vc, p.pos, p.slot, p.inv_freq, p.nh, p.nkv, p.D,
                      0,     0,    0,    0.0f};
}
static __host__ __device__ __forceinline__ ask__rw_glu ask__ph_glu(const ask__chain_ph &p) {
  return ask__rw_glu{p.out, p.N, p.act, 0, 0, 0, 0.0f};
}

/* The phase's first row for warp gw (-1: none; warps from G on are idle). */
template <int KIND>
static __device__ __forceinline__ int ask__ph_first(const ask__chain_ph &p, int gw) {
  if constexpr (ask__ph_is_attn(KIND))
    return -1; /* no weights */
  if (gw >= p.G)
    return -1;
  if constexpr (KIND == ASK__PH_ROPE) {
    ask__rw_rope rw = ask__ph_rope(p);
    return rw.begin(gw, p.G);
  } else if constexpr (KIND == ASK__PH_GLU) {
    ask__rw_glu rw = ask__ph_glu(p);
    return rw.begin(gw, p.G);
  } else {
    ask__rw_rows rw = ask__ph_rows(p);
    return rw.begin(gw, p.G);
  }
}

/* This lane's pieces of row n's first step of phase p into q (n >= 0). */
template <int U>
static __device__ __forceinline__ void ask__ph_load(const ask__chain_ph &p, int n, uint4 (&q)[U]) {
  const uint4 *c = reinterpret_cast<const uint4 *>(p.w) + (threadIdx.x & 31) +
                   (size_t)n * (p.K >> 3);
#pragma unroll
  for (int u = 0; u < U; u++)
    q[u] = ask__ld_w(c + 32 * u);
}

/* Phase p of kind KIND: the walk of gemv_pw.cuh with warp gw's first row n
 * (its first step in q). coh: x and r through L2 (written in this launch). */
template <int U, int KIND, bool COH>
static __device__ __forceinline__ void ask__ph_run(const ask__chain_ph &p, int gw, int n,
                                                   uint4 (&q)[U], float4 *sm) {
  const int coh = COH;
  if constexpr (ask__ph_is_attn(KIND)) {
    /* paged.cu's decode units (the decode kernel's grid: kv head chunk,
     * then part; row 0), on all 8 warps as the decode kernel for GB <= 4.
     * One key batch in flight a warp for 4 heads, 2 for 2 (the same bits:
     * the keys' order is the same): more spilled at 128 registers. */
    constexpr int GB = ask__ph_attn_gb(KIND), KL = ask__ph_attn_kl(KIND);
    const int nbx = p.nkv * p.nchunk;
    for (int u = blockIdx.x; u < p.units; u += gridDim.x) {
      const int bx = u % nbx;
      ask__pd_unit<GB, KL, COH, GB >= 4 ? 1 : 2>(
          p.out, p.part, p.x, p.kc, p.vc, p.table, p.seq, p.pos, p.nh, p.nkv, p.D, p.q_stride,
          p.tw, p.page, p.nsplit, p.kmin, p.scale, p.Gc, p.nchunk, bx, 0, u / nbx,
          p.nsplit > 1 ? p.cnt + bx : NULL, reinterpret_cast<float *>(sm));
      __syncthreads(); /* the unit's shared memory is the next one's */
    }
  } else if constexpr (KIND == ASK__PH_COPY) {
    ask__rw_rows rw = ask__ph_rows(p);
    if (n >= 0)
      (void)rw.begin(gw, p.G); /* n is that row */
    ask__pw_walk<U>(rw, ask__xp_copy{p.x, coh}, p.w, p.bias, p.K, n, q, sm);
  } else {
    const ask__xp_norm xp = {p.x, p.r, p.nw, p.xo, p.eps, p.off, coh};
    if constexpr (KIND == ASK__PH_NORM) {
      ask__rw_rows rw = ask__ph_rows(p);
      if (n >= 0)
        (void)rw.begin(gw, p.G);
      ask__pw_walk<U>(rw, xp, p.w, p.bias, p.K, n, q, sm);
    } else if constexpr (KIND == ASK__PH_ROPE) {
      ask__rw_rope rw = ask__ph_rope(p);
      if (n >= 0)
        (void)rw.begin(gw, p.G);
      ask__pw_walk<U>(rw, xp, p.w, p.bias, p.K, n, q, sm);
    } else {
      ask__rw_glu rw = ask__ph_glu(p);
      if (n >= 0)
        (void)rw.begin(gw, p.G);
      ask__pw_walk<U>(rw, xp, p.w, p.bias, p.K, n, q, sm);
    }
  }
}

/* The grid barrier: bar is a 64-bit count of arrivals that only grows,
 * by exactly ASK__BAR_M a barrier (block 0 adds M - grid + 1, every other
 * block 1), so a launch starts with it at a multiple of M whatever the
 * grids before were. ask__grid_base, after the PDL wait (every launch
 * before has finished), reads it and rounds down to M: blocks that arrived
 * at this launch's first barrier already have added less than M, since
 * it cannot complete without this one. Barrier k of the launch is passed
 * once the count reaches base + k M. Arrival is one fenced add with no
 * reply awaited, the wait a poll of the count: where a last arriver
 * resetting a counter and bumping a generation put three dependent round
 * trips to L2 on the path (an H200, bench_gemv's chained layer against
 * its four launches: -5.3 µs then, -3.0 now on Llama-3.2-1B's shapes,
 * -4.8 / -2.4 on gemma-2b's). ask__grid_arrive counts the block in
 * once all of its threads are done (thread 0 fences first: a fence waits
 * for the thread's loads in flight, so the next phase's loads go out after
 * it, before ask__grid_wait); then what any block wrote before arriving is
 * visible to every other one's L2 loads. Thread 0's values count. */
#define ASK__BAR_M 65536ull

static __device__ __forceinline__ unsigned long long ask__grid_base(unsigned long long *bar) {
  unsigned long long v = 0;
#ifndef ASK_CUDAEMU
  if (threadIdx.x == 0)
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(bar) : "memory");
#else
  (void)bar; /* the launcher runs one phase a launch on the emulator */
#endif
  return v - v % ASK__BAR_M;
}

static __device__ __forceinline__ void ask__grid_arrive(unsigned long long *bar) {
#ifndef ASK_CUDAEMU
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(bar, blockIdx.x == 0 ? ASK__BAR_M - gridDim.x + 1 : 1ull);
  }
#else
  (void)bar;
#endif
}

static __device__ __forceinline__ void ask__grid_wait(unsigned long long *bar,
                                                      unsigned long long target) {
#ifndef ASK_CUDAEMU
  if (threadIdx.x == 0) {
    /* about 10 s of polls at most: a block that never comes (a grid that
     * did not fit after all) ends the launch with an error, not a hang */
    unsigned long long v;
    unsigned polls = 0;
    do {
      asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(bar) : "memory");
      if (++polls == (1u << 24))
        __trap();
    } while (v < target);
    __threadfence();
  }
  __syncthreads();
#else
  (void)bar, (void)target;
#endif
}

template <int K0, int... Ks> struct ask__first_kind {
  static constexpr int v = K0;
};

/* Phases I, I + 1, ... (kinds K0, Ks...) of those this launch runs
 * ([c.first, c.last)): the indices and kinds are constants, so every field
 * is read from the kernel's parameters where they lie. */
template <int U, int I, int K0, int... Ks>
static __device__ __forceinline__ void ask__chain_from(const ask__chain_k &c, int gw, int n,
                                                       uint4 (&q)[U], float4 *sm,
                                                       unsigned long long &tgt) {
  if (I >= c.first && I < c.last) {
    ask__ph_run<U, K0, (I > 0)>(c.ph[I], gw, n, q, sm);
    if constexpr (sizeof...(Ks) > 0) {
      if (I + 1 < c.last) {
        /* the next phase's first weights in flight while the grid waits,
         * loaded once this block has arrived */
        n = ask__ph_first<ask__first_kind<Ks...>::v>(c.ph[I + 1], gw);
        ask__grid_arrive(c.bar);
        if (n >= 0)
          ask__ph_load<U>(c.ph[I + 1], n, q);
        tgt += ASK__BAR_M;
        ask__grid_wait(c.bar, tgt);
      }
    }
  }
  if constexpr (sizeof...(Ks) > 0)
    ask__chain_from<U, I + 1, Ks...>(c, gw, n, q, sm, tgt);
}

/* The first step of phase I (the launch's first) on its way: to L2 before
 * the PDL wait, into registers after it, as the persistent kernel. */
template <int U, int I, int K0, int... Ks>
static __device__ __forceinline__ int ask__chain_start(const ask__chain_k &c, int gw,
                                                       uint4 (&q)[U]) {
  if (I == c.first) {
    const int n = ask__ph_first<K0>(c.ph[I], gw);
    if (n >= 0) {
      const uint4 *w = reinterpret_cast<const uint4 *>(c.ph[I].w) + (threadIdx.x & 31) +
                       (size_t)n * (c.ph[I].K >> 3);
#pragma unroll
      for (int u = 0; u < U; u++)
        ask__pf_l2(w + 32 * u);
    }
    ask__pdl_wait();
    if (n >= 0)
      ask__ph_load<U>(c.ph[I], n, q);
    return n;
  }
  if constexpr (sizeof...(Ks) > 0)
    return ask__chain_start<U, I + 1, Ks...>(c, gw, q);
  ask__pdl_wait(); /* not reached: c.first is one of the phases */
  return -1;
}

/* The chain of phases of kinds KS (the engine's patterns: a layer's o,
 * gate/up with the activation, down and the next qkv; the last layer's
 * three; the probe's two plain products). */
template <int U, int... KS>
static __global__ void __launch_bounds__(32 * ASK__PW_WARPS, 2)
    ask__k_gemv_chain(const ask__chain_k c) {
  extern __shared__ float4 ask__gemv_sh[];
  ask__pdl_start();
  const int gw = blockIdx.x * ASK__PW_WARPS + (threadIdx.x >> 5);
  uint4 q[U];
  const int n = ask__chain_start<U, 0, KS...>(c, gw, q); /* after the PDL wait */
  unsigned long long tgt = ask__grid_base(c.bar);
  ask__chain_from<U, 0, KS...>(c, gw, n, q, ask__gemv_sh, tgt);
}

/* ---- host side --------------------------------------------------------- */

/* Warps a phase of `units` units uses out of `most`: as few as give every
 * warp the same number of units as with all of them. */
static int ask__ph_warps(long units, long most) {
  long per = (units + most - 1) / most;
  return (int)((units + per - 1) / per);
}

/* Whether the persistent kernel takes a product of K columns on w. */
static int ask__ph_takes(int K, const uint16_t *w, int U) {
  return ask__pw_takes(1, K, w) && ask__pw_unroll(K) == U;
}

static int ask__chain_attn_built(int GB, int KL);

/* An attention op as the attention phase (0: not chainable): only where
 * attention_paged would run paged.cu's decode kernel on this one row with
 * the merge inside it (ASK_CUDA_ATTN_DECODE >= 1, D a multiple of 8 from
 * 32 to 256, 16-byte aligned caches and q rows, the merge counters), with
 * the same head chunks (ask__pg_heads at one row), so the bits are that
 * kernel's; and only for the (GB, KL) the kernel is built for. */
static int ask__ph_make_attn(ask__chain_ph *p, const ask_chain_op_t *op) {
  const int nh = op->nh, nkv = op->nkv, D = op->D, nsplit = op->nsplit < 1 ? 1 : op->nsplit;
  if (nkv <= 0 || ask__pg_dec_rows(nkv) < 1 || ask__pg_cnt == NULL || nh <= 0 ||
      nh % nkv != 0 || D < 32 || D > 256 || D % 8 != 0 || op->page <= 0 || op->table_width < 0 ||
      nsplit > 65535 || (nsplit > 1 && op->part == NULL) || op->q_stride % 4 != 0 ||
      (((uintptr_t)op->kc | (uintptr_t)op->vc | (uintptr_t)op->x) & 15) != 0)
    return 0;
  const int G = nh / nkv, Gc = ask__pg_heads(G, nkv, 1, nsplit);
  const int GB = Gc <= 1 ? 1 : Gc <= 2 ? 2 : Gc <= 4 ? 4 : 8;
  const int KL = D <= 32 ? 4 : D <= 64 ? 8 : D <= 128 ? 16 : 32, nchunk = (G + Gc - 1) / Gc;
  if (!ask__chain_attn_built(GB, KL) || (long)nkv * nchunk > ASK__PG_NCNT)
    return 0;
  p->kind = ask__ph_attn(GB, KL);
  p->out = op->out, p->part = op->part, p->x = op->x, p->kc = op->kc, p->vc = op->vc;
  p->table = op->table, p->seq = op->seq, p->pos = op->pos;
  p->nh = nh, p->nkv = nkv, p->D = D, p->q_stride = op->q_stride, p->tw = op->table_width;
  p->page = op->page, p->nsplit = nsplit, p->scale = op->scale;
  p->kmin = ask__pg_kmin(D);
  p->Gc = Gc, p->nchunk = nchunk, p->units = nkv * nchunk * nsplit, p->cnt = ask__pg_cnt;
  return 1;
}

/* op as a phase into p (0: not chainable). next: the op after it (or
 * NULL); *pair set when op and next are a gate/up product and the down
 * product that reads it, taken as one GLU phase (g written by the gate/up
 * warps) and a COPY phase on g. fuse_rope: norm_matmul_rope_kv fuses at
 * one row (else the chain is refused: the separate path runs two ops). */
static int ask__ph_make(ask__chain_ph *p, const ask_chain_op_t *op, const ask_chain_op_t *next,
                        int fuse_rope, int U, int *pair) {
  memset(p, 0, sizeof *p);
  *pair = 0;
  if (op->kind == ASK_CHAIN_ATTENTION)
    return ask__ph_make_attn(p, op);
  p->w = op->w, p->bias = op->bias, p->K = op->K, p->x = op->x, p->r = op->r, p->nw = op->nw;
  p->xo = op->r != NULL ? op->xo : NULL, p->eps = op->eps, p->off = op->w_offset;
  p->out = op->out;
  if (!ask__ph_takes(op->K, op->w, U))
    return 0;
  switch (op->kind) {
  case ASK_CHAIN_MATMUL: /* x 16-byte aligned, as gemv.cu's vector path */
    p->kind = ASK__PH_COPY, p->N = op->N;
    return op->N > 0 && ((uintptr_t)op->x & 15) == 0;
  case ASK_CHAIN_NORM_MATMUL:
    if (next != NULL && next->kind == ASK_CHAIN_GLU_MATMUL && next->x == op->out &&
        op->N == 2 * next->K && next->g != NULL) {
      p->kind = ASK__PH_GLU, p->N = next->K, p->act = next->act, p->out = next->g;
      *pair = 1;
      return next->K > 0;
    }
    p->kind = ASK__PH_NORM, p->N = op->N;
    return op->N > 0;
  case ASK_CHAIN_NORM_ROPE_KV:
    p->kind = ASK__PH_ROPE, p->nh = op->nh, p->nkv = op->nkv, p->D = op->D;
    p->kc = op->kc, p->vc = op->vc, p->pos = op->pos, p->slot = op->slot;
    p->inv_freq = op->inv_freq;
    return fuse_rope && op->D > 0 && op->D % 2 == 0 && op->nh > 0 && op->nkv > 0 &&
           op->kc != NULL && op->vc != NULL;
  default: /* a GLU_MATMUL not after its gate/up product: the separate path */
    return 0;
  }
}

static long ask__ph_units(const ask__chain_ph &p) {
  if (ask__ph_is_attn(p.kind))
    return p.units;
  if (p.kind == ASK__PH_ROPE)
    return ask__ph_rope(p).units();
  return p.N;
}

/* The phase patterns the kernel is built for (its phase kinds are template
 * arguments, so that each phase's fields are read from the kernel's
 * parameters at fixed offsets: a runtime index into them makes nvcc copy
 * the parameters to local memory, which at U 8 spilled): a middle layer's
 * o, gate/up with the activation, down and the next layer's qkv with
 * rope_kv; the last layer's first three; two plain products (the probe). */
enum { ASK__PAT_TAIL4, ASK__PAT_TAIL3, ASK__PAT_TWO, ASK__PAT_ATTN5, ASK__PAT_ATTN4, ASK__PATS };
#define ASK__PAT_KINDS_TAIL4 ASK__PH_COPY, ASK__PH_GLU, ASK__PH_COPY, ASK__PH_ROPE
#define ASK__PAT_KINDS_TAIL3 ASK__PH_COPY, ASK__PH_GLU, ASK__PH_COPY
#define ASK__PAT_KINDS_TWO ASK__PH_COPY, ASK__PH_COPY
/* a layer from its attention on (the decode unit of GB heads, KL lanes a key) */
#define ASK__PAT_KINDS_ATTN5(GB, KL) ask__ph_attn(GB, KL), ASK__PAT_KINDS_TAIL4
#define ASK__PAT_KINDS_ATTN4(GB, KL) ask__ph_attn(GB, KL), ASK__PAT_KINDS_TAIL3

/* The pattern of ph[0 .. np) (an attention phase matched by its place
 * only; the launcher checks its GB and KL), or -1. */
static int ask__chain_pattern(const ask__chain_ph *ph, int np) {
  static const int pats[ASK__PATS][6] = {{4, ASK__PAT_KINDS_TAIL4},
                                         {3, ASK__PAT_KINDS_TAIL3},
                                         {2, ASK__PAT_KINDS_TWO},
                                         {5, -1, ASK__PAT_KINDS_TAIL4},
                                         {4, -1, ASK__PAT_KINDS_TAIL3}};
  for (int p = 0; p < ASK__PATS; p++) {
    int same = pats[p][0] == np;
    for (int i = 0; same && i < np; i++)
      same = pats[p][1 + i] < 0 ? ask__ph_is_attn(ph[i].kind) : ph[i].kind == pats[p][1 + i];
    if (same)
      return p;
  }
  return -1;
}

template <int U, int... KS> static cudaError_t ask__chain_attr1(int *bps) {
  cudaError_t e = cudaFuncSetAttribute(ask__k_gemv_chain<U, KS...>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)ask__pw_smem(ASK__PW_STAGE));
  /* the whole carveout as shared memory, so that the blocks an SM counted
   * below are what the driver gives whatever ran before */
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(ask__k_gemv_chain<U, KS...>,
                             cudaFuncAttributePreferredSharedMemoryCarveout,
                             (int)cudaSharedmemCarveoutMaxShared);
  int b = 0;
  if (e == cudaSuccess)
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, ask__k_gemv_chain<U, KS...>,
                                                      32 * ASK__PW_WARPS,
                                                      ask__pw_smem(ASK__PW_STAGE));
  if (e == cudaSuccess && b < *bps)
    *bps = b;
  return e;
}

template <int... KS> static cudaError_t ask__chain_attr(int *bps) {
  cudaError_t e = ask__chain_attr1<8, KS...>(bps);
  if (e == cudaSuccess)
    e = ask__chain_attr1<4, KS...>(bps);
  if (e == cudaSuccess)
    e = ask__chain_attr1<2, KS...>(bps);
  if (e == cudaSuccess)
    e = ask__chain_attr1<1, KS...>(bps);
  return e;
}

/* The attention patterns are built for U 8 only (hidden sizes that are
 * multiples of 2048; each pattern's kernel is ~300 KB of machine code and
 * PTX, and the GPU bundle must stay under the device tool's 64 MiB), and,
 * on the CPU emulator, for U 1 too (the tests' small shapes). */
#ifdef ASK_CUDAEMU
#define ASK__ATTN_U1 1
#else
#define ASK__ATTN_U1 0
#endif
template <int... KS> static cudaError_t ask__chain_attr18(int *bps) {
  cudaError_t e = ask__chain_attr1<8, KS...>(bps);
#if ASK__ATTN_U1
  if (e == cudaSuccess)
    e = ask__chain_attr1<1, KS...>(bps);
#endif
  return e;
}

template <int GB, int KL> static cudaError_t ask__chain_attr_attn(int *bps) {
  cudaError_t e = ask__chain_attr18<ASK__PAT_KINDS_ATTN5(GB, KL)>(bps);
  return e == cudaSuccess ? ask__chain_attr18<ASK__PAT_KINDS_ATTN4(GB, KL)>(bps) : e;
}

template <int... KS>
static void ask__chain_go(cudaStream_t s, int U, unsigned grid, size_t smem,
                          const ask__chain_k &c) {
  dim3 b(32 * ASK__PW_WARPS);
  const int co = ask__cu_chain_coop;
  switch (U) {
  case 8:
    ASK__LAUNCH_COOP(grid, b, smem, s, co, ask__k_gemv_chain<8, KS...>)(c);
    break;
  case 4:
    ASK__LAUNCH_COOP(grid, b, smem, s, co, ask__k_gemv_chain<4, KS...>)(c);
    break;
  case 2:
    ASK__LAUNCH_COOP(grid, b, smem, s, co, ask__k_gemv_chain<2, KS...>)(c);
    break;
  default:
    ASK__LAUNCH_COOP(grid, b, smem, s, co, ask__k_gemv_chain<1, KS...>)(c);
  }
}

template <int GB, int KL>
static void ask__chain_go_attn(int pat, cudaStream_t s, int U, unsigned grid, size_t smem,
                               const ask__chain_k &c) {
  dim3 b(32 * ASK__PW_WARPS);
  const int co = ask__cu_chain_coop;
  if (pat == ASK__PAT_ATTN5 && U == 8) {
    ASK__LAUNCH_COOP(grid, b, smem, s, co, ask__k_gemv_chain<8, ASK__PAT_KINDS_ATTN5(GB, KL)>)(c);
  } else if (U == 8) {
    ASK__LAUNCH_COOP(grid, b, smem, s, co, ask__k_gemv_chain<8, ASK__PAT_KINDS_ATTN4(GB, KL)>)(c);
  } else {
#if ASK__ATTN_U1
    if (pat == ASK__PAT_ATTN5)
      ASK__LAUNCH_COOP(grid, b, smem, s, co,
                       ask__k_gemv_chain<1, ASK__PAT_KINDS_ATTN5(GB, KL)>)(c);
    else
      ASK__LAUNCH_COOP(grid, b, smem, s, co,
                       ask__k_gemv_chain<1, ASK__PAT_KINDS_ATTN4(GB, KL)>)(c);
#endif
  }
}

/* The (GB, KL) pairs the attention patterns are built for: 2 or 4 heads
 * (Llama-3.2-1B: 4; gemma-2b: 2, ask__pg_heads at one row), D 64, 128,
 * 256. 8 heads would hold 128 floats of queries and sums a lane, more than
 * the 128 registers the chained kernel has. */
static int ask__chain_attn_built(int GB, int KL) {
  return (GB == 2 || GB == 4) && (KL == 8 || KL == 16 || KL == 32);
}

/* cuda_int.h: shared-memory limits, the blocks an SM the chain may use and
 * its barrier (once, before any capture). */
extern "C" cudaError_t ask__cu_chain_init(void) {
  int bps = 1 << 30;
  cudaError_t e = ask__chain_attr<ASK__PAT_KINDS_TAIL4>(&bps);
  if (e == cudaSuccess)
    e = ask__chain_attr<ASK__PAT_KINDS_TAIL3>(&bps);
  if (e == cudaSuccess)
    e = ask__chain_attr<ASK__PAT_KINDS_TWO>(&bps);
  if (e == cudaSuccess)
    e = ask__chain_attr_attn<2, 8>(&bps);
  if (e == cudaSuccess)
    e = ask__chain_attr_attn<2, 16>(&bps);
  if (e == cudaSuccess)
    e = ask__chain_attr_attn<2, 32>(&bps);
  if (e == cudaSuccess)
    e = ask__chain_attr_attn<4, 8>(&bps);
  if (e == cudaSuccess)
    e = ask__chain_attr_attn<4, 16>(&bps);
  if (e == cudaSuccess)
    e = ask__chain_attr_attn<4, 32>(&bps);
  if (e == cudaSuccess && ask__chain_bar == NULL) {
    e = cudaMalloc((void **)&ask__chain_bar, sizeof *ask__chain_bar);
    if (e == cudaSuccess)
      e = cudaMemset(ask__chain_bar, 0, sizeof *ask__chain_bar);
  }
  ask__chain_bps = e == cudaSuccess ? bps : 0;
  return e;
}

/* cuda_int.h: ops as one chained launch when every one is taken (a gate/up
 * product and the down product reading it as a pair); 1 when launched, 0
 * when the caller must run them one by one. */
extern "C" int ask__cu_gemv_chain(cudaStream_t s, const ask_chain_op_t *ops, int n,
                                  int fuse_rope) {
  if (ask__cu_failed() || n < 2 || ask__chain_bps <= 0 || ask__cu_gemv_pw <= 0 ||
      ask__cu_sms <= 0)
    return 0;
  /* every product's step: the first product's (an attention op has none) */
  const ask_chain_op_t *p0 = ops[0].kind == ASK_CHAIN_ATTENTION ? &ops[1] : &ops[0];
  const int U = p0->K > 0 ? ask__pw_unroll(p0->K) : 0;
  if (U == 0)
    return 0;
  ask__chain_k c;
  memset(&c, 0, sizeof c);
  int np = 0, kmax = 0;
  for (int i = 0; i < n; i++) {
    int pair = 0;
    if (np == ASK__CHAIN_MAX ||
        !ask__ph_make(&c.ph[np], &ops[i], i + 1 < n ? &ops[i + 1] : NULL, fuse_rope, U, &pair))
      return 0;
    kmax = c.ph[np].K > kmax ? c.ph[np].K : kmax;
    np++;
    if (pair) { /* the down product reads g, which the GLU phase writes */
      const ask_chain_op_t *d = &ops[++i];
      ask__chain_ph *p = &c.ph[np];
      if (np == ASK__CHAIN_MAX || !ask__ph_takes(d->K, d->w, U) || d->N <= 0 ||
          ((uintptr_t)d->g & 15) != 0)
        return 0;
      memset(p, 0, sizeof *p);
      p->kind = ASK__PH_COPY, p->K = d->K, p->N = d->N, p->w = d->w, p->bias = d->bias;
      p->x = d->g, p->out = d->out;
      kmax = d->K > kmax ? d->K : kmax;
      np++;
    }
  }
  const int pat = ask__chain_pattern(c.ph, np);
  if (pat < 0)
    return 0;
  const int bps = ask__cu_gemv_pw < ask__chain_bps ? ask__cu_gemv_pw : ask__chain_bps;
  const long most = (long)ask__cu_sms * bps * ASK__PW_WARPS;
  for (int i = 0; i < np; i++)
    c.ph[i].G = ask__ph_warps(ask__ph_units(c.ph[i]), most);
  c.bar = ask__chain_bar;
  const unsigned grid = (unsigned)(ask__cu_sms * bps);
  size_t smem = ask__pw_smem(kmax);
  if (pat == ASK__PAT_ATTN5 || pat == ASK__PAT_ATTN4) {
    const size_t a = (size_t)ASK__PD_SH(ask__ph_attn_gb(c.ph[0].kind),
                                        ask__ph_attn_kl(c.ph[0].kind)) * sizeof(float);
    if (U != 8 && !(U == 1 && ASK__ATTN_U1))
      return 0; /* not built */
    smem = a > smem ? a : smem;
  }
#ifdef ASK_CUDAEMU
  const int step = 1; /* blocks run one after another: one phase a launch */
#else
  const int step = np;
#endif
  for (c.first = 0; c.first < np; c.first += step) {
    c.last = c.first + step;
    if (pat == ASK__PAT_ATTN5 || pat == ASK__PAT_ATTN4) {
      const int GB = ask__ph_attn_gb(c.ph[0].kind), KL = ask__ph_attn_kl(c.ph[0].kind);
      if (GB == 2 && KL == 8)
        ask__chain_go_attn<2, 8>(pat, s, U, grid, smem, c);
      else if (GB == 2 && KL == 16)
        ask__chain_go_attn<2, 16>(pat, s, U, grid, smem, c);
      else if (GB == 2)
        ask__chain_go_attn<2, 32>(pat, s, U, grid, smem, c);
      else if (KL == 8)
        ask__chain_go_attn<4, 8>(pat, s, U, grid, smem, c);
      else if (KL == 16)
        ask__chain_go_attn<4, 16>(pat, s, U, grid, smem, c);
      else
        ask__chain_go_attn<4, 32>(pat, s, U, grid, smem, c);
    } else if (pat == ASK__PAT_TAIL4)
      ask__chain_go<ASK__PAT_KINDS_TAIL4>(s, U, grid, smem, c);
    else if (pat == ASK__PAT_TAIL3)
      ask__chain_go<ASK__PAT_KINDS_TAIL3>(s, U, grid, smem, c);
    else
      ask__chain_go<ASK__PAT_KINDS_TWO>(s, U, grid, smem, c);
  }
  ASK__LAUNCHED("gemv_chain");
  return 1;
}

/* bench_gemv.c — decode-shape matmul_bf16 on the GPU: the backend's own
 * matrix-vector kernel (gemv.cu, ask_cuda_set_gemv_rows(16)) against
 * cuBLASLt (gemv_rows 0), for T = 1, 2, 4, 8, 16 rows and the linear
 * layers of gemma-2b and Llama-3.2-1B (N x K: fused qkv, fused gate/up,
 * down, lm_head). A benchmark, not a test: it prints one JSON line per
 * (shape, T, path) with the time of one call in microseconds and the
 * effective bandwidth (weights + x + out bytes over that time), then a line
 * with the recommended gemv_rows: the largest T up to which the own kernel
 * wins on most shapes.
 *
 * Then the decode fusions at T = 1, 4, 8 and 16 on Llama-3.2-1B's shapes:
 * the fused op (norm_matmul_bf16 for qkv and gate/up, glu_matmul_bf16 for
 * down) against the separate ops it replaces (add_rmsnorm + matmul_bf16,
 * glu_rows + matmul_bf16), both on the matrix-vector kernel (gemv_rows
 * 16), one JSON line each with both times, what the fusion saves per call
 * and the fused op's effective bandwidth; then a line with the recommended
 * fuse_rows (ask_cuda_set_fuse_rows, ASK_CUDA_FUSE_ROWS): the largest T
 * up to which the fused ops win on most shapes.
 *
 * Then attention over one prefill chunk of 2048 rows (positions 0..2047 of
 * one sequence, its keys already in a paged bf16 cache of 16-row pages
 * in shuffled order) on the attention shapes of gemma-2b (8/1/256) and
 * Llama-3.2-1B (32/8/64): attention_prefill (kernels/cuda/prefill.cu,
 * what a prefill chunk takes) against attention_paged on the same rows
 * (one row a block, nsplit 1, what the chunk took before), one JSON line
 * per shape with both times for one layer (eager calls, 2 warm-up, then
 * the mean of 10) and prefill's f32 FMA rate (2 D FMAs per visible
 * (row, head, key)).
 *
 * Then the chained one-row products (gemv_chain, kernels/cuda/gemv_chain.cu):
 * a layer's o, gate/up with the activation, down and the next qkv with
 * rope_kv at one row, for 8 layers of distinct weights (more than L2 holds)
 * of each shape, captured once with the chain off (four launches a layer,
 * the fused ops of the persistent kernel) and once on (one launch a
 * layer), one JSON line per shape with the time of a layer both ways, the
 * weights' read rate and what a chain saves a layer; where the chained
 * kernel's probe failed, the line says why. Then the same layers with the
 * MLP as one launch (norm_matmul_mlp, ASK_FUSE_MLP) instead of gate/up and
 * down ("mlp" lines).
 *
 * Each timing is 50 calls captured into one CUDA graph (as the engine's
 * decode step runs them) after an eager warm-up, launched 5 times; the
 * calls cycle through enough copies of the weights (>= 256 MiB in all,
 * 16 copies at most) that they come from HBM, not from the 50 MiB L2.
 * Without a usable device it prints "skip: <why>" and exits 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ask_cuda.h"
#include "kernels.h"

#define REPS 50     /* calls in one graph */
#define LAUNCHES 5  /* timed launches of it */
#define NT 5        /* the T values */
#define NSHAPES 8

static const struct {
  const char *model, *layer;
  int N, K;
} shapes[NSHAPES] = {
    {"gemma-2b", "qkv", 2560, 2048},           {"gemma-2b", "gate_up", 32768, 2048},
    {"gemma-2b", "down", 2048, 16384},         {"gemma-2b", "lm_head", 256000, 2048},
    {"Llama-3.2-1B", "qkv", 3072, 2048},       {"Llama-3.2-1B", "gate_up", 16384, 2048},
    {"Llama-3.2-1B", "down", 2048, 8192},      {"Llama-3.2-1B", "lm_head", 128256, 2048},
};
static const int Ts[NT] = {1, 2, 4, 8, 16};

static const ask_dev_t *dev;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* What one timed call runs. */
enum {
  OP_MATMUL,     /* matmul_bf16(out, x) */
  OP_NORM_FUSED, /* norm_matmul_bf16(out, xo, x, r) */
  OP_NORM_SEP,   /* add_rmsnorm(h, x, r) + matmul_bf16(out, h) */
  OP_GLU_FUSED,  /* glu_matmul_bf16(out, gu) with F = K */
  OP_GLU_SEP     /* glu_rows(h, gu) + matmul_bf16(out, h) */
};

/* One timed configuration: the arguments of the captured calls. */
typedef struct {
  float *out, *x;
  uint16_t *xs, *w;
  size_t copies, wn; /* weight copies, values in one */
  int T, K, N;
  int op;                       /* OP_* */
  float *r, *nw, *xo, *h, *gu; /* the fusions' inputs and scratch (T x 16384 floats each) */
} bench_t;

static void bench_call(const bench_t *b, const uint16_t *w) {
  switch (b->op) {
  case OP_NORM_FUSED:
    dev->norm_matmul_bf16(b->out, b->xo, b->h, b->xs, b->x, b->r, b->nw, 1e-5f, 0.0f, w, NULL,
                          b->T, b->K, b->N);
    break;
  case OP_NORM_SEP:
    dev->add_rmsnorm(b->h, b->x, b->r, b->nw, b->T, b->K, 1e-5f, 0.0f);
    dev->matmul_bf16(b->out, b->xs, b->h, w, NULL, b->T, b->K, b->N);
    break;
  case OP_GLU_FUSED:
    dev->glu_matmul_bf16(b->out, b->h, b->xs, b->gu, ASK_ACT_SILU, w, NULL, b->T, b->K, b->N);
    break;
  case OP_GLU_SEP:
    dev->glu_rows(b->h, b->gu, b->T, b->K, ASK_ACT_SILU);
    dev->matmul_bf16(b->out, b->xs, b->h, w, NULL, b->T, b->K, b->N);
    break;
  default:
    dev->matmul_bf16(b->out, b->xs, b->x, w, NULL, b->T, b->K, b->N);
  }
}

static void bench_calls(void *ud) {
  const bench_t *b = ud;
  for (int i = 0; i < REPS; i++)
    bench_call(b, b->w + (size_t)i % b->copies * b->wn);
}

/* Microseconds per call (< 0 on failure, err says why); *how: "graph" or
 * "eager" (when the capture failed). */
static double bench_time(bench_t *b, const char **how, char *err, size_t errlen) {
  void *g = NULL;
  double t0, t1;
  for (int i = 0; i < 3; i++) /* warm-up: cuBLASLt plans, caches */
    bench_call(b, b->w);
  if (dev->sync(err, errlen) != 0)
    return -1;
  if (dev->graph_capture(&g, bench_calls, b, err, errlen) == 0) {
    *how = "graph";
    if (dev->graph_launch(g, err, errlen) != 0 || dev->sync(err, errlen) != 0) {
      dev->graph_free(g);
      return -1;
    }
    t0 = now_us();
    for (int i = 0; i < LAUNCHES; i++)
      dev->graph_launch(g, err, errlen);
    int rc = dev->sync(err, errlen);
    t1 = now_us();
    dev->graph_free(g);
    return rc != 0 ? -1 : (t1 - t0) / (LAUNCHES * REPS);
  }
  *how = "eager";
  t0 = now_us();
  for (int i = 0; i < LAUNCHES; i++)
    bench_calls(b);
  if (dev->sync(err, errlen) != 0)
    return -1;
  t1 = now_us();
  return (t1 - t0) / (LAUNCHES * REPS);
}

/* Fills n bf16 of device memory d with small values (any will do). */
static int fill_bf16(uint16_t *d, size_t n, char *err, size_t errlen) {
  size_t chunk = (size_t)16 << 20;
  uint16_t *h = malloc(chunk * sizeof *h);
  uint32_t s = 12345;
  if (h == NULL) {
    snprintf(err, errlen, "out of host memory");
    return -1;
  }
  for (size_t i = 0; i < chunk; i++) {
    s = s * 1664525u + 1013904223u;
    h[i] = (uint16_t)(0x3c00u + ((s >> 16) & 0x1ffu)) | (uint16_t)((s & 1u) << 15);
  }
  for (size_t at = 0; at < n; at += chunk) {
    size_t m = n - at < chunk ? n - at : chunk;
    if (dev->copy(d + at, h, m * sizeof *h, ASK_COPY_H2D, err, errlen) != 0) {
      free(h);
      return -1;
    }
  }
  free(h);
  return 0;
}

/* The decode fusions against the separate ops, T = 1 and 4 (gemv_rows 16). */
static void bench_fusions(void) {
  static const struct {
    const char *layer;
    int glu, N, K;
  } fs[3] = {{"qkv", 0, 3072, 2048}, {"gate_up", 0, 16384, 2048}, {"down", 1, 2048, 8192}};
  enum { NFT = 4, FMAX = 16 * 2 * 16384 }; /* floats: T <= 16 rows of up to 2 x 8192 */
  static const int fT[NFT] = {1, 4, 8, 16};
  double saved[3][NFT];
  char err[256] = "";
  float *xh = malloc(FMAX * sizeof *xh);
  bench_t b;
  memset(&b, 0, sizeof b);
  for (size_t i = 0; xh != NULL && i < FMAX; i++)
    xh[i] = (float)((int)(i % 17) - 8) / 16.0f;
  if (xh == NULL || dev->alloc((void **)&b.x, FMAX * 4, err, sizeof err) != 0 ||
      dev->alloc((void **)&b.r, FMAX * 4, err, sizeof err) != 0 ||
      dev->alloc((void **)&b.nw, FMAX * 4, err, sizeof err) != 0 ||
      dev->alloc((void **)&b.xo, FMAX * 4, err, sizeof err) != 0 ||
      dev->alloc((void **)&b.h, FMAX * 4, err, sizeof err) != 0 ||
      dev->alloc((void **)&b.gu, FMAX * 4, err, sizeof err) != 0 ||
      dev->alloc((void **)&b.xs, FMAX * 2, err, sizeof err) != 0 ||
      dev->alloc((void **)&b.out, FMAX * 4, err, sizeof err) != 0 ||
      dev->copy(b.x, xh, FMAX * 4, ASK_COPY_H2D, err, sizeof err) != 0 ||
      dev->copy(b.r, xh, FMAX * 4, ASK_COPY_H2D, err, sizeof err) != 0 ||
      dev->copy(b.nw, xh, FMAX * 4, ASK_COPY_H2D, err, sizeof err) != 0 ||
      dev->copy(b.gu, xh, FMAX * 4, ASK_COPY_H2D, err, sizeof err) != 0) {
    printf("{\"fusions\": \"error\", \"error\": \"%s\"}\n",
           xh == NULL ? "out of host memory" : err);
  } else {
    ask_cuda_set_gemv_rows(16);
    ask_cuda_set_fuse_rows(16);
    ask_cuda_set_gemv_max_n(1 << 30); /* the kernel on every shape, lm_head too */
    ask_cuda_set_fuse_glu(1);
    for (int fi = 0; fi < 3; fi++)
      for (int ti = 0; ti < NFT; ti++)
        saved[fi][ti] = 0; /* a failed shape counts as a loss */
    for (int fi = 0; fi < 3; fi++) {
      int N = fs[fi].N, K = fs[fi].K;
      size_t wn = (size_t)N * K, wbytes = wn * 2;
      size_t copies = (((size_t)256 << 20) + wbytes - 1) / wbytes;
      b.copies = copies > 16 ? 16 : copies, b.wn = wn, b.K = K, b.N = N, b.w = NULL;
      if (dev->alloc((void **)&b.w, b.copies * wbytes, err, sizeof err) != 0 ||
          fill_bf16(b.w, b.copies * wn, err, sizeof err) != 0) {
        printf("{\"model\": \"Llama-3.2-1B\", \"layer\": \"%s\", \"error\": \"%s\"}\n",
               fs[fi].layer, err);
        dev->free(b.w);
        continue;
      }
      for (int ti = 0; ti < NFT; ti++) {
        const char *how = "?", *how2 = "?";
        double tf, ts;
        b.T = fT[ti];
        b.op = fs[fi].glu ? OP_GLU_FUSED : OP_NORM_FUSED;
        tf = bench_time(&b, &how, err, sizeof err);
        b.op = fs[fi].glu ? OP_GLU_SEP : OP_NORM_SEP;
        ts = tf < 0 ? -1 : bench_time(&b, &how2, err, sizeof err);
        /* the fused op's bytes: weights, its inputs (x and r, or gu) and out (+ xo) */
        double bytes = (double)wbytes + (double)b.T * K * 8 + (double)b.T * N * 4 +
                       (fs[fi].glu ? 0.0 : (double)b.T * K * 4);
        printf("{\"model\": \"Llama-3.2-1B\", \"layer\": \"%s\", \"fusion\": \"%s\", "
               "\"N\": %d, \"K\": %d, \"T\": %d, ",
               fs[fi].layer, fs[fi].glu ? "glu_matmul" : "norm_matmul", N, K, b.T);
        if (tf < 0 || ts < 0)
          printf("\"error\": \"%s\"}\n", err);
        else
          printf("\"fused_us\": %.2f, \"separate_us\": %.2f, \"saved_us\": %.2f, "
                 "\"fused_gbps\": %.1f, \"timing\": \"%s\"}\n",
                 tf, ts, ts - tf, bytes / (tf * 1e3), how);
        saved[fi][ti] = tf < 0 || ts < 0 ? 0 : ts - tf;
        fflush(stdout);
      }
      dev->free(b.w);
    }
    /* fuse_rows: the largest T such that at every tested T up to it the
     * fused ops are faster on more than half of the shapes */
    int rec = 0;
    printf("{\"fusion_wins\": {");
    for (int ti = 0, prefix = 1; ti < NFT; ti++) {
      int wins = 0;
      for (int fi = 0; fi < 3; fi++)
        wins += saved[fi][ti] > 0;
      printf("%s\"%d\": %d", ti ? ", " : "", fT[ti], wins);
      prefix = prefix && 2 * wins > 3;
      if (prefix)
        rec = fT[ti];
    }
    printf("}, \"shapes\": 3, \"recommended_fuse_rows\": %d}\n", rec);
  }
  dev->free(b.x), dev->free(b.r), dev->free(b.nw), dev->free(b.xo), dev->free(b.h);
  dev->free(b.gu), dev->free(b.xs), dev->free(b.out);
  free(xh);
}

/* attention_prefill against attention_paged on one 2048-row chunk. */
static void bench_prefill(void) {
  static const struct {
    const char *model;
    int nh, nkv, D;
  } ps[2] = {{"gemma-2b", 8, 1, 256}, {"Llama-3.2-1B", 32, 8, 64}};
  enum { N = 2048, PAGE = 16, NP = N / PAGE, WARM = 2, RUNS = 10 };
  for (int si = 0; si < 2; si++) {
    int nh = ps[si].nh, nkv = ps[si].nkv, D = ps[si].D, qs = (nh + 2 * nkv) * D;
    size_t kvn = (size_t)NP * PAGE * nkv * D;
    float *q = NULL, *out = NULL, scale = 1.0f / sqrtf((float)D);
    uint16_t *kc = NULL, *vc = NULL;
    int32_t *pages = NULL, *seq = NULL, *pos = NULL;
    int32_t hp[NP], hs[N], hpos[N];
    float *hq = malloc((size_t)N * qs * sizeof *hq);
    char err[256] = "";
    double tp = -1, ta = -1;
    for (int i = 0; i < NP; i++) /* a fixed shuffle of the pages */
      hp[i] = (int32_t)(((unsigned)i * 37u + 11u) % NP);
    for (int i = 0; i < N; i++)
      hs[i] = 0, hpos[i] = i;
    for (size_t i = 0; hq != NULL && i < (size_t)N * qs; i++)
      hq[i] = (float)((int)(i % 23) - 11) / 16.0f;
    if (hq != NULL && dev->alloc((void **)&q, (size_t)N * qs * 4, err, sizeof err) == 0 &&
        dev->alloc((void **)&out, (size_t)N * nh * D * 4, err, sizeof err) == 0 &&
        dev->alloc((void **)&kc, kvn * 2, err, sizeof err) == 0 &&
        dev->alloc((void **)&vc, kvn * 2, err, sizeof err) == 0 &&
        dev->alloc((void **)&pages, sizeof hp, err, sizeof err) == 0 &&
        dev->alloc((void **)&seq, sizeof hs, err, sizeof err) == 0 &&
        dev->alloc((void **)&pos, sizeof hpos, err, sizeof err) == 0 &&
        fill_bf16(kc, kvn, err, sizeof err) == 0 && fill_bf16(vc, kvn, err, sizeof err) == 0 &&
        dev->copy(q, hq, (size_t)N * qs * 4, ASK_COPY_H2D, err, sizeof err) == 0 &&
        dev->copy(pages, hp, sizeof hp, ASK_COPY_H2D, err, sizeof err) == 0 &&
        dev->copy(seq, hs, sizeof hs, ASK_COPY_H2D, err, sizeof err) == 0 &&
        dev->copy(pos, hpos, sizeof hpos, ASK_COPY_H2D, err, sizeof err) == 0) {
      for (int path = 0; path < 2; path++) {
        double t0 = 0;
        int rc = 0;
        for (int i = 0; i < WARM + RUNS && rc == 0; i++) {
          if (i == WARM) {
            rc = dev->sync(err, sizeof err);
            t0 = now_us();
          }
          if (path == 0)
            dev->attention_prefill(out, q, kc, vc, pages, 0, N, nh, nkv, D, qs, PAGE, scale);
          else
            dev->attention_paged(out, NULL, q, kc, vc, pages, seq, pos, N, nh, nkv, D, qs, NP,
                                 PAGE, 1, scale);
        }
        if (rc == 0)
          rc = dev->sync(err, sizeof err);
        double t = rc != 0 ? -1 : (now_us() - t0) / RUNS;
        if (path == 0)
          tp = t;
        else
          ta = t;
      }
    }
    printf("{\"model\": \"%s\", \"op\": \"attention_prefill\", \"rows\": %d, \"nh\": %d, "
           "\"nkv\": %d, \"D\": %d, ",
           ps[si].model, N, nh, nkv, D);
    if (tp < 0 || ta < 0) {
      printf("\"error\": \"%s\"}\n", hq == NULL ? "out of host memory" : err);
    } else {
      double fma = (double)N * (N + 1) / 2 * nh * 2.0 * D;
      printf("\"prefill_us\": %.1f, \"paged_us\": %.1f, \"speedup\": %.2f, "
             "\"prefill_tfma_s\": %.2f, \"timing\": \"eager\"}\n",
             tp, ta, ta / tp, fma / (tp * 1e6));
    }
    fflush(stdout);
    dev->free(q), dev->free(out), dev->free(kc), dev->free(vc), dev->free(pages);
    dev->free(seq), dev->free(pos);
    free(hq);
  }
}

/* ---- chained products ---- */

enum { CH_LAYERS = 8 };
typedef struct {
  ask_chain_op_t op[CH_LAYERS][4];
  int F, C;
  float *g, *gu, *h;
  uint16_t *xs;
  int mlp;       /* the MLP as one op (norm_matmul_mlp; wd standing for down_t) */
  float *acc[2]; /* its accumulators, one a layer in turn (the other cleared) */
  int mlp_refused;
} chain_bench_t;

static void chain_layers(void *ud) {
  chain_bench_t *b = ud;
  for (int l = 0; l < CH_LAYERS; l++) {
    const ask_chain_op_t *o = b->op[l];
    if (dev->gemv_chain(o, 4))
      continue;
    dev->matmul_bf16(o[0].out, b->xs, o[0].x, o[0].w, NULL, 1, o[0].K, o[0].N);
    if (b->mlp) { /* the values grow without bound: only the time counts */
      float *a = b->acc[l & 1];
      if (!dev->norm_matmul_mlp(a, b->acc[(l + 1) & 1], o[1].xo, o[1].x, o[1].r, o[1].nw, 1e-5f,
                                0.0f, o[1].w, NULL, o[2].w, NULL, 1, o[1].K, b->F, ASK_ACT_SILU))
        b->mlp_refused = 1;
      dev->norm_matmul_rope_kv(o[3].out, o[3].xo, b->h, b->xs, o[3].x, a, o[3].nw, 1e-5f, 0.0f,
                               o[3].w, NULL, 1, o[3].K, o[3].kc, o[3].vc, o[3].pos, o[3].slot,
                               o[3].inv_freq, o[3].nh, o[3].nkv, o[3].D);
      continue;
    }
    if (dev->norm_matmul_glu(b->g, b->gu, o[1].xo, b->h, b->xs, o[1].x, o[1].r, o[1].nw, 1e-5f,
                             0.0f, o[1].w, NULL, 1, o[1].K, b->F, ASK_ACT_SILU))
      dev->matmul_bf16(o[2].out, b->xs, b->g, o[2].w, NULL, 1, b->F, b->C);
    else
      dev->glu_matmul_bf16(o[2].out, b->g, b->xs, b->gu, ASK_ACT_SILU, o[2].w, NULL, 1, b->F,
                           b->C);
    dev->norm_matmul_rope_kv(o[3].out, o[3].xo, b->h, b->xs, o[3].x, o[3].r, o[3].nw, 1e-5f,
                             0.0f, o[3].w, NULL, 1, o[3].K, o[3].kc, o[3].vc, o[3].pos,
                             o[3].slot, o[3].inv_freq, o[3].nh, o[3].nkv, o[3].D);
  }
}

/* Microseconds per layer of chain_layers captured in a graph, chain on or off. */
static double chain_time(chain_bench_t *b, int on, char *err, size_t errlen) {
  void *g = NULL;
  ask_cuda_set_chain(on);
  chain_layers(b); /* warm-up */
  if (dev->sync(err, errlen) != 0 || dev->graph_capture(&g, chain_layers, b, err, errlen) != 0)
    return -1;
  double t0 = 0;
  int rc = 0;
  for (int i = 0; i < 1 + LAUNCHES && rc == 0; i++) {
    if (i == 1)
      t0 = now_us();
    rc = dev->graph_launch(g, err, errlen);
  }
  rc = rc != 0 ? rc : dev->sync(err, errlen);
  double t1 = now_us();
  dev->graph_free(g);
  return rc != 0 ? -1 : (t1 - t0) / (LAUNCHES * CH_LAYERS);
}

static void bench_chain(void) {
  static const struct {
    const char *model;
    int C, nh, nkv, D, F;
  } ms[2] = {{"Llama-3.2-1B", 2048, 32, 8, 64, 8192}, {"gemma-2b", 2048, 8, 1, 256, 16384}};
  ask_cuda_set_gemv_rows(1);
  ask_cuda_set_fuse_rows(1);
  ask_cuda_set_gemv_max_n(65536);
  ask_cuda_set_fuse_glu(0);
  ask_cuda_set_chain(1);
  const char *state = ask_cuda_chain_state();
  for (int mi = 0; mi < 2; mi++) {
    const int C = ms[mi].C, F = ms[mi].F, nh = ms[mi].nh, nkv = ms[mi].nkv, D = ms[mi].D;
    const int qd = nh * D, N = (nh + 2 * nkv) * D;
    const size_t wl = (size_t)C * qd + (size_t)2 * F * C + (size_t)C * F + (size_t)N * C;
    chain_bench_t b;
    char err[256] = "";
    void *mem[13] = {NULL};
    memset(&b, 0, sizeof b);
    b.F = F, b.C = C;
    int32_t ints[2] = {77, 5};
    float *fh = malloc((size_t)2 * F * 4);
    for (int i = 0; fh != NULL && i < 2 * F; i++)
      fh[i] = (float)((i % 13) - 6) / 8.0f;
    uint16_t *w = NULL;
    float *x1, *x2, *r, *att, *qkv, *nw, *inv;
    int32_t *ip;
    uint16_t *kc, *vc;
    int ok = fh != NULL &&
             dev->alloc((void **)&w, (size_t)CH_LAYERS * wl * 2, err, sizeof err) == 0 &&
             fill_bf16(w, (size_t)CH_LAYERS * wl, err, sizeof err) == 0;
    size_t fl[11] = {(size_t)C, (size_t)C, (size_t)C, (size_t)qd, (size_t)N, (size_t)C,
                     (size_t)D, (size_t)2 * F, (size_t)F, (size_t)F, (size_t)C};
    for (int i = 0; ok && i < 11; i++)
      ok = dev->alloc(&mem[i], fl[i] * 4, err, sizeof err) == 0 &&
           dev->copy(mem[i], fh, fl[i] * 4, ASK_COPY_H2D, err, sizeof err) == 0;
    ok = ok && dev->alloc(&mem[11], (size_t)2 * 8 * nkv * D * 2 + 16, err, sizeof err) == 0 &&
         dev->alloc(&mem[12], (size_t)2 * C * 4, err, sizeof err) == 0 &&
         dev->copy(mem[12], fh, (size_t)2 * C * 4, ASK_COPY_H2D, err, sizeof err) == 0;
    if (!ok) {
      printf("{\"chain\": \"%s\", \"error\": \"%s\"}\n", ms[mi].model,
             fh == NULL ? "out of host memory" : err);
    } else {
      x1 = mem[0], x2 = mem[1], r = mem[2], att = mem[3], qkv = mem[4], nw = mem[5];
      inv = mem[6], b.gu = mem[7], b.g = mem[8], b.h = mem[9];
      ip = mem[10]; /* pos and slot */
      dev->copy(ip, ints, sizeof ints, ASK_COPY_H2D, err, sizeof err);
      kc = mem[11], vc = kc + (size_t)8 * nkv * D;
      b.xs = (uint16_t *)b.h; /* never used at one row */
      b.acc[0] = mem[12], b.acc[1] = (float *)mem[12] + C;
      for (int l = 0; l < CH_LAYERS; l++) {
        const uint16_t *wo = w + (size_t)l * wl, *wgu = wo + (size_t)C * qd,
                       *wd = wgu + (size_t)2 * F * C, *wq = wd + (size_t)C * F;
        ask_chain_op_t *o = b.op[l];
        o[0] = (ask_chain_op_t){.kind = ASK_CHAIN_MATMUL, .out = r, .x = att, .w = wo, .K = qd,
                                .N = C};
        o[1] = (ask_chain_op_t){.kind = ASK_CHAIN_NORM_MATMUL, .out = b.gu, .xo = x2, .x = x1,
                                .r = r, .nw = nw, .eps = 1e-5f, .w = wgu, .K = C, .N = 2 * F};
        o[2] = (ask_chain_op_t){.kind = ASK_CHAIN_GLU_MATMUL, .out = r, .g = b.g, .x = b.gu,
                                .act = ASK_ACT_SILU, .w = wd, .K = F, .N = C};
        o[3] = (ask_chain_op_t){.kind = ASK_CHAIN_NORM_ROPE_KV, .out = qkv, .xo = x1, .x = x2,
                                .r = r, .nw = nw, .eps = 1e-5f, .w = wq, .K = C, .kc = kc,
                                .vc = vc, .pos = ip, .slot = ip + 1, .inv_freq = inv, .nh = nh,
                                .nkv = nkv, .D = D};
      }
      double ts = chain_time(&b, 0, err, sizeof err);
      double tc = ts < 0 ? -1 : chain_time(&b, 1, err, sizeof err);
      double bytes = (double)wl * 2;
      printf("{\"chain\": \"%s\", \"layers\": %d, \"state\": \"%s\", ", ms[mi].model,
             CH_LAYERS, state);
      if (tc < 0)
        printf("\"error\": \"%s\"}\n", err);
      else
        printf("\"separate_us_per_layer\": %.2f, \"chained_us_per_layer\": %.2f, "
               "\"separate_gbps\": %.1f, \"chained_gbps\": %.1f, \"saved_us_per_layer\": %.2f}\n",
               ts, tc, bytes / (ts * 1e3), bytes / (tc * 1e3), ts - tc);
      fflush(stdout);
      /* the layers with the MLP as one launch (gemv_mlp.cu, ASK_FUSE_MLP) */
      if (ts >= 0) {
        b.mlp = 1;
        double tm = chain_time(&b, 0, err, sizeof err);
        b.mlp = 0;
        if (tm < 0 || b.mlp_refused)
          printf("{\"mlp\": \"%s\", \"error\": \"%s\"}\n", ms[mi].model,
                 tm < 0 ? err : "norm_matmul_mlp did not take the shape");
        else
          printf("{\"mlp\": \"%s\", \"us_per_layer\": %.2f, \"separate_us_per_layer\": %.2f, "
                 "\"gbps\": %.1f, \"saved_us_per_layer\": %.2f}\n",
                 ms[mi].model, tm, ts, bytes / (tm * 1e3), ts - tm);
        fflush(stdout);
      }
    }
    for (int i = 0; i < 13; i++)
      dev->free(mem[i]);
    dev->free(w);
    free(fh);
  }
  ask_cuda_set_chain(0);
}

int main(void) {
  const ask_ops_t *ops = ask_cuda_ops();
  static double us[NSHAPES][NT][2];
  char err[256] = "";
  if (ops == NULL) {
    printf("skip: no CUDA device (%s)\n", ask_cuda_unavailable());
    return 0;
  }
  dev = ops->dev;
  ask_cuda_set_gemv_max_n(1 << 30); /* "gemv" means the kernel on every shape, lm_head too */
  ask_cuda_set_fuse_glu(1);
  printf("{\"device\": \"%s\", \"calls_per_graph\": %d, \"launches\": %d}\n",
         ask_cuda_device_name(), REPS, LAUNCHES);
  for (int si = 0; si < NSHAPES; si++) {
    int N = shapes[si].N, K = shapes[si].K;
    size_t wn = (size_t)N * K, wbytes = wn * 2;
    size_t copies = (((size_t)256 << 20) + wbytes - 1) / wbytes;
    bench_t b = {NULL, NULL, NULL, NULL, copies > 16 ? 16 : copies, wn, 0, K, N, OP_MATMUL,
                 NULL, NULL, NULL, NULL, NULL};
    float *xh = malloc((size_t)16 * K * sizeof *xh);
    for (size_t i = 0; xh != NULL && i < (size_t)16 * K; i++)
      xh[i] = (float)((int)(i % 17) - 8) / 16.0f;
    if (xh == NULL || dev->alloc((void **)&b.w, b.copies * wbytes, err, sizeof err) != 0 ||
        dev->alloc((void **)&b.x, (size_t)16 * K * 4, err, sizeof err) != 0 ||
        dev->alloc((void **)&b.xs, (size_t)16 * K * 2, err, sizeof err) != 0 ||
        dev->alloc((void **)&b.out, (size_t)16 * N * 4, err, sizeof err) != 0 ||
        fill_bf16(b.w, b.copies * wn, err, sizeof err) != 0 ||
        dev->copy(b.x, xh, (size_t)16 * K * 4, ASK_COPY_H2D, err, sizeof err) != 0) {
      printf("{\"model\": \"%s\", \"layer\": \"%s\", \"error\": \"%s\"}\n", shapes[si].model,
             shapes[si].layer, xh == NULL ? "out of host memory" : err);
      for (int ti = 0; ti < NT; ti++)
        us[si][ti][0] = us[si][ti][1] = -1;
    } else {
      for (int ti = 0; ti < NT; ti++) {
        for (int path = 0; path < 2; path++) {
          const char *how = "?";
          b.T = Ts[ti];
          ask_cuda_set_gemv_rows(path == 0 ? 16 : 0);
          double t = bench_time(&b, &how, err, sizeof err);
          double bytes = (double)wbytes + (double)b.T * K * 4 + (double)b.T * N * 4;
          us[si][ti][path] = t;
          printf("{\"model\": \"%s\", \"layer\": \"%s\", \"N\": %d, \"K\": %d, \"T\": %d, "
                 "\"path\": \"%s\", ",
                 shapes[si].model, shapes[si].layer, N, K, b.T, path == 0 ? "gemv" : "cublaslt");
          if (t < 0)
            printf("\"error\": \"%s\"}\n", err);
          else
            printf("\"us\": %.2f, \"gbps\": %.1f, \"timing\": \"%s\"}\n", t, bytes / (t * 1e3),
                   how);
          fflush(stdout);
        }
      }
    }
    dev->free(b.w), dev->free(b.x), dev->free(b.xs), dev->free(b.out);
    free(xh);
  }
  /* gemv_rows: the largest T such that at every tested T up to it the own
   * kernel is faster on more than half of the shapes. */
  int rec = 0;
  printf("{\"gemv_wins\": {");
  for (int ti = 0, prefix = 1; ti < NT; ti++) {
    int wins = 0;
    for (int si = 0; si < NSHAPES; si++)
      wins += us[si][ti][0] > 0 && (us[si][ti][1] < 0 || us[si][ti][0] < us[si][ti][1]);
    printf("%s\"%d\": %d", ti ? ", " : "", Ts[ti], wins);
    prefix = prefix && 2 * wins > NSHAPES;
    if (prefix)
      rec = Ts[ti];
  }
  printf("}, \"shapes\": %d, \"recommended_gemv_rows\": %d}\n", NSHAPES, rec);
  ask_cuda_set_gemv_rows(16);
  bench_fusions();
  bench_prefill();
  bench_chain();
  return 0;
}

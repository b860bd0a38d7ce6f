/* test_cuda_ops.c — every op of the CUDA backend (kernels/cuda) against its
 * kernels/ref twin on random inputs, on the first visible GPU.
 *
 * Tolerances (|got - want| <= atol + rtol * |want|, first mismatches printed):
 *   f32 element-wise and per-row ops (embedding, norms, RoPE, activations,
 *   softmax, add):                       atol 1e-5, rtol 1e-5
 *   f32 reductions in another order (attention, f32 GEMM through cuBLASLt
 *   without TF32):                       atol 1e-4, rtol 1e-4
 *   bf16 GEMMs (weights bf16, compared with the reference on the same
 *   bf16-rounded weights; x is rounded to bf16 on the cuBLASLt path):
 *                                        max |got - want| <= 1e-2 * max |want|
 *   argmax, greedy and seeded sampling:  the same token ids and generator
 *   state; sampled distributions 1e-5.
 * Without CUDA in the build the program says so and passes; without a usable
 * device every test skips, naming the CUDA call that said why. The GPU run
 * on a bare machine is tests/gpu/run.sh.
 */
#define TEST_TIMEOUT 120
#include "test.h"

#ifndef AS_HAVE_CUDA

int main(void) {
  printf("test_cuda_ops: skipped: built without CUDA (nvcc not found, AS_CUDA=OFF or "
         "AS_SANITIZE=ON)\n");
  return 0;
}

#else

#include <math.h>

#include "ask_cuda.h"
#include "kernels.h"
#include "runtime.h"

static const ask_ops_t *ref, *cu;
static const ask_dev_t *dev;

/* Skips the test when no device can be used; sets ref, cu and dev. */
#define NEED_DEVICE()                                                          \
  do {                                                                         \
    ref = ask_ref_ops();                                                       \
    cu = ask_cuda_ops();                                                       \
    if (cu == NULL) {                                                          \
      char t__why[320];                                                        \
      snprintf(t__why, sizeof t__why, "no CUDA device (%s)", ask_cuda_unavailable()); \
      SKIP(t__why);                                                            \
    }                                                                          \
    dev = cu->dev;                                                             \
  } while (0)

static uint64_t rs = 0x243f6a8885a308d3ull;

static float frand(void) { /* uniform in [-1, 1) */
  rs ^= rs >> 12;
  rs ^= rs << 25;
  rs ^= rs >> 27;
  return (float)((double)((rs * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rnd(size_t n, float mul) {
  float *p = malloc(n * sizeof(float) + 4);
  for (size_t i = 0; i < n; i++)
    p[i] = frand() * mul;
  return p;
}

static uint16_t to_bf16(float f) { /* round to nearest even */
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Device copy of host bytes (aborts the test process on failure: tests only). */
static void *up(const void *h, size_t bytes) {
  void *d = NULL;
  char err[256];
  if (dev->alloc(&d, bytes, err, sizeof err) != 0 ||
      (h != NULL && dev->copy(d, h, bytes, ASK_COPY_H2D, err, sizeof err) != 0)) {
    fprintf(stderr, "upload: %s\n", err);
    exit(1);
  }
  return d;
}

static void *down(const void *d, size_t bytes) {
  void *h = malloc(bytes + 4);
  char err[256];
  int rc = dev->sync(err, sizeof err);
  if (rc != 0 || dev->copy(h, d, bytes, ASK_COPY_D2H, err, sizeof err) != 0) {
    fprintf(stderr, "download: %s (%s)\n", err, as_strerror(rc));
    exit(1);
  }
  return h;
}

/* Index of the first value outside atol + rtol * |want| (printing up to 3), or -1. */
static long mismatch(const float *got, const float *want, size_t n, double atol, double rtol) {
  long first = -1;
  int shown = 0;
  for (size_t i = 0; i < n; i++) {
    double tol = atol + rtol * fabs((double)want[i]);
    if (!(fabs((double)got[i] - (double)want[i]) <= tol)) {
      if (shown++ < 3)
        fprintf(stderr, "  [%zu] got %.9g want %.9g\n", i, got[i], want[i]);
      if (first < 0)
        first = (long)i;
    }
  }
  return first;
}

#define ASSERT_NEAR(got, want, n, atol, rtol) ASSERT_EQ(mismatch(got, want, n, atol, rtol), -1)

TEST(test_cuda_device) {
  NEED_DEVICE();
  printf("  device: %s\n", ask_cuda_device_name());
  ASSERT_STR_EQ(cu->name, "cuda");
  ASSERT_TRUE(dev != NULL && ref->dev == NULL);
}

TEST(test_cuda_embedding) {
  NEED_DEVICE();
  int V = 300, C = 130, T = 9;
  int32_t ids[9] = {3, 0, 299, 3, 17, 150, 2, 2, 298};
  float *tab = rnd((size_t)V * C, 2), *want = malloc((size_t)T * C * 4);
  uint16_t *tab16 = malloc((size_t)V * C * 2);
  for (size_t i = 0; i < (size_t)V * C; i++) {
    tab16[i] = to_bf16(tab[i]);
  }
  float *dt = up(tab, (size_t)V * C * 4), *dout = up(NULL, (size_t)T * C * 4);
  uint16_t *dt16 = up(tab16, (size_t)V * C * 2);
  int32_t *dids = up(ids, sizeof ids);
  for (int bf = 0; bf < 2; bf++) {
    for (float scale = 1.0f; scale < 3.0f; scale += 1.5f) {
      if (bf) {
        for (size_t i = 0; i < (size_t)V * C; i++)
          tab[i] = from_bf16(tab16[i]);
        dev->embedding_bf16(dout, dt16, dids, T, C, scale);
      } else {
        cu->embedding(dout, dt, dids, T, C, scale);
      }
      ref->embedding(want, tab, ids, T, C, scale);
      float *got = down(dout, (size_t)T * C * 4);
      ASSERT_NEAR(got, want, (size_t)T * C, 0, 0);
      free(got);
    }
  }
  dev->free(dt), dev->free(dt16), dev->free(dout), dev->free(dids);
  free(tab), free(tab16), free(want);
}

TEST(test_cuda_norms) {
  NEED_DEVICE();
  int T = 5, C = 2048;
  size_t n = (size_t)T * C;
  float *x = rnd(n, 3), *r = rnd(n, 1), *w = rnd(C, 1), *b = rnd(C, 1);
  float *want = malloc(n * 4), *xs = malloc(n * 4);
  float *dx = up(x, n * 4), *dr = up(r, n * 4), *dw = up(w, C * 4), *db = up(b, C * 4),
        *dout = up(NULL, n * 4);
  for (int off = 0; off < 2; off++) { /* Llama, then Gemma's 1 + w */
    ref->rmsnorm(want, x, w, T, C, 1e-6f, (float)off);
    cu->rmsnorm(dout, dx, dw, T, C, 1e-6f, (float)off);
    float *got = down(dout, n * 4);
    ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
    free(got);
  }
  cu->rmsnorm(dx, dx, dw, T, C, 1e-5f, 0.0f); /* in place */
  ref->rmsnorm(want, x, w, T, C, 1e-5f, 0.0f);
  float *got = down(dx, n * 4);
  ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
  free(got);
  dev->copy(dx, x, n * 4, ASK_COPY_H2D, NULL, 0);

  /* Fused residual: x += r, out = rmsnorm(x) (Gemma offset). */
  ref->add(xs, x, r, n);
  ref->rmsnorm(want, xs, w, T, C, 1e-6f, 1.0f);
  dev->add_rmsnorm(dout, dx, dr, dw, T, C, 1e-6f, 1.0f);
  got = down(dout, n * 4);
  ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
  free(got);
  got = down(dx, n * 4);
  ASSERT_NEAR(got, xs, n, 0, 0);
  free(got);

  ref->layernorm(want, x, w, b, T, C, 1e-12f);
  dev->copy(dx, x, n * 4, ASK_COPY_H2D, NULL, 0);
  cu->layernorm(dout, dx, dw, db, T, C, 1e-12f);
  got = down(dout, n * 4);
  ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
  free(got);
  dev->free(dx), dev->free(dr), dev->free(dw), dev->free(db), dev->free(dout);
  free(x), free(r), free(w), free(b), free(want), free(xs);
}

TEST(test_cuda_rope_kv) {
  NEED_DEVICE();
  int T = 6, nh = 8, nkv = 2, D = 64, qd = nh * D, kvd = nkv * D, cap = 40;
  int32_t pos[6] = {0, 1, 2, 17, 1000, 8191}, slot[6] = {5, 6, 7, 30, 0, 39};
  float *invf = malloc(D / 2 * 4);
  for (int i = 0; i < D / 2; i++)
    invf[i] = (float)pow(10000.0, -2.0 * i / D);
  float *q = rnd((size_t)T * qd, 2), *k = rnd((size_t)T * kvd, 2), *v = rnd((size_t)T * kvd, 2);
  float *cache0 = rnd((size_t)cap * kvd, 1);
  float *dq = up(q, (size_t)T * qd * 4), *dk = up(k, (size_t)T * kvd * 4),
        *dv = up(v, (size_t)T * kvd * 4), *dkc = up(cache0, (size_t)cap * kvd * 4),
        *dvc = up(cache0, (size_t)cap * kvd * 4), *dinv = up(invf, D / 2 * 4);
  int32_t *dpos = up(pos, sizeof pos), *dslot = up(slot, sizeof slot);

  /* The table's rope on a strided view: q rows of a (T, qd + kvd) block. */
  float *blk = rnd((size_t)T * (qd + kvd), 2), *dblk = up(blk, (size_t)T * (qd + kvd) * 4);
  ref->rope(blk, pos, invf, T, nh, D, qd + kvd);
  cu->rope(dblk, dpos, dinv, T, nh, D, qd + kvd);
  float *got = down(dblk, (size_t)T * (qd + kvd) * 4);
  ASSERT_NEAR(got, blk, (size_t)T * (qd + kvd), 1e-5, 1e-5);
  free(got);

  /* Fused: q rotated in place, rotated k and v land in cache rows slot[t]. */
  dev->rope_kv(dq, dkc, dvc, dk, dv, dpos, dslot, dinv, T, nh, nkv, D);
  ref->rope(q, pos, invf, T, nh, D, qd);
  ref->rope(k, pos, invf, T, nkv, D, kvd);
  float *kc = malloc((size_t)cap * kvd * 4), *vc = malloc((size_t)cap * kvd * 4);
  memcpy(kc, cache0, (size_t)cap * kvd * 4);
  memcpy(vc, cache0, (size_t)cap * kvd * 4);
  for (int t = 0; t < T; t++) {
    memcpy(kc + (size_t)slot[t] * kvd, k + (size_t)t * kvd, (size_t)kvd * 4);
    memcpy(vc + (size_t)slot[t] * kvd, v + (size_t)t * kvd, (size_t)kvd * 4);
  }
  got = down(dq, (size_t)T * qd * 4);
  ASSERT_NEAR(got, q, (size_t)T * qd, 1e-5, 1e-5);
  free(got);
  got = down(dkc, (size_t)cap * kvd * 4);
  ASSERT_NEAR(got, kc, (size_t)cap * kvd, 1e-5, 1e-5);
  free(got);
  got = down(dvc, (size_t)cap * kvd * 4);
  ASSERT_NEAR(got, vc, (size_t)cap * kvd, 0, 0);
  free(got);
  dev->free(dq), dev->free(dk), dev->free(dv), dev->free(dkc), dev->free(dvc), dev->free(dinv);
  dev->free(dpos), dev->free(dslot), dev->free(dblk);
  free(q), free(k), free(v), free(cache0), free(kc), free(vc), free(invf), free(blk);
}

TEST(test_cuda_activations) {
  NEED_DEVICE();
  size_t n = 100003;
  float *g = rnd(n, 6), *u = rnd(n, 2), *want = malloc(n * 4);
  float *dg = up(g, n * 4), *du = up(u, n * 4), *dout = up(NULL, n * 4);
  for (int act = 0; act < 3; act++) {
    ref->glu(want, g, u, n, act);
    cu->glu(dout, dg, du, n, act);
    float *got = down(dout, n * 4);
    ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
    free(got);
    ref->activate(want, g, n, act);
    cu->activate(dout, dg, n, act);
    got = down(dout, n * 4);
    ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
    free(got);
  }
  ref->add(want, g, u, n);
  cu->add(dout, dg, du, n);
  float *got = down(dout, n * 4);
  ASSERT_NEAR(got, want, n, 0, 0);
  free(got);
  int T = 3, N = 50000;
  ref->softmax(want, g, T, N);
  cu->softmax(dout, dg, T, N);
  got = down(dout, (size_t)T * N * 4);
  ASSERT_NEAR(got, want, (size_t)T * N, 1e-7, 1e-5);
  free(got);
  dev->free(dg), dev->free(du), dev->free(dout);
  free(g), free(u), free(want);
}

/* One attention case: T queries over L keys, against kernels/ref. */
static long attention_case(int T, int L, int nh, int nkv, int D, int causal, int masked) {
  int qd = nh * D, kvd = nkv * D;
  float *q = rnd((size_t)T * qd, 1), *k = rnd((size_t)L * kvd, 1), *v = rnd((size_t)L * kvd, 1);
  float *want = malloc((size_t)T * qd * 4), *scr = malloc((size_t)T * L * 4);
  int32_t *mask = malloc((size_t)L * 4);
  for (int j = 0; j < L; j++)
    mask[j] = j % 5 != 3;
  float scale = 1.0f / sqrtf((float)D);
  ref->attention(want, scr, q, k, v, masked ? mask : NULL, T, L, nh, nkv, D, kvd, scale, causal);
  float *dq = up(q, (size_t)T * qd * 4), *dk = up(k, (size_t)L * kvd * 4),
        *dv = up(v, (size_t)L * kvd * 4), *dout = up(NULL, (size_t)T * qd * 4),
        *dscr = up(NULL, (size_t)T * L * 4);
  int32_t *dmask = up(mask, (size_t)L * 4);
  cu->attention(dout, dscr, dq, dk, dv, masked ? dmask : NULL, T, L, nh, nkv, D, kvd, scale,
                causal);
  float *got = down(dout, (size_t)T * qd * 4);
  long bad = mismatch(got, want, (size_t)T * qd, 1e-4, 1e-4);
  if (bad >= 0)
    fprintf(stderr, "  attention T=%d L=%d nh=%d nkv=%d D=%d causal=%d mask=%d\n", T, L, nh, nkv,
            D, causal, masked);
  dev->free(dq), dev->free(dk), dev->free(dv), dev->free(dout), dev->free(dscr), dev->free(dmask);
  free(q), free(k), free(v), free(want), free(scr), free(mask), free(got);
  return bad;
}

TEST(test_cuda_attention) {
  NEED_DEVICE();
  ASSERT_EQ(attention_case(1, 37, 4, 4, 64, 1, 0), -1);      /* decode, multi-head */
  ASSERT_EQ(attention_case(1, 1500, 8, 2, 64, 1, 0), -1);    /* decode, GQA, 2 splits */
  ASSERT_EQ(attention_case(1, 8192, 4, 1, 128, 1, 0), -1);   /* long, MQA, 15 splits */
  ASSERT_EQ(attention_case(2, 4000, 8, 1, 256, 1, 0), -1);   /* gemma-2b heads, D = 256 */
  ASSERT_EQ(attention_case(7, 20, 4, 2, 32, 1, 0), -1);      /* prefill chunk over a cache */
  ASSERT_EQ(attention_case(16, 16, 12, 12, 32, 0, 1), -1);   /* BERT: mask, no causality */
  ASSERT_EQ(attention_case(3, 9, 2, 1, 80, 1, 0), -1);       /* D not a multiple of 32 */
}

/* out (T,N) from the f32 or bf16 path against ref->matmul on the same
 * (bf16-rounded when bf16) weights; returns -1 when within tolerance. */
static long matmul_case(int bf16, int T, int K, int N, int with_bias, size_t woff) {
  float *x = rnd((size_t)T * K, 1), *w = rnd((size_t)N * K + 8, 0.1f), *b = rnd(N, 1);
  float *want = malloc((size_t)T * N * 4);
  uint16_t *w16 = malloc(((size_t)N * K + 8) * 2);
  long bad = -1;
  for (size_t i = 0; i < (size_t)N * K + 8; i++) {
    w16[i] = to_bf16(w[i]);
    if (bf16)
      w[i] = from_bf16(w16[i]);
  }
  ref->matmul(want, x, w + woff, with_bias ? b : NULL, T, K, N);
  float *dx = up(x, (size_t)T * K * 4), *db = up(b, (size_t)N * 4),
        *dout = up(NULL, (size_t)T * N * 4), *dw = NULL;
  uint16_t *dw16 = NULL, *dxs = up(NULL, (size_t)T * K * 2);
  if (bf16) {
    dw16 = up(w16, ((size_t)N * K + 8) * 2);
    dev->matmul_bf16(dout, dxs, dx, dw16 + woff, with_bias ? db : NULL, T, K, N);
  } else {
    dw = up(w, ((size_t)N * K + 8) * 4);
    cu->matmul(dout, dx, dw + woff, with_bias ? db : NULL, T, K, N);
  }
  float *got = down(dout, (size_t)T * N * 4);
  if (bf16) {
    double mx = 0, md = 0;
    for (size_t i = 0; i < (size_t)T * N; i++) {
      mx = fmax(mx, fabs(want[i]));
      md = fmax(md, fabs((double)got[i] - want[i]));
    }
    if (!(md <= 1e-2 * mx)) {
      fprintf(stderr, "  bf16 T=%d K=%d N=%d: max diff %g, max |want| %g\n", T, K, N, md, mx);
      bad = 0;
    }
  } else {
    bad = mismatch(got, want, (size_t)T * N, 1e-4, 1e-4);
    if (bad >= 0)
      fprintf(stderr, "  f32 T=%d K=%d N=%d\n", T, K, N);
  }
  dev->free(dx), dev->free(db), dev->free(dout), dev->free(dw), dev->free(dw16), dev->free(dxs);
  free(x), free(w), free(b), free(want), free(w16), free(got);
  return bad;
}

TEST(test_cuda_matmul_f32) {
  NEED_DEVICE();
  ASSERT_EQ(matmul_case(0, 1, 256, 384, 0, 0), -1);
  ASSERT_EQ(matmul_case(0, 5, 512, 200, 1, 0), -1);
  ASSERT_EQ(matmul_case(0, 64, 192, 130, 1, 1), -1); /* w only 4-byte aligned */
}

TEST(test_cuda_matmul_bf16) {
  NEED_DEVICE();
  for (int pass = 0; pass < 2; pass++) { /* own matrix-vector kernel, then cuBLASLt only */
    ask_cuda_set_gemv_rows(pass == 0 ? 16 : 0);
    ASSERT_EQ(matmul_case(1, 1, 2048, 2560, 0, 0), -1);
    ASSERT_EQ(matmul_case(1, 3, 1024, 1000, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 16, 512, 640, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 2, 100, 77, 1, 1), -1); /* K % 8 != 0, w misaligned */
  }
  ASSERT_EQ(matmul_case(1, 17, 2048, 512, 1, 0), -1);
  ASSERT_EQ(matmul_case(1, 128, 1024, 1536, 0, 0), -1);
  int plans = ask_cuda_plan_count();
  ASSERT_EQ(matmul_case(1, 128, 1024, 1536, 0, 0), -1); /* same shape: the cached plan */
  ASSERT_EQ(ask_cuda_plan_count(), plans);
}

TEST(test_cuda_argmax) {
  NEED_DEVICE();
  int n = 70001, T = 4;
  float *x = rnd((size_t)T * n, 5);
  x[10] = 9.0f, x[20000] = 9.0f;             /* row 0: tie, the first wins */
  x[n + 5] = NAN, x[n + 6] = 100.0f;          /* row 1: NaN never chosen */
  for (int i = 0; i < n; i++)                 /* row 2: all equal */
    x[2 * (size_t)n + i] = -1.0f;
  x[3 * (size_t)n] = NAN;                     /* row 3: leading NaN */
  float *dx = up(x, (size_t)T * n * 4);
  int32_t *dids = up(NULL, (size_t)T * 4);
  dev->argmax_rows(dids, dx, T, n);
  int32_t *ids = down(dids, (size_t)T * 4);
  for (int t = 0; t < T; t++) {
    ASSERT_EQ(ids[t], ref->argmax(x + (size_t)t * n, n));
    ASSERT_EQ(cu->argmax(dx + (size_t)t * n, n), ids[t]);
  }
  ASSERT_EQ(ids[0], 10);
  ASSERT_EQ(ids[1], 6);
  dev->free(dx), dev->free(dids);
  free(x), free(ids);
}

TEST(test_cuda_sample) {
  NEED_DEVICE();
  static const struct {
    float temp;
    int k;
    float p;
  } cs[] = {{0.0f, 0, 1.0f}, {1.0f, 0, 1.0f}, {0.7f, 0, 1.0f}, {1.0f, 40, 1.0f},
            {0.8f, 50, 0.9f}, {1.3f, 0, 0.5f}, {1.0f, 1, 1.0f},  {1.0f, 0, 0.0f}};
  int sizes[2] = {1000, 50000};
  for (int si = 0; si < 2; si++) {
    int n = sizes[si];
    float *x = rnd(n, 4), *pw = malloc((size_t)n * 4);
    double *w = malloc((size_t)n * 8);
    int32_t *idx = malloc((size_t)n * 4);
    x[n / 2] = x[n / 3]; /* a tie */
    float *dx = up(x, (size_t)n * 4), *dp = up(NULL, (size_t)n * 4);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
      for (int draw = 0; draw < 20; draw++) {
        uint64_t r1 = ask_rng_seed(1000 * c + draw), r2 = r1;
        int want = ref->sample(pw, w, idx, x, n, cs[c].temp, cs[c].k, cs[c].p, &r1);
        int got = cu->sample(dp, NULL, NULL, dx, n, cs[c].temp, cs[c].k, cs[c].p, &r2);
        float *gp = down(dp, (size_t)n * 4);
        long bad = mismatch(gp, pw, n, 1e-5, 1e-5);
        if (got != want || r1 != r2 || bad >= 0)
          fprintf(stderr, "  n=%d temp=%g k=%d p=%g draw %d: token %d want %d\n", n, cs[c].temp,
                  cs[c].k, cs[c].p, draw, got, want);
        free(gp);
        ASSERT_EQ(bad, -1);
        ASSERT_EQ(got, want);
        ASSERT_UEQ(r1, r2);
      }
    }
    /* Batched rows with their own parameters stay on the device. */
    int T = 8;
    float *xs = malloc((size_t)T * n * 4), temps[8], ps[8];
    int32_t ks[8];
    uint64_t rng[8], rref[8];
    for (int t = 0; t < T; t++) {
      memcpy(xs + (size_t)t * n, x, (size_t)n * 4);
      xs[(size_t)t * n + t] += 3.0f;
      temps[t] = cs[t].temp, ks[t] = cs[t].k, ps[t] = cs[t].p;
      rng[t] = rref[t] = ask_rng_seed(77 + t);
    }
    float *dxs = up(xs, (size_t)T * n * 4), *dtemp = up(temps, sizeof temps),
          *dps = up(ps, sizeof ps);
    int32_t *dks = up(ks, sizeof ks), *dids = up(NULL, sizeof ks);
    uint64_t *drng = up(rng, sizeof rng);
    dev->sample_rows(dids, NULL, dxs, dtemp, dks, dps, drng, T, n);
    int32_t *ids = down(dids, sizeof ks);
    uint64_t *rg = down(drng, sizeof rng);
    for (int t = 0; t < T; t++) {
      int want = ref->sample(NULL, w, idx, xs + (size_t)t * n, n, temps[t], ks[t], ps[t], &rref[t]);
      ASSERT_EQ(ids[t], want);
      ASSERT_UEQ(rg[t], rref[t]);
    }
    dev->free(dxs), dev->free(dtemp), dev->free(dps), dev->free(dks), dev->free(dids);
    dev->free(drng), dev->free(dx), dev->free(dp);
    free(xs), free(ids), free(rg), free(x), free(pw), free(w), free(idx);
  }
}

TEST(test_cuda_errors) {
  NEED_DEVICE();
  char err[256] = "";
  void *p = (void *)1;
  /* Out of memory is an error code with the call named, never an abort. */
  ASSERT_EQ(dev->alloc(&p, (size_t)1 << 50, err, sizeof err), AS_ENOMEM);
  ASSERT_TRUE(p == NULL);
  ASSERT_TRUE(strstr(err, "cudaMalloc") != NULL);
  printf("  %s\n", err);
  /* A misaligned operand is refused; the failure waits for sync, then clears. */
  float *d = up(NULL, 4096);
  cu->matmul(d, (const float *)((char *)d + 2), d + 256, NULL, 2, 8, 8);
  cu->add(d, d, d, 16); /* skipped after the failure */
  err[0] = '\0';
  ASSERT_EQ(dev->sync(err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "matmul") != NULL);
  printf("  %s\n", err);
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  dev->free(d);
}

TEST_MAIN(test_cuda_device, test_cuda_embedding, test_cuda_norms, test_cuda_rope_kv,
          test_cuda_activations, test_cuda_attention, test_cuda_matmul_f32,
          test_cuda_matmul_bf16, test_cuda_argmax, test_cuda_sample, test_cuda_errors)

#endif /* AS_HAVE_CUDA */

/* test_cuda_ops.c — every op of the CUDA backend (kernels/cuda) on the first
 * visible GPU, on random inputs: the ops of ask_ops_t against kernels/ref
 * (ask_ref_ops), the device-only ops of ask_dev_t against their plain-C
 * twins (ask_refdev_ops()->dev, kernels/ref/dev.c, run on host copies of
 * the same inputs), and captured steps (CUDA graphs) against the same ops
 * run directly.
 *
 * Tolerances (|got - want| <= atol + rtol * |want|, first mismatches printed):
 *   f32 element-wise and per-row ops (embedding, norms, RoPE, activations,
 *   glu_rows, softmax, add):             atol 1e-5, rtol 1e-5
 *   f32 reductions in another order (attention, f32 GEMM through cuBLASLt
 *   without TF32):                       atol 1e-4, rtol 1e-4
 *   attention_paged (same bf16 cache contents on both sides):
 *                                        max |got - want| <= 1e-4 * max |want|,
 *                                        padding rows exactly 0
 *   rope_kv's bf16 cache rows:           the same bf16 bits, except a value
 *     whose exact rotation lies within 1e-6 * (|x0| + |x1|) of the midpoint
 *     of two neighbouring bf16 values (a tie up to f32 rounding) may take
 *     either; v rows and rows not written: the same bits
 *   bf16 GEMMs (weights bf16, compared with the reference on the same
 *   bf16-rounded weights; x is rounded to bf16 on the cuBLASLt path):
 *                                        max |got - want| <= 1e-2 * max |want|
 *   the decode fusions (norm_matmul_bf16, glu_matmul_bf16) against their
 *   twins: 1e-4 * max |want| where the fused kernels run (x stays f32),
 *   1e-2 where the separate ops end in cuBLASLt; the new residual xo bit
 *   for bit
 *   argmax, greedy and seeded sampling:  the same token ids and generator
 *   state; sampled distributions 1e-5.
 *   a launched graph against the same ops run directly: the same bytes.
 * Without CUDA in the build the program says so and passes; without a usable
 * device every test skips, naming the CUDA call that said why. The GPU run
 * on a bare machine is tests/gpu/run.sh. Built as test_cuda_ops_emu
 * (AS_CUDAEMU_BACKEND) the same tests run on the CPU against the emulated
 * backend (tests/cudaemu: kernels/cuda's own sources on the emulated runtime
 * and a stand-in cuBLASLt); there test_cuda_pdl's chain is shorter and
 * narrower (the emulator runs it serially: its bits prove the waits are in
 * place, not the GPU's overlap).
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
#include "kernel_data.h"
#include "runtime.h"

static const ask_ops_t *ref, *cu;
static const ask_dev_t *dev, *twin;

/* Skips the test when no device can be used; sets ref, cu, dev and twin. */
#define NEED_DEVICE()                                                          \
  do {                                                                         \
    ref = ask_ref_ops();                                                       \
    twin = ask_refdev_ops()->dev;                                              \
    cu = ask_cuda_ops();                                                       \
    if (cu == NULL) {                                                          \
      char t__why[320];                                                        \
      snprintf(t__why, sizeof t__why, "no CUDA device (%s)", ask_cuda_unavailable()); \
      SKIP(t__why);                                                            \
    }                                                                          \
    dev = cu->dev;                                                             \
    /* every kernel reachable, whatever the measured defaults leave out */     \
    ask_cuda_set_gemv_max_n(1 << 30);                                          \
    ask_cuda_set_fuse_glu(1);                                                  \
  } while (0)


static float *rnd(size_t n, float mul) {
  float *p = malloc(n * sizeof(float) + 4);
  for (size_t i = 0; i < n; i++)
    p[i] = frand() * mul;
  return p;
}


static uint16_t *rnd16(size_t n) { /* bf16 values in [-1, 1) */
  uint16_t *p = malloc(n * 2 + 4);
  for (size_t i = 0; i < n; i++)
    p[i] = to_bf16(frand());
  return p;
}

static void *hdup(const void *p, size_t bytes) {
  void *d = malloc(bytes + 4);
  memcpy(d, p, bytes);
  return d;
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

/* Overwrites device bytes d with host bytes h. */
static void put(void *d, const void *h, size_t bytes) {
  char err[256];
  if (dev->copy(d, h, bytes, ASK_COPY_H2D, err, sizeof err) != 0) {
    fprintf(stderr, "upload: %s\n", err);
    exit(1);
  }
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

/* max |got - want| / max |want| over n values (NaN anywhere: infinity). */
static double max_rel(const float *got, const float *want, size_t n) {
  double mx = 0, md = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - (double)want[i]);
    if (d != d)
      return INFINITY;
    mx = fmax(mx, fabs((double)want[i]));
    md = fmax(md, d);
  }
  return mx > 0 ? md / mx : md;
}

/* First index where the bf16 arrays differ beyond the tie rule (printing up
 * to 3), or -1. exact (NaN where unknown) and win, when not NULL, give the
 * unrounded value and its f32 error window: two neighbouring bf16 values
 * are both right when exact lies within win of their midpoint. */
static long bf16_mismatch(const uint16_t *got, const uint16_t *want, const float *exact,
                          const float *win, size_t n) {
  long first = -1;
  int shown = 0;
  for (size_t i = 0; i < n; i++) {
    if (got[i] == want[i])
      continue;
    if (exact != NULL && exact[i] == exact[i] && ((got[i] ^ want[i]) & 0x8000u) == 0 &&
        abs((int)got[i] - (int)want[i]) == 1) {
      double mid = 0.5 * ((double)from_bf16(got[i]) + (double)from_bf16(want[i]));
      if (fabs((double)exact[i] - mid) <= (double)win[i])
        continue;
    }
    if (shown++ < 3)
      fprintf(stderr, "  [%zu] got 0x%04x (%.6g) want 0x%04x (%.6g) exact %.9g\n", i, got[i],
              from_bf16(got[i]), want[i], from_bf16(want[i]), exact ? exact[i] : NAN);
    if (first < 0)
      first = (long)i;
  }
  return first;
}

/* RoPE inverse frequencies for head dim D. */
static float *inv_freq(int D) {
  float *f = malloc((size_t)D / 2 * 4 + 4);
  for (int i = 0; i < D / 2; i++)
    f[i] = (float)pow(10000.0, -2.0 * i / D);
  return f;
}

/* The exact (f32, unrounded) rotated k that rope_kv writes to the cache
 * rows slot[t] (cap rows of nkv*D), with each value's tie window; NaN
 * where no row is written. */
static void kv_exact(float *exact, float *win, const float *qkv, const int32_t *pos,
                     const int32_t *slot, const float *invf, int T, int nh, int nkv, int D,
                     int stride, int cap) {
  int kvd = nkv * D, half = D / 2;
  float *rot = hdup(qkv, (size_t)T * stride * 4);
  ref->rope(rot + (size_t)nh * D, pos, invf, T, nkv, D, stride);
  for (size_t i = 0; i < (size_t)cap * kvd; i++)
    exact[i] = NAN, win[i] = 0;
  for (int t = 0; t < T; t++) {
    if (slot[t] < 0)
      continue;
    const float *k0 = qkv + (size_t)t * stride + (size_t)nh * D;
    for (int j = 0; j < kvd; j++) {
      int i = j % D, b = j - i, lo = i < half ? i : i - half;
      size_t at = (size_t)slot[t] * kvd + j;
      exact[at] = rot[(size_t)t * stride + (size_t)nh * D + j];
      win[at] = 1e-6f * (fabsf(k0[b + lo]) + fabsf(k0[b + lo + half]));
    }
  }
  free(rot);
}

TEST(test_cuda_device) {
  NEED_DEVICE();
  size_t fr = 0, tot = 0;
  char err[256] = "";
  printf("  device: %s\n", ask_cuda_device_name());
  ASSERT_STR_EQ(cu->name, "cuda");
  ASSERT_TRUE(dev != NULL && ref->dev == NULL);
  ASSERT_EQ(dev->mem_info(&fr, &tot, err, sizeof err), 0);
  printf("  memory: %zu MiB free of %zu MiB\n", fr >> 20, tot >> 20);
  ASSERT_TRUE(tot > 0 && fr <= tot);
}

/* ASK_COPY_H2D_ASYNC from pageable memory: the bytes are taken before the
 * call returns (the host may overwrite them at once), and ops queued after
 * it see them. */
TEST(test_cuda_copy_async) {
  NEED_DEVICE();
  char err[256] = "";
  size_t n = 3000;
  float *h = malloc(n * 4), *want = malloc(n * 4), *d = up(NULL, n * 4), *o = up(NULL, n * 4);
  for (int k = 0; k < 4; k++) {
    for (size_t i = 0; i < n; i++)
      h[i] = want[i] = (float)(i * 7 + (size_t)k);
    ASSERT_EQ(dev->copy(d, h, n * 4, ASK_COPY_H2D_ASYNC, err, sizeof err), 0);
    memset(h, 0xff, n * 4); /* NaN: must not reach the device */
    cu->add(o, d, d, n);
    float *got = down(o, n * 4);
    for (size_t i = 0; i < n; i++)
      want[i] *= 2.0f;
    ASSERT_MEM_EQ(got, want, n * 4);
    free(got);
  }
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  dev->free(d), dev->free(o);
  free(h), free(want);
}

TEST(test_cuda_embedding) {
  NEED_DEVICE();
  int V = 300, C = 130, T = 9;
  int32_t ids[9] = {3, 0, 299, 3, 17, 150, 2, 2, 298};
  float *tab = rnd((size_t)V * C, 2), *want = malloc((size_t)T * C * 4);
  uint16_t *tab16 = malloc((size_t)V * C * 2);
  for (size_t i = 0; i < (size_t)V * C; i++)
    tab16[i] = to_bf16(tab[i]);
  float *dt = up(tab, (size_t)V * C * 4), *dout = up(NULL, (size_t)T * C * 4);
  uint16_t *dt16 = up(tab16, (size_t)V * C * 2);
  int32_t *dids = up(ids, sizeof ids);
  for (int bf = 0; bf < 2; bf++) {
    for (float scale = 1.0f; scale < 3.0f; scale += 1.5f) {
      if (bf) {
        twin->embedding_bf16(want, tab16, ids, NULL, T, C, scale);
        dev->embedding_bf16(dout, dt16, dids, NULL, T, C, scale);
      } else {
        ref->embedding(want, tab, ids, T, C, scale);
        cu->embedding(dout, dt, dids, T, C, scale);
      }
      float *got = down(dout, (size_t)T * C * 4);
      ASSERT_NEAR(got, want, (size_t)T * C, 0, 0);
      free(got);
    }
  }
  /* ids < 0 taken from prev (an earlier step's sampled ids on the device) */
  int32_t fed[9] = {-1, 5, -3, -9, 0, -2, 299, -1, 1}, prev[9] = {7, 8, 9, 10, 11, 12, 13, 14, 15};
  int32_t *dfed = up(fed, sizeof fed), *dprev = up(prev, sizeof prev);
  twin->embedding_bf16(want, tab16, fed, prev, T, C, 2.0f);
  dev->embedding_bf16(dout, dt16, dfed, dprev, T, C, 2.0f);
  float *got = down(dout, (size_t)T * C * 4);
  ASSERT_NEAR(got, want, (size_t)T * C, 0, 0);
  for (int c = 0; c < C; c++) /* row 3 is prev[8] = 15 */
    ASSERT_EQ(got[3 * C + c], 2.0f * from_bf16(tab16[15 * C + c]));
  free(got);
  dev->free(dt), dev->free(dt16), dev->free(dout), dev->free(dids), dev->free(dfed);
  dev->free(dprev);
  free(tab), free(tab16), free(want);
}

/* A copy out queued behind ops (ASK_COPY_D2H_ASYNC into host_alloc memory)
 * is complete after wait_mark of a mark queued after it, while later work
 * may still run; marks in both slots. */
TEST(test_cuda_marks) {
  NEED_DEVICE();
  char err[256];
  int n = 1 << 20;
  float *x = rnd((size_t)n, 1), *dx = up(x, (size_t)n * 4), *dy = up(NULL, (size_t)n * 4);
  float *h[2];
  for (int k = 0; k < 2; k++)
    ASSERT_EQ(dev->host_alloc((void **)&h[k], (size_t)n * 4, err, sizeof err), 0);
  for (int rep = 0; rep < 3; rep++)
    for (int k = 0; k < 2; k++) {
      cu->add(dy, dx, dx, (size_t)n); /* y = 2x, then y = 4x in the other slot */
      if (k == 1)
        cu->add(dy, dy, dy, (size_t)n);
      ASSERT_EQ(dev->copy(h[k], dy, (size_t)n * 4, ASK_COPY_D2H_ASYNC, err, sizeof err), 0);
      ASSERT_EQ(dev->mark(k, err, sizeof err), 0);
      cu->add(dy, dy, dy, (size_t)n); /* queued after the mark: not in h[k] */
      ASSERT_EQ(dev->wait_mark(k, err, sizeof err), 0);
      for (int i = 0; i < n; i += 4099)
        ASSERT_EQ(h[k][i], (k ? 4.0f : 2.0f) * x[i]);
    }
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  ASSERT_NE(dev->mark(ASK_MARKS, err, sizeof err), 0); /* no such slot */
  for (int k = 0; k < 2; k++)
    dev->host_free(h[k]);
  dev->free(dx), dev->free(dy);
  free(x);
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
  put(dx, x, n * 4);

  /* Fused residual: x += r, out = rmsnorm(x) (Gemma offset), against the twin. */
  memcpy(xs, x, n * 4);
  twin->add_rmsnorm(want, xs, r, w, T, C, 1e-6f, 1.0f);
  dev->add_rmsnorm(dout, dx, dr, dw, T, C, 1e-6f, 1.0f);
  got = down(dout, n * 4);
  ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
  free(got);
  got = down(dx, n * 4);
  ASSERT_NEAR(got, xs, n, 0, 0);
  free(got);
  /* Without a residual x stays as it is. */
  twin->add_rmsnorm(want, xs, NULL, w, T, C, 1e-5f, 0.0f);
  dev->add_rmsnorm(dout, dx, NULL, dw, T, C, 1e-5f, 0.0f);
  got = down(dout, n * 4);
  ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
  free(got);

  ref->layernorm(want, x, w, b, T, C, 1e-12f);
  put(dx, x, n * 4);
  cu->layernorm(dout, dx, dw, db, T, C, 1e-12f);
  got = down(dout, n * 4);
  ASSERT_NEAR(got, want, n, 1e-5, 1e-5);
  free(got);
  dev->free(dx), dev->free(dr), dev->free(dw), dev->free(db), dev->free(dout);
  free(x), free(r), free(w), free(b), free(want), free(xs);
}

TEST(test_cuda_rope) {
  NEED_DEVICE();
  int T = 6, nh = 8, D = 64, stride = nh * D + 2 * D;
  int32_t pos[6] = {0, 1, 2, 17, 1000, 8191};
  float *invf = inv_freq(D), *dinv = up(invf, D / 2 * 4);
  int32_t *dpos = up(pos, sizeof pos);
  /* The table's rope on a strided view: the q heads of fused rows. */
  float *blk = rnd((size_t)T * stride, 2), *dblk = up(blk, (size_t)T * stride * 4);
  ref->rope(blk, pos, invf, T, nh, D, stride);
  cu->rope(dblk, dpos, dinv, T, nh, D, stride);
  float *got = down(dblk, (size_t)T * stride * 4);
  ASSERT_NEAR(got, blk, (size_t)T * stride, 1e-5, 1e-5);
  free(got);
  dev->free(dinv), dev->free(dpos), dev->free(dblk);
  free(invf), free(blk);
}

/* rope_kv on T fused rows against the twin; returns 0 when all agree. */
static int rope_kv_case(int nh, int nkv, int D) {
  enum { T = 7, CAP = 48 };
  int kvd = nkv * D, stride = (nh + 2 * nkv) * D + 8, bad = 0;
  int32_t pos[T] = {0, 1, 17, 1000, 8191, 5, 3}, slot[T] = {5, 6, -1, 30, 0, 47, -1};
  size_t nq = (size_t)T * stride, nc = (size_t)CAP * kvd;
  float *invf = inv_freq(D), *qkv = rnd(nq, 2);
  uint16_t *kc = rnd16(nc), *vc = rnd16(nc);
  float *exact = malloc(nc * 4), *win = malloc(nc * 4);
  kv_exact(exact, win, qkv, pos, slot, invf, T, nh, nkv, D, stride, CAP);

  float *dqkv = up(qkv, nq * 4), *dinv = up(invf, D / 2 * 4);
  uint16_t *dkc = up(kc, nc * 2), *dvc = up(vc, nc * 2);
  int32_t *dpos = up(pos, sizeof pos), *dslot = up(slot, sizeof slot);
  dev->rope_kv(dqkv, dkc, dvc, dpos, dslot, dinv, T, nh, nkv, D, stride);
  twin->rope_kv(qkv, kc, vc, pos, slot, invf, T, nh, nkv, D, stride);
  float *gq = down(dqkv, nq * 4);
  uint16_t *gk = down(dkc, nc * 2), *gv = down(dvc, nc * 2);
  if (mismatch(gq, qkv, nq, 1e-5, 1e-5) >= 0 ||             /* q rotated, k and v as they were */
      bf16_mismatch(gk, kc, exact, win, nc) >= 0 || bf16_mismatch(gv, vc, NULL, NULL, nc) >= 0) {
    fprintf(stderr, "  rope_kv nh=%d nkv=%d D=%d\n", nh, nkv, D);
    bad = 1;
  }
  dev->free(dqkv), dev->free(dinv), dev->free(dkc), dev->free(dvc), dev->free(dpos);
  dev->free(dslot);
  free(invf), free(qkv), free(kc), free(vc), free(exact), free(win), free(gq), free(gk), free(gv);
  return bad;
}

TEST(test_cuda_rope_kv) {
  NEED_DEVICE();
  ASSERT_EQ(rope_kv_case(8, 2, 64), 0);   /* GQA */
  ASSERT_EQ(rope_kv_case(8, 1, 256), 0);  /* gemma-2b: MQA, D 256 */
  ASSERT_EQ(rope_kv_case(32, 8, 64), 0);  /* Llama-3.2-1B */
  ASSERT_EQ(rope_kv_case(12, 12, 80), 0); /* multi-head, D not a multiple of 32 */
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
    /* Fused gate/up rows: (T, 2F) -> (T, F), F odd and even. */
    for (int F = 333; F <= 8192; F += 7859) {
      int T = (int)(n / (2 * (size_t)F));
      if (T > 6)
        T = 6;
      twin->glu_rows(want, g, T, F, act);
      dev->glu_rows(dout, dg, T, F, act);
      got = down(dout, (size_t)T * F * 4);
      ASSERT_NEAR(got, want, (size_t)T * F, 1e-5, 1e-5);
      free(got);
    }
  }
  ref->add(want, g, u, n);
  cu->add(dout, dg, du, n);
  float *got = down(dout, n * 4);
  ASSERT_NEAR(got, want, n, 0, 0);
  free(got);
  int T = 2, N = 50000; /* T * N <= n */
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

/* A paged bf16 KV cache on the host: sequences of lengths len[0..nseq)
 * get ceil(len / page) pages each, dealt from a shuffled pool (so no
 * sequence's pages are in order); unused table entries are -1. */
typedef struct {
  int kvd, page, tw, rows; /* row width, page size, table width, cache rows */
  int32_t *table;          /* (nseq, tw) */
  uint16_t *kc, *vc;       /* (rows, kvd), random */
} pcache_t;

static void pcache_make(pcache_t *c, const int *len, int nseq, int kvd, int page) {
  int np = 3, maxlen = 1, k = 0;
  for (int s = 0; s < nseq; s++) {
    np += (len[s] + page - 1) / page;
    maxlen = len[s] > maxlen ? len[s] : maxlen;
  }
  int32_t *perm = malloc((size_t)np * 4);
  for (int i = 0; i < np; i++)
    perm[i] = i;
  for (int i = np - 1; i > 0; i--) {
    int j = (int)((frand() + 1.0f) * 0.5f * (float)(i + 1)) % (i + 1);
    int32_t x = perm[i];
    perm[i] = perm[j], perm[j] = x;
  }
  c->kvd = kvd, c->page = page, c->tw = (maxlen + page - 1) / page, c->rows = np * page;
  c->table = malloc((size_t)nseq * c->tw * 4);
  for (int s = 0; s < nseq; s++)
    for (int i = 0; i < c->tw; i++)
      c->table[(size_t)s * c->tw + i] = i < (len[s] + page - 1) / page ? perm[k++] : -1;
  c->kc = rnd16((size_t)c->rows * kvd);
  c->vc = rnd16((size_t)c->rows * kvd);
  free(perm);
}

static void pcache_free(pcache_t *c) { free(c->table), free(c->kc), free(c->vc); }

/* attention_paged over a mixed batch against the twin: decode rows of
 * sequences with 300, 1, 15, 16, 17 and 1000 keys, a prefill chunk (8 rows
 * of one sequence at positions 40..47), two padding rows; query rows inside
 * fused qkv rows. The device caches start `off` bf16 into their buffers
 * (off not a multiple of 8: not 16-byte aligned, so the grouped kernel
 * loads bf16 pairs).
 * Returns 0 when within tolerance. */
static int paged_case_at(int nh, int nkv, int D, int page, int nsplit, int off) {
  enum { T = 16, NSEQ = 7 };
  static const int len[NSEQ] = {1, 15, 16, 17, 300, 1000, 48};
  static const int32_t seq[T] = {4, 0, 6, 6, 6, 6, 6, 6, 6, 6, 0, 1, 2, 3, 5, 0};
  static const int32_t pos[T] = {299, -1, 40, 41, 42, 43, 44, 45, 46, 47, 0, 14, 15, 16, 999, -1};
  int qs = (nh + 2 * nkv) * D, qd = nh * D, bad = 0;
  pcache_t c;
  pcache_make(&c, len, NSEQ, nkv * D, page);
  size_t nkc = (size_t)c.rows * c.kvd, no = (size_t)T * qd;
  size_t npart = (size_t)nsplit * T * nh * (D + 2);
  float *q = rnd((size_t)T * qs, 4), *want = malloc(no * 4), *init = malloc(no * 4);
  for (size_t i = 0; i < no; i++)
    init[i] = 7.0f; /* padding rows must be overwritten with zeros */
  float scale = 1.0f / sqrtf((float)D);
  float *dq = up(q, (size_t)T * qs * 4), *dout = up(init, no * 4);
  float *dpart = nsplit > 1 ? up(NULL, npart * 4) : NULL;
  uint16_t *dkc0 = up(NULL, (nkc + (size_t)off) * 2), *dvc0 = up(NULL, (nkc + (size_t)off) * 2);
  uint16_t *dkc = dkc0 + off, *dvc = dvc0 + off;
  put(dkc, c.kc, nkc * 2), put(dvc, c.vc, nkc * 2);
  int32_t *dtab = up(c.table, (size_t)NSEQ * c.tw * 4), *dseq = up(seq, sizeof seq),
          *dpos = up(pos, sizeof pos);
  dev->attention_paged(dout, dpart, dq, dkc, dvc, dtab, dseq, dpos, T, nh, nkv, D, qs, c.tw, page,
                       nsplit, scale);
  twin->attention_paged(want, NULL, q, c.kc, c.vc, c.table, seq, pos, T, nh, nkv, D, qs, c.tw,
                        page, nsplit, scale);
  float *got = down(dout, no * 4);
  double rel = max_rel(got, want, no);
  for (int t = 0; t < T; t++)
    for (int i = 0; i < qd && pos[t] < 0; i++)
      if (got[(size_t)t * qd + i] != 0.0f)
        bad = 1;
  if (!(rel <= 1e-4) || bad) {
    fprintf(stderr,
            "  attention_paged nh=%d nkv=%d D=%d page=%d nsplit=%d off=%d: max rel diff %g%s\n",
            nh, nkv, D, page, nsplit, off, rel, bad ? ", padding row not zero" : "");
    bad = 1;
  }
  dev->free(dq), dev->free(dout), dev->free(dpart), dev->free(dkc0), dev->free(dvc0);
  dev->free(dtab), dev->free(dseq), dev->free(dpos);
  free(q), free(want), free(init), free(got);
  pcache_free(&c);
  return bad;
}

static int paged_case(int nh, int nkv, int D, int page, int nsplit) {
  return paged_case_at(nh, nkv, D, page, nsplit, 0);
}

TEST(test_cuda_attention_paged) {
  NEED_DEVICE();
  for (int dec = 0; dec < 2; dec++) { /* the tiled kernels, then the decode kernel */
    int dec0 = ask_cuda_set_attn_decode(dec ? 64 : 0);
    /* nsplit 1; 4 (the 1-key row leaves 3 parts empty); 16 (the 1, 15, 16 and
     * 17-key rows leave parts empty); 64. With 16 rows, kernels/cuda/paged.cu
     * serves gemma-2b with grouped blocks of 2, 4, 8, 8 query heads (by
     * nsplit) and Llama-3.2-1B with blocks of 4. */
    static const int splits[] = {1, 4, 16, 64};
    for (int i = 0; i < 4; i++) {
      ASSERT_EQ(paged_case(8, 1, 256, 16, splits[i]), 0); /* gemma-2b: MQA, D 256 */
      ASSERT_EQ(paged_case(32, 8, 64, 16, splits[i]), 0); /* Llama-3.2-1B: GQA 4 */
    }
    ASSERT_EQ(paged_case(4, 4, 80, 7, 3), 0); /* multi-head, D 80, odd page size */
    /* More group shapes of the grouped kernel (blocks of 2 heads at nsplit 1,
     * larger ones at nsplit 4): */
    for (int i = 0; i < 2; i++) {
      int ns = splits[i];
      ASSERT_EQ(paged_case(14, 2, 64, 16, ns), 0);  /* Qwen2-0.5B: G 7 (a padded head) */
      ASSERT_EQ(paged_case(8, 4, 256, 16, ns), 0);  /* gemma-2-2b: G 2 */
      ASSERT_EQ(paged_case(24, 2, 128, 16, ns), 0); /* G 12: two blocks of 6 heads */
      ASSERT_EQ(paged_case(6, 2, 42, 5, ns), 0);    /* G 3, D % 8 != 0: bf16 pairs */
      ASSERT_EQ(paged_case(9, 3, 8, 16, ns), 0);    /* G 3, D 8: dims padded to 16 or 32 */
    }
    /* Caches not 16-byte aligned: bf16-pair loads. */
    ASSERT_EQ(paged_case_at(32, 8, 64, 16, 4, 4), 0);
    ASSERT_EQ(paged_case_at(8, 1, 256, 16, 16, 2), 0);
    /* Parts of at least 1, 7 and 100000 keys (the default is 64): every part
     * live, some, only the first (the merge reads the live ones). */
    static const int kmins[] = {1, 7, 100000};
    for (int i = 0; i < 3; i++) {
      int old = ask_cuda_set_split_min(kmins[i]);
      ASSERT_EQ(paged_case(8, 1, 256, 16, 16), 0);
      ASSERT_EQ(paged_case(32, 8, 64, 16, 8), 0);
      ask_cuda_set_split_min(old);
    }
    /* Parts by bytes (ask_cuda_set_split_kb): 1 KB is 1 key at D 256 and
     * 4 at D 64, 64 KB 64 and 256; the describe line says which rule holds. */
    static const int kbs[] = {1, 64};
    for (int i = 0; i < 2; i++) {
      int old = ask_cuda_set_split_kb(kbs[i]);
      ASSERT_TRUE(strstr(dev->describe(), " KB at least") != NULL);
      ASSERT_EQ(paged_case(8, 1, 256, 16, 16), 0);
      ASSERT_EQ(paged_case(32, 8, 64, 16, 8), 0);
      ask_cuda_set_split_kb(old);
    }
    ASSERT_TRUE(strstr(dev->describe(), " keys at least") != NULL);
    ask_cuda_set_attn_decode(dec0);
  }
}

/* attention_paged's decode kernel reading the cache before its PDL wait
 * (ask_cuda_set_attn_early(1)) and the o product after it loading its
 * first weights before its wait (ask_cuda_set_pw_early(2)) against neither,
 * as the engine runs them: each of S decode steps of one sequence copies
 * its position and cache slot to the device (ASK_COPY_H2D_ASYNC), then
 * norm_matmul_rope_kv writes q and the new key and value (the cache row at
 * that slot, which starts random: a read before the write gives other
 * bits), attention_paged reads keys 0..pos, and matmul_bf16 projects its
 * output. Every step's attention and o rows bit for bit, on the head
 * shapes of Llama-3.2-1B (32/8/64) and gemma-2b (8/1/256), parts 1 and 32,
 * the decode kernel and the grouped one (T 1: a chunk's several new keys
 * are test_cudaemu_kernels' test_attention_paged_early's).
 * On the emulated backend, whose device memory is all guarded before the
 * wait, the early reads would fault by design: there the test runs the
 * steps without them only. */
TEST(test_cuda_attention_early) {
  NEED_DEVICE();
  enum { S = 24, PAGE = 16, P0 = 100, K = 2048 };
  static const int hs[2][3] = {{32, 8, 64}, {8, 1, 256}};
  int dec0 = ask_cuda_set_attn_decode(64), pw0 = ask_cuda_set_gemv_pw(2);
  int fr0 = ask_cuda_set_fuse_rope(1), e0 = ask_cuda_set_attn_early(0);
  int pe0 = ask_cuda_set_pw_early(0);
  ask_cuda_set_gemv_rows(1);
  ask_cuda_set_fuse_rows(1);
  for (int c = 0; c < 8; c++) { /* the decode kernel (c < 4), then the grouped one */
    int nh = hs[c & 1][0], nkv = hs[c & 1][1], D = hs[c & 1][2], nsplit = c & 2 ? 32 : 1;
    ask_cuda_set_attn_decode(c & 4 ? 0 : 64);
    int N = (nh + 2 * nkv) * D, kvd = nkv * D, qd = nh * D;
    int tw = (P0 + S + PAGE - 1) / PAGE, rows = tw * PAGE;
    int32_t *table = malloc((size_t)tw * 4), seq0 = 0, io[S][2];
    for (int i = 0; i < tw; i++)
      table[i] = tw - 1 - i; /* pages in reverse */
    for (int i = 0; i < S; i++) {
      io[i][0] = P0 + i;
      io[i][1] = table[(P0 + i) / PAGE] * PAGE + (P0 + i) % PAGE;
    }
    float *x = rnd(K, 2), *nw = rnd(K, 1), *invf = inv_freq(D);
    uint16_t *w16 = rnd16((size_t)N * K), *cache = rnd16((size_t)rows * kvd);
    float *dx = up(x, K * 4), *dnw = up(nw, K * 4), *dinv = up(invf, D / 2 * 4);
    float *dh = up(NULL, (size_t)K * 4), *dqkv = up(NULL, (size_t)N * 4);
    float *dpart = up(NULL, (size_t)nsplit * nh * (D + 2) * 4);
    uint16_t *dw = up(w16, (size_t)N * K * 2), *dxs = up(NULL, (size_t)K * 2);
    uint16_t *wo16 = rnd16((size_t)K * qd), *dwo = up(wo16, (size_t)K * qd * 2);
    int32_t *dtab = up(table, (size_t)tw * 4), *dseq = up(&seq0, 4), *dio = up(NULL, 8);
    float *got[2] = {NULL, NULL}, *proj[2] = {NULL, NULL};
#ifdef AS_CUDAEMU_BACKEND
    const int runs = 1;
#else
    const int runs = 2;
#endif
    for (int e = 0; e < runs; e++) {
      uint16_t *dkc = up(cache, (size_t)rows * kvd * 2), *dvc = up(cache, (size_t)rows * kvd * 2);
      float *dout = up(NULL, (size_t)S * qd * 4), *dor = up(NULL, (size_t)S * K * 4);
      char err[256];
      ask_cuda_set_attn_early(e);
      ask_cuda_set_pw_early(2 * e);
      for (int i = 0; i < S; i++) {
        ASSERT_EQ(dev->copy(dio, io[i], 8, ASK_COPY_H2D_ASYNC, err, sizeof err), 0);
        dev->norm_matmul_rope_kv(dqkv, NULL, dh, dxs, dx, NULL, dnw, 1e-6f, 0.0f, dw, NULL, 1, K,
                                 dkc, dvc, dio, dio + 1, dinv, nh, nkv, D);
        dev->attention_paged(dout + (size_t)i * qd, dpart, dqkv, dkc, dvc, dtab, dseq, dio, 1, nh,
                             nkv, D, N, tw, PAGE, nsplit, 1.0f / sqrtf((float)D));
        dev->matmul_bf16(dor + (size_t)i * K, dxs, dout + (size_t)i * qd, dwo, NULL, 1, qd, K);
      }
      got[e] = down(dout, (size_t)S * qd * 4);
      proj[e] = down(dor, (size_t)S * K * 4);
      dev->free(dkc), dev->free(dvc), dev->free(dout), dev->free(dor);
    }
    ask_cuda_set_attn_early(0);
    ask_cuda_set_pw_early(0);
    double mx = 0.0; /* finite, not all zeros */
    for (size_t i = 0; i < (size_t)S * qd; i++)
      mx = isfinite(got[0][i]) ? fmax(mx, fabs((double)got[0][i])) : INFINITY;
    ASSERT_TRUE(mx > 0.0 && isfinite(mx));
    if (runs == 2) {
      ASSERT_MEM_EQ(got[1], got[0], (size_t)S * qd * 4);
      ASSERT_MEM_EQ(proj[1], proj[0], (size_t)S * K * 4);
    }
    free(got[0]), free(got[1]), free(proj[0]), free(proj[1]), free(wo16);
    dev->free(dwo);
    dev->free(dx), dev->free(dnw), dev->free(dinv), dev->free(dh), dev->free(dqkv);
    dev->free(dpart), dev->free(dw), dev->free(dxs), dev->free(dtab), dev->free(dseq);
    dev->free(dio);
    free(table), free(x), free(nw), free(invf), free(w16), free(cache);
  }
  ask_cuda_set_attn_decode(dec0);
  ask_cuda_set_gemv_pw(pw0);
  ask_cuda_set_fuse_rope(fr0);
  ask_cuda_set_attn_early(e0);
  ask_cuda_set_pw_early(pe0);
  ask_cuda_set_gemv_rows(16);
  ask_cuda_set_fuse_rows(16);
}

/* attention_prefill against the twin: one chunk of n rows at positions p0
 * .. p0 + n - 1 of a sequence whose p0 + n keys sit in shuffled pages,
 * query rows inside fused qkv rows plus qextra floats, the device caches
 * `off` bf16 into their buffers (not a multiple of 8: bf16-pair loads).
 * The twin (one row at a time over all its keys) is slow on long chunks,
 * so for n > 96 it runs on three slices of rows (each row depends only on
 * its position and the cache): the first 32, 32 in the middle, the last
 * 32; every output (a convex combination of values in [-1, 1)) must lie in
 * [-1, 1], which the 7.0 the output starts as does not. Tolerance: max
 * |got - want| <= 1e-4 * max |want| over the rows compared. Returns 0 when
 * within it. */
static int prefill_case(int nh, int nkv, int D, int n, int p0, int page, int qextra, int off) {
  int len = p0 + n, qs = (nh + 2 * nkv) * D + qextra, qd = nh * D, bad = 0;
  pcache_t c;
  pcache_make(&c, &len, 1, nkv * D, page);
  size_t nkc = (size_t)c.rows * c.kvd, no = (size_t)n * qd;
  float *q = rnd((size_t)n * qs, 4), *want = malloc(no * 4), *init = malloc(no * 4);
  for (size_t i = 0; i < no; i++)
    init[i] = 7.0f;
  float scale = 1.0f / sqrtf((float)D);
  float *dq = up(q, (size_t)n * qs * 4), *dout = up(init, no * 4);
  uint16_t *dkc0 = up(NULL, (nkc + (size_t)off) * 2), *dvc0 = up(NULL, (nkc + (size_t)off) * 2);
  uint16_t *dkc = dkc0 + off, *dvc = dvc0 + off;
  put(dkc, c.kc, nkc * 2), put(dvc, c.vc, nkc * 2);
  int32_t *dpages = up(c.table, (size_t)c.tw * 4);
  dev->attention_prefill(dout, dq, dkc, dvc, dpages, p0, n, nh, nkv, D, qs, page, scale);
  float *got = down(dout, no * 4);
  for (size_t i = 0; i < no && !bad; i++)
    if (!(fabsf(got[i]) <= 1.0f)) {
      fprintf(stderr, "  attention_prefill nh=%d nkv=%d D=%d n=%d p0=%d: out[%zu] = %g\n", nh,
              nkv, D, n, p0, i, got[i]);
      bad = 1;
    }
  int r0s[3] = {0, n / 2 - 16, n - 32}, nsl = n > 96 ? 3 : 1;
  for (int k = 0; k < nsl && !bad; k++) {
    int r0 = nsl == 1 ? 0 : r0s[k], rn = nsl == 1 ? n : 32;
    twin->attention_prefill(want, q + (size_t)r0 * qs, c.kc, c.vc, c.table, p0 + r0, rn, nh, nkv,
                            D, qs, page, scale);
    double rel = max_rel(got + (size_t)r0 * qd, want, (size_t)rn * qd);
    if (!(rel <= 1e-4)) {
      fprintf(stderr,
              "  attention_prefill nh=%d nkv=%d D=%d n=%d p0=%d page=%d qextra=%d off=%d: rows "
              "%d..%d: max rel diff %g\n",
              nh, nkv, D, n, p0, page, qextra, off, r0, r0 + rn - 1, rel);
      bad = 1;
    }
  }
  dev->free(dq), dev->free(dout), dev->free(dkc0), dev->free(dvc0), dev->free(dpages);
  free(q), free(want), free(init), free(got);
  pcache_free(&c);
  return bad;
}

TEST(test_cuda_attention_prefill) {
  NEED_DEVICE();
  /* The model shapes: gemma-2b (8/1/256, 8 rows a block), Llama-3.2-1B
   * (32/8/64, 16 rows a block), with the TTFT chunk (2048 rows) and
   * chunks around the row and key tiles, starting or continuing a
   * sequence. */
  static const int ns[] = {16, 17, 100, 300, 2048};
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(prefill_case(8, 1, 256, ns[i], 0, 16, 4, 0), 0);
    ASSERT_EQ(prefill_case(32, 8, 64, ns[i], 0, 16, 4, 0), 0);
    ASSERT_EQ(prefill_case(8, 1, 256, ns[i], 37, 16, 4, 0), 0);
    ASSERT_EQ(prefill_case(32, 8, 64, ns[i], 1000, 16, 4, 0), 0);
  }
  ASSERT_EQ(prefill_case(14, 2, 64, 300, 37, 16, 4, 0), 0); /* Qwen2-0.5B: 9 rows of 7 heads */
  ASSERT_EQ(prefill_case(8, 4, 256, 100, 37, 16, 4, 0), 0); /* gemma-2-2b: G 2 */
  ASSERT_EQ(prefill_case(24, 2, 128, 100, 5, 16, 4, 0), 0); /* G 12, D 128 */
  ASSERT_EQ(prefill_case(6, 2, 42, 100, 37, 5, 1, 0), 0);   /* D % 8 != 0, page 5, odd stride */
  ASSERT_EQ(prefill_case(4, 4, 32, 300, 37, 5, 4, 0), 0);   /* multi-head: 64 rows a block */
  ASSERT_EQ(prefill_case(48, 2, 32, 13, 70, 16, 4, 0), 0);  /* G 24: two chunks of 12 heads */
  ASSERT_EQ(prefill_case(8, 1, 256, 1, 0, 16, 4, 0), 0);    /* one row */
  /* Caches not 16-byte aligned: bf16-pair loads. */
  ASSERT_EQ(prefill_case(32, 8, 64, 300, 37, 16, 4, 4), 0);
  ASSERT_EQ(prefill_case(8, 1, 256, 300, 37, 16, 4, 2), 0);
}

/* out (T,N) from the f32 path against ref->matmul, or from the bf16 path
 * against the twin, on the same (bf16-rounded when bf16) weights; returns -1
 * when within tolerance. */
static long matmul_case(int bf16, int T, int K, int N, int with_bias, size_t woff) {
  float *x = rnd((size_t)T * K, 1), *w = rnd((size_t)N * K + 8, 0.1f), *b = rnd(N, 1);
  float *want = malloc((size_t)T * N * 4);
  uint16_t *w16 = malloc(((size_t)N * K + 8) * 2), *xs = malloc((size_t)T * K * 2 + 4);
  long bad = -1;
  for (size_t i = 0; i < (size_t)N * K + 8; i++)
    w16[i] = to_bf16(w[i]);
  float *dx = up(x, (size_t)T * K * 4), *db = up(b, (size_t)N * 4),
        *dout = up(NULL, (size_t)T * N * 4), *dw = NULL;
  uint16_t *dw16 = NULL, *dxs = up(NULL, (size_t)T * K * 2);
  if (bf16) {
    twin->matmul_bf16(want, xs, x, w16 + woff, with_bias ? b : NULL, T, K, N);
    dw16 = up(w16, ((size_t)N * K + 8) * 2);
    dev->matmul_bf16(dout, dxs, dx, dw16 + woff, with_bias ? db : NULL, T, K, N);
  } else {
    ref->matmul(want, x, w + woff, with_bias ? b : NULL, T, K, N);
    dw = up(w, ((size_t)N * K + 8) * 4);
    cu->matmul(dout, dx, dw + woff, with_bias ? db : NULL, T, K, N);
  }
  float *got = down(dout, (size_t)T * N * 4);
  if (bf16) {
    double rel = max_rel(got, want, (size_t)T * N);
    if (!(rel <= 1e-2)) {
      fprintf(stderr, "  bf16 T=%d K=%d N=%d: max rel diff %g\n", T, K, N, rel);
      bad = 0;
    }
  } else {
    bad = mismatch(got, want, (size_t)T * N, 1e-4, 1e-4);
    if (bad >= 0)
      fprintf(stderr, "  f32 T=%d K=%d N=%d\n", T, K, N);
  }
  dev->free(dx), dev->free(db), dev->free(dout), dev->free(dw), dev->free(dw16), dev->free(dxs);
  free(x), free(w), free(b), free(want), free(w16), free(xs), free(got);
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
    ASSERT_EQ(matmul_case(1, 1, 2048, 2561, 1, 0), -1); /* odd N: a warp's second row past N */
    ASSERT_EQ(matmul_case(1, 2, 1024, 1001, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 3, 1024, 1000, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 5, 256, 1003, 0, 0), -1);  /* 4 rows a warp, N % 4 = 3 */
    ASSERT_EQ(matmul_case(1, 8, 4096, 64, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 16, 512, 640, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 16, 520, 130, 0, 0), -1);  /* K/8 = 65: the tail loop */
    ASSERT_EQ(matmul_case(1, 2, 8, 33, 1, 0), -1);      /* K = 8: tail only */
    ASSERT_EQ(matmul_case(1, 2, 100, 77, 1, 1), -1);    /* K % 8 != 0, w misaligned */
    ASSERT_EQ(matmul_case(1, 11, 64, 50, 1, 3), -1);    /* w misaligned, scalar path */
  }
  /* A matrix at or over the size limit goes to cuBLASLt at one row (a plan
   * is made for the new shape); below it, the kernel (no plan). */
  ask_cuda_set_gemv_rows(1);
  int p0 = ask_cuda_plan_count();
  size_t old = ask_cuda_set_gemv_max_bytes((size_t)40 * 72 * 2);
  ASSERT_EQ(matmul_case(1, 1, 72, 40, 1, 0), -1);
  ASSERT_EQ(ask_cuda_plan_count(), p0 + 1);
  ASSERT_EQ(matmul_case(1, 1, 72, 39, 1, 0), -1);
  ASSERT_EQ(ask_cuda_plan_count(), p0 + 1);
  ask_cuda_set_gemv_max_bytes(old);
  ask_cuda_set_gemv_rows(16);
  ASSERT_EQ(matmul_case(1, 17, 2048, 512, 1, 0), -1);
  ASSERT_EQ(matmul_case(1, 128, 1024, 1536, 0, 0), -1);
  int plans = ask_cuda_plan_count();
  ASSERT_EQ(matmul_case(1, 128, 1024, 1536, 0, 0), -1); /* same shape: the cached plan */
  ASSERT_EQ(ask_cuda_plan_count(), plans);
}

/* The decode fusions against their twins on host copies of the same
 * inputs: glu 0, out = rmsnorm(x + r) · wᵀ + bias (norm_matmul_bf16, r
 * when with_r, Gemma's offset off) and xo = x + r bit for bit; glu 1, out =
 * glu_rows(gu, act) · wᵀ + bias (glu_matmul_bf16, F = K). tol bounds
 * max |got - want| / max |want|: 1e-4 where the fused kernels run (x stays
 * f32), 1e-2 where the separate ops end in cuBLASLt (x rounded to bf16).
 * Returns -1 when right. */
static long fused_case(int glu, int T, int K, int N, int with_r, float off, int act,
                       int with_bias, double tol) {
  size_t nx = (size_t)T * K, nin = glu ? 2 * nx : nx;
  float *x = rnd(nin, 2), *r = rnd(nx, 1), *nw = rnd(K, 1), *b = rnd(N, 1);
  float *want = malloc((size_t)T * N * 4), *wxo = malloc(nx * 4 + 4), *wh = malloc(nx * 4 + 4);
  uint16_t *w16 = rnd16((size_t)N * K);
  for (size_t i = 0; i < (size_t)N * K; i++) /* weights of about +-0.1 */
    w16[i] = to_bf16(from_bf16(w16[i]) * 0.1f);
  float *dx = up(x, nin * 4), *dr = up(r, nx * 4), *dnw = up(nw, (size_t)K * 4),
        *db = up(b, (size_t)N * 4), *dout = up(NULL, (size_t)T * N * 4), *dxo = up(NULL, nx * 4),
        *dh = up(NULL, nx * 4);
  uint16_t *dw = up(w16, (size_t)N * K * 2), *dxs = up(NULL, nx * 2);
  const float *hb = with_bias ? b : NULL, *dbb = with_bias ? db : NULL;
  long bad = -1;
  if (glu) {
    twin->glu_matmul_bf16(want, wh, NULL, x, act, w16, hb, T, K, N);
    dev->glu_matmul_bf16(dout, dh, dxs, dx, act, dw, dbb, T, K, N);
  } else {
    twin->norm_matmul_bf16(want, wxo, wh, NULL, x, with_r ? r : NULL, nw, 1e-5f, off, w16, hb, T,
                           K, N);
    dev->norm_matmul_bf16(dout, dxo, dh, dxs, dx, with_r ? dr : NULL, dnw, 1e-5f, off, dw, dbb, T,
                          K, N);
  }
  float *got = down(dout, (size_t)T * N * 4);
  double rel = max_rel(got, want, (size_t)T * N);
  if (!(rel <= tol)) {
    fprintf(stderr, "  max rel diff %g (tolerance %g)\n", rel, tol);
    bad = 0;
  }
  if (bad < 0 && !glu && with_r) {
    float *gxo = down(dxo, nx * 4);
    if ((bad = mismatch(gxo, wxo, nx, 0, 0)) >= 0)
      fprintf(stderr, "  xo differs from x + r\n");
    free(gxo);
  }
  if (bad >= 0)
    fprintf(stderr, "  %s T=%d K=%d N=%d r=%d off=%g act=%d bias=%d\n",
            glu ? "glu_matmul" : "norm_matmul", T, K, N, with_r, off, act, with_bias);
  dev->free(dx), dev->free(dr), dev->free(dnw), dev->free(db), dev->free(dout), dev->free(dxo);
  dev->free(dh), dev->free(dw), dev->free(dxs);
  free(x), free(r), free(nw), free(b), free(want), free(wxo), free(wh), free(w16), free(got);
  return bad;
}

TEST(test_cuda_fused_matmul) {
  NEED_DEVICE();
  static const int Ts[] = {1, 2, 3, 5, 8, 16, 17, 40};
  /* fused up to 16 rows; the separate ops through cuBLASLt (gemv_rows 0);
   * the separate ops through the matrix-vector kernel (fuse_rows 0) */
  for (int pass = 0; pass < 3; pass++) {
    ask_cuda_set_gemv_rows(pass == 1 ? 0 : 16);
    ask_cuda_set_fuse_rows(pass == 2 ? 0 : 16);
    for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) {
      int T = Ts[i];
      double tol = pass != 1 && T <= 16 ? 1e-4 : 1e-2;
      for (int c = 0; c < 4; c++) { /* with r, Gemma's offset */
        ASSERT_EQ(fused_case(0, T, 2048, 3072, c & 1, (float)(c >> 1), 0, c & 1, tol), -1);
        ASSERT_EQ(fused_case(0, T, 1000, 77, !(c & 1), (float)(c >> 1), 0, c >> 1, tol), -1);
      }
      for (int act = 0; act < 3; act++) {
        ASSERT_EQ(fused_case(1, T, 8192, 2048, 0, 0.0f, act, act & 1, tol), -1);
        ASSERT_EQ(fused_case(1, T, 1000, 77, 0, 0.0f, act, !(act & 1), tol), -1);
      }
      if (T <= 16) { /* K % 8 != 0: the matrix-vector kernels whatever gemv_rows says */
        ASSERT_EQ(fused_case(0, T, 203, 50, 1, 1.0f, 0, 1, 1e-4), -1);
        ASSERT_EQ(fused_case(1, T, 100, 50, 0, 0.0f, ASK_ACT_GELU_TANH, 0, 1e-4), -1);
      }
    }
  }
  ask_cuda_set_gemv_rows(16);
  ask_cuda_set_fuse_rows(16);
  /* rows longer than a block stages at once (chunks), as gemma-2b's down */
  ASSERT_EQ(fused_case(1, 1, 16384, 2048, 0, 0.0f, ASK_ACT_GELU_TANH, 0, 1e-4), -1);
  ASSERT_EQ(fused_case(1, 4, 16384, 300, 0, 0.0f, ASK_ACT_GELU_TANH, 1, 1e-4), -1);
  ASSERT_EQ(fused_case(0, 16, 8192, 300, 1, 0.0f, 0, 1, 1e-4), -1);
}

/* The persistent one-row kernels (ask_cuda_set_gemv_pw 1 and 2) on the
 * decode shapes of Llama-3.2-1B and gemma-2b (qkv, gate/up, down: one step
 * a row, many rows a warp; 4 and 8 steps a row) and odd ones (K 1536: U 2;
 * 1000: not theirs), plain and fused, against the twins; then a captured
 * graph of both fusions with them on. */
TEST(test_cuda_gemv_pw) {
  NEED_DEVICE();
  ask_cuda_set_gemv_rows(1);
  ask_cuda_set_fuse_rows(1);
  int pw0 = ask_cuda_set_gemv_pw(1);
  for (int pw = 1; pw <= 2; pw++) {
    ask_cuda_set_gemv_pw(pw);
    ASSERT_EQ(matmul_case(1, 1, 2048, 3072, 0, 0), -1);
    ASSERT_EQ(matmul_case(1, 1, 2048, 2561, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 1, 8192, 2048, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 1, 1536, 77, 1, 0), -1);
    ASSERT_EQ(matmul_case(1, 1, 1000, 77, 1, 0), -1);
    ASSERT_EQ(fused_case(0, 1, 2048, 16384, 1, 0.0f, 0, 0, 1e-4), -1);
    ASSERT_EQ(fused_case(0, 1, 2048, 32768, 1, 1.0f, 0, 1, 1e-4), -1);
    ASSERT_EQ(fused_case(0, 1, 1536, 300, 0, 1.0f, 0, 1, 1e-4), -1);
    ASSERT_EQ(fused_case(1, 1, 8192, 2048, 0, 0.0f, ASK_ACT_SILU, 0, 1e-4), -1);
    ASSERT_EQ(fused_case(1, 1, 16384, 2048, 0, 0.0f, ASK_ACT_GELU_TANH, 1, 1e-4), -1);
  }
  ask_cuda_set_gemv_pw(pw0);
  ask_cuda_set_gemv_rows(16);
  ask_cuda_set_fuse_rows(16);
}

/* norm_matmul_rope_kv at one row with the rope fused into the persistent
 * kernel (ask_cuda_set_fuse_rope(1)) against the same op as two launches
 * (fuse_rope 0): the qkv row, xo and the cache rows bit for bit, on the
 * head shapes of Llama-3.2-1B (32/8/64) and gemma-2b (8/1/256), with and
 * without r, bias and a cache slot. */
TEST(test_cuda_norm_rope) {
  NEED_DEVICE();
  static const int hs[2][3] = {{32, 8, 64}, {8, 1, 256}};
  ask_cuda_set_gemv_rows(1);
  ask_cuda_set_fuse_rows(1);
  int pw0 = ask_cuda_set_gemv_pw(2), fr0 = ask_cuda_set_fuse_rope(0);
  for (int c = 0; c < 4; c++) {
    int nh = hs[c & 1][0], nkv = hs[c & 1][1], D = hs[c & 1][2], K = 2048, cap = 64;
    int N = (nh + 2 * nkv) * D, kvd = nkv * D;
    int32_t hp[2] = {100 + c, c == 3 ? -1 : 40 + c};
    float *x = rnd(K, 2), *r = rnd(K, 1), *nw = rnd(K, 1), *b = rnd(N, 1), *invf = inv_freq(D);
    uint16_t *w16 = rnd16((size_t)N * K), *cache = rnd16((size_t)cap * kvd);
    float *dx = up(x, K * 4), *dr = up(r, K * 4), *dnw = up(nw, K * 4), *db = up(b, N * 4);
    float *dinv = up(invf, D / 2 * 4);
    int32_t *dpos = up(hp, 4), *dslot = up(hp + 1, 4);
    uint16_t *dw = up(w16, (size_t)N * K * 2), *dxs = up(NULL, (size_t)K * 2);
    float *got[2][2], *dh = up(NULL, (size_t)K * 4);
    uint16_t *gc[2][2];
    for (int f = 0; f < 2; f++) {
      float *dout = up(NULL, (size_t)N * 4), *dxo = up(NULL, (size_t)K * 4);
      uint16_t *dkc = up(cache, (size_t)cap * kvd * 2), *dvc = up(cache, (size_t)cap * kvd * 2);
      ask_cuda_set_fuse_rope(f);
      dev->norm_matmul_rope_kv(dout, dxo, dh, dxs, dx, c & 2 ? NULL : dr, dnw, 1e-6f,
                               (float)(c & 1), dw, c & 1 ? db : NULL, 1, K, dkc, dvc, dpos, dslot,
                               dinv, nh, nkv, D);
      got[f][0] = down(dout, (size_t)N * 4);
      got[f][1] = down(dxo, (size_t)K * 4);
      gc[f][0] = down(dkc, (size_t)cap * kvd * 2);
      gc[f][1] = down(dvc, (size_t)cap * kvd * 2);
      dev->free(dout), dev->free(dxo), dev->free(dkc), dev->free(dvc);
    }
    ASSERT_MEM_EQ(got[1][0], got[0][0], (size_t)N * 4);
    if (!(c & 2))
      ASSERT_MEM_EQ(got[1][1], got[0][1], (size_t)K * 4);
    ASSERT_MEM_EQ(gc[1][0], gc[0][0], (size_t)cap * kvd * 2);
    ASSERT_MEM_EQ(gc[1][1], gc[0][1], (size_t)cap * kvd * 2);
    for (int f = 0; f < 2; f++)
      free(got[f][0]), free(got[f][1]), free(gc[f][0]), free(gc[f][1]);
    dev->free(dx), dev->free(dr), dev->free(dnw), dev->free(db), dev->free(dinv);
    dev->free(dpos), dev->free(dslot), dev->free(dw), dev->free(dxs), dev->free(dh);
    free(x), free(r), free(nw), free(b), free(invf), free(w16), free(cache);
  }
  char err[256];
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  ask_cuda_set_gemv_pw(pw0);
  ask_cuda_set_fuse_rope(fr0);
  ask_cuda_set_gemv_rows(16);
  ask_cuda_set_fuse_rows(16);
}

/* norm_matmul_glu at one row with the activation fused into the persistent
 * kernel (ask_cuda_set_fuse_gate(1): returns 1, g written) against the
 * unfused op (returns 0, gu written) followed by glu_rows: g within 1e-6 of
 * max |g| (the same arithmetic; nvcc may contract the activation's
 * products differently in the two kernels), xo bit for bit; the shapes of
 * Llama-3.2-1B (F 8192, silu) and gemma-2b (F 16384, gelu-tanh). */
TEST(test_cuda_norm_glu) {
  NEED_DEVICE();
  static const int Fs[2] = {8192, 16384}, acts[2] = {ASK_ACT_SILU, ASK_ACT_GELU_TANH};
  ask_cuda_set_gemv_rows(1);
  ask_cuda_set_fuse_rows(1);
  int pw0 = ask_cuda_set_gemv_pw(2), fg0 = ask_cuda_set_fuse_gate(0);
  for (int c = 0; c < 2; c++) {
    int F = Fs[c], K = 2048, N = 2 * F;
    float *x = rnd(K, 2), *r = rnd(K, 1), *nw = rnd(K, 1), *b = rnd(N, 1);
    uint16_t *w16 = rnd16((size_t)N * K);
    for (size_t i = 0; i < (size_t)N * K; i++) /* weights of about +-0.1 */
      w16[i] = to_bf16(from_bf16(w16[i]) * 0.1f);
    float *dx = up(x, K * 4), *dr = up(r, K * 4), *dnw = up(nw, K * 4), *db = up(b, N * 4);
    uint16_t *dw = up(w16, (size_t)N * K * 2), *dxs = up(NULL, (size_t)K * 2);
    float *dh = up(NULL, (size_t)K * 4), *got[2][2];
    for (int f = 0; f < 2; f++) {
      float *dg = up(NULL, (size_t)F * 4), *dgu = up(NULL, (size_t)N * 4),
            *dxo = up(NULL, (size_t)K * 4);
      ask_cuda_set_fuse_gate(f);
      int glued = dev->norm_matmul_glu(dg, dgu, dxo, dh, dxs, dx, dr, dnw, 1e-6f, (float)c, dw,
                                       c ? db : NULL, 1, K, F, acts[c]);
      ASSERT_EQ(glued, f);
      if (!glued)
        dev->glu_rows(dg, dgu, 1, F, acts[c]);
      got[f][0] = down(dg, (size_t)F * 4);
      got[f][1] = down(dxo, (size_t)K * 4);
      dev->free(dg), dev->free(dgu), dev->free(dxo);
    }
    double rel = max_rel(got[1][0], got[0][0], (size_t)F);
    if (!(rel <= 1e-6))
      fprintf(stderr, "  norm_glu F=%d: max rel diff %g\n", F, rel);
    ASSERT_TRUE(rel <= 1e-6);
    ASSERT_MEM_EQ(got[1][1], got[0][1], (size_t)K * 4);
    for (int f = 0; f < 2; f++)
      free(got[f][0]), free(got[f][1]);
    dev->free(dx), dev->free(dr), dev->free(dnw), dev->free(db), dev->free(dw), dev->free(dxs);
    dev->free(dh);
    free(x), free(r), free(nw), free(b), free(w16);
  }
  char err[256];
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  ask_cuda_set_gemv_pw(pw0);
  ask_cuda_set_fuse_gate(fg0);
  ask_cuda_set_gemv_rows(16);
  ask_cuda_set_fuse_rows(16);
}

/* norm_matmul_mlp (gemv_mlp.cu: the MLP of one row in one launch, the
 * down product added into acc by atomic adds) against its twin on the
 * same inputs: acc (which held acc0 before) within 1e-4 of max |want|
 * (sums in another order), xo bit for bit, clear all zeros; the same from
 * a captured graph. The shapes: Llama-3.2-1B's (F 8192, silu), a small
 * one with biases whose units do not fill the grid evenly (K 256, F 100:
 * U 1; gelu-tanh, the norm's offset 1), rows of several steps (K 3072: U
 * 4, 3 steps; K 4096: U 8, 2 steps) and, on the GPU, gemma-2b's (F 16384,
 * gelu-tanh, offset 1) and Llama's again with blocks of 16 warps; the
 * others take 8 or 16 warps in turn (ask_cuda_set_mlp_warps). It takes no
 * other row count. */
typedef struct {
  float *acc, *clear, *xo, *x, *r, *nw, *gub, *db;
  uint16_t *gu, *dt;
  int K, F, act;
  float off;
} mlp_case_t;

static void mlp_run(void *ud) {
  const mlp_case_t *m = ud;
  (void)dev->norm_matmul_mlp(m->acc, m->clear, m->xo, m->x, m->r, m->nw, 1e-6f, m->off, m->gu,
                             m->gub, m->dt, m->db, 1, m->K, m->F, m->act);
}

TEST(test_cuda_mlp) {
  NEED_DEVICE();
  /* K, F, activation, biases, warps a block */
  static const int shapes[6][5] = {{2048, 8192, ASK_ACT_SILU, 0, 8},
                                   {256, 100, ASK_ACT_GELU_TANH, 1, 16},
                                   {3072, 333, ASK_ACT_SILU, 1, 16},
                                   {4096, 260, ASK_ACT_GELU_TANH, 0, 8},
                                   {2048, 16384, ASK_ACT_GELU_TANH, 0, 8},
                                   {2048, 8192, ASK_ACT_SILU, 0, 16}};
#ifdef AS_CUDAEMU_BACKEND
  const int ncase = 4; /* the emulator: the last two add a minute */
#else
  const int ncase = 6;
#endif
  int pw0 = ask_cuda_set_gemv_pw(2), mw0 = ask_cuda_set_mlp_warps(8);
  ASSERT_TRUE(dev->norm_matmul_mlp != NULL);
  ASSERT_EQ(dev->norm_matmul_mlp(NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL,
                                 2, 2048, 8192, ASK_ACT_SILU), 0);
  ASSERT_EQ(dev->norm_matmul_mlp(NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, NULL,
                                 1, 2000, 8192, ASK_ACT_SILU), 0);
  for (int c = 0; c < ncase; c++) {
    int K = shapes[c][0], F = shapes[c][1], act = shapes[c][2], bias = shapes[c][3];
    size_t G = (size_t)2 * F * K, D = (size_t)F * K;
    ask_cuda_set_mlp_warps(shapes[c][4]);
    ASSERT_EQ(dev->norm_matmul_mlp(NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL,
                                   NULL, 1, K, F, act), 1);
    float *x = rnd(K, 2), *r = rnd(K, 1), *nw = rnd(K, 1), *gub = rnd(2 * F, 1),
          *db = rnd(K, 1), *acc0 = rnd(K, 1), *junk = rnd(K, 5);
    uint16_t *gu = rnd16(G), *dt = rnd16(D);
    for (size_t i = 0; i < G; i++) /* weights of about +-0.1 */
      gu[i] = to_bf16(from_bf16(gu[i]) * 0.1f);
    for (size_t i = 0; i < D; i++)
      dt[i] = to_bf16(from_bf16(dt[i]) * 0.1f);
    mlp_case_t m = {up(acc0, K * 4), up(junk, K * 4), up(NULL, K * 4), up(x, K * 4),
                    up(r, K * 4), up(nw, K * 4), bias ? up(gub, 2 * F * 4) : NULL,
                    bias ? up(db, K * 4) : NULL, up(gu, G * 2), up(dt, D * 2), K, F, act,
                    (float)(c != 0)};
    mlp_run(&m);
    float *acc = down(m.acc, K * 4), *xo = down(m.xo, K * 4), *clear = down(m.clear, K * 4);
    /* the twin on host copies */
    float *wacc = hdup(acc0, K * 4), *wxo = malloc(K * 4), *wclear = hdup(junk, K * 4);
    ASSERT_EQ(twin->norm_matmul_mlp(wacc, wclear, wxo, x, r, nw, 1e-6f, m.off, gu,
                                    bias ? gub : NULL, dt, bias ? db : NULL, 1, K, F, act), 1);
    double rel = max_rel(acc, wacc, K);
    if (!(rel <= 1e-4))
      fprintf(stderr, "  mlp K=%d F=%d W=%d: max rel diff %g\n", K, F, shapes[c][4], rel);
    ASSERT_TRUE(rel <= 1e-4);
    ASSERT_MEM_EQ(xo, wxo, (size_t)K * 4);
    for (int i = 0; i < K; i++)
      ASSERT_TRUE(clear[i] == 0.0f);
    /* from a graph, acc back to acc0 and clear to junk after the capture */
    void *g = NULL;
    char err[256];
    int rc = dev->graph_capture(&g, mlp_run, &m, err, sizeof err);
    if (rc != 0)
      fprintf(stderr, "  graph_capture: %s\n", err);
    ASSERT_EQ(rc, 0);
    put(m.acc, acc0, K * 4);
    put(m.clear, junk, K * 4);
    ASSERT_EQ(dev->graph_launch(g, err, sizeof err), 0);
    float *gacc = down(m.acc, K * 4), *gclear = down(m.clear, K * 4);
    ASSERT_TRUE(max_rel(gacc, wacc, K) <= 1e-4);
    for (int i = 0; i < K; i++)
      ASSERT_TRUE(gclear[i] == 0.0f);
    dev->graph_free(g);
    free(gacc), free(gclear);
    free(acc), free(xo), free(clear), free(wacc), free(wxo), free(wclear);
    float *dp[] = {m.acc, m.clear, m.xo, m.x, m.r, m.nw, m.gub, m.db};
    for (size_t i = 0; i < sizeof dp / sizeof dp[0]; i++)
      dev->free(dp[i]);
    dev->free(m.gu), dev->free(m.dt);
    free(x), free(r), free(nw), free(gub), free(db), free(acc0), free(junk), free(gu), free(dt);
  }
  char err[256];
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  ask_cuda_set_gemv_pw(pw0);
  ask_cuda_set_mlp_warps(mw0);
}

/* Both fusions in a graph, as the engine's captured decode step runs them:
 * the same bytes as run directly, for inputs copied in after the capture. */
typedef struct {
  float *out1, *out2, *xo, *h, *g, *x, *r, *nw, *gu;
  uint16_t *w1, *w2, *xs;
  int T, K, F;
} fz_step_t;

static void fz_step_run(void *ud) {
  const fz_step_t *f = ud;
  dev->norm_matmul_bf16(f->out1, f->xo, f->h, f->xs, f->x, f->r, f->nw, 1e-6f, 1.0f, f->w1, NULL,
                        f->T, f->K, 2 * f->F);
  dev->glu_matmul_bf16(f->out2, f->g, f->xs, f->out1, ASK_ACT_GELU_TANH, f->w2, NULL, f->T, f->F,
                       f->K);
}

TEST(test_cuda_graph_fused) {
  NEED_DEVICE();
  ask_cuda_set_gemv_rows(16);
  ask_cuda_set_fuse_rows(16);
  int pw0 = ask_cuda_set_gemv_pw(0);
  for (int pass = 0; pass < 2; pass++) { /* 3 rows; 1 row on the persistent kernels */
    ask_cuda_set_gemv_pw(pass);
    int T = pass == 0 ? 3 : 1, K = 512, F = 768;
    size_t nx = (size_t)T * K;
    uint16_t *w1 = rnd16((size_t)2 * F * K), *w2 = rnd16((size_t)K * F);
    float *nw = rnd(K, 1);
    fz_step_t f = {up(NULL, (size_t)T * 2 * F * 4), up(NULL, nx * 4), up(NULL, nx * 4),
                   up(NULL, nx * 4), up(NULL, (size_t)T * F * 4), up(NULL, nx * 4),
                   up(NULL, nx * 4), up(nw, (size_t)K * 4), NULL, up(w1, (size_t)2 * F * K * 2),
                   up(w2, (size_t)K * F * 2), up(NULL, (size_t)T * F * 2), T, K, F};
    void *g = NULL;
    char err[256] = "";
    int rc = dev->graph_capture(&g, fz_step_run, &f, err, sizeof err);
    if (rc != 0)
      fprintf(stderr, "  graph_capture: %s\n", err);
    ASSERT_EQ(rc, 0);
    for (int k = 0; k < 2; k++) {
      float *x = rnd(nx, 2), *r = rnd(nx, 1);
      put(f.x, x, nx * 4);
      put(f.r, r, nx * 4);
      ASSERT_EQ(dev->graph_launch(g, err, sizeof err), 0);
      float *o1 = down(f.out1, (size_t)T * 2 * F * 4), *o2 = down(f.out2, nx * 4),
            *xo = down(f.xo, nx * 4);
      fz_step_run(&f);
      float *e1 = down(f.out1, (size_t)T * 2 * F * 4), *e2 = down(f.out2, nx * 4),
            *exo = down(f.xo, nx * 4);
      ASSERT_MEM_EQ(o1, e1, (size_t)T * 2 * F * 4);
      ASSERT_MEM_EQ(o2, e2, nx * 4);
      ASSERT_MEM_EQ(xo, exo, nx * 4);
      for (size_t i = 0; i < nx; i++)
        ASSERT_TRUE(xo[i] == x[i] + r[i]);
      free(x), free(r), free(o1), free(o2), free(xo), free(e1), free(e2), free(exo);
    }
    dev->graph_free(g);
    ASSERT_EQ(dev->sync(err, sizeof err), 0);
    dev->free(f.out1), dev->free(f.out2), dev->free(f.xo), dev->free(f.h), dev->free(f.g);
    dev->free(f.x), dev->free(f.r), dev->free(f.nw), dev->free(f.w1), dev->free(f.w2);
    dev->free(f.xs);
    free(w1), free(w2), free(nw);
  }
  ask_cuda_set_gemv_pw(pw0);
}

/* gemv_chain (ask_cuda_set_chain(1)): a layer's o, gate/up with the
 * activation, down and the next layer's qkv with rope_kv as one launch,
 * and the same from the layer's attention on (ask_cuda_set_attn_decode(1):
 * the decode kernel's unit as the chain's first phase; one sequence at
 * position 300 in 32 parts), against the same ops launched one by one
 * (chain off: gemv_chain returns 0): every output bit for bit, run once,
 * run 100 times back to back (the grid barrier 300 or 400 times; a race
 * shows as a changed bit), and captured in a graph replayed three times
 * with new inputs. On the GPU the shapes of Llama-3.2-1B (32 heads of 64, 8
 * kv heads, F 8192, silu) and gemma-2b (8 heads of 256, one kv head, F
 * 16384, gelu-tanh); on the emulated backend small ones of one U. */
enum { CH_PAGE = 16, CH_NP = 24, CH_POS = 300 };
typedef struct {
  ask_chain_op_t op[5], *o; /* o: the four products (op + attn) */
  float *x, *q, *att, *part, *r, *xo1, *xo2, *gu, *g, *qkv, *h;
  uint16_t *kc, *vc, *xs;
  int attn, C, F, N, qd, kvd, cap;
} chain_t;

static void chain_run(void *ud) {
  chain_t *c = ud;
  if (!dev->gemv_chain(c->op, 4 + c->attn))
    fprintf(stderr, "  gemv_chain: not taken\n");
}

/* The ops one by one, as the engine runs them unchained. */
static void chain_each(const chain_t *c) {
  const ask_chain_op_t *o = c->o, *a = &c->op[0];
  if (c->attn)
    dev->attention_paged(a->out, a->part, a->x, a->kc, a->vc, a->table, a->seq, a->pos, 1, a->nh,
                         a->nkv, a->D, a->q_stride, a->table_width, a->page, a->nsplit,
                         a->scale);
  dev->matmul_bf16(o[0].out, c->xs, o[0].x, o[0].w, o[0].bias, 1, o[0].K, o[0].N);
  if (dev->norm_matmul_glu(c->g, c->gu, c->xo1, c->h, c->xs, o[1].x, o[1].r, o[1].nw, o[1].eps,
                           o[1].w_offset, o[1].w, NULL, 1, o[1].K, c->F, o[2].act))
    dev->matmul_bf16(o[2].out, c->xs, c->g, o[2].w, NULL, 1, c->F, c->C);
  else
    dev->glu_matmul_bf16(o[2].out, c->g, c->xs, c->gu, o[2].act, o[2].w, NULL, 1, c->F, c->C);
  dev->norm_matmul_rope_kv(o[3].out, o[3].xo, c->h, c->xs, o[3].x, o[3].r, o[3].nw, o[3].eps,
                           o[3].w_offset, o[3].w, o[3].bias, 1, o[3].K, o[3].kc, o[3].vc,
                           o[3].pos, o[3].slot, o[3].inv_freq, o[3].nh, o[3].nkv, o[3].D);
}

/* Everything the chain writes but its scratch (gu and g of the gate/up and
 * down pair, the attention's parts), downloaded into one host buffer. */
static uint8_t *chain_get(const chain_t *c, size_t *n) {
  size_t a = (size_t)c->C * 4, q = (size_t)c->N * 4, kv = (size_t)c->cap * c->kvd * 2,
         t = (size_t)c->qd * 4;
  *n = 3 * a + q + 2 * kv + t;
  uint8_t *h = malloc(*n);
  void *parts[7] = {down(c->r, a),   down(c->xo1, a), down(c->xo2, a), down(c->qkv, q),
                    down(c->kc, kv), down(c->vc, kv), down(c->att, t)};
  size_t sz[7] = {a, a, a, q, kv, kv, t}, o = 0;
  for (int i = 0; i < 7; i++) {
    memcpy(h + o, parts[i], sz[i]);
    o += sz[i];
    free(parts[i]);
  }
  return h;
}

static int chain_case(int C, int nh, int nkv, int D, int F, int act, int attn) {
  chain_t c;
  memset(&c, 0, sizeof c);
  int qd = nh * D, N = (nh + 2 * nkv) * D, kvd = nkv * D, cap = CH_NP * CH_PAGE, nsplit = 32;
  c.attn = attn, c.o = c.op + attn;
  c.C = C, c.F = F, c.N = N, c.qd = qd, c.kvd = kvd, c.cap = cap;
  /* keys 0..CH_POS in shuffled pages; the new k and v go to a page no key
   * of the row is in, so that every run reads the same keys */
  int32_t tab[CH_NP], ints[3] = {CH_POS, 0, 0};
  for (int i = 0; i < CH_NP; i++)
    tab[i] = (i * 5 + 3) % CH_NP;
  ints[1] = tab[CH_NP - 1] * CH_PAGE + 5;
  float *x = rnd(C, 2), *att = rnd(qd, 1), *q = rnd(N, 1), *nw1 = rnd(C, 1), *nw2 = rnd(C, 1),
        *bo = rnd(C, 1), *bq = rnd(N, 1), *invf = inv_freq(D);
  uint16_t *wo = rnd16((size_t)C * qd), *wgu = rnd16((size_t)2 * F * C),
           *wd = rnd16((size_t)C * F), *wq = rnd16((size_t)N * C),
           *cache = rnd16((size_t)cap * kvd);
  c.x = up(x, C * 4), c.att = up(att, qd * 4), c.q = up(q, N * 4);
  c.part = up(NULL, (size_t)nsplit * nh * (D + 2) * 4);
  c.r = up(NULL, C * 4), c.xo1 = up(NULL, C * 4), c.xo2 = up(NULL, C * 4), c.h = up(NULL, F * 4);
  c.gu = up(NULL, (size_t)2 * F * 4), c.g = up(NULL, F * 4), c.qkv = up(NULL, N * 4);
  c.kc = up(cache, (size_t)cap * kvd * 2), c.vc = up(cache, (size_t)cap * kvd * 2);
  c.xs = up(NULL, (size_t)F * 2);
  void *dv[] = {up(nw1, C * 4), up(nw2, C * 4), up(bo, C * 4), up(bq, N * 4), up(invf, D / 2 * 4),
                up(ints, 4), up(ints + 1, 4), up(wo, (size_t)C * qd * 2),
                up(wgu, (size_t)2 * F * C * 2), up(wd, (size_t)C * F * 2),
                up(wq, (size_t)N * C * 2), up(tab, sizeof tab), up(ints + 2, 4)};
  if (attn)
    c.op[0] = (ask_chain_op_t){.kind = ASK_CHAIN_ATTENTION, .out = c.att, .part = c.part,
                               .x = c.q, .kc = c.kc, .vc = c.vc, .table = dv[11],
                               .seq = dv[12], .pos = dv[5], .nh = nh, .nkv = nkv, .D = D,
                               .q_stride = N, .table_width = CH_NP, .page = CH_PAGE,
                               .nsplit = nsplit, .scale = 1.0f / sqrtf((float)D)};
  c.o[0] = (ask_chain_op_t){.kind = ASK_CHAIN_MATMUL, .out = c.r, .xs = c.xs, .x = c.att,
                            .w = dv[7], .bias = dv[2], .K = qd, .N = C};
  c.o[1] = (ask_chain_op_t){.kind = ASK_CHAIN_NORM_MATMUL, .out = c.gu, .xo = c.xo1, .h = c.h,
                            .xs = c.xs, .x = c.x, .r = c.r, .nw = dv[0], .eps = 1e-6f,
                            .w_offset = 1.0f, .w = dv[8], .K = C, .N = 2 * F};
  c.o[2] = (ask_chain_op_t){.kind = ASK_CHAIN_GLU_MATMUL, .out = c.r, .g = c.g, .xs = c.xs,
                            .x = c.gu, .act = act, .w = dv[9], .K = F, .N = C};
  c.o[3] = (ask_chain_op_t){.kind = ASK_CHAIN_NORM_ROPE_KV, .out = c.qkv, .xo = c.xo2,
                            .h = c.h, .xs = c.xs, .x = c.xo1, .r = c.r, .nw = dv[1],
                            .eps = 1e-6f, .w = dv[10], .bias = dv[3], .K = C, .kc = c.kc,
                            .vc = c.vc, .pos = dv[5], .slot = dv[6], .inv_freq = dv[4],
                            .nh = nh, .nkv = nkv, .D = D};
  const int n = 4 + attn;
  int rc = 0;
  size_t nb = 0, n2 = 0;
  ask_cuda_set_chain(0);
  if (dev->gemv_chain(c.op, n) != 0)
    rc = 7; /* off: not taken */
  chain_each(&c);
  uint8_t *want = chain_get(&c, &nb), *got = NULL;
  ask_cuda_set_chain(1);
#ifdef AS_CUDAEMU_BACKEND
  const int reps = 3; /* the emulator has no race to find */
#else
  const int reps = 100;
#endif
  for (int k = 0; k < reps && rc == 0; k++)
    if (!dev->gemv_chain(c.op, n))
      rc = 1;
  char err[256] = "";
  if (rc == 0 && dev->sync(err, sizeof err) != 0)
    rc = 2, fprintf(stderr, "  chain: %s\n", err);
  if (rc == 0 && (got = chain_get(&c, &n2), memcmp(got, want, nb) != 0))
    rc = 3;
  free(got), got = NULL;
  void *g = NULL;
  if (rc == 0 && dev->graph_capture(&g, chain_run, &c, err, sizeof err) != 0)
    rc = 4, fprintf(stderr, "  graph_capture: %s\n", err);
  for (int k = 0; k < 3 && rc == 0; k++) {
    float *x2 = rnd(C, 2), *q2 = rnd(N, 1);
    put(c.x, x2, C * 4);
    put(attn ? c.q : c.att, q2, (size_t)(attn ? N : qd) * 4);
    free(x2), free(q2);
    ask_cuda_set_chain(0);
    chain_each(&c);
    free(want);
    want = chain_get(&c, &nb);
    ask_cuda_set_chain(1);
    if (dev->graph_launch(g, err, sizeof err) != 0 || dev->sync(err, sizeof err) != 0)
      rc = 5, fprintf(stderr, "  graph: %s\n", err);
    else if (got = chain_get(&c, &n2), memcmp(got, want, nb) != 0)
      rc = 6;
    free(got), got = NULL;
  }
  dev->graph_free(g);
  free(want);
  for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++)
    dev->free(dv[i]);
  dev->free(c.x), dev->free(c.att), dev->free(c.q), dev->free(c.part), dev->free(c.r);
  dev->free(c.xo1), dev->free(c.xo2), dev->free(c.h), dev->free(c.gu), dev->free(c.g);
  dev->free(c.qkv), dev->free(c.kc), dev->free(c.vc), dev->free(c.xs);
  free(x), free(att), free(q), free(nw1), free(nw2), free(bo), free(bq), free(invf);
  free(wo), free(wgu), free(wd), free(wq), free(cache);
  return rc;
}

TEST(test_cuda_chain) {
  NEED_DEVICE();
  ask_cuda_set_gemv_rows(1);
  ask_cuda_set_fuse_rows(1);
  int pw0 = ask_cuda_set_gemv_pw(2), fr0 = ask_cuda_set_fuse_rope(1);
  int c0 = ask_cuda_set_chain(1), ad0 = ask_cuda_set_attn_decode(0);
  const char *st = ask_cuda_chain_state();
  printf("  chained products: %s\n", st);
  ASSERT_TRUE(strcmp(st, "on") == 0);
  for (int v = 0; v < 4; v++) {
    /* the activation in gate/up's warps or in glu_rows; the attention in
     * the chain (its decode kernel on) or not */
    const int gate = v & 1, attn = v >> 1;
    int fg0 = ask_cuda_set_fuse_gate(gate);
    ask_cuda_set_attn_decode(attn);
#ifdef AS_CUDAEMU_BACKEND
    ASSERT_EQ(chain_case(256, 4, 2, 64, 768, gate ? ASK_ACT_GELU_TANH : ASK_ACT_SILU, attn), 0);
#else
    ASSERT_EQ(chain_case(2048, 32, 8, 64, 8192, ASK_ACT_SILU, attn), 0);
    ASSERT_EQ(chain_case(2048, 8, 1, 256, 16384, ASK_ACT_GELU_TANH, attn), 0);
#endif
    ask_cuda_set_fuse_gate(fg0);
  }
  ask_cuda_set_attn_decode(ad0);
  ask_cuda_set_chain(c0);
  ask_cuda_set_gemv_pw(pw0);
  ask_cuda_set_fuse_rope(fr0);
  ask_cuda_set_gemv_rows(16);
  ask_cuda_set_fuse_rows(16);
}

TEST(test_cuda_argmax) {
  NEED_DEVICE();
  int n = 70001, T = 4;
  float *x = rnd((size_t)T * n, 5);
  int32_t want[4];
  x[10] = 9.0f, x[20000] = 9.0f;             /* row 0: tie, the first wins */
  x[n + 5] = NAN, x[n + 6] = 100.0f;          /* row 1: NaN never chosen */
  for (int i = 0; i < n; i++)                 /* row 2: all equal */
    x[2 * (size_t)n + i] = -1.0f;
  x[3 * (size_t)n] = NAN;                     /* row 3: leading NaN */
  float *dx = up(x, (size_t)T * n * 4);
  int32_t *dids = up(NULL, (size_t)T * 4);
  twin->argmax_rows(want, x, T, n);
  /* parts a row: automatic (35 here), one block a row, 7 */
  int parts[3] = {-1, 1, 7}, p0 = ask_cuda_set_argmax_parts(-1);
  for (int pc = 0; pc < 3; pc++) {
    ask_cuda_set_argmax_parts(parts[pc]);
    for (int rep = 0; rep < 2; rep++) { /* twice: the merge counters went back to 0 */
      dev->argmax_rows(dids, dx, T, n);
      int32_t *ids = down(dids, (size_t)T * 4);
      for (int t = 0; t < T; t++) {
        ASSERT_EQ(ids[t], want[t]);
        ASSERT_EQ(ids[t], ref->argmax(x + (size_t)t * n, n));
        ASSERT_EQ(cu->argmax(dx + (size_t)t * n, n), ids[t]);
      }
      ASSERT_EQ(ids[0], 10);
      ASSERT_EQ(ids[1], 6);
      free(ids);
    }
  }
  ask_cuda_set_argmax_parts(p0);
  dev->free(dx), dev->free(dids);
  free(x);
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
    /* Batched rows with their own parameters stay on the device; the twin
     * draws the same tokens with the same generator states. */
    enum { T = 8 };
    float *xs = malloc((size_t)T * n * 4), *tp = malloc((size_t)T * n * 4), temps[T], ps[T];
    int32_t ks[T], tids[T];
    uint64_t rng[T], rref[T];
    for (int t = 0; t < T; t++) {
      memcpy(xs + (size_t)t * n, x, (size_t)n * 4);
      xs[(size_t)t * n + t] += 3.0f;
      temps[t] = cs[t].temp, ks[t] = cs[t].k, ps[t] = cs[t].p;
      rng[t] = rref[t] = ask_rng_seed(77 + t);
    }
    float *dxs = up(xs, (size_t)T * n * 4), *dtemp = up(temps, sizeof temps),
          *dps = up(ps, sizeof ps), *dprobs = up(NULL, (size_t)T * n * 4);
    int32_t *dks = up(ks, sizeof ks), *dids = up(NULL, sizeof ks);
    uint64_t *drng = up(rng, sizeof rng);
    for (int probs = 0; probs < 2; probs++) {
      dev->sample_rows(dids, probs ? dprobs : NULL, dxs, dtemp, dks, dps, drng, T, n);
      twin->sample_rows(tids, probs ? tp : NULL, xs, temps, ks, ps, rref, T, n);
      int32_t *ids = down(dids, sizeof ks);
      uint64_t *rg = down(drng, sizeof rng);
      for (int t = 0; t < T; t++) {
        ASSERT_EQ(ids[t], tids[t]);
        ASSERT_UEQ(rg[t], rref[t]);
      }
      if (probs) {
        float *gp = down(dprobs, (size_t)T * n * 4);
        ASSERT_NEAR(gp, tp, (size_t)T * n, 1e-5, 1e-5);
        free(gp);
      }
      free(ids), free(rg);
    }
    dev->free(dxs), dev->free(dtemp), dev->free(dps), dev->free(dks), dev->free(dids);
    dev->free(drng), dev->free(dx), dev->free(dp), dev->free(dprobs);
    free(xs), free(tp), free(x), free(pw), free(w), free(idx);
  }
}

/* ---- captured steps ------------------------------------------------------- */

/* One decode step's attention part on backend d (the CUDA device or, with
 * host pointers, the twin): RoPE into the paged cache, paged attention over
 * it, and a fused gated activation. Every per-step value is in buffers. */
typedef struct {
  const ask_dev_t *d;
  float *qkv, *out, *part, *gu, *act, *invf;
  uint16_t *kc, *vc;
  int32_t *pos, *slot, *table, *seq;
  int T, nh, nkv, D, stride, tw, page, nsplit, F, kind;
  float scale;
} step_t;

static void step_run(void *ud) {
  const step_t *s = ud;
  s->d->rope_kv(s->qkv, s->kc, s->vc, s->pos, s->slot, s->invf, s->T, s->nh, s->nkv, s->D,
                s->stride);
  s->d->attention_paged(s->out, s->part, s->qkv, s->kc, s->vc, s->table, s->seq, s->pos, s->T,
                        s->nh, s->nkv, s->D, s->stride, s->tw, s->page, s->nsplit, s->scale);
  s->d->glu_rows(s->act, s->gu, s->T, s->F, s->kind);
}

/* The per-step inputs of a graph test: 3 sequences at positions p[0..3)
 * plus a padding row. */
typedef struct {
  float *qkv, *gu;
  int32_t pos[4], slot[4];
} step_in_t;

enum { G_T = 4, G_NH = 8, G_NKV = 2, G_D = 64, G_PAGE = 16, G_TW = 8, G_F = 256 };
static const int32_t g_seq[G_T] = {0, 1, 2, 0};

static void step_in(step_in_t *in, const int32_t *table, int p0, int p1, int p2) {
  int stride = (G_NH + 2 * G_NKV) * G_D, p[3] = {p0, p1, p2};
  in->qkv = rnd((size_t)G_T * stride, 2);
  in->gu = rnd((size_t)G_T * 2 * G_F, 4);
  for (int t = 0; t < 3; t++) {
    in->pos[t] = p[t];
    in->slot[t] = table[g_seq[t] * G_TW + p[t] / G_PAGE] * G_PAGE + p[t] % G_PAGE;
  }
  in->pos[3] = -1, in->slot[3] = -1;
}

/* Device buffers of s (d = dev) take the inputs in and the cache kc0, vc0. */
static void step_put(step_t *s, const step_in_t *in, const pcache_t *c) {
  put(s->qkv, in->qkv, (size_t)G_T * s->stride * 4);
  put(s->gu, in->gu, (size_t)G_T * 2 * G_F * 4);
  put(s->pos, in->pos, sizeof in->pos);
  put(s->slot, in->slot, sizeof in->slot);
  put(s->kc, c->kc, (size_t)c->rows * c->kvd * 2);
  put(s->vc, c->vc, (size_t)c->rows * c->kvd * 2);
}

/* What a step leaves: out, act, qkv, kc, vc (host copies). */
typedef struct {
  float *out, *act, *qkv;
  uint16_t *kc, *vc;
} step_res_t;

static void step_get(step_res_t *r, const step_t *s, const pcache_t *c) {
  r->out = down(s->out, (size_t)G_T * G_NH * G_D * 4);
  r->act = down(s->act, (size_t)G_T * G_F * 4);
  r->qkv = down(s->qkv, (size_t)G_T * s->stride * 4);
  r->kc = down(s->kc, (size_t)c->rows * c->kvd * 2);
  r->vc = down(s->vc, (size_t)c->rows * c->kvd * 2);
}

static void step_res_free(step_res_t *r) {
  free(r->out), free(r->act), free(r->qkv), free(r->kc), free(r->vc);
}

TEST(test_cuda_graph) {
  NEED_DEVICE();
  int len[3] = {G_TW * G_PAGE, G_TW * G_PAGE, G_TW * G_PAGE}, stride = (G_NH + 2 * G_NKV) * G_D;
  pcache_t c;
  pcache_make(&c, len, 3, G_NKV * G_D, G_PAGE);
  size_t nkc = (size_t)c.rows * c.kvd, no = (size_t)G_T * G_NH * G_D;
  float *invf = inv_freq(G_D), *sentinel = malloc(no * 4);
  for (size_t i = 0; i < no; i++)
    sentinel[i] = 7.0f;
  step_t s = {dev, up(NULL, (size_t)G_T * stride * 4), up(sentinel, no * 4),
              up(NULL, (size_t)4 * G_T * G_NH * (G_D + 2) * 4), up(NULL, (size_t)G_T * 2 * G_F * 4),
              up(NULL, (size_t)G_T * G_F * 4), up(invf, G_D / 2 * 4), up(NULL, nkc * 2),
              up(NULL, nkc * 2), up(NULL, G_T * 4), up(NULL, G_T * 4),
              up(c.table, (size_t)3 * G_TW * 4), up(g_seq, sizeof g_seq), G_T, G_NH, G_NKV, G_D,
              stride, G_TW, G_PAGE, 4, G_F, ASK_ACT_GELU_TANH, 1.0f / sqrtf((float)G_D)};
  step_in_t in[3];
  step_in(&in[0], c.table, 3, 40, 90);  /* the inputs at capture time */
  step_in(&in[1], c.table, 0, 63, 127); /* then other lengths: 1 key, ..., the whole table */
  step_in(&in[2], c.table, 16, 5, 100);
  step_put(&s, &in[0], &c);

  void *g = NULL;
  char err[256] = "";
  int rc = dev->graph_capture(&g, step_run, &s, err, sizeof err);
  if (rc != 0)
    fprintf(stderr, "  graph_capture: %s\n", err);
  ASSERT_EQ(rc, 0);
  ASSERT_TRUE(g != NULL);
  float *o = down(s.out, no * 4); /* recorded, not run */
  ASSERT_NEAR(o, sentinel, no, 0, 0);
  free(o);

  for (int k = 1; k < 3; k++) {
    step_res_t rg, re;
    step_put(&s, &in[k], &c);
    ASSERT_EQ(dev->graph_launch(g, err, sizeof err), 0);
    step_get(&rg, &s, &c);
    step_put(&s, &in[k], &c); /* the same ops, run directly */
    step_run(&s);
    step_get(&re, &s, &c);
    ASSERT_MEM_EQ(rg.out, re.out, no * 4);
    ASSERT_MEM_EQ(rg.act, re.act, (size_t)G_T * G_F * 4);
    ASSERT_MEM_EQ(rg.qkv, re.qkv, (size_t)G_T * stride * 4);
    ASSERT_MEM_EQ(rg.kc, re.kc, nkc * 2);
    ASSERT_MEM_EQ(rg.vc, re.vc, nkc * 2);

    /* And the twin on host copies of the same inputs. */
    float *exact = malloc(nkc * 4), *win = malloc(nkc * 4);
    kv_exact(exact, win, in[k].qkv, in[k].pos, in[k].slot, invf, G_T, G_NH, G_NKV, G_D, stride,
             c.rows);
    step_t h = s;
    h.d = twin, h.qkv = hdup(in[k].qkv, (size_t)G_T * stride * 4), h.out = malloc(no * 4);
    h.part = NULL, h.gu = in[k].gu, h.act = malloc((size_t)G_T * G_F * 4), h.invf = invf;
    h.kc = hdup(c.kc, nkc * 2), h.vc = hdup(c.vc, nkc * 2), h.pos = in[k].pos;
    h.slot = in[k].slot, h.table = c.table, h.seq = (int32_t *)g_seq;
    step_run(&h);
    double rel = max_rel(rg.out, h.out, no);
    if (!(rel <= 1e-4))
      fprintf(stderr, "  graph step %d: attention max rel diff %g\n", k, rel);
    ASSERT_TRUE(rel <= 1e-4);
    ASSERT_NEAR(rg.act, h.act, (size_t)G_T * G_F, 1e-5, 1e-5);
    ASSERT_NEAR(rg.qkv, h.qkv, (size_t)G_T * stride, 1e-5, 1e-5);
    ASSERT_EQ(bf16_mismatch(rg.kc, h.kc, exact, win, nkc), -1);
    ASSERT_EQ(bf16_mismatch(rg.vc, h.vc, NULL, NULL, nkc), -1);
    free(h.qkv), free(h.out), free(h.act), free(h.kc), free(h.vc), free(exact), free(win);
    step_res_free(&rg);
    step_res_free(&re);
  }
  dev->graph_free(g);
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  dev->free(s.qkv), dev->free(s.out), dev->free(s.part), dev->free(s.gu), dev->free(s.act);
  dev->free(s.invf), dev->free(s.kc), dev->free(s.vc), dev->free(s.pos), dev->free(s.slot);
  dev->free(s.table), dev->free(s.seq);
  for (int k = 0; k < 3; k++)
    free(in[k].qkv), free(in[k].gu);
  free(invf), free(sentinel);
  pcache_free(&c);
}

/* matmul_bf16 in a graph: a cuBLASLt shape never seen before (its plan is
 * made during the capture) and a matrix-vector one. */
typedef struct {
  float *out1, *out2, *x1, *x2, *bias;
  uint16_t *w, *xs;
  int T1, T2, K, N;
} mm_step_t;

static void mm_step_run(void *ud) {
  const mm_step_t *m = ud;
  dev->matmul_bf16(m->out1, m->xs, m->x1, m->w, m->bias, m->T1, m->K, m->N);
  dev->matmul_bf16(m->out2, m->xs, m->x2, m->w, NULL, m->T2, m->K, m->N);
}

TEST(test_cuda_graph_matmul) {
  NEED_DEVICE();
  ask_cuda_set_gemv_rows(16);
  int T1 = 24, T2 = 3, K = 320, N = 200;
  float *x1 = rnd((size_t)T1 * K, 1), *x2 = rnd((size_t)T2 * K, 1), *b = rnd(N, 1);
  uint16_t *w = rnd16((size_t)N * K), *xs = malloc((size_t)T1 * K * 2);
  float *w1 = malloc((size_t)T1 * N * 4), *w2 = malloc((size_t)T2 * N * 4);
  mm_step_t m = {up(NULL, (size_t)T1 * N * 4), up(NULL, (size_t)T2 * N * 4),
                 up(NULL, (size_t)T1 * K * 4), up(NULL, (size_t)T2 * K * 4), up(b, (size_t)N * 4),
                 up(w, (size_t)N * K * 2), up(NULL, (size_t)T1 * K * 2), T1, T2, K, N};
  int plans = ask_cuda_plan_count();
  void *g = NULL;
  char err[256] = "";
  int rc = dev->graph_capture(&g, mm_step_run, &m, err, sizeof err);
  if (rc != 0)
    fprintf(stderr, "  graph_capture: %s\n", err);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(ask_cuda_plan_count(), plans + 1);
  put(m.x1, x1, (size_t)T1 * K * 4);
  put(m.x2, x2, (size_t)T2 * K * 4);
  ASSERT_EQ(dev->graph_launch(g, err, sizeof err), 0);
  float *g1 = down(m.out1, (size_t)T1 * N * 4), *g2 = down(m.out2, (size_t)T2 * N * 4);
  mm_step_run(&m);
  float *e1 = down(m.out1, (size_t)T1 * N * 4), *e2 = down(m.out2, (size_t)T2 * N * 4);
  ASSERT_MEM_EQ(g1, e1, (size_t)T1 * N * 4);
  ASSERT_MEM_EQ(g2, e2, (size_t)T2 * N * 4);
  twin->matmul_bf16(w1, xs, x1, w, b, T1, K, N);
  twin->matmul_bf16(w2, xs, x2, w, NULL, T2, K, N);
  ASSERT_TRUE(max_rel(g1, w1, (size_t)T1 * N) <= 1e-2);
  ASSERT_TRUE(max_rel(g2, w2, (size_t)T2 * N) <= 1e-2);
  dev->graph_free(g);
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  dev->free(m.out1), dev->free(m.out2), dev->free(m.x1), dev->free(m.x2), dev->free(m.bias);
  dev->free(m.w), dev->free(m.xs);
  free(x1), free(x2), free(b), free(w), free(xs), free(w1), free(w2), free(g1), free(g2);
  free(e1), free(e2);
}

/* A step that synchronises while captured: the capture fails with a
 * message, the stream leaves capture mode, and the same ops then run
 * directly. */
typedef struct {
  float *out, *gu;
  int T, F;
} bad_step_t;

static void bad_step_run(void *ud) {
  const bad_step_t *b = ud;
  dev->glu_rows(b->out, b->gu, b->T, b->F, ASK_ACT_SILU);
  dev->sync(NULL, 0); /* illegal while capturing */
  dev->glu_rows(b->out, b->gu, b->T, b->F, ASK_ACT_SILU);
}

static void good_step_run(void *ud) {
  const bad_step_t *b = ud;
  dev->glu_rows(b->out, b->gu, b->T, b->F, ASK_ACT_GELU);
}

TEST(test_cuda_graph_failure) {
  NEED_DEVICE();
  int T = 3, F = 1000;
  float *gu = rnd((size_t)T * 2 * F, 3), *want = malloc((size_t)T * F * 4);
  bad_step_t b = {up(NULL, (size_t)T * F * 4), up(gu, (size_t)T * 2 * F * 4), T, F};
  void *g = (void *)1;
  char err[256] = "";
  ASSERT_NE(dev->graph_capture(&g, bad_step_run, &b, err, sizeof err), 0);
  ASSERT_TRUE(g == NULL);
  ASSERT_TRUE(err[0] != '\0');
  printf("  %s\n", err);
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  dev->glu_rows(b.out, b.gu, T, F, ASK_ACT_SILU);
  twin->glu_rows(want, gu, T, F, ASK_ACT_SILU);
  float *got = down(b.out, (size_t)T * F * 4);
  ASSERT_NEAR(got, want, (size_t)T * F, 1e-5, 1e-5);
  free(got);
  /* A capture works again afterwards. */
  g = NULL;
  ASSERT_EQ(dev->graph_capture(&g, good_step_run, &b, err, sizeof err), 0);
  ASSERT_EQ(dev->graph_launch(g, err, sizeof err), 0);
  twin->glu_rows(want, gu, T, F, ASK_ACT_GELU);
  got = down(b.out, (size_t)T * F * 4);
  ASSERT_NEAR(got, want, (size_t)T * F, 1e-5, 1e-5);
  free(got);
  dev->graph_free(g);
  /* Launching no graph is refused; the failure clears. */
  ASSERT_EQ(dev->graph_launch(NULL, err, sizeof err), AS_EINVAL);
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  dev->graph_free(NULL);
  dev->free(b.out), dev->free(b.gu);
  free(gu), free(want);
}

/* Programmatic dependent launch (kernels/cuda/common.cuh): a chain of
 * kernels that each read what the one before wrote and overwrite what it
 * read (matrix-vector products or cuBLASLt, the fused norm and activation
 * products or their separate ops, residual adds and norms) gives the same bits with PDL on as with it
 * off, run directly and as a captured graph (programmatic edges), several
 * times: a kernel that read before its wait, or wrote before it, would
 * change them. The values stay bounded (every product reads a normed
 * row). */
typedef struct {
  float *x, *y, *b, *gu, *g, *h, *xo, *nw;
  uint16_t *w, *wgu, *wd, *xs;
  int T, K, F, rounds;
} pdl_chain_t;

static void pdl_chain_run(void *ud) {
  const pdl_chain_t *c = ud;
  for (int i = 0; i < c->rounds; i++) {
    dev->matmul_bf16(c->b, c->xs, c->y, c->w, NULL, c->T, c->K, c->K);
    dev->add_rmsnorm(c->y, c->x, c->b, c->nw, c->T, c->K, 1e-6f, 0.0f);
    dev->norm_matmul_bf16(c->gu, c->xo, c->h, c->xs, c->x, c->b, c->nw, 1e-6f, 1.0f, c->wgu,
                          NULL, c->T, c->K, 2 * c->F);
    dev->glu_matmul_bf16(c->b, c->g, c->xs, c->gu, ASK_ACT_SILU, c->wd, NULL, c->T, c->F, c->K);
    dev->add_rmsnorm(c->y, c->xo, c->b, c->nw, c->T, c->K, 1e-6f, 0.0f);
    dev->add_rmsnorm(c->y, c->x, c->b, c->nw, c->T, c->K, 1e-6f, 0.0f);
  }
}

/* Runs the chain from x0 (direct, or n launches of graph g) and returns y. */
static float *pdl_chain_go(pdl_chain_t *c, const float *x0, void *g) {
  char err[256] = "";
  size_t n = (size_t)c->T * c->K;
  put(c->x, x0, n * 4);
  put(c->y, x0, n * 4);
  if (g == NULL)
    pdl_chain_run(c);
  else if (dev->graph_launch(g, err, sizeof err) != 0)
    fprintf(stderr, "  graph_launch: %s\n", err);
  if (dev->sync(err, sizeof err) != 0)
    fprintf(stderr, "  sync: %s\n", err);
  return down(c->y, n * 4);
}

TEST(test_cuda_pdl) {
  NEED_DEVICE();
  const char *state = ask_cuda_pdl_state();
  printf("  programmatic dependent launch: %s\n", state);
  if (strcmp(state, "on") != 0) {
    char why[320];
    snprintf(why, sizeof why, "programmatic dependent launch is off (%s)", state);
    SKIP(why);
  }
  ask_cuda_set_gemv_rows(16);
  ask_cuda_set_fuse_rows(16);
  static const int Ts[] = {1, 4, 16, 40}; /* 40: cuBLASLt and the separate ops in the chain */
  for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
#ifdef AS_CUDAEMU_BACKEND
    int T = Ts[ti], K = 256, F = 512, rounds = 4;
#else
    int T = Ts[ti], K = 1024, F = 2816, rounds = 40;
#endif
    size_t n = (size_t)T * K;
    float *x0 = rnd(n, 1), *nw = rnd((size_t)K, 0.1f);
    uint16_t *w = rnd16((size_t)K * K), *wgu = rnd16((size_t)2 * F * K), *wd = rnd16((size_t)K * F);
    pdl_chain_t c = {up(NULL, n * 4), up(NULL, n * 4), up(NULL, n * 4),
                     up(NULL, (size_t)T * 2 * F * 4), up(NULL, (size_t)T * F * 4),
                     up(NULL, n * 4), up(NULL, n * 4), up(nw, (size_t)K * 4),
                     up(w, (size_t)K * K * 2), up(wgu, (size_t)2 * F * K * 2),
                     up(wd, (size_t)K * F * 2), up(NULL, (size_t)T * F * 2), T, K, F, rounds};
    ASSERT_EQ(ask_cuda_set_pdl(0), 1);
    float *want = pdl_chain_go(&c, x0, NULL);
    ASSERT_EQ(ask_cuda_set_pdl(1), 0);
    for (int k = 0; k < 3; k++) {
      float *got = pdl_chain_go(&c, x0, NULL);
      ASSERT_MEM_EQ(got, want, n * 4);
      free(got);
    }
    void *g = NULL;
    char err[256] = "";
    int rc = dev->graph_capture(&g, pdl_chain_run, &c, err, sizeof err);
    if (rc != 0)
      fprintf(stderr, "  graph_capture: %s\n", err);
    ASSERT_EQ(rc, 0);
    for (int k = 0; k < 5; k++) {
      float *got = pdl_chain_go(&c, x0, g);
      ASSERT_MEM_EQ(got, want, n * 4);
      free(got);
    }
    dev->graph_free(g);
    double mx = 0;
    for (size_t i = 0; i < n; i++)
      mx = fmax(mx, fabs(want[i]));
    ASSERT_TRUE(isfinite(mx) && mx > 0);
    printf("  T=%d: a chain of %d ops, equal bits with and without PDL (max |y| %.3g)\n", T,
           6 * c.rounds, mx);
    dev->free(c.x), dev->free(c.y), dev->free(c.b), dev->free(c.gu), dev->free(c.g);
    dev->free(c.h), dev->free(c.xo), dev->free(c.nw), dev->free(c.w), dev->free(c.wgu);
    dev->free(c.wd), dev->free(c.xs);
    free(x0), free(nw), free(w), free(wgu), free(wd), free(want);
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
  /* Bad shapes of the paged ops are refused the same way. */
  dev->attention_paged(d, NULL, d, (uint16_t *)d, (uint16_t *)d, (int32_t *)d, (int32_t *)d,
                       (int32_t *)d, 1, 4, 4, 512, 2048, 1, 16, 1, 1.0f);
  ASSERT_EQ(dev->sync(err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "attention_paged") != NULL);
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  dev->attention_prefill(d, d, (uint16_t *)d, (uint16_t *)d, (int32_t *)d, 0, 1, 4, 4, 512, 2048,
                         16, 1.0f);
  ASSERT_EQ(dev->sync(err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "attention_prefill") != NULL);
  ASSERT_EQ(dev->sync(err, sizeof err), 0);
  dev->free(d);
}

TEST_MAIN(test_cuda_device, test_cuda_copy_async, test_cuda_embedding, test_cuda_marks,
          test_cuda_norms, test_cuda_rope, test_cuda_rope_kv, test_cuda_activations,
          test_cuda_attention, test_cuda_attention_paged, test_cuda_attention_early,
          test_cuda_attention_prefill,
          test_cuda_matmul_f32, test_cuda_matmul_bf16, test_cuda_fused_matmul,
          test_cuda_gemv_pw, test_cuda_norm_rope, test_cuda_norm_glu,
          test_cuda_mlp, test_cuda_chain,
          test_cuda_argmax, test_cuda_sample, test_cuda_graph,
          test_cuda_graph_matmul, test_cuda_graph_fused, test_cuda_graph_failure,
          test_cuda_pdl, test_cuda_errors)

#endif /* AS_HAVE_CUDA */

/* test_ops.c — each operation of the reference ops table (kernels/ref)
 * against a naive formula written out here in double precision, on small
 * random inputs. Tolerance: |got - want| <= 1e-5 + 1e-4 * |want| (f32
 * rounding of sums of at most a few hundred terms); the first mismatch is
 * printed with its index.
 */
#include <math.h>

#include "kernels.h"
#include "test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float frand(void) { /* uniform in [-1, 1) */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (float)((double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rnd(size_t n, float mul) {
  float *p = malloc(n * sizeof(float) + 1);
  for (size_t i = 0; i < n; i++)
    p[i] = frand() * mul;
  return p;
}

/* Index of the first element outside tolerance, or -1. */
static long mismatch(const float *got, const double *want, size_t n) {
  for (size_t i = 0; i < n; i++) {
    double tol = 1e-5 + 1e-4 * fabs(want[i]);
    if (!(fabs((double)got[i] - want[i]) <= tol)) {
      fprintf(stderr, "  [%zu] got %.9g want %.9g\n", i, got[i], want[i]);
      return (long)i;
    }
  }
  return -1;
}

#define ASSERT_CLOSE(got, want, n) ASSERT_EQ(mismatch(got, want, n), -1)

static const ask_ops_t *ops;

TEST(test_embedding) {
  int V = 7, C = 5, T = 4;
  int32_t ids[4] = {3, 0, 6, 3};
  float *tab = rnd((size_t)V * C, 1), out[20];
  double want[20];
  ops = ask_ref_ops();
  ops->embedding(out, tab, ids, T, C, 2.5f);
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++)
      want[t * C + c] = (double)tab[ids[t] * C + c] * 2.5;
  ASSERT_CLOSE(out, want, 20);
  free(tab);
}

TEST(test_rmsnorm) {
  int T = 3, C = 64;
  float *x = rnd((size_t)T * C, 3), *w = rnd(C, 1), out[192];
  double want[192];
  ops = ask_ref_ops();
  for (int off = 0; off <= 1; off++) { /* Llama's w, Gemma's 1 + w */
    ops->rmsnorm(out, x, w, T, C, 1e-6f, (float)off);
    for (int t = 0; t < T; t++) {
      double ss = 0;
      for (int c = 0; c < C; c++)
        ss += (double)x[t * C + c] * x[t * C + c];
      double r = 1.0 / sqrt(ss / C + 1e-6);
      for (int c = 0; c < C; c++)
        want[t * C + c] = x[t * C + c] * r * (off + (double)w[c]);
    }
    ASSERT_CLOSE(out, want, 192);
  }
  ops->rmsnorm(x, x, w, T, C, 1e-6f, 1.0f); /* in place */
  ASSERT_CLOSE(x, want, 192);
  free(x);
  free(w);
}

TEST(test_layernorm) {
  int T = 3, C = 48;
  float *x = rnd((size_t)T * C, 3), *w = rnd(C, 1), *b = rnd(C, 1), out[144];
  double want[144];
  ops = ask_ref_ops();
  for (int t = 0; t < T; t++) {
    double m = 0, v = 0;
    for (int c = 0; c < C; c++)
      m += x[t * C + c];
    m /= C;
    for (int c = 0; c < C; c++)
      v += (x[t * C + c] - m) * (x[t * C + c] - m);
    v /= C;
    for (int c = 0; c < C; c++)
      want[t * C + c] = (x[t * C + c] - m) / sqrt(v + 1e-12) * w[c] + b[c];
  }
  ops->layernorm(out, x, w, b, T, C, 1e-12f);
  ASSERT_CLOSE(out, want, 144);
  free(x);
  free(w);
  free(b);
}

TEST(test_matmul) {
  int Ts[3] = {1, 5, 33}, K = 70, N = 37;
  ops = ask_ref_ops();
  for (int i = 0; i < 3; i++) {
    int T = Ts[i];
    float *x = rnd((size_t)T * K, 1), *w = rnd((size_t)N * K, 1), *b = rnd(N, 1);
    float *out = malloc((size_t)T * N * sizeof(float));
    double *want = malloc((size_t)T * N * sizeof(double));
    for (int withb = 0; withb <= 1; withb++) {
      ops->matmul(out, x, w, withb ? b : NULL, T, K, N);
      for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
          double s = withb ? b[n] : 0;
          for (int k = 0; k < K; k++)
            s += (double)x[t * K + k] * w[n * K + k];
          want[t * N + n] = s;
        }
      ASSERT_CLOSE(out, want, (size_t)T * N);
    }
    free(x);
    free(w);
    free(b);
    free(out);
    free(want);
  }
}

TEST(test_rope) {
  int T = 3, nh = 2, D = 8, stride = 20; /* a strided view: 4 floats of padding */
  int32_t pos[3] = {0, 5, 17};
  float inv[4], *x = rnd((size_t)T * stride, 1), *x0 = malloc((size_t)T * stride * sizeof(float));
  double want[60];
  ops = ask_ref_ops();
  for (int i = 0; i < D / 2; i++)
    inv[i] = (float)(1.0 / pow(10000.0, 2.0 * i / D));
  memcpy(x0, x, (size_t)T * stride * sizeof(float));
  for (int t = 0; t < T; t++)
    for (int j = 0; j < stride; j++)
      want[t * stride + j] = x0[t * stride + j];
  for (int t = 0; t < T; t++)
    for (int h = 0; h < nh; h++)
      for (int i = 0; i < D; i++) { /* x * cos + rotate_half(x) * sin */
        double a = (double)pos[t] * inv[i % (D / 2)];
        const float *hx = x0 + t * stride + h * D;
        double rot = i < D / 2 ? -hx[i + D / 2] : hx[i - D / 2];
        want[t * stride + h * D + i] = hx[i] * cos(a) + rot * sin(a);
      }
  ops->rope(x, pos, inv, T, nh, D, stride);
  ASSERT_CLOSE(x, want, (size_t)T * stride);
  free(x);
  free(x0);
}

/* Naive attention in double for one configuration. */
static long check_attention(int T, int L, int nh, int nkv, int D, int causal, const int32_t *mask) {
  int kvs = nkv * D + 3; /* padded rows: the cache's stride need not be packed */
  float *q = rnd((size_t)T * nh * D, 1), *k = rnd((size_t)L * kvs, 1), *v = rnd((size_t)L * kvs, 1);
  float *out = malloc((size_t)T * nh * D * sizeof(float)), *scr = malloc((size_t)T * L * sizeof(float));
  double *want = calloc((size_t)T * nh * D, sizeof(double)), *p = malloc((size_t)L * sizeof(double));
  double scale = 1.0 / sqrt(D);
  long r;
  ops->attention(out, scr, q, k, v, mask, T, L, nh, nkv, D, kvs, (float)scale, causal);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < nh; h++) {
      int g = h / (nh / nkv);
      double mx = -1e300, sum = 0;
      for (int j = 0; j < L; j++) {
        int vis = (!causal || j <= L - T + t) && (mask == NULL || mask[j]);
        double s = 0;
        for (int d = 0; d < D; d++)
          s += (double)q[t * nh * D + h * D + d] * k[j * kvs + g * D + d];
        p[j] = vis ? s * scale : -INFINITY;
        if (p[j] > mx)
          mx = p[j];
      }
      for (int j = 0; j < L; j++) {
        p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - mx);
        sum += p[j];
      }
      for (int d = 0; d < D; d++) {
        double o = 0;
        for (int j = 0; j < L; j++)
          o += sum > 0 ? p[j] / sum * v[j * kvs + g * D + d] : 0;
        want[t * nh * D + h * D + d] = o;
      }
    }
  r = mismatch(out, want, (size_t)T * nh * D);
  free(q);
  free(k);
  free(v);
  free(out);
  free(scr);
  free(want);
  free(p);
  return r;
}

TEST(test_attention) {
  int32_t mask[9] = {1, 1, 0, 1, 1, 1, 0, 0, 1};
  int32_t none[4] = {0, 0, 0, 0};
  ops = ask_ref_ops();
  ASSERT_EQ(check_attention(1, 1, 4, 4, 8, 1, NULL), -1);   /* first decode step */
  ASSERT_EQ(check_attention(6, 6, 4, 2, 8, 1, NULL), -1);   /* GQA prefill */
  ASSERT_EQ(check_attention(3, 10, 4, 1, 16, 1, NULL), -1); /* MQA, chunk after a past */
  ASSERT_EQ(check_attention(1, 12, 6, 3, 4, 1, NULL), -1);  /* GQA decode */
  ASSERT_EQ(check_attention(9, 9, 2, 2, 8, 0, mask), -1);   /* BERT: bidirectional + mask */
  ASSERT_EQ(check_attention(2, 4, 2, 2, 8, 0, none), -1);   /* nothing visible: zeros */
}

TEST(test_activations) {
  size_t n = 300;
  float *g = rnd(n, 6), *u = rnd(n, 2), *out = malloc(n * sizeof(float));
  double *want = malloc(n * sizeof(double));
  ops = ask_ref_ops();
  for (int act = 0; act < 3; act++) {
    for (size_t i = 0; i < n; i++) {
      double x = g[i], a;
      if (act == ASK_ACT_SILU)
        a = x / (1 + exp(-x));
      else if (act == ASK_ACT_GELU_TANH)
        a = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
      else
        a = 0.5 * x * (1 + erf(x / sqrt(2)));
      want[i] = a;
    }
    ops->activate(out, g, n, act);
    ASSERT_CLOSE(out, want, n);
    for (size_t i = 0; i < n; i++)
      want[i] *= u[i];
    ops->glu(out, g, u, n, act);
    ASSERT_CLOSE(out, want, n);
  }
  free(g);
  free(u);
  free(out);
  free(want);
}

TEST(test_softmax_add_argmax) {
  int T = 4, N = 50;
  float *x = rnd((size_t)T * N, 20), *y = rnd((size_t)T * N, 1), out[200];
  double want[200];
  ops = ask_ref_ops();
  for (int t = 0; t < T; t++) {
    double mx = -1e300, s = 0;
    for (int j = 0; j < N; j++)
      mx = fmax(mx, x[t * N + j]);
    for (int j = 0; j < N; j++)
      s += exp(x[t * N + j] - mx);
    for (int j = 0; j < N; j++)
      want[t * N + j] = exp(x[t * N + j] - mx) / s;
  }
  ops->softmax(out, x, T, N);
  ASSERT_CLOSE(out, want, 200);
  for (int i = 0; i < 200; i++)
    want[i] = (double)x[i] + y[i];
  ops->add(out, x, y, 200);
  ASSERT_CLOSE(out, want, 200);
  float v[6] = {1, 3, NAN, 3, -2, 0};
  ASSERT_EQ(ops->argmax(v, 6), 1); /* first of a tie, never NaN */
  free(x);
  free(y);
}

TEST(test_convert) {
  uint16_t bf[3] = {0x3f80, 0xc000, 0x7f80}; /* 1, -2, inf */
  uint16_t h[6] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x7c00, 0x3555}; /* 1, -2, min subnormal, max subnormal, inf, ~1/3 */
  float o[6];
  ask_bf16_to_f32(o, bf, 3);
  ASSERT_DBL_EQ(o[0], 1.0);
  ASSERT_DBL_EQ(o[1], -2.0);
  ASSERT_TRUE(isinf(o[2]));
  ask_f16_to_f32(o, h, 6);
  ASSERT_DBL_EQ(o[0], 1.0);
  ASSERT_DBL_EQ(o[1], -2.0);
  ASSERT_DBL_EQ(o[2], ldexp(1.0, -24));
  ASSERT_DBL_EQ(o[3], 1023 * ldexp(1.0, -24));
  ASSERT_TRUE(isinf(o[4]));
  ASSERT_DBL_EQ(o[5], 0.333251953125);
}

TEST_MAIN(test_embedding, test_rmsnorm, test_layernorm, test_matmul, test_rope, test_attention,
          test_activations, test_softmax_add_argmax, test_convert)

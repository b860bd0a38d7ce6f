/* test_sample.c — the sampling op of the reference ops table
 * (kernels/ref/sample.c): greedy equals argmax, the top-k and top-p masks
 * are exact on small vectors whose answers are worked out by hand (including
 * ties and the temperature → top-k → top-p order of transformers), the top-p
 * shortcut equals a full sort on a vocabulary-sized vector, draws follow the
 * final distribution (chi-square with a fixed seed), and seeds reproduce.
 */
#include <math.h>

#include "kernels.h"
#include "test.h"

static const ask_ops_t *ops;

/* Runs the op once and returns the final distribution in probs. */
static int run(float *probs, const float *x, int n, float t, int k, float p, uint64_t seed) {
  double *w = malloc((size_t)n * sizeof(double));
  int32_t *idx = malloc((size_t)n * sizeof(int32_t));
  uint64_t rng = ask_rng_seed(seed);
  int id = ops->sample(probs, w, idx, x, n, t, k, p, &rng);
  free(w);
  free(idx);
  return id;
}

/* 1 when probs[i] > 0 exactly for the ids in keep (a 0/1 string). */
static int mask_is(const float *probs, int n, const char *keep) {
  for (int i = 0; i < n; i++)
    if ((probs[i] > 0) != (keep[i] == '1')) {
      fprintf(stderr, "  token %d: prob %g, want %s\n", i, probs[i],
              keep[i] == '1' ? "kept" : "removed");
      return 0;
    }
  return 1;
}

TEST(test_greedy_is_argmax) {
  float x[6] = {0.5f, -1, 3, 2, 3, -7}, probs[6];
  double w[6];
  int32_t idx[6];
  uint64_t rng = ask_rng_seed(1), before = rng;
  ops = ask_ref_ops();
  ASSERT_EQ(ops->sample(probs, w, idx, x, 6, 0.0f, 0, 1.0f, &rng), 2); /* first of the ties */
  ASSERT_EQ(ops->sample(NULL, w, idx, x, 6, -1.0f, 5, 0.5f, &rng), 2);
  ASSERT_UEQ(rng, before); /* greedy draws nothing */
  ASSERT_TRUE(mask_is(probs, 6, "001000"));
  for (int trial = 0; trial < 50; trial++) {
    float y[100];
    for (int i = 0; i < 100; i++)
      y[i] = (float)((ask_rng_next(&rng) >> 40) % 1000) / 10.0f;
    ASSERT_EQ(run(NULL, y, 100, 0.0f, 0, 1.0f, 0), ops->argmax(y, 100));
  }
}

TEST(test_top_k_mask) {
  float x[6] = {1, 5, 3, 5, 2, 4}, probs[6];
  ops = ask_ref_ops();
  run(probs, x, 6, 1.0f, 2, 1.0f, 1);
  ASSERT_TRUE(mask_is(probs, 6, "010100"));
  ASSERT_TRUE(fabs(probs[1] - 0.5) < 1e-6);
  run(probs, x, 6, 1.0f, 3, 1.0f, 1);
  ASSERT_TRUE(mask_is(probs, 6, "010101"));
  /* Softmax over the kept three: e^5, e^5, e^4. */
  double z = 2 * exp(5.0) + exp(4.0);
  ASSERT_TRUE(fabs(probs[5] - exp(4.0) / z) < 1e-6);
  run(probs, x, 6, 1.0f, 1, 1.0f, 1); /* k = 1 keeps both tied maxima, as transformers */
  ASSERT_TRUE(mask_is(probs, 6, "010100"));
  float y[5] = {3, 1, 3, 2, 3}; /* ties at the k-th value stay */
  run(probs, y, 5, 1.0f, 2, 1.0f, 1);
  ASSERT_TRUE(mask_is(probs, 5, "10101"));
  run(probs, x, 6, 1.0f, 0, 1.0f, 1); /* off */
  ASSERT_TRUE(mask_is(probs, 6, "111111"));
  run(probs, x, 6, 1.0f, 6, 1.0f, 1);
  ASSERT_TRUE(mask_is(probs, 6, "111111"));
  run(probs, x, 6, 0.3f, 4, 1.0f, 1); /* temperature does not change the top-k set */
  ASSERT_TRUE(mask_is(probs, 6, "011101"));
}

TEST(test_top_p_mask) {
  float x[4], probs[4];
  const double p[4] = {0.5, 0.3, 0.15, 0.05};
  ops = ask_ref_ops();
  for (int i = 0; i < 4; i++)
    x[i] = (float)log(p[i]);
  /* Ascending cumulative: 0.05, 0.20, 0.50, 1.0; removed while <= 1 - top_p. */
  run(probs, x, 4, 1.0f, 0, 0.9f, 1);
  ASSERT_TRUE(mask_is(probs, 4, "1110"));
  run(probs, x, 4, 1.0f, 0, 0.75f, 1);
  ASSERT_TRUE(mask_is(probs, 4, "1100"));
  ASSERT_TRUE(fabs(probs[0] - 0.625) < 1e-6); /* 0.5 / 0.8 */
  run(probs, x, 4, 1.0f, 0, 0.3f, 1);
  ASSERT_TRUE(mask_is(probs, 4, "1000"));
  run(probs, x, 4, 1.0f, 0, 0.0f, 1); /* the largest always stays */
  ASSERT_TRUE(mask_is(probs, 4, "1000"));
  run(probs, x, 4, 1.0f, 0, 1.0f, 1);
  ASSERT_TRUE(mask_is(probs, 4, "1111"));
  /* Temperature first: at T = 0.5 the probabilities are ∝ p², i.e.
   * 0.685, 0.247, 0.0616, 0.00685: top_p 0.9 now removes two tokens. */
  run(probs, x, 4, 0.5f, 0, 0.9f, 1);
  ASSERT_TRUE(mask_is(probs, 4, "1100"));
  /* Top-k before top-p: [0.4 0.3 0.2 0.1], k = 3 renormalises to
   * [4/9 3/9 2/9]; top_p 0.75 then removes 2/9 <= 0.25. (The other order
   * would keep three tokens.) */
  const double q[4] = {0.4, 0.3, 0.2, 0.1};
  for (int i = 0; i < 4; i++)
    x[i] = (float)log(q[i]);
  run(probs, x, 4, 1.0f, 3, 0.75f, 1);
  ASSERT_TRUE(mask_is(probs, 4, "1100"));
}

/* The top-p shortcut (tiny tokens removed without sorting) against a plain
 * full sort of every token, on vocabulary-sized random rows. */
TEST(test_top_p_large_matches_full_sort) {
  int n = 32000;
  float *x = malloc((size_t)n * sizeof(float)), *probs = malloc((size_t)n * sizeof(float));
  double *pr = malloc((size_t)n * sizeof(double));
  int32_t *ord = malloc((size_t)n * sizeof(int32_t));
  uint64_t rng = ask_rng_seed(7);
  ops = ask_ref_ops();
  const float tops[4] = {0.5f, 0.9f, 0.95f, 0.99f};
  const float spread[4] = {1.0f, 3.0f, 6.0f, 12.0f};
  for (int trial = 0; trial < 8; trial++) {
    float top_p = tops[trial % 4];
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) {
      x[i] = (float)((ask_rng_uniform(&rng) * 2 - 1) * spread[trial / 2]);
      mx = x[i] > mx ? x[i] : mx;
    }
    for (int i = 0; i < n; i++)
      z += pr[i] = exp(x[i] - mx);
    for (int i = 0; i < n; i++) {
      pr[i] /= z;
      ord[i] = i;
    }
    /* Insertion into sorted order would be slow: a simple shell sort. */
    for (int gap = n / 2; gap > 0; gap /= 2)
      for (int i = gap; i < n; i++)
        for (int j = i; j >= gap; j -= gap) {
          int32_t a = ord[j - gap], b = ord[j];
          if (pr[a] < pr[b] || (pr[a] == pr[b] && a > b))
            break;
          ord[j - gap] = b;
          ord[j] = a;
        }
    char *keep = malloc((size_t)n + 1);
    double cum = 0;
    int removed = 0;
    for (int r = 0; r < n; r++) {
      cum += pr[ord[r]];
      keep[ord[r]] = (cum <= 1.0 - top_p && r < n - 1) ? '0' : '1';
      removed += keep[ord[r]] == '0';
    }
    keep[n] = 0;
    run(probs, x, n, 1.0f, 0, top_p, 3);
    if (!mask_is(probs, n, keep))
      T__FAIL("trial %d (top_p %.2f): mask differs from the full sort", trial, top_p);
    ASSERT_GT(removed, 0);
    free(keep);
  }
  free(x);
  free(probs);
  free(pr);
  free(ord);
}

/* Frequencies of 200000 draws against the distribution (chi-square, 5
 * degrees of freedom: 30 is far beyond its 99.99th percentile of ~25.7). */
TEST(test_distribution) {
  float x[8] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -3.0f, 0.7f}, probs[8];
  double w[8];
  int32_t idx[8];
  int counts[8] = {0}, N = 200000;
  ops = ask_ref_ops();
  uint64_t rng = ask_rng_seed(12345);
  for (int i = 0; i < N; i++)
    counts[ops->sample(probs, w, idx, x, 8, 0.8f, 6, 0.97f, &rng)]++;
  double chi = 0;
  int dof = -1;
  for (int i = 0; i < 8; i++) {
    if (probs[i] == 0) {
      ASSERT_EQ(counts[i], 0); /* removed tokens never come out */
      continue;
    }
    double e = probs[i] * N;
    chi += (counts[i] - e) * (counts[i] - e) / e;
    dof++;
  }
  printf("  chi-square %.2f with %d degrees of freedom\n", chi, dof);
  ASSERT_EQ(dof, 5); /* top-k 6 removed two; top-p 0.97 none more */
  ASSERT_TRUE(chi < 30.0);
}

TEST(test_seed_reproducible) {
  float x[50];
  double w[50];
  int32_t idx[50];
  int a[64], b[64], c[64], same = 0;
  ops = ask_ref_ops();
  for (int i = 0; i < 50; i++)
    x[i] = (float)sin(i * 1.7) * 2;
  uint64_t r1 = ask_rng_seed(42), r2 = ask_rng_seed(42), r3 = ask_rng_seed(43);
  for (int i = 0; i < 64; i++) {
    a[i] = ops->sample(NULL, w, idx, x, 50, 1.0f, 0, 1.0f, &r1);
    b[i] = ops->sample(NULL, w, idx, x, 50, 1.0f, 0, 1.0f, &r2);
    c[i] = ops->sample(NULL, w, idx, x, 50, 1.0f, 0, 1.0f, &r3);
    same += a[i] == c[i];
  }
  ASSERT_MEM_EQ(a, b, sizeof a);
  ASSERT_LT(same, 32); /* another seed, another stream */
  ASSERT_TRUE(ask_rng_seed(0) != 0);
  uint64_t r = ask_rng_seed(0);
  for (int i = 0; i < 1000; i++) {
    double u = ask_rng_uniform(&r);
    ASSERT_TRUE(u >= 0.0 && u < 1.0);
  }
}

TEST_MAIN(test_greedy_is_argmax, test_top_k_mask, test_top_p_mask,
          test_top_p_large_matches_full_sort, test_distribution, test_seed_reproducible)

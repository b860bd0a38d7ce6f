/* sample.c — choosing the next token from one row of logits: greedy, or
 * sampling with temperature, top-k and top-p (nucleus), and the seeded
 * random number generator each sequence carries.
 *
 * The logits processors run in the order transformers' generate() applies its
 * warpers for do_sample=True (TemperatureLogitsWarper, TopKLogitsWarper,
 * TopPLogitsWarper), with the same rules:
 *   temperature: x / T (f32, as torch divides the f32 scores);
 *   top-k:       tokens whose value is below the k-th largest are removed
 *                (ties with the k-th value stay, as `scores < topk[-1]`);
 *   top-p:       sort ascending, cumulative softmax; tokens whose cumulative
 *                probability is <= 1 - p are removed, the largest always stays.
 * Then one token is drawn from the softmax of what is left, with a single
 * uniform number of the sequence's generator (so a seed gives the same
 * tokens on every run and every batch composition).
 *
 * The generator is xorshift64* (Vigna, "An experimental exploration of
 * Marsaglia's xorshift generators", 2016): 64 bits of state, never zero,
 * seeded through splitmix64 so nearby seeds give unrelated streams. A
 * uniform double uses the top 53 bits of one output.
 */
#include <math.h>

#include "ref.h"

uint64_t ask_rng_seed(uint64_t seed) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull; /* splitmix64 */
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return z != 0 ? z : 0x9e3779b97f4a7c15ull;
}

uint64_t ask_rng_next(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dull;
}

double ask_rng_uniform(uint64_t *state) {
  return (double)(ask_rng_next(state) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
}

/* Moves the k largest values of s (by idx) to idx[0..k), the k-th largest at
 * idx[k-1] (quickselect, descending; idx holds a permutation of [0, n)). */
static void ask__select_top(int32_t *idx, const double *s, int n, int k) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    double pivot = s[idx[lo + (hi - lo) / 2]];
    int i = lo, j = hi;
    while (i <= j) {
      while (s[idx[i]] > pivot)
        i++;
      while (s[idx[j]] < pivot)
        j--;
      if (i <= j) {
        int32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        i++;
        j--;
      }
    }
    if (k - 1 <= j)
      hi = j;
    else if (k - 1 >= i)
      lo = i;
    else
      return;
  }
}

/* Ascending order for top-p: by probability, ties by descending index (so
 * among equal logits the lower token id counts as the larger one and is
 * removed last; torch.sort leaves tie order unspecified). */
static int ask__before(const double *w, int32_t i, int32_t j) {
  return w[i] < w[j] || (w[i] == w[j] && i > j);
}

static void ask__sift(int32_t *idx, const double *w, int root, int n) {
  for (;;) {
    int c = 2 * root + 1;
    if (c >= n)
      return;
    if (c + 1 < n && ask__before(w, idx[c], idx[c + 1]))
      c++;
    if (!ask__before(w, idx[root], idx[c]))
      return;
    int32_t t = idx[root];
    idx[root] = idx[c];
    idx[c] = t;
    root = c;
  }
}

/* Heapsort of idx[0..n) ascending by ask__before (no allocation, no global
 * state: several threads may sample at once). */
static void ask__sort_asc(int32_t *idx, const double *w, int n) {
  for (int i = n / 2 - 1; i >= 0; i--)
    ask__sift(idx, w, i, n);
  for (int end = n - 1; end > 0; end--) {
    int32_t t = idx[0];
    idx[0] = idx[end];
    idx[end] = t;
    ask__sift(idx, w, 0, end);
  }
}

/* The greedy choice, probs (when not NULL) all on it. */
static int ask__greedy(float *probs, const float *x, int n) {
  int best = ask_ref_argmax(x, n);
  if (probs != NULL)
    for (int i = 0; i < n; i++)
      probs[i] = i == best ? 1.0f : 0.0f;
  return best;
}

/* Picks a token of x (n). See kernels.h: probs (n) or NULL receives the
 * final distribution; w (n doubles) and idx (n int32) are work memory. */
int ask_ref_sample(float *probs, double *w, int32_t *idx, const float *x, int n,
                   float temperature, int top_k, float top_p, uint64_t *rng) {
  double mx = -INFINITY, total = 0.0;
  int last = -1;

  if (!(temperature > 0.0f)) /* greedy: the first largest, as torch.argmax */
    return ask__greedy(probs, x, n);
  for (int i = 0; i < n; i++) /* f32 division, as torch divides f32 scores */
    w[i] = temperature == 1.0f ? (double)x[i] : (double)(x[i] / temperature);

  if (top_k > 0 && top_k < n) {
    for (int i = 0; i < n; i++)
      idx[i] = i;
    ask__select_top(idx, w, n, top_k);
    double kth = w[idx[top_k - 1]];
    for (int i = 0; i < n; i++)
      if (w[i] < kth)
        w[i] = -INFINITY;
  }

  for (int i = 0; i < n; i++)
    if (w[i] > mx)
      mx = w[i];
  if (!(mx > -INFINITY) || mx != mx) /* every value -inf: greedy */
    return ask__greedy(probs, x, n);
  for (int i = 0; i < n; i++) { /* w becomes exp(w - max): weights in [0, 1] */
    w[i] = w[i] == -INFINITY ? 0.0 : exp(w[i] - mx);
    total += w[i];
  }

  if (top_p < 1.0f) {
    /* With p_i = w_i / total: tokens with p_i <= (1 - p) / n together weigh
     * at most 1 - p and are the smallest, so they form an ascending prefix
     * whose cumulative sum stays <= 1 - p: removed without sorting. Only the
     * rest is sorted; the mass below starts their cumulative sum. */
    double cut = 1.0 - (double)top_p, below = 0.0, thr = cut / n * 0.5 * total;
    int nc = 0;
    for (int i = 0; i < n; i++) {
      if (w[i] > thr) {
        idx[nc++] = i;
      } else {
        below += w[i];
        w[i] = 0.0;
      }
    }
    ask__sort_asc(idx, w, nc);
    double cum = below;
    for (int r = 0; r < nc - 1; r++) { /* the largest (last) always stays */
      cum += w[idx[r]];
      if (!(cum / total <= cut))
        break;
      w[idx[r]] = 0.0;
    }
    total = 0.0;
    for (int i = 0; i < n; i++)
      total += w[i];
  }

  if (probs != NULL)
    for (int i = 0; i < n; i++)
      probs[i] = (float)(w[i] / total);
  double target = ask_rng_uniform(rng) * total, cum = 0.0;
  for (int i = 0; i < n; i++) {
    if (w[i] <= 0.0)
      continue;
    cum += w[i];
    last = i;
    if (target < cum)
      return i;
  }
  return last;
}

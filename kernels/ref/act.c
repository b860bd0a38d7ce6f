/* act.c — activations: SiLU, GELU (exact erf, BERT) and GELU's tanh
 * approximation (Gemma's gelu_pytorch_tanh), alone or gating an MLP
 * (SwiGLU, GeGLU), plus softmax, residual add and argmax.
 */
#include <math.h>

#include "ref.h"

static inline float ask__act(float x, int act) {
  switch (act) {
  case ASK_ACT_GELU_TANH: {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
  }
  case ASK_ACT_GELU:
    return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
  default: /* ASK_ACT_SILU */
    return x / (1.0f + expf(-x));
  }
}

/* out (n) = act(gate) * up. */
void ask_ref_glu(float *out, const float *gate, const float *up, size_t n, int act) {
  for (size_t i = 0; i < n; i++)
    out[i] = ask__act(gate[i], act) * up[i];
}

/* out (n) = act(x). */
void ask_ref_activate(float *out, const float *x, size_t n, int act) {
  for (size_t i = 0; i < n; i++)
    out[i] = ask__act(x[i], act);
}

/* out (T,N) = row-wise softmax of x (T,N). */
void ask_ref_softmax(float *out, const float *x, int T, int N) {
  for (int t = 0; t < T; t++) {
    const float *xr = x + (size_t)t * N;
    float *o = out + (size_t)t * N, mx = -INFINITY;
    double sum = 0.0;
    for (int j = 0; j < N; j++)
      if (xr[j] > mx)
        mx = xr[j];
    for (int j = 0; j < N; j++) {
      o[j] = expf(xr[j] - mx);
      sum += o[j];
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < N; j++)
      o[j] *= inv;
  }
}

/* out (n) = a + b. */
void ask_ref_add(float *out, const float *a, const float *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = a[i] + b[i];
}

/* First index of the maximum of x (n); NaNs are never chosen. */
int ask_ref_argmax(const float *x, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i]))
      best = i;
  return best;
}

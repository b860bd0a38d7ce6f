/* ops.c — the reference backend's ops table: every operation of kernels.h
 * bound to its plain-C implementation in the files of kernels/ref.
 */
#include "ref.h"

/* kernels/ref/sample.c (declared here: ref.h is the model work's). */
int ask_ref_sample(float *probs, double *w, int32_t *idx, const float *x, int n,
                   float temperature, int top_k, float top_p, uint64_t *rng);

static const ask_ops_t ask__ref_ops = {
    .name = "ref",
    .embedding = ask_ref_embedding,
    .rmsnorm = ask_ref_rmsnorm,
    .layernorm = ask_ref_layernorm,
    .matmul = ask_ref_matmul,
    .rope = ask_ref_rope,
    .attention = ask_ref_attention,
    .glu = ask_ref_glu,
    .activate = ask_ref_activate,
    .softmax = ask_ref_softmax,
    .add = ask_ref_add,
    .argmax = ask_ref_argmax,
    .sample = ask_ref_sample,
};

const ask_ops_t *ask_ref_ops(void) { return &ask__ref_ops; }

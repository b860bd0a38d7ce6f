/* ops.c — the reference backend's ops table: every operation of kernels.h
 * bound to its plain-C implementation in the files of kernels/ref.
 */
#include "ref.h"

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
};

const ask_ops_t *ask_ref_ops(void) { return &ask__ref_ops; }

/* dmodel.c — a decoder's weights in device memory (the device path of
 * as_model_open: "cuda", or "refdev" on the host).
 *
 * Every tensor is bound by the Hugging Face name and shape-checked exactly
 * as on the CPU path (as__model_tensor), then uploaded: matrices as bf16
 * (bf16 checkpoints straight from the mapping, f32/f16 ones rounded to
 * nearest even), q/k/v fused into one (qd + 2*kvd, C) matrix and gate/up
 * into one (2F, C) matrix, so that a layer costs four GEMMs and a decode
 * step launches fewer, larger products; norms, biases and the RoPE inverse
 * frequencies stay f32. With ASK_FUSE_MLP=1 (and a backend that takes the
 * shape) each down_proj is uploaded a second time, transposed, for
 * norm_matmul_mlp. The host keeps only the config and the mapping.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

void as__dmodel_free(as__dmodel_t *dm) {
  if (dm == NULL)
    return;
  for (int i = 0; i < dm->nallocs; i++)
    dm->dev->free(dm->allocs[i]);
  free(dm->allocs);
  free(dm->layers);
  free(dm);
}

typedef struct as__up_s {
  as_model_t *m;
  as__dmodel_t *dm;
  const char *dir, *prefix;
  char *err;
  size_t errlen;
} as__up_t;

/* Device memory owned by the model. */
static int as__up_alloc(as__up_t *u, void **p, size_t bytes) {
  as__dmodel_t *dm = u->dm;
  void **grown = realloc(dm->allocs, ((size_t)dm->nallocs + 1) * sizeof *grown);
  int rc;
  *p = NULL;
  if (grown == NULL)
    return as__llm_err(u->err, u->errlen, AS_ENOMEM, "%s: out of host memory", u->dir);
  dm->allocs = grown;
  if ((rc = dm->dev->alloc(p, bytes, u->err, u->errlen)) != 0)
    return rc;
  dm->allocs[dm->nallocs++] = *p;
  dm->device_bytes += bytes;
  return 0;
}

/* Copies tensor t (numel values) to dst as bf16 (bf16 = 1) or f32. */
static int as__up_put(as__up_t *u, void *dst, const as_st_tensor_t *t, int bf16) {
  const ask_dev_t *dev = u->dm->dev;
  size_t n = t->numel;
  float *f;
  int rc;
  if (bf16 && t->dtype == AS_DT_BF16)
    return dev->copy(dst, t->data, n * 2, ASK_COPY_H2D, u->err, u->errlen);
  if (!bf16 && t->dtype == AS_DT_F32)
    return dev->copy(dst, t->data, n * 4, ASK_COPY_H2D, u->err, u->errlen);
  f = malloc((n ? n : 1) * sizeof *f);
  if (f == NULL)
    return as__llm_err(u->err, u->errlen, AS_ENOMEM, "%s: out of host memory for \"%s\"",
                       u->dir, t->name);
  if ((rc = as_st_to_f32(t, f, u->err, u->errlen)) == 0) {
    if (bf16) {
      ask_f32_to_bf16((uint16_t *)f, f, n); /* in place: each write trails its read */
      rc = dev->copy(dst, f, n * 2, ASK_COPY_H2D, u->err, u->errlen);
    } else {
      rc = dev->copy(dst, f, n * 4, ASK_COPY_H2D, u->err, u->errlen);
    }
  }
  free(f);
  return rc;
}

/* Uploads the tensors names[0..n) of shapes (rows[i], cols) stacked into one
 * device matrix (bf16 = 1: bf16 matrix; 0: f32 vectors, cols < 0) at *out.
 * A missing optional tensor (required 0) leaves *out NULL when all are
 * missing; some present and some missing is an error. */
static int as__up_stack(as__up_t *u, const char *const *names, const int *rows, int n, int cols,
                        int bf16, int required, const void **out) {
  const as_st_tensor_t *t[3];
  size_t total = 0, off = 0, esz = bf16 ? 2 : 4;
  int have = 0, rc;
  char *dst;
  *out = NULL;
  for (int i = 0; i < n; i++) {
    if ((rc = as__model_tensor(u->m, u->dir, u->prefix, names[i], rows[i], cols, required, &t[i],
                               u->err, u->errlen)) != 0)
      return rc;
    have += t[i] != NULL;
    total += (size_t)rows[i] * (size_t)(cols < 0 ? 1 : cols);
  }
  if (have == 0)
    return 0;
  if (have != n)
    return as__llm_err(u->err, u->errlen, AS_EINVAL, "%s: tensor \"%s%s\" is missing", u->dir,
                       u->prefix, names[t[0] == NULL ? 0 : t[1] == NULL ? 1 : 2]);
  if ((rc = as__up_alloc(u, (void **)&dst, total * esz)) != 0)
    return rc;
  for (int i = 0; i < n; i++) {
    if ((rc = as__up_put(u, dst + off * esz, t[i], bf16)) != 0)
      return rc;
    off += t[i]->numel;
  }
  *out = dst;
  return 0;
}

/* One tensor: a bf16 matrix (cols > 0) or an f32 vector (cols < 0). */
static int as__up_one(as__up_t *u, const char *name, int rows, int cols, int bf16,
                      const void **out) {
  const char *names[1] = {name};
  int r[1] = {rows};
  return as__up_stack(u, names, r, 1, cols, bf16, 1, out);
}

/* The (rows, cols) matrix `name` uploaded transposed, (cols, rows) bf16,
 * rounded as as__up_put rounds (so the same values as the upright copy). */
static int as__up_transposed(as__up_t *u, const char *name, int rows, int cols,
                             const void **out) {
  const as_st_tensor_t *t;
  size_t R = (size_t)rows, Cn = (size_t)cols;
  float *f;
  uint16_t *tr, *dst;
  int rc;
  *out = NULL;
  if ((rc = as__model_tensor(u->m, u->dir, u->prefix, name, rows, cols, 1, &t, u->err,
                             u->errlen)) != 0)
    return rc;
  f = malloc(R * Cn * sizeof *f);
  tr = malloc(R * Cn * sizeof *tr);
  if (f == NULL || tr == NULL) {
    free(f);
    free(tr);
    return as__llm_err(u->err, u->errlen, AS_ENOMEM, "%s: out of host memory for \"%s\"",
                       u->dir, t->name);
  }
  if ((rc = as_st_to_f32(t, f, u->err, u->errlen)) == 0) {
    const uint16_t *b = (const uint16_t *)f;
    ask_f32_to_bf16((uint16_t *)f, f, R * Cn); /* in place, as as__up_put */
    for (size_t i0 = 0; i0 < R; i0 += 64) /* in 64 x 64 tiles: both sides stay in cache */
      for (size_t j0 = 0; j0 < Cn; j0 += 64)
        for (size_t i = i0; i < R && i < i0 + 64; i++)
          for (size_t j = j0; j < Cn && j < j0 + 64; j++)
            tr[j * R + i] = b[i * Cn + j];
    if ((rc = as__up_alloc(u, (void **)&dst, R * Cn * 2)) == 0 &&
        (rc = u->dm->dev->copy(dst, tr, R * Cn * 2, ASK_COPY_H2D, u->err, u->errlen)) == 0)
      *out = dst;
  }
  free(f);
  free(tr);
  return rc;
}

/* ASK_FUSE_MLP=1: one-row steps run the whole MLP as norm_matmul_mlp, when
 * the backend takes the shape and the model has two layers or more (the
 * step's accumulators rotate between layers: forward_dev.c). */
static int as__want_mlp(const as_model_t *m) {
  const as_llm_config_t *c = &m->cfg;
  const ask_dev_t *dev = m->ops->dev;
  const char *env = getenv("ASK_FUSE_MLP");
  return env != NULL && env[0] != '\0' && env[0] != '0' && dev->norm_matmul_mlp != NULL &&
         c->num_layers >= 2 &&
         dev->norm_matmul_mlp(NULL, NULL, NULL, NULL, NULL, NULL, 0.0f, 0.0f, NULL, NULL, NULL,
                              NULL, 1, c->hidden_size, c->intermediate_size, c->act) == 1;
}

int as__dmodel_load(as_model_t *m, const char *dir, char *err, size_t errlen) {
  const as_llm_config_t *c = &m->cfg;
  int C = c->hidden_size, F = c->intermediate_size, D = c->head_dim, qd = c->num_heads * D,
      kvd = c->num_kv_heads * D, rc;
  as__up_t u = {m, NULL, dir, "", err, errlen};
  char n[8][160];
  float *inv;

  if (D > 256 || D % 2 != 0 || c->num_heads % c->num_kv_heads != 0)
    return as__llm_err(err, errlen, AS_ENOTSUP,
                       "%s: head_dim %d with %d/%d heads: the device kernels take an even "
                       "head_dim up to 256",
                       dir, D, c->num_heads, c->num_kv_heads);
  u.dm = m->dm = calloc(1, sizeof *m->dm);
  if (m->dm == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory");
  m->dm->dev = m->ops->dev;
  m->dm->mlp = as__want_mlp(m);
  m->dm->layers = calloc((size_t)c->num_layers, sizeof *m->dm->layers);
  if (m->dm->layers == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory");
  u.prefix = as_st_find(m->st, "model.embed_tokens.weight") != NULL ||
                     as_st_find(m->st, "embed_tokens.weight") == NULL
                 ? "model."
                 : "";
  if ((rc = as__up_one(&u, "embed_tokens.weight", c->vocab_size, C, 1,
                       (const void **)&m->dm->embed)) != 0 ||
      (rc = as__up_one(&u, "norm.weight", C, -1, 0, (const void **)&m->dm->final_norm)) != 0)
    return rc;
  for (int l = 0; l < c->num_layers; l++) {
    as__dlayer_t *L = &m->dm->layers[l];
    static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
    static const char *const gu[2] = {"gate_proj", "up_proj"};
    const char *names[3];
    int rows_qkv[3] = {qd, kvd, kvd}, rows_gu[2] = {F, F};
    for (int i = 0; i < 3; i++) {
      snprintf(n[i], sizeof n[i], "layers.%d.self_attn.%s.weight", l, qkv[i]);
      snprintf(n[3 + i], sizeof n[3 + i], "layers.%d.self_attn.%s.bias", l, qkv[i]);
    }
    for (int i = 0; i < 3; i++)
      names[i] = n[i];
    if ((rc = as__up_stack(&u, names, rows_qkv, 3, C, 1, 1, (const void **)&L->qkv)) != 0)
      return rc;
    for (int i = 0; i < 3; i++)
      names[i] = n[3 + i];
    if ((rc = as__up_stack(&u, names, rows_qkv, 3, -1, 0, c->qkv_bias,
                           (const void **)&L->qkv_b)) != 0)
      return rc;
    snprintf(n[0], sizeof n[0], "layers.%d.self_attn.o_proj.weight", l);
    snprintf(n[1], sizeof n[1], "layers.%d.self_attn.o_proj.bias", l);
    if ((rc = as__up_one(&u, n[0], C, qd, 1, (const void **)&L->o)) != 0)
      return rc;
    names[0] = n[1];
    if ((rc = as__up_stack(&u, names, &C, 1, -1, 0, c->o_bias, (const void **)&L->o_b)) != 0)
      return rc;
    for (int i = 0; i < 2; i++) {
      snprintf(n[i], sizeof n[i], "layers.%d.mlp.%s.weight", l, gu[i]);
      snprintf(n[2 + i], sizeof n[2 + i], "layers.%d.mlp.%s.bias", l, gu[i]);
    }
    names[0] = n[0];
    names[1] = n[1];
    if ((rc = as__up_stack(&u, names, rows_gu, 2, C, 1, 1, (const void **)&L->gu)) != 0)
      return rc;
    names[0] = n[2];
    names[1] = n[3];
    if ((rc = as__up_stack(&u, names, rows_gu, 2, -1, 0, c->mlp_bias,
                           (const void **)&L->gu_b)) != 0)
      return rc;
    snprintf(n[0], sizeof n[0], "layers.%d.mlp.down_proj.weight", l);
    snprintf(n[1], sizeof n[1], "layers.%d.mlp.down_proj.bias", l);
    if ((rc = as__up_one(&u, n[0], C, F, 1, (const void **)&L->down)) != 0 ||
        (m->dm->mlp && (rc = as__up_transposed(&u, n[0], C, F, (const void **)&L->down_t)) != 0))
      return rc;
    names[0] = n[1];
    if ((rc = as__up_stack(&u, names, &C, 1, -1, 0, c->mlp_bias,
                           (const void **)&L->down_b)) != 0)
      return rc;
    snprintf(n[0], sizeof n[0], "layers.%d.input_layernorm.weight", l);
    snprintf(n[1], sizeof n[1], "layers.%d.post_attention_layernorm.weight", l);
    if ((rc = as__up_one(&u, n[0], C, -1, 0, (const void **)&L->norm1)) != 0 ||
        (rc = as__up_one(&u, n[1], C, -1, 0, (const void **)&L->norm2)) != 0)
      return rc;
  }
  if (c->tie_word_embeddings) {
    m->dm->lm_head = m->dm->embed;
  } else {
    u.prefix = "";
    if ((rc = as__up_one(&u, "lm_head.weight", c->vocab_size, C, 1,
                         (const void **)&m->dm->lm_head)) != 0)
      return rc;
  }
  /* The same inverse frequencies as the CPU path (model.c), then uploaded. */
  m->embed_scale = c->arch == AS_ARCH_GEMMA ? sqrtf((float)C) : 1.0f;
  m->norm_offset = c->arch == AS_ARCH_GEMMA ? 1.0f : 0.0f;
  if (as__rope_init(m) != 0)
    return as__llm_err(err, errlen, AS_ENOMEM, "%s: out of memory", dir);
  if ((rc = as__up_alloc(&u, (void **)&inv, (size_t)(D / 2) * sizeof(float))) != 0 ||
      (rc = m->dm->dev->copy(inv, m->inv_freq, (size_t)(D / 2) * sizeof(float), ASK_COPY_H2D,
                             err, errlen)) != 0)
    return rc;
  m->dm->inv_freq = inv;
  m->dm->weight_bytes = as_model_weight_bytes(m);
  return m->dm->dev->sync(err, errlen);
}

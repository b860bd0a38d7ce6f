/* model.c — loading a Hugging Face model folder into an as_model_t.
 *
 * config.json says the family; every tensor is then bound by the name
 * transformers gives it and its shape checked against the config (a missing
 * tensor or a wrong shape is an error naming it and its file). Weights are
 * f32 in memory: F32 tensors aligned in the mapping are used in place, the
 * others (bf16, f16, misaligned f32) are converted into owned blocks. Family
 * details: Gemma scales embeddings by sqrt(hidden) and uses (1 + w) RMSNorm;
 * Qwen2 has q/k/v biases; Llama-3 rope scaling is folded into the inverse
 * frequencies here; lm_head is the embedding matrix when tied; BERT binds
 * word, position and token-type embeddings and LayerNorms, with or without
 * the "bert." prefix of BertFor* checkpoints.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

const as_llm_config_t *as_model_config(const as_model_t *m) { return &m->cfg; }

void as_model_free(as_model_t *m) {
  if (m == NULL)
    return;
  as__dmodel_free(m->dm);
  for (int i = 0; i < m->nowned; i++)
    free(m->owned[i]);
  free(m->owned);
  free(m->layers);
  free(m->inv_freq);
  as_st_close(m->st);
  free(m);
}

typedef struct as__binder_s {
  as_model_t *m;
  const char *dir;
  const char *prefix; /* "model." / "bert." / "" */
  char *err;
  size_t errlen;
} as__binder_t;

int as__model_tensor(const as_model_t *m, const char *dir, const char *prefix,
                     const char *name, int64_t d0, int64_t d1, int required,
                     const as_st_tensor_t **out, char *err, size_t errlen) {
  char full[256];
  const as_st_tensor_t *t;
  int ndim = d1 < 0 ? 1 : 2;

  snprintf(full, sizeof full, "%s%s", prefix, name);
  t = as_st_find(m->st, full);
  *out = NULL;
  if (t == NULL) {
    if (!required)
      return 0;
    return as__llm_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\" is missing", dir, full);
  }
  if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
    char got[128];
    int n = 0;
    for (int i = 0; i < t->ndim && n < (int)sizeof got - 24; i++)
      n += snprintf(got + n, sizeof got - (size_t)n, "%s%lld", i ? ", " : "",
                    (long long)t->shape[i]);
    got[n] = '\0';
    if (ndim == 1)
      return as__llm_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\" has shape [%s], expected [%lld]",
                         t->file, full, got, (long long)d0);
    return as__llm_err(err, errlen, AS_EINVAL,
                       "%s: tensor \"%s\" has shape [%s], expected [%lld, %lld]", t->file, full,
                       got, (long long)d0, (long long)d1);
  }
  *out = t;
  return 0;
}

/* Binds tensor prefix+name of shape (d0) or (d0, d1) (d1 < 0: 1-D) to *out
 * as f32. Missing: an error when required, else *out = NULL. */
static int as__bind(as__binder_t *b, const char *name, int64_t d0, int64_t d1, const float **out,
                    int required) {
  const as_st_tensor_t *t;
  float *copy;
  int rc = as__model_tensor(b->m, b->dir, b->prefix, name, d0, d1, required, &t, b->err,
                            b->errlen);
  *out = NULL;
  if (rc != 0 || t == NULL)
    return rc;
  if (t->dtype == AS_DT_F32 && ((uintptr_t)t->data & 3) == 0) {
    *out = (const float *)(const void *)t->data; /* in place, from the mapping */
    return 0;
  }
  void **grown = realloc(b->m->owned, ((size_t)b->m->nowned + 1) * sizeof *grown);
  if (grown == NULL)
    return as__llm_err(b->err, b->errlen, AS_ENOMEM, "%s: out of memory", b->dir);
  b->m->owned = grown;
  copy = malloc(t->numel * sizeof(float) + 1);
  if (copy == NULL)
    return as__llm_err(b->err, b->errlen, AS_ENOMEM, "%s: out of memory for \"%s\"", b->dir,
                       t->name);
  b->m->owned[b->m->nowned++] = copy;
  rc = as_st_to_f32(t, copy, b->err, b->errlen);
  if (rc != 0)
    return rc;
  *out = copy;
  return 0;
}

/* A linear layer name.weight (out, in) and, when `bias`, name.bias (out). */
static int as__bind_lin(as__binder_t *b, const char *name, int out_f, int in_f, int bias,
                        as__lin_t *l) {
  char n[200];
  int rc;
  snprintf(n, sizeof n, "%s.weight", name);
  if ((rc = as__bind(b, n, out_f, in_f, &l->w, 1)) != 0)
    return rc;
  l->b = NULL;
  if (!bias)
    return 0;
  snprintf(n, sizeof n, "%s.bias", name);
  return as__bind(b, n, out_f, -1, &l->b, 1);
}

/* RoPE inverse frequencies in f32, as transformers computes them, with the
 * llama3 rule (wavelengths beyond the original context divided by factor,
 * a smooth blend in between) applied when configured. */
int as__rope_init(as_model_t *m) {
  const as_llm_config_t *c = &m->cfg;
  int half = c->head_dim / 2;
  m->inv_freq = malloc((size_t)half * sizeof(float));
  if (m->inv_freq == NULL)
    return AS_ENOMEM;
  for (int i = 0; i < half; i++) {
    float e = (float)(2 * i) / (float)c->head_dim;
    float inv = 1.0f / powf((float)c->rope_theta, e);
    if (c->rope_llama3) {
      float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq,
            hi = (float)c->rope_high_freq, old = (float)c->rope_orig_max;
      float low_wl = old / lo, high_wl = old / hi;
      float wl = (float)(2.0 * M_PI) / inv;
      float scaled = wl > low_wl ? inv / factor : inv;
      if (!(wl < high_wl) && !(wl > low_wl)) {
        float smooth = (old / wl - lo) / (hi - lo);
        scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
      }
      inv = scaled;
    }
    m->inv_freq[i] = inv;
  }
  return 0;
}

static int as__load_decoder(as__binder_t *b) {
  as_model_t *m = b->m;
  const as_llm_config_t *c = &m->cfg;
  int C = c->hidden_size, F = c->intermediate_size, qd = c->num_heads * c->head_dim,
      kvd = c->num_kv_heads * c->head_dim, rc;
  char n[160];

  b->prefix = as_st_find(m->st, "model.embed_tokens.weight") != NULL ||
                      as_st_find(m->st, "embed_tokens.weight") == NULL
                  ? "model."
                  : "";
  if ((rc = as__bind(b, "embed_tokens.weight", c->vocab_size, C, &m->embed, 1)) != 0 ||
      (rc = as__bind(b, "norm.weight", C, -1, &m->final_norm, 1)) != 0)
    return rc;
  for (int l = 0; l < c->num_layers; l++) {
    as__layer_t *L = &m->layers[l];
#define LIN(sub, o, i, bias, dst)                                      \
  do {                                                                 \
    snprintf(n, sizeof n, "layers.%d.%s", l, sub);                     \
    if ((rc = as__bind_lin(b, n, o, i, bias, dst)) != 0)               \
      return rc;                                                       \
  } while (0)
    LIN("self_attn.q_proj", qd, C, c->qkv_bias, &L->q);
    LIN("self_attn.k_proj", kvd, C, c->qkv_bias, &L->k);
    LIN("self_attn.v_proj", kvd, C, c->qkv_bias, &L->v);
    LIN("self_attn.o_proj", C, qd, c->o_bias, &L->o);
    LIN("mlp.gate_proj", F, C, c->mlp_bias, &L->gate);
    LIN("mlp.up_proj", F, C, c->mlp_bias, &L->up);
    LIN("mlp.down_proj", C, F, c->mlp_bias, &L->down);
#undef LIN
    snprintf(n, sizeof n, "layers.%d.input_layernorm.weight", l);
    if ((rc = as__bind(b, n, C, -1, &L->norm1_w, 1)) != 0)
      return rc;
    snprintf(n, sizeof n, "layers.%d.post_attention_layernorm.weight", l);
    if ((rc = as__bind(b, n, C, -1, &L->norm2_w, 1)) != 0)
      return rc;
  }
  /* The output head: lm_head.weight (no prefix) unless tied to the embeddings. */
  if (c->tie_word_embeddings) {
    m->lm_head = m->embed;
  } else {
    b->prefix = "";
    if ((rc = as__bind(b, "lm_head.weight", c->vocab_size, C, &m->lm_head, 1)) != 0)
      return rc;
  }
  m->embed_scale = c->arch == AS_ARCH_GEMMA ? sqrtf((float)C) : 1.0f;
  m->norm_offset = c->arch == AS_ARCH_GEMMA ? 1.0f : 0.0f;
  if (as__rope_init(m) != 0)
    return as__llm_err(b->err, b->errlen, AS_ENOMEM, "%s: out of memory", b->dir);
  return 0;
}

static int as__load_bert(as__binder_t *b) {
  as_model_t *m = b->m;
  const as_llm_config_t *c = &m->cfg;
  int C = c->hidden_size, F = c->intermediate_size, rc;
  char n[160];

  b->prefix = as_st_find(m->st, "embeddings.word_embeddings.weight") == NULL &&
                      as_st_find(m->st, "bert.embeddings.word_embeddings.weight") != NULL
                  ? "bert."
                  : "";
  if ((rc = as__bind(b, "embeddings.word_embeddings.weight", c->vocab_size, C, &m->embed, 1)) ||
      (rc = as__bind(b, "embeddings.position_embeddings.weight", c->max_positions, C,
                     &m->pos_embed, 1)) ||
      (rc = as__bind(b, "embeddings.token_type_embeddings.weight", c->type_vocab_size, C,
                     &m->type_embed, c->type_vocab_size > 0)) ||
      (rc = as__bind(b, "embeddings.LayerNorm.weight", C, -1, &m->emb_norm_w, 1)) ||
      (rc = as__bind(b, "embeddings.LayerNorm.bias", C, -1, &m->emb_norm_b, 1)))
    return rc;
  for (int l = 0; l < c->num_layers; l++) {
    as__layer_t *L = &m->layers[l];
#define LIN(sub, o, i, dst)                                            \
  do {                                                                 \
    snprintf(n, sizeof n, "encoder.layer.%d.%s", l, sub);              \
    if ((rc = as__bind_lin(b, n, o, i, 1, dst)) != 0)                  \
      return rc;                                                       \
  } while (0)
#define VEC(sub, dst)                                                  \
  do {                                                                 \
    snprintf(n, sizeof n, "encoder.layer.%d.%s", l, sub);              \
    if ((rc = as__bind(b, n, C, -1, dst, 1)) != 0)                     \
      return rc;                                                       \
  } while (0)
    LIN("attention.self.query", C, C, &L->q);
    LIN("attention.self.key", C, C, &L->k);
    LIN("attention.self.value", C, C, &L->v);
    LIN("attention.output.dense", C, C, &L->o);
    LIN("intermediate.dense", F, C, &L->up);
    LIN("output.dense", C, F, &L->down);
    VEC("attention.output.LayerNorm.weight", &L->norm1_w);
    VEC("attention.output.LayerNorm.bias", &L->norm1_b);
    VEC("output.LayerNorm.weight", &L->norm2_w);
    VEC("output.LayerNorm.bias", &L->norm2_b);
#undef LIN
#undef VEC
  }
  return 0;
}

int as_model_open(as_model_t **out, const char *dir, const as_model_opts_t *o, char *err,
                  size_t errlen) {
  const char *device = o != NULL && o->device != NULL && o->device[0] ? o->device : "cpu";
  const ask_ops_t *ops;
  as_model_t *m;
  as__binder_t b;
  int rc;

  *out = NULL;
  if (strcmp(device, "cpu") == 0) {
    ops = ask_ref_ops();
    device = "cpu";
  } else if (strcmp(device, "cuda") == 0) {
    const char *why;
    ops = ask_backend("cuda", &why);
    device = "cuda";
    if (ops == NULL)
      return as__llm_err(err, errlen, AS_ENOTSUP, "device \"cuda\" cannot be used: %s", why);
  } else if (strcmp(device, "refdev") == 0) {
    ops = ask_refdev_ops();
    device = "refdev";
  } else {
    return as__llm_err(err, errlen, AS_EINVAL,
                       "device \"%s\" is not one of \"cpu\", \"cuda\", \"refdev\"", device);
  }
  m = calloc(1, sizeof *m);
  if (m == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory");
  m->ops = ops;
  m->device = device;
  if ((rc = as_llm_config_load(&m->cfg, dir, err, errlen)) != 0 ||
      (rc = as_st_open(&m->st, dir, err, errlen)) != 0)
    goto fail;
  if (ops->dev != NULL) {
    if (m->cfg.arch == AS_ARCH_BERT) {
      rc = as__llm_err(err, errlen, AS_ENOTSUP,
                       "%s: %s encoders run on the CPU only (device \"cpu\"), not on \"%s\"",
                       dir, m->cfg.model_type, device);
      goto fail;
    }
    if ((rc = as__dmodel_load(m, dir, err, errlen)) != 0)
      goto fail;
    *out = m;
    return 0;
  }
  m->layers = calloc((size_t)m->cfg.num_layers, sizeof *m->layers);
  if (m->layers == NULL) {
    rc = as__llm_err(err, errlen, AS_ENOMEM, "%s: out of memory", dir);
    goto fail;
  }
  b.m = m;
  b.dir = dir;
  b.prefix = "";
  b.err = err;
  b.errlen = errlen;
  rc = m->cfg.arch == AS_ARCH_BERT ? as__load_bert(&b) : as__load_decoder(&b);
  if (rc != 0)
    goto fail;
  *out = m;
  return 0;
fail:
  as_model_free(m);
  return rc;
}

int as_model_load(as_model_t **out, const char *dir, char *err, size_t errlen) {
  return as_model_open(out, dir, NULL, err, errlen);
}

const char *as_model_device(const as_model_t *m) { return m->device; }

const char *as_model_device_info(const as_model_t *m) {
  const ask_dev_t *d = m->ops != NULL ? m->ops->dev : NULL;
  return d != NULL && d->describe != NULL ? d->describe() : m->device;
}

int as_model_fused_mlp(const as_model_t *m) { return m->dm != NULL && m->dm->mlp; }

size_t as_model_weight_bytes(const as_model_t *m) {
  const as_llm_config_t *c = &m->cfg;
  size_t C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size,
         qd = (size_t)c->num_heads * c->head_dim, kvd = (size_t)c->num_kv_heads * c->head_dim;
  size_t per = m->dm != NULL ? 2 : 4; /* bf16 on a device, f32 on the CPU */
  if (c->arch == AS_ARCH_BERT)
    return per * ((size_t)c->num_layers * (4 * C * C + 2 * C * F));
  return per * ((size_t)c->num_layers * (C * (qd + 2 * kvd) + qd * C + 3 * C * F) +
                (size_t)c->vocab_size * C);
}

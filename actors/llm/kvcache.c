/* kvcache.c — the KV cache of a decoder: the keys and values of many
 * sequences at once, each under a caller-chosen id.
 *
 * Each sequence owns two blocks (keys, values) laid out (layer, position,
 * kv_dim), grown by doubling, so a sequence's rows of one layer are one
 * strided matrix the attention op reads directly. The serving engine adds,
 * extends, truncates and frees sequences between forward calls; max_tokens
 * bounds what all sequences hold together (AS_EFULL beyond it).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

int as__llm_err(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

int as_kv_new(as_kv_t **out, const as_model_t *m, size_t max_tokens) {
  as_kv_t *kv;
  *out = NULL;
  if (m == NULL || m->cfg.arch == AS_ARCH_BERT)
    return AS_EINVAL; /* encoders keep no cache */
  kv = calloc(1, sizeof *kv);
  if (kv == NULL)
    return AS_ENOMEM;
  kv->m = m;
  kv->layers = m->cfg.num_layers;
  kv->kv_dim = m->cfg.num_kv_heads * m->cfg.head_dim;
  kv->max_tokens = max_tokens;
  *out = kv;
  return 0;
}

void as_kv_free(as_kv_t *kv) {
  if (kv == NULL)
    return;
  for (int i = 0; i < kv->n; i++) {
    free(kv->seqs[i].k);
    free(kv->seqs[i].v);
  }
  free(kv->seqs);
  free(kv);
}

as__kvseq_t *as__kv_find(const as_kv_t *kv, int64_t id) {
  for (int i = 0; i < kv->n; i++)
    if (kv->seqs[i].id == id)
      return &kv->seqs[i];
  return NULL;
}

int as_kv_seq_new(as_kv_t *kv, int64_t id) {
  if (as__kv_find(kv, id) != NULL)
    return AS_EEXISTS;
  if (kv->n == kv->cap) {
    int cap = kv->cap ? kv->cap * 2 : 8;
    as__kvseq_t *s = realloc(kv->seqs, (size_t)cap * sizeof *s);
    if (s == NULL)
      return AS_ENOMEM;
    kv->seqs = s;
    kv->cap = cap;
  }
  memset(&kv->seqs[kv->n], 0, sizeof kv->seqs[0]);
  kv->seqs[kv->n++].id = id;
  return 0;
}

int as_kv_seq_free(as_kv_t *kv, int64_t id) {
  as__kvseq_t *s = as__kv_find(kv, id);
  if (s == NULL)
    return AS_ENOTFOUND;
  kv->tokens -= (size_t)s->len;
  free(s->k);
  free(s->v);
  *s = kv->seqs[--kv->n];
  return 0;
}

int as_kv_seq_len(const as_kv_t *kv, int64_t id) {
  const as__kvseq_t *s = as__kv_find(kv, id);
  return s != NULL ? s->len : AS_ENOTFOUND;
}

int as_kv_seq_truncate(as_kv_t *kv, int64_t id, int len) {
  as__kvseq_t *s = as__kv_find(kv, id);
  if (s == NULL)
    return AS_ENOTFOUND;
  if (len < 0 || len > s->len)
    return AS_EINVAL;
  kv->tokens -= (size_t)(s->len - len);
  s->len = len;
  return 0;
}

size_t as_kv_tokens(const as_kv_t *kv) { return kv->tokens; }

int as__kv_reserve(as_kv_t *kv, as__kvseq_t *s, int need) {
  size_t row = (size_t)kv->kv_dim * sizeof(float);
  int cap;
  float *k, *v;
  if (need <= s->cap)
    return 0;
  for (cap = s->cap ? s->cap : 16; cap < need; cap *= 2)
    ;
  k = malloc((size_t)kv->layers * (size_t)cap * row);
  v = malloc((size_t)kv->layers * (size_t)cap * row);
  if (k == NULL || v == NULL) {
    free(k);
    free(v);
    return AS_ENOMEM;
  }
  for (int l = 0; l < kv->layers && s->len > 0; l++) {
    memcpy((char *)k + (size_t)l * cap * row, (char *)s->k + (size_t)l * s->cap * row,
           (size_t)s->len * row);
    memcpy((char *)v + (size_t)l * cap * row, (char *)s->v + (size_t)l * s->cap * row,
           (size_t)s->len * row);
  }
  free(s->k);
  free(s->v);
  s->k = k;
  s->v = v;
  s->cap = cap;
  return 0;
}

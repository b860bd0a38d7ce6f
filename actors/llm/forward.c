/* forward.c — the forward passes: a decoder step over a batch of sequences
 * sharing one KV cache (Llama, Gemma, Qwen2), and BERT sentence embeddings.
 *
 * A decoder step stacks the new tokens of every sequence into one (T, C)
 * activation so each linear layer is one GEMM over the whole batch (prefill
 * chunks and decode tokens alike); only attention runs per sequence, over
 * that sequence's cached keys and values. Everything is validated before
 * the first op runs, so an error leaves the cache as it was. Scratch memory
 * is allocated per call: the model itself stays read-only.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

/* Checks a decoder batch; returns 0 or an error with its message.
 * check_room: also the max_tokens bound (the device path checks pages). */
int as__forward_check(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                      size_t *total, size_t *scratch, int check_room, char *err,
                      size_t errlen) {
  const as_llm_config_t *c = &m->cfg;
  size_t T = 0, scr = 0;
  if (c->arch == AS_ARCH_BERT)
    return as__llm_err(err, errlen, AS_EINVAL,
                       "%s models are encoders: use as_model_embed, not as_model_forward",
                       c->model_type);
  if (kv == NULL || kv->m != m)
    return as__llm_err(err, errlen, AS_EINVAL, "the KV cache belongs to another model");
  if (nseq <= 0 || seqs == NULL)
    return as__llm_err(err, errlen, AS_EINVAL, "empty batch");
  for (int i = 0; i < nseq; i++) {
    const as_fwd_seq_t *q = &seqs[i];
    const as__kvseq_t *s = as__kv_find(kv, q->seq);
    if (s == NULL)
      return as__llm_err(err, errlen, AS_EINVAL, "sequence %lld is not in the KV cache",
                         (long long)q->seq);
    if (q->n <= 0 || q->tokens == NULL)
      return as__llm_err(err, errlen, AS_EINVAL, "sequence %lld: no new tokens",
                         (long long)q->seq);
    for (int j = 0; j < i; j++)
      if (seqs[j].seq == q->seq)
        return as__llm_err(err, errlen, AS_EINVAL, "sequence %lld appears twice in the batch",
                           (long long)q->seq);
    for (int j = 0; j < q->n; j++)
      if (q->tokens[j] < 0 || q->tokens[j] >= c->vocab_size)
        return as__llm_err(err, errlen, AS_EINVAL,
                           "sequence %lld: token id %d is outside the vocabulary (%d)",
                           (long long)q->seq, (int)q->tokens[j], c->vocab_size);
    if ((long long)s->len + q->n > c->max_positions)
      return as__llm_err(err, errlen, AS_EINVAL,
                         "sequence %lld: %d + %d tokens exceed max_position_embeddings (%d)",
                         (long long)q->seq, s->len, q->n, c->max_positions);
    T += (size_t)q->n;
    if ((size_t)q->n * (size_t)(s->len + q->n) > scr)
      scr = (size_t)q->n * (size_t)(s->len + q->n);
  }
  if (check_room && kv->max_tokens != 0 && kv->tokens + T > kv->max_tokens)
    return as__llm_err(err, errlen, AS_EFULL,
                       "the KV cache holds %zu of %zu tokens: no room for %zu more", kv->tokens,
                       kv->max_tokens, T);
  *total = T;
  *scratch = scr;
  return 0;
}

int as_model_forward(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                     float *logits, int all_positions, char *err, size_t errlen) {
  const as_llm_config_t *c = &m->cfg;
  const ask_ops_t *ops = m->ops;
  int C = c->hidden_size, F = c->intermediate_size, D = c->head_dim, nh = c->num_heads,
      nkv = c->num_kv_heads, qd = nh * D, kvd = nkv * D, V = c->vocab_size, rc;
  size_t T = 0, scr_n = 0, row = (size_t)kvd * sizeof(float);
  float *x, *h, *q, *k, *v, *att, *g, *u, *scr, *block;
  int32_t *ids, *pos;
  float scale = (float)(1.0 / sqrt((double)D));

  if (m->dm != NULL)
    return as__forward_dev(m, kv, seqs, nseq, NULL, logits, all_positions, err, errlen);
  if ((rc = as__forward_check(m, kv, seqs, nseq, &T, &scr_n, 1, err, errlen)) != 0)
    return rc;
  for (int i = 0; i < nseq; i++) {
    as__kvseq_t *s = as__kv_find(kv, seqs[i].seq);
    if (as__kv_reserve(kv, s, s->len + seqs[i].n) != 0)
      return as__llm_err(err, errlen, AS_ENOMEM, "out of memory for the KV cache");
  }
  /* One block: x h (T,C) · q att (T,qd) · k v (T,kvd) · g u (T,F) · scores. */
  size_t nf = T * (2 * (size_t)C + 2 * (size_t)qd + 2 * (size_t)kvd + 2 * (size_t)F) + scr_n;
  block = malloc(nf * sizeof(float) + 2 * T * sizeof(int32_t));
  if (block == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory for %zu tokens", T);
  x = block;
  h = x + T * C;
  q = h + T * C;
  att = q + T * qd;
  k = att + T * qd;
  v = k + T * kvd;
  g = v + T * kvd;
  u = g + T * F;
  scr = u + T * F;
  ids = (int32_t *)(scr + scr_n);
  pos = ids + T;
  for (int i = 0, r = 0; i < nseq; i++) {
    int len = as__kv_find(kv, seqs[i].seq)->len;
    for (int j = 0; j < seqs[i].n; j++, r++) {
      ids[r] = seqs[i].tokens[j];
      pos[r] = len + j;
    }
  }

  ops->embedding(x, m->embed, ids, (int)T, C, m->embed_scale);
  for (int l = 0; l < c->num_layers; l++) {
    const as__layer_t *L = &m->layers[l];
    ops->rmsnorm(h, x, L->norm1_w, (int)T, C, (float)c->norm_eps, m->norm_offset);
    ops->matmul(q, h, L->q.w, L->q.b, (int)T, C, qd);
    ops->matmul(k, h, L->k.w, L->k.b, (int)T, C, kvd);
    ops->matmul(v, h, L->v.w, L->v.b, (int)T, C, kvd);
    ops->rope(q, pos, m->inv_freq, (int)T, nh, D, qd);
    ops->rope(k, pos, m->inv_freq, (int)T, nkv, D, kvd);
    for (int i = 0, r = 0; i < nseq; i++) {
      as__kvseq_t *s = as__kv_find(kv, seqs[i].seq);
      int n = seqs[i].n;
      float *kc = s->k + (size_t)l * s->cap * kvd, *vc = s->v + (size_t)l * s->cap * kvd;
      memcpy(kc + (size_t)s->len * kvd, k + (size_t)r * kvd, (size_t)n * row);
      memcpy(vc + (size_t)s->len * kvd, v + (size_t)r * kvd, (size_t)n * row);
      ops->attention(att + (size_t)r * qd, scr, q + (size_t)r * qd, kc, vc, NULL, n, s->len + n,
                     nh, nkv, D, kvd, scale, 1);
      r += n;
    }
    ops->matmul(h, att, L->o.w, L->o.b, (int)T, qd, C);
    ops->add(x, x, h, T * C);
    ops->rmsnorm(h, x, L->norm2_w, (int)T, C, (float)c->norm_eps, m->norm_offset);
    ops->matmul(g, h, L->gate.w, L->gate.b, (int)T, C, F);
    ops->matmul(u, h, L->up.w, L->up.b, (int)T, C, F);
    ops->glu(g, g, u, T * F, c->act);
    ops->matmul(h, g, L->down.w, L->down.b, (int)T, F, C);
    ops->add(x, x, h, T * C);
  }
  if (all_positions) {
    ops->rmsnorm(x, x, m->final_norm, (int)T, C, (float)c->norm_eps, m->norm_offset);
    ops->matmul(logits, x, m->lm_head, NULL, (int)T, C, V);
  } else { /* only the last new token of each sequence */
    for (int i = 0, r = 0; i < nseq; i++) {
      r += seqs[i].n;
      memcpy(h + (size_t)i * C, x + (size_t)(r - 1) * C, (size_t)C * sizeof(float));
    }
    ops->rmsnorm(h, h, m->final_norm, nseq, C, (float)c->norm_eps, m->norm_offset);
    ops->matmul(logits, h, m->lm_head, NULL, nseq, C, V);
  }
  for (int i = 0; i < nseq; i++) {
    as__kv_find(kv, seqs[i].seq)->len += seqs[i].n;
    kv->tokens += (size_t)seqs[i].n;
  }
  free(block);
  return 0;
}

int as_model_embed(const as_model_t *m, const int32_t *ids, const int32_t *mask,
                   const int32_t *types, int batch, int S, float *out, char *err,
                   size_t errlen) {
  const as_llm_config_t *c = &m->cfg;
  const ask_ops_t *ops = m->ops;
  int C = c->hidden_size, F = c->intermediate_size, nh = c->num_heads, D = c->head_dim;
  size_t T = (size_t)batch * (size_t)S;
  float scale = (float)(1.0 / sqrt((double)D));
  float *x, *h, *q, *k, *v, *att, *g, *scr, *block;
  int32_t *idx;

  if (c->arch != AS_ARCH_BERT)
    return as__llm_err(err, errlen, AS_EINVAL,
                       "%s models are decoders: sentence embeddings need a BERT encoder",
                       c->model_type);
  if (batch <= 0 || S <= 0 || ids == NULL || out == NULL)
    return as__llm_err(err, errlen, AS_EINVAL, "empty embedding batch");
  if (S > c->max_positions)
    return as__llm_err(err, errlen, AS_EINVAL,
                       "%d tokens exceed max_position_embeddings (%d)", S, c->max_positions);
  for (size_t i = 0; i < T; i++) {
    if (ids[i] < 0 || ids[i] >= c->vocab_size)
      return as__llm_err(err, errlen, AS_EINVAL, "token id %d is outside the vocabulary (%d)",
                         (int)ids[i], c->vocab_size);
    if (types != NULL && (types[i] < 0 || types[i] >= c->type_vocab_size))
      return as__llm_err(err, errlen, AS_EINVAL, "token type %d is outside [0, %d)",
                         (int)types[i], c->type_vocab_size);
  }
  block = malloc((T * (6 * (size_t)C + (size_t)F) + (size_t)S * S) * sizeof(float) +
                 T * sizeof(int32_t));
  if (block == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory for %zu tokens", T);
  x = block;
  h = x + T * C;
  q = h + T * C;
  k = q + T * C;
  v = k + T * C;
  att = v + T * C;
  g = att + T * C;
  scr = g + T * F;
  idx = (int32_t *)(scr + (size_t)S * S);

  /* Embeddings: (word + token type) + position, then LayerNorm (BertEmbeddings). */
  ops->embedding(x, m->embed, ids, (int)T, C, 1.0f);
  if (m->type_embed != NULL) {
    for (size_t i = 0; i < T; i++)
      idx[i] = types != NULL ? types[i] : 0;
    ops->embedding(h, m->type_embed, idx, (int)T, C, 1.0f);
    ops->add(x, x, h, T * C);
  }
  for (size_t i = 0; i < T; i++)
    idx[i] = (int32_t)(i % (size_t)S);
  ops->embedding(h, m->pos_embed, idx, (int)T, C, 1.0f);
  ops->add(x, x, h, T * C);
  ops->layernorm(x, x, m->emb_norm_w, m->emb_norm_b, (int)T, C, (float)c->norm_eps);

  for (int l = 0; l < c->num_layers; l++) {
    const as__layer_t *L = &m->layers[l];
    ops->matmul(q, x, L->q.w, L->q.b, (int)T, C, C);
    ops->matmul(k, x, L->k.w, L->k.b, (int)T, C, C);
    ops->matmul(v, x, L->v.w, L->v.b, (int)T, C, C);
    for (int b = 0; b < batch; b++) {
      size_t o = (size_t)b * S * C;
      ops->attention(att + o, scr, q + o, k + o, v + o, mask != NULL ? mask + (size_t)b * S : NULL,
                     S, S, nh, nh, D, C, scale, 0);
    }
    ops->matmul(h, att, L->o.w, L->o.b, (int)T, C, C);
    ops->add(h, h, x, T * C);
    ops->layernorm(x, h, L->norm1_w, L->norm1_b, (int)T, C, (float)c->norm_eps);
    ops->matmul(g, x, L->up.w, L->up.b, (int)T, C, F);
    ops->activate(g, g, T * F, c->act);
    ops->matmul(h, g, L->down.w, L->down.b, (int)T, F, C);
    ops->add(h, h, x, T * C);
    ops->layernorm(x, h, L->norm2_w, L->norm2_b, (int)T, C, (float)c->norm_eps);
  }

  /* Mean over the unmasked positions, then L2 normalisation. */
  for (int b = 0; b < batch; b++) {
    float *o = out + (size_t)b * C;
    double cnt = 0, norm = 0;
    memset(o, 0, (size_t)C * sizeof(float));
    for (int t = 0; t < S; t++) {
      if (mask != NULL && mask[(size_t)b * S + t] == 0)
        continue;
      cnt += 1;
      for (int i = 0; i < C; i++)
        o[i] += x[((size_t)b * S + t) * C + i];
    }
    for (int i = 0; i < C; i++) {
      o[i] = (float)(o[i] / (cnt > 1e-9 ? cnt : 1e-9));
      norm += (double)o[i] * o[i];
    }
    norm = sqrt(norm);
    for (int i = 0; i < C; i++)
      o[i] = (float)(o[i] / (norm > 1e-12 ? norm : 1e-12));
  }
  free(block);
  return 0;
}

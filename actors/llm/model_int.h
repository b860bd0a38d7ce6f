/* model_int.h — internal header of actors/llm's model work: the loaded
 * model's weights and the KV cache's layout, shared by model.c, kvcache.c
 * and forward.c. Never included from outside actors/llm.
 */
#ifndef AS_MODEL_INT_H
#define AS_MODEL_INT_H

#include "kernels.h"
#include "llm.h"

typedef struct as__lin_s {
  const float *w; /* (out, in), torch.nn.Linear's layout */
  const float *b; /* (out) or NULL */
} as__lin_t;

typedef struct as__layer_s {
  const float *norm1_w, *norm1_b; /* input_layernorm; BERT: attention.output.LayerNorm */
  const float *norm2_w, *norm2_b; /* post_attention_layernorm; BERT: output.LayerNorm */
  as__lin_t q, k, v, o;           /* attention projections */
  as__lin_t gate, up, down;       /* MLP; BERT: up = intermediate, down = output (no gate) */
} as__layer_t;

struct as_model_s {
  as_llm_config_t cfg;
  const ask_ops_t *ops;     /* backend (the reference one for now) */
  as_st_t *st;              /* the mapped safetensors (f32 weights point into it) */
  void **owned;             /* converted or copied weights, freed with the model */
  int nowned;
  as__layer_t *layers;      /* cfg.num_layers */
  const float *embed;       /* (vocab, hidden) */
  const float *lm_head;     /* (vocab, hidden); == embed when tied */
  const float *final_norm;  /* (hidden) decoders */
  const float *pos_embed;   /* BERT (max_positions, hidden) */
  const float *type_embed;  /* BERT (type_vocab_size, hidden) */
  const float *emb_norm_w, *emb_norm_b; /* BERT embeddings.LayerNorm */
  float *inv_freq;          /* (head_dim / 2) RoPE inverse frequencies, scaled if llama3 */
  float embed_scale;        /* 1, or sqrt(hidden) for Gemma */
  float norm_offset;        /* 0, or 1 for Gemma's (1 + w) RMSNorm */
};

typedef struct as__kvseq_s {
  int64_t id;   /* caller's sequence id */
  int len;      /* tokens held */
  int cap;      /* tokens room */
  float *k, *v; /* (layers, cap, kv_dim) each */
} as__kvseq_t;

struct as_kv_s {
  const as_model_t *m;
  int layers, kv_dim;  /* num_layers, num_kv_heads * head_dim */
  size_t max_tokens;   /* 0: unbounded */
  size_t tokens;       /* sum of lengths */
  as__kvseq_t *seqs;
  int n, cap;
};

/* The sequence with this id, or NULL. */
as__kvseq_t *as__kv_find(const as_kv_t *kv, int64_t id);
/* Grows a sequence's room to at least `need` tokens (contents kept). */
int as__kv_reserve(as_kv_t *kv, as__kvseq_t *s, int need);

/* Error helper shared by the model files: formats into err, returns code. */
int as__llm_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* AS_MODEL_INT_H */

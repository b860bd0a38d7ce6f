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

/* A decoder's weights in device memory (dmodel.c): bf16 matrices, with
 * q/k/v fused into one (qd + 2*kvd, C) matrix and gate/up into one (2F, C)
 * matrix so a layer is four GEMMs; norms, biases and RoPE frequencies f32. */
typedef struct as__dlayer_s {
  const float *norm1, *norm2;             /* (C) */
  const uint16_t *qkv, *o, *gu, *down;    /* bf16 */
  const uint16_t *down_t;                 /* (F, C) bf16: down transposed (dm->mlp), or NULL */
  const float *qkv_b, *o_b, *gu_b, *down_b; /* f32 or NULL */
} as__dlayer_t;

typedef struct as__dmodel_s {
  const ask_dev_t *dev;
  void **allocs;            /* device blocks, freed with the model */
  int nallocs;
  as__dlayer_t *layers;
  const uint16_t *embed;    /* (V, C) bf16 */
  const uint16_t *lm_head;  /* (V, C) bf16; == embed when tied */
  const float *final_norm;  /* (C) */
  const float *inv_freq;    /* (D/2) */
  int mlp;                  /* ASK_FUSE_MLP: one-row steps run norm_matmul_mlp (down_t) */
  size_t weight_bytes;      /* bytes of weights one decode step reads */
  size_t device_bytes;      /* device memory the weights take */
} as__dmodel_t;

struct as_model_s {
  as_llm_config_t cfg;
  const ask_ops_t *ops;     /* backend: the reference one, or a device one with dm */
  const char *device;       /* "cpu", "cuda", "refdev" */
  as__dmodel_t *dm;         /* device weights (NULL on the CPU path) */
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
  float *k, *v; /* (layers, cap, kv_dim) each (CPU path) */
  int32_t *pages; /* device path: the pages holding its tokens, in order */
  int npages, pagecap;
} as__kvseq_t;

/* Page size of the device KV cache, in tokens. */
#define AS_KV_PAGE 16

typedef struct as__dstep_s as__dstep_t; /* forward_dev.c's per-cache step state */

struct as_kv_s {
  const as_model_t *m;
  int layers, kv_dim;  /* num_layers, num_kv_heads * head_dim */
  size_t max_tokens;   /* 0: unbounded (CPU); the pool's capacity (device) */
  size_t tokens;       /* sum of lengths */
  as__kvseq_t *seqs;
  int n, cap;
  /* Device path: a pool of pages in device memory, bf16 rows of kv_dim,
   * laid out (layer, page * AS_KV_PAGE + offset, kv_dim) for keys and
   * values; free pages on a stack. */
  int paged;
  int npages;
  int32_t *free_pages;
  int nfree;
  uint16_t *kc, *vc;
  as__dstep_t *step;   /* buffers and captured steps of forward_dev.c */
};

/* The sequence with this id, or NULL. */
as__kvseq_t *as__kv_find(const as_kv_t *kv, int64_t id);
/* Grows a sequence's room to at least `need` tokens (contents kept). */
int as__kv_reserve(as_kv_t *kv, as__kvseq_t *s, int need);

/* model.c: tensor prefix+name, shape-checked ((d0) when d1 < 0, else
 * (d0, d1)); *out NULL when absent and not required. */
int as__model_tensor(const as_model_t *m, const char *dir, const char *prefix,
                     const char *name, int64_t d0, int64_t d1, int required,
                     const as_st_tensor_t **out, char *err, size_t errlen);
/* model.c: m->inv_freq from the config (llama3 scaling folded in). */
int as__rope_init(as_model_t *m);

/* Device path (dmodel.c, forward_dev.c). */
int as__dmodel_load(as_model_t *m, const char *dir, char *err, size_t errlen);
void as__dmodel_free(as__dmodel_t *dm);
/* Pages so that sequence s can hold `need` tokens; AS_EFULL when the pool
 * has too few free pages (nothing changes then). */
int as__kv_pages(as_kv_t *kv, as__kvseq_t *s, int need);
/* Free pages needed for sequence s to hold `need` tokens. */
int as__kv_pages_short(const as_kv_t *kv, const as__kvseq_t *s, int need);
/* Step buffers for up to rows tokens and seqs sequences per step. */
int as__dstep_new(as_kv_t *kv, int rows, int seqs, char *err, size_t errlen);
void as__dstep_free(as_kv_t *kv);
/* The step buffers' limits (tokens, sequences per forward call). */
void as__kv_step_limits(const as_kv_t *kv, int *rows, int *seqs);
/* ASK_PROFILE=1: the mean time per step of each op kind as a JSON object
 * into out; 0 when not profiling or no step ran. Reset clears it. */
int as__kv_profile(const as_kv_t *kv, char *out, size_t len);
void as__kv_profile_reset(as_kv_t *kv);
/* Captured steps held by the cache's step state. */
int as__kv_graphs(const as_kv_t *kv);
/* Device bytes as__dstep_new would take for these limits. */
size_t as__dstep_bytes(const as_model_t *m, int rows, int seqs);
/* The device forward (forward_dev.c): one step over the batch. With
 * samp != NULL, the last row of every sequence is sampled on the device
 * and only the ids (and the generators' states) come back: ids (nseq),
 * samp->rng (nseq) updated. Else logits (nseq or sum-of-n rows with
 * all_positions, vocab floats each) are copied back. */
typedef struct as__samp_s {
  const float *temperature; /* (nseq) */
  const int32_t *top_k;     /* (nseq) */
  const float *top_p;       /* (nseq) */
  uint64_t *rng;            /* (nseq), updated */
  int32_t *ids;             /* (nseq) out */
} as__samp_t;
int as__forward_check(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                      size_t *total, size_t *scratch, int check_room, char *err,
                      size_t errlen);
int as__forward_dev(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                    const as__samp_t *samp, float *logits, int all_positions, char *err,
                    size_t errlen);
/* The same sampled step in two halves, so that the host may queue the
 * next one before it reads this one (generate.c's pipeline): begin
 * checks, stages (host buffer `slot`) and queues the step and the copy out
 * of its ids and generators' states into pinned slot `slot`, and counts its
 * tokens in the cache at once; end waits for that slot and fills samp->ids
 * and samp->rng. fed: the sequences are exactly those of the step queued
 * last, in order, and each row's input is the id that step sampled for it
 * (never seen by the host), the generators' states staying on the device
 * too. At most ASK_MARKS steps in flight, in different slots. */
int as__forward_dev_begin(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                          const as__samp_t *samp, int fed, int slot, char *err, size_t errlen);
int as__forward_dev_end(as_kv_t *kv, int slot, int nseq, const as__samp_t *samp, char *err,
                        size_t errlen);

/* Error helper shared by the model files: formats into err, returns code. */
int as__llm_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* AS_MODEL_INT_H */

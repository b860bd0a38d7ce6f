/* llm.h — the public header of actors/llm/: the model engine's C API.
 * Loading Hugging Face model folders (config.json, safetensors, tokenizer),
 * tokenizers, the forward pass over a KV cache holding many sequences,
 * sampling and generation. The math goes through the ops table of kernels/
 * (kernels/kernels.h): kernels/ref is the plain-C source of truth.
 * Functions return 0 or a negative AS_E* code (runtime.h) and write a
 * message naming the file / tensor / field into an error buffer.
 */
#ifndef AS_LLM_H
#define AS_LLM_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

/* ==== tokenizer section (owned by the tokenizer work) ==== */

/* Tokenizers read from a Hugging Face folder: tokenizer.json (byte-level BPE as
 * GPT-2 / Llama-3 / Qwen2, SentencePiece-style BPE with byte fallback as
 * Llama-2 / Gemma, WordPiece as BERT), tokenizer_config.json (special token
 * strings, chat_template) and generation_config.json (bos/eos/pad ids). Ids
 * equal those of the `tokenizers` library; see docs/tokenizers.md. A loaded
 * tokenizer is immutable: many threads may use one at once. Input text that is
 * not valid UTF-8 has each maximal invalid subpart replaced with U+FFFD first. */
typedef struct as_tokenizer_s as_tokenizer_t;
typedef struct as_detok_s as_detok_t;

typedef struct as_ids_s {
  int32_t *v; /* heap array of token ids */
  size_t n;   /* ids in use */
  size_t cap; /* ids allocated */
} as_ids_t;

typedef struct as_chat_msg_s {
  const char *role;    /* "system", "user", "assistant" (NUL-terminated UTF-8) */
  const char *content; /* the message text */
} as_chat_msg_t;

enum {
  AS_TOK_ADD_SPECIAL = 1,      /* add the post-processor's tokens (BOS, [CLS]/[SEP]) */
  AS_TOK_NO_PARSE_SPECIAL = 2  /* special tokens written in the text stay plain text */
};

void as_ids_init(as_ids_t *ids);
void as_ids_free(as_ids_t *ids);               /* idempotent */
int as_ids_push(as_ids_t *ids, int32_t id);

/* Loads dir/tokenizer.json (+ tokenizer_config.json, generation_config.json when
 * present). Errors name the file and field in err. */
int as_tokenizer_load(const char *dir, as_tokenizer_t **out, char *err, size_t errlen);
/* Same from memory: tokenizer.json text, optional tokenizer_config.json and
 * generation_config.json texts (NULL when absent). */
int as_tokenizer_load_mem(const char *tok_json, size_t tok_len, const char *cfg_json,
                          const char *gen_json, as_tokenizer_t **out, char *err, size_t errlen);
void as_tokenizer_free(as_tokenizer_t *tok);    /* NULL is fine */

/* Appends the ids of text[0..len) to out; flags are AS_TOK_*. */
int as_tokenizer_encode(const as_tokenizer_t *tok, const char *text, size_t len, int flags,
                        as_ids_t *out);
/* Appends the decoded text of ids to out (ids out of range are skipped). */
int as_tokenizer_decode(const as_tokenizer_t *tok, const int32_t *ids, size_t n, int skip_special,
                        as_buf_t *out);
/* Formats messages with the chat template of the tokenizer's family (Llama-3,
 * Llama-2, Gemma, Qwen2, ChatML; see docs/tokenizers.md) into out. AS_EINVAL with
 * a message when the family refuses the conversation (Gemma: no system role). */
int as_tokenizer_apply_chat(const as_tokenizer_t *tok, const as_chat_msg_t *msgs, size_t n,
                            int add_generation_prompt, as_buf_t *out, char *err, size_t errlen);
const char *as_tokenizer_chat_family(const as_tokenizer_t *tok); /* "llama3", ..., or NULL */

int32_t as_tokenizer_vocab_size(const as_tokenizer_t *tok);   /* largest id + 1 */
int32_t as_tokenizer_bos_id(const as_tokenizer_t *tok);       /* -1 when none */
int32_t as_tokenizer_pad_id(const as_tokenizer_t *tok);       /* -1 when none */
size_t as_tokenizer_eos_ids(const as_tokenizer_t *tok, const int32_t **ids); /* all stop ids */
int as_tokenizer_is_eos(const as_tokenizer_t *tok, int32_t id);
int as_tokenizer_is_special(const as_tokenizer_t *tok, int32_t id);
int32_t as_tokenizer_token_id(const as_tokenizer_t *tok, const char *s, size_t len); /* -1 */
const char *as_tokenizer_token(const as_tokenizer_t *tok, int32_t id, size_t *len);  /* NULL */

/* Incremental detokenizer: feed ids as they are generated and get the text that
 * is complete so far, never a partial UTF-8 character; finish flushes the rest.
 * The concatenation of everything it appends equals as_tokenizer_decode. */
int as_detok_new(const as_tokenizer_t *tok, int skip_special, as_detok_t **out);
int as_detok_feed(as_detok_t *d, const int32_t *ids, size_t n, as_buf_t *out);
int as_detok_finish(as_detok_t *d, as_buf_t *out);
void as_detok_free(as_detok_t *d);             /* NULL is fine */

/* ==== end tokenizer section ==== */

/* ==== model section (owned by the model work) ==== */

/* Model functions report failures as a negative AS_E* code and write a
 * message naming the file, tensor or field into err (errlen bytes, may be
 * NULL/0). Messages are complete sentences without a trailing newline. */

/* ---- safetensors (actors/llm/safetensors.c) -------------------------------
 * A safetensors file is: u64 LE header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *  "__metadata__": {...}}, then the data (offsets are relative to it).
 * The parser checks everything and never trusts the file: a truncated file,
 * a header length beyond the file, non-object JSON, a bad dtype, a shape
 * whose byte size differs from its offsets, offsets out of range or
 * overlapping, a duplicate name: AS_EINVAL naming the file and tensor. */

enum { AS_DT_BOOL, AS_DT_U8, AS_DT_I8, AS_DT_F8_E4M3, AS_DT_F8_E5M2, AS_DT_I16, AS_DT_U16,
       AS_DT_F16, AS_DT_BF16, AS_DT_I32, AS_DT_U32, AS_DT_F32, AS_DT_F64, AS_DT_I64,
       AS_DT_U64, AS_DT_COUNT };

#define AS_ST_MAX_DIMS 8

typedef struct as_st_tensor_s {
  const char *name;              /* as in the header */
  const char *file;              /* path of the file it lives in (for messages) */
  int dtype;                     /* AS_DT_* */
  int ndim;                      /* 0 (scalar) .. AS_ST_MAX_DIMS */
  int64_t shape[AS_ST_MAX_DIMS]; /* shape[0..ndim) */
  size_t numel;                  /* product of the shape */
  const uint8_t *data;           /* in the mapping; not necessarily aligned */
  size_t nbytes;                 /* numel * dtype size */
} as_st_tensor_t;

typedef struct as_st_s as_st_t; /* one or more parsed (mapped) files */

/* Parses a safetensors image in memory (buf is borrowed and must outlive the
 * result); `file` names it in messages. */
int as_st_parse(as_st_t **out, const void *buf, size_t len, const char *file, char *err,
                size_t errlen);
/* Maps and parses `path`: a .safetensors file, or a model folder holding
 * model.safetensors or shards listed by model.safetensors.index.json (every
 * tensor of the weight_map must be in the shard it names). */
int as_st_open(as_st_t **out, const char *path, char *err, size_t errlen);
void as_st_close(as_st_t *st); /* unmaps; NULL is fine */
int as_st_count(const as_st_t *st);
const as_st_tensor_t *as_st_get(const as_st_t *st, int i);        /* sorted by name */
const as_st_tensor_t *as_st_find(const as_st_t *st, const char *name); /* NULL if absent */
const char *as_st_dtype_name(int dtype);                          /* "BF16" */
size_t as_st_dtype_size(int dtype);                               /* bytes per element */
/* Converts a F32/F16/BF16/F64 tensor to f32 into out (numel floats);
 * AS_EINVAL for other dtypes. Handles misaligned data. */
int as_st_to_f32(const as_st_tensor_t *t, float *out, char *err, size_t errlen);

/* ---- config.json (actors/llm/config.c) ------------------------------------ */

enum { AS_ARCH_LLAMA = 1, AS_ARCH_GEMMA = 2, AS_ARCH_QWEN2 = 3, AS_ARCH_BERT = 4 };

typedef struct as_llm_config_s {
  int arch;                  /* AS_ARCH_* */
  char model_type[32];       /* "llama", "gemma", "qwen2", "bert" */
  int vocab_size;
  int hidden_size;
  int intermediate_size;
  int num_layers;            /* num_hidden_layers */
  int num_heads;             /* num_attention_heads */
  int num_kv_heads;          /* num_key_value_heads (= num_heads when absent) */
  int head_dim;              /* head_dim (= hidden_size / num_heads when absent) */
  int max_positions;         /* max_position_embeddings */
  int type_vocab_size;       /* BERT token types */
  int act;                   /* ASK_ACT_* of kernels.h: hidden_act / hidden_activation */
  double norm_eps;           /* rms_norm_eps, or layer_norm_eps for BERT */
  double rope_theta;         /* rope_theta (or rope_parameters.rope_theta) */
  int rope_llama3;           /* rope_scaling / rope_parameters of type "llama3" */
  double rope_factor;        /* llama3: factor */
  double rope_low_freq;      /* llama3: low_freq_factor */
  double rope_high_freq;     /* llama3: high_freq_factor */
  int rope_orig_max;         /* llama3: original_max_position_embeddings */
  int tie_word_embeddings;   /* lm_head shares embed_tokens */
  int qkv_bias;              /* q/k/v projections have biases (Qwen2, attention_bias) */
  int o_bias;                /* o_proj has a bias (Llama attention_bias) */
  int mlp_bias;              /* gate/up/down have biases (Llama mlp_bias) */
  int bos_token_id;          /* -1 when absent */
  int pad_token_id;          /* -1 when absent */
  int n_eos;                 /* eos_token_id: one id or a list */
  int eos_token_ids[8];
} as_llm_config_t;

/* Parses config.json text; `file` names it in messages. An architecture
 * other than llama, gemma, qwen2, bert is AS_EINVAL saying so. */
int as_llm_config_parse(as_llm_config_t *cfg, const char *json, size_t len, const char *file,
                        char *err, size_t errlen);
/* Reads and parses a config.json path (or a folder holding one). */
int as_llm_config_load(as_llm_config_t *cfg, const char *path, char *err, size_t errlen);

/* ---- models (actors/llm/model.c) -------------------------------------------
 * A loaded model is read-only: forward and embed calls on different KV
 * caches may run at once from several threads. */

typedef struct as_model_s as_model_t;

/* Loads a Hugging Face model folder: config.json and its safetensors, every
 * tensor bound by its HF name and shape-checked (a missing tensor or a wrong
 * shape is AS_EINVAL naming it). Weights end up f32 in memory. */
int as_model_load(as_model_t **out, const char *dir, char *err, size_t errlen);
void as_model_free(as_model_t *m); /* NULL is fine */
const as_llm_config_t *as_model_config(const as_model_t *m);

/* Where a model runs. "cpu": the reference path above (f32 weights, OpenBLAS).
 * "cuda": the first GPU that CUDA_VISIBLE_DEVICES leaves, through the CUDA
 * module (kernels/load.c): weights bf16 in device memory, a paged bf16 KV
 * cache, sampling on the device, decode steps captured as CUDA graphs; a
 * device model is used by one thread at a time. "refdev": the same device
 * code path with host memory and the plain-C twins of the device kernels
 * (kernels/ref/dev.c): for tests on machines without a GPU. Decoders only
 * on a device (BERT encoders: "cpu"). */
typedef struct as_model_opts_s {
  const char *device; /* "cpu" (NULL or "" too), "cuda", "refdev" */
} as_model_opts_t;

/* as_model_load on a chosen device. AS_ENOTSUP (with why) when the device
 * cannot be used; AS_ENOMEM when the weights do not fit its memory. */
int as_model_open(as_model_t **out, const char *dir, const as_model_opts_t *o, char *err,
                  size_t errlen);
const char *as_model_device(const as_model_t *m); /* "cpu", "cuda", "refdev" */
/* One line on the device and how its backend drives it ("NVIDIA H100 ...
 * (sm_90), ..., programmatic dependent launch on"), or the device's name. */
const char *as_model_device_info(const as_model_t *m);
/* Bytes of weights one decode step reads (all matrices and the output head;
 * bf16 on a device, f32 on the CPU): the bandwidth bound of batch 1. */
size_t as_model_weight_bytes(const as_model_t *m);
/* 1 when one-row decode steps run each layer's MLP as one op (ASK_FUSE_MLP=1
 * at open, and the backend took the shape: docs/engine.md), else 0. */
int as_model_fused_mlp(const as_model_t *m);

/* ---- KV cache (actors/llm/kvcache.c) ----------------------------------------
 * Holds the keys and values of many sequences of one decoder model at once.
 * A sequence is named by a caller-chosen id; its length is how many tokens
 * the cache holds for it (the position of its next token). */

typedef struct as_kv_s as_kv_t;

/* max_tokens bounds the tokens held over all sequences (0: no bound). On a
 * device the cache is a pool of pages of AS_KV_PAGE (16) tokens in device
 * memory holding max_tokens (rounded up to pages), or, with max_tokens 0,
 * as many as fit in gpu_memory_utilization (0.9) of the device's memory
 * after the weights and the step buffers (sized for 512 prompt tokens and
 * 256 sequences per step; as_kv_new_ex chooses). */
int as_kv_new(as_kv_t **out, const as_model_t *m, size_t max_tokens);
typedef struct as_kv_opts_s {
  size_t max_tokens;       /* as above */
  int max_step_tokens;     /* device: tokens per forward call at most (0: 512 + max_seqs) */
  int max_seqs;            /* device: sequences per forward call at most (0: 256) */
  double mem_fraction;     /* device: gpu_memory_utilization (0: 0.9) */
} as_kv_opts_t;
int as_kv_new_ex(as_kv_t **out, const as_model_t *m, const as_kv_opts_t *o, char *err,
                 size_t errlen);
/* Tokens the cache can hold in all (device: pages * 16; CPU: max_tokens). */
size_t as_kv_capacity(const as_kv_t *kv);
void as_kv_free(as_kv_t *kv); /* NULL is fine */
int as_kv_seq_new(as_kv_t *kv, int64_t id);      /* AS_EEXISTS when taken */
int as_kv_seq_free(as_kv_t *kv, int64_t id);     /* AS_ENOTFOUND when unknown */
int as_kv_seq_len(const as_kv_t *kv, int64_t id); /* >= 0, or AS_ENOTFOUND */
/* Forgets all but the first len tokens (len <= the current length). */
int as_kv_seq_truncate(as_kv_t *kv, int64_t id, int len);
size_t as_kv_tokens(const as_kv_t *kv);           /* tokens held, all sequences */

/* ---- forward and embed (actors/llm/forward.c) ------------------------------ */

typedef struct as_fwd_seq_s {
  int64_t seq;           /* sequence id in the KV cache (as_kv_seq_new first) */
  const int32_t *tokens; /* new token ids, appended after what the cache holds */
  int n;                 /* how many (>= 1) */
} as_fwd_seq_t;

/* One forward step of a decoder over a batch of sequences (prefill chunks
 * and single decode tokens may be mixed; each sequence at most once). The
 * new tokens' keys/values are appended to the cache. logits receives
 * (nseq, vocab) floats: the last new token of each sequence, or, with
 * all_positions, (sum of n, vocab) floats in batch order. On error nothing
 * in the cache changes: AS_EINVAL (bad token id, unknown sequence, past
 * max_position_embeddings, an encoder model), AS_EFULL (max_tokens),
 * AS_ENOMEM. */
int as_model_forward(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                     float *logits, int all_positions, char *err, size_t errlen);

/* Sentence embeddings of a BERT encoder: ids (batch, seqlen) with
 * attention_mask (batch, seqlen) of 0/1 (NULL: all ones) and token_type_ids
 * (NULL: all zeros). out (batch, hidden_size) is the masked mean of the last
 * hidden states, L2-normalised (all-MiniLM / sentence-transformers). */
int as_model_embed(const as_model_t *m, const int32_t *ids, const int32_t *attention_mask,
                   const int32_t *token_type_ids, int batch, int seqlen, float *out, char *err,
                   size_t errlen);

/* ==== end model section ==== */

/* ==== generation section (owned by the generation work) ==== */

/* Generation over many requests at once (actors/llm/generate.c). A
 * generator owns one KV cache of one decoder model; requests are added with
 * their prompt ids and options, and each as_gen_step runs ONE
 * as_model_forward over every active request (prefill chunks and decode
 * tokens mixed), samples one token for each request whose prompt is done,
 * and reports it as an event. A request ends with "stop" (a stop token, or a
 * stop string in its text) or "length" (max_new_tokens, or
 * max_position_embeddings); its sequence is freed at once. A generator is
 * used by one thread at a time (the serving loop); the model may be shared.
 * See docs/engine.md, "Generation". */

typedef struct as_gen_s as_gen_t;

/* Text of a request's tokens, for stop strings and streamed text: append to
 * out the text that ids complete (whole UTF-8 characters only; keep partial
 * ones for later). Called with ids == NULL and n == 0 once when the request
 * ends: append what is left and drop any state kept for `req`. */
typedef int (*as_gen_detok_fn)(void *ud, int64_t req, const int32_t *ids, size_t n,
                               as_buf_t *out);

typedef struct as_gen_opts_s {
  int max_new_tokens;            /* tokens to generate at most (default 256) */
  float temperature;             /* <= 0: greedy (default 0) */
  int top_k;                     /* keep the k most likely; 0: off (default) */
  float top_p;                   /* nucleus; >= 1: off (default 1) */
  int64_t seed;                  /* sampling seed; < 0: from the clock (default -1) */
  const int32_t *stop_ids;       /* stop tokens (copied), with n_stop_ids: */
  int n_stop_ids;                /* -1: the model's eos ids (default); 0: none */
  const char *const *stop_strs;  /* stop strings (UTF-8, copied); need text */
  int n_stop_strs;
  const as_tokenizer_t *tok;     /* text through as_detok_* (skip_special), or: */
  as_gen_detok_fn detok;         /* text through this callback (when tok is NULL) */
  void *detok_ud;
} as_gen_opts_t;

typedef struct as_gen_event_s {
  int64_t id;                /* the request */
  int32_t token;             /* the token it generated this step, or -1 (none) */
  const char *text;          /* new text (whole UTF-8 characters, stop string cut
                                off, NUL-terminated); "" without a detokenizer */
  size_t text_len;
  int finished;              /* 1: the request ended with this event; its id is gone */
  const char *finish_reason; /* "stop", "length", or NULL while it runs */
  int stop_str;              /* index of the stop string that ended it, or -1 */
} as_gen_event_t;

/* A generator for model m (a decoder). model_dir (or NULL) is read for
 * generation_config.json: its eos_token_id (else config.json's) are the
 * default stop ids and its do_sample / temperature / top_k / top_p /
 * max_new_tokens fill as_gen_opts_model. kv_max_tokens bounds the cache
 * (0: none). */
int as_gen_new(as_gen_t **out, const as_model_t *m, const char *model_dir, size_t kv_max_tokens,
               char *err, size_t errlen);
/* The same with the KV cache's options (device: step buffer sizes, memory
 * fraction). On a device the prefill budget per step starts at
 * max_step_tokens - max_seqs. */
int as_gen_new_ex(as_gen_t **out, const as_model_t *m, const char *model_dir,
                  const as_kv_opts_t *kv, char *err, size_t errlen);
void as_gen_free(as_gen_t *g); /* NULL is fine; ends every request */
/* Decode steps captured as graphs so far (device models; 0 on the CPU). */
int as_gen_graphs(const as_gen_t *g);
/* Device models, unless ASK_PIPELINE=0 is in the environment (read by
 * as_gen_new): while every request decodes, each step is queued before the
 * host reads the one before, its input ids taken on the device from what
 * that one sampled, so the device never waits for the host between steps.
 * A request that stops on a token has one more token made and dropped.
 * Returns the steps queued that way so far (0 without the pipeline). */
long as_gen_pipelined(const as_gen_t *g);
/* Device models run with ASK_PROFILE=1 in the environment: each step op by
 * op, timed between syncs (no graphs). Writes the mean microseconds per
 * step of each op kind as a JSON object ({"steps": n, "qkv_us": ...}) and
 * returns 1; 0 when not profiling. reset: start counting again. */
int as_gen_profile(as_gen_t *g, char *out, size_t len, int reset);
/* Tokens the generator's KV cache holds in all. */
size_t as_gen_kv_capacity(const as_gen_t *g);
/* Plain defaults: greedy, 256 new tokens, the model's eos ids. */
void as_gen_opts_init(as_gen_opts_t *o);
/* The model's defaults as transformers' generate() takes them from
 * generation_config.json (do_sample false: greedy; true: its temperature,
 * top_k (50 when absent, as GenerationConfig), top_p). */
void as_gen_opts_model(const as_gen_t *g, as_gen_opts_t *o);
/* The model's default stop ids. */
size_t as_gen_eos_ids(const as_gen_t *g, const int32_t **ids);
/* Tokens of prefill per step over all requests (default 512; decodes always
 * run, and one prefill chunk of at least 32 tokens gets in). */
void as_gen_set_step_tokens(as_gen_t *g, int n);

/* Adds a request: prompt ids (n >= 1, copied), options (NULL: defaults).
 * *id receives its id (> 0). AS_EINVAL for a bad id, a prompt beyond
 * max_position_embeddings, stop strings without text. */
int as_gen_add(as_gen_t *g, const int32_t *prompt, int n, const as_gen_opts_t *o, int64_t *id,
               char *err, size_t errlen);
/* Ends a request now without an event; AS_ENOTFOUND when unknown. */
int as_gen_cancel(as_gen_t *g, int64_t id);
int as_gen_active(const as_gen_t *g); /* requests not finished */

/* One step of every active request. *events (valid until the next call)
 * receives one event per request that got a token or ended; *nevents may be
 * 0 (prefill chunks only, or nothing to do). On a forward error (AS_EFULL:
 * the cache is full) nothing changes and the step may be retried after
 * cancelling a request. */
int as_gen_step(as_gen_t *g, const as_gen_event_t **events, int *nevents, char *err,
                size_t errlen);

/* `actorserve generate|embed ...` (actors/llm/cli_llm.c); argv[0] is the
 * subcommand. Returns the process exit status. */
int as_llm_cli(int argc, char **argv);

/* ==== end generation section ==== */

/* ==== serving engine section (actors/llm/engine.c) ==== */

/* Continuous batching for a replica: a thread of its own steps every active
 * request together (as_gen_step); requests and cancellations submitted from
 * the replica's loop join and leave between steps; events come back on the
 * loop (through a uv_async handle) to cb, in order per request. */

struct uv_loop_s;
typedef struct as_engine_s as_engine_t;

typedef struct as_engine_ev_s {
  int64_t id;                /* the request (as_engine_generate / as_engine_embed) */
  int32_t token;             /* generated this step, or -1 */
  const char *text;          /* new text (whole UTF-8 characters), or the error when finish_reason is "error" */
  size_t text_len;
  int finished;              /* the request is over */
  const char *finish_reason; /* "stop", "length", "error", or NULL while it runs */
  int ntokens;               /* embed: tokens read */
  const float *embedding;    /* embed: the vector (dim floats), valid during the callback */
  int dim;
} as_engine_ev_t;

typedef void (*as_engine_cb)(void *ud, const as_engine_ev_t *evs, int n);

typedef struct as_engine_opts_s {
  size_t kv_max_tokens;      /* tokens the KV cache holds over all requests (0: 65536 on the
                                CPU, as many as fit on a device) */
  int step_tokens;           /* prefill tokens per step (0: the generator's default) */
  double step_delay_s;       /* a pause after each step: for tests and demos of slow models (0) */
  const char *device;        /* as_model_opts_t's: "cpu" (NULL), "cuda", "refdev" */
  double mem_fraction;       /* device: gpu_memory_utilization (0: 0.9) */
} as_engine_opts_t;

typedef struct as_engine_stats_s {
  int64_t submitted;         /* requests queued since the start */
  int64_t finished;          /* ended by a stop token, a stop string, the length, or an error */
  int64_t cancelled;         /* ended by as_engine_cancel while running or queued */
  int active;                /* generating now */
  int64_t steps;             /* as_gen_step calls */
  int64_t tokens;            /* tokens generated */
} as_engine_stats_t;

/* Loads the model folder (and its tokenizer when it has one) and starts the
 * engine thread; events go to cb on loop. */
int as_engine_new(as_engine_t **out, const char *dir, struct uv_loop_s *loop, as_engine_cb cb, void *ud,
                  const as_engine_opts_t *o, char *err, size_t errlen);
/* Stops the thread and frees everything (the async handle closes on the loop). */
void as_engine_free(as_engine_t *e);
const as_model_t *as_engine_model(const as_engine_t *e);
const as_tokenizer_t *as_engine_tokenizer(const as_engine_t *e); /* NULL: none */
const as_gen_t *as_engine_gen(const as_engine_t *e);             /* NULL: an encoder */
/* Queues a generation (ids and options are copied; text comes through the
 * tokenizer). AS_EINVAL for an encoder model or an empty prompt. */
int as_engine_generate(as_engine_t *e, const int32_t *ids, int n, const as_gen_opts_t *o, int64_t *id);
/* Queues one text's embedding (encoder models). */
int as_engine_embed(as_engine_t *e, const int32_t *ids, int n, int64_t *id);
/* The request ends at the next step, with no further event. */
void as_engine_cancel(as_engine_t *e, int64_t id);
/* 1 (with why) when a device step failed: every request then ended with
 * the cause and new ones fail at once; the replica must be replaced. */
int as_engine_failed(as_engine_t *e, char *why, size_t len);
/* Counters, read under the engine's lock. */
void as_engine_stats(as_engine_t *e, as_engine_stats_t *out);

/* ==== end serving engine section ==== */

#endif /* AS_LLM_H */

/* generate.c — generation over many requests at once: the step loop the
 * serving engine drives (continuous batching on one KV cache).
 *
 * Each as_gen_step builds one batch: every decoding request feeds its last
 * token, and requests still in their prompt feed a chunk of it (within a
 * per-step token budget), all in ONE as_model_forward call. Requests whose
 * prompt is complete then sample their next token with the ops table's
 * sample op and their own random generator, so a request's tokens do not
 * depend on what else shares its steps. After each token the request checks,
 * in order: a stop token (finish "stop"), a stop string in its text (finish
 * "stop"; the text is cut before it), max_new_tokens or the model's
 * max_position_embeddings (finish "length"). A finished request's sequence
 * leaves the cache at once.
 *
 * Text comes from a tokenizer's incremental detokenizer or a caller's
 * callback. Text that could be the start of a stop string is held back
 * until it is known not to be one, so a stop string never reaches the
 * caller, not even in part. Only undelivered text is kept: a match can never
 * start inside delivered text (it would have been held back).
 */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model_int.h"

#define AS_GEN_DEFAULT_MAX_NEW 256
#define AS_GEN_MIN_PREFILL 32

typedef struct as__req_s {
  int64_t id;
  int32_t *prompt;       /* prompt ids (owned) */
  int n_prompt;          /* prompt length */
  int done_prompt;       /* prompt tokens already in the cache */
  int32_t last;          /* last sampled token: the next decode input */
  int n_gen;             /* tokens generated */
  int max_new;           /* max_new_tokens */
  float temperature;
  int top_k;
  float top_p;
  uint64_t rng;          /* xorshift64* state (ask_rng_*) */
  int32_t *stop_ids;     /* owned */
  int n_stop_ids;
  char **stops;          /* owned NUL-terminated stop strings */
  int n_stops;
  as_detok_t *dt;        /* the tokenizer path, or NULL */
  as_gen_detok_fn fn;    /* the callback path, or NULL */
  void *ud;
  as_buf_t text;         /* text produced and not yet delivered */
} as__req_t;

typedef struct as__ev_s { /* an event under construction: text as an offset */
  as_gen_event_t e;
  size_t off;
} as__ev_t;

struct as_gen_s {
  const as_model_t *m;
  as_kv_t *kv;
  int vocab;
  int max_pos;
  int step_tokens;        /* prefill budget per step */
  int32_t eos[16];        /* default stop ids */
  int n_eos;
  int gc_sample;          /* generation_config.json: do_sample */
  float gc_temperature, gc_top_p;
  int gc_top_k, gc_max_new;
  int64_t next_id;
  as__req_t **reqs;       /* active requests, in arrival order */
  int nreq, capreq;
  as_fwd_seq_t *batch;    /* per step (capreq) */
  as__req_t **who;        /* the request of each batch entry */
  float *logits;          /* (capreq, vocab) */
  double *w;              /* sampling scratch (vocab) */
  int32_t *idx;           /* sampling scratch (vocab) */
  as__ev_t *evs;          /* this step's events (capreq) */
  as_gen_event_t *out;    /* what the caller sees */
  int nev;
  as_buf_t arena;         /* this step's event texts */
  /* Device models: sampling happens on the device; per batch entry: */
  int dev;                /* the model is on a device */
  float *s_temp, *s_topp;
  int32_t *s_topk, *s_ids;
  uint64_t *s_rng;
  /* The pipeline (device models, unless ASK_PIPELINE=0): decode steps
   * queued one ahead of the host (as__forward_dev_begin/_end). The step in
   * flight: */
  int pipe;
  int fly;                /* its entries; 0: none */
  int fly_slot;           /* its slot */
  int64_t *fly_id;        /* its requests, in batch order (capreq) */
  long fed;               /* steps queued fed, ahead of the host (as_gen_pipelined) */
};

static int as__gen_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int as__gen_err(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;
  if (err != NULL && errlen > 0) {
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* Reads generation_config.json of dir (absent: nothing changes). Returns 0,
 * or AS_EINVAL naming the file when it is not JSON. */
static int as__gen_read_config(as_gen_t *g, const char *dir, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/generation_config.json", dir);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return 0;
  as_buf_t b;
  char chunk[4096];
  size_t n;
  as_buf_init(&b);
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (as_buf_append(&b, chunk, n) != 0) {
      fclose(f);
      as_buf_free(&b);
      return as__gen_err(err, errlen, AS_ENOMEM, "out of memory reading %s", path);
    }
  fclose(f);
  cJSON *j = cJSON_ParseWithLength(b.data != NULL ? b.data : "", b.len);
  as_buf_free(&b);
  if (j == NULL || !cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return as__gen_err(err, errlen, AS_EINVAL, "%s: not a JSON object", path);
  }
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "eos_token_id"), *it;
  if (cJSON_IsNumber(e)) {
    g->eos[0] = (int32_t)e->valueint;
    g->n_eos = 1;
  } else if (cJSON_IsArray(e)) {
    g->n_eos = 0;
    cJSON_ArrayForEach(it, e) {
      if (cJSON_IsNumber(it) && g->n_eos < 16)
        g->eos[g->n_eos++] = (int32_t)it->valueint;
    }
  }
  it = cJSON_GetObjectItemCaseSensitive(j, "do_sample");
  g->gc_sample = cJSON_IsTrue(it);
  if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, "temperature")))
    g->gc_temperature = (float)it->valuedouble;
  if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, "top_k")))
    g->gc_top_k = it->valueint;
  if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, "top_p")))
    g->gc_top_p = (float)it->valuedouble;
  if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, "max_new_tokens")) &&
      it->valueint > 0)
    g->gc_max_new = it->valueint;
  cJSON_Delete(j);
  return 0;
}

int as_gen_new(as_gen_t **out, const as_model_t *m, const char *model_dir, size_t kv_max_tokens,
               char *err, size_t errlen) {
  as_kv_opts_t ko = {kv_max_tokens, 0, 0, 0};
  return as_gen_new_ex(out, m, model_dir, &ko, err, errlen);
}

int as_gen_graphs(const as_gen_t *g) { return g->dev ? as__kv_graphs(g->kv) : 0; }
long as_gen_pipelined(const as_gen_t *g) { return g->fed; }
size_t as_gen_kv_capacity(const as_gen_t *g) { return as_kv_capacity(g->kv); }

int as_gen_profile(as_gen_t *g, char *out, size_t len, int reset) {
  int rc = g->dev ? as__kv_profile(g->kv, out, len) : 0;
  if (g->dev && reset)
    as__kv_profile_reset(g->kv);
  return rc;
}

int as_gen_new_ex(as_gen_t **out, const as_model_t *m, const char *model_dir,
                  const as_kv_opts_t *ko, char *err, size_t errlen) {
  const as_llm_config_t *c;
  as_gen_t *g;
  int rc;
  if (out == NULL || m == NULL)
    return as__gen_err(err, errlen, AS_EINVAL, "as_gen_new: no model");
  c = as_model_config(m);
  if (c->arch == AS_ARCH_BERT)
    return as__gen_err(err, errlen, AS_EINVAL,
                       "%s models are encoders: they embed, they do not generate",
                       c->model_type);
  g = calloc(1, sizeof *g);
  if (g == NULL)
    return as__gen_err(err, errlen, AS_ENOMEM, "out of memory");
  g->m = m;
  g->vocab = c->vocab_size;
  g->max_pos = c->max_positions;
  g->step_tokens = 512;
  g->next_id = 1;
  g->gc_temperature = 1.0f;
  g->gc_top_k = 50;
  g->gc_top_p = 1.0f;
  g->gc_max_new = AS_GEN_DEFAULT_MAX_NEW;
  for (int i = 0; i < c->n_eos && i < 8; i++)
    g->eos[g->n_eos++] = c->eos_token_ids[i];
  as_buf_init(&g->arena);
  if (model_dir != NULL && (rc = as__gen_read_config(g, model_dir, err, errlen)) != 0) {
    free(g);
    return rc;
  }
  g->dev = m->dm != NULL;
  const char *pipe = getenv("ASK_PIPELINE");
  g->pipe = g->dev && (pipe == NULL || pipe[0] != '0'); /* on unless ASK_PIPELINE=0 */
  g->w = malloc((size_t)g->vocab * sizeof(double));
  g->idx = malloc((size_t)g->vocab * sizeof(int32_t));
  if (g->w == NULL || g->idx == NULL) {
    as_gen_free(g);
    return as__gen_err(err, errlen, AS_ENOMEM, "out of memory for a generator");
  }
  if ((rc = as_kv_new_ex(&g->kv, m, ko, err, errlen)) != 0) {
    as_gen_free(g);
    return rc;
  }
  if (g->dev) { /* the prefill budget that the step buffers leave */
    int rows, seqs;
    as__kv_step_limits(g->kv, &rows, &seqs);
    g->step_tokens = rows - seqs > AS_GEN_MIN_PREFILL ? rows - seqs : AS_GEN_MIN_PREFILL;
  }
  *out = g;
  return 0;
}

static void as__req_free(as__req_t *r) {
  if (r == NULL)
    return;
  free(r->prompt);
  free(r->stop_ids);
  for (int i = 0; i < r->n_stops; i++)
    free(r->stops[i]);
  free(r->stops);
  as_detok_free(r->dt);
  as_buf_free(&r->text);
  free(r);
}

/* Drops request i from the generator (its sequence, its text state). */
static void as__gen_drop(as_gen_t *g, int i) {
  as__req_t *r = g->reqs[i];
  as_kv_seq_free(g->kv, r->id);
  if (r->fn != NULL && r->dt == NULL) { /* let the callback drop its state */
    as_buf_t tmp;
    as_buf_init(&tmp);
    r->fn(r->ud, r->id, NULL, 0, &tmp);
    as_buf_free(&tmp);
  }
  as__req_free(r);
  memmove(g->reqs + i, g->reqs + i + 1, (size_t)(g->nreq - i - 1) * sizeof *g->reqs);
  g->nreq--;
}

void as_gen_free(as_gen_t *g) {
  if (g == NULL)
    return;
  if (g->fly > 0) { /* the step in flight writes into the cache's buffers: wait for it */
    char e[64];
    as__samp_t sp = {g->s_temp, g->s_topk, g->s_topp, g->s_rng, g->s_ids};
    as__forward_dev_end(g->kv, g->fly_slot, g->fly, &sp, e, sizeof e);
  }
  while (g->nreq > 0)
    as__gen_drop(g, g->nreq - 1);
  as_kv_free(g->kv);
  free(g->reqs);
  free(g->batch);
  free(g->who);
  free(g->logits);
  free(g->s_temp);
  free(g->s_topp);
  free(g->s_topk);
  free(g->s_ids);
  free(g->s_rng);
  free(g->fly_id);
  free(g->w);
  free(g->idx);
  free(g->evs);
  free(g->out);
  as_buf_free(&g->arena);
  free(g);
}

void as_gen_opts_init(as_gen_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->max_new_tokens = AS_GEN_DEFAULT_MAX_NEW;
  o->temperature = 0.0f;
  o->top_k = 0;
  o->top_p = 1.0f;
  o->seed = -1;
  o->n_stop_ids = -1;
}

void as_gen_opts_model(const as_gen_t *g, as_gen_opts_t *o) {
  as_gen_opts_init(o);
  o->max_new_tokens = g->gc_max_new;
  if (g->gc_sample) {
    o->temperature = g->gc_temperature;
    o->top_k = g->gc_top_k;
    o->top_p = g->gc_top_p;
  }
}

size_t as_gen_eos_ids(const as_gen_t *g, const int32_t **ids) {
  *ids = g->eos;
  return (size_t)g->n_eos;
}

void as_gen_set_step_tokens(as_gen_t *g, int n) { g->step_tokens = n > 0 ? n : 1; }

int as_gen_active(const as_gen_t *g) { return g->nreq; }

/* Grows the per-request arrays to hold `need` requests. */
static int as__gen_grow(as_gen_t *g, int need) {
  if (need <= g->capreq)
    return 0;
  int cap = g->capreq ? g->capreq * 2 : 8;
  while (cap < need)
    cap *= 2;
  void *a = realloc(g->reqs, (size_t)cap * sizeof *g->reqs);
  if (a == NULL)
    return AS_ENOMEM;
  g->reqs = a;
  if ((a = realloc(g->batch, (size_t)cap * sizeof *g->batch)) == NULL)
    return AS_ENOMEM;
  g->batch = a;
  if ((a = realloc(g->who, (size_t)cap * sizeof *g->who)) == NULL)
    return AS_ENOMEM;
  g->who = a;
  if ((a = realloc(g->evs, (size_t)cap * sizeof *g->evs)) == NULL)
    return AS_ENOMEM;
  g->evs = a;
  if ((a = realloc(g->out, (size_t)cap * sizeof *g->out)) == NULL)
    return AS_ENOMEM;
  g->out = a;
  if (g->dev) { /* ids and settings only: the logits stay on the device */
    if ((a = realloc(g->s_temp, (size_t)cap * sizeof *g->s_temp)) == NULL)
      return AS_ENOMEM;
    g->s_temp = a;
    if ((a = realloc(g->s_topp, (size_t)cap * sizeof *g->s_topp)) == NULL)
      return AS_ENOMEM;
    g->s_topp = a;
    if ((a = realloc(g->s_topk, (size_t)cap * sizeof *g->s_topk)) == NULL)
      return AS_ENOMEM;
    g->s_topk = a;
    if ((a = realloc(g->s_ids, (size_t)cap * sizeof *g->s_ids)) == NULL)
      return AS_ENOMEM;
    g->s_ids = a;
    if ((a = realloc(g->s_rng, (size_t)cap * sizeof *g->s_rng)) == NULL)
      return AS_ENOMEM;
    g->s_rng = a;
    if ((a = realloc(g->fly_id, (size_t)cap * sizeof *g->fly_id)) == NULL)
      return AS_ENOMEM;
    g->fly_id = a;
  } else {
    if ((a = realloc(g->logits, (size_t)cap * (size_t)g->vocab * sizeof(float))) == NULL)
      return AS_ENOMEM;
    g->logits = a;
  }
  g->capreq = cap;
  return 0;
}

static uint64_t as__clock_seed(void) {
  static _Atomic uint64_t counter;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
         (++counter * 0x9e3779b97f4a7c15ull);
}

int as_gen_add(as_gen_t *g, const int32_t *prompt, int n, const as_gen_opts_t *o_in, int64_t *id,
               char *err, size_t errlen) {
  as_gen_opts_t def;
  const as_gen_opts_t *o = o_in;
  as__req_t *r;
  int rc;
  if (o == NULL) {
    as_gen_opts_init(&def);
    o = &def;
  }
  if (g == NULL || prompt == NULL || n <= 0)
    return as__gen_err(err, errlen, AS_EINVAL, "a request needs at least one prompt token");
  for (int i = 0; i < n; i++)
    if (prompt[i] < 0 || prompt[i] >= g->vocab)
      return as__gen_err(err, errlen, AS_EINVAL,
                         "prompt token %d (position %d) is outside the vocabulary (%d)",
                         (int)prompt[i], i, g->vocab);
  if (n > g->max_pos)
    return as__gen_err(err, errlen, AS_EINVAL,
                       "the prompt has %d tokens: more than max_position_embeddings (%d)", n,
                       g->max_pos);
  if (o->max_new_tokens < 0)
    return as__gen_err(err, errlen, AS_EINVAL, "max_new_tokens must be >= 0, not %d",
                       o->max_new_tokens);
  if (o->n_stop_strs > 0 && o->tok == NULL && o->detok == NULL)
    return as__gen_err(err, errlen, AS_EINVAL,
                       "stop strings need text: give a tokenizer or a detokenizer callback");
  if (o->n_stop_ids > 0 && o->stop_ids == NULL)
    return as__gen_err(err, errlen, AS_EINVAL, "n_stop_ids > 0 without stop_ids");
  if ((rc = as__gen_grow(g, g->nreq + 1)) != 0)
    return as__gen_err(err, errlen, rc, "out of memory");
  if ((r = calloc(1, sizeof *r)) == NULL)
    return as__gen_err(err, errlen, AS_ENOMEM, "out of memory");
  as_buf_init(&r->text);
  r->id = g->next_id;
  r->n_prompt = n;
  r->max_new = o->max_new_tokens;
  r->temperature = o->temperature;
  r->top_k = o->top_k;
  r->top_p = o->top_p;
  r->rng = ask_rng_seed(o->seed >= 0 ? (uint64_t)o->seed : as__clock_seed());
  r->prompt = malloc((size_t)n * sizeof(int32_t));
  const int32_t *sid = o->n_stop_ids < 0 ? g->eos : o->stop_ids;
  r->n_stop_ids = o->n_stop_ids < 0 ? g->n_eos : o->n_stop_ids;
  r->stop_ids = malloc(((size_t)r->n_stop_ids + 1) * sizeof(int32_t));
  r->stops = calloc((size_t)(o->n_stop_strs > 0 ? o->n_stop_strs : 1), sizeof(char *));
  rc = r->prompt == NULL || r->stop_ids == NULL || r->stops == NULL ? AS_ENOMEM : 0;
  if (rc == 0) {
    memcpy(r->prompt, prompt, (size_t)n * sizeof(int32_t));
    if (r->n_stop_ids > 0)
      memcpy(r->stop_ids, sid, (size_t)r->n_stop_ids * sizeof(int32_t));
  }
  for (int i = 0; rc == 0 && i < o->n_stop_strs; i++) {
    const char *s = o->stop_strs[i];
    if (s == NULL || s[0] == '\0') {
      as__req_free(r);
      return as__gen_err(err, errlen, AS_EINVAL, "stop string %d is empty", i);
    }
    if ((r->stops[r->n_stops++] = strdup(s)) == NULL)
      rc = AS_ENOMEM;
  }
  if (rc == 0 && o->tok != NULL)
    rc = as_detok_new(o->tok, 1, &r->dt);
  else if (o->detok != NULL) {
    r->fn = o->detok;
    r->ud = o->detok_ud;
  }
  if (rc == 0)
    rc = as_kv_seq_new(g->kv, r->id);
  if (rc != 0) {
    as__req_free(r);
    return as__gen_err(err, errlen, rc, "cannot add the request: %s", as_strerror(rc));
  }
  g->next_id++;
  g->reqs[g->nreq++] = r;
  *id = r->id;
  return 0;
}

int as_gen_cancel(as_gen_t *g, int64_t id) {
  for (int i = 0; i < g->nreq; i++)
    if (g->reqs[i]->id == id) {
      as__gen_drop(g, i);
      return 0;
    }
  return AS_ENOTFOUND;
}

/* Starts an event for r (the arrays hold one per request); NULL when out
 * of memory. Event texts lie back to back in the arena, each ended by a NUL
 * written when the next event starts (or the step ends). */
static as__ev_t *as__gen_event(as_gen_t *g, as__req_t *r) {
  if (g->nev > 0 && as_buf_append(&g->arena, "", 1) != 0)
    return NULL;
  as__ev_t *ev = &g->evs[g->nev++];
  memset(ev, 0, sizeof *ev);
  ev->e.id = r->id;
  ev->e.token = -1;
  ev->e.stop_str = -1;
  ev->off = g->arena.len;
  return ev;
}

/* Length of the longest suffix of t[0..n) that is a proper prefix of a
 * stop string (text to hold back). */
static size_t as__holdback(const as__req_t *r, const char *t, size_t n) {
  size_t best = 0;
  for (int i = 0; i < r->n_stops; i++) {
    size_t L = strlen(r->stops[i]);
    for (size_t k = (L - 1 < n ? L - 1 : n); k > best; k--)
      if (memcmp(t + n - k, r->stops[i], k) == 0) {
        best = k;
        break;
      }
  }
  return best;
}

/* Moves r's deliverable text into the event (all of it when `flush`), and
 * looks for a stop string. Returns 1 when one matched (the text before it
 * is delivered), 0 otherwise, or a negative error. */
static int as__gen_text(as_gen_t *g, as__req_t *r, as__ev_t *ev, int flush) {
  const char *t = r->text.data;
  size_t n = r->text.len, end = n, cut = (size_t)-1;
  int hit = -1;
  for (int i = 0; i < r->n_stops && n > 0; i++) {
    size_t L = strlen(r->stops[i]);
    for (size_t p = 0; p + L <= n && p < cut; p++)
      if (memcmp(t + p, r->stops[i], L) == 0) {
        cut = p;
        hit = i;
        break;
      }
  }
  if (hit >= 0)
    end = cut;
  else if (!flush)
    end = n - as__holdback(r, t, n);
  if (end > 0 && as_buf_append(&g->arena, t, end) != 0)
    return AS_ENOMEM;
  as_buf_consume(&r->text, end);
  ev->e.stop_str = hit;
  return hit >= 0;
}

/* Feeds token id (or the end, id < 0) to r's detokenizer. */
static int as__gen_detok(as__req_t *r, int32_t id) {
  if (r->dt != NULL)
    return id >= 0 ? as_detok_feed(r->dt, &id, 1, &r->text) : as_detok_finish(r->dt, &r->text);
  if (r->fn != NULL) {
    int rc = id >= 0 ? r->fn(r->ud, r->id, &id, 1, &r->text) : r->fn(r->ud, r->id, NULL, 0, &r->text);
    if (id < 0)
      r->fn = NULL; /* its state is gone: as__gen_drop must not call it again */
    return rc;
  }
  return 0;
}

/* Handles a sampled token of r: the event, the stop rules. Returns 1 when
 * the request finished, 0 when it goes on, or a negative error. */
static int as__gen_token(as_gen_t *g, as__req_t *r, int32_t tok) {
  as__ev_t *ev = as__gen_event(g, r);
  const char *reason = NULL;
  int rc, is_stop = 0;
  if (ev == NULL)
    return AS_ENOMEM;
  ev->e.token = tok;
  r->n_gen++;
  r->last = tok;
  for (int i = 0; i < r->n_stop_ids; i++)
    is_stop |= r->stop_ids[i] == tok;
  if (is_stop) {
    reason = "stop";
  } else {
    if ((rc = as__gen_detok(r, tok)) != 0)
      return rc;
    if ((rc = as__gen_text(g, r, ev, 0)) < 0)
      return rc;
    if (rc == 1)
      reason = "stop";
    else if (r->n_gen >= r->max_new || r->n_prompt + r->n_gen >= g->max_pos)
      reason = "length"; /* the next input would not fit max_position_embeddings */
  }
  if (reason == NULL)
    return 0;
  if (ev->e.stop_str < 0) { /* flush what the detokenizer holds (no stop string yet) */
    if ((rc = as__gen_detok(r, -1)) != 0)
      return rc;
    if ((rc = as__gen_text(g, r, ev, 1)) < 0)
      return rc;
    if (rc == 1)
      reason = "stop";
  }
  ev->e.finished = 1;
  ev->e.finish_reason = reason;
  return 1;
}

/* The end of a step: requests that may generate nothing end without a
 * token, finished requests leave, the events' texts point into the arena. */
static int as__gen_events(as_gen_t *g, const as_gen_event_t **events, int *nevents, char *err,
                          size_t errlen) {
  *events = g->out;
  *nevents = 0;
  /* Requests that may generate nothing end without a token. */
  for (int i = 0; i < g->nreq; i++)
    if (g->reqs[i]->max_new == 0) {
      as__ev_t *ev = as__gen_event(g, g->reqs[i]);
      if (ev == NULL)
        return as__gen_err(err, errlen, AS_ENOMEM, "out of memory");
      ev->e.finished = 1;
      ev->e.finish_reason = "length";
    }
  /* Drop finished requests; point the events' texts into the arena. */
  for (int e = 0; e < g->nev; e++)
    if (g->evs[e].e.finished)
      for (int i = 0; i < g->nreq; i++)
        if (g->reqs[i]->id == g->evs[e].e.id) {
          as__gen_drop(g, i);
          break;
        }
  if (g->nev == 0)
    return 0;
  if (as_buf_append(&g->arena, "", 1) != 0)
    return as__gen_err(err, errlen, AS_ENOMEM, "out of memory");
  for (int e = 0; e < g->nev; e++) {
    size_t end = e + 1 < g->nev ? g->evs[e + 1].off - 1 : g->arena.len - 1;
    g->out[e] = g->evs[e].e;
    g->out[e].text = g->arena.data + g->evs[e].off;
    g->out[e].text_len = end - g->evs[e].off;
  }
  *nevents = g->nev;
  return 0;
}

/* The pipeline (g->pipe): whether request r, decoding in the step in
 * flight, has room for the token after that step's: the step that follows
 * may feed it that token without the host seeing it. */
static int as__gen_room2(const as_gen_t *g, const as__req_t *r) {
  return r->n_gen + 1 < r->max_new && r->n_prompt + r->n_gen + 1 < g->max_pos;
}

/* Fills the device sampling settings of the first nb batch entries (who). */
static void as__gen_settings(as_gen_t *g, int nb) {
  for (int b = 0; b < nb; b++) {
    as__req_t *r = g->who[b];
    int sampled = r->done_prompt + g->batch[b].n >= r->n_prompt;
    g->s_temp[b] = sampled ? r->temperature : 0.0f;
    g->s_topk[b] = r->top_k;
    g->s_topp[b] = r->top_p;
    g->s_rng[b] = r->rng;
  }
}

/* The pipeline's step: when every active request is in the step in flight
 * (in its order) and has room for two more tokens, the next step is queued
 * first, fed on the device with the ids the one in flight samples; then the
 * one in flight is read and its tokens handled. A request that stops on
 * that token leaves; the token the next step made for it is dropped when
 * that step is read. Without a next step, the pipeline drains. */
static int as__gen_step_fly(as_gen_t *g, const as_gen_event_t **events, int *nevents, char *err,
                            size_t errlen) {
  int nb = g->fly, slot = g->fly_slot, follow = g->nreq == nb, rc;
  for (int i = 0; i < nb && follow; i++)
    follow = g->reqs[i]->id == g->fly_id[i] && as__gen_room2(g, g->reqs[i]);
  if (follow) {
    for (int b = 0; b < nb; b++) {
      as__req_t *r = g->reqs[b];
      g->batch[b] = (as_fwd_seq_t){r->id, &r->last, 1}; /* the id: fed on the device */
      g->who[b] = r;
    }
    as__gen_settings(g, nb);
    as__samp_t sp = {g->s_temp, g->s_topk, g->s_topp, g->s_rng, g->s_ids};
    char e2[256];
    /* on failure (no free page, say) the pipeline just drains */
    follow = as__forward_dev_begin(g->m, g->kv, g->batch, nb, &sp, 1, 1 - slot, e2,
                                   sizeof e2) == 0;
    g->fed += follow;
  }
  as__samp_t sp = {g->s_temp, g->s_topk, g->s_topp, g->s_rng, g->s_ids};
  g->fly = 0;
  if ((rc = as__forward_dev_end(g->kv, slot, nb, &sp, err, errlen)) != 0) {
    if (follow) { /* read the other one too, so that nothing is left in flight */
      char e2[64];
      as__forward_dev_end(g->kv, 1 - slot, nb, &sp, e2, sizeof e2);
    }
    return rc;
  }
  if (follow) { /* tracked before the tokens, so that an error below leaves it to be read */
    g->fly = nb; /* fly_id stays: the same requests */
    g->fly_slot = 1 - slot;
  }
  for (int b = 0; b < nb; b++) {
    as__req_t *r = NULL;
    for (int i = 0; i < g->nreq && r == NULL; i++) /* in order, unless some left */
      if (g->reqs[(b + i) % g->nreq]->id == g->fly_id[b])
        r = g->reqs[(b + i) % g->nreq];
    if (r == NULL)
      continue; /* cancelled, or stopped one step before: its token is dropped */
    r->rng = g->s_rng[b];
    if ((rc = as__gen_token(g, r, g->s_ids[b])) < 0)
      return as__gen_err(err, errlen, rc, "request %lld: %s", (long long)r->id,
                         as_strerror(rc));
  }
  return as__gen_events(g, events, nevents, err, errlen);
}

int as_gen_step(as_gen_t *g, const as_gen_event_t **events, int *nevents, char *err,
                size_t errlen) {
  int nb = 0, ndec = 0, budget, rc;
  *events = g->out;
  *nevents = 0;
  g->nev = 0;
  g->arena.len = 0;
  if (g->fly > 0)
    return as__gen_step_fly(g, events, nevents, err, errlen);
  if (g->nreq == 0)
    return 0;

  /* Decodes first, then prefill chunks within the budget (on a device,
   * within its step buffers: max_rows tokens over max_seqs sequences). */
  int max_rows = INT32_MAX, max_seqs = INT32_MAX;
  if (g->dev)
    as__kv_step_limits(g->kv, &max_rows, &max_seqs);
  for (int i = 0; i < g->nreq && nb < max_seqs && nb < max_rows; i++) {
    as__req_t *r = g->reqs[i];
    if (r->max_new > 0 && r->done_prompt == r->n_prompt) {
      g->batch[nb] = (as_fwd_seq_t){r->id, &r->last, 1};
      g->who[nb++] = r;
      ndec++;
    }
  }
  budget = g->step_tokens - ndec;
  if (budget < AS_GEN_MIN_PREFILL)
    budget = AS_GEN_MIN_PREFILL;
  if (budget > max_rows - ndec)
    budget = max_rows - ndec;
  for (int i = 0; i < g->nreq && budget > 0 && nb < max_seqs; i++) {
    as__req_t *r = g->reqs[i];
    int left = r->n_prompt - r->done_prompt;
    if (left == 0 || r->max_new == 0)
      continue;
    int chunk = left < budget ? left : budget;
    g->batch[nb] = (as_fwd_seq_t){r->id, r->prompt + r->done_prompt, chunk};
    g->who[nb++] = r;
    budget -= chunk;
  }
  if (nb > 0 && g->dev) {
    /* Sampling settings per entry; rows whose prompt is not done after this
     * chunk sample greedily (their generator stays as it is) and are ignored. */
    as__gen_settings(g, nb);
    as__samp_t sp = {g->s_temp, g->s_topk, g->s_topp, g->s_rng, g->s_ids};
    int lead = g->pipe && nb == ndec && nb == g->nreq; /* every request decoding */
    for (int b = 0; b < nb && lead; b++)
      lead = as__gen_room2(g, g->who[b]);
    if (lead) { /* the pipeline starts: this step in flight, then as above */
      if ((rc = as__forward_dev_begin(g->m, g->kv, g->batch, nb, &sp, 0, 0, err, errlen)) != 0)
        return rc;
      for (int b = 0; b < nb; b++)
        g->fly_id[b] = g->who[b]->id;
      g->fly = nb;
      g->fly_slot = 0;
      return as__gen_step_fly(g, events, nevents, err, errlen);
    }
    if ((rc = as__forward_dev(g->m, g->kv, g->batch, nb, &sp, NULL, 0, err, errlen)) != 0)
      return rc;
  } else if (nb > 0 &&
             (rc = as_model_forward(g->m, g->kv, g->batch, nb, g->logits, 0, err, errlen)) != 0) {
    return rc; /* nothing changed */
  }

  for (int b = 0; b < nb; b++) {
    as__req_t *r = g->who[b];
    if (r->done_prompt < r->n_prompt) {
      r->done_prompt += g->batch[b].n;
      if (r->done_prompt < r->n_prompt)
        continue; /* more prompt next step */
    }
    int32_t tok;
    if (g->dev) {
      tok = g->s_ids[b];
      r->rng = g->s_rng[b];
    } else {
      tok = g->m->ops->sample(NULL, g->w, g->idx, g->logits + (size_t)b * g->vocab, g->vocab,
                              r->temperature, r->top_k, r->top_p, &r->rng);
    }
    if ((rc = as__gen_token(g, r, tok)) < 0)
      return as__gen_err(err, errlen, rc, "request %lld: %s", (long long)r->id,
                         as_strerror(rc));
  }
  return as__gen_events(g, events, nevents, err, errlen);
}

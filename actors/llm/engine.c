/* engine.c — the serving engine of a replica: continuous batching on a
 * thread of its own. The replica's event loop submits requests (prompt ids
 * and options, or texts to embed) and cancellations; the engine thread moves
 * them into its generator between steps, runs as_gen_step over every active
 * request at once (requests join and leave between steps), and posts the
 * events (new text, finish) back to the loop through a uv_async handle, where
 * the callback wakes the coroutines that wait. The model is read-only; the
 * generator and its KV cache belong to the engine thread alone.
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "llm.h"

typedef struct job_s {
  struct job_s *next;
  int64_t id;
  int kind;                     /* JOB_GENERATE, JOB_EMBED */
  int32_t *ids;
  int n;
  as_gen_opts_t opts;           /* with copied stop ids and strings */
  int32_t *stop_ids;
  char **stop_strs;
} job_t;

enum { JOB_GENERATE = 1, JOB_EMBED = 2 };

typedef struct out_s {          /* events collected on the engine thread */
  as_engine_ev_t *v;
  int n, cap;
  as_buf_t text;                /* texts of v[], back to back */
  size_t *text_off;             /* offset of each event's text in text */
  float *emb;                   /* embeddings, back to back */
  size_t emb_n, emb_cap;
  size_t *emb_off;
} out_t;

typedef struct map_s {
  int64_t eid, gid;
} map_t;

struct as_engine_s {
  as_model_t *model;
  as_tokenizer_t *tok;          /* NULL when the folder has none */
  as_gen_t *gen;                /* NULL for encoder models */
  char *dir;
  pthread_t thread;
  int thread_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job_t *jobs, *jobs_tail;      /* submitted, not yet taken */
  int64_t *cancels;             /* ids to cancel */
  int ncancels, capcancels;
  int stop;
  int64_t next_id;
  out_t ready;                  /* filled by the thread, taken by the loop */
  uv_async_t async;
  as_engine_cb cb;
  void *ud;
  map_t *map;                   /* engine id ↔ generator id (engine thread only) */
  int nmap, capmap;
  double step_delay_s;
  as_engine_stats_t stats;      /* under mu */
  char failed[640];             /* a device step failed: why (under mu); "" while healthy */
};

static void out_reset(out_t *o) {
  free(o->v);
  free(o->text_off);
  free(o->emb);
  free(o->emb_off);
  as_buf_free(&o->text);
  memset(o, 0, sizeof *o);
}

static int out_push(out_t *o, const as_engine_ev_t *ev, const char *text, size_t len, const float *emb,
                    size_t dim) {
  if (o->n == o->cap) {
    int cap = o->cap ? o->cap * 2 : 16;
    as_engine_ev_t *v = realloc(o->v, sizeof *v * (size_t)cap);
    size_t *t = realloc(o->text_off, sizeof *t * (size_t)cap);
    size_t *e = realloc(o->emb_off, sizeof *e * (size_t)cap);
    if (v) o->v = v;
    if (t) o->text_off = t;
    if (e) o->emb_off = e;
    if (!v || !t || !e) return AS_ENOMEM;
    o->cap = cap;
  }
  o->v[o->n] = *ev;
  o->text_off[o->n] = o->text.len;
  if (len) as_buf_append(&o->text, text, len);
  as_buf_append(&o->text, "", 1);
  o->v[o->n].text_len = len;
  o->emb_off[o->n] = o->emb_n;
  if (emb && dim) {
    if (o->emb_n + dim > o->emb_cap) {
      size_t cap = (o->emb_cap + dim) * 2;
      float *f = realloc(o->emb, sizeof *f * cap);
      if (!f) return AS_ENOMEM;
      o->emb = f;
      o->emb_cap = cap;
    }
    memcpy(o->emb + o->emb_n, emb, sizeof *emb * dim);
    o->emb_n += dim;
  }
  o->v[o->n].dim = (int)dim;
  o->n++;
  return 0;
}

/* Pointers into the text and embedding blocks, once they stop moving. */
static void out_fix(out_t *o) {
  for (int i = 0; i < o->n; i++) {
    o->v[i].text = o->text.data + o->text_off[i];
    o->v[i].embedding = o->v[i].dim ? o->emb + o->emb_off[i] : NULL;
  }
}

static void job_free(job_t *j) {
  if (!j) return;
  free(j->ids);
  free(j->stop_ids);
  for (int i = 0; j->stop_strs && i < j->opts.n_stop_strs; i++) free(j->stop_strs[i]);
  free(j->stop_strs);
  free(j);
}

static void emit_error(out_t *o, int64_t id, const char *msg) {
  as_engine_ev_t ev = {0};
  ev.id = id;
  ev.finished = 1;
  ev.finish_reason = "error";
  out_push(o, &ev, msg, strlen(msg), NULL, 0);
}

static void run_job(as_engine_t *e, job_t *j, out_t *o) {
  char err[512];
  if (j->kind == JOB_EMBED) {
    const as_llm_config_t *cfg = as_model_config(e->model);
    float *vec = malloc(sizeof *vec * (size_t)cfg->hidden_size);
    int32_t *mask = malloc(sizeof *mask * (size_t)j->n);
    int32_t *types = calloc((size_t)j->n, sizeof *types);
    int rc = vec && mask && types ? 0 : AS_ENOMEM;
    for (int i = 0; !rc && i < j->n; i++) mask[i] = 1;
    if (!rc) rc = as_model_embed(e->model, j->ids, mask, types, 1, j->n, vec, err, sizeof err);
    if (rc) {
      emit_error(o, j->id, rc == AS_ENOMEM ? "out of memory" : err);
    } else {
      as_engine_ev_t ev = {0};
      ev.id = j->id;
      ev.finished = 1;
      ev.finish_reason = "stop";
      ev.ntokens = j->n;
      out_push(o, &ev, NULL, 0, vec, (size_t)cfg->hidden_size);
    }
    free(vec);
    free(mask);
    free(types);
    return;
  }
  int64_t gid;
  if (e->failed[0] != '\0') { /* the device is gone: nothing new runs (read on this thread) */
    emit_error(o, j->id, e->failed);
    return;
  }
  int rc = as_gen_add(e->gen, j->ids, j->n, &j->opts, &gid, err, sizeof err);
  if (rc) {
    emit_error(o, j->id, err);
    return;
  }
  if (e->nmap == e->capmap) {
    int cap = e->capmap ? e->capmap * 2 : 32;
    map_t *m = realloc(e->map, sizeof *m * (size_t)cap);
    if (!m) {
      as_gen_cancel(e->gen, gid);
      emit_error(o, j->id, "out of memory");
      return;
    }
    e->map = m;
    e->capmap = cap;
  }
  e->map[e->nmap++] = (map_t){j->id, gid};
}

static int map_find(as_engine_t *e, int64_t key, int by_gid) {
  for (int i = 0; i < e->nmap; i++)
    if ((by_gid ? e->map[i].gid : e->map[i].eid) == key) return i;
  return -1;
}

static void map_drop(as_engine_t *e, int i) { e->map[i] = e->map[--e->nmap]; }

static void post(as_engine_t *e, out_t *o) {
  if (o->n == 0) return;
  pthread_mutex_lock(&e->mu);
  out_t *r = &e->ready;
  for (int i = 0; i < o->n; i++) {
    const float *emb = o->v[i].dim ? o->emb + o->emb_off[i] : NULL;
    out_push(r, &o->v[i], o->text.data + o->text_off[i], o->v[i].text_len, emb, (size_t)o->v[i].dim);
  }
  pthread_mutex_unlock(&e->mu);
  out_reset(o);
  uv_async_send(&e->async);
}

static void *engine_main(void *arg) {
  as_engine_t *e = arg;
  out_t o;
  memset(&o, 0, sizeof o);
  char err[512];
  for (;;) {
    pthread_mutex_lock(&e->mu);
    while (!e->stop && !e->jobs && !e->ncancels && (!e->gen || as_gen_active(e->gen) == 0))
      pthread_cond_wait(&e->cv, &e->mu);
    if (e->stop) {
      pthread_mutex_unlock(&e->mu);
      break;
    }
    job_t *jobs = e->jobs;
    e->jobs = e->jobs_tail = NULL;
    int ncancels = e->ncancels;
    int64_t cancels[256];
    if (ncancels > 256) ncancels = 256;
    if (ncancels) {
      memcpy(cancels, e->cancels, sizeof *cancels * (size_t)ncancels);
      memmove(e->cancels, e->cancels + ncancels, sizeof *cancels * (size_t)(e->ncancels - ncancels));
      e->ncancels -= ncancels;
    }
    pthread_mutex_unlock(&e->mu);

    /* Between steps: requests join and leave. */
    int64_t ncancelled = 0, nfinished = 0, ntokens = 0, nsteps = 0;
    for (int i = 0; i < ncancels; i++) {
      int k = map_find(e, cancels[i], 0);
      if (k >= 0) {
        as_gen_cancel(e->gen, e->map[k].gid);
        map_drop(e, k);
        ncancelled++;
      }
    }
    while (jobs) {
      job_t *j = jobs;
      jobs = j->next;
      int cancelled = 0;
      for (int i = 0; i < ncancels; i++) cancelled |= cancels[i] == j->id;
      if (!cancelled) run_job(e, j, &o);
      else ncancelled++;
      job_free(j);
    }
    if (e->gen && as_gen_active(e->gen) > 0) {
      const as_gen_event_t *evs;
      int n = 0;
      int rc = as_gen_step(e->gen, &evs, &n, err, sizeof err);
      if (rc && rc != AS_EFULL && strcmp(as_model_device(e->model), "cpu") != 0) {
        /* A device step failed (a CUDA error, out of device memory): its
         * state is unknown, so every request ends with the cause, and the
         * engine refuses new ones; check_health reports it and the
         * controller replaces the replica. */
        char why[600];
        snprintf(why, sizeof why, "the %s device failed: %s", as_model_device(e->model), err);
        AS_LOGE("engine %s: %s", e->dir, why);
        while (e->nmap > 0) {
          map_t m = e->map[--e->nmap];
          as_gen_cancel(e->gen, m.gid);
          emit_error(&o, m.eid, why);
        }
        pthread_mutex_lock(&e->mu);
        snprintf(e->failed, sizeof e->failed, "%s", why);
        pthread_mutex_unlock(&e->mu);
      } else if (rc) {
        /* The cache is full (or the step failed): the newest request gives way. */
        if (e->nmap > 0) {
          map_t m = e->map[e->nmap - 1];
          as_gen_cancel(e->gen, m.gid);
          e->nmap--;
          emit_error(&o, m.eid, rc == AS_EFULL ? "the KV cache is full; try again later" : err);
        }
      }
      nsteps++;
      for (int i = 0; rc == 0 && i < n; i++) {
        int k = map_find(e, evs[i].id, 1);
        if (k < 0) continue;
        ntokens += evs[i].token >= 0;
        nfinished += evs[i].finished;
        as_engine_ev_t ev = {0};
        ev.id = e->map[k].eid;
        ev.token = evs[i].token;
        ev.finished = evs[i].finished;
        ev.finish_reason = evs[i].finish_reason;
        out_push(&o, &ev, evs[i].text, evs[i].text_len, NULL, 0);
        if (evs[i].finished) map_drop(e, k);
      }
    }
    for (int i = 0; i < o.n; i++)
      if (o.v[i].finished && o.v[i].finish_reason && strcmp(o.v[i].finish_reason, "error") == 0) nfinished++;
    pthread_mutex_lock(&e->mu);
    e->stats.cancelled += ncancelled;
    e->stats.finished += nfinished;
    e->stats.tokens += ntokens;
    e->stats.steps += nsteps;
    e->stats.active = e->nmap;
    pthread_mutex_unlock(&e->mu);
    post(e, &o);
    if (e->step_delay_s > 0 && nsteps) {
      struct timespec ts = {(time_t)e->step_delay_s, (long)((e->step_delay_s - (double)(time_t)e->step_delay_s) * 1e9)};
      nanosleep(&ts, NULL);
    }
  }
  out_reset(&o);
  return NULL;
}

static void async_cb(uv_async_t *a) {
  as_engine_t *e = a->data;
  pthread_mutex_lock(&e->mu);
  out_t r = e->ready;
  memset(&e->ready, 0, sizeof e->ready);
  pthread_mutex_unlock(&e->mu);
  if (r.n) {
    out_fix(&r);
    e->cb(e->ud, r.v, r.n);
  }
  out_reset(&r);
}

int as_engine_new(as_engine_t **out, const char *dir, struct uv_loop_s *loop, as_engine_cb cb, void *ud,
                  const as_engine_opts_t *o, char *err, size_t errlen) {
  as_engine_t *e = calloc(1, sizeof *e);
  if (!e) return AS_ENOMEM;
  e->cb = cb;
  e->ud = ud;
  e->next_id = 1;
  e->dir = strdup(dir);
  e->step_delay_s = o ? o->step_delay_s : 0;
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  as_model_opts_t mo = {o != NULL ? o->device : NULL};
  int rc = as_model_open(&e->model, dir, &mo, err, errlen);
  if (rc == 0) {
    char terr[512];
    if (as_tokenizer_load(dir, &e->tok, terr, sizeof terr)) e->tok = NULL; /* ids only */
  }
  if (rc == 0 && as_model_config(e->model)->arch != AS_ARCH_BERT) {
    int on_cpu = strcmp(as_model_device(e->model), "cpu") == 0;
    as_kv_opts_t ko = {o && o->kv_max_tokens ? o->kv_max_tokens : on_cpu ? 65536 : 0, 0, 0,
                       o ? o->mem_fraction : 0};
    rc = as_gen_new_ex(&e->gen, e->model, dir, &ko, err, errlen);
    if (rc == 0 && o && o->step_tokens > 0) as_gen_set_step_tokens(e->gen, o->step_tokens);
  }
  if (rc == 0) {
    rc = uv_async_init(loop, &e->async, async_cb) ? AS_EIO : 0;
    e->async.data = e;
  }
  if (rc == 0) {
    rc = pthread_create(&e->thread, NULL, engine_main, e) ? AS_EIO : 0;
    if (rc) {
      snprintf(err, errlen, "%s: cannot start the engine thread", dir);
      uv_close((uv_handle_t *)&e->async, NULL);
    }
    e->thread_started = rc == 0;
  }
  if (rc) {
    as_gen_free(e->gen);
    as_tokenizer_free(e->tok);
    as_model_free(e->model);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e->dir);
    free(e);
    return rc;
  }
  *out = e;
  return 0;
}

const as_model_t *as_engine_model(const as_engine_t *e) { return e->model; }

int as_engine_failed(as_engine_t *e, char *why, size_t len) {
  pthread_mutex_lock(&e->mu);
  int failed = e->failed[0] != '\0';
  if (why != NULL && len > 0)
    snprintf(why, len, "%s", e->failed);
  pthread_mutex_unlock(&e->mu);
  return failed;
}
const as_tokenizer_t *as_engine_tokenizer(const as_engine_t *e) { return e->tok; }
const as_gen_t *as_engine_gen(const as_engine_t *e) { return e->gen; }

void as_engine_stats(as_engine_t *e, as_engine_stats_t *out) {
  pthread_mutex_lock(&e->mu);
  *out = e->stats;
  pthread_mutex_unlock(&e->mu);
}

static int submit(as_engine_t *e, job_t *j, int64_t *id) {
  pthread_mutex_lock(&e->mu);
  e->stats.submitted++;
  j->id = e->next_id++;
  *id = j->id;
  if (e->jobs_tail) e->jobs_tail->next = j; else e->jobs = j;
  e->jobs_tail = j;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  return 0;
}

int as_engine_generate(as_engine_t *e, const int32_t *ids, int n, const as_gen_opts_t *o, int64_t *id) {
  if (!e->gen) return AS_EINVAL;
  if (n < 1) return AS_EINVAL;
  job_t *j = calloc(1, sizeof *j);
  if (!j) return AS_ENOMEM;
  j->kind = JOB_GENERATE;
  j->ids = malloc(sizeof *ids * (size_t)n);
  if (!j->ids) {
    job_free(j);
    return AS_ENOMEM;
  }
  memcpy(j->ids, ids, sizeof *ids * (size_t)n);
  j->n = n;
  if (o) j->opts = *o;
  else as_gen_opts_init(&j->opts);
  if (j->opts.n_stop_ids > 0) {
    j->stop_ids = malloc(sizeof *j->stop_ids * (size_t)j->opts.n_stop_ids);
    if (!j->stop_ids) {
      job_free(j);
      return AS_ENOMEM;
    }
    memcpy(j->stop_ids, o->stop_ids, sizeof *j->stop_ids * (size_t)j->opts.n_stop_ids);
    j->opts.stop_ids = j->stop_ids;
  }
  if (j->opts.n_stop_strs > 0) {
    j->stop_strs = calloc((size_t)j->opts.n_stop_strs, sizeof *j->stop_strs);
    if (!j->stop_strs) {
      job_free(j);
      return AS_ENOMEM;
    }
    for (int i = 0; i < j->opts.n_stop_strs; i++) j->stop_strs[i] = strdup(o->stop_strs[i]);
    j->opts.stop_strs = (const char *const *)j->stop_strs;
  }
  j->opts.tok = e->tok;
  j->opts.detok = NULL;
  return submit(e, j, id);
}

int as_engine_embed(as_engine_t *e, const int32_t *ids, int n, int64_t *id) {
  if (as_model_config(e->model)->arch != AS_ARCH_BERT || n < 1) return AS_EINVAL;
  job_t *j = calloc(1, sizeof *j);
  if (!j) return AS_ENOMEM;
  j->kind = JOB_EMBED;
  j->ids = malloc(sizeof *ids * (size_t)n);
  if (!j->ids) {
    job_free(j);
    return AS_ENOMEM;
  }
  memcpy(j->ids, ids, sizeof *ids * (size_t)n);
  j->n = n;
  return submit(e, j, id);
}

void as_engine_cancel(as_engine_t *e, int64_t id) {
  pthread_mutex_lock(&e->mu);
  if (e->ncancels == e->capcancels) {
    int cap = e->capcancels ? e->capcancels * 2 : 16;
    int64_t *c = realloc(e->cancels, sizeof *c * (size_t)cap);
    if (!c) {
      pthread_mutex_unlock(&e->mu);
      return;
    }
    e->cancels = c;
    e->capcancels = cap;
  }
  e->cancels[e->ncancels++] = id;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

static void async_closed(uv_handle_t *h) {
  as_engine_t *e = h->data;
  out_reset(&e->ready);
  free(e->dir);
  free(e);
}

void as_engine_free(as_engine_t *e) {
  if (!e) return;
  pthread_mutex_lock(&e->mu);
  e->stop = 1;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  if (e->thread_started) pthread_join(e->thread, NULL);
  while (e->jobs) {
    job_t *j = e->jobs;
    e->jobs = j->next;
    job_free(j);
  }
  free(e->cancels);
  free(e->map);
  as_gen_free(e->gen);
  as_tokenizer_free(e->tok);
  as_model_free(e->model);
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  uv_close((uv_handle_t *)&e->async, async_closed);
}

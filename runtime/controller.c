/* controller.c — the controller of the head process: turns the desired state
 * (applications → deployments → num_replicas) into running replicas, and
 * keeps it so.
 *   - Each replica holds a slot of the shared table while it exists; it is
 *     placed on the node's resources (or stays PENDING, saying what it needs
 *     and what is free), started as a worker process with its GPU ids in
 *     CUDA_VISIBLE_DEVICES, configured over its control socket, and RUNNING
 *     once its constructor returns.
 *   - A worker that dies is started again at once (then with a growing
 *     back-off while it keeps failing); callers whose requests were on it get
 *     an error answer, never a hang.
 *   - check_health() runs every health_check_period_s; three failures or
 *     timeouts in a row mark the replica UNHEALTHY and replace it.
 *   - A deploy reconciles: deployments that appear start, those that go stop
 *     (draining), num_replicas scales, max_ongoing_requests and user_config
 *     apply to the running replicas, and a new version (code, bind arguments,
 *     resources) replaces replicas one at a time while the others serve.
 * Every change of the running set is broadcast as a ROUTES frame.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "node.h"

enum { R_PENDING, R_STARTING, R_RUNNING, R_UNHEALTHY, R_STOPPING, R_DEAD };
static const char *const state_names[] = {"PENDING", "STARTING", "RUNNING", "UNHEALTHY", "STOPPING", "DEAD"};

#define TICK_MS 250
#define HEALTH_FAILURES 3

typedef struct replica_s {
  as_controller_t *c;
  as_dep_t *dep;           /* the spec it runs (its version may be older than the desired one) */
  uint64_t version;        /* dep->version when it was created */
  int index;               /* #i within the deployment */
  char id[160];            /* "Ranker_1#0" */
  uint32_t slot;
  int state;
  uv_process_t proc;
  int proc_open;           /* proc handle not yet closed */
  int pid;
  uv_pipe_t ctrl;
  int ctrl_open;           /* ctrl handle not yet closed */
  as_framer_t fr;
  as_alloc_t alloc;
  int placed;
  char sock[512];
  char message[512];       /* why PENDING, or the last failure */
  int failures;            /* consecutive early deaths */
  uint64_t started_ms;
  uv_timer_t restart;
  int restart_open;
  int retiring;            /* stopping for good: never restarted, removed once gone */
  uint64_t user_config_hash; /* of the user_config it was given */
  int64_t health_seq;      /* last check sent */
  uint64_t health_sent_ms; /* when it was sent (0: none outstanding) */
  uint64_t health_next_ms; /* when to send the next */
  int health_failures;     /* in a row */
} replica_t;

struct as_controller_s {
  uv_loop_t *loop;
  as_table_t *table;
  as_node_res_t *node;
  char *rundir;
  char *exe;
  as_app_t **apps;         /* desired */
  int napps;
  as_app_t **retired;      /* replaced apps, kept while replicas may point into them */
  int nretired;
  replica_t **reps;
  int nreps;
  uint32_t *free_slots;    /* slots given back by removed replicas */
  uint32_t nfree, next_slot;
  as_routes_cb routes_cb;
  void *routes_ud;
  int shutting_down;
  void (*down_cb)(void *);
  void *down_ud;
  uv_timer_t kill_timer;
  uv_timer_t tick;         /* PENDING retries, health checks, rolling updates */
  double graceful_limit_s; /* bounds every deployment's graceful timeout */
};

static void broadcast_routes(as_controller_t *c);
static void start_replica(replica_t *r);
static void check_down(as_controller_t *c);
static void schedule_restart(replica_t *r);
static void reconcile(as_controller_t *c);
static void maybe_remove(replica_t *r);

static uint64_t hash_bytes(const as_buf_t *b) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < b->len; i++) h = (h ^ (unsigned char)b->data[i]) * 1099511628211ull;
  return h;
}

/* ---- control socket ----------------------------------------------------------- */

static void ctrl_send(replica_t *r, const as_buf_t *b) {
  if (!r->ctrl_open || uv_is_closing((uv_handle_t *)&r->ctrl)) return;
  as_write_copy((uv_stream_t *)&r->ctrl, b->data, b->len);
}

/* Sends a frame of the given type whose payload is raw (may be empty). */
static void ctrl_frame(replica_t *r, uint8_t type, const void *payload, size_t n) {
  as_buf_t b;
  size_t mark;
  as_buf_init(&b);
  as_frame_begin(&b, type, &mark);
  as_buf_append(&b, payload, n);
  as_frame_end(&b, mark);
  ctrl_send(r, &b);
  as_buf_free(&b);
}

static void ctrl_closed(uv_handle_t *h) {
  replica_t *r = h->data;
  as_controller_t *c = r->c;
  as_framer_free(&r->fr);
  r->ctrl_open = 0;
  maybe_remove(r); /* may free r */
  check_down(c);
}

static void ctrl_close(replica_t *r) {
  if (r->ctrl_open && !uv_is_closing((uv_handle_t *)&r->ctrl)) uv_close((uv_handle_t *)&r->ctrl, ctrl_closed);
}

static void on_ready(replica_t *r, const char *p, size_t n) {
  as_dec_t d;
  as_val_t ok, err;
  as_dec_init(&d, p, n);
  if (as_dec_next(&d, &ok) || as_dec_next(&d, &err)) return;
  if (ok.type == AS_T_TRUE) {
    if (r->state != R_STARTING) return;
    r->state = R_RUNNING;
    r->message[0] = 0;
    r->health_failures = 0;
    r->health_sent_ms = 0;
    r->health_next_ms = uv_now(r->c->loop) + (uint64_t)(r->dep->health_period_s * 1000.0);
    atomic_store(&r->c->table->slots[r->slot].state, AS_SLOT_RUNNING);
    AS_LOGI("replica %s is RUNNING (pid %d)", r->id, r->pid);
    broadcast_routes(r->c);
    reconcile(r->c);
  } else {
    snprintf(r->message, sizeof r->message, "constructor failed: %.*s",
             err.type == AS_T_STR ? (int)(err.len > 400 ? 400 : err.len) : 0, err.type == AS_T_STR ? err.s : "");
    AS_LOGE("replica %s: %s", r->id, r->message);
    if (r->pid > 0) kill(r->pid, SIGKILL);
  }
}

static void on_report(replica_t *r, const char *p, size_t n) {
  as_dec_t d;
  as_val_t kind, seq, ok, err;
  as_dec_init(&d, p, n);
  if (as_dec_next(&d, &kind) || as_dec_next(&d, &seq) || as_dec_next(&d, &ok) || as_dec_next(&d, &err)) return;
  const char *msg = err.type == AS_T_STR ? err.s : "";
  int mlen = err.type == AS_T_STR ? (int)(err.len > 300 ? 300 : err.len) : 0;
  if (kind.i == 1) { /* health */
    if (seq.i != r->health_seq || r->health_sent_ms == 0) return;
    r->health_sent_ms = 0;
    r->health_next_ms = uv_now(r->c->loop) + (uint64_t)(r->dep->health_period_s * 1000.0);
    if (ok.type == AS_T_TRUE) {
      if (r->health_failures) AS_LOGI("replica %s is healthy again", r->id);
      r->health_failures = 0;
      if (r->state == R_RUNNING) r->message[0] = 0;
    } else {
      r->health_failures++;
      snprintf(r->message, sizeof r->message, "health check failed (%d in a row): %.*s", r->health_failures, mlen, msg);
      AS_LOGW("replica %s: %s", r->id, r->message);
    }
  } else if (ok.type != AS_T_TRUE) {
    snprintf(r->message, sizeof r->message, "reconfigure failed: %.*s", mlen, msg);
  }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void ctrl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  replica_t *r = s->data;
  if (nread < 0) {
    free(buf->base);
    ctrl_close(r);
    return;
  }
  int rc = nread > 0 ? as_framer_feed(&r->fr, buf->base, (size_t)nread) : 0;
  free(buf->base);
  uint8_t type;
  const char *p;
  size_t n;
  while (rc == 0 && (rc = as_framer_next(&r->fr, &type, &p, &n)) == 1) {
    rc = 0;
    if (type == AS_FR_READY) on_ready(r, p, n);
    else if (type == AS_FR_REPORT) on_report(r, p, n);
  }
}

/* ---- routes --------------------------------------------------------------------- */

static int serves(const replica_t *r, const as_dep_t *d) {
  return r->state == R_RUNNING && strcmp(r->dep->key, d->key) == 0;
}

static void routes_payload(as_controller_t *c, as_buf_t *b) {
  int ndeps = 0;
  for (int a = 0; a < c->napps; a++) ndeps += c->apps[a]->ndeps;
  as_enc_table(b, 0, (uint32_t)ndeps);
  for (int a = 0; a < c->napps; a++) {
    for (int i = 0; i < c->apps[a]->ndeps; i++) {
      as_dep_t *d = &c->apps[a]->deps[i];
      as_enc_cstr(b, d->key);
      as_enc_table(b, 0, 2);
      as_enc_cstr(b, "max_queued");
      as_enc_int(b, d->max_queued);
      as_enc_cstr(b, "replicas");
      uint32_t running = 0;
      for (int k = 0; k < c->nreps; k++) running += serves(c->reps[k], d);
      as_enc_table(b, running, 0);
      for (int k = 0; k < c->nreps; k++) {
        replica_t *r = c->reps[k];
        if (!serves(r, d)) continue;
        as_enc_table(b, 0, 3);
        as_enc_cstr(b, "slot");
        as_enc_int(b, r->slot);
        as_enc_cstr(b, "gen");
        as_enc_int(b, atomic_load(&c->table->slots[r->slot].gen));
        as_enc_cstr(b, "path");
        as_enc_cstr(b, r->sock);
      }
    }
  }
}

static void broadcast_routes(as_controller_t *c) {
  as_buf_t b;
  size_t mark;
  as_buf_init(&b);
  as_frame_begin(&b, AS_FR_ROUTES, &mark);
  routes_payload(c, &b);
  as_frame_end(&b, mark);
  for (int k = 0; k < c->nreps; k++)
    if (c->reps[k]->state == R_STARTING || c->reps[k]->state == R_RUNNING || c->reps[k]->state == R_STOPPING)
      ctrl_send(c->reps[k], &b);
  if (c->routes_cb) c->routes_cb(c->routes_ud, b.data + AS_FRAME_HDR, b.len - AS_FRAME_HDR);
  as_buf_free(&b);
}

/* ---- processes -------------------------------------------------------------------- */

static void restart_fired(uv_timer_t *t) { start_replica(t->data); }

static void proc_closed(uv_handle_t *h) {
  replica_t *r = h->data;
  as_controller_t *c = r->c;
  r->proc_open = 0;
  maybe_remove(r); /* may free r */
  check_down(c);
}

static void release_placement(replica_t *r) {
  if (r->placed) {
    as_res_release(r->c->node, &r->dep->req, &r->alloc);
    r->placed = 0;
  }
}

static void proc_exit(uv_process_t *p, int64_t status, int sig) {
  replica_t *r = p->data;
  as_controller_t *c = r->c;
  as_slot_t *s = &c->table->slots[r->slot];
  int was_serving = r->state == R_RUNNING || r->state == R_UNHEALTHY;
  int was_running = r->state == R_RUNNING;
  if (!c->shutting_down && !r->retiring) {
    if (sig) AS_LOGW("replica %s (pid %d) was killed by signal %d", r->id, r->pid, sig);
    else AS_LOGW("replica %s (pid %d) exited with status %lld", r->id, r->pid, (long long)status);
  }
  atomic_store(&s->state, AS_SLOT_DEAD);
  atomic_fetch_add(&s->gen, 1);
  atomic_store(&s->inflight, 0);
  atomic_store(&s->pid, 0);
  r->pid = 0;
  r->state = R_DEAD;
  r->health_sent_ms = 0;
  uv_close((uv_handle_t *)p, proc_closed);
  ctrl_close(r);
  release_placement(r);
  if (was_serving) broadcast_routes(c);
  if (c->shutting_down || r->retiring) {
    reconcile(c);
    return;
  }
  uint64_t ran = uv_now(c->loop) - r->started_ms;
  if (was_running && ran > 10000) r->failures = 0;
  else r->failures++;
  schedule_restart(r);
}

/* First restart at once; a replica that keeps dying backs off up to 10 s.
 * The restart waits for the old process's handles to close. */
static void schedule_restart(replica_t *r) {
  uint64_t delay = 1;
  if (r->failures > 1) {
    delay = 100u << (r->failures > 8 ? 7 : r->failures - 1);
    if (delay > 10000) delay = 10000;
  }
  if (!r->restart_open) {
    uv_timer_init(r->c->loop, &r->restart);
    r->restart.data = r;
    r->restart_open = 1;
  }
  uv_timer_start(&r->restart, restart_fired, delay, 0);
}

static void send_config(replica_t *r) {
  as_dep_t *d = r->dep;
  char tpath[600];
  snprintf(tpath, sizeof tpath, "%s/replicas.table", r->c->rundir);
  as_buf_t b;
  size_t mark;
  as_buf_init(&b);
  as_frame_begin(&b, AS_FR_CONFIG, &mark);
  as_enc_table(&b, 0, d->user_config.len ? 12 : 11);
  as_enc_cstr(&b, "route_prefix"); as_enc_cstr(&b, d->route_prefix);
  as_enc_cstr(&b, "app"); as_enc_cstr(&b, d->app);
  as_enc_cstr(&b, "deployment"); as_enc_cstr(&b, d->name);
  as_enc_cstr(&b, "class"); as_enc_cstr(&b, d->class_name);
  as_enc_cstr(&b, "replica_id"); as_enc_cstr(&b, r->id);
  as_enc_cstr(&b, "file"); as_enc_cstr(&b, d->file);
  as_enc_cstr(&b, "socket"); as_enc_cstr(&b, r->sock);
  as_enc_cstr(&b, "table"); as_enc_cstr(&b, tpath);
  as_enc_cstr(&b, "slot"); as_enc_int(&b, r->slot);
  as_enc_cstr(&b, "graceful_shutdown_timeout_s");
  as_enc_float(&b, d->graceful_s < r->c->graceful_limit_s ? d->graceful_s : r->c->graceful_limit_s);
  as_enc_cstr(&b, "args"); as_buf_append(&b, d->args.data, d->args.len);
  if (d->user_config.len) {
    as_enc_cstr(&b, "user_config");
    as_buf_append(&b, d->user_config.data, d->user_config.len);
  }
  as_frame_end(&b, mark);
  ctrl_send(r, &b);
  as_buf_free(&b);
  r->user_config_hash = hash_bytes(&d->user_config);
  /* Then the routes, so its handles work from the constructor on. */
  as_buf_init(&b);
  as_frame_begin(&b, AS_FR_ROUTES, &mark);
  routes_payload(r->c, &b);
  as_frame_end(&b, mark);
  ctrl_send(r, &b);
  as_buf_free(&b);
}

extern char **environ;

static int spawn(replica_t *r) {
  as_controller_t *c = r->c;
  as_buf_t gpus;
  as_buf_init(&gpus);
  as_res_format_gpus(&gpus, &r->alloc);
  int nenv = 0;
  while (environ[nenv]) nenv++;
  char **env = calloc((size_t)nenv + 4, sizeof *env);
  char cuda[300], rid[200], share[64];
  snprintf(cuda, sizeof cuda, "CUDA_VISIBLE_DEVICES=%s", gpus.data ? gpus.data : "");
  snprintf(rid, sizeof rid, "ACTORSERVE_REPLICA_ID=%s", r->id);
  /* The part of each granted device this replica holds (0.5 for num_gpus =
   * 0.5): actorserve.llm sizes its KV cache to it. */
  snprintf(share, sizeof share, "ACTORSERVE_GPU_SHARE=%.4f",
           r->alloc.ngpu > 0 ? (double)r->alloc.gpu_share / (double)AS_RES_UNIT : 0.0);
  as_buf_free(&gpus);
  if (!env) return AS_ENOMEM;
  int k = 0;
  for (int i = 0; i < nenv; i++)
    if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) && strncmp(environ[i], "ACTORSERVE_REPLICA_ID=", 22) &&
        strncmp(environ[i], "ACTORSERVE_GPU_SHARE=", 21))
      env[k++] = environ[i];
  env[k++] = cuda;
  env[k++] = rid;
  env[k++] = share;
  env[k] = NULL;

  uv_pipe_init(c->loop, &r->ctrl, 0);
  r->ctrl.data = r;
  r->ctrl_open = 1;
  as_framer_init(&r->fr, 0);
  uv_stdio_container_t stdio[4];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&r->ctrl;
  char *args[] = {c->exe, "__worker", NULL};
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.file = c->exe;
  o.args = args;
  o.env = env;
  o.exit_cb = proc_exit;
  o.stdio_count = 4;
  o.stdio = stdio;
  r->proc.data = r;
  r->proc_open = 1;
  int rc = uv_spawn(c->loop, &r->proc, &o);
  free(env);
  if (rc < 0) {
    AS_LOGE("cannot start a worker for %s: %s", r->id, uv_strerror(rc));
    uv_close((uv_handle_t *)&r->proc, proc_closed);
    ctrl_close(r);
    return AS_EIO;
  }
  r->pid = r->proc.pid;
  uv_read_start((uv_stream_t *)&r->ctrl, alloc_cb, ctrl_read);
  return 0;
}

static void start_replica(replica_t *r) {
  as_controller_t *c = r->c;
  if (c->shutting_down || r->retiring || r->state == R_STARTING || r->state == R_RUNNING) return;
  if (r->proc_open || r->ctrl_open) {
    schedule_restart(r); /* the last process's handles are still closing */
    return;
  }
  if (!r->placed) {
    int rc = as_res_place(c->node, &r->dep->req, &r->alloc);
    if (rc) {
      as_buf_t need, free_;
      as_buf_init(&need);
      as_buf_init(&free_);
      as_res_format_req(&need, &r->dep->req);
      as_res_format_free(&free_, c->node);
      char msg[sizeof r->message];
      snprintf(msg, sizeof msg, "%s: needs %s, free %s",
               rc == AS_ENORES ? "not enough resources" : "invalid resource request",
               need.data ? need.data : "{}", free_.data ? free_.data : "{}");
      if (r->state != R_PENDING || strcmp(msg, r->message) != 0) AS_LOGW("replica %s is PENDING: %s", r->id, msg);
      snprintf(r->message, sizeof r->message, "%s", msg);
      r->state = R_PENDING;
      as_buf_free(&need);
      as_buf_free(&free_);
      return;
    }
    r->placed = 1;
  }
  as_slot_t *s = &c->table->slots[r->slot];
  atomic_store(&s->inflight, 0);
  atomic_store(&s->max_ongoing, r->dep->max_ongoing);
  atomic_store(&s->state, AS_SLOT_STARTING);
  r->state = R_STARTING;
  r->started_ms = uv_now(c->loop);
  if (spawn(r)) {
    r->state = R_DEAD;
    r->failures++;
    release_placement(r);
    snprintf(r->message, sizeof r->message, "the worker process could not be started; retrying");
    schedule_restart(r);
    return;
  }
  atomic_store(&s->pid, r->pid);
  send_config(r);
}

/* ---- replicas coming and going ------------------------------------------------------ */

static replica_t *add_replica(as_controller_t *c, as_dep_t *d) {
  uint32_t slot;
  if (c->nfree) slot = c->free_slots[--c->nfree];
  else if (c->next_slot < c->table->nslots) slot = c->next_slot++;
  else {
    AS_LOGE("no free replica slot for deployment %s", d->key);
    return NULL;
  }
  replica_t **reps = realloc(c->reps, sizeof *reps * (size_t)(c->nreps + 1));
  replica_t *r = calloc(1, sizeof *r);
  if (!reps || !r) {
    free(r);
    if (reps) c->reps = reps;
    c->free_slots[c->nfree++] = slot;
    return NULL;
  }
  c->reps = reps;
  /* the lowest index its deployment does not use yet */
  int index = 0;
  for (int again = 1; again;) {
    again = 0;
    for (int k = 0; k < c->nreps; k++)
      if (strcmp(c->reps[k]->dep->key, d->key) == 0 && c->reps[k]->index == index) index++, again = 1;
  }
  r->c = c;
  r->dep = d;
  r->version = d->version;
  r->index = index;
  r->slot = slot;
  r->state = R_DEAD;
  snprintf(r->id, sizeof r->id, "%s#%d", d->name, index);
  snprintf(r->sock, sizeof r->sock, "%s/r%u.sock", c->rundir, slot);
  c->reps[c->nreps++] = r;
  start_replica(r);
  return r;
}

static void free_replica(uv_handle_t *h) { free(h->data); }

/* Drops a retired replica whose process and control socket are gone. */
static void maybe_remove(replica_t *r) {
  as_controller_t *c = r->c;
  if (!r->retiring || r->proc_open || r->ctrl_open || r->state == R_STOPPING) return;
  for (int k = 0; k < c->nreps; k++) {
    if (c->reps[k] != r) continue;
    c->reps[k] = c->reps[--c->nreps];
    break;
  }
  as_slot_t *s = &c->table->slots[r->slot];
  atomic_store(&s->state, AS_SLOT_FREE);
  atomic_store(&s->inflight, 0);
  c->free_slots[c->nfree++] = r->slot;
  release_placement(r);
  if (r->restart_open) {
    uv_timer_stop(&r->restart);
    r->restart.data = r;
    uv_close((uv_handle_t *)&r->restart, free_replica);
  } else {
    free(r);
  }
}

/* Stops a replica for good: it drains its requests, then exits. */
static void stop_replica(replica_t *r) {
  if (r->retiring) return;
  r->retiring = 1;
  if (r->restart_open) uv_timer_stop(&r->restart);
  if (r->proc_open && r->pid > 0) {
    int was_running = r->state == R_RUNNING;
    r->state = R_STOPPING;
    atomic_store(&r->c->table->slots[r->slot].state, AS_SLOT_DRAINING);
    AS_LOGI("stopping replica %s (pid %d)", r->id, r->pid);
    if (was_running) broadcast_routes(r->c);
    ctrl_frame(r, AS_FR_SHUTDOWN, NULL, 0);
  } else {
    r->state = R_DEAD;
    maybe_remove(r);
  }
}

static as_dep_t *desired_dep(as_controller_t *c, const char *key) {
  for (int a = 0; a < c->napps; a++)
    for (int i = 0; i < c->apps[a]->ndeps; i++)
      if (strcmp(c->apps[a]->deps[i].key, key) == 0) return &c->apps[a]->deps[i];
  return NULL;
}

/* Moves each deployment toward its desired spec (see the file comment). */
static void reconcile(as_controller_t *c) {
  if (c->shutting_down) return;
  int routes_changed = 0;
  /* Replicas of deployments that are no longer desired stop. */
  for (int k = c->nreps - 1; k >= 0; k--) {
    if (k >= c->nreps) continue;
    replica_t *r = c->reps[k];
    if (!r->retiring && !desired_dep(c, r->dep->key)) stop_replica(r);
  }
  for (int a = 0; a < c->napps; a++) {
    for (int i = 0; i < c->apps[a]->ndeps; i++) {
      as_dep_t *d = &c->apps[a]->deps[i];
      int same = 0, same_running = 0, stale = 0, stale_running = 0;
      for (int k = 0; k < c->nreps; k++) {
        replica_t *r = c->reps[k];
        if (r->retiring || strcmp(r->dep->key, d->key) != 0) continue;
        if (r->version == d->version) {
          if (r->dep != d) {
            /* same code: adopt the new options in place */
            if (r->dep->max_queued != d->max_queued) routes_changed = 1;
            r->dep = d;
          }
          if (atomic_load(&c->table->slots[r->slot].max_ongoing) != d->max_ongoing)
            atomic_store(&c->table->slots[r->slot].max_ongoing, d->max_ongoing);
          if (r->state == R_RUNNING && r->user_config_hash != hash_bytes(&d->user_config) && d->user_config.len) {
            ctrl_frame(r, AS_FR_RECONFIGURE, d->user_config.data, d->user_config.len);
            r->user_config_hash = hash_bytes(&d->user_config);
          }
          same++;
          same_running += r->state == R_RUNNING;
        } else {
          stale++;
          stale_running += r->state == R_RUNNING;
        }
      }
      if (stale == 0) {
        for (; same < d->num_replicas; same++) add_replica(c, d);
        /* scale down: the highest indexes, not-yet-running ones first */
        while (same > d->num_replicas) {
          replica_t *victim = NULL;
          for (int k = 0; k < c->nreps; k++) {
            replica_t *r = c->reps[k];
            if (r->retiring || r->dep != d) continue;
            if (!victim || (victim->state == R_RUNNING && r->state != R_RUNNING) ||
                ((victim->state == R_RUNNING) == (r->state == R_RUNNING) && r->index > victim->index))
              victim = r;
          }
          if (!victim) break;
          stop_replica(victim);
          same--;
        }
        continue;
      }
      /* Rolling update: one new replica at a time. An old one stops when it
       * does not serve anyway, when a new one runs in its place, or when a
       * new one waits (PENDING) for the resources the old ones hold; callers
       * queue meanwhile, so requests wait rather than fail. */
      if (same == same_running && same < d->num_replicas) add_replica(c, d);
      replica_t *victim = NULL;
      int same_pending = 0;
      for (int k = 0; k < c->nreps; k++) {
        replica_t *r = c->reps[k];
        if (r->retiring || strcmp(r->dep->key, d->key)) continue;
        if (r->version == d->version) {
          same_pending += r->state == R_PENDING;
          continue;
        }
        if (!victim || r->state != R_RUNNING) victim = r;
      }
      if (victim && (victim->state != R_RUNNING || same_running + stale_running > d->num_replicas || same_pending))
        stop_replica(victim);
    }
  }
  if (routes_changed) broadcast_routes(c);
}

static void health_tick(as_controller_t *c, uint64_t now) {
  for (int k = 0; k < c->nreps; k++) {
    replica_t *r = c->reps[k];
    if (r->state != R_RUNNING) continue;
    if (r->health_sent_ms && now - r->health_sent_ms >= (uint64_t)(r->dep->health_timeout_s * 1000.0)) {
      r->health_sent_ms = 0;
      r->health_failures++;
      r->health_next_ms = now;
      snprintf(r->message, sizeof r->message, "health check timed out after %.3g s (%d in a row)",
               r->dep->health_timeout_s, r->health_failures);
      AS_LOGW("replica %s: %s", r->id, r->message);
    }
    if (r->health_failures >= HEALTH_FAILURES) {
      AS_LOGW("replica %s is UNHEALTHY after %d failed health checks; replacing it", r->id, r->health_failures);
      r->state = R_UNHEALTHY;
      atomic_store(&c->table->slots[r->slot].state, AS_SLOT_DRAINING);
      broadcast_routes(c);
      if (r->pid > 0) kill(r->pid, SIGKILL);
      continue;
    }
    if (!r->health_sent_ms && now >= r->health_next_ms) {
      as_buf_t b;
      as_buf_init(&b);
      as_enc_int(&b, ++r->health_seq);
      ctrl_frame(r, AS_FR_HEALTH, b.data, b.len);
      as_buf_free(&b);
      r->health_sent_ms = now ? now : 1;
    }
  }
}

/* Autoscaling: the requests ongoing on a deployment's running replicas (the
 * shared in-flight counts) over target_ongoing_requests give the replicas it
 * needs, between min and max; num_replicas moves there once the load has
 * asked for it for upscale_delay_s (more) or downscale_delay_s (fewer) without
 * a break. Ray averages over a look-back window; this samples every tick. */
static void autoscale_tick(as_controller_t *c, uint64_t now) {
  for (int a = 0; a < c->napps; a++) {
    for (int i = 0; i < c->apps[a]->ndeps; i++) {
      as_dep_t *d = &c->apps[a]->deps[i];
      if (!d->autoscale) continue;
      int64_t ongoing = 0;
      int running = 0;
      for (int k = 0; k < c->nreps; k++) {
        replica_t *r = c->reps[k];
        if (r->state != R_RUNNING || strcmp(r->dep->key, d->key)) continue;
        ongoing += atomic_load(&c->table->slots[r->slot].inflight);
        running++;
      }
      if (running == 0) continue;
      int want = (int)((double)ongoing / d->target_ongoing + 0.999999);
      if (want < d->min_replicas) want = d->min_replicas;
      if (want > d->max_replicas) want = d->max_replicas;
      if (want > d->num_replicas) {
        d->down_since_ms = 0;
        if (!d->up_since_ms) d->up_since_ms = now;
        if (now - d->up_since_ms >= (uint64_t)(d->upscale_delay_s * 1000.0)) {
          AS_LOGI("autoscaling %s: %d -> %d replicas (%lld ongoing requests, target %.3g per replica)", d->key,
                  d->num_replicas, want, (long long)ongoing, d->target_ongoing);
          d->num_replicas = want;
          d->up_since_ms = 0;
        }
      } else if (want < d->num_replicas) {
        d->up_since_ms = 0;
        if (!d->down_since_ms) d->down_since_ms = now;
        if (now - d->down_since_ms >= (uint64_t)(d->downscale_delay_s * 1000.0)) {
          AS_LOGI("autoscaling %s: %d -> %d replicas (%lld ongoing requests, target %.3g per replica)", d->key,
                  d->num_replicas, want, (long long)ongoing, d->target_ongoing);
          d->num_replicas = want;
          d->down_since_ms = 0;
        }
      } else {
        d->up_since_ms = d->down_since_ms = 0;
      }
    }
  }
}

/* PENDING replicas try again (resources may have been freed), health
 * checks go out, autoscaling decides, and rolling updates advance. */
static void tick(uv_timer_t *t) {
  as_controller_t *c = t->data;
  for (int k = 0; k < c->nreps; k++)
    if (c->reps[k]->state == R_PENDING) start_replica(c->reps[k]);
  uint64_t now = uv_now(c->loop);
  health_tick(c, now);
  autoscale_tick(c, now);
  reconcile(c);
}

/* ---- public API ------------------------------------------------------------------ */

as_controller_t *as_controller_new(uv_loop_t *loop, as_table_t *table, as_node_res_t *node,
                                   const char *rundir, const char *exe, double graceful_limit_s) {
  as_controller_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->free_slots = calloc(table->nslots, sizeof *c->free_slots);
  if (!c->free_slots) {
    free(c);
    return NULL;
  }
  c->loop = loop;
  c->table = table;
  c->node = node;
  c->rundir = strdup(rundir);
  c->exe = strdup(exe);
  c->graceful_limit_s = graceful_limit_s;
  uv_timer_init(loop, &c->kill_timer);
  c->kill_timer.data = c;
  uv_timer_init(loop, &c->tick);
  c->tick.data = c;
  uv_timer_start(&c->tick, tick, TICK_MS, TICK_MS);
  return c;
}

int as_controller_deploy(as_controller_t *c, as_app_t **apps, int n) {
  as_app_t **keep = realloc(c->retired, sizeof *keep * (size_t)(c->nretired + c->napps + 1));
  as_app_t **now = malloc(sizeof *now * (size_t)(n ? n : 1));
  if (!keep || !now) {
    if (keep) c->retired = keep;
    free(now);
    return AS_ENOMEM;
  }
  c->retired = keep;
  /* An autoscaled deployment keeps the size the load gave it across a redeploy. */
  for (int a = 0; a < n; a++)
    for (int i = 0; i < apps[a]->ndeps; i++) {
      as_dep_t *nd = &apps[a]->deps[i];
      as_dep_t *od = nd->autoscale ? desired_dep(c, nd->key) : NULL;
      if (!od || !od->autoscale) continue;
      int k = od->num_replicas;
      nd->num_replicas = k < nd->min_replicas ? nd->min_replicas : k > nd->max_replicas ? nd->max_replicas : k;
    }
  for (int a = 0; a < c->napps; a++) c->retired[c->nretired++] = c->apps[a];
  free(c->apps);
  if (n) memcpy(now, apps, sizeof *now * (size_t)n);
  c->apps = now;
  c->napps = n;
  reconcile(c);
  broadcast_routes(c);
  return 0;
}

int as_controller_apps(as_controller_t *c, as_app_t ***apps) {
  *apps = c->apps;
  return c->napps;
}

void as_controller_on_routes(as_controller_t *c, as_routes_cb cb, void *ud) {
  c->routes_cb = cb;
  c->routes_ud = ud;
  broadcast_routes(c);
}

static cJSON *res_json(int64_t cpu, double gpu, const as_node_res_t *n, int used) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "CPU", (double)cpu / AS_RES_UNIT);
  cJSON_AddNumberToObject(o, "GPU", gpu);
  if (n->mem_total) cJSON_AddNumberToObject(o, "memory", (double)(used ? n->mem_total - n->mem_used : n->mem_total));
  for (int i = 0; i < n->ncustom; i++)
    cJSON_AddNumberToObject(o, n->custom_total[i].name,
                            (double)(n->custom_total[i].amount - (used ? n->custom_used[i] : 0)) / AS_RES_UNIT);
  return o;
}

/* A deployment is HEALTHY when all its desired replicas of the desired
 * version run, UPDATING while it moves there, UNHEALTHY when a replica
 * failed its checks or its constructor. */
static const char *dep_status(as_controller_t *c, const as_dep_t *d) {
  int running = 0, other = 0, unhealthy = 0;
  for (int k = 0; k < c->nreps; k++) {
    replica_t *r = c->reps[k];
    if (strcmp(r->dep->key, d->key)) continue;
    /* a replica being stopped on purpose says nothing about the deployment's health */
    if (!r->retiring && (r->state == R_UNHEALTHY || (r->state != R_RUNNING && r->failures > 0))) unhealthy++;
    if (r->state == R_RUNNING && r->version == d->version && !r->retiring) running++;
    else other++;
  }
  if (unhealthy) return "UNHEALTHY";
  return running == d->num_replicas && other == 0 ? "HEALTHY" : "UPDATING";
}

void as_controller_status(as_controller_t *c, as_buf_t *out) {
  cJSON *root = cJSON_CreateObject();
  cJSON *apps = cJSON_AddObjectToObject(root, "applications");
  for (int a = 0; a < c->napps; a++) {
    as_app_t *app = c->apps[a];
    cJSON *ja = cJSON_AddObjectToObject(apps, app->name);
    cJSON_AddStringToObject(ja, "route_prefix", app->route_prefix);
    cJSON_AddStringToObject(ja, "ingress", app->ingress);
    cJSON_AddStringToObject(ja, "import_path", app->file);
    cJSON *deps = cJSON_AddObjectToObject(ja, "deployments");
    int healthy = 1, failing = 0;
    for (int i = 0; i < app->ndeps; i++) {
      as_dep_t *d = &app->deps[i];
      cJSON *jd = cJSON_AddObjectToObject(deps, d->name);
      const char *st = dep_status(c, d);
      healthy &= strcmp(st, "HEALTHY") == 0;
      failing |= strcmp(st, "UNHEALTHY") == 0;
      cJSON_AddStringToObject(jd, "status", st);
      cJSON_AddNumberToObject(jd, "num_replicas", d->num_replicas);
      if (d->autoscale) {
        cJSON *as = cJSON_AddObjectToObject(jd, "autoscaling");
        cJSON_AddNumberToObject(as, "min_replicas", d->min_replicas);
        cJSON_AddNumberToObject(as, "max_replicas", d->max_replicas);
        cJSON_AddNumberToObject(as, "target_ongoing_requests", d->target_ongoing);
      }
      cJSON_AddNumberToObject(jd, "max_ongoing_requests", d->max_ongoing);
      cJSON_AddNumberToObject(jd, "max_queued_requests", d->max_queued);
      cJSON *reps = cJSON_AddArrayToObject(jd, "replicas");
      for (int k = 0; k < c->nreps; k++) {
        replica_t *r = c->reps[k];
        if (strcmp(r->dep->key, d->key)) continue;
        cJSON *jr = cJSON_CreateObject();
        cJSON_AddStringToObject(jr, "replica_id", r->id);
        cJSON_AddStringToObject(jr, "state", state_names[r->state]);
        cJSON_AddNumberToObject(jr, "pid", r->pid);
        as_buf_t g;
        as_buf_init(&g);
        as_res_format_gpus(&g, &r->alloc);
        cJSON_AddStringToObject(jr, "gpu_ids", r->placed && g.data ? g.data : "");
        as_buf_free(&g);
        cJSON_AddNumberToObject(jr, "ongoing_requests", atomic_load(&c->table->slots[r->slot].inflight));
        cJSON_AddBoolToObject(jr, "current_version", r->version == d->version);
        cJSON_AddStringToObject(jr, "message", r->message);
        cJSON_AddItemToArray(reps, jr);
      }
    }
    cJSON_AddStringToObject(ja, "status", failing ? "UNHEALTHY" : healthy ? "RUNNING" : "DEPLOYING");
  }
  as_node_res_t *n = c->node;
  double gtotal = n->ngpu, gfree = 0;
  for (int i = 0; i < n->ngpu; i++) gfree += (double)(AS_RES_UNIT - n->gpu_used[i]) / AS_RES_UNIT;
  cJSON *node = cJSON_AddObjectToObject(root, "node");
  cJSON_AddItemToObject(node, "total", res_json(n->cpu_total, gtotal, n, 0));
  cJSON_AddItemToObject(node, "free", res_json(n->cpu_total - n->cpu_used, gfree, n, 1));
  char *s = cJSON_PrintUnformatted(root);
  if (s) as_buf_append(out, s, strlen(s));
  free(s);
  cJSON_Delete(root);
}

static int alive(as_controller_t *c) {
  int n = 0;
  for (int k = 0; k < c->nreps; k++) n += c->reps[k]->proc_open || c->reps[k]->ctrl_open;
  return n;
}

static void check_down(as_controller_t *c) {
  if (!c->shutting_down || !c->down_cb || alive(c)) return;
  void (*cb)(void *) = c->down_cb;
  c->down_cb = NULL;
  uv_timer_stop(&c->kill_timer);
  cb(c->down_ud);
}

static void kill_fired(uv_timer_t *t) {
  as_controller_t *c = t->data;
  AS_LOGW("workers still running after the graceful shutdown timeout; killing them");
  as_controller_kill(c);
}

void as_controller_shutdown(as_controller_t *c, void (*done)(void *), void *ud) {
  c->shutting_down = 1;
  c->down_cb = done;
  c->down_ud = ud;
  uv_timer_stop(&c->tick);
  for (int k = 0; k < c->nreps; k++) {
    replica_t *r = c->reps[k];
    if (r->restart_open) uv_timer_stop(&r->restart);
    if (r->proc_open && r->pid > 0) {
      r->state = R_STOPPING;
      ctrl_frame(r, AS_FR_SHUTDOWN, NULL, 0);
    }
  }
  uv_timer_start(&c->kill_timer, kill_fired, (uint64_t)(as_controller_graceful_s(c) * 1000.0) + 2000, 0);
  check_down(c);
}

void as_controller_kill(as_controller_t *c) {
  c->shutting_down = 1;
  for (int k = 0; k < c->nreps; k++)
    if (c->reps[k]->proc_open && c->reps[k]->pid > 0) kill(c->reps[k]->pid, SIGKILL);
}

double as_controller_graceful_s(const as_controller_t *c) {
  double g = 0;
  for (int a = 0; a < c->napps; a++)
    for (int i = 0; i < c->apps[a]->ndeps; i++)
      if (c->apps[a]->deps[i].graceful_s > g) g = c->apps[a]->deps[i].graceful_s;
  if (c->napps == 0) g = 20;
  return g < c->graceful_limit_s ? g : c->graceful_limit_s;
}

static void free_apps(as_app_t **apps, int n) {
  for (int a = 0; a < n; a++) {
    as_app_free(apps[a]);
    free(apps[a]);
  }
  free(apps);
}

void as_controller_free(as_controller_t *c) {
  if (!c) return;
  for (int k = 0; k < c->nreps; k++) {
    replica_t *r = c->reps[k];
    if (r->restart_open) uv_close((uv_handle_t *)&r->restart, NULL);
  }
  uv_close((uv_handle_t *)&c->kill_timer, NULL);
  uv_close((uv_handle_t *)&c->tick, NULL);
  /* The loop must run once more to finish those closes before the replicas go. */
  uv_run(c->loop, UV_RUN_NOWAIT);
  for (int k = 0; k < c->nreps; k++) free(c->reps[k]);
  free(c->reps);
  free_apps(c->apps, c->napps);
  free_apps(c->retired, c->nretired);
  free(c->free_slots);
  free(c->rundir);
  free(c->exe);
  free(c);
}

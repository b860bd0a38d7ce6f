/* controller.c — the controller of the head process: turns the desired state
 * (applications → deployments → num_replicas) into running replicas.
 * Each replica gets a slot in the shared table for its whole life; it is
 * placed on the node's resources (or stays PENDING, saying what it needs and
 * what is free), started as a worker process with its GPU ids in
 * CUDA_VISIBLE_DEVICES, configured over its control socket, and marked RUNNING
 * when its constructor returns. A worker that dies is started again at once
 * (then with a growing back-off while it keeps failing); callers whose
 * requests were on it get an error answer, never a hang. Every change of the
 * running set is broadcast as a ROUTES frame to every worker and the proxy.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "node.h"

enum { R_PENDING, R_STARTING, R_RUNNING, R_STOPPING, R_DEAD };
static const char *const state_names[] = {"PENDING", "STARTING", "RUNNING", "STOPPING", "DEAD"};

typedef struct replica_s {
  as_controller_t *c;
  as_dep_t *dep;
  int index;               /* #i within the deployment */
  char id[160];            /* "Ranker_1#0" */
  uint32_t slot;
  int state;
  uv_process_t proc;
  int proc_open;           /* proc handle not yet closed */
  int pid;
  uv_pipe_t ctrl;
  int ctrl_open;
  as_framer_t fr;
  as_alloc_t alloc;
  int placed;
  char sock[512];
  char message[512];       /* why PENDING, or the last failure */
  int failures;            /* consecutive early deaths */
  uint64_t started_ms;
  uv_timer_t restart;
  int restart_open;
} replica_t;

struct as_controller_s {
  uv_loop_t *loop;
  as_table_t *table;
  as_node_res_t *node;
  char *rundir;
  char *exe;
  as_app_t **apps;
  int napps;
  replica_t **reps;
  int nreps;
  uint32_t next_slot;
  as_routes_cb routes_cb;
  void *routes_ud;
  int shutting_down;
  void (*down_cb)(void *);
  void *down_ud;
  uv_timer_t kill_timer;
  uv_timer_t pending_timer;
  double graceful_limit_s; /* bounds every deployment's graceful timeout */
};

static void broadcast_routes(as_controller_t *c);
static void start_replica(replica_t *r);
static void check_down(as_controller_t *c);
static void schedule_restart(replica_t *r);

/* ---- control socket ----------------------------------------------------------- */

static void ctrl_write_cb(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void ctrl_send(replica_t *r, const as_buf_t *b) {
  if (!r->ctrl_open) return;
  uv_write_t *req = malloc(sizeof *req + b->len);
  if (!req) return;
  char *copy = (char *)(req + 1);
  memcpy(copy, b->data, b->len);
  uv_buf_t ub = uv_buf_init(copy, (unsigned)b->len);
  if (uv_write(req, (uv_stream_t *)&r->ctrl, &ub, 1, ctrl_write_cb) < 0) free(req);
}

static void ctrl_closed(uv_handle_t *h) {
  replica_t *r = h->data;
  as_framer_free(&r->fr);
  r->ctrl_open = 0;
  check_down(r->c);
}

static void ctrl_close(replica_t *r) {
  if (r->ctrl_open && !uv_is_closing((uv_handle_t *)&r->ctrl))
    uv_close((uv_handle_t *)&r->ctrl, ctrl_closed);
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
    atomic_store(&r->c->table->slots[r->slot].state, AS_SLOT_RUNNING);
    AS_LOGI("replica %s is RUNNING (pid %d)", r->id, r->pid);
    broadcast_routes(r->c);
  } else {
    snprintf(r->message, sizeof r->message, "constructor failed: %.*s",
             err.type == AS_T_STR ? (int)(err.len > 400 ? 400 : err.len) : 0, err.type == AS_T_STR ? err.s : "");
    AS_LOGE("replica %s: %s", r->id, r->message);
    if (r->pid > 0) kill(r->pid, SIGKILL);
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
  }
}

/* ---- routes --------------------------------------------------------------------- */

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
      for (int k = 0; k < c->nreps; k++)
        if (c->reps[k]->dep == d && c->reps[k]->state == R_RUNNING) running++;
      as_enc_table(b, running, 0);
      for (int k = 0; k < c->nreps; k++) {
        replica_t *r = c->reps[k];
        if (r->dep != d || r->state != R_RUNNING) continue;
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
    if (c->reps[k]->ctrl_open && c->reps[k]->state != R_STOPPING) ctrl_send(c->reps[k], &b);
  if (c->routes_cb) c->routes_cb(c->routes_ud, b.data + AS_FRAME_HDR, b.len - AS_FRAME_HDR);
  as_buf_free(&b);
}

/* ---- processes -------------------------------------------------------------------- */

static void restart_fired(uv_timer_t *t) { start_replica(t->data); }

static void proc_closed(uv_handle_t *h) {
  replica_t *r = h->data;
  r->proc_open = 0;
  check_down(r->c);
}

static void proc_exit(uv_process_t *p, int64_t status, int sig) {
  replica_t *r = p->data;
  as_controller_t *c = r->c;
  as_slot_t *s = &c->table->slots[r->slot];
  int was_running = r->state == R_RUNNING;
  if (!c->shutting_down) {
    if (sig) AS_LOGW("replica %s (pid %d) was killed by signal %d", r->id, r->pid, sig);
    else AS_LOGW("replica %s (pid %d) exited with status %lld", r->id, r->pid, (long long)status);
  }
  atomic_store(&s->state, AS_SLOT_DEAD);
  atomic_fetch_add(&s->gen, 1);
  atomic_store(&s->inflight, 0);
  atomic_store(&s->pid, 0);
  r->pid = 0;
  r->state = R_DEAD;
  uv_close((uv_handle_t *)p, proc_closed);
  ctrl_close(r);
  if (r->placed) {
    as_res_release(c->node, &r->dep->req, &r->alloc);
    r->placed = 0;
  }
  if (was_running) broadcast_routes(c);
  if (c->shutting_down) {
    check_down(c);
    return;
  }
  uint64_t ran = uv_now(c->loop) - r->started_ms;
  if (was_running && ran > 10000) r->failures = 0;
  else r->failures++;
  schedule_restart(r);
}

/* First restart at once; a replica that keeps dying backs off up to 10 s. */
static void schedule_restart(replica_t *r) {
  uint64_t delay = 0;
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
  as_app_t *app = NULL;
  for (int a = 0; a < r->c->napps; a++)
    for (int i = 0; i < r->c->apps[a]->ndeps; i++)
      if (&r->c->apps[a]->deps[i] == d) app = r->c->apps[a];
  char tpath[600];
  snprintf(tpath, sizeof tpath, "%s/replicas.table", r->c->rundir);
  as_buf_t b;
  size_t mark;
  as_buf_init(&b);
  as_frame_begin(&b, AS_FR_CONFIG, &mark);
  as_enc_table(&b, 0, d->user_config.len ? 11 : 10);
  as_enc_cstr(&b, "app"); as_enc_cstr(&b, d->app);
  as_enc_cstr(&b, "deployment"); as_enc_cstr(&b, d->name);
  as_enc_cstr(&b, "class"); as_enc_cstr(&b, d->class_name);
  as_enc_cstr(&b, "replica_id"); as_enc_cstr(&b, r->id);
  as_enc_cstr(&b, "file"); as_enc_cstr(&b, app ? app->file : "");
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
  char **env = calloc((size_t)nenv + 3, sizeof *env);
  char cuda[300], rid[200];
  snprintf(cuda, sizeof cuda, "CUDA_VISIBLE_DEVICES=%s", gpus.data ? gpus.data : "");
  snprintf(rid, sizeof rid, "ACTORSERVE_REPLICA_ID=%s", r->id);
  as_buf_free(&gpus);
  if (!env) return AS_ENOMEM;
  int k = 0;
  for (int i = 0; i < nenv; i++)
    if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) && strncmp(environ[i], "ACTORSERVE_REPLICA_ID=", 22))
      env[k++] = environ[i];
  env[k++] = cuda;
  env[k++] = rid;
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
  int rc = uv_spawn(c->loop, &r->proc, &o);
  free(env);
  if (rc < 0) {
    AS_LOGE("cannot start a worker for %s: %s", r->id, uv_strerror(rc));
    uv_close((uv_handle_t *)&r->proc, NULL);
    ctrl_close(r);
    return AS_EIO;
  }
  r->proc_open = 1;
  r->pid = r->proc.pid;
  uv_read_start((uv_stream_t *)&r->ctrl, alloc_cb, ctrl_read);
  return 0;
}

static void start_replica(replica_t *r) {
  as_controller_t *c = r->c;
  if (c->shutting_down || r->state == R_STARTING || r->state == R_RUNNING) return;
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
      if (r->state != R_PENDING || strcmp(msg, r->message) != 0)
        AS_LOGW("replica %s is PENDING: %s", r->id, msg);
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
    as_res_release(c->node, &r->dep->req, &r->alloc);
    r->placed = 0;
    snprintf(r->message, sizeof r->message, "the worker process could not be started; retrying");
    schedule_restart(r);
    return;
  }
  atomic_store(&s->pid, r->pid);
  send_config(r);
}

/* PENDING replicas try again whenever resources may have been freed. */
static void pending_tick(uv_timer_t *t) {
  as_controller_t *c = t->data;
  for (int k = 0; k < c->nreps; k++)
    if (c->reps[k]->state == R_PENDING) start_replica(c->reps[k]);
}

/* ---- public API ------------------------------------------------------------------ */

as_controller_t *as_controller_new(uv_loop_t *loop, as_table_t *table, as_node_res_t *node,
                                   const char *rundir, const char *exe, double graceful_limit_s) {
  as_controller_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->loop = loop;
  c->table = table;
  c->node = node;
  c->rundir = strdup(rundir);
  c->exe = strdup(exe);
  c->graceful_limit_s = graceful_limit_s;
  uv_timer_init(loop, &c->kill_timer);
  c->kill_timer.data = c;
  uv_timer_init(loop, &c->pending_timer);
  c->pending_timer.data = c;
  uv_timer_start(&c->pending_timer, pending_tick, 1000, 1000);
  return c;
}

int as_controller_add_app(as_controller_t *c, as_app_t *app) {
  as_app_t **apps = realloc(c->apps, sizeof *apps * (size_t)(c->napps + 1));
  if (!apps) return AS_ENOMEM;
  c->apps = apps;
  c->apps[c->napps++] = app;
  int total = 0;
  for (int i = 0; i < app->ndeps; i++) total += app->deps[i].num_replicas;
  replica_t **reps = realloc(c->reps, sizeof *reps * (size_t)(c->nreps + total));
  if (!reps) return AS_ENOMEM;
  c->reps = reps;
  int first = c->nreps;
  for (int i = 0; i < app->ndeps; i++) {
    for (int j = 0; j < app->deps[i].num_replicas; j++) {
      if (c->next_slot >= c->table->nslots) return AS_ETOOBIG;
      replica_t *r = calloc(1, sizeof *r);
      if (!r) return AS_ENOMEM;
      r->c = c;
      r->dep = &app->deps[i];
      r->index = j;
      r->slot = c->next_slot++;
      r->state = R_DEAD;
      snprintf(r->id, sizeof r->id, "%s#%d", app->deps[i].name, j);
      snprintf(r->sock, sizeof r->sock, "%s/r%u.sock", c->rundir, r->slot);
      c->reps[c->nreps++] = r;
    }
  }
  broadcast_routes(c);
  for (int k = first; k < c->nreps; k++) start_replica(c->reps[k]);
  return 0;
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
    for (int i = 0; i < app->ndeps; i++) {
      as_dep_t *d = &app->deps[i];
      cJSON *jd = cJSON_AddObjectToObject(deps, d->name);
      cJSON_AddNumberToObject(jd, "num_replicas", d->num_replicas);
      cJSON_AddNumberToObject(jd, "max_ongoing_requests", d->max_ongoing);
      cJSON_AddNumberToObject(jd, "max_queued_requests", d->max_queued);
      cJSON *reps = cJSON_AddArrayToObject(jd, "replicas");
      for (int k = 0; k < c->nreps; k++) {
        replica_t *r = c->reps[k];
        if (r->dep != d) continue;
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
        cJSON_AddStringToObject(jr, "message", r->message);
        cJSON_AddItemToArray(reps, jr);
      }
    }
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
  uv_timer_stop(&c->pending_timer);
  as_buf_t b;
  size_t mark;
  as_buf_init(&b);
  as_frame_begin(&b, AS_FR_SHUTDOWN, &mark);
  as_frame_end(&b, mark);
  for (int k = 0; k < c->nreps; k++) {
    replica_t *r = c->reps[k];
    if (r->restart_open) uv_timer_stop(&r->restart);
    if (r->proc_open) {
      r->state = R_STOPPING;
      ctrl_send(r, &b);
    }
  }
  as_buf_free(&b);
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
  return g < c->graceful_limit_s ? g : c->graceful_limit_s;
}

void as_controller_free(as_controller_t *c) {
  if (!c) return;
  for (int k = 0; k < c->nreps; k++) {
    replica_t *r = c->reps[k];
    if (r->restart_open) uv_close((uv_handle_t *)&r->restart, NULL);
  }
  uv_close((uv_handle_t *)&c->kill_timer, NULL);
  uv_close((uv_handle_t *)&c->pending_timer, NULL);
  /* The loop must run once more to finish those closes before the replicas go. */
  uv_run(c->loop, UV_RUN_NOWAIT);
  for (int k = 0; k < c->nreps; k++) free(c->reps[k]);
  free(c->reps);
  for (int a = 0; a < c->napps; a++) {
    as_app_free(c->apps[a]);
    free(c->apps[a]);
  }
  free(c->apps);
  free(c->rundir);
  free(c->exe);
  free(c);
}

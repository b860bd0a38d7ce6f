/* replica.c — the replica actor: hosts one Lua deployment inside a worker
 * process. It listens on its own Unix socket; any caller (the proxy, or
 * another worker's handle) connects and sends CALL frames. Each request gets a
 * token and runs in its own coroutine (lua/actorserve.lua _dispatch); the
 * answer comes back through the host operations below (reply, stream_*),
 * which write REPLY / STREAM_* frames and give the request's place in the
 * shared in-flight count back. Handle calls, timers and the constructor's
 * readiness also go through here.
 */
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "actors.h"
#include "asl.h"

#define TOKEN_BUCKETS 256

typedef struct rconn_s rconn_t;
typedef struct rreq_s rreq_t;

struct rreq_s {
  int64_t token;          /* what Lua knows the request by */
  uint64_t call_id;       /* what the caller knows it by */
  rconn_t *conn;          /* NULL once the caller went away */
  int cancelled;          /* the caller sent CANCEL or closed */
  rreq_t *bnext;          /* token bucket chain */
  rreq_t *cprev, *cnext;  /* the connection's list */
};

struct rconn_s {
  uv_pipe_t pipe;
  as_replica_t *r;
  as_wq_t wq;             /* answers leave once per loop iteration */
  as_framer_t fr;
  int closing;
  rreq_t *reqs;           /* requests that came on this connection */
  rconn_t *prev, *next;
};

typedef struct htimer_s {
  uv_timer_t t;
  as_replica_t *r;
  uint64_t id;
  struct htimer_s *prev, *next; /* the replica's armed timers */
} htimer_t;

typedef struct hcall_s {
  as_replica_t *r;
  uint64_t id;
  as_call_t *call;
  struct hcall_s *prev, *next; /* the replica's handle calls in flight */
  char deployment[128];
} hcall_t;

struct as_replica_s {
  uv_loop_t *loop;
  lua_State *L;
  as_caller_t *caller;
  as_table_t *table;
  uint32_t slot;
  char *app, *deployment, *replica_id, *socket_path;
  uv_pipe_t server;
  int listening;
  as_flusher_t flusher;
  rconn_t *conns;
  rreq_t *buckets[TOKEN_BUCKETS];
  size_t running;         /* requests not yet answered */
  int64_t next_token;
  uint64_t next_timer;
  htimer_t *timers;       /* armed serve.sleep timers, closed by as_replica_free */
  hcall_t *hcalls;        /* handle calls in flight (for cancel) */
  as_ready_cb ready_cb;
  void *ready_ud;
  void (*drained)(void *);
  void *drained_ud;
  int draining;
  int freeing;            /* as_replica_free runs: no more calls into Lua */
  uv_timer_t drain_poll;  /* while draining: watches calls still in transit */
  int drain_poll_open;
  int pending_closes;     /* embedded handles still closing after as_replica_free */
};

/* ---- requests by token ------------------------------------------------------ */

static rreq_t *req_find(as_replica_t *r, int64_t token) {
  rreq_t *q = r->buckets[(uint64_t)token % TOKEN_BUCKETS];
  while (q && q->token != token) q = q->bnext;
  return q;
}

/* Drained: nothing runs here, and nothing is on its way either. Callers
 * count a request in the slot's inflight before they send it, and the slot
 * stopped admitting when the controller marked it DRAINING, so inflight 0
 * means no CALL frame is still in transit to this replica. */
static void check_drained(as_replica_t *r) {
  if (r->draining && r->running == 0 && r->drained &&
      atomic_load(&r->table->slots[r->slot].inflight) == 0) {
    void (*done)(void *) = r->drained;
    r->drained = NULL;
    if (r->drain_poll_open) uv_timer_stop(&r->drain_poll);
    done(r->drained_ud);
  }
}

static void drain_poll_cb(uv_timer_t *t) { check_drained(t->data); }

/* The request is answered: unlink it, free it, give back its in-flight place. */
static void req_finish(as_replica_t *r, rreq_t *q) {
  rreq_t **pp = &r->buckets[(uint64_t)q->token % TOKEN_BUCKETS];
  while (*pp != q) pp = &(*pp)->bnext;
  *pp = q->bnext;
  if (q->conn) {
    if (q->cprev) q->cprev->cnext = q->cnext; else q->conn->reqs = q->cnext;
    if (q->cnext) q->cnext->cprev = q->cprev;
  }
  free(q);
  r->running--;
  as_slot_release(&r->table->slots[r->slot]);
  check_drained(r);
}

/* ---- writing frames ------------------------------------------------------- */

/* Queues the frame in b (freed here) on the request's connection. */
static int send_frame(rreq_t *q, as_buf_t *b) {
  int rc = (!q->conn || q->conn->closing) ? AS_ECLOSED : as_buf_append(as_wq_buf(&q->conn->wq), b->data, b->len);
  as_buf_free(b);
  return rc;
}

/* Starts a frame for request q: header and call id. */
static int frame_start(as_buf_t *b, uint8_t type, rreq_t *q, size_t *mark) {
  as_buf_init(b);
  int rc = as_frame_begin(b, type, mark);
  if (!rc) rc = as_enc_int(b, (int64_t)q->call_id);
  return rc;
}

/* ---- host operations for Lua ----------------------------------------------- */

static void handle_cb(void *ud, int ev, as_dec_t *d);

static int op_call(void *ud, const char *deployment, const char *method, const char *args,
                   size_t len, uint64_t *id_out) {
  as_replica_t *r = ud;
  char key[256];
  snprintf(key, sizeof key, "%s/%s", r->app, deployment);
  hcall_t *h = calloc(1, sizeof *h);
  if (!h) return AS_ENOMEM;
  h->r = r;
  snprintf(h->deployment, sizeof h->deployment, "%s", deployment);
  as_call_t *call;
  int rc = as_caller_call(r->caller, key, ASL_KIND_CALL, method, args, len, handle_cb, h, &call);
  if (rc) {
    free(h);
    return rc;
  }
  h->id = as_call_id(call);
  h->call = call;
  h->next = r->hcalls;
  if (r->hcalls) r->hcalls->prev = h;
  r->hcalls = h;
  *id_out = h->id;
  return 0;
}

static void hcall_done(hcall_t *h) {
  as_replica_t *r = h->r;
  if (h->prev) h->prev->next = h->next; else r->hcalls = h->next;
  if (h->next) h->next->prev = h->prev;
  free(h);
}

static int op_cancel(void *ud, uint64_t id) {
  as_replica_t *r = ud;
  for (hcall_t *h = r->hcalls; h; h = h->next) {
    if (h->id != id) continue;
    as_caller_cancel(r->caller, h->call); /* its callback never runs again */
    hcall_done(h);
    return 0;
  }
  return AS_ENOTFOUND;
}

static void handle_cb(void *ud, int ev, as_dec_t *d) {
  hcall_t *h = ud;
  as_replica_t *r = h->r;
  lua_State *L = r->L;
  if (ev == AS_EV_REPLY) {
    as_val_t ok;
    lua_pushinteger(L, (lua_Integer)h->id);
    if (as_dec_next(d, &ok) || asl_decode(L, d)) {
      lua_pushboolean(L, 0);
      lua_pushfstring(L, "deployment '%s' sent a malformed answer", h->deployment);
    } else {
      lua_pushboolean(L, ok.type == AS_T_TRUE);
      lua_insert(L, -2);
    }
    hcall_done(h);
    asl_call_module(L, "_on_reply", 3, 0);
  } else if (ev == AS_EV_FAILED) {
    lua_pushinteger(L, (lua_Integer)h->id);
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "deployment '%s': the replica died or could not be reached while handling the call",
                    h->deployment);
    hcall_done(h);
    asl_call_module(L, "_on_reply", 3, 0);
  } else if (ev == AS_EV_STREAM_START) {
    lua_pushinteger(L, (lua_Integer)h->id);
    lua_pushstring(L, "start");
    asl_call_module(L, "_on_stream", 2, 0);
  } else if (ev == AS_EV_STREAM_DATA) {
    as_val_t v;
    if (as_dec_next(d, &v) || v.type != AS_T_STR) return;
    lua_pushinteger(L, (lua_Integer)h->id);
    lua_pushstring(L, "data");
    lua_pushlstring(L, v.s, v.len);
    asl_call_module(L, "_on_stream", 3, 0);
  } else if (ev == AS_EV_STREAM_END) {
    as_val_t ok, err;
    int good = as_dec_next(d, &ok) == 0 && ok.type == AS_T_TRUE;
    lua_pushinteger(L, (lua_Integer)h->id);
    lua_pushstring(L, "end");
    lua_pushboolean(L, good);
    if (good) {
      lua_pushnil(L);
    } else {
      char msg[512];
      int has = as_dec_next(d, &err) == 0 && err.type == AS_T_STR;
      snprintf(msg, sizeof msg, "deployment '%s' stream failed: %.*s", h->deployment,
               has ? (int)(err.len > 400 ? 400 : err.len) : 7, has ? err.s : "unknown");
      lua_pushstring(L, msg);
    }
    hcall_done(h);
    asl_call_module(L, "_on_stream", 4, 0);
  }
}

static int op_reply(void *ud, int64_t token, int ok, const char *val, size_t len) {
  as_replica_t *r = ud;
  rreq_t *q = req_find(r, token);
  if (!q) return AS_ENOTFOUND;
  int rc = AS_ECLOSED;
  if (q->conn && !q->conn->closing) {
    /* built in place in the connection's write queue: no copy, no allocation */
    as_buf_t *b = as_wq_buf(&q->conn->wq);
    size_t start = b->len, mark;
    rc = as_buf_reserve(b, len + 32);
    if (!rc) rc = as_frame_begin(b, AS_FR_REPLY, &mark);
    if (!rc) rc = as_enc_int(b, (int64_t)q->call_id);
    if (!rc) rc = as_enc_bool(b, ok);
    if (!rc) rc = as_buf_append(b, val, len);
    if (!rc) rc = as_frame_end(b, mark);
    if (rc) b->len = start;
  }
  req_finish(r, q);
  return rc;
}

static int op_stream_start(void *ud, int64_t token, int status, const char *hdrs, size_t len) {
  as_replica_t *r = ud;
  rreq_t *q = req_find(r, token);
  if (!q) return AS_ENOTFOUND;
  as_buf_t b;
  size_t mark;
  int rc = frame_start(&b, AS_FR_STREAM_START, q, &mark);
  if (!rc) rc = as_enc_int(&b, status);
  if (!rc) rc = as_buf_append(&b, hdrs, len);
  if (!rc) rc = as_frame_end(&b, mark);
  return rc ? (as_buf_free(&b), rc) : send_frame(q, &b);
}

static int op_stream_data(void *ud, int64_t token, const char *p, size_t n) {
  as_replica_t *r = ud;
  rreq_t *q = req_find(r, token);
  if (!q) return AS_ENOTFOUND;
  if (q->cancelled) return AS_ECLOSED;
  as_buf_t b;
  size_t mark;
  int rc = frame_start(&b, AS_FR_STREAM_DATA, q, &mark);
  if (!rc) rc = as_enc_str(&b, p, n);
  if (!rc) rc = as_frame_end(&b, mark);
  return rc ? (as_buf_free(&b), rc) : send_frame(q, &b);
}

static int op_stream_end(void *ud, int64_t token, int ok, const char *err) {
  as_replica_t *r = ud;
  rreq_t *q = req_find(r, token);
  if (!q) return AS_ENOTFOUND;
  as_buf_t b;
  size_t mark;
  int rc = frame_start(&b, AS_FR_STREAM_END, q, &mark);
  if (!rc) rc = as_enc_bool(&b, ok);
  if (!rc) rc = as_enc_cstr(&b, err);
  if (!rc) rc = as_frame_end(&b, mark);
  rc = rc ? (as_buf_free(&b), rc) : send_frame(q, &b);
  req_finish(r, q);
  return rc;
}

static void timer_closed(uv_handle_t *h) { free(h->data); }

static void timer_unlink(htimer_t *ht) {
  if (ht->prev) ht->prev->next = ht->next; else ht->r->timers = ht->next;
  if (ht->next) ht->next->prev = ht->prev;
}

static void timer_fired(uv_timer_t *t) {
  htimer_t *ht = t->data;
  timer_unlink(ht);
  lua_pushinteger(ht->r->L, (lua_Integer)ht->id);
  asl_call_module(ht->r->L, "_on_timer", 1, 0);
  uv_close((uv_handle_t *)t, timer_closed);
}

static int op_timer(void *ud, double seconds, uint64_t *id_out) {
  as_replica_t *r = ud;
  htimer_t *ht = calloc(1, sizeof *ht);
  if (!ht) return AS_ENOMEM;
  ht->r = r;
  ht->id = ++r->next_timer;
  ht->next = r->timers;
  if (r->timers) r->timers->prev = ht;
  r->timers = ht;
  uv_timer_init(r->loop, &ht->t);
  ht->t.data = ht;
  double ms = seconds * 1000.0;
  uv_timer_start(&ht->t, timer_fired, ms > 1e12 ? (uint64_t)1e12 : (uint64_t)(ms + 0.5), 0);
  *id_out = ht->id;
  return 0;
}

static int op_ready(void *ud, int ok, const char *err) {
  as_replica_t *r = ud;
  if (r->ready_cb) r->ready_cb(r->ready_ud, 0, 0, ok, err);
  return 0;
}

static int op_report(void *ud, int kind, int64_t seq, int ok, const char *err) {
  as_replica_t *r = ud;
  if (r->ready_cb) r->ready_cb(r->ready_ud, kind, seq, ok, err);
  return 0;
}

static const asl_host_ops host_ops = {
  op_call, op_reply, op_stream_start, op_stream_data, op_stream_end, op_timer, op_ready, op_report, op_cancel,
};

void as_replica_check_health(as_replica_t *r, int64_t seq) {
  lua_pushinteger(r->L, (lua_Integer)seq);
  if (asl_call_module(r->L, "_check_health", 1, 0)) op_report(r, ASL_REPORT_HEALTH, seq, 0, "health check could not run");
}

void as_replica_reconfigure(as_replica_t *r, const char *value, size_t len) {
  as_dec_t d;
  as_dec_init(&d, value, len);
  if (asl_decode(r->L, &d)) {
    op_report(r, ASL_REPORT_RECONFIGURE, 0, 0, "malformed user_config");
    return;
  }
  asl_call_module(r->L, "_reconfigure", 1, 0);
}

/* ---- incoming connections --------------------------------------------------- */

static void cancel_req(as_replica_t *r, rreq_t *q);

static void rconn_closed(uv_handle_t *h) {
  rconn_t *k = h->data;
  as_framer_free(&k->fr);
  free(k);
}

static void rconn_close(rconn_t *k) {
  if (k->closing) return;
  k->closing = 1;
  as_replica_t *r = k->r;
  /* Detach every request first, then tell Lua by token: a cancel hook may
   * answer (and free) any of them. */
  size_t n = 0;
  for (rreq_t *q = k->reqs; q; q = q->cnext) n++;
  int64_t *tokens = n ? malloc(sizeof *tokens * n) : NULL;
  size_t i = 0;
  for (rreq_t *q = k->reqs, *next; q; q = next) {
    next = q->cnext;
    q->conn = NULL;
    q->cprev = q->cnext = NULL;
    if (tokens) tokens[i++] = q->token;
    else q->cancelled = 1;
  }
  k->reqs = NULL;
  for (size_t j = 0; j < i; j++) {
    rreq_t *q = req_find(r, tokens[j]);
    if (q) cancel_req(r, q);
  }
  free(tokens);
  if (k->prev) k->prev->next = k->next; else r->conns = k->next;
  if (k->next) k->next->prev = k->prev;
  as_wq_close(&k->wq);
  uv_close((uv_handle_t *)&k->pipe, rconn_closed);
}

static void on_call(rconn_t *k, const char *p, size_t n) {
  as_replica_t *r = k->r;
  lua_State *L = r->L;
  as_dec_t d;
  as_val_t id, kind, method;
  as_dec_init(&d, p, n);
  if (as_dec_next(&d, &id) || id.type != AS_T_INT || as_dec_next(&d, &kind) || kind.type != AS_T_INT ||
      as_dec_next(&d, &method) || method.type != AS_T_STR) {
    AS_LOGW("malformed CALL frame; closing the connection");
    rconn_close(k);
    return;
  }
  rreq_t *q = calloc(1, sizeof *q);
  if (!q) return;
  q->token = ++r->next_token;
  q->call_id = (uint64_t)id.i;
  q->conn = k;
  q->cnext = k->reqs;
  if (k->reqs) k->reqs->cprev = q;
  k->reqs = q;
  rreq_t **b = &r->buckets[(uint64_t)q->token % TOKEN_BUCKETS];
  q->bnext = *b;
  *b = q;
  r->running++;
  int top = lua_gettop(L);
  lua_pushinteger(L, (lua_Integer)q->token);
  lua_pushinteger(L, (lua_Integer)kind.i);
  lua_pushlstring(L, method.s, method.len);
  if (asl_decode(L, &d) || !lua_istable(L, -1)) {
    lua_settop(L, top);
    static const char msg[] = "malformed call arguments";
    as_buf_t v;
    as_buf_init(&v);
    as_enc_cstr(&v, msg);
    op_reply(r, q->token, 0, v.data, v.len);
    as_buf_free(&v);
    return;
  }
  if (asl_call_module(L, "_dispatch", 4, 0) && req_find(r, q->token)) {
    as_buf_t v;
    as_buf_init(&v);
    as_enc_cstr(&v, "the replica could not run the request");
    op_reply(r, q->token, 0, v.data, v.len);
    as_buf_free(&v);
  }
}

/* The caller no longer wants the answer: the request's code hears of it
 * (actorserve.on_cancel hooks, e.g. a generation frees its sequence). */
static void cancel_req(as_replica_t *r, rreq_t *q) {
  if (q->cancelled) return;
  q->cancelled = 1;
  if (r->freeing) return;
  lua_pushinteger(r->L, (lua_Integer)q->token);
  asl_call_module(r->L, "_on_cancel", 1, 0);
}

static void on_cancel(rconn_t *k, const char *p, size_t n) {
  as_dec_t d;
  as_val_t id;
  as_dec_init(&d, p, n);
  if (as_dec_next(&d, &id) || id.type != AS_T_INT) return;
  for (rreq_t *q = k->reqs; q; q = q->cnext)
    if (q->call_id == (uint64_t)id.i) {
      cancel_req(k->r, q);
      break;
    }
}

/* Every read lands in one static buffer: read_cb copies what it keeps (into
 * the framer) before the loop reads again, so no allocation per read. */
static char read_buf[65536];

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = read_buf;
  buf->len = sizeof read_buf;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  rconn_t *k = s->data;
  if (nread < 0) {
    rconn_close(k);
    return;
  }
  int rc = nread > 0 ? as_framer_feed(&k->fr, buf->base, (size_t)nread) : 0;
  uint8_t type;
  const char *p;
  size_t n;
  while (rc == 0 && !k->closing && (rc = as_framer_next(&k->fr, &type, &p, &n)) == 1) {
    rc = 0;
    if (type == AS_FR_CALL) on_call(k, p, n);
    else if (type == AS_FR_CANCEL) on_cancel(k, p, n);
    else AS_LOGW("unexpected frame type %u on a call connection", type);
  }
  if (rc < 0 && !k->closing) {
    AS_LOGW("bad frame from a caller (%s); closing its connection", as_strerror(rc));
    rconn_close(k);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  as_replica_t *r = server->data;
  if (status < 0) return;
  rconn_t *k = calloc(1, sizeof *k);
  if (!k) return;
  uv_pipe_init(r->loop, &k->pipe, 0);
  k->pipe.data = k;
  k->r = r;
  as_framer_init(&k->fr, 0);
  as_wq_init(&k->wq, &r->flusher, (uv_stream_t *)&k->pipe);
  if (uv_accept(server, (uv_stream_t *)&k->pipe) < 0) {
    uv_close((uv_handle_t *)&k->pipe, rconn_closed);
    return;
  }
  k->next = r->conns;
  if (r->conns) r->conns->prev = k;
  r->conns = k;
  uv_read_start((uv_stream_t *)&k->pipe, alloc_cb, read_cb);
}

/* ---- lifecycle ----------------------------------------------------------------- */

int as_replica_start(uv_loop_t *loop, const as_replica_cfg_t *cfg, as_caller_t *caller,
                     as_ready_cb ready_cb, void *ud, as_replica_t **out) {
  as_replica_t *r = calloc(1, sizeof *r);
  if (!r) return AS_ENOMEM;
  r->loop = loop;
  r->caller = caller;
  r->table = cfg->table;
  r->slot = cfg->slot;
  r->app = strdup(cfg->app);
  r->deployment = strdup(cfg->deployment);
  r->replica_id = strdup(cfg->replica_id);
  r->socket_path = strdup(cfg->socket_path);
  r->ready_cb = ready_cb;
  r->ready_ud = ud;
  *out = r;
  if (as_flusher_init(loop, &r->flusher)) return AS_ENOMEM;
  asl_context_t ctx = {r->app, r->deployment, r->replica_id};
  r->L = asl_state_new(&host_ops, r, &ctx);
  if (!r->L) return AS_ENOMEM;

  char err[512];
  if (asl_run_file(r->L, cfg->file, err, sizeof err)) {
    ready_cb(ud, 0, 0, 0, err);
    return 0;
  }
  uv_pipe_init(loop, &r->server, 0);
  r->server.data = r;
  unlink(r->socket_path);
  int rc = uv_pipe_bind(&r->server, r->socket_path);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&r->server, 511, on_connection);
  if (rc < 0) {
    snprintf(err, sizeof err, "cannot listen on %s: %s", r->socket_path, uv_strerror(rc));
    ready_cb(ud, 0, 0, 0, err);
    return 0;
  }
  r->listening = 1;

  lua_State *L = r->L;
  lua_pushstring(L, cfg->class_name);
  as_dec_t d;
  as_dec_init(&d, cfg->args, cfg->args_len);
  if (asl_decode(L, &d)) lua_newtable(L);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, r->app);
  lua_setfield(L, -2, "app_name");
  lua_pushstring(L, r->deployment);
  lua_setfield(L, -2, "deployment");
  lua_pushstring(L, r->replica_id);
  lua_setfield(L, -2, "replica_id");
  lua_pushstring(L, cfg->route_prefix ? cfg->route_prefix : "/");
  lua_setfield(L, -2, "route_prefix");
  if (cfg->user_config) {
    as_dec_init(&d, cfg->user_config, cfg->user_config_len);
    if (asl_decode(L, &d)) lua_pushnil(L);
  } else {
    lua_pushnil(L);
  }
  if (asl_call_module(L, "_init", 4, 0)) ready_cb(ud, 0, 0, 0, "the actorserve module failed to start the replica");
  return 0;
}

static void server_closed(uv_handle_t *h) { (void)h; }

void as_replica_drain(as_replica_t *r, void (*done)(void *ud), void *ud) {
  r->draining = 1;
  r->drained = done;
  r->drained_ud = ud;
  if (r->listening) {
    r->listening = 0;
    uv_close((uv_handle_t *)&r->server, server_closed);
    unlink(r->socket_path);
  }
  if (!r->drain_poll_open) {
    uv_timer_init(r->loop, &r->drain_poll);
    r->drain_poll.data = r;
    r->drain_poll_open = 1;
    uv_timer_start(&r->drain_poll, drain_poll_cb, 5, 5);
  }
  check_drained(r);
}

size_t as_replica_running(const as_replica_t *r) { return r->running; }

static void free_now(as_replica_t *r) {
  free(r->app);
  free(r->deployment);
  free(r->replica_id);
  free(r->socket_path);
  free(r);
}

/* The handles embedded in the replica close asynchronously: the last one to
 * close frees it (the worker runs the loop once more after as_replica_free). */
static void embedded_closed(uv_handle_t *h) {
  as_replica_t *r = h->data;
  if (--r->pending_closes == 0) free_now(r);
}

void as_replica_free(as_replica_t *r) {
  if (!r) return;
  r->freeing = 1;
  r->pending_closes = 1; /* held until the end of this function */
  if (r->drain_poll_open) {
    r->drain_poll_open = 0;
    r->pending_closes++;
    uv_close((uv_handle_t *)&r->drain_poll, embedded_closed);
  }
  if (r->listening) {
    r->listening = 0;
    r->pending_closes++;
    uv_close((uv_handle_t *)&r->server, embedded_closed);
    unlink(r->socket_path);
  }
  as_flusher_close(&r->flusher);
  while (r->timers) {
    htimer_t *ht = r->timers;
    timer_unlink(ht);
    uv_close((uv_handle_t *)&ht->t, timer_closed);
  }
  while (r->conns) rconn_close(r->conns);
  for (int i = 0; i < TOKEN_BUCKETS; i++) {
    while (r->buckets[i]) {
      rreq_t *q = r->buckets[i];
      r->buckets[i] = q->bnext;
      free(q);
    }
  }
  asl_state_close(r->L);
  r->L = NULL;
  if (--r->pending_closes == 0) free_now(r);
}

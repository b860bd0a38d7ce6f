/* conn.c — the calling side of the actor protocol (see as_caller_t in
 * runtime.h). The proxy and every worker own one caller. A call is encoded
 * into its CALL frame once; it is admitted to a replica by power of two
 * choices over the shared in-flight counts, written on that replica's Unix
 * socket connection, and matched with its REPLY or STREAM_* frames by id.
 * Calls that find every replica at max_ongoing_requests wait in the
 * deployment's queue (bounded by max_queued_requests) and are retried when an
 * answer arrives, when the routes change, and on a short timer.
 */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "runtime.h"

#define RETRY_MS 2

enum { CALL_QUEUED = 1, CALL_INFLIGHT = 2 };

typedef struct conn_s conn_t;

struct as_call_s {
  uint64_t id;
  as_caller_t *c;
  as_call_cb cb;          /* NULL once cancelled */
  void *ud;
  int state;              /* CALL_QUEUED or CALL_INFLIGHT */
  char *route;            /* deployment key, for queued calls */
  as_buf_t frame;         /* the CALL frame, built once */
  conn_t *conn;           /* in flight: the connection it went out on */
  as_call_t *prev, *next; /* queue or connection list */
};

typedef struct route_s {
  char *key;              /* "app/Deployment" */
  int max_queued;         /* -1: unlimited */
  int n;                  /* running replicas */
  uint32_t *slots;        /* their table slots */
  uint32_t *gens;         /* and generations */
  char **paths;           /* and socket paths */
  uint8_t *down;          /* a connection to it failed: skip it until new routes come */
  as_call_t *qhead, *qtail;
  size_t qlen;
} route_t;

struct conn_s {
  uv_pipe_t pipe;
  as_caller_t *c;
  uint32_t slot, gen;
  as_framer_t fr;
  int closing;
  int connected;          /* connect succeeded: calls written here were delivered */
  as_wq_t wq;             /* frames waiting for this iteration's write */
  as_call_t *head;        /* calls in flight on this connection */
};

struct as_caller_s {
  uv_loop_t *loop;
  as_table_t *table;
  route_t *routes;
  int nroutes;
  conn_t **conns;         /* by table slot */
  uint64_t next_id;
  uint64_t rng;
  uv_timer_t retry;
  as_flusher_t flusher;   /* writes each connection's frames once per iteration */
  size_t busy;            /* calls queued or in flight */
  int open_handles;       /* handles not yet closed, for as_caller_free */
  int freeing;
};

static void list_push(as_call_t **head, as_call_t *call) {
  call->prev = NULL;
  call->next = *head;
  if (*head) (*head)->prev = call;
  *head = call;
}

static void list_remove(as_call_t **head, as_call_t *call) {
  if (call->prev) call->prev->next = call->next; else *head = call->next;
  if (call->next) call->next->prev = call->prev;
  call->prev = call->next = NULL;
}

static void call_free(as_call_t *call) {
  call->c->busy--;
  as_buf_free(&call->frame);
  free(call->route);
  free(call);
}

static void queue_push_front(route_t *r, as_call_t *call);

static route_t *find_route(as_caller_t *c, const char *key) {
  for (int i = 0; i < c->nroutes; i++)
    if (strcmp(c->routes[i].key, key) == 0) return &c->routes[i];
  return NULL;
}

/* ---- connections -------------------------------------------------------- */

static void maybe_finish_free(as_caller_t *c);

static void conn_closed(uv_handle_t *h) {
  conn_t *k = h->data;
  as_caller_t *c = k->c;
  as_framer_free(&k->fr);
  free(k);
  c->open_handles--;
  maybe_finish_free(c);
}

/* Closes the connection. The replica behind it is skipped from now on (until
 * the controller sends new routes). Calls that never reached it (the
 * connection never opened) go back to the front of their queue; calls it had
 * received fail, since they may have run. */
static void conn_fail(conn_t *k) {
  if (k->closing) return;
  k->closing = 1;
  as_caller_t *c = k->c;
  if (c->conns[k->slot] == k) c->conns[k->slot] = NULL;
  for (int i = 0; i < c->nroutes; i++)
    for (int j = 0; j < c->routes[i].n; j++)
      if (c->routes[i].slots[j] == k->slot && c->routes[i].gens[j] == k->gen) c->routes[i].down[j] = 1;
  as_wq_close(&k->wq);
  while (k->head) {
    as_call_t *call = k->head;
    list_remove(&k->head, call);
    route_t *r = (k->connected || c->freeing) ? NULL : find_route(c, call->route);
    if (r) {
      as_slot_release(&c->table->slots[k->slot]);
      call->conn = NULL;
      queue_push_front(r, call);
      continue;
    }
    if (call->cb) call->cb(call->ud, AS_EV_FAILED, NULL);
    call_free(call);
  }
  uv_close((uv_handle_t *)&k->pipe, conn_closed);
}

static void pump(as_caller_t *c);

static void on_frame(conn_t *k, uint8_t type, const char *p, size_t n) {
  int ev;
  switch (type) {
    case AS_FR_REPLY: ev = AS_EV_REPLY; break;
    case AS_FR_STREAM_START: ev = AS_EV_STREAM_START; break;
    case AS_FR_STREAM_DATA: ev = AS_EV_STREAM_DATA; break;
    case AS_FR_STREAM_END: ev = AS_EV_STREAM_END; break;
    default:
      AS_LOGW("caller: unexpected frame type %u from replica slot %u", type, k->slot);
      return;
  }
  as_dec_t d;
  as_val_t v;
  as_dec_init(&d, p, n);
  if (as_dec_next(&d, &v) || v.type != AS_T_INT) {
    AS_LOGW("caller: malformed frame from replica slot %u", k->slot);
    return;
  }
  as_call_t *call = k->head;
  while (call && call->id != (uint64_t)v.i) call = call->next;
  if (!call) return; /* answer to a call that already failed */
  int last = ev == AS_EV_REPLY || ev == AS_EV_STREAM_END;
  if (call->cb) call->cb(call->ud, ev, &d);
  if (last) {
    list_remove(&k->head, call);
    call_free(call);
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
  conn_t *k = s->data;
  if (nread < 0) {
    conn_fail(k);
    pump(k->c);
    return;
  }
  int rc = nread > 0 ? as_framer_feed(&k->fr, buf->base, (size_t)nread) : 0;
  if (rc) {
    conn_fail(k);
    return;
  }
  uint8_t type;
  const char *p;
  size_t n;
  while (!k->closing && (rc = as_framer_next(&k->fr, &type, &p, &n)) == 1) on_frame(k, type, p, n);
  if (rc < 0) conn_fail(k);
  pump(k->c);
}

static void connect_cb(uv_connect_t *req, int status) {
  conn_t *k = req->data;
  free(req);
  if (k->closing) return;
  if (status < 0) {
    AS_LOGW("caller: cannot reach replica slot %u: %s", k->slot, uv_strerror(status));
    conn_fail(k);
    pump(k->c);
    return;
  }
  k->connected = 1;
  if (uv_read_start((uv_stream_t *)&k->pipe, alloc_cb, read_cb) < 0) conn_fail(k);
}

static conn_t *get_conn(as_caller_t *c, uint32_t slot, uint32_t gen, const char *path) {
  conn_t *k = c->conns[slot];
  if (k && k->gen == gen) return k;
  if (k) conn_fail(k); /* the replica in that slot was replaced */
  k = calloc(1, sizeof *k);
  uv_connect_t *req = malloc(sizeof *req);
  if (!k || !req || uv_pipe_init(c->loop, &k->pipe, 0) < 0) {
    free(k);
    free(req);
    return NULL;
  }
  c->open_handles++;
  k->c = c;
  k->slot = slot;
  k->gen = gen;
  k->pipe.data = k;
  as_framer_init(&k->fr, 0);
  as_wq_init(&k->wq, &c->flusher, (uv_stream_t *)&k->pipe);
  req->data = k;
  uv_pipe_connect(req, &k->pipe, path, connect_cb);
  c->conns[slot] = k;
  return k;
}

static int conn_write(conn_t *k, const char *p, size_t n) {
  return as_buf_append(as_wq_buf(&k->wq), p, n);
}

/* ---- admission and queues ------------------------------------------------ */

/* Tries to send a call now. Returns 1 sent, 0 no replica free, <0 error. */
static int try_send(as_caller_t *c, route_t *r, as_call_t *call) {
  uint32_t up[64];
  uint32_t *ids = r->slots;
  int n = r->n;
  for (int i = 0; i < r->n; i++) {
    if (!r->down[i]) continue;
    /* some replica is down: choose among the others */
    ids = r->n <= 64 ? up : malloc(sizeof *ids * (size_t)r->n);
    if (!ids) return AS_ENOMEM;
    n = 0;
    for (int j = 0; j < r->n; j++)
      if (!r->down[j]) ids[n++] = r->slots[j];
    break;
  }
  int slot = n > 0 ? as_p2c_acquire(c->table, ids, n, &c->rng) : -1;
  if (ids != r->slots && ids != up) free(ids);
  if (slot < 0) return 0;
  int i = 0;
  while (i < r->n && r->slots[i] != (uint32_t)slot) i++;
  conn_t *k = get_conn(c, (uint32_t)slot, r->gens[i], r->paths[i]);
  if (!k || conn_write(k, call->frame.data, call->frame.len)) {
    as_slot_release(&c->table->slots[slot]);
    return AS_EIO;
  }
  call->state = CALL_INFLIGHT; /* the frame stays until the call ends, in case it must be resent */
  call->conn = k;
  list_push(&k->head, call);
  return 1;
}

static void queue_remove(route_t *r, as_call_t *call) {
  if (call->prev) call->prev->next = call->next; else r->qhead = call->next;
  if (call->next) call->next->prev = call->prev; else r->qtail = call->prev;
  call->prev = call->next = NULL;
  r->qlen--;
}

static void queue_push(route_t *r, as_call_t *call) {
  call->state = CALL_QUEUED;
  call->next = NULL;
  call->prev = r->qtail;
  if (r->qtail) r->qtail->next = call; else r->qhead = call;
  r->qtail = call;
  r->qlen++;
}

static void queue_push_front(route_t *r, as_call_t *call) {
  call->state = CALL_QUEUED;
  call->prev = NULL;
  call->next = r->qhead;
  if (r->qhead) r->qhead->prev = call; else r->qtail = call;
  r->qhead = call;
  r->qlen++;
}

static void retry_cb(uv_timer_t *t) { pump(t->data); }

static void pump(as_caller_t *c) {
  int waiting = 0;
  for (int i = 0; i < c->nroutes; i++) {
    route_t *r = &c->routes[i];
    while (r->qhead) {
      as_call_t *call = r->qhead;
      queue_remove(r, call); /* try_send links a sent call into its connection */
      int rc = try_send(c, r, call);
      if (rc == 0) {
        queue_push_front(r, call);
        break;
      }
      if (rc < 0) {
        if (call->cb) call->cb(call->ud, AS_EV_FAILED, NULL);
        call_free(call);
      }
    }
    if (r->qhead) waiting = 1;
  }
  if (c->freeing) return;
  if (waiting && !uv_is_active((uv_handle_t *)&c->retry))
    uv_timer_start(&c->retry, retry_cb, RETRY_MS, RETRY_MS);
  else if (!waiting && uv_is_active((uv_handle_t *)&c->retry))
    uv_timer_stop(&c->retry);
}

/* ---- public API ------------------------------------------------------------ */

as_caller_t *as_caller_new(uv_loop_t *loop, as_table_t *table) {
  as_caller_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->conns = calloc(table->nslots, sizeof *c->conns);
  if (!c->conns) {
    free(c);
    return NULL;
  }
  c->loop = loop;
  c->table = table;
  c->next_id = 1;
  c->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)uv_hrtime() ^ ((uint64_t)uv_os_getpid() << 32);
  if (c->rng == 0) c->rng = 1;
  uv_timer_init(loop, &c->retry);
  c->retry.data = c;
  if (as_flusher_init(loop, &c->flusher)) {
    free(c->conns);
    free(c);
    return NULL;
  }
  c->open_handles = 1;
  return c;
}

static void free_routes(route_t *routes, int n) {
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < routes[i].n; j++) free(routes[i].paths[j]);
    free(routes[i].paths);
    free(routes[i].slots);
    free(routes[i].gens);
    free(routes[i].down);
    free(routes[i].key);
  }
  free(routes);
}

static void maybe_finish_free(as_caller_t *c) {
  if (!c->freeing || c->open_handles > 0) return;
  free_routes(c->routes, c->nroutes);
  free(c->conns);
  free(c);
}

static void retry_closed(uv_handle_t *h) {
  as_caller_t *c = h->data;
  c->open_handles--;
  maybe_finish_free(c);
}

void as_caller_free(as_caller_t *c) {
  if (!c || c->freeing) return;
  c->freeing = 1;
  for (int i = 0; i < c->nroutes; i++) {
    route_t *r = &c->routes[i];
    while (r->qhead) {
      as_call_t *call = r->qhead;
      queue_remove(r, call);
      if (call->cb) call->cb(call->ud, AS_EV_FAILED, NULL);
      call_free(call);
    }
  }
  for (uint32_t s = 0; s < c->table->nslots; s++)
    if (c->conns[s]) conn_fail(c->conns[s]);
  as_flusher_close(&c->flusher);
  uv_close((uv_handle_t *)&c->retry, retry_closed);
}

static char *dup_str(const char *s, size_t n) {
  char *r = malloc(n + 1);
  if (r) {
    memcpy(r, s, n);
    r[n] = 0;
  }
  return r;
}

/* Reads an integer field of a codec table (positioned at its header). */
static int64_t field_int(const as_dec_t *t, const char *k, int64_t dflt) {
  as_dec_t d;
  as_val_t v;
  if (as_dec_find(t, k, &d) || as_dec_next(&d, &v) || v.type != AS_T_INT) return dflt;
  return v.i;
}

/* ROUTES payload: { [key] = { max_queued = n, replicas = { {slot, gen, path}, ... } } } */
static int parse_routes(as_caller_t *c, const char *p, size_t len, route_t **out, int *nout) {
  as_dec_t d;
  as_val_t v;
  as_dec_init(&d, p, len);
  if (as_dec_next(&d, &v) || v.type != AS_T_TABLE) return AS_EINVAL;
  for (uint32_t i = 0; i < v.narr; i++)
    if (as_dec_skip(&d)) return AS_EINVAL;
  route_t *routes = calloc(v.nhash ? v.nhash : 1, sizeof *routes);
  if (!routes) return AS_ENOMEM;
  int n = 0, rc = 0;
  for (uint32_t i = 0; i < v.nhash && rc == 0; i++) {
    as_val_t k, t;
    if (as_dec_next(&d, &k) || k.type != AS_T_STR) { rc = AS_EINVAL; break; }
    as_dec_t tstart = d;
    if (as_dec_next(&d, &t) || t.type != AS_T_TABLE) { rc = AS_EINVAL; break; }
    route_t *r = &routes[n++];
    r->key = dup_str(k.s, k.len);
    r->max_queued = (int)field_int(&tstart, "max_queued", -1);
    as_dec_t rd;
    as_val_t rv;
    if (as_dec_find(&tstart, "replicas", &rd) || as_dec_next(&rd, &rv) || rv.type != AS_T_TABLE) {
      rc = AS_EINVAL;
      break;
    }
    r->slots = calloc(rv.narr + 1, sizeof *r->slots);
    r->gens = calloc(rv.narr + 1, sizeof *r->gens);
    r->paths = calloc(rv.narr + 1, sizeof *r->paths);
    r->down = calloc(rv.narr + 1, 1);
    if (!r->key || !r->slots || !r->gens || !r->paths || !r->down) { rc = AS_ENOMEM; break; }
    for (uint32_t j = 0; j < rv.narr && rc == 0; j++) {
      as_dec_t e = rd;
      as_val_t ev, pv;
      if (as_dec_next(&rd, &ev) || ev.type != AS_T_TABLE) { rc = AS_EINVAL; break; }
      as_dec_t pd;
      int64_t slot = field_int(&e, "slot", -1);
      if (slot < 0 || (uint64_t)slot >= c->table->nslots || as_dec_find(&e, "path", &pd) ||
          as_dec_next(&pd, &pv) || pv.type != AS_T_STR) {
        rc = AS_EINVAL;
        break;
      }
      r->slots[r->n] = (uint32_t)slot;
      r->gens[r->n] = (uint32_t)field_int(&e, "gen", 0);
      r->paths[r->n] = dup_str(pv.s, pv.len);
      if (!r->paths[r->n]) { rc = AS_ENOMEM; break; }
      r->n++;
      rd = e;
      if (as_dec_skip(&rd)) rc = AS_EINVAL;
    }
    d = tstart;
    if (rc == 0 && as_dec_skip(&d)) rc = AS_EINVAL;
  }
  if (rc) {
    free_routes(routes, n);
    return rc;
  }
  *out = routes;
  *nout = n;
  return 0;
}

int as_caller_set_routes(as_caller_t *c, const char *payload, size_t len) {
  route_t *routes;
  int n;
  int rc = parse_routes(c, payload, len, &routes, &n);
  if (rc) return rc;
  /* Queued calls move to the new table; those of a deployment that is gone fail. */
  for (int i = 0; i < c->nroutes; i++) {
    route_t *old = &c->routes[i];
    route_t *r = NULL;
    for (int j = 0; j < n; j++)
      if (strcmp(routes[j].key, old->key) == 0) r = &routes[j];
    while (old->qhead) {
      as_call_t *call = old->qhead;
      queue_remove(old, call);
      if (r) {
        queue_push(r, call);
      } else {
        if (call->cb) call->cb(call->ud, AS_EV_FAILED, NULL);
        call_free(call);
      }
    }
  }
  free_routes(c->routes, c->nroutes);
  c->routes = routes;
  c->nroutes = n;
  pump(c);
  return 0;
}

int as_caller_call(as_caller_t *c, const char *deployment, int kind, const char *method,
                   const char *args, size_t len, as_call_cb cb, void *ud, as_call_t **out) {
  if (!c || !deployment || !cb) return AS_EINVAL;
  route_t *r = find_route(c, deployment);
  if (!r) return AS_ENOTFOUND;
  as_call_t *call = calloc(1, sizeof *call);
  if (!call) return AS_ENOMEM;
  call->id = c->next_id++;
  call->c = c;
  call->cb = cb;
  call->ud = ud;
  call->route = strdup(deployment);
  c->busy++;
  if (!call->route) {
    call_free(call);
    return AS_ENOMEM;
  }
  as_buf_init(&call->frame);
  size_t mark;
  int rc = as_frame_begin(&call->frame, AS_FR_CALL, &mark);
  if (!rc) rc = as_enc_int(&call->frame, (int64_t)call->id);
  if (!rc) rc = as_enc_int(&call->frame, kind);
  if (!rc) rc = as_enc_cstr(&call->frame, method ? method : "");
  if (!rc) rc = as_buf_append(&call->frame, args, len);
  if (!rc) rc = as_frame_end(&call->frame, mark);
  if (rc) {
    call_free(call);
    return rc;
  }
  rc = r->qhead ? 0 : try_send(c, r, call);
  if (rc < 0) {
    call_free(call);
    return rc;
  }
  if (rc == 0) {
    if (r->max_queued >= 0 && r->qlen >= (size_t)r->max_queued) {
      call_free(call);
      return AS_EFULL;
    }
    queue_push(r, call);
    pump(c);
  }
  if (out) *out = call;
  return 0;
}

void as_caller_cancel(as_caller_t *c, as_call_t *call) {
  if (!call) return;
  call->cb = NULL;
  if (call->state == CALL_QUEUED) {
    route_t *r = find_route(c, call->route);
    if (r) queue_remove(r, call);
    call_free(call);
    return;
  }
  /* In flight: tell the replica; the call is freed when its answer ends. */
  as_buf_t b;
  as_buf_init(&b);
  size_t mark;
  if (!as_frame_begin(&b, AS_FR_CANCEL, &mark) && !as_enc_int(&b, (int64_t)call->id) &&
      !as_frame_end(&b, mark) && call->conn && !call->conn->closing)
    conn_write(call->conn, b.data, b.len);
  as_buf_free(&b);
}

uint64_t as_call_id(const as_call_t *call) { return call->id; }

size_t as_caller_busy(const as_caller_t *c) { return c->busy; }

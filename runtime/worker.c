/* worker.c — worker mode (`actorserve __worker`): the process that hosts one
 * replica. The head starts it with a control socket on fd 3 and sends a
 * CONFIG frame (what to run), then ROUTES frames whenever replicas change, and
 * SHUTDOWN when it should drain and exit. The worker answers READY once the
 * constructor has run. If the head goes away (EOF on fd 3, or the parent-death
 * signal), the worker exits at once.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <uv.h>

#include "actors.h"
#include "node.h"

typedef struct worker_s {
  uv_loop_t *loop;
  uv_pipe_t ctrl;
  as_framer_t fr;
  as_table_t *table;
  as_caller_t *caller;
  as_replica_t *replica;
  uv_timer_t drain_timer;
  double graceful_s;
  int exit_code;
  int stopping;
  char component[160];
} worker_t;

static void ctrl_send(worker_t *w, as_buf_t *b) { as_write_copy((uv_stream_t *)&w->ctrl, b->data, b->len); }

/* READY (kind 0) or REPORT (health check, reconfigure) to the head. */
static void on_ready(void *ud, int kind, int64_t seq, int ok, const char *err) {
  worker_t *w = ud;
  as_buf_t b;
  size_t mark;
  as_buf_init(&b);
  as_frame_begin(&b, kind ? AS_FR_REPORT : AS_FR_READY, &mark);
  if (kind) {
    as_enc_int(&b, kind);
    as_enc_int(&b, seq);
  }
  as_enc_bool(&b, ok);
  as_enc_cstr(&b, err);
  as_frame_end(&b, mark);
  ctrl_send(w, &b);
  as_buf_free(&b);
  if (!ok && !kind) AS_LOGE("constructor failed: %s", err ? err : "(no message)");
}

static void stop(worker_t *w, int code) {
  if (w->stopping) return;
  w->stopping = 1;
  w->exit_code = code;
  uv_stop(w->loop);
}

static void drained(void *ud) { stop(ud, 0); }

static void drain_timeout(uv_timer_t *t) {
  worker_t *w = t->data;
  AS_LOGW("graceful shutdown timed out with %zu requests still running",
          w->replica ? as_replica_running(w->replica) : (size_t)0);
  stop(w, 0);
}

/* Copies a string field of the config table into a fresh NUL-terminated string. */
static char *cfg_str(const as_dec_t *t, const char *k) {
  as_dec_t d;
  as_val_t v;
  if (as_dec_find(t, k, &d) || as_dec_next(&d, &v) || v.type != AS_T_STR) return NULL;
  char *s = malloc(v.len + 1);
  if (s) {
    memcpy(s, v.s, v.len);
    s[v.len] = 0;
  }
  return s;
}

static double cfg_num(const as_dec_t *t, const char *k, double dflt) {
  as_dec_t d;
  as_val_t v;
  if (as_dec_find(t, k, &d) || as_dec_next(&d, &v)) return dflt;
  return v.type == AS_T_INT ? (double)v.i : v.type == AS_T_FLOAT ? v.f : dflt;
}

static void on_config(worker_t *w, const char *p, size_t n) {
  as_dec_t t;
  as_dec_init(&t, p, n);
  char *app = cfg_str(&t, "app"), *dep = cfg_str(&t, "deployment"), *cls = cfg_str(&t, "class");
  char *rid = cfg_str(&t, "replica_id"), *file = cfg_str(&t, "file"), *sock = cfg_str(&t, "socket");
  char *tpath = cfg_str(&t, "table"), *prefix = cfg_str(&t, "route_prefix");
  as_dec_t args;
  const char *args_p = NULL;
  size_t args_n = 0;
  if (as_dec_find(&t, "args", &args) == 0) {
    args_p = (const char *)args.p;
    as_dec_t end = args;
    if (as_dec_skip(&end) == 0) args_n = (size_t)(end.p - args.p);
  }
  as_dec_t uc;
  const char *uc_p = NULL;
  size_t uc_n = 0;
  if (as_dec_find(&t, "user_config", &uc) == 0) {
    as_dec_t end = uc;
    if (as_dec_skip(&end) == 0) {
      uc_p = (const char *)uc.p;
      uc_n = (size_t)(end.p - uc.p);
    }
  }
  double slot = cfg_num(&t, "slot", -1);
  w->graceful_s = cfg_num(&t, "graceful_shutdown_timeout_s", 20);
  int rc = AS_EINVAL;
  if (app && dep && cls && rid && file && sock && tpath && args_n && slot >= 0) {
    snprintf(w->component, sizeof w->component, "replica %s", rid);
    as_log_component = w->component;
    rc = as_table_open(tpath, &w->table);
    if (rc == 0 && (uint32_t)slot >= w->table->nslots) rc = AS_EINVAL;
    if (rc == 0) {
      w->caller = as_caller_new(w->loop, w->table);
      if (!w->caller) rc = AS_ENOMEM;
    }
    if (rc == 0) {
      as_replica_cfg_t cfg = {app, dep, cls, rid, file, sock, args_p, args_n, uc_p, uc_n, w->table, (uint32_t)slot,
                              prefix ? prefix : "/"};
      rc = as_replica_start(w->loop, &cfg, w->caller, on_ready, w, &w->replica);
    }
  }
  if (rc) {
    AS_LOGE("bad worker configuration: %s", as_strerror(rc));
    on_ready(w, 0, 0, 0, "bad worker configuration");
  }
  free(app); free(dep); free(cls); free(rid); free(file); free(sock); free(tpath); free(prefix);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void ctrl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  worker_t *w = s->data;
  if (nread < 0) {
    free(buf->base);
    AS_LOGW("the head went away; exiting");
    stop(w, 1);
    return;
  }
  int rc = nread > 0 ? as_framer_feed(&w->fr, buf->base, (size_t)nread) : 0;
  free(buf->base);
  uint8_t type;
  const char *p;
  size_t n;
  while (rc == 0 && (rc = as_framer_next(&w->fr, &type, &p, &n)) == 1) {
    rc = 0;
    switch (type) {
      case AS_FR_CONFIG:
        if (!w->replica) on_config(w, p, n);
        break;
      case AS_FR_ROUTES:
        if (w->caller && as_caller_set_routes(w->caller, p, n)) AS_LOGW("bad ROUTES frame");
        break;
      case AS_FR_HEALTH: {
        as_dec_t d;
        as_val_t seq;
        as_dec_init(&d, p, n);
        if (w->replica && as_dec_next(&d, &seq) == 0 && seq.type == AS_T_INT) as_replica_check_health(w->replica, seq.i);
        break;
      }
      case AS_FR_RECONFIGURE:
        if (w->replica) as_replica_reconfigure(w->replica, p, n);
        break;
      case AS_FR_SHUTDOWN:
        if (!w->replica) {
          stop(w, 0);
          break;
        }
        uv_timer_start(&w->drain_timer, drain_timeout, (uint64_t)(w->graceful_s * 1000.0), 0);
        as_replica_drain(w->replica, drained, w);
        break;
      default:
        AS_LOGW("unexpected control frame %u", type);
    }
  }
  if (rc < 0) {
    AS_LOGE("bad control frame: %s", as_strerror(rc));
    stop(w, 1);
  }
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int as_worker_main(void) {
  /* Ctrl-C, `timeout`, `kill -- -PGID` reach the whole process group: the
   * head alone decides, and drains its workers in order. If the head dies,
   * the kernel kills the worker (and EOF on fd 3 ends it too). */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  as_log_component = "worker";
  const char *lv = getenv("ACTORSERVE_LOG_LEVEL");
  if (lv && lv[0] >= '0' && lv[0] <= '3') as_log_level = lv[0] - '0';
  worker_t w;
  memset(&w, 0, sizeof w);
  w.loop = uv_default_loop();
  as_framer_init(&w.fr, 0);
  uv_timer_init(w.loop, &w.drain_timer);
  w.drain_timer.data = &w;
  if (uv_pipe_init(w.loop, &w.ctrl, 0) < 0 || uv_pipe_open(&w.ctrl, 3) < 0) {
    AS_LOGE("worker mode needs the control socket on fd 3 (it is started by `actorserve run`)");
    return 1;
  }
  w.ctrl.data = &w;
  uv_read_start((uv_stream_t *)&w.ctrl, alloc_cb, ctrl_read);
  if (getppid() == 1) return 1; /* the head died before we started */
  uv_run(w.loop, UV_RUN_DEFAULT);

  if (w.caller) as_caller_free(w.caller); /* fails pending handle calls into Lua first */
  as_replica_free(w.replica);
  uv_walk(w.loop, close_walk, NULL);
  uv_run(w.loop, UV_RUN_DEFAULT);
  uv_loop_close(w.loop);
  as_framer_free(&w.fr);
  as_table_close(w.table);
  return w.exit_code;
}

/* proxy.c — the HTTP proxy actor of the head process. libuv accepts and
 * reads connections, libhttp-parser parses HTTP/1.x (keep-alive, pipelining,
 * Content-Length and chunked bodies). Each complete request is matched to an
 * application by longest route_prefix and sent as a CALL to its ingress
 * deployment through the caller; built-in routes (/-/healthz, /-/routes,
 * /-/status) are answered here. Answers are written in request order per
 * connection, whole or streamed as chunks. Limits: header bytes (431), body
 * bytes (413), malformed input (400 and close), request_timeout_s (408),
 * a header timeout against slow clients, and a keep-alive idle timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "actors.h"
#include "asl.h"

#define MAX_PIPELINED 64

typedef struct hconn_s hconn_t;
typedef struct hreq_s hreq_t;

typedef struct hdr_s {
  size_t noff, nlen, voff, vlen;  /* name and value in the request's hraw */
} hdr_t;

struct hreq_s {
  hconn_t *c;
  hreq_t *next;           /* next request on the connection */
  as_buf_t url;
  as_buf_t hraw;          /* header bytes */
  hdr_t *hdrs;
  size_t nhdrs, caphdrs;
  as_buf_t body;
  int method;             /* enum http_method */
  int keep_alive;         /* the client allows reuse */
  int http10;
  char request_id[129];
  as_buf_t out;           /* answer bytes not yet written */
  int complete;           /* the answer is wholly in out (or written) */
  int streaming;          /* a chunked answer is being produced */
  int dispatched;         /* counted in the proxy's in-flight total */
  int close_after;        /* close the connection after this answer */
  as_call_t *call;        /* the CALL in flight */
  uv_timer_t *timeout;    /* request_timeout_s */
};

struct hconn_s {
  uv_tcp_t tcp;
  as_proxy_t *p;
  http_parser parser;
  hreq_t *cur;            /* being parsed */
  hreq_t *head, *tail;    /* parsed, in order */
  size_t nreqs;
  size_t header_bytes;
  int last_was_value;
  int error_status;       /* set by a callback that refuses the request */
  uv_timer_t timer;       /* idle and header timeouts */
  int writes;             /* uv_write requests in flight */
  int closing;
  int close_when_done;    /* no more requests: close once answers are written */
  int reading;
  int open_handles;       /* socket and timer, until both have closed */
  int parsing;            /* inside http_parser_execute: answers wait for its flush */
  uint64_t cur_started;   /* when the request being parsed began (ms) */
  as_buf_t pending;       /* bytes read but not parsed while the parser is paused */
  hconn_t *prev, *next;
};

struct as_proxy_s {
  uv_loop_t *loop;
  as_proxy_cfg_t cfg;
  char *host;
  uv_tcp_t server;
  int listening;
  as_caller_t *caller;
  as_route_t *routes;
  int nroutes;
  as_status_fn status;
  void *status_ud;
  http_parser_settings settings;
  hconn_t *conns;
  size_t nconns;
  size_t inflight;        /* requests parsed and not yet fully answered */
  uint64_t rng;
};

static void conn_close(hconn_t *c);
static void flush(hconn_t *c);
static void arm_timer(hconn_t *c);

/* ---- requests ---------------------------------------------------------------- */

static hreq_t *req_new(hconn_t *c) {
  hreq_t *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->c = c;
  as_buf_init(&r->url);
  as_buf_init(&r->hraw);
  as_buf_init(&r->body);
  as_buf_init(&r->out);
  return r;
}

static void timeout_closed(uv_handle_t *h) { free(h); }

static void req_stop_timer(hreq_t *r) {
  if (r->timeout) {
    r->timeout->data = NULL;
    uv_close((uv_handle_t *)r->timeout, timeout_closed);
    r->timeout = NULL;
  }
}

static void req_free(hreq_t *r) {
  if (r->call) as_caller_cancel(r->c->p->caller, r->call);
  req_stop_timer(r);
  if (r->dispatched) r->c->p->inflight--;
  as_buf_free(&r->url);
  as_buf_free(&r->hraw);
  as_buf_free(&r->body);
  as_buf_free(&r->out);
  free(r->hdrs);
  free(r);
}

static const hdr_t *find_header(const hreq_t *r, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < r->nhdrs; i++)
    if (r->hdrs[i].nlen == n && strncasecmp(r->hraw.data + r->hdrs[i].noff, name, n) == 0) return &r->hdrs[i];
  return NULL;
}

/* ---- answers ------------------------------------------------------------------- */

/* Response heads are built from literals and hand-formatted numbers: this
 * runs for every request, and printf was a quarter of the proxy's work. */
static void head_start(hreq_t *r, int status) {
  as_buf_t *o = &r->out;
  as_buf_reserve(o, 256);
  if (status == 200) {
    AS_BUF_LIT(o, "HTTP/1.1 200 OK\r\n");
    return;
  }
  AS_BUF_LIT(o, "HTTP/1.1 ");
  as_buf_append_u64(o, (uint64_t)status);
  AS_BUF_LIT(o, " ");
  const char *reason = as_http_reason(status);
  as_buf_append(o, reason, strlen(reason));
  AS_BUF_LIT(o, "\r\n");
}

static void put_content_length(as_buf_t *o, size_t n) {
  AS_BUF_LIT(o, "content-length: ");
  as_buf_append_u64(o, n);
  AS_BUF_LIT(o, "\r\n");
}

static void head_end(hreq_t *r) {
  hconn_t *c = r->c;
  as_buf_t *o = &r->out;
  if (!r->keep_alive || c->close_when_done || !c->p->listening) r->close_after = 1;
  AS_BUF_LIT(o, "x-request-id: ");
  as_buf_append(o, r->request_id, strlen(r->request_id));
  if (r->close_after) AS_BUF_LIT(o, "\r\nconnection: close\r\n\r\n");
  else if (r->http10) AS_BUF_LIT(o, "\r\nconnection: keep-alive\r\n\r\n");
  else AS_BUF_LIT(o, "\r\n\r\n");
}

/* A whole answer produced here (errors and built-in routes). */
static void answer(hreq_t *r, int status, const char *ctype, const char *body, size_t len) {
  r->out.len = 0;
  head_start(r, status);
  AS_BUF_LIT(&r->out, "content-type: ");
  as_buf_append(&r->out, ctype, strlen(ctype));
  AS_BUF_LIT(&r->out, "\r\n");
  put_content_length(&r->out, len);
  head_end(r);
  if (r->method != HTTP_HEAD) as_buf_append(&r->out, body, len);
  r->complete = 1;
  req_stop_timer(r);
}

static void answer_text(hreq_t *r, int status, const char *msg) {
  answer(r, status, "text/plain; charset=utf-8", msg, strlen(msg));
}

/* Appends the handler's headers (a flat codec list name, value, ...). */
static int copy_headers(hreq_t *r, as_dec_t *d) {
  as_val_t t, k, v;
  if (as_dec_next(d, &t) || t.type != AS_T_TABLE) return AS_EINVAL;
  if (t.narr % 2) return AS_EINVAL;
  for (uint32_t i = 0; i < t.narr / 2; i++) {
    if (as_dec_next(d, &k) || as_dec_next(d, &v) || k.type != AS_T_STR || v.type != AS_T_STR) return AS_EINVAL;
    if (as_http_header_reserved(k.s, k.len)) continue;
    if (!as_http_header_ok(k.s, k.len, v.s, v.len)) {
      AS_LOGW("request %s: dropped a header the handler returned (bad name or value)", r->request_id);
      continue;
    }
    as_buf_append(&r->out, k.s, k.len);
    as_buf_append(&r->out, ": ", 2);
    as_buf_append(&r->out, v.s, v.len);
    as_buf_append(&r->out, "\r\n", 2);
  }
  for (uint32_t i = 0; i < t.nhash * 2; i++)
    if (as_dec_skip(d)) return AS_EINVAL;
  return 0;
}

/* REPLY of an HTTP call: ok, {status, headers (flat list), body}. */
static void on_reply(hreq_t *r, as_dec_t *d) {
  as_val_t ok, t, st, body;
  if (as_dec_next(d, &ok) || ok.type != AS_T_TRUE) {
    answer_text(r, 500, "Internal Server Error: the replica could not answer\n");
    return;
  }
  if (as_dec_next(d, &t) || t.type != AS_T_TABLE || t.narr != 3 || as_dec_next(d, &st) || st.type != AS_T_INT ||
      st.i < 100 || st.i > 999) {
    answer_text(r, 500, "Internal Server Error: malformed answer from the replica\n");
    return;
  }
  r->out.len = 0;
  head_start(r, (int)st.i);
  if (copy_headers(r, d) || as_dec_next(d, &body) || body.type != AS_T_STR) {
    answer_text(r, 500, "Internal Server Error: malformed answer from the replica\n");
    return;
  }
  put_content_length(&r->out, body.len);
  head_end(r);
  if (r->method != HTTP_HEAD) as_buf_append(&r->out, body.s, body.len);
  r->complete = 1;
}

static void on_stream_start(hreq_t *r, as_dec_t *d) {
  as_val_t st;
  if (as_dec_next(d, &st) || st.type != AS_T_INT || st.i < 100 || st.i > 999) st.i = 200;
  r->out.len = 0;
  head_start(r, (int)st.i);
  copy_headers(r, d);
  if (r->http10) r->keep_alive = 0; /* HTTP/1.0: the body ends when the connection closes */
  else as_buf_appendf(&r->out, "transfer-encoding: chunked\r\n");
  as_buf_appendf(&r->out, "cache-control: no-cache\r\n");
  head_end(r);
  r->streaming = 1;
  req_stop_timer(r); /* a stream may run as long as it produces */
}

static void on_stream_data(hreq_t *r, as_dec_t *d) {
  as_val_t v;
  if (!r->streaming || as_dec_next(d, &v) || v.type != AS_T_STR || v.len == 0) return;
  if (r->method == HTTP_HEAD) return;
  if (r->http10) {
    as_buf_append(&r->out, v.s, v.len);
  } else {
    as_buf_appendf(&r->out, "%zx\r\n", v.len);
    as_buf_append(&r->out, v.s, v.len);
    as_buf_append(&r->out, "\r\n", 2);
  }
}

static void on_stream_end(hreq_t *r, as_dec_t *d) {
  as_val_t ok;
  if (as_dec_next(d, &ok) || ok.type != AS_T_TRUE) {
    /* Cut the stream short so the client sees it did not finish. */
    r->close_after = 1;
    r->c->close_when_done = 1;
  } else if (!r->http10 && r->method != HTTP_HEAD) {
    as_buf_append(&r->out, "0\r\n\r\n", 5);
  }
  r->complete = 1;
}

static void call_cb(void *ud, int ev, as_dec_t *d) {
  hreq_t *r = ud;
  hconn_t *c = r->c;
  switch (ev) {
    case AS_EV_REPLY: r->call = NULL; on_reply(r, d); break;
    case AS_EV_STREAM_START: on_stream_start(r, d); break;
    case AS_EV_STREAM_DATA: on_stream_data(r, d); break;
    case AS_EV_STREAM_END: r->call = NULL; on_stream_end(r, d); break;
    case AS_EV_FAILED:
      r->call = NULL;
      if (r->streaming) {
        r->close_after = 1;
        c->close_when_done = 1;
        r->complete = 1;
      } else {
        AS_LOGW("request %s: the replica died while handling it", r->request_id);
        answer_text(r, 500, "Internal Server Error: the replica died while handling this request\n");
      }
      break;
  }
  if (!c->parsing) flush(c);
}

static void timeout_fired(uv_timer_t *t) {
  hreq_t *r = t->data;
  if (!r || r->complete || r->streaming) return;
  if (r->call) {
    as_caller_cancel(r->c->p->caller, r->call);
    r->call = NULL;
  }
  AS_LOGW("request %s timed out after %.3g s", r->request_id, r->c->p->cfg.request_timeout_s);
  answer_text(r, 408, "Request Timeout\n");
  flush(r->c);
}

/* ---- dispatch ------------------------------------------------------------------ */

/* The call's arguments: one request, positional
 * {method, path, query, request_id, body, headers (flat list)}. */
static void encode_request(hreq_t *r, const char *path, size_t plen, const char *query, size_t qlen,
                           as_buf_t *b) {
  as_enc_table(b, 1, 0);
  as_enc_table(b, 6, 0);
  as_enc_cstr(b, http_method_str((enum http_method)r->method));
  as_enc_str(b, path, plen);
  as_enc_str(b, query, qlen);
  as_enc_cstr(b, r->request_id);
  as_enc_str(b, r->body.data ? r->body.data : "", r->body.len);
  as_enc_table(b, (uint32_t)(r->nhdrs * 2), 0);
  for (size_t i = 0; i < r->nhdrs; i++) {
    as_enc_str(b, r->hraw.data + r->hdrs[i].noff, r->hdrs[i].nlen);
    as_enc_str(b, r->hraw.data + r->hdrs[i].voff, r->hdrs[i].vlen);
  }
}

static void answer_routes(hreq_t *r) {
  as_proxy_t *p = r->c->p;
  as_buf_t b;
  as_buf_init(&b);
  as_buf_append(&b, "{", 1);
  for (int i = 0; i < p->nroutes; i++)
    as_buf_appendf(&b, "%s\"%s\":\"%s\"", i ? "," : "", p->routes[i].prefix, p->routes[i].app);
  as_buf_append(&b, "}", 1);
  answer(r, 200, "application/json", b.data, b.len);
  as_buf_free(&b);
}

static void dispatch(hreq_t *r) {
  hconn_t *c = r->c;
  as_proxy_t *p = c->p;
  struct http_parser_url u;
  http_parser_url_init(&u);
  const char *url = r->url.data ? r->url.data : "";
  if (r->url.len == 0 || http_parser_parse_url(url, r->url.len, 0, &u) || !(u.field_set & (1 << UF_PATH))) {
    answer_text(r, 400, "Bad Request: invalid request target\n");
    r->close_after = 1;
    return;
  }
  const char *path = url + u.field_data[UF_PATH].off;
  size_t plen = u.field_data[UF_PATH].len;
  const char *query = (u.field_set & (1 << UF_QUERY)) ? url + u.field_data[UF_QUERY].off : "";
  size_t qlen = (u.field_set & (1 << UF_QUERY)) ? u.field_data[UF_QUERY].len : 0;

  if (p->cfg.admin) {
    as_admin_req_t ar = {http_method_str((enum http_method)r->method), path, plen,
                         r->body.data ? r->body.data : "", r->body.len, NULL};
    char cpath[4096];
    const hdr_t *h = find_header(r, "x-actorserve-config-path");
    if (h && h->vlen < sizeof cpath) {
      memcpy(cpath, r->hraw.data + h->voff, h->vlen);
      cpath[h->vlen] = 0;
      ar.config_path = cpath;
    }
    as_buf_t b;
    as_buf_init(&b);
    const char *ctype = "application/json";
    int status = p->cfg.admin(p->cfg.admin_ud, &ar, &b, &ctype);
    answer(r, status, ctype, b.data ? b.data : "", b.len);
    as_buf_free(&b);
    return;
  }
  if (plen == 10 && memcmp(path, "/-/healthz", 10) == 0) {
    answer_text(r, 200, "success");
    return;
  }
  if (plen == 9 && memcmp(path, "/-/routes", 9) == 0) {
    answer_routes(r);
    return;
  }
  if (plen == 9 && memcmp(path, "/-/status", 9) == 0 && p->status) {
    as_buf_t b;
    as_buf_init(&b);
    p->status(p->status_ud, &b);
    answer(r, 200, "application/json", b.data ? b.data : "{}", b.data ? b.len : 2);
    as_buf_free(&b);
    return;
  }
  int i = as_http_route_match(p->routes, p->nroutes, path, plen);
  if (i < 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "Path '%.*s' not found. Ping http://.../-/routes for available routes.\n",
             (int)(plen > 200 ? 200 : plen), path);
    answer_text(r, 404, msg);
    return;
  }
  as_buf_t args;
  as_buf_init(&args);
  encode_request(r, path, plen, query, qlen, &args);
  int rc = as_caller_call(p->caller, p->routes[i].ingress, ASL_KIND_HTTP, "__call", args.data, args.len, call_cb,
                          r, &r->call);
  as_buf_free(&args);
  if (rc == AS_EFULL) {
    r->call = NULL;
    answer_text(r, 503, "Service Unavailable: too many requests queued\n");
    return;
  }
  if (rc) {
    r->call = NULL;
    answer_text(r, 503, "Service Unavailable: the application has no replica to take the request\n");
    return;
  }
  if (p->cfg.request_timeout_s > 0) {
    r->timeout = malloc(sizeof *r->timeout);
    if (r->timeout) {
      uv_timer_init(p->loop, r->timeout);
      r->timeout->data = r;
      uv_timer_start(r->timeout, timeout_fired, (uint64_t)(p->cfg.request_timeout_s * 1000.0), 0);
    }
  }
}

/* ---- parser callbacks ------------------------------------------------------------ */

static int header_budget(hconn_t *c, size_t n) {
  c->header_bytes += n;
  if (c->header_bytes > c->p->cfg.max_header_bytes) {
    c->error_status = 431;
    return -1;
  }
  return 0;
}

static int on_message_begin(http_parser *hp) {
  hconn_t *c = hp->data;
  c->cur = req_new(c);
  c->cur_started = uv_now(c->p->loop);
  c->header_bytes = 0;
  c->last_was_value = 0;
  return c->cur ? 0 : -1;
}

static int on_url(http_parser *hp, const char *at, size_t n) {
  hconn_t *c = hp->data;
  if (header_budget(c, n)) return -1;
  return as_buf_append(&c->cur->url, at, n) ? -1 : 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t n) {
  hconn_t *c = hp->data;
  hreq_t *r = c->cur;
  if (header_budget(c, n + 4)) return -1;
  if (r->nhdrs == 0 || c->last_was_value) {
    if (r->nhdrs == r->caphdrs) {
      size_t cap = r->caphdrs ? r->caphdrs * 2 : 16;
      hdr_t *h = realloc(r->hdrs, cap * sizeof *h);
      if (!h) return -1;
      r->hdrs = h;
      r->caphdrs = cap;
    }
    hdr_t *h = &r->hdrs[r->nhdrs++];
    memset(h, 0, sizeof *h);
    h->noff = r->hraw.len;
    c->last_was_value = 0;
  }
  r->hdrs[r->nhdrs - 1].nlen += n;
  return as_buf_append(&r->hraw, at, n) ? -1 : 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t n) {
  hconn_t *c = hp->data;
  hreq_t *r = c->cur;
  if (header_budget(c, n)) return -1;
  if (r->nhdrs == 0) return -1;
  hdr_t *h = &r->hdrs[r->nhdrs - 1];
  if (!c->last_was_value) {
    h->voff = r->hraw.len;
    c->last_was_value = 1;
  }
  h->vlen += n;
  return as_buf_append(&r->hraw, at, n) ? -1 : 0;
}

static int on_headers_complete(http_parser *hp) {
  hconn_t *c = hp->data;
  hreq_t *r = c->cur;
  if ((hp->flags & F_CONTENTLENGTH) && hp->content_length > c->p->cfg.max_body_bytes) {
    c->error_status = 413;
    return -1;
  }
  r->method = hp->method;
  r->http10 = hp->http_major == 1 && hp->http_minor == 0;
  r->keep_alive = http_should_keep_alive(hp);
  const hdr_t *id = find_header(r, "x-request-id");
  if (id && as_http_request_id_valid(r->hraw.data + id->voff, id->vlen))
    snprintf(r->request_id, sizeof r->request_id, "%.*s", (int)id->vlen, r->hraw.data + id->voff);
  else
    as_http_new_request_id(r->request_id, &c->p->rng);
  return 0;
}

static int on_body(http_parser *hp, const char *at, size_t n) {
  hconn_t *c = hp->data;
  hreq_t *r = c->cur;
  if (r->body.len + n > c->p->cfg.max_body_bytes) {
    c->error_status = 413;
    return -1;
  }
  return as_buf_append(&r->body, at, n) ? -1 : 0;
}

static int on_message_complete(http_parser *hp) {
  hconn_t *c = hp->data;
  hreq_t *r = c->cur;
  c->cur = NULL;
  if (c->tail) c->tail->next = r; else c->head = r;
  c->tail = r;
  c->nreqs++;
  r->dispatched = 1;
  c->p->inflight++;
  if (!c->p->listening) r->close_after = 1;
  dispatch(r);
  if (r->close_after || !r->keep_alive) {
    c->close_when_done = 1;
    http_parser_pause(hp, 1); /* nothing after this request is read */
  } else if (c->nreqs >= MAX_PIPELINED) {
    http_parser_pause(hp, 1);
  }
  return 0;
}

/* ---- connection I/O ---------------------------------------------------------------- */

typedef struct hwrite_s {
  uv_write_t req;
  hconn_t *c;
  as_buf_t buf;
} hwrite_t;

static void maybe_close(hconn_t *c) {
  if (c->closing || c->writes > 0) return;
  if (c->close_when_done && !c->head) conn_close(c);
}

static void write_cb(uv_write_t *req, int status) {
  hwrite_t *w = (hwrite_t *)req;
  hconn_t *c = w->c;
  as_buf_free(&w->buf);
  free(w);
  c->writes--;
  c->p->inflight--; /* the write itself was counted */
  if (status < 0) {
    conn_close(c);
    return;
  }
  maybe_close(c);
}

static void send_out(hconn_t *c, hreq_t *r) {
  if (r->out.len == 0 || c->closing) return;
  hwrite_t *w = malloc(sizeof *w);
  if (!w) return;
  w->c = c;
  w->buf = r->out;
  as_buf_init(&r->out);
  uv_buf_t b = uv_buf_init(w->buf.data, (unsigned)w->buf.len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
    as_buf_free(&w->buf);
    free(w);
    conn_close(c);
    return;
  }
  c->writes++;
  c->p->inflight++;
}

static void resume_reading(hconn_t *c);

/* Writes answers in request order: finished ones whole, the first unfinished
 * one as far as it has been produced. */
static void flush(hconn_t *c) {
  while (c->head && !c->closing) {
    hreq_t *r = c->head;
    if (!r->complete && !r->streaming) break;
    send_out(c, r);
    if (!r->complete) break;
    if (r->close_after) c->close_when_done = 1;
    c->head = r->next;
    if (!c->head) c->tail = NULL;
    c->nreqs--;
    req_free(r);
    if (c->close_when_done) {
      /* Answers after a closing one are never sent. */
      while (c->head) {
        hreq_t *x = c->head;
        c->head = x->next;
        c->nreqs--;
        req_free(x);
      }
      c->tail = NULL;
    }
  }
  if (c->closing) return;
  maybe_close(c);
  if (!c->closing) {
    resume_reading(c);
    arm_timer(c);
  }
}

/* Both handles of a connection (socket and timer) live in it: it is freed
 * when the second one has closed. */
static void conn_closed(uv_handle_t *h) {
  hconn_t *c = h->data;
  if (--c->open_handles == 0) free(c);
}

static void conn_close(hconn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  as_proxy_t *p = c->p;
  while (c->head) {
    hreq_t *r = c->head;
    c->head = r->next;
    req_free(r);
  }
  if (c->cur) req_free(c->cur);
  c->cur = NULL;
  as_buf_free(&c->pending);
  if (c->prev) c->prev->next = c->next; else p->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  p->nconns--;
  uv_close((uv_handle_t *)&c->timer, conn_closed);
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void timer_fired(uv_timer_t *t) {
  hconn_t *c = t->data;
  if (c->head) return; /* answers pending: their own timeouts apply */
  if (c->cur) {
    /* A request started but did not finish in time. */
    hreq_t *r = req_new(c);
    if (r) {
      as_http_new_request_id(r->request_id, &c->p->rng);
      r->close_after = 1;
      c->head = c->tail = r;
      c->nreqs++;
      answer_text(r, 408, "Request Timeout: the request did not arrive in time\n");
      c->close_when_done = 1;
      flush(c);
      return;
    }
  }
  conn_close(c);
}

/* Idle connections close after keep_alive_timeout_s; a request that has begun
 * must arrive within header_timeout_s. */
static void arm_timer(hconn_t *c) {
  as_proxy_t *p = c->p;
  if (c->closing) return;
  if (c->head) {
    uv_timer_stop(&c->timer);
    return;
  }
  double s = c->cur ? p->cfg.header_timeout_s : p->cfg.keep_alive_timeout_s;
  if (s <= 0) s = 90;
  uint64_t ms = (uint64_t)(s * 1000.0);
  if (c->cur) {
    /* the deadline counts from the request's first byte, not the last one */
    uint64_t spent = uv_now(p->loop) - c->cur_started;
    ms = spent >= ms ? 1 : ms - spent;
  }
  uv_timer_start(&c->timer, timer_fired, ms, 0);
}

static void refuse(hconn_t *c, int status, const char *msg) {
  hreq_t *r = c->cur ? c->cur : req_new(c);
  c->cur = NULL;
  if (!r) {
    conn_close(c);
    return;
  }
  if (!r->request_id[0]) as_http_new_request_id(r->request_id, &c->p->rng);
  r->keep_alive = 0;
  r->close_after = 1;
  r->next = NULL;
  if (c->tail) c->tail->next = r; else c->head = r;
  c->tail = r;
  c->nreqs++;
  r->dispatched = 1;
  c->p->inflight++;
  answer_text(r, status, msg);
  c->close_when_done = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

/* Every read lands in one static buffer: the parser callbacks copy what they
 * keep, and bytes held back while paused go to the connection's own buffer. */
static char read_buf[65536];

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = read_buf;
  buf->len = sizeof read_buf;
}

static void parse(hconn_t *c, const char *data, size_t n) {
  c->parsing = 1;
  size_t done = http_parser_execute(&c->parser, &c->p->settings, data, n);
  c->parsing = 0;
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (e == HPE_PAUSED) {
    /* Stopped after a closing request (the rest is never read) or at the
     * pipelining limit: keep the rest until answers catch up. */
    if (!c->close_when_done && done < n) {
      as_buf_append(&c->pending, data + done, n - done);
      uv_read_stop((uv_stream_t *)&c->tcp);
      c->reading = 0;
    }
  } else if (e != HPE_OK) {
    if (c->error_status == 413) refuse(c, 413, "Payload Too Large\n");
    else if (c->error_status == 431) refuse(c, 431, "Request Header Fields Too Large\n");
    else {
      char msg[160];
      snprintf(msg, sizeof msg, "Bad Request: %s\n", http_errno_description(e));
      refuse(c, 400, msg);
    }
  }
  flush(c);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hconn_t *c = s->data;
  if (nread < 0) {
    /* EOF or an error: the client is gone (HTTP/1.1 clients do not half-close,
     * and nginx takes it the same way). Calls in flight are cancelled, so a
     * generation stops at the engine's next step. */
    if (c->head) AS_LOGI("a client closed its connection with %zu request(s) unanswered; cancelling them", c->nreqs);
    conn_close(c);
    return;
  }
  if (nread > 0 && !c->close_when_done) parse(c, buf->base, (size_t)nread);
}

static void resume_reading(hconn_t *c) {
  if (c->reading || c->closing || c->close_when_done || c->parsing) return;
  if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED) {
    if (c->nreqs >= MAX_PIPELINED) return;
    http_parser_pause(&c->parser, 0);
    if (c->pending.len) {
      as_buf_t rest = c->pending;
      as_buf_init(&c->pending);
      parse(c, rest.data, rest.len); /* may pause again and keep what is left */
      as_buf_free(&rest);
      if (c->reading || c->closing || c->close_when_done || HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED) return;
    }
  }
  if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0) c->reading = 1;
}

static void on_connection(uv_stream_t *server, int status) {
  as_proxy_t *p = server->data;
  if (status < 0) return;
  hconn_t *c = calloc(1, sizeof *c);
  if (!c) return;
  c->p = p;
  uv_tcp_init(p->loop, &c->tcp);
  c->tcp.data = c;
  c->open_handles = 1;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_timer_init(p->loop, &c->timer);
  c->open_handles = 2;
  c->timer.data = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->next = p->conns;
  if (p->conns) p->conns->prev = c;
  p->conns = c;
  p->nconns++;
  resume_reading(c);
  arm_timer(c);
}

/* ---- public API ------------------------------------------------------------------------ */

int as_proxy_start(uv_loop_t *loop, const as_proxy_cfg_t *cfg, as_caller_t *caller, as_status_fn status,
                   void *status_ud, as_proxy_t **out) {
  as_proxy_t *p = calloc(1, sizeof *p);
  if (!p) return AS_ENOMEM;
  p->loop = loop;
  p->cfg = *cfg;
  p->host = strdup(cfg->host);
  p->cfg.host = p->host;
  p->caller = caller;
  p->status = status;
  p->status_ud = status_ud;
  p->rng = (uint64_t)uv_hrtime() * 0x9E3779B97F4A7C15ull | 1;
  http_parser_settings_init(&p->settings);
  p->settings.on_message_begin = on_message_begin;
  p->settings.on_url = on_url;
  p->settings.on_header_field = on_header_field;
  p->settings.on_header_value = on_header_value;
  p->settings.on_headers_complete = on_headers_complete;
  p->settings.on_body = on_body;
  p->settings.on_message_complete = on_message_complete;

  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
  if (rc) rc = uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr);
  uv_tcp_init(loop, &p->server);
  p->server.data = p;
  if (rc == 0) rc = uv_tcp_bind(&p->server, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&p->server, 4096, on_connection);
  if (rc) {
    uv_close((uv_handle_t *)&p->server, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    free(p->host);
    free(p);
    return rc;
  }
  p->listening = 1;
  *out = p;
  return 0;
}

int as_proxy_set_routes(as_proxy_t *p, const as_route_t *routes, int n) {
  as_route_t *copy = calloc((size_t)n + 1, sizeof *copy);
  if (!copy) return AS_ENOMEM;
  for (int i = 0; i < n; i++) {
    copy[i].prefix = strdup(routes[i].prefix);
    copy[i].app = strdup(routes[i].app);
    copy[i].ingress = strdup(routes[i].ingress);
  }
  for (int i = 0; i < p->nroutes; i++) {
    free((char *)p->routes[i].prefix);
    free((char *)p->routes[i].app);
    free((char *)p->routes[i].ingress);
  }
  free(p->routes);
  p->routes = copy;
  p->nroutes = n;
  return 0;
}

void as_proxy_stop_accepting(as_proxy_t *p) {
  if (!p || !p->listening) return;
  p->listening = 0;
  uv_close((uv_handle_t *)&p->server, NULL);
  hconn_t *c = p->conns;
  while (c) {
    hconn_t *next = c->next;
    c->close_when_done = 1;
    if (!c->head) conn_close(c); /* idle, or a request only partly received */
    c = next;
  }
}

size_t as_proxy_inflight(const as_proxy_t *p) { return p ? p->inflight : 0; }

size_t as_proxy_connections(const as_proxy_t *p) { return p ? p->nconns : 0; }

void as_proxy_free(as_proxy_t *p) {
  if (!p) return;
  if (p->listening) {
    p->listening = 0;
    uv_close((uv_handle_t *)&p->server, NULL);
  }
  while (p->conns) conn_close(p->conns);
  as_proxy_set_routes(p, NULL, 0);
  free(p->routes);
  free(p->host);
  free(p);
}

/* actors.h — the public header of actors/: the built-in actors.
 *   replica (replica.c): hosts one Lua deployment in a worker process, serves
 *     CALL frames from any caller on its Unix socket, each request in its own
 *     coroutine, and offers the Lua module its host operations.
 *   proxy (proxy.c, http.c): the HTTP ingress of the head process; parses
 *     requests with libhttp-parser, routes them by longest route_prefix to the
 *     application's ingress deployment through a caller, and writes answers.
 */
#ifndef AS_ACTORS_H
#define AS_ACTORS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "runtime.h"

/* ---- replica ---------------------------------------------------------------- */

typedef struct as_replica_cfg_s {
  const char *app;          /* application name */
  const char *deployment;   /* deployment name (unique in the app), e.g. Ranker_1 */
  const char *class_name;   /* serve.deployment name in the file, e.g. Ranker */
  const char *replica_id;   /* "Ranker_1#0" */
  const char *file;         /* the application file */
  const char *socket_path;  /* where to listen for calls */
  const char *args;         /* bind arguments: one codec value (a table) */
  size_t args_len;
  const char *user_config;  /* one codec value for reconfigure(), or NULL */
  size_t user_config_len;
  as_table_t *table;        /* the node's replica table */
  uint32_t slot;            /* this replica's slot in it */
  const char *route_prefix; /* the application's route_prefix ("/") */
} as_replica_cfg_t;

typedef struct as_replica_s as_replica_t;
/* kind 0: the constructor finished; ASL_REPORT_HEALTH / ASL_REPORT_RECONFIGURE
 * (lua/asl.h): a health check (seq) or a reconfigure finished. */
typedef void (*as_ready_cb)(void *ud, int kind, int64_t seq, int ok, const char *err);

/* Loads the app file, listens on the socket, runs the constructor; ready_cb
 * says when it finished. caller serves the replica's handles. */
int as_replica_start(uv_loop_t *loop, const as_replica_cfg_t *cfg, as_caller_t *caller,
                     as_ready_cb ready_cb, void *ud, as_replica_t **out);
/* Runs check_health() (answer through the ready callback, kind HEALTH). */
void as_replica_check_health(as_replica_t *r, int64_t seq);
/* Runs reconfigure(user_config) with one codec value. */
void as_replica_reconfigure(as_replica_t *r, const char *value, size_t len);
/* Stops taking new connections; done is called once no request is running. */
void as_replica_drain(as_replica_t *r, void (*done)(void *ud), void *ud);
size_t as_replica_running(const as_replica_t *r);
/* Closes everything (handles close asynchronously; run the loop after). */
void as_replica_free(as_replica_t *r);

/* ---- proxy ------------------------------------------------------------------ */

/* A request to an admin server (the REST API): answered synchronously. */
typedef struct as_admin_req_s {
  const char *method;            /* "GET", "PUT", ... */
  const char *path;              /* not NUL-terminated */
  size_t path_len;
  const char *body;
  size_t body_len;
  const char *config_path;       /* x-actorserve-config-path header, or NULL */
} as_admin_req_t;
/* Fills out and *ctype, returns the HTTP status. */
typedef int (*as_admin_fn)(void *ud, const as_admin_req_t *req, as_buf_t *out, const char **ctype);

typedef struct as_proxy_cfg_s {
  const char *host;              /* "0.0.0.0" */
  int port;                      /* 8000 */
  double request_timeout_s;      /* 0: none (Ray's default) */
  double keep_alive_timeout_s;   /* idle keep-alive connections close after this */
  double header_timeout_s;       /* a request's head must arrive within this */
  size_t max_body_bytes;         /* 413 beyond */
  size_t max_header_bytes;       /* 431 beyond */
  as_admin_fn admin;             /* set: an admin server; every request goes here */
  void *admin_ud;
} as_proxy_cfg_t;

typedef struct as_route_s {
  const char *prefix;            /* "/" or "/api" */
  const char *app;               /* application name */
  const char *ingress;           /* caller key "app/Deployment" */
} as_route_t;

typedef struct as_proxy_s as_proxy_t;
/* Writes the JSON answer of GET /-/status. */
typedef void (*as_status_fn)(void *ud, as_buf_t *out);

/* Binds and listens. Returns a negative libuv error code when the address
 * cannot be bound. */
int as_proxy_start(uv_loop_t *loop, const as_proxy_cfg_t *cfg, as_caller_t *caller,
                   as_status_fn status, void *status_ud, as_proxy_t **out);
/* Replaces the route table (copied). */
int as_proxy_set_routes(as_proxy_t *p, const as_route_t *routes, int n);
/* Graceful stop: closes the listener and idle connections; answers what it
 * already accepted, each with "connection: close". */
void as_proxy_stop_accepting(as_proxy_t *p);
size_t as_proxy_inflight(const as_proxy_t *p);   /* requests not yet fully answered */
size_t as_proxy_connections(const as_proxy_t *p);
void as_proxy_free(as_proxy_t *p);

/* ---- HTTP helpers (http.c), pure functions the proxy is built on ----------- */

const char *as_http_reason(int status);          /* "OK", "Not Found", ... */
/* Index of the route whose prefix matches path best (longest prefix that is
 * the whole path or is followed by '/'), or -1. */
int as_http_route_match(const as_route_t *routes, int n, const char *path, size_t len);
/* A client's x-request-id is kept when it is 1..128 of [A-Za-z0-9._:-]. */
int as_http_request_id_valid(const char *s, size_t n);
void as_http_new_request_id(char out[33], uint64_t *rng);
/* A header a handler returns is sent only if its name is a token and its
 * value holds no CR, LF or NUL (no response splitting). */
int as_http_header_ok(const char *name, size_t nlen, const char *value, size_t vlen);
/* Headers the proxy sets itself and drops from a handler's list. */
int as_http_header_reserved(const char *name, size_t nlen);

#endif /* AS_ACTORS_H */

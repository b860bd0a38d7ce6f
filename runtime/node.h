/* node.h — internal to runtime/ (never included from outside it): the head
 * process (CLI options, the application plan, the controller) and worker mode.
 *   app.c        reads an application file into a plan of deployments
 *   controller.c places, starts, watches and restarts replicas; routes; status
 *   head.c       the head process: node resources, proxy, signals, shutdown
 *   worker.c     worker mode
 */
#ifndef AS_NODE_H
#define AS_NODE_H

#include <uv.h>

#include "runtime.h"

typedef struct as_head_opts_s {
  const char *target;              /* FILE.lua:VARIABLE */
  const char *host;                /* 0.0.0.0 */
  int port;                        /* 8000 */
  const char *route_prefix;        /* "/" */
  const char *app_name;            /* "default" */
  double num_cpus;                 /* < 0: the machine's cores */
  double num_gpus;                 /* < 0: the devices found */
  const char *resources_json;      /* '{"name": n}' or NULL */
  double request_timeout_s;        /* 0: none */
  double keep_alive_timeout_s;
  double graceful_shutdown_timeout_s;
  size_t max_body_bytes;
  size_t max_header_bytes;
} as_head_opts_t;

/* One deployment of an application, as planned from its bind graph. */
typedef struct as_dep_s {
  char *app;                       /* application name */
  char *name;                      /* unique in the app: Ranker, Ranker_1 */
  char *class_name;                /* serve.deployment name in the file */
  char *key;                       /* "app/name", the caller's key */
  int num_replicas;
  int max_ongoing;
  int max_queued;                  /* -1: unlimited */
  double graceful_s;
  as_req_t req;                    /* ray_actor_options */
  as_buf_t args;                   /* bind arguments, one codec value */
} as_dep_t;

typedef struct as_app_s {
  char *name;
  char *route_prefix;
  char *file;                      /* absolute path */
  char *ingress;                   /* deployment name */
  as_dep_t *deps;
  int ndeps;
} as_app_t;

/* Loads FILE.lua:VARIABLE into app. On error writes one line naming the file
 * (and line where known) into err and returns AS_EINVAL. */
int as_app_load(as_app_t *app, const char *target, const char *name, const char *prefix,
                char *err, size_t errlen);
void as_app_free(as_app_t *app);

typedef struct as_controller_s as_controller_t;
typedef void (*as_routes_cb)(void *ud, const char *payload, size_t len);

/* graceful_limit_s bounds every deployment's graceful_shutdown_timeout_s. */
as_controller_t *as_controller_new(uv_loop_t *loop, as_table_t *table, as_node_res_t *node,
                                   const char *rundir, const char *exe, double graceful_limit_s);
/* Adds an application's deployments and starts (or parks as PENDING) their replicas. */
int as_controller_add_app(as_controller_t *c, as_app_t *app);
/* Called with every new ROUTES payload (the proxy's caller takes it). */
void as_controller_on_routes(as_controller_t *c, as_routes_cb cb, void *ud);
/* Status of applications, deployments, replicas and node resources as JSON. */
void as_controller_status(as_controller_t *c, as_buf_t *out);
/* Asks every worker to drain and exit; done runs when all have exited. */
void as_controller_shutdown(as_controller_t *c, void (*done)(void *), void *ud);
/* Kills every worker at once (second signal). */
void as_controller_kill(as_controller_t *c);
double as_controller_graceful_s(const as_controller_t *c);
void as_controller_free(as_controller_t *c);

int as_head_main(const as_head_opts_t *opts);
int as_worker_main(void);

#endif /* AS_NODE_H */

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
  int dashboard_port;              /* the REST API on 127.0.0.1 (Ray's 8265); 0: none */
  int host_set, port_set;          /* given on the command line: beats the config file */
  int request_timeout_set, keep_alive_set;
} as_head_opts_t;

/* One deployment of an application, as planned from its bind graph. */
typedef struct as_dep_s {
  char *app;                       /* application name */
  char *name;                      /* unique in the app: Ranker, Ranker_1 */
  char *class_name;                /* serve.deployment name in the file */
  char *key;                       /* "app/name", the caller's key */
  const char *file;                /* the application file (owned by the app) */
  const char *route_prefix;        /* the application's (owned by the app) */
  uint64_t version;                /* code identity: file, class, args, resources */
  int num_replicas;
  int max_ongoing;
  int max_queued;                  /* -1: unlimited */
  double graceful_s;
  double health_period_s;          /* check_health() every this many seconds */
  double health_timeout_s;         /* a check slower than this counts as failed */
  as_req_t req;                    /* ray_actor_options */
  as_buf_t args;                   /* bind arguments, one codec value */
  as_buf_t user_config;            /* one codec value, or empty: reconfigure() gets it */
  /* autoscaling_config: num_replicas then follows the load between min and max */
  int autoscale;
  int min_replicas, max_replicas;
  double target_ongoing;           /* ongoing requests per replica aimed at (Ray: 2) */
  double upscale_delay_s;          /* how long the load must ask for more (Ray: 30) */
  double downscale_delay_s;        /* ... or for fewer (Ray: 600) */
  uint64_t up_since_ms, down_since_ms; /* controller: since when it asks */
} as_dep_t;

typedef struct as_app_s {
  char *name;
  char *route_prefix;
  char *file;                      /* absolute path */
  char *ingress;                   /* deployment name */
  as_dep_t *deps;
  int ndeps;
} as_app_t;

/* Loads FILE.lua:VARIABLE into app. VARIABLE holds an application, or a
 * builder function called with args (a codec table, or NULL). On error writes
 * one line naming the file (and line where known) into err, AS_EINVAL. */
int as_app_load(as_app_t *app, const char *target, const char *name, const char *prefix,
                const as_buf_t *args, char *err, size_t errlen);
struct as_cfg_app_s;
/* Applies a config file's deployment entries over the code's values. */
int as_app_apply_config(as_app_t *app, const struct as_cfg_app_s *c, int app_index, const char *cfgfile, char *err,
                        size_t errlen);
void as_app_free(as_app_t *app);
void as_app_versions(as_app_t *app);  /* recomputes each deployment's version */

typedef struct as_controller_s as_controller_t;
typedef void (*as_routes_cb)(void *ud, const char *payload, size_t len);

/* graceful_limit_s bounds every deployment's graceful_shutdown_timeout_s. */
as_controller_t *as_controller_new(uv_loop_t *loop, as_table_t *table, as_node_res_t *node,
                                   const char *rundir, const char *exe, double graceful_limit_s);
/* Makes apps[0..n) the desired state (taking them over): new deployments
 * start, removed ones stop, a changed num_replicas scales, a changed
 * max_ongoing_requests or user_config is applied to the running replicas,
 * and changed code or ray_actor_options replace replicas one at a time. */
int as_controller_deploy(as_controller_t *c, as_app_t **apps, int n);
/* The applications now desired (for the proxy's routes). */
int as_controller_apps(as_controller_t *c, as_app_t ***apps);
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

/* ---- config.yaml (config.c): Ray Serve's schema; `set` says the file gave it ---- */

typedef struct as_pos_s { int line, col; } as_pos_t;
typedef struct as_num_s { int set; double v; as_pos_t pos; } as_num_t;
typedef struct as_str_s { int set; char *s; as_pos_t pos; } as_str_t;
typedef struct as_any_s { int set; as_buf_t value; as_pos_t pos; } as_any_t; /* one codec value */

typedef struct as_cfg_dep_s {
  as_pos_t pos;
  as_str_t name;
  as_num_t num_replicas;            /* integer form */
  int num_replicas_auto;            /* num_replicas: auto */
  as_num_t max_ongoing, max_queued;
  as_any_t user_config;
  as_any_t autoscaling;             /* the whole autoscaling_config mapping */
  as_num_t min_replicas, max_replicas, initial_replicas, target_ongoing, upscale_delay, downscale_delay;
  as_num_t health_period, health_timeout, graceful_wait_loop, graceful_timeout;
  int rao_set;                      /* ray_actor_options given */
  as_num_t num_cpus, num_gpus, memory;
  int resources_set, nres;
  as_custom_t res[AS_MAX_CUSTOM];
} as_cfg_dep_t;

typedef struct as_cfg_app_s {
  as_pos_t pos;
  as_str_t name;                    /* default "default" */
  as_str_t route_prefix;            /* default "/" */
  as_str_t import_path;             /* module:variable, module.lua beside the config or in the cwd */
  as_any_t args;                    /* a mapping, for builder functions */
  as_cfg_dep_t *deps;
  int ndeps;
} as_cfg_app_t;

typedef struct as_config_s {
  char *path, *dir;                 /* the file and its folder */
  as_str_t proxy_location;          /* EveryNode, HeadOnly, Disabled */
  as_str_t host, root_path;
  as_num_t port, request_timeout_s, keep_alive_timeout_s;
  as_num_t grpc_port;
  int grpc_functions;               /* how many servicer functions were listed */
  as_str_t log_encoding, log_level, logs_dir;
  int access_log_set, enable_access_log;
  as_cfg_app_t *apps;
  int napps;
} as_config_t;

/* Reads and validates path; on error one line "file:line:col: field: why". */
int as_config_load(as_config_t *cfg, const char *path, char *err, size_t errlen);
void as_config_free(as_config_t *cfg);
int as_route_prefix_ok(const char *prefix);

int as_head_main(const as_head_opts_t *opts);
int as_worker_main(void);
/* start, deploy, status, config, shutdown, build (cli.c); argv[0] is the command. */
int as_cli_main(int argc, char **argv);

#endif /* AS_NODE_H */

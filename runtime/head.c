/* head.c — the head process of `actorserve run`: reads the application
 * (errors stop here, before any port is bound), measures the node's resources,
 * makes the run directory with the shared replica table, binds the HTTP proxy,
 * hands the application to the controller, and runs the libuv loop.
 * SIGINT/SIGTERM start a graceful shutdown: the proxy stops accepting and
 * answers what it has accepted (up to graceful_shutdown_timeout_s), then every
 * worker drains and exits, then the head removes its run directory and exits 0.
 * A second signal kills the workers at once.
 */
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "actors.h"
#include "node.h"

#define TABLE_SLOTS 1024

typedef struct head_s {
  const as_head_opts_t *o;
  as_proxy_t *rest;        /* the REST API on 127.0.0.1 */
  as_buf_t config_text;    /* the last config deployed, for GET config */
  uv_loop_t *loop;
  as_table_t *table;
  as_caller_t *caller;
  as_proxy_t *proxy;
  as_controller_t *ctrl;
  uv_signal_t sigint, sigterm;
  uv_timer_t drain;
  uint64_t drain_started;
  int stopping;
  char rundir[PATH_MAX];
} head_t;

static int count_gpus(void) {
  DIR *d = opendir("/proc/driver/nvidia/gpus");
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static int64_t mem_total(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return 0;
  long long kb = 0;
  char line[256];
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "MemTotal: %lld kB", &kb) == 1) break;
  fclose(f);
  return (int64_t)kb * 1024;
}

static int node_resources(const as_head_opts_t *o, as_node_res_t *n, char *err, size_t errlen) {
  memset(n, 0, sizeof *n);
  double cpus = o->num_cpus >= 0 ? o->num_cpus : (double)sysconf(_SC_NPROCESSORS_ONLN);
  n->cpu_total = as_res_fixed(cpus);
  n->ngpu = o->num_gpus >= 0 ? (int)o->num_gpus : count_gpus();
  if (n->ngpu > AS_MAX_GPUS) n->ngpu = AS_MAX_GPUS;
  n->mem_total = mem_total();
  if (!o->resources_json) return 0;
  cJSON *j = cJSON_Parse(o->resources_json);
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    snprintf(err, errlen, "--resources: expected a JSON object such as '{\"accel\": 2}'");
    return AS_EINVAL;
  }
  for (cJSON *e = j->child; e; e = e->next) {
    if (!cJSON_IsNumber(e) || e->valuedouble < 0 || n->ncustom >= AS_MAX_CUSTOM ||
        strlen(e->string) >= AS_RES_NAME) {
      snprintf(err, errlen, "--resources: '%s' must map to a number ≥ 0 (at most %d names)", e->string,
               AS_MAX_CUSTOM);
      cJSON_Delete(j);
      return AS_EINVAL;
    }
    snprintf(n->custom_total[n->ncustom].name, AS_RES_NAME, "%s", e->string);
    n->custom_total[n->ncustom++].amount = as_res_fixed(e->valuedouble);
  }
  cJSON_Delete(j);
  return 0;
}

static void free_apps(as_app_t **apps, int n) {
  for (int i = 0; i < n; i++) {
    as_app_free(apps[i]);
    free(apps[i]);
  }
  free(apps);
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* import_path "module:var" → "<dir>/module.lua:var" (dots in a module name
 * without slashes are folders, as in Python; "path/file" and "file.lua" are
 * taken as they are), looked up beside the config file first, then in the
 * working directory. */
static int resolve_import(const char *cfgdir, const char *imp, char *out, size_t n) {
  const char *colon = strrchr(imp, ':');
  if (!colon || colon == imp || !colon[1]) return AS_EINVAL;
  char mod[PATH_MAX];
  snprintf(mod, sizeof mod, "%.*s", (int)(colon - imp), imp);
  if (!ends_with(mod, ".lua")) {
    /* a dotted module name (pkg.app) is a path; one with slashes is one already */
    if (!strchr(mod, '/'))
      for (char *q = mod; *q; q++)
        if (*q == '.') *q = '/';
    strncat(mod, ".lua", sizeof mod - strlen(mod) - 1);
  }
  char cand[PATH_MAX * 2];
  if (mod[0] != '/') {
    snprintf(cand, sizeof cand, "%s/%s", cfgdir, mod);
    if (access(cand, R_OK) == 0) return snprintf(out, n, "%s:%s", cand, colon + 1) < (int)n ? 0 : AS_ETOOBIG;
  }
  if (snprintf(out, n, "%s:%s", mod, colon + 1) >= (int)n) return AS_ETOOBIG;
  return access(mod, R_OK) == 0 ? 0 : AS_ENOTFOUND;
}

/* Every application of a loaded config, planned and with the file's values applied. */
static int config_apps(as_config_t *cfg, const char *name, as_app_t ***out, int *nout, char *err, size_t errlen) {
  int rc = 0;
  as_app_t **apps = calloc((size_t)cfg->napps, sizeof *apps);
  int n = 0;
  for (int i = 0; apps && i < cfg->napps && rc == 0; i++) {
    as_cfg_app_t *ca = &cfg->apps[i];
    char target[PATH_MAX * 2];
    if (resolve_import(cfg->dir, ca->import_path.s, target, sizeof target)) {
      snprintf(err, errlen, "%s:%d:%d: applications[%d].import_path: '%s' names no readable Lua file (looked for it "
               "beside the config file and in the working directory)", name, ca->import_path.pos.line,
               ca->import_path.pos.col, i, ca->import_path.s);
      rc = AS_EINVAL;
      break;
    }
    as_app_t *app = calloc(1, sizeof *app);
    if (!app) { rc = AS_ENOMEM; break; }
    rc = as_app_load(app, target, ca->name.s, ca->route_prefix.s, ca->args.set ? &ca->args.value : NULL, err, errlen);
    if (rc) { free(app); break; }
    apps[n++] = app;
    rc = as_app_apply_config(app, ca, i, name, err, errlen);
  }
  if (rc || !apps) {
    free_apps(apps, n);
    return rc ? rc : AS_ENOMEM;
  }
  *out = apps;
  *nout = n;
  return 0;
}

static void read_file_into(const char *path, as_buf_t *b) {
  FILE *f = fopen(path, "rb");
  if (!f) return;
  char buf[8192];
  size_t n;
  b->len = 0;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) as_buf_append(b, buf, n);
  fclose(f);
}

/* FILE.lua:VAR → one application; CONFIG.yaml → every application it lists;
 * no target (`actorserve start`) → none yet. */
static int load_apps(as_head_opts_t *o, as_app_t ***out, int *nout, as_buf_t *text, char *err, size_t errlen) {
  if (!o->target) {
    *out = NULL;
    *nout = 0;
    return 0;
  }
  if (!ends_with(o->target, ".yaml") && !ends_with(o->target, ".yml")) {
    as_app_t *app = calloc(1, sizeof *app);
    as_app_t **apps = calloc(1, sizeof *apps);
    if (!app || !apps || as_app_load(app, o->target, o->app_name, o->route_prefix, NULL, err, errlen)) {
      free(app);
      free(apps);
      return AS_EINVAL;
    }
    apps[0] = app;
    *out = apps;
    *nout = 1;
    return 0;
  }
  as_config_t cfg;
  if (as_config_load(&cfg, o->target, err, errlen)) return AS_EINVAL;
  static char host[256]; /* outlives the config: the options point at it */
  if (cfg.host.set && !o->host_set) {
    snprintf(host, sizeof host, "%s", cfg.host.s);
    o->host = host;
  }
  if (cfg.port.set && !o->port_set) o->port = (int)cfg.port.v;
  if (cfg.request_timeout_s.set && !o->request_timeout_set) o->request_timeout_s = cfg.request_timeout_s.v;
  if (cfg.keep_alive_timeout_s.set && !o->keep_alive_set) o->keep_alive_timeout_s = cfg.keep_alive_timeout_s.v;
  if (cfg.grpc_functions > 0) AS_LOGW("%s: grpc_options: gRPC is not served yet; only HTTP", o->target);
  int rc = config_apps(&cfg, o->target, out, nout, err, errlen);
  as_config_free(&cfg);
  if (rc == 0) read_file_into(o->target, text);
  return rc;
}

/* The proxy's routes follow the controller's applications. */
static void set_proxy_routes(head_t *h) {
  as_app_t **apps;
  int n = as_controller_apps(h->ctrl, &apps);
  as_route_t *routes = calloc((size_t)n + 1, sizeof *routes);
  char (*ingress)[512] = calloc((size_t)n + 1, sizeof *ingress);
  if (!routes || !ingress) {
    free(routes);
    free(ingress);
    return;
  }
  for (int i = 0; i < n; i++) {
    snprintf(ingress[i], sizeof ingress[i], "%s/%s", apps[i]->name, apps[i]->ingress);
    routes[i] = (as_route_t){apps[i]->route_prefix, apps[i]->name, ingress[i]};
  }
  as_proxy_set_routes(h->proxy, routes, n);
  free(routes);
  free(ingress);
}

static void start_shutdown(head_t *h, const char *why);

/* The REST API (Ray's /api/serve/applications/ plus two of ours). */
static int rest(void *ud, const as_admin_req_t *q, as_buf_t *out, const char **ctype) {
  head_t *h = ud;
  char err[1024];
  size_t n = q->path_len;
  while (n > 1 && q->path[n - 1] == '/') n--;
#define PATH_IS(lit) (n == sizeof(lit) - 1 && memcmp(q->path, lit, n) == 0)
  int apps_path = PATH_IS("/api/serve/applications");
  if (apps_path && strcmp(q->method, "GET") == 0) {
    as_controller_status(h->ctrl, out);
    return 200;
  }
  if (apps_path && strcmp(q->method, "PUT") == 0) {
    /* The body is the config (YAML or JSON). A local client names the file,
     * so import paths resolve beside it and errors point into it. */
    char path[PATH_MAX + 64];
    const char *name = q->config_path;
    if (!name || access(name, R_OK) != 0) {
      static unsigned seq;
      snprintf(path, sizeof path, "%s/deploy-%u.yaml", h->rundir, ++seq);
      FILE *f = fopen(path, "wb");
      if (!f || fwrite(q->body, 1, q->body_len, f) != q->body_len) {
        if (f) fclose(f);
        as_buf_appendf(out, "{\"error\": \"cannot store the config\"}");
        return 500;
      }
      fclose(f);
      name = path;
    }
    as_config_t cfg;
    as_app_t **apps = NULL;
    int napps = 0;
    int rc = as_config_load(&cfg, name, err, sizeof err);
    if (rc == 0) {
      rc = config_apps(&cfg, name, &apps, &napps, err, sizeof err);
      as_config_free(&cfg);
    }
    if (rc == 0) rc = as_controller_deploy(h->ctrl, apps, napps);
    if (rc) {
      *ctype = "text/plain; charset=utf-8";
      as_buf_appendf(out, "%s\n", err);
      return 400;
    }
    free(apps);
    set_proxy_routes(h);
    h->config_text.len = 0;
    as_buf_append(&h->config_text, q->body, q->body_len);
    AS_LOGI("deployed %d application(s) from %s", napps, name);
    as_buf_appendf(out, "{\"deployed\": %d}", napps);
    return 200;
  }
  if (apps_path && strcmp(q->method, "DELETE") == 0) {
    as_controller_deploy(h->ctrl, NULL, 0);
    set_proxy_routes(h);
    h->config_text.len = 0;
    AS_LOGI("deleted every application");
    as_buf_appendf(out, "{\"deleted\": true}");
    return 200;
  }
  if (PATH_IS("/api/actorserve/config") && strcmp(q->method, "GET") == 0) {
    *ctype = "text/yaml; charset=utf-8";
    as_buf_append(out, h->config_text.data ? h->config_text.data : "", h->config_text.len);
    return 200;
  }
  if (PATH_IS("/api/actorserve/shutdown") && strcmp(q->method, "POST") == 0) {
    start_shutdown(h, "a shutdown request");
    as_buf_appendf(out, "{\"stopping\": true}");
    return 200;
  }
#undef PATH_IS
  *ctype = "text/plain; charset=utf-8";
  as_buf_appendf(out, "no such endpoint: %s %.*s\n", q->method, (int)(q->path_len > 200 ? 200 : q->path_len), q->path);
  return 404;
}

static void on_routes(void *ud, const char *payload, size_t len) {
  head_t *h = ud;
  if (as_caller_set_routes(h->caller, payload, len)) AS_LOGE("the proxy could not read the routes");
}

static void status_json(void *ud, as_buf_t *out) { as_controller_status(((head_t *)ud)->ctrl, out); }

static void all_down(void *ud) {
  head_t *h = ud;
  AS_LOGI("all workers stopped");
  uv_stop(h->loop);
}

static void drain_tick(uv_timer_t *t) {
  head_t *h = t->data;
  double waited = (double)(uv_now(h->loop) - h->drain_started) / 1000.0;
  double limit = h->o->graceful_shutdown_timeout_s;
  if (as_proxy_inflight(h->proxy) > 0 && waited < limit) return;
  if (as_proxy_inflight(h->proxy) > 0)
    AS_LOGW("%zu requests still running after %.0f s; stopping anyway", as_proxy_inflight(h->proxy), limit);
  uv_timer_stop(t);
  as_controller_shutdown(h->ctrl, all_down, h);
}

static void start_shutdown(head_t *h, const char *why) {
  if (h->stopping) {
    AS_LOGW("%s again: killing the workers", why);
    as_controller_kill(h->ctrl);
    return;
  }
  h->stopping = 1;
  AS_LOGI("%s: stopping (in-flight requests finish first)", why);
  as_proxy_stop_accepting(h->proxy);
  as_proxy_stop_accepting(h->rest);
  h->drain_started = uv_now(h->loop);
  uv_timer_start(&h->drain, drain_tick, 0, 20);
}

static void on_signal(uv_signal_t *s, int signum) {
  start_shutdown(s->data, signum == SIGINT ? "received SIGINT" : "received SIGTERM");
}

static void remove_rundir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[PATH_MAX + 256];
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static void close_walk(uv_handle_t *hd, void *arg) {
  (void)arg;
  if (!uv_is_closing(hd)) uv_close(hd, NULL);
}

int as_head_main(const as_head_opts_t *o) {
  as_log_component = "head";
  signal(SIGPIPE, SIG_IGN);
  char err[1024];
  int rc;

  as_app_t **apps = NULL;
  int napps = 0;
  as_head_opts_t opts = *o; /* the config file may fill in what the command line left out */
  as_buf_t text;
  as_buf_init(&text);
  if (load_apps(&opts, &apps, &napps, &text, err, sizeof err)) {
    fprintf(stderr, "actorserve: %s\n", err);
    return 1;
  }
  o = &opts;
  as_node_res_t node;
  if (node_resources(o, &node, err, sizeof err)) {
    fprintf(stderr, "actorserve: %s\n", err);
    free_apps(apps, napps);
    return 2;
  }

  head_t h;
  memset(&h, 0, sizeof h);
  h.o = o;
  h.config_text = text;
  h.loop = uv_default_loop();
  snprintf(h.rundir, sizeof h.rundir, "%s/actorserve-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(h.rundir)) {
    fprintf(stderr, "actorserve: cannot create a run directory in %s\n", h.rundir);
    free_apps(apps, napps);
    return 1;
  }
  char tpath[PATH_MAX + 32];
  snprintf(tpath, sizeof tpath, "%s/replicas.table", h.rundir);
  rc = as_table_create(tpath, TABLE_SLOTS, &h.table);
  h.caller = rc ? NULL : as_caller_new(h.loop, h.table);
  if (!h.caller) {
    fprintf(stderr, "actorserve: cannot create the replica table in %s\n", h.rundir);
    goto fail_early;
  }

  as_proxy_cfg_t pc = {o->host, o->port, o->request_timeout_s, o->keep_alive_timeout_s,
                       30.0, o->max_body_bytes, o->max_header_bytes, NULL, NULL};
  rc = as_proxy_start(h.loop, &pc, h.caller, status_json, &h, &h.proxy);
  if (rc) {
    fprintf(stderr, "actorserve: cannot listen on %s:%d: %s\n", o->host, o->port,
            rc < 0 && rc > -4096 ? uv_strerror(rc) : as_strerror(rc));
    goto fail_early;
  }

  char exe[PATH_MAX];
  size_t exe_len = sizeof exe;
  if (uv_exepath(exe, &exe_len) < 0) snprintf(exe, sizeof exe, "/proc/self/exe");
  char lv[2] = {(char)('0' + as_log_level), 0};
  setenv("ACTORSERVE_LOG_LEVEL", lv, 1); /* workers log at the same level */
  h.ctrl = as_controller_new(h.loop, h.table, &node, h.rundir, exe, o->graceful_shutdown_timeout_s);
  as_controller_on_routes(h.ctrl, on_routes, &h);
  for (int i = 0; i < napps; i++)
    AS_LOGI("serving application '%s' (%s) at http://%s:%d%s", apps[i]->name, apps[i]->file, o->host, o->port,
            apps[i]->route_prefix);
  if ((rc = as_controller_deploy(h.ctrl, apps, napps))) {
    AS_LOGE("cannot start the applications: %s", as_strerror(rc));
    free_apps(apps, napps);
  } else {
    free(apps); /* the controller owns the applications now */
  }
  set_proxy_routes(&h);
  if (o->dashboard_port > 0) {
    /* The REST API listens on loopback only, never on other interfaces. */
    as_proxy_cfg_t rc_cfg = {"127.0.0.1", o->dashboard_port, 0, o->keep_alive_timeout_s, 30.0, 64u << 20,
                             o->max_header_bytes, rest, &h};
    if ((rc = as_proxy_start(h.loop, &rc_cfg, NULL, NULL, NULL, &h.rest)))
      AS_LOGW("no REST API: cannot listen on 127.0.0.1:%d: %s (deploy/status need it; see --dashboard-port)",
              o->dashboard_port, rc < 0 && rc > -4096 ? uv_strerror(rc) : as_strerror(rc));
    else
      AS_LOGI("REST API at http://127.0.0.1:%d/api/serve/applications/", o->dashboard_port);
  }

  uv_signal_init(h.loop, &h.sigint);
  uv_signal_init(h.loop, &h.sigterm);
  h.sigint.data = h.sigterm.data = &h;
  uv_signal_start(&h.sigint, on_signal, SIGINT);
  uv_signal_start(&h.sigterm, on_signal, SIGTERM);
  uv_timer_init(h.loop, &h.drain);
  h.drain.data = &h;

  uv_run(h.loop, UV_RUN_DEFAULT);

  as_proxy_free(h.proxy);
  as_proxy_free(h.rest);
  as_buf_free(&h.config_text);
  as_caller_free(h.caller);
  as_controller_free(h.ctrl);
  uv_walk(h.loop, close_walk, NULL);
  uv_run(h.loop, UV_RUN_DEFAULT);
  uv_loop_close(h.loop);
  as_table_close(h.table);
  remove_rundir(h.rundir);
  AS_LOGI("stopped");
  return 0;

fail_early:
  if (h.caller) as_caller_free(h.caller);
  uv_walk(h.loop, close_walk, NULL);
  uv_run(h.loop, UV_RUN_DEFAULT);
  uv_loop_close(h.loop);
  if (h.table) as_table_close(h.table);
  remove_rundir(h.rundir);
  free_apps(apps, napps);
  return 1;
}

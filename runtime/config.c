/* config.c — config.yaml in Ray Serve's schema, read with libyaml into one
 * typed structure (as_config_t in node.h) and validated before anything
 * starts. Every error is one line "file:line:col: field.path: what is wrong";
 * unknown keys are warned about on stderr and otherwise ignored. Free-form
 * values (args, user_config, autoscaling_config) are kept as codec values so
 * they reach Lua unchanged. What each field does is in docs/config.md.
 */
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "node.h"

typedef struct ctx_s {
  yaml_document_t *doc;
  const char *file;
  char *err;
  size_t errlen;
  int failed;
} ctx_t;

static int failf(ctx_t *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int failf(ctx_t *c, const yaml_node_t *n, const char *path, const char *fmt, ...) {
  if (c->failed) return AS_EINVAL;
  c->failed = 1;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(c->err, c->errlen, "%s:%zu:%zu: %s: %s", c->file, n ? n->start_mark.line + 1 : 0,
           n ? n->start_mark.column + 1 : 0, path, msg);
  return AS_EINVAL;
}

/* Fails at a remembered position, for checks made after reading a mapping. */
static int fail_at(ctx_t *c, as_pos_t pos, const char *path, const char *field, const char *what) {
  if (c->failed) return AS_EINVAL;
  c->failed = 1;
  snprintf(c->err, c->errlen, "%s:%d:%d: %s.%s: %s", c->file, pos.line, pos.col, path, field, what);
  return AS_EINVAL;
}

static void warnf(ctx_t *c, const yaml_node_t *n, const char *path, const char *what) {
  fprintf(stderr, "%s:%zu:%zu: warning: %s: %s\n", c->file, n->start_mark.line + 1, n->start_mark.column + 1,
          path, what);
}

static const char *scalar(const yaml_node_t *n) {
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int is_plain(const yaml_node_t *n) { return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE; }

static int is_null(const yaml_node_t *n) {
  const char *s = scalar(n);
  return s && is_plain(n) && (!*s || !strcmp(s, "~") || !strcasecmp(s, "null"));
}

static void mark(const yaml_node_t *n, as_pos_t *pos) {
  pos->line = (int)n->start_mark.line + 1;
  pos->col = (int)n->start_mark.column + 1;
}

static int get_num(ctx_t *c, const yaml_node_t *n, const char *path, as_num_t *out) {
  const char *s = scalar(n);
  char *end;
  if (!s || !is_plain(n)) return failf(c, n, path, "expected a number");
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v)) return failf(c, n, path, "expected a number, got '%s'", s);
  out->set = 1;
  out->v = v;
  mark(n, &out->pos);
  return 0;
}

static int get_int(ctx_t *c, const yaml_node_t *n, const char *path, double lo, as_num_t *out) {
  if (get_num(c, n, path, out)) return AS_EINVAL;
  if (out->v != floor(out->v) || out->v < lo || out->v > INT_MAX)
    return failf(c, n, path, "expected an integer ≥ %g, got %s", lo, scalar(n));
  return 0;
}

static int get_str(ctx_t *c, const yaml_node_t *n, const char *path, as_str_t *out) {
  const char *s = scalar(n);
  if (!s) return failf(c, n, path, "expected a string");
  free(out->s);
  out->s = strdup(s);
  out->set = 1;
  mark(n, &out->pos);
  return out->s ? 0 : AS_ENOMEM;
}

static int get_bool(ctx_t *c, const yaml_node_t *n, const char *path, int *set, int *out) {
  const char *s = scalar(n);
  if (s && (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on"))) *out = 1;
  else if (s && (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off"))) *out = 0;
  else return failf(c, n, path, "expected true or false");
  *set = 1;
  return 0;
}

/* Any YAML value → one codec value (YAML 1.1 plain-scalar typing). */
static int to_codec(ctx_t *c, const yaml_node_t *n, const char *path, as_buf_t *b, int depth) {
  if (depth > 64) return failf(c, n, path, "nested too deeply");
  if (n->type == YAML_SCALAR_NODE) {
    const char *s = scalar(n);
    size_t len = n->data.scalar.length;
    if (!is_plain(n)) return as_enc_str(b, s, len);
    if (is_null(n)) return as_enc_nil(b);
    if (!strcasecmp(s, "true") || !strcasecmp(s, "yes")) return as_enc_bool(b, 1);
    if (!strcasecmp(s, "false") || !strcasecmp(s, "no")) return as_enc_bool(b, 0);
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (!errno && end != s && !*end) return as_enc_int(b, i);
    double d = strtod(s, &end);
    if (end != s && !*end) return as_enc_float(b, d);
    return as_enc_str(b, s, len);
  }
  if (n->type == YAML_SEQUENCE_NODE) {
    yaml_node_item_t *it = n->data.sequence.items.start, *end = n->data.sequence.items.top;
    int rc = as_enc_table(b, (uint32_t)(end - it), 0);
    for (; rc == 0 && it < end; it++) rc = to_codec(c, yaml_document_get_node(c->doc, *it), path, b, depth + 1);
    return rc;
  }
  if (n->type == YAML_MAPPING_NODE) {
    yaml_node_pair_t *p = n->data.mapping.pairs.start, *end = n->data.mapping.pairs.top;
    int rc = as_enc_table(b, 0, (uint32_t)(end - p));
    for (; rc == 0 && p < end; p++) {
      yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
      if (!scalar(k)) return failf(c, k, path, "mapping keys must be scalars");
      rc = as_enc_str(b, scalar(k), k->data.scalar.length);
      if (rc == 0) rc = to_codec(c, yaml_document_get_node(c->doc, p->value), path, b, depth + 1);
    }
    return rc;
  }
  return failf(c, n, path, "unsupported YAML node");
}

static int get_any(ctx_t *c, const yaml_node_t *n, const char *path, as_any_t *out) {
  as_buf_free(&out->value);
  as_buf_init(&out->value);
  out->set = 1;
  mark(n, &out->pos);
  return to_codec(c, n, path, &out->value, 0);
}

/* Iterates a mapping's pairs as (key node K, value node V, key text NAME);
 * `continue` moves to the next pair. */
#define FOR_PAIRS(c, n, K, V, NAME)                                                                  \
  for (yaml_node_pair_t *p_ = (n)->data.mapping.pairs.start; p_ < (n)->data.mapping.pairs.top; p_++) \
    for (yaml_node_t *K = yaml_document_get_node((c)->doc, p_->key),                                \
                     *V = yaml_document_get_node((c)->doc, p_->value);                              \
         K; K = NULL)                                                                                \
      for (const char *NAME = scalar(K) ? scalar(K) : ""; NAME; NAME = NULL)

/* Field paths for messages ("applications[0].deployments[1].name"), cut to fit. */
static void join(char *out, size_t n, const char *a, const char *sep, const char *b) {
  size_t len = 0;
  const char *parts[] = {a, sep, b};
  for (int i = 0; i < 3; i++)
    for (const char *q = parts[i]; *q && len + 1 < n; q++) out[len++] = *q;
  out[len] = 0;
}

static void index_path(char *out, size_t n, const char *a, size_t i) {
  char idx[32];
  snprintf(idx, sizeof idx, "[%zu]", i);
  join(out, n, a, "", idx);
}

static int need_map(ctx_t *c, const yaml_node_t *n, const char *path) {
  if (n->type != YAML_MAPPING_NODE) return failf(c, n, path, "expected a mapping");
  return 0;
}

static int parse_rao(ctx_t *c, yaml_node_t *n, const char *path, as_cfg_dep_t *d) {
  char sub[256];
  if (is_null(n)) return 0;
  if (need_map(c, n, path)) return AS_EINVAL;
  d->rao_set = 1;
  FOR_PAIRS(c, n, k, v, key) {
    join(sub, sizeof sub, path, ".", key);
    int rc = 0;
    if (!strcmp(key, "num_cpus")) rc = get_num(c, v, sub, &d->num_cpus);
    else if (!strcmp(key, "num_gpus")) rc = get_num(c, v, sub, &d->num_gpus);
    else if (!strcmp(key, "memory")) rc = get_num(c, v, sub, &d->memory);
    else if (!strcmp(key, "resources")) {
      if (is_null(v)) continue;
      if (need_map(c, v, sub)) return AS_EINVAL;
      d->resources_set = 1;
      FOR_PAIRS(c, v, rk, rv, rkey) {
        char rsub[320];
        join(rsub, sizeof rsub, sub, ".", rkey);
        as_num_t amt = {0};
        if (d->nres >= AS_MAX_CUSTOM || strlen(rkey) >= AS_RES_NAME)
          return failf(c, rk, rsub, "at most %d custom resources with names under %d bytes", AS_MAX_CUSTOM,
                       AS_RES_NAME);
        if (get_num(c, rv, rsub, &amt)) return AS_EINVAL;
        if (amt.v < 0) return failf(c, rv, rsub, "must be ≥ 0");
        snprintf(d->res[d->nres].name, AS_RES_NAME, "%s", rkey);
        d->res[d->nres++].amount = as_res_fixed(amt.v);
      }
    } else if (!strcmp(key, "runtime_env") || !strcmp(key, "accelerator_type") || !strcmp(key, "object_store_memory"))
      warnf(c, k, sub, "not used by actorserve (ignored)");
    else warnf(c, k, sub, "unknown field (ignored)");
    if (rc) return rc;
  }
  as_num_t *nums[] = {&d->num_cpus, &d->num_gpus, &d->memory};
  const char *names[] = {"num_cpus", "num_gpus", "memory"};
  for (int i = 0; i < 3; i++)
    if (nums[i]->set && nums[i]->v < 0) return fail_at(c, nums[i]->pos, path, names[i], "must be ≥ 0");
  if (d->num_gpus.set && d->num_gpus.v > 1 && d->num_gpus.v != floor(d->num_gpus.v))
    return fail_at(c, d->num_gpus.pos, path, "num_gpus", "above 1 must be a whole number");
  return 0;
}

static int parse_dep(ctx_t *c, yaml_node_t *n, const char *path, as_cfg_dep_t *d) {
  char sub[256];
  if (need_map(c, n, path)) return AS_EINVAL;
  mark(n, &d->pos);
  FOR_PAIRS(c, n, k, v, key) {
    join(sub, sizeof sub, path, ".", key);
    int rc = 0;
    if (!strcmp(key, "name")) rc = get_str(c, v, sub, &d->name);
    else if (!strcmp(key, "num_replicas")) {
      if (scalar(v) && !strcmp(scalar(v), "auto")) {
        d->num_replicas_auto = 1;
        mark(v, &d->num_replicas.pos);
      } else rc = get_int(c, v, sub, 1, &d->num_replicas);
    } else if (!strcmp(key, "max_ongoing_requests")) rc = get_int(c, v, sub, 1, &d->max_ongoing);
    else if (!strcmp(key, "max_queued_requests")) {
      rc = get_int(c, v, sub, -1, &d->max_queued);
    } else if (!strcmp(key, "user_config")) rc = get_any(c, v, sub, &d->user_config);
    else if (!strcmp(key, "autoscaling_config")) {
      if (is_null(v)) continue;
      if (need_map(c, v, sub)) return AS_EINVAL;
      rc = get_any(c, v, sub, &d->autoscaling);
      FOR_PAIRS(c, v, ak, av, akey) {
        char asub[320];
        join(asub, sizeof asub, sub, ".", akey);
        if (!strcmp(akey, "min_replicas")) rc = get_int(c, av, asub, 0, &d->min_replicas);
        else if (!strcmp(akey, "max_replicas")) rc = get_int(c, av, asub, 1, &d->max_replicas);
        else if (!strcmp(akey, "initial_replicas")) rc = get_int(c, av, asub, 0, &d->initial_replicas);
        else if (!strcmp(akey, "target_ongoing_requests")) rc = get_num(c, av, asub, &d->target_ongoing);
        else if (!strcmp(akey, "upscale_delay_s")) rc = get_num(c, av, asub, &d->upscale_delay);
        else if (!strcmp(akey, "downscale_delay_s")) rc = get_num(c, av, asub, &d->downscale_delay);
        if (rc) return rc;
      }
    } else if (!strcmp(key, "health_check_period_s")) rc = get_num(c, v, sub, &d->health_period);
    else if (!strcmp(key, "health_check_timeout_s")) rc = get_num(c, v, sub, &d->health_timeout);
    else if (!strcmp(key, "graceful_shutdown_wait_loop_s")) rc = get_num(c, v, sub, &d->graceful_wait_loop);
    else if (!strcmp(key, "graceful_shutdown_timeout_s")) rc = get_num(c, v, sub, &d->graceful_timeout);
    else if (!strcmp(key, "ray_actor_options")) rc = parse_rao(c, v, sub, d);
    else if (!strcmp(key, "logging_config") || !strcmp(key, "request_router_config")) continue;
    else warnf(c, k, sub, "unknown field (ignored)");
    if (rc) return rc;
  }
  if (!d->name.set) return failf(c, n, path, "'name' is required");
  as_num_t *pos[] = {&d->health_period, &d->health_timeout, &d->graceful_wait_loop, &d->graceful_timeout};
  const char *names[] = {"health_check_period_s", "health_check_timeout_s", "graceful_shutdown_wait_loop_s",
                         "graceful_shutdown_timeout_s"};
  for (int i = 0; i < 4; i++)
    if (pos[i]->set && pos[i]->v <= 0) return fail_at(c, pos[i]->pos, path, names[i], "must be > 0");
  if (d->num_replicas.set && d->autoscaling.set) {
    snprintf(c->err, c->errlen, "%s:%d:%d: %s.num_replicas: an integer num_replicas cannot be combined with "
             "autoscaling_config (use num_replicas: auto, or drop one)", c->file, d->num_replicas.pos.line,
             d->num_replicas.pos.col, path);
    c->failed = 1;
    return AS_EINVAL;
  }
  if (d->min_replicas.set && d->max_replicas.set && d->max_replicas.v < d->min_replicas.v) {
    snprintf(c->err, c->errlen, "%s:%d:%d: %s.autoscaling_config.max_replicas: %g is below min_replicas %g", c->file,
             d->max_replicas.pos.line, d->max_replicas.pos.col, path, d->max_replicas.v, d->min_replicas.v);
    c->failed = 1;
    return AS_EINVAL;
  }
  return 0;
}

/* A route prefix starts with "/", does not end with "/" unless it is "/", and holds no braces. */
int as_route_prefix_ok(const char *p) {
  size_t n = strlen(p);
  return n >= 1 && p[0] == '/' && (n == 1 || p[n - 1] != '/') && !strpbrk(p, "{}");
}

static int parse_app(ctx_t *c, yaml_node_t *n, const char *path, as_cfg_app_t *a) {
  char sub[256];
  if (need_map(c, n, path)) return AS_EINVAL;
  mark(n, &a->pos);
  FOR_PAIRS(c, n, k, v, key) {
    join(sub, sizeof sub, path, ".", key);
    int rc = 0;
    if (!strcmp(key, "name")) rc = get_str(c, v, sub, &a->name);
    else if (!strcmp(key, "route_prefix")) {
      if (is_null(v)) continue;
      rc = get_str(c, v, sub, &a->route_prefix);
      if (!rc && !as_route_prefix_ok(a->route_prefix.s))
        return failf(c, v, sub, "'%s' must start with '/', must not end with '/' (unless it is '/'), and must "
                     "not hold braces", a->route_prefix.s);
    } else if (!strcmp(key, "import_path")) rc = get_str(c, v, sub, &a->import_path);
    else if (!strcmp(key, "args")) {
      if (is_null(v)) continue;
      if (need_map(c, v, sub)) return AS_EINVAL;
      rc = get_any(c, v, sub, &a->args);
    } else if (!strcmp(key, "runtime_env")) {
      if (!is_null(v) && !(v->type == YAML_MAPPING_NODE && v->data.mapping.pairs.start == v->data.mapping.pairs.top))
        warnf(c, k, sub, "runtime_env is not supported by actorserve (ignored)");
    } else if (!strcmp(key, "logging_config") || !strcmp(key, "external_scaler_enabled")) continue;
    else if (!strcmp(key, "deployments")) {
      if (is_null(v)) continue;
      if (v->type != YAML_SEQUENCE_NODE) return failf(c, v, sub, "expected a list of deployments");
      size_t cnt = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
      a->deps = calloc(cnt ? cnt : 1, sizeof *a->deps);
      if (!a->deps) return AS_ENOMEM;
      for (size_t i = 0; i < cnt; i++) {
        char dsub[300];
        index_path(dsub, sizeof dsub, sub, i);
        a->ndeps = (int)i + 1;
        rc = parse_dep(c, yaml_document_get_node(c->doc, v->data.sequence.items.start[i]), dsub, &a->deps[i]);
        if (rc) return rc;
        for (size_t j = 0; j < i; j++)
          if (!strcmp(a->deps[j].name.s, a->deps[i].name.s))
            return failf(c, yaml_document_get_node(c->doc, v->data.sequence.items.start[i]), dsub,
                         "deployment '%s' is listed twice", a->deps[i].name.s);
      }
    } else warnf(c, k, sub, "unknown field (ignored)");
    if (rc) return rc;
  }
  if (!a->import_path.set) return failf(c, n, path, "'import_path' is required (e.g. app:app for app.lua)");
  if (!a->name.set) {
    a->name.s = strdup("default");
    a->name.set = 1;
  }
  if (!a->route_prefix.set) {
    a->route_prefix.s = strdup("/");
    a->route_prefix.set = 1;
  }
  return 0;
}

static int parse_root(ctx_t *c, yaml_node_t *root, as_config_t *cfg) {
  char sub[256];
  if (!root) return failf(c, NULL, "(document)", "the file is empty");
  if (need_map(c, root, "(document)")) return AS_EINVAL;
  FOR_PAIRS(c, root, k, v, key) {
    int rc = 0;
    if (!strcmp(key, "proxy_location")) {
      rc = get_str(c, v, key, &cfg->proxy_location);
      const char *s = cfg->proxy_location.s;
      if (!rc && strcmp(s, "EveryNode") && strcmp(s, "HeadOnly") && strcmp(s, "Disabled"))
        return failf(c, v, key, "expected EveryNode, HeadOnly or Disabled, got '%s'", s);
    } else if (!strcmp(key, "http_options")) {
      if (is_null(v)) continue;
      if (need_map(c, v, key)) return AS_EINVAL;
      FOR_PAIRS(c, v, hk, hv, hkey) {
        join(sub, sizeof sub, "http_options", ".", hkey);
        if (!strcmp(hkey, "host")) rc = get_str(c, hv, sub, &cfg->host);
        else if (!strcmp(hkey, "port")) {
          rc = get_int(c, hv, sub, 1, &cfg->port);
          if (!rc && cfg->port.v > 65535) return failf(c, hv, sub, "expected a port number");
        } else if (!strcmp(hkey, "root_path")) rc = get_str(c, hv, sub, &cfg->root_path);
        else if (!strcmp(hkey, "request_timeout_s")) {
          if (!is_null(hv)) rc = get_num(c, hv, sub, &cfg->request_timeout_s);
        } else if (!strcmp(hkey, "keep_alive_timeout_s")) rc = get_num(c, hv, sub, &cfg->keep_alive_timeout_s);
        else warnf(c, hk, sub, "unknown field (ignored)");
        if (rc) return rc;
      }
    } else if (!strcmp(key, "grpc_options")) {
      if (is_null(v)) continue;
      if (need_map(c, v, key)) return AS_EINVAL;
      FOR_PAIRS(c, v, gk, gv, gkey) {
        join(sub, sizeof sub, "grpc_options", ".", gkey);
        if (!strcmp(gkey, "port")) rc = get_int(c, gv, sub, 0, &cfg->grpc_port);
        else if (!strcmp(gkey, "grpc_servicer_functions")) {
          if (gv->type != YAML_SEQUENCE_NODE) return failf(c, gv, sub, "expected a list");
          cfg->grpc_functions = (int)(gv->data.sequence.items.top - gv->data.sequence.items.start);
        } else warnf(c, gk, sub, "unknown field (ignored)");
        if (rc) return rc;
      }
    } else if (!strcmp(key, "logging_config")) {
      if (is_null(v)) continue;
      if (need_map(c, v, key)) return AS_EINVAL;
      FOR_PAIRS(c, v, lk, lv, lkey) {
        join(sub, sizeof sub, "logging_config", ".", lkey);
        if (!strcmp(lkey, "encoding")) {
          rc = get_str(c, lv, sub, &cfg->log_encoding);
          if (!rc && strcmp(cfg->log_encoding.s, "TEXT") && strcmp(cfg->log_encoding.s, "JSON"))
            return failf(c, lv, sub, "expected TEXT or JSON");
        } else if (!strcmp(lkey, "log_level")) {
          rc = get_str(c, lv, sub, &cfg->log_level);
          static const char *const lv_ok[] = {"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"};
          int ok = 0;
          for (size_t i = 0; !rc && i < sizeof lv_ok / sizeof *lv_ok; i++) ok |= !strcasecmp(cfg->log_level.s, lv_ok[i]);
          if (!rc && !ok) return failf(c, lv, sub, "expected DEBUG, INFO, WARNING, ERROR or CRITICAL");
        } else if (!strcmp(lkey, "logs_dir")) {
          if (!is_null(lv)) rc = get_str(c, lv, sub, &cfg->logs_dir);
        } else if (!strcmp(lkey, "enable_access_log")) rc = get_bool(c, lv, sub, &cfg->access_log_set, &cfg->enable_access_log);
        else if (!strcmp(lkey, "additional_log_standard_attrs")) continue;
        else warnf(c, lk, sub, "unknown field (ignored)");
        if (rc) return rc;
      }
    } else if (!strcmp(key, "applications")) {
      if (v->type != YAML_SEQUENCE_NODE) return failf(c, v, key, "expected a list of applications");
      size_t cnt = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
      cfg->apps = calloc(cnt ? cnt : 1, sizeof *cfg->apps);
      if (!cfg->apps) return AS_ENOMEM;
      for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *an = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
        index_path(sub, sizeof sub, "applications", i);
        cfg->napps = (int)i + 1;
        if ((rc = parse_app(c, an, sub, &cfg->apps[i]))) return rc;
        for (size_t j = 0; j < i; j++) {
          if (!strcmp(cfg->apps[j].name.s, cfg->apps[i].name.s))
            return failf(c, an, sub, "application name '%s' is used twice", cfg->apps[i].name.s);
          if (!strcmp(cfg->apps[j].route_prefix.s, cfg->apps[i].route_prefix.s))
            return failf(c, an, sub, "route_prefix '%s' is used by application '%s' too", cfg->apps[i].route_prefix.s,
                         cfg->apps[j].name.s);
        }
      }
    } else if (!strcmp(key, "target_capacity") || !strcmp(key, "host") || !strcmp(key, "port")) {
      warnf(c, k, key, "not used by actorserve (ignored)");
    } else warnf(c, k, key, "unknown field (ignored)");
    if (rc) return rc;
  }
  if (cfg->napps == 0) return failf(c, root, "applications", "the config defines no application");
  return 0;
}

int as_config_load(as_config_t *cfg, const char *path, char *err, size_t errlen) {
  memset(cfg, 0, sizeof *cfg);
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return AS_EINVAL;
  }
  cfg->path = strdup(path);
  char *slash = strrchr(cfg->path, '/');
  cfg->dir = slash ? strndup(cfg->path, (size_t)(slash - cfg->path)) : strdup(".");
  yaml_parser_t parser;
  yaml_document_t doc;
  yaml_parser_initialize(&parser);
  yaml_parser_set_input_file(&parser, f);
  int rc = 0;
  if (!yaml_parser_load(&parser, &doc)) {
    snprintf(err, errlen, "%s:%zu:%zu: invalid YAML: %s", path, parser.problem_mark.line + 1,
             parser.problem_mark.column + 1, parser.problem ? parser.problem : "parse error");
    rc = AS_EINVAL;
  } else {
    ctx_t c = {&doc, path, err, errlen, 0};
    rc = parse_root(&c, yaml_document_get_root_node(&doc), cfg);
    if (rc && !c.failed) snprintf(err, errlen, "%s: %s", path, as_strerror(rc));
    yaml_document_delete(&doc);
  }
  yaml_parser_delete(&parser);
  fclose(f);
  if (rc) as_config_free(cfg);
  return rc;
}

static void free_str(as_str_t *s) { free(s->s); s->s = NULL; s->set = 0; }

void as_config_free(as_config_t *cfg) {
  for (int i = 0; i < cfg->napps; i++) {
    as_cfg_app_t *a = &cfg->apps[i];
    for (int j = 0; j < a->ndeps; j++) {
      as_cfg_dep_t *d = &a->deps[j];
      free_str(&d->name);
      as_buf_free(&d->user_config.value);
      as_buf_free(&d->autoscaling.value);
    }
    free(a->deps);
    free_str(&a->name);
    free_str(&a->route_prefix);
    free_str(&a->import_path);
    as_buf_free(&a->args.value);
  }
  free(cfg->apps);
  free_str(&cfg->proxy_location);
  free_str(&cfg->host);
  free_str(&cfg->root_path);
  free_str(&cfg->log_encoding);
  free_str(&cfg->log_level);
  free_str(&cfg->logs_dir);
  free(cfg->path);
  free(cfg->dir);
  memset(cfg, 0, sizeof *cfg);
}

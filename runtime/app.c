/* app.c — reading an application file in the head. The file runs once in a
 * Lua state with no replica behind it; the variable named in FILE:VARIABLE
 * must hold an application (Deployment:bind(...)). actorserve._plan walks its
 * bind graph into deployments, which are copied here into C structures:
 * options with Ray Serve's defaults, ray_actor_options as resource requests,
 * and the bind arguments encoded once for the workers.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "asl.h"
#include "node.h"

/* Finds the last line of the file that assigns `var` at the start of a line. */
static int assignment_line(const char *file, const char *var) {
  FILE *f = fopen(file, "r");
  if (!f) return 0;
  char line[4096];
  int n = 0, found = 0;
  size_t vl = strlen(var);
  while (fgets(line, sizeof line, f)) {
    n++;
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (strncmp(p, "local ", 6) == 0) p += 6;
    if (strncmp(p, var, vl) != 0) continue;
    p += vl;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '=' && p[1] != '=') found = n;
  }
  fclose(f);
  return found;
}

static double opt_num(lua_State *L, int t, const char *k, double dflt) {
  lua_getfield(L, t, k);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

static void autoscale_defaults(as_dep_t *d);
static void autoscale_from_lua(lua_State *L, as_dep_t *d);

/* Copies one planned deployment (the table on top of the stack). */
static int copy_dep(lua_State *L, as_app_t *app, as_dep_t *d, char *err, size_t errlen) {
  int t = lua_gettop(L);
  lua_getfield(L, t, "name");
  d->name = strdup(lua_tostring(L, -1));
  lua_getfield(L, t, "class");
  d->class_name = strdup(lua_tostring(L, -1));
  lua_pop(L, 2);
  as_buf_init(&d->args);
  as_buf_init(&d->user_config);
  d->app = strdup(app->name);
  size_t kl = strlen(app->name) + strlen(d->name) + 2;
  d->key = malloc(kl);
  if (!d->name || !d->class_name || !d->app || !d->key) return AS_ENOMEM;
  snprintf(d->key, kl, "%s/%s", app->name, d->name);
  d->file = app->file;
  d->route_prefix = app->route_prefix;

  lua_getfield(L, t, "options");
  int o = lua_gettop(L);
  d->num_replicas = (int)opt_num(L, o, "num_replicas", 1);
  lua_getfield(L, o, "autoscaling_config");
  if (lua_istable(L, -1)) autoscale_from_lua(L, d);
  lua_pop(L, 1);
  lua_getfield(L, o, "num_replicas");
  if (lua_type(L, -1) == LUA_TSTRING && !d->autoscale) {
    autoscale_defaults(d); /* num_replicas = "auto" */
    d->num_replicas = 1;
  }
  lua_pop(L, 1);
  d->max_ongoing = (int)opt_num(L, o, "max_ongoing_requests", 5);
  d->max_queued = (int)opt_num(L, o, "max_queued_requests", -1);
  d->graceful_s = opt_num(L, o, "graceful_shutdown_timeout_s", 20);
  d->health_period_s = opt_num(L, o, "health_check_period_s", 10);
  d->health_timeout_s = opt_num(L, o, "health_check_timeout_s", 30);
  as_buf_init(&d->user_config);
  lua_getfield(L, o, "user_config");
  if (!lua_isnil(L, -1)) {
    char uerr[256];
    if (asl_encode(L, -1, &d->user_config, uerr, sizeof uerr)) {
      snprintf(err, errlen, "%s: deployment '%s': user_config: %s", app->file, d->name, uerr);
      lua_pop(L, 2);
      return AS_EINVAL;
    }
  }
  lua_pop(L, 1);
  memset(&d->req, 0, sizeof d->req);
  d->req.num_cpus = as_res_fixed(1); /* Ray reserves one CPU per replica unless told */
  lua_getfield(L, o, "ray_actor_options");
  if (lua_istable(L, -1)) {
    int r = lua_gettop(L);
    d->req.num_cpus = as_res_fixed(opt_num(L, r, "num_cpus", 1));
    d->req.num_gpus = as_res_fixed(opt_num(L, r, "num_gpus", 0));
    d->req.memory = (int64_t)opt_num(L, r, "memory", 0);
    lua_getfield(L, r, "resources");
    if (lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (d->req.ncustom >= AS_MAX_CUSTOM) {
          snprintf(err, errlen, "%s: deployment '%s' asks for more than %d custom resources", app->file,
                   d->name, AS_MAX_CUSTOM);
          return AS_EINVAL;
        }
        as_custom_t *c = &d->req.custom[d->req.ncustom++];
        snprintf(c->name, sizeof c->name, "%s", lua_tostring(L, -2));
        c->amount = as_res_fixed(lua_tonumber(L, -1));
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  if (d->num_replicas < 1 || d->max_ongoing < 1) {
    snprintf(err, errlen, "%s: deployment '%s': num_replicas and max_ongoing_requests must be ≥ 1", app->file,
             d->name);
    return AS_EINVAL;
  }
  if (d->req.num_gpus > AS_RES_UNIT && d->req.num_gpus % AS_RES_UNIT) {
    snprintf(err, errlen, "%s: deployment '%s': num_gpus above 1 must be a whole number", app->file, d->name);
    return AS_EINVAL;
  }

  lua_getfield(L, t, "args");
  char eerr[256];
  int rc = asl_encode(L, -1, &d->args, eerr, sizeof eerr);
  lua_pop(L, 1);
  if (rc) {
    snprintf(err, errlen, "%s: bind arguments of '%s': %s", app->file, d->name, eerr);
    return AS_EINVAL;
  }
  return 0;
}

int as_app_load(as_app_t *app, const char *target, const char *name, const char *prefix,
                const as_buf_t *args, char *err, size_t errlen) {
  memset(app, 0, sizeof *app);
  const char *colon = strrchr(target, ':');
  if (!colon || colon == target || !colon[1]) {
    snprintf(err, errlen, "%s: expected FILE.lua:VARIABLE (e.g. apps/hello.lua:app)", target);
    return AS_EINVAL;
  }
  char file[PATH_MAX];
  snprintf(file, sizeof file, "%.*s", (int)(colon - target), target);
  const char *var = colon + 1;
  char abs[PATH_MAX];
  if (!realpath(file, abs)) {
    snprintf(err, errlen, "%s: cannot open the application file", file);
    return AS_EINVAL;
  }
  app->file = strdup(abs);
  app->name = strdup(name);
  app->route_prefix = strdup(prefix);

  lua_State *L = asl_state_new(NULL, NULL, NULL);
  if (!L) return AS_ENOMEM;
  int rc = asl_run_file(L, file, err, errlen);
  if (rc) goto done;

  lua_getglobal(L, var);
  int v = lua_gettop(L);
  if (lua_isnil(L, v)) {
    snprintf(err, errlen, "%s: the file sets no global variable '%s' (write e.g. %s = MyDeployment:bind())", file,
             var, var);
    rc = AS_EINVAL;
    goto done;
  }
  if (lua_isfunction(L, v)) {
    /* Ray's builder pattern: the function gets the config's args and returns the application. */
    as_dec_t d;
    if (args && args->len) {
      as_dec_init(&d, args->data, args->len);
      if (asl_decode(L, &d)) lua_newtable(L);
    } else {
      lua_newtable(L);
    }
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      snprintf(err, errlen, "%s: builder '%s' failed: %s", file, var, lua_tostring(L, -1));
      rc = AS_EINVAL;
      goto done;
    }
  } else if (args && args->len > 2) {
    /* a non-empty args mapping needs a builder to take it */
    as_dec_t d;
    as_val_t t;
    as_dec_init(&d, args->data, args->len);
    if (as_dec_next(&d, &t) == 0 && t.type == AS_T_TABLE && (t.narr || t.nhash)) {
      snprintf(err, errlen, "%s: 'args' were given but '%s' is an application, not a builder function", file, var);
      rc = AS_EINVAL;
      goto done;
    }
  }
  lua_pushvalue(L, v);
  if (asl_call_module(L, "_plan", 1, 2)) {
    snprintf(err, errlen, "%s: cannot plan application '%s'", file, var);
    rc = AS_EINVAL;
    goto done;
  }
  if (lua_isnil(L, -2)) {
    int line = assignment_line(file, var);
    char where[64] = "";
    if (line) snprintf(where, sizeof where, ":%d", line);
    const char *why = lua_tostring(L, -1);
    int is_dep = lua_istable(L, v) && (lua_getfield(L, v, "_as"), !lua_isnil(L, -1));
    if (is_dep)
      snprintf(err, errlen, "%s%s: '%s' is a deployment, not an application: bind it, e.g. %s = Model:bind()",
               file, where, var, var);
    else if (why && strcmp(why, "not an application") != 0)
      snprintf(err, errlen, "%s%s: '%s': %s", file, where, var, why);
    else
      snprintf(err, errlen, "%s%s: '%s' is a %s, not an application (an application is Deployment:bind(...))",
               file, where, var, luaL_typename(L, v));
    rc = AS_EINVAL;
    goto done;
  }
  lua_pop(L, 1);
  int plan = lua_gettop(L);
  lua_getfield(L, plan, "ingress");
  app->ingress = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_getfield(L, plan, "deployments");
  int n = (int)lua_rawlen(L, -1);
  app->deps = calloc((size_t)n, sizeof *app->deps);
  if (!app->deps || !app->ingress) {
    rc = AS_ENOMEM;
    goto done;
  }
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, -1, i + 1);
    app->ndeps = i + 1;
    rc = copy_dep(L, app, &app->deps[i], err, errlen);
    lua_pop(L, 1);
    if (rc) goto done;
  }
done:
  asl_state_close(L);
  if (rc) as_app_free(app);
  else as_app_versions(app);
  return rc;
}

void as_app_free(as_app_t *app) {
  for (int i = 0; i < app->ndeps; i++) {
    as_dep_t *d = &app->deps[i];
    free(d->app);
    free(d->name);
    free(d->class_name);
    free(d->key);
    as_buf_free(&d->args);
    as_buf_free(&d->user_config);
  }
  free(app->deps);
  free(app->name);
  free(app->route_prefix);
  free(app->file);
  free(app->ingress);
  memset(app, 0, sizeof *app);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* Each deployment's code identity: the file's bytes, its class, its bind
 * arguments and its resource request. A change of any of them replaces its
 * replicas on redeploy; other option changes apply in place. */
void as_app_versions(as_app_t *app) {
  uint64_t fh = 14695981039346656037ull;
  FILE *f = fopen(app->file, "rb");
  if (f) {
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fh = fnv(fh, buf, n);
    fclose(f);
  }
  for (int i = 0; i < app->ndeps; i++) {
    as_dep_t *d = &app->deps[i];
    uint64_t h = fnv(fh, d->class_name, strlen(d->class_name));
    h = fnv(h, d->args.data ? d->args.data : "", d->args.len);
    h = fnv(h, &d->req, sizeof d->req);
    d->version = h;
  }
}

/* Ray Serve's defaults for autoscaling_config (and num_replicas = "auto"). */
static void autoscale_defaults(as_dep_t *d) {
  d->autoscale = 1;
  d->min_replicas = 1;
  d->max_replicas = 100;
  d->target_ongoing = 2;
  d->upscale_delay_s = 30;
  d->downscale_delay_s = 600;
}

/* autoscaling_config from the code (the table on top of the stack). */
static void autoscale_from_lua(lua_State *L, as_dep_t *d) {
  autoscale_defaults(d);
  int t = lua_gettop(L);
  d->min_replicas = (int)opt_num(L, t, "min_replicas", 1);
  d->max_replicas = (int)opt_num(L, t, "max_replicas", 100);
  d->target_ongoing = opt_num(L, t, "target_ongoing_requests", 2);
  if (d->target_ongoing <= 0) d->target_ongoing = 2;
  d->upscale_delay_s = opt_num(L, t, "upscale_delay_s", 30);
  d->downscale_delay_s = opt_num(L, t, "downscale_delay_s", 600);
  if (d->max_replicas < d->min_replicas) d->max_replicas = d->min_replicas;
  int n = (int)opt_num(L, t, "initial_replicas", d->min_replicas);
  d->num_replicas = n < 1 ? 1 : n;
}

/* A config's deployment entry over the code's values: what the file sets wins,
 * what it leaves out keeps the code's value. */
static void apply_dep(as_dep_t *d, const as_cfg_dep_t *c) {
  if (c->num_replicas.set) d->num_replicas = (int)c->num_replicas.v;
  if (c->num_replicas_auto || c->autoscaling.set) {
    if (!d->autoscale) autoscale_defaults(d);
    if (c->min_replicas.set) d->min_replicas = (int)c->min_replicas.v;
    if (c->max_replicas.set) d->max_replicas = (int)c->max_replicas.v;
    if (c->target_ongoing.set && c->target_ongoing.v > 0) d->target_ongoing = c->target_ongoing.v;
    if (c->upscale_delay.set) d->upscale_delay_s = c->upscale_delay.v;
    if (c->downscale_delay.set) d->downscale_delay_s = c->downscale_delay.v;
    if (d->max_replicas < d->min_replicas) d->max_replicas = d->min_replicas;
    int n = c->initial_replicas.set ? (int)c->initial_replicas.v : d->min_replicas;
    d->num_replicas = n < 1 ? 1 : n;
  }
  if (c->max_ongoing.set) d->max_ongoing = (int)c->max_ongoing.v;
  if (c->max_queued.set) d->max_queued = (int)c->max_queued.v;
  if (c->graceful_timeout.set) d->graceful_s = c->graceful_timeout.v;
  if (c->health_period.set) d->health_period_s = c->health_period.v;
  if (c->health_timeout.set) d->health_timeout_s = c->health_timeout.v;
  if (c->user_config.set) {
    d->user_config.len = 0;
    as_buf_append(&d->user_config, c->user_config.value.data, c->user_config.value.len);
  }
  if (c->num_cpus.set) d->req.num_cpus = as_res_fixed(c->num_cpus.v);
  if (c->num_gpus.set) d->req.num_gpus = as_res_fixed(c->num_gpus.v);
  if (c->memory.set) d->req.memory = (int64_t)c->memory.v;
  if (c->resources_set) {
    d->req.ncustom = c->nres;
    memcpy(d->req.custom, c->res, sizeof c->res);
  }
}

int as_app_apply_config(as_app_t *app, const as_cfg_app_t *c, int app_index, const char *cfgfile, char *err,
                        size_t errlen) {
  for (int j = 0; j < c->ndeps; j++) {
    const as_cfg_dep_t *cd = &c->deps[j];
    as_dep_t *d = NULL;
    for (int i = 0; i < app->ndeps; i++)
      if (strcmp(app->deps[i].name, cd->name.s) == 0) d = &app->deps[i];
    if (!d) {
      as_buf_t names;
      as_buf_init(&names);
      for (int i = 0; i < app->ndeps; i++) as_buf_appendf(&names, "%s%s", i ? ", " : "", app->deps[i].name);
      snprintf(err, errlen,
               "%s:%d:%d: applications[%d].deployments[%d].name: application '%s' defines no deployment '%s' (it has: %s)",
               cfgfile, cd->name.pos.line, cd->name.pos.col, app_index, j, app->name, cd->name.s,
               names.data ? names.data : "");
      as_buf_free(&names);
      return AS_EINVAL;
    }
    apply_dep(d, cd);
  }
  as_app_versions(app);
  return 0;
}

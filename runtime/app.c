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

/* Copies one planned deployment (the table on top of the stack). */
static int copy_dep(lua_State *L, as_app_t *app, as_dep_t *d, char *err, size_t errlen) {
  int t = lua_gettop(L);
  lua_getfield(L, t, "name");
  d->name = strdup(lua_tostring(L, -1));
  lua_getfield(L, t, "class");
  d->class_name = strdup(lua_tostring(L, -1));
  lua_pop(L, 2);
  d->app = strdup(app->name);
  size_t kl = strlen(app->name) + strlen(d->name) + 2;
  d->key = malloc(kl);
  if (!d->name || !d->class_name || !d->app || !d->key) return AS_ENOMEM;
  snprintf(d->key, kl, "%s/%s", app->name, d->name);

  lua_getfield(L, t, "options");
  int o = lua_gettop(L);
  d->num_replicas = (int)opt_num(L, o, "num_replicas", 1);
  d->max_ongoing = (int)opt_num(L, o, "max_ongoing_requests", 5);
  d->max_queued = (int)opt_num(L, o, "max_queued_requests", -1);
  d->graceful_s = opt_num(L, o, "graceful_shutdown_timeout_s", 20);
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

  as_buf_init(&d->args);
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
                char *err, size_t errlen) {
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
  }
  free(app->deps);
  free(app->name);
  free(app->route_prefix);
  free(app->file);
  free(app->ingress);
  memset(app, 0, sizeof *app);
}

/* asl_state.c — making Lua states for actorserve: standard libraries, the
 * embedded `actorserve` modules (generated from the .lua files of lua/ by embed.cmake), the
 * host record, running an application file and calling into the module with
 * a traceback handler so that no Lua error unwinds through C.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "asl.h"
#include "asl_internal.h"

extern const struct { const char *name; const unsigned char *src; size_t len; } asl_embedded[];

static const char HOST_KEY[] = "actorserve.host";

asl_host_t *asl_host(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, HOST_KEY);
  asl_host_t *h = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return h;
}

static int load_embedded(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (int i = 0; asl_embedded[i].name; i++) {
    if (strcmp(asl_embedded[i].name, name) != 0) continue;
    char chunk[128];
    snprintf(chunk, sizeof chunk, "=[actorserve] %s.lua", name);
    if (luaL_loadbuffer(L, (const char *)asl_embedded[i].src, asl_embedded[i].len, chunk) != LUA_OK)
      return lua_error(L);
    lua_pushstring(L, name);
    lua_call(L, 1, 1);
    return 1;
  }
  return luaL_error(L, "no embedded module '%s'", name);
}

lua_State *asl_state_new(const asl_host_ops *ops, void *ud, const asl_context_t *ctx) {
  lua_State *L = luaL_newstate();
  if (!L) return NULL;
  luaL_openlibs(L);
  asl_host_t *h = lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  h->ops = ops;
  h->ud = ud;
  if (ctx) {
    h->ctx = *ctx;
    h->has_ctx = 1;
  }
  lua_setfield(L, LUA_REGISTRYINDEX, HOST_KEY);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_actorserve_core);
  lua_setfield(L, -2, "actorserve.core");
  lua_pushcfunction(L, luaopen_actorserve_llm_core);
  lua_setfield(L, -2, "actorserve.llm_core");
  for (int i = 0; asl_embedded[i].name; i++) {
    lua_pushcfunction(L, load_embedded);
    lua_setfield(L, -2, asl_embedded[i].name);
  }
  lua_pop(L, 1);
  return L;
}

void asl_state_close(lua_State *L) {
  if (L) lua_close(L);
}

static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Copies the first line of the message on top of the stack into err. */
static void first_line(lua_State *L, char *err, size_t errlen) {
  const char *m = lua_tostring(L, -1);
  if (!m) m = "(error without a message)";
  size_t n = strcspn(m, "\n");
  if (n >= errlen) n = errlen - 1;
  memcpy(err, m, n);
  err[n] = 0;
}

int asl_run_file(lua_State *L, const char *path, char *err, size_t errlen) {
  /* Modules beside the app file can be required. */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
  lua_pushstring(L, dir);
  lua_setfield(L, LUA_REGISTRYINDEX, "actorserve.app_dir"); /* for paths relative to the app */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);

  lua_pushcfunction(L, msgh);
  int base = lua_gettop(L);
  int rc = luaL_loadfilex(L, path, "t");
  if (rc == LUA_OK) rc = lua_pcall(L, 0, 0, base);
  if (rc != LUA_OK) {
    first_line(L, err, errlen);
    if (rc == LUA_ERRFILE && strstr(err, path) == NULL) {
      char tmp[512];
      snprintf(tmp, sizeof tmp, "%s: %s", path, err);
      snprintf(err, errlen, "%s", tmp);
    }
    lua_settop(L, base - 1);
    return AS_EINVAL;
  }
  lua_settop(L, base - 1);
  return 0;
}

int asl_call_module(lua_State *L, const char *fn, int nargs, int nresults) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "actorserve");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 2);
    lua_getglobal(L, "require");
    lua_pushstring(L, "actorserve");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      AS_LOGE("cannot load the actorserve module: %s", lua_tostring(L, -1));
      lua_pop(L, 1 + nargs);
      return AS_EINVAL;
    }
  } else {
    lua_remove(L, -2);
  }
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  /* stack: args..., fn → fn, args... */
  lua_insert(L, -(nargs + 1));
  lua_pushcfunction(L, msgh);
  lua_insert(L, -(nargs + 2));
  int h = lua_gettop(L) - nargs - 1;
  int rc = lua_pcall(L, nargs, nresults, h);
  if (rc != LUA_OK) {
    AS_LOGE("actorserve.%s failed: %s", fn, lua_tostring(L, -1));
    lua_pop(L, 2);
    return AS_EINVAL;
  }
  lua_remove(L, h);
  return 0;
}

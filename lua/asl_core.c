/* asl_core.c — the C module `actorserve.core`: what lua/actorserve.lua needs
 * from its host. JSON and codec helpers work everywhere; call, reply, stream_*,
 * timer and ready reach the replica's event loop through asl_host_ops and
 * raise a Lua error in a process that hosts no replica (the head).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "asl.h"
#include "asl_internal.h"

static char null_sentinel;
void *asl_null_sentinel(void) { return &null_sentinel; }

static const asl_host_ops *need_ops(lua_State *L, const char *what) {
  asl_host_t *h = asl_host(L);
  if (!h->ops) luaL_error(L, "%s is only available inside a replica", what);
  return h->ops;
}

static int l_json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  as_buf_t b;
  as_buf_init(&b);
  char err[256];
  if (asl_json_encode(L, 1, &b, err, sizeof err)) {
    as_buf_free(&b);
    return luaL_error(L, "json_encode: %s", err);
  }
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  as_buf_free(&b);
  return 1;
}

static int l_json_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char err[128];
  if (asl_json_decode(L, s, n, err, sizeof err)) return luaL_error(L, "%s", err);
  return 1;
}

/* Encodes the value at idx into b or raises with the message. */
static void encode_or_raise(lua_State *L, int idx, as_buf_t *b, const char *what) {
  char err[256];
  if (asl_encode(L, idx, b, err, sizeof err)) {
    as_buf_free(b);
    luaL_error(L, "%s: %s", what, err);
  }
}

static int l_call(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "calling a deployment handle");
  const char *dep = luaL_checkstring(L, 1);
  const char *method = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  as_buf_t b;
  as_buf_init(&b);
  encode_or_raise(L, 3, &b, "handle call arguments");
  uint64_t id = 0;
  int rc = ops->call(asl_host(L)->ud, dep, method, b.data, b.len, &id);
  as_buf_free(&b);
  if (rc == AS_ENOTFOUND) return luaL_error(L, "no deployment named '%s' in this application", dep);
  if (rc) return luaL_error(L, "calling %s.%s failed: %s", dep, method, as_strerror(rc));
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

static int l_reply(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "reply");
  lua_Integer token = luaL_checkinteger(L, 1);
  int ok = lua_toboolean(L, 2);
  as_buf_t b;
  as_buf_init(&b);
  encode_or_raise(L, 3, &b, "reply value");
  int rc = ops->reply(asl_host(L)->ud, (int64_t)token, ok, b.data, b.len);
  as_buf_free(&b);
  if (rc && rc != AS_ECLOSED) return luaL_error(L, "reply failed: %s", as_strerror(rc));
  return 0;
}

/* reply_text(token, s): a 200 text/plain answer encoded straight from the
 * string, the common case of a handler returning a string. */
static int l_reply_text(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "reply");
  lua_Integer token = luaL_checkinteger(L, 1);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  static const char ct[] = "content-type", tp[] = "text/plain; charset=utf-8";
  as_buf_t b;
  as_buf_init(&b);
  int rc = as_buf_reserve(&b, n + 64);
  if (!rc) rc = as_enc_table(&b, 3, 0);
  if (!rc) rc = as_enc_int(&b, 200);
  if (!rc) rc = as_enc_table(&b, 2, 0);
  if (!rc) rc = as_enc_str(&b, ct, sizeof ct - 1);
  if (!rc) rc = as_enc_str(&b, tp, sizeof tp - 1);
  if (!rc) rc = as_enc_str(&b, s, n);
  if (!rc) rc = ops->reply(asl_host(L)->ud, (int64_t)token, 1, b.data, b.len);
  as_buf_free(&b);
  if (rc && rc != AS_ECLOSED) return luaL_error(L, "reply failed: %s", as_strerror(rc));
  return 0;
}

static int l_stream_start(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "serve.stream");
  lua_Integer token = luaL_checkinteger(L, 1);
  lua_Integer status = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  as_buf_t b;
  as_buf_init(&b);
  encode_or_raise(L, 3, &b, "stream headers");
  int rc = ops->stream_start(asl_host(L)->ud, (int64_t)token, (int)status, b.data, b.len);
  as_buf_free(&b);
  if (rc && rc != AS_ECLOSED) return luaL_error(L, "stream failed: %s", as_strerror(rc));
  return 0;
}

static int l_stream_data(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "serve.stream");
  lua_Integer token = luaL_checkinteger(L, 1);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  int rc = ops->stream_data(asl_host(L)->ud, (int64_t)token, s, n);
  lua_pushboolean(L, rc == 0);
  return 1;
}

static int l_stream_end(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "serve.stream");
  lua_Integer token = luaL_checkinteger(L, 1);
  int ok = lua_toboolean(L, 2);
  const char *err = luaL_optstring(L, 3, NULL);
  ops->stream_end(asl_host(L)->ud, (int64_t)token, ok, err);
  return 0;
}

static int l_timer(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "serve.sleep");
  double s = luaL_checknumber(L, 1);
  uint64_t id = 0;
  int rc = ops->timer(asl_host(L)->ud, s, &id);
  if (rc) return luaL_error(L, "timer failed: %s", as_strerror(rc));
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

static int l_ready(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "ready");
  int ok = lua_toboolean(L, 1);
  const char *err = luaL_optstring(L, 2, NULL);
  ops->ready(asl_host(L)->ud, ok, err);
  return 0;
}

static int l_cancel(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "cancel");
  ops->cancel(asl_host(L)->ud, (uint64_t)luaL_checkinteger(L, 1));
  return 0;
}

static int l_report(lua_State *L) {
  const asl_host_ops *ops = need_ops(L, "report");
  static const char *const kinds[] = {"health", "reconfigure", NULL};
  int kind = luaL_checkoption(L, 1, NULL, kinds) + 1;
  lua_Integer seq = luaL_checkinteger(L, 2);
  int ok = lua_toboolean(L, 3);
  const char *err = luaL_optstring(L, 4, NULL);
  ops->report(asl_host(L)->ud, kind, (int64_t)seq, ok, err);
  return 0;
}

static int l_context(lua_State *L) {
  asl_host_t *h = asl_host(L);
  if (!h->has_ctx) return 0;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, h->ctx.app_name);
  lua_setfield(L, -2, "app_name");
  lua_pushstring(L, h->ctx.deployment);
  lua_setfield(L, -2, "deployment");
  lua_pushstring(L, h->ctx.replica_id);
  lua_setfield(L, -2, "replica_id");
  lua_pushinteger(L, (lua_Integer)getpid());
  lua_setfield(L, -2, "pid");
  return 1;
}

static int l_app_dir(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "actorserve.app_dir");
  return 1;
}

static int l_log(lua_State *L) {
  static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
  int level = luaL_checkoption(L, 1, "info", levels);
  const char *msg = luaL_checkstring(L, 2);
  as_log(level, "%s", msg);
  return 0;
}

int luaopen_actorserve_core(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"json_encode", l_json_encode}, {"json_decode", l_json_decode},
    {"call", l_call}, {"reply", l_reply}, {"reply_text", l_reply_text},
    {"stream_start", l_stream_start}, {"stream_data", l_stream_data}, {"stream_end", l_stream_end},
    {"timer", l_timer}, {"ready", l_ready}, {"report", l_report}, {"cancel", l_cancel}, {"context", l_context}, {"log", l_log}, {"app_dir", l_app_dir},
    {NULL, NULL}};
  luaL_newlib(L, fns);
  lua_pushlightuserdata(L, asl_null_sentinel());
  lua_setfield(L, -2, "null");
  lua_pushstring(L, AS_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

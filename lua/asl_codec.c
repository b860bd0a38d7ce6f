/* asl_codec.c — Lua values to and from the runtime's binary codec
 * (runtime/codec.c). Tables keep their array part (1..n) and their other keys;
 * functions, userdata and threads are refused with a message that names
 * where they were found. serve.null travels as nil.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "asl.h"
#include "asl_internal.h"

typedef struct enc_s {
  lua_State *L;
  as_buf_t *b;
  char *err;
  size_t errlen;
} enc_t;

static int enc_value(enc_t *e, int idx, int depth);

static int enc_table(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  if (depth >= AS_CODEC_MAX_DEPTH) {
    snprintf(e->err, e->errlen, "value nested deeper than %d tables (a cycle?)", AS_CODEC_MAX_DEPTH);
    return AS_EDEPTH;
  }
  if (!lua_checkstack(L, 4)) {
    snprintf(e->err, e->errlen, "Lua stack exhausted");
    return AS_ENOMEM;
  }
  idx = lua_absindex(L, idx);
  lua_Integer narr = (lua_Integer)lua_rawlen(L, idx);
  uint32_t nhash = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k >= 1 && k <= narr) continue;
    }
    nhash++;
  }
  int rc = as_enc_table(e->b, (uint32_t)narr, nhash);
  for (lua_Integer i = 1; rc == 0 && i <= narr; i++) {
    lua_rawgeti(L, idx, i);
    rc = enc_value(e, -1, depth + 1);
    lua_pop(L, 1);
  }
  if (rc) return rc;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_isinteger(L, -2)) {
      lua_Integer k = lua_tointeger(L, -2);
      if (k >= 1 && k <= narr) { lua_pop(L, 1); continue; }
    }
    int kt = lua_type(L, -2);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
      snprintf(e->err, e->errlen, "table keys must be strings, numbers or booleans, not %s", lua_typename(L, kt));
      lua_pop(L, 2);
      return AS_EBADTYPE;
    }
    rc = enc_value(e, -2, depth + 1);
    if (rc == 0) rc = enc_value(e, -1, depth + 1);
    lua_pop(L, 1);
    if (rc) { lua_pop(L, 1); return rc; }
  }
  return 0;
}

static int enc_value(enc_t *e, int idx, int depth) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return as_enc_nil(e->b);
    case LUA_TBOOLEAN: return as_enc_bool(e->b, lua_toboolean(L, idx));
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return as_enc_int(e->b, (int64_t)lua_tointeger(L, idx));
      return as_enc_float(e->b, (double)lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return as_enc_str(e->b, s, n);
    }
    case LUA_TTABLE: return enc_table(e, idx, depth);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == asl_null_sentinel()) return as_enc_nil(e->b);
      /* fallthrough */
    default:
      snprintf(e->err, e->errlen, "a %s cannot cross processes (only nil, booleans, numbers, strings and tables)",
               luaL_typename(L, idx));
      return AS_EBADTYPE;
  }
}

int asl_encode(lua_State *L, int idx, as_buf_t *b, char *err, size_t errlen) {
  enc_t e = {L, b, err, errlen};
  size_t mark = b->len;
  int rc = enc_value(&e, lua_absindex(L, idx), 0);
  if (rc) b->len = mark;
  return rc;
}

static int dec_value(lua_State *L, as_dec_t *d, int depth) {
  as_val_t v;
  int rc = as_dec_next(d, &v);
  if (rc) return rc;
  if (!lua_checkstack(L, 3)) return AS_ENOMEM;
  switch (v.type) {
    case AS_T_NIL: lua_pushnil(L); return 0;
    case AS_T_FALSE: lua_pushboolean(L, 0); return 0;
    case AS_T_TRUE: lua_pushboolean(L, 1); return 0;
    case AS_T_INT: lua_pushinteger(L, (lua_Integer)v.i); return 0;
    case AS_T_FLOAT: lua_pushnumber(L, (lua_Number)v.f); return 0;
    case AS_T_STR: lua_pushlstring(L, v.s, v.len); return 0;
    case AS_T_TABLE: break;
    default: return AS_EBADTYPE;
  }
  if (depth >= AS_CODEC_MAX_DEPTH) return AS_EDEPTH;
  lua_createtable(L, (int)(v.narr > 1u << 20 ? 1u << 20 : v.narr), (int)(v.nhash > 1u << 20 ? 1u << 20 : v.nhash));
  for (uint32_t i = 1; i <= v.narr; i++) {
    if ((rc = dec_value(L, d, depth + 1))) { lua_pop(L, 1); return rc; }
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  for (uint32_t i = 0; i < v.nhash; i++) {
    if ((rc = dec_value(L, d, depth + 1))) { lua_pop(L, 1); return rc; }
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))) {
      lua_pop(L, 2);
      return AS_EINVAL; /* nil or NaN key */
    }
    if ((rc = dec_value(L, d, depth + 1))) { lua_pop(L, 2); return rc; }
    lua_rawset(L, -3);
  }
  return 0;
}

int asl_decode(lua_State *L, as_dec_t *d) {
  int top = lua_gettop(L);
  int rc = dec_value(L, d, 0);
  if (rc) lua_settop(L, top);
  return rc;
}

/* asl_json.c — JSON for Lua values. Decoding uses cJSON (libcjson); encoding
 * is written here because cJSON's builder cannot hold strings with NUL bytes
 * or 64-bit integers exactly. Tables that are sequences 1..n (n > 0) become
 * arrays, other tables objects (so an empty table is {}); serve.null is null.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>

#include "asl.h"
#include "asl_internal.h"

#define JSON_MAX_DEPTH 100

static int put_string(as_buf_t *out, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (as_buf_reserve(out, n + 2)) return AS_ENOMEM;
  as_buf_append(out, "\"", 1);
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    if (as_buf_append(out, s + start, i - start)) return AS_ENOMEM;
    char esc[7] = {'\\', 0};
    size_t len = 2;
    switch (c) {
      case '"': esc[1] = '"'; break;
      case '\\': esc[1] = '\\'; break;
      case '\n': esc[1] = 'n'; break;
      case '\r': esc[1] = 'r'; break;
      case '\t': esc[1] = 't'; break;
      case '\b': esc[1] = 'b'; break;
      case '\f': esc[1] = 'f'; break;
      default:
        memcpy(esc + 1, "u00", 3);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        len = 6;
    }
    if (as_buf_append(out, esc, len)) return AS_ENOMEM;
    start = i + 1;
  }
  if (as_buf_append(out, s + start, n - start)) return AS_ENOMEM;
  return as_buf_append(out, "\"", 1);
}

static int enc(lua_State *L, int idx, as_buf_t *out, char *err, size_t errlen, int depth);

static int enc_table(lua_State *L, int idx, as_buf_t *out, char *err, size_t errlen, int depth) {
  if (depth >= JSON_MAX_DEPTH) {
    snprintf(err, errlen, "JSON value nested deeper than %d (a cycle?)", JSON_MAX_DEPTH);
    return AS_EDEPTH;
  }
  if (!lua_checkstack(L, 4)) return AS_ENOMEM;
  size_t n = lua_rawlen(L, idx), count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) { count++; lua_pop(L, 1); }
  int rc = 0;
  if (n > 0 && count == n) {
    if (as_buf_append(out, "[", 1)) return AS_ENOMEM;
    for (size_t i = 1; i <= n && rc == 0; i++) {
      if (i > 1 && as_buf_append(out, ",", 1)) return AS_ENOMEM;
      lua_rawgeti(L, idx, (lua_Integer)i);
      rc = enc(L, lua_gettop(L), out, err, errlen, depth + 1);
      lua_pop(L, 1);
    }
    return rc ? rc : as_buf_append(out, "]", 1);
  }
  if (as_buf_append(out, "{", 1)) return AS_ENOMEM;
  int first = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kt = lua_type(L, -2);
    if (kt == LUA_TSTRING) {
      size_t kn;
      const char *k = lua_tolstring(L, -2, &kn);
      rc = (!first && as_buf_append(out, ",", 1)) ? AS_ENOMEM : put_string(out, k, kn);
    } else if (kt == LUA_TNUMBER) {
      lua_pushvalue(L, -2); /* tostring on a copy so lua_next keeps its key */
      size_t kn;
      const char *k = lua_tolstring(L, -1, &kn);
      rc = (!first && as_buf_append(out, ",", 1)) ? AS_ENOMEM : put_string(out, k, kn);
      lua_pop(L, 1);
    } else {
      snprintf(err, errlen, "JSON object keys must be strings or numbers, not %s", lua_typename(L, kt));
      rc = AS_EBADTYPE;
    }
    if (rc == 0) rc = as_buf_append(out, ":", 1);
    if (rc == 0) rc = enc(L, lua_gettop(L), out, err, errlen, depth + 1);
    lua_pop(L, 1);
    if (rc) { lua_pop(L, 1); return rc; }
    first = 0;
  }
  return as_buf_append(out, "}", 1);
}

static int enc(lua_State *L, int idx, as_buf_t *out, char *err, size_t errlen, int depth) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return as_buf_append(out, "null", 4);
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? as_buf_append(out, "true", 4) : as_buf_append(out, "false", 5);
    case LUA_TNUMBER: {
      if (lua_isinteger(L, idx)) return as_buf_appendf(out, "%lld", (long long)lua_tointeger(L, idx));
      double d = lua_tonumber(L, idx);
      if (!isfinite(d)) {
        snprintf(err, errlen, "JSON cannot hold %s", isnan(d) ? "NaN" : "infinity");
        return AS_EINVAL;
      }
      /* the shortest form that reads back as the same double */
      char tmp[32];
      for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
      }
      if (!strpbrk(tmp, ".eEn")) strcat(tmp, ".0"); /* stays a float when read back */
      return as_buf_append(out, tmp, strlen(tmp));
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return put_string(out, s, n);
    }
    case LUA_TTABLE: return enc_table(L, idx, out, err, errlen, depth);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == asl_null_sentinel()) return as_buf_append(out, "null", 4);
      /* fallthrough */
    default:
      snprintf(err, errlen, "JSON cannot hold a %s", luaL_typename(L, idx));
      return AS_EBADTYPE;
  }
}

int asl_json_encode(lua_State *L, int idx, as_buf_t *out, char *err, size_t errlen) {
  size_t mark = out->len;
  int rc = enc(L, lua_absindex(L, idx), out, err, errlen, 0);
  if (rc) {
    out->len = mark;
    if (rc == AS_ENOMEM) snprintf(err, errlen, "out of memory");
  }
  return rc;
}

static int push(lua_State *L, const cJSON *j, int depth) {
  if (depth > JSON_MAX_DEPTH || !lua_checkstack(L, 3)) return AS_EDEPTH;
  if (cJSON_IsNull(j)) {
    lua_pushlightuserdata(L, asl_null_sentinel());
  } else if (cJSON_IsFalse(j)) {
    lua_pushboolean(L, 0);
  } else if (cJSON_IsTrue(j)) {
    lua_pushboolean(L, 1);
  } else if (cJSON_IsNumber(j)) {
    double d = j->valuedouble;
    if (d == floor(d) && fabs(d) < 9007199254740992.0) lua_pushinteger(L, (lua_Integer)d);
    else lua_pushnumber(L, d);
  } else if (cJSON_IsString(j)) {
    lua_pushstring(L, j->valuestring);
  } else if (cJSON_IsArray(j)) {
    lua_createtable(L, cJSON_GetArraySize(j), 0);
    lua_Integer i = 1;
    for (const cJSON *c = j->child; c; c = c->next, i++) {
      if (push(L, c, depth + 1)) { lua_pop(L, 1); return AS_EDEPTH; }
      lua_rawseti(L, -2, i);
    }
  } else if (cJSON_IsObject(j)) {
    lua_createtable(L, 0, 4);
    for (const cJSON *c = j->child; c; c = c->next) {
      if (push(L, c, depth + 1)) { lua_pop(L, 1); return AS_EDEPTH; }
      lua_setfield(L, -2, c->string);
    }
  } else {
    return AS_EINVAL;
  }
  return 0;
}

int asl_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen) {
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithLengthOpts(s, len, &end, 0);
  if (!j) {
    const char *at = cJSON_GetErrorPtr();
    size_t off = (at && at >= s && at <= s + len) ? (size_t)(at - s) : 0;
    snprintf(err, errlen, "invalid JSON at byte %zu", off);
    return AS_EINVAL;
  }
  while (end && end < s + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
  if (end && end < s + len) {
    cJSON_Delete(j);
    snprintf(err, errlen, "invalid JSON: unexpected data at byte %zu", (size_t)(end - s));
    return AS_EINVAL;
  }
  int rc = push(L, j, 0);
  cJSON_Delete(j);
  if (rc) snprintf(err, errlen, "JSON nested deeper than %d", JSON_MAX_DEPTH);
  return rc;
}

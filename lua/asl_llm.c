/* asl_llm.c — the C module `actorserve.llm_core`: a model engine
 * (actors/llm/engine.c) as a Lua userdata, with its tokenizer. The Lua side,
 * lua/actorserve_llm.lua (module `actorserve.llm`), turns engine events into
 * woken coroutines; this file only moves values across: submit a generation
 * or an embedding, cancel, tokenize, detokenize, apply the chat template.
 * Engine events arrive on the replica's loop and are handed to
 * actorserve.llm._on_events on the main Lua thread.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "asl.h"
#include "llm.h"

#define ENGINE_MT "actorserve.Engine"

typedef struct lengine_s {
  as_engine_t *e;   /* NULL once closed */
  lua_State *L;     /* the main thread of the state */
} lengine_t;

static lengine_t *check_engine(lua_State *L) {
  lengine_t *le = luaL_checkudata(L, 1, ENGINE_MT);
  if (!le->e) luaL_error(L, "the model was closed");
  return le;
}

static void on_events(void *ud, const as_engine_ev_t *evs, int n) {
  lengine_t *le = ud;
  lua_State *L = le->L;
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "actorserve.llm");
  if (!lua_istable(L, -1)) {
    lua_settop(L, top);
    return;
  }
  lua_getfield(L, -1, "_on_events");
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    const as_engine_ev_t *ev = &evs[i];
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)ev->id);
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, ev->text ? ev->text : "", ev->text_len);
    lua_setfield(L, -2, "text");
    lua_pushinteger(L, ev->token);
    lua_setfield(L, -2, "token");
    lua_pushboolean(L, ev->finished);
    lua_setfield(L, -2, "finished");
    if (ev->finish_reason) {
      lua_pushstring(L, ev->finish_reason);
      lua_setfield(L, -2, "reason");
    }
    if (ev->embedding) {
      lua_createtable(L, ev->dim, 0);
      for (int k = 0; k < ev->dim; k++) {
        lua_pushnumber(L, ev->embedding[k]);
        lua_rawseti(L, -2, k + 1);
      }
      lua_setfield(L, -2, "embedding");
      lua_pushinteger(L, ev->ntokens);
      lua_setfield(L, -2, "ntokens");
    }
    lua_rawseti(L, -2, i + 1);
  }
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) AS_LOGE("actorserve.llm._on_events failed: %s", lua_tostring(L, -1));
  lua_settop(L, top);
}

/* load(dir, {kv_max_tokens=, step_tokens=, step_delay_s=, device=,
 * gpu_memory_utilization=}) */
static int l_load(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  as_engine_opts_t o = {0, 0, 0, NULL, 0};
  char device[16] = "cpu";
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "kv_max_tokens");
    o.kv_max_tokens = (size_t)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "step_tokens");
    o.step_tokens = (int)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "step_delay_s");
    o.step_delay_s = luaL_optnumber(L, -1, 0);
    lua_getfield(L, 2, "device");
    snprintf(device, sizeof device, "%s", luaL_optstring(L, -1, "cpu"));
    lua_getfield(L, 2, "gpu_memory_utilization");
    o.mem_fraction = luaL_optnumber(L, -1, 0);
    lua_pop(L, 5);
  }
  o.device = device;
  lengine_t *le = lua_newuserdatauv(L, sizeof *le, 0);
  le->e = NULL; /* closed until the engine exists, so __gc is always safe */
  luaL_setmetatable(L, ENGINE_MT);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  le->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  char err[512];
  if (as_engine_new(&le->e, dir, uv_default_loop(), on_events, le, &o, err, sizeof err)) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

static int l_close(lua_State *L) {
  lengine_t *le = luaL_checkudata(L, 1, ENGINE_MT);
  if (le->e) {
    as_engine_free(le->e);
    le->e = NULL;
  }
  return 0;
}

static int read_ids(lua_State *L, int idx, int32_t **out) {
  luaL_checktype(L, idx, LUA_TTABLE);
  int n = (int)lua_rawlen(L, idx);
  int32_t *ids = malloc(sizeof *ids * (size_t)(n ? n : 1));
  if (!ids) return luaL_error(L, "out of memory");
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);
    ids[i] = (int32_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  *out = ids;
  return n;
}

/* generate(ids, {max_new_tokens, temperature, top_k, top_p, seed, stop = {..}}) → id */
static int l_generate(lua_State *L) {
  lengine_t *le = check_engine(L);
  const as_gen_t *g = as_engine_gen(le->e);
  if (!g) return luaL_error(L, "this model is an encoder: use embed(), not generate()");
  as_gen_opts_t o;
  as_gen_opts_model(g, &o);
  const char *stops[16];
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "max_new_tokens");
    if (!lua_isnil(L, -1)) o.max_new_tokens = (int)luaL_checkinteger(L, -1);
    lua_getfield(L, 3, "temperature");
    if (!lua_isnil(L, -1)) o.temperature = (float)luaL_checknumber(L, -1);
    lua_getfield(L, 3, "top_k");
    if (!lua_isnil(L, -1)) o.top_k = (int)luaL_checkinteger(L, -1);
    lua_getfield(L, 3, "top_p");
    if (!lua_isnil(L, -1)) o.top_p = (float)luaL_checknumber(L, -1);
    lua_getfield(L, 3, "seed");
    if (!lua_isnil(L, -1)) o.seed = (int64_t)luaL_checkinteger(L, -1);
    lua_pop(L, 5);
    lua_getfield(L, 3, "stop");
    if (lua_istable(L, -1)) {
      int n = (int)lua_rawlen(L, -1);
      if (n > 16) return luaL_error(L, "at most 16 stop strings");
      for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        stops[i] = luaL_checkstring(L, -1); /* stays alive: the table holds it */
        lua_pop(L, 1);
      }
      o.stop_strs = stops;
      o.n_stop_strs = n;
    }
  }
  int32_t *ids;
  int n = read_ids(L, 2, &ids);
  int64_t id;
  int rc = as_engine_generate(le->e, ids, n, &o, &id);
  free(ids);
  if (rc) return luaL_error(L, "generate: %s", as_strerror(rc));
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

static int l_embed(lua_State *L) {
  lengine_t *le = check_engine(L);
  int32_t *ids;
  int n = read_ids(L, 2, &ids);
  int64_t id;
  int rc = as_engine_embed(le->e, ids, n, &id);
  free(ids);
  if (rc) return luaL_error(L, "embed: this model cannot embed (an encoder such as BERT can)");
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

static int l_cancel(lua_State *L) {
  lengine_t *le = check_engine(L);
  as_engine_cancel(le->e, (int64_t)luaL_checkinteger(L, 2));
  return 0;
}

static const as_tokenizer_t *need_tok(lua_State *L, lengine_t *le) {
  const as_tokenizer_t *t = as_engine_tokenizer(le->e);
  if (!t) luaL_error(L, "this model folder has no tokenizer.json");
  return t;
}

/* tokenize(text, add_special) → {ids} */
static int l_tokenize(lua_State *L) {
  lengine_t *le = check_engine(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  int flags = lua_toboolean(L, 3) ? AS_TOK_ADD_SPECIAL : 0;
  as_ids_t ids;
  as_ids_init(&ids);
  int rc = as_tokenizer_encode(need_tok(L, le), s, len, flags, &ids);
  if (rc) {
    as_ids_free(&ids);
    return luaL_error(L, "tokenize: %s", as_strerror(rc));
  }
  lua_createtable(L, (int)ids.n, 0);
  for (size_t i = 0; i < ids.n; i++) {
    lua_pushinteger(L, ids.v[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  as_ids_free(&ids);
  return 1;
}

static int l_detokenize(lua_State *L) {
  lengine_t *le = check_engine(L);
  int32_t *ids;
  int n = read_ids(L, 2, &ids);
  as_buf_t out;
  as_buf_init(&out);
  int rc = as_tokenizer_decode(need_tok(L, le), ids, (size_t)n, lua_toboolean(L, 3), &out);
  free(ids);
  if (rc) {
    as_buf_free(&out);
    return luaL_error(L, "detokenize: %s", as_strerror(rc));
  }
  lua_pushlstring(L, out.data ? out.data : "", out.len);
  as_buf_free(&out);
  return 1;
}

/* chat_template({{role=, content=}, ...}) → prompt text with the generation prompt */
static int l_chat_template(lua_State *L) {
  lengine_t *le = check_engine(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = (int)lua_rawlen(L, 2);
  as_chat_msg_t *msgs = calloc((size_t)(n ? n : 1), sizeof *msgs);
  if (!msgs) return luaL_error(L, "out of memory");
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 2, i + 1);
    if (!lua_istable(L, -1)) {
      free(msgs);
      return luaL_error(L, "messages[%d] must be a table {role=, content=}", i + 1);
    }
    lua_getfield(L, -1, "role");
    lua_getfield(L, -2, "content");
    msgs[i].role = lua_tostring(L, -2);
    msgs[i].content = lua_tostring(L, -1);
    if (!msgs[i].role || !msgs[i].content) {
      free(msgs);
      return luaL_error(L, "messages[%d] needs a string role and content", i + 1);
    }
    lua_pop(L, 1); /* content stays referenced by the message table */
    lua_pop(L, 2);
  }
  as_buf_t out;
  as_buf_init(&out);
  char err[256];
  int rc = as_tokenizer_apply_chat(need_tok(L, le), msgs, (size_t)n, 1, &out, err, sizeof err);
  free(msgs);
  if (rc) {
    as_buf_free(&out);
    return luaL_error(L, "chat template: %s", err);
  }
  lua_pushlstring(L, out.data ? out.data : "", out.len);
  as_buf_free(&out);
  return 1;
}

static int l_stats(lua_State *L) {
  lengine_t *le = check_engine(L);
  as_engine_stats_t st;
  as_engine_stats(le->e, &st);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, st.submitted);
  lua_setfield(L, -2, "submitted");
  lua_pushinteger(L, st.finished);
  lua_setfield(L, -2, "finished");
  lua_pushinteger(L, st.cancelled);
  lua_setfield(L, -2, "cancelled");
  lua_pushinteger(L, st.active);
  lua_setfield(L, -2, "active");
  lua_pushinteger(L, st.steps);
  lua_setfield(L, -2, "steps");
  lua_pushinteger(L, st.tokens);
  lua_setfield(L, -2, "tokens");
  return 1;
}

/* engine:failed() -> nil, or the reason the device failed */
static int l_failed(lua_State *L) {
  lengine_t *le = check_engine(L);
  char why[600];
  if (!as_engine_failed(le->e, why, sizeof why))
    return 0;
  lua_pushstring(L, why);
  return 1;
}

static int l_info(lua_State *L) {
  lengine_t *le = check_engine(L);
  const as_llm_config_t *c = as_model_config(as_engine_model(le->e));
  lua_createtable(L, 0, 7);
  lua_pushstring(L, c->model_type);
  lua_setfield(L, -2, "model_type");
  lua_pushinteger(L, c->vocab_size);
  lua_setfield(L, -2, "vocab_size");
  lua_pushinteger(L, c->hidden_size);
  lua_setfield(L, -2, "hidden_size");
  lua_pushinteger(L, c->max_positions);
  lua_setfield(L, -2, "max_positions");
  lua_pushboolean(L, c->arch == AS_ARCH_BERT);
  lua_setfield(L, -2, "encoder");
  lua_pushboolean(L, as_engine_tokenizer(le->e) != NULL);
  lua_setfield(L, -2, "has_tokenizer");
  lua_pushstring(L, as_model_device(as_engine_model(le->e)));
  lua_setfield(L, -2, "device");
  return 1;
}

int luaopen_actorserve_llm_core(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"generate", l_generate}, {"embed", l_embed}, {"cancel", l_cancel}, {"tokenize", l_tokenize},
    {"detokenize", l_detokenize}, {"chat_template", l_chat_template}, {"info", l_info}, {"stats", l_stats}, {"failed", l_failed}, {"close", l_close},
    {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", l_close}, {"__close", l_close}, {NULL, NULL}};
  luaL_newmetatable(L, ENGINE_MT);
  luaL_setfuncs(L, meta, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"load", l_load}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}

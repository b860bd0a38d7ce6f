/* asl.h — the public header of lua/: Lua states that know the `actorserve`
 * module, the codec and JSON bridges between Lua values and bytes, loading an
 * application file, and the host operations a replica provides to Lua.
 *
 * A process that runs user code (the head while it reads the app file, each
 * worker while it hosts a replica) makes one state with asl_state_new. The
 * `actorserve` module (lua/actorserve.lua, compiled into the binary) calls
 * back into its host through asl_host_ops; the head passes NULL ops, and the
 * operations that need a replica then raise a clear Lua error.
 */
#ifndef ASL_H
#define ASL_H

#include <stdint.h>
#include <stddef.h>

#include <lua.h>

#include "runtime.h"

/* Call kinds carried in a CALL frame. */
enum { ASL_KIND_CALL = 0, ASL_KIND_HTTP = 1 };

/* What a replica's event loop offers to Lua. Each returns 0 or an AS_E* code. */
typedef struct asl_host_ops_s {
  /* Starts a handle call; args is one codec value (the argument table). */
  int (*call)(void *ud, const char *deployment, const char *method,
              const char *args, size_t len, uint64_t *id_out);
  /* Answers a request that arrived with `token`; val is one codec value. */
  int (*reply)(void *ud, int64_t token, int ok, const char *val, size_t len);
  /* Streaming answer: start (status, headers codec table), data, end. */
  int (*stream_start)(void *ud, int64_t token, int status, const char *hdrs, size_t len);
  int (*stream_data)(void *ud, int64_t token, const char *p, size_t n); /* AS_ECLOSED: caller gone */
  int (*stream_end)(void *ud, int64_t token, int ok, const char *err);
  /* Arms a one-shot timer; its expiry calls the module's _on_timer(id). */
  int (*timer)(void *ud, double seconds, uint64_t *id_out);
  /* The constructor finished (ok) or raised (err). */
  int (*ready)(void *ud, int ok, const char *err);
  /* A check_health() (ASL_REPORT_HEALTH, with its seq) or a reconfigure()
   * (ASL_REPORT_RECONFIGURE) finished. */
  int (*report)(void *ud, int kind, int64_t seq, int ok, const char *err);
  /* The answer of handle call `id` is no longer wanted (its request was cancelled). */
  int (*cancel)(void *ud, uint64_t id);
} asl_host_ops;

enum { ASL_REPORT_HEALTH = 1, ASL_REPORT_RECONFIGURE = 2 };

/* The replica context exposed as serve.get_replica_context(). */
typedef struct asl_context_s {
  const char *app_name;
  const char *deployment;
  const char *replica_id;
} asl_context_t;

/* Creates a state with the standard libraries and the actorserve modules
 * preloaded. ops may be NULL (head). Returns NULL when out of memory. */
lua_State *asl_state_new(const asl_host_ops *ops, void *ud, const asl_context_t *ctx);
void asl_state_close(lua_State *L);

/* Runs an application file. On failure returns AS_EINVAL and writes one line
 * naming the file (and line, where Lua knows it) into err. */
int asl_run_file(lua_State *L, const char *path, char *err, size_t errlen);

/* Calls actorserve._<fn>(...) with nargs values already pushed; pops them.
 * Errors (which the module should not raise) are logged with a traceback.
 * Leaves nresults values on the stack on success. */
int asl_call_module(lua_State *L, const char *fn, int nargs, int nresults);

/* Lua value at idx → one codec value appended to b. Refuses functions,
 * userdata (other than serve.null, encoded as nil) and nesting over
 * AS_CODEC_MAX_DEPTH; on error writes a message into err. */
int asl_encode(lua_State *L, int idx, as_buf_t *b, char *err, size_t errlen);
/* One codec value from d → pushed on the stack. */
int asl_decode(lua_State *L, as_dec_t *d);

/* JSON bridges (cJSON): encode the value at idx, or push the decoded text. */
int asl_json_encode(lua_State *L, int idx, as_buf_t *out, char *err, size_t errlen);
int asl_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen);

/* Opens the C modules `actorserve.core` and `actorserve.llm_core` (the model
 * engine; registered by asl_state_new). */
int luaopen_actorserve_core(lua_State *L);
int luaopen_actorserve_llm_core(lua_State *L);

#endif /* ASL_H */

/* runtime.h — the public header of runtime/: errors, byte buffers, the binary
 * value codec, length-prefixed frames, the shared-memory replica table with
 * power-of-two-choices routing, node resources and placement, and logging.
 *
 * Everything here is plain C with no Lua and no libuv, so the proxy (C only),
 * the workers (Lua) and the unit tests all share one implementation.
 * Functions return 0 or a negative AS_E* code; as_strerror() names it.
 */
#ifndef AS_RUNTIME_H
#define AS_RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define AS_VERSION "0.1.0"

/* ---- errors -------------------------------------------------------------- */

#define AS_ERRNO_MAP(X)                                          \
  X(NOMEM, -1, "out of memory")                                  \
  X(INVAL, -2, "invalid argument")                               \
  X(TRUNC, -3, "truncated input")                                \
  X(DEPTH, -4, "value nested too deeply")                        \
  X(IO, -5, "input/output error")                                \
  X(TOOBIG, -6, "too large")                                     \
  X(NOTFOUND, -7, "not found")                                   \
  X(NORES, -8, "not enough resources")                           \
  X(BADTYPE, -9, "unsupported value type")                       \
  X(CLOSED, -10, "closed")                                       \
  X(EXISTS, -11, "already exists")                               \
  X(FULL, -12, "too many queued requests")                       \
  X(TIMEDOUT, -13, "timed out")                                  \
  X(NOTSUP, -14, "not supported here")

enum {
#define AS__ERR_ENUM(name, code, msg) AS_E##name = (code),
  AS_ERRNO_MAP(AS__ERR_ENUM)
#undef AS__ERR_ENUM
};

const char *as_strerror(int err);  /* a static message for an AS_E* code */

/* ---- byte buffers -------------------------------------------------------- */

typedef struct as_buf_s {
  char *data; /* heap block, or NULL when empty */
  size_t len; /* bytes in use */
  size_t cap; /* bytes allocated */
} as_buf_t;

void as_buf_init(as_buf_t *b);
void as_buf_free(as_buf_t *b);                               /* idempotent */
int as__buf_grow(as_buf_t *b, size_t extra);                 /* the slow path of the two below */

/* Room for extra more bytes. Inline: the request path appends a lot. */
static inline int as_buf_reserve(as_buf_t *b, size_t extra) {
  return extra <= b->cap - b->len ? 0 : as__buf_grow(b, extra);
}

static inline int as_buf_append(as_buf_t *b, const void *p, size_t n) {
  if (n == 0) return 0;
  if (p == NULL) return AS_EINVAL;
  if (n > b->cap - b->len) {
    int rc = as__buf_grow(b, n);
    if (rc) return rc;
  }
  __builtin_memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* Appends a string literal (its size is known at compile time). */
#define AS_BUF_LIT(b, lit) as_buf_append((b), (lit), sizeof(lit) - 1)
int as_buf_append_u64(as_buf_t *b, uint64_t v);             /* decimal */
int as_buf_appendf(as_buf_t *b, const char *fmt, ...)        /* printf-style append */
    __attribute__((format(printf, 2, 3)));
void as_buf_consume(as_buf_t *b, size_t n);                  /* drop n bytes from the front */

/* ---- value codec ----------------------------------------------------------
 * One compact binary encoding for Lua values crossing processes:
 *   nil 0x00 | false 0x01 | true 0x02 | int 0x03 + 8 bytes LE |
 *   float 0x04 + 8 bytes LE (IEEE 754) | string 0x05 + varint len + bytes |
 *   table 0x06 + varint narr + varint nhash, then narr values (indices 1..narr),
 *   then nhash key/value pairs.
 * Varints are LEB128 (7 bits per byte, low first, at most 10 bytes).
 * Writers build a value in an as_buf_t; a table header promises how many
 * elements follow, and the writer must keep that promise.
 */

enum { AS_T_NIL = 0, AS_T_FALSE = 1, AS_T_TRUE = 2, AS_T_INT = 3,
       AS_T_FLOAT = 4, AS_T_STR = 5, AS_T_TABLE = 6 };

#define AS_CODEC_MAX_DEPTH 100 /* decoders refuse deeper nesting */

int as_enc_nil(as_buf_t *b);
int as_enc_bool(as_buf_t *b, int v);
int as_enc_int(as_buf_t *b, int64_t v);
int as_enc_float(as_buf_t *b, double v);
int as_enc_str(as_buf_t *b, const void *s, size_t len);
int as_enc_cstr(as_buf_t *b, const char *s);                 /* NULL encodes nil */
int as_enc_table(as_buf_t *b, uint32_t narr, uint32_t nhash);

typedef struct as_dec_s {
  const uint8_t *p;   /* next byte to read */
  const uint8_t *end; /* one past the last byte */
} as_dec_t;

typedef struct as_val_s {
  int type;           /* AS_T_* */
  int64_t i;          /* AS_T_INT */
  double f;           /* AS_T_FLOAT */
  const char *s;      /* AS_T_STR: points into the input, not NUL-terminated */
  size_t len;         /* AS_T_STR */
  uint32_t narr;      /* AS_T_TABLE: array elements that follow */
  uint32_t nhash;     /* AS_T_TABLE: key/value pairs that follow them */
} as_val_t;

void as_dec_init(as_dec_t *d, const void *p, size_t len);
/* Reads one value's header into *v (a table's elements follow in the stream).
 * Returns 0, AS_ETRUNC when the input ends early, AS_EBADTYPE on an unknown
 * tag, AS_ETOOBIG when a table claims more elements than bytes remain. */
int as_dec_next(as_dec_t *d, as_val_t *v);
/* Skips one whole value (with everything nested in it), checking depth. */
int as_dec_skip(as_dec_t *d);
/* Reads a table header with string keys and finds key `k` among the hash part;
 * on success *d_out is positioned at its value. Convenience for C readers. */
int as_dec_find(const as_dec_t *table_start, const char *k, as_dec_t *d_out);
/* Checks that [p, p+len) holds exactly one well-formed value. */
int as_codec_validate(const void *p, size_t len);

/* ---- frames ---------------------------------------------------------------
 * A frame is: u32 LE length (of what follows), u8 type, payload (codec values).
 * The framer accepts bytes as they arrive, in any split, and yields frames.
 */

#define AS_FRAME_HDR 5
#define AS_FRAME_MAX_DEFAULT (1u << 30)

enum {
  AS_FR_CONFIG = 1,       /* head → worker: what to run */
  AS_FR_READY = 2,        /* worker → head: init done (or failed) */
  AS_FR_ROUTES = 3,       /* head → worker: the replica table of each deployment */
  AS_FR_SHUTDOWN = 4,     /* head → worker: drain and exit */
  AS_FR_HEALTH = 5,       /* head → worker: seq; run check_health() */
  AS_FR_REPORT = 6,       /* worker → head: kind, seq, ok, message (health, reconfigure) */
  AS_FR_RECONFIGURE = 7,  /* head → worker: user_config value; run reconfigure() */
  AS_FR_CALL = 10,        /* caller → replica: id, method, args */
  AS_FR_REPLY = 11,       /* replica → caller: id, ok, value */
  AS_FR_STREAM_START = 12,/* replica → caller: id, status, headers */
  AS_FR_STREAM_DATA = 13, /* replica → caller: id, bytes */
  AS_FR_STREAM_END = 14,  /* replica → caller: id, ok, error message */
  AS_FR_CANCEL = 15,      /* caller → replica: id (the client went away) */
};

/* Appends a frame header to b and returns (in *mark) where it starts; write
 * the payload, then call as_frame_end to fill in the length. */
int as_frame_begin(as_buf_t *b, uint8_t type, size_t *mark);
int as_frame_end(as_buf_t *b, size_t mark);

typedef struct as_framer_s {
  as_buf_t in;      /* bytes received, not yet returned as frames */
  size_t off;       /* start of the next unread frame in in.data */
  uint32_t max;     /* largest frame accepted (AS_FRAME_MAX_DEFAULT if 0) */
} as_framer_t;

void as_framer_init(as_framer_t *f, uint32_t max);
void as_framer_free(as_framer_t *f);
int as_framer_feed(as_framer_t *f, const void *p, size_t n);
/* Returns 1 with the next frame (payload valid until the next feed), 0 when
 * more bytes are needed, AS_ETOOBIG when a header announces an oversize frame. */
int as_framer_next(as_framer_t *f, uint8_t *type, const char **payload, size_t *len);

/* ---- replica table (shared memory) ----------------------------------------
 * One slot per replica on this node, in a file mapped by the head and every
 * worker. `inflight` counts requests admitted to the replica and not yet
 * answered: callers add one with as_slot_acquire (refused at max_ongoing),
 * the replica subtracts one when it answers. The controller resets a slot when
 * its replica restarts, bumping `gen` so stale callers notice.
 */

enum { AS_SLOT_FREE = 0, AS_SLOT_STARTING = 1, AS_SLOT_RUNNING = 2,
       AS_SLOT_DRAINING = 3, AS_SLOT_DEAD = 4 };

typedef struct as_slot_s {
  _Atomic int32_t inflight;   /* admitted, not yet answered */
  _Atomic int32_t state;      /* AS_SLOT_* */
  _Atomic uint32_t gen;       /* bumped each time the slot gets a new process */
  _Atomic int32_t pid;        /* worker process id, 0 when none */
  _Atomic int32_t max_ongoing;/* admission limit for this replica */
  int32_t pad[3];
} as_slot_t;

typedef struct as_table_s {
  uint32_t magic;   /* AS_TABLE_MAGIC */
  uint32_t nslots;  /* slots that follow */
  uint64_t pad;
  as_slot_t slots[];
} as_table_t;

#define AS_TABLE_MAGIC 0x41535442u /* "ASTB" */

/* Creates (truncating) and maps the table file at path. */
int as_table_create(const char *path, uint32_t nslots, as_table_t **out);
/* Maps an existing table file (workers). */
int as_table_open(const char *path, as_table_t **out);
void as_table_close(as_table_t *t);

/* Admits one request if inflight < max_ongoing; returns 1 admitted, 0 full. */
int as_slot_acquire(as_slot_t *s);
void as_slot_release(as_slot_t *s);

/* Power of two choices: among the RUNNING slots listed in ids[0..n), samples
 * two at random and admits the request to the one with fewer in flight,
 * falling back to a scan of the rest when both are full. Returns the slot
 * index admitted to, or -1 when every replica is at max_ongoing (or none runs). */
int as_p2c_acquire(as_table_t *t, const uint32_t *ids, int n, uint64_t *rng);

uint64_t as_rand(uint64_t *state); /* xorshift64*; state must be non-zero */

/* ---- resources and placement ----------------------------------------------
 * Quantities are fixed point in units of 1/10000 (as Ray does), so 0.5 GPU
 * is 5000 and sums never drift.
 */

#define AS_RES_UNIT 10000
#define AS_MAX_GPUS 64
#define AS_MAX_CUSTOM 16
#define AS_RES_NAME 64

typedef struct as_custom_s {
  char name[AS_RES_NAME];
  int64_t amount;     /* fixed point */
} as_custom_t;

typedef struct as_node_res_s {
  int64_t cpu_total, cpu_used;         /* fixed point */
  int64_t mem_total, mem_used;         /* bytes; mem_total 0 means unlimited */
  int ngpu;                            /* devices */
  int64_t gpu_used[AS_MAX_GPUS];       /* fixed point per device, ≤ AS_RES_UNIT */
  int ncustom;
  as_custom_t custom_total[AS_MAX_CUSTOM];
  int64_t custom_used[AS_MAX_CUSTOM];
} as_node_res_t;

typedef struct as_req_s {
  int64_t num_cpus;                    /* fixed point */
  int64_t num_gpus;                    /* fixed point: < 1 shares a device, ≥ 1 whole devices */
  int64_t memory;                      /* bytes */
  int ncustom;
  as_custom_t custom[AS_MAX_CUSTOM];
} as_req_t;

typedef struct as_alloc_s {
  int ngpu;                            /* devices granted */
  int gpu_ids[AS_MAX_GPUS];
  int64_t gpu_share;                   /* fixed point taken on each granted device */
} as_alloc_t;

int64_t as_res_fixed(double v);        /* rounds to the nearest 1/10000 */
/* Reserves req on node, filling alloc (GPU ids); AS_ENORES when it does not
 * fit, AS_EINVAL for a malformed request (e.g. 1.5 GPUs). Fractional GPUs go
 * to the most-used device that still has room (packing), whole ones to free devices. */
int as_res_place(as_node_res_t *node, const as_req_t *req, as_alloc_t *alloc);
void as_res_release(as_node_res_t *node, const as_req_t *req, const as_alloc_t *alloc);
/* Writes "{CPU: 8, GPU: 1, memory: ..., name: n}" for a request. */
int as_res_format_req(as_buf_t *b, const as_req_t *req);
/* Writes "{CPU: 2, GPU: 0.5, name: n}" of what is free on the node. */
int as_res_format_free(as_buf_t *b, const as_node_res_t *node);
/* "0,1" for CUDA_VISIBLE_DEVICES; "" when no GPU is granted. */
int as_res_format_gpus(as_buf_t *b, const as_alloc_t *alloc);

/* ---- logging --------------------------------------------------------------- */

enum { AS_LOG_DEBUG = 0, AS_LOG_INFO = 1, AS_LOG_WARN = 2, AS_LOG_ERROR = 3 };
extern int as_log_level;             /* messages below it are dropped */
extern const char *as_log_component; /* "head", "proxy", "replica Ranker#1" ... */
void as_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define AS_LOGI(...) as_log(AS_LOG_INFO, __VA_ARGS__)
#define AS_LOGW(...) as_log(AS_LOG_WARN, __VA_ARGS__)
#define AS_LOGE(...) as_log(AS_LOG_ERROR, __VA_ARGS__)

/* ---- batched writes (runtime/wq.c) ------------------------------------------
 * Frames for one stream are appended to its write queue during a loop
 * iteration and leave in one write when the iteration's callbacks are done
 * (a uv_prepare handle), so many calls or replies cost one system call.
 */

struct uv_loop_s;
struct uv_stream_s;
typedef struct as_wq_s as_wq_t;

typedef struct as_flusher_s {
  void *prep;                 /* uv_prepare_t, owned */
  as_wq_t *dirty;             /* queues with bytes waiting */
} as_flusher_t;

struct as_wq_s {
  struct uv_stream_s *stream; /* where the bytes go */
  as_flusher_t *f;
  as_buf_t buf;               /* bytes not yet handed to libuv */
  as_wq_t *prev, *next;       /* in f->dirty while buf is not empty */
  int dirty;
};

int as_flusher_init(struct uv_loop_s *loop, as_flusher_t *f);
void as_flusher_close(as_flusher_t *f);  /* flushes, then closes the handle */
void as_wq_init(as_wq_t *q, as_flusher_t *f, struct uv_stream_s *stream);
/* The buffer to append to; the queue will be flushed this iteration. */
as_buf_t *as_wq_buf(as_wq_t *q);
void as_wq_flush(as_wq_t *q);            /* hands what is queued to libuv now */
void as_wq_close(as_wq_t *q);            /* drops what is queued */
/* One write of a copy of p[0..n) now (control sockets, which are not batched). */
int as_write_copy(struct uv_stream_s *stream, const void *p, size_t n);

/* ---- callers (runtime/conn.c) ---------------------------------------------
 * A caller sends requests to replicas: the proxy has one, and so has every
 * worker (for its handles). It holds the routing table that the controller
 * broadcasts (deployment → running replicas), one Unix-socket connection per
 * replica it talks to, the calls in flight, and a queue per deployment for
 * calls that wait for a replica under max_ongoing_requests.
 * Deployments are keyed "app/Deployment".
 */

struct uv_loop_s;
typedef struct as_caller_s as_caller_t;
typedef struct as_call_s as_call_t;

enum {
  AS_EV_REPLY = 1,        /* payload: bool ok, value */
  AS_EV_STREAM_START = 2, /* payload: int status, table headers */
  AS_EV_STREAM_DATA = 3,  /* payload: string */
  AS_EV_STREAM_END = 4,   /* payload: bool ok, string|nil error */
  AS_EV_FAILED = 5,       /* the replica died or could not be reached; payload NULL */
};

/* Called for each event of a call; d is positioned after the call id. After
 * AS_EV_REPLY, AS_EV_STREAM_END or AS_EV_FAILED the call is over and freed. */
typedef void (*as_call_cb)(void *ud, int ev, as_dec_t *d);

as_caller_t *as_caller_new(struct uv_loop_s *loop, as_table_t *table);
/* Closes connections and fails the calls still open (AS_EV_FAILED). */
void as_caller_free(as_caller_t *c);
/* Replaces the routing table with the one in a ROUTES frame payload. */
int as_caller_set_routes(as_caller_t *c, const char *payload, size_t len);
/* Starts a call; args is the encoded argument value. Returns AS_ENOTFOUND for
 * an unknown deployment, AS_EFULL when its queue is at max_queued_requests. */
int as_caller_call(as_caller_t *c, const char *deployment, int kind, const char *method,
                   const char *args, size_t len, as_call_cb cb, void *ud, as_call_t **out);
/* The caller no longer wants the answer: a queued call is dropped, a call in
 * flight gets a CANCEL frame. cb is never called again. */
void as_caller_cancel(as_caller_t *c, as_call_t *call);
uint64_t as_call_id(const as_call_t *call);
/* Calls queued or in flight (for graceful shutdown). */
size_t as_caller_busy(const as_caller_t *c);

#endif /* AS_RUNTIME_H */

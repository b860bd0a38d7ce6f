/* dev.c — the device contract on the host (ask_refdev_ops): the reference
 * ops plus an ask_dev_t whose "device memory" is host memory.
 *
 * Two uses. Its device-only ops (bf16 GEMM, fused norms, RoPE into a paged
 * bf16 KV cache, paged attention, fused gated activation, per-row sampling)
 * are the plain-C twins the CUDA kernels are tested against. And the
 * engine's device path (actors/llm/forward_dev.c) runs on it unchanged, so
 * that path — paging, staging, captured steps — is tested where no GPU is.
 *
 * Captured steps: while graph_capture runs its function, every void op is
 * appended to a tape with its arguments (pointers and scalars as given)
 * instead of running; graph_launch replays the tape. That is what a CUDA
 * graph does, so code that passes a per-step value as a scalar argument
 * (instead of through device memory) fails here as it would on the GPU.
 * One tape at a time; the backend is used from one thread at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"
#include "runtime.h"

int ask_ref_sample(float *probs, double *w, int32_t *idx, const float *x, int n,
                   float temperature, int top_k, float top_p, uint64_t *rng);

/* ---- the tape of captured ops -------------------------------------------- */

typedef struct ask__rec_s {
  void (*run)(const void *args); /* replays one op from its saved arguments */
  void *args;                    /* a copy of the op's argument struct */
} ask__rec_t;

typedef struct ask__tape_s {
  ask__rec_t *v;
  int n, cap;
  int failed; /* out of memory while recording */
} ask__tape_t;

static ask__tape_t *ask__rec_tape; /* non-NULL while capturing */

/* Saves (run, args) on the tape when capturing: returns 1 (the op must not
 * run now), else 0. */
static int ask__record(void (*run)(const void *), const void *args, size_t size) {
  ask__tape_t *t = ask__rec_tape;
  if (t == NULL)
    return 0;
  if (t->failed)
    return 1;
  if (t->n == t->cap) {
    int cap = t->cap ? 2 * t->cap : 64;
    ask__rec_t *v = realloc(t->v, (size_t)cap * sizeof *v);
    if (v == NULL) {
      t->failed = 1;
      return 1;
    }
    t->v = v;
    t->cap = cap;
  }
  void *copy = malloc(size);
  if (copy == NULL) {
    t->failed = 1;
    return 1;
  }
  memcpy(copy, args, size);
  t->v[t->n++] = (ask__rec_t){run, copy};
  return 1;
}

/* Defines the recording wrapper NAME for an op whose arguments are the
 * struct ARGS (declared just before): the wrapper fills a struct, then
 * records it or runs it through NAME##_run. */
#define ASK__OP(NAME)                                                       \
  static void NAME##_run(const void *p);                                    \
  static void NAME##_go(const struct NAME##_a *a) {                         \
    if (!ask__record(NAME##_run, a, sizeof *a))                             \
      NAME##_run(a);                                                        \
  }

static void ask__graph_free(void *g) {
  ask__tape_t *t = g;
  if (t == NULL)
    return;
  for (int i = 0; i < t->n; i++)
    free(t->v[i].args);
  free(t->v);
  free(t);
}

static int ask__graph_capture(void **graph, void (*fn)(void *), void *ud, char *err,
                              size_t errlen) {
  ask__tape_t *t = calloc(1, sizeof *t);
  *graph = NULL;
  if (t == NULL || ask__rec_tape != NULL) {
    free(t);
    snprintf(err, errlen, "graph_capture: %s",
             t == NULL ? "out of memory" : "another capture is in progress");
    return t == NULL ? AS_ENOMEM : AS_EINVAL;
  }
  ask__rec_tape = t;
  fn(ud);
  ask__rec_tape = NULL;
  if (t->failed) {
    ask__graph_free(t);
    snprintf(err, errlen, "graph_capture: out of memory while recording");
    return AS_ENOMEM;
  }
  *graph = t;
  return 0;
}

static int ask__graph_launch(void *graph, char *err, size_t errlen) {
  ask__tape_t *t = graph;
  if (t == NULL) {
    snprintf(err, errlen, "graph_launch: no graph");
    return AS_EINVAL;
  }
  for (int i = 0; i < t->n; i++)
    t->v[i].run(t->v[i].args);
  return 0;
}

/* ---- memory --------------------------------------------------------------- */

static int ask__alloc(void **p, size_t bytes, char *err, size_t errlen) {
  size_t n = (bytes + 255) / 256 * 256;
  *p = aligned_alloc(256, n == 0 ? 256 : n);
  if (*p == NULL) {
    snprintf(err, errlen, "refdev alloc(%zu bytes): out of memory", bytes);
    return AS_ENOMEM;
  }
  return 0;
}

static void ask__free(void *p) { free(p); }

static int ask__copy(void *dst, const void *src, size_t bytes, int dir, char *err,
                     size_t errlen) {
  (void)dir;
  (void)err;
  (void)errlen;
  if (bytes > 0)
    memmove(dst, src, bytes);
  return 0;
}

/* Ops run when queued (or replayed): a mark is passed at once; waiting for
 * one reports failures as sync does. */
static int ask__mark(int slot, char *err, size_t errlen) {
  if (slot < 0 || slot >= ASK_MARKS) {
    snprintf(err, errlen, "refdev mark: no slot %d", slot);
    return AS_EINVAL;
  }
  return 0;
}

static int ask__sync(char *err, size_t errlen);

static int ask__wait_mark(int slot, char *err, size_t errlen) {
  int rc = ask__mark(slot, err, errlen);
  return rc != 0 ? rc : ask__sync(err, errlen);
}

/* Fault injection for tests of the engine's failure path: with
 * ASK_REFDEV_FAIL_AFTER=N in the environment, the (N+1)-th sync and every
 * later one fail with AS_EIO, as a sticky CUDA error does. */
static long ask__syncs;

static int ask__sync(char *err, size_t errlen) {
  const char *env = getenv("ASK_REFDEV_FAIL_AFTER");
  if (env != NULL && env[0] != '\0' && ask__syncs++ >= atol(env)) {
    snprintf(err, errlen, "refdev: injected failure (ASK_REFDEV_FAIL_AFTER=%s)", env);
    return AS_EIO;
  }
  return 0;
}

/* MemAvailable and MemTotal of /proc/meminfo: host memory is this
 * backend's device memory. */
static int ask__mem_info(size_t *free_b, size_t *total_b, char *err, size_t errlen) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[128];
  unsigned long long avail = 0, total = 0, v;
  if (f == NULL) {
    snprintf(err, errlen, "refdev mem_info: /proc/meminfo cannot be read");
    return AS_EIO;
  }
  while (fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
      avail = v * 1024;
    else if (sscanf(line, "MemTotal: %llu kB", &v) == 1)
      total = v * 1024;
  }
  fclose(f);
  *free_b = (size_t)avail;
  *total_b = (size_t)total;
  return 0;
}

/* ---- the reference ops, recordable ---------------------------------------- */

struct emb_a { float *out; const float *table; const int32_t *ids; int T, C; float scale; };
ASK__OP(emb)
static void emb_run(const void *p) {
  const struct emb_a *a = p;
  ask_ref_embedding(a->out, a->table, a->ids, a->T, a->C, a->scale);
}
static void ask__embedding(float *out, const float *table, const int32_t *ids, int T, int C,
                           float scale) {
  emb_go(&(struct emb_a){out, table, ids, T, C, scale});
}

struct rms_a { float *out; const float *x, *w; int T, C; float eps, off; };
ASK__OP(rms)
static void rms_run(const void *p) {
  const struct rms_a *a = p;
  ask_ref_rmsnorm(a->out, a->x, a->w, a->T, a->C, a->eps, a->off);
}
static void ask__rmsnorm(float *out, const float *x, const float *w, int T, int C, float eps,
                         float off) {
  rms_go(&(struct rms_a){out, x, w, T, C, eps, off});
}

struct ln_a { float *out; const float *x, *w, *b; int T, C; float eps; };
ASK__OP(ln)
static void ln_run(const void *p) {
  const struct ln_a *a = p;
  ask_ref_layernorm(a->out, a->x, a->w, a->b, a->T, a->C, a->eps);
}
static void ask__layernorm(float *out, const float *x, const float *w, const float *b, int T,
                           int C, float eps) {
  ln_go(&(struct ln_a){out, x, w, b, T, C, eps});
}

struct mm_a { float *out; const float *x, *w, *bias; int T, K, N; };
ASK__OP(mm)
static void mm_run(const void *p) {
  const struct mm_a *a = p;
  ask_ref_matmul(a->out, a->x, a->w, a->bias, a->T, a->K, a->N);
}
static void ask__matmul(float *out, const float *x, const float *w, const float *bias, int T,
                        int K, int N) {
  mm_go(&(struct mm_a){out, x, w, bias, T, K, N});
}

struct rope_a { float *x; const int32_t *pos; const float *inv; int T, nh, D, stride; };
ASK__OP(rope)
static void rope_run(const void *p) {
  const struct rope_a *a = p;
  ask_ref_rope(a->x, a->pos, a->inv, a->T, a->nh, a->D, a->stride);
}
static void ask__rope(float *x, const int32_t *pos, const float *inv, int T, int nh, int D,
                      int stride) {
  rope_go(&(struct rope_a){x, pos, inv, T, nh, D, stride});
}

struct att_a {
  float *out, *scr;
  const float *q, *k, *v;
  const int32_t *mask;
  int T, L, nh, nkv, D, kvs;
  float scale;
  int causal;
};
ASK__OP(att)
static void att_run(const void *p) {
  const struct att_a *a = p;
  ask_ref_attention(a->out, a->scr, a->q, a->k, a->v, a->mask, a->T, a->L, a->nh, a->nkv, a->D,
                    a->kvs, a->scale, a->causal);
}
static void ask__attention(float *out, float *scr, const float *q, const float *k,
                           const float *v, const int32_t *mask, int T, int L, int nh, int nkv,
                           int D, int kvs, float scale, int causal) {
  att_go(&(struct att_a){out, scr, q, k, v, mask, T, L, nh, nkv, D, kvs, scale, causal});
}

struct glu_a { float *out; const float *g, *u; size_t n; int act; };
ASK__OP(glu)
static void glu_run(const void *p) {
  const struct glu_a *a = p;
  if (a->u != NULL)
    ask_ref_glu(a->out, a->g, a->u, a->n, a->act);
  else
    ask_ref_activate(a->out, a->g, a->n, a->act);
}
static void ask__glu(float *out, const float *g, const float *u, size_t n, int act) {
  glu_go(&(struct glu_a){out, g, u, n, act});
}
static void ask__activate(float *out, const float *x, size_t n, int act) {
  glu_go(&(struct glu_a){out, x, NULL, n, act});
}

struct sm_a { float *out; const float *x; int T, N; };
ASK__OP(sm)
static void sm_run(const void *p) {
  const struct sm_a *a = p;
  ask_ref_softmax(a->out, a->x, a->T, a->N);
}
static void ask__softmax(float *out, const float *x, int T, int N) {
  sm_go(&(struct sm_a){out, x, T, N});
}

struct add_a { float *out; const float *a, *b; size_t n; };
ASK__OP(add)
static void add_run(const void *p) {
  const struct add_a *a = p;
  ask_ref_add(a->out, a->a, a->b, a->n);
}
static void ask__add(float *out, const float *x, const float *y, size_t n) {
  add_go(&(struct add_a){out, x, y, n});
}

/* ---- the device-only ops --------------------------------------------------- */

/* A f32 copy of n bf16 values (NULL when out of memory: the op then leaves
 * its output as it was; tests see the mismatch). */
static float *ask__widen(const uint16_t *w, size_t n) {
  float *f = malloc((n ? n : 1) * sizeof *f);
  if (f != NULL)
    ask_bf16_to_f32(f, w, n);
  return f;
}

struct mmb_a { float *out; const float *x; const uint16_t *w; const float *bias; int T, K, N; };
ASK__OP(mmb)
static void mmb_run(const void *p) {
  const struct mmb_a *a = p;
  float *w = ask__widen(a->w, (size_t)a->N * (size_t)a->K);
  if (w == NULL)
    return;
  ask_ref_matmul(a->out, a->x, w, a->bias, a->T, a->K, a->N);
  free(w);
}
/* x stays f32 here (the matrix-vector kernel's rounding); the cuBLASLt path
 * rounds x to bf16, which the tests' tolerance covers. */
static void ask__matmul_bf16(float *out, uint16_t *xs, const float *x, const uint16_t *w,
                             const float *bias, int T, int K, int N) {
  (void)xs;
  mmb_go(&(struct mmb_a){out, x, w, bias, T, K, N});
}

struct embb_a {
  float *out;
  const uint16_t *table;
  const int32_t *ids, *prev;
  int T, C;
  float scale;
};
ASK__OP(embb)
static void embb_run(const void *p) {
  const struct embb_a *a = p;
  for (int t = 0; t < a->T; t++) {
    float *o = a->out + (size_t)t * a->C;
    int32_t id = a->ids[t] < 0 && a->prev != NULL ? a->prev[-(a->ids[t] + 1)] : a->ids[t];
    ask_bf16_to_f32(o, a->table + (size_t)id * a->C, (size_t)a->C);
    for (int i = 0; i < a->C; i++)
      o[i] *= a->scale;
  }
}
static void ask__embedding_bf16(float *out, const uint16_t *table, const int32_t *ids,
                                const int32_t *prev, int T, int C, float scale) {
  embb_go(&(struct embb_a){out, table, ids, prev, T, C, scale});
}

struct arms_a { float *out, *x; const float *r, *w; int T, C; float eps, off; };
ASK__OP(arms)
static void arms_run(const void *p) {
  const struct arms_a *a = p;
  if (a->r != NULL)
    ask_ref_add(a->x, a->x, a->r, (size_t)a->T * (size_t)a->C);
  ask_ref_rmsnorm(a->out, a->x, a->w, a->T, a->C, a->eps, a->off);
}
static void ask__add_rmsnorm(float *out, float *x, const float *r, const float *w, int T, int C,
                             float eps, float off) {
  arms_go(&(struct arms_a){out, x, r, w, T, C, eps, off});
}

struct rkv_a {
  float *qkv;
  uint16_t *kc, *vc;
  const int32_t *pos, *slot;
  const float *inv;
  int T, nh, nkv, D, stride;
};
ASK__OP(rkv)
static void rkv_run(const void *p) {
  const struct rkv_a *a = p;
  int qd = a->nh * a->D, kvd = a->nkv * a->D;
  float *k = malloc((size_t)kvd * sizeof *k);
  if (k == NULL)
    return;
  for (int t = 0; t < a->T; t++) {
    float *row = a->qkv + (size_t)t * a->stride;
    ask_ref_rope(row, &a->pos[t], a->inv, 1, a->nh, a->D, a->stride);
    if (a->slot[t] < 0)
      continue;
    memcpy(k, row + qd, (size_t)kvd * sizeof *k);
    ask_ref_rope(k, &a->pos[t], a->inv, 1, a->nkv, a->D, kvd);
    ask_f32_to_bf16(a->kc + (size_t)a->slot[t] * kvd, k, (size_t)kvd);
    ask_f32_to_bf16(a->vc + (size_t)a->slot[t] * kvd, row + qd + kvd, (size_t)kvd);
  }
  free(k);
}
static void ask__rope_kv(float *qkv, uint16_t *kc, uint16_t *vc, const int32_t *pos,
                         const int32_t *slot, const float *inv, int T, int nh, int nkv, int D,
                         int stride) {
  rkv_go(&(struct rkv_a){qkv, kc, vc, pos, slot, inv, T, nh, nkv, D, stride});
}

struct pat_a {
  float *out;
  const float *q;
  const uint16_t *kc, *vc;
  const int32_t *table, *seq, *pos;
  int T, nh, nkv, D, qs, tw, page;
  float scale;
};
ASK__OP(pat)
/* Each row: its keys and values gathered from the pages into f32 rows, then
 * the reference attention of one query row over them (exact; the split of
 * the device kernel is a work division, not a different result). */
static void pat_run(const void *p) {
  const struct pat_a *a = p;
  int kvd = a->nkv * a->D, qd = a->nh * a->D, L = 0;
  for (int t = 0; t < a->T; t++)
    if (a->pos[t] + 1 > L)
      L = a->pos[t] + 1;
  float *k = malloc(((size_t)L * kvd * 2 + (size_t)L + 1) * sizeof *k);
  if (k == NULL)
    return;
  float *v = k + (size_t)L * kvd, *scr = v + (size_t)L * kvd;
  for (int t = 0; t < a->T; t++) {
    float *o = a->out + (size_t)t * qd;
    int n = a->pos[t] + 1;
    if (a->pos[t] < 0) {
      memset(o, 0, (size_t)qd * sizeof *o);
      continue;
    }
    const int32_t *pages = a->table + (size_t)a->seq[t] * a->tw;
    for (int j = 0; j < n; j++) {
      size_t row = (size_t)pages[j / a->page] * a->page + (size_t)(j % a->page);
      ask_bf16_to_f32(k + (size_t)j * kvd, a->kc + row * kvd, (size_t)kvd);
      ask_bf16_to_f32(v + (size_t)j * kvd, a->vc + row * kvd, (size_t)kvd);
    }
    ask_ref_attention(o, scr, a->q + (size_t)t * a->qs, k, v, NULL, 1, n, a->nh, a->nkv, a->D,
                      kvd, a->scale, 1);
  }
  free(k);
}
static void ask__attention_paged(float *out, float *part, const float *q, const uint16_t *kc,
                                 const uint16_t *vc, const int32_t *table, const int32_t *seq,
                                 const int32_t *pos, int T, int nh, int nkv, int D, int q_stride,
                                 int table_width, int page, int nsplit, float scale) {
  (void)part;
  (void)nsplit;
  pat_go(&(struct pat_a){out, q, kc, vc, table, seq, pos, T, nh, nkv, D, q_stride, table_width,
                         page, scale});
}

struct pf_a {
  float *out;
  const float *q;
  const uint16_t *kc, *vc;
  const int32_t *pages;
  int p0, n, nh, nkv, D, qs, page;
  float scale;
};
ASK__OP(pf)
/* The prefill twin is attention_paged's on the chunk's rows. */
static void pf_run(const void *p) {
  const struct pf_a *a = p;
  int32_t *pos = malloc((size_t)(a->n > 0 ? a->n : 1) * 2 * sizeof *pos), *seq;
  if (pos == NULL)
    return;
  seq = pos + a->n;
  for (int i = 0; i < a->n; i++) {
    pos[i] = a->p0 + i;
    seq[i] = 0;
  }
  pat_run(&(struct pat_a){a->out, a->q, a->kc, a->vc, a->pages, seq, pos, a->n, a->nh, a->nkv,
                          a->D, a->qs, 1, a->page, a->scale});
  free(pos);
}
static void ask__attention_prefill(float *out, const float *q, const uint16_t *kc,
                                   const uint16_t *vc, const int32_t *pages, int p0, int n, int nh,
                                   int nkv, int D, int q_stride, int page, float scale) {
  pf_go(&(struct pf_a){out, q, kc, vc, pages, p0, n, nh, nkv, D, q_stride, page, scale});
}

struct glur_a { float *out; const float *gu; int T, F, act; };
ASK__OP(glur)
static void glur_run(const void *p) {
  const struct glur_a *a = p;
  for (int t = 0; t < a->T; t++) {
    const float *g = a->gu + (size_t)t * 2 * a->F;
    ask_ref_glu(a->out + (size_t)t * a->F, g, g + a->F, (size_t)a->F, a->act);
  }
}
static void ask__glu_rows(float *out, const float *gu, int T, int F, int act) {
  glur_go(&(struct glur_a){out, gu, T, F, act});
}

struct nmm_a {
  float *out, *xo, *h;
  const float *x, *r, *nw;
  float eps, off;
  const uint16_t *w;
  const float *bias;
  int T, K, N;
};
ASK__OP(nmm)
static void nmm_run(const void *p) {
  const struct nmm_a *a = p;
  const float *src = a->x;
  if (a->r != NULL) {
    ask_ref_add(a->xo, a->x, a->r, (size_t)a->T * (size_t)a->K);
    src = a->xo;
  }
  ask_ref_rmsnorm(a->h, src, a->nw, a->T, a->K, a->eps, a->off);
  mmb_run(&(struct mmb_a){a->out, a->h, a->w, a->bias, a->T, a->K, a->N});
}
/* The twin does the separate steps, through h. */
static void ask__norm_matmul_bf16(float *out, float *xo, float *h, uint16_t *xs, const float *x,
                                  const float *r, const float *nw, float eps, float off,
                                  const uint16_t *w, const float *bias, int T, int K, int N) {
  (void)xs;
  nmm_go(&(struct nmm_a){out, xo, h, x, r, nw, eps, off, w, bias, T, K, N});
}

/* The two ops, as kernels.h defines norm_matmul_rope_kv (the engine's
 * chains of one-row products need it: actors/llm/forward_dev.c). */
static void ask__norm_matmul_rope_kv(float *out, float *xo, float *h, uint16_t *xs,
                                     const float *x, const float *r, const float *nw, float eps,
                                     float off, const uint16_t *w, const float *bias, int T, int K,
                                     uint16_t *kc, uint16_t *vc, const int32_t *pos,
                                     const int32_t *slot, const float *inv, int nh, int nkv,
                                     int D) {
  int N = (nh + 2 * nkv) * D;
  ask__norm_matmul_bf16(out, xo, h, xs, x, r, nw, eps, off, w, bias, T, K, N);
  ask__rope_kv(out, kc, vc, pos, slot, inv, T, nh, nkv, D, N);
}

struct gmm_a {
  float *out, *g;
  const float *gu;
  int act;
  const uint16_t *w;
  const float *bias;
  int T, F, N;
};
ASK__OP(gmm)
static void gmm_run(const void *p) {
  const struct gmm_a *a = p;
  glur_run(&(struct glur_a){a->g, a->gu, a->T, a->F, a->act});
  mmb_run(&(struct mmb_a){a->out, a->g, a->w, a->bias, a->T, a->F, a->N});
}
static void ask__glu_matmul_bf16(float *out, float *g, uint16_t *xs, const float *gu, int act,
                                 const uint16_t *w, const float *bias, int T, int F, int N) {
  (void)xs;
  gmm_go(&(struct gmm_a){out, g, gu, act, w, bias, T, F, N});
}

/* The MLP of one row as its separate steps (kernels.h's norm_matmul_mlp):
 * the norm, the gate/up product and the activation as the twins above,
 * then g · down_t summed in order in double and added to acc. */
struct nmlp_a {
  float *acc, *clear, *xo;
  const float *x, *r, *nw;
  float eps, off;
  const uint16_t *gu;
  const float *gu_b;
  const uint16_t *dt;
  const float *down_b;
  int K, F, act;
};
ASK__OP(nmlp)
static void nmlp_run(const void *p) {
  const struct nmlp_a *a = p;
  size_t K = (size_t)a->K, F = (size_t)a->F;
  float *h = malloc((2 * K + 3 * F) * sizeof *h), *gu = h + K, *g = gu + 2 * F, *w = g + F;
  double *sum = calloc(K, sizeof *sum);
  if (h == NULL || sum == NULL) {
    free(h);
    free(sum);
    return;
  }
  nmm_run(&(struct nmm_a){gu, a->xo, h, a->x, a->r, a->nw, a->eps, a->off, a->gu, a->gu_b, 1,
                          a->K, 2 * a->F});
  ask_ref_glu(g, gu, gu + F, F, a->act);
  for (size_t i = 0; i < F; i++) {
    ask_bf16_to_f32(w, a->dt + i * K, K);
    for (size_t n = 0; n < K; n++)
      sum[n] += (double)g[i] * (double)w[n];
  }
  for (size_t n = 0; n < K; n++)
    a->acc[n] += (float)(sum[n] + (a->down_b != NULL ? (double)a->down_b[n] : 0.0));
  if (a->clear != NULL)
    memset(a->clear, 0, K * sizeof *a->clear);
  free(h);
  free(sum);
}
static int ask__norm_matmul_mlp(float *acc, float *clear, float *xo, const float *x,
                                const float *r, const float *nw, float eps, float off,
                                const uint16_t *gu, const float *gu_b, const uint16_t *dt,
                                const float *down_b, int T, int K, int F, int act) {
  if (T != 1 || K <= 0 || F <= 0)
    return 0;
  if (dt != NULL)
    nmlp_go(&(struct nmlp_a){acc, clear, xo, x, r, nw, eps, off, gu, gu_b, dt, down_b, K, F,
                             act});
  return 1;
}

struct amr_a { int32_t *ids; const float *x; int T, n; };
ASK__OP(amr)
static void amr_run(const void *p) {
  const struct amr_a *a = p;
  for (int t = 0; t < a->T; t++)
    a->ids[t] = ask_ref_argmax(a->x + (size_t)t * a->n, a->n);
}
static void ask__argmax_rows(int32_t *ids, const float *x, int T, int n) {
  amr_go(&(struct amr_a){ids, x, T, n});
}

struct smr_a {
  int32_t *ids;
  float *probs;
  const float *x, *temp;
  const int32_t *top_k;
  const float *top_p;
  uint64_t *rng;
  int T, n;
};
ASK__OP(smr)
static void smr_run(const void *p) {
  const struct smr_a *a = p;
  double *w = malloc((size_t)a->n * (sizeof(double) + sizeof(int32_t)));
  if (w == NULL)
    return;
  for (int t = 0; t < a->T; t++)
    a->ids[t] = ask_ref_sample(a->probs != NULL ? a->probs + (size_t)t * a->n : NULL, w,
                               (int32_t *)(w + a->n), a->x + (size_t)t * a->n, a->n, a->temp[t],
                               a->top_k[t], a->top_p[t], &a->rng[t]);
  free(w);
}
static void ask__sample_rows(int32_t *ids, float *probs, const float *x, const float *temp,
                             const int32_t *top_k, const float *top_p, uint64_t *rng, int T,
                             int n) {
  smr_go(&(struct smr_a){ids, probs, x, temp, top_k, top_p, rng, T, n});
}

static const char *ask__describe(void) {
  return "refdev: host memory and the plain-C twins of the device kernels";
}

static const ask_dev_t ask__refdev_dev = {
    .alloc = ask__alloc,
    .free = ask__free,
    .copy = ask__copy,
    .sync = ask__sync,
    .host_alloc = ask__alloc,
    .host_free = ask__free,
    .mark = ask__mark,
    .wait_mark = ask__wait_mark,
    .matmul_bf16 = ask__matmul_bf16,
    .embedding_bf16 = ask__embedding_bf16,
    .add_rmsnorm = ask__add_rmsnorm,
    .rope_kv = ask__rope_kv,
    .attention_paged = ask__attention_paged,
    .attention_prefill = ask__attention_prefill,
    .glu_rows = ask__glu_rows,
    .norm_matmul_bf16 = ask__norm_matmul_bf16,
    .norm_matmul_rope_kv = ask__norm_matmul_rope_kv,
    .glu_matmul_bf16 = ask__glu_matmul_bf16,
    .norm_matmul_mlp = ask__norm_matmul_mlp,
    .argmax_rows = ask__argmax_rows,
    .sample_rows = ask__sample_rows,
    .mem_info = ask__mem_info,
    .graph_capture = ask__graph_capture,
    .graph_launch = ask__graph_launch,
    .graph_free = ask__graph_free,
    .describe = ask__describe,
};

static const ask_ops_t ask__refdev_ops = {
    .name = "refdev",
    .embedding = ask__embedding,
    .rmsnorm = ask__rmsnorm,
    .layernorm = ask__layernorm,
    .matmul = ask__matmul,
    .rope = ask__rope,
    .attention = ask__attention,
    .glu = ask__glu,
    .activate = ask__activate,
    .softmax = ask__softmax,
    .add = ask__add,
    .argmax = ask_ref_argmax,
    .sample = ask_ref_sample,
    .dev = &ask__refdev_dev,
};

const ask_ops_t *ask_refdev_ops(void) { return &ask__refdev_ops; }

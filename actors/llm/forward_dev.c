/* forward_dev.c — the decoder step on a device (CUDA, or its host twin
 * "refdev"): one forward over a batch of sequences in the paged KV cache,
 * with the next token of each sampled on the device.
 *
 * A step is: stage the step's inputs (token ids, positions, cache slots,
 * the sequences' page lists, sampling settings) in one host block, copy it
 * to the device in ONE transfer, queue the ops, copy back only the sampled
 * ids and generator states in ONE transfer (the step's only wait). Per
 * layer: fused residual-add + RMSNorm, one GEMM for q/k/v, RoPE fused with
 * the bf16 cache write, paged attention, the o GEMM, add + norm, one GEMM
 * for gate/up, the gated activation, the down GEMM (with ASK_FUSE_MLP=1,
 * at one row: the last four as one op, norm_matmul_mlp, adding into
 * accumulators that rotate between layers: as__macc).
 *
 * Decode-only steps (every sequence adds one token) are captured once per
 * batch-size bucket (1, 2, 4, ... 256; the batch padded with rows that
 * write nothing) and sampling mode, and replayed: everything that changes
 * between steps lives in the staged block, never in an op's arguments.
 * Mixed steps (prefill chunks) run their ops directly. ASK_PROFILE=1 runs
 * every step op by op with a sync after each and keeps the time per op
 * kind (as_gen_profile; `actorserve bench-llm` prints it).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model_int.h"

enum { AS__MODE_LOGITS = 0, AS__MODE_GREEDY = 1, AS__MODE_SAMPLE = 2 };

/* The op kinds of a step, for the profile (ASK_PROFILE=1). */
enum { P_EMBED, P_NORM, P_QKV, P_ROPE_KV, P_ATTN, P_O, P_GATE_UP, P_GLU, P_DOWN, P_HEAD_NORM,
       P_LM_HEAD, P_SAMPLE, P_N };
static const char *const as__pnames[P_N] = {"embed", "norm", "qkv", "rope_kv", "attention", "o",
                                            "gate_up", "glu", "down", "final_norm", "lm_head",
                                            "sample"};
#define AS__NBUCKET 9 /* batch buckets 1, 2, 4, ..., 256 */
#define AS__PREFILL_MIN 16 /* prefill chunks of this many rows use attention_prefill */

struct as__dstep_s {
  int rows, seqs;      /* tokens and sequences per step at most */
  int tcap;            /* entries of the flat page table */
  int qkvd;            /* (nh + 2 nkv) * D */
  int graphs_off;      /* capture failed once (or ASK_NO_GRAPHS): run ops directly */
  /* device buffers */
  float *x, *x2, *h, *r, *qkv, *att, *gu, *g, *part, *hs, *hn, *logits;
  int fuse;            /* the backend's decode fusions, unless ASK_NO_FUSE=1 */
  int chain;           /* one-row products as chains (gemv_chain), unless ASK_NO_CHAIN=1 */
  int mlp;             /* one-row steps: the MLP as norm_matmul_mlp (ASK_FUSE_MLP, dm->mlp) */
  float *macc[3];      /* its accumulators (C floats each), zeros but the last layer's */
  float *xlast;        /* x or x2: the residual stream after the last step */
  /* this step's sequences, in batch order (host): first row, rows, first
   * position, offset of the page list in the staged table */
  int *run_r0, *run_n, *run_p0, *run_t0, nrun;
  uint16_t *xs;
  char *io;            /* staged inputs and outputs (layout: the off_* below) */
  char *host;          /* its host mirror: hostv[slot] of the step being staged */
  char *hostv[ASK_MARKS];
  char *pin[ASK_MARKS]; /* as__forward_dev_begin: each slot's ids and states (host_alloc) */
  int64_t *last_seq;   /* the sequences of the last sampled step (a fed step's check) */
  int last_n;          /* their number; -1 when the last step did not sample */
  size_t io_bytes;
  size_t off_ids_out, off_rng, off_temp, off_topp, off_topk, off_last, off_ids, off_pos,
      off_slot, off_seq, off_table;
  void *graph[AS__NBUCKET][3];
  /* ASK_PROFILE=1: steps run op by op, each timed between two syncs
   * (graphs off), minus the cost of an empty sync measured at start */
  int profile;
  double prof[P_N], sync_cost;
  long prof_steps;
  /* ASK_PROFILE_SKIP: op kinds left out of every step (bit per P_*), to
   * time what each costs inside a captured step; the outputs are wrong */
  unsigned skip;
  int split_cap; /* attention splits at most (as__nsplit) */
  /* what the captured function runs */
  const as_model_t *m;
  as_kv_t *kv;
  int run_T, run_S, run_mode;
};

void as__kv_step_limits(const as_kv_t *kv, int *rows, int *seqs) {
  *rows = kv->step->rows;
  *seqs = kv->step->seqs;
}

int as__kv_graphs(const as_kv_t *kv) {
  int n = 0;
  for (int b = 0; b < AS__NBUCKET; b++)
    for (int k = 0; k < 3; k++)
      n += kv->step->graph[b][k] != NULL;
  return n;
}

static double as__pnow(const ask_dev_t *dev);

static size_t as__al(size_t n) { return (n + 255) / 256 * 256; }

/* Attention splits for T rows: about 256 blocks in all, at most cap (32,
 * or ASK_ATTN_SPLITS: as__dstep_t's split_cap). Depends only on T, so a
 * captured step keeps it for any context length. */
static int as__nsplit(int nh, int T, int cap) {
  int n = 256 / (nh * T);
  return n < 1 ? 1 : n > cap ? cap : n;
}

/* Byte sizes of the compute buffers and the io block, in one place. */
typedef struct as__dsz_s {
  size_t x, qkv, att, gu, g, part, hs, logits, xs, io;
  size_t off[11];
  int tcap;
} as__dsz_t;

static void as__dsizes(const as_model_t *m, int rows, int seqs, as__dsz_t *z) {
  const as_llm_config_t *c = &m->cfg;
  size_t C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size, D = (size_t)c->head_dim,
         qd = (size_t)c->num_heads * D, kvd = (size_t)c->num_kv_heads * D;
  size_t R = (size_t)rows, S = (size_t)seqs, kmax = C > qd ? C : qd;
  int tw = (c->max_positions + AS_KV_PAGE - 1) / AS_KV_PAGE;
  if (F > kmax)
    kmax = F;
  z->x = as__al(R * C * 4);
  z->qkv = as__al(R * (qd + 2 * kvd) * 4);
  z->att = as__al(R * qd * 4);
  z->gu = as__al(R * 2 * F * 4);
  z->g = as__al(R * F * 4);
  z->part = as__al(256 * (D + 2) * 4);
  z->hs = as__al(S * C * 4);
  z->logits = as__al(S * (size_t)c->vocab_size * 4);
  z->xs = as__al(R * kmax * 2);
  /* A step's page lists: at most every sequence at full length (and at
   * least one page per row: a prefill chunk of R rows spans R/16 + 2). */
  z->tcap = (int)(S * (size_t)tw < R + 2 * S ? R + 2 * S : S * (size_t)tw);
  size_t o = 0;
  size_t sizes[11] = {S * 4, S * 8, S * 4, S * 4, S * 4, S * 4,
                      R * 4, R * 4, R * 4, R * 4, (size_t)z->tcap * 4};
  for (int i = 0; i < 11; i++) {
    o = (o + 15) / 16 * 16;
    z->off[i] = o;
    o += sizes[i];
  }
  z->io = as__al(o);
}

size_t as__dstep_bytes(const as_model_t *m, int rows, int seqs) {
  as__dsz_t z;
  as__dsizes(m, rows, seqs, &z);
  return 4 * z.x + z.qkv + z.att + z.gu + z.g + z.part + 2 * z.hs + z.logits + z.xs + z.io +
         (m->dm->mlp ? 3 * as__al((size_t)m->cfg.hidden_size * 4) : 0);
}

/* Which of the three accumulators layer l of L adds its MLP into: the MLP
 * before it in the queue (layer l - 1, or the last step's last layer)
 * used another, so each MLP can clear its predecessor's (read by the qkv
 * norm in between, or the head) and find its own cleared. */
static int as__macc(int L, int l) { return L % 2 == 1 && l == L - 1 ? 2 : l % 2; }

/* The op kinds (as__pnames) a comma-separated list names, as bits; embed
 * and sample cannot be left out (token ids must stay valid). */
static unsigned as__skip_kinds(const char *list) {
  unsigned bits = 0;
  for (int k = 0; list != NULL && k < P_N; k++) {
    size_t n = strlen(as__pnames[k]);
    for (const char *q = list; (q = strstr(q, as__pnames[k])) != NULL; q += n)
      if ((q == list || q[-1] == ',') && (q[n] == ',' || q[n] == '\0'))
        bits |= 1u << k;
  }
  return bits & ~((1u << P_EMBED) | (1u << P_SAMPLE));
}

void as__dstep_free(as_kv_t *kv) {
  as__dstep_t *s = kv->step;
  const ask_dev_t *dev;
  if (s == NULL)
    return;
  dev = kv->m->dm->dev;
  for (int b = 0; b < AS__NBUCKET; b++)
    for (int k = 0; k < 3; k++)
      dev->graph_free(s->graph[b][k]);
  float *bufs[] = {s->x, s->x2, s->h, s->r, s->qkv, s->att, s->gu, s->g, s->part, s->hs, s->hn,
                   s->logits, s->macc[0], s->macc[1], s->macc[2]};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    dev->free(bufs[i]);
  dev->free(s->xs);
  dev->free(s->io);
  for (int k = 0; k < ASK_MARKS; k++) {
    free(s->hostv[k]);
    dev->host_free(s->pin[k]);
  }
  free(s->run_r0);
  free(s->last_seq);
  free(s);
  kv->step = NULL;
}

int as__dstep_new(as_kv_t *kv, int rows, int seqs, char *err, size_t errlen) {
  const as_model_t *m = kv->m;
  const ask_dev_t *dev = m->dm->dev;
  const as_llm_config_t *c = &m->cfg;
  as__dstep_t *s;
  as__dsz_t z;
  int rc = 0;
  const char *env = getenv("ASK_NO_GRAPHS");

  if (rows < 1 || seqs < 1)
    return as__llm_err(err, errlen, AS_EINVAL, "a step needs room for a token");
  as__dsizes(m, rows, seqs, &z);
  s = kv->step = calloc(1, sizeof *s);
  if (s == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory");
  s->rows = rows;
  s->seqs = seqs;
  s->tcap = z.tcap;
  s->qkvd = (c->num_heads + 2 * c->num_kv_heads) * c->head_dim;
  s->graphs_off = env != NULL && env[0] != '\0' && env[0] != '0';
  env = getenv("ASK_NO_FUSE");
  s->fuse = dev->norm_matmul_bf16 != NULL && dev->glu_matmul_bf16 != NULL &&
            !(env != NULL && env[0] != '\0' && env[0] != '0');
  env = getenv("ASK_NO_CHAIN");
  s->chain = s->fuse && !(env != NULL && env[0] != '\0' && env[0] != '0');
  env = getenv("ASK_PROFILE");
  s->profile = env != NULL && env[0] != '\0' && env[0] != '0';
  if (s->profile)
    s->graphs_off = 1;
  s->m = m;
  s->kv = kv;
  s->skip = as__skip_kinds(getenv("ASK_PROFILE_SKIP"));
  env = getenv("ASK_ATTN_SPLITS");
  s->split_cap = env != NULL && atoi(env) >= 1 && atoi(env) <= 32 ? atoi(env) : 32;
  struct {
    void **p;
    size_t n;
  } want[] = {{(void **)&s->x, z.x},     {(void **)&s->x2, z.x},
              {(void **)&s->h, z.x},       {(void **)&s->r, z.x},
              {(void **)&s->qkv, z.qkv}, {(void **)&s->att, z.att},   {(void **)&s->gu, z.gu},
              {(void **)&s->g, z.g},     {(void **)&s->part, z.part}, {(void **)&s->hs, z.hs},
              {(void **)&s->hn, z.hs},   {(void **)&s->logits, z.logits},
              {(void **)&s->xs, z.xs},   {(void **)&s->io, z.io}};
  for (size_t i = 0; i < sizeof want / sizeof want[0] && rc == 0; i++)
    rc = dev->alloc(want[i].p, want[i].n, err, errlen);
  /* the MLP's accumulators start as zeros (copied: alloc does not clear) */
  if (rc == 0 && (s->mlp = m->dm->mlp && s->fuse)) {
    size_t n = (size_t)c->hidden_size * 4;
    void *zero = calloc(1, n);
    if (zero == NULL)
      return as__llm_err(err, errlen, AS_ENOMEM, "out of memory");
    for (int k = 0; k < 3 && rc == 0; k++)
      if ((rc = dev->alloc((void **)&s->macc[k], as__al(n), err, errlen)) == 0)
        rc = dev->copy(s->macc[k], zero, n, ASK_COPY_H2D, err, errlen);
    free(zero);
  }
  if (rc != 0)
    return rc;
  s->io_bytes = z.io;
  if (s->profile) { /* the cost of a sync with nothing queued, best of 20 */
    s->sync_cost = 1;
    for (int i = 0; i < 20; i++) {
      double t0 = as__pnow(dev), d = as__pnow(dev) - t0;
      if (d < s->sync_cost)
        s->sync_cost = d;
    }
  }
  for (int k = 0; k < ASK_MARKS; k++)
    if ((s->hostv[k] = calloc(1, z.io)) == NULL)
      return as__llm_err(err, errlen, AS_ENOMEM, "out of memory");
  s->host = s->hostv[0];
  for (int k = 0; k < ASK_MARKS && rc == 0; k++) /* ids_out and rng: the front of io */
    rc = dev->host_alloc((void **)&s->pin[k], z.off[1] + (size_t)seqs * 8, err, errlen);
  s->run_r0 = malloc((size_t)seqs * 4 * sizeof(int));
  s->last_seq = malloc((size_t)seqs * sizeof(int64_t));
  s->last_n = -1;
  if (rc != 0)
    return rc;
  if (s->run_r0 == NULL || s->last_seq == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory");
  s->run_n = s->run_r0 + seqs;
  s->run_p0 = s->run_n + seqs;
  s->run_t0 = s->run_p0 + seqs;
  s->off_ids_out = z.off[0];
  s->off_rng = z.off[1];
  s->off_temp = z.off[2];
  s->off_topp = z.off[3];
  s->off_topk = z.off[4];
  s->off_last = z.off[5];
  s->off_ids = z.off[6];
  s->off_pos = z.off[7];
  s->off_slot = z.off[8];
  s->off_seq = z.off[9];
  s->off_table = z.off[10];
  return 0;
}

#define AS__IO(s, base, off, type) ((type *)(void *)((base) + (s)->off))

static double as__wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Profile: the time now, after the queue is empty. */
static double as__pnow(const ask_dev_t *dev) {
  char e[8];
  dev->sync(e, sizeof e);
  return as__wall();
}

/* Profile: charges the time since *t (less one empty sync) to kind. */
static void as__ptick(as__dstep_t *s, const ask_dev_t *dev, int kind, double *t) {
  double now = as__pnow(dev), d = now - *t - s->sync_cost;
  s->prof[kind] += d > 0 ? d : 0;
  *t = now;
}

int as__kv_profile(const as_kv_t *kv, char *out, size_t len) {
  const as__dstep_t *s = kv->step;
  size_t n = 0;
  if (s == NULL || !s->profile || s->prof_steps == 0 || len == 0)
    return 0;
  n += (size_t)snprintf(out + n, len - n, "{\"steps\": %ld", s->prof_steps);
  for (int k = 0; k < P_N && n < len; k++)
    n += (size_t)snprintf(out + n, len - n, ", \"%s_us\": %.1f", as__pnames[k],
                          s->prof[k] * 1e6 / (double)s->prof_steps);
  if (n < len)
    snprintf(out + n, len - n, "}");
  return 1;
}

void as__kv_profile_reset(as_kv_t *kv) {
  as__dstep_t *s = kv->step;
  if (s == NULL)
    return;
  memset(s->prof, 0, sizeof s->prof);
  s->prof_steps = 0;
}

/* Queues the pending one-row ops ch[0 .. *n) and empties the list: as one
 * launch where the backend chains them (gemv_chain; refused with the
 * attention first, the products after it may still chain), else op by op,
 * with norm_matmul_glu's choice for a gate/up product followed by the down
 * product that reads it, as the unchained step makes it. */
static void as__chain_flush(const ask_dev_t *dev, ask_chain_op_t *ch, int *n) {
  int i = 0;
  if (*n == 0 || (dev->gemv_chain != NULL && dev->gemv_chain(ch, *n))) {
    *n = 0;
    return;
  }
  if (ch[0].kind == ASK_CHAIN_ATTENTION && *n > 2 && dev->gemv_chain != NULL) {
    /* refused with the attention: the products may still chain without it */
    const ask_chain_op_t *o = &ch[0];
    dev->attention_paged(o->out, o->part, o->x, o->kc, o->vc, o->table, o->seq, o->pos, 1,
                         o->nh, o->nkv, o->D, o->q_stride, o->table_width, o->page, o->nsplit,
                         o->scale);
    i = 1;
    if (dev->gemv_chain(ch + 1, *n - 1)) {
      *n = 0;
      return;
    }
  }
  for (; i < *n; i++) {
    const ask_chain_op_t *o = &ch[i], *d = i + 1 < *n ? &ch[i + 1] : NULL;
    switch (o->kind) {
    case ASK_CHAIN_MATMUL:
      dev->matmul_bf16(o->out, o->xs, o->x, o->w, o->bias, 1, o->K, o->N);
      break;
    case ASK_CHAIN_NORM_MATMUL:
      if (d != NULL && d->kind == ASK_CHAIN_GLU_MATMUL && d->x == o->out && o->N == 2 * d->K &&
          dev->norm_matmul_glu != NULL) {
        if (dev->norm_matmul_glu(d->g, o->out, o->xo, o->h, o->xs, o->x, o->r, o->nw, o->eps,
                                 o->w_offset, o->w, o->bias, 1, o->K, d->K, d->act))
          dev->matmul_bf16(d->out, d->xs, d->g, d->w, d->bias, 1, d->K, d->N);
        else
          dev->glu_matmul_bf16(d->out, d->g, d->xs, d->x, d->act, d->w, d->bias, 1, d->K, d->N);
        i++;
        break;
      }
      dev->norm_matmul_bf16(o->out, o->xo, o->h, o->xs, o->x, o->r, o->nw, o->eps, o->w_offset,
                            o->w, o->bias, 1, o->K, o->N);
      break;
    case ASK_CHAIN_NORM_ROPE_KV:
      dev->norm_matmul_rope_kv(o->out, o->xo, o->h, o->xs, o->x, o->r, o->nw, o->eps,
                               o->w_offset, o->w, o->bias, 1, o->K, o->kc, o->vc, o->pos, o->slot,
                               o->inv_freq, o->nh, o->nkv, o->D);
      break;
    case ASK_CHAIN_ATTENTION:
      dev->attention_paged(o->out, o->part, o->x, o->kc, o->vc, o->table, o->seq, o->pos, 1,
                           o->nh, o->nkv, o->D, o->q_stride, o->table_width, o->page,
                           o->nsplit, o->scale);
      break;
    default: /* ASK_CHAIN_GLU_MATMUL */
      dev->glu_matmul_bf16(o->out, o->g, o->xs, o->x, o->act, o->w, o->bias, 1, o->K, o->N);
    }
  }
  *n = 0;
}

/* Queues the ops of one step over the staged rows: T rows, S sampled rows
 * (the rows `last` names), then the mode's sampling. */
static void as__run(const as_model_t *m, as_kv_t *kv, int T, int S, int mode) {
  const as_llm_config_t *c = &m->cfg;
  const as__dmodel_t *dm = m->dm;
  const ask_dev_t *dev = dm->dev;
  const ask_ops_t *ops = m->ops;
  as__dstep_t *s = kv->step;
  int C = c->hidden_size, F = c->intermediate_size, D = c->head_dim, nh = c->num_heads,
      nkv = c->num_kv_heads, qd = nh * D, V = c->vocab_size, qkvd = s->qkvd;
  float eps = (float)c->norm_eps, off = m->norm_offset, scale = (float)(1.0 / sqrt((double)D));
  size_t layer = (size_t)kv->npages * AS_KV_PAGE * (size_t)kv->kv_dim;
  const int32_t *ids = AS__IO(s, s->io, off_ids, int32_t),
                *pos = AS__IO(s, s->io, off_pos, int32_t),
                *slot = AS__IO(s, s->io, off_slot, int32_t),
                *seq = AS__IO(s, s->io, off_seq, int32_t),
                *table = AS__IO(s, s->io, off_table, int32_t),
                *last = AS__IO(s, s->io, off_last, int32_t);
  int nsplit = as__nsplit(nh, T, s->split_cap), split = 0;
  /* Direct steps with a prefill chunk: per-sequence attention calls (the
   * runs describe exactly this step's rows; captured steps are decode-only,
   * so they always take the single call). */
  if (dev->attention_prefill != NULL && s->nrun > 0 &&
      s->run_r0[s->nrun - 1] + s->run_n[s->nrun - 1] == T)
    for (int i = 0; i < s->nrun; i++)
      split |= s->run_n[i] >= AS__PREFILL_MIN;

  double t = s->profile ? as__pnow(dev) : 0;
#define AS__OP(kind, call)                                                  \
  do {                                                                      \
    if (!(s->skip >> (kind) & 1u))                                          \
      call;                                                                 \
    if (s->profile)                                                         \
      as__ptick(s, dev, kind, &t);                                          \
  } while (0)
  /* At one row a layer's ops from its attention to the next layer's qkv
   * go to the backend as one chain (gemv_chain: one launch where it can,
   * the same bits either way); AS__CH appends one unless its kind is
   * skipped. */
  const int mlp = s->mlp && T == 1, Ln = c->num_layers;
  const int chain =
      s->chain && !mlp && T == 1 && !s->profile && dev->norm_matmul_rope_kv != NULL;
  ask_chain_op_t ch[5];
  int nch = 0;
#define AS__CH(kind_, op_)                                                  \
  do {                                                                      \
    if (!(s->skip >> (kind_) & 1u))                                         \
      ch[nch++] = (ask_chain_op_t)op_;                                      \
  } while (0)
  AS__OP(P_EMBED, dev->embedding_bf16(s->x, dm->embed, ids, AS__IO(s, s->io, off_ids_out, int32_t),
                                      T, C, m->embed_scale));
  /* With the fusions the residual stream alternates between x and x2 (a
   * fused norm reads one and writes the sum to the other); the same
   * pointers every step, so a captured step stays valid. */
  float *x = s->x, *xn = s->x2;
  float *rr = s->r; /* what the next norm adds to x: the o or down output, or an accumulator */
  for (int l = 0; l < c->num_layers; l++) {
    const as__dlayer_t *L = &dm->layers[l];
    uint16_t *kc = kv->kc + (size_t)l * layer, *vc = kv->vc + (size_t)l * layer;
    int roped = 0; /* rope_kv done with the qkv product (norm_matmul_rope_kv) */
    if (s->fuse) {
      float *tmp;
      if (chain && l > 0) { /* after the last layer's o, gate/up and down */
        AS__CH(P_QKV, ((ask_chain_op_t){.kind = ASK_CHAIN_NORM_ROPE_KV, .out = s->qkv, .xo = xn,
                                        .h = s->h, .xs = s->xs, .x = x, .r = rr,
                                        .nw = L->norm1, .eps = eps, .w_offset = off, .w = L->qkv,
                                        .bias = L->qkv_b, .K = C, .kc = kc, .vc = vc, .pos = pos,
                                        .slot = slot, .inv_freq = dm->inv_freq, .nh = nh,
                                        .nkv = nkv, .D = D}));
        as__chain_flush(dev, ch, &nch);
        roped = 1;
      } else if (dev->norm_matmul_rope_kv != NULL) {
        AS__OP(P_QKV, dev->norm_matmul_rope_kv(s->qkv, xn, s->h, s->xs, x, l == 0 ? NULL : rr,
                                               L->norm1, eps, off, L->qkv, L->qkv_b, T, C, kc,
                                               vc, pos, slot, dm->inv_freq, nh, nkv, D));
        roped = 1;
      } else {
        AS__OP(P_QKV, dev->norm_matmul_bf16(s->qkv, xn, s->h, s->xs, x, l == 0 ? NULL : rr,
                                            L->norm1, eps, off, L->qkv, L->qkv_b, T, C, qkvd));
      }
      if (l > 0)
        tmp = x, x = xn, xn = tmp;
    } else {
      AS__OP(P_NORM, dev->add_rmsnorm(s->h, x, l == 0 ? NULL : rr, L->norm1, T, C, eps, off));
      AS__OP(P_QKV, dev->matmul_bf16(s->qkv, s->xs, s->h, L->qkv, L->qkv_b, T, C, qkvd));
    }
    if (!roped)
      AS__OP(P_ROPE_KV,
             dev->rope_kv(s->qkv, kc, vc, pos, slot, dm->inv_freq, T, nh, nkv, D, qkvd));
    if (!split && chain) { /* the chain's first op: with the products after it */
      AS__CH(P_ATTN, ((ask_chain_op_t){.kind = ASK_CHAIN_ATTENTION, .out = s->att,
                                       .part = s->part, .x = s->qkv, .kc = kc, .vc = vc,
                                       .table = table, .seq = seq, .pos = pos, .nh = nh,
                                       .nkv = nkv, .D = D, .q_stride = qkvd, .table_width = 1,
                                       .page = AS_KV_PAGE, .nsplit = nsplit, .scale = scale}));
    } else if (!split) {
      AS__OP(P_ATTN, dev->attention_paged(s->att, s->part, s->qkv, kc, vc, table, seq, pos, T,
                                          nh, nkv, D, qkvd, 1, AS_KV_PAGE, nsplit, scale));
    } else { /* prefill chunks through attention_prefill, runs of short ones paged */
      for (int i = 0, j; i < s->nrun; i = j) {
        size_t r0 = (size_t)s->run_r0[i];
        if (s->run_n[i] >= AS__PREFILL_MIN) {
          AS__OP(P_ATTN, dev->attention_prefill(s->att + r0 * qd, s->qkv + r0 * qkvd, kc, vc,
                                                table + s->run_t0[i], s->run_p0[i], s->run_n[i],
                                                nh, nkv, D, qkvd, AS_KV_PAGE, scale));
          j = i + 1;
          continue;
        }
        for (j = i; j < s->nrun && s->run_n[j] < AS__PREFILL_MIN; j++)
          ;
        int n = s->run_r0[j - 1] + s->run_n[j - 1] - (int)r0;
        AS__OP(P_ATTN, dev->attention_paged(s->att + r0 * qd, s->part, s->qkv + r0 * qkvd, kc,
                                            vc, table, seq + r0, pos + r0, n, nh, nkv, D, qkvd,
                                            1, AS_KV_PAGE, as__nsplit(nh, n, s->split_cap), scale));
      }
    }
    if (chain) {
      float *tmp;
      AS__CH(P_O, ((ask_chain_op_t){.kind = ASK_CHAIN_MATMUL, .out = s->r, .xs = s->xs,
                                    .x = s->att, .w = L->o, .bias = L->o_b, .K = qd, .N = C}));
      AS__CH(P_GATE_UP, ((ask_chain_op_t){.kind = ASK_CHAIN_NORM_MATMUL, .out = s->gu, .xo = xn,
                                          .h = s->h, .xs = s->xs, .x = x, .r = s->r,
                                          .nw = L->norm2, .eps = eps, .w_offset = off,
                                          .w = L->gu, .bias = L->gu_b, .K = C, .N = 2 * F}));
      tmp = x, x = xn, xn = tmp;
      AS__CH(P_DOWN, ((ask_chain_op_t){.kind = ASK_CHAIN_GLU_MATMUL, .out = s->r, .g = s->g,
                                       .xs = s->xs, .x = s->gu, .act = c->act, .w = L->down,
                                       .bias = L->down_b, .K = F, .N = C}));
      continue; /* the next layer's qkv joins them, or the head flushes them */
    }
    AS__OP(P_O, dev->matmul_bf16(s->r, s->xs, s->att, L->o, L->o_b, T, qd, C));
    rr = s->r;
    if (mlp) { /* the whole MLP in one op, into this layer's accumulator */
      float *acc = s->macc[as__macc(Ln, l)],
            *prev = s->macc[as__macc(Ln, l == 0 ? Ln - 1 : l - 1)];
      int done = 0;
      AS__OP(P_GATE_UP, done = dev->norm_matmul_mlp(acc, prev, xn, x, s->r, L->norm2, eps, off,
                                                    L->gu, L->gu_b, L->down_t, L->down_b, 1, C,
                                                    F, c->act));
      /* 0 only where the backend has failed (the shape was taken at load;
       * the separate ops below are then skipped too and the step fails),
       * or a test changed the backend's settings since (the accumulators
       * may then keep stale sums) */
      if (done || (s->skip >> P_GATE_UP & 1u)) {
        float *tmp = x;
        x = xn, xn = tmp, rr = acc;
        continue;
      }
    }
    if (s->fuse) {
      float *tmp;
      int glued = 0; /* g made with the gate/up product (norm_matmul_glu) */
      if (dev->norm_matmul_glu != NULL)
        AS__OP(P_GATE_UP, glued = dev->norm_matmul_glu(s->g, s->gu, xn, s->h, s->xs, x, s->r,
                                                       L->norm2, eps, off, L->gu, L->gu_b, T, C,
                                                       F, c->act));
      else
        AS__OP(P_GATE_UP, dev->norm_matmul_bf16(s->gu, xn, s->h, s->xs, x, s->r, L->norm2, eps,
                                                off, L->gu, L->gu_b, T, C, 2 * F));
      tmp = x, x = xn, xn = tmp;
      if (glued)
        AS__OP(P_DOWN, dev->matmul_bf16(s->r, s->xs, s->g, L->down, L->down_b, T, F, C));
      else
        AS__OP(P_DOWN, dev->glu_matmul_bf16(s->r, s->g, s->xs, s->gu, c->act, L->down,
                                            L->down_b, T, F, C));
    } else {
      AS__OP(P_NORM, dev->add_rmsnorm(s->h, x, s->r, L->norm2, T, C, eps, off));
      AS__OP(P_GATE_UP, dev->matmul_bf16(s->gu, s->xs, s->h, L->gu, L->gu_b, T, C, 2 * F));
      AS__OP(P_GLU, dev->glu_rows(s->g, s->gu, T, F, c->act));
      AS__OP(P_DOWN, dev->matmul_bf16(s->r, s->xs, s->g, L->down, L->down_b, T, F, C));
    }
  }
  as__chain_flush(dev, ch, &nch);
#undef AS__CH
  s->xlast = x; /* where the final hidden states are (all_positions reads them) */
  if (S == T) {
    /* Every row is wanted, so `last` is 0..T-1 (decode steps, padded or not;
     * all_positions' first chunk): the last residual add and the final norm
     * in one kernel, the same arithmetic as the three ops below. */
    AS__OP(P_HEAD_NORM, dev->add_rmsnorm(s->hn, x, rr, dm->final_norm, S, C, eps, off));
  } else {
    AS__OP(P_HEAD_NORM, ops->add(x, x, rr, (size_t)T * (size_t)C));
    /* the rows whose logits are wanted */
    AS__OP(P_HEAD_NORM, ops->embedding(s->hs, x, last, S, C, 1.0f));
    AS__OP(P_HEAD_NORM, dev->add_rmsnorm(s->hn, s->hs, NULL, dm->final_norm, S, C, eps, off));
  }
  AS__OP(P_LM_HEAD, dev->matmul_bf16(s->logits, s->xs, s->hn, dm->lm_head, NULL, S, C, V));
  if (mode == AS__MODE_GREEDY)
    AS__OP(P_SAMPLE, dev->argmax_rows(AS__IO(s, s->io, off_ids_out, int32_t), s->logits, S, V));
  else if (mode == AS__MODE_SAMPLE)
    AS__OP(P_SAMPLE,
           dev->sample_rows(AS__IO(s, s->io, off_ids_out, int32_t), NULL, s->logits,
                            AS__IO(s, s->io, off_temp, float), AS__IO(s, s->io, off_topk, int32_t),
                            AS__IO(s, s->io, off_topp, float), AS__IO(s, s->io, off_rng, uint64_t),
                            S, V));
#undef AS__OP
  if (s->profile)
    s->prof_steps++;
}

static void as__run_captured(void *ud) {
  as__dstep_t *s = ud;
  as__run(s->m, s->kv, s->run_T, s->run_S, s->run_mode);
}

/* Queues the copy of the staged inputs [off_rng, end) to the device, ahead
 * of the step's ops (s->host is calloc'd, pageable: see
 * ASK_COPY_H2D_ASYNC); the step's first wait is its copy out. */
static int as__stage(as__dstep_t *s, const ask_dev_t *dev, size_t from, size_t end, char *err,
                     size_t errlen) {
  return dev->copy(s->io + from, s->host + from, end - from, ASK_COPY_H2D_ASYNC, err, errlen);
}

/* Checks, stages and queues one step (host buffer hostv[hslot]) without
 * waiting; *pT: its rows, *pS: the rows whose logits the head made. fed (sampled decode
 * steps only): the step's sequences are exactly the last step's, in the
 * same order, and row r's input is the id that step sampled for row r, still
 * on the device (staged as -(r + 1), see embedding_bf16), as are the
 * generators' states (not staged). On failure the cache is unchanged. */
static int as__dstep_queue(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                           const as__samp_t *samp, int all_positions, int fed, int hslot,
                           int *pT, int *pS, char *err, size_t errlen) {
  const ask_dev_t *dev = m->dm->dev;
  as__dstep_t *s = kv->step;
  size_t T = 0, scr = 0;
  int rc, short_pages = 0, ntab = 0, mode, decode = 1, Tp, S;

  if ((rc = as__forward_check(m, kv, seqs, nseq, &T, &scr, 0, err, errlen)) != 0)
    return rc;
  if (fed) { /* the same sequences as the last step, which sampled every row */
    int same = samp != NULL && s->last_n == nseq;
    for (int i = 0; i < nseq && same; i++)
      same = seqs[i].n == 1 && s->last_seq[i] == seqs[i].seq;
    if (!same)
      return as__llm_err(err, errlen, AS_EINVAL,
                         "a fed step needs the sequences of the last sampled step");
  }
  if ((int)T > s->rows || nseq > s->seqs)
    return as__llm_err(err, errlen, AS_EINVAL,
                       "a step of %zu tokens over %d sequences exceeds the step buffers (%d "
                       "tokens, %d sequences)",
                       T, nseq, s->rows, s->seqs);
  for (int i = 0; i < nseq; i++) {
    as__kvseq_t *q = as__kv_find(kv, seqs[i].seq);
    short_pages += as__kv_pages_short(kv, q, q->len + seqs[i].n);
    ntab += (q->len + seqs[i].n + AS_KV_PAGE - 1) / AS_KV_PAGE;
    decode &= seqs[i].n == 1;
  }
  if (short_pages > kv->nfree)
    return as__llm_err(err, errlen, AS_EFULL,
                       "the KV cache has %d free pages of %d tokens: %d more are needed",
                       kv->nfree, AS_KV_PAGE, short_pages);
  if (ntab > s->tcap)
    return as__llm_err(err, errlen, AS_EINVAL, "a step's page lists exceed %d entries", s->tcap);
  for (int i = 0; i < nseq; i++) { /* cannot fail now: enough pages are free */
    as__kvseq_t *q = as__kv_find(kv, seqs[i].seq);
    if ((rc = as__kv_pages(kv, q, q->len + seqs[i].n)) != 0)
      return as__llm_err(err, errlen, rc, "out of memory for a page list");
  }

  /* Stage: rows, page lists, sampled rows and their settings. */
  char *h = s->host = s->hostv[hslot];
  int32_t *ids = AS__IO(s, h, off_ids, int32_t), *pos = AS__IO(s, h, off_pos, int32_t),
          *slot = AS__IO(s, h, off_slot, int32_t), *sq = AS__IO(s, h, off_seq, int32_t),
          *tab = AS__IO(s, h, off_table, int32_t), *last = AS__IO(s, h, off_last, int32_t),
          *topk = AS__IO(s, h, off_topk, int32_t);
  float *temp = AS__IO(s, h, off_temp, float), *topp = AS__IO(s, h, off_topp, float);
  uint64_t *rng = AS__IO(s, h, off_rng, uint64_t);
  int r = 0, t0 = 0;
  for (int i = 0; i < nseq; i++) {
    const as__kvseq_t *q = as__kv_find(kv, seqs[i].seq);
    int n = seqs[i].n, np = (q->len + n + AS_KV_PAGE - 1) / AS_KV_PAGE;
    memcpy(tab + t0, q->pages, (size_t)np * sizeof *tab);
    for (int j = 0; j < n; j++, r++) {
      int p = q->len + j;
      ids[r] = fed ? -(r + 1) : seqs[i].tokens[j];
      pos[r] = p;
      slot[r] = q->pages[p / AS_KV_PAGE] * AS_KV_PAGE + p % AS_KV_PAGE;
      sq[r] = t0;
    }
    s->run_r0[i] = r - n;
    s->run_n[i] = n;
    s->run_p0[i] = q->len;
    s->run_t0[i] = t0;
    t0 += np;
    last[i] = r - 1;
  }
  s->nrun = nseq;
  mode = AS__MODE_LOGITS;
  if (samp != NULL) {
    mode = AS__MODE_GREEDY;
    for (int i = 0; i < nseq; i++) {
      temp[i] = samp->temperature[i];
      topk[i] = samp->top_k[i];
      topp[i] = samp->top_p[i];
      rng[i] = samp->rng[i];
      if (temp[i] > 0)
        mode = AS__MODE_SAMPLE;
    }
  }
  S = nseq;
  Tp = (int)T;
  int bucket = -1;
  if (samp != NULL && decode && !s->graphs_off) {
    for (int b = 0, n = 1; b < AS__NBUCKET; b++, n *= 2)
      if (n >= nseq && n <= s->seqs && n <= s->rows) {
        bucket = b;
        Tp = S = n;
        break;
      }
    for (int i = nseq; i < Tp; i++) { /* padding rows: write nothing, read nothing */
      ids[i] = 0;
      pos[i] = -1;
      slot[i] = -1;
      sq[i] = 0;
      last[i] = i;
      temp[i] = 0;
      topk[i] = 0;
      topp[i] = 1;
      rng[i] = 1;
    }
  }
  if (all_positions && samp == NULL)
    S = (int)T < s->seqs ? (int)T : s->seqs; /* first chunk; more below */
  if (all_positions && samp == NULL)
    for (int i = 0; i < S; i++)
      last[i] = i;
  if ((rc = as__stage(s, dev, fed ? s->off_temp : s->off_rng,
                      s->off_table + (size_t)t0 * sizeof(int32_t), err, errlen)) != 0)
    return rc;
  s->last_n = samp != NULL ? nseq : -1;
  for (int i = 0; i < nseq && samp != NULL; i++)
    s->last_seq[i] = seqs[i].seq;

  if (bucket >= 0) {
    void **g = &s->graph[bucket][mode];
    if (*g == NULL) {
      char why[256];
      s->run_T = Tp;
      s->run_S = S;
      s->run_mode = mode;
      if (dev->graph_capture(g, as__run_captured, s, why, sizeof why) != 0) {
        *g = NULL;
        s->graphs_off = 1; /* not supported here: run the ops directly from now on */
        AS_LOGW("decode steps of %d sequences cannot be captured (%s): steps run op by op from "
                "now on",
                Tp, why);
      }
    }
    if (*g != NULL)
      rc = dev->graph_launch(*g, err, errlen);
    else
      as__run(m, kv, Tp, S, mode);
  } else {
    as__run(m, kv, (int)T, S, mode);
  }
  if (rc != 0) { /* the staged copy may still be queued: wait before s->host changes */
    char why[64];
    dev->sync(why, sizeof why);
    s->last_n = -1;
    return rc;
  }
  *pT = (int)T;
  *pS = S;
  return 0;
}

int as__forward_dev(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                    const as__samp_t *samp, float *logits, int all_positions, char *err,
                    size_t errlen) {
  const ask_dev_t *dev = m->dm->dev;
  as__dstep_t *s = kv->step;
  int V = m->cfg.vocab_size, rc, T = 0, S = 0;
  if ((rc = as__dstep_queue(m, kv, seqs, nseq, samp, all_positions, 0, 0, &T, &S, err,
                            errlen)) != 0)
    return rc;
  char *h = s->host;
  int32_t *last = AS__IO(s, h, off_last, int32_t);
  uint64_t *rng = AS__IO(s, h, off_rng, uint64_t);

  if (samp != NULL) {
    if ((rc = dev->copy(h, s->io, s->off_rng + (size_t)nseq * sizeof(uint64_t), ASK_COPY_D2H,
                        err, errlen)) != 0)
      return rc;
    memcpy(samp->ids, AS__IO(s, h, off_ids_out, int32_t), (size_t)nseq * sizeof(int32_t));
    memcpy(samp->rng, rng, (size_t)nseq * sizeof(uint64_t));
  } else {
    if ((rc = dev->copy(logits, s->logits, (size_t)S * V * sizeof(float), ASK_COPY_D2H, err,
                        errlen)) != 0)
      return rc;
    /* all_positions beyond the first chunk: the hidden states are still in
     * x; run the head again over the next rows. */
    for (int done = S; all_positions && done < T; done += S) {
      const as_llm_config_t *c = &m->cfg;
      int n = T - done < s->seqs ? T - done : s->seqs;
      for (int i = 0; i < n; i++)
        last[i] = done + i;
      if ((rc = dev->copy(s->io + s->off_last, h + s->off_last, (size_t)n * sizeof(int32_t),
                          ASK_COPY_H2D, err, errlen)) != 0)
        return rc;
      m->ops->embedding(s->hs, s->xlast, AS__IO(s, s->io, off_last, int32_t), n, c->hidden_size,
                        1.0f);
      dev->add_rmsnorm(s->hn, s->hs, NULL, m->dm->final_norm, n, c->hidden_size,
                       (float)c->norm_eps, m->norm_offset);
      dev->matmul_bf16(s->logits, s->xs, s->hn, m->dm->lm_head, NULL, n, c->hidden_size, V);
      if ((rc = dev->copy(logits + (size_t)done * V, s->logits, (size_t)n * V * sizeof(float),
                          ASK_COPY_D2H, err, errlen)) != 0)
        return rc;
    }
  }
  if ((rc = dev->sync(err, errlen)) != 0)
    return rc;
  for (int i = 0; i < nseq; i++) {
    as__kv_find(kv, seqs[i].seq)->len += seqs[i].n;
    kv->tokens += (size_t)seqs[i].n;
  }
  return 0;
}

int as__forward_dev_begin(const as_model_t *m, as_kv_t *kv, const as_fwd_seq_t *seqs, int nseq,
                          const as__samp_t *samp, int fed, int slot, char *err, size_t errlen) {
  const ask_dev_t *dev = m->dm->dev;
  as__dstep_t *s = kv->step;
  int rc, T = 0, S = 0;
  if (samp == NULL || slot < 0 || slot >= ASK_MARKS)
    return as__llm_err(err, errlen, AS_EINVAL, "a step begun needs sampling and a slot");
  if ((rc = as__dstep_queue(m, kv, seqs, nseq, samp, 0, fed, slot, &T, &S, err, errlen)) != 0)
    return rc;
  if ((rc = dev->copy(s->pin[slot], s->io, s->off_rng + (size_t)nseq * sizeof(uint64_t),
                      ASK_COPY_D2H_ASYNC, err, errlen)) != 0 ||
      (rc = dev->mark(slot, err, errlen)) != 0) {
    char why[64];
    dev->sync(why, sizeof why);
    s->last_n = -1;
    return rc;
  }
  for (int i = 0; i < nseq; i++) { /* the step is queued: its tokens are the cache's now */
    as__kv_find(kv, seqs[i].seq)->len += seqs[i].n;
    kv->tokens += (size_t)seqs[i].n;
  }
  return 0;
}

int as__forward_dev_end(as_kv_t *kv, int slot, int nseq, const as__samp_t *samp, char *err,
                        size_t errlen) {
  as__dstep_t *s = kv->step;
  const ask_dev_t *dev = kv->m->dm->dev;
  int rc;
  if (slot < 0 || slot >= ASK_MARKS)
    return as__llm_err(err, errlen, AS_EINVAL, "no step slot %d", slot);
  if ((rc = dev->wait_mark(slot, err, errlen)) != 0)
    return rc;
  memcpy(samp->ids, s->pin[slot] + s->off_ids_out, (size_t)nseq * sizeof(int32_t));
  memcpy(samp->rng, s->pin[slot] + s->off_rng, (size_t)nseq * sizeof(uint64_t));
  return 0;
}

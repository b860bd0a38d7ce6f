/* cli_bench.c — `actorserve bench-llm MODEL_DIR [options]`: the engine's
 * throughput and latency on one device, as JSON lines on stdout (read by
 * bench/llm_gpu.py and `make bench-llm-gpu`).
 *
 *   {"bench": "info", ...}      device (and device_info: the backend's
 *                               one-line description), model size, bytes of
 *                               weights one decode step reads, KV capacity
 *   {"bench": "decode", ...}    per --batch B: B requests of --prompt-tokens
 *                               pseudo-random ids, greedy (or sampled with
 *                               --temperature, --top-k, --top-p, seeded),
 *                               --new-tokens each (end-of-sequence
 *                               ignored), all in one generator (continuous
 *                               batching); tokens/s over the steps where
 *                               all B decode
 *   {"bench": "ttft", ...}      per --ttft P: one request, the time from
 *                               as_gen_add to its first token (the prompt in
 *                               one step), median of 3 after a warm-up
 *
 * Each batch size runs once untimed first (8 tokens), so its captured decode
 * step exists before the timed run, as in a server that has been up a while.
 * With ASK_PROFILE=1 in the environment, steps run op by op (no graphs),
 * each op timed between syncs, and a {"bench": "profile", ...} line per
 * batch gives the mean microseconds per step of each op kind (prefill and
 * decode steps of the timed run together).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "llm.h"

#define AS_BENCH_MAX_LIST 16

static double as__bnow(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* s inside a JSON string: quotes, backslashes and control bytes escaped. */
static void as__json_str(FILE *f, const char *s) {
  for (; *s != '\0'; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      fprintf(f, "\\%c", ch);
    else if (ch < 0x20)
      fprintf(f, "\\u%04x", ch);
    else
      fputc(ch, f);
  }
}

/* "1,8,32" into v (at most AS_BENCH_MAX_LIST positive ints); count or -1. */

static int as__blist(const char *s, int *v) {
  int n = 0;
  while (s != NULL && *s != '\0') {
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s || x <= 0 || x > 1000000 || n == AS_BENCH_MAX_LIST)
      return -1;
    v[n++] = (int)x;
    s = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != '\0')
      return -1;
  }
  return n > 0 ? n : -1;
}

static int as__bbad(const char *msg, const char *a) {
  fprintf(stderr, "actorserve bench-llm: %s%s\n", msg, a != NULL ? a : "");
  fprintf(stderr, "usage: actorserve bench-llm MODEL_DIR [--device cpu|cuda|refdev] "
                  "[--batch 1,8,32,128,256] [--prompt-tokens 128] [--new-tokens 256] "
                  "[--ttft 128,2048|none] [--kv-tokens N] [--temperature T] [--top-k K] "
                  "[--top-p P]\n");
  return 2;
}

/* Runs `n` requests of prompt P and `news` new tokens to the end. With
 * timing, *tok_s and *step_ms cover the steps after every request has its
 * first token. */
static int as__bdecode(as_gen_t *g, int V, int n, int P, int news, const as_gen_opts_t *samp,
                       uint64_t *rng, double *tok_s, double *step_ms, char *err, size_t errlen) {
  int32_t *prompt = malloc((size_t)P * sizeof *prompt);
  int started = 0, rc = 0, steps = 0;
  long toks = 0;
  double t0 = 0;
  int64_t id;
  as_gen_opts_t o;
  if (prompt == NULL)
    return AS_ENOMEM;
  as_gen_opts_init(&o);
  o.n_stop_ids = 0;
  o.max_new_tokens = news;
  o.temperature = samp->temperature;
  o.top_k = samp->top_k;
  o.top_p = samp->top_p;
  for (int r = 0; r < n && rc == 0; r++) {
    o.seed = r + 1;
    for (int i = 0; i < P; i++)
      prompt[i] = (int32_t)(ask_rng_next(rng) % (uint64_t)V);
    rc = as_gen_add(g, prompt, P, &o, &id, err, errlen);
  }
  free(prompt);
  char *seen = calloc((size_t)n + 1, 1);
  if (seen == NULL)
    return AS_ENOMEM;
  int64_t base = id - n + 1; /* ids are consecutive */
  while (rc == 0 && as_gen_active(g) > 0) {
    const as_gen_event_t *ev;
    int ne;
    if ((rc = as_gen_step(g, &ev, &ne, err, errlen)) != 0)
      break;
    if (started == n) {
      steps++;
      toks += ne;
    }
    for (int e = 0; e < ne && started < n; e++) {
      int64_t k = ev[e].id - base;
      if (k >= 0 && k < n && !seen[k]) {
        seen[k] = 1;
        if (++started == n)
          t0 = as__bnow();
      }
    }
  }
  free(seen);
  double dt = as__bnow() - t0;
  if (tok_s != NULL)
    *tok_s = rc == 0 && dt > 0 ? (double)toks / dt : 0;
  if (step_ms != NULL)
    *step_ms = rc == 0 && steps > 0 ? dt * 1e3 / steps : 0;
  return rc;
}

static int as__cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int as__cli_bench_llm(int argc, char **argv) {
  const char *dir = NULL, *device = "cpu";
  int batch[AS_BENCH_MAX_LIST] = {1, 8, 32, 128, 256}, nb = 5;
  int ttft[AS_BENCH_MAX_LIST] = {128, 2048}, nt = 2;
  int P = 128, news = 256;
  long long kv_tokens = 0;
  as_gen_opts_t samp; /* --temperature, --top-k, --top-p (greedy by default) */
  char err[512];
  char *end;
  as_model_t *m = NULL;
  as_gen_t *g = NULL;
  int rc = 1;

  as_gen_opts_init(&samp);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      as__bbad("", NULL);
      return 0;
    }
    if (a[0] != '-') {
      if (dir != NULL)
        return as__bbad("unexpected argument ", a);
      dir = a;
      continue;
    }
    if (i + 1 >= argc)
      return as__bbad("a value is missing after ", a);
    const char *v = argv[++i];
    if (strcmp(a, "--device") == 0)
      device = v;
    else if (strcmp(a, "--batch") == 0 && (nb = as__blist(v, batch)) > 0)
      continue;
    else if (strcmp(a, "--ttft") == 0 && strcmp(v, "none") == 0)
      nt = 0;
    else if (strcmp(a, "--ttft") == 0 && (nt = as__blist(v, ttft)) > 0)
      continue;
    else if (strcmp(a, "--prompt-tokens") == 0 && (P = atoi(v)) > 0)
      continue;
    else if (strcmp(a, "--new-tokens") == 0 && (news = atoi(v)) > 0)
      continue;
    else if (strcmp(a, "--kv-tokens") == 0 && (kv_tokens = atoll(v)) > 0)
      continue;
    else if (strcmp(a, "--temperature") == 0 && (samp.temperature = strtof(v, &end)) >= 0 &&
             *end == '\0')
      continue;
    else if (strcmp(a, "--top-k") == 0 && (samp.top_k = (int)strtol(v, &end, 10)) >= 0 &&
             *end == '\0')
      continue;
    else if (strcmp(a, "--top-p") == 0 && (samp.top_p = strtof(v, &end)) > 0 &&
             samp.top_p <= 1 && *end == '\0')
      continue;
    else
      return as__bbad("bad option or value: ", a);
  }
  if (dir == NULL)
    return as__bbad("MODEL_DIR is missing", NULL);

  as_model_opts_t mo = {device};
  if (as_model_open(&m, dir, &mo, err, sizeof err) != 0) {
    fprintf(stderr, "actorserve bench-llm: %s\n", err);
    return 1;
  }
  const as_llm_config_t *c = as_model_config(m);
  int maxb = 1, maxt = 0;
  for (int i = 0; i < nb; i++)
    maxb = batch[i] > maxb ? batch[i] : maxb;
  for (int i = 0; i < nt; i++)
    maxt = ttft[i] > maxt ? ttft[i] : maxt;
  maxt = maxt > 512 ? maxt : 512;
  as_kv_opts_t ko = {(size_t)kv_tokens, maxt + maxb, maxb, 0};
  if (as_gen_new_ex(&g, m, NULL, &ko, err, sizeof err) != 0) {
    fprintf(stderr, "actorserve bench-llm: %s\n", err);
    goto done;
  }
  size_t C = (size_t)c->hidden_size, F = (size_t)c->intermediate_size,
         qd = (size_t)c->num_heads * c->head_dim, kvd = (size_t)c->num_kv_heads * c->head_dim;
  size_t params = (size_t)c->num_layers * (C * (qd + 2 * kvd) + qd * C + 3 * C * F + 2 * C) +
                  (size_t)c->vocab_size * C * (c->tie_word_embeddings ? 1 : 2) + C;
  const char *dname = device;
  printf("{\"bench\": \"info\", \"device\": \"%s\", \"device_info\": \"",
         dname);
  as__json_str(stdout, as_model_device_info(m));
  printf("\", \"model\": \"%s\", \"model_type\": \"%s\", "
         "\"params\": %zu, \"weight_bytes\": %zu, \"kv_tokens\": %zu, \"fused_mlp\": %d}\n",
         dir, c->model_type, params, as_model_weight_bytes(m), as_gen_kv_capacity(g),
         as_model_fused_mlp(m));
  fflush(stdout);

  uint64_t rng = ask_rng_seed(20261125);
  for (int i = 0; i < nb; i++) {
    double tok_s = 0, step_ms = 0;
    char prof[1024];
    if (as__bdecode(g, c->vocab_size, batch[i], P, 8, &samp, &rng, NULL, NULL, err,
                    sizeof err) != 0 ||
        (as_gen_profile(g, prof, sizeof prof, 1), 0) ||
        as__bdecode(g, c->vocab_size, batch[i], P, news, &samp, &rng, &tok_s, &step_ms, err,
                    sizeof err) != 0) {
      printf("{\"bench\": \"decode\", \"batch\": %d, \"error\": \"%s\"}\n", batch[i], err);
      fflush(stdout);
      goto done;
    }
    printf("{\"bench\": \"decode\", \"batch\": %d, \"prompt\": %d, \"new\": %d, \"tok_s\": %.1f, "
           "\"step_ms\": %.3f, \"graphs\": %d, \"pipelined\": %ld",
           batch[i], P, news, tok_s, step_ms, as_gen_graphs(g), as_gen_pipelined(g));
    if (samp.temperature > 0)
      printf(", \"temperature\": %g, \"top_k\": %d, \"top_p\": %g", samp.temperature,
             samp.top_k, samp.top_p);
    printf("}\n");
    if (as_gen_profile(g, prof, sizeof prof, 1)) /* ASK_PROFILE=1: where a step's time goes */
      printf("{\"bench\": \"profile\", \"batch\": %d, \"ops\": %s}\n", batch[i], prof);
    fflush(stdout);
  }
  for (int i = 0; i < nt; i++) {
    double ms[4];
    int32_t *prompt = malloc((size_t)ttft[i] * sizeof *prompt);
    if (prompt == NULL)
      goto done;
    for (int rep = 0; rep < 4; rep++) { /* rep 0: warm-up */
      as_gen_opts_t o;
      int64_t id;
      as_gen_opts_init(&o);
      o.n_stop_ids = 0;
      o.max_new_tokens = 1;
      for (int k = 0; k < ttft[i]; k++)
        prompt[k] = (int32_t)(ask_rng_next(&rng) % (uint64_t)c->vocab_size);
      as_gen_set_step_tokens(g, ttft[i]);
      double t0 = as__bnow();
      int r2 = as_gen_add(g, prompt, ttft[i], &o, &id, err, sizeof err);
      while (r2 == 0 && as_gen_active(g) > 0) {
        const as_gen_event_t *ev;
        int ne;
        r2 = as_gen_step(g, &ev, &ne, err, sizeof err);
      }
      if (r2 != 0) {
        printf("{\"bench\": \"ttft\", \"prompt\": %d, \"error\": \"%s\"}\n", ttft[i], err);
        free(prompt);
        goto done;
      }
      ms[rep] = (as__bnow() - t0) * 1e3;
    }
    free(prompt);
    qsort(ms + 1, 3, sizeof ms[0], as__cmpd);
    printf("{\"bench\": \"ttft\", \"prompt\": %d, \"ms\": %.3f}\n", ttft[i], ms[2]);
    fflush(stdout);
  }
  rc = 0;
done:
  as_gen_free(g);
  as_model_free(m);
  return rc;
}

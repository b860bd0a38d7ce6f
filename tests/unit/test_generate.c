/* test_generate.c — generation over many requests (actors/llm/generate.c)
 * on the fixture models of tests/fixtures/models:
 *   greedy generation through the API equals transformers' greedy
 *   continuations (reference.json) for every decoder fixture;
 *   many requests stepped together (chunked prefill beside decodes, a
 *   request joining late, sampled and greedy mixed) give each the tokens it
 *   gives alone;
 *   max_new_tokens, stop tokens (given, and the model's eos by default) and
 *   stop strings (through a detokenizer callback, and through a real
 *   tokenizer) end requests with the right reason and text;
 *   seeded sampling reproduces; bad requests are refused with messages.
 */
#include <cjson/cJSON.h>

#include "llm.h"
#include "test.h"

#ifndef AS_SOURCE_DIR
#define AS_SOURCE_DIR "."
#endif
#define FIX AS_SOURCE_DIR "/tests/fixtures/models/"

static char err[512];
static const char *decoders[] = {"llama-bf16", "gemma-f32", "qwen2-f16", "qwen2-tied"};

typedef struct ref_s {
  int np;         /* prompts */
  int n[3];       /* prompt lengths */
  int32_t p[3][64];
  int32_t want[3][16]; /* transformers' greedy continuation */
} ref_t;

static int load_ref(const char *model, ref_t *r) {
  char path[512];
  snprintf(path, sizeof path, FIX "%s/reference.json", model);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -1;
  static char buf[1 << 22];
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  cJSON *j = cJSON_ParseWithLength(buf, len);
  const cJSON *prompts = cJSON_GetObjectItem(j, "prompts"), *greedy = cJSON_GetObjectItem(j, "greedy");
  r->np = cJSON_GetArraySize(prompts);
  for (int i = 0; i < r->np && i < 3; i++) {
    const cJSON *pr = cJSON_GetArrayItem(prompts, i), *gr = cJSON_GetArrayItem(greedy, i);
    r->n[i] = cJSON_GetArraySize(pr);
    for (int k = 0; k < r->n[i]; k++)
      r->p[i][k] = (int32_t)cJSON_GetArrayItem(pr, k)->valueint;
    for (int k = 0; k < 16; k++)
      r->want[i][k] = (int32_t)cJSON_GetArrayItem(gr, k)->valueint;
  }
  cJSON_Delete(j);
  return 0;
}

/* What one request produced. */
typedef struct out_s {
  int64_t id;
  int32_t tok[300];
  int n;
  char text[4096];
  size_t tlen;
  int finished;
  char reason[16];
  int stop_str;
  int events;
} out_t;

/* Steps g until every request in outs[0..n) finished; returns steps or -1. */
static int run_all(as_gen_t *g, out_t *outs, int n) {
  int steps = 0;
  while (as_gen_active(g) > 0) {
    const as_gen_event_t *ev;
    int ne;
    if (as_gen_step(g, &ev, &ne, err, sizeof err) != 0) {
      fprintf(stderr, "  step: %s\n", err);
      return -1;
    }
    for (int e = 0; e < ne; e++)
      for (int i = 0; i < n; i++)
        if (outs[i].id == ev[e].id) {
          out_t *o = &outs[i];
          if (o->finished) {
            fprintf(stderr, "  event after the end of request %lld\n", (long long)o->id);
            return -1;
          }
          if (ev[e].text[ev[e].text_len] != '\0' || strlen(ev[e].text) != ev[e].text_len) {
            fprintf(stderr, "  event text is not NUL-terminated at its length\n");
            return -1;
          }
          o->events++;
          if (ev[e].token >= 0)
            o->tok[o->n++] = ev[e].token;
          memcpy(o->text + o->tlen, ev[e].text, ev[e].text_len);
          o->tlen += ev[e].text_len;
          o->text[o->tlen] = '\0';
          if (ev[e].finished) {
            o->finished = 1;
            snprintf(o->reason, sizeof o->reason, "%s", ev[e].finish_reason);
            o->stop_str = ev[e].stop_str;
          }
        }
    if (++steps > 10000)
      return -1;
  }
  return steps;
}

static as_model_t *load_model(const char *name) {
  char dir[512];
  as_model_t *m = NULL;
  snprintf(dir, sizeof dir, FIX "%s", name);
  if (as_model_load(&m, dir, err, sizeof err) != 0)
    return NULL;
  return m;
}

static as_gen_opts_t greedy_opts(int max_new) {
  as_gen_opts_t o;
  as_gen_opts_init(&o);
  o.max_new_tokens = max_new;
  o.n_stop_ids = 0; /* the references ran 16 steps whatever came out */
  return o;
}

TEST(test_greedy_equals_transformers) {
  int checked = 0;
  for (size_t d = 0; d < sizeof decoders / sizeof decoders[0]; d++) {
    ref_t r;
    char dir[512];
    as_gen_t *g;
    if (load_ref(decoders[d], &r) != 0)
      SKIP("fixture reference.json not present");
    as_model_t *m = load_model(decoders[d]);
    if (m == NULL)
      T__FAIL("load %s: %s", decoders[d], err);
    snprintf(dir, sizeof dir, FIX "%s", decoders[d]);
    ASSERT_OK(as_gen_new(&g, m, dir, 0, err, sizeof err));
    for (int p = 0; p < r.np; p++) {
      out_t o = {0};
      as_gen_opts_t opt = greedy_opts(16);
      ASSERT_OK(as_gen_add(g, r.p[p], r.n[p], &opt, &o.id, err, sizeof err));
      ASSERT_GT(run_all(g, &o, 1), 0);
      ASSERT_EQ(o.n, 16);
      for (int k = 0; k < 16; k++)
        if (o.tok[k] != r.want[p][k])
          T__FAIL("%s prompt %d token %d: %d, transformers %d", decoders[d], p, k, o.tok[k],
                  r.want[p][k]);
      ASSERT_STR_EQ(o.reason, "length");
      ASSERT_EQ(o.events, 16);
      checked++;
    }
    as_gen_free(g);
    as_model_free(m);
  }
  printf("  %d continuations of 16 tokens equal transformers' greedy\n", checked);
}

/* The same request run alone (reference for the batched run). */
static void run_alone(const as_model_t *m, const int32_t *p, int n, const as_gen_opts_t *opt,
                      out_t *o) {
  as_gen_t *g;
  memset(o, 0, sizeof *o);
  if (as_gen_new(&g, m, NULL, 0, err, sizeof err) != 0)
    return;
  if (as_gen_add(g, p, n, opt, &o->id, err, sizeof err) == 0)
    run_all(g, o, 1);
  as_gen_free(g);
}

TEST(test_batched_equals_alone) {
  ref_t r;
  if (load_ref("llama-bf16", &r) != 0)
    SKIP("fixture reference.json not present");
  as_model_t *m = load_model("llama-bf16");
  ASSERT_TRUE(m != NULL);
  /* Six requests: the three prompts greedy, and sampled with seeds. */
  as_gen_opts_t opt[6];
  out_t alone[6], batched[6];
  for (int i = 0; i < 6; i++) {
    opt[i] = greedy_opts(i < 3 ? 16 : 20 + i);
    if (i >= 3) {
      opt[i].temperature = 0.9f;
      opt[i].top_k = i == 4 ? 0 : 40;
      opt[i].top_p = i == 5 ? 0.8f : 1.0f;
      opt[i].seed = 100 + i;
    }
    run_alone(m, r.p[i % 3], r.n[i % 3], &opt[i], &alone[i]);
    ASSERT_EQ(alone[i].n, opt[i].max_new_tokens);
  }
  for (int i = 0; i < 3; i++)
    ASSERT_MEM_EQ(alone[i].tok, r.want[i], 16 * sizeof(int32_t));

  as_gen_t *g;
  ASSERT_OK(as_gen_new(&g, m, NULL, 0, err, sizeof err));
  as_gen_set_step_tokens(g, 4); /* prompts go in chunks beside the decodes */
  memset(batched, 0, sizeof batched);
  for (int i = 0; i < 4; i++)
    ASSERT_OK(as_gen_add(g, r.p[i % 3], r.n[i % 3], &opt[i], &batched[i].id, err, sizeof err));
  /* Three steps, then two more requests join. */
  for (int s = 0; s < 3; s++) {
    const as_gen_event_t *ev;
    int ne;
    ASSERT_OK(as_gen_step(g, &ev, &ne, err, sizeof err));
    for (int e = 0; e < ne; e++)
      for (int i = 0; i < 4; i++)
        if (batched[i].id == ev[e].id && ev[e].token >= 0)
          batched[i].tok[batched[i].n++] = ev[e].token;
  }
  for (int i = 4; i < 6; i++)
    ASSERT_OK(as_gen_add(g, r.p[i % 3], r.n[i % 3], &opt[i], &batched[i].id, err, sizeof err));
  ASSERT_EQ(as_gen_active(g), 6);
  ASSERT_GT(run_all(g, batched, 6), 0);
  for (int i = 0; i < 6; i++) {
    ASSERT_EQ(batched[i].n, alone[i].n);
    if (memcmp(batched[i].tok, alone[i].tok, (size_t)alone[i].n * sizeof(int32_t)) != 0)
      T__FAIL("request %d: batched tokens differ from the same request alone", i);
    ASSERT_STR_EQ(batched[i].reason, "length");
  }
  ASSERT_EQ(as_gen_active(g), 0);
  as_gen_free(g);
  as_model_free(m);
}

TEST(test_max_new_tokens) {
  ref_t r;
  as_gen_t *g;
  if (load_ref("qwen2-tied", &r) != 0)
    SKIP("fixture reference.json not present");
  as_model_t *m = load_model("qwen2-tied");
  ASSERT_TRUE(m != NULL);
  ASSERT_OK(as_gen_new(&g, m, NULL, 0, err, sizeof err));
  out_t o[3];
  memset(o, 0, sizeof o);
  as_gen_opts_t a = greedy_opts(5), b = greedy_opts(0), c = greedy_opts(1);
  ASSERT_OK(as_gen_add(g, r.p[1], r.n[1], &a, &o[0].id, err, sizeof err));
  ASSERT_OK(as_gen_add(g, r.p[2], r.n[2], &b, &o[1].id, err, sizeof err));
  ASSERT_OK(as_gen_add(g, r.p[0], r.n[0], &c, &o[2].id, err, sizeof err));
  ASSERT_GT(run_all(g, o, 3), 0);
  ASSERT_EQ(o[0].n, 5);
  ASSERT_MEM_EQ(o[0].tok, r.want[1], 5 * sizeof(int32_t));
  ASSERT_STR_EQ(o[0].reason, "length");
  ASSERT_EQ(o[1].n, 0); /* nothing to generate: one event, no token */
  ASSERT_EQ(o[1].events, 1);
  ASSERT_STR_EQ(o[1].reason, "length");
  ASSERT_EQ(o[2].n, 1);
  ASSERT_EQ(o[2].tok[0], r.want[0][0]);
  /* max_position_embeddings (256) bounds prompt + generated tokens. */
  int32_t longp[250];
  for (int i = 0; i < 250; i++)
    longp[i] = (int32_t)(1 + i % 500);
  out_t l = {0};
  as_gen_opts_t big = greedy_opts(100);
  ASSERT_OK(as_gen_add(g, longp, 250, &big, &l.id, err, sizeof err));
  ASSERT_GT(run_all(g, &l, 1), 0);
  ASSERT_EQ(l.n, 6);
  ASSERT_STR_EQ(l.reason, "length");
  as_gen_free(g);
  as_model_free(m);
}

TEST(test_stop_tokens) {
  ref_t r;
  as_gen_t *g;
  if (load_ref("qwen2-tied", &r) != 0)
    SKIP("fixture reference.json not present");
  as_model_t *m = load_model("qwen2-tied");
  ASSERT_TRUE(m != NULL);
  ASSERT_OK(as_gen_new(&g, m, FIX "qwen2-tied", 0, err, sizeof err));
  const int32_t *eos;
  ASSERT_EQ(as_gen_eos_ids(g, &eos), 1); /* generation_config.json */
  ASSERT_EQ(eos[0], 2);
  int stopped_at[3];
  for (int p = 0; p < r.np; p++) {
    /* Stop at the first greedy token past 3 that was not seen before. */
    int k = 3;
    for (; k < 16; k++) {
      int seen = 0;
      for (int j = 0; j < k; j++)
        seen |= r.want[p][j] == r.want[p][k];
      if (!seen)
        break;
    }
    ASSERT_LT(k, 16);
    stopped_at[p] = k;
    int32_t stops[2] = {3, r.want[p][k]};
    as_gen_opts_t o = greedy_opts(16);
    o.stop_ids = stops;
    o.n_stop_ids = 2;
    out_t out = {0};
    ASSERT_OK(as_gen_add(g, r.p[p], r.n[p], &o, &out.id, err, sizeof err));
    ASSERT_GT(run_all(g, &out, 1), 0);
    ASSERT_EQ(out.n, k + 1); /* the stop token is reported, as transformers keeps it */
    ASSERT_EQ(out.tok[k], r.want[p][k]);
    ASSERT_MEM_EQ(out.tok, r.want[p], (size_t)k * sizeof(int32_t));
    ASSERT_STR_EQ(out.reason, "stop");
    ASSERT_EQ(out.stop_str, -1);
  }
  as_gen_free(g);
  /* The default stop ids: generation_config.json's eos_token_id (a list
   * here, naming a token the model does say). */
  char dir[] = "/tmp/as_test_gen_XXXXXX", path[600];
  ASSERT_TRUE(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/generation_config.json", dir);
  FILE *f = fopen(path, "w");
  fprintf(f, "{\"eos_token_id\": [3, %d], \"do_sample\": true, \"top_p\": 0.9}",
          (int)r.want[0][stopped_at[0]]);
  fclose(f);
  ASSERT_OK(as_gen_new(&g, m, dir, 0, err, sizeof err));
  ASSERT_EQ(as_gen_eos_ids(g, &eos), 2);
  as_gen_opts_t o;
  as_gen_opts_model(g, &o); /* do_sample: temperature 1, top_k 50 (GenerationConfig), top_p */
  ASSERT_TRUE(o.temperature == 1.0f && o.top_k == 50 && o.top_p == 0.9f);
  as_gen_opts_init(&o);
  o.max_new_tokens = 16;
  out_t d = {0};
  ASSERT_OK(as_gen_add(g, r.p[0], r.n[0], &o, &d.id, err, sizeof err));
  ASSERT_GT(run_all(g, &d, 1), 0);
  ASSERT_EQ(d.n, stopped_at[0] + 1);
  ASSERT_STR_EQ(d.reason, "stop");
  as_gen_free(g);
  unlink(path);
  rmdir(dir);
  as_model_free(m);
}

/* A detokenizer callback: token t reads "<t>"; counts the final calls. */
static int flushes;
static int fake_detok(void *ud, int64_t req, const int32_t *ids, size_t n, as_buf_t *out) {
  (void)ud;
  (void)req;
  if (ids == NULL) {
    flushes++;
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    if (as_buf_appendf(out, "<%d>", (int)ids[i]) != 0)
      return AS_ENOMEM;
  return 0;
}

TEST(test_stop_strings_callback) {
  ref_t r;
  as_gen_t *g;
  if (load_ref("llama-bf16", &r) != 0)
    SKIP("fixture reference.json not present");
  as_model_t *m = load_model("llama-bf16");
  ASSERT_TRUE(m != NULL);
  ASSERT_OK(as_gen_new(&g, m, NULL, 0, err, sizeof err));
  const int32_t *w = r.want[1]; /* 490, 26, 268, 4, 490, 481, ... */
  char full[512] = "", s1[64], s2[64], s3[64], expect[512] = "";
  for (int k = 0; k < 16; k++)
    snprintf(full + strlen(full), sizeof full - strlen(full), "<%d>", (int)w[k]);
  /* s1 spans tokens 0 and 1: nothing may come out before it. */
  snprintf(s1, sizeof s1, "<%d><%d", (int)w[0], (int)w[1]);
  /* s2 is token 5's text alone: tokens 0..4 come out. */
  snprintf(s2, sizeof s2, "%d>", (int)w[5]);
  /* s3 starts like a real token's text but never matches. */
  snprintf(s3, sizeof s3, "<%d>!", (int)w[0]);
  const char *only1[] = {s1}, *only2[] = {s3, s2}, *never[] = {s3};
  struct {
    const char *const *stops;
    int n, ntok, stop_str;
    const char *reason;
  } cases[] = {{only1, 1, 2, 0, "stop"}, {only2, 2, 6, 1, "stop"}, {never, 1, 16, -1, "length"}};
  for (int c = 0; c < 3; c++) {
    as_gen_opts_t o = greedy_opts(16);
    o.stop_strs = cases[c].stops;
    o.n_stop_strs = cases[c].n;
    o.detok = fake_detok;
    out_t out = {0};
    flushes = 0;
    ASSERT_OK(as_gen_add(g, r.p[1], r.n[1], &o, &out.id, err, sizeof err));
    ASSERT_GT(run_all(g, &out, 1), 0);
    ASSERT_EQ(out.n, cases[c].ntok);
    ASSERT_STR_EQ(out.reason, cases[c].reason);
    ASSERT_EQ(out.stop_str, cases[c].stop_str);
    ASSERT_EQ(flushes, 1); /* the callback heard the end once */
    /* Expected text: everything up to where the stop string starts. */
    const char *at = cases[c].stop_str >= 0 ? strstr(full, cases[c].stops[cases[c].stop_str]) : NULL;
    size_t keep = at != NULL ? (size_t)(at - full) : strlen(full);
    memcpy(expect, full, keep);
    expect[keep] = '\0';
    ASSERT_STR_EQ(out.text, expect);
  }
  /* Stop strings without any text are refused. */
  as_gen_opts_t o = greedy_opts(4);
  int64_t id;
  o.stop_strs = only1;
  o.n_stop_strs = 1;
  ASSERT_EQ(as_gen_add(g, r.p[0], r.n[0], &o, &id, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "stop strings") != NULL);
  as_gen_free(g);
  as_model_free(m);
}

/* The convenience path: a real tokenizer's incremental detokenizer (the
 * llama2 fixture tokenizer; ids < 512 are valid in it) gives the text. */
TEST(test_text_with_tokenizer) {
  ref_t r;
  as_gen_t *g;
  as_tokenizer_t *tok;
  if (load_ref("llama-bf16", &r) != 0)
    SKIP("fixture reference.json not present");
  if (as_tokenizer_load(AS_SOURCE_DIR "/tests/fixtures/tokenizers/llama2", &tok, err,
                        sizeof err) != 0)
    SKIP("llama2 fixture tokenizer not present");
  as_model_t *m = load_model("llama-bf16");
  ASSERT_TRUE(m != NULL);
  ASSERT_OK(as_gen_new(&g, m, NULL, 0, err, sizeof err));
  for (int p = 0; p < r.np; p++) {
    as_buf_t want;
    as_buf_init(&want);
    ASSERT_OK(as_tokenizer_decode(tok, r.want[p], 16, 1, &want));
    as_gen_opts_t o = greedy_opts(16);
    o.tok = tok;
    out_t out = {0};
    ASSERT_OK(as_gen_add(g, r.p[p], r.n[p], &o, &out.id, err, sizeof err));
    ASSERT_GT(run_all(g, &out, 1), 0);
    ASSERT_EQ(out.tlen, want.len);
    ASSERT_MEM_EQ(out.text, want.data, want.len);
    /* A stop string from the middle of that text cuts it there. */
    if (want.len >= 8) {
      char stop[8];
      memcpy(stop, want.data + want.len / 2, 3);
      stop[3] = '\0';
      const char *stops[] = {stop};
      o.stop_strs = stops;
      o.n_stop_strs = 1;
      out_t cut = {0};
      ASSERT_OK(as_gen_add(g, r.p[p], r.n[p], &o, &cut.id, err, sizeof err));
      ASSERT_GT(run_all(g, &cut, 1), 0);
      ASSERT_STR_EQ(cut.reason, "stop");
      char *first = memmem(want.data, want.len, stop, 3);
      ASSERT_TRUE(first != NULL);
      ASSERT_EQ(cut.tlen, (size_t)(first - want.data));
      ASSERT_MEM_EQ(cut.text, want.data, cut.tlen);
      ASSERT_LE(cut.n, 16);
    }
    as_buf_free(&want);
  }
  as_gen_free(g);
  as_model_free(m);
  as_tokenizer_free(tok);
}

TEST(test_seeded_sampling) {
  ref_t r;
  if (load_ref("qwen2-f16", &r) != 0)
    SKIP("fixture reference.json not present");
  as_model_t *m = load_model("qwen2-f16");
  ASSERT_TRUE(m != NULL);
  as_gen_opts_t o = greedy_opts(32);
  o.temperature = 1.5f; /* a flat distribution: different seeds soon differ */
  o.top_k = 100;
  o.top_p = 0.95f;
  out_t a, b, c;
  o.seed = 7;
  run_alone(m, r.p[1], r.n[1], &o, &a);
  run_alone(m, r.p[1], r.n[1], &o, &b);
  o.seed = 8;
  run_alone(m, r.p[1], r.n[1], &o, &c);
  ASSERT_EQ(a.n, 32);
  ASSERT_MEM_EQ(a.tok, b.tok, 32 * sizeof(int32_t));
  ASSERT_TRUE(memcmp(a.tok, c.tok, 32 * sizeof(int32_t)) != 0);
  ASSERT_TRUE(memcmp(a.tok, r.want[1], 16 * sizeof(int32_t)) != 0); /* it did sample */
  /* The model's own defaults: generation_config.json has no do_sample. */
  as_gen_t *g;
  as_gen_opts_t d;
  ASSERT_OK(as_gen_new(&g, m, FIX "qwen2-f16", 0, err, sizeof err));
  as_gen_opts_model(g, &d);
  ASSERT_TRUE(d.temperature <= 0.0f);
  as_gen_free(g);
  as_model_free(m);
}

TEST(test_errors) {
  as_gen_t *g;
  int64_t id;
  as_model_t *m = load_model("llama-bf16");
  if (m == NULL)
    SKIP("fixture not present");
  ASSERT_OK(as_gen_new(&g, m, NULL, 0, err, sizeof err));
  int32_t bad[2] = {1, 512}, ok[1] = {1}, many[300] = {0};
  ASSERT_EQ(as_gen_add(g, bad, 2, NULL, &id, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "512") != NULL);
  ASSERT_EQ(as_gen_add(g, ok, 0, NULL, &id, err, sizeof err), AS_EINVAL);
  ASSERT_EQ(as_gen_add(g, many, 300, NULL, &id, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "max_position_embeddings") != NULL);
  ASSERT_EQ(as_gen_active(g), 0);
  ASSERT_OK(as_gen_add(g, ok, 1, NULL, &id, err, sizeof err));
  ASSERT_OK(as_gen_cancel(g, id));
  ASSERT_EQ(as_gen_cancel(g, id), AS_ENOTFOUND);
  ASSERT_EQ(as_gen_active(g), 0);
  as_gen_free(g);
  /* A full cache is an error of the step, and nothing is lost. */
  ASSERT_OK(as_gen_new(&g, m, NULL, 8, err, sizeof err));
  as_gen_opts_t o = greedy_opts(20);
  int32_t p[6] = {1, 2, 3, 4, 5, 6};
  ASSERT_OK(as_gen_add(g, p, 6, &o, &id, err, sizeof err));
  const as_gen_event_t *ev;
  int ne, rc = 0, steps = 0;
  while (rc == 0 && steps++ < 30)
    rc = as_gen_step(g, &ev, &ne, err, sizeof err);
  ASSERT_EQ(rc, AS_EFULL);
  ASSERT_EQ(as_gen_active(g), 1);
  ASSERT_OK(as_gen_cancel(g, id));
  as_gen_free(g);
  as_model_free(m);
  /* Encoders do not generate. */
  ASSERT_TRUE((m = load_model("bert-f32")) != NULL);
  ASSERT_EQ(as_gen_new(&g, m, NULL, 0, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "encoder") != NULL);
  as_model_free(m);
}

/* Runs as_llm_cli with stdout into a file; returns its status and the
 * output in out. */
static int run_cli(char **argv, int argc, char *out, size_t cap) {
  char path[] = "/tmp/as_test_cli_XXXXXX";
  int fd = mkstemp(path), saved = dup(1), rc;
  fflush(stdout);
  dup2(fd, 1);
  rc = as_llm_cli(argc, argv);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, out, cap - 1);
  out[n > 0 ? n : 0] = '\0';
  close(fd);
  unlink(path);
  return rc;
}

TEST(test_cli) {
  ref_t r;
  char out[8192], want[512] = "";
  if (load_ref("llama-bf16", &r) != 0)
    SKIP("fixture reference.json not present");
  /* A folder without tokenizer.json: ids in, ids out. */
  char *gen[] = {"generate", FIX "llama-bf16", "--ids", "1,17,300,42,7", "--max-new-tokens",
                 "16", "--ignore-eos"};
  ASSERT_EQ(run_cli(gen, 7, out, sizeof out), 0);
  for (int k = 0; k < 16; k++)
    snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", k ? " " : "",
             (int)r.want[1][k]);
  strcat(want, "\n");
  ASSERT_STR_EQ(out, want);
  char *text[] = {"generate", FIX "llama-bf16", "hello"}; /* text needs a tokenizer */
  ASSERT_EQ(run_cli(text, 3, out, sizeof out), 1);
  char *bench[] = {"generate", FIX "llama-bf16", "--bench", "--bench-prompt-tokens", "8",
                   "--max-new-tokens", "4", "--bench-repeat", "1"};
  ASSERT_EQ(run_cli(bench, 9, out, sizeof out), 0);
  cJSON *j = cJSON_Parse(out);
  ASSERT_TRUE(j != NULL);
  ASSERT_EQ(cJSON_GetObjectItem(j, "prompt_tokens")->valueint, 8);
  ASSERT_EQ(cJSON_GetObjectItem(j, "new_tokens")->valueint, 4);
  cJSON_Delete(j);
  char *bad1[] = {"generate", FIX "llama-bf16", "--ids", "1", "--top-p", "2"};
  ASSERT_EQ(run_cli(bad1, 6, out, sizeof out), 2);
  char *bad2[] = {"generate", FIX "llama-bf16", "--ids", "1,x"};
  ASSERT_EQ(run_cli(bad2, 4, out, sizeof out), 2);
  char *emb[] = {"embed", FIX "llama-bf16", "text"}; /* a decoder does not embed */
  ASSERT_EQ(run_cli(emb, 3, out, sizeof out), 1);
  char *emb2[] = {"embed", FIX "bert-f32", "text"}; /* no tokenizer */
  ASSERT_EQ(run_cli(emb2, 3, out, sizeof out), 1);
  char *other[] = {"frobnicate"};
  ASSERT_EQ(run_cli(other, 1, out, sizeof out), 2);
}

TEST_MAIN(test_greedy_equals_transformers, test_batched_equals_alone, test_max_new_tokens,
          test_stop_tokens, test_stop_strings_callback, test_text_with_tokenizer,
          test_seeded_sampling, test_errors, test_cli)

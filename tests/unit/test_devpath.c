/* test_devpath.c — the engine's device path (dmodel.c, forward_dev.c, the
 * paged KV cache of kvcache.c) on "refdev": the same code the GPU runs,
 * with host memory and the plain-C twins of the device kernels.
 *
 *   logits:  every prompt position of each fixture model against the CPU
 *            path (f32) and transformers (tests/fixtures): the device path
 *            rounds weights and the KV cache to bf16, so the bound is
 *            3e-2 * max(1, max |logit|) (measured: printed per model);
 *   greedy:  16 tokens through as_gen (device sampling, captured decode
 *            steps) equal to transformers' wherever the reference's top-1
 *            margin exceeds the bf16 error measured on that model, and on
 *            the shipped tiny-kjv model (bf16 weights) 64 tokens equal to
 *            the CPU path;
 *   graphs:  decode steps replayed from captured op lists give bit-for-bit
 *            the tokens of steps run directly (ASK_NO_GRAPHS=1), for
 *            greedy and seeded sampling, with requests joining and leaving;
 *   paging:  a full pool refuses a step with AS_EFULL and changes nothing;
 *            pages come back on free and truncate and are reused without
 *            changing any result.
 * AS_TEST_DEVICE=cuda runs the same on a GPU (tests/gpu/run.sh), where
 * exact equalities become tolerances (each says which); AS_SOURCE_DIR
 * points at the repository when the binary runs from elsewhere.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "llm.h"
#include "fixture_json.h"
#include "kernel_data.h"
#include "test.h"

#ifndef AS_SOURCE_DIR
#define AS_SOURCE_DIR "."
#endif

static char err[512];
static char FIXBUF[600], KJVBUF[600];
static const char *DEV = "refdev"; /* AS_TEST_DEVICE: refdev, or cuda on a GPU machine */

/* The source tree: $AS_SOURCE_DIR (the GPU check script runs this binary
 * from a copy of the repository elsewhere), else where it was built. */
static void paths(void) {
  const char *src = getenv("AS_SOURCE_DIR"), *dev = getenv("AS_TEST_DEVICE");
  if (src == NULL || src[0] == '\0')
    src = AS_SOURCE_DIR;
  if (dev != NULL && dev[0] != '\0')
    DEV = dev;
  /* The fused MLP adds in no fixed order on a GPU (atomic adds), and these
   * tests want equal bits: only test_fused_mlp turns it on, whatever the
   * environment of the run says (tests/gpu/run.sh under a chosen setting). */
  unsetenv("ASK_FUSE_MLP");
  snprintf(FIXBUF, sizeof FIXBUF, "%s/tests/fixtures/models/", src);
  snprintf(KJVBUF, sizeof KJVBUF, "%s/models/tiny-kjv", src);
}
#define FIX FIXBUF
#define KJV KJVBUF

/* Skips when the device under test cannot be used (cuda without a GPU). */
#define NEED_DEVICE()                                                        \
  do {                                                                       \
    paths();                                                                 \
    const char *t__why;                                                      \
    if (ask_backend(DEV, &t__why) == NULL) {                                 \
      char t__msg[700];                                                      \
      snprintf(t__msg, sizeof t__msg, "device %s cannot be used: %s", DEV, t__why); \
      SKIP(t__msg);                                                          \
    }                                                                        \
  } while (0)

/* The model at dir on device, or NULL with the reason in err (the callers
 * fail the test on NULL: forked tests, so nothing leaks past a failure). */
static as_model_t *open_on(const char *dir, const char *device) {
  as_model_t *m = NULL;
  as_model_opts_t o = {device};
  if (as_model_open(&m, dir, &o, err, sizeof err) != 0) {
    fprintf(stderr, "open %s on %s: %s\n", dir, device, err);
    exit(1);
  }
  return m;
}

static cJSON *load_ref(const char *model) {
  char path[800];
  snprintf(path, sizeof path, "%s%s/reference.json", FIX, model);
  return fixture_json(path);
}

/* *margin: the logit of token `want` minus that of `got` after the n
 * tokens of prompt and the i of prefix, on model m: by how much m prefers
 * want there (a near tie when it is within the measured logit error). */
static void margin_at(as_model_t *m, const int32_t *prompt, int n, const int32_t *prefix, int i,
                      int want, int got, double *margin) {
  int V = as_model_config(m)->vocab_size;
  int32_t *seq = malloc((size_t)(n + i) * sizeof *seq);
  float *lg = malloc((size_t)V * sizeof *lg);
  as_kv_t *k;
  memcpy(seq, prompt, (size_t)n * sizeof *seq);
  memcpy(seq + n, prefix, (size_t)i * sizeof *seq);
  ASSERT_OK(as_kv_new(&k, m, (size_t)(n + i) + 16)); /* not 0: a device's whole memory */
  ASSERT_OK(as_kv_seq_new(k, 0));
  as_fwd_seq_t s = {0, seq, n + i};
  ASSERT_OK(as_model_forward(m, k, &s, 1, lg, 0, err, sizeof err));
  *margin = (double)lg[want] - (double)lg[got];
  as_kv_free(k);
  free(seq);
  free(lg);
}

/* Logits of every position of each prompt on refdev against the CPU path
 * and the reference; greedy through as_gen against the reference where
 * the reference's margin is clear of the measured error. */
static void check_model(const char *name) {
  char dir[700];
  NEED_DEVICE();
  cJSON *ref = load_ref(name);
  if (ref == NULL)
    SKIP("fixture reference.json not present");
  snprintf(dir, sizeof dir, "%s%s", FIX, name);
  as_model_t *cpu = open_on(dir, "cpu"), *dev = open_on(dir, DEV);
  int V = as_model_config(cpu)->vocab_size;
  as_kv_t *kc, *kd;
  ASSERT_OK(as_kv_new(&kc, cpu, 0));
  ASSERT_OK(as_kv_new(&kd, dev, 4096));
  ASSERT_EQ(as_kv_capacity(kd), 4096);
  const cJSON *prompts = cJSON_GetObjectItem(ref, "prompts");
  const cJSON *greedy = cJSON_GetObjectItem(ref, "greedy");
  float *a = malloc((size_t)64 * V * sizeof(float)), *b = malloc((size_t)64 * V * sizeof(float));
  double worst = 0, scale = 1;
  int np = cJSON_GetArraySize(prompts), checked = 0, ties = 0;
  for (int p = 0; p < np; p++) {
    const cJSON *pr = cJSON_GetArrayItem(prompts, p);
    int n = cJSON_GetArraySize(pr);
    int32_t tok[64];
    for (int i = 0; i < n; i++)
      tok[i] = cJSON_GetArrayItem(pr, i)->valueint;
    ASSERT_OK(as_kv_seq_new(kc, p));
    ASSERT_OK(as_kv_seq_new(kd, p));
    as_fwd_seq_t s = {p, tok, n};
    if (as_model_forward(cpu, kc, &s, 1, a, 1, err, sizeof err) != 0 ||
        as_model_forward(dev, kd, &s, 1, b, 1, err, sizeof err) != 0)
      T__FAIL("forward: %s", err);
    for (size_t i = 0; i < (size_t)n * V; i++) {
      if (fabs(a[i]) > scale)
        scale = fabs(a[i]);
      if (!(fabs(a[i] - b[i]) <= worst))
        worst = fabs(a[i] - b[i]);
    }
    ASSERT_EQ(as_kv_seq_len(kd, p), n);
  }
  if (!(worst <= 3e-2 * scale))
    T__FAIL("%s: device logits differ from the CPU path by %.3g (scale %.3g)", name, worst,
            scale);

  /* Greedy through the generator, 16 tokens per prompt. */
  as_gen_t *g;
  ASSERT_OK(as_gen_new(&g, dev, NULL, 4096, err, sizeof err));
  for (int p = 0; p < np; p++) {
    const cJSON *pr = cJSON_GetArrayItem(prompts, p), *want = cJSON_GetArrayItem(greedy, p);
    int n = cJSON_GetArraySize(pr), ng = cJSON_GetArraySize(want);
    int32_t tok[64], got[64];
    int ngot = 0;
    int64_t id;
    as_gen_opts_t o;
    for (int i = 0; i < n; i++)
      tok[i] = cJSON_GetArrayItem(pr, i)->valueint;
    as_gen_opts_init(&o);
    o.n_stop_ids = 0;
    o.max_new_tokens = ng;
    ASSERT_OK(as_gen_add(g, tok, n, &o, &id, err, sizeof err));
    while (as_gen_active(g) > 0) {
      const as_gen_event_t *ev;
      int ne;
      if (as_gen_step(g, &ev, &ne, err, sizeof err) != 0)
        T__FAIL("step: %s", err);
      for (int e = 0; e < ne; e++)
        if (ev[e].token >= 0)
          got[ngot++] = ev[e].token;
    }
    ASSERT_EQ(ngot, ng);
    /* Compare up to the first difference; there the CPU path must show a
     * near tie (margin within the measured bf16 error), else it is a bug. */
    for (int i = 0; i < ng; i++) {
      int w = cJSON_GetArrayItem(want, i)->valueint;
      if (got[i] == w) {
        checked++;
        continue;
      }
      double margin;
      margin_at(cpu, tok, n, got, i, w, got[i], &margin);
      if (!(margin <= 2 * worst))
        T__FAIL("%s prompt %d token %d: device %d, transformers %d, CPU margin %.3g > 2 x "
                "measured error %.3g",
                name, p, i, got[i], w, margin, worst);
      ties++;
      break;
    }
  }
  printf("  %s: %s vs CPU max |logit diff| %.3g (scale %.3g); greedy %d tokens equal to "
         "transformers, %d bf16 ties\n",
         name, DEV, worst, scale, checked, ties);
  as_gen_free(g);
  as_kv_free(kc);
  as_kv_free(kd);
  as_model_free(cpu);
  as_model_free(dev);
  free(a);
  free(b);
  cJSON_Delete(ref);
}

TEST(test_llama_bf16) { check_model("llama-bf16"); }
TEST(test_gemma_f32) { check_model("gemma-f32"); }
TEST(test_qwen2_f16_sharded) { check_model("qwen2-f16"); }
TEST(test_qwen2_tied_mqa) { check_model("qwen2-tied"); }

/* A test request's options: news tokens, no stop token, seeded sampling
 * (top-k 40, top-p 0.9) when temperature > 0. */
static as_gen_opts_t req_opts(int news, float temperature, int64_t seed) {
  as_gen_opts_t o;
  as_gen_opts_init(&o);
  o.n_stop_ids = 0;
  o.max_new_tokens = news;
  o.temperature = temperature;
  o.top_k = temperature > 0 ? 40 : 0;
  o.top_p = temperature > 0 ? 0.9f : 1.0f;
  o.seed = seed;
  return o;
}

/* Runs the requests (prompt lengths plen, each with its own options) on
 * generator g: request r joins at step join[r]; returns tokens in out
 * (nreq rows of `news`). */
static void run_reqs(as_gen_t *g, int nreq, const int *plen, const int *join, int news,
                     float temperature, int32_t *out) {
  int64_t ids[16];
  int nout[16] = {0}, added = 0, step = 0;
  for (int r = 0; r < 16; r++)
    ids[r] = -1; /* not added yet */
  uint64_t rng = ask_rng_seed(99);
  while (added < nreq || as_gen_active(g) > 0) {
    for (int r = 0; r < nreq; r++)
      if (join[r] == step) {
        int32_t prompt[200];
        for (int i = 0; i < plen[r]; i++)
          prompt[i] = (int32_t)(ask_rng_next(&rng) % 4000) + 10;
        as_gen_opts_t o = req_opts(news, temperature, 1000 + r);
        ASSERT_OK(as_gen_add(g, prompt, plen[r], &o, &ids[r], err, sizeof err));
        added++;
      }
    const as_gen_event_t *ev;
    int ne;
    if (as_gen_step(g, &ev, &ne, err, sizeof err) != 0)
      T__FAIL("step: %s", err);
    for (int e = 0; e < ne; e++)
      for (int r = 0; r < nreq; r++)
        if (ids[r] >= 0 && ev[e].id == ids[r] && ev[e].token >= 0)
          out[r * news + nout[r]++] = ev[e].token;
    step++;
  }
  for (int r = 0; r < nreq; r++)
    ASSERT_EQ(nout[r], news);
}

/* Captured decode steps against direct ones, and on refdev both against
 * the CPU path for greedy (tiny-kjv has bf16 weights, so only the bf16 KV
 * cache differs; measured equal). */
static void check_graphs(float temperature) {
  enum { N = 6, NEW = 24 };
  int plen[N] = {3, 40, 17, 1, 100, 16}, join[N] = {0, 0, 2, 5, 5, 30};
  int32_t g1[N * NEW], g2[N * NEW];
  NEED_DEVICE();
  as_model_t *m = open_on(KJV, DEV);
  as_gen_t *g;
  ASSERT_OK(as_gen_new(&g, m, NULL, 2048, err, sizeof err));
  run_reqs(g, N, plen, join, NEW, temperature, g1);
  ASSERT_GT(as_gen_graphs(g), 0);
  as_gen_free(g);
  setenv("ASK_NO_GRAPHS", "1", 1);
  ASSERT_OK(as_gen_new(&g, m, NULL, 2048, err, sizeof err));
  run_reqs(g, N, plen, join, NEW, temperature, g2);
  ASSERT_EQ(as_gen_graphs(g), 0);
  as_gen_free(g);
  unsetenv("ASK_NO_GRAPHS");
  for (int i = 0; i < N * NEW; i++)
    if (g1[i] != g2[i])
      T__FAIL("request %d token %d: captured %d, direct %d", i / NEW, i % NEW, g1[i], g2[i]);
  if (temperature <= 0 && strcmp(DEV, "refdev") == 0) {
    as_model_t *c = open_on(KJV, "cpu");
    ASSERT_OK(as_gen_new(&g, c, NULL, 0, err, sizeof err));
    run_reqs(g, N, plen, join, NEW, temperature, g2);
    as_gen_free(g);
    as_model_free(c);
    int same = 0;
    for (int i = 0; i < N * NEW; i++)
      same += g1[i] == g2[i];
    printf("  tiny-kjv greedy, 6 requests joining over 30 steps: refdev %d/%d tokens equal to "
           "the CPU path\n",
           same, N * NEW);
    ASSERT_EQ(same, N * NEW);
  }
  as_model_free(m);
}

/* The pipeline (the default, ASK_PIPELINE=0 turns it off: decode steps
 * queued one ahead of the host, fed on the device) against plain steps: requests all joining at once
 * with different max_new_tokens (the pipeline drains and starts again as
 * each leaves), the same tokens; then, on refdev (whose arithmetic does not
 * depend on the batch), late joins, a request stopping on a stop token
 * while the next step is already queued (its extra token dropped, the
 * others unchanged) and one cancelled in flight. */
static void pipe_run(as_gen_t *g, int nreq, const int *plen, const int *join, const int *news,
                     float temperature, const int32_t *stop, int cancel_at, int32_t *out,
                     int *nout, const char **why) {
  int64_t ids[8];
  int added = 0, step = 0;
  int32_t prompts[8][64];
  uint64_t rng = ask_rng_seed(7);
  for (int r = 0; r < nreq; r++) { /* the same prompts whatever the joins */
    ids[r] = -1, nout[r] = 0, why[r] = NULL;
    for (int i = 0; i < plen[r]; i++)
      prompts[r][i] = (int32_t)(ask_rng_next(&rng) % 4000) + 10;
  }
  while (added < nreq || as_gen_active(g) > 0) {
    for (int r = 0; r < nreq; r++)
      if (join[r] == step) {
        as_gen_opts_t o = req_opts(news[r], temperature, 500 + r);
        o.n_stop_ids = stop != NULL && stop[r] >= 0 ? 1 : 0;
        o.stop_ids = stop != NULL ? &stop[r] : NULL;
        ASSERT_OK(as_gen_add(g, prompts[r], plen[r], &o, &ids[r], err, sizeof err));
        added++;
      }
    if (step == cancel_at && ids[0] >= 0 && why[0] == NULL) {
      ASSERT_OK(as_gen_cancel(g, ids[0]));
      why[0] = "cancelled";
    }
    const as_gen_event_t *ev;
    int ne;
    if (as_gen_step(g, &ev, &ne, err, sizeof err) != 0)
      T__FAIL("step: %s", err);
    for (int e = 0; e < ne; e++)
      for (int r = 0; r < nreq; r++)
        if (ids[r] >= 0 && ev[e].id == ids[r]) {
          if (why[r] != NULL)
            T__FAIL("request %d: an event after it ended (%s)", r, why[r]);
          if (ev[e].token >= 0)
            out[r * 64 + nout[r]++] = ev[e].token;
          if (ev[e].finished)
            why[r] = ev[e].finish_reason;
        }
    step++;
  }
}

static void check_pipeline(float temperature) {
  enum { N = 4 };
  int plen[N] = {5, 30, 12, 1}, join0[N] = {0, 0, 0, 0}, news[N] = {20, 9, 24, 28};
  int32_t a[N * 64], b[N * 64];
  int na[N], nb[N];
  const char *wa[N], *wb[N];
  NEED_DEVICE();
  as_model_t *m = open_on(KJV, DEV);
  as_gen_t *g;
  for (int mode = 0; mode < 2; mode++) {
    if (mode) /* the default: on unless ASK_PIPELINE=0 */
      unsetenv("ASK_PIPELINE");
    else
      setenv("ASK_PIPELINE", "0", 1);
    ASSERT_OK(as_gen_new(&g, m, NULL, 2048, err, sizeof err));
    pipe_run(g, N, plen, join0, news, temperature, NULL, -1, mode ? b : a, mode ? nb : na,
             mode ? wb : wa);
    if (mode)
      printf("  %s, %s: %ld of the steps queued ahead of the host\n", DEV,
             temperature > 0 ? "sampled" : "greedy", as_gen_pipelined(g));
    ASSERT_EQ(as_gen_pipelined(g) > 15, mode);
    as_gen_free(g);
  }
  for (int r = 0; r < N; r++) {
    ASSERT_EQ(na[r], news[r]);
    ASSERT_EQ(nb[r], news[r]);
    for (int i = 0; i < news[r]; i++)
      if (a[r * 64 + i] != b[r * 64 + i])
        T__FAIL("request %d token %d: plain %d, pipelined %d", r, i, a[r * 64 + i],
                b[r * 64 + i]);
  }
  if (strcmp(DEV, "refdev") == 0) {
    /* request 2 stops on its 7th plain token (or where that token first comes) */
    int join[N] = {0, 3, 0, 6};
    int32_t stop[N] = {-1, -1, a[2 * 64 + 6], -1};
    int first = 6;
    for (int i = 0; i < 6; i++)
      if (a[2 * 64 + i] == stop[2]) {
        first = i;
        break;
      }
    setenv("ASK_PIPELINE", "1", 1);
    ASSERT_OK(as_gen_new(&g, m, NULL, 2048, err, sizeof err));
    pipe_run(g, N, plen, join, news, temperature, stop, 10, b, nb, wb);
    ASSERT_GT(as_gen_pipelined(g), 10);
    as_gen_free(g);
    ASSERT_EQ(strcmp(wb[2], "stop"), 0);
    ASSERT_EQ(nb[2], first + 1); /* the stop token is an event, nothing after it */
    ASSERT_EQ(strcmp(wb[0], "cancelled"), 0);
    for (int r = 0; r < N; r++) {
      if (r != 0)
        ASSERT_EQ(nb[r], r == 2 ? first + 1 : news[r]);
      for (int i = 0; i < nb[r]; i++)
        if (a[r * 64 + i] != b[r * 64 + i])
          T__FAIL("request %d token %d: plain %d, pipelined with joins/stop/cancel %d", r, i,
                  a[r * 64 + i], b[r * 64 + i]);
    }
  }
  unsetenv("ASK_PIPELINE");
  as_model_free(m);
}

TEST(test_pipeline_greedy) { check_pipeline(0.0f); }
TEST(test_pipeline_sampled) { check_pipeline(0.8f); }

/* A random-weight Llama-structured model (bf16, tied) of hidden 256, 4
 * heads of 64 (2 kv), intermediate 768 and 2 layers, written into dir:
 * every one-row product's K a multiple of 256 with the same step (U 1), so
 * the CUDA backend's chained kernel takes them (the fixtures' hidden 64
 * and tiny-kjv's 688 do not), and heads of 64 in pairs, which its
 * attention phase takes. 0, or -1 with err set. */
static int write_chain_model(const char *dir, int L) {
  enum { C = 256, NH = 4, NKV = 2, D = 64, F = 768, V = 4096, LMAX = 4 };
  static const char *const ln[] = {"input_layernorm", "post_attention_layernorm"};
  struct {
    char name[64];
    int r, c; /* c 0: a vector of r */
  } t[2 + LMAX * 9];
  if (L < 1 || L > LMAX)
    return snprintf(err, sizeof err, "%d layers: 1 to %d", L, (int)LMAX), -1;
  int n = 0;
  snprintf(t[n].name, 64, "model.embed_tokens.weight"), t[n].r = V, t[n++].c = C;
  snprintf(t[n].name, 64, "model.norm.weight"), t[n].r = C, t[n++].c = 0;
  for (int l = 0; l < L; l++) {
    static const char *const pr[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                      "mlp.down_proj"};
    const int rows[] = {NH * D, NKV * D, NKV * D, C, F, F, C},
              cols[] = {C, C, C, NH * D, C, C, F};
    for (int i = 0; i < 2; i++)
      snprintf(t[n].name, 64, "model.layers.%d.%s.weight", l, ln[i]), t[n].r = C, t[n++].c = 0;
    for (int i = 0; i < 7; i++)
      snprintf(t[n].name, 64, "model.layers.%d.%s.weight", l, pr[i]), t[n].r = rows[i],
                                                                      t[n++].c = cols[i];
  }
  char hdr[8192], path[800];
  size_t off = 0, h = 0;
  h += (size_t)snprintf(hdr + h, sizeof hdr - h, "{");
  for (int i = 0; i < n; i++) {
    size_t bytes = (size_t)t[i].r * (t[i].c ? t[i].c : 1) * 2;
    if (t[i].c)
      h += (size_t)snprintf(hdr + h, sizeof hdr - h,
                            "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%d,%d],\"data_offsets\":"
                            "[%zu,%zu]}",
                            i ? "," : "", t[i].name, t[i].r, t[i].c, off, off + bytes);
    else
      h += (size_t)snprintf(hdr + h, sizeof hdr - h,
                            "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%d],\"data_offsets\":"
                            "[%zu,%zu]}",
                            i ? "," : "", t[i].name, t[i].r, off, off + bytes);
    off += bytes;
  }
  h += (size_t)snprintf(hdr + h, sizeof hdr - h, "}");
  while (h % 8 != 0)
    hdr[h++] = ' ';
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  FILE *f = fopen(path, "wb");
  if (f == NULL)
    return snprintf(err, sizeof err, "%.400s: cannot write", path), -1;
  uint64_t hl = h;
  fwrite(&hl, 8, 1, f);
  fwrite(hdr, 1, h, f);
  uint64_t rng = ask_rng_seed(7);
  for (int i = 0; i < n; i++) {
    size_t k = (size_t)t[i].r * (t[i].c ? t[i].c : 1);
    for (size_t j = 0; j < k; j++) {
      /* norms near 1, products ~ N(0, 0.08) by a sum of uniforms */
      double u = 0;
      for (int q = 0; q < 4; q++)
        u += (double)(ask_rng_next(&rng) >> 11) / 9007199254740992.0 - 0.5;
      uint16_t b = to_bf16(t[i].c ? (float)(u * 0.14) : (float)(1.0 + u * 0.2));
      fwrite(&b, 2, 1, f);
    }
  }
  fclose(f);
  snprintf(path, sizeof path, "%s/config.json", dir);
  f = fopen(path, "w");
  if (f == NULL)
    return snprintf(err, sizeof err, "%.400s: cannot write", path), -1;
  fprintf(f,
          "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
          "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_attention_heads\": %d, "
          "\"num_key_value_heads\": %d, \"head_dim\": %d, \"num_hidden_layers\": %d, "
          "\"vocab_size\": %d, \"hidden_act\": \"silu\", \"rms_norm_eps\": 1e-05, "
          "\"rope_theta\": 10000.0, \"max_position_embeddings\": 512, "
          "\"tie_word_embeddings\": true, \"dtype\": \"bfloat16\", \"bos_token_id\": 1, "
          "\"eos_token_id\": 2}\n",
          C, F, NH, NKV, D, L, V);
  fclose(f);
  return 0;
}

/* Removes the files write_chain_model wrote, and dir. */
static void remove_model(const char *dir) {
  char path[800];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  remove(path);
  snprintf(path, sizeof path, "%s/config.json", dir);
  remove(path);
  rmdir(dir);
}

/* One request of 40 new tokens at batch 1 (captured steps, so every decode
 * step is the one-row path) on model m: greedy, or seeded sampling. */
static void chain_req(as_model_t *m, float temperature, int32_t *out) {
  as_gen_t *g;
  int plen[1] = {9}, join[1] = {0};
  ASSERT_OK(as_gen_new(&g, m, NULL, 1024, err, sizeof err));
  run_reqs(g, 1, plen, join, 40, temperature, out);
  as_gen_free(g);
}

/* The engine's chains of one-row products (attention, o, gate/up, down,
 * the next layer's qkv: gemv_chain) against the same ops one by one
 * (ASK_NO_CHAIN=1), with and without the pipeline: the same tokens. With
 * AS_TEST_DEVICE=cuda the backend is asked for its chained kernel
 * (ASK_CUDA_CHAIN=1) and for the decode attention kernel that the chain's
 * attention phase stands for (ASK_CUDA_ATTN_DECODE=1), and must say the
 * chain is on; on refdev the engine's chain bookkeeping (the residual
 * buffers, the skipped kinds) runs the ops one by one. */
TEST(test_chain_tokens) {
  char dir[] = "/tmp/as-chain-XXXXXX";
  setenv("ASK_CUDA_CHAIN", "1", 1);
  setenv("ASK_CUDA_ATTN_DECODE", "1", 1);
  NEED_DEVICE();
  ASSERT_TRUE(mkdtemp(dir) != NULL);
  if (write_chain_model(dir, 2) != 0)
    T__FAIL("%s", err);
  as_model_t *m = open_on(dir, DEV);
  const ask_ops_t *ops = ask_backend(DEV, NULL);
  if (strcmp(DEV, "cuda") == 0) {
    const char *d = ops->dev->describe != NULL ? ops->dev->describe() : "";
    if (strstr(d, "chained products on") == NULL)
      T__FAIL("the backend does not chain: %s", d);
  }
  for (int sampled = 0; sampled < 2; sampled++) {
    float temp = sampled ? 0.8f : 0.0f;
    int32_t want[40], got[40];
    setenv("ASK_NO_CHAIN", "1", 1);
    chain_req(m, temp, want);
    unsetenv("ASK_NO_CHAIN");
    for (int pipe = 0; pipe < 2; pipe++) {
      setenv("ASK_PIPELINE", pipe ? "1" : "0", 1);
      chain_req(m, temp, got);
      for (int i = 0; i < 40; i++)
        if (got[i] != want[i])
          T__FAIL("%s, pipeline %d, token %d: chained %d, one by one %d",
                  sampled ? "sampled" : "greedy", pipe, i, got[i], want[i]);
    }
    unsetenv("ASK_PIPELINE");
  }
  as_model_free(m);
  remove_model(dir);
  unsetenv("ASK_CUDA_CHAIN");
  unsetenv("ASK_CUDA_ATTN_DECODE");
}

/* ASK_FUSE_MLP=1 (one-row steps run each layer's MLP as one op,
 * norm_matmul_mlp, adding into accumulators that rotate between layers)
 * against the same model without it, on models of two and three layers
 * (the rotation's even and odd cases: with an odd count the last layer has
 * an accumulator of its own).
 * Logits of one-row steps, before and after a 6-row chunk (which takes the
 * separate ops and must leave the accumulators as it found them), and of
 * a second sequence: within 1e-4 of the scale on refdev (whose twin sums
 * the down product in double), 1e-2 on a GPU (atomic adds in any order).
 * Then 40 greedy tokens through captured steps, with and without the
 * pipeline: the model without the switch's tokens, up to a first
 * difference where that model's top-1 margin is within twice the logit
 * error measured above (a near tie; on refdev none is allowed). */
static void check_fused_mlp(int layers) {
  char dir[] = "/tmp/as-mlp-XXXXXX";
  NEED_DEVICE();
  ASSERT_TRUE(mkdtemp(dir) != NULL);
  if (write_chain_model(dir, layers) != 0)
    T__FAIL("%s", err);
  as_model_t *m0 = open_on(dir, DEV);
  setenv("ASK_FUSE_MLP", "1", 1);
  as_model_t *m1 = open_on(dir, DEV);
  unsetenv("ASK_FUSE_MLP");
  ASSERT_EQ(as_model_fused_mlp(m0), 0);
  ASSERT_EQ(as_model_fused_mlp(m1), 1);
  int V = as_model_config(m0)->vocab_size;
  float *a = malloc((size_t)6 * V * sizeof(float)), *b = malloc((size_t)6 * V * sizeof(float));
  as_kv_t *k0, *k1;
  double worst = 0, scale = 1;
  ASSERT_OK(as_kv_new(&k0, m0, 256));
  ASSERT_OK(as_kv_new(&k1, m1, 256));
  /* sequence 1: 5 single tokens, a 6-token chunk, 8 single; sequence 2: 4 single */
  static const int runs[][3] = {{1, 0, 5}, {1, 5, 6}, {1, 11, 8}, {2, 0, 4}};
  int32_t t[19];
  for (int i = 0; i < 19; i++)
    t[i] = 40 + 97 * i % 4000;
  for (int r = 0; r < 4; r++) {
    int seq = runs[r][0], at = runs[r][1], n = runs[r][2], step = n == 6 ? 6 : 1;
    if (at == 0) {
      ASSERT_OK(as_kv_seq_new(k0, seq));
      ASSERT_OK(as_kv_seq_new(k1, seq));
    }
    for (int i = at; i < at + n; i += step) {
      as_fwd_seq_t s = {seq, t + i, step};
      if (as_model_forward(m0, k0, &s, 1, a, 0, err, sizeof err) != 0 ||
          as_model_forward(m1, k1, &s, 1, b, 0, err, sizeof err) != 0)
        T__FAIL("forward: %s", err);
      for (int v = 0; v < V; v++) {
        if (fabs(a[v]) > scale)
          scale = fabs(a[v]);
        if (!(fabs(a[v] - b[v]) <= worst))
          worst = fabs(a[v] - b[v]);
      }
    }
  }
  printf("  fused MLP on %s, %d layers: max |logit diff| %.3g (scale %.3g)\n", DEV, layers, worst,
         scale);
  if (!(worst <= (strcmp(DEV, "refdev") == 0 ? 1e-4 : 1e-2) * scale))
    T__FAIL("the fused MLP's logits differ by %.3g (scale %.3g)", worst, scale);
  as_kv_free(k0);
  as_kv_free(k1);
  int32_t want[40], got[40];
  chain_req(m0, 0.0f, want);
  for (int pipe = 0; pipe < 2; pipe++) {
    setenv("ASK_PIPELINE", pipe ? "1" : "0", 1);
    chain_req(m1, 0.0f, got);
    int i = 0;
    while (i < 40 && got[i] == want[i])
      i++;
    if (i < 40) { /* the margin of the model without it at that token */
      int32_t prompt[9];
      uint64_t rng = ask_rng_seed(99); /* run_reqs's prompt */
      for (int j = 0; j < 9; j++)
        prompt[j] = (int32_t)(ask_rng_next(&rng) % 4000) + 10;
      double margin;
      margin_at(m0, prompt, 9, want, i, want[i], got[i], &margin);
      printf("  fused MLP, pipeline %d: %d/40 greedy tokens equal, then margin %.3g\n", pipe, i,
             margin);
      if (strcmp(DEV, "refdev") == 0 || !(margin <= 2 * worst))
        T__FAIL("pipeline %d, token %d: fused MLP %d, without %d (margin %.3g, error %.3g)",
                pipe, i, got[i], want[i], margin, worst);
    }
  }
  unsetenv("ASK_PIPELINE");
  free(a);
  free(b);
  as_model_free(m0);
  as_model_free(m1);
  remove_model(dir);
}

TEST(test_fused_mlp) {
  check_fused_mlp(2);
  check_fused_mlp(3);
}

TEST(test_graphs_greedy) { check_graphs(0.0f); }
TEST(test_graphs_sampled) { check_graphs(0.8f); }

/* 64 greedy tokens of tiny-kjv against the CPU path: equal on refdev; on a
 * GPU (whose GEMMs round activations to bf16 too) equal up to the first
 * place where the CPU's top-1 margin is within the measured logit error. */
TEST(test_kjv_greedy_64) {
  NEED_DEVICE();
  as_model_t *c = open_on(KJV, "cpu"), *d = open_on(KJV, DEV);
  int plen[1] = {5}, join[1] = {0}, V = as_model_config(c)->vocab_size, same = 0;
  int32_t a[64], b[64], seq[69];
  as_gen_t *g;
  ASSERT_OK(as_gen_new(&g, c, NULL, 0, err, sizeof err));
  run_reqs(g, 1, plen, join, 64, 0, a);
  as_gen_free(g);
  ASSERT_OK(as_gen_new(&g, d, NULL, 1024, err, sizeof err));
  run_reqs(g, 1, plen, join, 64, 0, b);
  as_gen_free(g);
  while (same < 64 && a[same] == b[same])
    same++;
  if (same < 64) {
    /* The error of this device on this text, and the CPU's margin there. */
    uint64_t rng = ask_rng_seed(99); /* run_reqs's prompt */
    float *la = malloc((size_t)69 * V * sizeof(float)), *lb = malloc((size_t)69 * V * sizeof(float));
    as_kv_t *ka, *kb;
    double worst = 0;
    for (int i = 0; i < 5; i++)
      seq[i] = (int32_t)(ask_rng_next(&rng) % 4000) + 10;
    for (int i = 0; i < 64; i++)
      seq[5 + i] = a[i];
    ASSERT_OK(as_kv_new(&ka, c, 0));
    ASSERT_OK(as_kv_new(&kb, d, 1024));
    ASSERT_OK(as_kv_seq_new(ka, 0));
    ASSERT_OK(as_kv_seq_new(kb, 0));
    as_fwd_seq_t s = {0, seq, 69};
    ASSERT_OK(as_model_forward(c, ka, &s, 1, la, 1, err, sizeof err));
    ASSERT_OK(as_model_forward(d, kb, &s, 1, lb, 1, err, sizeof err));
    for (size_t i = 0; i < (size_t)69 * V; i++)
      if (!(fabs(la[i] - lb[i]) <= worst))
        worst = fabs(la[i] - lb[i]);
    const float *row = la + (size_t)(5 + same - 1) * V;
    double margin = row[a[same]] - row[b[same]];
    printf("  tiny-kjv on %s: %d/64 greedy tokens equal to the CPU path, then CPU margin %.3g "
           "(logit error %.3g)\n",
           DEV, same, margin, worst);
    if (strcmp(DEV, "refdev") == 0 || !(margin <= 2 * worst))
      T__FAIL("token %d: %s %d, CPU %d (margin %.3g, error %.3g)", same, DEV, b[same], a[same],
              margin, worst);
    as_kv_free(ka);
    as_kv_free(kb);
    free(la);
    free(lb);
  }
  as_model_free(c);
  as_model_free(d);
}

/* Logits equal: bit for bit on refdev when both came from steps of the same
 * rows (exact = 1), else within 1e-5 of the scale (the CPU GEMM's rounding
 * depends on the number of rows: OpenBLAS picks kernels by shape and CPU);
 * on a GPU within 1e-3 of the scale (cuBLASLt may reduce in another order). */
static void same_logits(const float *a, const float *b, int V, const char *what, int exact) {
  double worst = 0, scale = 1;
  for (int i = 0; i < V; i++) {
    if (fabs(a[i]) > scale)
      scale = fabs(a[i]);
    if (!(fabs(a[i] - b[i]) <= worst))
      worst = fabs(a[i] - b[i]);
  }
  double tol = strcmp(DEV, "refdev") != 0 ? 1e-3 * scale : exact ? 0 : 1e-5 * scale;
  if (!(worst <= tol))
    T__FAIL("%s: logits differ by %.3g (scale %.3g)", what, worst, scale);
}

/* The decode fusions (norm into the following GEMM, the gated activation
 * into the down GEMM) against the separate ops (ASK_NO_FUSE=1): equal on
 * refdev (its twins are the separate steps); on a GPU within 1e-2 of the
 * scale (other rounding order in the fused kernels). 12 rows: the fused
 * matrix-vector path. */
TEST(test_fused_vs_separate) {
  NEED_DEVICE();
  as_model_t *m = open_on(KJV, DEV);
  int V = as_model_config(m)->vocab_size;
  int32_t t[12];
  float *a = malloc((size_t)12 * V * sizeof(float)), *b = malloc((size_t)12 * V * sizeof(float));
  for (int i = 0; i < 12; i++)
    t[i] = 30 + 11 * i;
  for (int pass = 0; pass < 2; pass++) {
    as_kv_t *kv;
    if (pass == 1)
      setenv("ASK_NO_FUSE", "1", 1);
    ASSERT_OK(as_kv_new(&kv, m, 256));
    ASSERT_OK(as_kv_seq_new(kv, 1));
    as_fwd_seq_t s1 = {1, t, 12};
    ASSERT_OK(as_model_forward(m, kv, &s1, 1, pass == 0 ? a : b, 1, err, sizeof err));
    as_kv_free(kv);
  }
  unsetenv("ASK_NO_FUSE");
  double worst = 0, scale = 1;
  for (size_t i = 0; i < (size_t)12 * V; i++) {
    if (fabs(b[i]) > scale)
      scale = fabs(b[i]);
    if (!(fabs(a[i] - b[i]) <= worst))
      worst = fabs(a[i] - b[i]);
  }
  printf("  fused vs separate ops on %s: max |logit diff| %.3g (scale %.3g)\n", DEV, worst, scale);
  if (strcmp(DEV, "refdev") == 0 ? worst != 0 : !(worst <= 1e-2 * scale))
    T__FAIL("fused and separate ops differ by %.3g", worst);
  free(a);
  free(b);
  as_model_free(m);
}

/* Step buffers smaller than the batch (6 tokens, 8 sequences per step):
 * requests wait their turn, captured steps stay within the buffers (ASan
 * checks), and every request completes. */
TEST(test_small_step_buffers) {
  NEED_DEVICE();
  as_model_t *m = open_on(KJV, DEV);
  as_kv_opts_t ko = {1024, 6, 8, 0};
  as_gen_t *g;
  enum { N = 12, NEW = 10 };
  int plen[N], join[N];
  int32_t out[N * NEW];
  for (int i = 0; i < N; i++) {
    plen[i] = 1 + i % 4;
    join[i] = i / 3;
  }
  ASSERT_OK(as_gen_new_ex(&g, m, NULL, &ko, err, sizeof err));
  run_reqs(g, N, plen, join, NEW, 0, out);
  ASSERT_GT(as_gen_graphs(g), 0);
  as_gen_free(g);
  as_model_free(m);
}

/* A pool of 4 pages (64 tokens): full steps are refused and change
 * nothing; pages come back and are reused with no effect on results. */
TEST(test_paging) {
  NEED_DEVICE();
  as_model_t *m = open_on(KJV, DEV);
  int V = as_model_config(m)->vocab_size;
  as_kv_t *kv;
  float *a = malloc((size_t)2 * V * sizeof(float)), *b = malloc((size_t)2 * V * sizeof(float));
  int32_t t[80];
  for (int i = 0; i < 80; i++)
    t[i] = 20 + 7 * i;
  ASSERT_OK(as_kv_new(&kv, m, 64));
  ASSERT_EQ(as_kv_capacity(kv), 64);
  ASSERT_OK(as_kv_seq_new(kv, 1));
  ASSERT_OK(as_kv_seq_new(kv, 2));
  as_fwd_seq_t s1 = {1, t, 40}, s2 = {2, t, 30};
  ASSERT_OK(as_model_forward(m, kv, &s1, 1, a, 0, err, sizeof err)); /* 3 pages */
  ASSERT_EQ(as_model_forward(m, kv, &s2, 1, b, 0, err, sizeof err), AS_EFULL);
  ASSERT_EQ(as_kv_seq_len(kv, 2), 0);
  ASSERT_EQ(as_kv_tokens(kv), 40);
  ASSERT_OK(as_kv_seq_truncate(kv, 1, 16)); /* back to 1 page: 3 free */
  ASSERT_OK(as_model_forward(m, kv, &s2, 1, b, 0, err, sizeof err));
  ASSERT_EQ(as_kv_seq_len(kv, 2), 30);
  /* Sequence 2 alone in a fresh cache gives the same logits. */
  as_kv_t *k2;
  ASSERT_OK(as_kv_new(&k2, m, 64));
  ASSERT_OK(as_kv_seq_new(k2, 2));
  ASSERT_OK(as_model_forward(m, k2, &s2, 1, a, 0, err, sizeof err));
  same_logits(a, b, V, "reused pages against a fresh cache", 1);
  /* Sequence 1 continues after the truncation from its first 16 tokens. */
  as_fwd_seq_t s1b = {1, t + 16, 16};
  ASSERT_OK(as_model_forward(m, kv, &s1b, 1, a, 0, err, sizeof err));
  ASSERT_OK(as_kv_seq_free(k2, 2));
  ASSERT_OK(as_kv_seq_new(k2, 1));
  as_fwd_seq_t s1c = {1, t, 32};
  ASSERT_OK(as_model_forward(m, k2, &s1c, 1, b, 0, err, sizeof err));
  same_logits(a, b, V, "after a truncation against a fresh cache", 0);
  ASSERT_OK(as_kv_seq_free(kv, 1));
  ASSERT_OK(as_kv_seq_free(kv, 2));
  ASSERT_EQ(as_kv_tokens(kv), 0);
  ASSERT_OK(as_kv_seq_new(kv, 3));
  as_fwd_seq_t s3 = {3, t, 64}; /* all 4 pages */
  ASSERT_OK(as_model_forward(m, kv, &s3, 1, a, 0, err, sizeof err));
  as_kv_free(k2);
  as_kv_free(kv);
  as_model_free(m);
  free(a);
  free(b);
}

/* A failing device step (injected: ASK_REFDEV_FAIL_AFTER) is an error
 * naming the cause, never an abort; the cache stays as it was. */
TEST(test_device_failure) {
  paths();
  as_model_t *m = open_on(KJV, "refdev");
  as_gen_t *g;
  int64_t id;
  as_gen_opts_t o;
  int32_t p[4] = {5, 6, 7, 8};
  const as_gen_event_t *ev;
  int ne, rc = 0, steps = 0;
  ASSERT_OK(as_gen_new(&g, m, NULL, 256, err, sizeof err));
  setenv("ASK_REFDEV_FAIL_AFTER", "3", 1);
  as_gen_opts_init(&o);
  o.n_stop_ids = 0;
  o.max_new_tokens = 20;
  ASSERT_OK(as_gen_add(g, p, 4, &o, &id, err, sizeof err));
  while (rc == 0 && as_gen_active(g) > 0 && steps < 30) {
    rc = as_gen_step(g, &ev, &ne, err, sizeof err);
    steps++;
  }
  unsetenv("ASK_REFDEV_FAIL_AFTER");
  ASSERT_EQ(rc, AS_EIO);
  ASSERT_TRUE(strstr(err, "injected failure") != NULL);
  ASSERT_EQ(as_gen_active(g), 1);
  as_gen_free(g);
  as_model_free(m);
}

/* The pool from the memory fraction (vLLM's gpu_memory_utilization): the
 * engine's weights, step buffers and cache stay within it; a fraction too
 * small for the model is refused naming the setting. On refdev the
 * "device" is the host (MemTotal). */
TEST(test_pool_from_memory_fraction) {
  paths();
  as_model_t *m = open_on(KJV, "refdev");
  const ask_dev_t *dev = ask_refdev_ops()->dev;
  size_t freeb, total;
  as_kv_t *kv = NULL;
  ASSERT_OK(dev->mem_info(&freeb, &total, err, sizeof err));
  double frac = 64.0 * 1048576.0 / (double)total; /* 64 MiB in all */
  as_kv_opts_t o = {0, 0, 0, frac / 16};            /* 4 MiB: less than the weights */
  ASSERT_EQ(as_kv_new_ex(&kv, m, &o, err, sizeof err), AS_ENOMEM);
  ASSERT_TRUE(strstr(err, "gpu_memory_utilization") != NULL);
  o.mem_fraction = frac;
  ASSERT_OK(as_kv_new_ex(&kv, m, &o, err, sizeof err));
  const as_llm_config_t *c = as_model_config(m);
  double per_token = 2.0 * c->num_layers * c->num_kv_heads * c->head_dim * 2; /* k + v, bf16 */
  double cache = (double)as_kv_capacity(kv) * per_token;
  printf("  64 MiB in all: %zu tokens of KV cache (%.1f MiB) beside %.1f MiB of weights\n",
         as_kv_capacity(kv), cache / 1048576.0,
         (double)as_model_weight_bytes(m) / 1048576.0);
  ASSERT_GT(as_kv_capacity(kv), 1000);
  ASSERT_LE(cache + (double)as_model_weight_bytes(m), 64.0 * 1048576.0);
  as_kv_free(kv);
  as_model_free(m);
}

/* Encoders stay on the CPU; an unknown device is named. */
TEST(test_device_errors) {
  as_model_t *m = NULL;
  paths();
  as_model_opts_t o = {"refdev"};
  char bert[700];
  snprintf(bert, sizeof bert, "%sbert-f32", FIX);
  ASSERT_EQ(as_model_open(&m, bert, &o, err, sizeof err), AS_ENOTSUP);
  ASSERT_TRUE(strstr(err, "CPU") != NULL);
  o.device = "tpu";
  ASSERT_EQ(as_model_open(&m, KJV, &o, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "tpu") != NULL);
  o.device = "cuda"; /* no GPU here, or a GPU: either way no crash, a clear answer */
  int rc = as_model_open(&m, KJV, &o, err, sizeof err);
  if (rc == 0)
    as_model_free(m);
  else
    ASSERT_TRUE(strstr(err, "cuda") != NULL);
}

TEST_MAIN(test_llama_bf16, test_gemma_f32, test_qwen2_f16_sharded, test_qwen2_tied_mqa,
          test_graphs_greedy, test_graphs_sampled, test_pipeline_greedy, test_pipeline_sampled,
          test_chain_tokens, test_fused_mlp, test_kjv_greedy_64, test_fused_vs_separate,
          test_small_step_buffers, test_paging,
          test_device_failure, test_pool_from_memory_fraction, test_device_errors)

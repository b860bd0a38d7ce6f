/* test_models.c — the model engine against Hugging Face transformers.
 *
 * Each model of tests/fixtures/models (tiny random weights, written with
 * reference outputs by tests/fixtures/make_fixtures.py) is loaded and run:
 *   logits:  every position of each prompt, max |C - HF| <= 1e-4 * max(1,
 *            max |HF logit|) (f32 against f32: measured errors are ~1e-6);
 *   greedy:  16 tokens exactly equal (the fixture script picks weights whose
 *            top-1/top-2 gap stays >= 0.01 during greedy decoding, so no
 *            tie can flip a token);
 *   bert:    sentence embeddings with cosine >= 0.9999.
 * The KV cache is checked with several sequences interleaved (batched
 * prefill, a prefill joining decodes, chunked prefill) against the same
 * references, and errors (bad tokens, full cache, broken folders) are
 * checked to leave the cache unchanged and to name what is wrong.
 */
#include <cjson/cJSON.h>
#include <math.h>

#include "kernels.h"
#include "llm.h"
#include "fixture_json.h"
#include "test.h"

#ifndef AS_SOURCE_DIR
#define AS_SOURCE_DIR "."
#endif
#define FIX AS_SOURCE_DIR "/tests/fixtures/models/"

static char err[512];

static cJSON *load_ref(const char *model) {
  char path[800];
  snprintf(path, sizeof path, FIX "%s/reference.json", model);
  return fixture_json(path);
}

static int *ints(const cJSON *arr, int *n) {
  *n = cJSON_GetArraySize(arr);
  int *p = malloc(((size_t)*n + 1) * sizeof(int));
  for (int i = 0; i < *n; i++)
    p[i] = cJSON_GetArrayItem(arr, i)->valueint;
  return p;
}

/* Compares logits (n, V) with the JSON rows; returns the max |diff| and the
 * max |ref| in *scale. */
static double diff_rows(const float *got, const cJSON *rows, int first, int n, int V,
                        double *scale) {
  double md = 0, ms = 0;
  for (int r = 0; r < n; r++) {
    const cJSON *row = cJSON_GetArrayItem(rows, first + r);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, row) {
      double d = fabs(got[(size_t)r * V + i] - e->valuedouble);
      if (!(d <= md))
        md = d;
      if (fabs(e->valuedouble) > ms)
        ms = fabs(e->valuedouble);
      i++;
    }
  }
  *scale = ms;
  return md;
}

#define CHECK_LOGITS(got, rows, first, n, V)                                               \
  do {                                                                                     \
    double t_scale, t_d = diff_rows(got, rows, first, n, V, &t_scale);                     \
    double t_tol = 1e-4 * (t_scale > 1 ? t_scale : 1);                                     \
    if (t_d > worst)                                                                       \
      worst = t_d;                                                                         \
    if (!(t_d <= t_tol))                                                                   \
      T__FAIL("logits differ by %.3g (scale %.3g, tolerance %.3g)", t_d, t_scale, t_tol); \
  } while (0)

/* Logits of every prompt position, then 16 greedy tokens decoded one by one. */
static void check_decoder(const char *name) {
  char dir[512];
  as_model_t *m;
  as_kv_t *kv;
  cJSON *ref = load_ref(name);
  double worst = 0;
  if (ref == NULL)
    SKIP("fixture reference.json not present");
  snprintf(dir, sizeof dir, FIX "%s", name);
  if (as_model_load(&m, dir, err, sizeof err) != 0)
    T__FAIL("load %s: %s", name, err);
  int V = as_model_config(m)->vocab_size;
  const cJSON *prompts = cJSON_GetObjectItem(ref, "prompts");
  const cJSON *logits = cJSON_GetObjectItem(ref, "logits");
  const cJSON *greedy = cJSON_GetObjectItem(ref, "greedy");
  float *out = malloc((size_t)64 * V * sizeof(float));
  ASSERT_OK(as_kv_new(&kv, m, 0));
  for (int p = 0; p < cJSON_GetArraySize(prompts); p++) {
    int n, ng;
    int *ids = ints(cJSON_GetArrayItem(prompts, p), &n);
    int *want = ints(cJSON_GetArrayItem(greedy, p), &ng);
    int32_t tok[64];
    for (int i = 0; i < n; i++)
      tok[i] = ids[i];
    ASSERT_OK(as_kv_seq_new(kv, p));
    as_fwd_seq_t s = {p, tok, n};
    if (as_model_forward(m, kv, &s, 1, out, 1, err, sizeof err) != 0)
      T__FAIL("forward: %s", err);
    CHECK_LOGITS(out, cJSON_GetArrayItem(logits, p), 0, n, V);
    int32_t next = ask_ref_ops()->argmax(out + (size_t)(n - 1) * V, V);
    for (int i = 0; i < ng; i++) {
      if (next != want[i])
        T__FAIL("prompt %d greedy token %d: %d, transformers %d", p, i, next, want[i]);
      s.tokens = &next;
      s.n = 1;
      ASSERT_OK(as_model_forward(m, kv, &s, 1, out, 0, err, sizeof err));
      next = ask_ref_ops()->argmax(out, V);
    }
    ASSERT_EQ(as_kv_seq_len(kv, p), n + ng);
    free(ids);
    free(want);
  }
  printf("  %s: max |logit diff| %.3g, greedy 16/16 on %d prompts\n", name, worst,
         cJSON_GetArraySize(prompts));
  as_kv_free(kv);
  as_model_free(m);
  free(out);
  cJSON_Delete(ref);
}

TEST(test_llama_bf16) { check_decoder("llama-bf16"); }
TEST(test_gemma_f32) { check_decoder("gemma-f32"); }
TEST(test_qwen2_f16_sharded) { check_decoder("qwen2-f16"); }
TEST(test_qwen2_tied_mqa) { check_decoder("qwen2-tied"); }

/* Several sequences in one cache, batched in changing combinations, must
 * give what each gives alone (the references). */
static void check_interleaved(const char *name) {
  char dir[512];
  as_model_t *m;
  as_kv_t *kv;
  cJSON *ref = load_ref(name);
  double worst = 0;
  if (ref == NULL)
    SKIP("fixture reference.json not present");
  snprintf(dir, sizeof dir, FIX "%s", name);
  ASSERT_OK(as_model_load(&m, dir, err, sizeof err));
  int V = as_model_config(m)->vocab_size;
  const cJSON *prompts = cJSON_GetObjectItem(ref, "prompts");
  const cJSON *logits = cJSON_GetObjectItem(ref, "logits");
  const cJSON *greedy = cJSON_GetObjectItem(ref, "greedy");
  int np = cJSON_GetArraySize(prompts), n[3], ng[3], *ids[3], *want[3], done[3] = {0};
  int32_t tok[3][64], next[3];
  float *out = malloc((size_t)64 * V * sizeof(float));
  ASSERT_EQ(np, 3);
  for (int p = 0; p < 3; p++) {
    ids[p] = ints(cJSON_GetArrayItem(prompts, p), &n[p]);
    want[p] = ints(cJSON_GetArrayItem(greedy, p), &ng[p]);
    for (int i = 0; i < n[p]; i++)
      tok[p][i] = ids[p][i];
  }
  ASSERT_OK(as_kv_new(&kv, m, 0));
  /* Ids far apart and out of order: the cache must not care. */
  int64_t sid[3] = {1000, -5, 42};
  for (int p = 0; p < 3; p++)
    ASSERT_OK(as_kv_seq_new(kv, sid[p]));
  ASSERT_EQ(as_kv_seq_new(kv, 42), AS_EEXISTS);

  /* Step 0: prompts 2 and 0 prefilled in one batch (all positions). */
  as_fwd_seq_t b[3] = {{sid[2], tok[2], n[2]}, {sid[0], tok[0], n[0]}};
  ASSERT_OK(as_model_forward(m, kv, b, 2, out, 1, err, sizeof err));
  CHECK_LOGITS(out, cJSON_GetArrayItem(logits, 2), 0, n[2], V);
  CHECK_LOGITS(out + (size_t)n[2] * V, cJSON_GetArrayItem(logits, 0), 0, n[0], V);
  next[2] = ask_ref_ops()->argmax(out + (size_t)(n[2] - 1) * V, V);
  next[0] = ask_ref_ops()->argmax(out + (size_t)(n[2] + n[0] - 1) * V, V);
  /* Then decode steps; prompt 1 joins at step 3, prefilled in two chunks. */
  int started1 = 0;
  for (int step = 0; step < 40 && !(done[0] >= 16 && done[1] >= 16 && done[2] >= 16); step++) {
    int nb = 0, who[3];
    for (int p = 0; p < 3; p += 2)
      if (done[p] < 16) {
        if (next[p] != want[p][done[p]])
          T__FAIL("seq %d token %d: %d, transformers %d", p, done[p], next[p], want[p][done[p]]);
        b[nb] = (as_fwd_seq_t){sid[p], &next[p], 1};
        who[nb++] = p;
      }
    if (step == 3 || step == 4) { /* chunked prefill of prompt 1 beside the decodes */
      int half = n[1] / 2;
      b[nb] = step == 3 ? (as_fwd_seq_t){sid[1], tok[1], half}
                        : (as_fwd_seq_t){sid[1], tok[1] + half, n[1] - half};
      who[nb++] = -1;
      started1 = step == 4;
    } else if (started1 && done[1] < 16) {
      if (next[1] != want[1][done[1]])
        T__FAIL("seq 1 token %d: %d, transformers %d", done[1], next[1], want[1][done[1]]);
      b[nb] = (as_fwd_seq_t){sid[1], &next[1], 1};
      who[nb++] = 1;
    }
    if (nb == 0)
      break;
    ASSERT_OK(as_model_forward(m, kv, b, nb, out, 0, err, sizeof err));
    for (int i = 0; i < nb; i++) {
      if (who[i] >= 0)
        done[who[i]]++;
      if (who[i] >= 0 || step == 4) {
        int p = who[i] >= 0 ? who[i] : 1;
        if (p == 1 && step == 4)
          CHECK_LOGITS(out + (size_t)i * V, cJSON_GetArrayItem(logits, 1), n[1] - 1, 1, V);
        next[p] = ask_ref_ops()->argmax(out + (size_t)i * V, V);
      }
    }
  }
  for (int p = 0; p < 3; p++) {
    ASSERT_EQ(done[p], 16);
    ASSERT_EQ(as_kv_seq_len(kv, sid[p]), n[p] + 16);
  }
  ASSERT_EQ(as_kv_tokens(kv), n[0] + n[1] + n[2] + 48);

  /* Truncate a sequence back to its prompt and decode again: same tokens. */
  ASSERT_OK(as_kv_seq_truncate(kv, sid[0], n[0] - 1));
  b[0] = (as_fwd_seq_t){sid[0], &tok[0][n[0] - 1], 1};
  ASSERT_OK(as_model_forward(m, kv, b, 1, out, 0, err, sizeof err));
  ASSERT_EQ(ask_ref_ops()->argmax(out, V), want[0][0]);
  ASSERT_OK(as_kv_seq_free(kv, sid[0]));
  ASSERT_EQ(as_kv_seq_len(kv, sid[0]), AS_ENOTFOUND);
  printf("  %s: 3 sequences interleaved, max |logit diff| %.3g\n", name, worst);
  for (int p = 0; p < 3; p++) {
    free(ids[p]);
    free(want[p]);
  }
  as_kv_free(kv);
  as_model_free(m);
  free(out);
  cJSON_Delete(ref);
}

TEST(test_interleaved_llama) { check_interleaved("llama-bf16"); }
TEST(test_interleaved_qwen2) { check_interleaved("qwen2-f16"); }

TEST(test_forward_errors) {
  as_model_t *m;
  as_kv_t *kv;
  float out[512 * 4];
  int32_t ok[3] = {1, 2, 3}, bad[2] = {1, 512};
  if (as_model_load(&m, FIX "llama-bf16", err, sizeof err) != 0)
    SKIP("fixture not present");
  ASSERT_OK(as_kv_new(&kv, m, 5));
  ASSERT_OK(as_kv_seq_new(kv, 1));
  ASSERT_OK(as_kv_seq_new(kv, 2));
  as_fwd_seq_t b[2] = {{1, ok, 3}, {2, bad, 2}};
  ASSERT_EQ(as_model_forward(m, kv, b, 2, out, 0, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "512") != NULL);
  ASSERT_EQ(as_kv_seq_len(kv, 1), 0); /* nothing happened */
  b[1] = (as_fwd_seq_t){7, ok, 1};
  ASSERT_EQ(as_model_forward(m, kv, b, 2, out, 0, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "7") != NULL);
  b[1] = (as_fwd_seq_t){1, ok, 1};
  ASSERT_EQ(as_model_forward(m, kv, b, 2, out, 0, err, sizeof err), AS_EINVAL); /* twice */
  b[1] = (as_fwd_seq_t){2, ok, 3};
  ASSERT_EQ(as_model_forward(m, kv, b, 2, out, 0, err, sizeof err), AS_EFULL); /* 6 > 5 */
  ASSERT_EQ(as_kv_tokens(kv), 0);
  ASSERT_OK(as_model_forward(m, kv, b, 1, out, 0, err, sizeof err));
  ASSERT_EQ(as_kv_tokens(kv), 3);
  int32_t many[300] = {0};
  as_kv_free(kv);
  ASSERT_OK(as_kv_new(&kv, m, 0));
  ASSERT_OK(as_kv_seq_new(kv, 1));
  b[0] = (as_fwd_seq_t){1, many, 257}; /* max_position_embeddings is 256 */
  ASSERT_EQ(as_model_forward(m, kv, b, 1, out, 0, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "max_position_embeddings") != NULL);
  int32_t ids[2] = {1, 2};
  ASSERT_EQ(as_model_embed(m, ids, NULL, NULL, 1, 2, out, err, sizeof err), AS_EINVAL);
  as_kv_free(kv);
  as_model_free(m);
}

TEST(test_bert_embeddings) {
  as_model_t *m;
  cJSON *ref = load_ref("bert-f32");
  if (ref == NULL)
    SKIP("fixture reference.json not present");
  ASSERT_OK(as_model_load(&m, FIX "bert-f32", err, sizeof err));
  const cJSON *jids = cJSON_GetObjectItem(ref, "input_ids");
  const cJSON *jmask = cJSON_GetObjectItem(ref, "attention_mask");
  const cJSON *jemb = cJSON_GetObjectItem(ref, "embeddings");
  int B = cJSON_GetArraySize(jids), S, C = as_model_config(m)->hidden_size, n;
  ASSERT_EQ(B, 3);
  S = cJSON_GetArraySize(cJSON_GetArrayItem(jids, 0));
  int32_t ids[3 * 8], mask[3 * 8];
  ASSERT_EQ(S, 8);
  for (int b = 0; b < B; b++) {
    int *a = ints(cJSON_GetArrayItem(jids, b), &n), *k = ints(cJSON_GetArrayItem(jmask, b), &n);
    for (int t = 0; t < S; t++) {
      ids[b * S + t] = a[t];
      mask[b * S + t] = k[t];
    }
    free(a);
    free(k);
  }
  float *out = malloc((size_t)B * C * sizeof(float)), *one = malloc((size_t)C * sizeof(float));
  ASSERT_OK(as_model_embed(m, ids, mask, NULL, B, S, out, err, sizeof err));
  double worst = 1;
  for (int b = 0; b < B; b++) {
    double dot = 0, nr = 0, ng = 0, d1 = 0;
    int len = 0;
    for (int i = 0; i < C; i++) {
      double r = cJSON_GetArrayItem(cJSON_GetArrayItem(jemb, b), i)->valuedouble;
      dot += r * out[b * C + i];
      nr += r * r;
      ng += (double)out[b * C + i] * out[b * C + i];
    }
    double cosv = dot / sqrt(nr * ng);
    if (cosv < worst)
      worst = cosv;
    ASSERT_TRUE(cosv >= 0.9999);
    /* The same sentence alone, without padding, embeds the same. */
    while (len < S && mask[b * S + len])
      len++;
    ASSERT_OK(as_model_embed(m, ids + b * S, NULL, NULL, 1, len, one, err, sizeof err));
    for (int i = 0; i < C; i++)
      d1 += (double)one[i] * out[b * C + i];
    ASSERT_TRUE(d1 >= 0.9999);
  }
  printf("  bert-f32: min cosine to transformers %.9f\n", worst);
  int32_t badid[1] = {512};
  ASSERT_EQ(as_model_embed(m, badid, NULL, NULL, 1, 1, out, err, sizeof err), AS_EINVAL);
  as_kv_t *kv;
  ASSERT_EQ(as_kv_new(&kv, m, 0), AS_EINVAL);
  free(out);
  free(one);
  as_model_free(m);
  cJSON_Delete(ref);
}

/* The real all-MiniLM-L6-v2 (90 MB, not committed): make_fixtures.py links it
 * at build/models/all-MiniLM-L6-v2 (or set AS_MINILM_DIR); skipped without it. */
TEST(test_minilm_real) {
  const char *dir = getenv("AS_MINILM_DIR");
  char path[600];
  as_model_t *m;
  FILE *f = fopen(AS_SOURCE_DIR "/tests/fixtures/minilm_reference.json", "rb");
  if (dir == NULL)
    dir = AS_SOURCE_DIR "/build/models/all-MiniLM-L6-v2";
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (f == NULL || access(path, R_OK) != 0) {
    if (f != NULL)
      fclose(f);
    SKIP("all-MiniLM-L6-v2 not present (tests/fixtures/make_fixtures.py links it)");
  }
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  cJSON *ref = cJSON_ParseWithLength(buf, n);
  ASSERT_TRUE(ref != NULL);
  if (as_model_load(&m, dir, err, sizeof err) != 0)
    T__FAIL("load %s: %s", dir, err);
  const cJSON *jids = cJSON_GetObjectItem(ref, "input_ids");
  const cJSON *jmask = cJSON_GetObjectItem(ref, "attention_mask");
  const cJSON *jemb = cJSON_GetObjectItem(ref, "embeddings");
  int B = cJSON_GetArraySize(jids), S = cJSON_GetArraySize(cJSON_GetArrayItem(jids, 0));
  int C = as_model_config(m)->hidden_size, k;
  int32_t *ids = malloc((size_t)B * S * sizeof(int32_t)), *mask = malloc((size_t)B * S * sizeof(int32_t));
  float *out = malloc((size_t)B * C * sizeof(float));
  ASSERT_EQ(C, 384);
  for (int b = 0; b < B; b++) {
    int *a = ints(cJSON_GetArrayItem(jids, b), &k), *mm = ints(cJSON_GetArrayItem(jmask, b), &k);
    for (int t = 0; t < S; t++) {
      ids[b * S + t] = a[t];
      mask[b * S + t] = mm[t];
    }
    free(a);
    free(mm);
  }
  ASSERT_OK(as_model_embed(m, ids, mask, NULL, B, S, out, err, sizeof err));
  double worst = 1;
  for (int b = 0; b < B; b++) {
    double dot = 0, nr = 0, ng = 0;
    for (int i = 0; i < C; i++) {
      double r = cJSON_GetArrayItem(cJSON_GetArrayItem(jemb, b), i)->valuedouble;
      dot += r * out[b * C + i];
      nr += r * r;
      ng += (double)out[b * C + i] * out[b * C + i];
    }
    double cosv = dot / sqrt(nr * ng);
    worst = cosv < worst ? cosv : worst;
    ASSERT_TRUE(cosv >= 0.9999);
  }
  printf("  all-MiniLM-L6-v2: %d sentences, min cosine to transformers %.9f\n", B, worst);
  free(ids);
  free(mask);
  free(out);
  as_model_free(m);
  cJSON_Delete(ref);
}

/* config.json in the transformers 4 layout, and what must be refused. */
TEST(test_config) {
  as_llm_config_t c;
  const char *v4 =
      "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":128256,"
      "\"hidden_size\":2048,\"intermediate_size\":8192,\"num_hidden_layers\":16,"
      "\"num_attention_heads\":32,\"num_key_value_heads\":8,\"max_position_embeddings\":131072,"
      "\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,\"rope_scaling\":{\"factor\":32.0,"
      "\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,\"original_max_position_embeddings\":8192,"
      "\"rope_type\":\"llama3\"},\"tie_word_embeddings\":true,\"hidden_act\":\"silu\","
      "\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009]}";
  ASSERT_OK(as_llm_config_parse(&c, v4, strlen(v4), "c.json", err, sizeof err));
  ASSERT_EQ(c.arch, AS_ARCH_LLAMA);
  ASSERT_EQ(c.head_dim, 64);
  ASSERT_EQ(c.num_kv_heads, 8);
  ASSERT_TRUE(c.rope_llama3);
  ASSERT_DBL_EQ(c.rope_theta, 500000.0);
  ASSERT_DBL_EQ(c.rope_factor, 32.0);
  ASSERT_EQ(c.rope_orig_max, 8192);
  ASSERT_EQ(c.n_eos, 3);
  ASSERT_EQ(c.eos_token_ids[2], 128009);
  ASSERT_TRUE(c.tie_word_embeddings);
  const char *gemma = "{\"model_type\":\"gemma\",\"vocab_size\":10,\"hidden_size\":8,"
                      "\"intermediate_size\":16,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
                      "\"head_dim\":8,\"num_key_value_heads\":1,\"hidden_act\":\"gelu\"}";
  ASSERT_OK(as_llm_config_parse(&c, gemma, strlen(gemma), "g.json", err, sizeof err));
  ASSERT_EQ(c.act, ASK_ACT_GELU_TANH); /* legacy "gelu" of Gemma means tanh */
  ASSERT_TRUE(c.tie_word_embeddings);  /* Gemma's default */
  const char *bad[][2] = {
      {"{\"architectures\":[\"MambaForCausalLM\"],\"model_type\":\"mamba\"}", "mamba"},
      {"{\"architectures\":[\"T5Model\"]}", "T5Model"},
      {"[1]", "JSON object"},
      {"{\"model_type\":\"llama\",\"hidden_size\":8}", "positive"},
      {"{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"intermediate_size\":16,"
       "\"num_hidden_layers\":1,\"num_attention_heads\":3}", "multiple"},
      {"{\"model_type\":\"llama\",\"vocab_size\":10,\"hidden_size\":8,\"intermediate_size\":16,"
       "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"rope_scaling\":{\"rope_type\":\"yarn\"}}",
       "yarn"},
      {"{\"model_type\":\"llama\",\"vocab_size\":-10}", "vocab_size"},
      {"{\"model_type\":\"qwen2\",\"vocab_size\":10,\"hidden_size\":8,\"intermediate_size\":16,"
       "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"hidden_act\":\"relu\"}", "relu"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ASSERT_EQ(as_llm_config_parse(&c, bad[i][0], strlen(bad[i][0]), "bad.json", err, sizeof err),
              AS_EINVAL);
    if (strstr(err, bad[i][1]) == NULL || strstr(err, "bad.json") == NULL)
      T__FAIL("config %zu: message \"%s\" lacks \"%s\"", i, err, bad[i][1]);
  }
}

/* Copies a fixture folder to /tmp with config.json replaced. */
static void broken_copy(char *dir, const char *from, const char *cfg) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r " FIX "%s %s", dir, from, dir);
  if (system(cmd) != 0)
    return;
  snprintf(cmd, sizeof cmd, "%s/config.json", dir);
  FILE *f = fopen(cmd, "w");
  fputs(cfg, f);
  fclose(f);
}

TEST(test_load_errors) {
  char dir[] = "/tmp/as_test_model_XXXXXX";
  as_model_t *m;
  if (access(FIX "gemma-f32/config.json", R_OK) != 0)
    SKIP("fixture not present");
  ASSERT_TRUE(mkdtemp(dir) != NULL);
  const char *base = "{\"model_type\":\"gemma\",\"vocab_size\":512,\"hidden_size\":64,"
                     "\"num_attention_heads\":4,\"head_dim\":16,"
                     "\"num_key_value_heads\":1,\"max_position_embeddings\":256,";
  char cfg[1024];
  /* One layer too many: the first tensor of layer 2 is missing. */
  snprintf(cfg, sizeof cfg, "%s\"num_hidden_layers\":3,\"intermediate_size\":128}", base);
  broken_copy(dir, "gemma-f32", cfg);
  ASSERT_EQ(as_model_load(&m, dir, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "model.layers.2.") != NULL && strstr(err, "missing") != NULL);
  /* Untied: lm_head.weight is needed and absent. */
  snprintf(cfg, sizeof cfg, "%s\"num_hidden_layers\":2,\"intermediate_size\":128,\"tie_word_embeddings\":false}", base);
  broken_copy(dir, "gemma-f32", cfg);
  ASSERT_EQ(as_model_load(&m, dir, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "lm_head.weight") != NULL);
  /* A wrong size: the shape error names the tensor, its file and both shapes. */
  snprintf(cfg, sizeof cfg, "%s\"num_hidden_layers\":2,\"intermediate_size\":96}", base);
  broken_copy(dir, "gemma-f32", cfg);
  ASSERT_EQ(as_model_load(&m, dir, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "mlp.gate_proj.weight") != NULL && strstr(err, "[128, 64]") != NULL &&
              strstr(err, "[96, 64]") != NULL && strstr(err, "model.safetensors") != NULL);
  /* A truncated weights file. */
  snprintf(cfg, sizeof cfg, "%s\"num_hidden_layers\":2,\"intermediate_size\":128}", base);
  broken_copy(dir, "gemma-f32", cfg);
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  ASSERT_EQ(truncate(path, 5000), 0);
  ASSERT_EQ(as_model_load(&m, dir, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "model.safetensors") != NULL);
  /* Unsupported architecture. */
  broken_copy(dir, "gemma-f32", "{\"architectures\":[\"GPT2LMHeadModel\"],\"model_type\":\"gpt2\"}");
  ASSERT_EQ(as_model_load(&m, dir, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "gpt2") != NULL);
  ASSERT_EQ(as_model_load(&m, "/nonexistent/model", err, sizeof err), AS_ENOTFOUND);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ASSERT_EQ(system(cmd), 0);
}

TEST_MAIN(test_llama_bf16, test_gemma_f32, test_qwen2_f16_sharded, test_qwen2_tied_mqa,
          test_interleaved_llama, test_interleaved_qwen2, test_forward_errors,
          test_bert_embeddings, test_minilm_real, test_config, test_load_errors)

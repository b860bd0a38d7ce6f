/* test_safetensors.c — the safetensors reader (actors/llm/safetensors.c):
 * valid files of each dtype (from memory, from disk, misaligned, sharded
 * fixtures), every kind of corruption the parser must refuse with a message
 * naming the file and tensor, and a fuzz loop of random mutations that must
 * never crash (run it under ASan: build-asan).
 */
#include <math.h>

#include "llm.h"
#include "test.h"

#ifndef AS_SOURCE_DIR
#define AS_SOURCE_DIR "."
#endif

static char err[512];

/* Builds a safetensors image: header JSON `hdr` (padded with spaces to
 * hlen_pad bytes when larger), then `dlen` data bytes from `data`. */
static unsigned char *image(const char *hdr, const void *data, size_t dlen, size_t *len) {
  size_t h = strlen(hdr);
  unsigned char *p = malloc(8 + h + dlen + 1);
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(p + 8, hdr, h);
  if (dlen)
    memcpy(p + 8 + h, data, dlen);
  *len = 8 + h + dlen;
  return p;
}

/* Parses and expects code `want`; on failure also expects `needle` in err. */
static int parse_expect(const char *hdr, const void *data, size_t dlen, int want,
                        const char *needle) {
  size_t len;
  unsigned char *p = image(hdr, data, dlen, &len);
  as_st_t *st = NULL;
  int rc = as_st_parse(&st, p, len, "x.safetensors", err, sizeof err);
  as_st_close(st);
  free(p);
  if (rc != want) {
    fprintf(stderr, "  header %s: rc %d, want %d (%s)\n", hdr, rc, want, err);
    return 0;
  }
  if (rc != 0 && (strstr(err, "x.safetensors") == NULL || (needle && !strstr(err, needle)))) {
    fprintf(stderr, "  header %s: message \"%s\" lacks \"%s\"\n", hdr, err, needle);
    return 0;
  }
  return 1;
}

TEST(test_dtypes) {
  float f32[3] = {1.5f, -2.0f, 1e-3f};
  double f64[2] = {0.25, -8.0};
  uint16_t bf16[2] = {0x3fc0, 0xc000}, f16[2] = {0x3e00, 0x3400}; /* 1.5, -2 ; 1.5, 0.25 */
  unsigned char data[12 + 16 + 4 + 4 + 8];
  size_t len;
  memcpy(data, f32, 12);
  memcpy(data + 12, f64, 16);
  memcpy(data + 28, bf16, 4);
  memcpy(data + 32, f16, 4);
  memset(data + 36, 7, 8);
  unsigned char *p = image(
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
      "\"b\":{\"dtype\":\"F64\",\"shape\":[1,2],\"data_offsets\":[12,28]},"
      "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[28,32]},"
      "\"d\":{\"dtype\":\"F16\",\"shape\":[2,1],\"data_offsets\":[32,36]},"
      "\"e\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[36,44]},"
      "\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[44,44]}}",
      data, sizeof data, &len);
  as_st_t *st;
  float o[3];
  ASSERT_OK(as_st_parse(&st, p, len, "mem", err, sizeof err));
  ASSERT_EQ(as_st_count(st), 6);
  ASSERT_STR_EQ(as_st_get(st, 0)->name, "a");
  const as_st_tensor_t *t = as_st_find(st, "a");
  ASSERT_TRUE(t != NULL);
  ASSERT_OK(as_st_to_f32(t, o, err, sizeof err));
  ASSERT_MEM_EQ(o, f32, 12);
  t = as_st_find(st, "b");
  ASSERT_EQ(t->ndim, 2);
  ASSERT_EQ(t->shape[1], 2);
  ASSERT_OK(as_st_to_f32(t, o, err, sizeof err));
  ASSERT_DBL_EQ(o[0], 0.25);
  ASSERT_DBL_EQ(o[1], -8.0);
  ASSERT_OK(as_st_to_f32(as_st_find(st, "c"), o, err, sizeof err));
  ASSERT_DBL_EQ(o[0], 1.5);
  ASSERT_DBL_EQ(o[1], -2.0);
  ASSERT_OK(as_st_to_f32(as_st_find(st, "d"), o, err, sizeof err));
  ASSERT_DBL_EQ(o[0], 1.5);
  ASSERT_DBL_EQ(o[1], 0.25);
  t = as_st_find(st, "e");
  ASSERT_EQ(t->ndim, 0);
  ASSERT_EQ(t->numel, 1);
  ASSERT_EQ(as_st_to_f32(t, o, err, sizeof err), AS_EINVAL); /* not a float dtype */
  ASSERT_TRUE(strstr(err, "\"e\"") != NULL && strstr(err, "I64") != NULL);
  ASSERT_EQ(as_st_find(st, "z")->numel, 0);
  ASSERT_TRUE(as_st_find(st, "nope") == NULL);
  as_st_close(st);
  free(p);
}

TEST(test_misaligned) {
  /* Header of odd length: the data starts at an odd address. */
  float v[4] = {1, 2, 3, 4};
  uint16_t h[2] = {0x3c00, 0xc000};
  unsigned char data[1 + 16 + 4];
  size_t len;
  data[0] = 0;
  memcpy(data + 1, v, 16);
  memcpy(data + 17, h, 4);
  unsigned char *p = image("{\"pad\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                           "\"v\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[1,17]},"
                           "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[17,21]}}",
                           data, sizeof data, &len);
  as_st_t *st;
  float o[4];
  ASSERT_OK(as_st_parse(&st, p, len, "mem", err, sizeof err));
  const as_st_tensor_t *t = as_st_find(st, "v");
  ASSERT_TRUE(((uintptr_t)t->data & 3) != 0 || ((uintptr_t)as_st_find(st, "h")->data & 1) != 0);
  ASSERT_OK(as_st_to_f32(t, o, err, sizeof err));
  ASSERT_MEM_EQ(o, v, 16);
  ASSERT_OK(as_st_to_f32(as_st_find(st, "h"), o, err, sizeof err));
  ASSERT_DBL_EQ(o[1], -2.0);
  as_st_close(st);
  free(p);
}

TEST(test_corrupt_headers) {
  unsigned char d[64] = {0};
#define BAD(hdr, dlen, needle) ASSERT_TRUE(parse_expect(hdr, d, dlen, AS_EINVAL, needle))
  BAD("[1,2]", 0, "not a JSON object");
  BAD("\"str\"", 0, "not a JSON object");
  BAD("{\"a\":", 0, "not valid JSON");
  BAD("{\"a\":[]}", 4, "\"a\"");
  BAD("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"a\"");
  BAD("{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype");
  BAD("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"a\"");
  BAD("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
      "dimensions");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
      "\"data_offsets\":[0,4]}}", 4, "overflows");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "need 2 elements");
  BAD("{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "\"a\"");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4, "outside");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "outside");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "data_offsets");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1e300,4]}}", 8, "data_offsets");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "overlap");
  BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "twice");
  BAD("{\"__metadata__\":3}", 0, "__metadata__");
  ASSERT_TRUE(parse_expect("{}", d, 0, 0, NULL));          /* empty but valid */
  ASSERT_TRUE(parse_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                           d, 16, 0, NULL));              /* holes are tolerated */
#undef BAD
}

TEST(test_truncated) {
  float v[4] = {1, 2, 3, 4};
  size_t len;
  unsigned char *p =
      image("{\"v\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", v, 16, &len);
  as_st_t *st = NULL;
  for (size_t cut = 0; cut < len; cut++) { /* every prefix is refused */
    ASSERT_EQ(as_st_parse(&st, p, cut, "t.safetensors", err, sizeof err), AS_EINVAL);
    ASSERT_TRUE(st == NULL);
    ASSERT_TRUE(strstr(err, "t.safetensors") != NULL);
  }
  ASSERT_OK(as_st_parse(&st, p, len, "t.safetensors", err, sizeof err));
  as_st_close(st);
  p[7] = 0x7f; /* header length beyond the file */
  ASSERT_EQ(as_st_parse(&st, p, len, "t.safetensors", err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "header length") != NULL);
  free(p);

  /* The same from disk: a file cut short and an empty file. */
  char path[] = "/tmp/as_test_st_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  ASSERT_EQ(write(fd, "\x40\0\0\0\0\0\0\0{}", 10), 10);
  close(fd);
  ASSERT_EQ(as_st_open(&st, path, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, path) != NULL);
  ASSERT_EQ(truncate(path, 0), 0);
  ASSERT_EQ(as_st_open(&st, path, err, sizeof err), AS_EINVAL);
  unlink(path);
  ASSERT_EQ(as_st_open(&st, path, err, sizeof err), AS_ENOTFOUND);
}

TEST(test_fixture_files) {
  as_st_t *st;
  const as_st_tensor_t *t;
  float *buf;
  if (access(AS_SOURCE_DIR "/tests/fixtures/models/llama-bf16/model.safetensors", R_OK) != 0)
    SKIP("tests/fixtures/models not present");
  ASSERT_OK(as_st_open(&st, AS_SOURCE_DIR "/tests/fixtures/models/llama-bf16", err, sizeof err));
  t = as_st_find(st, "model.embed_tokens.weight");
  ASSERT_TRUE(t != NULL);
  ASSERT_EQ(t->dtype, AS_DT_BF16);
  ASSERT_EQ(t->shape[0], 512);
  buf = malloc(t->numel * sizeof(float));
  ASSERT_OK(as_st_to_f32(t, buf, err, sizeof err));
  ASSERT_TRUE(isfinite(buf[0]) && isfinite(buf[t->numel - 1]));
  free(buf);
  as_st_close(st);
  /* Sharded: three files, one index; every tensor reachable by name. */
  ASSERT_OK(as_st_open(&st, AS_SOURCE_DIR "/tests/fixtures/models/qwen2-f16", err, sizeof err));
  t = as_st_find(st, "lm_head.weight");
  ASSERT_TRUE(t != NULL);
  ASSERT_EQ(t->dtype, AS_DT_F16);
  ASSERT_TRUE(strstr(t->file, "model-0000") != NULL);
  ASSERT_TRUE(as_st_find(st, "model.layers.1.self_attn.q_proj.bias") != NULL);
  as_st_close(st);
}

/* Writes a file at dir/name with the given bytes. */
static void put(const char *dir, const char *name, const void *p, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  fwrite(p, 1, n, f);
  fclose(f);
}

TEST(test_index) {
  char dir[] = "/tmp/as_test_idx_XXXXXX", path[600];
  float v[2] = {1, 2};
  size_t la, lb;
  as_st_t *st;
  ASSERT_TRUE(mkdtemp(dir) != NULL);
  unsigned char *a = image("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", v, 8, &la);
  unsigned char *b = image("{\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", v, 4, &lb);
  put(dir, "s1.safetensors", a, la);
  put(dir, "s2.safetensors", b, lb);
  const char *idx = "{\"metadata\":{},\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}}";
  put(dir, "model.safetensors.index.json", idx, strlen(idx));
  ASSERT_OK(as_st_open(&st, dir, err, sizeof err));
  ASSERT_EQ(as_st_count(st), 2);
  as_st_close(st);
  idx = "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s1.safetensors\"}}"; /* lies */
  put(dir, "model.safetensors.index.json", idx, strlen(idx));
  ASSERT_EQ(as_st_open(&st, dir, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "\"y\"") != NULL);
  idx = "{\"weight_map\":{\"x\":\"../s1.safetensors\"}}";
  put(dir, "model.safetensors.index.json", idx, strlen(idx));
  ASSERT_EQ(as_st_open(&st, dir, err, sizeof err), AS_EINVAL);
  idx = "{\"weight_map\":{\"x\":\"missing.safetensors\"}}";
  put(dir, "model.safetensors.index.json", idx, strlen(idx));
  ASSERT_EQ(as_st_open(&st, dir, err, sizeof err), AS_ENOTFOUND);
  ASSERT_TRUE(strstr(err, "missing.safetensors") != NULL);
  idx = "[]";
  put(dir, "model.safetensors.index.json", idx, strlen(idx));
  ASSERT_EQ(as_st_open(&st, dir, err, sizeof err), AS_EINVAL);
  /* The same tensor in two shards. */
  idx = "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\",\"z\":\"s3.safetensors\"}}";
  put(dir, "s3.safetensors", a, la);
  put(dir, "model.safetensors.index.json", idx, strlen(idx));
  ASSERT_EQ(as_st_open(&st, dir, err, sizeof err), AS_EINVAL);
  ASSERT_TRUE(strstr(err, "twice") != NULL);
  const char *names[] = {"s1.safetensors", "s2.safetensors", "s3.safetensors",
                         "model.safetensors.index.json"};
  for (int i = 0; i < 4; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    unlink(path);
  }
  ASSERT_EQ(as_st_open(&st, dir, err, sizeof err), AS_ENOTFOUND); /* no weights at all */
  rmdir(dir);
  free(a);
  free(b);
}

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void) {
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return rs;
}

TEST(test_fuzz) {
  static const char hdr[] =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12,24]},"
      "\"h\":{\"dtype\":\"F16\",\"shape\":[1,2],\"data_offsets\":[24,28]}}";
  static const char tokens[] = "{}[],:\"0123456789-.eE FBUI";
  unsigned char data[28];
  size_t len, n;
  int ok = 0, bad = 0;
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (unsigned char)(i * 37);
  unsigned char *orig = image(hdr, data, sizeof data, &len);
  unsigned char *p = malloc(len + 64);
  float out[64];
  for (int iter = 0; iter < 25000; iter++) {
    memcpy(p, orig, len);
    n = len;
    int muts = 1 + (int)(rnd() % 4);
    for (int m = 0; m < muts; m++) {
      size_t at = rnd() % n;
      switch (rnd() % 6) {
      case 0: p[at] ^= (unsigned char)(1u << (rnd() % 8)); break;       /* bit flip */
      case 1: p[at] = (unsigned char)rnd(); break;                       /* random byte */
      case 2: p[8 + rnd() % (len - 8)] = (unsigned char)tokens[rnd() % (sizeof tokens - 1)]; break;
      case 3: n = at; break;                                             /* truncate */
      case 4: p[rnd() % 8] = (unsigned char)rnd(); break;                /* header length */
      case 5: if (n + 8 <= len + 64) { memset(p + n, ' ', 8); n += 8; } break; /* grow */
      }
      if (n == 0)
        n = 1;
    }
    as_st_t *st = NULL;
    int rc = as_st_parse(&st, p, n, "fuzz", err, sizeof err);
    if (rc == 0) {
      ok++;
      for (int i = 0; i < as_st_count(st); i++) {
        const as_st_tensor_t *t = as_st_get(st, i);
        ASSERT_TRUE(t->data >= p && t->data + t->nbytes <= p + n);
        if (t->numel <= 64)
          as_st_to_f32(t, out, err, sizeof err); /* touches every byte (ASan) */
      }
      as_st_close(st);
    } else {
      bad++;
      ASSERT_TRUE(st == NULL);
      ASSERT_TRUE(rc == AS_EINVAL || rc == AS_ENOMEM);
      ASSERT_TRUE(strstr(err, "fuzz") != NULL);
    }
  }
  printf("  fuzz: %d accepted, %d refused\n", ok, bad);
  ASSERT_GT(bad, 1000);
  free(p);
  free(orig);
}

TEST_MAIN(test_dtypes, test_misaligned, test_corrupt_headers, test_truncated, test_fixture_files,
          test_index, test_fuzz)

/* test_codec.c — unit tests of the value codec (runtime/codec.c): round
 * trips of every type, exact encodings, random nested values re-encoded
 * byte for byte, truncated and garbage inputs (which must fail cleanly, never
 * read out of bounds: every input lies in a malloc block of its exact size so
 * ASan catches overreads), the depth limit and as_dec_find.
 */
#include <float.h>
#include <math.h>

#include "runtime.h"
#include "test.h"

/* Decodes one value of buffer b into *v and checks it is the whole buffer. */
#define DECODE_ONE(b, v)                                   \
  do {                                                     \
    as_dec_t d__;                                          \
    as_dec_init(&d__, (b).data, (b).len);                  \
    ASSERT_OK(as_dec_next(&d__, (v)));                     \
    ASSERT_TRUE(d__.p == d__.end);                         \
    ASSERT_OK(as_codec_validate((b).data, (b).len));       \
  } while (0)

/* Copies p[0..n) into a malloc block of exactly n bytes (ASan-checked). */
static uint8_t *exact_copy(const void *p, size_t n) {
  uint8_t *q = malloc(n ? n : 1);

  if (q == NULL)
    abort();
  if (n)
    memcpy(q, p, n);
  return q;
}

TEST(test_scalars) {
  as_buf_t b;
  as_val_t v;

  as_buf_init(&b);
  ASSERT_OK(as_enc_nil(&b));
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.type, AS_T_NIL);
  b.len = 0;
  ASSERT_OK(as_enc_bool(&b, 0));
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.type, AS_T_FALSE);
  b.len = 0;
  ASSERT_OK(as_enc_bool(&b, 42));
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.type, AS_T_TRUE);
  b.len = 0;
  ASSERT_OK(as_enc_cstr(&b, NULL));
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.type, AS_T_NIL);
  as_buf_free(&b);
}

TEST(test_ints) {
  static const int64_t cases[] = {0, 1, -1, 127, 128, -129, 1ll << 40, INT64_MIN, INT64_MAX};
  as_buf_t b;
  as_val_t v;
  size_t i;

  as_buf_init(&b);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    b.len = 0;
    ASSERT_OK(as_enc_int(&b, cases[i]));
    ASSERT_EQ(b.len, 9);
    DECODE_ONE(b, &v);
    ASSERT_EQ(v.type, AS_T_INT);
    ASSERT_EQ(v.i, cases[i]);
  }
  b.len = 0;
  ASSERT_OK(as_enc_int(&b, 0x0102030405060708ll));
  ASSERT_MEM_EQ(b.data, "\x03\x08\x07\x06\x05\x04\x03\x02\x01", 9);
  as_buf_free(&b);
}

TEST(test_floats) {
  static const double cases[] = {0.0, 1.5, -2.25, DBL_MAX, DBL_MIN, 5e-324, 1e300};
  as_buf_t b;
  as_val_t v;
  size_t i;

  as_buf_init(&b);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    b.len = 0;
    ASSERT_OK(as_enc_float(&b, cases[i]));
    DECODE_ONE(b, &v);
    ASSERT_EQ(v.type, AS_T_FLOAT);
    ASSERT_DBL_EQ(v.f, cases[i]);
  }
  b.len = 0;
  ASSERT_OK(as_enc_float(&b, -0.0));
  DECODE_ONE(b, &v);
  ASSERT_TRUE(v.f == 0.0 && signbit(v.f));
  b.len = 0;
  ASSERT_OK(as_enc_float(&b, NAN));
  DECODE_ONE(b, &v);
  ASSERT_TRUE(isnan(v.f));
  b.len = 0;
  ASSERT_OK(as_enc_float(&b, INFINITY));
  DECODE_ONE(b, &v);
  ASSERT_TRUE(isinf(v.f) && v.f > 0);
  b.len = 0;
  ASSERT_OK(as_enc_float(&b, -INFINITY));
  DECODE_ONE(b, &v);
  ASSERT_TRUE(isinf(v.f) && v.f < 0);
  b.len = 0;
  ASSERT_OK(as_enc_float(&b, 1.0)); /* 0x3ff0000000000000, little endian */
  ASSERT_MEM_EQ(b.data, "\x04\x00\x00\x00\x00\x00\x00\xf0\x3f", 9);
  as_buf_free(&b);
}

TEST(test_strings) {
  static const char bin[] = "a\0b\0\0c\xff";
  char big[300];
  as_buf_t b;
  as_val_t v;

  as_buf_init(&b);
  ASSERT_OK(as_enc_str(&b, bin, sizeof bin)); /* 8 bytes with NULs */
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.type, AS_T_STR);
  ASSERT_EQ(v.len, sizeof bin);
  ASSERT_MEM_EQ(v.s, bin, sizeof bin);
  b.len = 0;
  ASSERT_OK(as_enc_str(&b, NULL, 0));
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.type, AS_T_STR);
  ASSERT_EQ(v.len, 0);
  ASSERT_MEM_EQ(b.data, "\x05\x00", 2);
  b.len = 0;
  ASSERT_OK(as_enc_cstr(&b, "hello"));
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.len, 5);
  ASSERT_MEM_EQ(v.s, "hello", 5);
  b.len = 0;
  memset(big, 'x', sizeof big);
  ASSERT_OK(as_enc_str(&b, big, sizeof big)); /* 300 = varint ac 02 */
  ASSERT_MEM_EQ(b.data, "\x05\xac\x02", 3);
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.len, 300);
  ASSERT_MEM_EQ(v.s, big, 300);
  ASSERT_EQ(as_enc_str(&b, NULL, 3), AS_EINVAL);
  as_buf_free(&b);
}

TEST(test_tables) {
  as_buf_t b;
  as_dec_t d;
  as_val_t v;

  as_buf_init(&b);
  ASSERT_OK(as_enc_table(&b, 0, 0));
  ASSERT_MEM_EQ(b.data, "\x06\x00\x00", 3);
  DECODE_ONE(b, &v);
  ASSERT_EQ(v.type, AS_T_TABLE);
  ASSERT_EQ(v.narr, 0);
  ASSERT_EQ(v.nhash, 0);

  /* {10, {}, name = "x", [7] = {true}} */
  b.len = 0;
  ASSERT_OK(as_enc_table(&b, 2, 2));
  ASSERT_OK(as_enc_int(&b, 10));
  ASSERT_OK(as_enc_table(&b, 0, 0));
  ASSERT_OK(as_enc_cstr(&b, "name"));
  ASSERT_OK(as_enc_cstr(&b, "x"));
  ASSERT_OK(as_enc_int(&b, 7));
  ASSERT_OK(as_enc_table(&b, 1, 0));
  ASSERT_OK(as_enc_bool(&b, 1));
  ASSERT_OK(as_codec_validate(b.data, b.len));
  as_dec_init(&d, b.data, b.len);
  ASSERT_OK(as_dec_next(&d, &v));
  ASSERT_EQ(v.type, AS_T_TABLE);
  ASSERT_EQ(v.narr, 2);
  ASSERT_EQ(v.nhash, 2);
  ASSERT_OK(as_dec_next(&d, &v));
  ASSERT_EQ(v.i, 10);
  ASSERT_OK(as_dec_skip(&d));
  ASSERT_OK(as_dec_next(&d, &v));
  ASSERT_EQ(v.type, AS_T_STR);
  ASSERT_OK(as_dec_skip(&d));
  ASSERT_OK(as_dec_skip(&d));
  ASSERT_OK(as_dec_skip(&d));
  ASSERT_TRUE(d.p == d.end);
  ASSERT_EQ(as_dec_next(&d, &v), AS_ETRUNC);
  as_buf_free(&b);
}

TEST(test_errors) {
  static const uint8_t bad_tag[] = {0x07};
  static const uint8_t trailing[] = {0x00, 0x00};
  static const uint8_t short_int[] = {0x03, 1, 2, 3};
  static const uint8_t long_str[] = {0x05, 0x05, 'a', 'b'};
  static const uint8_t big_arr[] = {0x06, 0xe8, 0x07, 0x00, 0, 0, 0}; /* narr 1000 */
  static const uint8_t big_hash[] = {0x06, 0x01, 0x02, 0, 0, 0, 0};   /* needs 5 */
  static const uint8_t ok_hash[] = {0x06, 0x01, 0x02, 0, 0, 0, 0, 0};
  static const uint8_t huge_narr[] = {0x06, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00}; /* 2^32 */
  static const uint8_t overlong[] = {0x05, 0xff, 0xff, 0xff, 0xff, 0xff,
                                     0xff, 0xff, 0xff, 0xff, 0xff, 0x00};
  static const uint8_t bit65[] = {0x05, 0x80, 0x80, 0x80, 0x80, 0x80,
                                  0x80, 0x80, 0x80, 0x80, 0x02};
  static const uint8_t max_len[] = {0x05, 0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 0xff, 0x01};

  ASSERT_EQ(as_codec_validate(NULL, 0), AS_ETRUNC);
  ASSERT_EQ(as_codec_validate(NULL, 1), AS_EINVAL);
  ASSERT_EQ(as_codec_validate(bad_tag, sizeof bad_tag), AS_EBADTYPE);
  ASSERT_EQ(as_codec_validate(trailing, sizeof trailing), AS_EINVAL);
  ASSERT_EQ(as_codec_validate(trailing, 1), 0);
  ASSERT_EQ(as_codec_validate(short_int, sizeof short_int), AS_ETRUNC);
  ASSERT_EQ(as_codec_validate(long_str, sizeof long_str), AS_ETRUNC);
  ASSERT_EQ(as_codec_validate(big_arr, sizeof big_arr), AS_ETOOBIG);
  ASSERT_EQ(as_codec_validate(big_hash, sizeof big_hash), AS_ETOOBIG);
  ASSERT_EQ(as_codec_validate(ok_hash, sizeof ok_hash), 0);
  ASSERT_EQ(as_codec_validate(huge_narr, sizeof huge_narr), AS_ETOOBIG);
  ASSERT_EQ(as_codec_validate(overlong, sizeof overlong), AS_EINVAL);
  ASSERT_EQ(as_codec_validate(bit65, sizeof bit65), AS_EINVAL);
  ASSERT_EQ(as_codec_validate(max_len, sizeof max_len), AS_ETRUNC);
  ASSERT_STR_EQ(as_strerror(AS_ETRUNC), "truncated input");
}

/* Appends `depth` nested one-element tables around a nil. */
static void nest(as_buf_t *b, int depth) {
  int i;

  for (i = 0; i < depth; i++)
    as_enc_table(b, 1, 0);
  as_enc_nil(b);
}

TEST(test_depth_limit) {
  as_buf_t b;
  as_dec_t d;

  as_buf_init(&b);
  nest(&b, AS_CODEC_MAX_DEPTH);
  ASSERT_OK(as_codec_validate(b.data, b.len));
  b.len = 0;
  nest(&b, AS_CODEC_MAX_DEPTH + 1);
  ASSERT_EQ(as_codec_validate(b.data, b.len), AS_EDEPTH);
  as_dec_init(&d, b.data, b.len);
  ASSERT_EQ(as_dec_skip(&d), AS_EDEPTH);
  b.len = 0;
  nest(&b, 100000); /* far deeper: must not blow the stack */
  ASSERT_EQ(as_codec_validate(b.data, b.len), AS_EDEPTH);
  as_buf_free(&b);
}

TEST(test_find) {
  as_buf_t b;
  as_dec_t d, out;
  as_val_t v;

  as_buf_init(&b);
  /* {"skip", {1}, [1.5] = "id", n = {a = 1}, id = 42, [false] = 0} */
  ASSERT_OK(as_enc_table(&b, 2, 4));
  ASSERT_OK(as_enc_cstr(&b, "skip"));
  ASSERT_OK(as_enc_table(&b, 1, 0));
  ASSERT_OK(as_enc_int(&b, 1));
  ASSERT_OK(as_enc_float(&b, 1.5));
  ASSERT_OK(as_enc_cstr(&b, "id"));
  ASSERT_OK(as_enc_cstr(&b, "n"));
  ASSERT_OK(as_enc_table(&b, 0, 1));
  ASSERT_OK(as_enc_cstr(&b, "id"));
  ASSERT_OK(as_enc_int(&b, 1));
  ASSERT_OK(as_enc_cstr(&b, "id"));
  ASSERT_OK(as_enc_int(&b, 42));
  ASSERT_OK(as_enc_bool(&b, 0));
  ASSERT_OK(as_enc_int(&b, 0));
  ASSERT_OK(as_codec_validate(b.data, b.len));

  as_dec_init(&d, b.data, b.len);
  ASSERT_OK(as_dec_find(&d, "id", &out));
  ASSERT_OK(as_dec_next(&out, &v));
  ASSERT_EQ(v.type, AS_T_INT);
  ASSERT_EQ(v.i, 42);
  ASSERT_OK(as_dec_find(&d, "n", &out));
  ASSERT_OK(as_dec_next(&out, &v));
  ASSERT_EQ(v.type, AS_T_TABLE);
  ASSERT_EQ(as_dec_find(&d, "skip", &out), AS_ENOTFOUND); /* array values are not keys */
  ASSERT_EQ(as_dec_find(&d, "i", &out), AS_ENOTFOUND);
  ASSERT_EQ(as_dec_find(&d, "", &out), AS_ENOTFOUND);
  ASSERT_TRUE(d.p == (const uint8_t *)b.data); /* the input decoder is untouched */

  b.len = 0;
  ASSERT_OK(as_enc_int(&b, 1));
  as_dec_init(&d, b.data, b.len);
  ASSERT_EQ(as_dec_find(&d, "id", &out), AS_EBADTYPE);
  as_buf_free(&b);
}

/* ---- random values --------------------------------------------------------- */

/* Appends a random value, nesting tables at most `depth` deeper. */
static void gen_value(as_buf_t *b, uint64_t *rng, int depth) {
  uint64_t r = as_rand(rng);
  int kind = (int)(r % (depth > 0 ? 8 : 6));
  uint32_t narr, nhash, i;
  char s[40];
  size_t n;

  switch (kind) {
  case 0: as_enc_nil(b); break;
  case 1: as_enc_bool(b, (int)(r >> 8) & 1); break;
  case 2: as_enc_int(b, (int64_t)as_rand(rng) >> (as_rand(rng) % 64)); break;
  case 3: {
    uint64_t bits = as_rand(rng);
    double f;

    memcpy(&f, &bits, sizeof f); /* any bit pattern: NaNs, infinities, denormals */
    as_enc_float(b, (r >> 8) & 1 ? f : (double)(int32_t)bits / 7.0);
    break;
  }
  case 4:
  case 5:
    n = as_rand(rng) % sizeof s;
    for (i = 0; i < n; i++)
      s[i] = (char)as_rand(rng);
    as_enc_str(b, s, n);
    break;
  default:
    narr = (uint32_t)(as_rand(rng) % 5);
    nhash = (uint32_t)(as_rand(rng) % 4);
    as_enc_table(b, narr, nhash);
    for (i = 0; i < narr + 2 * nhash; i++)
      gen_value(b, rng, depth - 1);
  }
}

/* Decodes one value from d and writes it again to out. */
static int reencode(as_dec_t *d, as_buf_t *out) {
  as_val_t v;
  uint64_t i, n;
  int rc = as_dec_next(d, &v);

  if (rc != 0)
    return rc;
  switch (v.type) {
  case AS_T_NIL: return as_enc_nil(out);
  case AS_T_FALSE: return as_enc_bool(out, 0);
  case AS_T_TRUE: return as_enc_bool(out, 1);
  case AS_T_INT: return as_enc_int(out, v.i);
  case AS_T_FLOAT: return as_enc_float(out, v.f);
  case AS_T_STR: return as_enc_str(out, v.s, v.len);
  default:
    rc = as_enc_table(out, v.narr, v.nhash);
    n = (uint64_t)v.narr + 2 * (uint64_t)v.nhash;
    for (i = 0; rc == 0 && i < n; i++)
      rc = reencode(d, out);
    return rc;
  }
}

TEST(test_random_roundtrip) {
  uint64_t rng = 12345;
  as_buf_t in, out;
  as_dec_t d;
  uint8_t *p;
  int k;

  as_buf_init(&in);
  as_buf_init(&out);
  for (k = 0; k < 2000; k++) {
    in.len = out.len = 0;
    gen_value(&in, &rng, k % 6);
    p = exact_copy(in.data, in.len);
    ASSERT_OK(as_codec_validate(p, in.len));
    as_dec_init(&d, p, in.len);
    ASSERT_OK(reencode(&d, &out));
    ASSERT_TRUE(d.p == d.end);
    ASSERT_EQ(out.len, in.len);
    ASSERT_MEM_EQ(out.data, in.data, in.len);
    free(p);
  }
  as_buf_free(&in);
  as_buf_free(&out);
}

TEST(test_truncation) {
  uint64_t rng = 777;
  as_buf_t in, out;
  as_dec_t d;
  uint8_t *p;
  size_t cut;
  int k;

  as_buf_init(&in);
  as_buf_init(&out);
  for (k = 0; k < 300; k++) {
    in.len = 0;
    gen_value(&in, &rng, k % 5);
    for (cut = 0; cut < in.len; cut++) {
      p = exact_copy(in.data, cut);
      ASSERT_LT(as_codec_validate(p, cut), 0);
      as_dec_init(&d, p, cut);
      out.len = 0;
      ASSERT_LT(reencode(&d, &out), 0);
      as_dec_init(&d, p, cut);
      ASSERT_LE(as_dec_find(&d, "k", &d), 0);
      free(p);
    }
  }
  as_buf_free(&in);
  as_buf_free(&out);
}

/* Runs every reader over p[0..n); only absence of crashes is checked. */
static void chew(const uint8_t *p, size_t n) {
  as_dec_t d, out;
  as_val_t v;
  as_buf_t b;
  int guard;

  (void)as_codec_validate(p, n);
  as_dec_init(&d, p, n);
  (void)as_dec_find(&d, "k", &out);
  for (guard = 0; guard < 1000 && as_dec_next(&d, &v) == 0; guard++)
    if (v.type == AS_T_STR && v.len > 0)
      (void)(v.s[0] + v.s[v.len - 1]); /* the string lies inside the input */
  as_buf_init(&b);
  as_dec_init(&d, p, n);
  (void)reencode(&d, &b);
  as_buf_free(&b);
}

TEST(test_garbage) {
  uint64_t rng = 99;
  uint8_t raw[64], *p;
  as_buf_t in;
  size_t n, i;
  int k;

  for (k = 0; k < 100000; k++) {
    n = as_rand(&rng) % sizeof raw;
    for (i = 0; i < n; i++) /* bias towards small tags and counts */
      raw[i] = (uint8_t)(as_rand(&rng) % (k % 2 ? 256 : 8));
    p = exact_copy(raw, n);
    chew(p, n);
    free(p);
  }
  as_buf_init(&in);
  for (k = 0; k < 20000; k++) { /* valid values with a few bytes mutated */
    in.len = 0;
    gen_value(&in, &rng, 4);
    for (i = 0; i < 3; i++)
      in.data[as_rand(&rng) % in.len] = (char)as_rand(&rng);
    p = exact_copy(in.data, in.len);
    chew(p, in.len);
    free(p);
  }
  as_buf_free(&in);
}

TEST_MAIN(test_scalars, test_ints, test_floats, test_strings, test_tables, test_errors,
          test_depth_limit, test_find, test_random_roundtrip, test_truncation,
          test_garbage)

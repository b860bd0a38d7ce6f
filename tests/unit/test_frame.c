/* test_frame.c — unit tests of frames (runtime/frame.c): writing with
 * as_frame_begin/end, reading with the framer from every possible split,
 * many frames in one feed, and oversize and zero-length frames refused.
 */
#include "runtime.h"
#include "test.h"

/* Appends a frame of `type` whose payload is one codec string s. */
static int put_frame(as_buf_t *b, uint8_t type, const char *s) {
  size_t mark;
  int rc = as_frame_begin(b, type, &mark);

  if (rc == 0)
    rc = as_enc_cstr(b, s);
  return rc != 0 ? rc : as_frame_end(b, mark);
}

TEST(test_frame_bytes) {
  as_buf_t b;
  size_t mark;

  as_buf_init(&b);
  ASSERT_OK(as_buf_append(&b, "xy", 2)); /* frames may start mid-buffer */
  ASSERT_OK(as_frame_begin(&b, AS_FR_CALL, &mark));
  ASSERT_EQ(mark, 2);
  ASSERT_OK(as_enc_int(&b, 5));
  ASSERT_OK(as_frame_end(&b, mark));
  ASSERT_EQ(b.len, 2 + AS_FRAME_HDR + 9);
  ASSERT_MEM_EQ(b.data, "xy\x0a\x00\x00\x00\x0a\x03\x05", 9); /* length 10 = type + 9 */
  ASSERT_EQ(as_frame_end(&b, b.len), AS_EINVAL);
  ASSERT_EQ(as_frame_end(&b, b.len + 1), AS_EINVAL);
  as_buf_free(&b);
}

/* Feeds stream in pieces cut at `cuts` and checks the three frames come out. */
static void feed_split(const as_buf_t *stream, const size_t *cuts, int ncuts) {
  static const char *want[] = {"", "hello", "a longer payload, more than one piece"};
  as_framer_t f;
  size_t from = 0, to, len;
  const char *payload;
  uint8_t type;
  as_val_t v;
  as_dec_t d;
  int i, got = 0, rc;

  as_framer_init(&f, 0);
  for (i = 0; i <= ncuts; i++) {
    to = i < ncuts ? cuts[i] : stream->len;
    ASSERT_OK(as_framer_feed(&f, stream->data + from, to - from));
    from = to;
    while ((rc = as_framer_next(&f, &type, &payload, &len)) == 1) {
      ASSERT_LT(got, 3);
      ASSERT_EQ(type, AS_FR_CALL + got);
      as_dec_init(&d, payload, len);
      ASSERT_OK(as_dec_next(&d, &v));
      ASSERT_TRUE(d.p == d.end);
      ASSERT_EQ(v.len, strlen(want[got]));
      ASSERT_MEM_EQ(v.s, want[got], v.len);
      got++;
    }
    ASSERT_EQ(rc, 0);
  }
  ASSERT_EQ(got, 3);
  as_framer_free(&f);
}

TEST(test_framer_splits) {
  as_buf_t s;
  size_t cuts[2], i, j;

  as_buf_init(&s);
  ASSERT_OK(put_frame(&s, AS_FR_CALL, ""));
  ASSERT_OK(put_frame(&s, AS_FR_CALL + 1, "hello"));
  ASSERT_OK(put_frame(&s, AS_FR_CALL + 2, "a longer payload, more than one piece"));
  feed_split(&s, NULL, 0);
  for (i = 0; i <= s.len; i++) /* one cut anywhere */
    feed_split(&s, &i, 1);
  for (i = 0; i <= s.len; i++) /* two cuts anywhere */
    for (j = i; j <= s.len; j++) {
      cuts[0] = i;
      cuts[1] = j;
      feed_split(&s, cuts, 2);
    }
  as_buf_free(&s);
}

TEST(test_framer_byte_by_byte) {
  as_framer_t f;
  as_buf_t s;
  const char *payload;
  size_t i, len;
  uint8_t type;
  int got = 0, rc;

  as_buf_init(&s);
  for (i = 0; i < 50; i++)
    ASSERT_OK(put_frame(&s, AS_FR_REPLY, "x"));
  as_framer_init(&f, 64);
  for (i = 0; i < s.len; i++) {
    ASSERT_OK(as_framer_feed(&f, s.data + i, 1));
    while ((rc = as_framer_next(&f, &type, &payload, &len)) == 1) {
      ASSERT_EQ(type, AS_FR_REPLY);
      ASSERT_EQ(len, 3);
      got++;
    }
    ASSERT_EQ(rc, 0);
  }
  ASSERT_EQ(got, 50);
  ASSERT_LE(f.in.len, AS_FRAME_HDR + 3); /* consumed frames were compacted away */
  as_framer_free(&f);
  as_buf_free(&s);
}

TEST(test_framer_many_in_one_feed) {
  as_framer_t f;
  as_buf_t s;
  const char *payload, *prev = NULL;
  size_t len;
  uint8_t type;
  int i, rc;

  as_buf_init(&s);
  for (i = 0; i < 1000; i++)
    ASSERT_OK(put_frame(&s, (uint8_t)(i % 200), i % 2 ? "odd" : ""));
  as_framer_init(&f, 0);
  ASSERT_EQ(f.max, AS_FRAME_MAX_DEFAULT);
  ASSERT_OK(as_framer_feed(&f, s.data, s.len));
  for (i = 0; i < 1000; i++) {
    ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), 1);
    ASSERT_EQ(type, i % 200);
    ASSERT_EQ(len, i % 2 ? 5 : 2);
    ASSERT_TRUE(prev == NULL || payload > prev); /* next does not move the data */
    prev = payload;
  }
  rc = as_framer_next(&f, &type, &payload, &len);
  ASSERT_EQ(rc, 0);
  as_framer_free(&f);
  as_buf_free(&s);
}

TEST(test_framer_oversize) {
  static const uint8_t big[] = {0x11, 0x00, 0x00, 0x00, 0x0a}; /* 17 bytes announced */
  static const uint8_t fits[] = {0x10, 0x00, 0x00, 0x00, 0x0a};
  static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0x0a};
  as_framer_t f;
  const char *payload;
  size_t len;
  uint8_t type;

  as_framer_init(&f, 16);
  ASSERT_OK(as_framer_feed(&f, big, 3));
  ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), 0);
  ASSERT_OK(as_framer_feed(&f, big + 3, 2));
  ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), AS_ETOOBIG);
  ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), AS_ETOOBIG);
  as_framer_free(&f);

  as_framer_init(&f, 16);
  ASSERT_OK(as_framer_feed(&f, fits, sizeof fits));
  ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), 0); /* allowed; needs more */
  as_framer_free(&f);

  as_framer_init(&f, 0);
  ASSERT_OK(as_framer_feed(&f, huge, sizeof huge));
  ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), AS_ETOOBIG);
  as_framer_free(&f);
}

TEST(test_framer_zero_length) {
  static const uint8_t zero[] = {0x00, 0x00, 0x00, 0x00, 0x01};
  static const uint8_t empty_payload[] = {0x01, 0x00, 0x00, 0x00, 0x04};
  as_framer_t f;
  const char *payload;
  size_t len;
  uint8_t type;

  as_framer_init(&f, 0);
  ASSERT_OK(as_framer_feed(&f, zero, sizeof zero));
  ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), AS_EINVAL);
  as_framer_free(&f);

  as_framer_init(&f, 0);
  ASSERT_OK(as_framer_feed(&f, empty_payload, sizeof empty_payload));
  ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), 1);
  ASSERT_EQ(type, AS_FR_SHUTDOWN);
  ASSERT_EQ(len, 0);
  ASSERT_EQ(as_framer_next(&f, &type, &payload, &len), 0);
  as_framer_free(&f);
  as_framer_free(&f); /* idempotent */
}

TEST_MAIN(test_frame_bytes, test_framer_splits, test_framer_byte_by_byte,
          test_framer_many_in_one_feed, test_framer_oversize, test_framer_zero_length)

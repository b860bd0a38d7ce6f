/* test_buf.c — unit tests of the small pieces under everything else:
 * byte buffers (runtime/buf.c), error messages (runtime/errors.c) and the
 * log line format (runtime/log.c).
 */
#include <ctype.h>
#include <fcntl.h>

#include "runtime.h"
#include "test.h"

TEST(test_buf_append) {
  as_buf_t b;
  char chunk[100];
  int i;

  as_buf_init(&b);
  ASSERT_TRUE(b.data == NULL);
  ASSERT_OK(as_buf_append(&b, NULL, 0));
  ASSERT_EQ(as_buf_append(&b, NULL, 1), AS_EINVAL);
  memset(chunk, 'z', sizeof chunk);
  for (i = 0; i < 100; i++) {
    ASSERT_OK(as_buf_append(&b, chunk, (size_t)i));
    ASSERT_LE(b.len, b.cap);
  }
  ASSERT_EQ(b.len, 4950);
  ASSERT_EQ(b.cap & (b.cap - 1), 0); /* grown by doubling */
  ASSERT_EQ(as_buf_reserve(&b, SIZE_MAX), AS_ETOOBIG);
  as_buf_free(&b);
  as_buf_free(&b); /* idempotent */
  ASSERT_TRUE(b.data == NULL);
  ASSERT_EQ(b.len, 0);
}

TEST(test_buf_appendf_consume) {
  as_buf_t b;
  char big[500];

  as_buf_init(&b);
  ASSERT_OK(as_buf_appendf(&b, "%d-%s", 42, "x"));
  ASSERT_EQ(b.len, 4);
  ASSERT_STR_EQ(b.data, "42-x"); /* NUL-terminated, NUL not counted */
  memset(big, 'q', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  ASSERT_OK(as_buf_appendf(&b, "[%s]", big));
  ASSERT_EQ(b.len, 4 + 501);
  ASSERT_EQ(b.data[b.len - 1], ']');
  as_buf_consume(&b, 3);
  ASSERT_EQ(b.len, 502);
  ASSERT_MEM_EQ(b.data, "x[qq", 4);
  as_buf_consume(&b, 0);
  ASSERT_EQ(b.len, 502);
  as_buf_consume(&b, 10000);
  ASSERT_EQ(b.len, 0);
  as_buf_free(&b);
}

TEST(test_strerror) {
  ASSERT_STR_EQ(as_strerror(AS_ENOMEM), "out of memory");
  ASSERT_STR_EQ(as_strerror(AS_EINVAL), "invalid argument");
  ASSERT_STR_EQ(as_strerror(AS_ENORES), "not enough resources");
  ASSERT_STR_EQ(as_strerror(AS_EEXISTS), "already exists");
  ASSERT_STR_EQ(as_strerror(-1000), "unknown error");
  ASSERT_STR_EQ(as_strerror(0), "success");
}

/* Runs as_log with stderr sent to a file and returns what it wrote. */
static void capture_log(char *out, size_t n, int level, const char *msg) {
  char path[] = "/tmp/as_test_log.XXXXXX";
  int fd = mkstemp(path), saved = dup(STDERR_FILENO);
  ssize_t got;

  dup2(fd, STDERR_FILENO);
  as_log(level, "%s", msg);
  dup2(saved, STDERR_FILENO);
  close(saved);
  got = pread(fd, out, n - 1, 0);
  out[got > 0 ? got : 0] = '\0';
  close(fd);
  unlink(path);
}

TEST(test_log_format) {
  char line[8192], big[5000];
  size_t i;

  capture_log(line, sizeof line, AS_LOG_INFO, "hello 1");
  /* "2026-11-25 17:30:01.123 INFO  [actorserve] hello 1\n" */
  ASSERT_EQ(strlen(line), 24 + strlen("INFO  [actorserve] hello 1\n"));
  for (i = 0; i < 23; i++)
    ASSERT_TRUE(strchr("0123456789-: .", line[i]) != NULL);
  ASSERT_EQ(line[4], '-');
  ASSERT_EQ(line[10], ' ');
  ASSERT_EQ(line[19], '.');
  ASSERT_STR_EQ(line + 23, " INFO  [actorserve] hello 1\n");

  as_log_component = "replica Ranker#1";
  capture_log(line, sizeof line, AS_LOG_ERROR, "boom\n"); /* no doubled newline */
  ASSERT_STR_EQ(line + 23, " ERROR [replica Ranker#1] boom\n");
  capture_log(line, sizeof line, AS_LOG_DEBUG, "dropped");
  ASSERT_STR_EQ(line, "");
  as_log_level = AS_LOG_DEBUG;
  capture_log(line, sizeof line, AS_LOG_DEBUG, "kept");
  ASSERT_STR_EQ(line + 23, " DEBUG [replica Ranker#1] kept\n");

  memset(big, 'b', sizeof big - 1); /* longer than the stack buffer */
  big[sizeof big - 1] = '\0';
  capture_log(line, sizeof line, AS_LOG_WARN, big);
  ASSERT_EQ(strlen(line), 23 + strlen(" WARN  [replica Ranker#1] ") + 4999 + 1);
  ASSERT_EQ(line[strlen(line) - 2], 'b');
  as_log_component = NULL;
  as_log_level = AS_LOG_INFO;
}

TEST_MAIN(test_buf_append, test_buf_appendf_consume, test_strerror, test_log_format)

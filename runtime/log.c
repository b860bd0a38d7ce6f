/* log.c — one-line log records on stderr, shared by every process.
 *
 * A record looks like "2026-11-25 17:30:01.123 INFO  [head] message" and is
 * written with a single write(2) so that lines from the head, the proxy and
 * the workers (which share stderr) never interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"

int as_log_level = AS_LOG_INFO;
const char *as_log_component = NULL; /* NULL means "actorserve" */

static const char *as__level_name(int level) {
  switch (level) {
  case AS_LOG_DEBUG: return "DEBUG";
  case AS_LOG_INFO: return "INFO";
  case AS_LOG_WARN: return "WARN";
  default: return "ERROR";
  }
}

static void as__write_all(const char *p, size_t n) {
  ssize_t w;

  while (n > 0) {
    w = write(STDERR_FILENO, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

void as_log(int level, const char *fmt, ...) {
  char stack[1024], *line = stack, *heap = NULL;
  char stamp[32];
  struct timespec ts;
  struct tm tm;
  va_list ap;
  int saved = errno, hdr, msg;
  size_t cap = sizeof stack, n;

  if (level < as_log_level || fmt == NULL)
    return;
  clock_gettime(CLOCK_REALTIME, &ts);
  localtime_r(&ts.tv_sec, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
  hdr = snprintf(stack, cap, "%s.%03ld %-5s [%.200s] ", stamp, ts.tv_nsec / 1000000L,
                 as__level_name(level), as_log_component ? as_log_component : "actorserve");
  if (hdr < 0 || (size_t)hdr >= cap)
    goto cleanup;
  va_start(ap, fmt);
  msg = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (msg < 0)
    goto cleanup;
  if ((size_t)hdr + (size_t)msg + 2 > cap) {
    cap = (size_t)hdr + (size_t)msg + 2;
    heap = malloc(cap);
    if (heap == NULL)
      goto cleanup;
    memcpy(heap, stack, (size_t)hdr);
    line = heap;
  }
  va_start(ap, fmt);
  vsnprintf(line + hdr, cap - (size_t)hdr, fmt, ap);
  va_end(ap);
  n = (size_t)hdr + (size_t)msg;
  if (n == 0 || line[n - 1] != '\n')
    line[n++] = '\n';
  as__write_all(line, n);

cleanup:
  free(heap);
  errno = saved;
}

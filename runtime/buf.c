/* buf.c — growable byte buffers (as_buf_t).
 *
 * A buffer owns one heap block that doubles as it grows; readers drop bytes
 * from the front with as_buf_consume. Used by the codec writers, the framer
 * and every formatter in runtime/.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

void as_buf_init(as_buf_t *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void as_buf_free(as_buf_t *b) {
  if (b == NULL)
    return;
  free(b->data);
  as_buf_init(b);
}

/* Makes room for extra more bytes past len. Returns 0, AS_ENOMEM, or
 * AS_ETOOBIG when the size would overflow size_t. */
int as__buf_grow(as_buf_t *b, size_t extra) {
  size_t need, cap;
  char *p;

  if (b == NULL)
    return AS_EINVAL;
  if (extra > SIZE_MAX - b->len)
    return AS_ETOOBIG;
  need = b->len + extra;
  if (need <= b->cap)
    return 0;
  cap = b->cap ? b->cap : 128;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  p = realloc(b->data, cap);
  if (p == NULL)
    return AS_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int as_buf_append_u64(as_buf_t *b, uint64_t v) {
  char tmp[20];
  size_t n = 0;

  do {
    tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return as_buf_append(b, tmp + sizeof tmp - n, n);
}

int as_buf_appendf(as_buf_t *b, const char *fmt, ...) {
  va_list ap;
  int n, rc;

  if (b == NULL || fmt == NULL)
    return AS_EINVAL;
  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return AS_EINVAL;
  rc = as_buf_reserve(b, (size_t)n + 1);
  if (rc != 0)
    return rc;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

/* Drops n bytes from the front (all of them when n >= len). */
void as_buf_consume(as_buf_t *b, size_t n) {
  if (b == NULL || n == 0)
    return;
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

/* frame.c — length-prefixed frames on a byte stream.
 *
 * Writers: as_frame_begin appends a header with a placeholder length and
 * as_frame_end patches it once the payload is written. Readers: an
 * as_framer_t accumulates bytes in whatever pieces the socket delivers and
 * hands back whole frames one at a time. Payload pointers point into the
 * framer's buffer, so they stay valid until the next feed; compaction (and
 * any reallocation) happens only in feed.
 */
#include <string.h>

#include "runtime.h"

static uint32_t as__get_u32le(const char *p) {
  const uint8_t *u = (const uint8_t *)p;

  return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
         (uint32_t)u[3] << 24;
}

/* Appends a header whose length is filled in by as_frame_end; *mark is the
 * offset of the header in b. */
int as_frame_begin(as_buf_t *b, uint8_t type, size_t *mark) {
  uint8_t hdr[AS_FRAME_HDR] = {0, 0, 0, 0, type};
  int rc;

  if (b == NULL || mark == NULL)
    return AS_EINVAL;
  rc = as_buf_append(b, hdr, sizeof hdr);
  if (rc != 0)
    return rc;
  *mark = b->len - sizeof hdr;
  return 0;
}

/* Patches the length of the frame starting at mark: everything after the
 * 4-byte length field. Returns AS_ETOOBIG when that exceeds UINT32_MAX. */
int as_frame_end(as_buf_t *b, size_t mark) {
  size_t n;
  uint8_t *p;

  if (b == NULL || mark > b->len || b->len - mark < AS_FRAME_HDR)
    return AS_EINVAL;
  n = b->len - mark - 4;
  if (n > UINT32_MAX)
    return AS_ETOOBIG;
  p = (uint8_t *)b->data + mark;
  p[0] = (uint8_t)n;
  p[1] = (uint8_t)(n >> 8);
  p[2] = (uint8_t)(n >> 16);
  p[3] = (uint8_t)(n >> 24);
  return 0;
}

void as_framer_init(as_framer_t *f, uint32_t max) {
  as_buf_init(&f->in);
  f->off = 0;
  f->max = max ? max : AS_FRAME_MAX_DEFAULT;
}

void as_framer_free(as_framer_t *f) {
  if (f == NULL)
    return;
  as_buf_free(&f->in);
  f->off = 0;
}

/* Appends n received bytes, first dropping the frames already returned. */
int as_framer_feed(as_framer_t *f, const void *p, size_t n) {
  if (f == NULL || (p == NULL && n > 0))
    return AS_EINVAL;
  as_buf_consume(&f->in, f->off);
  f->off = 0;
  return as_buf_append(&f->in, p, n);
}

/* Returns 1 with the next frame, 0 when more bytes are needed, AS_ETOOBIG
 * for a frame longer than max, AS_EINVAL for a length of 0 (no type byte).
 * After an error the stream is unusable and every call repeats it. */
int as_framer_next(as_framer_t *f, uint8_t *type, const char **payload, size_t *len) {
  size_t avail;
  uint32_t n;
  const char *p;

  if (f == NULL || type == NULL || payload == NULL || len == NULL)
    return AS_EINVAL;
  avail = f->in.len - f->off;
  if (avail < 4)
    return 0;
  p = f->in.data + f->off;
  n = as__get_u32le(p);
  if (n < 1)
    return AS_EINVAL;
  if (n > f->max)
    return AS_ETOOBIG;
  if (avail - 4 < n)
    return 0;
  *type = (uint8_t)p[4];
  *payload = p + AS_FRAME_HDR;
  *len = n - 1;
  f->off += 4 + (size_t)n;
  return 1;
}

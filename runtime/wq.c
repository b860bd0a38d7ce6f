/* wq.c — batched writes for Unix-socket streams (see as_wq_t in runtime.h).
 * Callers and replicas append whole frames to a stream's queue while they
 * handle a loop iteration's events; a uv_prepare handle, which runs just
 * before the loop waits for I/O again, hands each non-empty queue to libuv as
 * one write. Under load that turns one system call per frame into one per
 * connection per iteration.
 */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "runtime.h"

typedef struct wreq_s {
  uv_write_t req;
  as_buf_t buf;
} wreq_t;

static void write_cb(uv_write_t *req, int status) {
  (void)status; /* a failed write shows up as a read error on the same stream */
  wreq_t *w = (wreq_t *)req;
  as_buf_free(&w->buf);
  free(w);
}

static void unlink_dirty(as_wq_t *q) {
  if (!q->dirty) return;
  if (q->prev) q->prev->next = q->next; else q->f->dirty = q->next;
  if (q->next) q->next->prev = q->prev;
  q->prev = q->next = NULL;
  q->dirty = 0;
}

void as_wq_flush(as_wq_t *q) {
  unlink_dirty(q);
  if (q->buf.len == 0) return;
  wreq_t *w = malloc(sizeof *w);
  if (!w) return; /* kept for the next flush */
  w->buf = q->buf;
  as_buf_init(&q->buf);
  uv_buf_t b = uv_buf_init(w->buf.data, (unsigned)w->buf.len);
  if (uv_write(&w->req, q->stream, &b, 1, write_cb) < 0) {
    as_buf_free(&w->buf);
    free(w);
  }
}

static void prepare_cb(uv_prepare_t *p) {
  as_flusher_t *f = p->data;
  while (f->dirty) as_wq_flush(f->dirty);
}

int as_flusher_init(uv_loop_t *loop, as_flusher_t *f) {
  uv_prepare_t *p = malloc(sizeof *p);
  if (!p) return AS_ENOMEM;
  f->dirty = NULL;
  f->prep = p;
  uv_prepare_init(loop, p);
  p->data = f;
  uv_prepare_start(p, prepare_cb);
  uv_unref((uv_handle_t *)p); /* never keeps the loop alive by itself */
  return 0;
}

static void prep_closed(uv_handle_t *h) { free(h); }

void as_flusher_close(as_flusher_t *f) {
  if (!f->prep) return;
  while (f->dirty) as_wq_flush(f->dirty);
  uv_close((uv_handle_t *)f->prep, prep_closed);
  f->prep = NULL;
}

static void copy_written(uv_write_t *req, int status) {
  (void)status; /* a failed write shows up as a read error on the same stream */
  free(req);
}

int as_write_copy(uv_stream_t *stream, const void *p, size_t n) {
  uv_write_t *req = malloc(sizeof *req + n);
  if (!req) return AS_ENOMEM;
  char *copy = (char *)(req + 1);
  memcpy(copy, p, n);
  uv_buf_t b = uv_buf_init(copy, (unsigned)n);
  if (uv_write(req, stream, &b, 1, copy_written) < 0) {
    free(req);
    return AS_EIO;
  }
  return 0;
}

void as_wq_init(as_wq_t *q, as_flusher_t *f, uv_stream_t *stream) {
  q->stream = stream;
  q->f = f;
  as_buf_init(&q->buf);
  q->prev = q->next = NULL;
  q->dirty = 0;
}

as_buf_t *as_wq_buf(as_wq_t *q) {
  if (!q->dirty) {
    q->dirty = 1;
    q->prev = NULL;
    q->next = q->f->dirty;
    if (q->next) q->next->prev = q;
    q->f->dirty = q;
  }
  return &q->buf;
}

void as_wq_close(as_wq_t *q) {
  unlink_dirty(q);
  as_buf_free(&q->buf);
}

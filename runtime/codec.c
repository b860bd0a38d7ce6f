/* codec.c — the binary value codec of runtime.h: writers that append one
 * value to an as_buf_t, and a pull decoder that reads one value header at a
 * time.
 *
 * Encoded values arrive from other processes, so the decoder treats its
 * input as hostile: every read is checked against `end`, string lengths and
 * table counts are checked against the bytes that remain, and nesting is
 * limited to AS_CODEC_MAX_DEPTH. Garbage yields an error, never a crash.
 */
#include <string.h>

#include "runtime.h"

#define AS__VARINT_MAX 10 /* LEB128 bytes for a 64-bit value */

/* ---- writers ------------------------------------------------------------- */

static int as__put_u8(as_buf_t *b, uint8_t v) {
  return as_buf_append(b, &v, 1);
}

static int as__put_u64le(as_buf_t *b, uint8_t tag, uint64_t v) {
  uint8_t out[9];
  int i;

  out[0] = tag;
  for (i = 0; i < 8; i++)
    out[1 + i] = (uint8_t)(v >> (8 * i));
  return as_buf_append(b, out, sizeof out);
}

static int as__put_varint(as_buf_t *b, uint64_t v) {
  uint8_t out[AS__VARINT_MAX];
  size_t n = 0;

  do {
    out[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v != 0)
      out[n] |= 0x80;
    n++;
  } while (v != 0);
  return as_buf_append(b, out, n);
}

int as_enc_nil(as_buf_t *b) {
  return as__put_u8(b, AS_T_NIL);
}

int as_enc_bool(as_buf_t *b, int v) {
  return as__put_u8(b, v ? AS_T_TRUE : AS_T_FALSE);
}

int as_enc_int(as_buf_t *b, int64_t v) {
  return as__put_u64le(b, AS_T_INT, (uint64_t)v);
}

int as_enc_float(as_buf_t *b, double v) {
  uint64_t bits;

  memcpy(&bits, &v, sizeof bits);
  return as__put_u64le(b, AS_T_FLOAT, bits);
}

int as_enc_str(as_buf_t *b, const void *s, size_t len) {
  int rc;

  if (b == NULL || (s == NULL && len > 0))
    return AS_EINVAL;
  rc = as_buf_reserve(b, 1 + AS__VARINT_MAX + len);
  if (rc != 0)
    return rc;
  rc = as__put_u8(b, AS_T_STR);
  if (rc == 0)
    rc = as__put_varint(b, len);
  if (rc == 0)
    rc = as_buf_append(b, s, len);
  return rc;
}

int as_enc_cstr(as_buf_t *b, const char *s) {
  return s == NULL ? as_enc_nil(b) : as_enc_str(b, s, strlen(s));
}

int as_enc_table(as_buf_t *b, uint32_t narr, uint32_t nhash) {
  int rc;

  rc = as__put_u8(b, AS_T_TABLE);
  if (rc == 0)
    rc = as__put_varint(b, narr);
  if (rc == 0)
    rc = as__put_varint(b, nhash);
  return rc;
}

/* ---- decoder ------------------------------------------------------------- */

void as_dec_init(as_dec_t *d, const void *p, size_t len) {
  d->p = p;
  d->end = d->p;
  if (p != NULL)
    d->end += len;
}

static size_t as__left(const as_dec_t *d) {
  return (size_t)(d->end - d->p);
}

/* Reads a LEB128 varint. Returns 0, AS_ETRUNC when the input ends inside it,
 * AS_EINVAL when it runs past 10 bytes or past 64 bits. */
static int as__get_varint(as_dec_t *d, uint64_t *out) {
  uint64_t v = 0;
  uint8_t c;
  int i;

  for (i = 0; i < AS__VARINT_MAX; i++) {
    if (as__left(d) < 1)
      return AS_ETRUNC;
    c = *d->p++;
    if (i == AS__VARINT_MAX - 1 && c > 1)
      return AS_EINVAL;
    v |= (uint64_t)(c & 0x7f) << (7 * i);
    if ((c & 0x80) == 0) {
      *out = v;
      return 0;
    }
  }
  return AS_EINVAL; /* unreachable: the 10th byte is at most 1 */
}

static int as__get_u64le(as_dec_t *d, uint64_t *out) {
  uint64_t v = 0;
  int i;

  if (as__left(d) < 8)
    return AS_ETRUNC;
  for (i = 0; i < 8; i++)
    v |= (uint64_t)d->p[i] << (8 * i);
  d->p += 8;
  *out = v;
  return 0;
}

/* Reads a table header; each array element needs at least one byte and each
 * pair two, so counts beyond what remains are refused up front. */
static int as__get_table(as_dec_t *d, as_val_t *v) {
  uint64_t narr, nhash, left;
  int rc;

  rc = as__get_varint(d, &narr);
  if (rc != 0)
    return rc;
  rc = as__get_varint(d, &nhash);
  if (rc != 0)
    return rc;
  left = as__left(d);
  if (narr > UINT32_MAX || nhash > UINT32_MAX)
    return AS_ETOOBIG;
  if (narr > left || nhash > (left - narr) / 2)
    return AS_ETOOBIG;
  v->narr = (uint32_t)narr;
  v->nhash = (uint32_t)nhash;
  return 0;
}

int as_dec_next(as_dec_t *d, as_val_t *v) {
  uint64_t u = 0;
  int rc;

  if (d == NULL || v == NULL)
    return AS_EINVAL;
  memset(v, 0, sizeof *v);
  if (as__left(d) < 1)
    return AS_ETRUNC;
  v->type = *d->p++;
  switch (v->type) {
  case AS_T_NIL:
  case AS_T_FALSE:
  case AS_T_TRUE:
    return 0;
  case AS_T_INT:
    rc = as__get_u64le(d, &u);
    v->i = (int64_t)u;
    return rc;
  case AS_T_FLOAT:
    rc = as__get_u64le(d, &u);
    memcpy(&v->f, &u, sizeof v->f);
    return rc;
  case AS_T_STR:
    rc = as__get_varint(d, &u);
    if (rc != 0)
      return rc;
    if (u > as__left(d))
      return AS_ETRUNC;
    v->s = (const char *)d->p;
    v->len = (size_t)u;
    d->p += u;
    return 0;
  case AS_T_TABLE:
    return as__get_table(d, v);
  default:
    return AS_EBADTYPE;
  }
}

/* Skips one value found inside `depth` enclosing tables. */
static int as__skip(as_dec_t *d, int depth) {
  as_val_t v;
  uint64_t i, n;
  int rc;

  rc = as_dec_next(d, &v);
  if (rc != 0 || v.type != AS_T_TABLE)
    return rc;
  if (depth >= AS_CODEC_MAX_DEPTH)
    return AS_EDEPTH;
  n = (uint64_t)v.narr + 2 * (uint64_t)v.nhash;
  for (i = 0; i < n; i++) {
    rc = as__skip(d, depth + 1);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int as_dec_skip(as_dec_t *d) {
  if (d == NULL)
    return AS_EINVAL;
  return as__skip(d, 0);
}

/* Returns 0 with *d_out at the value of string key k, AS_ENOTFOUND when the
 * hash part has no such key, AS_EBADTYPE when the value is not a table, or a
 * decode error. */
int as_dec_find(const as_dec_t *table_start, const char *k, as_dec_t *d_out) {
  as_dec_t d, key;
  as_val_t v;
  size_t klen;
  uint32_t i;
  int rc;

  if (table_start == NULL || k == NULL || d_out == NULL)
    return AS_EINVAL;
  d = *table_start;
  klen = strlen(k);
  rc = as_dec_next(&d, &v);
  if (rc != 0)
    return rc;
  if (v.type != AS_T_TABLE)
    return AS_EBADTYPE;
  for (i = 0; i < v.narr; i++) {
    rc = as__skip(&d, 1);
    if (rc != 0)
      return rc;
  }
  for (i = 0; i < v.nhash; i++) {
    as_val_t kv;

    key = d;
    rc = as_dec_next(&key, &kv);
    if (rc != 0)
      return rc;
    if (kv.type == AS_T_STR && kv.len == klen && memcmp(kv.s, k, klen) == 0) {
      *d_out = key;
      return 0;
    }
    rc = as__skip(&d, 1); /* the key */
    if (rc == 0)
      rc = as__skip(&d, 1); /* its value */
    if (rc != 0)
      return rc;
  }
  return AS_ENOTFOUND;
}

/* Returns 0 when [p, p+len) holds exactly one value, AS_EINVAL when bytes
 * follow it, or the decode error. */
int as_codec_validate(const void *p, size_t len) {
  as_dec_t d;
  int rc;

  if (p == NULL && len > 0)
    return AS_EINVAL;
  as_dec_init(&d, p, len);
  rc = as_dec_skip(&d);
  if (rc != 0)
    return rc;
  return d.p == d.end ? 0 : AS_EINVAL;
}

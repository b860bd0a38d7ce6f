/* tok_decode.c — decoders and the incremental detokenizer.
 *
 * The decoder steps of tokenizer.json (ByteLevel, Replace, ByteFallback, Fuse,
 * Strip, Metaspace, WordPiece; none = join with spaces) run as a push pipeline:
 * each token goes through the steps in order, and a step may hold bytes back
 * (ByteFallback holds a run of <0xNN> tokens, since the run decodes as a whole
 * or as one U+FFFD per byte; ByteLevel holds the end of an incomplete UTF-8
 * character; a trailing Strip holds the run it may remove). After Fuse or
 * ByteLevel the rest of the chain sees one growing token ("fragments"), as the
 * library's single fused token. as_tokenizer_decode is this same pipeline fed
 * all ids and flushed, so streamed text always concatenates to the full decode,
 * and what is appended to the output is always whole UTF-8 characters. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

typedef struct dstate_s {
  as_buf_t buf;  /* held bytes: ByteFallback run / ByteLevel tail / Strip trailing run */
  size_t cnt;    /* Strip: leading characters looked at; SIZE_MAX when done */
  size_t held;   /* Strip: characters in buf */
  size_t outn;   /* ByteFallback: tokens passed on */
  int started;   /* a fragment stream has begun */
} dstate_t;

struct as_detok_s {
  const as_tokenizer_t *tok;
  int skip_special;
  size_t nin;    /* tokens fed to the first step */
  dstate_t *st;  /* one per decoder step */
};

static const char FFFD[] = "\xEF\xBF\xBD";

static int push(as_detok_t *d, size_t k, const char *s, size_t n, size_t idx, int frag, int tstart,
                as_buf_t *out);

/* is s exactly "<0xNN>"? */
static int byte_token(const char *s, size_t n, unsigned *v) {
  if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
    return 0;
  unsigned x = 0;
  for (int i = 3; i < 5; i++) {
    char c = s[i];
    x <<= 4;
    if (c >= '0' && c <= '9')
      x |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      x |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      x |= (unsigned)(c - 'A' + 10);
    else
      return 0;
  }
  *v = x;
  return 1;
}

static int bf_flush(as_detok_t *d, size_t k, as_buf_t *out) {
  dstate_t *S = &d->st[k];
  int r = 0;
  if (S->buf.len == 0)
    return 0;
  if (tok_utf8_valid(S->buf.data, S->buf.len))
    r = push(d, k + 1, S->buf.data, S->buf.len, S->outn++, 0, 1, out);
  else
    for (size_t i = 0; r == 0 && i < S->buf.len; i++)
      r = push(d, k + 1, FFFD, 3, S->outn++, 0, 1, out);
  S->buf.len = 0;
  return r;
}

/* length of the UTF-8 character starting at s */
static size_t clen(const char *s, size_t n) {
  size_t i = 0;
  tok_utf8_next(s, n, &i);
  return i;
}

static int strip_step(as_detok_t *d, size_t k, const char *s, size_t n, size_t idx, int frag,
                      int tstart, as_buf_t *out) {
  const tok_step_t *st = &d->tok->dec[k];
  dstate_t *S = &d->st[k];
  const char *c = st->a;
  size_t cl = st->alen, b = 0, e = n;
  if (!frag) { /* a whole token: strip it alone */
    for (size_t i = 0; i < (size_t)st->f1 && b + cl <= n && memcmp(s + b, c, cl) == 0; i++)
      b += cl;
    for (size_t i = 0; i < (size_t)st->f2 && e >= b + cl && memcmp(s + e - cl, c, cl) == 0; i++)
      e -= cl;
    return push(d, k + 1, s + b, e - b, idx, 0, 1, out);
  }
  /* fragments of one token: the leading strip applies once, the trailing one at the end */
  while (S->cnt < (size_t)st->f1 && b < n) {
    if (b + cl <= n && memcmp(s + b, c, cl) == 0) {
      b += cl;
      S->cnt++;
    } else
      S->cnt = SIZE_MAX;
  }
  if (b < n)
    S->cnt = SIZE_MAX;
  if (st->f2 == 0 || b == n) {
    if (b == n)
      return 0;
    int r = push(d, k + 1, s + b, n - b, 0, 1, !S->started, out);
    S->started = 1;
    return r;
  }
  size_t tail = 0; /* trailing run of content characters in s[b..n) */
  while (e >= b + cl && memcmp(s + e - cl, c, cl) == 0) {
    e -= cl;
    tail++;
  }
  int r = 0;
  if (e > b) { /* a non-content character: what was held is not trailing */
    if (S->buf.len > 0)
      r = push(d, k + 1, S->buf.data, S->buf.len, 0, 1, !S->started, out);
    S->started |= S->buf.len > 0;
    S->buf.len = 0;
    S->held = 0;
    if (r == 0)
      r = push(d, k + 1, s + b, e - b, 0, 1, !S->started, out);
    S->started = 1;
  }
  for (size_t i = 0; r == 0 && i < tail; i++)
    r = as_buf_append(&S->buf, c, cl);
  S->held += tail;
  (void)idx;
  (void)tstart;
  return r;
}

static int push(as_detok_t *d, size_t k, const char *s, size_t n, size_t idx, int frag, int tstart,
                as_buf_t *out) {
  const as_tokenizer_t *t = d->tok;
  if (k >= t->ndec) {
    if (!t->has_decoder && idx > 0 && tstart) {
      int r = as_buf_append(out, " ", 1);
      if (r != 0)
        return r;
    }
    return as_buf_append(out, s, n);
  }
  const tok_step_t *st = &t->dec[k];
  dstate_t *S = &d->st[k];
  as_buf_t b;
  int r = 0;
  unsigned byte;
  switch (st->type) {
  case TOK_D_REPLACE: {
    as_buf_init(&b);
    size_t i = 0, run = 0;
    while (r == 0 && st->alen > 0 && i + st->alen <= n) {
      if (memcmp(s + i, st->a, st->alen) == 0) {
        r = as_buf_append(&b, s + run, i - run);
        if (r == 0)
          r = as_buf_append(&b, st->b, st->blen);
        i += st->alen;
        run = i;
      } else
        i++;
    }
    if (r == 0)
      r = as_buf_append(&b, s + run, n - run);
    if (r == 0)
      r = push(d, k + 1, b.data ? b.data : "", b.len, idx, frag, tstart, out);
    as_buf_free(&b);
    return r;
  }
  case TOK_D_BYTEFALLBACK:
    if (!frag && byte_token(s, n, &byte)) {
      unsigned char ch = (unsigned char)byte;
      return as_buf_append(&S->buf, &ch, 1);
    }
    if ((r = bf_flush(d, k, out)) != 0)
      return r;
    return push(d, k + 1, s, n, frag ? idx : S->outn++, frag, tstart, out);
  case TOK_D_FUSE:
    r = push(d, k + 1, s, n, 0, 1, !S->started, out);
    S->started = 1;
    return r;
  case TOK_D_STRIP:
    return strip_step(d, k, s, n, idx, frag, tstart, out);
  case TOK_D_METASPACE: { /* a replacement, f1 prepend scheme is not "never" */
    as_buf_init(&b);
    for (size_t i = 0; r == 0 && i < n;) {
      if (st->alen > 0 && i + st->alen <= n && memcmp(s + i, st->a, st->alen) == 0) {
        if (!(idx == 0 && st->f1))
          r = as_buf_append(&b, " ", 1);
        i += st->alen;
      } else {
        size_t l = clen(s + i, n - i);
        r = as_buf_append(&b, s + i, l);
        i += l;
      }
    }
    if (r == 0)
      r = push(d, k + 1, b.data ? b.data : "", b.len, idx, frag, tstart, out);
    as_buf_free(&b);
    return r;
  }
  case TOK_D_WORDPIECE: { /* a prefix, f1 cleanup */
    static const char *const clean[][2] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    as_buf_t c;
    as_buf_init(&b);
    as_buf_init(&c);
    if (idx != 0 && tstart) {
      if (n >= st->alen && memcmp(s, st->a, st->alen) == 0) {
        s += st->alen;
        n -= st->alen;
      } else
        r = as_buf_append(&b, " ", 1);
    }
    if (r == 0)
      r = as_buf_append(&b, s, n);
    for (size_t q = 0; r == 0 && st->f1 && q < sizeof clean / sizeof clean[0]; q++) {
      size_t pl = strlen(clean[q][0]), rl = strlen(clean[q][1]), i = 0, run = 0;
      c.len = 0;
      while (r == 0 && i + pl <= b.len) {
        if (memcmp(b.data + i, clean[q][0], pl) == 0) {
          r = as_buf_append(&c, b.data + run, i - run);
          if (r == 0)
            r = as_buf_append(&c, clean[q][1], rl);
          i += pl;
          run = i;
        } else
          i++;
      }
      if (r == 0)
        r = as_buf_append(&c, b.data ? b.data + run : "", b.len - run);
      as_buf_t tmp = b;
      b = c;
      c = tmp;
    }
    if (r == 0)
      r = push(d, k + 1, b.data ? b.data : "", b.len, idx, frag, tstart, out);
    as_buf_free(&b);
    as_buf_free(&c);
    return r;
  }
  case TOK_D_BYTELEVEL: {
    /* the token's characters through the byte table, or its raw bytes when one
     * character is not in the table */
    size_t mark = S->buf.len, i = 0;
    int ok = 1;
    while (r == 0 && i < n) {
      int v = tok_cp_to_byte(tok_utf8_next(s, n, &i));
      if (v < 0) {
        ok = 0;
        break;
      }
      unsigned char ch = (unsigned char)v;
      r = as_buf_append(&S->buf, &ch, 1);
    }
    if (r == 0 && !ok) {
      S->buf.len = mark;
      r = as_buf_append(&S->buf, s, n);
    }
    if (r != 0)
      return r;
    as_buf_init(&b);
    size_t hold = tok_utf8_repair(S->buf.data ? S->buf.data : "", S->buf.len, &b, 1, &r);
    if (r == 0 && b.len > 0) {
      r = push(d, k + 1, b.data, b.len, 0, 1, !S->started, out);
      S->started = 1;
    }
    if (r == 0) {
      memmove(S->buf.data, S->buf.data + S->buf.len - hold, hold);
      S->buf.len = hold;
    }
    as_buf_free(&b);
    return r;
  }
  }
  return AS_EINVAL;
}

int as_detok_new(const as_tokenizer_t *tok, int skip_special, as_detok_t **out) {
  if (tok == NULL || out == NULL)
    return AS_EINVAL;
  as_detok_t *d = calloc(1, sizeof *d);
  if (d == NULL)
    return AS_ENOMEM;
  d->st = calloc(tok->ndec + 1, sizeof *d->st);
  if (d->st == NULL) {
    free(d);
    return AS_ENOMEM;
  }
  d->tok = tok;
  d->skip_special = skip_special;
  *out = d;
  return 0;
}

void as_detok_free(as_detok_t *d) {
  if (d == NULL)
    return;
  for (size_t k = 0; k < d->tok->ndec + 1; k++)
    as_buf_free(&d->st[k].buf);
  free(d->st);
  free(d);
}

int as_detok_feed(as_detok_t *d, const int32_t *ids, size_t n, as_buf_t *out) {
  if (d == NULL || out == NULL || (ids == NULL && n > 0))
    return AS_EINVAL;
  for (size_t i = 0; i < n; i++) {
    size_t len;
    const char *s = tok_id_str(d->tok, ids[i], &len);
    if (s == NULL)
      continue;
    if (d->skip_special && (d->tok->flags[ids[i]] & TOK_F_SPECIAL))
      continue;
    int r = push(d, 0, s, len, d->nin++, 0, 1, out);
    if (r != 0)
      return r;
  }
  return 0;
}

int as_detok_finish(as_detok_t *d, as_buf_t *out) {
  int r = 0;
  if (d == NULL || out == NULL)
    return AS_EINVAL;
  for (size_t k = 0; r == 0 && k < d->tok->ndec; k++) {
    const tok_step_t *st = &d->tok->dec[k];
    dstate_t *S = &d->st[k];
    if (st->type == TOK_D_BYTEFALLBACK)
      r = bf_flush(d, k, out);
    else if (st->type == TOK_D_BYTELEVEL && S->buf.len > 0) {
      as_buf_t b;
      as_buf_init(&b);
      tok_utf8_repair(S->buf.data, S->buf.len, &b, 0, &r);
      if (r == 0)
        r = push(d, k + 1, b.data, b.len, 0, 1, !S->started, out);
      S->started = 1;
      S->buf.len = 0;
      as_buf_free(&b);
    } else if (st->type == TOK_D_STRIP && S->held > 0) {
      size_t keep = S->held > (size_t)st->f2 ? S->held - (size_t)st->f2 : 0;
      if (keep > 0)
        r = push(d, k + 1, S->buf.data, keep * st->alen, 0, 1, !S->started, out);
      S->started = 1;
      S->buf.len = 0;
      S->held = 0;
    }
  }
  return r;
}

int as_tokenizer_decode(const as_tokenizer_t *tok, const int32_t *ids, size_t n, int skip_special,
                        as_buf_t *out) {
  as_detok_t *d;
  int r = as_detok_new(tok, skip_special, &d);
  if (r != 0)
    return r;
  r = as_detok_feed(d, ids, n, out);
  if (r == 0)
    r = as_detok_finish(d, out);
  as_detok_free(d);
  return r;
}

/* tok_norm.c — the normalizers of tokenizer.json, applied in order to one
 * segment of text (between added tokens): NFC, NFD, Lowercase, StripAccents,
 * BertNormalizer, Prepend, Replace (literal pattern), Strip. Each step writes a
 * new string; the last one is appended to the caller's buffer. */
#include <string.h>

#include "tok_int.h"

static int is_cjk(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Rust tokenizers' BERT is_control: categories C* other than \t \n \r */
static int is_bert_control(uint32_t c) {
  if (c == '\t' || c == '\n' || c == '\r')
    return 0;
  int k = tok_ucat(c);
  return k == TOK_CC || k == TOK_CF || k == TOK_CN || k == TOK_CO || k == TOK_CS;
}

static int strip_marks(const char *s, size_t n, as_buf_t *out) {
  size_t i = 0;
  int r = 0;
  while (r == 0 && i < n) {
    size_t st = i;
    uint32_t cp = tok_utf8_next(s, n, &i);
    if (tok_ucat(cp) != TOK_MN)
      r = as_buf_append(out, s + st, i - st);
  }
  return r;
}

static int bert_clean(const tok_step_t *st, const char *s, size_t n, as_buf_t *out) {
  size_t i = 0;
  int r = 0;
  while (r == 0 && i < n) {
    size_t b = i;
    uint32_t cp = tok_utf8_next(s, n, &i);
    if (st->f1) { /* clean_text */
      if (cp == 0 || cp == 0xFFFD || is_bert_control(cp))
        continue;
      if (tok_is_space(cp)) {
        r = as_buf_append(out, " ", 1);
        continue;
      }
    }
    if (st->f2 && is_cjk(cp)) { /* handle_chinese_chars */
      r = as_buf_append(out, " ", 1);
      if (r == 0)
        r = as_buf_append(out, s + b, i - b);
      if (r == 0)
        r = as_buf_append(out, " ", 1);
      continue;
    }
    r = as_buf_append(out, s + b, i - b);
  }
  return r;
}

static int replace_all(const char *s, size_t n, const char *pat, size_t plen, const char *rep,
                       size_t rlen, as_buf_t *out) {
  size_t i = 0, run = 0;
  int r = 0;
  if (plen == 0)
    return as_buf_append(out, s, n);
  while (r == 0 && i + plen <= n) {
    if (memcmp(s + i, pat, plen) == 0) {
      r = as_buf_append(out, s + run, i - run);
      if (r == 0)
        r = as_buf_append(out, rep, rlen);
      i += plen;
      run = i;
    } else
      i++;
  }
  if (r == 0)
    r = as_buf_append(out, s + run, n - run);
  return r;
}

/* one step from (s, n) into out (empty on entry) */
static int norm_step(const tok_step_t *st, const char *s, size_t n, as_buf_t *out) {
  switch (st->type) {
  case TOK_N_NFC:
    return tok_nfc(s, n, out);
  case TOK_N_NFD:
    return tok_nfd(s, n, out);
  case TOK_N_LOWER:
    return tok_lowercase(s, n, out);
  case TOK_N_STRIP_ACCENTS:
    return strip_marks(s, n, out);
  case TOK_N_PREPEND:
    if (n > 0) {
      int r = as_buf_append(out, st->a, st->alen);
      return r ? r : as_buf_append(out, s, n);
    }
    return 0;
  case TOK_N_REPLACE:
    return replace_all(s, n, st->a, st->alen, st->b, st->blen, out);
  case TOK_N_STRIP: {
    size_t b = 0, e = n, i;
    if (st->f1) /* strip_left */
      for (i = 0; i < n;) {
        size_t at = i;
        if (!tok_is_space(tok_utf8_next(s, n, &i))) {
          b = at;
          break;
        }
        b = i;
      }
    if (st->f2) /* strip_right: walk back over whitespace */
      while (e > b) {
        size_t k = e - 1;
        while (k > b && ((unsigned char)s[k] & 0xC0) == 0x80)
          k--;
        size_t j = k;
        if (!tok_is_space(tok_utf8_next(s, n, &j)))
          break;
        e = k;
      }
    return as_buf_append(out, s + b, e - b);
  }
  case TOK_N_BERT: {
    /* f1 clean_text, f2 handle_chinese_chars, f3 strip_accents, f4 lowercase */
    as_buf_t a, b;
    int r;
    as_buf_init(&a);
    as_buf_init(&b);
    r = bert_clean(st, s, n, &a);
    if (r == 0 && st->f3) {
      r = tok_nfd(a.data ? a.data : "", a.len, &b);
      a.len = 0;
      if (r == 0)
        r = strip_marks(b.data ? b.data : "", b.len, &a);
    }
    if (r == 0 && st->f4)
      r = tok_lowercase(a.data ? a.data : "", a.len, out);
    else if (r == 0)
      r = as_buf_append(out, a.data ? a.data : "", a.len);
    as_buf_free(&a);
    as_buf_free(&b);
    return r;
  }
  }
  return AS_EINVAL;
}

int tok_normalize(const as_tokenizer_t *t, const char *s, size_t n, as_buf_t *out) {
  as_buf_t cur, nxt;
  int r = 0;
  if (t->nnorm == 0)
    return as_buf_append(out, s, n);
  as_buf_init(&cur);
  as_buf_init(&nxt);
  r = as_buf_append(&cur, s, n);
  for (size_t k = 0; r == 0 && k < t->nnorm; k++) {
    nxt.len = 0;
    r = norm_step(&t->norm[k], cur.data ? cur.data : "", cur.len, &nxt);
    as_buf_t tmp = cur;
    cur = nxt;
    nxt = tmp;
  }
  if (r == 0)
    r = as_buf_append(out, cur.data ? cur.data : "", cur.len);
  as_buf_free(&cur);
  as_buf_free(&nxt);
  return r;
}

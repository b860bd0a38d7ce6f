/* tok_pretok.c — pre-tokenizers: the steps that cut normalized text into
 * pieces before the model sees them. ByteLevel (GPT-2 regex + the byte ↔
 * unicode table), Split with the GPT-2 / Llama-3 / Qwen2 regexes (matched by
 * hand over code points, exactly as Oniguruma's backtracking would) or a
 * literal string, Metaspace, BertPreTokenizer, WhitespaceSplit and Digits. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

/* ---- pieces ------------------------------------------------------------------ */

void tok_pieces_init(tok_pieces_t *p) {
  as_buf_init(&p->text);
  p->v = NULL;
  p->n = p->cap = 0;
}

void tok_pieces_free(tok_pieces_t *p) {
  as_buf_free(&p->text);
  free(p->v);
  tok_pieces_init(p);
}

void tok_pieces_clear(tok_pieces_t *p) {
  p->text.len = 0;
  p->n = 0;
}

int tok_pieces_add(tok_pieces_t *p, const char *s, size_t len, int first) {
  if (len == 0)
    return 0;
  if (p->n == p->cap) {
    size_t nc = p->cap ? p->cap * 2 : 16;
    tok_piece_t *nv = realloc(p->v, nc * sizeof *nv);
    if (nv == NULL)
      return AS_ENOMEM;
    p->v = nv;
    p->cap = nc;
  }
  size_t off = p->text.len;
  int r = as_buf_append(&p->text, s, len);
  if (r != 0)
    return r;
  p->v[p->n].off = off;
  p->v[p->n].len = len;
  p->v[p->n].first = first;
  p->n++;
  return 0;
}

/* ---- the GPT-2 byte ↔ unicode table ------------------------------------------ */

static int byte_printable(unsigned b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t tok_byte_to_cp(uint8_t b) {
  if (byte_printable(b))
    return b;
  unsigned n = 0;
  for (unsigned k = 0; k < b; k++)
    n += !byte_printable(k);
  return 256 + n;
}

int tok_cp_to_byte(uint32_t cp) {
  if (cp < 256)
    return byte_printable(cp) ? (int)cp : -1;
  if (cp >= 256 + 68)
    return -1;
  unsigned n = cp - 256;
  for (unsigned k = 0; k < 256; k++)
    if (!byte_printable(k) && n-- == 0)
      return (int)k;
  return -1;
}

/* ---- regexes -------------------------------------------------------------------- */

static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int tok_regex_kind(const char *pattern) {
  if (strcmp(pattern, RE_GPT2) == 0)
    return TOK_RE_GPT2;
  if (strcmp(pattern, RE_LLAMA3) == 0)
    return TOK_RE_LLAMA3;
  if (strcmp(pattern, RE_QWEN2) == 0)
    return TOK_RE_QWEN2;
  return TOK_RE_NONE;
}

static int is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
static int is_other(uint32_t c) { return !tok_is_space(c) && !tok_is_letter(c) && !tok_is_number(c); }

static uint32_t fold(uint32_t c) {
  if (c >= 'A' && c <= 'Z')
    return c + 32;
  if (c == 0x17F) /* LATIN SMALL LETTER LONG S folds to s */
    return 's';
  return c;
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-insensitive when icase */
static size_t contraction(const uint32_t *c, size_t n, size_t i, int icase) {
  if (c[i] != '\'' || i + 1 >= n)
    return 0;
  uint32_t a = c[i + 1], b = i + 2 < n ? c[i + 2] : 0;
  if (icase) {
    a = fold(a);
    b = fold(b);
  }
  if (a == 's' || a == 't' || a == 'm' || a == 'd')
    return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
    return 3;
  return 0;
}

/* \s+(?!\S) then \s+, at a whitespace run starting at i */
static size_t space_tail(const uint32_t *c, size_t n, size_t i) {
  size_t j = i;
  while (j < n && tok_is_space(c[j]))
    j++;
  size_t len = j - i;
  if (j == n || len < 2)
    return len;
  return len - 1;
}

size_t tok_regex_match(int re, const uint32_t *c, size_t n, size_t i) {
  size_t k, j, p;
  if (re == TOK_RE_GPT2) {
    if ((k = contraction(c, n, i, 0)) != 0)
      return k;
    p = (c[i] == ' ' && i + 1 < n) ? i + 1 : i;
    if (tok_is_letter(c[p]) || tok_is_number(c[p]) || is_other(c[p])) {
      int (*cls)(uint32_t) = tok_is_letter(c[p]) ? tok_is_letter
                             : tok_is_number(c[p]) ? tok_is_number : is_other;
      for (j = p; j < n && cls(c[j]); j++)
        ;
      return j - i;
    }
    return space_tail(c, n, i);
  }
  /* Llama-3 and Qwen2 */
  if ((k = contraction(c, n, i, 1)) != 0)
    return k;
  if (!is_nl(c[i]) && !tok_is_letter(c[i]) && !tok_is_number(c[i]) && i + 1 < n &&
      tok_is_letter(c[i + 1])) {
    for (j = i + 1; j < n && tok_is_letter(c[j]); j++)
      ;
    return j - i;
  }
  if (tok_is_letter(c[i])) {
    for (j = i; j < n && tok_is_letter(c[j]); j++)
      ;
    return j - i;
  }
  if (tok_is_number(c[i])) {
    size_t maxd = re == TOK_RE_LLAMA3 ? 3 : 1;
    for (j = i; j < n && j - i < maxd && tok_is_number(c[j]); j++)
      ;
    return j - i;
  }
  p = (c[i] == ' ' && i + 1 < n) ? i + 1 : i;
  if (is_other(c[p])) {
    for (j = p; j < n && is_other(c[j]); j++)
      ;
    while (j < n && is_nl(c[j]))
      j++;
    return j - i;
  }
  /* \s*[\r\n]+ : up to the last newline of the whitespace run */
  size_t last = 0;
  int have = 0;
  for (j = i; j < n && tok_is_space(c[j]); j++)
    if (is_nl(c[j])) {
      last = j;
      have = 1;
    }
  if (have)
    return last + 1 - i;
  return space_tail(c, n, i);
}

/* ---- splitting ------------------------------------------------------------------- */

typedef struct seg_s {
  size_t b, e; /* byte range */
  int m;       /* a match (delimiter) */
} seg_t;

typedef struct segs_s {
  seg_t *v;
  size_t n, cap;
} segs_t;

static int seg_add(segs_t *s, size_t b, size_t e, int m) {
  if (b == e)
    return 0;
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 32;
    seg_t *nv = realloc(s->v, nc * sizeof *nv);
    if (nv == NULL)
      return AS_ENOMEM;
    s->v = nv;
    s->cap = nc;
  }
  s->v[s->n].b = b;
  s->v[s->n].e = e;
  s->v[s->n].m = m;
  s->n++;
  return 0;
}

/* Emits the pieces of s cut at the segments by behaviour (TOK_B_*). */
static int emit_segs(const char *s, const segs_t *g, int behavior, int first, tok_pieces_t *out) {
  int r = 0;
  size_t k = 0;
  while (r == 0 && k < g->n) {
    const seg_t *x = &g->v[k];
    size_t b = x->b, e = x->e;
    k++;
    switch (behavior) {
    case TOK_B_REMOVED:
      if (x->m)
        continue;
      break;
    case TOK_B_ISOLATED:
      break;
    case TOK_B_CONTIG:
      while (k < g->n && g->v[k].m == x->m)
        e = g->v[k++].e;
      break;
    case TOK_B_PREV: /* a delimiter joins the piece before it */
      if (!x->m && k < g->n && g->v[k].m)
        e = g->v[k++].e;
      break;
    case TOK_B_NEXT: /* a delimiter starts the next piece */
      if (x->m && k < g->n && !g->v[k].m)
        e = g->v[k++].e;
      break;
    }
    r = tok_pieces_add(out, s + b, e - b, first && b == 0);
  }
  return r;
}

static int decode_cps(const char *s, size_t n, uint32_t **cps, size_t **offs, size_t *ncp) {
  *cps = malloc((n + 1) * sizeof **cps);
  *offs = malloc((n + 1) * sizeof **offs);
  if (*cps == NULL || *offs == NULL) {
    free(*cps);
    free(*offs);
    return AS_ENOMEM;
  }
  size_t i = 0, k = 0;
  while (i < n) {
    (*offs)[k] = i;
    (*cps)[k++] = tok_utf8_next(s, n, &i);
  }
  (*offs)[k] = n;
  *ncp = k;
  return 0;
}

static int split_regex(const char *s, size_t n, int re, int behavior, int first, tok_pieces_t *out) {
  uint32_t *c;
  size_t *off, nc, i = 0;
  segs_t g = {0};
  int r = decode_cps(s, n, &c, &off, &nc);
  if (r != 0)
    return r;
  while (r == 0 && i < nc) {
    size_t k = tok_regex_match(re, c, nc, i);
    if (k == 0) { /* cannot happen with the recognised regexes; keep the char as a gap */
      r = seg_add(&g, off[i], off[i + 1], 0);
      i++;
      continue;
    }
    r = seg_add(&g, off[i], off[i + k], 1);
    i += k;
  }
  if (r == 0)
    r = emit_segs(s, &g, behavior, first, out);
  free(g.v);
  free(c);
  free(off);
  return r;
}

static int split_literal(const char *s, size_t n, const char *pat, size_t plen, int behavior,
                         int first, tok_pieces_t *out) {
  segs_t g = {0};
  size_t i = 0, run = 0;
  int r = 0;
  if (plen == 0)
    return tok_pieces_add(out, s, n, first);
  while (r == 0 && i + plen <= n) {
    if (memcmp(s + i, pat, plen) == 0) {
      r = seg_add(&g, run, i, 0);
      if (r == 0)
        r = seg_add(&g, i, i + plen, 1);
      i += plen;
      run = i;
    } else
      i++;
  }
  if (r == 0)
    r = seg_add(&g, run, n, 0);
  if (r == 0)
    r = emit_segs(s, &g, behavior, first, out);
  free(g.v);
  return r;
}

/* splits on characters for which pred is true */
static int split_pred(const char *s, size_t n, int (*pred)(uint32_t), int behavior, int first,
                      tok_pieces_t *out) {
  segs_t g = {0};
  size_t i = 0, run = 0;
  int r = 0;
  while (r == 0 && i < n) {
    size_t b = i;
    uint32_t cp = tok_utf8_next(s, n, &i);
    if (pred(cp)) {
      r = seg_add(&g, run, b, 0);
      if (r == 0)
        r = seg_add(&g, b, i, 1);
      run = i;
    }
  }
  if (r == 0)
    r = seg_add(&g, run, n, 0);
  if (r == 0)
    r = emit_segs(s, &g, behavior, first, out);
  free(g.v);
  return r;
}

static int is_bert_punc(uint32_t c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
         (c >= 123 && c <= 126) || tok_is_punct(c);
}

/* maps bytes to the byte-level alphabet */
static int bytelevel_map(const char *s, size_t n, int first, tok_pieces_t *out) {
  as_buf_t b;
  int r;
  as_buf_init(&b);
  r = as_buf_reserve(&b, n * 2);
  for (size_t i = 0; r == 0 && i < n; i++)
    r = tok_buf_putcp(&b, tok_byte_to_cp((uint8_t)s[i]));
  if (r == 0)
    r = tok_pieces_add(out, b.data, b.len, first);
  as_buf_free(&b);
  return r;
}

static int pre_step(const tok_step_t *st, const char *s, size_t n, int first, tok_pieces_t *out) {
  switch (st->type) {
  case TOK_P_BYTELEVEL: { /* f1 add_prefix_space, f2 use_regex */
    as_buf_t b;
    tok_pieces_t tmp;
    int r = 0;
    as_buf_init(&b);
    tok_pieces_init(&tmp);
    if (st->f1 && (n == 0 || s[0] != ' '))
      r = as_buf_append(&b, " ", 1);
    if (r == 0)
      r = as_buf_append(&b, s, n);
    if (r == 0 && st->f2)
      r = split_regex(b.data, b.len, TOK_RE_GPT2, TOK_B_ISOLATED, first, &tmp);
    else if (r == 0)
      r = tok_pieces_add(&tmp, b.data, b.len, first);
    for (size_t k = 0; r == 0 && k < tmp.n; k++)
      r = bytelevel_map(tmp.text.data + tmp.v[k].off, tmp.v[k].len, tmp.v[k].first, out);
    tok_pieces_free(&tmp);
    as_buf_free(&b);
    return r;
  }
  case TOK_P_SPLIT:
    if (st->re != TOK_RE_NONE)
      return split_regex(s, n, st->re, st->behavior, first, out);
    return split_literal(s, n, st->a, st->alen, st->behavior, first, out);
  case TOK_P_METASPACE: { /* a replacement; f1 prepend 0 never 1 always 2 first; f2 split */
    as_buf_t b;
    int r = 0;
    as_buf_init(&b);
    int starts = n >= st->alen && memcmp(s, st->a, st->alen) == 0;
    if (st->f1 != 0 && !(n >= 1 && s[0] == ' ') && !starts && (st->f1 == 1 || first))
      r = as_buf_append(&b, st->a, st->alen);
    for (size_t i = 0; r == 0 && i < n; i++)
      r = s[i] == ' ' ? as_buf_append(&b, st->a, st->alen) : as_buf_append(&b, s + i, 1);
    if (r == 0 && st->f2)
      r = split_literal(b.data ? b.data : "", b.len, st->a, st->alen, TOK_B_NEXT, first, out);
    else if (r == 0)
      r = tok_pieces_add(out, b.data, b.len, first);
    as_buf_free(&b);
    return r;
  }
  case TOK_P_BERT: {
    tok_pieces_t tmp;
    int r;
    tok_pieces_init(&tmp);
    r = split_pred(s, n, tok_is_space, TOK_B_REMOVED, first, &tmp);
    for (size_t k = 0; r == 0 && k < tmp.n; k++)
      r = split_pred(tmp.text.data + tmp.v[k].off, tmp.v[k].len, is_bert_punc, TOK_B_ISOLATED,
                     tmp.v[k].first, out);
    tok_pieces_free(&tmp);
    return r;
  }
  case TOK_P_WSSPLIT:
    return split_pred(s, n, tok_is_space, TOK_B_REMOVED, first, out);
  case TOK_P_DIGITS: /* f1 individual_digits */
    return split_pred(s, n, tok_is_number, st->f1 ? TOK_B_ISOLATED : TOK_B_CONTIG, first, out);
  }
  return AS_EINVAL;
}

int tok_pretokenize(const as_tokenizer_t *t, const char *s, size_t n, int first, tok_pieces_t *out) {
  tok_pieces_t a, b;
  int r = 0;
  if (t->npre == 0)
    return tok_pieces_add(out, s, n, first);
  if (t->npre == 1)
    return pre_step(&t->pre[0], s, n, first, out);
  tok_pieces_init(&a);
  tok_pieces_init(&b);
  r = tok_pieces_add(&a, s, n, first);
  for (size_t k = 0; r == 0 && k < t->npre; k++) {
    tok_pieces_t *dst = k + 1 == t->npre ? out : &b;
    if (dst == &b)
      tok_pieces_clear(&b);
    for (size_t i = 0; r == 0 && i < a.n; i++)
      r = pre_step(&t->pre[k], a.text.data + a.v[i].off, a.v[i].len, a.v[i].first, dst);
    tok_pieces_t tmp = a;
    a = b;
    b = tmp;
  }
  tok_pieces_free(&a);
  tok_pieces_free(&b);
  return r;
}

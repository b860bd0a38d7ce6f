/* tok_bpe.c — the BPE model of tokenizer.json, as the `tokenizers` library runs
 * it: a piece is split into characters (each looked up in the vocab; unknown
 * ones become <0xNN> byte tokens with byte_fallback, else the unk token, fused
 * when fuse_unk), then pairs are merged lowest rank first (leftmost on ties)
 * with a binary heap, exactly like tokenizers' Word::merge_all. ignore_merges
 * (Llama-3) takes a piece that is itself in the vocab as one token. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static int merges_grow(as_tokenizer_t *t) {
  size_t nc = t->merges_cap ? t->merges_cap * 2 : 1024;
  tok_merge_t *nv = malloc(nc * sizeof *nv);
  if (nv == NULL)
    return AS_ENOMEM;
  for (size_t i = 0; i < nc; i++)
    nv[i].key = UINT64_MAX;
  for (size_t i = 0; i < t->merges_cap; i++) {
    if (t->merges[i].key == UINT64_MAX)
      continue;
    size_t h = mix64(t->merges[i].key) & (nc - 1);
    while (nv[h].key != UINT64_MAX)
      h = (h + 1) & (nc - 1);
    nv[h] = t->merges[i];
  }
  free(t->merges);
  t->merges = nv;
  t->merges_cap = nc;
  return 0;
}

/* Inserts or replaces (a, b) → (rank, id): a later duplicate wins, as in the
 * HashMap the library builds. */
int tok_merges_put(as_tokenizer_t *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
  if ((t->merges_n + 1) * 2 > t->merges_cap) {
    int r = merges_grow(t);
    if (r != 0)
      return r;
  }
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  size_t h = mix64(key) & (t->merges_cap - 1);
  while (t->merges[h].key != UINT64_MAX && t->merges[h].key != key)
    h = (h + 1) & (t->merges_cap - 1);
  if (t->merges[h].key == UINT64_MAX)
    t->merges_n++;
  t->merges[h].key = key;
  t->merges[h].rank = rank;
  t->merges[h].id = id;
  return 0;
}

const tok_merge_t *tok_merges_get(const as_tokenizer_t *t, int32_t a, int32_t b) {
  if (t->merges_cap == 0)
    return NULL;
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  size_t h = mix64(key) & (t->merges_cap - 1);
  while (t->merges[h].key != UINT64_MAX) {
    if (t->merges[h].key == key)
      return &t->merges[h];
    h = (h + 1) & (t->merges_cap - 1);
  }
  return NULL;
}

typedef struct sym_s {
  int32_t c;         /* token id */
  int32_t prev, next;/* neighbours, -1 none */
  size_t len;        /* bytes; 0 once merged into its left neighbour */
} sym_t;

typedef struct mrg_s {
  int32_t rank;
  size_t pos;
  int32_t id;
} mrg_t;

typedef struct word_s {
  sym_t *s;
  size_t n, cap;
  mrg_t *h;          /* min-heap on (rank, pos) */
  size_t hn, hcap;
} word_t;

static int sym_add(word_t *w, int32_t id, size_t len) {
  if (w->n == w->cap) {
    size_t nc = w->cap ? w->cap * 2 : 32;
    sym_t *nv = realloc(w->s, nc * sizeof *nv);
    if (nv == NULL)
      return AS_ENOMEM;
    w->s = nv;
    w->cap = nc;
  }
  sym_t *x = &w->s[w->n];
  x->c = id;
  x->len = len;
  x->prev = (int32_t)w->n - 1;
  x->next = -1;
  if (w->n > 0)
    w->s[w->n - 1].next = (int32_t)w->n;
  w->n++;
  return 0;
}

static int mrg_less(const mrg_t *a, const mrg_t *b) {
  return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(word_t *w, int32_t rank, size_t pos, int32_t id) {
  if (w->hn == w->hcap) {
    size_t nc = w->hcap ? w->hcap * 2 : 32;
    mrg_t *nv = realloc(w->h, nc * sizeof *nv);
    if (nv == NULL)
      return AS_ENOMEM;
    w->h = nv;
    w->hcap = nc;
  }
  size_t i = w->hn++;
  mrg_t m = {rank, pos, id};
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!mrg_less(&m, &w->h[p]))
      break;
    w->h[i] = w->h[p];
    i = p;
  }
  w->h[i] = m;
  return 0;
}

static mrg_t heap_pop(word_t *w) {
  mrg_t top = w->h[0], last = w->h[--w->hn];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const mrg_t *best = &last;
    if (l < w->hn && mrg_less(&w->h[l], best)) {
      m = l;
      best = &w->h[l];
    }
    if (r < w->hn && mrg_less(&w->h[r], best))
      m = r;
    if (m == i)
      break;
    w->h[i] = w->h[m];
    i = m;
  }
  if (w->hn > 0)
    w->h[i] = last;
  return top;
}

static int merge_all(const as_tokenizer_t *t, word_t *w) {
  int r = 0;
  for (size_t i = 0; r == 0 && i + 1 < w->n; i++) {
    const tok_merge_t *m = tok_merges_get(t, w->s[i].c, w->s[i + 1].c);
    if (m != NULL)
      r = heap_push(w, m->rank, i, m->id);
  }
  while (r == 0 && w->hn > 0) {
    mrg_t top = heap_pop(w);
    sym_t *cur = &w->s[top.pos];
    if (cur->len == 0 || cur->next < 0)
      continue;
    size_t np = (size_t)cur->next;
    sym_t right = w->s[np];
    const tok_merge_t *m = tok_merges_get(t, cur->c, right.c);
    if (m == NULL || m->id != top.id)
      continue;
    cur->c = top.id;
    cur->len += right.len;
    cur->next = right.next;
    w->s[np].len = 0;
    if (right.next >= 0 && (size_t)right.next < w->n)
      w->s[right.next].prev = (int32_t)top.pos;
    if (cur->prev >= 0) {
      m = tok_merges_get(t, w->s[cur->prev].c, cur->c);
      if (m != NULL)
        r = heap_push(w, m->rank, (size_t)cur->prev, m->id);
    }
    if (r == 0 && cur->next >= 0) {
      m = tok_merges_get(t, cur->c, w->s[cur->next].c);
      if (m != NULL)
        r = heap_push(w, m->rank, top.pos, m->id);
    }
  }
  return r;
}

int tok_bpe_word(const as_tokenizer_t *t, const char *s, size_t n, as_ids_t *out) {
  word_t w = {0};
  int r = 0;
  int32_t unk = -1;
  size_t unk_len = 0;
  if (n == 0)
    return 0;
  if (t->ignore_merges) {
    int32_t id = tok_map_get(&t->vocab, s, n);
    if (id >= 0)
      return as_ids_push(out, id);
  }
  for (size_t i = 0; r == 0 && i < n;) {
    size_t b = i;
    tok_utf8_next(s, n, &i);
    int32_t id = tok_map_get(&t->vocab, s + b, i - b);
    if (id >= 0) {
      if (unk >= 0) {
        r = sym_add(&w, unk, unk_len);
        unk = -1;
      }
      if (r == 0)
        r = sym_add(&w, id, i - b);
      continue;
    }
    if (t->byte_fallback) {
      size_t k;
      for (k = b; k < i && t->byte_ids[(uint8_t)s[k]] >= 0; k++)
        ;
      if (k == i) {
        for (k = b; r == 0 && k < i; k++)
          r = sym_add(&w, t->byte_ids[(uint8_t)s[k]], 1);
        continue;
      }
    }
    if (t->unk_id >= 0) {
      if (unk >= 0 && t->fuse_unk)
        unk_len += i - b;
      else {
        if (unk >= 0)
          r = sym_add(&w, unk, unk_len);
        unk = t->unk_id;
        unk_len = i - b;
      }
    }
  }
  if (r == 0 && unk >= 0)
    r = sym_add(&w, unk, unk_len);
  if (r == 0)
    r = merge_all(t, &w);
  for (size_t i = 0; r == 0 && i < w.n; i++)
    if (w.s[i].len != 0)
      r = as_ids_push(out, w.s[i].c);
  free(w.s);
  free(w.h);
  return r;
}

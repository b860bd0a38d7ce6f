/* tokenizer.c — loading a Hugging Face tokenizer folder and the public API:
 * tokenizer.json (model, added tokens, normalizer, pre-tokenizer, decoder,
 * post-processor), tokenizer_config.json (special token strings, chat
 * template), generation_config.json (bos / eos / pad ids); encoding (added
 * token split → normalize → pre-tokenize → model → post-process) and the small
 * queries. Every field is type-checked: a bad file is an error naming the file
 * and the field, never a crash. See docs/tokenizers.md. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tok_int.h"

#define TOK_MAX_ID (1 << 22)      /* larger ids are refused (real vocabs are < 300k) */
#define TOK_MAX_DEPTH 16          /* Sequence nesting */
#define TOK_MAX_FILE (1u << 30)

int tok_err(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* ---- ids --------------------------------------------------------------------- */

void as_ids_init(as_ids_t *ids) {
  ids->v = NULL;
  ids->n = ids->cap = 0;
}

void as_ids_free(as_ids_t *ids) {
  if (ids == NULL)
    return;
  free(ids->v);
  as_ids_init(ids);
}

int as_ids_push(as_ids_t *ids, int32_t id) {
  if (ids == NULL)
    return AS_EINVAL;
  if (ids->n == ids->cap) {
    size_t nc = ids->cap ? ids->cap * 2 : 64;
    int32_t *nv = realloc(ids->v, nc * sizeof *nv);
    if (nv == NULL)
      return AS_ENOMEM;
    ids->v = nv;
    ids->cap = nc;
  }
  ids->v[ids->n++] = id;
  return 0;
}

/* ---- string map ---------------------------------------------------------------- */

static uint32_t hash_bytes(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 16777619u;
  }
  return h;
}

int tok_map_init(tok_map_t *m, const as_buf_t *arena, size_t expect) {
  size_t cap = 64;
  while (cap < expect * 2 + 2)
    cap *= 2;
  m->arena = arena;
  m->slots = malloc(cap * sizeof *m->slots);
  if (m->slots == NULL)
    return AS_ENOMEM;
  for (size_t i = 0; i < cap; i++)
    m->slots[i].id = -1;
  m->cap = cap;
  m->n = 0;
  return 0;
}

void tok_map_free(tok_map_t *m) {
  free(m->slots);
  m->slots = NULL;
  m->cap = m->n = 0;
}

static int map_grow(tok_map_t *m) {
  size_t nc = m->cap * 2;
  tok_slot_t *nv = malloc(nc * sizeof *nv);
  if (nv == NULL)
    return AS_ENOMEM;
  for (size_t i = 0; i < nc; i++)
    nv[i].id = -1;
  for (size_t i = 0; i < m->cap; i++) {
    if (m->slots[i].id < 0)
      continue;
    size_t h = m->slots[i].hash & (nc - 1);
    while (nv[h].id >= 0)
      h = (h + 1) & (nc - 1);
    nv[h] = m->slots[i];
  }
  free(m->slots);
  m->slots = nv;
  m->cap = nc;
  return 0;
}

int tok_map_put(tok_map_t *m, uint32_t off, uint32_t len, int32_t id) {
  if ((m->n + 1) * 2 > m->cap) {
    int r = map_grow(m);
    if (r != 0)
      return r;
  }
  const char *s = m->arena->data + off;
  uint32_t hv = hash_bytes(s, len);
  size_t h = hv & (m->cap - 1);
  while (m->slots[h].id >= 0) {
    tok_slot_t *x = &m->slots[h];
    if (x->hash == hv && x->len == len && memcmp(m->arena->data + x->off, s, len) == 0) {
      x->id = id;
      return 0;
    }
    h = (h + 1) & (m->cap - 1);
  }
  m->slots[h].off = off;
  m->slots[h].len = len;
  m->slots[h].hash = hv;
  m->slots[h].id = id;
  m->n++;
  return 0;
}

int32_t tok_map_get(const tok_map_t *m, const char *s, size_t len) {
  if (m->cap == 0)
    return -1;
  uint32_t hv = hash_bytes(s, len);
  size_t h = hv & (m->cap - 1);
  while (m->slots[h].id >= 0) {
    const tok_slot_t *x = &m->slots[h];
    if (x->hash == hv && x->len == len && memcmp(m->arena->data + x->off, s, len) == 0)
      return x->id;
    h = (h + 1) & (m->cap - 1);
  }
  return -1;
}

/* ---- queries ------------------------------------------------------------------- */

const char *tok_id_str(const as_tokenizer_t *t, int32_t id, size_t *len) {
  if (id < 0 || id >= t->nids || !(t->flags[id] & TOK_F_VALID))
    return NULL;
  *len = t->rev[id].len;
  return t->arena.data + t->rev[id].off;
}

int32_t as_tokenizer_vocab_size(const as_tokenizer_t *tok) { return tok ? tok->nids : 0; }
int32_t as_tokenizer_bos_id(const as_tokenizer_t *tok) { return tok ? tok->bos_id : -1; }
int32_t as_tokenizer_pad_id(const as_tokenizer_t *tok) { return tok ? tok->pad_id : -1; }

size_t as_tokenizer_eos_ids(const as_tokenizer_t *tok, const int32_t **ids) {
  if (tok == NULL) {
    *ids = NULL;
    return 0;
  }
  *ids = tok->eos_ids;
  return tok->neos;
}

int as_tokenizer_is_eos(const as_tokenizer_t *tok, int32_t id) {
  for (size_t i = 0; tok && i < tok->neos; i++)
    if (tok->eos_ids[i] == id)
      return 1;
  return 0;
}

int as_tokenizer_is_special(const as_tokenizer_t *tok, int32_t id) {
  return tok && id >= 0 && id < tok->nids && (tok->flags[id] & TOK_F_SPECIAL) != 0;
}

int32_t as_tokenizer_token_id(const as_tokenizer_t *tok, const char *s, size_t len) {
  if (tok == NULL || s == NULL)
    return -1;
  for (size_t i = 0; i < tok->nadded; i++)
    if (tok->added[i].len == len && memcmp(tok->added[i].s, s, len) == 0)
      return tok->added[i].id;
  return tok_map_get(&tok->vocab, s, len);
}

const char *as_tokenizer_token(const as_tokenizer_t *tok, int32_t id, size_t *len) {
  size_t l = 0;
  const char *s = tok ? tok_id_str(tok, id, &l) : NULL;
  if (len)
    *len = l;
  return s;
}

/* ---- freeing ------------------------------------------------------------------- */

static void steps_free(tok_step_t *v, size_t n) {
  if (v == NULL)
    return;
  for (size_t i = 0; i < n; i++) {
    free(v[i].a);
    free(v[i].b);
  }
  free(v);
}

void as_tokenizer_free(as_tokenizer_t *t) {
  if (t == NULL)
    return;
  as_buf_free(&t->arena);
  tok_map_free(&t->vocab);
  free(t->rev);
  free(t->flags);
  free(t->merges);
  free(t->wp_prefix);
  steps_free(t->norm, t->nnorm);
  steps_free(t->pre, t->npre);
  steps_free(t->dec, t->ndec);
  for (size_t i = 0; i < t->nadded; i++)
    free(t->added[i].s);
  free(t->added);
  free(t->post_pre);
  free(t->post_suf);
  free(t->eos_ids);
  free(t->bos_token);
  free(t->eos_token);
  free(t->chat_template);
  free(t);
}

/* ---- JSON helpers -------------------------------------------------------------- */

typedef struct ld_s {
  as_tokenizer_t *t;
  char *err;
  size_t errlen;
  const char *file;
} ld_t;

#define LERR(L, code, ...) tok_err((L)->err, (L)->errlen, (code), __VA_ARGS__)

static cJSON *jget(const cJSON *o, const char *k) {
  return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

/* optional string field: 0 with *out NULL when absent or null */
static int jstr(ld_t *L, const cJSON *o, const char *path, const char *k, const char **out) {
  cJSON *v = jget(o, k);
  *out = NULL;
  if (v == NULL || cJSON_IsNull(v))
    return 0;
  if (!cJSON_IsString(v) || v->valuestring == NULL)
    return LERR(L, AS_EINVAL, "%s: %s.%s: expected a string", L->file, path, k);
  if (!tok_utf8_valid(v->valuestring, strlen(v->valuestring)))
    return LERR(L, AS_EINVAL, "%s: %s.%s: not valid UTF-8", L->file, path, k);
  *out = v->valuestring;
  return 0;
}

/* optional boolean field (default def) */
static int jbool(ld_t *L, const cJSON *o, const char *path, const char *k, int def, int *out) {
  cJSON *v = jget(o, k);
  *out = def;
  if (v == NULL || cJSON_IsNull(v))
    return 0;
  if (!cJSON_IsBool(v))
    return LERR(L, AS_EINVAL, "%s: %s.%s: expected true or false", L->file, path, k);
  *out = cJSON_IsTrue(v);
  return 0;
}

/* an integral number in [lo, hi] */
static int jint_val(const cJSON *v, long long lo, long long hi, long long *out) {
  if (!cJSON_IsNumber(v))
    return 0;
  double d = v->valuedouble;
  if (!(d >= (double)lo && d <= (double)hi) || d != (double)(long long)d)
    return 0;
  *out = (long long)d;
  return 1;
}

static int jint(ld_t *L, const cJSON *o, const char *path, const char *k, long long lo, long long hi,
                long long def, long long *out) {
  cJSON *v = jget(o, k);
  *out = def;
  if (v == NULL || cJSON_IsNull(v))
    return 0;
  if (!jint_val(v, lo, hi, out))
    return LERR(L, AS_EINVAL, "%s: %s.%s: expected an integer in [%lld, %lld]", L->file, path, k,
                lo, hi);
  return 0;
}

static char *dupn(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p != NULL) {
    memcpy(p, s, n);
    p[n] = 0;
  }
  return p;
}

static int arena_add(as_tokenizer_t *t, const char *s, size_t n, uint32_t *off) {
  if (t->arena.len + n >= UINT32_MAX)
    return AS_ETOOBIG;
  *off = (uint32_t)t->arena.len;
  return as_buf_append(&t->arena, s, n);
}

/* ---- pipeline steps ------------------------------------------------------------- */

typedef struct steps_s {
  tok_step_t *v;
  size_t n, cap;
} steps_t;

static tok_step_t *step_new(steps_t *s) {
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 8;
    tok_step_t *nv = realloc(s->v, nc * sizeof *nv);
    if (nv == NULL)
      return NULL;
    s->v = nv;
    s->cap = nc;
  }
  tok_step_t *x = &s->v[s->n++];
  memset(x, 0, sizeof *x);
  return x;
}

static int step_str(tok_step_t *x, int which, const char *s) {
  size_t n = strlen(s);
  char *p = dupn(s, n);
  if (p == NULL)
    return AS_ENOMEM;
  if (which == 0) {
    x->a = p;
    x->alen = n;
  } else {
    x->b = p;
    x->blen = n;
  }
  return 0;
}

/* pattern {"String": s} or {"Regex": s}: sets a (literal) or re; regex only when allowed */
static int parse_pattern(ld_t *L, const cJSON *o, const char *path, tok_step_t *x, int regex_ok) {
  cJSON *p = jget(o, "pattern");
  const char *s;
  if (!cJSON_IsObject(p))
    return LERR(L, AS_EINVAL, "%s: %s.pattern: expected an object {\"String\"|\"Regex\": ...}",
                L->file, path);
  if (jget(p, "String") != NULL) {
    int r = jstr(L, p, path, "String", &s);
    if (r != 0)
      return r;
    if (s == NULL)
      return LERR(L, AS_EINVAL, "%s: %s.pattern.String: expected a string", L->file, path);
    return step_str(x, 0, s);
  }
  int r = jstr(L, p, path, "Regex", &s);
  if (r != 0)
    return r;
  if (s == NULL)
    return LERR(L, AS_EINVAL, "%s: %s.pattern: expected String or Regex", L->file, path);
  x->re = regex_ok ? tok_regex_kind(s) : TOK_RE_NONE;
  if (x->re == TOK_RE_NONE)
    return LERR(L, AS_EINVAL,
                "%s: %s.pattern.Regex: unsupported regex (only the GPT-2, Llama-3 and Qwen2 "
                "pre-tokenizer regexes are implemented): %.80s",
                L->file, path, s);
  return 0;
}

typedef int (*step_parse_fn)(ld_t *L, const cJSON *o, const char *path, steps_t *out, int depth);

/* What normalizers, pre-tokenizers and decoders share: null is no step, the
 * value must be an object with a "type", and a "Sequence" lists more of the
 * same under seq_key (parsed here with fn). Returns an error, or 0 with
 * *type set to the step's type (NULL when the object was handled here). */
static int step_head(ld_t *L, const cJSON *o, const char *path, int depth, const char *seq_key,
                     step_parse_fn fn, steps_t *out, const char **type) {
  int r;
  *type = NULL;
  if (o == NULL || cJSON_IsNull(o))
    return 0;
  if (!cJSON_IsObject(o))
    return LERR(L, AS_EINVAL, "%s: %s: expected an object or null", L->file, path);
  if (depth > TOK_MAX_DEPTH)
    return LERR(L, AS_EINVAL, "%s: %s: nested too deeply", L->file, path);
  const char *t;
  if ((r = jstr(L, o, path, "type", &t)) != 0)
    return r;
  if (t == NULL)
    return LERR(L, AS_EINVAL, "%s: %s.type: missing", L->file, path);
  if (strcmp(t, "Sequence") == 0) {
    cJSON *a = jget(o, seq_key), *e;
    if (!cJSON_IsArray(a))
      return LERR(L, AS_EINVAL, "%s: %s.%s: expected an array", L->file, path, seq_key);
    cJSON_ArrayForEach(e, a) if ((r = fn(L, e, path, out, depth + 1)) != 0) return r;
    return 0;
  }
  *type = t;
  return 0;
}

static int parse_normalizer(ld_t *L, const cJSON *o, const char *path, steps_t *out, int depth) {
  const char *type;
  int f;
  int r = step_head(L, o, path, depth, "normalizers", parse_normalizer, out, &type);
  if (r != 0 || type == NULL)
    return r;
  tok_step_t *x = step_new(out);
  if (x == NULL)
    return AS_ENOMEM;
  if (strcmp(type, "NFC") == 0)
    x->type = TOK_N_NFC;
  else if (strcmp(type, "NFD") == 0)
    x->type = TOK_N_NFD;
  else if (strcmp(type, "Lowercase") == 0)
    x->type = TOK_N_LOWER;
  else if (strcmp(type, "StripAccents") == 0)
    x->type = TOK_N_STRIP_ACCENTS;
  else if (strcmp(type, "BertNormalizer") == 0) {
    x->type = TOK_N_BERT;
    if ((r = jbool(L, o, path, "clean_text", 1, &x->f1)) != 0 ||
        (r = jbool(L, o, path, "handle_chinese_chars", 1, &x->f2)) != 0 ||
        (r = jbool(L, o, path, "lowercase", 1, &x->f4)) != 0 ||
        (r = jbool(L, o, path, "strip_accents", x->f4, &x->f3)) != 0)
      return r;
  } else if (strcmp(type, "Prepend") == 0) {
    const char *s;
    x->type = TOK_N_PREPEND;
    if ((r = jstr(L, o, path, "prepend", &s)) != 0)
      return r;
    if (s == NULL)
      return LERR(L, AS_EINVAL, "%s: %s.prepend: missing", L->file, path);
    return step_str(x, 0, s);
  } else if (strcmp(type, "Replace") == 0) {
    const char *s;
    x->type = TOK_N_REPLACE;
    if ((r = parse_pattern(L, o, path, x, 0)) != 0 || (r = jstr(L, o, path, "content", &s)) != 0)
      return r;
    if (s == NULL)
      return LERR(L, AS_EINVAL, "%s: %s.content: missing", L->file, path);
    return step_str(x, 1, s);
  } else if (strcmp(type, "Strip") == 0) {
    x->type = TOK_N_STRIP;
    if ((r = jbool(L, o, path, "strip_left", 1, &x->f1)) != 0 ||
        (r = jbool(L, o, path, "strip_right", 1, &x->f2)) != 0)
      return r;
  } else
    return LERR(L, AS_EINVAL, "%s: %s.type: unsupported normalizer \"%s\"", L->file, path, type);
  (void)f;
  return 0;
}

static int parse_behavior(ld_t *L, const cJSON *o, const char *path, int *out) {
  const char *b;
  int r = jstr(L, o, path, "behavior", &b);
  if (r != 0)
    return r;
  if (b == NULL || strcmp(b, "Isolated") == 0)
    *out = TOK_B_ISOLATED;
  else if (strcmp(b, "Removed") == 0)
    *out = TOK_B_REMOVED;
  else if (strcmp(b, "MergedWithPrevious") == 0)
    *out = TOK_B_PREV;
  else if (strcmp(b, "MergedWithNext") == 0)
    *out = TOK_B_NEXT;
  else if (strcmp(b, "Contiguous") == 0)
    *out = TOK_B_CONTIG;
  else
    return LERR(L, AS_EINVAL, "%s: %s.behavior: unknown \"%s\"", L->file, path, b);
  return 0;
}

/* Metaspace's prepend scheme: f1 = 0 never, 1 always, 2 first */
static int parse_prepend_scheme(ld_t *L, const cJSON *o, const char *path, int *out) {
  const char *s;
  int r = jstr(L, o, path, "prepend_scheme", &s), add;
  if (r != 0)
    return r;
  if (s == NULL) { /* older files: add_prefix_space */
    if ((r = jbool(L, o, path, "add_prefix_space", 1, &add)) != 0)
      return r;
    *out = add ? 1 : 0;
  } else if (strcmp(s, "always") == 0)
    *out = 1;
  else if (strcmp(s, "first") == 0)
    *out = 2;
  else if (strcmp(s, "never") == 0)
    *out = 0;
  else
    return LERR(L, AS_EINVAL, "%s: %s.prepend_scheme: unknown \"%s\"", L->file, path, s);
  return 0;
}

static int parse_replacement(ld_t *L, const cJSON *o, const char *path, tok_step_t *x) {
  const char *s;
  int r = jstr(L, o, path, "replacement", &s);
  if (r != 0)
    return r;
  return step_str(x, 0, s ? s : "\xE2\x96\x81");
}

static int parse_pretok(ld_t *L, const cJSON *o, const char *path, steps_t *out, int depth) {
  const char *type;
  int r = step_head(L, o, path, depth, "pretokenizers", parse_pretok, out, &type);
  if (r != 0 || type == NULL)
    return r;
  tok_step_t *x = step_new(out);
  if (x == NULL)
    return AS_ENOMEM;
  if (strcmp(type, "ByteLevel") == 0) {
    x->type = TOK_P_BYTELEVEL;
    if ((r = jbool(L, o, path, "add_prefix_space", 1, &x->f1)) != 0 ||
        (r = jbool(L, o, path, "use_regex", 1, &x->f2)) != 0)
      return r;
  } else if (strcmp(type, "Split") == 0) {
    int inv;
    x->type = TOK_P_SPLIT;
    if ((r = parse_pattern(L, o, path, x, 1)) != 0 || (r = parse_behavior(L, o, path, &x->behavior)) != 0 ||
        (r = jbool(L, o, path, "invert", 0, &inv)) != 0)
      return r;
    if (inv)
      return LERR(L, AS_EINVAL, "%s: %s.invert: true is not supported", L->file, path);
  } else if (strcmp(type, "Metaspace") == 0) {
    x->type = TOK_P_METASPACE;
    if ((r = parse_replacement(L, o, path, x)) != 0 || (r = parse_prepend_scheme(L, o, path, &x->f1)) != 0 ||
        (r = jbool(L, o, path, "split", 1, &x->f2)) != 0)
      return r;
  } else if (strcmp(type, "BertPreTokenizer") == 0)
    x->type = TOK_P_BERT;
  else if (strcmp(type, "WhitespaceSplit") == 0)
    x->type = TOK_P_WSSPLIT;
  else if (strcmp(type, "Digits") == 0) {
    x->type = TOK_P_DIGITS;
    if ((r = jbool(L, o, path, "individual_digits", 0, &x->f1)) != 0)
      return r;
  } else
    return LERR(L, AS_EINVAL, "%s: %s.type: unsupported pre-tokenizer \"%s\"", L->file, path, type);
  return 0;
}

static int parse_decoder(ld_t *L, const cJSON *o, const char *path, steps_t *out, int depth) {
  const char *type;
  int r = step_head(L, o, path, depth, "decoders", parse_decoder, out, &type);
  if (r != 0 || type == NULL)
    return r;
  tok_step_t *x = step_new(out);
  if (x == NULL)
    return AS_ENOMEM;
  if (strcmp(type, "ByteLevel") == 0)
    x->type = TOK_D_BYTELEVEL;
  else if (strcmp(type, "ByteFallback") == 0)
    x->type = TOK_D_BYTEFALLBACK;
  else if (strcmp(type, "Fuse") == 0)
    x->type = TOK_D_FUSE;
  else if (strcmp(type, "Replace") == 0) {
    const char *s;
    x->type = TOK_D_REPLACE;
    if ((r = parse_pattern(L, o, path, x, 0)) != 0 || (r = jstr(L, o, path, "content", &s)) != 0)
      return r;
    if (s == NULL)
      return LERR(L, AS_EINVAL, "%s: %s.content: missing", L->file, path);
    return step_str(x, 1, s);
  } else if (strcmp(type, "Strip") == 0) {
    const char *s;
    long long a, b;
    x->type = TOK_D_STRIP;
    if ((r = jstr(L, o, path, "content", &s)) != 0 ||
        (r = jint(L, o, path, "start", 0, 1 << 20, 0, &a)) != 0 ||
        (r = jint(L, o, path, "stop", 0, 1 << 20, 0, &b)) != 0)
      return r;
    if (s == NULL || s[0] == 0)
      return LERR(L, AS_EINVAL, "%s: %s.content: expected one character", L->file, path);
    size_t i = 0;
    tok_utf8_next(s, strlen(s), &i);
    if ((r = step_str(x, 0, s)) != 0)
      return r;
    x->alen = i; /* one character */
    x->f1 = (int)a;
    x->f2 = (int)b;
  } else if (strcmp(type, "Metaspace") == 0) {
    x->type = TOK_D_METASPACE;
    if ((r = parse_replacement(L, o, path, x)) != 0 || (r = parse_prepend_scheme(L, o, path, &x->f1)) != 0)
      return r;
    x->f1 = x->f1 != 0;
  } else if (strcmp(type, "WordPiece") == 0) {
    const char *s;
    x->type = TOK_D_WORDPIECE;
    if ((r = jstr(L, o, path, "prefix", &s)) != 0 || (r = step_str(x, 0, s ? s : "##")) != 0 ||
        (r = jbool(L, o, path, "cleanup", 1, &x->f1)) != 0)
      return r;
  } else
    return LERR(L, AS_EINVAL, "%s: %s.type: unsupported decoder \"%s\"", L->file, path, type);
  return 0;
}

/* ---- post-processor ---------------------------------------------------------- */

static int ids_append(int32_t **v, size_t *n, const int32_t *src, size_t k, int front) {
  int32_t *nv = realloc(*v, (*n + k + 1) * sizeof *nv);
  if (nv == NULL)
    return AS_ENOMEM;
  if (front) {
    memmove(nv + k, nv, *n * sizeof *nv);
    memcpy(nv, src, k * sizeof *nv);
  } else
    memcpy(nv + *n, src, k * sizeof *nv);
  *v = nv;
  *n += k;
  return 0;
}

static int id_ok(const as_tokenizer_t *t, long long id) { return id >= 0 && id < t->nids; }

static int parse_post(ld_t *L, const cJSON *o, const char *path, int depth) {
  as_tokenizer_t *t = L->t;
  const char *type;
  int r;
  if (o == NULL || cJSON_IsNull(o))
    return 0;
  if (!cJSON_IsObject(o))
    return LERR(L, AS_EINVAL, "%s: %s: expected an object or null", L->file, path);
  if (depth > TOK_MAX_DEPTH)
    return LERR(L, AS_EINVAL, "%s: %s: nested too deeply", L->file, path);
  if ((r = jstr(L, o, path, "type", &type)) != 0)
    return r;
  if (type == NULL)
    return LERR(L, AS_EINVAL, "%s: %s.type: missing", L->file, path);
  if (strcmp(type, "Sequence") == 0) {
    cJSON *a = jget(o, "processors"), *e;
    if (!cJSON_IsArray(a))
      return LERR(L, AS_EINVAL, "%s: %s.processors: expected an array", L->file, path);
    cJSON_ArrayForEach(e, a) if ((r = parse_post(L, e, path, depth + 1)) != 0) return r;
    return 0;
  }
  if (strcmp(type, "ByteLevel") == 0)
    return 0;
  int32_t pre[64], suf[64];
  size_t npre = 0, nsuf = 0;
  if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0) {
    cJSON *cls = jget(o, "cls"), *sep = jget(o, "sep");
    long long a, b;
    if (!cJSON_IsArray(cls) || cJSON_GetArraySize(cls) != 2 ||
        !jint_val(cJSON_GetArrayItem(cls, 1), 0, TOK_MAX_ID, &a) || !id_ok(t, a) ||
        !cJSON_IsArray(sep) || cJSON_GetArraySize(sep) != 2 ||
        !jint_val(cJSON_GetArrayItem(sep, 1), 0, TOK_MAX_ID, &b) || !id_ok(t, b))
      return LERR(L, AS_EINVAL, "%s: %s: cls and sep must be [token, id] with a known id", L->file,
                  path);
    pre[npre++] = (int32_t)a;
    suf[nsuf++] = (int32_t)b;
  } else if (strcmp(type, "TemplateProcessing") == 0) {
    cJSON *single = jget(o, "single"), *sp = jget(o, "special_tokens"), *e;
    int seen = 0;
    if (!cJSON_IsArray(single))
      return LERR(L, AS_EINVAL, "%s: %s.single: expected an array", L->file, path);
    if (sp != NULL && !cJSON_IsObject(sp) && !cJSON_IsNull(sp))
      return LERR(L, AS_EINVAL, "%s: %s.special_tokens: expected an object", L->file, path);
    cJSON_ArrayForEach(e, single) {
      cJSON *st = jget(e, "SpecialToken"), *sq = jget(e, "Sequence");
      if (cJSON_IsObject(sq)) {
        if (seen)
          return LERR(L, AS_EINVAL, "%s: %s.single: more than one Sequence", L->file, path);
        seen = 1;
        continue;
      }
      const char *name;
      if (!cJSON_IsObject(st) || (r = jstr(L, st, path, "id", &name)) != 0 || name == NULL)
        return LERR(L, AS_EINVAL, "%s: %s.single: expected SpecialToken or Sequence items", L->file,
                    path);
      cJSON *def = jget(sp, name), *ids = jget(def, "ids"), *x;
      if (!cJSON_IsArray(ids))
        return LERR(L, AS_EINVAL, "%s: %s.special_tokens.%s.ids: expected an array", L->file, path,
                    name);
      cJSON_ArrayForEach(x, ids) {
        long long id;
        if (!jint_val(x, 0, TOK_MAX_ID, &id) || !id_ok(t, id))
          return LERR(L, AS_EINVAL, "%s: %s.special_tokens.%s.ids: not a known id", L->file, path,
                      name);
        if (npre >= 64 || nsuf >= 64)
          return LERR(L, AS_EINVAL, "%s: %s.single: too many special tokens", L->file, path);
        if (seen)
          suf[nsuf++] = (int32_t)id;
        else
          pre[npre++] = (int32_t)id;
      }
    }
    if (!seen)
      return LERR(L, AS_EINVAL, "%s: %s.single: no Sequence", L->file, path);
  } else
    return LERR(L, AS_EINVAL, "%s: %s.type: unsupported post-processor \"%s\"", L->file, path, type);
  /* a later processor wraps what the earlier ones made */
  if ((r = ids_append(&t->post_pre, &t->npost_pre, pre, npre, 1)) != 0 ||
      (r = ids_append(&t->post_suf, &t->npost_suf, suf, nsuf, 0)) != 0)
    return r;
  return 0;
}

/* ---- model ------------------------------------------------------------------------- */

static int parse_vocab(ld_t *L, const cJSON *model) {
  as_tokenizer_t *t = L->t;
  cJSON *v = jget(model, "vocab"), *e;
  int r;
  if (!cJSON_IsObject(v))
    return LERR(L, AS_EINVAL, "%s: model.vocab: expected an object of token → id", L->file);
  if ((r = tok_map_init(&t->vocab, &t->arena, (size_t)cJSON_GetArraySize(v))) != 0)
    return r;
  cJSON_ArrayForEach(e, v) {
    long long id;
    uint32_t off;
    if (e->string == NULL || !jint_val(e, 0, TOK_MAX_ID - 1, &id))
      return LERR(L, AS_EINVAL, "%s: model.vocab: the id of \"%.40s\" is not an integer in [0, %d)",
                  L->file, e->string ? e->string : "?", TOK_MAX_ID);
    size_t n = strlen(e->string);
    if (!tok_utf8_valid(e->string, n))
      return LERR(L, AS_EINVAL, "%s: model.vocab: token %lld is not valid UTF-8", L->file, id);
    if ((r = arena_add(t, e->string, n, &off)) != 0 || (r = tok_map_put(&t->vocab, off, (uint32_t)n, (int32_t)id)) != 0)
      return r;
    if (id + 1 > t->nids)
      t->nids = (int32_t)id + 1;
  }
  return 0;
}

static int parse_added(ld_t *L, const cJSON *root) {
  as_tokenizer_t *t = L->t;
  cJSON *a = jget(root, "added_tokens"), *e;
  int r;
  if (a == NULL || cJSON_IsNull(a))
    return 0;
  if (!cJSON_IsArray(a))
    return LERR(L, AS_EINVAL, "%s: added_tokens: expected an array", L->file);
  size_t n = (size_t)cJSON_GetArraySize(a), i = 0;
  t->added = calloc(n ? n : 1, sizeof *t->added);
  if (t->added == NULL)
    return AS_ENOMEM;
  cJSON_ArrayForEach(e, a) {
    tok_added_t *x = &t->added[i];
    const char *s;
    long long id;
    int sp, ls, rs, sw, nz;
    char path[48];
    snprintf(path, sizeof path, "added_tokens[%zu]", i);
    if (!cJSON_IsObject(e))
      return LERR(L, AS_EINVAL, "%s: %s: expected an object", L->file, path);
    if ((r = jstr(L, e, path, "content", &s)) != 0 || (r = jint(L, e, path, "id", 0, TOK_MAX_ID - 1, -1, &id)) != 0 ||
        (r = jbool(L, e, path, "special", 0, &sp)) != 0 || (r = jbool(L, e, path, "lstrip", 0, &ls)) != 0 ||
        (r = jbool(L, e, path, "rstrip", 0, &rs)) != 0 || (r = jbool(L, e, path, "single_word", 0, &sw)) != 0 ||
        (r = jbool(L, e, path, "normalized", !sp, &nz)) != 0)
      return r;
    if (s == NULL || s[0] == 0 || id < 0)
      return LERR(L, AS_EINVAL, "%s: %s: needs a non-empty content and an id", L->file, path);
    x->len = strlen(s);
    if ((x->s = dupn(s, x->len)) == NULL)
      return AS_ENOMEM;
    x->id = (int32_t)id;
    x->special = (uint8_t)sp;
    x->lstrip = (uint8_t)ls;
    x->rstrip = (uint8_t)rs;
    x->single_word = (uint8_t)sw;
    x->normalized = (uint8_t)nz;
    t->has_norm_added |= nz;
    if (id + 1 > t->nids)
      t->nids = (int32_t)id + 1;
    i++;
    t->nadded = i;
  }
  return 0;
}

/* builds id → string (model vocab, then added tokens) */
static int build_rev(ld_t *L) {
  as_tokenizer_t *t = L->t;
  int r;
  t->rev = calloc((size_t)t->nids + 1, sizeof *t->rev);
  t->flags = calloc((size_t)t->nids + 1, 1);
  if (t->rev == NULL || t->flags == NULL)
    return AS_ENOMEM;
  for (size_t i = 0; i < t->vocab.cap; i++) {
    const tok_slot_t *x = &t->vocab.slots[i];
    if (x->id < 0)
      continue;
    t->rev[x->id].off = x->off;
    t->rev[x->id].len = x->len;
    t->flags[x->id] |= TOK_F_VALID;
  }
  for (size_t i = 0; i < t->nadded; i++) {
    tok_added_t *x = &t->added[i];
    uint32_t off;
    if (!tok_utf8_valid(x->s, x->len))
      return LERR(L, AS_EINVAL, "%s: added_tokens[%zu].content: not valid UTF-8", L->file, i);
    if ((r = arena_add(t, x->s, x->len, &off)) != 0)
      return r;
    t->rev[x->id].off = off;
    t->rev[x->id].len = (uint32_t)x->len;
    t->added_first[(uint8_t)x->s[0] >> 3] |= (uint8_t)(1u << ((uint8_t)x->s[0] & 7));
    t->flags[x->id] = TOK_F_VALID | TOK_F_ADDED | (x->special ? TOK_F_SPECIAL : 0);
  }
  return 0;
}

static int parse_merges(ld_t *L, const cJSON *model) {
  as_tokenizer_t *t = L->t;
  cJSON *m = jget(model, "merges"), *e;
  as_buf_t cat;
  int r = 0;
  int32_t rank = 0;
  if (m == NULL || cJSON_IsNull(m))
    return 0;
  if (!cJSON_IsArray(m))
    return LERR(L, AS_EINVAL, "%s: model.merges: expected an array", L->file);
  as_buf_init(&cat);
  cJSON_ArrayForEach(e, m) {
    const char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    if (cJSON_IsString(e) && e->valuestring != NULL) {
      const char *sp = strchr(e->valuestring, ' ');
      if (sp != NULL && strchr(sp + 1, ' ') == NULL) {
        a = e->valuestring;
        al = (size_t)(sp - a);
        b = sp + 1;
        bl = strlen(b);
      }
    } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
               cJSON_IsString(e->child->next) && e->child->valuestring && e->child->next->valuestring) {
      a = e->child->valuestring;
      al = strlen(a);
      b = e->child->next->valuestring;
      bl = strlen(b);
    }
    if (a == NULL) {
      r = LERR(L, AS_EINVAL, "%s: model.merges[%d]: expected \"a b\" or [\"a\", \"b\"]", L->file, rank);
      break;
    }
    int32_t ia = tok_map_get(&t->vocab, a, al), ib = tok_map_get(&t->vocab, b, bl), im;
    cat.len = 0;
    if ((r = as_buf_append(&cat, a, al)) != 0 || (r = as_buf_append(&cat, b, bl)) != 0)
      break;
    im = tok_map_get(&t->vocab, cat.data ? cat.data : "", cat.len);
    if (ia < 0 || ib < 0 || im < 0) {
      r = LERR(L, AS_EINVAL, "%s: model.merges[%d]: a token of \"%.*s\" + \"%.*s\" is not in the vocab",
               L->file, rank, (int)(al > 40 ? 40 : al), a, (int)(bl > 40 ? 40 : bl), b);
      break;
    }
    if ((r = tok_merges_put(t, ia, ib, rank, im)) != 0)
      break;
    rank++;
  }
  as_buf_free(&cat);
  return r;
}

static int parse_model(ld_t *L, const cJSON *root) {
  as_tokenizer_t *t = L->t;
  cJSON *model = jget(root, "model");
  const char *type, *unk;
  int r;
  if (!cJSON_IsObject(model))
    return LERR(L, AS_EINVAL, "%s: model: missing or not an object", L->file);
  if ((r = jstr(L, model, "model", "type", &type)) != 0)
    return r;
  if (type == NULL)
    type = jget(model, "merges") != NULL ? "BPE" : "";
  if ((r = parse_vocab(L, model)) != 0)
    return r;
  if ((r = jstr(L, model, "model", "unk_token", &unk)) != 0)
    return r;
  if (strcmp(type, "BPE") == 0) {
    const char *pfx, *sfx;
    t->model = TOK_MODEL_BPE;
    if ((r = jbool(L, model, "model", "fuse_unk", 0, &t->fuse_unk)) != 0 ||
        (r = jbool(L, model, "model", "byte_fallback", 0, &t->byte_fallback)) != 0 ||
        (r = jbool(L, model, "model", "ignore_merges", 0, &t->ignore_merges)) != 0 ||
        (r = jstr(L, model, "model", "continuing_subword_prefix", &pfx)) != 0 ||
        (r = jstr(L, model, "model", "end_of_word_suffix", &sfx)) != 0)
      return r;
    if ((pfx && pfx[0]) || (sfx && sfx[0]))
      return LERR(L, AS_EINVAL, "%s: model: continuing_subword_prefix / end_of_word_suffix are not supported",
                  L->file);
    for (int b = 0; b < 256; b++) {
      char name[8];
      snprintf(name, sizeof name, "<0x%02X>", b);
      t->byte_ids[b] = tok_map_get(&t->vocab, name, 6);
    }
    if ((r = parse_merges(L, model)) != 0)
      return r;
  } else if (strcmp(type, "WordPiece") == 0) {
    const char *pfx;
    long long mx;
    t->model = TOK_MODEL_WORDPIECE;
    if ((r = jstr(L, model, "model", "continuing_subword_prefix", &pfx)) != 0 ||
        (r = jint(L, model, "model", "max_input_chars_per_word", 0, 1LL << 40, 100, &mx)) != 0)
      return r;
    if (pfx == NULL)
      pfx = "##";
    t->wp_prefix_len = strlen(pfx);
    if ((t->wp_prefix = dupn(pfx, t->wp_prefix_len)) == NULL)
      return AS_ENOMEM;
    t->wp_max_chars = (size_t)mx;
    if (unk == NULL)
      return LERR(L, AS_EINVAL, "%s: model.unk_token: WordPiece needs one", L->file);
  } else
    return LERR(L, AS_EINVAL, "%s: model.type: unsupported model \"%s\" (BPE and WordPiece are)", L->file,
                type);
  t->unk_id = unk ? tok_map_get(&t->vocab, unk, strlen(unk)) : -1;
  if (unk != NULL && t->unk_id < 0)
    return LERR(L, AS_EINVAL, "%s: model.unk_token: \"%.40s\" is not in the vocab", L->file, unk);
  return 0;
}

/* ---- configs ------------------------------------------------------------------------- */

/* a special token in tokenizer_config.json: a string or {"content": ...} */
static int cfg_token(ld_t *L, const cJSON *cfg, const char *k, const char **out) {
  cJSON *v = jget(cfg, k);
  *out = NULL;
  if (v == NULL || cJSON_IsNull(v))
    return 0;
  if (cJSON_IsObject(v))
    return jstr(L, v, k, "content", out);
  return jstr(L, cfg, "tokenizer_config", k, out);
}

static int parse_config(ld_t *L, const cJSON *cfg) {
  as_tokenizer_t *t = L->t;
  const char *bos, *eos, *pad, *tmpl = NULL;
  int r;
  if (cfg == NULL)
    return 0;
  if (!cJSON_IsObject(cfg))
    return LERR(L, AS_EINVAL, "%s: expected an object", L->file);
  if ((r = cfg_token(L, cfg, "bos_token", &bos)) != 0 || (r = cfg_token(L, cfg, "eos_token", &eos)) != 0 ||
      (r = cfg_token(L, cfg, "pad_token", &pad)) != 0)
    return r;
  if (bos && (t->bos_token = dupn(bos, strlen(bos))) == NULL)
    return AS_ENOMEM;
  if (eos && (t->eos_token = dupn(eos, strlen(eos))) == NULL)
    return AS_ENOMEM;
  if (bos)
    t->bos_id = as_tokenizer_token_id(t, bos, strlen(bos));
  if (eos) {
    int32_t id = as_tokenizer_token_id(t, eos, strlen(eos));
    if (id >= 0) {
      if ((t->eos_ids = malloc(sizeof *t->eos_ids)) == NULL)
        return AS_ENOMEM;
      t->eos_ids[0] = id;
      t->neos = 1;
    }
  }
  if (pad)
    t->pad_id = as_tokenizer_token_id(t, pad, strlen(pad));
  cJSON *ct = jget(cfg, "chat_template");
  if (cJSON_IsString(ct))
    tmpl = ct->valuestring;
  else if (cJSON_IsArray(ct)) { /* [{"name": "default", "template": ...}, ...] */
    cJSON *e;
    cJSON_ArrayForEach(e, ct) {
      cJSON *nm = jget(e, "name"), *tp = jget(e, "template");
      if (cJSON_IsString(nm) && cJSON_IsString(tp) && strcmp(nm->valuestring, "default") == 0)
        tmpl = tp->valuestring;
    }
  } else if (ct != NULL && !cJSON_IsNull(ct))
    return LERR(L, AS_EINVAL, "%s: chat_template: expected a string or a list of {name, template}", L->file);
  if (tmpl != NULL && (t->chat_template = dupn(tmpl, strlen(tmpl))) == NULL)
    return AS_ENOMEM;
  return 0;
}

static int parse_generation(ld_t *L, const cJSON *gen) {
  as_tokenizer_t *t = L->t;
  long long v;
  int r;
  if (gen == NULL)
    return 0;
  if (!cJSON_IsObject(gen))
    return LERR(L, AS_EINVAL, "%s: expected an object", L->file);
  if ((r = jint(L, gen, "generation_config", "bos_token_id", 0, TOK_MAX_ID, -1, &v)) != 0)
    return r;
  if (v >= 0)
    t->bos_id = (int32_t)v;
  if ((r = jint(L, gen, "generation_config", "pad_token_id", 0, TOK_MAX_ID, -1, &v)) != 0)
    return r;
  if (v >= 0)
    t->pad_id = (int32_t)v;
  cJSON *e = jget(gen, "eos_token_id"), *x;
  if (e == NULL || cJSON_IsNull(e))
    return 0;
  size_t n = cJSON_IsArray(e) ? (size_t)cJSON_GetArraySize(e) : 1;
  int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
  if (ids == NULL)
    return AS_ENOMEM;
  size_t k = 0;
  if (cJSON_IsArray(e)) {
    cJSON_ArrayForEach(x, e) {
      if (!jint_val(x, 0, TOK_MAX_ID, &v)) {
        free(ids);
        return LERR(L, AS_EINVAL, "%s: eos_token_id: expected integers", L->file);
      }
      ids[k++] = (int32_t)v;
    }
  } else if (jint_val(e, 0, TOK_MAX_ID, &v))
    ids[k++] = (int32_t)v;
  else {
    free(ids);
    return LERR(L, AS_EINVAL, "%s: eos_token_id: expected an integer or a list", L->file);
  }
  free(t->eos_ids);
  t->eos_ids = ids;
  t->neos = k;
  return 0;
}

/* ---- loading -------------------------------------------------------------------------- */

static int parse_json(ld_t *L, const char *text, size_t len, cJSON **out) {
  const char *end = NULL;
  *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (*out == NULL)
    return LERR(L, AS_EINVAL, "%s: invalid JSON near byte %zu", L->file,
                end && end >= text ? (size_t)(end - text) : (size_t)0);
  return 0;
}

/* the normalized form of normalized added tokens (matched after normalizing) */
static int normalize_added(as_tokenizer_t *t) {
  for (size_t i = 0; i < t->nadded; i++) {
    tok_added_t *x = &t->added[i];
    if (!x->normalized || t->nnorm == 0)
      continue;
    as_buf_t b;
    as_buf_init(&b);
    int r = tok_normalize(t, x->s, x->len, &b);
    if (r == 0 && b.len > 0) {
      char *p = dupn(b.data, b.len);
      if (p == NULL)
        r = AS_ENOMEM;
      else {
        free(x->s);
        x->s = p;
        x->len = b.len;
      }
    }
    as_buf_free(&b);
    if (r != 0)
      return r;
  }
  return 0;
}

int as_tokenizer_load_mem(const char *tok_json, size_t tok_len, const char *cfg_json,
                          const char *gen_json, as_tokenizer_t **out, char *err, size_t errlen) {
  as_tokenizer_t *t;
  cJSON *root = NULL, *cfg = NULL, *gen = NULL;
  steps_t norm = {0}, pre = {0}, dec = {0};
  ld_t L = {NULL, err, errlen, "tokenizer.json"};
  int r;
  if (out == NULL || tok_json == NULL)
    return tok_err(err, errlen, AS_EINVAL, "tokenizer: invalid argument");
  *out = NULL;
  if (err && errlen)
    err[0] = 0;
  if ((t = calloc(1, sizeof *t)) == NULL)
    return AS_ENOMEM;
  L.t = t;
  t->unk_id = t->bos_id = t->pad_id = t->unk_cfg_id = -1;
  as_buf_init(&t->arena);
  if ((r = parse_json(&L, tok_json, tok_len, &root)) != 0)
    goto done;
  if (!cJSON_IsObject(root)) {
    r = LERR(&L, AS_EINVAL, "tokenizer.json: expected an object");
    goto done;
  }
  if ((r = parse_model(&L, root)) != 0 || (r = parse_added(&L, root)) != 0)
    goto done;
  if ((r = parse_normalizer(&L, jget(root, "normalizer"), "normalizer", &norm, 0)) != 0)
    goto done;
  t->norm = norm.v;
  t->nnorm = norm.n;
  norm.v = NULL;
  /* normalized added tokens match, and decode, in their normalized form (as the library) */
  if ((r = normalize_added(t)) != 0 || (r = build_rev(&L)) != 0)
    goto done;
  if ((r = parse_pretok(&L, jget(root, "pre_tokenizer"), "pre_tokenizer", &pre, 0)) != 0)
    goto done;
  t->pre = pre.v;
  t->npre = pre.n;
  pre.v = NULL;
  cJSON *dj = jget(root, "decoder");
  t->has_decoder = dj != NULL && !cJSON_IsNull(dj);
  if ((r = parse_decoder(&L, dj, "decoder", &dec, 0)) != 0)
    goto done;
  t->dec = dec.v;
  t->ndec = dec.n;
  dec.v = NULL;
  if ((r = parse_post(&L, jget(root, "post_processor"), "post_processor", 0)) != 0)
    goto done;
  if (cfg_json != NULL) {
    L.file = "tokenizer_config.json";
    if ((r = parse_json(&L, cfg_json, strlen(cfg_json), &cfg)) != 0 || (r = parse_config(&L, cfg)) != 0)
      goto done;
  }
  if (gen_json != NULL) {
    L.file = "generation_config.json";
    if ((r = parse_json(&L, gen_json, strlen(gen_json), &gen)) != 0 || (r = parse_generation(&L, gen)) != 0)
      goto done;
  }
  t->chat = tok_chat_family(t->chat_template, NULL);
done:
  if (r == AS_ENOMEM && err && errlen && err[0] == 0)
    tok_err(err, errlen, r, "%s: out of memory", L.file);
  steps_free(norm.v, norm.n);
  steps_free(pre.v, pre.n);
  steps_free(dec.v, dec.n);
  cJSON_Delete(root);
  cJSON_Delete(cfg);
  cJSON_Delete(gen);
  if (r != 0) {
    as_tokenizer_free(t);
    return r;
  }
  *out = t;
  return 0;
}

/* reads dir/name into a NUL-terminated heap block; AS_ENOTFOUND when absent */
static int read_file(const char *dir, const char *name, char **data, size_t *len, char *err,
                     size_t errlen) {
  char path[4096];
  FILE *f;
  long sz;
  *data = NULL;
  *len = 0;
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
    return tok_err(err, errlen, AS_EINVAL, "%s/%s: path too long", dir, name);
  if ((f = fopen(path, "rb")) == NULL)
    return errno == ENOENT ? AS_ENOTFOUND : tok_err(err, errlen, AS_EIO, "%s: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return tok_err(err, errlen, AS_EIO, "%s: cannot read", path);
  }
  if ((unsigned long)sz > TOK_MAX_FILE) {
    fclose(f);
    return tok_err(err, errlen, AS_ETOOBIG, "%s: too large", path);
  }
  if ((*data = malloc((size_t)sz + 1)) == NULL) {
    fclose(f);
    return AS_ENOMEM;
  }
  *len = fread(*data, 1, (size_t)sz, f);
  (*data)[*len] = 0;
  fclose(f);
  return 0;
}

int as_tokenizer_load(const char *dir, as_tokenizer_t **out, char *err, size_t errlen) {
  char *tj = NULL, *cj = NULL, *gj = NULL, *jinja = NULL;
  size_t tl, cl, gl, jl;
  int r;
  if (dir == NULL || out == NULL)
    return tok_err(err, errlen, AS_EINVAL, "tokenizer: invalid argument");
  r = read_file(dir, "tokenizer.json", &tj, &tl, err, errlen);
  if (r == AS_ENOTFOUND)
    return tok_err(err, errlen, r, "%s/tokenizer.json: not found", dir);
  if (r != 0)
    return r;
  if ((r = read_file(dir, "tokenizer_config.json", &cj, &cl, err, errlen)) != 0 && r != AS_ENOTFOUND)
    goto done;
  if ((r = read_file(dir, "generation_config.json", &gj, &gl, err, errlen)) != 0 && r != AS_ENOTFOUND)
    goto done;
  if ((r = read_file(dir, "chat_template.jinja", &jinja, &jl, err, errlen)) != 0 && r != AS_ENOTFOUND)
    goto done;
  r = as_tokenizer_load_mem(tj, tl, cj, gj, out, err, errlen);
  if (r == 0 && jinja != NULL && (*out)->chat_template == NULL) {
    (*out)->chat_template = jinja;
    (*out)->chat = tok_chat_family(jinja, NULL);
    jinja = NULL;
  }
done:
  free(tj);
  free(cj);
  free(gj);
  free(jinja);
  return r;
}

/* ---- encoding --------------------------------------------------------------------------- */

static int is_word_char(uint32_t c) { return c == '_' || tok_is_letter(c) || tok_is_number(c); }

/* the last / first code point of s[0..n) */
static uint32_t last_cp(const char *s, size_t n) {
  size_t k = n - 1;
  while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
    k--;
  return tok_utf8_next(s, n, &k);
}

typedef struct span_s {
  size_t b, e;
  int32_t id; /* -1: text */
} span_t;

typedef struct spans_s {
  span_t *v;
  size_t n, cap;
} spans_t;

static int span_add(spans_t *s, size_t b, size_t e, int32_t id) {
  if (b == e && id < 0)
    return 0;
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 16;
    span_t *nv = realloc(s->v, nc * sizeof *nv);
    if (nv == NULL)
      return AS_ENOMEM;
    s->v = nv;
    s->cap = nc;
  }
  s->v[s->n].b = b;
  s->v[s->n].e = e;
  s->v[s->n].id = id;
  s->n++;
  return 0;
}

/* Splits s at added tokens whose normalized flag equals `normalized`, as the
 * library's AddedVocabulary::find_matches (leftmost-longest, single_word,
 * lstrip, rstrip). */
static int split_added(const as_tokenizer_t *t, const char *s, size_t n, int normalized, int no_special,
                       spans_t *out) {
  size_t i = 0, start = 0;
  int r = 0;
  while (r == 0 && i < n) {
    const tok_added_t *best = NULL;
    uint8_t c0 = (uint8_t)s[i];
    if (!(t->added_first[c0 >> 3] & (1u << (c0 & 7)))) {
      i++;
      continue;
    }
    for (size_t k = 0; k < t->nadded; k++) {
      const tok_added_t *x = &t->added[k];
      if (x->normalized != normalized || x->len > n - i || (best && x->len <= best->len))
        continue;
      if ((unsigned char)x->s[0] == (unsigned char)s[i] && memcmp(x->s, s + i, x->len) == 0)
        best = x;
    }
    if (best == NULL) {
      i++;
      continue;
    }
    size_t b = i, e = i + best->len;
    i = e;
    if (no_special && best->special)
      continue;
    if (best->single_word) {
      int sp_before = b == 0 || !is_word_char(last_cp(s, b));
      size_t q = e;
      int sp_after = e == n || !is_word_char(tok_utf8_next(s, n, &q));
      if (!sp_before || !sp_after)
        continue;
    }
    if (best->lstrip) {
      size_t nb = b;
      while (nb > start && tok_is_space(last_cp(s, nb))) {
        size_t k = nb - 1;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
          k--;
        nb = k;
      }
      b = nb > start ? nb : start;
    }
    if (best->rstrip) {
      size_t q = e;
      while (q < n) {
        size_t p = q;
        if (!tok_is_space(tok_utf8_next(s, n, &p)))
          break;
        q = p;
      }
      e = q;
      i = e;
    }
    if ((r = span_add(out, start, b, -1)) != 0 || (r = span_add(out, b, e, best->id)) != 0)
      break;
    start = e;
  }
  if (r == 0 && start < n)
    r = span_add(out, start, n, -1);
  return r;
}

static int encode_text(const as_tokenizer_t *t, const char *s, size_t n, int first, tok_pieces_t *pieces,
                       as_ids_t *out) {
  int r;
  tok_pieces_clear(pieces);
  if ((r = tok_pretokenize(t, s, n, first, pieces)) != 0)
    return r;
  for (size_t k = 0; r == 0 && k < pieces->n; k++) {
    const char *p = pieces->text.data + pieces->v[k].off;
    size_t l = pieces->v[k].len;
    r = t->model == TOK_MODEL_BPE ? tok_bpe_word(t, p, l, out) : tok_wordpiece_word(t, p, l, out);
  }
  return r;
}

int as_tokenizer_encode(const as_tokenizer_t *t, const char *text, size_t len, int flags, as_ids_t *out) {
  as_buf_t clean, norm;
  spans_t sp = {0}, sp2 = {0};
  tok_pieces_t pieces;
  int r = 0;
  if (t == NULL || out == NULL || (text == NULL && len > 0))
    return AS_EINVAL;
  as_buf_init(&clean);
  as_buf_init(&norm);
  tok_pieces_init(&pieces);
  if (len > 0 && !tok_utf8_valid(text, len)) {
    tok_utf8_repair(text, len, &clean, 0, &r);
    text = clean.data;
    len = clean.len;
  }
  size_t mark = out->n;
  if (r == 0 && (flags & AS_TOK_ADD_SPECIAL))
    for (size_t i = 0; r == 0 && i < t->npost_pre; i++)
      r = as_ids_push(out, t->post_pre[i]);
  if (r == 0)
    r = split_added(t, text ? text : "", len, 0, flags & AS_TOK_NO_PARSE_SPECIAL, &sp);
  for (size_t k = 0; r == 0 && k < sp.n; k++) {
    if (sp.v[k].id >= 0) {
      r = as_ids_push(out, sp.v[k].id);
      continue;
    }
    norm.len = 0;
    if ((r = tok_normalize(t, text + sp.v[k].b, sp.v[k].e - sp.v[k].b, &norm)) != 0)
      break;
    const char *ns = norm.data ? norm.data : "";
    sp2.n = 0;
    if (t->has_norm_added)
      r = split_added(t, ns, norm.len, 1, flags & AS_TOK_NO_PARSE_SPECIAL, &sp2);
    else
      r = span_add(&sp2, 0, norm.len, -1);
    for (size_t q = 0; r == 0 && q < sp2.n; q++) {
      if (sp2.v[q].id >= 0)
        r = as_ids_push(out, sp2.v[q].id);
      else
        r = encode_text(t, ns + sp2.v[q].b, sp2.v[q].e - sp2.v[q].b, sp.v[k].b == 0 && sp2.v[q].b == 0,
                        &pieces, out);
    }
  }
  if (r == 0 && (flags & AS_TOK_ADD_SPECIAL))
    for (size_t i = 0; r == 0 && i < t->npost_suf; i++)
      r = as_ids_push(out, t->post_suf[i]);
  if (r != 0)
    out->n = mark;
  free(sp.v);
  free(sp2.v);
  tok_pieces_free(&pieces);
  as_buf_free(&clean);
  as_buf_free(&norm);
  return r;
}

/* tok_int.h — internal header of the tokenizers in actors/llm/ (never included
 * from outside this directory). The tokenizer is a faithful C port of what the
 * Hugging Face `tokenizers` library does with a tokenizer.json:
 *   text → UTF-8 repair → added-token split → normalizer → pre-tokenizer →
 *   model (BPE / WordPiece) → post-processor; ids → decoder chain → text.
 * Each stage is a flat list of steps (a "Sequence" in the JSON is flattened).
 * Files: tokenizer.c (loading, encode, API), tok_unicode.c (+ tok_unitab.c,
 * generated), tok_norm.c, tok_pretok.c, tok_bpe.c, tok_wordpiece.c,
 * tok_decode.c (decoders, incremental detokenizer), tok_template.c (chat).
 */
#ifndef AS_TOK_INT_H
#define AS_TOK_INT_H

#include <stddef.h>
#include <stdint.h>

#include "llm.h"

/* ---- Unicode (tok_unicode.c, tables in tok_unitab.c) ---------------------- */

enum {
  TOK_CN, TOK_LU, TOK_LL, TOK_LT, TOK_LM, TOK_LO, TOK_MN, TOK_MC, TOK_ME, TOK_ND,
  TOK_NL, TOK_NO, TOK_PC, TOK_PD, TOK_PS, TOK_PE, TOK_PI, TOK_PF, TOK_PO, TOK_SM,
  TOK_SC, TOK_SK, TOK_SO, TOK_ZS, TOK_ZL, TOK_ZP, TOK_CC, TOK_CF, TOK_CS, TOK_CO
};

extern const uint32_t tok_cat_start[];
extern const uint8_t tok_cat_val[];
extern const size_t tok_cat_n;
extern const uint32_t tok_ccc_start[];
extern const uint8_t tok_ccc_val[];
extern const size_t tok_ccc_n;
extern const uint32_t tok_decomp[][3];
extern const size_t tok_decomp_n;
extern const uint32_t tok_comp[][3];
extern const size_t tok_comp_n;
extern const uint32_t tok_lower[][3];
extern const size_t tok_lower_n;
extern const uint32_t tok_pyspace[];
extern const size_t tok_pyspace_n;

int tok_ucat(uint32_t cp);          /* general category, TOK_* */
int tok_is_letter(uint32_t cp);     /* \p{L} */
int tok_is_number(uint32_t cp);     /* \p{N} */
int tok_is_space(uint32_t cp);      /* \s of Oniguruma = White_Space = Rust char::is_whitespace */
int tok_is_punct(uint32_t cp);      /* \p{P} */
int tok_is_pyspace(uint32_t cp);    /* Python str.isspace (Jinja's trim) */
int tok_ccc(uint32_t cp);           /* canonical combining class */

/* Decodes one code point of valid UTF-8 at s[*i] (s has n bytes) and advances *i.
 * Input must already be valid (see tok_utf8_repair). */
uint32_t tok_utf8_next(const char *s, size_t n, size_t *i);
size_t tok_utf8_put(char *out, uint32_t cp);     /* writes 1-4 bytes */
int tok_buf_putcp(as_buf_t *b, uint32_t cp);
/* Length of the valid UTF-8 sequence at p (up to n bytes): >0 valid length,
 * 0 when the bytes are a proper prefix of a valid sequence (incomplete),
 * -k when the first k bytes are a maximal invalid subpart (one U+FFFD). */
int tok_utf8_seq(const unsigned char *p, size_t n);
/* Appends s with every maximal invalid subpart replaced by U+FFFD (as Python's
 * bytes.decode('utf-8', 'replace') and Rust's from_utf8_lossy). When `hold` is
 * set, an incomplete sequence at the end is not written; returns its length. */
size_t tok_utf8_repair(const char *s, size_t n, as_buf_t *out, int hold, int *err);
int tok_utf8_valid(const char *s, size_t n);

int tok_nfd(const char *s, size_t n, as_buf_t *out);
int tok_nfc(const char *s, size_t n, as_buf_t *out);
int tok_lowercase(const char *s, size_t n, as_buf_t *out);

/* ---- string → id map ------------------------------------------------------ */

typedef struct tok_str_s {
  uint32_t off;  /* into the owner's arena */
  uint32_t len;  /* UINT32_MAX: no string */
} tok_str_t;

typedef struct tok_slot_s {
  uint32_t off, len;  /* key in the arena */
  uint32_t hash;
  int32_t id;         /* -1: empty slot */
} tok_slot_t;

typedef struct tok_map_s {
  const as_buf_t *arena; /* where keys live */
  tok_slot_t *slots;
  size_t cap, n;         /* cap is a power of two */
} tok_map_t;

int tok_map_init(tok_map_t *m, const as_buf_t *arena, size_t expect);
void tok_map_free(tok_map_t *m);
int tok_map_put(tok_map_t *m, uint32_t off, uint32_t len, int32_t id); /* replaces */
int32_t tok_map_get(const tok_map_t *m, const char *s, size_t len);  /* -1: absent */

/* merges: (left id, right id) → (rank, merged id) */
typedef struct tok_merge_s {
  uint64_t key;   /* left << 32 | right; UINT64_MAX empty */
  int32_t rank, id;
} tok_merge_t;

/* ---- pipeline steps -------------------------------------------------------- */

enum { /* normalizers */
  TOK_N_NFC = 1, TOK_N_NFD, TOK_N_LOWER, TOK_N_STRIP_ACCENTS, TOK_N_BERT, TOK_N_PREPEND,
  TOK_N_REPLACE, TOK_N_STRIP
};
enum { /* pre-tokenizers */
  TOK_P_BYTELEVEL = 1, TOK_P_SPLIT, TOK_P_METASPACE, TOK_P_BERT, TOK_P_WSSPLIT, TOK_P_DIGITS
};
enum { /* regexes recognised for Split / ByteLevel */
  TOK_RE_NONE = 0, TOK_RE_GPT2, TOK_RE_LLAMA3, TOK_RE_QWEN2
};
enum { /* split behaviours */
  TOK_B_REMOVED = 1, TOK_B_ISOLATED, TOK_B_PREV, TOK_B_NEXT, TOK_B_CONTIG
};
enum { /* decoders */
  TOK_D_BYTELEVEL = 1, TOK_D_REPLACE, TOK_D_BYTEFALLBACK, TOK_D_FUSE, TOK_D_STRIP,
  TOK_D_METASPACE, TOK_D_WORDPIECE
};

typedef struct tok_step_s {
  int type;        /* TOK_N_* / TOK_P_* / TOK_D_* */
  char *a, *b;     /* strings (pattern, content, prefix...); NUL-terminated */
  size_t alen, blen;
  int re;          /* TOK_RE_* for regex splits */
  int behavior;    /* TOK_B_* */
  int f1, f2, f3, f4; /* flags / counts, by type (documented where parsed) */
} tok_step_t;

typedef struct tok_added_s {
  char *s;          /* content */
  size_t len;
  int32_t id;
  uint8_t special, lstrip, rstrip, single_word, normalized;
} tok_added_t;

enum { TOK_MODEL_BPE = 1, TOK_MODEL_WORDPIECE };
enum { TOK_CHAT_NONE = 0, TOK_CHAT_LLAMA3, TOK_CHAT_GEMMA, TOK_CHAT_QWEN2, TOK_CHAT_CHATML,
       TOK_CHAT_LLAMA2 };

struct as_tokenizer_s {
  as_buf_t arena;        /* all vocab strings */
  tok_map_t vocab;       /* model vocab: string → id */
  tok_str_t *rev;        /* id → string (model vocab, then added tokens override) */
  uint8_t *flags;        /* id → TOK_F_* */
  int32_t nids;          /* size of rev / flags */
  int model;             /* TOK_MODEL_* */
  /* BPE */
  tok_merge_t *merges;
  size_t merges_cap, merges_n;
  int32_t unk_id;        /* -1 none */
  int fuse_unk, byte_fallback, ignore_merges;
  int32_t byte_ids[256]; /* "<0xNN>" ids for byte fallback, -1 absent */
  /* WordPiece */
  char *wp_prefix;
  size_t wp_prefix_len;
  size_t wp_max_chars;
  /* pipeline */
  tok_step_t *norm, *pre, *dec;
  size_t nnorm, npre, ndec;
  int has_decoder;
  tok_added_t *added;
  size_t nadded;
  int has_norm_added;    /* some added token has normalized=true */
  uint8_t added_first[32]; /* bit set of the first bytes of added tokens */
  int32_t *post_pre, *post_suf; /* ids the post-processor puts around a single sequence */
  size_t npost_pre, npost_suf;
  /* configs */
  int32_t bos_id, pad_id, unk_cfg_id;
  int32_t *eos_ids;
  size_t neos;
  char *bos_token, *eos_token;  /* tokenizer_config strings (chat templates) */
  int chat;                     /* TOK_CHAT_* */
  char *chat_template;          /* as found, or NULL */
};

enum { TOK_F_VALID = 1, TOK_F_ADDED = 2, TOK_F_SPECIAL = 4 };

/* the string of id, or NULL (len in *len) */
const char *tok_id_str(const as_tokenizer_t *t, int32_t id, size_t *len);

/* error helper: writes a printf message into err (errlen bytes) and returns code */
int tok_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- pieces (pre-tokenization) --------------------------------------------- */

typedef struct tok_piece_s {
  size_t off, len;  /* into a work buffer */
  int first;        /* starts at offset 0 of the original input (Metaspace "first") */
} tok_piece_t;

typedef struct tok_pieces_s {
  as_buf_t text;    /* bytes of all pieces */
  tok_piece_t *v;
  size_t n, cap;
} tok_pieces_t;

void tok_pieces_init(tok_pieces_t *p);
void tok_pieces_free(tok_pieces_t *p);
void tok_pieces_clear(tok_pieces_t *p);
int tok_pieces_add(tok_pieces_t *p, const char *s, size_t len, int first); /* skips empty */

/* tok_norm.c: applies the normalizer steps to s into out */
int tok_normalize(const as_tokenizer_t *t, const char *s, size_t n, as_buf_t *out);
/* tok_pretok.c: pre-tokenizes s into pieces (appended to out) */
int tok_pretokenize(const as_tokenizer_t *t, const char *s, size_t n, int first, tok_pieces_t *out);
/* match length (code points) of a recognised regex at cps[i] */
size_t tok_regex_match(int re, const uint32_t *cps, size_t n, size_t i);
int tok_regex_kind(const char *pattern); /* TOK_RE_* or TOK_RE_NONE */
/* the GPT-2 byte ↔ unicode table */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);  /* -1 when cp is not in the table */

/* models: append ids of one pre-tokenized piece */
int tok_bpe_word(const as_tokenizer_t *t, const char *s, size_t n, as_ids_t *out);
int tok_wordpiece_word(const as_tokenizer_t *t, const char *s, size_t n, as_ids_t *out);
int tok_merges_put(as_tokenizer_t *t, int32_t a, int32_t b, int32_t rank, int32_t id);
const tok_merge_t *tok_merges_get(const as_tokenizer_t *t, int32_t a, int32_t b);

/* tok_template.c: recognises the chat family from a template string */
int tok_chat_family(const char *tmpl, const char *model_hint);

#endif /* AS_TOK_INT_H */

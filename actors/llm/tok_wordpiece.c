/* tok_wordpiece.c — the WordPiece model (BERT): greedy longest-match-first over
 * a piece, continuation pieces prefixed with "##"; a piece longer than
 * max_input_chars_per_word, or one that cannot be covered, becomes [UNK].
 * Normalization (BertNormalizer: clean text, CJK spacing, NFD accent strip,
 * lowercase) is in tok_norm.c, the punctuation split in tok_pretok.c. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

int tok_wordpiece_word(const as_tokenizer_t *t, const char *s, size_t n, as_ids_t *out) {
  size_t chars = 0, start = 0, mark = out->n;
  as_buf_t sub;
  int r = 0, bad = 0;
  for (size_t i = 0; i < n; i++)
    chars += ((unsigned char)s[i] & 0xC0) != 0x80;
  if (chars > t->wp_max_chars)
    return t->unk_id >= 0 ? as_ids_push(out, t->unk_id) : AS_EINVAL;
  as_buf_init(&sub);
  while (r == 0 && start < n) {
    size_t end = n;
    int32_t found = -1;
    while (start < end) {
      sub.len = 0;
      if (start > 0)
        r = as_buf_append(&sub, t->wp_prefix, t->wp_prefix_len);
      if (r == 0)
        r = as_buf_append(&sub, s + start, end - start);
      if (r != 0)
        break;
      found = tok_map_get(&t->vocab, sub.data, sub.len);
      if (found >= 0)
        break;
      end--; /* back to the previous character boundary */
      while (end > start && ((unsigned char)s[end] & 0xC0) == 0x80)
        end--;
    }
    if (r != 0)
      break;
    if (found < 0) {
      bad = 1;
      break;
    }
    r = as_ids_push(out, found);
    start = end;
  }
  as_buf_free(&sub);
  if (r == 0 && bad) {
    out->n = mark;
    r = t->unk_id >= 0 ? as_ids_push(out, t->unk_id) : AS_EINVAL;
  }
  return r;
}

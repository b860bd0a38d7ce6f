/* tok_template.c — chat templates, implemented in C for the families the engine
 * serves (no Jinja engine): the family is recognised from tokenizer_config.json's
 * chat_template by its marker strings, and messages are formatted exactly as the
 * family's template renders them under transformers' apply_chat_template.
 *   llama3 — "<|start_header_id|>" (Llama-3 Instruct; not 3.1's dated system header)
 *   gemma  — "<start_of_turn>" (Gemma 1/2: no system role, user/model alternate)
 *   qwen2  — "<|im_start|>" with a default system prompt ("You are a helpful
 *            assistant." or Qwen2.5's "You are Qwen, created by Alibaba Cloud. ...")
 *   chatml — any other "<|im_start|>" template
 *   llama2 — "[INST]" with "<<SYS>>"
 * Jinja's trim and Python's str.strip remove Python whitespace (tok_is_pyspace). */
#include <string.h>

#include "tok_int.h"

static const char QWEN_SYS[] = "You are a helpful assistant.";
static const char QWEN25_SYS[] = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

int tok_chat_family(const char *tmpl, const char *hint) {
  if (tmpl == NULL)
    return TOK_CHAT_NONE;
  if (strstr(tmpl, "Cutting Knowledge Date") != NULL)
    return TOK_CHAT_NONE; /* Llama-3.1+: dated system header, not implemented */
  if (strstr(tmpl, "first_user_prefix") != NULL)
    return TOK_CHAT_NONE; /* Gemma-3: system text folded into the first turn, not implemented */
  if (strstr(tmpl, "<|start_header_id|>") != NULL)
    return TOK_CHAT_LLAMA3;
  if (strstr(tmpl, "<start_of_turn>") != NULL)
    return TOK_CHAT_GEMMA;
  if (strstr(tmpl, "<|im_start|>") != NULL)
    return strstr(tmpl, QWEN_SYS) != NULL || strstr(tmpl, QWEN25_SYS) != NULL ? TOK_CHAT_QWEN2
                                                                             : TOK_CHAT_CHATML;
  if (strstr(tmpl, "[INST]") != NULL && strstr(tmpl, "<<SYS>>") != NULL)
    return TOK_CHAT_LLAMA2;
  (void)hint;
  return TOK_CHAT_NONE;
}

const char *as_tokenizer_chat_family(const as_tokenizer_t *tok) {
  static const char *const names[] = {NULL, "llama3", "gemma", "qwen2", "chatml", "llama2"};
  if (tok == NULL || tok->chat < 0 || tok->chat > TOK_CHAT_LLAMA2)
    return NULL;
  return names[tok->chat];
}

/* appends s stripped of Python whitespace at both ends */
static int put_trim(as_buf_t *out, const char *s) {
  size_t n = strlen(s), b = 0, e = n, i;
  int r = 0;
  as_buf_t tmp;
  as_buf_init(&tmp);
  /* repair first so the code point walk is safe on any input */
  tok_utf8_repair(s, n, &tmp, 0, &r);
  if (r != 0)
    return r;
  s = tmp.data ? tmp.data : "";
  n = e = tmp.len;
  for (i = 0; i < n;) {
    size_t at = i;
    if (!tok_is_pyspace(tok_utf8_next(s, n, &i))) {
      b = at;
      break;
    }
    b = i;
  }
  while (e > b) {
    size_t k = e - 1;
    while (k > b && ((unsigned char)s[k] & 0xC0) == 0x80)
      k--;
    size_t j = k;
    if (!tok_is_pyspace(tok_utf8_next(s, n, &j)))
      break;
    e = k;
  }
  r = as_buf_append(out, s + b, e - b);
  as_buf_free(&tmp);
  return r;
}

static int put(as_buf_t *out, const char *s) { return as_buf_append(out, s, s ? strlen(s) : 0); }

static int alternate_error(char *err, size_t errlen) {
  return tok_err(err, errlen, AS_EINVAL,
                 "chat template: Conversation roles must alternate user/assistant/user/assistant/...");
}

int as_tokenizer_apply_chat(const as_tokenizer_t *tok, const as_chat_msg_t *msgs, size_t n,
                            int add_generation_prompt, as_buf_t *out, char *err, size_t errlen) {
  int r = 0;
  size_t mark;
  if (tok == NULL || out == NULL || (msgs == NULL && n > 0))
    return tok_err(err, errlen, AS_EINVAL, "chat template: invalid argument");
  for (size_t i = 0; i < n; i++)
    if (msgs[i].role == NULL || msgs[i].content == NULL)
      return tok_err(err, errlen, AS_EINVAL, "chat template: message %zu has no role or content", i);
  mark = out->len;
  switch (tok->chat) {
  case TOK_CHAT_LLAMA3:
    for (size_t i = 0; r == 0 && i < n; i++) {
      if (i == 0)
        r = put(out, tok->bos_token);
      if (r == 0)
        r = put(out, "<|start_header_id|>");
      if (r == 0)
        r = put(out, msgs[i].role);
      if (r == 0)
        r = put(out, "<|end_header_id|>\n\n");
      if (r == 0)
        r = put_trim(out, msgs[i].content);
      if (r == 0)
        r = put(out, "<|eot_id|>");
    }
    if (r == 0 && add_generation_prompt)
      r = put(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    break;
  case TOK_CHAT_GEMMA:
    if (n == 0 || strcmp(msgs[0].role, "system") == 0) {
      out->len = mark;
      return tok_err(err, errlen, AS_EINVAL, "chat template: System role not supported");
    }
    r = put(out, tok->bos_token);
    for (size_t i = 0; r == 0 && i < n; i++) {
      if ((strcmp(msgs[i].role, "user") == 0) != (i % 2 == 0)) {
        out->len = mark;
        return alternate_error(err, errlen);
      }
      r = put(out, "<start_of_turn>");
      if (r == 0)
        r = put(out, strcmp(msgs[i].role, "assistant") == 0 ? "model" : msgs[i].role);
      if (r == 0)
        r = put(out, "\n");
      if (r == 0)
        r = put_trim(out, msgs[i].content);
      if (r == 0)
        r = put(out, "<end_of_turn>\n");
    }
    if (r == 0 && add_generation_prompt)
      r = put(out, "<start_of_turn>model\n");
    break;
  case TOK_CHAT_QWEN2:
  case TOK_CHAT_CHATML:
    for (size_t i = 0; r == 0 && i < n; i++) {
      if (i == 0 && tok->chat == TOK_CHAT_QWEN2 && strcmp(msgs[0].role, "system") != 0) {
        r = put(out, "<|im_start|>system\n");
        if (r == 0)
          r = put(out, tok->chat_template && strstr(tok->chat_template, QWEN25_SYS) ? QWEN25_SYS
                                                                                  : QWEN_SYS);
        if (r == 0)
          r = put(out, "<|im_end|>\n");
      }
      if (r == 0)
        r = put(out, "<|im_start|>");
      if (r == 0)
        r = put(out, msgs[i].role);
      if (r == 0)
        r = put(out, "\n");
      if (r == 0)
        r = put(out, msgs[i].content);
      if (r == 0)
        r = put(out, "<|im_end|>\n");
    }
    if (r == 0 && add_generation_prompt)
      r = put(out, "<|im_start|>assistant\n");
    break;
  case TOK_CHAT_LLAMA2: {
    size_t first = 0;
    const char *sys = NULL;
    if (n == 0)
      return tok_err(err, errlen, AS_EINVAL, "chat template: no messages");
    if (strcmp(msgs[0].role, "system") == 0) {
      sys = msgs[0].content;
      first = 1;
    }
    for (size_t i = first; r == 0 && i < n; i++) {
      size_t j = i - first;
      if ((strcmp(msgs[i].role, "user") == 0) != (j % 2 == 0)) {
        out->len = mark;
        return alternate_error(err, errlen);
      }
      as_buf_t content;
      as_buf_init(&content);
      if (j == 0 && sys != NULL) {
        r = put(&content, "<<SYS>>\n");
        if (r == 0)
          r = put(&content, sys);
        if (r == 0)
          r = put(&content, "\n<</SYS>>\n\n");
      }
      if (r == 0)
        r = put(&content, msgs[i].content);
      if (r == 0)
        r = as_buf_append(&content, "", 1); /* NUL for put_trim */
      if (r == 0 && strcmp(msgs[i].role, "user") == 0) {
        r = put(out, tok->bos_token);
        if (r == 0)
          r = put(out, "[INST] ");
        if (r == 0)
          r = put_trim(out, content.data);
        if (r == 0)
          r = put(out, " [/INST]");
      } else if (r == 0 && strcmp(msgs[i].role, "assistant") == 0) {
        r = put(out, " ");
        if (r == 0)
          r = put_trim(out, content.data);
        if (r == 0)
          r = put(out, " ");
        if (r == 0)
          r = put(out, tok->eos_token);
      }
      as_buf_free(&content);
    }
    break;
  }
  default:
    return tok_err(err, errlen, AS_ENOTFOUND,
                   "tokenizer_config.json: chat_template: none, or not a recognised family "
                   "(llama3, llama2, gemma, qwen2, chatml)");
  }
  if (r != 0) {
    out->len = mark;
    return tok_err(err, errlen, r, "chat template: %s", as_strerror(r));
  }
  return 0;
}

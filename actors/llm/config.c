/* config.c — config.json of a Hugging Face model folder → as_llm_config_t.
 *
 * Reads the fields the supported families use (llama, gemma, qwen2, bert),
 * applying each family's defaults the way transformers' config classes do,
 * and accepting both the classic layout (rope_theta + rope_scaling) and the
 * transformers 5 one (rope_parameters). Anything unsupported (another
 * architecture, another rope scaling, another activation) is AS_EINVAL with
 * a message naming the file and the field.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels.h"
#include "llm.h"

static int as__cfg_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int as__cfg_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return AS_EINVAL;
}

/* Reads integer field `key` into *v; absent or null keeps *v. Returns 0, or -1
 * when present but not a non-negative integer. */
static int as__cfg_int(const cJSON *o, const char *key, int *v) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
  if (j == NULL || cJSON_IsNull(j))
    return 0;
  if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > 1e9 ||
      j->valuedouble != floor(j->valuedouble))
    return -1;
  *v = (int)j->valuedouble;
  return 0;
}

static int as__cfg_num(const cJSON *o, const char *key, double *v) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
  if (j == NULL || cJSON_IsNull(j))
    return 0;
  if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
    return -1;
  *v = j->valuedouble;
  return 0;
}

static int as__cfg_bool(const cJSON *o, const char *key, int *v) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
  if (j == NULL || cJSON_IsNull(j))
    return 0;
  if (!cJSON_IsBool(j))
    return -1;
  *v = cJSON_IsTrue(j);
  return 0;
}

static const char *as__cfg_str(const cJSON *o, const char *key) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* Maps an activation name to ASK_ACT_*, or -1. */
static int as__cfg_act(const char *s, int arch) {
  if (strcmp(s, "silu") == 0 || strcmp(s, "swish") == 0)
    return ASK_ACT_SILU;
  if (strcmp(s, "gelu_pytorch_tanh") == 0 || strcmp(s, "gelu_new") == 0 ||
      strcmp(s, "gelu_fast") == 0)
    return ASK_ACT_GELU_TANH;
  if (strcmp(s, "gelu") == 0) /* Gemma's legacy "gelu" means the tanh form (as transformers) */
    return arch == AS_ARCH_GEMMA ? ASK_ACT_GELU_TANH : ASK_ACT_GELU;
  return -1;
}

/* Rope: rope_theta at top level or in rope_parameters / rope_scaling, and a
 * scaling type of default/null or llama3. */
static int as__cfg_rope(as_llm_config_t *c, const cJSON *root, const char *file, char *err,
                        size_t errlen) {
  const char *names[2] = {"rope_parameters", "rope_scaling"};
  if (as__cfg_num(root, "rope_theta", &c->rope_theta) != 0)
    return as__cfg_err(err, errlen, "%s: rope_theta is not a number", file);
  for (int i = 0; i < 2; i++) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, names[i]);
    const char *type;
    if (r == NULL || cJSON_IsNull(r))
      continue;
    if (!cJSON_IsObject(r))
      return as__cfg_err(err, errlen, "%s: %s is not an object", file, names[i]);
    if (as__cfg_num(r, "rope_theta", &c->rope_theta) != 0)
      return as__cfg_err(err, errlen, "%s: %s.rope_theta is not a number", file, names[i]);
    type = as__cfg_str(r, "rope_type");
    if (type == NULL)
      type = as__cfg_str(r, "type");
    if (type == NULL || strcmp(type, "default") == 0)
      continue;
    if (strcmp(type, "llama3") != 0)
      return as__cfg_err(err, errlen,
                         "%s: %s type \"%.40s\" is not supported (default and llama3 are)", file,
                         names[i], type);
    c->rope_llama3 = 1;
    c->rope_orig_max = 0;
    if (as__cfg_num(r, "factor", &c->rope_factor) != 0 ||
        as__cfg_num(r, "low_freq_factor", &c->rope_low_freq) != 0 ||
        as__cfg_num(r, "high_freq_factor", &c->rope_high_freq) != 0 ||
        as__cfg_int(r, "original_max_position_embeddings", &c->rope_orig_max) != 0)
      return as__cfg_err(err, errlen, "%s: %s: a llama3 parameter is not a number", file,
                         names[i]);
    if (c->rope_orig_max == 0)
      c->rope_orig_max = c->max_positions;
    if (!(c->rope_factor > 0) || !(c->rope_low_freq > 0) ||
        !(c->rope_high_freq > c->rope_low_freq) || c->rope_orig_max <= 0)
      return as__cfg_err(err, errlen,
                         "%s: %s: llama3 needs factor > 0 and high_freq_factor > "
                         "low_freq_factor > 0",
                         file, names[i]);
  }
  if (!(c->rope_theta > 0))
    return as__cfg_err(err, errlen, "%s: rope_theta must be positive", file);
  return 0;
}

int as_llm_config_parse(as_llm_config_t *c, const char *json, size_t len, const char *file,
                        char *err, size_t errlen) {
  cJSON *root = cJSON_ParseWithLength(json, len);
  const char *mt, *arch0 = NULL, *act;
  const cJSON *archs, *eos;
  int rc = 0;

  memset(c, 0, sizeof *c);
  if (root == NULL || !cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return as__cfg_err(err, errlen, "%s: not a JSON object", file);
  }
  archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
  if (cJSON_IsArray(archs) && cJSON_IsString(cJSON_GetArrayItem(archs, 0)))
    arch0 = cJSON_GetArrayItem(archs, 0)->valuestring;
  mt = as__cfg_str(root, "model_type");
  if (mt == NULL && arch0 != NULL) { /* derive it from the class name */
    mt = strncmp(arch0, "Llama", 5) == 0   ? "llama"
         : strncmp(arch0, "Gemma", 5) == 0 && strncmp(arch0, "Gemma2", 6) != 0 &&
                 strncmp(arch0, "Gemma3", 6) != 0
             ? "gemma"
         : strncmp(arch0, "Qwen2", 5) == 0 && strncmp(arch0, "Qwen2Moe", 8) != 0 ? "qwen2"
         : strncmp(arch0, "Bert", 4) == 0                                         ? "bert"
                                                                                  : arch0;
  }
  if (mt == NULL) {
    cJSON_Delete(root);
    return as__cfg_err(err, errlen, "%s: neither model_type nor architectures is given", file);
  }
  c->arch = strcmp(mt, "llama") == 0   ? AS_ARCH_LLAMA
            : strcmp(mt, "gemma") == 0 ? AS_ARCH_GEMMA
            : strcmp(mt, "qwen2") == 0 ? AS_ARCH_QWEN2
            : strcmp(mt, "bert") == 0  ? AS_ARCH_BERT
                                       : 0;
  if (c->arch == 0) {
    rc = as__cfg_err(err, errlen,
                     "%s: unsupported architecture \"%.40s\"%s%.60s%s (supported: llama, gemma, "
                     "qwen2, bert)",
                     file, mt, arch0 ? " (" : "", arch0 ? arch0 : "", arch0 ? ")" : "");
    cJSON_Delete(root);
    return rc;
  }
  snprintf(c->model_type, sizeof c->model_type, "%s", mt);

  /* Family defaults, as transformers' config classes have them. */
  c->num_heads = 0;
  c->rope_theta = 10000.0;
  c->norm_eps = c->arch == AS_ARCH_BERT ? 1e-12 : 1e-6;
  c->act = c->arch == AS_ARCH_GEMMA ? ASK_ACT_GELU_TANH
           : c->arch == AS_ARCH_BERT ? ASK_ACT_GELU
                                     : ASK_ACT_SILU;
  c->tie_word_embeddings = c->arch == AS_ARCH_GEMMA || c->arch == AS_ARCH_BERT;
  c->qkv_bias = c->arch == AS_ARCH_QWEN2 || c->arch == AS_ARCH_BERT;
  c->type_vocab_size = c->arch == AS_ARCH_BERT ? 2 : 0;
  c->max_positions = c->arch == AS_ARCH_BERT ? 512 : 2048;
  c->bos_token_id = c->pad_token_id = -1;

  static const struct {
    const char *key;
    size_t off;
  } ints[] = {
      {"vocab_size", offsetof(as_llm_config_t, vocab_size)},
      {"hidden_size", offsetof(as_llm_config_t, hidden_size)},
      {"intermediate_size", offsetof(as_llm_config_t, intermediate_size)},
      {"num_hidden_layers", offsetof(as_llm_config_t, num_layers)},
      {"num_attention_heads", offsetof(as_llm_config_t, num_heads)},
      {"num_key_value_heads", offsetof(as_llm_config_t, num_kv_heads)},
      {"head_dim", offsetof(as_llm_config_t, head_dim)},
      {"max_position_embeddings", offsetof(as_llm_config_t, max_positions)},
      {"type_vocab_size", offsetof(as_llm_config_t, type_vocab_size)},
      {"bos_token_id", offsetof(as_llm_config_t, bos_token_id)},
      {"pad_token_id", offsetof(as_llm_config_t, pad_token_id)},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    if (as__cfg_int(root, ints[i].key, (int *)((char *)c + ints[i].off)) != 0) {
      rc = as__cfg_err(err, errlen, "%s: %s is not a non-negative integer", file, ints[i].key);
      goto done;
    }
  if (as__cfg_num(root, c->arch == AS_ARCH_BERT ? "layer_norm_eps" : "rms_norm_eps",
                  &c->norm_eps) != 0 ||
      !(c->norm_eps >= 0)) {
    rc = as__cfg_err(err, errlen, "%s: %s is not a number", file,
                     c->arch == AS_ARCH_BERT ? "layer_norm_eps" : "rms_norm_eps");
    goto done;
  }
  int attention_bias = -1;
  if (as__cfg_bool(root, "tie_word_embeddings", &c->tie_word_embeddings) != 0 ||
      as__cfg_bool(root, "attention_bias", &attention_bias) != 0 ||
      as__cfg_bool(root, "mlp_bias", &c->mlp_bias) != 0) {
    rc = as__cfg_err(err, errlen,
                     "%s: tie_word_embeddings, attention_bias or mlp_bias is not a boolean", file);
    goto done;
  }
  if ((c->arch == AS_ARCH_LLAMA || c->arch == AS_ARCH_GEMMA) && attention_bias == 1)
    c->qkv_bias = c->o_bias = 1;
  if (c->arch != AS_ARCH_LLAMA)
    c->mlp_bias = 0;

  /* Gemma reads hidden_activation first (transformers < 5), then hidden_act. */
  act = c->arch == AS_ARCH_GEMMA ? as__cfg_str(root, "hidden_activation") : NULL;
  if (act == NULL)
    act = as__cfg_str(root, "hidden_act");
  if (act != NULL && (c->act = as__cfg_act(act, c->arch)) < 0) {
    rc = as__cfg_err(err, errlen,
                     "%s: activation \"%.40s\" is not supported (silu, gelu, gelu_pytorch_tanh, "
                     "gelu_new are)",
                     file, act);
    goto done;
  }

  eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
  if (cJSON_IsNumber(eos) && eos->valuedouble >= 0) {
    c->eos_token_ids[c->n_eos++] = (int)eos->valuedouble;
  } else if (cJSON_IsArray(eos)) {
    const cJSON *e;
    cJSON_ArrayForEach(e, eos) if (cJSON_IsNumber(e) && e->valuedouble >= 0 && c->n_eos < 8)
        c->eos_token_ids[c->n_eos++] = (int)e->valuedouble;
  }

  if ((rc = as__cfg_rope(c, root, file, err, errlen)) != 0)
    goto done;

  /* Derived sizes and consistency. */
  if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 ||
      c->num_layers <= 0 || c->num_heads <= 0) {
    rc = as__cfg_err(err, errlen,
                     "%s: vocab_size, hidden_size, intermediate_size, num_hidden_layers and "
                     "num_attention_heads must all be given and positive",
                     file);
    goto done;
  }
  if (c->num_kv_heads == 0)
    c->num_kv_heads = c->num_heads;
  if (c->head_dim == 0) {
    if (c->hidden_size % c->num_heads != 0) {
      rc = as__cfg_err(err, errlen, "%s: hidden_size %d is not a multiple of %d heads", file,
                       c->hidden_size, c->num_heads);
      goto done;
    }
    c->head_dim = c->hidden_size / c->num_heads;
  }
  if (c->num_heads % c->num_kv_heads != 0 || c->head_dim % 2 != 0 ||
      (c->arch == AS_ARCH_BERT &&
       (c->num_kv_heads != c->num_heads || c->head_dim * c->num_heads != c->hidden_size))) {
    rc = as__cfg_err(err, errlen,
                     "%s: %d attention heads, %d key/value heads and head_dim %d do not fit "
                     "together",
                     file, c->num_heads, c->num_kv_heads, c->head_dim);
    goto done;
  }
  if (c->max_positions <= 0) {
    rc = as__cfg_err(err, errlen, "%s: max_position_embeddings must be positive", file);
    goto done;
  }
  if (c->rope_llama3 && c->rope_orig_max == 0)
    c->rope_orig_max = c->max_positions;
done:
  cJSON_Delete(root);
  return rc;
}

int as_llm_config_load(as_llm_config_t *c, const char *path, char *err, size_t errlen) {
  char buf[4096];
  struct stat sb;
  FILE *f;
  char *text;
  size_t n;
  int rc;

  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    snprintf(buf, sizeof buf, "%s/config.json", path);
    path = buf;
  }
  f = fopen(path, "rb");
  if (f == NULL) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return errno == ENOENT ? AS_ENOTFOUND : AS_EIO;
  }
  if (fstat(fileno(f), &sb) != 0 || sb.st_size > (64 << 20)) {
    fclose(f);
    return as__cfg_err(err, errlen, "%s: unreadable or larger than 64 MiB", path);
  }
  text = malloc((size_t)sb.st_size + 1);
  if (text == NULL) {
    fclose(f);
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "%s: out of memory", path);
    return AS_ENOMEM;
  }
  n = fread(text, 1, (size_t)sb.st_size, f);
  fclose(f);
  text[n] = '\0';
  rc = as_llm_config_parse(c, text, n, path, err, errlen);
  free(text);
  return rc;
}

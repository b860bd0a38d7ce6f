/* safetensors.c — reading Hugging Face safetensors files, defensively.
 *
 * A file is mapped read-only and its JSON header parsed (cJSON) into a table
 * of tensors pointing into the mapping. Nothing in the file is trusted: the
 * header length, the JSON's shape, every dtype, shape and offset pair are
 * checked, overlapping tensors and duplicate names are refused, and every
 * failure is AS_EINVAL with a message naming the file and the tensor. A
 * model folder may hold one model.safetensors or shards listed by
 * model.safetensors.index.json; all of them are merged into one table.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels.h"
#include "llm.h"

#define AS__ST_MAX_HEADER (100u << 20) /* the reference implementation's limit */

typedef struct as__st_map_s {
  char *path;       /* file path (owned) */
  void *base;       /* mapping, or NULL when the image was borrowed */
  size_t len;       /* mapping length */
} as__st_map_t;

struct as_st_s {
  as__st_map_t *maps; /* files mapped or borrowed */
  int nmaps;
  as_st_tensor_t *t;  /* tensors sorted by name; names owned */
  int n;
};

static const struct {
  const char *name;
  size_t size;
} as__dtypes[AS_DT_COUNT] = {
    [AS_DT_BOOL] = {"BOOL", 1},       [AS_DT_U8] = {"U8", 1},   [AS_DT_I8] = {"I8", 1},
    [AS_DT_F8_E4M3] = {"F8_E4M3", 1}, [AS_DT_F8_E5M2] = {"F8_E5M2", 1},
    [AS_DT_I16] = {"I16", 2},         [AS_DT_U16] = {"U16", 2}, [AS_DT_F16] = {"F16", 2},
    [AS_DT_BF16] = {"BF16", 2},       [AS_DT_I32] = {"I32", 4}, [AS_DT_U32] = {"U32", 4},
    [AS_DT_F32] = {"F32", 4},         [AS_DT_F64] = {"F64", 8}, [AS_DT_I64] = {"I64", 8},
    [AS_DT_U64] = {"U64", 8},
};

const char *as_st_dtype_name(int dtype) {
  return dtype >= 0 && dtype < AS_DT_COUNT ? as__dtypes[dtype].name : "?";
}

size_t as_st_dtype_size(int dtype) {
  return dtype >= 0 && dtype < AS_DT_COUNT ? as__dtypes[dtype].size : 0;
}

/* Writes a message into err (when given) and returns code. */
static int as__st_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int as__st_err(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

void as_st_close(as_st_t *st) {
  if (st == NULL)
    return;
  for (int i = 0; i < st->n; i++)
    free((char *)st->t[i].name);
  for (int i = 0; i < st->nmaps; i++) {
    if (st->maps[i].base != NULL)
      munmap(st->maps[i].base, st->maps[i].len);
    free(st->maps[i].path);
  }
  free(st->maps);
  free(st->t);
  free(st);
}

int as_st_count(const as_st_t *st) { return st->n; }

const as_st_tensor_t *as_st_get(const as_st_t *st, int i) {
  return i >= 0 && i < st->n ? &st->t[i] : NULL;
}

static int as__st_cmp_name(const void *a, const void *b) {
  return strcmp(((const as_st_tensor_t *)a)->name, ((const as_st_tensor_t *)b)->name);
}

const as_st_tensor_t *as_st_find(const as_st_t *st, const char *name) {
  as_st_tensor_t key;
  key.name = name;
  return bsearch(&key, st->t, (size_t)st->n, sizeof key, as__st_cmp_name);
}

/* A JSON number that is an integer in [0, 2^53]; returns 0 and sets *v. */
static int as__st_uint(const cJSON *j, uint64_t *v) {
  if (!cJSON_IsNumber(j))
    return -1;
  double d = j->valuedouble;
  if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d)
    return -1;
  *v = (uint64_t)d;
  return 0;
}

/* Order by data start, for the overlap check. */
static int as__st_cmp_data(const void *a, const void *b) {
  const as_st_tensor_t *x = a, *y = b;
  return x->data < y->data ? -1 : x->data > y->data ? 1 : 0;
}

/* Parses one tensor entry `e` named `name` of `file` into *t, whose data
 * region is data[0..dlen). */
static int as__st_entry(as_st_tensor_t *t, const cJSON *e, const char *name, const char *file,
                        const uint8_t *data, size_t dlen, char *err, size_t errlen) {
  const cJSON *dt, *shape, *offs, *d;
  uint64_t begin, end, numel = 1, v;
  size_t esz;
  int i;

  if (!cJSON_IsObject(e))
    return as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\": entry is not a JSON object",
                      file, name);
  dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
  if (!cJSON_IsString(dt))
    return as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\": no dtype string", file, name);
  t->dtype = -1;
  for (i = 0; i < AS_DT_COUNT; i++)
    if (strcmp(dt->valuestring, as__dtypes[i].name) == 0)
      t->dtype = i;
  if (t->dtype < 0)
    return as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\": unknown dtype \"%.32s\"", file,
                      name, dt->valuestring);
  esz = as__dtypes[t->dtype].size;

  shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
  if (!cJSON_IsArray(shape))
    return as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\": no shape array", file, name);
  t->ndim = 0;
  cJSON_ArrayForEach(d, shape) {
    if (t->ndim == AS_ST_MAX_DIMS)
      return as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\": more than %d dimensions",
                        file, name, AS_ST_MAX_DIMS);
    if (as__st_uint(d, &v) != 0 || v > (uint64_t)INT64_MAX)
      return as__st_err(err, errlen, AS_EINVAL,
                        "%s: tensor \"%s\": shape holds something other than a size", file, name);
    t->shape[t->ndim++] = (int64_t)v;
    if (v != 0 && numel > UINT64_MAX / v)
      return as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\": shape overflows", file, name);
    numel *= v;
  }

  offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
  if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
      as__st_uint(cJSON_GetArrayItem(offs, 0), &begin) != 0 ||
      as__st_uint(cJSON_GetArrayItem(offs, 1), &end) != 0)
    return as__st_err(err, errlen, AS_EINVAL,
                      "%s: tensor \"%s\": data_offsets is not a pair of offsets", file, name);
  if (begin > end || end > dlen)
    return as__st_err(err, errlen, AS_EINVAL,
                      "%s: tensor \"%s\": data_offsets [%llu, %llu] outside the %zu data bytes",
                      file, name, (unsigned long long)begin, (unsigned long long)end, dlen);
  if (numel > UINT64_MAX / esz || numel * esz != end - begin)
    return as__st_err(err, errlen, AS_EINVAL,
                      "%s: tensor \"%s\": dtype %s and shape need %llu elements of %zu bytes, "
                      "data_offsets give %llu bytes",
                      file, name, as__dtypes[t->dtype].name, (unsigned long long)numel, esz,
                      (unsigned long long)(end - begin));
  t->numel = (size_t)numel;
  t->nbytes = (size_t)(end - begin);
  t->data = data + begin;
  t->file = file;
  t->name = strdup(name);
  if (t->name == NULL)
    return as__st_err(err, errlen, AS_ENOMEM, "%s: out of memory", file);
  return 0;
}

/* Parses the image buf[0..len) of `file` and appends its tensors to st
 * (whose maps[] already names the file). */
static int as__st_parse_into(as_st_t *st, const uint8_t *buf, size_t len, const char *file,
                             char *err, size_t errlen) {
  uint64_t hlen = 0;
  cJSON *root, *e;
  int count = 0, first = st->n, rc = 0;
  as_st_tensor_t *grown;

  if (len < 8)
    return as__st_err(err, errlen, AS_EINVAL,
                      "%s: truncated: %zu bytes, too short for the 8-byte header length", file,
                      len);
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | buf[i];
  if (hlen > len - 8)
    return as__st_err(err, errlen, AS_EINVAL,
                      "%s: header length %llu is larger than the %zu bytes that follow it "
                      "(truncated or corrupt file)",
                      file, (unsigned long long)hlen, len - 8);
  if (hlen < 2 || hlen > AS__ST_MAX_HEADER)
    return as__st_err(err, errlen, AS_EINVAL, "%s: implausible header length %llu", file,
                      (unsigned long long)hlen);
  root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
  if (root == NULL)
    return as__st_err(err, errlen, AS_EINVAL, "%s: header is not valid JSON", file);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return as__st_err(err, errlen, AS_EINVAL, "%s: header is not a JSON object", file);
  }
  cJSON_ArrayForEach(e, root) count++;
  grown = realloc(st->t, ((size_t)st->n + (size_t)count + 1) * sizeof *grown);
  if (grown == NULL) {
    cJSON_Delete(root);
    return as__st_err(err, errlen, AS_ENOMEM, "%s: out of memory", file);
  }
  st->t = grown;
  cJSON_ArrayForEach(e, root) {
    const char *name = e->string != NULL ? e->string : "";
    if (strcmp(name, "__metadata__") == 0) {
      if (!cJSON_IsObject(e)) {
        rc = as__st_err(err, errlen, AS_EINVAL, "%s: __metadata__ is not a JSON object", file);
        break;
      }
      continue;
    }
    memset(&st->t[st->n], 0, sizeof st->t[st->n]);
    rc = as__st_entry(&st->t[st->n], e, name, file, buf + 8 + hlen, len - 8 - (size_t)hlen, err,
                      errlen);
    if (rc != 0)
      break;
    st->n++;
  }
  cJSON_Delete(root);
  if (rc != 0)
    return rc;

  /* No two tensors of this file may share bytes (empty ones take none). */
  int nf = st->n - first;
  as_st_tensor_t *tmp = malloc(((size_t)nf + 1) * sizeof *tmp);
  if (tmp == NULL) {
    return as__st_err(err, errlen, AS_ENOMEM, "%s: out of memory", file);
  }
  memcpy(tmp, st->t + first, (size_t)nf * sizeof *tmp);
  qsort(tmp, (size_t)nf, sizeof *tmp, as__st_cmp_data);
  const as_st_tensor_t *prev = NULL;
  for (int i = 0; i < nf && rc == 0; i++) {
    if (tmp[i].nbytes == 0)
      continue;
    if (prev != NULL && tmp[i].data < prev->data + prev->nbytes)
      rc = as__st_err(err, errlen, AS_EINVAL, "%s: tensors \"%s\" and \"%s\" overlap", file,
                      prev->name, tmp[i].name);
    if (prev == NULL || tmp[i].data + tmp[i].nbytes > prev->data + prev->nbytes)
      prev = &tmp[i];
  }
  free(tmp);
  return rc;
}

/* Sorts the table by name and refuses duplicates (within or across files). */
static int as__st_finish(as_st_t *st, char *err, size_t errlen) {
  qsort(st->t, (size_t)st->n, sizeof *st->t, as__st_cmp_name);
  for (int i = 1; i < st->n; i++)
    if (strcmp(st->t[i - 1].name, st->t[i].name) == 0)
      return as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\" appears twice (also in %s)",
                        st->t[i].file, st->t[i].name, st->t[i - 1].file);
  return 0;
}

static as_st_t *as__st_new(void) { return calloc(1, sizeof(as_st_t)); }

/* Adds a map record (path copied) and returns it, or NULL on no memory. */
static as__st_map_t *as__st_add_map(as_st_t *st, const char *path) {
  as__st_map_t *m = realloc(st->maps, ((size_t)st->nmaps + 1) * sizeof *m);
  if (m == NULL)
    return NULL;
  st->maps = m;
  m = &st->maps[st->nmaps];
  memset(m, 0, sizeof *m);
  m->path = strdup(path);
  if (m->path == NULL)
    return NULL;
  st->nmaps++;
  return m;
}

int as_st_parse(as_st_t **out, const void *buf, size_t len, const char *file, char *err,
                size_t errlen) {
  as_st_t *st = as__st_new();
  as__st_map_t *m;
  int rc;
  *out = NULL;
  if (st == NULL || (m = as__st_add_map(st, file != NULL ? file : "(memory)")) == NULL) {
    as_st_close(st);
    return as__st_err(err, errlen, AS_ENOMEM, "out of memory");
  }
  rc = as__st_parse_into(st, buf, len, m->path, err, errlen);
  if (rc == 0)
    rc = as__st_finish(st, err, errlen);
  if (rc != 0) {
    as_st_close(st);
    return rc;
  }
  *out = st;
  return 0;
}

/* Maps one file and parses it into st. */
static int as__st_add_file(as_st_t *st, const char *path, char *err, size_t errlen) {
  struct stat sb;
  as__st_map_t *m;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  void *p;
  if (fd < 0)
    return as__st_err(err, errlen, errno == ENOENT ? AS_ENOTFOUND : AS_EIO, "%s: %s", path,
                      strerror(errno));
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(fd);
    return as__st_err(err, errlen, AS_EIO, "%s: not a regular file", path);
  }
  if (sb.st_size < 8) {
    close(fd);
    return as__st_err(err, errlen, AS_EINVAL,
                      "%s: truncated: %lld bytes, too short for the 8-byte header length", path,
                      (long long)sb.st_size);
  }
  p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (p == MAP_FAILED)
    return as__st_err(err, errlen, AS_EIO, "%s: mmap: %s", path, strerror(errno));
  m = as__st_add_map(st, path);
  if (m == NULL) {
    munmap(p, (size_t)sb.st_size);
    return as__st_err(err, errlen, AS_ENOMEM, "%s: out of memory", path);
  }
  m->base = p;
  m->len = (size_t)sb.st_size;
  return as__st_parse_into(st, p, m->len, m->path, err, errlen);
}

/* Reads a whole small file (config, index) into a NUL-terminated heap block. */
static int as__st_slurp(const char *path, char **out, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t n = 0, cap = 0, r;
  if (f == NULL)
    return as__st_err(err, errlen, errno == ENOENT ? AS_ENOTFOUND : AS_EIO, "%s: %s", path,
                      strerror(errno));
  do {
    if (cap - n < 4096) {
      char *g = realloc(buf, cap + 65536);
      if (g == NULL) {
        free(buf);
        fclose(f);
        return as__st_err(err, errlen, AS_ENOMEM, "%s: out of memory", path);
      }
      buf = g;
      cap += 65536;
    }
    r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
  } while (r > 0);
  fclose(f);
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

/* Opens the shards that `index` (model.safetensors.index.json in dir) lists. */
static int as__st_add_index(as_st_t *st, const char *dir, const char *index, char *err,
                            size_t errlen) {
  char *text = NULL, path[4096];
  size_t len = 0;
  cJSON *root, *wm, *e;
  int rc = as__st_slurp(index, &text, &len, err, errlen);
  if (rc != 0)
    return rc;
  root = cJSON_ParseWithLength(text, len);
  free(text);
  wm = root != NULL ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
  if (!cJSON_IsObject(wm)) {
    cJSON_Delete(root);
    return as__st_err(err, errlen, AS_EINVAL, "%s: not a JSON object with a weight_map object",
                      index);
  }
  /* Open each distinct shard once, in order of first mention. */
  cJSON_ArrayForEach(e, wm) {
    const cJSON *p;
    int seen = 0;
    if (!cJSON_IsString(e) || e->valuestring[0] == '\0' || strchr(e->valuestring, '/') != NULL ||
        strcmp(e->valuestring, "..") == 0) {
      rc = as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\": shard is not a file name",
                      index, e->string != NULL ? e->string : "");
      break;
    }
    for (p = wm->child; p != e && !seen; p = p->next)
      seen = strcmp(p->valuestring, e->valuestring) == 0;
    if (seen)
      continue;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->valuestring) >= sizeof path) {
      rc = as__st_err(err, errlen, AS_EINVAL, "%s: path too long", index);
      break;
    }
    rc = as__st_add_file(st, path, err, errlen);
    if (rc != 0)
      break;
  }
  if (rc == 0)
    rc = as__st_finish(st, err, errlen);
  /* Every tensor must be where the index says. */
  if (rc == 0) {
    cJSON_ArrayForEach(e, wm) {
      const as_st_tensor_t *t = as_st_find(st, e->string);
      const char *base = t != NULL ? strrchr(t->file, '/') : NULL;
      if (t == NULL || strcmp(base != NULL ? base + 1 : t->file, e->valuestring) != 0) {
        rc = as__st_err(err, errlen, AS_EINVAL, "%s: tensor \"%s\" is not in shard %s", index,
                        e->string, e->valuestring);
        break;
      }
    }
  }
  cJSON_Delete(root);
  return rc;
}

int as_st_open(as_st_t **out, const char *path, char *err, size_t errlen) {
  struct stat sb;
  char buf[4096];
  as_st_t *st;
  int rc;

  *out = NULL;
  if (stat(path, &sb) != 0)
    return as__st_err(err, errlen, AS_ENOTFOUND, "%s: %s", path, strerror(errno));
  st = as__st_new();
  if (st == NULL)
    return as__st_err(err, errlen, AS_ENOMEM, "out of memory");
  if (!S_ISDIR(sb.st_mode)) {
    rc = as__st_add_file(st, path, err, errlen);
    if (rc == 0)
      rc = as__st_finish(st, err, errlen);
  } else {
    snprintf(buf, sizeof buf, "%s/model.safetensors.index.json", path);
    if (access(buf, F_OK) == 0) {
      rc = as__st_add_index(st, path, buf, err, errlen);
    } else {
      snprintf(buf, sizeof buf, "%s/model.safetensors", path);
      if (access(buf, F_OK) != 0)
        rc = as__st_err(err, errlen, AS_ENOTFOUND,
                        "%s: no model.safetensors nor model.safetensors.index.json", path);
      else if ((rc = as__st_add_file(st, buf, err, errlen)) == 0)
        rc = as__st_finish(st, err, errlen);
    }
  }
  if (rc != 0) {
    as_st_close(st);
    return rc;
  }
  *out = st;
  return 0;
}

int as_st_to_f32(const as_st_tensor_t *t, float *out, char *err, size_t errlen) {
  const uint8_t *p = t->data;
  size_t n = t->numel;
  switch (t->dtype) {
  case AS_DT_F32:
    memcpy(out, p, n * 4);
    return 0;
  case AS_DT_F64:
    for (size_t i = 0; i < n; i++) {
      double d;
      memcpy(&d, p + 8 * i, 8);
      out[i] = (float)d;
    }
    return 0;
  case AS_DT_BF16:
  case AS_DT_F16: {
    uint16_t chunk[1024];
    for (size_t i = 0; i < n; i += 1024) { /* via an aligned buffer: data may be odd */
      size_t m = n - i < 1024 ? n - i : 1024;
      memcpy(chunk, p + 2 * i, m * 2);
      if (t->dtype == AS_DT_BF16)
        ask_bf16_to_f32(out + i, chunk, m);
      else
        ask_f16_to_f32(out + i, chunk, m);
    }
    return 0;
  }
  default:
    return as__st_err(err, errlen, AS_EINVAL,
                      "%s: tensor \"%s\": dtype %s cannot be used as a weight (F32, F16, BF16, "
                      "F64 can)",
                      t->file, t->name, as_st_dtype_name(t->dtype));
  }
}

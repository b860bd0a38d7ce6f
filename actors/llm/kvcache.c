/* kvcache.c — the KV cache of a decoder: the keys and values of many
 * sequences at once, each under a caller-chosen id.
 *
 * Device models (as_model_open on "cuda"/"refdev") keep them in a pool of
 * pages of AS_KV_PAGE tokens in device memory instead (bf16, sized from
 * the free device memory or max_tokens); each sequence owns a list of
 * pages, taken from a free stack as it grows and given back when it is
 * truncated or freed, so memory is never fragmented by sequence lengths
 * (vLLM's PagedAttention). The CPU path is the layout below.
 *
 * Each sequence owns two blocks (keys, values) laid out (layer, position,
 * kv_dim), grown by doubling, so a sequence's rows of one layer are one
 * strided matrix the attention op reads directly. The serving engine adds,
 * extends, truncates and frees sequences between forward calls; max_tokens
 * bounds what all sequences hold together (AS_EFULL beyond it).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"

int as__llm_err(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

int as_kv_new(as_kv_t **out, const as_model_t *m, size_t max_tokens) {
  as_kv_opts_t o = {max_tokens, 0, 0, 0};
  return as_kv_new_ex(out, m, &o, NULL, 0);
}

/* The device pool: step buffers first, then pages from what is left. */
static int as__kv_pool(as_kv_t *kv, const as_kv_opts_t *o, char *err, size_t errlen) {
  const as__dmodel_t *dm = kv->m->dm;
  const ask_dev_t *dev = dm->dev;
  int seqs = o->max_seqs > 0 ? o->max_seqs : 256;
  int rows = o->max_step_tokens > 0 ? o->max_step_tokens : 512 + seqs;
  size_t page_bytes = (size_t)kv->layers * AS_KV_PAGE * (size_t)kv->kv_dim * 2; /* one of k, v */
  size_t npages;
  int rc;
  if ((rc = as__dstep_new(kv, rows, seqs, err, errlen)) != 0)
    return rc;
  if (o->max_tokens > 0) {
    npages = (o->max_tokens + AS_KV_PAGE - 1) / AS_KV_PAGE;
  } else {
    size_t freeb = 0, total = 0;
    double frac = o->mem_fraction > 0 && o->mem_fraction <= 1 ? o->mem_fraction : 0.9;
    if ((rc = dev->mem_info(&freeb, &total, err, errlen)) != 0)
      return rc;
    /* vLLM's rule: this engine may hold frac of the device in all (weights,
     * step buffers, cache), so replicas sharing a GPU each take their part;
     * and never more than is free, less 256 MiB for CUDA's own needs. */
    double own = (double)kv->m->dm->device_bytes + (double)as__dstep_bytes(kv->m, rows, seqs);
    double budget = frac * (double)total - own, room = (double)freeb - 256.0 * 1048576.0;
    if (room < budget)
      budget = room;
    if (budget < (double)(2 * page_bytes))
      return as__llm_err(err, errlen, AS_ENOMEM,
                         "no device memory left for the KV cache: %.0f MiB free of %.0f MiB; "
                         "the model and step buffers take %.0f MiB of the %.0f%% this engine "
                         "may use (gpu_memory_utilization)",
                         (double)freeb / 1048576.0, (double)total / 1048576.0, own / 1048576.0,
                         frac * 100);
    npages = (size_t)(budget / (double)(2 * page_bytes));
  }
  if (npages > (size_t)INT32_MAX / AS_KV_PAGE)
    npages = (size_t)INT32_MAX / AS_KV_PAGE;
  kv->free_pages = malloc(npages * sizeof *kv->free_pages);
  if (kv->free_pages == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory for %zu KV pages", npages);
  if ((rc = dev->alloc((void **)&kv->kc, npages * page_bytes, err, errlen)) != 0 ||
      (rc = dev->alloc((void **)&kv->vc, npages * page_bytes, err, errlen)) != 0)
    return rc;
  kv->npages = (int)npages;
  for (size_t i = 0; i < npages; i++) /* page 0 on top */
    kv->free_pages[i] = (int32_t)(npages - 1 - i);
  kv->nfree = (int)npages;
  kv->max_tokens = npages * AS_KV_PAGE;
  return 0;
}

int as_kv_new_ex(as_kv_t **out, const as_model_t *m, const as_kv_opts_t *o, char *err,
                 size_t errlen) {
  as_kv_t *kv;
  int rc;
  *out = NULL;
  if (m == NULL || m->cfg.arch == AS_ARCH_BERT)
    return as__llm_err(err, errlen, AS_EINVAL, "encoders keep no KV cache");
  kv = calloc(1, sizeof *kv);
  if (kv == NULL)
    return as__llm_err(err, errlen, AS_ENOMEM, "out of memory");
  kv->m = m;
  kv->layers = m->cfg.num_layers;
  kv->kv_dim = m->cfg.num_kv_heads * m->cfg.head_dim;
  kv->max_tokens = o != NULL ? o->max_tokens : 0;
  if (m->dm != NULL) {
    as_kv_opts_t d = {0, 0, 0, 0};
    kv->paged = 1;
    if ((rc = as__kv_pool(kv, o != NULL ? o : &d, err, errlen)) != 0) {
      as_kv_free(kv);
      return rc;
    }
  }
  *out = kv;
  return 0;
}

size_t as_kv_capacity(const as_kv_t *kv) { return kv->max_tokens; }

void as_kv_free(as_kv_t *kv) {
  if (kv == NULL)
    return;
  for (int i = 0; i < kv->n; i++) {
    free(kv->seqs[i].k);
    free(kv->seqs[i].v);
    free(kv->seqs[i].pages);
  }
  free(kv->seqs);
  if (kv->paged) {
    as__dstep_free(kv);
    kv->m->dm->dev->free(kv->kc);
    kv->m->dm->dev->free(kv->vc);
    free(kv->free_pages);
  }
  free(kv);
}

/* Gives back the pages of s beyond what `len` tokens need. */
static void as__kv_unpage(as_kv_t *kv, as__kvseq_t *s, int len) {
  int keep = (len + AS_KV_PAGE - 1) / AS_KV_PAGE;
  while (s->npages > keep)
    kv->free_pages[kv->nfree++] = s->pages[--s->npages];
}

int as__kv_pages_short(const as_kv_t *kv, const as__kvseq_t *s, int need) {
  int want = (need + AS_KV_PAGE - 1) / AS_KV_PAGE;
  (void)kv;
  return want > s->npages ? want - s->npages : 0;
}

int as__kv_pages(as_kv_t *kv, as__kvseq_t *s, int need) {
  int want = (need + AS_KV_PAGE - 1) / AS_KV_PAGE;
  if (want <= s->npages)
    return 0;
  if (want - s->npages > kv->nfree)
    return AS_EFULL;
  if (want > s->pagecap) {
    int cap = s->pagecap ? s->pagecap : 4;
    while (cap < want)
      cap *= 2;
    int32_t *p = realloc(s->pages, (size_t)cap * sizeof *p);
    if (p == NULL)
      return AS_ENOMEM;
    s->pages = p;
    s->pagecap = cap;
  }
  while (s->npages < want)
    s->pages[s->npages++] = kv->free_pages[--kv->nfree];
  return 0;
}

as__kvseq_t *as__kv_find(const as_kv_t *kv, int64_t id) {
  for (int i = 0; i < kv->n; i++)
    if (kv->seqs[i].id == id)
      return &kv->seqs[i];
  return NULL;
}

int as_kv_seq_new(as_kv_t *kv, int64_t id) {
  if (as__kv_find(kv, id) != NULL)
    return AS_EEXISTS;
  if (kv->n == kv->cap) {
    int cap = kv->cap ? kv->cap * 2 : 8;
    as__kvseq_t *s = realloc(kv->seqs, (size_t)cap * sizeof *s);
    if (s == NULL)
      return AS_ENOMEM;
    kv->seqs = s;
    kv->cap = cap;
  }
  memset(&kv->seqs[kv->n], 0, sizeof kv->seqs[0]);
  kv->seqs[kv->n++].id = id;
  return 0;
}

int as_kv_seq_free(as_kv_t *kv, int64_t id) {
  as__kvseq_t *s = as__kv_find(kv, id);
  if (s == NULL)
    return AS_ENOTFOUND;
  kv->tokens -= (size_t)s->len;
  if (kv->paged)
    as__kv_unpage(kv, s, 0);
  free(s->k);
  free(s->v);
  free(s->pages);
  *s = kv->seqs[--kv->n];
  return 0;
}

int as_kv_seq_len(const as_kv_t *kv, int64_t id) {
  const as__kvseq_t *s = as__kv_find(kv, id);
  return s != NULL ? s->len : AS_ENOTFOUND;
}

int as_kv_seq_truncate(as_kv_t *kv, int64_t id, int len) {
  as__kvseq_t *s = as__kv_find(kv, id);
  if (s == NULL)
    return AS_ENOTFOUND;
  if (len < 0 || len > s->len)
    return AS_EINVAL;
  kv->tokens -= (size_t)(s->len - len);
  s->len = len;
  if (kv->paged)
    as__kv_unpage(kv, s, len);
  return 0;
}

size_t as_kv_tokens(const as_kv_t *kv) { return kv->tokens; }

int as__kv_reserve(as_kv_t *kv, as__kvseq_t *s, int need) {
  size_t row = (size_t)kv->kv_dim * sizeof(float);
  int cap;
  float *k, *v;
  if (need <= s->cap)
    return 0;
  for (cap = s->cap ? s->cap : 16; cap < need; cap *= 2)
    ;
  k = malloc((size_t)kv->layers * (size_t)cap * row);
  v = malloc((size_t)kv->layers * (size_t)cap * row);
  if (k == NULL || v == NULL) {
    free(k);
    free(v);
    return AS_ENOMEM;
  }
  for (int l = 0; l < kv->layers && s->len > 0; l++) {
    memcpy((char *)k + (size_t)l * cap * row, (char *)s->k + (size_t)l * s->cap * row,
           (size_t)s->len * row);
    memcpy((char *)v + (size_t)l * cap * row, (char *)s->v + (size_t)l * s->cap * row,
           (size_t)s->len * row);
  }
  free(s->k);
  free(s->v);
  s->k = k;
  s->v = v;
  s->cap = cap;
  return 0;
}

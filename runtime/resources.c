/* resources.c — node resources and placement of replicas on them.
 *
 * Quantities are fixed point (AS_RES_UNIT = 1.0), as Ray does, so that
 * fractional GPUs add up exactly. as_res_place reserves a request on a node
 * all-or-nothing: CPUs, memory (when the node has a limit), custom resources
 * and GPUs, where a fraction below 1 shares one device (packed onto the
 * most-used device with room) and whole numbers take free devices.
 * as_res_release undoes a placement exactly. The format functions write the
 * texts used in logs, errors and CUDA_VISIBLE_DEVICES.
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "runtime.h"

int64_t as_res_fixed(double v) {
  return (int64_t)llround(v * AS_RES_UNIT);
}

/* Index of custom resource `name` on the node, or -1. */
static int as__custom_index(const as_node_res_t *node, const char *name) {
  int j;

  for (j = 0; j < node->ncustom && j < AS_MAX_CUSTOM; j++)
    if (strncmp(node->custom_total[j].name, name, AS_RES_NAME) == 0)
      return j;
  return -1;
}

static int as__req_valid(const as_req_t *req) {
  int k;

  if (req->num_cpus < 0 || req->num_gpus < 0 || req->memory < 0)
    return 0;
  if (req->num_gpus >= AS_RES_UNIT && req->num_gpus % AS_RES_UNIT != 0)
    return 0;
  if (req->ncustom < 0 || req->ncustom > AS_MAX_CUSTOM)
    return 0;
  for (k = 0; k < req->ncustom; k++)
    if (req->custom[k].amount < 0)
      return 0;
  return 1;
}

/* Checks that every custom resource requested exists with enough left
 * (summing repeated names). Zero amounts ask for nothing. */
static int as__custom_fits(const as_node_res_t *node, const as_req_t *req) {
  int64_t need[AS_MAX_CUSTOM] = {0};
  int j, k;

  for (k = 0; k < req->ncustom; k++) {
    if (req->custom[k].amount == 0)
      continue;
    j = as__custom_index(node, req->custom[k].name);
    if (j < 0 || req->custom[k].amount >
                     node->custom_total[j].amount - node->custom_used[j] - need[j])
      return 0;
    need[j] += req->custom[k].amount;
  }
  return 1;
}

/* Chooses the devices for req->num_gpus into alloc; 0 or AS_ENORES. */
static int as__pick_gpus(const as_node_res_t *node, int64_t num_gpus, as_alloc_t *alloc) {
  int d, best = -1, want, ngpu = node->ngpu < AS_MAX_GPUS ? node->ngpu : AS_MAX_GPUS;

  if (num_gpus == 0)
    return 0;
  if (num_gpus < AS_RES_UNIT) {
    for (d = 0; d < ngpu; d++)
      if (node->gpu_used[d] + num_gpus <= AS_RES_UNIT &&
          (best < 0 || node->gpu_used[d] > node->gpu_used[best]))
        best = d;
    if (best < 0)
      return AS_ENORES;
    alloc->ngpu = 1;
    alloc->gpu_ids[0] = best;
    alloc->gpu_share = num_gpus;
    return 0;
  }
  if (num_gpus / AS_RES_UNIT > ngpu)
    return AS_ENORES;
  want = (int)(num_gpus / AS_RES_UNIT);
  for (d = 0; d < ngpu && alloc->ngpu < want; d++)
    if (node->gpu_used[d] == 0)
      alloc->gpu_ids[alloc->ngpu++] = d;
  if (alloc->ngpu < want) {
    alloc->ngpu = 0;
    return AS_ENORES;
  }
  alloc->gpu_share = AS_RES_UNIT;
  return 0;
}

/* Reserves req on node. Returns 0 with alloc filled, AS_ENORES when it does
 * not fit (node unchanged), AS_EINVAL for a malformed request. */
int as_res_place(as_node_res_t *node, const as_req_t *req, as_alloc_t *alloc) {
  int i, j, rc;

  if (node == NULL || req == NULL || alloc == NULL)
    return AS_EINVAL;
  memset(alloc, 0, sizeof *alloc);
  if (!as__req_valid(req))
    return AS_EINVAL;
  if (req->num_cpus > node->cpu_total - node->cpu_used)
    return AS_ENORES;
  if (node->mem_total > 0 && req->memory > node->mem_total - node->mem_used)
    return AS_ENORES;
  if (!as__custom_fits(node, req))
    return AS_ENORES;
  rc = as__pick_gpus(node, req->num_gpus, alloc);
  if (rc != 0)
    return rc;

  node->cpu_used += req->num_cpus;
  node->mem_used += req->memory;
  for (i = 0; i < req->ncustom; i++) {
    j = as__custom_index(node, req->custom[i].name);
    if (j >= 0)
      node->custom_used[j] += req->custom[i].amount;
  }
  for (i = 0; i < alloc->ngpu; i++)
    node->gpu_used[alloc->gpu_ids[i]] += alloc->gpu_share;
  return 0;
}

static void as__sub(int64_t *used, int64_t v) {
  *used = *used > v ? *used - v : 0;
}

/* Returns what as_res_place reserved for the same req and alloc. */
void as_res_release(as_node_res_t *node, const as_req_t *req, const as_alloc_t *alloc) {
  int i, j;

  if (node == NULL || req == NULL || alloc == NULL || !as__req_valid(req))
    return;
  as__sub(&node->cpu_used, req->num_cpus);
  as__sub(&node->mem_used, req->memory);
  for (i = 0; i < req->ncustom; i++) {
    j = as__custom_index(node, req->custom[i].name);
    if (j >= 0)
      as__sub(&node->custom_used[j], req->custom[i].amount);
  }
  for (i = 0; i < alloc->ngpu && i < AS_MAX_GPUS; i++)
    if (alloc->gpu_ids[i] >= 0 && alloc->gpu_ids[i] < AS_MAX_GPUS)
      as__sub(&node->gpu_used[alloc->gpu_ids[i]], alloc->gpu_share);
}

/* Appends a fixed-point value without trailing zeros: 0.5, 1, 0.25. */
static int as__put_fixed(as_buf_t *b, int64_t v) {
  const char *sign = v < 0 ? "-" : "";
  uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
  uint64_t whole = u / AS_RES_UNIT, frac = u % AS_RES_UNIT;
  int digits = 4;

  if (frac == 0)
    return as_buf_appendf(b, "%s%" PRIu64, sign, whole);
  while (frac % 10 == 0) {
    frac /= 10;
    digits--;
  }
  return as_buf_appendf(b, "%s%" PRIu64 ".%0*" PRIu64, sign, whole, digits, frac);
}

/* Appends ", name: value" (value fixed point). */
static int as__put_field(as_buf_t *b, const char *name, int64_t v) {
  int rc = as_buf_appendf(b, ", %.*s: ", AS_RES_NAME, name);

  return rc != 0 ? rc : as__put_fixed(b, v);
}

int as_res_format_req(as_buf_t *b, const as_req_t *req) {
  int k, rc;

  if (b == NULL || req == NULL)
    return AS_EINVAL;
  rc = as_buf_appendf(b, "{CPU: ");
  if (rc == 0)
    rc = as__put_fixed(b, req->num_cpus);
  if (rc == 0)
    rc = as__put_field(b, "GPU", req->num_gpus);
  if (rc == 0 && req->memory != 0)
    rc = as_buf_appendf(b, ", memory: %" PRId64, req->memory);
  for (k = 0; rc == 0 && k < req->ncustom && k < AS_MAX_CUSTOM; k++)
    if (req->custom[k].amount != 0)
      rc = as__put_field(b, req->custom[k].name, req->custom[k].amount);
  return rc != 0 ? rc : as_buf_appendf(b, "}");
}

int as_res_format_free(as_buf_t *b, const as_node_res_t *node) {
  int64_t gpu_free = 0;
  int d, j, rc;

  if (b == NULL || node == NULL)
    return AS_EINVAL;
  for (d = 0; d < node->ngpu && d < AS_MAX_GPUS; d++)
    gpu_free += AS_RES_UNIT - node->gpu_used[d];
  rc = as_buf_appendf(b, "{CPU: ");
  if (rc == 0)
    rc = as__put_fixed(b, node->cpu_total - node->cpu_used);
  if (rc == 0)
    rc = as__put_field(b, "GPU", gpu_free);
  /* memory only once some replica reserved memory: the total alone is noise */
  if (rc == 0 && node->mem_total > 0 && node->mem_used > 0)
    rc = as_buf_appendf(b, ", memory: %" PRId64, node->mem_total - node->mem_used);
  for (j = 0; rc == 0 && j < node->ncustom && j < AS_MAX_CUSTOM; j++)
    rc = as__put_field(b, node->custom_total[j].name,
                       node->custom_total[j].amount - node->custom_used[j]);
  return rc != 0 ? rc : as_buf_appendf(b, "}");
}

int as_res_format_gpus(as_buf_t *b, const as_alloc_t *alloc) {
  int i, rc = 0;

  if (b == NULL || alloc == NULL)
    return AS_EINVAL;
  for (i = 0; rc == 0 && i < alloc->ngpu && i < AS_MAX_GPUS; i++)
    rc = as_buf_appendf(b, i ? ",%d" : "%d", alloc->gpu_ids[i]);
  if (rc == 0 && alloc->ngpu == 0)
    rc = as_buf_appendf(b, "%s", ""); /* still NUL-terminate the text */
  return rc;
}

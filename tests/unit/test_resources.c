/* test_resources.c — unit tests of placement (runtime/resources.c): CPU and
 * memory fit, fractional GPUs packed onto one device, whole GPUs on free
 * devices, malformed requests, custom resources, all-or-nothing failure,
 * exact release, and the texts of the format functions.
 */
#include "runtime.h"
#include "test.h"

#define U AS_RES_UNIT

/* A node with `cpus` CPUs, `gpus` devices and no memory limit. */
static as_node_res_t node_of(double cpus, int gpus) {
  as_node_res_t n;

  memset(&n, 0, sizeof n);
  n.cpu_total = as_res_fixed(cpus);
  n.ngpu = gpus;
  return n;
}

static as_req_t req_of(double cpus, double gpus) {
  as_req_t r;

  memset(&r, 0, sizeof r);
  r.num_cpus = as_res_fixed(cpus);
  r.num_gpus = as_res_fixed(gpus);
  return r;
}

/* Checks that two nodes hold the same amounts (fields, not padding). */
static void node_eq(const as_node_res_t *x, const as_node_res_t *y) {
  int i;

  ASSERT_EQ(x->cpu_used, y->cpu_used);
  ASSERT_EQ(x->mem_used, y->mem_used);
  for (i = 0; i < AS_MAX_GPUS; i++)
    ASSERT_EQ(x->gpu_used[i], y->gpu_used[i]);
  for (i = 0; i < AS_MAX_CUSTOM; i++)
    ASSERT_EQ(x->custom_used[i], y->custom_used[i]);
}

static void add_custom(as_custom_t *c, int *n, const char *name, double amount) {
  snprintf(c[*n].name, AS_RES_NAME, "%s", name);
  c[*n].amount = as_res_fixed(amount);
  (*n)++;
}

TEST(test_fixed) {
  ASSERT_EQ(as_res_fixed(1), U);
  ASSERT_EQ(as_res_fixed(0.5), 5000);
  ASSERT_EQ(as_res_fixed(0.1), 1000);
  ASSERT_EQ(as_res_fixed(0.33333), 3333);
  ASSERT_EQ(as_res_fixed(0.00005), 1); /* rounds to nearest */
  ASSERT_EQ(as_res_fixed(0.1) * 3, as_res_fixed(0.3)); /* no float drift */
}

TEST(test_cpu) {
  as_node_res_t n = node_of(4, 0);
  as_req_t r = req_of(1.5, 0);
  as_alloc_t a[3];

  ASSERT_OK(as_res_place(&n, &r, &a[0]));
  ASSERT_OK(as_res_place(&n, &r, &a[1]));
  ASSERT_EQ(n.cpu_used, 30000);
  ASSERT_EQ(as_res_place(&n, &r, &a[2]), AS_ENORES); /* 4.5 > 4 */
  ASSERT_EQ(n.cpu_used, 30000);
  r = req_of(1, 0);
  ASSERT_OK(as_res_place(&n, &r, &a[2])); /* exactly full */
  ASSERT_EQ(n.cpu_used, n.cpu_total);
  ASSERT_EQ(a[2].ngpu, 0);
  as_res_release(&n, &r, &a[2]);
  ASSERT_EQ(n.cpu_used, 30000);
  r = req_of(-1, 0);
  ASSERT_EQ(as_res_place(&n, &r, &a[2]), AS_EINVAL);
  ASSERT_EQ(as_res_place(NULL, &r, &a[2]), AS_EINVAL);
}

TEST(test_memory) {
  as_node_res_t n = node_of(8, 0);
  as_req_t r = req_of(1, 0);
  as_alloc_t a;

  r.memory = 3ll << 30;
  ASSERT_OK(as_res_place(&n, &r, &a)); /* mem_total 0: unlimited */
  as_res_release(&n, &r, &a);
  ASSERT_EQ(n.mem_used, 0);
  n.mem_total = 4ll << 30;
  ASSERT_OK(as_res_place(&n, &r, &a));
  ASSERT_EQ(as_res_place(&n, &r, &a), AS_ENORES);
  ASSERT_EQ(n.mem_used, 3ll << 30);
  ASSERT_EQ(n.cpu_used, U);
}

TEST(test_fractional_gpus_pack) {
  as_node_res_t n = node_of(16, 2);
  as_req_t half = req_of(1, 0.5), quarter = req_of(1, 0.25);
  as_alloc_t a[6];

  ASSERT_OK(as_res_place(&n, &half, &a[0]));
  ASSERT_OK(as_res_place(&n, &half, &a[1]));
  ASSERT_OK(as_res_place(&n, &half, &a[2]));
  ASSERT_EQ(a[0].ngpu, 1);
  ASSERT_EQ(a[0].gpu_ids[0], 0);
  ASSERT_EQ(a[1].gpu_ids[0], 0); /* two halves share device 0 */
  ASSERT_EQ(a[2].gpu_ids[0], 1); /* the third goes to the next */
  ASSERT_EQ(a[2].gpu_share, 5000);
  ASSERT_EQ(n.gpu_used[0], U);
  ASSERT_EQ(n.gpu_used[1], 5000);
  ASSERT_OK(as_res_place(&n, &quarter, &a[3]));
  ASSERT_EQ(a[3].gpu_ids[0], 1);
  ASSERT_OK(as_res_place(&n, &quarter, &a[4]));
  ASSERT_EQ(as_res_place(&n, &quarter, &a[5]), AS_ENORES);
  ASSERT_EQ(n.cpu_used, 5 * U); /* the failure took nothing */

  as_res_release(&n, &half, &a[0]); /* device 0 back to 0.5 used */
  ASSERT_EQ(n.gpu_used[0], 5000);
  as_res_release(&n, &quarter, &a[3]); /* device 1 back to 0.75 used */
  ASSERT_OK(as_res_place(&n, &quarter, &a[5]));
  ASSERT_EQ(a[5].gpu_ids[0], 1); /* the most-used device that still fits */
  ASSERT_EQ(n.gpu_used[1], U);
}

TEST(test_whole_gpus) {
  as_node_res_t n = node_of(16, 4);
  as_req_t two = req_of(1, 2), frac = req_of(1, 0.5), one = req_of(0, 1);
  as_alloc_t a, b, c, d;
  as_buf_t s;

  ASSERT_OK(as_res_place(&n, &frac, &a)); /* device 0 partly used */
  ASSERT_EQ(a.gpu_ids[0], 0);
  ASSERT_OK(as_res_place(&n, &two, &b));
  ASSERT_EQ(b.ngpu, 2);
  ASSERT_EQ(b.gpu_ids[0], 1);
  ASSERT_EQ(b.gpu_ids[1], 2);
  ASSERT_EQ(b.gpu_share, U);
  ASSERT_EQ(as_res_place(&n, &two, &c), AS_ENORES); /* only device 3 is free */
  ASSERT_OK(as_res_place(&n, &one, &c));
  ASSERT_EQ(c.gpu_ids[0], 3);
  ASSERT_EQ(as_res_place(&n, &one, &d), AS_ENORES);
  as_buf_init(&s);
  ASSERT_OK(as_res_format_gpus(&s, &b));
  ASSERT_STR_EQ(s.data, "1,2");
  as_res_release(&n, &two, &b);
  ASSERT_EQ(n.gpu_used[1], 0);
  ASSERT_EQ(n.gpu_used[2], 0);
  two = req_of(0, 65);
  ASSERT_EQ(as_res_place(&n, &two, &d), AS_ENORES); /* more than the node has */
  as_buf_free(&s);
}

TEST(test_invalid_gpus) {
  as_node_res_t n = node_of(16, 4);
  as_req_t r = req_of(1, 1.5);
  as_alloc_t a;

  ASSERT_EQ(as_res_place(&n, &r, &a), AS_EINVAL);
  r = req_of(1, 2.0001);
  ASSERT_EQ(as_res_place(&n, &r, &a), AS_EINVAL);
  r = req_of(1, -0.5);
  ASSERT_EQ(as_res_place(&n, &r, &a), AS_EINVAL);
  ASSERT_EQ(n.cpu_used, 0);
  r = req_of(1, 0.5);
  n.ngpu = 0;
  ASSERT_EQ(as_res_place(&n, &r, &a), AS_ENORES); /* no GPUs at all */
}

TEST(test_custom) {
  as_node_res_t n = node_of(8, 0);
  as_req_t r = req_of(1, 0);
  as_alloc_t a, b;

  add_custom(n.custom_total, &n.ncustom, "tpu", 2);
  add_custom(n.custom_total, &n.ncustom, "accel_memory", 0.5);
  add_custom(r.custom, &r.ncustom, "tpu", 1.5);
  ASSERT_OK(as_res_place(&n, &r, &a));
  ASSERT_EQ(n.custom_used[0], 15000);
  ASSERT_EQ(as_res_place(&n, &r, &b), AS_ENORES);
  r.custom[0].amount = 5000;
  ASSERT_OK(as_res_place(&n, &r, &b));
  ASSERT_EQ(n.custom_used[0], 2 * U);
  as_res_release(&n, &r, &b);
  ASSERT_EQ(n.custom_used[0], 15000);

  memset(&r, 0, sizeof r);
  add_custom(r.custom, &r.ncustom, "fpga", 1); /* the node has none */
  ASSERT_EQ(as_res_place(&n, &r, &b), AS_ENORES);
  r.custom[0].amount = 0; /* asking for zero asks for nothing */
  ASSERT_OK(as_res_place(&n, &r, &b));
}

TEST(test_all_or_nothing) {
  as_node_res_t n = node_of(8, 1), before;
  as_req_t r = req_of(2, 0.5);
  as_alloc_t a;

  add_custom(n.custom_total, &n.ncustom, "tpu", 1);
  n.mem_total = 1000;
  add_custom(r.custom, &r.ncustom, "tpu", 1);
  r.memory = 100;
  n.gpu_used[0] = 6000; /* the GPU does not fit; everything else would */
  before = n;
  ASSERT_EQ(as_res_place(&n, &r, &a), AS_ENORES);
  node_eq(&n, &before);
  ASSERT_EQ(a.ngpu, 0);

  n.gpu_used[0] = 0; /* now it fits; release restores the node exactly */
  ASSERT_OK(as_res_place(&n, &r, &a));
  ASSERT_EQ(n.mem_used, 100);
  ASSERT_EQ(n.custom_used[0], U);
  ASSERT_EQ(n.gpu_used[0], 5000);
  as_res_release(&n, &r, &a);
  before.gpu_used[0] = 0;
  node_eq(&n, &before);
}

TEST(test_format) {
  as_node_res_t n = node_of(8, 2);
  as_req_t r = req_of(8, 1);
  as_alloc_t a;
  as_buf_t s;

  as_buf_init(&s);
  ASSERT_OK(as_res_format_req(&s, &r));
  ASSERT_STR_EQ(s.data, "{CPU: 8, GPU: 1}");
  s.len = 0;
  r = req_of(0.25, 0.5);
  r.memory = 1ll << 30;
  add_custom(r.custom, &r.ncustom, "tpu", 0.05);
  add_custom(r.custom, &r.ncustom, "unused", 0);
  ASSERT_OK(as_res_format_req(&s, &r));
  ASSERT_STR_EQ(s.data, "{CPU: 0.25, GPU: 0.5, memory: 1073741824, tpu: 0.05}");

  s.len = 0;
  add_custom(n.custom_total, &n.ncustom, "tpu", 4);
  r = req_of(6, 0.5);
  ASSERT_OK(as_res_place(&n, &r, &a));
  ASSERT_OK(as_res_format_free(&s, &n));
  ASSERT_STR_EQ(s.data, "{CPU: 2, GPU: 1.5, tpu: 4}");
  s.len = 0;
  ASSERT_OK(as_res_format_gpus(&s, &a));
  ASSERT_STR_EQ(s.data, "0");

  s.len = 0;
  r = req_of(1, 0);
  ASSERT_OK(as_res_place(&n, &r, &a));
  ASSERT_OK(as_res_format_gpus(&s, &a));
  ASSERT_STR_EQ(s.data, "");

  s.len = 0;
  n = node_of(12.125, 0);
  ASSERT_OK(as_res_format_free(&s, &n));
  ASSERT_STR_EQ(s.data, "{CPU: 12.125, GPU: 0}");
  as_buf_free(&s);
}

TEST_MAIN(test_fixed, test_cpu, test_memory, test_fractional_gpus_pack, test_whole_gpus,
          test_invalid_gpus, test_custom, test_all_or_nothing, test_format)

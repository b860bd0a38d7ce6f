/* table.c — the replica table: one file, mapped MAP_SHARED by the head and
 * every worker, holding one as_slot_t per replica on this node.
 *
 * Slots are updated with lock-free atomics only (no locks across processes):
 * callers admit a request with a compare-and-swap on `inflight` bounded by
 * `max_ongoing`, replicas release it when they answer. as_p2c_acquire routes
 * with the power of two choices. The controller owns `state`, `gen` and `pid`.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"

static size_t as__table_size(uint32_t nslots) {
  return sizeof(as_table_t) + (size_t)nslots * sizeof(as_slot_t);
}

/* Creates the file (truncating any old one), sizes it and maps it, with
 * every slot FREE. Returns 0, AS_EINVAL or AS_EIO. */
int as_table_create(const char *path, uint32_t nslots, as_table_t **out) {
  as_table_t *t = NULL;
  size_t size;
  uint32_t i;
  int fd = -1, rc = 0;

  if (path == NULL || out == NULL)
    return AS_EINVAL;
  *out = NULL;
  size = as__table_size(nslots);
  fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
    rc = AS_EIO;
    goto cleanup;
  }
  t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (t == MAP_FAILED) {
    t = NULL;
    rc = AS_EIO;
    goto cleanup;
  }
  t->nslots = nslots;
  t->pad = 0;
  for (i = 0; i < nslots; i++) {
    as_slot_t *s = &t->slots[i];

    atomic_store_explicit(&s->inflight, 0, memory_order_relaxed);
    atomic_store_explicit(&s->state, AS_SLOT_FREE, memory_order_relaxed);
    atomic_store_explicit(&s->gen, 0, memory_order_relaxed);
    atomic_store_explicit(&s->pid, 0, memory_order_relaxed);
    atomic_store_explicit(&s->max_ongoing, 0, memory_order_relaxed);
  }
  atomic_thread_fence(memory_order_release);
  t->magic = AS_TABLE_MAGIC;
  *out = t;

cleanup:
  if (fd >= 0)
    close(fd);
  return rc;
}

/* Maps an existing table. Returns 0, AS_EIO when the file cannot be opened
 * or mapped, AS_EINVAL when it is not a table (magic or size mismatch). */
int as_table_open(const char *path, as_table_t **out) {
  as_table_t *t = NULL;
  struct stat st;
  size_t size = 0;
  int fd = -1, rc = 0;

  if (path == NULL || out == NULL)
    return AS_EINVAL;
  *out = NULL;
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0) {
    rc = AS_EIO;
    goto cleanup;
  }
  if ((size_t)st.st_size < sizeof(as_table_t)) {
    rc = AS_EINVAL;
    goto cleanup;
  }
  size = (size_t)st.st_size;
  t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (t == MAP_FAILED) {
    t = NULL;
    rc = AS_EIO;
    goto cleanup;
  }
  if (t->magic != AS_TABLE_MAGIC || as__table_size(t->nslots) != size) {
    rc = AS_EINVAL;
    goto cleanup;
  }
  atomic_thread_fence(memory_order_acquire);
  *out = t;
  t = NULL;

cleanup:
  if (t != NULL)
    munmap(t, size);
  if (fd >= 0)
    close(fd);
  return rc;
}

void as_table_close(as_table_t *t) {
  if (t != NULL)
    munmap(t, as__table_size(t->nslots));
}

/* Returns 1 when the request is admitted (inflight was below max_ongoing, or
 * max_ongoing <= 0 for no limit, and the replica is RUNNING), 0 otherwise. */
int as_slot_acquire(as_slot_t *s) {
  int32_t cur, max;

  if (s == NULL)
    return 0;
  cur = atomic_load_explicit(&s->inflight, memory_order_relaxed);
  for (;;) {
    if (atomic_load_explicit(&s->state, memory_order_acquire) != AS_SLOT_RUNNING)
      return 0;
    max = atomic_load_explicit(&s->max_ongoing, memory_order_relaxed);
    if ((max > 0 && cur >= max) || cur == INT32_MAX)
      return 0;
    if (atomic_compare_exchange_weak_explicit(&s->inflight, &cur, cur + 1,
                                              memory_order_acq_rel,
                                              memory_order_relaxed))
      return 1;
  }
}

/* Subtracts one from inflight, never going below zero (a slot reset by the
 * controller may see late releases from the previous process). */
void as_slot_release(as_slot_t *s) {
  int32_t cur;

  if (s == NULL)
    return;
  cur = atomic_load_explicit(&s->inflight, memory_order_relaxed);
  while (cur > 0 &&
         !atomic_compare_exchange_weak_explicit(&s->inflight, &cur, cur - 1,
                                                memory_order_acq_rel,
                                                memory_order_relaxed))
    ;
}

uint64_t as_rand(uint64_t *state) {
  uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;

  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static int as__running(const as_table_t *t, uint32_t id) {
  return id < t->nslots &&
         atomic_load_explicit(&t->slots[id].state, memory_order_relaxed) == AS_SLOT_RUNNING;
}

/* Returns the position in ids of the k-th RUNNING entry, or -1 (the states
 * may have changed since they were counted). */
static int as__nth_running(const as_table_t *t, const uint32_t *ids, int n, int k) {
  int i;

  for (i = 0; i < n; i++)
    if (as__running(t, ids[i]) && k-- == 0)
      return i;
  return -1;
}

int as_p2c_acquire(as_table_t *t, const uint32_t *ids, int n, uint64_t *rng) {
  int i, r = 0, a, b, first, second, start;
  int32_t la, lb;

  if (t == NULL || ids == NULL || rng == NULL || n <= 0)
    return -1;
  for (i = 0; i < n; i++)
    r += as__running(t, ids[i]);
  if (r == 0)
    return -1;
  a = (int)(as_rand(rng) % (uint64_t)r);
  b = a;
  if (r > 1) {
    b = (int)(as_rand(rng) % (uint64_t)(r - 1));
    b += b >= a;
  }
  a = as__nth_running(t, ids, n, a);
  b = as__nth_running(t, ids, n, b);
  if (a >= 0 && b >= 0) {
    la = atomic_load_explicit(&t->slots[ids[a]].inflight, memory_order_relaxed);
    lb = atomic_load_explicit(&t->slots[ids[b]].inflight, memory_order_relaxed);
    first = lb < la ? b : a;
    second = first == a ? b : a;
    if (as_slot_acquire(&t->slots[ids[first]]))
      return (int)ids[first];
    if (second != first && as_slot_acquire(&t->slots[ids[second]]))
      return (int)ids[second];
  }
  start = (int)(as_rand(rng) % (uint64_t)n);
  for (i = 0; i < n; i++) {
    uint32_t id = ids[(start + i) % n];

    if (id < t->nslots && as_slot_acquire(&t->slots[id]))
      return (int)id;
  }
  return -1;
}

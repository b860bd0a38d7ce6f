/* test_table.c — unit tests of the shared-memory replica table
 * (runtime/table.c): two mappings of one file share memory, admission at
 * max_ongoing, release flooring at zero, power-of-two-choices routing, and a
 * forked child updating the table through its own mapping.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "runtime.h"
#include "test.h"

/* A fresh table file path for this process. */
static void table_path(char *out, size_t n) {
  const char *dir = getenv("TMPDIR");

  snprintf(out, n, "%s/as_test_table.%d", dir ? dir : "/tmp", (int)getpid());
}

static void set_slot(as_table_t *t, uint32_t i, int32_t state, int32_t max) {
  atomic_store(&t->slots[i].state, state);
  atomic_store(&t->slots[i].max_ongoing, max);
  atomic_store(&t->slots[i].inflight, 0);
}

TEST(test_create_open) {
  as_table_t *a = NULL, *b = NULL;
  char path[256];
  struct stat st;
  uint32_t i;
  int fd;

  table_path(path, sizeof path);
  ASSERT_OK(as_table_create(path, 8, &a));
  ASSERT_EQ(a->magic, AS_TABLE_MAGIC);
  ASSERT_EQ(a->nslots, 8);
  for (i = 0; i < 8; i++) {
    ASSERT_EQ(atomic_load(&a->slots[i].state), AS_SLOT_FREE);
    ASSERT_EQ(atomic_load(&a->slots[i].inflight), 0);
  }
  ASSERT_OK(stat(path, &st));
  ASSERT_EQ(st.st_mode & 0777, 0600);
  ASSERT_OK(as_table_open(path, &b));
  ASSERT_TRUE(a != b);
  ASSERT_EQ(b->nslots, 8);
  atomic_store(&a->slots[3].pid, 4242);
  atomic_fetch_add(&b->slots[3].gen, 7);
  ASSERT_EQ(atomic_load(&b->slots[3].pid), 4242);
  ASSERT_EQ(atomic_load(&a->slots[3].gen), 7);
  as_table_close(b);
  as_table_close(a);

  /* A file of the wrong size or magic is refused. */
  ASSERT_OK(truncate(path, (off_t)(sizeof(as_table_t) + 3 * sizeof(as_slot_t))));
  ASSERT_EQ(as_table_open(path, &b), AS_EINVAL);
  ASSERT_TRUE(b == NULL);
  fd = open(path, O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "garbage, not a table at all", 27), 27);
  close(fd);
  ASSERT_EQ(as_table_open(path, &b), AS_EINVAL);
  ASSERT_OK(truncate(path, 0));
  ASSERT_EQ(as_table_open(path, &b), AS_EINVAL);
  unlink(path);
  ASSERT_EQ(as_table_open(path, &b), AS_EIO);
  ASSERT_EQ(as_table_create("/nonexistent-dir/x", 1, &a), AS_EIO);
}

TEST(test_acquire_release) {
  as_table_t *t = NULL;
  as_slot_t *s;
  char path[256];
  int i;

  table_path(path, sizeof path);
  ASSERT_OK(as_table_create(path, 2, &t));
  s = &t->slots[0];
  ASSERT_EQ(as_slot_acquire(s), 0); /* FREE: not admitted */
  set_slot(t, 0, AS_SLOT_RUNNING, 3);
  ASSERT_EQ(as_slot_acquire(s), 1);
  ASSERT_EQ(as_slot_acquire(s), 1);
  ASSERT_EQ(as_slot_acquire(s), 1);
  ASSERT_EQ(as_slot_acquire(s), 0); /* at max_ongoing */
  ASSERT_EQ(atomic_load(&s->inflight), 3);
  as_slot_release(s);
  ASSERT_EQ(as_slot_acquire(s), 1);
  atomic_store(&s->state, AS_SLOT_DRAINING);
  as_slot_release(s);
  ASSERT_EQ(as_slot_acquire(s), 0); /* draining: no new requests */

  for (i = 0; i < 10; i++)
    as_slot_release(s);
  ASSERT_EQ(atomic_load(&s->inflight), 0); /* floors at zero */

  set_slot(t, 1, AS_SLOT_RUNNING, 0); /* 0 means no limit */
  for (i = 0; i < 1000; i++)
    ASSERT_EQ(as_slot_acquire(&t->slots[1]), 1);
  ASSERT_EQ(atomic_load(&t->slots[1].inflight), 1000);
  as_table_close(t);
  unlink(path);
}

TEST(test_p2c_less_loaded) {
  uint32_t ids[2] = {0, 1};
  uint64_t rng = 1;
  as_table_t *t = NULL;
  char path[256];
  int i, r;

  table_path(path, sizeof path);
  ASSERT_OK(as_table_create(path, 2, &t));
  set_slot(t, 0, AS_SLOT_RUNNING, 100);
  set_slot(t, 1, AS_SLOT_RUNNING, 100);
  atomic_store(&t->slots[0].inflight, 10);
  for (i = 0; i < 10; i++) { /* slot 1 wins until the loads are equal */
    r = as_p2c_acquire(t, ids, 2, &rng);
    ASSERT_EQ(r, 1);
  }
  ASSERT_EQ(atomic_load(&t->slots[1].inflight), 10);
  for (i = 0; i < 100; i++) { /* then they stay within one of each other */
    r = as_p2c_acquire(t, ids, 2, &rng);
    ASSERT_TRUE(r == 0 || r == 1);
    ASSERT_LE(abs(atomic_load(&t->slots[0].inflight) - atomic_load(&t->slots[1].inflight)), 1);
  }
  as_table_close(t);
  unlink(path);
}

TEST(test_p2c_spread_and_states) {
  uint32_t ids[5] = {4, 0, 2, 1, 3};
  int hits[5] = {0}, i, r;
  uint64_t rng = 42;
  as_table_t *t = NULL;
  char path[256];

  table_path(path, sizeof path);
  ASSERT_OK(as_table_create(path, 5, &t));
  set_slot(t, 0, AS_SLOT_RUNNING, 0);
  set_slot(t, 1, AS_SLOT_STARTING, 0);
  set_slot(t, 2, AS_SLOT_RUNNING, 0);
  set_slot(t, 3, AS_SLOT_DRAINING, 0);
  set_slot(t, 4, AS_SLOT_RUNNING, 0);
  for (i = 0; i < 3000; i++) {
    r = as_p2c_acquire(t, ids, 5, &rng);
    ASSERT_GE(r, 0);
    ASSERT_LT(r, 5);
    hits[r]++;
    as_slot_release(&t->slots[r]); /* loads stay equal: picks are random */
  }
  ASSERT_GT(hits[0], 500);
  ASSERT_GT(hits[2], 500);
  ASSERT_GT(hits[4], 500);
  ASSERT_EQ(hits[1], 0);
  ASSERT_EQ(hits[3], 0);

  set_slot(t, 0, AS_SLOT_DEAD, 0);
  set_slot(t, 2, AS_SLOT_FREE, 0);
  set_slot(t, 4, AS_SLOT_DEAD, 0);
  ASSERT_EQ(as_p2c_acquire(t, ids, 5, &rng), -1); /* none runs */
  ASSERT_EQ(as_p2c_acquire(t, ids, 0, &rng), -1);
  as_table_close(t);
  unlink(path);
}

TEST(test_p2c_full) {
  uint32_t ids[4] = {0, 1, 2, 3};
  uint64_t rng = 7;
  as_table_t *t = NULL;
  char path[256];
  int i, r, total = 0;

  table_path(path, sizeof path);
  ASSERT_OK(as_table_create(path, 4, &t));
  for (i = 0; i < 4; i++)
    set_slot(t, (uint32_t)i, AS_SLOT_RUNNING, i + 1); /* capacity 1+2+3+4 */
  for (i = 0; i < 10; i++) { /* the scan fills every slot, not only the sampled two */
    r = as_p2c_acquire(t, ids, 4, &rng);
    ASSERT_GE(r, 0);
  }
  for (i = 0; i < 4; i++) {
    ASSERT_EQ(atomic_load(&t->slots[i].inflight), i + 1);
    total += atomic_load(&t->slots[i].inflight);
  }
  ASSERT_EQ(total, 10);
  ASSERT_EQ(as_p2c_acquire(t, ids, 4, &rng), -1);
  as_slot_release(&t->slots[2]);
  ASSERT_EQ(as_p2c_acquire(t, ids, 4, &rng), 2);
  ASSERT_EQ(as_p2c_acquire(t, ids, 4, &rng), -1);

  ids[0] = 99; /* out-of-range ids are ignored */
  as_slot_release(&t->slots[1]);
  ASSERT_EQ(as_p2c_acquire(t, ids, 4, &rng), 1);
  as_table_close(t);
  unlink(path);
}

TEST(test_fork_child) {
  as_table_t *t = NULL, *c = NULL;
  char path[256];
  pid_t pid;
  int status, i;

  table_path(path, sizeof path);
  ASSERT_OK(as_table_create(path, 1, &t));
  set_slot(t, 0, AS_SLOT_RUNNING, 0);
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) { /* the child maps the file itself, like a worker */
    if (as_table_open(path, &c) != 0)
      _exit(2);
    for (i = 0; i < 10000; i++)
      if (!as_slot_acquire(&c->slots[0]))
        _exit(3);
    atomic_store(&c->slots[0].pid, (int32_t)getpid());
    as_table_close(c);
    _exit(0);
  }
  for (i = 0; i < 10000; i++) /* the parent races it through its own mapping */
    ASSERT_EQ(as_slot_acquire(&t->slots[0]), 1);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_EQ(atomic_load(&t->slots[0].inflight), 20000);
  ASSERT_EQ(atomic_load(&t->slots[0].pid), pid);
  as_table_close(t);
  unlink(path);
}

TEST(test_rand) {
  uint64_t a = 1, b = 1, z = 0;
  int i;

  for (i = 0; i < 100; i++)
    ASSERT_UEQ(as_rand(&a), as_rand(&b)); /* deterministic for a seed */
  ASSERT_NE(as_rand(&a), as_rand(&a));
  (void)as_rand(&z);
  ASSERT_NE(z, 0); /* a zero state is repaired, not stuck */
}

TEST_MAIN(test_create_open, test_acquire_release, test_p2c_less_loaded,
          test_p2c_spread_and_states, test_p2c_full, test_fork_child, test_rand)

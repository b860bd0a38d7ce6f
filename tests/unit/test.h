/* test.h — a tiny unit-test harness for actorserve's C tests.
 *
 * A test file defines `static void test_x(void)` functions with TEST(test_x)
 * and ends with TEST_MAIN(test_a, test_b, ...). Each test runs in its own
 * forked process with a timeout (TEST_TIMEOUT seconds), so a crash or a hang
 * fails that test only. ASSERT_* macros print both values, the file, the line
 * and the test name, then end the test. SKIP("why") skips visibly.
 * TEST_NOFORK=1 in the environment runs tests in-process (for debuggers);
 * TEST_TIMEOUT=S overrides the file's timeout (the CUDA tests on the CPU
 * emulator, ctest cudaemu_*); test names as arguments run those tests only
 * (a name that matches no test fails the run). The program prints
 * "N passed, N failed" and exits non-zero when a test failed.
 */
#ifndef AS_TEST_H
#define AS_TEST_H

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TEST_TIMEOUT
#define TEST_TIMEOUT 30
#endif

#define T__EXIT_FAIL 1
#define T__EXIT_SKIP 77

static const char *t__current = "?"; /* name of the running test */
static int t__nofork;                /* run in-process */
static int t__failed_inproc;         /* in-process: the current test failed */

#define TEST(name) static void name(void)

/* Ends the current test as failed (its process exits, or in-process returns). */
static inline void t__fail_here(void) {
  fflush(stdout);
  fflush(stderr);
  if (!t__nofork)
    _exit(T__EXIT_FAIL);
  t__failed_inproc = 1;
}

#define T__FAIL(...)                                                  \
  do {                                                                \
    fprintf(stderr, "%s:%d: in %s: ", __FILE__, __LINE__, t__current); \
    fprintf(stderr, __VA_ARGS__);                                     \
    fputc('\n', stderr);                                              \
    t__fail_here();                                                   \
    return;                                                           \
  } while (0)

#define T__CMP(a, op, b)                                                          \
  do {                                                                            \
    long long t__a = (long long)(a), t__b = (long long)(b);                       \
    if (!(t__a op t__b))                                                          \
      T__FAIL("ASSERT(%s %s %s) failed: %lld vs %lld", #a, #op, #b, t__a, t__b); \
  } while (0)

#define ASSERT_EQ(a, b) T__CMP(a, ==, b)
#define ASSERT_NE(a, b) T__CMP(a, !=, b)
#define ASSERT_LT(a, b) T__CMP(a, <, b)
#define ASSERT_LE(a, b) T__CMP(a, <=, b)
#define ASSERT_GT(a, b) T__CMP(a, >, b)
#define ASSERT_GE(a, b) T__CMP(a, >=, b)
#define ASSERT_TRUE(x) T__CMP(!!(x), ==, 1)
#define ASSERT_FALSE(x) T__CMP(!!(x), ==, 0)
#define ASSERT_OK(x) T__CMP(x, ==, 0)

#define ASSERT_UEQ(a, b)                                                            \
  do {                                                                              \
    unsigned long long t__a = (unsigned long long)(a), t__b = (unsigned long long)(b); \
    if (t__a != t__b)                                                               \
      T__FAIL("ASSERT_UEQ(%s, %s) failed: %llu vs %llu", #a, #b, t__a, t__b);      \
  } while (0)

#define ASSERT_DBL_EQ(a, b)                                                  \
  do {                                                                       \
    double t__a = (a), t__b = (b);                                           \
    if (!(t__a == t__b))                                                     \
      T__FAIL("ASSERT_DBL_EQ(%s, %s) failed: %.17g vs %.17g", #a, #b, t__a, t__b); \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                \
  do {                                                                     \
    const char *t__a = (a), *t__b = (b);                                   \
    if (t__a == NULL || t__b == NULL || strcmp(t__a, t__b) != 0)           \
      T__FAIL("ASSERT_STR_EQ(%s, %s) failed: \"%s\" vs \"%s\"", #a, #b,    \
              t__a ? t__a : "(null)", t__b ? t__b : "(null)");             \
  } while (0)

/* Compares n bytes; prints the first differing offset. */
#define ASSERT_MEM_EQ(a, b, n)                                                   \
  do {                                                                           \
    const unsigned char *t__a = (const void *)(a), *t__b = (const void *)(b);    \
    size_t t__i, t__n = (n);                                                     \
    for (t__i = 0; t__i < t__n && t__a[t__i] == t__b[t__i]; t__i++)              \
      ;                                                                          \
    if (t__i < t__n)                                                             \
      T__FAIL("ASSERT_MEM_EQ(%s, %s, %zu) failed at byte %zu: 0x%02x vs 0x%02x", \
              #a, #b, t__n, t__i, t__a[t__i], t__b[t__i]);                       \
  } while (0)

#define SKIP(reason)                                     \
  do {                                                   \
    printf("  skip %s: %s\n", t__current, (reason));     \
    fflush(stdout);                                      \
    if (!t__nofork)                                      \
      _exit(T__EXIT_SKIP);                               \
    return;                                              \
  } while (0)

/* Runs one test in a child process; returns 0 pass, 1 fail, 2 skip. */
static inline int t__run_one(const char *name, void (*fn)(void)) {
  pid_t pid;
  int status;

  t__current = name;
  fflush(stdout);
  fflush(stderr);
  if (t__nofork) {
    t__failed_inproc = 0;
    fn();
    return t__failed_inproc;
  }
  pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    const char *t = getenv("TEST_TIMEOUT");
    alarm(t != NULL && atoi(t) > 0 ? (unsigned)atoi(t) : TEST_TIMEOUT);
    fn();
    exit(0); /* not _exit: let LeakSanitizer check the test */
  }
  while (waitpid(pid, &status, 0) < 0)
    ;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return 0;
  if (WIFEXITED(status) && WEXITSTATUS(status) == T__EXIT_SKIP)
    return 2;
  if (WIFSIGNALED(status))
    fprintf(stderr, "  %s: killed by signal %d%s\n", name, WTERMSIG(status),
            WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
  return 1;
}

/* Runs fns[0..n), whose names are the comma-separated list `names`. */
static inline int t__run(void (*const *fns)(void), size_t n, const char *names,
                         int argc, char **argv) {
  int passed = 0, failed = 0, skipped = 0, r, a;
  const char *env = getenv("TEST_NOFORK");
  char *list = strdup(names), *save = NULL, *name;
  size_t i;

  if (list == NULL)
    return 1;
  t__nofork = env != NULL && strcmp(env, "0") != 0;
  name = strtok_r(list, ", \t\n", &save);
  for (i = 0; i < n && name != NULL; i++, name = strtok_r(NULL, ", \t\n", &save)) {
    for (a = 1; a < argc && strcmp(argv[a], name) != 0; a++)
      ;
    if (argc > 1 && a == argc)
      continue;
    r = t__run_one(name, fns[i]);
    printf("%s %s\n", r == 0 ? "ok  " : r == 2 ? "skip" : "FAIL", name);
    fflush(stdout);
    passed += r == 0;
    failed += r == 1;
    skipped += r == 2;
  }
  for (a = 1; a < argc; a++) { /* every name given must be a test of this program */
    size_t len = strlen(argv[a]);
    const char *p = names;
    while ((p = strstr(p, argv[a])) != NULL &&
           !((p == names || strchr(", \t\n", p[-1]) != NULL) &&
             (p[len] == '\0' || strchr(", \t\n", p[len]) != NULL)))
      p += len;
    if (p == NULL) {
      printf("%s: no test named %s in this program\n", argv[0], argv[a]);
      failed++;
    }
  }
  printf("%s: %d passed, %d failed", argv[0], passed, failed);
  if (skipped)
    printf(", %d skipped", skipped);
  printf("\n");
  free(list);
  return failed ? 1 : 0;
}

/* TEST_MAIN(test_a, test_b, ...) defines main(), running the tests in order. */
#define TEST_MAIN(...)                                                  \
  int main(int argc, char **argv) {                                     \
    static void (*const fns[])(void) = {__VA_ARGS__};                   \
    return t__run(fns, sizeof fns / sizeof fns[0], #__VA_ARGS__, argc, argv); \
  }

#endif /* AS_TEST_H */

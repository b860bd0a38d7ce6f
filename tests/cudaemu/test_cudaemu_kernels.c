/* test_cudaemu_kernels.c — the CUDA kernels of kernels/cuda, run on the CPU
 * by the emulator of tests/cudaemu, against their kernels/ref twins.
 *
 * The .cu sources themselves are compiled (cu2cpp.py rewrites the launch
 * syntax, g++ compiles them against tests/cudaemu/include) and their
 * launchers (kernels/cuda/cuda_int.h) are called directly on host memory.
 * Every CUDA thread is a fiber, barriers and warp shuffles have their exact
 * semantics, and a divergent barrier, a deadlock, an undefined shuffle or a
 * misaligned vector load fails the launch (see cudaemu.cc). So this checks
 * the kernels' index math, reductions and synchronisation on machines
 * without a GPU; their speed and the device's own arithmetic (expf's ulps,
 * fused multiply-adds that nvcc forms) are for tests/unit/test_cuda_ops.c on
 * a GPU.
 *
 * Every test runs under two schedules: threads in ascending order with every
 * warp advancing evenly, then in descending order with a warp running ahead
 * of the others up to its next __syncthreads (a race-free kernel gives the
 * same results; a missing __syncthreads usually does not). Buffers end at a guard page (reads and
 * writes past the end fault; the fault handler names kernel, block and
 * thread) and are surrounded by canaries (checked after every launch), and
 * outputs start as NaN so that an element a kernel forgets stays visible.
 *
 * Tolerances are those of tests/unit/test_cuda_ops.c:
 *   f32 element-wise and per-row ops: atol 1e-5, rtol 1e-5 (exact where the
 *   kernel copies or adds); attention and GEMV reductions in another order:
 *   atol 1e-4, rtol 1e-4; the fused GEMVs (norm_matmul, glu_matmul against
 *   their refdev twins): max |got - want| <= 1e-4 * max |want|, the new
 *   residual xo bit for bit; argmax and sampling: the same token ids and
 *   generator states, distributions 1e-5; bf16 roundings: bit for bit.
 */
#define TEST_TIMEOUT 120
#include "test.h"

#include <fcntl.h>
#include <math.h>
#include <sys/mman.h>

#include "cuda_int.h"
#include "kernels.h"
#include "kernel_data.h"

/* ---- the error recorder that backend.c would provide ---- */

static char cu_err[4096];
static int cu_failed;

int ask__cu_check(cudaError_t err, const char *what) {
  if (err == cudaSuccess)
    return 0;
  if (!cu_failed) {
    snprintf(cu_err, sizeof cu_err, "%s: %s%s%s", what, cudaGetErrorString(err),
             ask_emu_last_error()[0] ? "\n    " : "", ask_emu_last_error());
    cu_failed = 1;
  }
  return 1;
}

int ask__cu_failed(void) { return cu_failed; }

static void cu_reset(void) {
  cu_failed = 0;
  cu_err[0] = '\0';
  ask_emu_clear_error();
  if (ask__cu_paged_init(NULL) != 0 || ask__cu_sample_init(NULL) != 0) { /* merge counters */
    fprintf(stderr, "ask__cu_paged_init / ask__cu_sample_init: %s\n", cu_err);
    exit(1);
  }
}

static const cudaStream_t S = NULL;

/* ---- guarded buffers ---- */

#define CANARY 0xA5
typedef struct {
  unsigned char *map, *p;
  size_t len, bytes;
} gblk_t;
static gblk_t gblk[2048];
static int ngblk;

/* bytes of memory whose end (rounded up to 16 bytes, cudaMalloc's alignment
 * being 256) abuts a PROT_NONE page; the rest of the mapping is a canary;
 * the contents start as 0xff bytes (NaN as floats, -1 as ints). */
#if defined(__SANITIZE_ADDRESS__)
/* Under AddressSanitizer: malloc'd memory, whose exact bounds ASan checks. */
static void *galloc(size_t bytes) {
  void *p = NULL;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0 ||
      ngblk == (int)(sizeof gblk / sizeof gblk[0])) {
    fprintf(stderr, "galloc: out of memory\n");
    exit(1);
  }
  memset(p, 0xff, bytes);
  gblk[ngblk++] = (gblk_t){NULL, p, 0, bytes};
  return p;
}

static void gfree(void *p) {
  for (int i = 0; i < ngblk; i++)
    if (gblk[i].p == p) {
      free(p);
      gblk[i] = gblk[--ngblk];
      return;
    }
}

static const char *canaries(void) { return NULL; }
#else
static void *galloc(size_t bytes) {
  size_t need = (bytes + 15) & ~(size_t)15, len = ((need + 4095) & ~(size_t)4095) + 4096;
  unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED || ngblk == (int)(sizeof gblk / sizeof gblk[0])) {
    fprintf(stderr, "galloc: out of memory\n");
    exit(1);
  }
  mprotect(m + len - 4096, 4096, PROT_NONE);
  unsigned char *p = m + len - 4096 - need;
  memset(m, CANARY, len - 4096);
  memset(p, 0xff, bytes);
  gblk[ngblk++] = (gblk_t){m, p, len, bytes};
  ask_emu_global(m, len - 4096, 1); /* PDL launches: no access before the wait */
  return p;
}

static void gfree(void *p) {
  for (int i = 0; i < ngblk; i++)
    if (gblk[i].p == p) {
      ask_emu_global(gblk[i].map, gblk[i].len - 4096, 0);
      munmap(gblk[i].map, gblk[i].len);
      gblk[i] = gblk[--ngblk];
      return;
    }
}

/* Name of the first buffer whose canary was overwritten, or NULL. */
static const char *canaries(void) {
  static char why[160];
  for (int i = 0; i < ngblk; i++) {
    const gblk_t *b = &gblk[i];
    for (unsigned char *c = b->map; c < b->map + b->len - 4096; c++) {
      if (c == b->p) {
        c += b->bytes - 1;
        continue;
      }
      if (*c != CANARY) {
        snprintf(why, sizeof why, "buffer %p (%zu bytes): byte %td written outside it", b->p,
                 b->bytes, c - b->p);
        return why;
      }
    }
  }
  return NULL;
}
#endif

static void *gdup(const void *src, size_t bytes) {
  void *p = galloc(bytes);
  memcpy(p, src, bytes);
  return p;
}

static void gfree_all(void) {
  while (ngblk > 0)
    gfree(gblk[0].p);
}

/* Frees what was allocated since ngblk was mark (fewer guarded regions for
 * the emulator to protect at each launch). */
static void gfree_to(int mark) {
  while (ngblk > mark)
    gfree(gblk[ngblk - 1].p);
}

/* After each launcher call: no launch failure, no canary hit. */
#define LAUNCHED()                                                                                 \
  do {                                                                                             \
    if (cu_failed)                                                                                 \
      T__FAIL("launch failed: %s", cu_err);                                                        \
    const char *t__why = canaries();                                                               \
    if (t__why != NULL)                                                                            \
      T__FAIL("out-of-bounds write: %s (last kernel %s)", t__why, ask_emu_last_kernel());          \
  } while (0)

/* ---- data ---- */


static int irand(int n) { return (int)((frand() + 1.0f) * 0.5f * (float)n) % n; }

static float *rnd(size_t n, float mul) {
  float *p = galloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++)
    p[i] = frand() * mul;
  return p;
}


/* Index of the first value outside atol + rtol * |want| (printing up to 3), or -1. */
static long mismatch(const float *got, const float *want, size_t n, double atol, double rtol) {
  long first = -1;
  int shown = 0;
  for (size_t i = 0; i < n; i++) {
    double tol = atol + rtol * fabs((double)want[i]);
    if (!(fabs((double)got[i] - (double)want[i]) <= tol) &&
        !(got[i] == want[i]) /* equal infinities */) {
      if (shown++ < 3)
        fprintf(stderr, "  [%zu] got %.9g want %.9g\n", i, got[i], want[i]);
      if (first < 0)
        first = (long)i;
    }
  }
  return first;
}

/* bf16 arrays bit for bit (any NaN equals any NaN). */
static long mismatch16(const uint16_t *got, const uint16_t *want, size_t n) {
  long first = -1;
  int shown = 0;
  for (size_t i = 0; i < n; i++) {
    int gn = (got[i] & 0x7fffu) > 0x7f80u, wn = (want[i] & 0x7fffu) > 0x7f80u;
    if (got[i] != want[i] && !(gn && wn)) {
      if (shown++ < 3)
        fprintf(stderr, "  [%zu] got 0x%04x (%g) want 0x%04x (%g)\n", i, got[i], from_bf16(got[i]),
                want[i], from_bf16(want[i]));
      if (first < 0)
        first = (long)i;
    }
  }
  return first;
}

#define ASSERT_NEAR(got, want, n, atol, rtol) ASSERT_EQ(mismatch(got, want, n, atol, rtol), -1)

static const ask_ops_t *ref;
static const ask_dev_t *rdev;

/* Each test body runs under two schedules (ask_emu_set_order): 0, threads
 * in ascending order, every warp advancing evenly; 3, descending, a warp
 * running ahead of the others between barriers. */
static const int orders[2] = {0, 7};
#define FOR_ORDERS                                                                                 \
  ref = ask_ref_ops();                                                                             \
  rdev = ask_refdev_ops()->dev;                                                                    \
  for (int oi = 0; oi < 2; oi++, ask_emu_set_order(0), gfree_all())                                \
    if (ask_emu_set_order(orders[oi]), cu_reset(), 0) {                                            \
    } else

/* ---- the emulator itself (selftest.cu) ---- */

int emu_shfl(int *out, int nt, int width);
int emu_reverse(float *out, const float *in, int nblocks, int nt);
int emu_sum(long long *out, const int *in, int n, int nt, int nblocks);
int emu_race(int *out, int nt, int sync);
int emu_ptx(uint32_t *out, const uint32_t *in, int nt, int unknown);
int emu_bad(int what, float *p, int nt);
int emu_pdl(int *out, int skip, int pdl);
int emu_big_smem(int *out, int allow);

TEST(test_emu_collectives) {
  FOR_ORDERS {
    for (int nt = 32; nt <= 1024; nt *= 4) {
      for (int width = 32; width >= 4; width /= 2) {
        int *out = galloc((size_t)10 * nt * sizeof(int));
        ASSERT_EQ(emu_shfl(out, nt, width), cudaSuccess);
        for (int t = 0; t < nt; t++) {
          int lane = t & 31, seg = lane & ~(width - 1), v = 1000 * t + 7;
#define V(l) (1000 * ((t & ~31) + (l)) + 7)
          int src = seg + (((lane * 7 + 3) & 31) & (width - 1));
          ASSERT_EQ(out[0 * nt + t], V(src));
          ASSERT_EQ(out[1 * nt + t], lane - 3 >= seg ? V(lane - 3) : v);
          ASSERT_EQ(out[2 * nt + t], lane + 5 < seg + width ? V(lane + 5) : v);
          ASSERT_EQ(out[3 * nt + t], (lane ^ 6) < seg + width ? V(lane ^ 6) : v);
          ASSERT_EQ((unsigned)out[4 * nt + t], 0x49249249u);
          ASSERT_EQ(out[5 * nt + t], 1);
          ASSERT_EQ(out[6 * nt + t], 0);
          ASSERT_EQ(out[7 * nt + t], 4 * V(lane ^ 1) + 1);
          ASSERT_EQ(out[8 * nt + t], (nt + 4) / 5);
          ASSERT_TRUE((unsigned)out[9 * nt + t] >> lane & 1u); /* __activemask: approximate */
#undef V
        }
        gfree(out);
      }
    }
  }
}

TEST(test_emu_shared_memory) {
  FOR_ORDERS {
    int nb = 3, nt = 96;
    float *in = rnd((size_t)nb * nt, 10), *out = galloc((size_t)nb * nt * 4);
    ASSERT_EQ(emu_reverse(out, in, nb, nt), cudaSuccess);
    for (int b = 0; b < nb; b++)
      for (int t = 0; t < nt; t++)
        ASSERT_DBL_EQ(out[b * nt + t], in[b * nt + nt - 1 - t] * 2);
    int n = 100003;
    int *x = galloc((size_t)n * 4);
    long long want = 0, *sum = galloc(8);
    for (int i = 0; i < n; i++)
      want += x[i] = irand(1000000);
    *sum = 0;
    ASSERT_EQ(emu_sum(sum, x, n, 1024, 3), cudaSuccess);
    ASSERT_EQ(*sum, 3 * want);
  }
}

TEST(test_emu_races_and_ptx) {
  FOR_ORDERS {
    int nt = 256, *out = galloc((size_t)nt * 4);
    ASSERT_EQ(emu_race(out, nt, 1), cudaSuccess); /* with the barrier: right in any order */
    for (int t = 0; t < nt; t++)
      ASSERT_EQ(out[t], (t + 1) % nt + 1);
    ASSERT_EQ(emu_race(out, nt, 0), cudaSuccess); /* without: wrong in one order or the other */
    int right = 0;
    for (int t = 0; t < nt; t++)
      right += out[t] == (t + 1) % nt + 1;
    ASSERT_LT(right, nt);

    uint32_t *in = galloc((size_t)4 * nt * 4), *o = galloc((size_t)nt * 4);
    for (int i = 0; i < 4 * nt; i++)
      in[i] = (uint32_t)i * 2654435761u;
    ASSERT_EQ(emu_ptx(o, in, nt, 0), cudaSuccess);
    for (int t = 0; t < nt; t++)
      ASSERT_UEQ(o[t], in[4 * t] + in[4 * t + 1] + in[4 * t + 2] + in[4 * t + 3]);
    ASSERT_EQ(emu_ptx(o, in, nt, 1), cudaErrorLaunchFailure);
    ASSERT_TRUE(strstr(ask_emu_last_error(), "inline PTX not emulated") != NULL);
  }
}

TEST(test_emu_pdl) {
  int *out = galloc(64 * sizeof(int));
  ASSERT_EQ(emu_pdl(out, 0, 1), cudaSuccess);
  for (int t = 0; t < 64; t++)
    ASSERT_EQ(out[t], t + 1);
  ASSERT_EQ(emu_pdl(out, 1, 0), cudaSuccess); /* a plain launch: nothing to wait for */
  ASSERT_EQ(emu_pdl(out, 1, 1), cudaErrorLaunchFailure);
  ASSERT_TRUE(strstr(ask_emu_last_error(), "without griddepcontrol.wait") != NULL);
  ask_emu_clear_error();
#if !defined(__SANITIZE_ADDRESS__) /* galloc'd memory is global memory (ask_emu_global) */
  /* Reading global memory before the wait faults, in a child process. */
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0)
      dup2(fd, 2); /* the report is expected */
    emu_pdl(out, 2, 1);
    _exit(0);
  }
  int st = 0;
  ASSERT_TRUE(pid > 0 && waitpid(pid, &st, 0) == pid);
  ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
  ASSERT_EQ(emu_pdl(out, 2, 0), cudaSuccess); /* a plain launch may read at once */
#endif
  /* backend.c's probe pair, through ASK__LAUNCH like every kernel */
  int n = 1000, *a = galloc((size_t)n * sizeof(int)), *b = galloc((size_t)n * sizeof(int));
  memset(a, 0, (size_t)n * sizeof(int));
  ask__cu_pdl_pair(0, a, b, n, 7);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  for (int i = 0; i < n; i++)
    ASSERT_EQ(b[i], 3 * (i + 7) + 1);
  gfree(a);
  gfree(b);
  gfree(out);
}

TEST(test_emu_big_smem) {
  int *out = galloc(32 * sizeof(int));
  ASSERT_EQ(emu_big_smem(out, 0), cudaErrorInvalidValue);
  ASSERT_TRUE(strstr(ask_emu_last_error(), "cudaFuncAttributeMaxDynamicSharedMemorySize") != NULL);
  ask_emu_clear_error();
  ASSERT_EQ(emu_big_smem(out, 1), cudaSuccess);
  for (int t = 0; t < 32; t++)
    ASSERT_EQ(out[t], t);
  gfree(out);
}

TEST(test_emu_failures) {
  static const struct {
    int what, nt, err;
    const char *says;
  } cs[] = {
      {0, 64, cudaErrorLaunchFailure, "divergent barrier"},
      {1, 64, cudaErrorLaunchFailure, "divergent code"},
      {2, 64, cudaErrorLaunchFailure, "deadlock"},
      {3, 48, cudaErrorLaunchFailure, "does not exist (partial warp)"},
      {4, 64, cudaErrorLaunchFailure, "does not name the calling lane"},
      {5, 64, cudaErrorLaunchFailure, "misaligned"},
      {6, 64, cudaErrorLaunchFailure, "divergent warp collective"},
      {7, 64, cudaErrorLaunchFailure, "is not in the mask"},
      {8, 64, cudaErrorLaunchFailure, "__trap"},
      {9, 0, cudaErrorInvalidConfiguration, "invalid configuration"},
      {10, 0, cudaErrorInvalidConfiguration, "invalid configuration"},
  };
  FOR_ORDERS {
    float *p = galloc(4096 * 4);
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
      printf("  expected failure %zu: ", i);
      fflush(stdout);
      ASSERT_EQ(emu_bad(cs[i].what, p, cs[i].nt), cs[i].err);
      if (strstr(ask_emu_last_error(), cs[i].says) == NULL)
        T__FAIL("case %d: wanted \"%s\" in \"%s\"", cs[i].what, cs[i].says, ask_emu_last_error());
      ask_emu_clear_error();
    }
    /* and the executor is still sound afterwards */
    int *out = galloc(10 * 64 * sizeof(int));
    ASSERT_EQ(emu_shfl(out, 64, 32), cudaSuccess);
    ASSERT_EQ(out[3 * 64 + 40], 1000 * (40 ^ 6) + 7);
  }
}

/* ---- elementwise.cu ---- */

TEST(test_embedding) {
  FOR_ORDERS {
    int V = 300, Cs[2] = {200, 1000}, T = 9;
    int32_t ids0[9] = {3, 0, 299, 3, 17, 150, 2, 2, 298};
    for (int ci = 0; ci < 2; ci++) {
      int C = Cs[ci];
      float *tab = rnd((size_t)V * C, 2), *want = galloc((size_t)T * C * 4),
            *out = galloc((size_t)T * C * 4), *wide = galloc((size_t)V * C * 4);
      uint16_t *tab16 = galloc((size_t)V * C * 2);
      int32_t *ids = gdup(ids0, sizeof ids0);
      for (size_t i = 0; i < (size_t)V * C; i++)
        wide[i] = from_bf16(tab16[i] = to_bf16(tab[i]));
      for (int bf = 0; bf < 2; bf++)
        for (float scale = 1.0f; scale < 3.0f; scale += 1.5f) {
          ref->embedding(want, bf ? wide : tab, ids, T, C, scale);
          memset(out, 0xff, (size_t)T * C * 4);
          ask__cu_embedding(S, out, bf ? NULL : tab, bf ? tab16 : NULL, ids, NULL, T, C, scale);
          LAUNCHED();
          ASSERT_NEAR(out, want, (size_t)T * C, 0, 0);
        }
    }
  }
}

TEST(test_rmsnorm) {
  FOR_ORDERS {
    int Cs[] = {17, 64, 200, 2048, 3000}, T = 5;
    for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++) {
      int C = Cs[ci];
      size_t n = (size_t)T * C;
      float *x = rnd(n, 3), *r = rnd(n, 1), *w = rnd(C, 1), *want = galloc(n * 4),
            *xs = galloc(n * 4), *out = galloc(n * 4), *dx = gdup(x, n * 4);
      for (int off = 0; off < 2; off++) { /* Llama, then Gemma's 1 + w */
        ref->rmsnorm(want, x, w, T, C, 1e-6f, (float)off);
        ask__cu_rmsnorm(S, out, dx, NULL, w, T, C, 1e-6f, (float)off);
        LAUNCHED();
        ASSERT_NEAR(out, want, n, 1e-5, 1e-5);
        ASSERT_NEAR(dx, x, n, 0, 0); /* x untouched without r */
      }
      ask__cu_rmsnorm(S, dx, dx, NULL, w, T, C, 1e-5f, 0.0f); /* in place */
      LAUNCHED();
      ref->rmsnorm(want, x, w, T, C, 1e-5f, 0.0f);
      ASSERT_NEAR(dx, want, n, 1e-5, 1e-5);
      /* fused residual: x += r, out = rmsnorm(x) */
      memcpy(dx, x, n * 4);
      ref->add(xs, x, r, n);
      ref->rmsnorm(want, xs, w, T, C, 1e-6f, 1.0f);
      ask__cu_rmsnorm(S, out, dx, r, w, T, C, 1e-6f, 1.0f);
      LAUNCHED();
      ASSERT_NEAR(out, want, n, 1e-5, 1e-5);
      ASSERT_NEAR(dx, xs, n, 0, 0);
    }
  }
}

TEST(test_layernorm) {
  FOR_ORDERS {
    int Cs[] = {17, 64, 200, 2048, 3000}, T = 4;
    for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++) {
      int C = Cs[ci];
      size_t n = (size_t)T * C;
      float *x = rnd(n, 3), *w = rnd(C, 1), *b = rnd(C, 1), *want = galloc(n * 4),
            *out = galloc(n * 4);
      for (int i = 0; i < C; i++) /* a mean far from 0 */
        x[i] += 5.0f;
      for (float eps = 1e-12f; eps < 1e-4f; eps *= 1e7f) {
        ref->layernorm(want, x, w, b, T, C, eps);
        ask__cu_layernorm(S, out, x, w, b, T, C, eps);
        LAUNCHED();
        ASSERT_NEAR(out, want, n, 1e-5, 1e-5);
      }
      float *dx = gdup(x, n * 4);
      ask__cu_layernorm(S, dx, dx, w, b, T, C, 1e-5f); /* in place */
      LAUNCHED();
      ref->layernorm(want, x, w, b, T, C, 1e-5f);
      ASSERT_NEAR(dx, want, n, 1e-5, 1e-5);
    }
  }
}

static float *inv_freq(int D) {
  float *f = galloc((size_t)(D / 2) * 4);
  for (int i = 0; i < D / 2; i++)
    f[i] = (float)pow(10000.0, -2.0 * i / D);
  return f;
}

/* The rope op: rope_kv with no cache, q heads of strided rows. */
TEST(test_rope) {
  static const struct {
    int T, nh, D, extra;
  } cs[] = {{6, 8, 64, 0}, {3, 8, 256, 64}, {5, 3, 6, 2}, {2, 32, 128, 0}};
  FOR_ORDERS {
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
      int T = cs[c].T, nh = cs[c].nh, D = cs[c].D, stride = nh * D + cs[c].extra;
      int32_t pos0[6] = {0, 1, 2, 17, 1000, 8191};
      int32_t *pos = gdup(pos0, sizeof pos0);
      float *inv = inv_freq(D), *x = rnd((size_t)T * stride, 2),
            *want = gdup(x, (size_t)T * stride * 4);
      ref->rope(want, pos, inv, T, nh, D, stride);
      ask__cu_rope_kv(S, x, NULL, NULL, pos, NULL, inv, T, nh, 99, D, stride);
      LAUNCHED();
      if (mismatch(x, want, (size_t)T * stride, 1e-5, 1e-5) >= 0)
        T__FAIL("rope T=%d nh=%d D=%d stride=%d", T, nh, D, stride);
    }
  }
}

/* The rope_kv op: q rotated in place, k rotated and v rounded to bf16 into
 * rows slot[t] of the paged caches (slot -1: not written). */
TEST(test_rope_kv) {
  static const struct {
    int T, nh, nkv, D, extra;
  } cs[] = {{6, 8, 2, 64, 0}, {6, 8, 1, 256, 0}, {6, 32, 8, 64, 16}, {4, 3, 3, 6, 0}};
  FOR_ORDERS {
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
      int T = cs[c].T, nh = cs[c].nh, nkv = cs[c].nkv, D = cs[c].D, kvd = nkv * D, cap = 40;
      int stride = (nh + 2 * nkv) * D + cs[c].extra;
      int32_t pos0[6] = {0, 1, 2, 17, 1000, 8191}, slot0[6] = {5, -1, 39, 30, 0, 6};
      int32_t *pos = gdup(pos0, sizeof pos0), *slot = gdup(slot0, sizeof slot0);
      float *inv = inv_freq(D), *qkv = rnd((size_t)T * stride, 2),
            *want = gdup(qkv, (size_t)T * stride * 4);
      uint16_t *kc = galloc((size_t)cap * kvd * 2), *vc = galloc((size_t)cap * kvd * 2);
      for (size_t i = 0; i < (size_t)cap * kvd; i++) {
        kc[i] = to_bf16(frand());
        vc[i] = to_bf16(frand());
      }
      uint16_t *wkc = gdup(kc, (size_t)cap * kvd * 2), *wvc = gdup(vc, (size_t)cap * kvd * 2);
      rdev->rope_kv(want, wkc, wvc, pos, slot, inv, T, nh, nkv, D, stride);
      ask__cu_rope_kv(S, qkv, kc, vc, pos, slot, inv, T, nh, nkv, D, stride);
      LAUNCHED();
      long bad = mismatch(qkv, want, (size_t)T * stride, 1e-5, 1e-5);
      long badk = mismatch16(kc, wkc, (size_t)cap * kvd),
           badv = mismatch16(vc, wvc, (size_t)cap * kvd);
      if (bad >= 0 || badk >= 0 || badv >= 0)
        T__FAIL("rope_kv T=%d nh=%d nkv=%d D=%d stride=%d: qkv %ld, kc %ld, vc %ld", T, nh, nkv, D,
                stride, bad, badk, badv);
    }
  }
}

TEST(test_glu) {
  FOR_ORDERS {
    size_t n = 100003;
    float *g = rnd(n, 6), *u = rnd(n, 2), *want = galloc(n * 4), *out = galloc(n * 4);
    for (int act = 0; act < 3; act++) {
      ref->glu(want, g, u, n, act);
      ask__cu_glu(S, out, g, u, n, act);
      LAUNCHED();
      ASSERT_NEAR(out, want, n, 1e-5, 1e-5);
      ref->activate(want, g, n, act);
      ask__cu_glu(S, out, g, NULL, n, act);
      LAUNCHED();
      ASSERT_NEAR(out, want, n, 1e-5, 1e-5);
    }
  }
}

TEST(test_glu_rows) {
  FOR_ORDERS {
    int Ts[3] = {1, 7, 3}, Fs[3] = {200, 1000, 33};
    for (int c = 0; c < 3; c++) {
      int T = Ts[c], F = Fs[c];
      size_t n = (size_t)T * F;
      float *gu = rnd(2 * n, 5), *want = galloc(n * 4), *out = galloc(n * 4);
      for (int act = 0; act < 3; act++) {
        rdev->glu_rows(want, gu, T, F, act);
        ask__cu_glu_rows(S, out, gu, T, F, act);
        LAUNCHED();
        if (mismatch(out, want, n, 1e-5, 1e-5) >= 0)
          T__FAIL("glu_rows T=%d F=%d act=%d", T, F, act);
      }
    }
  }
}

TEST(test_add_softmax_bias) {
  FOR_ORDERS {
    size_t n = 100003;
    float *a = rnd(n, 6), *b = rnd(n, 2), *want = galloc(n * 4), *out = galloc(n * 4);
    ref->add(want, a, b, n);
    ask__cu_add(S, out, a, b, n);
    LAUNCHED();
    ASSERT_NEAR(out, want, n, 0, 0);
    ask__cu_add(S, a, a, b, n); /* in place */
    LAUNCHED();
    ASSERT_NEAR(a, want, n, 0, 0);

    int Ns[] = {5, 200, 1000, 5000}, T = 3;
    for (size_t c = 0; c < sizeof Ns / sizeof Ns[0]; c++) {
      int N = Ns[c];
      float *x = rnd((size_t)T * N, 8), *w2 = galloc((size_t)T * N * 4),
            *o2 = galloc((size_t)T * N * 4);
      x[1] = -INFINITY;           /* a hidden entry */
      for (int j = 0; j < N; j++) /* row 1: all equal */
        x[N + j] = 0.5f;
      ref->softmax(w2, x, T, N);
      ask__cu_softmax(S, o2, x, T, N);
      LAUNCHED();
      if (mismatch(o2, w2, (size_t)T * N, 1e-7, 1e-5) >= 0)
        T__FAIL("softmax T=%d N=%d", T, N);
      ask__cu_softmax(S, x, x, T, N); /* in place */
      LAUNCHED();
      ASSERT_NEAR(x, w2, (size_t)T * N, 1e-7, 1e-5);
    }

    int Tb = 7, Nb = 200;
    float *y = rnd((size_t)Tb * Nb, 3), *bias = rnd(Nb, 1), *wy = galloc((size_t)Tb * Nb * 4);
    for (int t = 0; t < Tb; t++)
      ref->add(wy + (size_t)t * Nb, y + (size_t)t * Nb, bias, Nb);
    ask__cu_add_bias(S, y, bias, Tb, Nb);
    LAUNCHED();
    ASSERT_NEAR(y, wy, (size_t)Tb * Nb, 0, 0);
  }
}

TEST(test_f32_to_bf16) {
  FOR_ORDERS {
    size_t n = 5000;
    float *x = rnd(n, 100);
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f7fffffu,
        0x3f808000u, 0x3f818000u, 0x3f808001u, 0x00000001u, 0x807fffffu, 0x7f7f8000u, 0x3f80ffffu};
    for (size_t i = 0; i < sizeof special / 4; i++)
      memcpy(&x[i], &special[i], 4);
    uint16_t *out = galloc(n * 2), *want = galloc(n * 2);
    ask_f32_to_bf16(want, x, n);
    ask__cu_f32_to_bf16(S, out, x, n);
    LAUNCHED();
    ASSERT_EQ(mismatch16(out, want, n), -1);
  }
}

/* ---- attention.cu ---- */

/* T queries over L keys (rows of kv_stride floats), against kernels/ref. */
static long attention_case(int T, int L, int nh, int nkv, int D, int causal, int masked, int nsplit,
                           int kv_extra) {
  int qd = nh * D, kvs = nkv * D + kv_extra;
  float *q = rnd((size_t)T * qd, 1), *k = rnd((size_t)L * kvs, 1), *v = rnd((size_t)L * kvs, 1);
  float *want = galloc((size_t)T * qd * 4), *scr = galloc((size_t)T * L * 4),
        *out = galloc((size_t)T * qd * 4);
  float *part = nsplit > 1 ? galloc((size_t)nsplit * T * nh * (D + 2) * 4) : NULL;
  int32_t *mask = galloc((size_t)L * 4);
  for (int j = 0; j < L; j++)
    mask[j] = masked == 2 ? j >= 4 : j % 5 != 3; /* 2: the first keys hidden */
  float scale = 1.0f / sqrtf((float)D);
  ref->attention(want, scr, q, k, v, masked ? mask : NULL, T, L, nh, nkv, D, kvs, scale, causal);
  ask__cu_attention(S, out, part, nsplit, q, k, v, masked ? mask : NULL, T, L, nh, nkv, D, kvs,
                    scale, causal);
  long bad = cu_failed ? 0 : mismatch(out, want, (size_t)T * qd, 1e-4, 1e-4);
  if (bad >= 0)
    fprintf(stderr, "  attention T=%d L=%d nh=%d nkv=%d D=%d causal=%d mask=%d nsplit=%d\n", T, L,
            nh, nkv, D, causal, masked, nsplit);
  gfree(q), gfree(k), gfree(v), gfree(want), gfree(scr), gfree(out), gfree(part), gfree(mask);
  return bad;
}

TEST(test_attention) {
  static const int cs[][9] = {
      /* T, L, nh, nkv, D, causal, masked, nsplit, kv_extra */
      {1, 37, 4, 4, 64, 1, 0, 1, 0},   /* decode, multi-head */
      {1, 600, 8, 2, 64, 1, 0, 3, 0},  /* decode, GQA, splits */
      {1, 600, 4, 1, 128, 1, 0, 5, 0}, /* MQA, 5 splits */
      {2, 300, 8, 1, 256, 1, 0, 2, 0}, /* gemma heads, D = 256 */
      {2, 300, 8, 1, 256, 1, 0, 1, 0},
      {7, 20, 4, 2, 32, 1, 0, 1, 64},   /* prefill chunk over a cache, strided rows */
      {7, 20, 4, 2, 32, 1, 0, 4, 64},   /* ... with splits past the causal end */
      {16, 16, 12, 12, 32, 0, 1, 1, 0}, /* BERT: mask, no causality */
      {16, 16, 12, 12, 32, 0, 1, 2, 0},
      {3, 9, 2, 1, 80, 1, 0, 1, 0}, /* D not a multiple of 32 */
      {3, 9, 2, 1, 80, 1, 0, 3, 0},
      {8, 8, 2, 2, 16, 1, 2, 1, 0}, /* rows that see no key at all: zeros */
      {8, 8, 2, 2, 16, 1, 2, 4, 0},
      {4, 50, 6, 3, 48, 0, 0, 7, 0}, /* no mask, no causality, uneven splits */
  };
  FOR_ORDERS {
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
      const int *a = cs[c];
      long bad = attention_case(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
      LAUNCHED();
      ASSERT_EQ(bad, -1);
    }
  }
}

/* The merge of split partial rows (m, l, acc[D]) on its own: splits with
 * m = -inf weigh nothing, a row whose splits are all empty gets zeros. */
TEST(test_attention_merge) {
  FOR_ORDERS {
    int T = 3, nh = 5, D = 70, ns = 4;
    size_t rowf = (size_t)D + 2;
    float *part = galloc((size_t)T * nh * ns * rowf * 4), *out = galloc((size_t)T * nh * D * 4),
          *want = galloc((size_t)T * nh * D * 4);
    for (int t = 0; t < T; t++)
      for (int h = 0; h < nh; h++) {
        float *pp = part + ((size_t)t * nh + h) * ns * rowf, M = -INFINITY, Ls = 0.0f;
        for (int sp = 0; sp < ns; sp++) {
          float *r = pp + sp * rowf;
          int empty = t == 2 || (sp + h) % 3 == 0;
          r[0] = empty ? -INFINITY : frand() * 3;
          r[1] = empty ? 0.0f : 1.0f + frand() * 0.5f;
          for (int d = 0; d < D; d++)
            r[2 + d] = empty ? 0.0f : frand();
          M = fmaxf(M, r[0]);
        }
        for (int sp = 0; sp < ns; sp++)
          if (pp[sp * rowf] != -INFINITY)
            Ls += pp[sp * rowf + 1] * expf(pp[sp * rowf] - M);
        for (int d = 0; d < D; d++) {
          float a = 0.0f;
          for (int sp = 0; sp < ns; sp++)
            if (pp[sp * rowf] != -INFINITY)
              a += pp[sp * rowf + 2 + d] * expf(pp[sp * rowf] - M);
          want[((size_t)t * nh + h) * D + d] = Ls > 0.0f ? a / Ls : 0.0f;
        }
      }
    ask__cu_attention_merge(S, out, part, ns, T, nh, D);
    LAUNCHED();
    ASSERT_NEAR(out, want, (size_t)T * nh * D, 1e-5, 1e-5);
    for (size_t i = 2 * (size_t)nh * D; i < 3 * (size_t)nh * D; i++)
      ASSERT_DBL_EQ(out[i], 0.0);
  }
}

/* ---- paged.cu ---- */

/* A paged bf16 cache holding nseq sequences of lengths len[] (pages of
 * `page` rows dealt out in a shuffled order), T query rows (seq, pos), the
 * kernel against refdev's attention_paged. */
static long paged_case_gb(int nseq, const int *len, int T, const int32_t *seq0,
                          const int32_t *pos0, int nh, int nkv, int D, int page, int nsplit,
                          int heads) {
  int kvd = nkv * D, qs = (nh + 2 * nkv) * D, tw = 0, npages = 0;
  for (int s = 0; s < nseq; s++) {
    int p = (len[s] + page - 1) / page;
    npages += p;
    tw = p > tw ? p : tw;
  }
  tw += 1; /* a spare column, never to be read */
  int32_t *table = galloc((size_t)nseq * tw * 4), *perm = galloc((size_t)npages * 4);
  for (int i = 0; i < npages; i++)
    perm[i] = i;
  for (int i = npages - 1; i > 0; i--) {
    int j = irand(i + 1), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (int s = 0, k = 0; s < nseq; s++)
    for (int c = 0; c < tw; c++)
      table[s * tw + c] = c < (len[s] + page - 1) / page ? perm[k++] : 1 << 28;
  size_t rows = (size_t)npages * page;
  uint16_t *kc = galloc(rows * kvd * 2), *vc = galloc(rows * kvd * 2);
  for (size_t i = 0; i < rows * kvd; i++) {
    kc[i] = to_bf16(frand() * 2);
    vc[i] = to_bf16(frand() * 2);
  }
  int32_t *seq = gdup(seq0, (size_t)T * 4), *pos = gdup(pos0, (size_t)T * 4);
  float *q = rnd((size_t)T * qs, 1), *out = galloc((size_t)T * nh * D * 4),
        *want = galloc((size_t)T * nh * D * 4);
  float *part = nsplit > 1 ? galloc((size_t)nsplit * T * nh * (D + 2) * 4) : NULL;
  float scale = 1.0f / sqrtf((float)D);
  rdev->attention_paged(want, NULL, q, kc, vc, table, seq, pos, T, nh, nkv, D, qs, tw, page, 1,
                        scale);
  ask__cu_attention_paged_gb(S, out, part, q, kc, vc, table, seq, pos, T, nh, nkv, D, qs, tw, page,
                             nsplit, scale, heads);
  long bad = cu_failed ? 0 : mismatch(out, want, (size_t)T * nh * D, 1e-4, 1e-4);
  if (bad >= 0)
    fprintf(stderr, "  attention_paged T=%d nh=%d nkv=%d D=%d page=%d nsplit=%d heads=%d\n", T, nh,
            nkv, D, page, nsplit, heads);
  gfree(table), gfree(perm), gfree(kc), gfree(vc), gfree(seq), gfree(pos), gfree(q), gfree(out);
  gfree(want), gfree(part);
  return bad;
}

/* The launcher's own choice of kernel (heads 0). */
static long paged_case(int nseq, const int *len, int T, const int32_t *seq0, const int32_t *pos0,
                       int nh, int nkv, int D, int page, int nsplit) {
  return paged_case_gb(nseq, len, T, seq0, pos0, nh, nkv, D, page, nsplit, 0);
}

/* Each kernel forced: per head (1) and grouped blocks of 2, 4 and 8 query
 * heads, on shapes that hit every path: gemma MQA 8/1/256, Llama 32/8/64,
 * gemma-2 8/4/256 (2 per kv head), 24/2/128 (12 per kv head: groups
 * split), 6/2/42 (D % 8 != 0: 4-byte loads), 14/2/64 (a padded head), with
 * a long row (700 keys), decode rows, padding and a prefill chunk. */
TEST(test_attention_paged_forced) {
  static const int shapes[6][3] = {{8, 1, 256}, {32, 8, 64}, {8, 4, 256},
                                   {24, 2, 128}, {6, 2, 42},  {14, 2, 64}};
  int len[4] = {1, 17, 700, 24};
  int32_t seq[9] = {0, 1, 2, 1, 3, 3, 3, 3, 3};
  int32_t pos[9] = {0, 16, 699, -1, 20, 21, 22, 23, -1};
  FOR_ORDERS {
    for (int dec = 0; dec < 2; dec++) { /* the tiled kernels; the decode kernel */
      ask__cu_attn_dec = dec ? 64 : 0;
      for (int sh = 0; sh < 6; sh++)
        for (int heads = 1; heads <= 8; heads *= 2)
          for (int nsplit = 1; nsplit <= 4; nsplit += 3) {
            long bad = paged_case_gb(4, len, 9, seq, pos, shapes[sh][0], shapes[sh][1],
                                     shapes[sh][2], 16, nsplit, heads);
            LAUNCHED();
            ASSERT_EQ(bad, -1);
          }
    }
    ask__cu_attn_dec = 0;
  }
}

TEST(test_attention_paged) {
  static const int heads[2][3] = {{8, 1, 256}, {32, 8, 64}}; /* gemma, llama */
  int len[6] = {1, 15, 16, 17, 300, 40};
  /* decode rows of 5 sequences, 2 padding rows, and a prefill chunk of
   * sequence 5 (positions 30..39, its cache holding 40 keys) */
  int32_t seq[17] = {0, 1, 2, 3, 4, 0, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5};
  int32_t pos[17] = {0, 14, 15, 16, 299, -1, -1, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39};
  FOR_ORDERS {
    for (int hc = 0; hc < 4; hc++) { /* 2, 3: the decode kernel (up to 64 rows) */
      int nh = heads[hc & 1][0], nkv = heads[hc & 1][1], D = heads[hc & 1][2];
      ask__cu_attn_dec = hc >= 2 ? 64 : 0;
      int splits[3] = {1, 3, 8};
      for (int si = 0; si < 3; si++) {
        long bad = paged_case(6, len, 17, seq, pos, nh, nkv, D, 16, splits[si]);
        LAUNCHED();
        ASSERT_EQ(bad, -1);
      }
      /* parts of at least 1, 7 and 100000 keys (default 64): every part
       * live, some, only the first */
      static const int kmins[3] = {1, 7, 100000};
      for (int ki = 0; ki < 3; ki++) {
        int old = ask__cu_split_min;
        ask__cu_split_min = kmins[ki];
        long bad = paged_case(6, len, 17, seq, pos, nh, nkv, D, 16, 8);
        ask__cu_split_min = old;
        LAUNCHED();
        ASSERT_EQ(bad, -1);
      }
    }
    /* odd shapes: D not a multiple of 64, a page of 5 rows, one row (the
     * first also on the decode kernel: D 40, 8 of 16 lanes' slices past D) */
    ask__cu_attn_dec = 64;
    int len2[2] = {23, 7};
    int32_t seq2[3] = {1, 0, 0}, pos2[3] = {6, 22, 3};
    long bad = paged_case(2, len2, 3, seq2, pos2, 6, 2, 40, 5, 2);
    LAUNCHED();
    ASSERT_EQ(bad, -1);
    ask__cu_attn_dec = 0;
    bad = paged_case(2, len2, 3, seq2, pos2, 6, 2, 40, 5, 2);
    LAUNCHED();
    ASSERT_EQ(bad, -1);
    bad = paged_case(2, len2, 1, seq2 + 1, pos2 + 1, 4, 4, 2, 5, 1);
    LAUNCHED();
    ASSERT_EQ(bad, -1);
  }
}

/* The decode kernel reading the cache before its PDL wait
 * (ask__cu_attn_early) against reading it after: the same bits, and near
 * refdev. The cache, page table, seq and pos lie in memory the emulator
 * does not guard (the step's copy and earlier steps wrote them), except
 * the cache pages that hold each sequence's new positions (the first of
 * them at a page's start, pages of 8 or 16 KB: whole host pages), which
 * are guarded like q, out and the parts: reading those before the wait
 * faults. The emulator guards block (0,0,0)'s first warp, which serves
 * row 0 and part 0: where part 0 holds the row's new keys (one part, or
 * parts of at least 64 keys) and they fall in that warp's first batch (the
 * grouped kernel: its share of the first tile; gemma's 32-key tiles hold
 * position 32 in the second, so there only Llama's shape checks it),
 * reading one early faults. The decode kernel and the grouped one. Rows:
 * a decode row at position 32 first (in the first warp's first batch on
 * both shapes), or the second row of a two-row chunk (65, then 64: with
 * one new key assumed instead of two, key 64 would be read early; in the
 * first batch on Llama's shape), with decode rows of other sequences and
 * padding after; gemma-like and Llama-like heads; one part, 4 parts,
 * parts of at least 1 key. */
enum { PE_NSEQ = 4, PE_PAGE = 16, PE_TW = 6 };
static const int pe_len[PE_NSEQ] = {33, 49, 1, 66}, pe_first_new[PE_NSEQ] = {32, 48, 0, 64};

/* Guards (add 1) or frees (0) the cache pages that hold new keys; not
 * under AddressSanitizer, whose builds guard nothing (galloc). */
static void guard_new_pages(int on, uint16_t *kc, uint16_t *vc, const int32_t *table,
                            size_t pbytes, int add) {
#if !defined(__SANITIZE_ADDRESS__)
  for (int s = 0; on && s < PE_NSEQ; s++)
    for (int c = pe_first_new[s] / PE_PAGE; c * PE_PAGE < pe_len[s]; c++) {
      size_t off = (size_t)table[s * PE_TW + c] * pbytes;
      ask_emu_global((char *)kc + off, pbytes, add), ask_emu_global((char *)vc + off, pbytes, add);
    }
#else
  (void)on, (void)kc, (void)vc, (void)table, (void)pbytes, (void)add;
#endif
}

static long paged_early_case(int T, const int32_t *seq0, const int32_t *pos0, int nh, int nkv,
                             int D, int nsplit) {
  enum { NSEQ = PE_NSEQ, PAGE = PE_PAGE, TW = PE_TW };
  const int *len = pe_len;
  int kvd = nkv * D, qs = (nh + 2 * nkv) * D, npages = 0;
  size_t pbytes = (size_t)PAGE * kvd * 2; /* a multiple of 4096 here */
  int32_t *table = aligned_alloc(4096, 4096), *seq = aligned_alloc(4096, 4096),
          *pos = aligned_alloc(4096, 4096);
  for (int s = 0; s < NSEQ; s++)
    npages += (len[s] + PAGE - 1) / PAGE;
  int perm[32];
  for (int i = 0; i < npages; i++)
    perm[i] = i;
  for (int i = npages - 1; i > 0; i--) {
    int j = irand(i + 1), t = perm[i];
    perm[i] = perm[j], perm[j] = t;
  }
  for (int s = 0, k = 0; s < NSEQ; s++)
    for (int c = 0; c < TW; c++)
      table[s * TW + c] = c < (len[s] + PAGE - 1) / PAGE ? perm[k++] : 1 << 28;
  memcpy(seq, seq0, (size_t)T * 4), memcpy(pos, pos0, (size_t)T * 4);
  uint16_t *kc = aligned_alloc(4096, npages * pbytes), *vc = aligned_alloc(4096, npages * pbytes);
  for (size_t i = 0; i < npages * pbytes / 2; i++) {
    kc[i] = to_bf16(frand() * 2);
    vc[i] = to_bf16(frand() * 2);
  }
  float *q = rnd((size_t)T * qs, 1), *out[2], *want = galloc((size_t)T * nh * D * 4);
  float *part = galloc((size_t)nsplit * T * nh * (D + 2) * 4), scale = 1.0f / sqrtf((float)D);
  rdev->attention_paged(want, NULL, q, kc, vc, table, seq, pos, T, nh, nkv, D, qs, TW, PAGE, 1,
                        scale);
  for (int e = 0; e < 2; e++) {
    out[e] = galloc((size_t)T * nh * D * 4);
    ask__cu_attn_early = e;
    guard_new_pages(e == 1, kc, vc, table, pbytes, 1);
    ask__cu_attention_paged_gb(S, out[e], part, q, kc, vc, table, seq, pos, T, nh, nkv, D, qs, TW,
                               PAGE, nsplit, scale, 0);
    guard_new_pages(e == 1, kc, vc, table, pbytes, 0);
  }
  ask__cu_attn_early = 0;
  long bad = cu_failed ? 0 : mismatch(out[0], want, (size_t)T * nh * D, 1e-4, 1e-4);
  if (bad < 0 && !cu_failed && memcmp(out[0], out[1], (size_t)T * nh * D * 4) != 0)
    bad = 0;
  if (bad >= 0)
    fprintf(stderr, "  attention_paged early T=%d nh=%d nkv=%d D=%d nsplit=%d kmin=%d\n", T, nh,
            nkv, D, nsplit, ask__cu_split_min);
  free(table), free(seq), free(pos), free(kc), free(vc);
  gfree(q), gfree(out[0]), gfree(out[1]), gfree(want), gfree(part);
  return bad;
}

TEST(test_attention_paged_early) {
  static const int heads[2][3] = {{8, 1, 256}, {32, 8, 64}}; /* gemma, llama */
  /* rows: a decode row first; the chunk's second row first */
  static const int32_t seqs[2][6] = {{0, 1, 2, 3, 3, 0}, {3, 3, 1, 2, 0, 0}};
  static const int32_t poss[2][6] = {{32, 48, 0, 64, 65, -1}, {65, 64, 48, 0, 32, -1}};
  static const int Ts[3] = {1, 6, 2};
  int dec0 = ask__cu_attn_dec, kmin0 = ask__cu_split_min;
  FOR_ORDERS {
    for (int c = 0; c < 4; c++) /* the decode kernel, then the grouped one; both shapes */
      for (int r = 0, dk = c >> 1, hc = c & 1; r < 2; r++)
        for (int ti = r; ti < 3; ti++) /* decode row: T 1, 6; chunk first: T 6, 2 */
          for (int nsplit = 1; nsplit <= 4; nsplit += 3)
            for (int kmin = 1; kmin <= 64; kmin += 63) {
              ask__cu_split_min = kmin;
              ask__cu_attn_dec = dk == 0 ? 64 : 0;
              long bad = paged_early_case(Ts[ti], seqs[r], poss[r], heads[hc][0], heads[hc][1],
                                          heads[hc][2], nsplit);
              LAUNCHED();
              ASSERT_EQ(bad, -1);
            }
  }
  ask__cu_attn_dec = dec0, ask__cu_split_min = kmin0;
}

/* ---- gemv.cu ---- */

/* out (T,N) = x · wᵀ + bias with w bf16, against ref->matmul on the widened
 * weights; woff/xoff shift w and x by elements (misalignment: scalar path). */
static long gemv_case(int T, int K, int N, int with_bias, int woff, int xoff) {
  float *x = rnd((size_t)T * K + 4, 1), *b = rnd(N, 1), *wide = galloc((size_t)N * K * 4);
  float *want = galloc((size_t)T * N * 4), *out = galloc((size_t)T * N * 4);
  uint16_t *w = galloc(((size_t)N * K + 8) * 2);
  for (size_t i = 0; i < (size_t)N * K + 8; i++)
    w[i] = to_bf16(frand() * 0.1f);
  for (size_t i = 0; i < (size_t)N * K; i++)
    wide[i] = from_bf16(w[woff + i]);
  ref->matmul(want, x + xoff, wide, with_bias ? b : NULL, T, K, N);
  ask__cu_gemv_bf16(S, out, x + xoff, w + woff, with_bias ? b : NULL, T, K, N);
  long bad = cu_failed ? 0 : mismatch(out, want, (size_t)T * N, 1e-4, 1e-4);
  if (bad >= 0)
    fprintf(stderr, "  gemv T=%d K=%d N=%d bias=%d woff=%d xoff=%d\n", T, K, N, with_bias, woff,
            xoff);
  gfree(x), gfree(b), gfree(wide), gfree(want), gfree(out), gfree(w);
  return bad;
}

TEST(test_gemv_bf16) {
  FOR_ORDERS {
    for (int T = 1; T <= 16; T++) {
      ASSERT_EQ(gemv_case(T, 1088, 77, T & 1, 0, 0), -1); /* vector path, main loop and tail */
      LAUNCHED();
      ASSERT_EQ(gemv_case(T, 256, 9, !(T & 1), 0, 0), -1); /* tail only, N % rows != 0 */
      LAUNCHED();
      ASSERT_EQ(gemv_case(T, 100, 37, T & 1, 0, 0), -1); /* K % 8 != 0: scalar */
      LAUNCHED();
    }
    ASSERT_EQ(gemv_case(3, 264, 20, 1, 1, 0), -1); /* w misaligned: scalar */
    LAUNCHED();
    ASSERT_EQ(gemv_case(5, 264, 20, 0, 0, 2), -1); /* x misaligned: scalar */
    LAUNCHED();
    ASSERT_EQ(gemv_case(16, 2048, 8, 1, 0, 0), -1);
    LAUNCHED();
  }
}

/* ---- gemv.cu: the decode fusions ---- */

/* max |got - want| / max |want| over n values (any NaN: infinity). */
static double max_rel(const float *got, const float *want, size_t n) {
  double mx = 0, md = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - (double)want[i]);
    if (d != d)
      return INFINITY;
    mx = fmax(mx, fabs((double)want[i]));
    md = fmax(md, d);
  }
  return mx > 0 ? md / mx : md;
}

/* n bf16 weights of about +-0.1 (and 8 more, for the misaligned cases). */
static uint16_t *wrnd(size_t n) {
  uint16_t *w = galloc((n + 8) * 2);
  for (size_t i = 0; i < n + 8; i++)
    w[i] = to_bf16(frand() * 0.1f);
  return w;
}

/* out = rmsnorm(x + r) · wᵀ + bias through ask__cu_gemv_norm_bf16 against
 * refdev's norm_matmul_bf16 on the same inputs: out within 1e-4 of
 * max |want| (the fused kernel applies the inverse RMS after the dot
 * products and sums in another order), xo = x + r bit for bit, and xo not
 * written at all without r. woff/xoff shift w and every f32 input (x, r,
 * nw, xo) by elements: w misaligned takes the scalar kernel, the f32
 * inputs misaligned the single-float staging. Returns -1 when right. */
static long nmm_case(int T, int K, int N, int with_r, float off, int with_bias, int woff,
                     int xoff) {
  size_t nx = (size_t)T * K;
  float *x = rnd(nx + 4, 2), *r = rnd(nx + 4, 1), *nw = rnd((size_t)K + 4, 1), *b = rnd(N, 1);
  float *want = galloc((size_t)T * N * 4), *wxo = galloc(nx * 4), *wh = galloc(nx * 4);
  float *out = galloc((size_t)T * N * 4), *xo = galloc((nx + 4) * 4);
  uint16_t *w = wrnd((size_t)N * K);
  const float *rr = with_r ? r + xoff : NULL, *bb = with_bias ? b : NULL;
  long bad = -1;
  rdev->norm_matmul_bf16(want, wxo, wh, NULL, x + xoff, rr, nw + xoff, 1e-5f, off, w + woff, bb,
                         T, K, N);
  ask__cu_gemv_norm_bf16(S, out, xo + xoff, x + xoff, rr, nw + xoff, 1e-5f, off, w + woff, bb, T,
                         K, N);
  if (!cu_failed) {
    double rel = max_rel(out, want, (size_t)T * N);
    if (!(rel <= 1e-4)) {
      fprintf(stderr, "  out: max rel diff %g\n", rel);
      bad = 0;
    } else if (with_r && (bad = mismatch(xo + xoff, wxo, nx, 0, 0)) >= 0) {
      fprintf(stderr, "  xo differs from x + r\n");
    } else if (!with_r) {
      for (size_t i = 0; i < nx + 4 && bad < 0; i++)
        if (((uint32_t *)xo)[i] != 0xffffffffu) {
          fprintf(stderr, "  xo[%zu] written without r\n", i);
          bad = (long)i;
        }
    }
  }
  if (bad >= 0)
    fprintf(stderr, "  norm_matmul T=%d K=%d N=%d r=%d off=%g bias=%d woff=%d xoff=%d\n", T, K, N,
            with_r, off, with_bias, woff, xoff);
  gfree(x), gfree(r), gfree(nw), gfree(b), gfree(want), gfree(wxo), gfree(wh), gfree(out);
  gfree(xo), gfree(w);
  return bad;
}

/* out = glu_rows(gu, act) · wᵀ + bias through ask__cu_gemv_glu_bf16
 * against refdev's glu_matmul_bf16: within 1e-4 of max |want|. woff/goff
 * shift w / gu by elements (as nmm_case). */
static long gmm_case(int T, int F, int N, int act, int with_bias, int woff, int goff) {
  size_t ng = (size_t)T * 2 * F;
  float *gu = rnd(ng + 4, 3), *b = rnd(N, 1), *want = galloc((size_t)T * N * 4);
  float *wg = galloc((size_t)T * F * 4), *out = galloc((size_t)T * N * 4);
  uint16_t *w = wrnd((size_t)N * F);
  const float *bb = with_bias ? b : NULL;
  long bad = -1;
  rdev->glu_matmul_bf16(want, wg, NULL, gu + goff, act, w + woff, bb, T, F, N);
  ask__cu_gemv_glu_bf16(S, out, gu + goff, act, w + woff, bb, T, F, N);
  if (!cu_failed) {
    double rel = max_rel(out, want, (size_t)T * N);
    if (!(rel <= 1e-4)) {
      fprintf(stderr, "  out: max rel diff %g\n", rel);
      bad = 0;
    }
  }
  if (bad >= 0)
    fprintf(stderr, "  glu_matmul T=%d F=%d N=%d act=%d bias=%d woff=%d goff=%d\n", T, F, N, act,
            with_bias, woff, goff);
  gfree(gu), gfree(b), gfree(want), gfree(wg), gfree(out), gfree(w);
  return bad;
}

/* K: 2048 (rows staged in one chunk up to T = 4, in 2 or 4 chunks beyond),
 * 1000 and 200 (K % 8 == 0 with a short last step and tail pieces only),
 * 100 (K % 8 == 4: scalar kernel, 16-byte staging), 203 (odd: scalar
 * kernel, single floats). N = 77 and 9 leave warps and rows past N. */
static const int fuse_T[] = {1, 2, 3, 5, 8, 16};
static const int fuse_K[] = {2048, 1000, 200, 100, 203};

TEST(test_gemv_norm_bf16) {
  FOR_ORDERS {
    for (size_t ti = 0; ti < sizeof fuse_T / sizeof fuse_T[0]; ti++)
      for (size_t ki = 0; ki < sizeof fuse_K / sizeof fuse_K[0]; ki++)
        for (int c = 0; c < 8; c++) { /* with r, Gemma's offset, bias: all 8 */
          int T = fuse_T[ti], K = fuse_K[ki];
          if ((T == 3 || T == 8) && c % 3 != 0)
            continue; /* the in-between row counts: fewer combinations */
          ASSERT_EQ(nmm_case(T, K, (c & 1) ? 77 : 9, c & 1, (float)((c >> 1) & 1), c >> 2, 0, 0),
                    -1);
          LAUNCHED();
        }
    /* longer than a chunk at T = 1 (8192 floats): two chunks, the second partial */
    ASSERT_EQ(nmm_case(1, 9000, 9, 1, 0.0f, 1, 0, 0), -1);
    LAUNCHED();
    ASSERT_EQ(nmm_case(2, 4104, 5, 1, 1.0f, 0, 0, 0), -1);
    LAUNCHED();
    /* misaligned: w (scalar kernel), the f32 inputs (vector kernel, single-float staging) */
    for (int T = 1; T <= 16; T *= 4) {
      ASSERT_EQ(nmm_case(T, 264, 20, 1, 1.0f, 1, 1, 0), -1);
      LAUNCHED();
      ASSERT_EQ(nmm_case(T, 264, 20, 1, 0.0f, 0, 0, 1), -1);
      LAUNCHED();
      ASSERT_EQ(nmm_case(T, 2048, 33, 0, 1.0f, 1, 0, 3), -1);
      LAUNCHED();
    }
  }
}

TEST(test_gemv_glu_bf16) {
  FOR_ORDERS {
    for (size_t ti = 0; ti < sizeof fuse_T / sizeof fuse_T[0]; ti++)
      for (size_t fi = 0; fi < sizeof fuse_K / sizeof fuse_K[0]; fi++)
        for (int act = 0; act < 3; act++) /* silu, gelu-tanh, gelu-erf */
          for (int with_bias = 0; with_bias < 2; with_bias++) {
            int T = fuse_T[ti], F = fuse_K[fi];
            if ((T == 3 || T == 8) && with_bias != act % 2)
              continue;
            ASSERT_EQ(gmm_case(T, F, with_bias ? 77 : 9, act, with_bias, 0, 0), -1);
            LAUNCHED();
          }
    ASSERT_EQ(gmm_case(1, 9000, 9, ASK_ACT_SILU, 1, 0, 0), -1); /* two chunks */
    LAUNCHED();
    for (int T = 1; T <= 16; T *= 4) {
      ASSERT_EQ(gmm_case(T, 264, 20, ASK_ACT_GELU_TANH, 1, 1, 0), -1); /* w misaligned */
      LAUNCHED();
      ASSERT_EQ(gmm_case(T, 264, 20, ASK_ACT_GELU, 0, 0, 1), -1); /* gu misaligned */
      LAUNCHED();
    }
  }
}

/* ---- gemv.cu: the persistent one-row kernels ---- */

/* The three one-row products again with the persistent kernels on
 * (ask__cu_gemv_pw) on a pretend device of `sms` SMs: K 2048 (U 8, one step
 * a row), 4096 (U 8, two steps), 3072 (U 4, three), 1536 (U 2, three),
 * 1280 (U 1, five) and
 * 16384 (the largest staged row, 64 KiB of shared memory); N 77 on one SM
 * gives each warp 5 rows, N 9 leaves warps without one. K 1000 is not a
 * multiple of 256 and takes the other kernels. */
TEST(test_gemv_pw) {
  const int Ks[] = {2048, 4096, 3072, 1536, 1280, 1000};
  int pw0 = ask__cu_gemv_pw, sms0 = ask__cu_sms;
  FOR_ORDERS {
    ASSERT_EQ(ask__cu_gemv_init(1, ASK_EMU_SMEM_OPTIN), cudaSuccess);
    for (int pw = 1; pw <= 2; pw++) {
      ask__cu_gemv_pw = pw;
      for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
        int K = Ks[ki];
        for (int c = 0; c < 2; c++) {
          int N = c ? 77 : 9;
          ASSERT_EQ(gemv_case(1, K, N, c, 0, 0), -1);
          LAUNCHED();
          ASSERT_EQ(nmm_case(1, K, N, c, (float)c, !c, 0, 0), -1);
          LAUNCHED();
          ASSERT_EQ(gmm_case(1, K, N, c ? ASK_ACT_SILU : ASK_ACT_GELU_TANH, c, 0, 0), -1);
          LAUNCHED();
        }
      }
    }
    ASSERT_EQ(gemv_case(1, 16384, 20, 1, 0, 0), -1);
    LAUNCHED();
    ASSERT_EQ(nmm_case(1, 2048, 33, 1, 0.0f, 1, 0, 3), -1); /* f32 inputs misaligned */
    LAUNCHED();
    ASSERT_EQ(gmm_case(1, 2048, 20, ASK_ACT_GELU, 0, 0, 1), -1); /* gu misaligned */
    LAUNCHED();
    ASSERT_EQ(nmm_case(1, 2048, 20, 1, 1.0f, 1, 1, 0), -1); /* w misaligned: the other kernels */
    LAUNCHED();
  }
  ask__cu_gemv_pw = pw0, ask__cu_sms = sms0;
}

/* The persistent kernel with its first weight step loaded before the PDL
 * wait (ask__cu_pw_early): the same bits as without, plain and fused norm,
 * U 8, 4 (ask__cu_pw_umax) and 1. The weights lie in memory the emulator does not guard (no
 * kernel writes weights, which is what allows the early loads), x, r and
 * the norm weight in guarded memory: reading those before the wait would
 * fault. */
TEST(test_gemv_pw_early) {
  int pw0 = ask__cu_gemv_pw, sms0 = ask__cu_sms, e0 = ask__cu_pw_early, u0 = ask__cu_pw_umax;
  FOR_ORDERS {
    ASSERT_EQ(ask__cu_gemv_init(1, ASK_EMU_SMEM_OPTIN), cudaSuccess);
    for (int pw = 1; pw <= 2; pw++) {
      ask__cu_gemv_pw = pw;
      ask__cu_pw_umax = pw == 1 ? 8 : 4; /* K 2048 in steps of U 8, then of U 4 */
      for (int K = 256; K <= 2048; K *= 8) {
        int N = 45;
        uint16_t *w = aligned_alloc(256, (size_t)N * K * 2);
        for (size_t i = 0; i < (size_t)N * K; i++)
          w[i] = to_bf16(frand() * 0.1f);
        float *x = rnd(K, 2), *r = rnd(K, 1), *nw = rnd(K, 1), *b = rnd(N, 1);
        float *o[2][2], *xo[2];
        for (int e = 0; e < 2; e++) { /* plain, early */
          ask__cu_pw_early = e;
          o[e][0] = galloc((size_t)N * 4), o[e][1] = galloc((size_t)N * 4);
          xo[e] = galloc((size_t)K * 4);
          ASSERT_EQ(ask__cu_gemv_pw_copy(S, o[e][0], x, w, b, 1, K, N), 1);
          LAUNCHED();
          ASSERT_EQ(ask__cu_gemv_pw_norm(S, o[e][1], xo[e], x, r, nw, 1e-6f, 1.0f, w, NULL, 1, K,
                                         N),
                    1);
          LAUNCHED();
        }
        ASSERT_EQ(memcmp(o[0][0], o[1][0], (size_t)N * 4), 0);
        ASSERT_EQ(memcmp(o[0][1], o[1][1], (size_t)N * 4), 0);
        ASSERT_EQ(memcmp(xo[0], xo[1], (size_t)K * 4), 0);
        free(w);
      }
    }
  }
  ask__cu_gemv_pw = pw0, ask__cu_sms = sms0, ask__cu_pw_early = e0, ask__cu_pw_umax = u0;
}

/* ASK_CUDA_PW_EARLY=2 (ask__cu_pw_early 2): the persistent product loads
 * its first weights before the PDL wait only when the stream's last launch
 * was attention_paged's (ask__cu_pw_early_now), and then gives the same
 * bits as without, with x and the norm inputs guarded (weights are not:
 * no kernel writes them). After any other launch it does not. */
TEST(test_gemv_pw_early_after_attn) {
  int pw0 = ask__cu_gemv_pw, sms0 = ask__cu_sms, e0 = ask__cu_pw_early;
  static const int len[1] = {40};
  static const int32_t seq[1] = {0}, pos[1] = {39};
  FOR_ORDERS {
    ASSERT_EQ(ask__cu_gemv_init(1, ASK_EMU_SMEM_OPTIN), cudaSuccess);
    ask__cu_gemv_pw = 2;
    int K = 2048, N = 45;
    uint16_t *w = aligned_alloc(256, (size_t)N * K * 2);
    for (size_t i = 0; i < (size_t)N * K; i++)
      w[i] = to_bf16(frand() * 0.1f);
    float *x = rnd(K, 2), *b = rnd(N, 1), *o[2] = {galloc((size_t)N * 4), galloc((size_t)N * 4)};
    ask__cu_pw_early = 0;
    ASSERT_EQ(ask__cu_gemv_pw_copy(S, o[0], x, w, b, 1, K, N), 1);
    LAUNCHED();
    ask__cu_pw_early = 2;
    ASSERT_EQ(ask__cu_pw_early_now(), 0); /* the last launch: the product */
    ASSERT_EQ(paged_case(1, len, 1, seq, pos, 8, 1, 256, 16, 4), -1);
    ASSERT_EQ(ask__cu_pw_early_now(), 1);
    ASSERT_EQ(ask__cu_gemv_pw_copy(S, o[1], x, w, b, 1, K, N), 1);
    LAUNCHED();
    ASSERT_EQ(ask__cu_pw_early_now(), 0);
    ASSERT_EQ(memcmp(o[0], o[1], (size_t)N * 4), 0);
    ASSERT_EQ(paged_case(1, len, 1, seq, pos, 32, 8, 64, 16, 1), -1);
    ASSERT_EQ(ask__cu_pw_early_now(), 1);
    float *h = galloc((size_t)K * 4);
    ask__cu_rmsnorm(S, h, x, NULL, x, 1, K, 1e-6f, 0.0f); /* any other launch */
    LAUNCHED();
    ASSERT_EQ(ask__cu_pw_early_now(), 0);
    ask__cu_pw_early = 1;
    ASSERT_EQ(ask__cu_pw_early_now(), 1);
    free(w);
  }
  ask__cu_gemv_pw = pw0, ask__cu_sms = sms0, ask__cu_pw_early = e0;
}

/* norm_matmul + rope_kv fused into the persistent kernel (one row) against
 * the same two launches one after the other (the persistent plain kernel,
 * then rope_kv): bit for bit in the qkv row, the caches and xo. Shapes:
 * Llama-like heads (4 q, 2 kv, D 64) and gemma-like (8 q, 1 kv, D 256);
 * K 256 (one step, U 1) and 2048 (U 8); one and two blocks an SM of a
 * one-SM device (several units a warp); with and without r and bias; slot
 * -1 writes no cache row. */
TEST(test_gemv_norm_rope) {
  static const struct {
    int nh, nkv, D, K, pw;
  } cs[] = {{4, 2, 64, 256, 1}, {4, 2, 64, 2048, 2}, {8, 1, 256, 512, 1}, {8, 1, 256, 2048, 2}};
  int pw0 = ask__cu_gemv_pw, sms0 = ask__cu_sms;
  FOR_ORDERS {
    ASSERT_EQ(ask__cu_gemv_init(1, ASK_EMU_SMEM_OPTIN), cudaSuccess);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
      int nh = cs[c].nh, nkv = cs[c].nkv, D = cs[c].D, K = cs[c].K, kvd = nkv * D, cap = 12;
      int N = (nh + 2 * nkv) * D;
      ask__cu_gemv_pw = cs[c].pw;
      for (int v = 0; v < 3; v++) {
        int32_t pos0 = v == 2 ? 3 : 37 + 100 * (int)c, slot0 = v == 1 ? -1 : 7;
        int32_t *pos = gdup(&pos0, 4), *slot = gdup(&slot0, 4);
        float *inv = inv_freq(D), *x = rnd(K, 2), *r = rnd(K, 1), *nw = rnd(K, 1);
        float *b = rnd(N, 1), *out = galloc((size_t)N * 4), *want = galloc((size_t)N * 4);
        float *xo = galloc((size_t)K * 4), *wxo = galloc((size_t)K * 4);
        uint16_t *w = wrnd((size_t)N * K), *kc = galloc((size_t)cap * kvd * 2);
        for (size_t i = 0; i < (size_t)cap * kvd; i++)
          kc[i] = to_bf16(frand());
        uint16_t *vc = gdup(kc, (size_t)cap * kvd * 2), *wkc = gdup(kc, (size_t)cap * kvd * 2),
                 *wvc = gdup(kc, (size_t)cap * kvd * 2);
        const float *rr = v != 1 ? r : NULL, *bb = v != 2 ? b : NULL;
        ask__cu_gemv_norm_bf16(S, want, wxo, x, rr, nw, 1e-6f, (float)(v & 1), w, bb, 1, K, N);
        LAUNCHED();
        ask__cu_rope_kv(S, want, wkc, wvc, pos, slot, inv, 1, nh, nkv, D, N);
        LAUNCHED();
        ASSERT_EQ(ask__cu_gemv_norm_rope_bf16(S, out, xo, x, rr, nw, 1e-6f, (float)(v & 1), w, bb,
                                              1, K, kc, vc, pos, slot, inv, nh, nkv, D),
                  1);
        LAUNCHED();
        long bad = mismatch(out, want, (size_t)N, 0, 0);
        long badk = mismatch16(kc, wkc, (size_t)cap * kvd),
             badv = mismatch16(vc, wvc, (size_t)cap * kvd);
        long badx = rr != NULL ? mismatch(xo, wxo, (size_t)K, 0, 0) : -1;
        if (bad >= 0 || badk >= 0 || badv >= 0 || badx >= 0)
          T__FAIL("norm_rope nh=%d nkv=%d D=%d K=%d case %d: qkv %ld, kc %ld, vc %ld, xo %ld", nh,
                  nkv, D, K, v, bad, badk, badv, badx);
      }
    }
    /* shapes it does not take: two rows, K not a multiple of 256, odd D */
    ask__cu_gemv_pw = 2;
    float *p = galloc(4096 * 4);
    uint16_t *c16 = galloc(4096 * 2);
    int32_t *ip = galloc(64);
    ASSERT_EQ(ask__cu_gemv_norm_rope_bf16(S, p, p, p, NULL, p, 1e-6f, 0.0f, c16, NULL, 2, 256,
                                          c16, c16, ip, ip, p, 2, 1, 8),
              0);
    ASSERT_EQ(ask__cu_gemv_norm_rope_bf16(S, p, p, p, NULL, p, 1e-6f, 0.0f, c16, NULL, 1, 200,
                                          c16, c16, ip, ip, p, 2, 1, 8),
              0);
    ASSERT_EQ(ask__cu_gemv_norm_rope_bf16(S, p, p, p, NULL, p, 1e-6f, 0.0f, c16, NULL, 1, 256,
                                          c16, c16, ip, ip, p, 2, 1, 7),
              0);
    LAUNCHED();
  }
  ask__cu_gemv_pw = pw0, ask__cu_sms = sms0;
}

/* norm_matmul + glu_rows fused into the persistent kernel (one row) against
 * the two launches (the persistent plain kernel, then glu_rows): g bit for
 * bit, and xo. F 77 and 1024 (gate/up 154 and 2048 rows), K 256 and 2048, one
 * and two blocks an SM of a one-SM device, the three activations, with and
 * without r and bias. */
TEST(test_gemv_norm_glu) {
  static const struct {
    int F, K, pw;
  } cs[] = {{77, 256, 1}, {1024, 2048, 2}, {300, 512, 2}};
  int pw0 = ask__cu_gemv_pw, sms0 = ask__cu_sms;
  FOR_ORDERS {
    ASSERT_EQ(ask__cu_gemv_init(1, ASK_EMU_SMEM_OPTIN), cudaSuccess);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
      int F = cs[c].F, K = cs[c].K, N = 2 * F;
      ask__cu_gemv_pw = cs[c].pw;
      for (int act = 0; act < 3; act++) {
        float *x = rnd(K, 2), *r = rnd(K, 1), *nw = rnd(K, 1), *b = rnd(N, 1);
        float *gu = galloc((size_t)N * 4), *want = galloc((size_t)F * 4);
        float *g = galloc((size_t)F * 4), *xo = galloc((size_t)K * 4), *wxo = galloc((size_t)K * 4);
        uint16_t *w = wrnd((size_t)N * K);
        const float *rr = act != 1 ? r : NULL, *bb = act != 2 ? b : NULL;
        ask__cu_gemv_norm_bf16(S, gu, wxo, x, rr, nw, 1e-6f, (float)(act & 1), w, bb, 1, K, N);
        LAUNCHED();
        ask__cu_glu_rows(S, want, gu, 1, F, act);
        LAUNCHED();
        ASSERT_EQ(ask__cu_gemv_norm_glu_bf16(S, g, xo, x, rr, nw, 1e-6f, (float)(act & 1), w, bb,
                                             1, K, F, act),
                  1);
        LAUNCHED();
        long bad = mismatch(g, want, (size_t)F, 0, 0);
        long badx = rr != NULL ? mismatch(xo, wxo, (size_t)K, 0, 0) : -1;
        if (bad >= 0 || badx >= 0)
          T__FAIL("norm_glu F=%d K=%d act=%d: g %ld, xo %ld", F, K, act, bad, badx);
      }
    }
    /* two rows or K not a multiple of 256: not taken */
    float *p = galloc(4096 * 4);
    uint16_t *c16 = galloc(4096 * 2);
    ASSERT_EQ(ask__cu_gemv_norm_glu_bf16(S, p, p, p, NULL, p, 1e-6f, 0.0f, c16, NULL, 2, 256, 8, 0),
              0);
    ASSERT_EQ(ask__cu_gemv_norm_glu_bf16(S, p, p, p, NULL, p, 1e-6f, 0.0f, c16, NULL, 1, 200, 8, 0),
              0);
    LAUNCHED();
  }
  ask__cu_gemv_pw = pw0, ask__cu_sms = sms0;
}

/* ---- gemv_chain.cu: dependent one-row products in one launch ---- */

/* The products from a layer's o to the next layer's qkv as one chain
 * (ask__cu_gemv_chain) against the separate launches the engine makes
 * without it (o; the gate/up product, glu_rows and down; qkv with
 * rope_kv): every output bit for bit — o's and down's rows, the new
 * residuals, g, the qkv row and the cache rows. The emulator runs the
 * phases one launch each (blocks run one after another, so the grid barrier
 * is the GPU's to test: backend.c's probe and test_cuda_ops); the phases'
 * row orders, their warps and the loads through L2 are the same code.
 * Shapes: hidden 256, 8 heads of 32, 2 kv heads, F 512 in steps of U 1
 * (ask__cu_pw_umax 1) on one and two pretend SMs; hidden 2048 (8 heads of
 * 256, 1 kv head), F 2048, U 8. Then what it refuses: one op, a down
 * product without its gate/up, K of another U, x misaligned. */
static int chain_case_(int C, int nh, int nkv, int D, int F, int act) {
  int qd = nh * D, N = (nh + 2 * nkv) * D, kvd = nkv * D, cap = 6;
  int32_t pos0 = 5, slot0 = 3;
  int32_t *pos = gdup(&pos0, 4), *slot = gdup(&slot0, 4);
  float *inv = inv_freq(D), *x = rnd(C, 2), *att = rnd(qd, 1), *nw1 = rnd(C, 1),
        *nw2 = rnd(C, 1), *bo = rnd(C, 1), *bq = rnd(N, 1);
  uint16_t *wo = wrnd((size_t)C * qd), *wgu = wrnd((size_t)2 * F * C), *wd = wrnd((size_t)C * F),
           *wq = wrnd((size_t)N * C);
  float *r[2], *xo1[2], *xo2[2], *gu[2], *g[2], *qkv[2];
  uint16_t *kc[2], *vc[2];
  for (int k = 0; k < 2; k++) {
    r[k] = galloc((size_t)C * 4), xo1[k] = galloc((size_t)C * 4), xo2[k] = galloc((size_t)C * 4);
    gu[k] = galloc((size_t)2 * F * 4), g[k] = galloc((size_t)F * 4), qkv[k] = galloc((size_t)N * 4);
    kc[k] = galloc((size_t)cap * kvd * 2), vc[k] = galloc((size_t)cap * kvd * 2);
    memset(kc[k], 0, (size_t)cap * kvd * 2);
    memset(vc[k], 0, (size_t)cap * kvd * 2);
  }
  /* k = 0: separate launches; the down product's output overwrites r, as in a step */
  ask__cu_gemv_bf16(S, r[0], att, wo, bo, 1, qd, C);
  ask__cu_gemv_norm_bf16(S, gu[0], xo1[0], x, r[0], nw1, 1e-6f, 1.0f, wgu, NULL, 1, C, 2 * F);
  ask__cu_glu_rows(S, g[0], gu[0], 1, F, act);
  ask__cu_gemv_bf16(S, r[0], g[0], wd, NULL, 1, F, C);
  if (ask__cu_gemv_norm_rope_bf16(S, qkv[0], xo2[0], xo1[0], r[0], nw2, 1e-6f, 0.0f, wq, bq, 1,
                                  C, kc[0], vc[0], pos, slot, inv, nh, nkv, D) != 1)
    return 1;
  if (cu_failed)
    return 2;
  ask_chain_op_t ops[4];
  memset(ops, 0, sizeof ops);
  ops[0] = (ask_chain_op_t){.kind = ASK_CHAIN_MATMUL, .out = r[1], .x = att, .w = wo, .bias = bo,
                            .K = qd, .N = C};
  ops[1] = (ask_chain_op_t){.kind = ASK_CHAIN_NORM_MATMUL, .out = gu[1], .xo = xo1[1], .x = x,
                            .r = r[1], .nw = nw1, .eps = 1e-6f, .w_offset = 1.0f, .w = wgu,
                            .K = C, .N = 2 * F};
  ops[2] = (ask_chain_op_t){.kind = ASK_CHAIN_GLU_MATMUL, .out = r[1], .g = g[1], .x = gu[1],
                            .act = act, .w = wd, .K = F, .N = C};
  ops[3] = (ask_chain_op_t){.kind = ASK_CHAIN_NORM_ROPE_KV, .out = qkv[1], .xo = xo2[1],
                            .x = xo1[1], .r = r[1], .nw = nw2, .eps = 1e-6f, .w = wq, .bias = bq,
                            .K = C, .kc = kc[1], .vc = vc[1], .pos = pos, .slot = slot,
                            .inv_freq = inv, .nh = nh, .nkv = nkv, .D = D};
  if (ask__cu_gemv_chain(S, ops, 4, 1) != 1)
    return 3;
  if (cu_failed)
    return 4;
  if (mismatch(r[1], r[0], (size_t)C, 0, 0) >= 0 ||
      mismatch(xo1[1], xo1[0], (size_t)C, 0, 0) >= 0 ||
      mismatch(xo2[1], xo2[0], (size_t)C, 0, 0) >= 0 ||
      mismatch(g[1], g[0], (size_t)F, 0, 0) >= 0 ||
      mismatch(qkv[1], qkv[0], (size_t)N, 0, 0) >= 0 ||
      mismatch16(kc[1], kc[0], (size_t)cap * kvd) >= 0 ||
      mismatch16(vc[1], vc[0], (size_t)cap * kvd) >= 0)
    return 5;
  /* o alone again: one op is not a chain; the down product without its
   * gate/up product, and a misaligned x, are not taken */
  if (ask__cu_gemv_chain(S, ops, 1, 1) != 0 || ask__cu_gemv_chain(S, ops + 2, 2, 1) != 0)
    return 6;
  ops[0].x = att + 1;
  if (ask__cu_gemv_chain(S, ops, 4, 1) != 0)
    return 7;
  ops[0].x = att;
  if (ask__cu_gemv_chain(S, ops + 3, 1, 0) != 0 || ask__cu_gemv_chain(S, ops, 4, 0) != 0)
    return 8; /* rope_kv not fused: the chain is refused */
  return 0;
}

/* A layer from its attention on (the decode kernel's unit as the chain's
 * first phase: ASK_CUDA_ATTN_DECODE on) against attention_paged's decode
 * kernel and the separate products: the attention row, then every output,
 * bit for bit. One sequence at position p (p + 1 keys in shuffled pages of
 * 16) in nsplit parts; 4 heads of 64 over 2 kv heads (2 a block: GB 2,
 * KL 8). */
static int chain_attn_case_(int p, int nsplit, int last) {
  enum { C = 256, NH = 4, NKV = 2, D = 64, F = 768, PAGE = 16, NP = 40 };
  const int qd = NH * D, N = (NH + 2 * NKV) * D, kvd = NKV * D, cap = NP * PAGE;
  int32_t tab0[NP], seq0 = 0, pos0 = p, slot0 = 5;
  for (int i = 0; i < NP; i++)
    tab0[i] = (i * 7 + 3) % NP;
  int32_t *tab = gdup(tab0, sizeof tab0), *seq = gdup(&seq0, 4), *pos = gdup(&pos0, 4),
          *slot = gdup(&slot0, 4);
  float *inv = inv_freq(D), *x = rnd(C, 2), *qkv0 = rnd(N, 1), *nw1 = rnd(C, 1),
        *nw2 = rnd(C, 1), *bo = rnd(C, 1), *bq = rnd(N, 1);
  uint16_t *wo = wrnd((size_t)C * qd), *wgu = wrnd((size_t)2 * F * C), *wd = wrnd((size_t)C * F),
           *wq = wrnd((size_t)N * C), *cache = wrnd((size_t)cap * kvd);
  float *att[2], *part[2], *r[2], *xo1[2], *xo2[2], *gu[2], *g[2], *qkv[2];
  uint16_t *kc[2], *vc[2];
  for (int k = 0; k < 2; k++) {
    att[k] = galloc((size_t)qd * 4), part[k] = galloc((size_t)nsplit * NH * (D + 2) * 4);
    r[k] = galloc((size_t)C * 4), xo1[k] = galloc((size_t)C * 4), xo2[k] = galloc((size_t)C * 4);
    gu[k] = galloc((size_t)2 * F * 4), g[k] = galloc((size_t)F * 4);
    qkv[k] = gdup(qkv0, (size_t)N * 4);
    kc[k] = gdup(cache, (size_t)cap * kvd * 2), vc[k] = gdup(cache + 8, (size_t)cap * kvd * 2);
  }
  const float scale = 0.125f;
  ask__cu_attention_paged(S, att[0], part[0], qkv[0], kc[0], vc[0], tab, seq, pos, 1, NH, NKV, D,
                          N, NP, PAGE, nsplit, scale);
  ask__cu_gemv_bf16(S, r[0], att[0], wo, bo, 1, qd, C);
  ask__cu_gemv_norm_bf16(S, gu[0], xo1[0], x, r[0], nw1, 1e-6f, 1.0f, wgu, NULL, 1, C, 2 * F);
  ask__cu_glu_rows(S, g[0], gu[0], 1, F, ASK_ACT_SILU);
  ask__cu_gemv_bf16(S, r[0], g[0], wd, NULL, 1, F, C);
  if (!last &&
      ask__cu_gemv_norm_rope_bf16(S, qkv[0], xo2[0], xo1[0], r[0], nw2, 1e-6f, 0.0f, wq, bq, 1, C,
                                  kc[0], vc[0], pos, slot, inv, NH, NKV, D) != 1)
    return 1;
  if (cu_failed)
    return 2;
  ask_chain_op_t ops[5];
  ops[0] = (ask_chain_op_t){.kind = ASK_CHAIN_ATTENTION, .out = att[1], .part = part[1],
                            .x = qkv[1], .kc = kc[1], .vc = vc[1], .table = tab, .seq = seq,
                            .pos = pos, .nh = NH, .nkv = NKV, .D = D, .q_stride = N,
                            .table_width = NP, .page = PAGE, .nsplit = nsplit, .scale = scale};
  ops[1] = (ask_chain_op_t){.kind = ASK_CHAIN_MATMUL, .out = r[1], .x = att[1], .w = wo,
                            .bias = bo, .K = qd, .N = C};
  ops[2] = (ask_chain_op_t){.kind = ASK_CHAIN_NORM_MATMUL, .out = gu[1], .xo = xo1[1], .x = x,
                            .r = r[1], .nw = nw1, .eps = 1e-6f, .w_offset = 1.0f, .w = wgu,
                            .K = C, .N = 2 * F};
  ops[3] = (ask_chain_op_t){.kind = ASK_CHAIN_GLU_MATMUL, .out = r[1], .g = g[1], .x = gu[1],
                            .act = ASK_ACT_SILU, .w = wd, .K = F, .N = C};
  ops[4] = (ask_chain_op_t){.kind = ASK_CHAIN_NORM_ROPE_KV, .out = qkv[1], .xo = xo2[1],
                            .x = xo1[1], .r = r[1], .nw = nw2, .eps = 1e-6f, .w = wq, .bias = bq,
                            .K = C, .kc = kc[1], .vc = vc[1], .pos = pos, .slot = slot,
                            .inv_freq = inv, .nh = NH, .nkv = NKV, .D = D};
  if (ask__cu_gemv_chain(S, ops, last ? 4 : 5, 1) != 1)
    return 3;
  if (cu_failed)
    return 4;
  if (mismatch(att[1], att[0], (size_t)qd, 0, 0) >= 0)
    return 5;
  if (mismatch(r[1], r[0], (size_t)C, 0, 0) >= 0 ||
      mismatch(xo1[1], xo1[0], (size_t)C, 0, 0) >= 0 ||
      mismatch(qkv[1], qkv[0], (size_t)N, 0, 0) >= 0 ||
      mismatch16(kc[1], kc[0], (size_t)cap * kvd) >= 0 ||
      mismatch16(vc[1], vc[0], (size_t)cap * kvd) >= 0 ||
      (!last && mismatch(xo2[1], xo2[0], (size_t)C, 0, 0) >= 0))
    return 6;
  return 0;
}

static int chain_case(int C, int nh, int nkv, int D, int F, int act) {
  const int mark = ngblk, rc = chain_case_(C, nh, nkv, D, F, act);
  gfree_to(mark);
  return rc;
}

static int chain_attn_case(int p, int nsplit, int last) {
  const int mark = ngblk, rc = chain_attn_case_(p, nsplit, last);
  gfree_to(mark);
  return rc;
}

TEST(test_gemv_chain) {
  int pw0 = ask__cu_gemv_pw, sms0 = ask__cu_sms, u0 = ask__cu_pw_umax;
  FOR_ORDERS {
    ASSERT_EQ(ask__cu_gemv_init(1, ASK_EMU_SMEM_OPTIN), cudaSuccess);
    ASSERT_EQ(ask__cu_chain_init(), cudaSuccess);
    ask__cu_pw_umax = 1;
    for (int sms = 1; sms <= 2; sms++) {
      ask__cu_sms = sms, ask__cu_gemv_pw = 3 - sms;
      for (int act = 0; act < 3; act++) {
        int rc = chain_case(256, 8, 2, 32, 512, act);
        if (rc != 0)
          T__FAIL("chain hidden 256, %d SMs, act %d: case %d", sms, act, rc);
      }
    }
    /* from the attention on: short, split and long rows; the last layer's
     * four; not with the decode kernel off */
    ask__cu_attn_dec = 1;
    static const int ps[][2] = {{0, 1}, {40, 4}, {150, 8}, {300, 32}};
    for (int i = 0; i < 4; i++)
      for (int last = 0; last < 2; last++) {
        int rc = chain_attn_case(ps[i][0], ps[i][1], last);
        if (rc != 0)
          T__FAIL("chain from attention, position %d, %d parts, last %d: case %d", ps[i][0],
                  ps[i][1], last, rc);
      }
    ask__cu_attn_dec = 0;
    ASSERT_EQ(chain_attn_case(40, 4, 0), 3);
    cu_reset();
    /* K of two U (256 and 512 at most U 8): refused */
    ask__cu_pw_umax = 8;
    ask__cu_sms = 1, ask__cu_gemv_pw = 2;
    ASSERT_EQ(chain_case(256, 8, 2, 32, 512, 0), 3);
    cu_reset();
    if (oi == 0) {
      int rc = chain_case(2048, 8, 1, 256, 2048, ASK_ACT_GELU_TANH);
      if (rc != 0)
        T__FAIL("chain hidden 2048: case %d", rc);
    }
  }
  ask__cu_gemv_pw = pw0, ask__cu_sms = sms0, ask__cu_pw_umax = u0;
}

/* ---- sample.cu ---- */

TEST(test_argmax_rows) {
  /* parts a row: automatic (35 parts of the 70001 row at 6 rows), one
   * block, and more parts than values (empty parts) */
  int parts[3] = {-1, 1, 7};
  FOR_ORDERS for (int pc = 0; pc < 3; pc++) {
    int ns[4] = {5, 33, 1000, 70001}, T = 6;
    ask__cu_argmax_parts = parts[pc];
    for (int c = 0; c < 4; c++) {
      int n = ns[c];
      float *x = rnd((size_t)T * n, 5);
      x[n - 1] = 9.0f, x[n / 2] = 9.0f;      /* row 0: tie, the first wins */
      x[n + 1] = NAN, x[n + n - 1] = 100.0f; /* row 1: NaN never chosen */
      for (int i = 0; i < n; i++) {
        x[2 * (size_t)n + i] = -1.0f;     /* row 2: all equal */
        x[4 * (size_t)n + i] = NAN;       /* row 4: all NaN */
        x[5 * (size_t)n + i] = -INFINITY; /* row 5: all -inf */
      }
      x[3 * (size_t)n] = NAN; /* row 3: leading NaN */
      int32_t *ids = galloc((size_t)T * 4);
      for (int rep = 0; rep < 2; rep++) { /* twice: the counters went back to 0 */
        memset(ids, 0xff, (size_t)T * 4);
        ask__cu_argmax_rows(S, ids, x, T, n);
        LAUNCHED();
        for (int t = 0; t < T; t++)
          if (ids[t] != ref->argmax(x + (size_t)t * n, n))
            T__FAIL("argmax n=%d parts %d row %d: %d, want %d", n, parts[pc], t, ids[t],
                    ref->argmax(x + (size_t)t * n, n));
      }
    }
  }
  ask__cu_argmax_parts = -1;
  /* one row of a 256000 vocabulary (125 parts), its largest in the last part */
  int n = 256000;
  float *x = rnd((size_t)n, 9);
  int32_t *ids = galloc(4);
  x[255999] = 50.0f, x[3] = 49.0f;
  ask__cu_argmax_rows(S, ids, x, 1, n);
  LAUNCHED();
  ASSERT_EQ(ids[0], 255999);
  x[7] = 50.0f; /* a tie across parts: the first wins */
  ask__cu_argmax_rows(S, ids, x, 1, n);
  LAUNCHED();
  ASSERT_EQ(ids[0], 7);
  for (int i = 0; i < n; i++) /* -0 and +0 are equal: the first of them wins */
    x[i] = -1.0f;
  x[70000] = -0.0f, x[200000] = 0.0f;
  ask__cu_argmax_rows(S, ids, x, 1, n);
  LAUNCHED();
  ASSERT_EQ(ids[0], 70000);
  ASSERT_EQ(ref->argmax(x, n), 70000);
}

TEST(test_sample_rows) {
  static const struct {
    float temp;
    int k;
    float p;
  } cs[] = {{0.0f, 0, 1.0f}, {1.0f, 0, 1.0f}, {0.7f, 0, 1.0f}, {1.0f, 40, 1.0f}, {0.8f, 50, 0.9f},
            {1.3f, 0, 0.5f}, {1.0f, 1, 1.0f}, {1.0f, 0, 0.0f}, {1.0f, 3, 0.95f}, {2.0f, 0, 0.99f}};
  enum { T = sizeof cs / sizeof cs[0] };
  FOR_ORDERS {
    int ns[3] = {1000, 3001, 50000}, draws[3] = {3, 1, 1};
    for (int c = 0; c < 3; c++) {
      int n = ns[c];
      float *x = galloc((size_t)T * n * 4), *probs = galloc((size_t)T * n * 4),
            *pw = galloc((size_t)n * 4), *temps = galloc(T * 4), *ps = galloc(T * 4);
      double *w = galloc((size_t)n * 8);
      int32_t *idx = galloc((size_t)n * 4), *ks = galloc(T * 4), *ids = galloc(T * 4);
      uint64_t *rng = galloc(T * 8), rref[T];
      for (int draw = 0; draw < draws[c]; draw++) {
        for (int t = 0; t < T; t++) {
          float *xr = x + (size_t)t * n;
          for (int i = 0; i < n; i++)
            xr[i] = frand() * 4;
          xr[n / 2] = xr[n / 3];    /* a tie */
          xr[(t * 97) % n] += 3.0f; /* a clear favourite */
          temps[t] = cs[t].temp, ks[t] = cs[t].k, ps[t] = cs[t].p;
          rng[t] = rref[t] = ask_rng_seed(1000 * (uint64_t)draw + t);
        }
        ask__cu_sample_rows(S, ids, draw == 1 ? NULL : probs, x, temps, ks, ps, rng, T, n);
        LAUNCHED();
        for (int t = 0; t < T; t++) {
          int want =
              ref->sample(pw, w, idx, x + (size_t)t * n, n, temps[t], ks[t], ps[t], &rref[t]);
          long bad = draw == 1 ? -1 : mismatch(probs + (size_t)t * n, pw, n, 1e-5, 1e-5);
          if (ids[t] != want || rng[t] != rref[t] || bad >= 0)
            T__FAIL("sample n=%d temp=%g k=%d p=%g draw %d: token %d want %d, rng %s, probs %ld", n,
                    temps[t], ks[t], ps[t], draw, ids[t], want,
                    rng[t] == rref[t] ? "same" : "differs", bad);
        }
      }
    }
  }
}

/* sample_rows against ref->sample on rows that reach every path of the
 * parts: one long row (125 parts), a top-p cut inside a run of equal values
 * that spans parts (the highest ids go first), p near 0 over tied maxima,
 * rows of -inf only (argmax, generator untouched), and more rows than one
 * launch takes (1030). */
static int sample_case(int T, int n, float temp, int k, float p, int kind, int draws) {
  float *x = galloc((size_t)T * n * 4), *probs = galloc((size_t)T * n * 4),
        *pw = galloc((size_t)n * 4), *temps = galloc((size_t)T * 4), *ps = galloc((size_t)T * 4);
  double *w = galloc((size_t)n * 8);
  int32_t *idx = galloc((size_t)n * 4), *ks = galloc((size_t)T * 4), *ids = galloc((size_t)T * 4);
  uint64_t *rng = galloc((size_t)T * 8), *rref = galloc((size_t)T * 8);
  int bad = 0;
  for (int t = 0; t < T; t++) {
    float *xr = x + (size_t)t * n;
    for (int i = 0; i < n; i++)
      xr[i] = kind == 0 ? frand() * 4 : kind == 1 ? 0.0f : kind == 2 ? frand() : -INFINITY;
    if (kind == 1)
      xr[(t * 31) % n] = 2.0f; /* one favourite over n - 1 equal values */
    if (kind == 2)
      xr[n / 5] = xr[n / 2] = xr[n - 1] = 3.0f; /* tied maxima */
    temps[t] = temp, ks[t] = k, ps[t] = p;
  }
  for (int d = 0; d < draws && !bad; d++) {
    for (int t = 0; t < T; t++)
      rng[t] = rref[t] = ask_rng_seed(7919 * (uint64_t)d + (uint64_t)t);
    ask__cu_sample_rows(S, ids, d == 0 ? probs : NULL, x, temps, ks, ps, rng, T, n);
    if (cu_failed || ask_emu_last_error()[0] != '\0')
      return 1;
    for (int t = 0; t < T && bad < 3; t++) {
      int want = ref->sample(pw, w, idx, x + (size_t)t * n, n, temp, k, p, &rref[t]);
      long pb = d == 0 ? mismatch(probs + (size_t)t * n, pw, n, 1e-5, 1e-5) : -1;
      if (ids[t] != want || rng[t] != rref[t] || pb >= 0) {
        fprintf(stderr, "  T=%d n=%d temp=%g k=%d p=%g kind %d draw %d row %d: token %d want %d, "
                "rng %s, probs %ld\n", T, n, temp, k, p, kind, d, t, ids[t], want,
                rng[t] == rref[t] ? "same" : "differs", pb);
        bad++;
      }
    }
  }
  return bad;
}

TEST(test_sample_rows_parts) {
  FOR_ORDERS {
    ASSERT_EQ(sample_case(1, 256000, 0.8f, 50, 0.9f, 0, 3), 0);
    ASSERT_EQ(sample_case(1, 256000, 1.0f, 0, 0.95f, 0, 2), 0);
    ASSERT_EQ(sample_case(2, 20000, 1.0f, 0, 0.5f, 1, 6), 0);   /* the cut inside the run */
    ASSERT_EQ(sample_case(2, 20000, 1.0f, 0, 0.999f, 1, 4), 0);
    ASSERT_EQ(sample_case(1, 9000, 1.0f, 0, 1e-7f, 2, 4), 0);   /* p near 0: the first maximum */
    ASSERT_EQ(sample_case(1, 9000, 0.5f, 2, 1.0f, 2, 4), 0);    /* top-k 2 over 3 tied maxima */
    ASSERT_EQ(sample_case(3, 5000, 1.0f, 10, 0.9f, 3, 1), 0);   /* all -inf */
    ASSERT_EQ(sample_case(1030, 40, 0.9f, 5, 0.8f, 0, 1), 0);   /* two launches of rows */
  }
}

/* ---- prefill.cu ---- */

/* One prefill chunk of n rows at positions p0 .. p0 + n - 1 over a paged
 * cache of p0 + n keys (pages of `page` rows dealt from a shuffled pool
 * with 3 spare pages; the page list's entry past the last is 1 << 28, so
 * reading it or a key past the chunk's last row faults), query rows of
 * (nh + 2 nkv) * D + qextra floats (qextra odd: 4-byte query loads), the
 * caches starting coff bf16 into their buffers (not a multiple of 8:
 * bf16-pair loads); the launcher against refdev's attention_prefill.
 * Tolerance: max |got - want| <= 1e-4 * max |want| (as attention_paged's
 * GPU test). Returns 0 when within it. */
static int prefill_case(int nh, int nkv, int D, int n, int p0, int page, int qextra, int coff) {
  int kvd = nkv * D, qs = (nh + 2 * nkv) * D + qextra, L = p0 + n;
  int need = (L + page - 1) / page, npool = need + 3;
  int32_t *pages = galloc((size_t)(need + 1) * 4), *perm = galloc((size_t)npool * 4);
  for (int i = 0; i < npool; i++)
    perm[i] = i;
  for (int i = npool - 1; i > 0; i--) {
    int j = irand(i + 1), t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (int i = 0; i < need; i++)
    pages[i] = perm[i];
  pages[need] = 1 << 28;
  size_t rows = (size_t)npool * page;
  uint16_t *kc0 = galloc((rows * kvd + coff) * 2), *vc0 = galloc((rows * kvd + coff) * 2);
  uint16_t *kc = kc0 + coff, *vc = vc0 + coff;
  for (size_t i = 0; i < rows * kvd; i++) {
    kc[i] = to_bf16(frand() * 2);
    vc[i] = to_bf16(frand() * 2);
  }
  float *q = rnd((size_t)n * qs, 1), *out = galloc((size_t)n * nh * D * 4),
        *want = galloc((size_t)n * nh * D * 4);
  float scale = 1.0f / sqrtf((float)D);
  rdev->attention_prefill(want, q, kc, vc, pages, p0, n, nh, nkv, D, qs, page, scale);
  ask__cu_attention_prefill(S, out, q, kc, vc, pages, p0, n, nh, nkv, D, qs, page, scale);
  double rel = cu_failed ? 0 : max_rel(out, want, (size_t)n * nh * D);
  int bad = !(rel <= 1e-4);
  if (bad)
    fprintf(stderr,
            "  attention_prefill nh=%d nkv=%d D=%d n=%d p0=%d page=%d qextra=%d coff=%d: max rel "
            "diff %g\n",
            nh, nkv, D, n, p0, page, qextra, coff, rel);
  gfree(pages), gfree(perm), gfree(kc0), gfree(vc0), gfree(q), gfree(out), gfree(want);
  return bad;
}

/* The model shapes (gemma-2b 8/1/256, Llama-3.2-1B 32/8/64, Qwen2-0.5B
 * 14/2/64: 9 rows of 7 heads a block, a padding pair), D % 8 != 0
 * (6/2/42) and multi-head (4/4/32: 64 rows a block), over chunk lengths
 * around the row tiles (1, 15, 16, 17, 100, 300), starting a sequence (p0
 * 0) and continuing one (p0 37), pages of 16 and 5 rows. */
TEST(test_attention_prefill) {
  static const int shapes[5][3] = {{8, 1, 256}, {32, 8, 64}, {14, 2, 64}, {6, 2, 42}, {4, 4, 32}};
  static const int ns[6] = {1, 15, 16, 17, 100, 300};
  FOR_ORDERS {
    for (int sh = 0; sh < 5; sh++)
      for (int ni = 0; ni < 6; ni++)
        for (int pc = 0; pc < 2; pc++) {
          /* page 5 with p0 37 and page 16 with p0 0, and the other way
           * round on every other length; q rows 4 floats longer than the
           * fused qkv row, or 1 (scalar query loads) */
          int p0 = pc ? 37 : 0, page = (pc + ni) % 2 ? 5 : 16, qextra = ni % 3 == 2 ? 1 : 4;
          if (ns[ni] == 300 && sh != 1 && sh != 0 && pc == 0)
            continue; /* the long chunk: the model shapes, and all shapes continuing */
          ASSERT_EQ(prefill_case(shapes[sh][0], shapes[sh][1], shapes[sh][2], ns[ni], p0, page,
                                 qextra, 0),
                    0);
          LAUNCHED();
        }
    /* a last tile of one key (keys 0..64 with 64-key tiles, 0..32 with 32) */
    ASSERT_EQ(prefill_case(32, 8, 64, 65, 0, 16, 4, 0), 0);
    LAUNCHED();
    ASSERT_EQ(prefill_case(8, 1, 256, 21, 12, 16, 4, 0), 0);
    LAUNCHED();
    /* caches not 16-byte aligned (bf16-pair loads), D 256 and 64 */
    ASSERT_EQ(prefill_case(8, 1, 256, 17, 37, 16, 4, 2), 0);
    LAUNCHED();
    ASSERT_EQ(prefill_case(32, 8, 64, 40, 5, 5, 4, 4), 0);
    LAUNCHED();
    /* more head shapes: G 16 (one block of 16 heads, 4 rows), G 24 (two
     * chunks of 12), D 128 and D 8 (dims padded to 64), D 2 */
    ASSERT_EQ(prefill_case(32, 2, 64, 21, 3, 16, 4, 0), 0);
    LAUNCHED();
    ASSERT_EQ(prefill_case(48, 2, 32, 13, 70, 16, 4, 0), 0);
    LAUNCHED();
    ASSERT_EQ(prefill_case(8, 4, 128, 70, 37, 16, 4, 0), 0);
    LAUNCHED();
    ASSERT_EQ(prefill_case(9, 3, 8, 30, 2, 3, 1, 0), 0);
    LAUNCHED();
    ASSERT_EQ(prefill_case(2, 1, 2, 19, 7, 1, 0, 0), 0);
    LAUNCHED();
    /* bad arguments are refused */
    ask__cu_attention_prefill(S, NULL, NULL, NULL, NULL, NULL, 0, 4, 4, 4, 512, 2048, 16, 1.0f);
    ASSERT_TRUE(cu_failed);
    cu_reset();
    ask__cu_attention_prefill(S, NULL, NULL, NULL, NULL, NULL, 0, 4, 6, 4, 64, 1024, 16, 1.0f);
    ASSERT_TRUE(cu_failed);
    cu_reset();
    ask__cu_attention_prefill(S, NULL, NULL, NULL, NULL, NULL, 0, 0, 4, 4, 64, 256, 16, 1.0f);
    ASSERT_TRUE(!cu_failed); /* n 0: nothing to do */
  }
}

/* ---- launch checks of the launchers ---- */

TEST(test_launcher_errors) {
  FOR_ORDERS {
    float *p = galloc(4096);
    ask__cu_attention(S, p, NULL, 1, p, p, p, NULL, 1, 4, 2, 1, 512, 512, 1.0f, 1); /* D > 256 */
    ASSERT_TRUE(cu_failed);
    printf("  refused as it should: %s\n", cu_err);
    cu_reset();
    ask__cu_gemv_bf16(S, p, p, (const uint16_t *)p, NULL, 17, 8, 8); /* T > 16 */
    ASSERT_TRUE(cu_failed);
    cu_reset();
    ask__cu_gemv_norm_bf16(S, p, p + 512, p, p, p, 1e-5f, 0.0f, (const uint16_t *)p, NULL, 17, 8,
                           8); /* T > 16: the backend runs the separate ops instead */
    ASSERT_TRUE(cu_failed);
    printf("  refused as it should: %s\n", cu_err);
    cu_reset();
    ask__cu_gemv_glu_bf16(S, p, p, ASK_ACT_SILU, (const uint16_t *)p, NULL, 17, 8, 8);
    ASSERT_TRUE(cu_failed);
    cu_reset();
    ask__cu_gemv_glu_bf16(S, p, p, ASK_ACT_SILU, (const uint16_t *)p, NULL, 2, 0, 8); /* F = 0 */
    ASSERT_TRUE(cu_failed);
    cu_reset();
    ask__cu_add(S, p, p, p, 16); /* and a good launch afterwards */
    LAUNCHED();
  }
}

TEST_MAIN(test_emu_collectives, test_emu_shared_memory, test_emu_races_and_ptx, test_emu_pdl,
          test_emu_big_smem,
          test_emu_failures,
          test_embedding, test_rmsnorm, test_layernorm, test_rope, test_rope_kv, test_glu,
          test_glu_rows, test_add_softmax_bias, test_f32_to_bf16, test_attention,
          test_attention_merge, test_attention_paged, test_attention_paged_forced,
          test_attention_paged_early,
          test_attention_prefill, test_gemv_bf16, test_gemv_norm_bf16, test_gemv_glu_bf16,
          test_gemv_pw, test_gemv_pw_early, test_gemv_pw_early_after_attn,
          test_gemv_norm_rope, test_gemv_norm_glu,
          test_gemv_chain, test_argmax_rows,
          test_sample_rows, test_sample_rows_parts, test_launcher_errors)

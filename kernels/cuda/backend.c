/* backend.c — the CUDA backend's ops table (kernels.h's ask_ops_t with its
 * ask_dev_t part) on the first visible device: initialisation, device
 * memory, the sticky first-failure record that sync() reports, and the
 * binding of each op to its launcher in the .cu files, to cuBLASLt
 * (gemm.c) or to CUDA graphs (graph.c).
 *
 * One process-wide context: the device that CUDA_VISIBLE_DEVICES leaves
 * first, one non-blocking stream, one cuBLASLt handle with its 32 MiB
 * workspace, a 256-byte device buffer for the host-facing argmax/sample.
 * Used from one thread at a time (a replica's engine thread). No CUDA or
 * cuBLASLt failure aborts: the first one is kept with the call's name and
 * CUDA's message, ops are skipped until sync() returns it as an AS_E* code.
 * After a sticky CUDA error (an illegal address) the context is unusable and
 * every later sync fails: that replica must be replaced.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ask_cuda.h"
#include "cuda_int.h"
#include "runtime.h"

static struct {
  int ok;                /* initialised and usable */
  char why[256];         /* why not, when !ok */
  char name[160];        /* device name and sm_XY */
  cudaStream_t stream;   /* every op is queued here */
  void *small;           /* 256 bytes: argmax/sample parameters and results */
  int gemv_rows;         /* matmul_bf16 uses gemv.cu up to this T ... */
  int gemv_max_n;        /* ... for N below this (wider: cuBLASLt reads faster) */
  size_t gemv_max_bytes; /* ... and matrices smaller than this (default: any) */
  int fuse_rows;         /* the decode fusions use gemv.cu's fused kernels up to this T */
  int fuse_glu;          /* glu_matmul_bf16 too (its kernel restages the activation per block) */
  int fuse_rope;         /* norm_matmul_rope_kv in one kernel at one row */
  int fuse_gate;         /* norm_matmul_glu in one kernel at one row */
  int chain;             /* gemv_chain as one launch (gemv_chain.cu) */
  int chain_ok;          /* its probe passed: ask_cuda_set_chain may turn it on */
  int chain_probed;      /* the probe ran (at the first request for chains) */
  char chain_why[200];   /* why it cannot be, "" when it can */
  int pdl_ok;            /* the PDL probe passed: ask_cuda_set_pdl may turn it on */
  char pdl_why[200];     /* why PDL is off, "" when on */
  char desc[1024];       /* ask_dev_t's describe */
  cudaEvent_t mark[ASK_MARKS]; /* mark/wait_mark, made at first use */
  int err;               /* first failure since the last sync (AS_E*), 0 if none */
  char msg[256];         /* its message */
} ask__g;

static pthread_once_t ask__once = PTHREAD_ONCE_INIT;

int ask__cu_check(cudaError_t e, const char *what) {
  if (e == cudaSuccess)
    return 0;
  /* A failed API call (cudaMalloc) also sets the thread's last error; clear
   * it, or the next launch check would report it again. */
  (void)cudaGetLastError();
  if (ask__g.err == 0) {
    ask__g.err = e == cudaErrorMemoryAllocation ? AS_ENOMEM
                 : e == cudaErrorInvalidValue   ? AS_EINVAL
                                                : AS_EIO;
    snprintf(ask__g.msg, sizeof ask__g.msg, "%s: %s (%s)", what, cudaGetErrorString(e),
             cudaGetErrorName(e));
  }
  return 1;
}

int ask__cu_failed(void) { return ask__g.err != 0; }

/* A start-up probe's failure as "probe (step): why" into why (n bytes):
 * what why already says (a wrong result), else out of host memory, else the
 * failure ask__cu_check recorded. */
static void ask__probe_why(char *why, size_t n, const char *step, int host_ok) {
  char what[200];
  snprintf(what, sizeof what, "%.190s",
           why[0] != '\0' ? why
           : !host_ok     ? "out of memory"
                          : ask__g.msg);
  snprintf(why, n, "probe (%.40s): %.140s", step, what);
}

/* Programmatic dependent launch (common.cuh) where the device has it
 * (compute capability 9.0+) and runs kernels built with the waits (the
 * sm_90a code, not the portable compute_80 PTX), ASK_NO_PDL is unset or 0,
 * and two dependent
 * launches give the right result run directly and captured in a graph
 * behind a memset (as a decode step's graph starts). Sets ask__cu_pdl and
 * pdl_ok, or pdl_why; leaves no failure recorded. */
static void ask__pdl_fn(void *ud) {
  int **ab = ud;
  ask__cu_check(cudaMemsetAsync(ab[0], 0, 65536 * sizeof(int), ask__g.stream), "cudaMemsetAsync");
  ask__cu_pdl_pair(ask__g.stream, ab[0], ab[1], 65536, 11);
}

static int ask__pdl_check(const int *b, int *host, int n, int seed) {
  if (ask__cu_check(cudaMemcpy(host, b, (size_t)n * sizeof(int), cudaMemcpyDeviceToHost),
                    "cudaMemcpy (PDL probe)"))
    return 1;
  for (int i = 0; i < n; i++)
    if (host[i] != 3 * (i + seed) + 1) {
      snprintf(ask__g.pdl_why, sizeof ask__g.pdl_why,
               "probe: dependent launch read %d at %d, not %d", host[i], i, 3 * (i + seed) + 1);
      return 1;
    }
  return 0;
}

static void ask__pdl_init(const struct cudaDeviceProp *prop) {
  const char *env = getenv("ASK_NO_PDL");
  enum { N = 65536 };
  int *ab[2] = {NULL, NULL}, *host = NULL;
  void *graph = NULL;
  const char *step = "setting up";
  ask__cu_pdl = 0;
  if (prop->major < 9) {
    snprintf(ask__g.pdl_why, sizeof ask__g.pdl_why, "needs compute capability 9.0");
    return;
  }
  if (env != NULL && env[0] != '\0' && strcmp(env, "0") != 0) {
    snprintf(ask__g.pdl_why, sizeof ask__g.pdl_why, "ASK_NO_PDL is set");
    return;
  }
  if (!ask__cu_pdl_built()) {
    snprintf(ask__g.pdl_why, sizeof ask__g.pdl_why,
             "this device runs the compute_80 PTX, built without the waits");
    return;
  }
  host = malloc(N * sizeof(int));
  ask__cu_pdl = 1;
  if (host == NULL || ask__cu_check(cudaMalloc((void **)&ab[0], N * sizeof(int)), "cudaMalloc") ||
      ask__cu_check(cudaMalloc((void **)&ab[1], N * sizeof(int)), "cudaMalloc"))
    goto out;
  ask__cu_check(cudaMemsetAsync(ab[0], 0, N * sizeof(int), ask__g.stream), "cudaMemsetAsync");
  ask__cu_pdl_pair(ask__g.stream, ab[0], ab[1], N, 7);
  if (ask__cu_check(cudaStreamSynchronize(ask__g.stream), "cudaStreamSynchronize") ||
      ask__pdl_check(ab[1], host, N, 7)) {
    step = "run directly";
    goto out;
  }
  step = "captured in a graph behind a memset";
  if (ask__graph_capture(ask__g.stream, &graph, ask__pdl_fn, ab) ||
      ask__graph_launch(ask__g.stream, graph) ||
      ask__cu_check(cudaStreamSynchronize(ask__g.stream), "cudaStreamSynchronize") ||
      ask__pdl_check(ab[1], host, N, 11))
    goto out;
  ask__g.pdl_ok = 1;
out:
  if (graph != NULL)
    ask__graph_free(ask__g.stream, graph);
  cudaFree(ab[0]);
  cudaFree(ab[1]);
  if (!ask__g.pdl_ok) {
    ask__probe_why(ask__g.pdl_why, sizeof ask__g.pdl_why, step, host != NULL);
    ask__cu_pdl = 0;
  }
  free(host);
  (void)cudaGetLastError();
  ask__g.err = 0; /* the probe's failures are not the caller's */
  ask__g.msg[0] = '\0';
}

/* The chained products (gemv_chain.cu) where two dependent 2048 x 2048
 * products in one launch give the bits of the two separate launches, run
 * directly (as a cooperative launch where the device takes one with PDL,
 * else a plain one) and captured in a graph replayed twice (the barrier's
 * counter must come back to 0). The first product's output starts as NaN,
 * so a read of it before the barrier shows. Sets chain_ok or chain_why;
 * leaves no failure recorded. */
static void ask__chain_fn(void *ud) {
  const ask_chain_op_t *ops = ud;
  ask__cu_check(cudaMemsetAsync(ops[0].out, 0xff, (size_t)ops[0].N * sizeof(float),
                                ask__g.stream),
                "cudaMemsetAsync");
  ask__cu_check(cudaMemsetAsync(ops[1].out, 0xff, (size_t)ops[1].N * sizeof(float),
                                ask__g.stream),
                "cudaMemsetAsync");
  if (!ask__cu_gemv_chain(ask__g.stream, ops, 2, 0))
    ask__cu_check(cudaErrorInvalidValue, "gemv_chain: the probe's shape was not taken");
}

static int ask__chain_run(const ask_chain_op_t *ops, float *y1, float *y2, const float *want,
                          float *host, int n, int graph) {
  ask__cu_check(cudaMemsetAsync(y1, 0xff, (size_t)n * sizeof(float), ask__g.stream),
                "cudaMemsetAsync");
  ask__cu_check(cudaMemsetAsync(y2, 0xff, (size_t)n * sizeof(float), ask__g.stream),
                "cudaMemsetAsync");
  if (!graph && !ask__cu_gemv_chain(ask__g.stream, ops, 2, 0)) {
    snprintf(ask__g.chain_why, sizeof ask__g.chain_why, "the probe's shape was not taken");
    return 1;
  }
  if (ask__cu_failed())
    return 1; /* the launch was refused: the caller may try another way */
  if (graph) {
    void *gr = NULL;
    int bad = ask__graph_capture(ask__g.stream, &gr, ask__chain_fn, (void *)ops) ||
              ask__graph_launch(ask__g.stream, gr) || ask__graph_launch(ask__g.stream, gr);
    if (gr != NULL)
      ask__graph_free(ask__g.stream, gr);
    if (bad)
      return 1;
  }
  if (ask__cu_check(cudaStreamSynchronize(ask__g.stream), "cudaStreamSynchronize") ||
      ask__cu_check(cudaMemcpy(host, y2, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost),
                    "cudaMemcpy (chain probe)"))
    return 1;
  if (memcmp(host, want, (size_t)n * sizeof(float)) != 0) {
    snprintf(ask__g.chain_why, sizeof ask__g.chain_why,
             "probe: the chained products read %g at 0, the separate ones %g", host[0],
             want[0]);
    return 1;
  }
  return 0;
}

static void ask__chain_probe(void) {
  enum { K = 2048, N = 2048 };
  /* a failure the caller had pending stays the caller's */
  const int err0 = ask__g.err;
  char msg0[sizeof ask__g.msg];
  memcpy(msg0, ask__g.msg, sizeof msg0);
  uint16_t *w = NULL;
  float *x = NULL, *y = NULL, *host = NULL, *want = NULL;
  const char *step = "setting up";
  if (err0 != 0)
    return; /* not now: the next request probes */
  ask__g.chain_ok = 0;
  ask__g.chain_probed = 1;
  ask__g.chain_why[0] = '\0';
  cudaError_t e = ask__cu_chain_init();
  if (e != cudaSuccess) {
    snprintf(ask__g.chain_why, sizeof ask__g.chain_why, "set-up: %s (%s)", cudaGetErrorString(e),
             cudaGetErrorName(e));
    (void)cudaGetLastError();
    return;
  }
  if (ask__cu_gemv_pw <= 0) {
    snprintf(ask__g.chain_why, sizeof ask__g.chain_why, "the persistent kernel is off");
    return;
  }
  host = malloc(2 * N * sizeof(float));
  if (host == NULL || ask__cu_check(cudaMalloc((void **)&w, 2 * (size_t)N * K * 2), "cudaMalloc") ||
      ask__cu_check(cudaMalloc((void **)&x, (K + 4 * N) * sizeof(float)), "cudaMalloc"))
    goto out;
  y = x + K; /* y1, y2, then the separate products' z1, z2 */
  want = host + N;
  for (int i = 0; i < K; i++)
    host[i] = (float)(i % 7 - 3) * 0.25f;
  ask__cu_check(cudaMemset(w, 0x3c, 2 * (size_t)N * K * 2), "cudaMemset");
  ask__cu_check(cudaMemcpy(x, host, K * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  ask_chain_op_t ops[2];
  memset(ops, 0, sizeof ops);
  ops[0].kind = ops[1].kind = ASK_CHAIN_MATMUL;
  ops[0].K = ops[1].K = K, ops[0].N = ops[1].N = N;
  ops[0].x = x, ops[0].out = y, ops[0].w = w;
  ops[1].x = y, ops[1].out = y + N, ops[1].w = w + (size_t)N * K;
  ask__cu_gemv_bf16(ask__g.stream, y + 2 * N, x, w, NULL, 1, K, N);
  ask__cu_gemv_bf16(ask__g.stream, y + 3 * N, y + 2 * N, w + (size_t)N * K, NULL, 1, K, N);
  if (ask__cu_check(cudaStreamSynchronize(ask__g.stream), "cudaStreamSynchronize") ||
      ask__cu_check(cudaMemcpy(want, y + 3 * N, N * sizeof(float), cudaMemcpyDeviceToHost),
                    "cudaMemcpy"))
    goto out;
  /* cooperative launches first (every block resident, or the launch fails),
   * then plain ones (the grid is sized to fit; only a concurrent kernel of
   * another stream could keep a block out) */
  for (int coop = 1; coop >= 0; coop--) {
    ask__cu_chain_coop = coop;
    step = coop ? "run directly, cooperative" : "run directly";
    if (ask__chain_run(ops, y, y + N, want, host, N, 0) == 0) {
      step = coop ? "captured, cooperative" : "captured in a graph, replayed twice";
      if (ask__chain_run(ops, y, y + N, want, host, N, 1) == 0)
        break;
    }
    /* a wrong result is not retried; nor a cooperative launch refused for
     * its size, since a plain one of that size would wait for ever */
    if (ask__g.chain_why[0] != '\0' || coop == 0 ||
        strstr(ask__g.msg, "cudaErrorCooperativeLaunchTooLarge") != NULL)
      goto out;
    (void)cudaGetLastError();
    ask__g.err = 0;
    ask__g.msg[0] = '\0';
  }
  ask__g.chain_ok = 1;
out:
  cudaFree(w);
  cudaFree(x);
  if (!ask__g.chain_ok)
    ask__probe_why(ask__g.chain_why, sizeof ask__g.chain_why, step, host != NULL);
  free(host);
  /* the probe's failures are not the caller's, but one that broke the
   * context (an illegal address) shows at the next wait and is kept */
  (void)cudaGetLastError();
  ask__g.err = err0;
  memcpy(ask__g.msg, msg0, sizeof msg0);
  if (ask__cu_check(cudaStreamSynchronize(ask__g.stream), "chained products' probe"))
    ask__g.chain_ok = 0;
}

static void ask__init(void) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  struct cudaDeviceProp prop;
  const char *env = getenv("ASK_CUDA_GEMV_ROWS"), *fenv = getenv("ASK_CUDA_FUSE_ROWS"),
             *nenv = getenv("ASK_CUDA_GEMV_MAX_N"), *genv = getenv("ASK_CUDA_FUSE_GLU"),
             *benv = getenv("ASK_CUDA_GEMV_MAX_MB"),
             *kenv = getenv("ASK_CUDA_SPLIT_MIN"), *penv = getenv("ASK_CUDA_GEMV_PW"),
             *renv = getenv("ASK_CUDA_FUSE_ROPE"), *aenv = getenv("ASK_CUDA_FUSE_GATE"),
             *denv = getenv("ASK_CUDA_ATTN_DECODE"), *menv = getenv("ASK_CUDA_ARGMAX_PARTS"),
             *eenv = getenv("ASK_CUDA_PW_EARLY"), *uenv = getenv("ASK_CUDA_PW_UMAX"),
             *cenv = getenv("ASK_CUDA_CHAIN"),
             *aeenv = getenv("ASK_CUDA_ATTN_EARLY"), *mwenv = getenv("ASK_CUDA_MLP_WARPS"),
             *skbenv = getenv("ASK_CUDA_SPLIT_KB");

  if (e != cudaSuccess || n == 0) {
    snprintf(ask__g.why, sizeof ask__g.why, "cudaGetDeviceCount: %s",
             e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return;
  }
  if ((e = cudaSetDevice(0)) != cudaSuccess ||
      (e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess ||
      (e = cudaStreamCreateWithFlags(&ask__g.stream, cudaStreamNonBlocking)) != cudaSuccess ||
      (e = cudaMalloc(&ask__g.small, 256)) != cudaSuccess) {
    snprintf(ask__g.why, sizeof ask__g.why, "CUDA initialisation: %s (%s)",
             cudaGetErrorString(e), cudaGetErrorName(e));
    return;
  }
  snprintf(ask__g.name, sizeof ask__g.name, "%.120s (sm_%d%d)", prop.name, prop.major, prop.minor);
  if (prop.major < 8) {
    snprintf(ask__g.why, sizeof ask__g.why, "%s: compute capability 8.0 or newer needed",
             ask__g.name);
    return;
  }
  if (ask__gemm_init(ask__g.why, sizeof ask__g.why) != 0)
    return;
  if ((e = ask__cu_gemv_init(prop.multiProcessorCount, prop.sharedMemPerBlockOptin)) !=
      cudaSuccess) {
    snprintf(ask__g.why, sizeof ask__g.why, "gemv.cu's shared-memory limit: %s (%s)",
             cudaGetErrorString(e), cudaGetErrorName(e));
    return;
  }
  if (ask__cu_paged_init(ask__g.stream) != 0 || ask__cu_sample_init(ask__g.stream) != 0) {
    snprintf(ask__g.why, sizeof ask__g.why, "%s", ask__g.msg);
    ask__g.err = 0;
    return;
  }
  /* Defaults from bench_gemv on an H200 (2026-11-26, docs/benchmarks.md):
   * the own kernel beats cuBLASLt at one row (qkv 4.0 against 7.0 us,
   * down 9.4 against 13.8) but not on lm_head (287 against 246 us for
   * 256000 x 2048) nor, mostly, at 2 or more rows; the fused norm+matmul
   * saves ~1 us at one row, the fused glu+matmul costs 10 us (20.7
   * against 10.6 for Llama's down) and far more at more rows. */
  ask__g.gemv_rows = env != NULL ? atoi(env) : 1;
  if (ask__g.gemv_rows < 0 || ask__g.gemv_rows > 16)
    ask__g.gemv_rows = 1;
  ask__g.gemv_max_n = nenv != NULL && atoi(nenv) > 0 ? atoi(nenv) : 65536;
  ask__g.gemv_max_bytes = benv != NULL && atof(benv) > 0 ? (size_t)(atof(benv) * 1048576.0)
                                                         : SIZE_MAX;
  ask__g.fuse_rows = fenv != NULL ? atoi(fenv) : 1;
  if (ask__g.fuse_rows < 0 || ask__g.fuse_rows > 16)
    ask__g.fuse_rows = 1;
  ask__g.fuse_glu = genv != NULL && atoi(genv) != 0;
  ask__g.fuse_rope = renv == NULL || atoi(renv) != 0;
  ask__g.fuse_gate = aenv == NULL || atoi(aenv) != 0;
  if (denv != NULL && atoi(denv) >= 0)
    ask__cu_attn_dec = atoi(denv);
  if (kenv != NULL && atoi(kenv) > 0)
    ask__cu_split_min = atoi(kenv);
  if (skbenv != NULL && atoi(skbenv) > 0)
    ask__cu_split_kb = atoi(skbenv);
  if (menv != NULL && atoi(menv) > 0)
    ask__cu_argmax_parts = atoi(menv);
  if (eenv != NULL)
    (void)ask_cuda_set_pw_early(atoi(eenv));
  /* The attention kernels' early reads, on by default (an H100, ninth
   * session: +0.8% at batch 1 for Llama-3.2-1B, +2.6% for gemma-2b, +1-3%
   * at batch 8). Not on the emulated backend, which guards all of its device
   * memory before a launch's PDL wait and cannot tell what the step's copy
   * covered: there only the tests that ask for them take them. */
#ifdef AS_CUDAEMU_BACKEND
  ask__cu_attn_early = aeenv != NULL && atoi(aeenv) != 0;
#else
  ask__cu_attn_early = aeenv == NULL || atoi(aeenv) != 0;
#endif
  if (uenv != NULL && atoi(uenv) >= 1 && atoi(uenv) <= 8)
    ask__cu_pw_umax = atoi(uenv);
  if (mwenv != NULL)
    (void)ask_cuda_set_mlp_warps(atoi(mwenv));
  if (penv != NULL)
    ask__cu_gemv_pw = atoi(penv) < 0 ? 0 : atoi(penv) > 2 ? 2 : atoi(penv);
  ask__pdl_init(&prop);
  if (cenv != NULL && atoi(cenv) != 0) { /* probed only when asked for */
    ask__chain_probe();
    ask__g.chain = ask__g.chain_ok;
  }
  ask__g.ok = 1;
}

/* Returns the pending failure (and clears it) or 0. */
static int ask__take(char *err, size_t errlen) {
  int rc = ask__g.err;
  if (rc != 0 && err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", ask__g.msg);
  ask__g.err = 0;
  ask__g.msg[0] = '\0';
  return rc;
}

/* ---- ask_dev_t ------------------------------------------------------------ */

static int ask__d_alloc(void **p, size_t bytes, char *err, size_t errlen) {
  char what[64];
  *p = NULL;
  snprintf(what, sizeof what, "cudaMalloc(%zu bytes)", bytes);
  ask__cu_check(cudaMalloc(p, bytes == 0 ? 1 : bytes), what);
  return ask__take(err, errlen);
}

static void ask__d_free(void *p) {
  if (p != NULL)
    ask__cu_check(cudaFree(p), "cudaFree");
}

static int ask__d_copy(void *dst, const void *src, size_t bytes, int dir, char *err,
                       size_t errlen) {
  enum cudaMemcpyKind k = dir == ASK_COPY_H2D || dir == ASK_COPY_H2D_ASYNC
                              ? cudaMemcpyHostToDevice
                          : dir == ASK_COPY_D2H || dir == ASK_COPY_D2H_ASYNC
                              ? cudaMemcpyDeviceToHost
                              : cudaMemcpyDeviceToDevice;
  /* From pageable memory, cudaMemcpyAsync returns once src is in CUDA's
   * staging buffer: ASK_COPY_H2D_ASYNC needs no wait; ASK_COPY_D2H_ASYNC
   * goes to page-locked memory (host_alloc) and is waited for by marks. */
  if (!ask__cu_failed() &&
      !ask__cu_check(cudaMemcpyAsync(dst, src, bytes, k, ask__g.stream), "cudaMemcpyAsync") &&
      dir != ASK_COPY_H2D_ASYNC && dir != ASK_COPY_D2H_ASYNC)
    ask__cu_check(cudaStreamSynchronize(ask__g.stream), "cudaStreamSynchronize (copy)");
  return ask__take(err, errlen);
}

static int ask__d_sync(char *err, size_t errlen) {
  ask__cu_check(cudaStreamSynchronize(ask__g.stream), "cudaStreamSynchronize");
  return ask__take(err, errlen);
}

static int ask__d_host_alloc(void **p, size_t bytes, char *err, size_t errlen) {
  char what[64];
  *p = NULL;
  snprintf(what, sizeof what, "cudaHostAlloc(%zu bytes)", bytes);
  ask__cu_check(cudaHostAlloc(p, bytes == 0 ? 1 : bytes, cudaHostAllocDefault), what);
  return ask__take(err, errlen);
}

static void ask__d_host_free(void *p) {
  if (p != NULL)
    ask__cu_check(cudaFreeHost(p), "cudaFreeHost");
}

static int ask__d_mark(int slot, char *err, size_t errlen) {
  if (slot < 0 || slot >= ASK_MARKS) {
    ask__cu_check(cudaErrorInvalidValue, "mark: no such slot");
  } else if (!ask__cu_failed() &&
             (ask__g.mark[slot] != NULL ||
              !ask__cu_check(cudaEventCreateWithFlags(&ask__g.mark[slot], cudaEventDisableTiming),
                             "cudaEventCreateWithFlags"))) {
    ask__cu_check(cudaEventRecord(ask__g.mark[slot], ask__g.stream), "cudaEventRecord");
  }
  return ask__take(err, errlen);
}

static int ask__d_wait_mark(int slot, char *err, size_t errlen) {
  if (slot < 0 || slot >= ASK_MARKS || ask__g.mark[slot] == NULL)
    ask__cu_check(cudaErrorInvalidValue, "wait_mark: no mark in that slot");
  else
    ask__cu_check(cudaEventSynchronize(ask__g.mark[slot]), "cudaEventSynchronize");
  return ask__take(err, errlen);
}

/* Whether a bf16 product of T rows and N outputs takes gemv.cu's kernel:
 * the measured defaults (gemv_rows, gemv_max_n), or up to 16 rows for
 * shapes cuBLASLt cannot take (odd: rows not 16-byte aligned). */
static int ask__d_gemv_path(int T, int K, int N, int odd) {
  return (T <= ask__g.gemv_rows && N < ask__g.gemv_max_n &&
          (size_t)N * (size_t)K * 2 < ask__g.gemv_max_bytes) ||
         (odd && T <= 16);
}

static void ask__d_matmul_bf16(float *out, uint16_t *xs, const float *x, const uint16_t *w,
                               const float *bias, int T, int K, int N) {
  /* cuBLASLt wants 16-byte aligned rows; the own kernel takes anything. */
  int odd = K % 8 != 0 || ((uintptr_t)w & 15) != 0 || ((uintptr_t)x & 15) != 0;
  if (ask__d_gemv_path(T, K, N, odd)) {
    ask__cu_gemv_bf16(ask__g.stream, out, x, w, bias, T, K, N);
    return;
  }
  ask__cu_f32_to_bf16(ask__g.stream, xs, x, (size_t)T * (size_t)K);
  ask__gemm(ask__g.stream, 1, out, xs, w, bias, T, K, N);
}

/* The decode fusions: gemv.cu's fused kernels for the rows matmul_bf16
 * gives its own kernel (gemv_rows, or up to 16 for shapes cuBLASLt cannot
 * take), up to fuse_rows; beyond, the separate ops through the scratch.
 * The choice depends on the scalar arguments and the pointers only, as
 * captured steps need. */
static int ask__d_fused_rows(int T, int K, int N, const uint16_t *w) {
  return T <= ask__g.fuse_rows &&
         ask__d_gemv_path(T, K, N, K % 8 != 0 || ((uintptr_t)w & 15) != 0);
}

static void ask__d_norm_matmul_bf16(float *out, float *xo, float *h, uint16_t *xs, const float *x,
                                    const float *r, const float *nw, float eps, float w_offset,
                                    const uint16_t *w, const float *bias, int T, int K, int N) {
  if (ask__d_fused_rows(T, K, N, w)) {
    ask__cu_gemv_norm_bf16(ask__g.stream, out, xo, x, r, nw, eps, w_offset, w, bias, T, K, N);
    return;
  }
  if (r != NULL) { /* xo = x + r, h = rmsnorm(xo) */
    ask__cu_add(ask__g.stream, xo, x, r, (size_t)T * (size_t)K);
    x = xo;
  }
  /* With r NULL the kernel only reads x. */
  ask__cu_rmsnorm(ask__g.stream, h, (float *)(uintptr_t)x, NULL, nw, T, K, eps, w_offset);
  ask__d_matmul_bf16(out, xs, h, w, bias, T, K, N);
}

static int ask__d_norm_matmul_glu(float *g, float *gu, float *xo, float *h, uint16_t *xs,
                                  const float *x, const float *r, const float *nw, float eps,
                                  float w_offset, const uint16_t *w, const float *bias, int T,
                                  int K, int F, int act) {
  if (ask__g.fuse_gate && ask__d_fused_rows(T, K, 2 * F, w) &&
      ask__cu_gemv_norm_glu_bf16(ask__g.stream, g, xo, x, r, nw, eps, w_offset, w, bias, T, K, F,
                                 act))
    return 1;
  ask__d_norm_matmul_bf16(gu, xo, h, xs, x, r, nw, eps, w_offset, w, bias, T, K, 2 * F);
  return 0;
}

static void ask__d_glu_matmul_bf16(float *out, float *g, uint16_t *xs, const float *gu, int act,
                                   const uint16_t *w, const float *bias, int T, int F, int N) {
  if (ask__g.fuse_glu && ask__d_fused_rows(T, F, N, w)) {
    ask__cu_gemv_glu_bf16(ask__g.stream, out, gu, act, w, bias, T, F, N);
    return;
  }
  ask__cu_glu_rows(ask__g.stream, g, gu, T, F, act);
  ask__d_matmul_bf16(out, xs, g, w, bias, T, F, N);
}

/* norm_matmul_mlp: gemv_mlp.cu's one launch at one row where the
 * persistent kernel takes the shape; else 0 (the engine runs the ops). */
static int ask__d_norm_matmul_mlp(float *acc, float *clear, float *xo, const float *x,
                                  const float *r, const float *nw, float eps, float w_offset,
                                  const uint16_t *gu, const float *gu_b, const uint16_t *down_t,
                                  const float *down_b, int T, int K, int F, int act) {
  if (ask__cu_failed() || !ask__cu_mlp_takes(T, K, F, gu, down_t))
    return 0;
  if (down_t == NULL)
    return 1;
  if (((uintptr_t)acc & 15) != 0)
    return 0;
  ask__cu_gemv_mlp(ask__g.stream, acc, clear, xo, x, r, nw, eps, w_offset, gu, gu_b, down_t,
                   down_b, K, F, act);
  return 1;
}

/* gemv_chain: one launch when every op's own path would be the persistent
 * kernel (so the bits are the same), else 0 and the engine runs them. */
static int ask__d_gemv_chain(const ask_chain_op_t *ops, int n) {
  if (!ask__g.chain || n < 2)
    return 0;
  for (int i = 0; i < n; i++) {
    const ask_chain_op_t *o = &ops[i];
    int ok;
    switch (o->kind) {
    case ASK_CHAIN_MATMUL:
      ok = ask__d_gemv_path(1, o->K, o->N, 0);
      break;
    case ASK_CHAIN_NORM_MATMUL:
      ok = ask__d_fused_rows(1, o->K, o->N, o->w);
      break;
    case ASK_CHAIN_NORM_ROPE_KV:
      ok = ask__g.fuse_rope && ask__d_fused_rows(1, o->K, (o->nh + 2 * o->nkv) * o->D, o->w);
      break;
    case ASK_CHAIN_GLU_MATMUL:
      ok = ask__g.fuse_glu ? ask__d_fused_rows(1, o->K, o->N, o->w)
                           : ask__d_gemv_path(1, o->K, o->N, 0);
      break;
    case ASK_CHAIN_ATTENTION: /* gemv_chain.cu checks the decode kernel's conditions */
      ok = i == 0;
      break;
    default:
      ok = 0;
    }
    if (!ok)
      return 0;
  }
  return ask__cu_gemv_chain(ask__g.stream, ops, n, ask__g.fuse_rope);
}

static void ask__d_embedding_bf16(float *out, const uint16_t *table, const int32_t *ids,
                                  const int32_t *prev, int T, int C, float scale) {
  ask__cu_embedding(ask__g.stream, out, NULL, table, ids, prev, T, C, scale);
}

static void ask__d_add_rmsnorm(float *out, float *x, const float *r, const float *w, int T, int C,
                               float eps, float w_offset) {
  ask__cu_rmsnorm(ask__g.stream, out, x, r, w, T, C, eps, w_offset);
}

static void ask__d_rope_kv(float *qkv, uint16_t *kc, uint16_t *vc, const int32_t *pos,
                           const int32_t *slot, const float *inv_freq, int T, int nh, int nkv,
                           int D, int stride) {
  if (kc == NULL || vc == NULL) { /* NULL would select the plain rope op */
    ask__cu_check(cudaErrorInvalidValue, "rope_kv: no cache");
    return;
  }
  ask__cu_rope_kv(ask__g.stream, qkv, kc, vc, pos, slot, inv_freq, T, nh, nkv, D, stride);
}

static void ask__d_norm_matmul_rope_kv(float *out, float *xo, float *h, uint16_t *xs,
                                       const float *x, const float *r, const float *nw, float eps,
                                       float w_offset, const uint16_t *w, const float *bias, int T,
                                       int K, uint16_t *kc, uint16_t *vc, const int32_t *pos,
                                       const int32_t *slot, const float *inv_freq, int nh,
                                       int nkv, int D) {
  int N = (nh + 2 * nkv) * D;
  if (ask__g.fuse_rope && ask__d_fused_rows(T, K, N, w) &&
      ask__cu_gemv_norm_rope_bf16(ask__g.stream, out, xo, x, r, nw, eps, w_offset, w, bias, T, K,
                                  kc, vc, pos, slot, inv_freq, nh, nkv, D))
    return;
  ask__d_norm_matmul_bf16(out, xo, h, xs, x, r, nw, eps, w_offset, w, bias, T, K, N);
  ask__d_rope_kv(out, kc, vc, pos, slot, inv_freq, T, nh, nkv, D, N);
}

static void ask__d_attention_paged(float *out, float *part, const float *q, const uint16_t *kc,
                                   const uint16_t *vc, const int32_t *table, const int32_t *seq,
                                   const int32_t *pos, int T, int nh, int nkv, int D,
                                   int q_stride, int table_width, int page, int nsplit,
                                   float scale) {
  ask__cu_attention_paged(ask__g.stream, out, part, q, kc, vc, table, seq, pos, T, nh, nkv, D,
                          q_stride, table_width, page, nsplit, scale);
}

static void ask__d_attention_prefill(float *out, const float *q, const uint16_t *kc,
                                     const uint16_t *vc, const int32_t *pages, int p0, int n,
                                     int nh, int nkv, int D, int q_stride, int page,
                                     float scale) {
  ask__cu_attention_prefill(ask__g.stream, out, q, kc, vc, pages, p0, n, nh, nkv, D, q_stride,
                            page, scale);
}

static void ask__d_glu_rows(float *out, const float *gu, int T, int F, int act) {
  ask__cu_glu_rows(ask__g.stream, out, gu, T, F, act);
}

static void ask__d_argmax_rows(int32_t *ids, const float *x, int T, int n) {
  ask__cu_argmax_rows(ask__g.stream, ids, x, T, n);
}

static void ask__d_sample_rows(int32_t *ids, float *probs, const float *x,
                               const float *temperature, const int32_t *top_k,
                               const float *top_p, uint64_t *rng, int T, int n) {
  ask__cu_sample_rows(ask__g.stream, ids, probs, x, temperature, top_k, top_p, rng, T, n);
}

static int ask__d_mem_info(size_t *free_bytes, size_t *total_bytes, char *err, size_t errlen) {
  *free_bytes = *total_bytes = 0;
  ask__cu_check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
  return ask__take(err, errlen);
}

/* A failed capture reports (and clears) its failure here, so the caller's
 * direct run of the same ops is not skipped. */
static int ask__d_graph_capture(void **graph, void (*fn)(void *ud), void *ud, char *err,
                                size_t errlen) {
  ask__graph_capture(ask__g.stream, graph, fn, ud);
  return ask__take(err, errlen);
}

static int ask__d_graph_launch(void *graph, char *err, size_t errlen) {
  ask__graph_launch(ask__g.stream, graph);
  return ask__take(err, errlen);
}

static void ask__d_graph_free(void *graph) { ask__graph_free(ask__g.stream, graph); }

static const char *ask__d_describe(void) {
  char dec[112];
  if (ask__cu_attn_dec < 0)
    snprintf(dec, sizeof dec, "up to %d rows%s", ask__pg_dec_rows(1),
             ask__cu_attn_early ? "" : " with at most 2 kv heads");
  else
    snprintf(dec, sizeof dec, "up to %d rows", ask__cu_attn_dec);
  if (ask__cu_attn_early)
    snprintf(dec + strlen(dec), sizeof dec - strlen(dec), ", cache read before the wait");
  char parts[48];
  if (ask__cu_split_kb > 0)
    snprintf(parts, sizeof parts, "%d KB", ask__cu_split_kb);
  else
    snprintf(parts, sizeof parts, "%d keys", ask__cu_split_min);
  snprintf(ask__g.desc, sizeof ask__g.desc,
           "%s, matrix-vector kernel up to %d rows and N < %d (one row: %s%s%s), "
           "fused norm up to %d rows, fused glu %s, fused rope %s, fused gate %s, attention "
           "parts of %s at least, decode attention kernel %s, chained "
           "products %s%s%s, programmatic dependent launch %s%s",
           ask__g.name, ask__g.gemv_rows, ask__g.gemv_max_n,
           ask__cu_gemv_pw > 0 ? "persistent" : "a block per rows",
           ask__cu_gemv_pw > 0 && ask__cu_pw_early == 1 ? ", first weights before the wait"
           : ask__cu_gemv_pw > 0 && ask__cu_pw_early == 2
               ? ", first weights before the wait after the attention"
               : "",
           ask__cu_gemv_pw > 0 && ask__cu_pw_umax < 8 ? ", short steps" : "",
           ask__g.fuse_rows,
           ask__g.fuse_glu ? "on" : "off", ask__g.fuse_rope ? "on" : "off",
           ask__g.fuse_gate ? "on" : "off", parts, dec,
           ask__g.chain ? "on" : ask__g.chain_ok || !ask__g.chain_probed ? "off" : "off: ",
           ask__g.chain && ask__cu_chain_coop ? " (cooperative)" : "",
           ask__g.chain || ask__g.chain_ok || !ask__g.chain_probed ? "" : ask__g.chain_why,
           ask__cu_pdl ? "on" : "off: ", ask__cu_pdl ? "" : ask__g.pdl_why);
  return ask__g.desc;
}

static const ask_dev_t ask__cuda_dev = {
    .alloc = ask__d_alloc,
    .free = ask__d_free,
    .copy = ask__d_copy,
    .sync = ask__d_sync,
    .host_alloc = ask__d_host_alloc,
    .host_free = ask__d_host_free,
    .mark = ask__d_mark,
    .wait_mark = ask__d_wait_mark,
    .matmul_bf16 = ask__d_matmul_bf16,
    .embedding_bf16 = ask__d_embedding_bf16,
    .add_rmsnorm = ask__d_add_rmsnorm,
    .rope_kv = ask__d_rope_kv,
    .attention_paged = ask__d_attention_paged,
    .attention_prefill = ask__d_attention_prefill,
    .glu_rows = ask__d_glu_rows,
    .norm_matmul_bf16 = ask__d_norm_matmul_bf16,
    .norm_matmul_rope_kv = ask__d_norm_matmul_rope_kv,
    .norm_matmul_glu = ask__d_norm_matmul_glu,
    .glu_matmul_bf16 = ask__d_glu_matmul_bf16,
    .norm_matmul_mlp = ask__d_norm_matmul_mlp,
    .gemv_chain = ask__d_gemv_chain,
    .argmax_rows = ask__d_argmax_rows,
    .sample_rows = ask__d_sample_rows,
    .mem_info = ask__d_mem_info,
    .graph_capture = ask__d_graph_capture,
    .graph_launch = ask__d_graph_launch,
    .graph_free = ask__d_graph_free,
    .describe = ask__d_describe,
};

/* ---- ask_ops_t ------------------------------------------------------------ */

static void ask__o_embedding(float *out, const float *table, const int32_t *ids, int T, int C,
                             float scale) {
  ask__cu_embedding(ask__g.stream, out, table, NULL, ids, NULL, T, C, scale);
}

static void ask__o_rmsnorm(float *out, const float *x, const float *w, int T, int C, float eps,
                           float w_offset) {
  /* With r NULL the kernel only reads x. */
  ask__cu_rmsnorm(ask__g.stream, out, (float *)(uintptr_t)x, NULL, w, T, C, eps, w_offset);
}

static void ask__o_layernorm(float *out, const float *x, const float *w, const float *b, int T,
                             int C, float eps) {
  ask__cu_layernorm(ask__g.stream, out, x, w, b, T, C, eps);
}

static void ask__o_matmul(float *out, const float *x, const float *w, const float *bias, int T,
                          int K, int N) {
  ask__gemm(ask__g.stream, 0, out, x, w, bias, T, K, N);
}

static void ask__o_rope(float *x, const int32_t *pos, const float *inv_freq, int T, int nh, int D,
                        int stride) {
  ask__cu_rope_kv(ask__g.stream, x, NULL, NULL, pos, NULL, inv_freq, T, nh, 0, D, stride);
}

/* Splits along the sequence: about 256 keys per split, at most 64, and only
 * as many as the op's scratch (T*L floats) holds partial rows for
 * (T*nh*(D+2) floats each split): long contexts always fit. */
static void ask__o_attention(float *out, float *scratch, const float *q, const float *k,
                             const float *v, const int32_t *key_mask, int T, int L, int nh,
                             int nkv, int D, int kv_stride, float scale, int causal) {
  long fit = (long)L / ((long)nh * (D + 2)), nsplit = (L + 255) / 256;
  if (nsplit > 64)
    nsplit = 64;
  if (nsplit > fit)
    nsplit = fit;
  ask__cu_attention(ask__g.stream, out, scratch, nsplit > 1 ? (int)nsplit : 1, q, k, v, key_mask,
                    T, L, nh, nkv, D, kv_stride, scale, causal);
}

static void ask__o_glu(float *out, const float *gate, const float *up, size_t n, int act) {
  ask__cu_glu(ask__g.stream, out, gate, up, n, act);
}

static void ask__o_activate(float *out, const float *x, size_t n, int act) {
  ask__cu_glu(ask__g.stream, out, x, NULL, n, act);
}

static void ask__o_softmax(float *out, const float *x, int T, int N) {
  ask__cu_softmax(ask__g.stream, out, x, T, N);
}

static void ask__o_add(float *out, const float *a, const float *b, size_t n) {
  ask__cu_add(ask__g.stream, out, a, b, n);
}

/* Host-facing: waits for the id. On a failure returns 0; sync() says why. */
static int ask__o_argmax(const float *x, int n) {
  int32_t id = 0;
  ask__cu_argmax_rows(ask__g.stream, (int32_t *)ask__g.small, x, 1, n);
  if (!ask__cu_failed() &&
      !ask__cu_check(cudaMemcpyAsync(&id, ask__g.small, sizeof id, cudaMemcpyDeviceToHost,
                                     ask__g.stream),
                     "cudaMemcpyAsync (argmax)"))
    ask__cu_check(cudaStreamSynchronize(ask__g.stream), "cudaStreamSynchronize (argmax)");
  return ask__cu_failed() ? 0 : id;
}

/* The device copy of one host-facing sample call (in ask__g.small). */
struct ask__sample_par {
  uint64_t rng;             /* generator state, updated by the kernel */
  float temperature, top_p; /* as the sample op */
  int32_t top_k, id;        /* id: the result */
};

/* Host-facing sample: rng stays a host pointer; w and idx are unused. */
static int ask__o_sample(float *probs, double *w, int32_t *idx, const float *x, int n,
                         float temperature, int top_k, float top_p, uint64_t *rng) {
  struct ask__sample_par par = {*rng, temperature, top_p, top_k, 0};
  char *d = ask__g.small;
  cudaStream_t s = ask__g.stream;
  (void)w;
  (void)idx;
  if (ask__cu_failed() ||
      ask__cu_check(cudaMemcpyAsync(d, &par, sizeof par, cudaMemcpyHostToDevice, s),
                    "cudaMemcpyAsync (sample)"))
    return 0;
  ask__cu_sample_rows(s, (int32_t *)(d + offsetof(struct ask__sample_par, id)), probs, x,
                      (const float *)(d + offsetof(struct ask__sample_par, temperature)),
                      (const int32_t *)(d + offsetof(struct ask__sample_par, top_k)),
                      (const float *)(d + offsetof(struct ask__sample_par, top_p)), (uint64_t *)d, 1,
                      n);
  if (ask__cu_failed() ||
      ask__cu_check(cudaMemcpyAsync(&par, d, sizeof par, cudaMemcpyDeviceToHost, s),
                    "cudaMemcpyAsync (sample)") ||
      ask__cu_check(cudaStreamSynchronize(s), "cudaStreamSynchronize (sample)"))
    return 0;
  *rng = par.rng;
  return par.id;
}

static const ask_ops_t ask__cuda_ops = {
    .name = "cuda",
    .embedding = ask__o_embedding,
    .rmsnorm = ask__o_rmsnorm,
    .layernorm = ask__o_layernorm,
    .matmul = ask__o_matmul,
    .rope = ask__o_rope,
    .attention = ask__o_attention,
    .glu = ask__o_glu,
    .activate = ask__o_activate,
    .softmax = ask__o_softmax,
    .add = ask__o_add,
    .argmax = ask__o_argmax,
    .sample = ask__o_sample,
    .dev = &ask__cuda_dev,
};

const ask_ops_t *ask_cuda_ops(void) {
  pthread_once(&ask__once, ask__init);
  return ask__g.ok ? &ask__cuda_ops : NULL;
}

const char *ask_cuda_unavailable(void) {
  pthread_once(&ask__once, ask__init);
  return ask__g.ok ? "" : ask__g.why;
}

int ask_cuda_set_gemv_rows(int rows) {
  int old = ask__g.gemv_rows;
  ask__g.gemv_rows = rows < 0 ? 0 : rows > 16 ? 16 : rows;
  return old;
}

int ask_cuda_set_fuse_rows(int rows) {
  int old = ask__g.fuse_rows;
  ask__g.fuse_rows = rows < 0 ? 0 : rows > 16 ? 16 : rows;
  return old;
}

size_t ask_cuda_set_gemv_max_bytes(size_t bytes) {
  size_t old = ask__g.gemv_max_bytes;
  ask__g.gemv_max_bytes = bytes > 0 ? bytes : 1;
  return old;
}

int ask_cuda_set_gemv_max_n(int n) {
  int old = ask__g.gemv_max_n;
  ask__g.gemv_max_n = n > 0 ? n : 1;
  return old;
}

int ask_cuda_set_fuse_glu(int on) {
  int old = ask__g.fuse_glu;
  ask__g.fuse_glu = on != 0;
  return old;
}

int ask_cuda_set_gemv_pw(int blocks) {
  int old = ask__cu_gemv_pw;
  ask__cu_gemv_pw = blocks < 0 ? 0 : blocks > 2 ? 2 : blocks;
  return old;
}

int ask_cuda_set_fuse_rope(int on) {
  int old = ask__g.fuse_rope;
  ask__g.fuse_rope = on != 0;
  return old;
}

int ask_cuda_set_fuse_gate(int on) {
  int old = ask__g.fuse_gate;
  ask__g.fuse_gate = on != 0;
  return old;
}

int ask_cuda_set_attn_decode(int rows) {
  int old = ask__cu_attn_dec;
  ask__cu_attn_dec = rows < 0 ? -1 : rows;
  return old;
}

int ask_cuda_set_pw_early(int on) {
  int old = ask__cu_pw_early;
  ask__cu_pw_early = on == 2 ? 2 : on != 0;
  return old;
}

int ask_cuda_set_attn_early(int on) {
  int old = ask__cu_attn_early;
  ask__cu_attn_early = on != 0;
  return old;
}

int ask_cuda_set_mlp_warps(int warps) {
  int old = ask__cu_mlp_warps;
  ask__cu_mlp_warps = warps == 16 ? 16 : 8;
  return old;
}

int ask_cuda_set_argmax_parts(int parts) {
  int old = ask__cu_argmax_parts;
  ask__cu_argmax_parts = parts > 0 ? parts : -1;
  return old;
}

int ask_cuda_set_chain(int on) {
  pthread_once(&ask__once, ask__init);
  int old = ask__g.chain;
  if (on && !ask__g.chain_probed && ask__g.ok)
    ask__chain_probe();
  ask__g.chain = on && ask__g.chain_ok;
  return old;
}

const char *ask_cuda_chain_state(void) {
  pthread_once(&ask__once, ask__init);
  return ask__g.chain      ? "on"
         : !ask__g.chain_probed ? "off (not probed)"
         : ask__g.chain_ok ? "off"
                           : ask__g.chain_why;
}

int ask_cuda_set_split_min(int keys) {
  int old = ask__cu_split_min;
  ask__cu_split_min = keys > 0 ? keys : 1;
  return old;
}

int ask_cuda_set_split_kb(int kb) {
  int old = ask__cu_split_kb;
  ask__cu_split_kb = kb > 0 ? kb : 0;
  return old;
}

int ask_cuda_plan_count(void) { return ask__gemm_plans(); }

int ask_cuda_set_pdl(int on) {
  pthread_once(&ask__once, ask__init); /* or the probe would override this later */
  int old = ask__cu_pdl;
  ask__cu_pdl = on && ask__g.pdl_ok;
  if (!ask__cu_pdl && ask__g.pdl_why[0] == '\0')
    snprintf(ask__g.pdl_why, sizeof ask__g.pdl_why, "turned off (ask_cuda_set_pdl)");
  else if (ask__cu_pdl)
    ask__g.pdl_why[0] = '\0';
  return old;
}

const char *ask_cuda_pdl_state(void) {
  pthread_once(&ask__once, ask__init);
  return ask__cu_pdl ? "on" : ask__g.pdl_why;
}

const char *ask_cuda_device_name(void) {
  pthread_once(&ask__once, ask__init);
  return ask__g.name;
}

/* emu_runtime.cc — the CUDA runtime API of tests/cudaemu on host memory:
 * device memory, copies and sets, streams, stream capture and graphs, the
 * device's properties. Kernels themselves run in cudaemu.cc.
 *
 * Device memory is one arena (CUDAEMU_DEVICE_MEM bytes, default 1 GiB,
 * reserved without being touched) that cudaMalloc carves first-fit in
 * 256-byte units with 256 bytes of gap after each allocation, filling the
 * first 64 MiB of each with 0xff bytes (NaN as f32 or bf16: code that
 * assumes cudaMalloc zeroes shows). Outside kernels, copies, sets and
 * library work (ask_emu_enqueue) the arena is PROT_NONE, so host code that
 * dereferences a device pointer faults and the fault handler says so; in
 * a programmatic dependent launch it is also guarded before the wait (it
 * is an ask_emu_global region). In AddressSanitizer builds there is no
 * mprotect (ASan owns the fault handler); the gaps and freed allocations
 * are poisoned instead, so a kernel that reads past its buffer is caught.
 *
 * Copies check their direction against the pointers (cudaMemcpyHostToDevice
 * must go from outside the arena into one live allocation, ...): a swapped
 * pair of arguments fails with cudaErrorInvalidValue, as it would corrupt
 * memory on the GPU.
 *
 * Every operation completes before its call returns, so there is nothing to
 * wait for. Capture is real: between cudaStreamBeginCapture and
 * cudaStreamEndCapture a stream records its launches, copies, sets and
 * library work into a graph instead of running them; cudaGraphLaunch runs
 * the instantiated copy (a copy reads its source when the graph runs, as
 * on the GPU). What CUDA refuses during a capture is refused, with
 * cudaErrorStreamCaptureUnsupported, and invalidates the capture (its end
 * returns cudaErrorStreamCaptureInvalidated): synchronising the capturing
 * stream, and, from a thread whose capture mode is not relaxed
 * (cudaThreadExchangeStreamCaptureMode) while it captures in global or
 * thread-local mode (or any thread captures in global mode and this
 * thread's mode is global), cudaMalloc, cudaFree, cudaMemcpy, cudaMemset,
 * cudaStreamSynchronize and cudaDeviceSynchronize.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <map>
#include <mutex>
#include <vector>

#include "cudaemu.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#define ASK_EMU_RT_ASAN 1
#endif

namespace ask_emu {
namespace {

/* One recorded operation of a graph. */
struct node {
  enum { KERNEL, COPY, SET, HOST } kind;
  kernel_body *body; /* KERNEL: owned */
  dim3 grid, block;
  size_t smem;
  const char *name, *file;
  int line, pdl;
  const void *fn;
  void *dst; /* COPY, SET */
  const void *src;
  size_t bytes;
  int value;
  enum cudaMemcpyKind dir;
  void (*host)(void *); /* HOST */
  std::vector<unsigned char> arg;
};

struct nodes {
  std::vector<node> v;
  nodes() = default;
  nodes(const nodes &o) : v(o.v) {
    for (node &n : v)
      if (n.body != nullptr)
        n.body = n.body->clone();
  }
  nodes &operator=(const nodes &) = delete;
  ~nodes() {
    for (node &n : v)
      delete n.body;
  }
};

} /* namespace */
} /* namespace ask_emu */

struct CUgraph_st : ask_emu::nodes {};
struct CUgraphExec_st : ask_emu::nodes {
  explicit CUgraphExec_st(const CUgraph_st &g) : ask_emu::nodes(g) {}
};
struct CUstream_st {
  int capturing, invalid;
  enum cudaStreamCaptureMode mode;
  pthread_t owner;
  CUgraph_st *graph;
};

namespace ask_emu {
namespace {

/* ---- the arena ---- */

const size_t UNIT = 256, GAP = 256, FILL_MAX = (size_t)64 << 20, HUGE = (size_t)2 << 20;

struct arena_t {
  char *base;
  size_t size, used;
  size_t hw; /* [base, base + hw) has held allocations: the span to (un)protect */
  std::map<size_t, size_t> free_; /* offset -> bytes */
  std::map<size_t, size_t> live;  /* offset -> bytes asked for */
  std::map<size_t, size_t> held;  /* offset -> bytes reserved (with the gap) */
  int depth;                      /* device_access nesting */
};
arena_t g_arena;
std::recursive_mutex g_mu;

size_t env_bytes(void) {
  const char *e = getenv("CUDAEMU_DEVICE_MEM");
  if (e == NULL || e[0] == '\0')
    return (size_t)1 << 30;
  char *end;
  double v = strtod(e, &end);
  if (*end == 'K' || *end == 'k')
    v *= 1024;
  else if (*end == 'M' || *end == 'm')
    v *= 1048576;
  else if (*end == 'G' || *end == 'g')
    v *= 1073741824.0;
  return v < 1048576 ? (size_t)1048576 : (size_t)v;
}

/* The arena, made on first use; NULL base if it could not be reserved. */
arena_t &arena() {
  if (g_arena.base != NULL || g_arena.size != 0)
    return g_arena;
  init(); /* the fault handler names host accesses */
  size_t n = (env_bytes() + HUGE - 1) & ~(HUGE - 1);
#ifdef ASK_EMU_RT_ASAN
  int prot = PROT_READ | PROT_WRITE;
#else
  int prot = PROT_NONE;
#endif
  /* 2 MiB aligned, in transparent huge pages where the kernel gives them:
   * mprotect's cost grows with the page-table entries it changes */
  void *m = mmap(NULL, n + HUGE, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  g_arena.size = n;
  if (m == MAP_FAILED) {
    fprintf(stderr, "cudaemu: cannot reserve %zu bytes of device memory\n", n);
    return g_arena;
  }
  g_arena.base = (char *)(((uintptr_t)m + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
#ifdef MADV_HUGEPAGE
  madvise(g_arena.base, n, MADV_HUGEPAGE);
#endif
  g_arena.free_[0] = n;
  return g_arena;
}

void protect(int accessible) {
#ifndef ASK_EMU_RT_ASAN
  /* only the span allocations have reached: the rest was never accessible
   * (mprotect's cost grows with the span) */
  if (g_arena.hw > 0)
    mprotect(g_arena.base, g_arena.hw, accessible ? PROT_READ | PROT_WRITE : PROT_NONE);
#else
  (void)accessible;
#endif
}

/* The live allocation holding [p, p + bytes), or -1. */
long live_at(const void *p, size_t bytes) {
  arena_t &a = g_arena;
  if (a.base == NULL || (const char *)p < a.base || (const char *)p >= a.base + a.size)
    return -1;
  size_t off = (size_t)((const char *)p - a.base);
  auto it = a.live.upper_bound(off);
  if (it == a.live.begin())
    return -1;
  --it;
  if (off + bytes > it->first + it->second || (bytes == 0 && off > it->first + it->second))
    return -1;
  return (long)it->first;
}

int in_arena(const void *p) {
  return g_arena.base != NULL && (const char *)p >= g_arena.base &&
         (const char *)p < g_arena.base + g_arena.size;
}

/* ---- capture ---- */

thread_local enum cudaStreamCaptureMode t_mode = cudaStreamCaptureModeGlobal;
std::vector<CUstream_st *> g_captures; /* streams being captured */

void invalidate(CUstream_st *s, const char *what) {
  char msg[256];
  s->invalid = 1;
  snprintf(msg, sizeof msg,
           "cudaemu: %s during a stream capture: not permitted (the capture is invalidated)",
           what);
  record_error(cudaErrorStreamCaptureUnsupported, msg);
}

/* Whether `what` (a potentially unsafe call) is refused on this thread now;
 * if so, invalidates the captures that refuse it. */
bool prohibited(const char *what) {
  if (t_mode == cudaStreamCaptureModeRelaxed)
    return false;
  bool no = false;
  pthread_t self = pthread_self();
  for (CUstream_st *s : g_captures) {
    bool mine = pthread_equal(s->owner, self) != 0;
    if ((mine && s->mode != cudaStreamCaptureModeRelaxed) ||
        (!mine && s->mode == cudaStreamCaptureModeGlobal &&
         t_mode == cudaStreamCaptureModeGlobal)) {
      invalidate(s, what);
      no = true;
    }
  }
  return no;
}

bool capturing(cudaStream_t s) { return s != NULL && s->capturing; }

cudaError_t check_copy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
  int d = live_at(dst, bytes) >= 0, sd = live_at(src, bytes) >= 0;
  int dh = !in_arena(dst), sh = !in_arena(src);
  int ok = kind == cudaMemcpyHostToDevice   ? d && sh
           : kind == cudaMemcpyDeviceToHost ? dh && sd
           : kind == cudaMemcpyDeviceToDevice ? d && sd
           : kind == cudaMemcpyHostToHost     ? dh && sh
                                              : (d || dh) && (sd || sh);
  if (bytes == 0 || ok)
    return cudaSuccess;
  char msg[256];
  snprintf(msg, sizeof msg,
           "cudaemu: cudaMemcpy of %zu bytes, kind %d, from %p (%s) to %p (%s): the pointers do "
           "not match the direction",
           bytes, (int)kind, src, sd ? "device" : sh ? "host" : "not a live allocation", dst,
           d ? "device" : dh ? "host" : "not a live allocation");
  record_error(cudaErrorInvalidValue, msg);
  return cudaErrorInvalidValue;
}

cudaError_t check_set(void *p, size_t bytes) {
  if (bytes == 0 || live_at(p, bytes) >= 0)
    return cudaSuccess;
  char msg[160];
  snprintf(msg, sizeof msg, "cudaemu: cudaMemset of %zu bytes at %p: not device memory", bytes,
           p);
  record_error(cudaErrorInvalidValue, msg);
  return cudaErrorInvalidValue;
}

cudaError_t check_node(const node &n) {
  return n.kind == node::COPY  ? check_copy(n.dst, n.src, n.bytes, n.dir)
         : n.kind == node::SET ? check_set(n.dst, n.bytes)
                               : cudaSuccess;
}

/* Runs a copy, set or library node now (re-checking a copy or set: what
 * a graph recorded may have been freed since); returns its error. */
cudaError_t run_node(const node &n) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  cudaError_t e = check_node(n);
  if (e != cudaSuccess)
    return e;
  device_access(1);
  if (n.kind == node::COPY)
    memmove(n.dst, n.src, n.bytes);
  else if (n.kind == node::SET)
    memset(n.dst, n.value, n.bytes);
  else
    n.host((void *)n.arg.data());
  device_access(0);
  return cudaSuccess;
}

/* A copy, set or library node queued on s: run now, or recorded while s is
 * being captured (where a refused one invalidates the capture). */
cudaError_t submit(cudaStream_t s, node &&n) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (!capturing(s))
    return run_node(n);
  cudaError_t e = check_node(n);
  if (e != cudaSuccess) {
    s->invalid = 1;
    return e;
  }
  s->graph->v.push_back(std::move(n));
  return cudaSuccess;
}

cudaError_t copy_on(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                    cudaStream_t s) {
  node n{};
  n.kind = node::COPY;
  n.dst = dst;
  n.src = src;
  n.bytes = bytes;
  n.dir = kind;
  return submit(s, std::move(n));
}

cudaError_t set_on(void *p, int v, size_t bytes, cudaStream_t s) {
  node n{};
  n.kind = node::SET;
  n.dst = p;
  n.bytes = bytes;
  n.value = v;
  return submit(s, std::move(n));
}

} /* namespace */

bool capture_launch(cudaStream_t s, const kernel_body *body, dim3 grid, dim3 block, size_t smem,
                    const char *name, const char *file, int line, int pdl, const void *fn) {
  if (!capturing(s))
    return false;
  node n{};
  n.kind = node::KERNEL;
  n.body = body->clone();
  n.grid = grid;
  n.block = block;
  n.smem = smem;
  n.name = name;
  n.file = file;
  n.line = line;
  n.pdl = pdl;
  n.fn = fn;
  s->graph->v.push_back(std::move(n));
  return true;
}

void device_access(int on) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (on) {
    if (g_arena.depth++ == 0)
      protect(1);
  } else if (g_arena.depth > 0 && --g_arena.depth == 0) {
    protect(0);
  }
}

int host_fault(const void *addr) {
#ifdef ASK_EMU_RT_ASAN
  (void)addr;
  return 0;
#else
  return g_arena.depth == 0 && in_arena(addr);
#endif
}

} /* namespace ask_emu */

using namespace ask_emu;

extern "C" {

cudaError_t cudaMalloc(void **p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  *p = NULL;
  if (prohibited("cudaMalloc"))
    return cudaErrorStreamCaptureUnsupported;
  arena_t &a = arena();
  if (bytes == 0)
    return cudaSuccess;
  size_t want = bytes > a.size ? a.size + 1 : ((bytes + UNIT - 1) & ~(UNIT - 1)) + GAP;
  for (auto it = a.free_.begin(); a.base != NULL && it != a.free_.end(); ++it) {
    if (it->second < want)
      continue;
    size_t off = it->first, left = it->second - want;
    a.free_.erase(it);
    if (left > 0)
      a.free_[off + want] = left;
    a.live[off] = bytes;
    a.held[off] = want;
    a.used += want;
    if (off + want > a.hw) { /* the span grows (outside any launch) */
      size_t hw = (off + want + HUGE - 1) & ~(HUGE - 1);
      hw = hw < a.size ? hw : a.size;
#ifndef ASK_EMU_RT_ASAN
      if (a.hw > 0)
        ask_emu_global(a.base, a.hw, 0);
      ask_emu_global(a.base, hw, 1); /* guarded before griddepcontrol.wait too */
#endif
      a.hw = hw;
      if (a.depth > 0)
        protect(1); /* a kernel runs on another thread: the new span is accessible too */
    }
    char *q = a.base + off;
    device_access(1);
#ifdef ASK_EMU_RT_ASAN
    __asan_unpoison_memory_region(q, bytes);
    __asan_poison_memory_region(q + bytes, want - bytes);
#endif
    memset(q, 0xff, bytes < FILL_MAX ? bytes : FILL_MAX);
    device_access(0);
    *p = q;
    return cudaSuccess;
  }
  record_error(cudaErrorMemoryAllocation, "cudaemu: cudaMalloc: out of device memory");
  return cudaErrorMemoryAllocation; /* and pending for cudaGetLastError, as CUDA */
}

cudaError_t cudaFree(void *p) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (prohibited("cudaFree"))
    return cudaErrorStreamCaptureUnsupported;
  if (p == NULL)
    return cudaSuccess;
  arena_t &a = g_arena;
  long off = live_at(p, 0);
  if (off < 0 || a.base + off != (char *)p) {
    char msg[128];
    snprintf(msg, sizeof msg, "cudaemu: cudaFree(%p): not a live allocation", p);
    record_error(cudaErrorInvalidValue, msg);
    return cudaErrorInvalidValue;
  }
  size_t o = (size_t)off, n = a.held[o];
  a.live.erase(o);
  a.held.erase(o);
  a.used -= n;
#ifdef ASK_EMU_RT_ASAN
  __asan_poison_memory_region(p, n);
#endif
  auto next = a.free_.lower_bound(o);
  if (next != a.free_.end() && next->first == o + n) { /* merge with the block after */
    n += next->second;
    next = a.free_.erase(next);
  }
  if (next != a.free_.begin()) { /* and the one before */
    auto prev = std::prev(next);
    if (prev->first + prev->second == o) {
      prev->second += n;
      return cudaSuccess;
    }
  }
  a.free_[o] = n;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  arena_t &a = arena();
  *free_bytes = a.base != NULL ? a.size - a.used : 0;
  *total_bytes = a.size;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
  if (prohibited("cudaMemcpy"))
    return cudaErrorStreamCaptureUnsupported;
  return copy_on(dst, src, bytes, kind, NULL);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t s) {
  return copy_on(dst, src, bytes, kind, s);
}

cudaError_t cudaMemset(void *p, int v, size_t bytes) {
  if (prohibited("cudaMemset"))
    return cudaErrorStreamCaptureUnsupported;
  return set_on(p, v, bytes, NULL);
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s) {
  return set_on(p, v, bytes, s);
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) {
  *s = new CUstream_st{};
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (s == NULL)
    return cudaErrorInvalidResourceHandle;
  if (s->capturing) { /* CUDA ends the capture with the stream */
    for (size_t i = 0; i < g_captures.size(); i++)
      if (g_captures[i] == s) {
        g_captures.erase(g_captures.begin() + (long)i);
        break;
      }
    delete s->graph;
  }
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (capturing(s)) {
    invalidate(s, "cudaStreamSynchronize of the capturing stream");
    return cudaErrorStreamCaptureUnsupported;
  }
  if (prohibited("cudaStreamSynchronize"))
    return cudaErrorStreamCaptureUnsupported;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (prohibited("cudaDeviceSynchronize"))
    return cudaErrorStreamCaptureUnsupported;
  return cudaSuccess;
}

/* CUDAEMU_DEVICES devices (default 1), of which CUDA_VISIBLE_DEVICES, when
 * set, leaves the ones it names, up to the first that does not exist (as
 * CUDA: "" or "-1" hides them all). All visible devices share the arena. */
cudaError_t cudaGetDeviceCount(int *n) {
  const char *e = getenv("CUDAEMU_DEVICES"), *v = getenv("CUDA_VISIBLE_DEVICES");
  int have = e != NULL && atoi(e) >= 0 ? atoi(e) : 1, seen = 0;
  if (v != NULL) {
    const char *p = v;
    while (*p != '\0') {
      char *end;
      long id = strtol(p, &end, 10);
      if (end == p || id < 0 || id >= have)
        break;
      seen++;
      p = *end == ',' ? end + 1 : end;
      if (*end != ',' && *end != '\0')
        break;
    }
    have = seen;
  }
  *n = have;
  return have > 0 ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t cudaGetDevice(int *d) {
  *d = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) {
  int n = 0;
  cudaGetDeviceCount(&n);
  return d >= 0 && d < n ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
  int n = 0;
  cudaGetDeviceCount(&n);
  if (device < 0 || device >= n)
    return cudaErrorInvalidDevice;
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  memset(prop, 0, sizeof *prop);
  snprintf(prop->name, sizeof prop->name, "cudaemu (H100 stand-in on the CPU)");
  prop->totalGlobalMem = arena().size;
  prop->sharedMemPerBlock = 48 << 10;
  prop->sharedMemPerBlockOptin = ASK_EMU_SMEM_OPTIN;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (s == NULL) {
    record_error(cudaErrorStreamCaptureUnsupported,
                 "cudaemu: cudaStreamBeginCapture: the legacy stream cannot be captured");
    return cudaErrorStreamCaptureUnsupported;
  }
  if (s->capturing)
    return cudaErrorIllegalState;
  s->capturing = 1;
  s->invalid = 0;
  s->mode = mode;
  s->owner = pthread_self();
  s->graph = new CUgraph_st();
  g_captures.push_back(s);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  *graph = NULL;
  if (s == NULL || !s->capturing)
    return cudaErrorIllegalState;
  if (s->mode != cudaStreamCaptureModeRelaxed && !pthread_equal(s->owner, pthread_self()))
    return cudaErrorStreamCaptureWrongThread;
  for (size_t i = 0; i < g_captures.size(); i++)
    if (g_captures[i] == s) {
      g_captures.erase(g_captures.begin() + (long)i);
      break;
    }
  s->capturing = 0;
  if (s->invalid) {
    delete s->graph;
    s->graph = NULL;
    return cudaErrorStreamCaptureInvalidated;
  }
  *graph = s->graph;
  s->graph = NULL;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *status) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  *status = !capturing(s) ? cudaStreamCaptureStatusNone
            : s->invalid  ? cudaStreamCaptureStatusInvalidated
                          : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode) {
  enum cudaStreamCaptureMode old = t_mode;
  t_mode = *mode;
  *mode = old;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long) {
  if (graph == NULL)
    return cudaErrorInvalidValue;
  *exec = new CUgraphExec_st(*graph);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (exec == NULL)
    return cudaErrorInvalidValue;
  if (capturing(s)) {
    invalidate(s, "cudaGraphLaunch into the capturing stream (not emulated)");
    return cudaErrorStreamCaptureUnsupported;
  }
  /* An error pending from before is not this launch's: kept for the next
   * cudaGetLastError, as CUDA keeps it. */
  cudaError_t pending = cudaGetLastError();
  for (const node &n : exec->v) {
    if (n.kind == node::KERNEL)
      run_launch(n.body, n.grid, n.block, n.smem, s, n.name, n.file, n.line, n.pdl, n.fn);
    else
      (void)run_node(n); /* a refused copy or set is recorded: cudaGetLastError below */
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
      return e; /* on the GPU: the graph's later nodes do not run, sync reports it */
  }
  set_last_error(pending);
  return cudaSuccess;
}

struct CUevent_st {
  int recorded;
};

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) {
  *e = new CUevent_st{};
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (e == NULL)
    return cudaErrorInvalidResourceHandle;
  if (capturing(s)) { /* event nodes are not emulated */
    invalidate(s, "cudaEventRecord into the capturing stream (not emulated)");
    return cudaErrorStreamCaptureUnsupported;
  }
  e->recorded = 1;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  if (e == NULL)
    return cudaErrorInvalidResourceHandle;
  if (prohibited("cudaEventSynchronize"))
    return cudaErrorStreamCaptureUnsupported;
  return cudaSuccess; /* work ran when it was queued */
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned) {
  *p = malloc(bytes == 0 ? 1 : bytes);
  return *p != NULL ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFreeHost(void *p) {
  free(p);
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

cudaError_t ask_emu_enqueue(cudaStream_t s, void (*fn)(void *arg), const void *arg,
                            size_t bytes) {
  node n{};
  n.kind = node::HOST;
  n.host = fn;
  n.arg.assign((const unsigned char *)arg, (const unsigned char *)arg + bytes);
  return submit(s, std::move(n));
}

int ask_emu_is_device(const void *p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  return live_at(p, bytes) >= 0;
}

size_t ask_emu_device_used(void) {
  std::lock_guard<std::recursive_mutex> lk(g_mu);
  return g_arena.used;
}

} /* extern "C" */

/* cudaemu.cc — the block executor of tests/cudaemu: CUDA kernels compiled
 * for the host (see include/cudaemu.h) run with the semantics of a GPU
 * launch, on one OS thread.
 *
 * Every thread of a block is a fiber with its own stack, made once and
 * reused by every block and launch (on x86-64 a 6-register stack switch in
 * assembly; elsewhere swapcontext). The blocks of the grid run one after
 * another. Within a block the runnable threads take turns from a FIFO
 * (filled in ascending thread index, or descending: ask_emu_set_order); a
 * thread runs until it reaches a barrier or returns, then does the
 * bookkeeping of its arrival itself and hands over to the next runnable
 * thread directly (the scheduler's own context only starts a block and
 * learns when no thread can run):
 *   __syncthreads (and _count/_and/_or): released when every thread of the
 *     block has arrived, at the same call site;
 *   warp collectives (__shfl_*_sync, __ballot_sync, __any/__all_sync,
 *     __syncwarp, __reduce_*_sync, __match_any_sync): released when every
 *     live lane named in the mask has arrived at the same call site with the
 *     same mask; the results are computed at release from the values all
 *     lanes brought, so the exchange is exact lockstep.
 * A launch fails (the next cudaGetLastError returns cudaErrorLaunchFailure,
 * and the reason is printed and kept for ask_emu_last_error) on:
 *   a deadlock (threads wait and none can run), with who waits where;
 *   a divergent __syncthreads (threads at different call sites), or one
 *     reached after some threads of the block returned, or a thread that
 *     returns while others wait at one;
 *   a warp collective whose lanes disagree (call site, op, mask), whose mask
 *     does not name the calling lane, or that reads a lane that does not take
 *     part (absent, returned, or outside the mask: an undefined value);
 *   a misaligned vector load through __ldg/__ldcs/..., __trap();
 *   in a launch made with make_launch_pdl (a programmatic dependent launch
 *     on the GPU), a thread that returns without having passed
 *     griddepcontrol.wait (pdl_wait): on the GPU such a kernel could run
 *     before the kernels it depends on finish, or let later ones start
 *     before they do.
 * Bad launch configurations give cudaErrorInvalidConfiguration, as CUDA.
 * A SIGSEGV/SIGBUS in a kernel prints the kernel, block and thread.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "cudaemu.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace ask_emu {

unsigned char *dyn_smem;

namespace {

enum { S_READY, S_SYNC, S_WARP, S_DONE, S_DEAD };

const int MAX_THREADS = 1024;
const size_t STACK_BYTES = 256 << 10; /* per fiber, plus a guard page below */
const size_t SMEM_MAX = ASK_EMU_SMEM_OPTIN;

/* ---- stack switching ---- */

#if defined(__x86_64__) && !defined(ASK_EMU_UCONTEXT)
/* ask_emu_switch(&from_sp, to_sp): saves the callee-saved registers on the
 * current stack, stores its pointer in *from_sp, and resumes the stack to_sp
 * (made by ask_emu_switch itself, or by make_stack for a new fiber). */
extern "C" void ask_emu_switch(void **from_sp, void *to_sp);
__asm__(".text\n"
        ".globl ask_emu_switch\n"
        ".type ask_emu_switch, @function\n"
        "ask_emu_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size ask_emu_switch, .-ask_emu_switch\n");
#define ASK_EMU_ASM_SWITCH 1
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define ASK_EMU_ASAN 1
#endif

struct context {
#ifdef ASK_EMU_ASAN
  /* AddressSanitizer follows the switches through these annotations */
  void *fake_stack;
  const void *bottom;
  size_t size;
#endif
#ifdef ASK_EMU_ASM_SWITCH
  void *sp;
#else
  ucontext_t uc;
#endif
};

#ifdef ASK_EMU_ASAN
context *g_from; /* the context that switched to the running one */
inline void asan_arrived() {
  const void *bottom;
  size_t size;
  __sanitizer_finish_switch_fiber(g_from != NULL ? g_from->fake_stack : NULL, &bottom, &size);
  if (g_from != NULL && g_from->bottom == NULL) { /* the scheduler's stack */
    g_from->bottom = bottom;
    g_from->size = size;
  }
}
#endif

/* Switches from the running context to `to`; returns when switched back.
 * last: `from` is never resumed. */
inline void ctx_switch(context *from, context *to, bool last = false) {
#ifdef ASK_EMU_ASAN
  __sanitizer_start_switch_fiber(last ? NULL : &from->fake_stack, to->bottom, to->size);
  g_from = from;
#else
  (void)last;
#endif
#ifdef ASK_EMU_ASM_SWITCH
  ask_emu_switch(&from->sp, to->sp);
#else
  swapcontext(&from->uc, &to->uc);
#endif
#ifdef ASK_EMU_ASAN
  asan_arrived();
#endif
}

struct fiber {
  context ctx;
  int state;
  int lin; /* linear thread index in the block */
  uint3 tid;
  /* the barrier or collective it waits at */
  int op;
  unsigned mask;
  int arg, width, line;
  uint64_t val, result;
  const char *file, *what;
  int waited; /* passed pdl_wait (griddepcontrol.wait) in this block */
};

struct warp {
  unsigned live;    /* lanes that exist and have not returned */
  unsigned arrived; /* lanes waiting at the pending collective */
  int first;        /* linear index of its first arrival */
};

fiber *g_fib;        /* MAX_THREADS fibers */
char *g_stacks;      /* their stacks */
int g_ninit;         /* fibers [0, g_ninit) are parked, ready for a kernel */
context g_sched;     /* the scheduler, while the fibers of a block run */
fiber *g_cur;        /* the running fiber, NULL outside a launch */
/* the block being run */
int g_n, g_live, g_nsync, g_sync_first, g_sync_count;
kernel_body *g_body;
warp g_warps[MAX_THREADS / 32];
int g_queue[MAX_THREADS], g_qhead, g_qlen;
int g_order = -1; /* the schedule (ask_emu_set_order); -1: not read from the environment yet */

int g_pdl;            /* the running launch is a programmatic dependent one */
int g_trace;          /* CUDAEMU_TRACE: print every launch that runs */
int g_abort;          /* the running launch failed */
char g_msg[8192];     /* why */
char g_last_msg[8192]; /* ask_emu_last_error */
cudaError_t g_last_err = cudaSuccess;
const char *g_kname = "", *g_kfile = "";
int g_kline;
unsigned char *g_smem_end;

/* ---- global memory made inaccessible before griddepcontrol.wait ---- */
struct gregion {
  char *p;
  size_t n;
};
gregion g_regions[1024]; /* ask_emu_global */
int g_nregions;
int g_guarded;     /* the regions are PROT_NONE now */
int g_guard_block; /* the running block is (0,0,0) of a PDL launch */

void set_guard(int on) {
  if (on == g_guarded)
    return;
  for (int i = 0; i < g_nregions; i++)
    mprotect(g_regions[i].p, g_regions[i].n, on ? PROT_NONE : PROT_READ | PROT_WRITE);
  g_guarded = on;
}

/* Whether fiber f must run with global memory guarded: a thread of the
 * first warp of the first block of a PDL launch before its wait. */
struct fiber;
int wants_guard(const fiber *f);
unsigned long long g_launches, g_blocks, g_switches;

/* ---- fibers ---- */

void after_arrival(fiber *f);
inline int pop();

/* The running fiber stops (state: why) and the next runnable one goes on;
 * back to the scheduler when none can, or the launch failed. Returns when
 * this fiber is resumed. */
void fiber_yield(int state) {
  fiber *f = g_cur;
  f->state = state;
  after_arrival(f);
  int i = g_abort ? -1 : pop();
  if (i >= 0 && &g_fib[i] == f) { /* released by its own arrival */
    f->state = S_READY;
    g_switches++;
    return;
  }
  if (i >= 0) {
    fiber *n = &g_fib[i];
    g_cur = n;
    threadIdx = n->tid;
    g_switches++;
    set_guard(wants_guard(n));
    ctx_switch(&f->ctx, &n->ctx);
  } else {
    set_guard(0);
    ctx_switch(&f->ctx, &g_sched);
  }
}

int wants_guard(const fiber *f) { return g_guard_block && f->lin < 32 && !f->waited; }

[[noreturn]] void fiber_main() {
#ifdef ASK_EMU_ASAN
  asan_arrived(); /* the first arrival on this stack */
#endif
  for (;;) {
    g_body->run();
    if (g_pdl && !g_cur->waited)
      fail("returned without griddepcontrol.wait in a programmatic dependent launch: every "
           "thread must wait for the kernels before it (ask__pdl_wait) before it ends");
    fiber_yield(S_DONE);
  }
}

#ifdef ASK_EMU_ASM_SWITCH
/* A new fiber's stack: ask_emu_switch pops six registers and returns into
 * fiber_start, with the stack aligned as at a function's entry. */
extern "C" void ask_emu_fiber_start();
__asm__(".text\n"
        ".globl ask_emu_fiber_start\n"
        ".type ask_emu_fiber_start, @function\n"
        "ask_emu_fiber_start:\n"
        "  subq $8, %rsp\n" /* as after a call: rsp = 8 mod 16 at entry */
        "  jmp ask_emu_fiber_main_thunk\n"
        ".size ask_emu_fiber_start, .-ask_emu_fiber_start\n");
#endif

} /* namespace */
} /* namespace ask_emu */

extern "C" [[noreturn]] void ask_emu_fiber_main_thunk() { ask_emu::fiber_main(); }

namespace ask_emu {
namespace {

void make_fiber(int i) {
  fiber *f = &g_fib[i];
  char *lo = g_stacks + (size_t)i * (STACK_BYTES + 4096) + 4096, *hi = lo + STACK_BYTES;
#ifdef ASK_EMU_ASM_SWITCH
  /* top: 16-byte aligned; then the return address and six zero registers */
  uintptr_t top = ((uintptr_t)hi & ~(uintptr_t)15) - 16;
  void **sp = (void **)top;
  *--sp = (void *)ask_emu_fiber_start;
  for (int r = 0; r < 6; r++)
    *--sp = NULL;
  f->ctx.sp = sp;
#else
  if (getcontext(&f->ctx.uc) != 0) {
    perror("cudaemu: getcontext");
    abort();
  }
  f->ctx.uc.uc_stack.ss_sp = lo;
  f->ctx.uc.uc_stack.ss_size = STACK_BYTES;
  f->ctx.uc.uc_link = NULL;
  makecontext(&f->ctx.uc, (void (*)())fiber_main, 0);
#endif
#ifdef ASK_EMU_ASAN
  __asan_unpoison_memory_region(lo, STACK_BYTES); /* frames left by a failed launch */
  f->ctx.bottom = lo;
  f->ctx.size = STACK_BYTES;
  f->ctx.fake_stack = NULL;
#endif
  (void)hi;
  f->state = S_DONE;
}

int in_region(const void *a) {
  for (int i = 0; i < g_nregions; i++)
    if ((const char *)a >= g_regions[i].p && (const char *)a < g_regions[i].p + g_regions[i].n)
      return 1;
  return 0;
}

void segv_handler(int sig, siginfo_t *si, void *) {
  char buf[512];
  int n;
  if (g_cur != NULL && g_guarded && in_region(si->si_addr))
    n = snprintf(buf, sizeof buf,
                 "cudaemu: kernel %s (launched at %s:%d), block (%u,%u,%u), thread (%u,%u,%u): "
                 "global memory at %p touched before griddepcontrol.wait in a programmatic "
                 "dependent launch (on the GPU: a race with the kernel before it)\n",
                 g_kname, g_kfile, g_kline, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x,
                 threadIdx.y, threadIdx.z, si->si_addr);
  else if (g_cur != NULL)
    n = snprintf(buf, sizeof buf,
                 "cudaemu: %s at address %p in kernel %s (launched at %s:%d), block (%u,%u,%u), "
                 "thread (%u,%u,%u)%s\n",
                 sig == SIGBUS ? "SIGBUS" : "SIGSEGV", si->si_addr, g_kname, g_kfile, g_kline,
                 blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z,
                 (char *)si->si_addr >= g_stacks &&
                         (char *)si->si_addr < g_stacks + MAX_THREADS * (STACK_BYTES + 4096)
                     ? " (fiber stack overflow)"
                     : " (out-of-bounds access?)");
  else if (host_fault(si->si_addr))
    n = snprintf(buf, sizeof buf,
                 "cudaemu: host code touched device memory at %p (a device pointer "
                 "dereferenced outside a kernel or copy: on the GPU a crash or garbage)\n",
                 si->si_addr);
  else
    n = snprintf(buf, sizeof buf, "cudaemu: %s at address %p outside any kernel\n",
                 sig == SIGBUS ? "SIGBUS" : "SIGSEGV", si->si_addr);
  if (n > 0 && write(2, buf, (size_t)n) < 0) {
  }
  signal(sig, SIG_DFL); /* the fault repeats and ends the process */
}

void print_stats() {
  fprintf(stderr, "cudaemu: %llu launches, %llu blocks, %llu thread switches\n", g_launches,
          g_blocks, g_switches);
}

void init_once() {
  if (g_fib != NULL)
    return;
  g_fib = (fiber *)calloc(MAX_THREADS, sizeof(fiber));
  size_t bytes = (size_t)MAX_THREADS * (STACK_BYTES + 4096);
  void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  /* dynamic shared memory: its end abuts a guard page */
  void *sm = mmap(NULL, SMEM_MAX + 2 * 4096, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (g_fib == NULL || m == MAP_FAILED || sm == MAP_FAILED) {
    fprintf(stderr, "cudaemu: cannot allocate the fibers' stacks: %s\n", strerror(errno));
    abort();
  }
  g_stacks = (char *)m;
  for (int i = 0; i < MAX_THREADS; i++)
    mprotect(g_stacks + (size_t)i * (STACK_BYTES + 4096), 4096, PROT_NONE);
  g_smem_end = (unsigned char *)sm + 4096 + ((SMEM_MAX + 4095) / 4096) * 4096;
  mprotect(g_smem_end, 4096, PROT_NONE);

  static char altstack[64 << 10];
  stack_t ss;
  ss.ss_sp = altstack;
  ss.ss_size = sizeof altstack;
  ss.ss_flags = 0;
  sigaltstack(&ss, NULL);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = segv_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
#ifndef ASK_EMU_ASAN /* ASan reports faults itself */
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
#endif
  if (getenv("CUDAEMU_STATS") != NULL)
    atexit(print_stats);
  g_trace = getenv("CUDAEMU_TRACE") != NULL;
  if (g_order < 0) {
    const char *e = getenv("CUDAEMU_ORDER");
    g_order = e != NULL ? atoi(e) & 7 : 0;
  }
}

/* ---- failures ---- */

void vrecord(const fiber *f, const char *fmt, va_list ap) {
  if (g_abort)
    return; /* the first reason stands */
  int n;
  if (f != NULL)
    n = snprintf(g_msg, sizeof g_msg,
                 "cudaemu: kernel %s (launched at %s:%d), grid (%u,%u,%u) x block (%u,%u,%u), "
                 "in block (%u,%u,%u) thread (%u,%u,%u): ",
                 g_kname, g_kfile, g_kline, gridDim.x, gridDim.y, gridDim.z, blockDim.x,
                 blockDim.y, blockDim.z, blockIdx.x, blockIdx.y, blockIdx.z, f->tid.x, f->tid.y,
                 f->tid.z);
  else
    n = snprintf(g_msg, sizeof g_msg,
                 "cudaemu: kernel %s (launched at %s:%d), grid (%u,%u,%u) x block (%u,%u,%u), "
                 "in block (%u,%u,%u): ",
                 g_kname, g_kfile, g_kline, gridDim.x, gridDim.y, gridDim.z, blockDim.x,
                 blockDim.y, blockDim.z, blockIdx.x, blockIdx.y, blockIdx.z);
  if (n < 0 || (size_t)n >= sizeof g_msg)
    n = 0;
  vsnprintf(g_msg + n, sizeof g_msg - (size_t)n, fmt, ap);
  g_abort = 1;
}

/* A failure seen by the scheduler (f: the thread concerned, or NULL). */
void sched_fail(const fiber *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sched_fail(const fiber *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vrecord(f, fmt, ap);
  va_end(ap);
}

const char *op_name(int op) {
  switch (op) {
  case OP_SHFL_IDX:
    return "__shfl_sync";
  case OP_SHFL_UP:
    return "__shfl_up_sync";
  case OP_SHFL_DOWN:
    return "__shfl_down_sync";
  case OP_SHFL_XOR:
    return "__shfl_xor_sync";
  case OP_BALLOT:
    return "__ballot_sync";
  case OP_ANY:
    return "__any_sync";
  case OP_ALL:
    return "__all_sync";
  case OP_SYNCWARP:
    return "__syncwarp";
  case OP_REDUCE_ADD:
    return "__reduce_add_sync";
  case OP_REDUCE_MIN:
    return "__reduce_min_sync";
  case OP_REDUCE_MAX:
    return "__reduce_max_sync";
  case OP_MATCH_ANY:
    return "__match_any_sync";
  default:
    return "?";
  }
}

const char *tail(const char *file) { /* the file name without its directories */
  const char *s = strrchr(file, '/');
  return s != NULL ? s + 1 : file;
}

/* ---- the scheduler ---- */

inline void push(int i) { g_queue[(g_qhead + g_qlen++) % MAX_THREADS] = i; }
inline void push_front(int i) {
  g_qhead = (g_qhead + MAX_THREADS - 1) % MAX_THREADS;
  g_queue[g_qhead] = i;
  g_qlen++;
}

/* Releases the threads of [lo, hi) whose state is `st` (only the lanes in
 * `lanes` when not 0: a warp), in the order the schedule asks: ascending or
 * descending thread index (g_order bit 0); a released warp goes to the back
 * of the queue, or to the front (bit 1: it runs ahead of the other warps up
 * to its next __syncthreads). */
void release_range(int lo, int hi, int st, unsigned lanes) {
  bool desc = g_order & 1, front = lanes != 0 && (g_order & 2);
  /* pushing to the front reverses the order in which they are pushed */
  bool down = desc != front;
  for (int k = 0; k < hi - lo; k++) {
    int i = down ? hi - 1 - k : lo + k;
    fiber *f = &g_fib[i];
    if (f->state == st && (lanes == 0 || (lanes >> (i & 31) & 1u))) {
      f->state = S_READY;
      if (front)
        push_front(i);
      else
        push(i);
    }
  }
}

/* All lanes named by the pending collective of warp w have arrived: computes
 * every lane's result and releases them. */
void complete_warp(int w) {
  warp *wp = &g_warps[w];
  int base = w * 32;
  const fiber *first = &g_fib[wp->first];
  int op = first->op, width = first->width;
  unsigned arrived = wp->arrived;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    sched_fail(first, "%s at %s:%d with width %d (a power of 2 up to 32 is required)",
               op_name(op), tail(first->file), first->line, width);
    return;
  }
  uint64_t any = 0, all = 1, ballot = 0, sum = 0;
  uint64_t umin = UINT64_MAX, umax = 0;
  int64_t smin = INT64_MAX, smax = INT64_MIN;
  bool shfl = op >= OP_SHFL_IDX && op <= OP_SHFL_XOR;
  for (int l = 0; l < 32 && !shfl; l++) {
    if (!(arrived >> l & 1u))
      continue;
    uint64_t v = g_fib[base + l].val;
    any |= v != 0;
    all &= v != 0;
    ballot |= (uint64_t)(v != 0) << l;
    sum += v;
    umin = v < umin ? v : umin;
    umax = v > umax ? v : umax;
    int64_t sv = (int32_t)(uint32_t)v;
    smin = sv < smin ? sv : smin;
    smax = sv > smax ? sv : smax;
  }
  for (int l = 0; l < 32; l++) {
    if (!(arrived >> l & 1u))
      continue;
    fiber *f = &g_fib[base + l];
    int seg = l & ~(width - 1), src = l;
    switch (op) {
    case OP_SHFL_IDX:
      src = seg + (f->arg & (width - 1));
      break;
    case OP_SHFL_UP:
      src = l - (f->arg & 31);
      if (src < seg)
        src = l;
      break;
    case OP_SHFL_DOWN:
      src = l + (f->arg & 31);
      if (src >= seg + width)
        src = l;
      break;
    case OP_SHFL_XOR:
      src = l ^ (f->arg & 31);
      if (src >= seg + width)
        src = l;
      break;
    case OP_BALLOT:
      f->result = ballot;
      break;
    case OP_ANY:
      f->result = any;
      break;
    case OP_ALL:
      f->result = all;
      break;
    case OP_SYNCWARP:
      f->result = 0;
      break;
    case OP_REDUCE_ADD:
      f->result = (uint32_t)sum;
      break;
    case OP_REDUCE_MIN:
      f->result = f->arg ? (uint64_t)(uint32_t)(int32_t)smin : umin;
      break;
    case OP_REDUCE_MAX:
      f->result = f->arg ? (uint64_t)(uint32_t)(int32_t)smax : umax;
      break;
    case OP_MATCH_ANY: {
      unsigned m = 0;
      for (int k = 0; k < 32; k++)
        if ((arrived >> k & 1u) && g_fib[base + k].val == f->val)
          m |= 1u << k;
      f->result = m;
      break;
    }
    }
    if (shfl) {
      if (!(arrived >> src & 1u)) {
        const char *why = base + src >= (int)(blockDim.x * blockDim.y * blockDim.z)
                              ? "does not exist (partial warp)"
                          : !(first->mask >> src & 1u)        ? "is not in the mask"
                          : g_fib[base + src].state == S_DONE ? "has returned"
                                                              : "is not at this call";
        sched_fail(f,
                   "%s at %s:%d (mask 0x%08x): lane %d reads lane %d, which %s: the value is "
                   "undefined",
                   op_name(op), tail(first->file), first->line, first->mask, l, src, why);
        return;
      }
      f->result = g_fib[base + src].val;
    }
  }
  wp->arrived = 0;
  release_range(base, base + 32, S_WARP, arrived);
}

void try_complete_warp(int w) {
  warp *wp = &g_warps[w];
  if (wp->arrived == 0)
    return;
  unsigned need = g_fib[wp->first].mask & wp->live;
  if ((wp->arrived & need) == need)
    complete_warp(w);
}

/* What every unfinished thread of the block waits for. */
void report_deadlock(int n, int live) {
  char buf[6000];
  size_t len = 0;
  int nsync = 0, first_sync = -1;
  for (int i = 0; i < n; i++)
    if (g_fib[i].state == S_SYNC && nsync++ == 0)
      first_sync = i;
#define ADD(...)                                                                             \
  do {                                                                                       \
    if (len < sizeof buf - 1) {                                                              \
      int k = snprintf(buf + len, sizeof buf - len, __VA_ARGS__);                            \
      if (k > 0)                                                                             \
        len += (size_t)k < sizeof buf - len ? (size_t)k : sizeof buf - len - 1;              \
    }                                                                                        \
  } while (0)
  ADD("deadlock: %d of %d threads cannot go on (%d returned)", live, n, n - live);
  if (nsync > 0)
    ADD("; %d wait at %s (%s:%d), first thread %d", nsync, g_fib[first_sync].what,
        tail(g_fib[first_sync].file), g_fib[first_sync].line, first_sync);
  int shown = 0;
  for (int w = 0; w < (n + 31) / 32 && shown < 8; w++) {
    warp *wp = &g_warps[w];
    if (wp->arrived == 0)
      continue;
    const fiber *f = &g_fib[wp->first];
    unsigned need = f->mask & wp->live, missing = need & ~wp->arrived;
    ADD("; warp %d: lanes 0x%08x wait at %s (%s:%d, mask 0x%08x) for lanes 0x%08x", w,
        wp->arrived, op_name(f->op), tail(f->file), f->line, f->mask, missing);
    for (int l = 0; l < 32; l++)
      if (missing >> l & 1u) {
        const fiber *m = &g_fib[w * 32 + l];
        if (m->state == S_SYNC)
          ADD(" (lane %d waits at %s, %s:%d)", l, m->what, tail(m->file), m->line);
        break;
      }
    shown++;
  }
#undef ADD
  sched_fail(NULL, "%s", buf);
}

inline int pop() {
  if (g_qlen == 0)
    return -1;
  int i = g_queue[g_qhead];
  g_qhead = (g_qhead + 1) % MAX_THREADS;
  g_qlen--;
  return i;
}

inline bool same_site(const fiber *a, const fiber *b) {
  return a->line == b->line && (a->file == b->file || strcmp(a->file, b->file) == 0);
}

/* The bookkeeping of fiber f that just stopped (f->state says why): a
 * thread that returned, or arrived at __syncthreads or at a warp collective,
 * maybe releasing the others. Failures set g_abort. */
void after_arrival(fiber *f) {
  int i = f->lin, w = i >> 5, n = g_n;
  switch (f->state) {
  case S_DONE:
    g_live--;
    g_warps[w].live &= ~(1u << (i & 31));
    if (g_nsync > 0) {
      const fiber *s = &g_fib[g_sync_first];
      sched_fail(f, "returned while %d other threads wait at %s (%s:%d): a barrier in "
                    "divergent code",
                 g_nsync, s->what, tail(s->file), s->line);
      return;
    }
    try_complete_warp(w);
    break;
  case S_SYNC:
    if (g_live < n) {
      sched_fail(f, "%s (%s:%d) reached after %d threads of the block returned: a "
                    "barrier in divergent code",
                 f->what, tail(f->file), f->line, n - g_live);
      return;
    }
    if (g_nsync == 0) {
      g_sync_first = i;
    } else {
      const fiber *s = &g_fib[g_sync_first];
      if (!same_site(s, f) || s->what != f->what) {
        sched_fail(f, "divergent barrier: this thread waits at %s (%s:%d), thread %d at %s "
                      "(%s:%d)",
                   f->what, tail(f->file), f->line, g_sync_first, s->what, tail(s->file),
                   s->line);
        return;
      }
    }
    g_nsync++;
    g_sync_count += f->val != 0;
    if (g_nsync == g_live) {
      for (int k = 0; k < n; k++)
        g_fib[k].result = (uint64_t)g_sync_count;
      g_nsync = 0;
      g_sync_count = 0;
      release_range(0, n, S_SYNC, 0);
    }
    break;
  case S_WARP: {
    warp *wp = &g_warps[w];
    int lane = i & 31;
    if (!(f->mask >> lane & 1u)) {
      sched_fail(f, "%s (%s:%d) with mask 0x%08x, which does not name the calling lane %d",
                 op_name(f->op), tail(f->file), f->line, f->mask, lane);
      return;
    }
    if (wp->arrived == 0) {
      wp->first = i;
    } else {
      const fiber *s = &g_fib[wp->first];
      if (s->op != f->op || s->mask != f->mask || s->width != f->width || !same_site(s, f)) {
        sched_fail(f,
                   "divergent warp collective: lane %d is at %s (%s:%d, mask 0x%08x, width "
                   "%d), lane %d at %s (%s:%d, mask 0x%08x, width %d)",
                   lane, op_name(f->op), tail(f->file), f->line, f->mask, f->width,
                   wp->first & 31, op_name(s->op), tail(s->file), s->line, s->mask, s->width);
        return;
      }
    }
    wp->arrived |= 1u << lane;
    try_complete_warp(w);
    break;
  }
  default:
    break;
  }
}

/* Runs one block (blockIdx set); returns 0, or -1 when the launch failed. */
int run_block() {
  int bx = (int)blockDim.x, by = (int)blockDim.y;
  int n = (int)(blockDim.x * blockDim.y * blockDim.z);
  for (int i = 0; i < n; i++) {
    fiber *f = &g_fib[i];
    f->lin = i;
    f->tid = uint3{(unsigned)(i % bx), (unsigned)((i / bx) % by), (unsigned)(i / (bx * by))};
    f->state = S_DONE;
    f->waited = 0;
  }
  for (int w = 0; w < (n + 31) / 32; w++) {
    int lanes = n - w * 32 < 32 ? n - w * 32 : 32;
    g_warps[w].live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    g_warps[w].arrived = 0;
    g_warps[w].first = -1;
  }
  g_qhead = g_qlen = 0;
  release_range(0, n, S_DONE, 0);
  g_n = n;
  g_live = n;
  g_nsync = 0;
  g_sync_first = -1;
  g_sync_count = 0;
  g_blocks++;
  /* the threads run, handing over to each other, until none can */
  g_guard_block = g_pdl && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0;
  fiber *f = &g_fib[pop()];
  g_cur = f;
  threadIdx = f->tid;
  g_switches++;
  set_guard(wants_guard(f));
  ctx_switch(&g_sched, &f->ctx);
  set_guard(0);
  g_guard_block = 0;
  g_cur = NULL;
  if (g_abort)
    return -1;
  if (g_live > 0) {
    report_deadlock(n, g_live);
    return -1;
  }
  return 0;
}

void set_error(cudaError_t e, const char *msg) {
  if (g_last_err == cudaSuccess)
    g_last_err = e;
  snprintf(g_last_msg, sizeof g_last_msg, "%s", msg);
  fprintf(stderr, "%s\n", msg);
}

} /* namespace */

void record_error(cudaError_t e, const char *msg) { set_error(e, msg); }
void set_last_error(cudaError_t e) {
  if (g_last_err == cudaSuccess)
    g_last_err = e;
}
void init() { init_once(); }

/* ---- the device-side entry points ---- */

int block_sync(int pred, const char *what, const char *file, int line) {
  fiber *f = g_cur;
  if (f == NULL)
    fail("%s called outside a kernel", what);
  f->val = (uint64_t)pred;
  f->what = what;
  f->file = file;
  f->line = line;
  f->op = OP_SYNCTHREADS;
  fiber_yield(S_SYNC);
  return (int)f->result;
}

uint64_t warp_op(int op, unsigned mask, uint64_t val, int arg, int width, const char *file,
                 int line) {
  fiber *f = g_cur;
  if (f == NULL)
    fail("%s called outside a kernel", op_name(op));
  f->op = op;
  f->mask = mask;
  f->val = val;
  f->arg = arg;
  f->width = width;
  f->file = file;
  f->line = line;
  f->what = op_name(op);
  fiber_yield(S_WARP);
  return f->result;
}

void pdl_wait() {
  if (g_cur == NULL)
    fail("griddepcontrol.wait called outside a kernel");
  g_cur->waited = 1;
  set_guard(0);
}

unsigned active_mask() {
  if (g_cur == NULL)
    fail("__activemask called outside a kernel");
  return g_warps[g_cur->lin >> 5].live;
}

void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (g_cur == NULL) {
    fprintf(stderr, "cudaemu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    abort();
  }
  vrecord(g_cur, fmt, ap);
  va_end(ap);
  fiber *f = g_cur;
  f->state = S_DEAD;
  set_guard(0);
  ctx_switch(&f->ctx, &g_sched, true); /* this fiber is never resumed */
  abort();
}

void check_align(const void *p, size_t align, const char *what) {
  if (((uintptr_t)p & (align - 1)) != 0)
    fail("%s of %zu-byte aligned data at %p: misaligned address", what, align, p);
}

namespace {
/* cudaFuncSetAttribute's MaxDynamicSharedMemorySize per kernel */
struct smem_opt {
  const void *fn;
  size_t bytes;
};
smem_opt g_smem_opt[256];
int g_nsmem_opt;
const size_t SMEM_DEFAULT = 48 << 10; /* without the attribute */

size_t max_dyn_smem(const void *fn) {
  for (int i = 0; i < g_nsmem_opt; i++)
    if (g_smem_opt[i].fn == fn)
      return g_smem_opt[i].bytes;
  return SMEM_DEFAULT;
}
} /* namespace */

void set_max_dyn_smem(const void *fn, size_t bytes) {
  for (int i = 0; i < g_nsmem_opt; i++)
    if (g_smem_opt[i].fn == fn) {
      g_smem_opt[i].bytes = bytes;
      return;
    }
  if (g_nsmem_opt < 256)
    g_smem_opt[g_nsmem_opt++] = smem_opt{fn, bytes};
}

void run_launch(kernel_body *body, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                const char *name, const char *file, int line, int pdl, const void *fn) {
  char msg[512];
  init_once();
  g_launches++;
  g_pdl = pdl;
  if (fn != nullptr && smem > SMEM_DEFAULT && smem > max_dyn_smem(fn)) {
    snprintf(msg, sizeof msg,
             "cudaemu: kernel %s (launched at %s:%d): %zu bytes of dynamic shared memory, more "
             "than the 48 KiB a kernel gets without cudaFuncSetAttribute("
             "cudaFuncAttributeMaxDynamicSharedMemorySize) (allowed: %zu)",
             name, file, line, smem, max_dyn_smem(fn));
    set_error(cudaErrorInvalidValue, msg);
    return;
  }
  g_kname = name;
  g_kfile = file;
  g_kline = line;
  unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
  if (nt == 0 || nt > (unsigned long long)MAX_THREADS || block.x > 1024 || block.y > 1024 ||
      block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u ||
      grid.y > 65535 || grid.z > 65535 || smem > SMEM_MAX) {
    snprintf(msg, sizeof msg,
             "cudaemu: kernel %s (launched at %s:%d): invalid configuration grid (%u,%u,%u), "
             "block (%u,%u,%u), %zu bytes of dynamic shared memory",
             name, file, line, grid.x, grid.y, grid.z, block.x, block.y, block.z, smem);
    set_error(cudaErrorInvalidConfiguration, msg);
    return;
  }
  if (capture_launch(stream, body, grid, block, smem, name, file, line, pdl, fn))
    return; /* recorded in the stream's graph (or refused: the error is set) */
  if (g_trace)
    fprintf(stderr, "cudaemu: launch %s grid (%u,%u,%u) block (%u,%u,%u) smem %zu%s\n", name,
            grid.x, grid.y, grid.z, block.x, block.y, block.z, smem, pdl ? " pdl" : "");
  int n = (int)nt;
  while (g_ninit < n)
    make_fiber(g_ninit++);
  device_access(1);
  size_t sm = (smem + 15) & ~(size_t)15;
  dyn_smem = g_smem_end - sm;
  memset(dyn_smem, 0xff, sm); /* uninitialised shared memory reads as NaN */
  gridDim = grid;
  blockDim = block;
  g_body = body;
  g_abort = 0;
  const bool rev = (g_order & 4) != 0; /* blocks in descending order */
  for (unsigned z = 0; z < grid.z && !g_abort; z++)
    for (unsigned y = 0; y < grid.y && !g_abort; y++)
      for (unsigned x = 0; x < grid.x && !g_abort; x++) {
        blockIdx = rev ? uint3{grid.x - 1 - x, grid.y - 1 - y, grid.z - 1 - z} : uint3{x, y, z};
        run_block();
      }
  g_cur = NULL;
  device_access(0);
  if (g_abort) {
    set_error(cudaErrorLaunchFailure, g_msg);
    g_ninit = 0; /* the fibers were left mid-kernel: make them again */
    g_abort = 0;
  }
}

} /* namespace ask_emu */

/* ---- the runtime API: errors and the emulator's controls (memory, streams
 * and graphs: emu_runtime.cc) ---- */

extern "C" {

cudaError_t cudaGetLastError(void) {
  cudaError_t e = ask_emu::g_last_err;
  ask_emu::g_last_err = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) { return ask_emu::g_last_err; }

const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define C(x)                                                                                 \
  case x:                                                                                    \
    return #x;
    C(cudaSuccess)
    C(cudaErrorInvalidValue)
    C(cudaErrorMemoryAllocation)
    C(cudaErrorInitializationError)
    C(cudaErrorInvalidConfiguration)
    C(cudaErrorInvalidSymbol)
    C(cudaErrorInvalidDevicePointer)
    C(cudaErrorInvalidMemcpyDirection)
    C(cudaErrorInvalidResourceHandle)
    C(cudaErrorNotReady)
    C(cudaErrorNoDevice)
    C(cudaErrorInvalidDevice)
    C(cudaErrorNoKernelImageForDevice)
    C(cudaErrorIllegalAddress)
    C(cudaErrorLaunchOutOfResources)
    C(cudaErrorLaunchTimeout)
    C(cudaErrorAssert)
    C(cudaErrorMisalignedAddress)
    C(cudaErrorLaunchFailure)
    C(cudaErrorNotSupported)
    C(cudaErrorIllegalState)
    C(cudaErrorStreamCaptureUnsupported)
    C(cudaErrorStreamCaptureInvalidated)
    C(cudaErrorStreamCaptureWrongThread)
    C(cudaErrorUnknown)
#undef C
  }
  return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess:
    return "no error";
  case cudaErrorInvalidValue:
    return "invalid argument";
  case cudaErrorMemoryAllocation:
    return "out of memory";
  case cudaErrorInvalidConfiguration:
    return "invalid configuration argument";
  case cudaErrorLaunchFailure:
    return "unspecified launch failure (cudaemu: see ask_emu_last_error)";
  case cudaErrorMisalignedAddress:
    return "misaligned address";
  case cudaErrorIllegalAddress:
    return "an illegal memory access was encountered";
  default:
    return cudaGetErrorName(e);
  }
}

int ask_emu_set_order(int order) {
  ask_emu::init_once();
  int old = ask_emu::g_order;
  ask_emu::g_order = order & 7;
  return old;
}
const char *ask_emu_last_error(void) { return ask_emu::g_last_msg; }
void ask_emu_clear_error(void) {
  ask_emu::g_last_msg[0] = '\0';
  ask_emu::g_last_err = cudaSuccess;
}
unsigned long long ask_emu_stat_launches(void) { return ask_emu::g_launches; }
unsigned long long ask_emu_stat_blocks(void) { return ask_emu::g_blocks; }
unsigned long long ask_emu_stat_switches(void) { return ask_emu::g_switches; }
const char *ask_emu_last_kernel(void) { return ask_emu::g_kname; }

void ask_emu_global(void *p, size_t bytes, int add) {
  using namespace ask_emu;
  set_guard(0);
  if (add) {
    if (g_nregions < (int)(sizeof g_regions / sizeof g_regions[0]))
      g_regions[g_nregions++] = gregion{(char *)p, bytes};
    return;
  }
  for (int i = 0; i < g_nregions; i++)
    if (g_regions[i].p == (char *)p) {
      g_regions[i] = g_regions[--g_nregions];
      return;
    }
}

} /* extern "C" */

/* cudaemu.h — the device side of CUDA C++ for kernels run on the CPU
 * (tests/cudaemu). Included, in C++ only, by the stand-in <cuda_runtime.h>.
 *
 * Kernels are plain functions: __global__/__device__ are empty, __shared__
 * is `static` (the blocks of a launch run one after another on one OS
 * thread, so one copy of each shared array is enough), threadIdx, blockIdx,
 * blockDim and gridDim are globals that the block executor (cudaemu.cc) sets
 * before it resumes each thread. Every CUDA thread is a fiber with its own
 * stack; __syncthreads and the warp collectives (__shfl_*_sync, __ballot_sync,
 * __syncwarp, ...) park the fiber until every thread that must take part has
 * arrived, so their semantics are exact. A launch `k<<<g, b, smem, s>>>(args)`
 * is rewritten by tests/cudaemu/cu2cpp.py into
 * `::ask_emu::make_launch(&k, "k", __FILE__, __LINE__, g, b, smem, s)(args)`:
 * the arguments are converted to the kernel's parameter types once, as the
 * real launch does, and every thread gets its own copy.
 *
 * Not emulated: timing, the memory model beyond what barriers order (the
 * executor runs one thread at a time, in a fixed order between barriers;
 * ask_emu_set_order reverses it), texture/surface memory, cooperative
 * groups, tensor-core intrinsics. Device math is the host's libm (CUDA's
 * expf etc. differ by an ulp or two).
 */
#ifndef ASK_CUDAEMU_H
#define ASK_CUDAEMU_H

#ifndef __cplusplus
#error "cudaemu.h is C++: compile the transformed .cu files with a C++ compiler"
#endif

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cudaemu_api.h"

/* ---- qualifiers ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__
#define __managed__
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))

/* ---- built-in vector types ---- */
#define ASK_EMU_VEC(T, N1, N2, N3, N4, A2, A4)                                                     \
  struct N1 {                                                                                      \
    T x;                                                                                           \
  };                                                                                               \
  struct __attribute__((aligned(A2))) N2 {                                                         \
    T x, y;                                                                                        \
  };                                                                                               \
  struct N3 {                                                                                      \
    T x, y, z;                                                                                     \
  };                                                                                               \
  struct __attribute__((aligned(A4))) N4 {                                                         \
    T x, y, z, w;                                                                                  \
  };                                                                                               \
  static inline N1 make_##N1(T x) { return N1{x}; }                                                \
  static inline N2 make_##N2(T x, T y) { return N2{x, y}; }                                        \
  static inline N3 make_##N3(T x, T y, T z) { return N3{x, y, z}; }                                \
  static inline N4 make_##N4(T x, T y, T z, T w) { return N4{x, y, z, w}; }

ASK_EMU_VEC(signed char, char1, char2, char3, char4, 2, 4)
ASK_EMU_VEC(unsigned char, uchar1, uchar2, uchar3, uchar4, 2, 4)
ASK_EMU_VEC(short, short1, short2, short3, short4, 4, 8)
ASK_EMU_VEC(unsigned short, ushort1, ushort2, ushort3, ushort4, 4, 8)
ASK_EMU_VEC(int, int1, int2, int3, int4, 8, 16)
ASK_EMU_VEC(unsigned int, uint1, uint2, uint3, uint4, 8, 16)
ASK_EMU_VEC(long, long1, long2, long3, long4, 16, 16)
ASK_EMU_VEC(unsigned long, ulong1, ulong2, ulong3, ulong4, 16, 16)
ASK_EMU_VEC(long long, longlong1, longlong2, longlong3, longlong4, 16, 16)
ASK_EMU_VEC(unsigned long long, ulonglong1, ulonglong2, ulonglong3, ulonglong4, 16, 16)
ASK_EMU_VEC(float, float1, float2, float3, float4, 8, 16)
ASK_EMU_VEC(double, double1, double2, double3, double4, 16, 16)
#undef ASK_EMU_VEC

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

/* The executor's view of the running thread (cudaemu.cc sets them). */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static constexpr int warpSize = 32;

/* ---- the executor's entry points (cudaemu.cc) ---- */
namespace ask_emu {

enum {
  OP_SYNCTHREADS = 1, /* val: predicate; result: count */
  OP_SHFL_IDX,
  OP_SHFL_UP,
  OP_SHFL_DOWN,
  OP_SHFL_XOR,
  OP_BALLOT,
  OP_ANY,
  OP_ALL,
  OP_SYNCWARP,
  OP_REDUCE_ADD,
  OP_REDUCE_MIN,
  OP_REDUCE_MAX,
  OP_MATCH_ANY,
};

/* __syncthreads and its counting forms: parks the thread until every live
 * thread of the block arrives; returns how many passed a non-zero pred. */
int block_sync(int pred, const char *what, const char *file, int line);
/* A warp collective op of the calling lane with its mask, value (raw bits),
 * argument (source lane, delta, lane mask) and width; returns the raw bits
 * of its result. Checks that the lanes named in mask take part. */
uint64_t warp_op(int op, unsigned mask, uint64_t val, int arg, int width, const char *file,
                 int line);
/* __activemask: the lanes of the calling thread's warp that exist and have
 * not returned. Only an approximation of the GPU's answer (the lanes that
 * execute the call together): the emulator runs one lane at a time, and does
 * not know which lanes a divergent branch leaves out. */
unsigned active_mask();
/* griddepcontrol.wait (programmatic dependent launch): launches run one
 * after another here, so nothing to wait for; records that the thread
 * passed it (a launch made with make_launch_pdl fails when a thread
 * returns without). */
void pdl_wait();
/* Fails the running launch with a message (the test sees a launch error). */
[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Checks the alignment of a vector load or store of `bytes` at p. */
void check_align(const void *p, size_t align, const char *what);

/* The dynamic shared memory of the running launch (`extern __shared__`):
 * cu2cpp.py turns a declaration in a function into a pointer to it, one at
 * namespace scope into a dyn_array. */
extern unsigned char *dyn_smem;
template <class T> struct dyn_array {
  operator T *() const { return (T *)dyn_smem; }
  T &operator[](size_t i) const { return ((T *)dyn_smem)[i]; }
};

struct kernel_body {
  virtual void run() = 0;
  /* A heap copy (arguments included) for a graph that records the launch. */
  virtual kernel_body *clone() const = 0;
  virtual ~kernel_body() = default;
};

/* Runs body->run() for every thread of every block of the grid (or, on a
 * stream being captured, records a clone of body in its graph). */
void run_launch(kernel_body *body, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                const char *name, const char *file, int line, int pdl = 0,
                const void *fn = nullptr);
/* Between the block executor (cudaemu.cc) and the runtime API
 * (emu_runtime.cc); not for kernels or tests. */
/* On a stream being captured: records a clone of the launch in its graph
 * (or sets the error why not) and returns true; false otherwise. */
bool capture_launch(cudaStream_t s, const kernel_body *body, dim3 grid, dim3 block, size_t smem,
                    const char *name, const char *file, int line, int pdl, const void *fn);
/* Device memory accessible (1: a kernel, copy or library call runs) or not
 * (0: host code runs); a no-op in AddressSanitizer builds. */
void device_access(int on);
/* Whether a fault at addr is host code touching inaccessible device memory. */
int host_fault(const void *addr);
/* Sets the error the next cudaGetLastError returns, and prints msg. */
void record_error(cudaError_t e, const char *msg);
/* Sets it quietly (unless one is pending already). */
void set_last_error(cudaError_t e);
/* The executor's one-time set-up (fault handler, fibers). */
void init();
/* cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, v):
 * as on the GPU, a launch of k with more than 48 KiB of dynamic shared
 * memory fails unless this allowed it. */
void set_max_dyn_smem(const void *fn, size_t bytes);

template <class... P> struct launch_body final : kernel_body {
  void (*fn)(P...);
  std::tuple<std::decay_t<P>...> args;
  launch_body(void (*f)(P...), std::decay_t<P>... a) : fn(f), args(a...) {}
  void run() override { std::apply(fn, args); } /* each thread copies the arguments */
  kernel_body *clone() const override { return new launch_body(*this); }
};

template <class... P> struct launcher {
  void (*fn)(P...);
  const char *name, *file;
  int line;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  int pdl;
  void operator()(P... a) const {
    launch_body<P...> body(fn, a...);
    run_launch(&body, grid, block, smem, stream, name, file, line, pdl, (const void *)fn);
  }
};

template <class... P>
launcher<P...> make_launch(void (*fn)(P...), const char *name, const char *file, int line,
                           dim3 grid, dim3 block, size_t smem = 0, cudaStream_t s = 0) {
  return launcher<P...>{fn, name, file, line, grid, block, smem, s, 0};
}
/* The same for a programmatic dependent launch (cudaLaunchKernelEx with
 * cudaLaunchAttributeProgrammaticStreamSerialization): every thread of the
 * kernel must pass griddepcontrol.wait (pdl_wait) before it returns. */
template <class... P>
launcher<P...> make_launch_pdl(void (*fn)(P...), const char *name, const char *file, int line,
                               dim3 grid, dim3 block, size_t smem, cudaStream_t s) {
  return launcher<P...>{fn, name, file, line, grid, block, smem, s, 1};
}

template <class T> static inline uint64_t bits_of(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "warp collectives on types of at most 8 bytes");
  uint64_t b = 0;
  memcpy(&b, &v, sizeof v);
  return b;
}
template <class T> static inline T from_bits(uint64_t b) {
  T v;
  memcpy(&v, &b, sizeof v);
  return v;
}

/* Inline PTX loads and stores (cu2cpp.py translates them into these). */
static inline uint64_t ptx_load(const unsigned char *p, int size) {
  uint64_t v = 0;
  memcpy(&v, p, (size_t)size);
  return v;
}
static inline void ptx_store(unsigned char *p, int size, uint64_t v) {
  memcpy(p, &v, (size_t)size);
}
template <class T> static inline void ptx_set(T &dst, uint64_t v) {
  static_assert(sizeof(T) <= 8, "inline PTX register of at most 8 bytes");
  memcpy(&dst, &v, sizeof dst);
}

} /* namespace ask_emu */

/* ---- synchronisation ---- */
static inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
  ask_emu::block_sync(0, "__syncthreads", file, line);
}
static inline int __syncthreads_count(int p, const char *file = __builtin_FILE(),
                                      int line = __builtin_LINE()) {
  return ask_emu::block_sync(p != 0, "__syncthreads_count", file, line);
}
static inline int __syncthreads_and(int p, const char *file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
  int n = (int)(blockDim.x * blockDim.y * blockDim.z);
  return ask_emu::block_sync(p != 0, "__syncthreads_and", file, line) == n;
}
static inline int __syncthreads_or(int p, const char *file = __builtin_FILE(),
                                   int line = __builtin_LINE()) {
  return ask_emu::block_sync(p != 0, "__syncthreads_or", file, line) != 0;
}
static inline void __syncwarp(unsigned mask = 0xffffffffu, const char *file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  ask_emu::warp_op(ask_emu::OP_SYNCWARP, mask, 0, 0, 32, file, line);
}
static inline unsigned __activemask() { return ask_emu::active_mask(); }
static inline void __threadfence() {}
static inline void __threadfence_block() {}
static inline void __threadfence_system() {}
[[noreturn]] static inline void __trap() { ask_emu::fail("__trap() called"); }
[[noreturn]] static inline void __brkpt() { ask_emu::fail("__brkpt() called"); }

template <class T>
static inline T __shfl_sync(unsigned mask, T var, int src, int width = 32,
                            const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ask_emu::from_bits<T>(
      ask_emu::warp_op(ask_emu::OP_SHFL_IDX, mask, ask_emu::bits_of(var), src, width, file, line));
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                               const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ask_emu::from_bits<T>(ask_emu::warp_op(ask_emu::OP_SHFL_UP, mask, ask_emu::bits_of(var),
                                                (int)delta, width, file, line));
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                                 const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ask_emu::from_bits<T>(ask_emu::warp_op(ask_emu::OP_SHFL_DOWN, mask, ask_emu::bits_of(var),
                                                (int)delta, width, file, line));
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                                const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ask_emu::from_bits<T>(ask_emu::warp_op(ask_emu::OP_SHFL_XOR, mask, ask_emu::bits_of(var),
                                                lane_mask, width, file, line));
}
static inline unsigned __ballot_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                                     int line = __builtin_LINE()) {
  return (unsigned)ask_emu::warp_op(ask_emu::OP_BALLOT, mask, pred != 0, 0, 32, file, line);
}
static inline int __any_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  return (int)ask_emu::warp_op(ask_emu::OP_ANY, mask, pred != 0, 0, 32, file, line);
}
static inline int __all_sync(unsigned mask, int pred, const char *file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  return (int)ask_emu::warp_op(ask_emu::OP_ALL, mask, pred != 0, 0, 32, file, line);
}
static inline unsigned __reduce_add_sync(unsigned mask, unsigned v,
                                         const char *file = __builtin_FILE(),
                                         int line = __builtin_LINE()) {
  return (unsigned)ask_emu::warp_op(ask_emu::OP_REDUCE_ADD, mask, v, 0, 32, file, line);
}
static inline unsigned __reduce_min_sync(unsigned mask, unsigned v,
                                         const char *file = __builtin_FILE(),
                                         int line = __builtin_LINE()) {
  return (unsigned)ask_emu::warp_op(ask_emu::OP_REDUCE_MIN, mask, v, 0, 32, file, line);
}
static inline unsigned __reduce_max_sync(unsigned mask, unsigned v,
                                         const char *file = __builtin_FILE(),
                                         int line = __builtin_LINE()) {
  return (unsigned)ask_emu::warp_op(ask_emu::OP_REDUCE_MAX, mask, v, 0, 32, file, line);
}
static inline int __reduce_add_sync(unsigned mask, int v, const char *file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
  return (int)ask_emu::warp_op(ask_emu::OP_REDUCE_ADD, mask, (uint32_t)v, 0, 32, file, line);
}
static inline int __reduce_min_sync(unsigned mask, int v, const char *file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
  return (int)ask_emu::warp_op(ask_emu::OP_REDUCE_MIN, mask, (uint32_t)v, 1, 32, file, line);
}
static inline int __reduce_max_sync(unsigned mask, int v, const char *file = __builtin_FILE(),
                                    int line = __builtin_LINE()) {
  return (int)ask_emu::warp_op(ask_emu::OP_REDUCE_MAX, mask, (uint32_t)v, 1, 32, file, line);
}
template <class T>
static inline unsigned __match_any_sync(unsigned mask, T v, const char *file = __builtin_FILE(),
                                        int line = __builtin_LINE()) {
  return (unsigned)ask_emu::warp_op(ask_emu::OP_MATCH_ANY, mask, ask_emu::bits_of(v), 0, 32, file,
                                    line);
}

/* ---- loads and stores through the caches: plain, alignment checked ---- */
template <class T> static inline T __ldg(const T *p) {
  ask_emu::check_align(p, alignof(T), "__ldg");
  return *p;
}
template <class T> static inline T __ldcs(const T *p) {
  ask_emu::check_align(p, alignof(T), "__ldcs");
  return *p;
}
template <class T> static inline T __ldcg(const T *p) {
  ask_emu::check_align(p, alignof(T), "__ldcg");
  return *p;
}
template <class T> static inline T __ldca(const T *p) {
  ask_emu::check_align(p, alignof(T), "__ldca");
  return *p;
}
template <class T> static inline T __ldlu(const T *p) {
  ask_emu::check_align(p, alignof(T), "__ldlu");
  return *p;
}
template <class T> static inline T __ldcv(const T *p) {
  ask_emu::check_align(p, alignof(T), "__ldcv");
  return *p;
}
template <class T> static inline void __stcs(T *p, T v) {
  ask_emu::check_align(p, alignof(T), "__stcs");
  *p = v;
}
template <class T> static inline void __stcg(T *p, T v) {
  ask_emu::check_align(p, alignof(T), "__stcg");
  *p = v;
}
template <class T> static inline void __stwb(T *p, T v) {
  ask_emu::check_align(p, alignof(T), "__stwb");
  *p = v;
}
template <class T> static inline void __stwt(T *p, T v) {
  ask_emu::check_align(p, alignof(T), "__stwt");
  *p = v;
}

/* ---- atomics: one OS thread runs the fibers, so read-modify-write ---- */
#define ASK_EMU_ATOMIC(T)                                                                          \
  static inline T atomicAdd(T *p, T v) {                                                           \
    T o = *p;                                                                                      \
    *p = o + v;                                                                                    \
    return o;                                                                                      \
  }                                                                                                \
  static inline T atomicExch(T *p, T v) {                                                          \
    T o = *p;                                                                                      \
    *p = v;                                                                                        \
    return o;                                                                                      \
  }
ASK_EMU_ATOMIC(int)
ASK_EMU_ATOMIC(unsigned int)
ASK_EMU_ATOMIC(unsigned long long)
ASK_EMU_ATOMIC(float)
ASK_EMU_ATOMIC(double)
#undef ASK_EMU_ATOMIC
#define ASK_EMU_ATOMIC_INT(T)                                                                      \
  static inline T atomicSub(T *p, T v) {                                                           \
    T o = *p;                                                                                      \
    *p = o - v;                                                                                    \
    return o;                                                                                      \
  }                                                                                                \
  static inline T atomicMin(T *p, T v) {                                                           \
    T o = *p;                                                                                      \
    *p = v < o ? v : o;                                                                            \
    return o;                                                                                      \
  }                                                                                                \
  static inline T atomicMax(T *p, T v) {                                                           \
    T o = *p;                                                                                      \
    *p = v > o ? v : o;                                                                            \
    return o;                                                                                      \
  }                                                                                                \
  static inline T atomicAnd(T *p, T v) {                                                           \
    T o = *p;                                                                                      \
    *p = o & v;                                                                                    \
    return o;                                                                                      \
  }                                                                                                \
  static inline T atomicOr(T *p, T v) {                                                            \
    T o = *p;                                                                                      \
    *p = o | v;                                                                                    \
    return o;                                                                                      \
  }                                                                                                \
  static inline T atomicXor(T *p, T v) {                                                           \
    T o = *p;                                                                                      \
    *p = o ^ v;                                                                                    \
    return o;                                                                                      \
  }                                                                                                \
  static inline T atomicCAS(T *p, T cmp, T v) {                                                    \
    T o = *p;                                                                                      \
    if (o == cmp)                                                                                  \
      *p = v;                                                                                      \
    return o;                                                                                      \
  }
ASK_EMU_ATOMIC_INT(int)
ASK_EMU_ATOMIC_INT(unsigned int)
ASK_EMU_ATOMIC_INT(unsigned long long)
ASK_EMU_ATOMIC_INT(long long)
#undef ASK_EMU_ATOMIC_INT
static inline unsigned atomicInc(unsigned *p, unsigned v) {
  unsigned o = *p;
  *p = o >= v ? 0 : o + 1;
  return o;
}
static inline unsigned atomicDec(unsigned *p, unsigned v) {
  unsigned o = *p;
  *p = (o == 0 || o > v) ? v : o - 1;
  return o;
}
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMax_block atomicMax
#define atomicMin_block atomicMin
#define atomicCAS_block atomicCAS

/* ---- integer and float intrinsics ---- */
static inline float __uint_as_float(unsigned int u) { return ask_emu::from_bits<float>(u); }
static inline unsigned int __float_as_uint(float f) { return (unsigned)ask_emu::bits_of(f); }
static inline float __int_as_float(int i) { return ask_emu::from_bits<float>((uint32_t)i); }
static inline int __float_as_int(float f) { return (int)(uint32_t)ask_emu::bits_of(f); }
static inline double __longlong_as_double(long long i) {
  return ask_emu::from_bits<double>((uint64_t)i);
}
static inline long long __double_as_longlong(double d) { return (long long)ask_emu::bits_of(d); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll((unsigned long long)x);
}
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; i++, x >>= 1)
    r = (r << 1) | (x & 1u);
  return r;
}
static inline int __mul24(int a, int b) { return a * b; }
static inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned __umulhi(unsigned a, unsigned b) {
  return (unsigned)(((unsigned long long)a * b) >> 32);
}
static inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
  uint64_t v = ((uint64_t)hi << 32) | lo;
  return (unsigned)((v << (s & 31)) >> 32);
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
  uint64_t v = ((uint64_t)hi << 32) | lo;
  return (unsigned)(v >> (s & 31));
}

/* Device math: the host's libm (CUDA's fast intrinsics are approximations
 * of the same functions). */
/* __expf, __logf, __log2f, __log10f, __exp10f, __sinf, __cosf, __tanf,
 * __sincosf and __powf: glibc's <math.h> declares them (its own names of the
 * same functions). */
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
static inline float __saturatef(float x) {
  return x != x ? 0.0f : x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;
}
static inline float saturatef(float x) { return __saturatef(x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned x) { return (float)x; }
static inline int __double2int_rn(double x) { return (int)nearbyint(x); }
static inline float __double2float_rn(double x) { return (float)x; }
static inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
static inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }

/* min and max as CUDA overloads them: on integers of any mix (the usual
 * arithmetic conversions) and on floats. */
template <class A, class B,
          class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
static inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if (std::is_floating_point<C>::value)
    return (C)std::fmin((C)a, (C)b);
  return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B,
          class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
static inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if (std::is_floating_point<C>::value)
    return (C)std::fmax((C)a, (C)b);
  return (C)a < (C)b ? (C)b : (C)a;
}
static inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long llmin(long long a, long long b) { return a < b ? a : b; }
static inline long long llmax(long long a, long long b) { return a > b ? a : b; }

/* ---- bf16 and f16 ---- */
namespace ask_emu {
/* f32 -> bf16 bits, round to nearest even; NaN -> canonical 0x7fff (as
 * cvt.rn.bf16.f32 and the host path of cuda_bf16.hpp). */
static inline uint16_t f2bf_rn(float f) {
  uint32_t u = (uint32_t)bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return 0x7fffu;
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline uint16_t f2bf_rz(float f) {
  uint32_t u = (uint32_t)bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return 0x7fffu;
  return (uint16_t)(u >> 16);
}
static inline float bf2f(uint16_t h) { return from_bits<float>((uint32_t)h << 16); }
/* f32 -> IEEE half bits, round to nearest even. */
static inline uint16_t f2h_rn(float f) {
  uint32_t u = (uint32_t)bits_of(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u)
    return 0x7fffu;
  if (a >= 0x477ff000u) /* rounds to >= 65520: inf */
    return (uint16_t)(sign | 0x7c00u);
  if (a < 0x38800000u) { /* subnormal half (or zero) */
    float af = from_bits<float>(a);
    float q = af * 16777216.0f; /* 2^24: units of the smallest subnormal */
    return (uint16_t)(sign | (uint32_t)nearbyintf(q));
  }
  uint32_t e = (a >> 23) - 112, m = a & 0x7fffffu;
  uint32_t h = (e << 10) | (m >> 13), rest = m & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
    h++;
  return (uint16_t)(sign | h);
}
static inline float h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0)
    return (sign ? -1.0f : 1.0f) * (float)m * (1.0f / 16777216.0f);
  if (e == 31)
    return from_bits<float>(sign | 0x7f800000u | (m << 13));
  return from_bits<float>(sign | ((e + 112) << 23) | (m << 13));
}
} /* namespace ask_emu */

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(ask_emu::f2bf_rn(f)) {}
  __nv_bfloat16(double f) : __x(ask_emu::f2bf_rn((float)f)) {}
  operator float() const { return ask_emu::bf2f(__x); }
};
typedef __nv_bfloat16 nv_bfloat16;
struct __attribute__((aligned(4))) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
typedef __nv_bfloat162 nv_bfloat162;

static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
  __nv_bfloat16 h;
  h.__x = u;
  return h;
}
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline short __bfloat16_as_short(__nv_bfloat16 h) { return (short)h.__x; }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  return __ushort_as_bfloat16(ask_emu::f2bf_rn(f));
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) {
  return __ushort_as_bfloat16(ask_emu::f2bf_rz(f));
}
static inline float __bfloat162float(__nv_bfloat16 h) { return ask_emu::bf2f(h.__x); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
static inline __nv_bfloat162 __float22bfloat162_rn(float2 f) {
  return __floats2bfloat162_rn(f.x, f.y);
}
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __nv_bfloat162{a, b};
}
static inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162{a, a}; }
static inline float2 __bfloat1622float2(__nv_bfloat162 h) {
  return float2{__bfloat162float(h.x), __bfloat162float(h.y)};
}
static inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
static inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
static inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
static inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
static inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __float2bfloat16_rn((float)((double)(float)a + (double)(float)b));
}
static inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __float2bfloat16_rn((float)((double)(float)a - (double)(float)b));
}
static inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __float2bfloat16_rn((float)((double)(float)a * (double)(float)b));
}
static inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __float2bfloat16_rn((float)fma((double)(float)a, (double)(float)b, (double)(float)c));
}
static inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __float2bfloat16_rn(fmaxf((float)a, (float)b));
}
static inline __nv_bfloat16 __hmin(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __float2bfloat16_rn(fminf((float)a, (float)b));
}

struct __half {
  unsigned short __x;
  __half() = default;
  __half(float f) : __x(ask_emu::f2h_rn(f)) {}
  operator float() const { return ask_emu::h2f(__x); }
};
typedef __half half;
struct __attribute__((aligned(4))) __half2 {
  __half x, y;
};
typedef __half2 half2;
static inline __half __ushort_as_half(unsigned short u) {
  __half h;
  h.__x = u;
  return h;
}
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline __half __float2half_rn(float f) { return __ushort_as_half(ask_emu::f2h_rn(f)); }
static inline __half __float2half(float f) { return __float2half_rn(f); }
static inline float __half2float(__half h) { return ask_emu::h2f(h.__x); }
static inline __half2 __floats2half2_rn(float a, float b) {
  return __half2{__float2half_rn(a), __float2half_rn(b)};
}
static inline float2 __half22float2(__half2 h) {
  return float2{__half2float(h.x), __half2float(h.y)};
}

/* ---- runtime API in C++ form ---- */
template <class T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
  return cudaMalloc((void **)p, bytes);
}
template <class K>
static inline cudaError_t cudaFuncSetAttribute(K *k, enum cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > ASK_EMU_SMEM_OPTIN)
      return cudaErrorInvalidValue;
    ::ask_emu::set_max_dyn_smem((const void *)k, (size_t)value);
  }
  return cudaSuccess;
}
/* Blocks of k an SM, as an H100 would fit them by threads (2048 an SM) and
 * shared memory (228 KiB an SM, 1 KiB of it reserved a block); registers
 * are not known here (the launch bounds are ignored), so this may say more
 * than the GPU; kernels/cuda caps it with its own launch bounds. */
template <class K>
static inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, K *, int threads,
                                                                        size_t smem) {
  if (n == NULL || threads <= 0 || threads > 1024 || smem > (size_t)ASK_EMU_SMEM_OPTIN)
    return cudaErrorInvalidValue;
  long by_threads = 2048 / threads, by_smem = (233472L) / (long)(smem + 1024);
  *n = (int)(by_threads < by_smem ? by_threads : by_smem);
  if (*n > 32)
    *n = 32;
  return cudaSuccess;
}
template <class K> static inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, K *) {
  a->ptxVersion = 90;
  a->binaryVersion = 90;
  return cudaSuccess;
}
template <class T>
static inline cudaError_t cudaMemcpyToSymbol(T &sym, const void *src, size_t count,
                                             size_t offset = 0,
                                             enum cudaMemcpyKind = cudaMemcpyHostToDevice) {
  memcpy((char *)&sym + offset, src, count);
  return cudaSuccess;
}
template <class T>
static inline cudaError_t
cudaMemcpyToSymbolAsync(T &sym, const void *src, size_t count, size_t offset = 0,
                        enum cudaMemcpyKind = cudaMemcpyHostToDevice, cudaStream_t = 0) {
  memcpy((char *)&sym + offset, src, count);
  return cudaSuccess;
}

#endif /* ASK_CUDAEMU_H */

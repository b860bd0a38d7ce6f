/* selftest.cu — kernels that check the emulator itself (tests/cudaemu): the
 * warp collectives against their definitions, barriers, dynamic shared
 * memory, the launch forms cu2cpp.py rewrites (templates, qualified names,
 * 2- to 4-argument configurations), inline PTX, programmatic dependent
 * launch, and that divergent
 * barriers, deadlocks, undefined shuffles, misaligned vector loads and bad
 * configurations fail the launch instead of passing or hanging. Written as
 * CUDA (nvcc would compile it too); test_cudaemu_kernels.c calls the
 * launchers. Each returns cudaGetLastError() after its launch.
 */
#include <cuda_runtime.h>
#include <stdint.h>

/* out[k * nt + tid] = result k of thread tid for the warp collectives. */
static __global__ void emu_k_shfl(int *out, int nt, int width) {
  int tid = threadIdx.x, lane = tid & 31;
  int v = 1000 * tid + 7;
  int k = 0;
  out[k++ * nt + tid] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) & 31, width);
  out[k++ * nt + tid] = __shfl_up_sync(0xffffffffu, v, 3, width);
  out[k++ * nt + tid] = __shfl_down_sync(0xffffffffu, v, 5, width);
  out[k++ * nt + tid] = __shfl_xor_sync(0xffffffffu, v, 6, width);
  out[k++ * nt + tid] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
  out[k++ * nt + tid] = __any_sync(0xffffffffu, lane == 17);
  out[k++ * nt + tid] = __all_sync(0xffffffffu, lane < 31);
  double d = __shfl_xor_sync(0xffffffffu, (double)v + 0.25, 1); /* 8-byte values */
  out[k++ * nt + tid] = (int)(d * 4.0);
  out[k++ * nt + tid] = __syncthreads_count(tid % 5 == 0);
  __syncwarp();
  out[k++ * nt + tid] = (int)__activemask();
}

extern "C" int emu_shfl(int *out, int nt, int width) {
  emu_k_shfl<<<1, nt>>>(out, nt, width);
  return (int)cudaGetLastError();
}

/* Dynamic shared memory (in a function and at namespace scope), a block
 * reversal through it, and a tree reduction with barriers. */
extern __shared__ int emu_dyn_ns[];

template <typename T, int SCALE>
static __global__ void emu_k_reverse(T *out, const T *in, int n) {
  extern __shared__ __align__(16) T buf[];
  int t = threadIdx.x, base = blockIdx.x * blockDim.x;
  buf[t] = in[base + t] * SCALE;
  __syncthreads();
  out[base + t] = buf[blockDim.x - 1 - t];
  __syncthreads();
  emu_dyn_ns[t] = t; /* the same memory, seen through the namespace-scope name */
  __syncthreads();
  if (t == 0) {
    int s = 0;
    for (int i = 0; i < (int)blockDim.x; i++)
      s += emu_dyn_ns[i];
    out[base] += (T)(s - (int)(blockDim.x * (blockDim.x - 1) / 2)); /* + 0 */
  }
}

namespace emu_ns {
static __global__ void k_sum(long long *out, const int *in, int n) {
  __shared__ long long sh[1024];
  int t = threadIdx.x;
  long long v = 0;
  for (int i = t; i < n; i += blockDim.x)
    v += in[i];
  sh[t] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s)
      sh[t] += sh[t + s];
    __syncthreads();
  }
  if (t == 0)
    atomicAdd((unsigned long long *)out, (unsigned long long)sh[0]);
}
} /* namespace emu_ns */

extern "C" int emu_reverse(float *out, const float *in, int nblocks, int nt) {
  emu_k_reverse<float, 2><<<nblocks, nt, nt * sizeof(float)>>>(out, in, nblocks * nt);
  return (int)cudaGetLastError();
}

extern "C" int emu_sum(long long *out, const int *in, int n, int nt, int nblocks) {
  emu_ns::k_sum<<<dim3(nblocks, 1, 1), dim3(nt), 0, (cudaStream_t)0>>>(out, in, n);
  return (int)cudaGetLastError();
}

/* Races: each thread reads its neighbour's slot, with or without a barrier
 * between the writes and the reads. */
static __global__ void emu_k_race(int *out, int sync) {
  __shared__ int sh[256];
  int t = threadIdx.x;
  sh[t] = t + 1;
  if (sync)
    __syncthreads();
  out[t] = sh[(t + 1) % blockDim.x];
  __syncthreads();
  sh[t] = 0; /* the next launch starts from zeros */
}

extern "C" int emu_race(int *out, int nt, int sync) {
  emu_k_race<<<1, nt>>>(out, sync);
  return (int)cudaGetLastError();
}

/* Inline PTX loads and stores as the kernels write them. */
static __global__ void emu_k_ptx(uint32_t *out, const uint32_t *in) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(in + 4 * threadIdx.x));
  uint32_t x = r.x + r.y + r.z + r.w;
  asm volatile("st.global.cs.u32 [%0], %1;" ::"l"(out + threadIdx.x), "r"(x) : "memory");
}

static __global__ void emu_k_ptx_unknown(float *out) {
  float r;
  asm("ex2.approx.f32 %0, %1;" : "=f"(r) : "f"(out[0]));
  out[0] = r;
}

extern "C" int emu_ptx(uint32_t *out, const uint32_t *in, int nt, int unknown) {
  if (unknown)
    emu_k_ptx_unknown<<<1, 32>>>((float *)out);
  else
    emu_k_ptx<<<1, nt>>>(out, in);
  return (int)cudaGetLastError();
}

/* Programmatic dependent launch: in a launch made with make_launch_pdl
 * (what kernels/cuda/common.cuh's ASK__LAUNCH does here) every thread must
 * pass griddepcontrol.wait before it returns; skip 1: thread 5 does not;
 * skip 2: every thread reads out before its wait. */
static __global__ void emu_k_pdl(int *out, int skip) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (skip == 1 && threadIdx.x == 5)
    return;
  if (skip == 2 && out[threadIdx.x] == 12345)
    return;
  asm volatile("griddepcontrol.wait;" ::: "memory");
  out[threadIdx.x] = (int)threadIdx.x + 1;
}

extern "C" int emu_pdl(int *out, int skip, int pdl) {
  if (pdl)
    ::ask_emu::make_launch_pdl(&emu_k_pdl, "emu_k_pdl", __FILE__, __LINE__, 2, 64, 0, 0)(out,
                                                                                        skip);
  else
    emu_k_pdl<<<2, 64>>>(out, skip);
  return (int)cudaGetLastError();
}

/* More than 48 KiB of dynamic shared memory: refused (cudaErrorInvalidValue)
 * unless cudaFuncSetAttribute allowed it, as on the GPU. */
static __global__ void emu_k_big_smem(int *out) {
  extern __shared__ int emu_big[];
  emu_big[threadIdx.x * 512] = (int)threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = emu_big[threadIdx.x * 512];
}

extern "C" int emu_big_smem(int *out, int allow) {
  size_t bytes = 64 << 10;
  if (allow && cudaFuncSetAttribute(emu_k_big_smem, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes) != cudaSuccess)
    return -1;
  emu_k_big_smem<<<1, 32, bytes>>>(out);
  return (int)cudaGetLastError();
}

/* Faulty kernels: each must fail its launch with a clear reason. */
static __global__ void emu_k_bad(int what, float *p) {
  int t = threadIdx.x, lane = t & 31;
  switch (what) {
  case 0: /* barriers at two different call sites */
    if (t < 16)
      __syncthreads();
    else
      __syncthreads();
    break;
  case 1: /* some threads return before the barrier */
    if (t == 5)
      return;
    __syncthreads();
    break;
  case 2: /* lane 0 waits at __syncthreads, the rest of its warp at a shuffle */
    if (lane == 0)
      __syncthreads();
    else
      p[t] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    break;
  case 3: /* a partial warp (48 threads) reading absent lanes */
    p[t] = __shfl_down_sync(0xffffffffu, (float)t, 16);
    break;
  case 4: /* a mask that does not name the calling lane */
    p[t] = __shfl_xor_sync(0x0000ffffu, (float)t, 1);
    break;
  case 5: /* a misaligned 16-byte load */
    p[t] = __ldg(reinterpret_cast<const float4 *>(p + 1)).x;
    break;
  case 6: /* lanes at different shuffles */
    if (lane & 1)
      p[t] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    else
      p[t] = __shfl_xor_sync(0xffffffffu, 2.0f, 1);
    break;
  case 7: /* a shuffle whose mask leaves out a lane that it reads */
    if (lane < 16)
      p[t] = __shfl_xor_sync(0x0000ffffu, (float)t, 16);
    break;
  case 8:
    __trap();
  }
}

extern "C" int emu_bad(int what, float *p, int nt) {
  if (what == 9)
    emu_k_bad<<<1, 2048>>>(0, p); /* too many threads */
  else if (what == 10)
    emu_k_bad<<<dim3(1, 70000), 32>>>(0, p); /* grid.y over 65535 */
  else
    emu_k_bad<<<2, nt>>>(what, p);
  return (int)cudaGetLastError();
}

/* bench_prefetch.cu — does an L2 prefetch hold up the kernel that issues it,
 * and does a later read of the prefetched bytes go faster? A benchmark of
 * the device, not of actorserve: it decides whether the decode step may
 * send the next products' weights to L2 from a short kernel that runs while
 * HBM is idle (attention, rope_kv, glu). One line per measurement:
 *   issue    time of a kernel that only issues prefetch.global.L2 for X MB
 *            (one instruction per 16-byte piece or per 128-byte line), then
 *            exits: if this grows with X, warps wait for their prefetches;
 *   read     time to stream X MB with 16-byte loads, L2 flushed before
 *            (cold), right after the prefetch kernel (pf), and after the
 *            prefetch kernel plus a 20 us spin (pf+wait: the prefetch had
 *            time to land).
 * Events around each launch, median of 7. Usage: bench_prefetch. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                    \
  do {                                                                                           \
    cudaError_t e__ = (x);                                                                       \
    if (e__ != cudaSuccess) {                                                                    \
      fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e__));                                  \
      exit(1);                                                                                   \
    }                                                                                            \
  } while (0)

static __global__ void k_prefetch(const char *p, size_t n, int stride) {
  size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * stride;
  size_t step = (size_t)gridDim.x * blockDim.x * stride;
  for (; i < n; i += step)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p + i));
}

static __global__ void k_read(const uint4 *p, size_t n, unsigned *sink) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, step = (size_t)gridDim.x * blockDim.x;
  unsigned acc = 0;
  for (; i < n; i += step) {
    uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u)
    *sink = acc;
}

static __global__ void k_spin(long long ns) {
  long long t0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  for (;;) {
    long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (t - t0 >= ns)
      break;
  }
}

static int cmpf(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

int main(void) {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  size_t big = (size_t)512 << 20;
  char *buf, *flush;
  unsigned *sink;
  CK(cudaMalloc(&buf, big));
  CK(cudaMalloc(&flush, big));
  CK(cudaMalloc(&sink, 4));
  CK(cudaMemset(buf, 1, big));
  CK(cudaMemset(flush, 2, big));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  const size_t mbs[] = {0, 4, 16, 32, 64};
  const int strides[] = {16, 128};
  for (int si = 0; si < 2; si++)
    for (size_t mi = 0; mi < sizeof mbs / sizeof mbs[0]; mi++) {
      size_t n = mbs[mi] << 20;
      float t[4][7];
      for (int r = 0; r < 7; r++) {
        for (int mode = 0; mode < 4; mode++) {
          /* flush L2 by streaming another 512 MB, then time */
          k_read<<<sms * 4, 256>>>((const uint4 *)flush, big / 16, sink);
          if (mode == 0) { /* issue alone */
            CK(cudaEventRecord(a));
            k_prefetch<<<sms * 2, 256>>>(buf, n, strides[si]);
            CK(cudaEventRecord(b));
          } else {
            if (mode >= 2)
              k_prefetch<<<sms * 2, 256>>>(buf, n, strides[si]);
            if (mode == 3)
              k_spin<<<1, 32>>>(20000);
            CK(cudaEventRecord(a));
            k_read<<<sms * 4, 256>>>((const uint4 *)buf, n / 16, sink);
            CK(cudaEventRecord(b));
          }
          CK(cudaEventSynchronize(b));
          CK(cudaEventElapsedTime(&t[mode][r], a, b));
        }
      }
      for (int mode = 0; mode < 4; mode++)
        qsort(t[mode], 7, sizeof(float), cmpf);
      printf("{\"stride\": %d, \"mb\": %zu, \"issue_us\": %.2f, \"read_cold_us\": %.2f, "
             "\"read_pf_us\": %.2f, \"read_pf_wait_us\": %.2f}\n",
             strides[si], mbs[mi], 1e3 * t[0][3], 1e3 * t[1][3], 1e3 * t[2][3], 1e3 * t[3][3]);
    }
  CK(cudaGetLastError());
  return 0;
}

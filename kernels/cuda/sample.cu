/* sample.cu — greedy choice of next tokens on the device, so that only
 * token ids come back to the host: the first largest of each row of logits,
 * NaNs never chosen (as torch.argmax and kernels/ref's argmax), in parts of
 * a row over many blocks when rows are few, one block a row otherwise.
 * Sampling (temperature, top-k, top-p) is sample_rows.cu.
 */
#include "sample.cuh"

/* The largest argmax key (sample.cuh) of xr[i] for i = i0 + threadIdx.x,
 * + B, ... below i1, in this thread. Each thread loads 8 values before it
 * compares them: a compare-then-load loop keeps one load in flight, which
 * made a 128k-entry row take 56 us in one block on an H200 (Nsight
 * Compute, 2026-11-26). */
static __device__ unsigned long long ask__amax_range(const float *xr, int i0, int i1, int B) {
  unsigned long long best = 0;
  int i = i0 + (int)threadIdx.x;
  for (; i + 7 * B < i1; i += 8 * B) {
    float v[8];
#pragma unroll
    for (int u = 0; u < 8; u++)
      v[u] = xr[i + u * B];
#pragma unroll
    for (int u = 0; u < 8; u++)
      best = ask__amax(best, ask__amkey(v[u], i + u * B));
  }
  for (; i < i1; i += B)
    best = ask__amax(best, ask__amkey(xr[i], i));
  return best;
}

/* The largest key over the block (blockDim.x a multiple of 32), in every
 * thread. */
static __device__ unsigned long long ask__amax_block(unsigned long long best) {
  __shared__ unsigned long long sk[32];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1)
    best = ask__amax(best, __shfl_xor_sync(0xffffffffu, best, o));
  __syncthreads();
  if (lane == 0)
    sk[wid] = best;
  __syncthreads();
  best = lane < nw ? sk[lane] : 0ull;
  for (int o = 16; o > 0; o >>= 1)
    best = ask__amax(best, __shfl_xor_sync(0xffffffffu, best, o));
  return best;
}

/* One block a row: ids[row] = the index in the largest key (0 when all
 * NaN: NaN's key is the index alone). */
static __global__ void ask__k_argmax_rows(int32_t *ids, const float *x, int n) {
  ask__pdl_enter();
  const unsigned long long best =
      ask__amax_block(ask__amax_range(x + (size_t)blockIdx.x * n, 0, n, (int)blockDim.x));
  if (threadIdx.x == 0)
    ids[blockIdx.x] = (int32_t)~(uint32_t)best;
}

/* ---- argmax over many blocks a row ----
 * One block a row reads a 128k-256k vocabulary at ~30 GB/s (the loads of
 * one SM in flight): 17 us (Llama-3.2-1B) and 33 us (gemma-2b) of a batch-1
 * step (ASK_PROFILE, 2026-11-26). With few rows the row is cut in parts of
 * ASK__AM_CHUNK values, one block of 256 threads each (8 loads in flight a
 * thread). An (index, value) pair is a 64-bit key, larger for the better
 * answer: the value's order-preserving key above (0 for NaN, never chosen
 * unless the row is all NaN), the index complemented below (the first of
 * equal values wins), so a part's answer is the largest key, whatever the
 * order the comparisons ran in. Each block writes its key, fences, takes a
 * ticket from the row's counter; the last one takes the largest of the
 * row's keys (read through L2) and sets the counter back to 0. */
#define ASK__AM_SLOTS 512 /* rows and keys of one launch at most */
#define ASK__AM_CHUNK 2048 /* values a part: 8 loads of 256 threads */
#define ASK__AM_BLOCKS 256 /* the parts of a launch at most */
int ask__cu_argmax_parts = -1; /* cuda_int.h */
static unsigned *ask__am_cnt;            /* ASK__AM_SLOTS counters, 0 between launches */
static unsigned long long *ask__am_part; /* ASK__AM_SLOTS keys */

extern "C" int ask__cu_sample_init(cudaStream_t s) {
  void *p = NULL;
  if (ask__am_cnt != NULL)
    return ask__cu_sample_rows_init(s);
  size_t bytes = ASK__AM_SLOTS * (sizeof(unsigned) + sizeof(unsigned long long));
  if (ask__cu_check(cudaMalloc(&p, bytes), "cudaMalloc (argmax_rows parts)"))
    return 1;
  if (ask__cu_check(cudaMemsetAsync(p, 0, bytes, s), "cudaMemsetAsync (argmax_rows parts)") ||
      ask__cu_check(cudaStreamSynchronize(s), "cudaStreamSynchronize (argmax_rows parts)")) {
    cudaFree(p);
    return 1;
  }
  ask__am_part = static_cast<unsigned long long *>(p);
  ask__am_cnt = reinterpret_cast<unsigned *>(ask__am_part + ASK__AM_SLOTS);
  return ask__cu_sample_rows_init(s);
}

static __global__ void __launch_bounds__(256)
    ask__k_argmax_parts(int32_t *ids, const float *x, int n, int chunk,
                        unsigned long long *part, unsigned *cnt) {
  ask__pdl_enter();
  const int P = (int)gridDim.x, row = blockIdx.y, lane = threadIdx.x & 31;
  const int i0 = (int)blockIdx.x * chunk, i1 = min(n, i0 + chunk);
  unsigned long long best = ask__amax_block(ask__amax_range(x + (size_t)row * n, i0, i1, 256));
  if (threadIdx.x == 0)
    part[(size_t)row * P + blockIdx.x] = best;
  if (!ask__last_block(cnt + row, (unsigned)P) || threadIdx.x >= 32)
    return;
  best = 0;
  for (int k = lane; k < P; k += 32)
    best = ask__amax(best, __ldcg(part + (size_t)row * P + k));
  for (int o = 16; o > 0; o >>= 1)
    best = ask__amax(best, __shfl_xor_sync(0xffffffffu, best, o));
  if (lane == 0)
    ids[row] = (int32_t)~(uint32_t)best;
}

/* Parts a row for T rows of n: about ASK__AM_BLOCKS blocks in all, 1 (the
 * one-block kernel) from ASK__AM_BLOCKS / 2 rows on or for short rows. */
static int ask__am_parts(int T, int n) {
  int p = (n + ASK__AM_CHUNK - 1) / ASK__AM_CHUNK, cap = ASK__AM_BLOCKS / T;
  return p < cap ? p : cap;
}

extern "C" void ask__cu_argmax_rows(cudaStream_t s, int32_t *ids, const float *x, int T, int n) {
  if (T <= 0 || ask__cu_failed())
    return;
  const int P = ask__cu_argmax_parts >= 0 ? ask__cu_argmax_parts : ask__am_parts(T, n);
  if (P >= 2 && ask__am_cnt != NULL && (size_t)T * (size_t)P <= ASK__AM_SLOTS && T <= 65535) {
    const int chunk = (n + P - 1) / P;
    dim3 grid((unsigned)P, (unsigned)T);
    ASK__LAUNCH(grid, 256, 0, s, ask__k_argmax_parts)(ids, x, n, chunk, ask__am_part,
                                                      ask__am_cnt);
  } else {
    ASK__LAUNCH(T, ask__row_threads(n), 0, s, ask__k_argmax_rows)(ids, x, n);
  }
  ASK__LAUNCHED("argmax_rows");
}

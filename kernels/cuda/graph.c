/* graph.c — captured steps (the graph_capture, graph_launch and graph_free
 * ops of kernels.h) as CUDA graphs on the backend's stream.
 *
 * Capture uses cudaStreamCaptureModeThreadLocal: the capturing (engine)
 * thread may not call unsafe APIs (cudaMalloc, synchronisation) while its
 * ops are recorded, other threads are not affected. The one host-side call
 * of an op that may need more is a cuBLASLt plan made during the capture
 * (gemm.c switches this thread to relaxed mode for cublasLtMatmul
 * AlgoGetHeuristic, known to fail under capture with some cuBLASLt 13
 * releases); matmuls themselves use the fixed workspace and never allocate
 * or synchronise. Any failure (an op's, or the capture's) is recorded with
 * ask__cu_check, the stream is always taken out of capture mode and the
 * partial graph destroyed, so the caller can run the same ops directly
 * once sync (or the op's own return) has reported the failure. The graph
 * handed out is the instantiated cudaGraphExec_t.
 */
#include <stddef.h>

#include "cuda_int.h"

/* Ends a capture that is still active on s (after a failure) and drops
 * its graph. */
static void ask__graph_abandon(cudaStream_t s) {
  enum cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  cudaGraph_t g = NULL;
  if (cudaStreamIsCapturing(s, &st) != cudaSuccess)
    (void)cudaGetLastError();
  if (st != cudaStreamCaptureStatusNone) {
    if (cudaStreamEndCapture(s, &g) != cudaSuccess)
      (void)cudaGetLastError();
    if (g != NULL)
      cudaGraphDestroy(g);
  }
  (void)cudaGetLastError();
}

int ask__graph_capture(cudaStream_t s, void **graph, void (*fn)(void *ud), void *ud) {
  cudaGraph_t g = NULL;
  cudaGraphExec_t exec = NULL;
  *graph = NULL;
  if (ask__cu_failed())
    return 1;
  if (fn == NULL)
    return ask__cu_check(cudaErrorInvalidValue, "graph_capture: no function");
  if (ask__cu_check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal),
                    "cudaStreamBeginCapture"))
    return 1;
  fn(ud);
  cudaError_t e = cudaStreamEndCapture(s, &g);
  if (e != cudaSuccess || ask__cu_failed()) {
    /* An op's failure was recorded first (it names the op); the capture's
     * own error (cudaErrorStreamCaptureInvalidated) only when none was. */
    ask__cu_check(e != cudaSuccess ? e : cudaErrorUnknown, "cudaStreamEndCapture");
    if (g != NULL)
      cudaGraphDestroy(g);
    ask__graph_abandon(s);
    return 1;
  }
  e = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  if (ask__cu_check(e, "cudaGraphInstantiate"))
    return 1;
  *graph = exec;
  return 0;
}

int ask__graph_launch(cudaStream_t s, void *graph) {
  if (ask__cu_failed())
    return 1;
  if (graph == NULL)
    return ask__cu_check(cudaErrorInvalidValue, "graph_launch: no graph");
  return ask__cu_check(cudaGraphLaunch((cudaGraphExec_t)graph, s), "cudaGraphLaunch");
}

/* Waits for the stream first: the graph may still be running. */
void ask__graph_free(cudaStream_t s, void *graph) {
  if (graph == NULL)
    return;
  ask__cu_check(cudaStreamSynchronize(s), "cudaStreamSynchronize (graph_free)");
  ask__cu_check(cudaGraphExecDestroy((cudaGraphExec_t)graph), "cudaGraphExecDestroy");
}

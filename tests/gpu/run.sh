#!/bin/sh
# run.sh [OUT] — the GPU checks of issue 7 on a bare CUDA machine (only the
# NVIDIA driver and /usr/local/cuda/lib64 with libcublasLt.so.13), from a
# build made on a CPU machine with `make gpu-bundle`: runs every test_cuda_*
# binary of the bundle and writes its log and a summary into OUT ($OUT by
# default, the device tool's result folder; ./gpu-results otherwise).
#
# With the device tool, from the repository root here:
#   make gpu-bundle
#   run(command="sh build/gpu-bundle/run.sh", carry=["build/gpu-bundle"], timeout_s=300)
# (build/ is ignored by git, so the bundle must be carried; it is ~45 MB.)
# Exit status: 0 when every test passed (skips count as failures here: on a
# GPU machine nothing may skip), 1 otherwise.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RES=${1:-${OUT:-./gpu-results}}
mkdir -p "$RES"
export LD_LIBRARY_PATH="$HERE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SUMMARY="$RES/summary.txt"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -n) $(uname -m)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  ls /usr/local/cuda/lib64/libcublasLt.so* 2>&1 | sed 's/^/cublasLt: /'
} > "$SUMMARY"
status=0
for bin in "$HERE"/test_cuda_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  missing=$(ldd "$bin" 2>&1 | grep "not found" || true)
  if [ -n "$missing" ] && [ -z "${AS_FALLBACK:-}" ]; then
    AS_FALLBACK=1
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$HERE/lib-fallback"
    echo "$name: using the bundled C++ runtime for: $missing" >> "$SUMMARY"
    missing=$(ldd "$bin" 2>&1 | grep "not found" || true)
  fi
  if [ -n "$missing" ]; then
    echo "$name: missing libraries: $missing" >> "$SUMMARY"
    status=1
    continue
  fi
  start=$(date +%s)
  timeout 240 "$bin" > "$RES/$name.log" 2>&1
  rc=$?
  end=$(date +%s)
  last=$(tail -n 1 "$RES/$name.log")
  echo "$name: rc=$rc in $((end - start)) s: $last" >> "$SUMMARY"
  if [ $rc -ne 0 ] || grep -q "^skip " "$RES/$name.log"; then
    status=1
  fi
done
echo "result: $([ $status = 0 ] && echo PASS || echo FAIL)" >> "$SUMMARY"
cat "$SUMMARY"
exit $status

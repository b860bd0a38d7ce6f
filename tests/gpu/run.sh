#!/bin/sh
# run.sh [OUT] — every GPU check and benchmark, on a bare CUDA machine (the
# NVIDIA driver, /usr/local/cuda/lib64 with libcublasLt.so.13, python3 with
# torch + transformers + safetensors, no network), from a build made on a CPU
# machine with `make gpu-bundle`. Everything it writes goes to OUT ($OUT by
# default, the device tool's result folder; ./gpu-results otherwise):
#
#   1. tests    every test_cuda_* binary of the bundle      test_cuda_*.log
#               (a failed test again under compute-sanitizer memcheck, when
#               the machine has it)                  test_cuda_*.TEST.memcheck.log
#               test_devpath with AS_TEST_DEVICE=cuda (the engine's device
#               path against the CPU and transformers; needs the repository
#               around the bundle or AS_SOURCE_DIR)      test_devpath.log
#   2. gemv     bench_gemv (GEMV against cuBLASLt, fusions) bench_gemv.log, bench_gemv.jsonl
#   3. compare  hf_compare.py: greedy tokens of `actorserve generate --device
#               cuda` against transformers, gemma-2b and llama-3.2-1b
#               (random bf16 weights made here)              hf_compare.json, hf_compare*.log
#   4. bench    llm_gpu.py: `actorserve bench-llm` on both shapes, the copy
#               bandwidth, the transformers anchor (hf_generate.py)
#                                                            llm-gpu-*.json, llm_gpu-*.log
#   summary.txt: PASS/FAIL/SKIP and seconds per part, the goals, the result.
#
# With the device tool, from the repository root here:
#   make gpu-bundle
#   run(command="sh build/gpu-bundle/run.sh", carry=["build/gpu-bundle"], timeout_s=600)
# (build/ is ignored by git, so the bundle must be carried.)
# The whole run keeps within AS_GPU_BUDGET_S seconds (570): each part gets a
# timeout from what is left. Expected: tests + gemv < 1 min, compare ~1.5 min,
# bench ~1.5 min without the anchor, + ~2.5 min with it. Environment:
#   AS_GPU_ANCHOR=0     skip the transformers anchor (saves ~2.5 min)
#   AS_GPU_PARTS="tests gemv compare bench"   the parts to run
#   AS_GPU_MODELS=DIR   where the model folders go (/tmp/actorserve-gpu-models,
#                       12.5 GB; never OUT, which is copied back)
#   AS_GPU_COMPARE_ARGS, AS_GPU_BENCH_ARGS   more options for hf_compare.py and
#                       llm_gpu.py (e.g. "--shapes llama-3.2-1b"; a CPU rehearsal:
#                       "--torch-device cpu --device-ours refdev --shapes tiny-llama",
#                       or on device cuda with ACTORSERVE_CUDA_MODULE naming
#                       tests/cudaemu's libactorserve_cuda_emu.so: docs/engine.md)
# Exit status: 0 when every part run passed (a skipped test counts as a
# failure: on a GPU machine nothing may skip; goals not met do not fail it).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RES=${1:-${OUT:-./gpu-results}}
mkdir -p "$RES"
RES=$(cd "$RES" && pwd)
START=$(date +%s)
BUDGET=${AS_GPU_BUDGET_S:-570}
PARTS=${AS_GPU_PARTS:-tests gemv compare bench}
MODELS=${AS_GPU_MODELS:-/tmp/actorserve-gpu-models}
PY_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}  # python and torch keep their own libraries
# The bundle's libraries and binaries travel packed (bundle.sh): unpack them once.
if [ ! -d "$HERE/lib" ] && [ -f "$HERE/libs.tar.gz" ]; then
  tar -C "$HERE" -xzf "$HERE/libs.tar.gz"
fi
export LD_LIBRARY_PATH="$HERE/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SUMMARY="$RES/summary.txt"
SANITIZER=$(command -v compute-sanitizer 2>/dev/null || true)
[ -z "$SANITIZER" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] &&
  SANITIZER=/usr/local/cuda/bin/compute-sanitizer
status=0

left() { echo $((START + BUDGET - $(date +%s))); }
# limit CAP RESERVE: a timeout of at most CAP seconds that leaves RESERVE for what follows.
limit() {
  t=$(($(left) - $2))
  [ "$t" -gt "$1" ] && t=$1
  echo "$t"
}
wants() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
# What each later part needs (H200, 2026-11-26: test_cuda_ops 38-46 s,
# test_devpath 5-6 s, bench_gemv 5 s before its chain lines, hf_compare
# 25 s, the benchmark 136 s with the anchor; an H100, ninth session:
# test_cuda_ops 69 s, test_devpath 8 s, hf_compare 30 s, the benchmark
# 153-158 s with the anchor, so give run.sh 300 s at least for every
# test and the anchor), with room, so that an earlier
# part's timeout leaves it: a shorter budget (session.sh's) then shortens
# the early parts instead of starving the benchmark.
NEED_BENCH=0 NEED_COMPARE=0 NEED_GEMV=0
wants bench && NEED_BENCH=$([ "${AS_GPU_ANCHOR:-1}" = 0 ] && echo 90 || echo 170)
wants compare && NEED_COMPARE=45
wants gemv && NEED_GEMV=30
AFTER_TESTS=$((NEED_GEMV + NEED_COMPARE + NEED_BENCH))
note() { echo "$*" >> "$SUMMARY"; }
# part NAME STATUS SECONDS DETAIL: one summary line; FAIL makes the run fail.
part() {
  note "$1: $2 ($3 s) $4"
  [ "$2" = FAIL ] && status=1
  return 0
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -n) $(uname -m)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  for f in /usr/local/cuda/lib64/libcublasLt.so*; do echo "cublasLt: $f"; done
  echo "python3: $(python3 --version 2>&1)"
  echo "parts: $PARTS (budget $BUDGET s, anchor ${AS_GPU_ANCHOR:-1})"
} > "$SUMMARY"

# Missing libraries: the bundled C++ runtime when the machine has none.
for f in "$HERE"/test_cuda_* "$HERE/bench_gemv" "$HERE/actorserve" "$HERE/test_devpath" "$HERE/libactorserve_cuda.so"; do
  [ -e "$f" ] || continue
  missing=$(ldd "$f" 2>&1 | grep "not found" || true)
  if [ -n "$missing" ] && [ -z "${AS_FALLBACK:-}" ]; then
    AS_FALLBACK=1
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$HERE/lib-fallback"
    note "$(basename "$f"): using the bundled C++ runtime for: $(echo "$missing" | tr -s ' \n' ' ')"
    missing=$(ldd "$f" 2>&1 | grep "not found" || true)
  fi
  [ -n "$missing" ] && note "$(basename "$f"): missing libraries: $(echo "$missing" | tr -s ' \n' ' ')"
done

# 1. tests
if wants tests; then
  found=0
  for bin in "$HERE"/test_cuda_*; do
    [ -x "$bin" ] || continue
    case "$bin" in *_emu) continue ;; esac # the CPU emulator's build, if one was copied here
    found=1
    name=$(basename "$bin")
    t=$(limit 120 $((AFTER_TESTS + 20)))
    if [ "$t" -lt 10 ]; then part "$name" FAIL 0 "no time left"; continue; fi
    s=$(date +%s)
    timeout "$t" "$bin" > "$RES/$name.log" 2>&1
    rc=$?
    last=$(tail -n 1 "$RES/$name.log")
    if [ $rc -eq 0 ] && ! grep -q "^skip " "$RES/$name.log"; then r=PASS; else r=FAIL; fi
    part "$name" $r $(($(date +%s) - s)) "rc=$rc: $last"
    # A failed test again under compute-sanitizer's memcheck (the first 3,
    # 60 s each, in-process): an out-of-bounds access or a misaligned load is
    # then named with its kernel, source line (-lineinfo) and thread.
    if [ $r = FAIL ] && [ -n "$SANITIZER" ]; then
      for tn in $(sed -n 's/^FAIL \(test_[a-z0-9_]*\)$/\1/p' "$RES/$name.log" | head -n 3); do
        t=$(limit 60 $((AFTER_TESTS + 20)))
        [ "$t" -lt 20 ] && break
        TEST_NOFORK=1 timeout "$t" "$SANITIZER" --tool memcheck --print-limit 10 \
          --error-exitcode 9 "$bin" "$tn" > "$RES/$name.$tn.memcheck.log" 2>&1
        echo "memcheck $name $tn: rc=$? ($name.$tn.memcheck.log)" >> "$SUMMARY"
      done
    fi
  done
  [ $found = 1 ] || part tests FAIL 0 "no test_cuda_* binary in the bundle"
  # The engine's whole device path on the GPU against the CPU path and the
  # transformers fixtures (tests/fixtures, models/tiny-kjv of the repository
  # this bundle sits in: AS_SOURCE_DIR).
  src=${AS_SOURCE_DIR:-$HERE/../..}
  if [ -x "$HERE/test_devpath" ] && [ -d "$src/tests/fixtures/models" ]; then
    t=$(limit 120 $AFTER_TESTS)
    s=$(date +%s)
    AS_TEST_DEVICE=cuda AS_SOURCE_DIR=$(cd "$src" && pwd) timeout "$t" "$HERE/test_devpath" \
      > "$RES/test_devpath.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && ! grep -q "^skip " "$RES/test_devpath.log"; then r=PASS; else r=FAIL; fi
    part test_devpath $r $(($(date +%s) - s)) "rc=$rc: $(tail -n 1 "$RES/test_devpath.log")"
  else
    part test_devpath FAIL 0 "no test_devpath in the bundle, or no repository at $src"
  fi
fi

# 2. gemv
if wants gemv; then
  if [ -x "$HERE/bench_gemv" ]; then
    t=$(limit 60 $((NEED_COMPARE + NEED_BENCH)))
    s=$(date +%s)
    timeout "$t" "$HERE/bench_gemv" > "$RES/bench_gemv.log" 2>&1
    rc=$?
    grep '^{' "$RES/bench_gemv.log" > "$RES/bench_gemv.jsonl" || true
    if [ $rc -eq 0 ] && ! grep -qi "^skip" "$RES/bench_gemv.log"; then r=PASS; else r=FAIL; fi
    part bench_gemv $r $(($(date +%s) - s)) \
      "rc=$rc, $(wc -l < "$RES/bench_gemv.jsonl") JSON lines: $({ grep recommended_gemv_rows "$RES/bench_gemv.log" || tail -n 1 "$RES/bench_gemv.log"; } | tail -n 1 | cut -c1-200)"
  else
    part bench_gemv FAIL 0 "no bench_gemv in the bundle"
  fi
fi

# python3 runs with the machine's own libraries (LD_LIBRARY_PATH as it was),
# our binary, started by the scripts, with the bundle's.
export ACTORSERVE_LD_LIBRARY_PATH="$LD_LIBRARY_PATH" ACTORSERVE_BIN="$HERE/actorserve" OUT="$RES"

# 3. compare
if wants compare; then
  t=$(limit 200 $NEED_BENCH)
  s=$(date +%s)
  if [ ! -x "$HERE/actorserve" ]; then
    part hf_compare FAIL 0 "no actorserve in the bundle"
  elif [ "$t" -lt 30 ]; then
    part hf_compare FAIL 0 "no time left ($t s)"
  else
    # shellcheck disable=SC2086 # options split into words
    timeout "$t" env LD_LIBRARY_PATH="$PY_LD_LIBRARY_PATH" python3 "$HERE/hf_compare.py" \
      --models-dir "$MODELS" --out "$RES" --timeout 120 ${AS_GPU_COMPARE_ARGS:-} \
      > "$RES/hf_compare.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then r=PASS; else r=FAIL; fi
    part hf_compare $r $(($(date +%s) - s)) \
      "rc=$rc: $(grep -E '^(PASS|FAIL) ' "$RES/hf_compare.out" | tr '\n' ';' | cut -c1-600)"
  fi
fi

# 4. bench
if wants bench; then
  t=$(limit 600 5)
  s=$(date +%s)
  if [ ! -x "$HERE/actorserve" ]; then
    part bench-llm FAIL 0 "no actorserve in the bundle"
  elif [ "$t" -lt 60 ]; then
    part bench-llm FAIL 0 "no time left ($t s)"
  else
    anchor=""
    [ "${AS_GPU_ANCHOR:-1}" = 0 ] && anchor="--no-anchor"
    rm -f "$RES/llm-gpu-summary.txt"
    # shellcheck disable=SC2086 # options split into words
    timeout "$t" env LD_LIBRARY_PATH="$PY_LD_LIBRARY_PATH" python3 "$HERE/llm_gpu.py" \
      --models-dir "$MODELS" --out "$RES" --deadline-s "$((t - 5))" $anchor ${AS_GPU_BENCH_ARGS:-} \
      > "$RES/llm_gpu.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then r=PASS; else r=FAIL; fi
    part bench $r $(($(date +%s) - s)) "rc=$rc (llm_gpu.out)"
    if [ -f "$RES/llm-gpu-summary.txt" ]; then
      sed 's/^/  /' "$RES/llm-gpu-summary.txt" >> "$SUMMARY"
    fi
  fi
fi

note "total: $(($(date +%s) - START)) s"
note "result: $([ $status = 0 ] && echo PASS || echo FAIL)"
cat "$SUMMARY"
exit $status

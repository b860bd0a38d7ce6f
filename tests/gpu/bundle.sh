#!/bin/sh
# bundle.sh BUILD DEST — collects what the GPU checks need to run on a bare
# CUDA machine (tests/gpu/run.sh), so that DEST alone suffices there:
#   - the test binaries of BUILD that use the device backend (test_cuda_*),
#     bench_gemv, the actorserve binary and the CUDA module it opens next to
#     itself (libactorserve_cuda.so), when BUILD has them;
#   - every shared library they load that such a machine may lack (libuv,
#     liblua, libcjson, libopenblas and its Fortran runtime...), found with
#     ldd, into DEST/lib. Left out: glibc's own libraries (the machine has
#     them) and the CUDA libraries (/usr/local/cuda/lib64 there:
#     libcublasLt.so.13 is ~500 MB). The C++ runtime goes to lib-fallback/,
#     used only where the machine has none (a newer one there must win: its
#     CUDA libraries need it);
#   - the scripts: run.sh, sweep.sh, session.sh, ncu_attention.sh, ncu_step.sh,
#     ncu_common.sh, hf_compare.py, ../../bench/llm_gpu.py, ../../tools/make_random_model.py,
#     and the transformers anchor
#     ../shared/anchors/hf_generate.py (outside the repository: copied when
#     present, else the benchmark runs without it).
# Called by `make gpu-bundle`.
set -eu
BUILD=${1:?usage: bundle.sh BUILD DEST}
DEST=${2:?usage: bundle.sh BUILD DEST}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
rm -rf "$DEST"
mkdir -p "$DEST/lib" "$DEST/lib-fallback"

# copy_with_libs FILE: FILE into DEST, the libraries it loads into lib/.
copy_with_libs() {
  cp "$1" "$DEST/"
  ldd "$1" | awk '/=> \// { print $3 }' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libresolv.so*) ;;
      libcuda.so*|libcudart*|libcublas*|libnvidia*) ;;
      libstdc++.so*|libgcc_s.so*) cp -L "$lib" "$DEST/lib-fallback/" ;; # only if missing there
      *) cp -L "$lib" "$DEST/lib/" ;;
    esac
  done
}

found=0
for bin in "$BUILD"/test_cuda_*; do
  [ -x "$bin" ] || continue
  case "$bin" in *_emu) continue ;; esac # the CPU emulator's build (tests/cudaemu): not for the GPU
  found=1
  copy_with_libs "$bin"
done
if [ "$found" = 0 ]; then
  echo "bundle.sh: no test_cuda_* binary in $BUILD (built without CUDA?)" >&2
  exit 1
fi
for bin in "$BUILD/bench_gemv" "$BUILD/actorserve" "$BUILD/test_devpath"; do
  if [ -x "$bin" ]; then
    copy_with_libs "$bin"
  else
    echo "bundle.sh: warning: no $bin: run.sh will report it missing" >&2
  fi
done
if [ -f "$BUILD/libactorserve_cuda.so" ]; then
  copy_with_libs "$BUILD/libactorserve_cuda.so"
else
  echo "bundle.sh: warning: no $BUILD/libactorserve_cuda.so: actorserve --device cuda will fail" >&2
fi

cp "$HERE/run.sh" "$HERE/sweep.sh" "$HERE/session.sh" "$HERE/ncu_attention.sh" \
   "$HERE/ncu_step.sh" "$HERE/ncu_common.sh" "$HERE/hf_compare.py" \
   "$ROOT/bench/llm_gpu.py" \
   "$ROOT/tools/make_random_model.py" "$DEST/"
ANCHOR="$ROOT/../shared/anchors/hf_generate.py"
if [ -f "$ANCHOR" ]; then
  cp "$ANCHOR" "$DEST/"
else
  echo "bundle.sh: warning: no $ANCHOR: the benchmark will run without the transformers anchor" >&2
fi
# The device tool carries at most 64 MiB: the libraries (OpenBLAS alone is
# 35 MB) and the binaries (~25 MB each with the kernels' machine code and
# PTX, ~7 MB compressed) travel as one gzip archive that run.sh, sweep.sh
# and ncu_attention.sh unpack beside themselves.
ls "$DEST/lib" "$DEST/lib-fallback"
BINS=$(cd "$DEST" && for f in test_cuda_* bench_gemv actorserve test_devpath libactorserve_cuda.so; do
  [ -f "$f" ] && echo "$f"; done)
# shellcheck disable=SC2086 # a list of plain file names
tar -C "$DEST" -czf "$DEST/libs.tar.gz" lib lib-fallback $BINS
# shellcheck disable=SC2086
(cd "$DEST" && rm -rf lib lib-fallback $BINS)
echo "gpu bundle: $DEST ($(du -sh "$DEST" | cut -f1)):"
ls "$DEST"

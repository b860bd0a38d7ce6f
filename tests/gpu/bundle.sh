#!/bin/sh
# bundle.sh BUILD DEST — collects what the GPU tests need to run on a bare
# CUDA machine (tests/gpu/run.sh): the test binaries of BUILD that use the
# device backend, and every shared library they load that such a machine may
# lack (libuv, liblua, libcjson, libopenblas and its Fortran runtime...),
# found with ldd. Left out: glibc's own libraries (the machine has them) and
# the CUDA libraries (/usr/local/cuda/lib64 there: libcublasLt.so.13 is
# ~500 MB). The C++ runtime goes to lib-fallback/, used only where the
# machine has none (a newer one there must win: its CUDA libraries need it).
# Called by `make gpu-bundle`.
set -eu
BUILD=${1:?usage: bundle.sh BUILD DEST}
DEST=${2:?usage: bundle.sh BUILD DEST}
rm -rf "$DEST"
mkdir -p "$DEST/lib" "$DEST/lib-fallback"
found=0
for bin in "$BUILD"/test_cuda_*; do
  [ -x "$bin" ] || continue
  found=1
  cp "$bin" "$DEST/"
  ldd "$bin" | awk '/=> \// { print $3 }' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libresolv.so*) ;;
      libcuda.so*|libcudart*|libcublas*|libnvidia*) ;;
      libstdc++.so*|libgcc_s.so*) cp -L "$lib" "$DEST/lib-fallback/" ;; # only if missing there
      *) cp -L "$lib" "$DEST/lib/" ;;
    esac
  done
done
if [ "$found" = 0 ]; then
  echo "bundle.sh: no test_cuda_* binary in $BUILD (built without CUDA?)" >&2
  exit 1
fi
cp "$(dirname "$0")/run.sh" "$DEST/"
echo "gpu bundle: $DEST ($(du -sh "$DEST" | cut -f1)):"
ls "$DEST" "$DEST/lib" "$DEST/lib-fallback"

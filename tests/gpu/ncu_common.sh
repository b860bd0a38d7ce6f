# ncu_common.sh — what ncu_step.sh and ncu_attention.sh share, sourced by
# them from the GPU bundle: RES (the result folder: $1, else $OUT, else
# ./gpu-results), MODELS, NCU, BINLIB (the bundle's libraries, unpacked
# once), and ncu_model SHAPE, which makes (or reuses) the random-weight
# model of SHAPE in $MODELS/SHAPE as sweep.sh does, logging to
# $RES/ncu-model-SHAPE.log; it fails with a message when that fails.
RES=${1:-${OUT:-./gpu-results}}
mkdir -p "$RES"
MODELS=${AS_GPU_MODELS:-/tmp/actorserve-gpu-models}
NCU=${NCU:-/usr/local/cuda/bin/ncu}
[ -d "$HERE/lib" ] || tar -C "$HERE" -xzf "$HERE/libs.tar.gz"
BINLIB="$HERE/lib:/usr/local/cuda/lib64"
ncu_model() {
  env LD_LIBRARY_PATH= python3 "$HERE/make_random_model.py" --shape "$1" --out "$MODELS/$1" \
    --device cuda --reuse > "$RES/ncu-model-$1.log" 2>&1 || {
    echo "$1: making the model failed"
    return 1
  }
}

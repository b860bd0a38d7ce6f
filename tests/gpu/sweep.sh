#!/bin/sh
# sweep.sh — decode speed of the engine under a list of settings, on the GPU
# machine, from the GPU bundle (`make gpu-bundle`; run.sh's neighbour): for
# each shape (random weights, made here as bench/llm_gpu.py makes them) and
# each variant (a name and environment settings), `actorserve bench-llm`
# at batches $AS_SWEEP_BATCH (default 1,8), prompt 128, $AS_SWEEP_NEW new
# tokens (default 64), no TTFT. Used to choose defaults (the GEMV and
# fusion rules, attention parts) and to time what one kind of op costs
# inside a captured step (ASK_PROFILE_SKIP leaves it out: the tokens are
# wrong, the time is right; docs/engine.md). ~3 s a variant and shape after
# the models are made. Writes sweep.jsonl (one line per variant, shape and
# batch) and sweep.txt into $OUT (or $1). Results of 2026-11-26:
# bench/results/gpu-h200-20261126-s2/, -s3/, -s6/ and gpu-h100-20261126-s9/
# (docs/benchmarks.md).
# The default list, most wanted first (a sweep cut short by AS_SWEEP_UNTIL
# loses the end): from the ninth session's defaults (the sixth's pipeline,
# fused gate and decode attention kernel, with the attention reading the
# cache before its PDL wait and so its decode kernel for every kv head
# count), the defaults before (attn_late), what each kind of op costs
# inside a step (ASK_PROFILE_SKIP: no_*; only_embed_sample: the fixed cost
# of a step and the host's turn, hidden by the pipeline, exposed without
# it), sampled decoding; then the knobs measured slower or even on an H100
# in the ninth session (bench/results/gpu-h100-20261126-s9/: the MLP as one
# launch, ASK_FUSE_MLP; the o product's first weights before its wait,
# ASK_CUDA_PW_EARLY=2; attention parts by bytes, ASK_CUDA_SPLIT_KB), to see
# them again on another card; last, the settings measured in the sixth
# session (the chained layer, argmax in one block a row, lm_head on the
# persistent kernel, early weights everywhere, short steps). In a
# rehearsal on the emulated backend the early-load variants fail by
# design: its device memory is all guarded before the PDL wait (its
# backend keeps the attention's early reads off unless asked for).
#   AS_SWEEP_SHAPES   default "llama-3.2-1b gemma-2b"
#   AS_SWEEP_UNTIL    a time (seconds since the epoch) after which no variant starts
#   AS_SWEEP_PROMPT   prompt tokens (128); AS_SWEEP_MODEL_DEVICE: where torch makes
#                     the models (cuda; cpu for a rehearsal on the emulated backend)
#   AS_SWEEP_VARIANTS default: the list below, one "name ENV=V ... --option v" a
#                     line (NAME=V to the environment, the rest to bench-llm)
HERE=$(cd "$(dirname "$0")" && pwd)
RES=${1:-${OUT:-./gpu-results}}
mkdir -p "$RES"
MODELS=${AS_GPU_MODELS:-/tmp/actorserve-gpu-models}
BATCH=${AS_SWEEP_BATCH:-1,8}
NEW=${AS_SWEEP_NEW:-64}
PROMPT=${AS_SWEEP_PROMPT:-128}
[ -d "$HERE/lib" ] || tar -C "$HERE" -xzf "$HERE/libs.tar.gz"
BINLIB="$HERE/lib:/usr/local/cuda/lib64"
VARIANTS=${AS_SWEEP_VARIANTS:-"default
attn_late ASK_CUDA_ATTN_EARLY=0
attn_grouped ASK_CUDA_ATTN_DECODE=0
no_attention ASK_PROFILE_SKIP=attention
no_o ASK_PROFILE_SKIP=o
no_qkv ASK_PROFILE_SKIP=qkv
no_gate_up ASK_PROFILE_SKIP=gate_up
no_down ASK_PROFILE_SKIP=down
no_lm_head ASK_PROFILE_SKIP=lm_head
only_embed_sample ASK_PROFILE_SKIP=norm,qkv,rope_kv,attention,o,gate_up,glu,down,final_norm,lm_head
only_embed_sample_nopipe ASK_PIPELINE=0 ASK_PROFILE_SKIP=norm,qkv,rope_kv,attention,o,gate_up,glu,down,final_norm,lm_head
sampled_p095 --temperature 0.8 --top-p 0.95
sampled_k50 --temperature 0.8 --top-k 50
split_min_32 ASK_CUDA_SPLIT_MIN=32
split_kb_32 ASK_CUDA_SPLIT_KB=32
mlp ASK_FUSE_MLP=1
mlp16 ASK_FUSE_MLP=1 ASK_CUDA_MLP_WARPS=16
pw_early_attn ASK_CUDA_PW_EARLY=2
split_kb_64 ASK_CUDA_SPLIT_KB=64
split_min_16 ASK_CUDA_SPLIT_MIN=16
pw1_early ASK_CUDA_GEMV_PW=1 ASK_CUDA_PW_EARLY=1
old_defaults ASK_PIPELINE=0 ASK_CUDA_FUSE_GATE=0 ASK_CUDA_ATTN_DECODE=0 ASK_CUDA_ATTN_EARLY=0
chain ASK_CUDA_CHAIN=1
argmax_one_block ASK_CUDA_ARGMAX_PARTS=1
lm_head_pw ASK_CUDA_GEMV_MAX_N=1000000
pw2_early ASK_CUDA_PW_EARLY=1
pw_u4 ASK_CUDA_PW_UMAX=4"}
: > "$RES/sweep.jsonl"
# The models first; then each variant on every shape, so that running out
# of time (AS_SWEEP_UNTIL) cuts whole variants, the last of the list.
SHAPES=
for shape in ${AS_SWEEP_SHAPES:-llama-3.2-1b gemma-2b}; do
  env LD_LIBRARY_PATH= python3 "$HERE/make_random_model.py" --shape "$shape" \
    --out "$MODELS/$shape" --device "${AS_SWEEP_MODEL_DEVICE:-cuda}" --reuse \
    > "$RES/sweep-model-$shape.log" 2>&1 && SHAPES="$SHAPES $shape" ||
    echo "$shape: making the model failed (sweep-model-$shape.log)"
done
echo "$VARIANTS" | while read -r name settings; do
  [ -n "$name" ] || continue
  if [ -n "${AS_SWEEP_UNTIL:-}" ] && [ "$(date +%s)" -ge "$AS_SWEEP_UNTIL" ]; then
    echo "$name: skipped (AS_SWEEP_UNTIL passed)" | tee -a "$RES/sweep.txt"
    continue
  fi
  envs= args= # NAME=V settings go to the environment, --options to bench-llm
  for tok in $settings; do
    case $tok in -*) args="$args $tok" ;; *=*) envs="$envs $tok" ;; *) args="$args $tok" ;; esac
  done
  set_=$(echo "$settings" | tr -d '"\\')
  for shape in $SHAPES; do
    out=$(env $envs LD_LIBRARY_PATH="$BINLIB" timeout 120 "$HERE/actorserve" bench-llm \
      "$MODELS/$shape" --device cuda --batch "$BATCH" --prompt-tokens "$PROMPT" \
      --new-tokens "$NEW" --ttft none $args 2>&1)
    rc=$?
    echo "$out" | grep '^{"bench": "decode"' | sed "s/^{/{\"variant\": \"$name\", \"settings\": \"$set_\", \"shape\": \"$shape\", \"rc\": $rc, /" >> "$RES/sweep.jsonl"
    line="$shape $name rc=$rc:"
    for b in $(echo "$BATCH" | tr ',' ' '); do
      t=$(echo "$out" | grep "\"batch\": $b," | grep '"decode"' | sed 's/.*"tok_s": \([0-9.]*\).*"step_ms": \([0-9.]*\).*/\1 tok\/s \2 ms/' | head -n 1)
      line="$line b$b ${t:-?}"
    done
    echo "$line" | tee -a "$RES/sweep.txt"
    [ $rc = 0 ] || echo "$out" | tail -n 3 | sed 's/^/    /' | tee -a "$RES/sweep.txt"
  done
done

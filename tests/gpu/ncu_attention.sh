#!/bin/sh
# ncu_attention.sh — where a decode attention launch spends its time, with
# Nsight Compute (the device machine has ncu, no nsys): for each shape
# (random weights as sweep.sh makes them), `actorserve generate` at batch 1
# with a 130-token prompt, op by op (ASK_NO_GRAPHS=1), and ncu on 2
# attention launches of the decode steps: duration, launch shape, warp
# stall reasons (WarpStateStats) and the SASS lines with the most stall
# samples (SourceCounters). Run from the GPU bundle (`make gpu-bundle`):
#   sh build/gpu-bundle/ncu_attention.sh $OUT
# Writes ncu-attn-<shape>.txt (the sections) and ncu-attn-<shape>-src.csv
# (per-instruction samples) into $1, and prints a summary. ~30 s a shape.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/ncu_common.sh"
IDS=$(seq -s, 5 134)
for shape in ${AS_NCU_SHAPES:-llama-3.2-1b gemma-2b}; do
  d="$MODELS/$shape"
  ncu_model "$shape" || continue
  # the prompt's layers first (prefill attention has another name), then
  # decode launches: skip the first decode step's
  env LD_LIBRARY_PATH="$BINLIB" ASK_NO_GRAPHS=1 timeout 150 "$NCU" --clock-control none \
    -k regex:attention_paged --launch-skip 40 --launch-count 2 \
    --section LaunchStats --section Occupancy --section SpeedOfLight --section WarpStateStats \
    --section SourceCounters -o "$RES/ncu-attn-$shape" -f \
    "$HERE/actorserve" generate "$d" --ids "$IDS" --max-new-tokens 8 --temperature 0 \
    --ignore-eos --device cuda --kv-tokens 4096 > "$RES/ncu-attn-$shape.log" 2>&1
  echo "$shape: ncu rc=$?"
  "$NCU" -i "$RES/ncu-attn-$shape.ncu-rep" --print-summary none > "$RES/ncu-attn-$shape.txt" 2>&1
  grep -E "attention|Duration|Grid Size|Block Size|Registers|Achieved Occupancy|Stall|Warp Cycles Per Issued|Issued Warp" \
    "$RES/ncu-attn-$shape.txt" | head -n 40
  "$NCU" -i "$RES/ncu-attn-$shape.ncu-rep" --page source --csv --print-source sass \
    > "$RES/ncu-attn-$shape-src.csv" 2>/dev/null
  rm -f "$RES/ncu-attn-$shape.ncu-rep"
done

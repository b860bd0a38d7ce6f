#!/bin/sh
# ncu_step.sh — per-kernel device times of about one decode step (Llama-3.2-1B
# shape, batch 1, launched op by op) with Nsight Compute (ncu; the device
# machine has no nsys), at the card's own clocks, caches flushed before each
# kernel (ncu's default). Run from the repository root on the GPU machine
# after `make gpu-bundle` here (device tool: carry build/gpu-bundle and copy
# this file into it, or run it in place); writes ncu.csv into $OUT. ~30 s.
# Summary of 2026-11-26 (H200): docs/benchmarks.md.
B=build/gpu-bundle
[ -d "$B/lib" ] || tar -C "$B" -xzf "$B/libs.tar.gz"
export LD_LIBRARY_PATH="$PWD/$B/lib:/usr/local/cuda/lib64"
env LD_LIBRARY_PATH= python3 "$B/make_random_model.py" --shape llama-3.2-1b --out /tmp/m --device cuda > "$OUT/model.log" 2>&1
echo "model rc=$?"
ASK_NO_GRAPHS=1 timeout 120 /usr/local/cuda/bin/ncu --clock-control none --launch-skip 300 --launch-count 100 \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv \
  "$B/actorserve" generate /tmp/m --ids 5,6,7 --max-new-tokens 6 --temperature 0 --ignore-eos \
  --device cuda --kv-tokens 4096 > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
echo "ncu rc=$?"
tail -n 3 "$OUT/ncu.err"; wc -l "$OUT/ncu.csv"; head -c 1500 "$OUT/ncu.csv"

#!/bin/sh
# ncu_step.sh — what each kernel of one decode step at batch 1 costs alone,
# with Nsight Compute (the device machine has ncu, no nsys): for each shape
# (random weights as sweep.sh makes them), `actorserve generate` with a
# 16-token prompt and 2 new tokens, op by op (ASK_NO_GRAPHS=1), every
# kernel under ncu with its caches flushed first (ncu's default), so each
# reads its weights cold: its duration and DRAM bytes. The summary takes
# the last decode step (the kernels from the last embedding launch on) and
# prints, per kernel name, the launches, microseconds, MB read and GB/s,
# then the step's sum against the time its bytes take at $AS_NCU_GBPS
# (default 4,274: the sixth session's measured copy bandwidth on an H200).
# The sum of kernels alone, against the captured step's time (bench-llm),
# says how much of a step is inside the kernels (their ramps and tails)
# and how much between them. Run from the GPU bundle (`make gpu-bundle`):
#   sh build/gpu-bundle/ncu_step.sh $OUT
# Writes ncu-step-<shape>.csv (ncu's metrics) and ncu-step-<shape>.txt (the
# summary) into $1. ~30-60 s a shape.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/ncu_common.sh"
for shape in ${AS_NCU_SHAPES:-llama-3.2-1b gemma-2b}; do
  d="$MODELS/$shape"
  ncu_model "$shape" || continue
  env LD_LIBRARY_PATH="$BINLIB" ASK_NO_GRAPHS=1 timeout 240 "$NCU" --clock-control none \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --launch-count 2000 \
    "$HERE/actorserve" generate "$d" --ids "$(seq -s, 5 20)" --max-new-tokens 2 \
    --temperature 0 --ignore-eos --device cuda --kv-tokens 4096 \
    > "$RES/ncu-step-$shape.csv" 2> "$RES/ncu-step-$shape.err"
  echo "$shape: ncu rc=$?"
  env LD_LIBRARY_PATH= python3 - "$RES/ncu-step-$shape.csv" "${AS_NCU_GBPS:-4274}" \
    > "$RES/ncu-step-$shape.txt" 2>&1 <<'EOF'
import csv, re, sys
path, gbps = sys.argv[1], float(sys.argv[2])
rows = {}
with open(path, newline="") as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    k = rows.setdefault(int(r["ID"]), {"name": r["Kernel Name"]})
    k[r["Metric Name"]] = float(r["Metric Value"].replace(",", ""))
ids = sorted(rows)
starts = [i for i in ids if "ask__k_embedding" in rows[i]["name"]]
if not starts:
    sys.exit("no embedding launch: no step to take")
step = [rows[i] for i in ids if i >= starts[-1]]
def short(name):
    name = re.sub(r"\(.*$", "", name.replace("void ", ""))
    return name[:60]
agg = {}
for k in step:
    a = agg.setdefault(short(k["name"]), [0, 0.0, 0.0])
    a[0] += 1
    a[1] += k.get("gpu__time_duration.sum", 0) / 1e3
    a[2] += k.get("dram__bytes_read.sum", 0) / 1e6
print("%-60s %5s %10s %10s %8s" % ("kernel", "n", "us", "MB read", "GB/s"))
for name, (n, us, mb) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print("%-60s %5d %10.1f %10.1f %8.0f" % (name, n, us, mb, mb / us * 1e3 if us else 0))
us = sum(a[1] for a in agg.values())
mb = sum(a[2] for a in agg.values())
print("step: %d kernels, %.1f us alone, %.1f MB read; at %.0f GB/s the bytes take %.1f us "
      "(%.1f%% of the kernels' time)" % (len(step), us, mb, gbps, mb / gbps * 1e3,
                                         100 * mb / gbps * 1e3 / us))
EOF
  cat "$RES/ncu-step-$shape.txt"
done

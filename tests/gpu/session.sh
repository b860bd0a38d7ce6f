#!/bin/sh
# session.sh [OUT] — a tuning session's device work in one call, from the
# GPU bundle (`make gpu-bundle`): the sweep of candidate settings
# (sweep.sh, batches 1 and 8, both shapes), the choice of the fastest one
# that beats the defaults, then every GPU check and the benchmark under it
# (run.sh). The candidates are the sweep's setting variants (not the
# no_*/only_* ones, which leave ops out, nor the sampled ones); one wins
# when, on every shape, batch 1 is at least 0.5% faster than the defaults
# and batch 8 at most 2% slower; of those, the best product of the batch-1
# ratios. The choice is only applied to this run: make it the default in
# the code afterwards (backend.c), with the figures.
#   OUT/sweep/   sweep.jsonl, sweep.txt            OUT/run/   run.sh's files
#   OUT/choice.txt  the ratios of every candidate and the choice
# Environment: AS_SESSION_BUDGET_S (default 570) for the whole call; no
# sweep variant starts after AS_SESSION_SWEEP_S (default 200; one runs
# ~3-5 s, at most 120), run.sh gets the rest (~360 s: the tests ~1 min,
# bench_gemv, hf_compare and the benchmark ~3 min), without the
# transformers anchor (~80 s more) unless AS_GPU_ANCHOR=1 (its figures from
# an earlier run on the same kind of GPU serve for the ratios);
# AS_SWEEP_* pass through to sweep.sh; AS_SESSION_NCU=1 runs ncu_step.sh
# before the sweep (its time counts in the budget).
# With the device tool: run(command="sh build/gpu-bundle/session.sh",
# carry=["build/gpu-bundle"], timeout_s=600).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RES=${1:-${OUT:-./gpu-results}}
mkdir -p "$RES/sweep" "$RES/run"
START=$(date +%s)
BUDGET=${AS_SESSION_BUDGET_S:-570}
SWEEP_S=${AS_SESSION_SWEEP_S:-200}

# Nsight Compute on one decode step a shape first, when asked for
# (AS_SESSION_NCU=1, ~1-2 min): ncu_step.sh's per-kernel table in OUT/ncu/.
if [ "${AS_SESSION_NCU:-0}" = 1 ]; then
  echo "== ncu_step.sh"
  sh "$HERE/ncu_step.sh" "$RES/ncu"
fi

echo "== sweep (variants start until $SWEEP_S s have passed)"
AS_SWEEP_UNTIL=$(($(date +%s) + SWEEP_S)) sh "$HERE/sweep.sh" "$RES/sweep"
echo "sweep: rc=$? after $(($(date +%s) - START)) s"

# variant settings shape batch tok_s, one a line, from sweep.jsonl
sed -n 's/^{"variant": "\([^"]*\)", "settings": "\([^"]*\)", "shape": "\([^"]*\)", "rc": 0, .*"batch": \([0-9]*\),.*"tok_s": \([0-9.]*\).*/\1|\2|\3|\4|\5/p' \
  "$RES/sweep/sweep.jsonl" > "$RES/sweep/table.txt"
awk -F'|' '
  { t[$1 "|" $3 "|" $4] = $5; set[$1] = $2; shapes[$3] = 1; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
  END {
    best = ""; bscore = 0
    for (i = 0; i < n; i++) {
      v = order[i]
      if (v == "default" || v ~ /^(no_|only_|sampled)/ || set[v] ~ /--/) continue
      ok = 1; score = 1; line = v ":"
      for (s in shapes) {
        d1 = t["default|" s "|1"]; v1 = t[v "|" s "|1"]
        d8 = t["default|" s "|8"]; v8 = t[v "|" s "|8"]
        if (d1 == "" || v1 == "" || d1 + 0 <= 0) { ok = 0; line = line " " s " missing"; continue }
        r1 = v1 / d1; score *= r1
        line = line sprintf(" %s b1 %.3f", s, r1)
        if (r1 < 1.005) ok = 0
        if (d8 != "" && v8 != "" && d8 + 0 > 0) {
          line = line sprintf(" b8 %.3f", v8 / d8)
          if (v8 / d8 < 0.98) ok = 0
        }
      }
      print line (ok ? " (a candidate)" : "")
      if (ok && score > bscore) { bscore = score; best = v }
    }
    if (best == "") print "choice: default"
    else print "choice: " best " | " set[best]
  }' "$RES/sweep/table.txt" > "$RES/choice.txt"
cat "$RES/choice.txt"
SETTINGS=$(sed -n 's/^choice: [^|]*| *//p' "$RES/choice.txt")

LEFT=$((START + BUDGET - $(date +%s)))
echo "== run.sh with: ${SETTINGS:-the defaults} ($LEFT s left)"
env $SETTINGS AS_GPU_ANCHOR="${AS_GPU_ANCHOR:-0}" AS_GPU_BUDGET_S=$((LEFT - 5)) \
  sh "$HERE/run.sh" "$RES/run"
rc=$?
echo "== summary"
cat "$RES/run/summary.txt" 2>/dev/null
echo "settings: ${SETTINGS:-the defaults}"
exit $rc

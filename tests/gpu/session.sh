#!/bin/sh
# session.sh [OUT] — a tuning session's device work in one call, from the
# GPU bundle (`make gpu-bundle`): the sweep of candidate settings
# (sweep.sh, batches 1 and 8, both shapes), the choice of the fastest one
# that beats the defaults, then every GPU check and the benchmark under it
# (run.sh). The candidates are the sweep's setting variants (not the
# no_*/only_* ones, which leave ops out, nor the sampled ones); one is a
# candidate when the product of its batch-1 ratios to the defaults over
# the shapes is at least 1.005, no shape's batch 1 is more than 0.5%
# slower (a knob may serve one shape only) and no batch 8 more than 2%;
# the best product wins. The other candidates that set other variables
# are then joined to it, and the combination, timed again beside the best
# alone, replaces it if it is 0.3% faster. The choice is only applied to
# this run: make it the default in the code afterwards (backend.c), with
# the figures.
#   OUT/sweep/   sweep.jsonl, sweep.txt            OUT/run/   run.sh's files
#   OUT/choice.txt  the ratios of every candidate and the choice
#   OUT/combo/      the combination's sweep (when there was one)
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

# variant settings shape batch tok_s, one a line, from a sweep.jsonl
table() {
  sed -n 's/^{"variant": "\([^"]*\)", "settings": "\([^"]*\)", "shape": "\([^"]*\)", "rc": 0, .*"batch": \([0-9]*\),.*"tok_s": \([0-9.]*\).*/\1|\2|\3|\4|\5/p' "$1"
}
# Ratios of every variant to the table's reference variant ($2), and the
# candidates: batch 1 on no shape more than 0.5% slower, their product at
# least 1.005, batch 8 at most 2% slower. Prints a line a variant, then
# "cand: score|name|settings" for each candidate, best first.
ratios() {
  awk -F'|' -v ref="$2" '
  { t[$1 "|" $3 "|" $4] = $5; set[$1] = $2; shapes[$3] = 1; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
  END {
    for (i = 0; i < n; i++) {
      v = order[i]
      if (v == ref || v ~ /^(default|no_|only_|sampled)/ || set[v] ~ /--/) continue
      ok = 1; score = 1; line = v ":"
      for (s in shapes) {
        d1 = t[ref "|" s "|1"]; v1 = t[v "|" s "|1"]
        d8 = t[ref "|" s "|8"]; v8 = t[v "|" s "|8"]
        if (d1 == "" || v1 == "" || d1 + 0 <= 0) { ok = 0; line = line " " s " missing"; continue }
        r1 = v1 / d1; score *= r1
        line = line sprintf(" %s b1 %.3f", s, r1)
        if (r1 < 0.995) ok = 0
        if (d8 != "" && v8 != "" && d8 + 0 > 0) {
          line = line sprintf(" b8 %.3f", v8 / d8)
          if (v8 / d8 < 0.98) ok = 0
        }
      }
      if (score < 1.005) ok = 0
      print line sprintf(" (product %.3f)", score) (ok ? " (a candidate)" : "")
      if (ok) printf "cand: %.5f|%s|%s\n", score, v, set[v] | "sort -r"
    }
    fflush(); close("sort -r")
  }' "$1"
}
table "$RES/sweep/sweep.jsonl" > "$RES/sweep/table.txt"
ratios "$RES/sweep/table.txt" default > "$RES/choice.txt"
BEST=$(sed -n 's/^cand: [^|]*|\([^|]*\)|.*/\1/p' "$RES/choice.txt" | head -n 1)
SETTINGS=$(sed -n 's/^cand: [^|]*|[^|]*|//p' "$RES/choice.txt" | head -n 1)
# The candidates that set other variables than the best one joined to it,
# and the combination timed against the best alone and the defaults again
# (~30 s); it is chosen if it beats the best alone by 0.3%.
if [ -n "$BEST" ]; then
  names() { echo "$1" | tr ' ' '\n' | sed -n 's/=.*//p'; }
  COMBO=$SETTINGS
  for set_ in $(sed -n 's/^cand: [^|]*|[^|]*|//p' "$RES/choice.txt" | sed 1d | tr ' ' ','); do
    set_=$(echo "$set_" | tr ',' ' ')
    clash=0
    for n_ in $(names "$set_"); do
      names "$COMBO" | grep -qx "$n_" && clash=1
    done
    [ $clash = 0 ] && COMBO="$COMBO $set_"
  done
  if [ "$COMBO" != "$SETTINGS" ]; then
    echo "== combination: $COMBO"
    mkdir -p "$RES/combo"
    AS_SWEEP_VARIANTS="default_again
best $SETTINGS
combo $COMBO" sh "$HERE/sweep.sh" "$RES/combo"
    table "$RES/combo/sweep.jsonl" > "$RES/combo/table.txt"
    ratios "$RES/combo/table.txt" default_again > "$RES/combo/choice.txt"
    cat "$RES/combo/choice.txt" >> "$RES/choice.txt"
    sb=$(sed -n 's/^cand: \([^|]*\)|best|.*/\1/p' "$RES/combo/choice.txt")
    sc=$(sed -n 's/^cand: \([^|]*\)|combo|.*/\1/p' "$RES/combo/choice.txt")
    if [ -n "$sc" ] && awk -v a="$sc" -v b="${sb:-0}" 'BEGIN { exit !(a > b * 1.003) }'; then
      BEST=combination SETTINGS=$COMBO
    fi
  fi
fi
echo "choice: ${BEST:-default}${SETTINGS:+ | $SETTINGS}" >> "$RES/choice.txt"
cat "$RES/choice.txt"

LEFT=$((START + BUDGET - $(date +%s)))
echo "== run.sh with: ${SETTINGS:-the defaults} ($LEFT s left)"
env $SETTINGS AS_GPU_ANCHOR="${AS_GPU_ANCHOR:-0}" AS_GPU_BUDGET_S=$((LEFT - 5)) \
  sh "$HERE/run.sh" "$RES/run"
rc=$?
echo "== summary"
cat "$RES/run/summary.txt" 2>/dev/null
echo "settings: ${SETTINGS:-the defaults}"
exit $rc

#!/usr/bin/env bash
# The manager decision benchmark on the packaged SmolLM2-135M: every protocol on the dev split (to choose
# the default) and on the held-out test split (the committed comparison). Resumable: rerun after a stop.
# Raw outputs stay in $RUNS (they may quote LoCoMo); summaries and reports go to benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-$HOME/memory-r1-runs/manager-decisions}
PY=${PY:-.venv/bin/python}
RESULTS=benchmarks/results/manager-decisions-smollm2
# Cheapest protocols first (v3 answers in ~11 tokens, v1 in ~87), so a stopped run has the most to show;
# the last pass runs all three (finished protocols are loaded, not rerun) and writes the combined report.
run() {  # split protocol...
  local split=$1 ps=()
  shift
  for p in "$@"; do ps+=(-p "$p"); done
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 ${LOCK:-flock /tmp/heavy.lock} "$PY" -m memory_r1.cli eval manager \
    --model smollm2-135m-instruct "${ps[@]}" --split "$split" \
    --max-new-tokens 160 --batch-size 16 --out "$RUNS/$split"
}
for split in ${SPLITS:-dev test}; do run "$split" manage-v3 manage-v2; done
for split in ${SPLITS:-dev test}; do
  run "$split" manage-v1 manage-v2 manage-v3
  mkdir -p "$RESULTS/$split"
  cp "$RUNS/$split"/report.md "$RUNS/$split"/*.png "$RESULTS/$split/"
  for p in manage-v1 manage-v2 manage-v3; do cp "$RUNS/$split/$p/summary.json" "$RESULTS/$split/$p.json"; done
done

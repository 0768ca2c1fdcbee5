#!/usr/bin/env bash
# The committed validation run (issue #3): SmolLM2-135M-Instruct on conv-30 for memory-r1, prompted and rag.
# Resumable: rerun the same command after an interruption. One torch thread: as fast as two for a 135M model
# on this 2-core machine, and immune to the OpenMP slowdown when another process shares the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# Runs and banks live outside the work tree (RUNS), so a fresh checkout can resume them.
runs=${RUNS:-$HOME/memory-r1-runs}
out=benchmarks/results/eval-val-smollm2
for system in memory-r1 prompted rag; do
  .venv/bin/memory-r1 eval --split val --system "$system" --out "$runs/eval/val-$system" --banks "$runs/banks"
done
for system in memory-r1 prompted rag; do  # summaries only: results.jsonl quotes LoCoMo (CC BY-NC), kept out
  mkdir -p "$out/$system"
  cp "$runs/eval/val-$system/summary.json" "$out/$system/"
done
.venv/bin/memory-r1 report "$out/memory-r1" "$out/prompted" "$out/rag" --out "$out"

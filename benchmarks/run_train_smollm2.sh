#!/usr/bin/env bash
# The committed training benchmark (issue #4): SmolLM2-135M-Instruct, cpu-small preset, on this 2-core machine.
#
#   1. datasets on conv-26 sessions 1-6 (108 turns, 45 linked questions): one SmolLM2 teacher pass gives the
#      manager snapshots and, reused, the Answer Agent's bank; validation tuples from the conv-30 bank that
#      benchmarks/run_eval_val.sh built (run that first).
#   2. Answer Agent: GRPO and PPO; Memory Manager: a shorter GRPO run.
#   3. base versus trained on conv-30 with the evaluation harness (answers: all 81 questions on the shared
#      base bank; manager: sessions 1-3, re-ingested by the trained manager).
#
# Steps: the cpu-small preset's 20 did not fit beside the #3 evaluation on 2 cores (an answer update over
# 8 rollouts of ~1.3k tokens took a median 164 s, PPO with its critic 321 s), so the committed runs use
# 10 GRPO / 5 PPO / 10 manager steps, with validation on 40 conv-30 tuples every 5 / 4 steps.
# Reward F1 instead of the paper's EM: the untrained 135M model almost never answers exactly, so EM groups are
# all zero and carry no gradient. Resumable: rerun the same command; finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
runs=${RUNS:-$HOME/memory-r1-runs}
data=${LOCOMO:-../shared/data/locomo/locomo10.json}
out=benchmarks/results/train-smollm2
mr1=.venv/bin/memory-r1
stage=${1:-all}  # all | data | answer-grpo | answer-ppo | manager-grpo | eval

copy_bank() {  # a consistent copy of a WAL-mode bank, even while another process has it open
  [ -e "$2" ] || .venv/bin/python -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "$1" "$2"
}

datasets() {
  $mr1 data build-manager --data "$data" --conversation conv-26 --sessions 1-6 --out "$runs/data/manager-conv26"
  mkdir -p "$runs/data/answer-conv26" "$runs/data/answer-conv30"
  copy_bank "$runs/data/manager-conv26/teacher.db" "$runs/data/answer-conv26/bank.db"
  $mr1 data build-answer --data "$data" --conversation conv-26 --sessions 1-6 --out "$runs/data/answer-conv26"
  local banks=("$runs"/banks/conv-30-memories-*.db)  # the base bank: run before the trained manager adds another
  [ ${#banks[@]} -eq 1 ] || [ -e "$runs/data/answer-conv30/bank.db" ] || { echo "expected one conv-30 bank: ${banks[*]}" >&2; exit 1; }
  local val_bank=${banks[0]}
  copy_bank "$val_bank" "$runs/data/answer-conv30/bank.db"
  $mr1 data build-answer --data "$data" --conversation conv-30 --out "$runs/data/answer-conv30"
}

train() {  # agent algo extra-args...
  local agent=$1 algo=$2 dir="$runs/train/$1-$2"
  shift 2
  [ -e "$dir/final/config.json" ] && return
  local resume=()
  [ -e "$dir/checkpoint/state.pt" ] && resume=(--resume)
  $mr1 train "$agent" --algo "$algo" --preset cpu-small --reward f1 --out "$dir" "${resume[@]}" "$@"
}

answer() {  # algo
  local steps=10 every=5
  [ "$1" = ppo ] && steps=5 every=4
  train answer "$1" --dataset "$runs/data/answer-conv26" --val-dataset "$runs/data/answer-conv30" \
    --steps $steps --val-every $every
}

evaluate() {
  local val=(--split val --data "$data" --banks "$runs/banks")
  $mr1 eval "${val[@]}" --system memory-r1 --out "$runs/eval/val-memory-r1"
  for algo in grpo ppo; do
    $mr1 eval "${val[@]}" --system memory-r1 --answer-model "$runs/train/answer-$algo/final" --out "$runs/eval/val-answer-$algo"
  done
  $mr1 eval "${val[@]}" --sessions 1-3 --system memory-r1 --out "$runs/eval/val-s1-3-manager-base"
  $mr1 eval "${val[@]}" --sessions 1-3 --system memory-r1 --manager-model "$runs/train/manager-grpo/final" \
    --out "$runs/eval/val-s1-3-manager-grpo"
  for run in val-memory-r1 val-answer-grpo val-answer-ppo val-s1-3-manager-base val-s1-3-manager-grpo; do
    mkdir -p "$out/$run" && cp "$runs/eval/$run/summary.json" "$out/$run/"  # summaries only (LoCoMo is CC BY-NC)
  done
  for run in answer-grpo answer-ppo manager-grpo; do
    mkdir -p "$out/$run" && cp "$runs/train/$run/"{metrics.jsonl,training_curves.png,config.json} "$out/$run/"
  done
  $mr1 report "$out/val-memory-r1" "$out/val-answer-grpo" "$out/val-answer-ppo" --out "$out/answer"
  $mr1 report "$out/val-s1-3-manager-base" "$out/val-s1-3-manager-grpo" --out "$out/manager"
}

case $stage in
  all) datasets
       answer grpo
       answer ppo
       train manager grpo --dataset "$runs/data/manager-conv26" --data "$data" --steps 10
       evaluate ;;
  data) datasets ;;
  answer-grpo|answer-ppo) answer "${stage#answer-}" ;;
  manager-grpo) train manager grpo --dataset "$runs/data/manager-conv26" --data "$data" --steps 10 ;;
  eval) evaluate ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac

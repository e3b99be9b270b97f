#!/usr/bin/env bash
# The dependency bundle for the GPU check (benchmarks/gpu_path.py) on a lent device machine,
# which has no network and takes at most 64 MiB of carried files (ignored paths).
#   bash scripts/device_bundle.sh [OUT] [PYTHON_VERSION]   # default build/device-bundle, 3.11
# It holds, for that Python on manylinux x86_64:
#   wheels/   everything gpu_path imports except torch (the device keeps its own CUDA build):
#             transformers and its deps, deepspeed (PyPI ships only its sdist: built here into a
#             pure-Python wheel, no ops compiled) and its deps, pydantic, pyyaml, safetensors;
#   requirements.txt  what to install from wheels/ (pip skips what the device already has);
#   cache/models/SmolLM2-135M-Instruct/  the SmolLM2 tokenizer and config, no weights (the
#             check builds random-weight models with that tokenizer): SOFTVERIFY_CACHE points here.
# On the device: bash scripts/device_gpu_check.sh build/device-bundle OUTDIR (carry build/device-bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/device-bundle}
PYV=${2:-3.11}
PY=${PYTHON:-python3}
rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/cache/models"
echo "$PYV" > "$OUT/python_version"
cat > "$OUT/requirements.txt" <<REQ
transformers==5.23.0
deepspeed==0.19.8
pydantic>=2.10,<3
pyyaml>=6
safetensors==0.8.0
numpy>=1.26
REQ
$PY -m pip wheel -q --disable-pip-version-check --no-deps -w "$OUT/wheels" "deepspeed==0.19.8"
# deepspeed's own requirements less torch, and the rest, as binary wheels for the device's Python
$PY -m pip download -q --disable-pip-version-check -d "$OUT/wheels" --only-binary=:all: \
  --python-version "$PYV" --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  "transformers==5.23.0" "pydantic>=2.10,<3" "pyyaml>=6" "safetensors==0.8.0" "numpy>=1.26" \
  einops hjson msgpack ninja "packaging>=20.0" psutil py-cpuinfo tqdm
# the tokenizer: from the converted SmolLM2 in this machine's cache (made once from the wheel)
SRC=$($PY -c 'from softverify.model.names import resolve_model_path; print(resolve_model_path("smollm2"))')
DST="$OUT/cache/models/SmolLM2-135M-Instruct"
mkdir -p "$DST"
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja special_tokens_map.json; do
  [ -f "$SRC/$f" ] && cp "$SRC/$f" "$DST/"
done
SIZE=$(du -sm "$OUT" | cut -f1)
echo "device bundle: $OUT, ${SIZE} MiB ($(ls "$OUT/wheels" | wc -l) wheels, Python $PYV)"
[ "$SIZE" -lt 64 ] || { echo "device bundle is ${SIZE} MiB: over the 64 MiB carry" >&2; exit 1; }

#!/usr/bin/env bash
# Run the GPU check on a device machine from the bundle scripts/device_bundle.sh built:
#   bash scripts/device_gpu_check.sh BUNDLE OUTDIR [gpu_path.py arguments...]
# Offline: installs from BUNDLE/wheels only what the machine lacks, points softverify's cache at
# the bundle's tokenizer, then benchmarks/gpu_path.py (its preflight prints the versions and
# stops with one line on anything missing). Results: OUTDIR/gpu_path.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=$1
OUT=$2
shift 2
PY=${PYTHON:-python3}
HAVE=$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
WANT=$(cat "$BUNDLE/python_version")
[ "$HAVE" = "$WANT" ] || { echo "device_gpu_check: this machine runs Python $HAVE, the bundle holds wheels for $WANT: rebuild it with bash scripts/device_bundle.sh OUT $HAVE" >&2; exit 2; }
$PY -m pip install -q --disable-pip-version-check --no-index --find-links "$BUNDLE/wheels" -r "$BUNDLE/requirements.txt"
SOFTVERIFY_CACHE="$(cd "$BUNDLE" && pwd)/cache" HF_HUB_OFFLINE=1 $PY benchmarks/gpu_path.py --out "$OUT" "$@"

#!/usr/bin/env bash
# The GPU check in one command on the lent GPU machine (docs/gpu.md):
#   bash tools/analysis/gpu_check.sh [gpu_check.py args...]
# Installs what is missing of requirements/gpu_check.txt offline from the bundle of
# prepare_gpu_bundle.sh (BUNDLE, default work_dirs/gpu_bundle), then runs
# tools/analysis/gpu_check.py with its report in $OUT/gpu_check (default work_dirs/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${BUNDLE:-work_dirs/gpu_bundle}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
REPORT=${OUT:-work_dirs}/gpu_check
mkdir -p "$REPORT"
start=$SECONDS

if ! "$PYTHON" -c 'import mmengine.model' 2>/dev/null; then
    [ -d "$BUNDLE" ] || { echo "no wheel bundle at $BUNDLE: run tools/analysis/prepare_gpu_bundle.sh first" >&2; exit 1; }
    # Names without pins: what the machine has already (numpy, PyYAML, ...) stays as it is.
    # PIP_BREAK_SYSTEM_PACKAGES: a distribution's Python may refuse pip otherwise (PEP 668).
    PIP_BREAK_SYSTEM_PACKAGES=1 "$PYTHON" -m pip install --no-index --find-links "$BUNDLE" \
        --no-deps $(sed 's/#.*//; s/==.*//' requirements/gpu_check.txt | awk 'NF')
fi
echo "set-up: $((SECONDS - start)) s"
{ nvidia-smi || true; } > "$REPORT/nvidia-smi.txt" 2>&1
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" tools/analysis/gpu_check.py \
    --work-dir "$REPORT" "$@" 2>&1 | tee "$REPORT/gpu_check.log"
echo "total: $((SECONDS - start)) s"

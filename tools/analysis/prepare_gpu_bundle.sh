#!/usr/bin/env bash
# Download the wheels that tools/analysis/gpu_check.sh installs offline on the lent GPU machine
# (requirements/gpu_check.txt: mmengine and what it imports; numpy and PyYAML as binary wheels for
# that machine's Python, installed there only where missing), and those that
# tools/analysis/gpu_train_check.sh adds (requirements/gpu_train.txt: mmcv's source, mmdet, mmseg).
#   bash tools/analysis/prepare_gpu_bundle.sh [DIR]    # default work_dirs/gpu_bundle (gitignored)
# PY_VERSIONS: Pythons to fetch the binary wheels for (default 3.12, the GPU machine's; add this
# machine's, e.g. PY_VERSIONS="3.12 3.11", to rehearse here). PYTHON: the interpreter running pip.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-work_dirs/gpu_bundle}
PY_VERSIONS=${PY_VERSIONS:-3.12}
PYTHON=${PYTHON:-python3}
REQS="requirements/gpu_check.txt requirements/gpu_train.txt"
mkdir -p "$DEST"

requirements() {  # the pins of REQS; $1 = 'pure', 'binary' or 'sdist'
    local lines
    lines=$(cat $REQS | grep -v '^\s*#')
    case $1 in
        binary|sdist) echo "$lines" | grep "\[$1\]" ;;
        pure) echo "$lines" | grep -v '\[binary\]\|\[sdist\]' ;;
    esac | sed 's/#.*//' | awk 'NF'
}

"$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$DEST" $(requirements pure)
"$PYTHON" -m pip download --no-deps --no-binary=:all: --no-build-isolation -d "$DEST" \
    $(requirements sdist)
for version in $PY_VERSIONS; do
    "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$DEST" \
        --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 $(requirements binary)
done
echo "$(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"

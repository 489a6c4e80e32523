#!/usr/bin/env bash
# Fetch here (with PyPI) what tools/analysis/gpu_session.sh installs offline on the lent GPU
# machine: requirements/gpu_bundle.txt, as pure-Python wheels, [binary] wheels for the GPU
# machine's Python, [sdist] source archives (onedl-mmcv, built there with CUDA ops) and [wheel]
# packages that PyPI has as source only, built here into pure-Python wheels.
#   bash tools/analysis/prepare_gpu_bundle.sh [DIR]    # default work_dirs/gpu_bundle (gitignored)
# PY_VERSIONS: Pythons to fetch the binary wheels for (default 3.12, the GPU machine's; add this
# machine's, e.g. PY_VERSIONS="3.12 3.11", to rehearse here). PYTHON: the interpreter running pip.
# CUDA_WHEEL=1 also builds onedl-mmcv with CUDA ops for the GPU machine, into DIR/cuda/, so that
# its lease is not spent on the build (~2 CPU-hours: start it first). The wheel must match that
# machine: GPU_PYTHON (an interpreter of its Python, 3.12), GPU_TORCH (its torch, 2.11.0: PyPI's
# is a CUDA 13.0 build) and GPU_ARCH (9.0); tools/setup_env.sh builds it in a venv of those
# (work_dirs/gpu_cuda_venv) with this machine's nvcc. gpu_session.sh falls back to building
# there if its ops do not load.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-work_dirs/gpu_bundle}
PY_VERSIONS=${PY_VERSIONS:-3.12}
PYTHON=${PYTHON:-python3}
REQS=requirements/gpu_bundle.txt
mkdir -p "$DEST"

requirements() {  # the pins of REQS tagged $1 (binary, sdist, wheel), or untagged ones (pure)
    local lines
    lines=$(grep -v '^\s*#' "$REQS")
    case $1 in
        pure) echo "$lines" | grep -v '\[binary\]\|\[sdist\]\|\[wheel\]' ;;
        *) echo "$lines" | grep "\[$1\]" ;;
    esac | sed 's/#.*//' | awk 'NF'
}

"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$DEST" $(requirements pure)
# (pip prepares an sdist's metadata in an isolated build environment: onedl-mmcv's needs
# setuptools >= 80, and without torch there it skips its extension as it should)
"$PYTHON" -m pip download -q --no-deps --no-binary=:all: -d "$DEST" $(requirements sdist)
"$PYTHON" -m pip wheel -q --no-deps --no-binary=:all: -w "$DEST" $(requirements wheel)
for version in $PY_VERSIONS; do
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$DEST" \
        --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 $(requirements binary)
done
if [ -n "${CUDA_WHEEL:-}" ]; then
    GPU_PYTHON=${GPU_PYTHON:-python3.12} GPU_TORCH=${GPU_TORCH:-2.11.0} GPU_ARCH=${GPU_ARCH:-9.0}
    venv=work_dirs/gpu_cuda_venv wheels=work_dirs/gpu_cuda_wheels
    [ -x "$venv/bin/python" ] || "$GPU_PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q "torch==$GPU_TORCH"
    VENV=$venv STACK=onedl DEVICE=cuda TORCH_CUDA_ARCH_LIST=$GPU_ARCH RAVLT_WHEEL_CACHE=$wheels \
        bash tools/setup_env.sh
    mkdir -p "$DEST/cuda"
    cp "$wheels"/torch"$GPU_TORCH"*-sm"${GPU_ARCH//./}"/onedl_mmcv-*.whl "$DEST/cuda/"
fi
echo "$(ls "$DEST" | wc -l) files, $(du -sh "$DEST" | cut -f1) in $DEST"

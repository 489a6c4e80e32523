#!/usr/bin/env bash
# Training on the lent GPU machine (issue 12 item 4, docs/gpu.md): build mmcv 2.1.0 there with its
# CUDA ops, check NMS and RoIAlign on the GPU, run the quick start (train, evaluate, demo) of
# Mask R-CNN and Semantic FPN on the GPU, then Mask R-CNN with fp16 AMP (the paper's setting).
#   bash tools/analysis/gpu_train_check.sh [build|train|all]      # default all
# The machine starts bare (torch, nvcc, ninja; no mm packages): the wheels and mmcv's source come
# from the bundle of prepare_gpu_bundle.sh (BUNDLE, default work_dirs/gpu_bundle). One command
# may run 10 minutes: `build` first (BUILD_TIMEOUT, 480 s; a build cut short says how far it got),
# then, while the machine is still warm, `train` (the wheel waits in MMCV_WHEEL_DIR, /tmp).
# ARCH (TORCH_CUDA_ARCH_LIST, default: the GPU's own) and MAX_JOBS (default: all cores) steer
# the build; MODELS the quick-start models (default "maskrcnn fpn"). Reports in $OUT/gpu_train.
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE=${1:-all}
BUNDLE=${BUNDLE:-work_dirs/gpu_bundle}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
REPORT=${OUT:-work_dirs}/gpu_train
WHEELS=${MMCV_WHEEL_DIR:-/tmp/mmcv_wheel}
TOOLS=/tmp/gpu_train_tools  # setuptools<70: pkg_resources for mmcv's setup.py and `mmdet::` configs
case $STAGE in build|train|all) ;; *) echo "usage: $0 [build|train|all]" >&2; exit 2 ;; esac
mkdir -p "$REPORT" "$WHEELS"
start=$SECONDS
pins() { sed 's/#.*//; s/==.*//' "$@" | awk 'NF'; }
pip_offline() { PIP_BREAK_SYSTEM_PACKAGES=1 "$PYTHON" -m pip install -q --no-index \
    --find-links "$BUNDLE" --no-deps "$@"; }

if ! "$PYTHON" -c 'import mmengine.model, mmdet, mmseg, pkg_resources' 2>/dev/null; then
    [ -d "$BUNDLE" ] || { echo "no wheel bundle at $BUNDLE: run tools/analysis/prepare_gpu_bundle.sh first" >&2; exit 1; }
    pip_offline $(pins requirements/gpu_check.txt requirements/gpu_train.txt | grep -vx 'mmcv\|setuptools')
    pip_offline --target "$TOOLS" setuptools
fi
export PYTHONPATH=$TOOLS:$PWD${PYTHONPATH:+:$PYTHONPATH}
echo "set-up: $((SECONDS - start)) s"

if [ "$STAGE" != train ] && ! "$PYTHON" -c 'import mmcv.ops' 2>/dev/null; then
    if ! ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        arch=${ARCH:-$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
        jobs=${MAX_JOBS:-$(nproc)}
        echo "building mmcv 2.1.0 with CUDA ops for $arch, $jobs jobs, at most ${BUILD_TIMEOUT:-480} s"
        b=$SECONDS
        set +e
        MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$jobs \
            timeout "${BUILD_TIMEOUT:-480}" "$PYTHON" -m pip wheel --no-deps --no-build-isolation \
            -v "$BUNDLE"/mmcv-2.1.0.tar.gz -w "$WHEELS" > /tmp/mmcv_build.log 2>&1
        rc=$?
        set -e
        # the compiler steps ([n/N] from ninja) and any errors: the full log is too big to return
        grep -E '^\s*\[[0-9]+/[0-9]+\]|error|Error|Created wheel' /tmp/mmcv_build.log \
            | cut -c1-300 > "$REPORT/mmcv_build.log" || true
        last=$(grep -oE '^\s*\[[0-9]+/[0-9]+\]' /tmp/mmcv_build.log | tail -1 | tr -d ' ')
        echo "mmcv build: exit $rc after $((SECONDS - b)) s; last compiler step ${last:-none}"
        [ $rc = 0 ] || { grep -m 10 -E 'error' /tmp/mmcv_build.log | cut -c1-300; exit 1; }
    fi
    pip_offline "$WHEELS"/mmcv-2.1.0-*.whl
fi
[ "$STAGE" = build ] && { echo "total: $((SECONDS - start)) s"; exit 0; }

"$PYTHON" - <<'PY'
# mmcv's compiled ops on the GPU: the two a Mask R-CNN needs
import torch
from mmcv.ops import nms, roi_align

device = 'cuda' if torch.cuda.is_available() else 'cpu'
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60.]], device=device)
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), 0.5)
assert keep.tolist() == [0, 2], keep
feat = torch.arange(64.0, device=device).view(1, 1, 8, 8)
pooled = roi_align(feat, torch.tensor([[0, 0, 0, 8, 8.]], device=device), (2, 2), 1.0, 0, 'avg',
                   True)
print(f'mmcv ops on {device}: nms keeps {keep.tolist()}, roi_align {tuple(pooled.shape)} '
      f'mean {pooled.mean().item():.2f} (map mean {feat.mean().item():.2f})')
PY

export PYTHONWARNINGS=ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning
t=$SECONDS
PY=$PYTHON QUICK_MODELS=${MODELS:-maskrcnn fpn} WORK=/tmp/gpu_quickstart bash tools/quickstart.sh \
    > "$REPORT/quickstart.log" 2>&1 || { tail -40 "$REPORT/quickstart.log"; exit 1; }
sed -n '/== Summary/,$p' "$REPORT/quickstart.log"
echo "quick start: $((SECONDS - t)) s"

if "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    t=$SECONDS
    "$PYTHON" tools/train.py configs/quickstart/maskrcnn_ravlt_t_shapes.py --amp \
        --work-dir /tmp/gpu_amp --cfg-options train_cfg.max_epochs=2 train_cfg.val_interval=2 \
        > "$REPORT/amp_train.log" 2>&1 || { tail -40 "$REPORT/amp_train.log"; exit 1; }
    grep -E 'Epoch\(train\)' "$REPORT/amp_train.log" | tail -3 | cut -c1-250
    grep -E 'coco/bbox_mAP:' "$REPORT/amp_train.log" | tail -1 | cut -c1-250
    echo "Mask R-CNN fp16 AMP, 2 epochs: $((SECONDS - t)) s"
fi
echo "total: $((SECONDS - start)) s"

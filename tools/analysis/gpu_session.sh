#!/usr/bin/env bash
# The GPU session (issue 18 item 5) on the bare, offline GPU machine: install the carried
# bundle, build mmcv's CUDA ops, check them, train the mission's configs against Swin-T, then
# the GPU tests and the benchmark. It only installs and calls the project's own tools.
#   bash tools/analysis/gpu_session.sh [setup] [ops] [train] [bench]   # default: setup ops train
#   setup  install the OneDL stack from the bundle of prepare_gpu_bundle.sh (BUNDLE) unless it
#          imports, then, unless mmcv.ops imports, the bundle's prebuilt CUDA wheel of onedl-mmcv
#          for this Python (BUNDLE/cuda/, if its ops load), else build it with CUDA ops for this
#          GPU (ARCH, MAX_JOBS); the build is incremental, so a build cut by BUILD_TIMEOUT
#          continues where it stopped when `setup` runs again on the same machine
#   ops    tests/test_mmcv_ops.py: NMS, RoIAlign and deformable convolution against formulas and,
#          on a GPU, against their CPU kernels
#   train  synthetic COCO / ADE20K in the standard layouts at full size (DET_SHAPE, SEG_SHAPE),
#          then `python tools/train.py configs/maskrcnn_ravlt_s_coco.py`, `.../upernet_ravlt_s_ade20k.py`
#          (AMP as written) and mmdet's Swin-T Mask R-CNN (--amp) for ITERS iterations each,
#          tools/test.py and the demos on what they saved, and the table of seconds per
#          iteration, data time, peak memory and the projected schedule on 8 GPUs
#   bench  pytest -m gpu (the kernel tests first), then tools/analysis/benchmark.py $BENCH_ARGS;
#          it needs no mmcv build (so it can come first where no prebuilt wheel was carried)
# Every step runs within what is left of BUDGET (seconds for this call); a step that fails,
# times out or finds no time becomes a row of the summary and the next one runs. Steps done in
# an earlier call on the same (warm) machine are not repeated. DRY_RUN=1 prints the commands.
# Written to $OUT (default work_dirs/gpu_session): gpu_session.md (the summary) and
# gpu_session_logs.tar.gz (every log, scalars.json, the test and benchmark reports, demo images).
set -uo pipefail  # no -e: a failing step is reported and the session goes on
cd "$(dirname "$0")/../.."
REPO=$PWD
STAGES=${*:-setup ops train}
usage() { echo "usage: $0 [setup] [ops] [train] [bench]   (default: setup ops train)" >&2; exit 2; }
for stage in $STAGES; do case $stage in setup|ops|train|bench) ;; *) usage ;; esac; done
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
BUNDLE=${BUNDLE:-work_dirs/gpu_bundle}
REPORT=${OUT:-work_dirs/gpu_session}
WORK=${WORK:-/tmp/gpu_session}       # work dirs, mmcv build, data: kept while the machine is warm
BUDGET=${BUDGET:-540}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-420}
ITERS=${ITERS:-30}                   # training iterations per model; the first SKIP are warm-up
SKIP=${SKIP:-5}
DET_SHAPE=${DET_SHAPE:-800 1333}     # generated images (H W): COCO's 1333x800 and ADE20K's
SEG_SHAPE=${SEG_SHAPE:-512 2048}     # 2048x512 resize scale
NUM_VAL=${NUM_VAL:-8}
MODELS=${MODELS:-maskrcnn upernet swin}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-150}  # per training run
EVAL_TIMEOUT=${EVAL_TIMEOUT:-90}     # per tools/test.py or demo run
TEST_WORKERS=${TEST_WORKERS:-4}      # pytest -m gpu's processes (with pytest-xdist; 1: one)
DET_OPTS=${DET_OPTS:-}               # further --cfg-options of the detection / segmentation runs
SEG_OPTS=${SEG_OPTS:-}               # (the CPU rehearsal makes the images small with these)
# >>> the benchmark's arguments: tools/analysis/benchmark.py's GPU-session preset (gpustory) <<<
BENCH_ARGS=${BENCH_ARGS:---preset gpu-session --budget 150}
COCO_1X=$((12 * ((118287 + 15) / 16)))  # iterations of 12 epochs of train2017 at 16 images
absolute() { case $1 in /*) echo "$1" ;; *) echo "$REPO/$1" ;; esac; }
BUNDLE=$(absolute "$BUNDLE") REPORT=$(absolute "$REPORT") WORK=$(absolute "$WORK")
RUN=$WORK/run   # the tools run here: configs/, tools/, demo/ of the checkout, data/ generated
LOGS=$WORK/logs
START=$SECONDS
mkdir -p "$REPORT" "$LOGS" "$RUN"
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# Not the mm packages' deprecation noise; our own warnings (the fp32 fall-back) stay.
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning,ignore::FutureWarning}
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1

left() { echo $((BUDGET - (SECONDS - START))); }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" | tee -a "$WORK/rows.md"; }
: > "$WORK/rows.md"

# step STAGE NAME MAX_SECONDS LOG CMD...: run CMD (in $RUN) within MAX_SECONDS and the budget.
step() {
    local stage=$1 name=$2 max=$3 log=$LOGS/$4; shift 4
    local limit; limit=$(left); [ "$limit" -gt "$max" ] && limit=$max
    if [ -n "${DRY_RUN:-}" ]; then echo "[dry run] (cd $RUN; $*)"; return 0; fi
    if [ "$limit" -lt 15 ]; then row "$stage" "$name" "not run: budget ($BUDGET s) spent" 0; return 1; fi
    echo "== $name (at most $limit s): $*"
    local t=$SECONDS rc
    (cd "$RUN" && timeout -k 10 "$limit" "$@") > "$log" 2>&1
    rc=$?
    local took=$((SECONDS - t))
    case $rc in
        0) row "$stage" "$name" ok "$took" ;;
        124|137) row "$stage" "$name" "timed out after $limit s (log: ${log##*/})" "$took" ;;
        *) row "$stage" "$name" "failed, exit $rc: $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-150 | tr '|' '/')" "$took" ;;
    esac
    [ $rc = 0 ] || tail -15 "$log"
    return $rc
}

summary() {
    local md=$REPORT/gpu_session.md
    {
        echo "# GPU session: $STAGES ($(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - START)) s)"
        echo
        "$PYTHON" - <<'PY' 2>/dev/null || echo "(no torch)"
import platform, torch
cuda = torch.cuda.is_available()
print(f'- device: {torch.cuda.get_device_name() if cuda else "CPU (no CUDA)"}; torch '
      f'{torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}')
for name in ('mmengine', 'mmcv', 'mmdet', 'mmseg'):
    try:
        print(f'- {name} {__import__(name).__version__}')
    except Exception as err:  # missing, or a build that does not import
        print(f'- {name}: {type(err).__name__}: {err}')
PY
        [ -f "$WORK/mmcv_build.txt" ] && { echo; cat "$WORK/mmcv_build.txt"; }
        echo
        echo '| stage | step | result | s |'
        echo '|---|---|---|---|'
        cat "$WORK/rows.md"
        [ -f "$WORK/train_time.md" ] && { echo; cat "$WORK/train_time.md"; }
    } > "$md"
    echo; cat "$md"
    # one archive of the logs and reports (no checkpoints): few files come back from $OUT
    (cd "$WORK" && tar czf "$REPORT/gpu_session_logs.tar.gz" --exclude='*.pth' --exclude='data' \
        --exclude='src' --exclude='wheels' --exclude='build_tools' --exclude='run/configs' \
        --exclude='run/tools' --exclude='run/demo' . 2>/dev/null)
}
[ -n "${DRY_RUN:-}" ] || trap summary EXIT

# The checkout's tools run in $RUN, where data/ is the generated set in the standard layouts
# (the repository's own data/ stays untouched).
for dir in configs tools demo; do ln -sfn "$REPO/$dir" "$RUN/$dir"; done

pins() { sed 's/#.*//' requirements/gpu_bundle.txt | awk 'NF' | sed 's/==.*//'; }
tagged() { grep "\[$1\]" requirements/gpu_bundle.txt | sed 's/#.*//; s/==.*//' | awk 'NF'; }
PIP_OFFLINE=("$PYTHON" -m pip install -q --no-index --find-links "$BUNDLE" --no-deps)

stage_setup() {
    install_packages && install_mmcv || return 1
    # what tools/train.py imports (datasets, engine, models with mmcv's ops): a dependency the
    # bundle lacks fails here, named, not in every training run (once per machine)
    local mark=$WORK/.imports_ok
    [ -f "$mark" ] && { row setup "the training flow imports" "skipped: checked before" 0; return 0; }
    step setup "the training flow imports" 60 imports.log "$PYTHON" -c \
        'import mmdet.apis, mmseg.apis, ravlt_dense.models' || return 1
    [ -n "${DRY_RUN:-}" ] || touch "$mark"
}

# install_packages STAGE: the bundle's packages but mmcv (pure Python and binary wheels), once
install_packages() {
    local stage=${1:-setup} mark=$WORK/.bundle_installed
    if [ -f "$mark" ]; then
        row "$stage" install "skipped: installed before" 0
    elif "$PYTHON" -c 'import mmengine.runner, mmdet, mmseg' 2>/dev/null; then
        row "$stage" install "skipped: mmengine, mmdet and mmseg import" 0
    elif [ ! -d "$BUNDLE" ]; then
        row "$stage" install "failed: no bundle at $BUNDLE (run tools/analysis/prepare_gpu_bundle.sh here and carry it)" 0
        return 1
    else
        # names without pins: what the machine has already (numpy, opencv, rich...) stays
        step "$stage" "install the bundle" 120 install.log "${PIP_OFFLINE[@]}" \
            $(pins | grep -vxF -f <(tagged sdist; tagged build)) || return 1
        [ -n "${DRY_RUN:-}" ] || touch "$mark"
    fi
}

mmcv_ops_import() { "$PYTHON" -c 'import mmcv.ops' 2>/dev/null; }

# install_mmcv: onedl-mmcv with CUDA ops: a prebuilt wheel of the bundle, else built here
install_mmcv() {
    if mmcv_ops_import; then
        row setup "mmcv CUDA ops" "skipped: mmcv.ops imports" 0
        return 0
    fi
    # A CUDA wheel built ahead for this machine (prepare_gpu_bundle.sh with CUDA_WHEEL=1) spares
    # the lease the build's minutes; it stays only if its CUDA ops load against this torch.
    local tag prebuilt
    tag=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    prebuilt=$(ls "$BUNDLE"/cuda/onedl_mmcv-*-"$tag"-*.whl 2>/dev/null | head -1)
    if [ -n "$prebuilt" ]; then
        if step setup "install the prebuilt mmcv CUDA wheel" 90 install_prebuilt.log \
                "${PIP_OFFLINE[@]}" "$prebuilt" && { [ -n "${DRY_RUN:-}" ] || "$PYTHON" -c \
                'import sys; from mmcv.ops import get_compiling_cuda_version as v; sys.exit(v() == "not available")' \
                >> "$LOGS/install_prebuilt.log" 2>&1; }; then
            echo "mmcv: the prebuilt $(basename "$prebuilt"), no build" | tee "$WORK/mmcv_build.txt"
            return 0
        fi
        row setup "prebuilt mmcv" "its CUDA ops do not load here (install_prebuilt.log): building" 0
        "$PYTHON" -m pip uninstall -y -q "$(basename "$prebuilt" | cut -d- -f1 | tr _ -)" \
            >> "$LOGS/install_prebuilt.log" 2>&1
    fi
    local src archive arch jobs
    archive=$(ls "$BUNDLE"/onedl_mmcv-*.tar.gz 2>/dev/null | head -1)
    [ -n "$archive" ] || { row setup "mmcv build" "failed: no onedl_mmcv-*.tar.gz in $BUNDLE" 0; return 1; }
    src=$WORK/src/$(basename "$archive" .tar.gz)
    [ -d "$src" ] || { mkdir -p "$WORK/src" && tar xzf "$archive" -C "$WORK/src"; }
    bash tools/misc/mmcv_cxx_standard.sh "$src" "$PYTHON" || return 1  # C++20 for torch >= 2.14
    # its build needs setuptools >= 80 (and pkg_resources, gone in 82): in a folder of its own
    [ -d "$WORK/build_tools" ] || "${PIP_OFFLINE[@]}" --target "$WORK/build_tools" $(tagged build)
    # the GPU's own architecture; without a GPU (the CPU rehearsal) the CPU ops alone
    arch=${ARCH:-$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null || true)}
    jobs=${MAX_JOBS:-$(nproc)}
    echo "mmcv: building $(basename "$src") with ${arch:+CUDA ops for sm $arch and }CPU ops on $jobs jobs"
    # In the source folder (not pip's temporary copy): ninja keeps what it compiled, so a build
    # cut short continues on the next call.
    PYTHONPATH=$WORK/build_tools:$PYTHONPATH FORCE_CUDA=$([ -n "$arch" ] && echo 1 || echo 0) \
        TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$jobs \
        step setup "mmcv build (${arch:+sm $arch, }$jobs jobs)" "$BUILD_TIMEOUT" \
        mmcv_build.log "$PYTHON" -m pip wheel -v --no-deps --no-build-isolation "$src" \
        -w "$WORK/wheels"
    local rc=$? last
    last=$(grep -oE '^\s*\[[0-9]+/[0-9]+\]' "$LOGS/mmcv_build.log" | tail -1 | tr -d ' ')
    echo "mmcv build ($(basename "$src"), ${arch:+sm $arch, }$jobs jobs): exit $rc after" \
        "$(tail -1 "$WORK/rows.md" | awk -F'|' '{print $5}' | tr -d ' ') s, last compiler step" \
        "${last:-none} (ninja's [done/all])" | tee "$WORK/mmcv_build.txt"
    [ $rc = 0 ] || return 1
    step setup "install mmcv" 60 install_mmcv.log "${PIP_OFFLINE[@]}" "$WORK"/wheels/onedl_mmcv-*.whl
}

# run_tests STAGE NAME MAX_SECONDS LOG PYTEST_ARGS...: pytest as a step, a line per test (-vv
# against pytest.ini's -q), then a row of its counts: pytest's own summary, or for a run cut
# by its limit the tests' lines counted so far
run_tests() {
    local stage=$1 name=$2 max=$3 log=$4; shift 4
    step "$stage" "$name" "$max" "$log" "$PYTHON" -m pytest "$@" -vv -p no:cacheprovider -rfEs
    local rc=$? counts
    counts=$(grep -E '^=* *[0-9]+ (passed|failed|skipped|errors?|deselected)' "$LOGS/$log" \
        2>/dev/null | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    if [ -z "$counts" ] && [ -f "$LOGS/$log" ]; then
        counts=$(grep -oE ' (PASSED|FAILED|SKIPPED|ERROR)' "$LOGS/$log" | sort | uniq -c |
            awk '{s = s (NR > 1 ? ", " : "") $1 " " tolower($2)} END {print s}')
        counts="cut: ${counts:-no test finished} before the limit"
    fi
    [ -z "$counts" ] || row "$stage" "$name: counts" "$counts" 0
    return $rc
}

stage_ops() {
    run_tests ops "mmcv ops against formulas / the CPU (tests/test_mmcv_ops.py)" 120 ops.log \
        "$REPO/tests/test_mmcv_ops.py"
}

# make_data NAME CMD...: generate a data set once per machine and size
make_data() {
    local name=$1; shift
    local mark=$RUN/data/.$name-$(echo "$*" | md5sum | cut -c1-8)
    [ -f "$mark" ] && { row train "data: $name" "skipped: generated before" 0; return 0; }
    step train "data: $name" 120 "data_$name.log" "$@" && [ -z "${DRY_RUN:-}" ] && touch "$mark"
}

# train_run NAME WORK_DIR_NAME CONFIG ARGS...: tools/train.py once (skipped when it finished)
train_run() {
    local name=$1 work=$RUN/work_dirs/$2; shift 2
    [ -f "$work/last_checkpoint" ] && { row train "$name" "skipped: trained before" 0; return 0; }
    rm -rf "$work"
    step train "$name" "$TRAIN_TIMEOUT" "train_$name.log" "$PYTHON" tools/train.py "$@"
    grep -hs 'fp32' "$LOGS/train_$name.log" | head -1  # the warning of a machine without GPU
}

stage_train() {
    local train_opts="default_hooks.logger.interval=1 log_processor.window_size=1 model.backbone.init_cfg=None"
    # only the data sets that MODELS train on (the lease's second call: no UperNet)
    case " $MODELS " in *" maskrcnn "*|*" swin "*)
        make_data coco "$PYTHON" tools/data/make_coco_shapes.py --layout coco2017 --out data/coco \
            --shape $DET_SHAPE --num-train $((2 * ITERS)) --num-val "$NUM_VAL" ;;
    esac
    case " $MODELS " in *" upernet "*)
        make_data ade "$PYTHON" tools/data/make_ade_shapes.py --out data/ade/ADEChallengeData2016 \
            --shape $SEG_SHAPE --num-train 16 --num-val "$NUM_VAL" ;;
    esac
    # mmdet's Swin-T Mask R-CNN 1x, as mmengine resolves the `mmdet::` scope
    echo "_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'" \
        > "$RUN/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py"
    local det="$train_opts train_cfg.max_epochs=1 $DET_OPTS"
    local seg="$train_opts train_cfg.max_iters=$ITERS train_cfg.val_interval=$ITERS default_hooks.checkpoint.interval=$ITERS $SEG_OPTS"
    local runs=()
    for model in $MODELS; do
        case $model in
            maskrcnn) train_run maskrcnn maskrcnn_ravlt_s_coco configs/maskrcnn_ravlt_s_coco.py \
                          --cfg-options $det
                      runs+=(--run 'Mask R-CNN 1x, RAVLT-S (AMP as written)' "$RUN/work_dirs/maskrcnn_ravlt_s_coco" "$COCO_1X") ;;
            upernet) train_run upernet upernet_ravlt_s_ade20k configs/upernet_ravlt_s_ade20k.py \
                         --cfg-options $seg
                     runs+=(--run 'UperNet 160k, RAVLT-S (AMP as written)' "$RUN/work_dirs/upernet_ravlt_s_ade20k" 160000) ;;
            swin) train_run swin mask-rcnn_swin-t-p4-w7_fpn_1x_coco \
                      mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py --amp --cfg-options $det
                  runs+=(--run 'Mask R-CNN 1x, Swin-T (mmdet, --amp)' "$RUN/work_dirs/mask-rcnn_swin-t-p4-w7_fpn_1x_coco" "$COCO_1X") ;;
            *) row train "$model" "unknown model (MODELS: maskrcnn upernet swin)" 0 ;;
        esac
    done
    local ckpt
    if ckpt=$(cat "$RUN/work_dirs/maskrcnn_ravlt_s_coco/last_checkpoint" 2>/dev/null); then
        step train "tools/test.py maskrcnn" "$EVAL_TIMEOUT" test_maskrcnn.log "$PYTHON" tools/test.py \
            configs/maskrcnn_ravlt_s_coco.py "$ckpt" --work-dir "$WORK/test/maskrcnn" \
            ${DET_OPTS:+--cfg-options $DET_OPTS}
        grep -E 'coco/bbox_mAP:' "$LOGS/test_maskrcnn.log" | tail -1 | cut -c1-200
        step train "demo maskrcnn" "$EVAL_TIMEOUT" demo_maskrcnn.log "$PYTHON" demo/image_demo.py \
            configs/maskrcnn_ravlt_s_coco.py "$ckpt" data/coco/val2017/000000.png \
            --out-dir "$WORK/demo/maskrcnn"
    fi
    if ckpt=$(cat "$RUN/work_dirs/upernet_ravlt_s_ade20k/last_checkpoint" 2>/dev/null); then
        step train "tools/test.py upernet" "$EVAL_TIMEOUT" test_upernet.log "$PYTHON" tools/test.py \
            configs/upernet_ravlt_s_ade20k.py "$ckpt" --work-dir "$WORK/test/upernet" \
            ${SEG_OPTS:+--cfg-options $SEG_OPTS}
        grep -E 'mIoU' "$LOGS/test_upernet.log" | tail -1 | cut -c1-200
        step train "demo upernet" "$EVAL_TIMEOUT" demo_upernet.log "$PYTHON" demo/seg_demo.py \
            configs/upernet_ravlt_s_ade20k.py "$ckpt" \
            data/ade/ADEChallengeData2016/images/validation/000000.jpg \
            --out-dir "$WORK/demo/upernet"
    fi
    [ ${#runs[@]} -gt 0 ] && [ -z "${DRY_RUN:-}" ] && "$PYTHON" tools/analysis/train_time.py \
        "${runs[@]}" --skip "$SKIP" > "$WORK/train_time.md" 2> "$LOGS/train_time.log"
    return 0
}

stage_bench() {
    # Needs no mmcv build: RAVLT needs mmengine alone, and where mmcv's ops are not built the
    # benchmark's Swin-T is timm's (its baseline falls back) and mmcv's tests wait for `setup`.
    install_packages bench
    # In TEST_WORKERS processes where pytest-xdist is installed (the GPU machine has it):
    # compiling the kernels' variants is most of the time, one CPU core each.
    local workers=() mmcv_tests=("$REPO/tests/test_mmcv_ops.py")
    [ "$TEST_WORKERS" -gt 1 ] && "$PYTHON" -c 'import xdist' 2>/dev/null && workers=(-n "$TEST_WORKERS")
    if ! mmcv_ops_import; then
        mmcv_tests=()
        row bench "tests/test_mmcv_ops.py" "not run: mmcv.ops does not import (\`setup\` builds it)" 0
    fi
    # The fused kernels first (their backward has never run on a GPU), so that a run cut by its
    # limit has them; a test (test_gpu_session.py) checks these folders hold every gpu test.
    run_tests bench "python -m pytest -m gpu" 150 gpu_tests.log -m gpu "${workers[@]}" \
        "$REPO/tests/test_ops" "$REPO/tests/test_models" "${mmcv_tests[@]}"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
    step bench "tools/analysis/benchmark.py $BENCH_ARGS" 360 benchmark.log "$PYTHON" \
        tools/analysis/benchmark.py $BENCH_ARGS --work-dir "$WORK/benchmark"
}

for stage in $STAGES; do
    "stage_$stage" || [ "$stage" != setup ] || { echo 'set-up failed: later stages need it' >&2; exit 1; }
done

#!/usr/bin/env bash
# Bring up the project environment in $VENV (default .venv) from one of the two tested stacks:
#   STACK=upstream  requirements/stack.txt        OpenMMLab's releases (mmcv 2.1.0); default on CPU
#   STACK=onedl     requirements/stack-onedl.txt  the maintained OneDL fork (onedl-mmcv 2.3.6);
#                                                 default when an NVIDIA GPU is present
# DEVICE=cpu|cuda (default: cuda when nvidia-smi lists a GPU) picks the torch build and mmcv's ops:
# with cuda, a CUDA torch already importable by python3 is kept (the venv then sees the system's
# packages), else the stack's [cuda] torch is installed; mmcv's CUDA ops are compiled for
# TORCH_CUDA_ARCH_LIST (default: the local GPUs' compute capability).
# mmcv has no wheel on PyPI for these torches, so it is built once from source and the wheel kept in
# $RAVLT_WHEEL_CACHE (CPU builds at its top, CUDA builds in a folder per torch and architecture),
# to be reused by every later set-up on this machine. MAX_JOBS: parallel compile jobs (default:
# the number of cores, at most one per 3 GB of memory).
# `bash tools/setup_env.sh --resolve-stack` prints the stack that would be set up and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { log "$*"; exit 1; }

if [ -z "${DEVICE:-}" ]; then
  DEVICE=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    DEVICE=cuda
  fi
fi
case "$DEVICE" in cpu|cuda) ;; *) die "DEVICE=$DEVICE: use DEVICE=cpu or DEVICE=cuda" ;; esac
# mmcv 2.1.0 (upstream) is reported not to build its CUDA ops against current CUDA torches
if [ -z "${STACK:-}" ]; then
  if [ "$DEVICE" = cuda ]; then STACK=onedl; else STACK=upstream; fi
fi
if [ "${1:-}" = --resolve-stack ]; then echo "$STACK"; exit 0; fi
case "$STACK" in
  upstream) REQ=requirements/stack.txt; OTHER=requirements/stack-onedl.txt ;;
  onedl) REQ=requirements/stack-onedl.txt; OTHER=requirements/stack.txt ;;
  *) die "STACK=$STACK: use STACK=upstream (OpenMMLab, requirements/stack.txt) or STACK=onedl (OneDL fork, requirements/stack-onedl.txt)" ;;
esac

VENV=${VENV:-.venv}
WHEELS=${RAVLT_WHEEL_CACHE:-$HOME/.cache/ravlt_dense/wheels}
[ "$DEVICE" = cuda ] && NOT_DEVICE=cpu || NOT_DEVICE=cuda
# requirement lines of a pin file for this device: no comments, no [build] lines
# ([no-deps] lines are installed apart, without their declared dependencies: see no_deps)
pins_of() { grep -vE "^\s*(#|$)|# \[(build|no-deps|$NOT_DEVICE)\]" "$1" | sed 's/ *#.*//'; }
pin() { pins_of "$REQ" | grep -E "^$1==" | head -n1 || true; }
build_tools() { grep -E '^[^#].*# \[build\]' "$REQ" | sed 's/ *#.*//'; }
# pinned [no-deps]: mmdeploy 1.3.1 declares protobuf<=3.20.2, which onnx excludes; panopticapi-lite
# 0.2.0 declares numpy<2 (its panopticapi runs on numpy 2)
no_deps() { grep -E '^[^#].*# \[no-deps\]' "$REQ" | sed 's/ *#.*//'; }
# pip warns that torch wants setuptools>=77 while mmcv 2.1.0's build needs <70; torch runs fine.
# pip_quiet COMMAND ARGS...: pip install/download, quiet, without those warnings
pip_quiet() { $PIP "$1" -q "${@:2}" 2> >(grep -v "dependency resolver\|requires setuptools\|is ignored: it is neither" >&2); }
vpy() { "$VENV/bin/python" "$@"; }
MMCV=$(pins_of "$REQ" | grep -E '^(onedl-)?mmcv==' | head -n1)
MMCV_DIST=${MMCV%%==*}
MMCV_VERSION=${MMCV#*==}
log "stack: $STACK ($REQ), device: $DEVICE, environment: $VENV"

if [ ! -x "$VENV/bin/python" ]; then
  if [ "$DEVICE" = cuda ] && python3 -c 'import torch, sys; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    # keep the machine's own CUDA torch (matched to its driver; maybe no network to fetch another)
    log "creating virtual environment $VENV on top of python3's packages (its CUDA torch)"
    python3 -m venv --system-site-packages "$VENV"
  else
    log "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
fi
PIP="$VENV/bin/python -m pip"

# A venv holds one stack: the two install the same import packages under different names.
# (Only what lies in the venv itself is removed, never the system's packages it may see.)
STALE=$(vpy - $(pins_of "$OTHER" | sed 's/==.*//' | grep -E '^(onedl-)?mm') <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, distribution
for name in sys.argv[1:]:
    try:
        if str(distribution(name).locate_file('')).startswith(sys.prefix):
            print(name)
    except PackageNotFoundError:
        pass
PY
)
if [ -n "$STALE" ]; then
  log "switching $VENV to the $STACK stack: removing" $STALE
  $PIP uninstall -y -q $STALE
fi
rm -f "$VENV"/.ready "$VENV"/.ready-*

# torch first, pinned, so that nothing later pulls another build
if [ "$DEVICE" = cuda ] && vpy -c 'import torch, sys; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
  log "keeping the installed CUDA torch: $(vpy -W ignore -c 'import torch; print(torch.__version__)')"
elif [ -n "$(pin torch)" ]; then
  log "installing $(pin torch)"
  pip_quiet install "$(pin torch)"
else
  die "the $STACK stack pins no CUDA torch: mmcv 2.1.0's CUDA ops are reported not to build against
  torch >= 2.9 with CUDA 13 (open-mmlab/mmcv#3310). Use STACK=onedl (the default with a GPU), or install
  a CUDA torch that mmcv 2.1.0 builds against (with the matching nvcc) into $VENV first."
fi
TORCH_VERSION=$(vpy -W ignore -c 'import torch; print(torch.__version__)')

CACHE=$WHEELS
if [ "$DEVICE" = cuda ]; then
  [ "$(vpy -W ignore -c 'import torch; print(torch.version.cuda or "")')" ] || die "torch $TORCH_VERSION is no CUDA build"
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$(vpy -W ignore -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))' 2>/dev/null || true)
    if [ -z "$TORCH_CUDA_ARCH_LIST" ] && command -v nvidia-smi >/dev/null 2>&1; then
      TORCH_CUDA_ARCH_LIST=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -u | paste -sd';' || true)
    fi
    [ -n "$TORCH_CUDA_ARCH_LIST" ] || die "no GPU visible to read its architecture from: set TORCH_CUDA_ARCH_LIST (e.g. 9.0 for H100/H200, 8.0 for A100)"
  fi
  export TORCH_CUDA_ARCH_LIST FORCE_CUDA=1
  CACHE=$WHEELS/torch$TORCH_VERSION-sm${TORCH_CUDA_ARCH_LIST//[;. ]/}
  # torch takes the toolkit from the folder of the nvcc on PATH, which may be a link or a wrapper
  # script (here /usr/local/bin/nvcc runs /usr/local/cuda-13.0/bin/nvcc: torch would look in
  # /usr/local and find no cudart to link): ask nvcc where its toolkit is
  if [ -z "${CUDA_HOME:-}" ]; then
    NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    TOP=$("$NVCC" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1 || true)
    CUDA_HOME=$(readlink -f "${TOP:-$(dirname "$(readlink -f "$NVCC")")/..}")
  fi
  export CUDA_HOME
  [ -x "$CUDA_HOME/bin/nvcc" ] || die "no nvcc in $CUDA_HOME/bin: mmcv's CUDA ops need the CUDA toolkit (set CUDA_HOME)"
  log "CUDA toolkit: $CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p'))"
  # The libraries' headers that ATen includes (cuBLAS, cuSPARSE, cuSOLVER) may come only with
  # torch's nvidia-* wheels, not with the toolkit that has nvcc: their folder goes on CPATH.
  if [ ! -e "$CUDA_HOME/include/cublas_v2.h" ]; then
    NV_INC=$(vpy -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(h) for p in nvidia.__path__ for h in glob.glob(os.path.join(p, "*", "include", "cublas_v2.h"))})))' 2>/dev/null || true)
    [ -n "$NV_INC" ] || die "cublas_v2.h is neither in $CUDA_HOME/include nor in torch's nvidia wheels"
    export CPATH=$NV_INC${CPATH:+:$CPATH}
    log "CUDA library headers from torch's nvidia wheels: $NV_INC"
  fi
  log "CUDA ops for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST (torch $TORCH_VERSION, CUDA $(vpy -W ignore -c 'import torch; print(torch.version.cuda)'))"
fi

log "installing $(pin "${MMCV_DIST%mmcv}mmengine") and mmcv's build tools"
pip_quiet install "$(pin "${MMCV_DIST%mmcv}mmengine")" $(build_tools)

# the installed mmcv is the pinned one, with ops (CUDA ones on cuda)
mmcv_ready() {
  [ "$($PIP show "$MMCV_DIST" 2>/dev/null | sed -n 's/^Version: //p')" = "$MMCV_VERSION" ] || return 1
  if [ "$DEVICE" = cuda ]; then
    vpy -c 'import sys; from mmcv.ops import get_compiling_cuda_version as v; sys.exit(v() == "not available")'
  else
    vpy -c 'import mmcv, mmcv.ops'
  fi >/dev/null 2>&1
}
WHEEL_GLOB="${MMCV_DIST//-/_}-$MMCV_VERSION-*.whl"
if ! mmcv_ready; then
  mkdir -p "$CACHE"
  if ! ls "$CACHE"/$WHEEL_GLOB >/dev/null 2>&1; then
    if [ -z "${MAX_JOBS:-}" ]; then
      MAX_JOBS=$(nproc)
      by_memory=$(awk '/MemAvailable/ {print int($2 / 3000000)}' /proc/meminfo)
      [ "$by_memory" -ge 1 ] && [ "$by_memory" -lt "$MAX_JOBS" ] && MAX_JOBS=$by_memory
    fi
    log "building $MMCV with ${DEVICE^^} ops from source, $MAX_JOBS jobs (once per machine; the wheel is"
    if [ "$DEVICE" = cuda ]; then  # measured: 138 steps, ~7,000 CPU-seconds for one architecture
      log "kept in $CACHE): about 2 CPU-hours, e.g. ~8 minutes on 16 cores. Progress follows."
    else
      log "kept in $CACHE): on 2 cores about 15 minutes for mmcv 2.1.0, 45 for onedl-mmcv. Progress follows."
    fi
    start=$(date +%s)
    # from its unpacked source, which tools/misc/mmcv_cxx_standard.sh may first fit to torch
    BUILD_DIR=$(mktemp -d)
    trap 'rm -rf "$BUILD_DIR"' EXIT  # the sources and objects, whether or not the build succeeds
    pip_quiet download --no-deps --no-binary :all: --no-build-isolation "$MMCV" -d "$BUILD_DIR"
    tar xzf "$BUILD_DIR"/*.tar.gz -C "$BUILD_DIR"
    SOURCE=$(ls -d "$BUILD_DIR"/*/ | head -n1)
    bash tools/misc/mmcv_cxx_standard.sh "$SOURCE" "$VENV/bin/python" | while IFS= read -r l; do log "$l"; done
    # upstream mmcv reads MMCV_WITH_OPS; onedl-mmcv always builds its ops. --no-cache-dir: pip's
    # own wheel cache is keyed by the source archive alone, so it would hand a CUDA set-up the
    # CPU wheel built earlier on this machine (or the other way round) instead of building.
    MMCV_WITH_OPS=1 MAX_JOBS=$MAX_JOBS $PIP wheel --no-cache-dir --no-deps --no-build-isolation -v \
      "$SOURCE" -w "$CACHE" 2>&1 \
      | grep --line-buffered -E '^\s*\[[0-9]+/[0-9]+\]|Created wheel|error:|Error' \
      | sed -u -E 's/^\s*(\[[0-9]+\/[0-9]+\]).* -c ([^ ]+).*/\1 compiling \2/' \
      | while IFS= read -r line; do printf '  %4d s  %s\n' $(( $(date +%s) - start )) "$line"; done || true
    ls "$CACHE"/$WHEEL_GLOB >/dev/null 2>&1 || die "the $MMCV build failed (rerun with the output above)"
    log "$MMCV built in $(( $(date +%s) - start )) s"
  else
    log "reusing the $MMCV_DIST wheel in $CACHE"
  fi
  # (its ops are checked at the end: the fork's mmcv imports OpenCV, which comes with the rest)
  $PIP install -q --force-reinstall --no-deps "$CACHE"/$WHEEL_GLOB
fi

log "installing the rest of $REQ and ravlt_dense (editable)"
# torch is left out: asking for it again lets pip "fix" torch's setuptools>=77 requirement,
# which for upstream would remove the pkg_resources that mmengine 0.10.7's `mmdet::` configs need.
pip_quiet install $(pins_of "$REQ" | grep -v '^torch==') $(build_tools | grep '^setuptools')
# without --no-deps: pip checks the stack's ranges (the extra) against the pins just installed
$PIP install -q --no-build-isolation -e ".[$STACK]"
if [ -n "$(no_deps)" ]; then
  log "installing $(no_deps | paste -sd' ') without their declared dependencies (deployment, panoptic)"
  $PIP install -q --no-deps $(no_deps)
  # tools/deployment/deploy.py needs it; the rest of the project does not
  vpy -W ignore -c 'import ravlt_dense.deploy.rewriters' >/dev/null 2>&1 \
    || log "WARNING: mmdeploy does not import with the $STACK stack: tools/deployment/deploy.py will say what is missing"
fi
# demo/web_demo.py's browser test drives Debian's chromium through its chromedriver
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium and chromium-driver (apt-get) for the web demo's browser test"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    log "WARNING: no chromium/chromedriver here: the web demo's browser test will be skipped" \
      "(sudo apt-get install chromium chromium-driver)"
  fi
fi
vpy -W ignore - "$STACK" "$DEVICE" "$CACHE" <<'PY'
import sys
if sys.argv[1] == 'upstream':
    import pkg_resources  # noqa: F401  mmengine 0.10.7 resolves `mmdet::`/`mmseg::` configs with it
import torch, mmengine, mmcv, mmcv.ops, mmdet, mmseg, ravlt_dense
from mmcv.ops import get_compiling_cuda_version
gpus = ', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
device = f'CUDA {torch.version.cuda} on {gpus or "no visible GPU"}' if torch.version.cuda else 'CPU'
ops = get_compiling_cuda_version()
if sys.argv[2] == 'cuda' and ops == 'not available':
    sys.exit(f'[setup] mmcv {mmcv.__version__} has no CUDA ops: remove {sys.argv[3]}/*.whl and rerun')
ops = 'CPU ops' if ops == 'not available' else f'CUDA {ops} ops'
print(f'[setup] ready ({sys.argv[1]} stack): torch {torch.__version__} ({device}) | mmengine '
      f'{mmengine.__version__} | mmcv {mmcv.__version__} ({ops}) | mmdet {mmdet.__version__} | '
      f'mmseg {mmseg.__version__}')
PY
touch "$VENV/.ready-$STACK"

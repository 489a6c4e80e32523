#!/usr/bin/env bash
# Bring up the project environment in $VENV (default .venv) from requirements/stack.txt.
# mmcv 2.1.0 has no CPU wheel on PyPI, so it is built once with ops (~10 min on 2 cores) and the
# wheel is kept in $RAVLT_WHEEL_CACHE to be reused by every later set-up on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
REQ=requirements/stack.txt
WHEELS=${RAVLT_WHEEL_CACHE:-$HOME/.cache/ravlt_dense/wheels}
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
pin() { grep -E "^$1==" "$REQ" | head -n1; }
build_tools() { grep -E '^[^#].*# \[build\]' "$REQ" | sed 's/ *#.*//'; }
# pip warns that torch wants setuptools>=77 while mmcv's build needs <70; torch runs fine with it.
pip_quiet() { $PIP install -q "$@" 2> >(grep -v "dependency resolver\|requires setuptools\|is ignored: it is neither" >&2); }
# torch is left out here: it is installed first, and asking for it again lets pip "fix" its
# setuptools>=77 requirement, removing the pkg_resources that mmengine's `mmdet::` configs need.
runtime_reqs() { grep -vE '^\s*(#|$)|# \[build\]|^torch==' "$REQ"; echo "setuptools<70"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
# torch first, pinned, so nothing later pulls a CUDA build
log "installing $(pin torch)"
pip_quiet "$(pin torch)"
log "installing $(pin mmengine) and mmcv's build tools"
pip_quiet "$(pin mmengine)" $(build_tools)

MMCV=$(pin mmcv)
if ! $VENV/bin/python -c "import mmcv, mmcv.ops" >/dev/null 2>&1; then
  mkdir -p "$WHEELS"
  if ! ls "$WHEELS"/mmcv-${MMCV#mmcv==}-*.whl >/dev/null 2>&1; then
    log "building $MMCV with ops from source: about 10 minutes on 2 cores (once per machine;"
    log "the wheel is kept in $WHEELS). Compiler progress follows."
    start=$(date +%s)
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} $PIP wheel --no-deps --no-build-isolation -v \
      "$MMCV" -w "$WHEELS" 2>&1 \
      | grep --line-buffered -E '^\s*\[[0-9]+/[0-9]+\]|Created wheel|error:' \
      | sed -u -E 's/^\s*(\[[0-9]+\/[0-9]+\]).* -c ([^ ]+).*/  \1 compiling \2/' || true
    ls "$WHEELS"/mmcv-${MMCV#mmcv==}-*.whl >/dev/null 2>&1 || { log "mmcv build failed"; exit 1; }
    log "mmcv built in $(( $(date +%s) - start )) s"
  else
    log "reusing the mmcv wheel in $WHEELS"
  fi
  $PIP install -q --no-deps "$WHEELS"/mmcv-${MMCV#mmcv==}-*.whl
fi

log "installing the rest of $REQ and ravlt_dense (editable)"
pip_quiet $(runtime_reqs)
# without --no-deps: pip checks the ranges of requirements/runtime.txt against the pins just installed
$PIP install -q --no-build-isolation -e .
$VENV/bin/python -W ignore::DeprecationWarning - <<'PY'
import pkg_resources  # mmengine resolves `mmdet::`/`mmseg::` base configs with it
import torch, mmengine, mmcv, mmcv.ops, mmdet, mmseg
print('[setup] ready: torch', torch.__version__, '| mmengine', mmengine.__version__, '| mmcv', mmcv.__version__,
      '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__)
PY
touch "$VENV/.ready"

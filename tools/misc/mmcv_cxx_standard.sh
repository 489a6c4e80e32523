#!/usr/bin/env bash
# mmcv_cxx_standard.sh SOURCE_DIR PYTHON
# Before mmcv is built from SOURCE_DIR against PYTHON's torch: torch >= 2.14's headers refuse any
# standard older than C++20, but mmcv's setup.py (mmcv 2.1.0 and onedl-mmcv 2.3.6 alike) passes
# -std=c++17, and torch's extension builder adds its own -std=c++20 only where an extension sets
# none. For such a torch this raises that one flag in SOURCE_DIR/setup.py to -std=c++20 and says
# so; for older torches, or a setup.py without the flag, it changes nothing. Exit status 0 either
# way, 1 when SOURCE_DIR has no setup.py or torch does not import.
set -euo pipefail
src=${1:?usage: mmcv_cxx_standard.sh SOURCE_DIR PYTHON}
python=${2:?usage: mmcv_cxx_standard.sh SOURCE_DIR PYTHON}
[ -f "$src/setup.py" ] || { echo "mmcv_cxx_standard: no setup.py in $src" >&2; exit 1; }
torch=$("$python" -W ignore -c 'import torch; print(torch.__version__)') \
    || { echo "mmcv_cxx_standard: torch does not import in $python" >&2; exit 1; }
release=${torch%%+*}
if [ "$(printf '%s\n' 2.14 "$release" | sort -V | head -n1)" != 2.14 ]; then
    exit 0  # C++17 is what these torches build extensions with
fi
if grep -q -- '-std=c++17' "$src/setup.py"; then
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    echo "torch $torch needs C++20: building $(basename "$src") with -std=c++20 (its setup.py asks for C++17)"
fi

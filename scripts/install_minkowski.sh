#!/usr/bin/env bash
# Build and install MinkowskiEngine 0.5.4 (CPU only) for the optional `backend="minkowski"` of largead.
#
# Usage: bash scripts/install_minkowski.sh [PYTHON]        (default PYTHON: python3 on PATH)
#
# MinkowskiEngine publishes no wheels and its 0.5.4 sdist does not build or import on a current stack as is. This
# script:
#   1. exits 0 at once when `import MinkowskiEngine` already works with PYTHON;
#   2. otherwise installs a wheel cached by an earlier run, if one exists for this Python / torch pair, under
#      ${LARGEAD_CACHE:-$HOME/.cache/largead}/wheels/minkowskiengine-0.5.4-<python tag>-torch<version>/;
#   3. otherwise builds one: libopenblas-dev (apt, when missing), ninja + wheel (pip), the sdist from PyPI (pip
#      download, kept under <cache>/sdist/; put it there by hand where pip cannot fetch it), patches the unpacked source (Python 3.10+ imports `collections.abc`, torch._six removed, no
#      `pip uninstall` side effect in setup.py), then
#        MAX_JOBS=2 pip wheel --use-pep517 --no-build-isolation --no-deps \
#            --config-settings=--global-option=--blas=openblas --config-settings=--global-option=--cpu_only <src>
#      stores the patched wheel in the cache (atomically) and installs it;
#   4. checks that `import MinkowskiEngine` works and fails loudly otherwise.
# It is idempotent: a second run is a no-op, a run in a fresh environment with a warm cache takes seconds.
# Environment: LARGEAD_CACHE (cache root), MAX_JOBS (compiler jobs, default 2).
set -euo pipefail

PYTHON="${1:-python3}"
ME_VERSION="0.5.4"
log() { echo "[install_minkowski] $*" >&2; }
die() { echo "[install_minkowski] ERROR: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found"

if "$PYTHON" -c "import MinkowskiEngine" >/dev/null 2>&1; then
    log "MinkowskiEngine already importable with $PYTHON: nothing to do"
    exit 0
fi

"$PYTHON" -c "import torch" >/dev/null 2>&1 || die "torch is not importable with $PYTHON: install torch first"
PYTAG="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
TORCH_VERSION="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
CACHE_ROOT="${LARGEAD_CACHE:-$HOME/.cache/largead}"
WHEEL_DIR="$CACHE_ROOT/wheels/minkowskiengine-${ME_VERSION}-${PYTAG}-torch${TORCH_VERSION}"
PIP=("$PYTHON" -m pip)

check_import() {
    "$PYTHON" -c "import MinkowskiEngine as ME; assert ME.__version__ == '$ME_VERSION', ME.__version__" \
        || die "MinkowskiEngine was installed from $1 but does not import (see the traceback above)"
}

# setuptools may normalise the distribution name to lower case in the wheel file name
find_wheel() { compgen -G "$1/[Mm]inkowski[Ee]ngine-${ME_VERSION}-*.whl" | head -n 1 || true; }

WHEEL="$(find_wheel "$WHEEL_DIR")"
if [[ -n "$WHEEL" ]]; then
    log "installing cached wheel $WHEEL"
    "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL" \
        || die "could not install the cached wheel $WHEEL (delete it to force a rebuild)"
    check_import "$WHEEL"
    log "done"
    exit 0
fi

# --- build prerequisites -------------------------------------------------------------------------------------------
have_openblas() {
    ldconfig -p 2>/dev/null | grep 'libopenblas\.so ' >/dev/null \
        && { [[ -f /usr/include/cblas.h ]] || compgen -G "/usr/include/*/cblas.h" >/dev/null; }
}
if ! have_openblas; then
    log "installing libopenblas-dev (apt)"
    SUDO=""
    [[ "$(id -u)" != "0" ]] && SUDO="sudo"
    $SUDO apt-get install -y -q libopenblas-dev \
        || { $SUDO apt-get update -q && $SUDO apt-get install -y -q libopenblas-dev; } \
        || die "could not install libopenblas-dev; install it with your system package manager and re-run"
fi
command -v g++ >/dev/null 2>&1 || die "g++ not found: install a C++ compiler (apt-get install build-essential)"
"${PIP[@]}" install -q ninja wheel || die "pip could not install ninja and wheel"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/largead-me-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- source --------------------------------------------------------------------------------------------------------
SDIST_DIR="$CACHE_ROOT/sdist"
SDIST="$SDIST_DIR/MinkowskiEngine-${ME_VERSION}.tar.gz"
if [[ ! -f "$SDIST" ]]; then
    log "downloading the MinkowskiEngine ${ME_VERSION} sdist"
    # pip prepares the sdist's metadata while downloading; setup.py then imports numpy.distutils, which needs the
    # standard-library distutils (Python <= 3.11) rather than setuptools' copy.
    SETUPTOOLS_USE_DISTUTILS=stdlib "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
        "MinkowskiEngine==${ME_VERSION}" -d "$WORK" \
        || die "pip could not download MinkowskiEngine==${ME_VERSION}; place the sdist at $SDIST and re-run"
    mkdir -p "$SDIST_DIR"
    cp "$WORK/MinkowskiEngine-${ME_VERSION}.tar.gz" "$SDIST.tmp" && mv -f "$SDIST.tmp" "$SDIST"
fi
tar -xzf "$SDIST" -C "$WORK" || die "$SDIST is not a readable sdist (delete it and re-run)"
SRC="$WORK/MinkowskiEngine-${ME_VERSION}"
[[ -f "$SRC/setup.py" ]] || die "unexpected sdist layout: $SRC/setup.py missing"

# --- patch the source, so the cached wheel is already fixed ------------------------------------------------------
log "patching the source for Python >= 3.10 and torch 2.x"
for f in MinkowskiCommon.py MinkowskiCoordinateManager.py MinkowskiKernelGenerator.py MinkowskiTensorField.py \
         utils/quantization.py; do
    sed -i -E -e 's/^from collections import Sequence$/from collections.abc import Sequence/' \
        -e 's/^from collections import Sequence, namedtuple$/from collections import namedtuple\nfrom collections.abc import Sequence/' \
        "$SRC/MinkowskiEngine/$f"
done
sed -i -E 's/^from torch\._six import container_abcs, istuple$/import collections.abc as container_abcs/' \
    "$SRC/MinkowskiEngine/utils/gradcheck.py"
# setup.py runs `pip uninstall MinkowskiEngine -y` with whatever pip is on PATH: drop that side effect.
sed -i -E 's/^run_command\("pip", "uninstall", "MinkowskiEngine", "-y"\)$/pass/' "$SRC/setup.py"
if grep -rqE '^from collections import .*Sequence|torch\._six' "$SRC/MinkowskiEngine"; then
    grep -rnE '^from collections import .*Sequence|torch\._six' "$SRC/MinkowskiEngine" >&2
    die "patching left imports that fail on Python >= 3.10 (listed above)"
fi

# --- build ---------------------------------------------------------------------------------------------------------
log "building the wheel (CPU only, OpenBLAS; MAX_JOBS=${MAX_JOBS:-2}); this takes several minutes"
MAX_JOBS="${MAX_JOBS:-2}" "${PIP[@]}" wheel --use-pep517 --no-build-isolation --no-deps \
    --config-settings=--global-option=--blas=openblas --config-settings=--global-option=--cpu_only \
    -w "$WORK/dist" "$SRC" || die "building MinkowskiEngine ${ME_VERSION} failed (compiler output above)"
BUILT="$(find_wheel "$WORK/dist")"
[[ -n "$BUILT" ]] || die "pip wheel succeeded but produced no MinkowskiEngine wheel in $WORK/dist"

mkdir -p "$WHEEL_DIR"
NAME="$(basename "$BUILT")"
cp "$BUILT" "$WHEEL_DIR/.$NAME.tmp"
mv -f "$WHEEL_DIR/.$NAME.tmp" "$WHEEL_DIR/$NAME"
log "cached $WHEEL_DIR/$NAME"

"${PIP[@]}" install --no-deps --force-reinstall "$WHEEL_DIR/$NAME" || die "could not install $WHEEL_DIR/$NAME"
check_import "$WHEEL_DIR/$NAME"
log "MinkowskiEngine ${ME_VERSION} installed"

#!/usr/bin/env bash
# Build the portable single-file binary on Linux from the same spec as the Windows exe
# (dicom_migrator.spec), with the legacy stack, then run the binary's --self-test headless and
# print its size. CI runs it through tests/test_build.py; exit code 0 only if all of that worked.
#
#   1. creates .venvs/build-legacy from requirements/legacy.txt + requirements/build.txt
#      (skipped while a stamp of the requirements and the interpreter is current),
#   2. pyinstaller dicom_migrator.spec -> dist/DICOMPACSMigrator,
#   3. dist/DICOMPACSMigrator --self-test with no display (report in dist/selftest.txt),
#   4. prints the size and fails if it is over the budget; details in dist/build-info.txt.
#
# Usage: bash scripts/build_linux.sh
# Environment: BUILD_PYTHON (interpreter for the venv; default: a Python 3.8, the version of
#   the Windows exe, if one is installed (pyenv), else python3.11, else python3),
#   SIZE_BUDGET_MB (default 35, in units of 1,000,000 bytes), SKIP_APT=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venvs/build-legacy"
NAME="DICOMPACSMigrator"
BINARY="$ROOT/dist/$NAME"
SIZE_BUDGET_MB="${SIZE_BUDGET_MB:-35}"

log() { printf '\n==> %s\n' "$*"; }
die() { printf '\nBUILD FAILED: %s\n' "$*" >&2; exit 1; }

# --- interpreter ------------------------------------------------------------------------------
usable_python() {
    # PyInstaller needs a shared libpython; the wizard needs tkinter; numpy 1.24 (legacy pin)
    # has wheels for Python 3.8 to 3.11 only.
    "$1" - <<'EOF' >/dev/null 2>&1
import sys, sysconfig, tkinter
assert (3, 8) <= sys.version_info[:2] <= (3, 11)
assert sysconfig.get_config_var("Py_ENABLE_SHARED")
EOF
}

pick_python() {
    if [ -n "${BUILD_PYTHON:-}" ]; then
        usable_python "$BUILD_PYTHON" || die "BUILD_PYTHON=$BUILD_PYTHON is not Python 3.8-3.11 \
with tkinter and a shared libpython"
        echo "$BUILD_PYTHON"
        return
    fi
    local candidate
    # The Windows exe runs Python 3.8: building with 3.8 here tests the frozen app on it too.
    for candidate in python3.8 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.8.*/bin/python3.8 \
        python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && usable_python "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    die "no usable Python 3.8-3.11 (with tkinter and a shared libpython) found; set BUILD_PYTHON"
}

# --- PyInstaller's Linux tools (ldd, objdump, strip) ------------------------------------------
ensure_binutils() {
    command -v objdump >/dev/null 2>&1 && command -v strip >/dev/null 2>&1 && return 0
    [ "${SKIP_APT:-0}" = "1" ] && die "objdump/strip missing (Debian package binutils)"
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo -n)
    log "apt-get install binutils (PyInstaller needs objdump and strip)"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
        binutils || die "could not install binutils"
}

# --- build virtual environment ----------------------------------------------------------------
ensure_venv() {
    local python="$1" stamp want
    stamp="$VENV/.requirements.sha256"
    want="$({ cat requirements/legacy.txt requirements/build.txt; "$python" -VV; } |
        sha256sum | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "creating $VENV with $("$python" -V 2>&1)"
    rm -rf "$VENV"  # a clean environment: nothing left over from an older pin set
    "$python" -m venv "$VENV"
    # Wheels only: the Windows build has no compiler either, and a source build would hide a
    # pin that has no wheel for the exe's Python.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
        -r requirements/legacy.txt -r requirements/build.txt
    echo "$want" >"$stamp"
}

# --- main -------------------------------------------------------------------------------------
STARTED=$(date +%s)
PYTHON="$(pick_python)"
ensure_binutils
ensure_venv "$PYTHON"

log "pyinstaller dicom_migrator.spec ($("$VENV/bin/python" -V 2>&1), PyInstaller \
$("$VENV/bin/python" -m PyInstaller --version))"
rm -f "$BINARY"
"$VENV/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build" dicom_migrator.spec \
    || die "pyinstaller failed"
[ -x "$BINARY" ] || die "pyinstaller did not produce $BINARY"
BUILT=$(date +%s)

log "$BINARY --self-test (headless)"
# No display and an empty HOME: the self-test must need neither.
SELFTEST_HOME="$(mktemp -d)"
trap 'rm -rf "$SELFTEST_HOME"' EXIT
set +e
env -u DISPLAY -u WAYLAND_DISPLAY HOME="$SELFTEST_HOME" \
    DICOM_MIGRATOR_SELFTEST_REPORT="$ROOT/dist/selftest.txt" \
    timeout 300 "$BINARY" --self-test
SELFTEST_RC=$?
set -e
[ "$SELFTEST_RC" -eq 0 ] || die "the built binary's self-test failed (exit $SELFTEST_RC)"

SIZE=$(stat -c %s "$BINARY")
BUDGET=$((SIZE_BUDGET_MB * 1000000))
{
    echo "binary: dist/$NAME"
    echo "size_bytes: $SIZE"
    echo "size_budget_bytes: $BUDGET"
    echo "python: $("$VENV/bin/python" -V 2>&1)"
    echo "pyinstaller: $("$VENV/bin/python" -m PyInstaller --version)"
    echo "build_seconds: $((BUILT - STARTED))"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$ROOT/dist/build-info.txt"
log "summary"
awk -v n="$NAME" -v s="$SIZE" -v b="$SIZE_BUDGET_MB" -v t="$((BUILT - STARTED))" 'BEGIN {
    printf "Binary: dist/%s, %.1f MB (%d bytes; budget %d MB), took %d s, self-test passed.\n",
        n, s / 1000000, s, b, t }'
[ "$SIZE" -le "$BUDGET" ] || die "the binary is $SIZE bytes, over the ${SIZE_BUDGET_MB} MB budget"

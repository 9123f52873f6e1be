#!/usr/bin/env bash
# The one command that runs every test from a fresh clone:
#   1. installs the real DICOM peers (Orthanc, DCMTK) and Xvfb with apt-get when missing,
#   2. creates .venvs/legacy and .venvs/modern and installs requirements/<stack>.txt +
#      requirements/test.txt (skipped while a stamp of the requirements' hash is current),
#   3. checks that engine/, wizard/ and tests/ are valid Python 3.8 (vermin),
#   4. runs pytest in each stack and exits non-zero if either stack failed.
#
# Usage: bash scripts/test.sh [pytest args...]
#   STACKS="modern" bash scripts/test.sh tests/test_peers.py -x
# Environment: STACKS (default "legacy modern"), PYTHON (default python3.11, else python3),
#   PYTEST_TIMEOUT (per-test seconds, default 300), SKIP_APT=1, SKIP_VERMIN=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STACKS="${STACKS:-legacy modern}"
# numpy 1.24 (legacy pins) has wheels up to Python 3.11 only: prefer 3.11 where it exists.
if [ -z "${PYTHON:-}" ]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
PYTEST_TIMEOUT="${PYTEST_TIMEOUT:-300}"
VENVS="$ROOT/.venvs"

log() { printf '\n==> %s\n' "$*"; }

# --- 1. system packages ---------------------------------------------------------------------
have() {
    # Orthanc lives in /usr/sbin, which a non-login PATH may lack.
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

install_system_packages() {
    local missing=()
    have Orthanc || missing+=(orthanc)
    have storescu || missing+=(dcmtk)
    have Xvfb || missing+=(xvfb)
    have xauth || missing+=(xauth)
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if [ "${SKIP_APT:-0}" = "1" ]; then
        log "SKIP_APT=1: not installing ${missing[*]} (tests needing them will skip or fail)"
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo=(sudo -n); else
            log "not root and no sudo: cannot install ${missing[*]}"; return 0; fi
    fi
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# --- 2. virtual environments ----------------------------------------------------------------
requirements_hash() {
    # The stamp covers both requirement files and the interpreter that built the venv.
    { cat "requirements/$1.txt" requirements/test.txt; "$PYTHON" -VV; } | sha256sum | cut -d' ' -f1
}

ensure_venv() {
    local stack="$1" venv="$VENVS/$1" stamp want
    stamp="$venv/.requirements.sha256"
    want="$(requirements_hash "$stack")"
    # A venv built by another interpreter (Python upgraded, pyenv switched) is rebuilt whole.
    if [ -d "$venv" ] && [ "$("$venv/bin/python" -VV 2>/dev/null || true)" != "$("$PYTHON" -VV)" ]; then
        log "interpreter changed: recreating $venv"
        rm -rf "$venv"
    fi
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv"
        "$PYTHON" -m venv "$venv"
    fi
    log "installing requirements/$stack.txt + requirements/test.txt into $venv"
    rm -f "$stamp"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -r "requirements/$stack.txt" -r requirements/test.txt
    echo "$want" >"$stamp"
}

# --- 3. Python 3.8 syntax check ---------------------------------------------------------------
run_vermin() {
    local dirs=() d venv=""
    for d in engine wizard tests; do [ -d "$d" ] && dirs+=("$d"); done
    [ "${#dirs[@]}" -eq 0 ] && return 0
    for s in $STACKS; do venv="$VENVS/$s"; done
    log "vermin -t=3.8- ${dirs[*]}"
    # Exits non-zero when any file needs a newer Python than 3.8.
    "$venv/bin/vermin" -q -t=3.8- --no-tips --violations \
        "${dirs[@]}"
}

# --- display for the wizard tests -------------------------------------------------------------
XVFB_PID=""
stop_xvfb() {
    if [ -n "$XVFB_PID" ]; then
        kill "$XVFB_PID" 2>/dev/null || true
        wait "$XVFB_PID" 2>/dev/null || true
        XVFB_PID=""
    fi
}
trap stop_xvfb EXIT

start_xvfb() {
    if [ -n "${DISPLAY:-}" ] || ! have Xvfb; then
        return 0
    fi
    local n=99
    # Skip displays another X server (or a stale lock) already holds.
    while [ -e "/tmp/.X$n-lock" ] || [ -e "/tmp/.X11-unix/X$n" ]; do n=$((n + 1)); done
    Xvfb ":$n" -screen 0 1280x1024x24 -nolisten tcp >"${TMPDIR:-/tmp}/xvfb-$n.log" 2>&1 &
    XVFB_PID=$!
    local i
    for i in $(seq 1 100); do
        [ -e "/tmp/.X11-unix/X$n" ] && break
        kill -0 "$XVFB_PID" 2>/dev/null || { log "Xvfb :$n failed to start"; XVFB_PID=""; return 0; }
        sleep 0.05
    done
    export DISPLAY=":$n"
    log "started Xvfb on $DISPLAY (pid $XVFB_PID)"
}

# --- main -----------------------------------------------------------------------------------
for s in $STACKS; do
    case "$s" in legacy | modern) ;; *) echo "unknown stack '$s' (use legacy, modern)" >&2; exit 2 ;; esac
done

install_system_packages
for s in $STACKS; do ensure_venv "$s"; done
VERMIN_RC=0
if [ "${SKIP_VERMIN:-0}" != "1" ]; then
    run_vermin || VERMIN_RC=$?
fi
start_xvfb

declare -A RC=()
for s in $STACKS; do
    venv="$VENVS/$s"
    log "pytest [$s] $("$venv/bin/python" -c 'import pydicom, pynetdicom, sys; print("python %d.%d, pydicom %s, pynetdicom %s" % (sys.version_info[:2] + (pydicom.__version__, pynetdicom.__version__)))')"
    set +e
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider --timeout="$PYTEST_TIMEOUT" "$@"
    RC[$s]=$?
    set -e
done

stop_xvfb

log "summary"
FAILED=0
if [ "$VERMIN_RC" -ne 0 ]; then
    echo "vermin (Python 3.8 compatibility): FAILED (exit $VERMIN_RC)"
    FAILED=1
elif [ "${SKIP_VERMIN:-0}" != "1" ]; then
    echo "vermin (Python 3.8 compatibility): ok"
fi
for s in $STACKS; do
    rc="${RC[$s]}"
    case "$rc" in
        0) echo "stack $s: ok" ;;
        5) echo "stack $s: FAILED (pytest collected no tests, exit 5)"; FAILED=1 ;;
        *) echo "stack $s: FAILED (pytest exit $rc)"; FAILED=1 ;;
    esac
done
exit "$FAILED"

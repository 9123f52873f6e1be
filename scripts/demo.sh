#!/usr/bin/env bash
# The main job from a fresh clone: set up a virtual environment, start the built-in practice
# receiver on this computer, and migrate the sample DICOM files shipped with pydicom into it.
# Usage: bash scripts/demo.sh [SOURCE_DIR]     (default: pydicom's own test files)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=.venvs/demo
if [ ! -x "$VENV/bin/python" ]; then
    echo "Setting up $VENV (one time)..."
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r requirements/modern.txt 2>&1 | grep -v "is ignored" || true
fi
PY="$ROOT/$VENV/bin/python"
SOURCE="${1:-$("$PY" -c 'import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))')}"
OUT=$(mktemp -d)
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m engine receive --port "$PORT" --out "$OUT/received" --aet PRACTICE > "$OUT/receiver.log" 2>&1 &
RECEIVER=$!
trap 'kill $RECEIVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do "$PY" -m engine echo --host 127.0.0.1 --port "$PORT" --called-aet PRACTICE >/dev/null 2>&1 && break; sleep 0.2; done
"$PY" -m engine echo --host 127.0.0.1 --port "$PORT" --called-aet PRACTICE
set +e
"$PY" -m engine migrate "$SOURCE" --host 127.0.0.1 --port "$PORT" --called-aet PRACTICE \
    --work-dir "$OUT/work"
CODE=$?
set -e
"$PY" -m engine export-csv --work-dir "$OUT/work" --out "$OUT/audit.csv"
echo "Received files: $OUT/received   Audit: $OUT/audit.csv   (exit code $CODE: 1 means some files were skipped or failed, each with its reason in the audit)"

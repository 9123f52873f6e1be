"""Run one ``python -m engine`` command and print how much CPU the parent and its sender
processes used, e.g. to see where per-file time goes:

    python scripts/cpu_split.py migrate SRC --host 127.0.0.1 --port 11112 --called-aet X \\
        --work-dir /tmp/w --associations 4 --quiet
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.cli import main  # noqa: E402  (after the path is set)

if __name__ == "__main__":
    before, started = os.times(), time.perf_counter()
    code = main(sys.argv[1:])
    after = os.times()
    print("wall %.2f s | parent CPU %.3f s (imports included) | sender processes CPU %.3f s"
          % (time.perf_counter() - started,
             after.user + after.system - before.user - before.system,
             after.children_user + after.children_system
             - before.children_user - before.children_system), file=sys.stderr)
    sys.exit(code)

"""Where a sender child process starts: deliberately light on imports.

A spawned child (Windows) imports the engine, pydicom and numpy before it can run anything;
a Ctrl+C in the console during that second reached every child and printed a traceback each.
This module, and the flags it defines, unpickle without importing any of that, so the child
ignores Ctrl+C (the parent's to handle) before the heavy imports begin.
"""
from __future__ import annotations

import signal
from typing import Any, Callable


class Shared:
    """Flags both sides see: cancel, pause, halt, and whether to ask the pacer first.

    Plain bytes in shared memory, not multiprocessing.Event: a child checks them several times
    per file, and an Event costs a cross-process lock each time."""

    CANCEL, PAUSED, HALT, THROTTLE = range(4)

    def __init__(self, ctx: Any, always_ask: bool, hold_results: bool = False) -> None:
        self.flags = ctx.RawArray("b", 4)
        self.always_ask = always_ask
        self.hold_results = hold_results  # see procsend._HeldResult
        if always_ask:
            self.flags[self.THROTTLE] = 1

    def is_set(self, flag: int) -> bool:
        return bool(self.flags[flag])

    def set(self, flag: int, on: bool = True) -> None:
        self.flags[flag] = 1 if on else 0

    def stop_check(self) -> Callable[[], bool]:
        """Whether sending must stop (cancelled, or halted after a fatal problem)."""
        flags, cancel, halt = self.flags, self.CANCEL, self.HALT
        return lambda: bool(flags[cancel] or flags[halt])


def child_main(*args: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A service manager's SIGTERM is for the parent, which stops the children cleanly.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from .procsend import run_child
    run_child(*args)

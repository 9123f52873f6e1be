"""Speed and ETA over a sliding window, so a slow start or a pause does not skew the estimate."""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Deque, Optional, Tuple


class RateMeter:
    """Files and bytes per second over the last ``window_s``; 0 once nothing has been done for
    that long (waiting for the sending window, or a destination that stopped answering)."""

    def __init__(self, window_s: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._samples: Deque[Tuple[float, int, int]] = deque()
        self.files = 0
        self.bytes = 0
        self.started = clock()
        self._base: Tuple[float, int, int] = (self.started, 0, 0)  # counts at the window's start

    def add(self, files: int = 1, nbytes: int = 0) -> None:
        self.files += files
        self.bytes += nbytes
        now = self._clock()
        self._samples.append((now, self.files, self.bytes))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self._window:
            self._base = self._samples.popleft()

    def rates(self) -> Tuple[float, float]:
        """(files per second, megabytes per second) over the window, up to now."""
        now = self._clock()
        self._trim(now)
        t0, f0, b0 = self._base
        span = max(now - t0, 1e-6)
        return (self.files - f0) / span, (self.bytes - b0) / span / 1e6

    def eta(self, remaining: Optional[int]) -> Optional[float]:
        if remaining is None:
            return None
        fps, _ = self.rates()
        if fps <= 0:
            return None
        return max(remaining, 0) / fps


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return "%d:%02d:%02d" % (hours, minutes, secs)
    return "%d:%02d" % (minutes, secs)

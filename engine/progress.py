"""Speed and ETA over a sliding window, so a slow start or a pause does not skew the estimate."""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Deque, Optional, Tuple


class RateMeter:
    def __init__(self, window_s: float = 20.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._samples: Deque[Tuple[float, int, int]] = deque()
        self.files = 0
        self.bytes = 0
        self.started = clock()

    def add(self, files: int = 1, nbytes: int = 0) -> None:
        self.files += files
        self.bytes += nbytes
        now = self._clock()
        self._samples.append((now, self.files, self.bytes))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()

    def rates(self) -> Tuple[float, float]:
        """(files per second, megabytes per second) over the window."""
        if len(self._samples) < 2:
            elapsed = max(self._clock() - self.started, 1e-6)
            return self.files / elapsed, self.bytes / elapsed / 1e6
        t0, f0, b0 = self._samples[0]
        t1, f1, b1 = self._samples[-1]
        span = max(t1 - t0, 1e-6)
        return (f1 - f0) / span, (b1 - b0) / span / 1e6

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

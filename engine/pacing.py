"""Being polite to a production PACS: a rate cap, a daily time window and back-off.

Time comes from a ``Clock`` so tests can drive hours of schedule without sleeping.
"""
from __future__ import annotations

import datetime as _dt
import re
import threading
import time
from typing import Callable, Optional

from .errors import ConfigError


class Clock:
    """Wall time for the window, monotonic time for rates; ``sleep`` honours cancellation."""

    def now(self) -> _dt.datetime:
        return _dt.datetime.now()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, cancelled: Callable[[], bool]) -> None:
        end = time.monotonic() + seconds
        while not cancelled():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))


_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class TimeWindow:
    """A daily sending window such as 19:00-06:30 (crossing midnight is allowed)."""

    def __init__(self, text: str) -> None:
        m = _WINDOW_RE.match(text)
        if not m:
            raise ConfigError("The time window must look like 19:00-06:30 (24-hour clock).")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ConfigError("The time window %r has an impossible time." % text)
        if (h1, m1) == (h2, m2):
            raise ConfigError("The time window starts and ends at the same time.")
        self.start = _dt.time(h1, m1)
        self.end = _dt.time(h2, m2)
        self.text = "%02d:%02d-%02d:%02d" % (h1, m1, h2, m2)

    def is_open(self, at: _dt.datetime) -> bool:
        t = at.time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # crosses midnight

    def seconds_until_open(self, at: _dt.datetime) -> float:
        if self.is_open(at):
            return 0.0
        opening = at.replace(hour=self.start.hour, minute=self.start.minute, second=0,
                             microsecond=0)
        if opening <= at:
            opening += _dt.timedelta(days=1)
        return (opening - at).total_seconds()


class RateLimiter:
    """A token bucket in bytes shared by all senders (thread-safe)."""

    def __init__(self, max_mbps: float, clock: Clock) -> None:
        if max_mbps <= 0:
            raise ConfigError("The rate cap must be more than 0 MB/s.")
        self.rate = max_mbps * 1e6
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens = self.rate  # allow a one-second burst
        self._last = clock.monotonic()

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` from the bucket; return how long the caller must wait first."""
        with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= nbytes
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class Governor:
    """Decides how many associations may send right now.

    Busy statuses (0xA7xx) or response times far above the healthy baseline halve the number
    and pause; a run of healthy answers adds one back. Each change is reported in plain words.
    """

    def __init__(self, maximum: int, log: Callable[[str], None], clock: Clock,
                 slow_factor: float = 4.0, recover_after: int = 50, warmup: int = 20,
                 slow_run: int = 3) -> None:
        self.maximum = maximum
        self.allowed = maximum
        self.log = log
        self.clock = clock
        self.slow_factor = slow_factor
        self.recover_after = recover_after
        self.warmup = warmup
        self.slow_run = slow_run
        self._lock = threading.Lock()
        self._baseline: Optional[float] = None
        self._samples = 0
        self._slow = 0
        self._healthy = 0
        self.pause_until = 0.0

    def record(self, seconds: float, busy: bool) -> None:
        """Called after every C-STORE answer (or busy status) by any sender thread.

        One slow answer proves nothing (a big file, a disk flush); only several in a row,
        measured against a baseline of enough healthy answers, count as "slow".
        """
        with self._lock:
            if busy:
                self._slow = 0
                self._back_off("busy")
                return
            limit = max(self._baseline * self.slow_factor, 0.5) if self._baseline else 0.0
            if self._samples >= self.warmup and seconds > limit:
                self._slow += 1
                if self._slow >= self.slow_run:
                    self._slow = 0
                    self._back_off("answering slowly (%.1f s per file)" % seconds)
                return
            self._slow = 0
            self._samples += 1
            self._baseline = seconds if self._baseline is None else \
                0.95 * self._baseline + 0.05 * seconds
            self._healthy += 1
            if self.allowed < self.maximum and self._healthy >= self.recover_after:
                self.allowed += 1
                self._healthy = 0
                self.log("The destination is keeping up again: now using %d connection(s)."
                         % self.allowed)

    def _back_off(self, why: str) -> None:
        self._healthy = 0
        now = self.clock.monotonic()
        if now < self.pause_until:
            return  # already backing off; one reaction per episode
        before = self.allowed
        self.allowed = max(1, self.allowed // 2)
        self.pause_until = now + 5.0
        self.log("The destination is %s: pausing 5 s and using %d connection(s) instead of %d."
                 % (why, self.allowed, before))

    def pause_left(self) -> float:
        """Seconds every sender still waits after a busy answer (0 when sending is fine)."""
        with self._lock:
            return max(0.0, self.pause_until - self.clock.monotonic())

    def permits(self, index: int) -> bool:
        """Whether sender ``index`` may take new work (checked between batches, so a sender
        never sits on a batch that others could send)."""
        with self._lock:
            return index < self.allowed


class Pacer:
    """What every sender asks before each file: may I send now, and how did it go."""

    def __init__(self, control: "ControlLike", associations: int = 1,
                 max_mbps: Optional[float] = None, window: Optional[str] = None,
                 clock: Optional[Clock] = None) -> None:
        self.control = control
        self.clock = clock or Clock()
        self.window = TimeWindow(window) if window else None
        self.limiter = RateLimiter(max_mbps, self.clock) if max_mbps else None
        self.governor = Governor(associations, lambda text: control.emit_log("warning", text),
                                 self.clock)
        self._lock = threading.Lock()
        self.note = ""  # shown in progress while waiting, e.g. "waiting until 19:00"

    def before_send(self, index: int, nbytes: int,
                    gave_up: Callable[[], bool] = lambda: False) -> float:
        """Block until sender ``index`` may send ``nbytes``; return the seconds waited.
        ``gave_up``: the wait is pointless now (the sender is gone, the run halted)."""
        waited = 0.0

        def stop() -> bool:
            return self.control.cancelled or gave_up()
        while not stop():
            pause = self._window_wait() or min(self.governor.pause_left(), 1.0)
            if pause <= 0:
                break
            self.clock.sleep(pause, stop)
            waited += pause
        if self._set_note("") and self.window is not None and not self.control.cancelled:
            self.control.emit_log("notice", "The sending window %s is open: sending."
                                  % self.window.text)
        if self.limiter is not None:
            delay = self.limiter.reserve(nbytes)
            if delay > 0:
                self.clock.sleep(delay, stop)
                waited += delay
        return waited

    def _window_wait(self) -> float:
        if self.window is None:
            return 0.0
        seconds = self.window.seconds_until_open(self.clock.now())
        if seconds > 0:
            opening = self.window.start.strftime("%H:%M")
            if self._set_note("waiting until %s (sending window %s)" % (opening,
                                                                        self.window.text)):
                self.control.emit_log("notice", "Outside the sending window %s: waiting until "
                                      "%s." % (self.window.text, opening))
            return min(seconds, 30.0)
        return 0.0

    def _set_note(self, text: str) -> bool:
        """Set the waiting note; True when it changed (so the log line appears once)."""
        with self._lock:
            changed = text != self.note
            self.note = text
            return changed

    def after_send(self, seconds: float, status: Optional[int]) -> None:
        busy = status is not None and 0xA700 <= status <= 0xA7FF
        self.governor.record(seconds, busy)


class ControlLike:  # the part of jobs.Control the pacer uses (kept here to avoid a cycle)
    cancelled: bool

    def emit_log(self, level: str, text: str) -> None:
        raise NotImplementedError

"""The one place that reads engine events: drains the job queue on the Tk thread.

Workers only ``queue.put``; this pump takes at most ``BATCH`` events per tick, keeps only the
newest ``Progress`` of each job within a batch, and hands each event to ``dispatch`` inside its
own try block so a failing handler is reported and polling carries on.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import sys
import tkinter as tk
from typing import Callable, Dict, List, Optional

from engine.events import EngineEvent, Progress

LOG = logging.getLogger(__name__)

POLL_MS = 50
BATCH = 50

Dispatch = Callable[[EngineEvent], None]
ErrorReporter = Callable[..., None]  # called like Tk's report_callback_exception(exc, val, tb)


class EventPump:
    """Don't call from a non-UI thread (except ``queue.put`` on the queue it reads)."""

    def __init__(self, root: tk.Misc, events: "queue.Queue[EngineEvent]", dispatch: Dispatch,
                 report_error: ErrorReporter, after_batch: Optional[Callable[[], None]] = None
                 ) -> None:
        self._root = root
        self._queue = events
        self._dispatch = dispatch
        self._report_error = report_error
        self._after_batch = after_batch
        self._after_id: Optional[str] = None
        self._stopped = True

    def start(self) -> None:
        self._stopped = False
        self._schedule(POLL_MS)

    def stop(self) -> None:
        self._stopped = True
        if self._after_id is not None:
            with contextlib.suppress(tk.TclError):  # the root is gone: nothing left to cancel
                self._root.after_cancel(self._after_id)
            self._after_id = None

    @property
    def running(self) -> bool:
        return not self._stopped

    def poll_now(self) -> int:
        """Drain one batch immediately (tests use this); return how many events were taken."""
        return self._tick_body()

    def _schedule(self, delay_ms: int) -> None:
        if self._stopped:
            return
        if delay_ms <= 0:
            self._after_id = self._root.after_idle(self._tick)
        else:
            self._after_id = self._root.after(delay_ms, self._tick)

    def _tick(self) -> None:
        self._after_id = None
        if self._stopped:
            return
        taken = self._tick_body()
        # More waiting: come back as soon as Tk is idle, so input and redraws still get a turn.
        self._schedule(0 if taken >= BATCH and not self._queue.empty() else POLL_MS)

    def _tick_body(self) -> int:
        batch = self._take_batch()
        for event in _coalesce(batch):
            self._safe(self._dispatch, event)
        if batch and self._after_batch is not None:
            self._safe(self._after_batch)
        return len(batch)

    def _take_batch(self) -> List[EngineEvent]:
        batch: List[EngineEvent] = []
        while len(batch) < BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _safe(self, func: Callable[..., None], *args: object) -> None:
        try:
            func(*args)
        except Exception:  # one bad handler must not stop the pump; it is reported instead
            self._report_error(*sys.exc_info())


def _coalesce(batch: List[EngineEvent]) -> List[EngineEvent]:
    """Drop every Progress that a later Progress of the same job in this batch supersedes."""
    newest: Dict[int, int] = {}
    for index, event in enumerate(batch):
        if isinstance(event, Progress):
            newest[event.job_id] = index
    return [event for index, event in enumerate(batch)
            if not isinstance(event, Progress) or newest[event.job_id] == index]

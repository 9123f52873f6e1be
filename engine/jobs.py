"""The only module that starts threads and processes.

A job is a function ``work(control) -> JobFinished`` run in a daemon thread. Whatever it returns
or raises, the sink receives exactly one terminal event (``JobFinished`` or ``JobFailed``).
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import sys
import threading
import traceback
from typing import Any, Callable, Optional, Sequence

from .errors import ConfigError, DestinationUnreachable, UserFacingError, describe_os_error
from .events import EngineEvent, JobFailed, JobFinished, JobStarted, LogLine, Sink

LOG = logging.getLogger(__name__)
_ids = itertools.count(1)


class Control:
    """Cancel and pause flags shared by a job and whoever started it.

    May be called from any thread.
    """

    def __init__(self, job_id: int = 0, sink: Optional[Sink] = None) -> None:
        self.job_id = job_id
        self._sink = sink
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def emit(self, event: EngineEvent) -> None:
        if self._sink is not None:
            self._sink(event)

    def emit_log(self, level: str, text: str) -> None:
        self.emit(LogLine(self.job_id, level, text))

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # a paused job must wake up to notice the cancel

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_if_paused(self, poll_s: float = 0.2) -> None:
        """Block while paused; return at once when running or cancelled."""
        while not self._running.wait(poll_s):
            pass

    def sleep(self, seconds: float) -> bool:
        """Sleep unless cancelled first; return True when the full time passed."""
        return not self._cancel.wait(seconds)


class JobHandle:
    """What the starter of a job keeps. May be called from any thread."""

    def __init__(self, job_id: int, kind: str, control: Control, thread: threading.Thread) -> None:
        self.job_id = job_id
        self.kind = kind
        self.control = control
        self._thread = thread

    def cancel(self) -> None:
        self.control.cancel()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)


def run_job(kind: str, work: Callable[[Control], JobFinished], sink: Sink,
            job_id: Optional[int] = None, total: Optional[int] = None) -> EngineEvent:
    """Run ``work`` in the calling thread and emit exactly one terminal event; return it."""
    jid = next(_ids) if job_id is None else job_id
    control = Control(jid, sink)
    return _run(kind, work, control, total)


def _run(kind: str, work: Callable[[Control], JobFinished], control: Control,
         total: Optional[int]) -> EngineEvent:
    control.emit(JobStarted(control.job_id, kind, total))
    terminal: EngineEvent
    try:
        terminal = work(control)
    except UserFacingError as exc:
        code = 2 if isinstance(exc, ConfigError) else 3 if isinstance(
            exc, DestinationUnreachable) else 1
        terminal = JobFailed(control.job_id, str(exc), "", code)
    except OSError as exc:  # a folder we cannot create or write: the user can fix that
        LOG.debug("Job %s (%s) failed", control.job_id, kind, exc_info=True)
        terminal = JobFailed(control.job_id, describe_os_error(exc), traceback.format_exc(), 2)
    except Exception as exc:  # every job ends with one terminal event, whatever happened
        LOG.error("Job %s (%s) failed", control.job_id, kind, exc_info=True)
        terminal = JobFailed(control.job_id, "Unexpected error: %s" % exc, traceback.format_exc())
    control.emit(terminal)
    return terminal


def start_job(kind: str, work: Callable[[Control], JobFinished], sink: Sink,
              total: Optional[int] = None) -> JobHandle:
    """Start ``work`` in a daemon thread. May be called from any thread."""
    jid = next(_ids)
    control = Control(jid, sink)
    thread = threading.Thread(target=_run, args=(kind, work, control, total),
                              name="job-%d-%s" % (jid, kind), daemon=True)
    handle = JobHandle(jid, kind, control, thread)
    thread.start()
    return handle


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a helper daemon thread for engine internals (parallel senders, scanners)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


SENDERS_ENV = "DICOM_MIGRATOR_SENDERS"  # "threads", "spawn" or "fork": overrides the choice


def process_context() -> Optional[Any]:
    """The multiprocessing context for sender processes, or None to use threads.

    fork where the platform has it (no second start-up of the interpreter and libraries);
    spawn elsewhere (Windows: the frozen exe calls multiprocessing.freeze_support first)."""
    choice = os.environ.get(SENDERS_ENV, "").strip().lower()
    if choice == "threads":
        return None
    methods = multiprocessing.get_all_start_methods()
    if choice in ("spawn", "fork") and choice in methods:
        return multiprocessing.get_context(choice)
    if choice:  # forkserver too: its children would take the server for their parent
        LOG.warning(
            "%s=%s is not used here (choose threads, spawn or fork%s); using the default.",
            SENDERS_ENV, choice, "" if "fork" in methods else "; fork is not available")
    if "fork" in methods and sys.platform != "darwin":  # macOS frameworks break after fork
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def start_process(target: Callable[..., None], args: Sequence[Any], name: str,
                  ctx: Any) -> Any:
    """Start ``target(*args)`` in a daemon child process of context ``ctx``."""
    process = ctx.Process(target=target, args=tuple(args), name=name, daemon=True)
    process.start()
    return process

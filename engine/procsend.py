"""A Sender whose DICOM work runs in a child process.

With every sender in one process, the senders and the migration's writer (walk, header reads,
manifest) took turns holding Python's global interpreter lock: measured into DCMTK storescp,
the writer thread used 2.1 s of CPU and the sender 0.9 s for 3000 small files, against 0.17 s
for the same sends without the hand-offs. A child per association does its C-STOREs on its
own interpreter; the parent keeps everything that must be single (manifest, pacer, events).

The parent side (``ProcessSender``) has the interface of ``sender.Sender``, so the pool drives
both alike. Results skip the pool's relay thread: each child writes them to a second pipe that
the migration's writer reads itself (``ResultPipes``). Measured into Orthanc, the relay hop
(a thread wake-up, a queue hand-off and a second wake-up per file) cost about a tenth of all
our CPU per file; the relay thread now wakes once per batch.

The parent's pacer stays the only pacer: a child asks it before each file only
while it can say "wait" (a rate cap or window is set, or the governor is backing off), and
reports every answer time so the governor sees all associations.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import select
import time
import traceback
from collections import deque
from typing import (Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Set,
                    Tuple)

from .childstart import Shared, child_main
from .config import Destination, Settings
from .errors import DestinationUnreachable
from .events import AssociationOpened, LogLine, Outcome
from .headers import InstanceHeader
from .jobs import Control, start_process, start_thread
from .pacing import Pacer
from .sender import SendResult, Sender

LOG = logging.getLogger(__name__)
POLL_S = 0.05  # how often the parent passes a pause or cancel on while a batch is out
START_TIMEOUT_S = 60.0  # a spawned child imports the engine first (Windows): allow for it
STOP_TIMEOUT_S = 10.0


class SenderProcessFailed(Exception):
    """The child could not be started or stopped answering: the pool falls back to threads."""


class ProcessSender:
    """Parent side of one child sender. Used by one pool thread at a time."""

    def __init__(self, dest: Destination, settings: Settings, control: Control,
                 pacer: Optional[Pacer], index: int, halt: Callable[[], None],
                 shared: Shared, ctx: Any) -> None:
        self.control = control
        self.pacer = pacer
        self.index = index
        self.associations_opened = 0
        self._halt = halt
        self._shared = shared
        self._conn, child_conn = ctx.Pipe()
        self.results, child_results = ctx.Pipe(duplex=False)
        try:
            forked = ctx.get_start_method() == "fork"
            self._process = start_process(
                child_main, (child_conn, child_results, index, dest, settings, control.job_id,
                             shared, forked, os.getpid()),
                "sender-%d" % index, ctx)
        except Exception as exc:  # no processes here (a locked-down host): use threads
            self.results.close()
            raise SenderProcessFailed(str(exc)) from exc
        finally:
            child_conn.close()
            child_results.close()
        self._poller: Any = None
        if hasattr(select, "poll"):  # not on Windows, whose pipes Connection.poll handles
            self._poller = select.poll()
            self._poller.register(self._conn.fileno(), select.POLLIN)

    def wait_ready(self) -> None:
        """Children start in parallel (a spawned one imports the engine first); then this."""
        if not self._conn.poll(START_TIMEOUT_S):
            self._process.terminate()
            raise SenderProcessFailed("the sending process did not start")
        try:
            self._conn.recv()  # ("ready",)
        except EOFError as exc:
            raise SenderProcessFailed("the sending process ended at start") from exc

    def stopped(self) -> bool:
        return self.control.cancelled or self._shared.is_set(Shared.HALT)

    # -- the pool's interface ---------------------------------------------------------------
    def send_batch(self, headers: Sequence[InstanceHeader]) -> Iterator[SendResult]:
        """Relay the batch's conversation; its results go to ResultPipes, not through here."""
        try:
            self._conn.send(("batch", list(headers)))
        except OSError:  # killed while idle: its end of the pipe is closed
            self._died()
        for _ in self._conversation():
            pass
        return iter(())

    def close(self) -> None:
        """Release the child's association (idle, or benched by the governor)."""
        if not self._process.is_alive():
            return
        try:
            self._conn.send(("close",))
            for _ in self._conversation():
                pass
        except (OSError, DestinationUnreachable):
            pass  # closing must never hide the results we already have

    def shutdown(self) -> None:
        try:
            self._conn.send(("stop",))
            while self._conn.poll(STOP_TIMEOUT_S):
                self._handle(self._conn.recv())  # the last association events
        except (EOFError, OSError, SenderProcessFailed):
            pass
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.terminate()
        self._conn.close()

    # -- messages from the child ------------------------------------------------------------
    def _conversation(self) -> Iterator[None]:
        """Relay the child's messages until it reports the batch (or close) done."""
        while True:
            self._mirror_control()
            if not self._readable(POLL_S):
                if not self._process.is_alive() and not self._conn.poll():
                    self._died()
                continue
            try:
                message = self._conn.recv()
            except (EOFError, OSError):  # OSError: reset by a child killed mid-message
                self._died()
            if message[0] == "done":
                self.associations_opened = message[1]
                return
            try:
                self._handle(message)
            except OSError:  # answering a child that has just died
                self._died()
            yield None

    def _handle(self, message: Tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "event":
            if isinstance(message[1], AssociationOpened):  # counted here too: a killed child
                self.associations_opened += 1  # never reports its own count
            self.control.emit(message[1])
        elif kind == "answers":
            record_answers(self.pacer, self._shared, message[1])
        elif kind == "permit":
            waited = self.pacer.before_send(self.index, message[1], self._gave_up) \
                if self.pacer else 0.0
            self._mirror_control()  # a Stop during the wait must reach the child first
            self._conn.send(("waited", waited))
        elif kind == "unreachable":
            self.associations_opened = message[2]  # its "done" is not waited for
            self._halt()  # the other children stop too
            raise DestinationUnreachable(message[1])
        elif kind == "crash":
            LOG.error("Sending process %d failed:\n%s", self.index, message[1])
            self._halt()
            raise DestinationUnreachable("Sending stopped after an internal error (%s). Files "
                                         "not yet confirmed are sent on the next run."
                                         % message[1].strip().splitlines()[-1])

    def _gave_up(self) -> bool:
        # a child killed while the window is closed must stop the run now, not at opening
        return self._shared.is_set(Shared.HALT) or not self._process.is_alive()

    def _readable(self, timeout: float) -> bool:
        # Connection.poll builds a selector per call, which cost more than the rest of
        # relaying a result; one poll object per pipe does the same.
        if self._poller is None:
            return bool(self._conn.poll(timeout))
        return bool(self._poller.poll(timeout * 1000))

    def _mirror_control(self) -> None:
        shared = self._shared
        if self.control.cancelled:
            shared.set(Shared.CANCEL)
        shared.set(Shared.PAUSED, self.control.paused)
        if shared.always_ask or self.pacer is None:
            return
        if shared.is_set(Shared.THROTTLE) and self.pacer.governor.pause_left() <= 0:
            shared.set(Shared.THROTTLE, False)  # this or another thread's back-off is over

    def _died(self) -> None:
        self._process.join(2.0)  # its pipe closes a moment before it can be reaped
        code = self._process.exitcode
        how = ("it was killed (signal %d)" % -code if code is not None and code < 0 else
               "exit code %s" % code if code is not None else "it stopped answering")
        self._halt()
        raise DestinationUnreachable(
            "The sending process of connection %d (process id %s) ended unexpectedly: %s. "
            "Files not yet confirmed are sent on the next run."
            % (self.index + 1, self._process.pid, how))


def record_answers(pacer: Optional[Pacer], shared: Shared,
                   answers: Sequence[Tuple[float, Optional[int]]]) -> None:
    """Give the pacer a child's answer times; when it backs off, every child asks first."""
    if pacer is None or not answers:
        return
    episode = pacer.governor.pause_until
    for seconds, status in answers:
        pacer.after_send(seconds, status)
    if pacer.governor.pause_until != episode:
        shared.set(Shared.THROTTLE)


class ResultPipes:
    """The children's result pipes, read by the migration's writer thread only.

    A child writes each result before it reports its batch done, so once every relay has
    seen its child's last "done", reading until nothing is left gets every result."""

    def __init__(self, pacer: Optional[Pacer], shared: Shared) -> None:
        self.pacer, self.shared = pacer, shared
        self._conns: Dict[int, Any] = {}
        self._ready: Deque[SendResult] = deque()
        self._poller: Any = select.poll() if hasattr(select, "poll") else None

    def add(self, conn: Any) -> None:
        self._conns[conn.fileno()] = conn
        if self._poller is not None:
            self._poller.register(conn.fileno(), select.POLLIN)

    def waiting(self) -> bool:
        return bool(self._ready) or bool(self._conns and self._readable(0))

    def get(self, timeout: float) -> Optional[SendResult]:
        """The next result, waiting up to ``timeout`` seconds (0: only what is there)."""
        if not self._ready and self._conns:
            for fd in self._readable(timeout):
                self._take(fd)
        return self._ready.popleft() if self._ready else None

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def _readable(self, timeout: float) -> List[int]:
        if self._poller is not None:
            return [fd for fd, _ in self._poller.poll(timeout * 1000)]
        from multiprocessing.connection import wait  # Windows: pipes are not selectable
        return [c.fileno() for c in wait(list(self._conns.values()), timeout)]

    def _take(self, fd: int) -> None:
        conn = self._conns[fd]
        try:
            header, outcome, reason, status, sent_ts, answers = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the child ended; its relay says how
            if self._poller is not None:
                self._poller.unregister(fd)
            del self._conns[fd]
            conn.close()
            return
        record_answers(self.pacer, self.shared, answers)
        self._ready.append(SendResult(header, Outcome(outcome), reason, status, sent_ts))


class SenderProcesses:
    """Creates the children of one pool; they share the flags and the result pipes."""

    def __init__(self, dest: Destination, settings: Settings, control: Control,
                 pacer: Optional[Pacer], ctx: Any, size: int = 1) -> None:
        self.ctx = ctx
        always = pacer is not None and (pacer.window is not None or pacer.limiter is not None)
        self.shared = Shared(self.ctx, always, hold_results=size == 1)
        self.dest, self.settings, self.control, self.pacer = dest, settings, control, pacer
        self.results = ResultPipes(pacer, self.shared)

    def make(self, index: int, halt: Callable[[], None]) -> ProcessSender:
        def halt_all() -> None:
            self.shared.set(Shared.HALT)
            halt()
        sender = ProcessSender(self.dest, self.settings, self.control, self.pacer, index,
                               halt_all, self.shared, self.ctx)
        self.results.add(sender.results)
        return sender


# -- the child ------------------------------------------------------------------------------
class _ChildControl:
    """What a Sender needs of jobs.Control, backed by the shared flags and the pipe."""

    def __init__(self, conn: Any, job_id: int, shared: Shared) -> None:
        self._conn = conn
        self.job_id = job_id
        self._shared = shared

    @property
    def cancelled(self) -> bool:
        return self._shared.is_set(Shared.CANCEL)

    @property
    def paused(self) -> bool:
        return self._shared.is_set(Shared.PAUSED)

    def wait_if_paused(self, poll_s: float = POLL_S) -> None:
        while self.paused and not self.cancelled:
            time.sleep(poll_s)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless cancelled first; True when the full time passed."""
        end = time.monotonic() + seconds
        while not self.cancelled:
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, POLL_S))
        return False

    def emit(self, event: Any) -> None:
        self._conn.send(("event", event))

    def emit_log(self, level: str, text: str) -> None:
        self.emit(LogLine(self.job_id, level, text))


class _ChildPacer:
    """Asks the parent's pacer only when it may say "wait"; collects answer times."""

    def __init__(self, conn: Any, shared: Shared) -> None:
        self._conn = conn
        self._shared = shared
        self.answers: List[Tuple[float, Optional[int]]] = []
        self.before_wait: Callable[[], None] = lambda: None

    def before_send(self, index: int, nbytes: int) -> float:
        if not self._shared.is_set(Shared.THROTTLE):
            return 0.0
        self.before_wait()  # the parent may say "wait": report what is done first
        if self.answers:
            self._conn.send(("answers", self.take_answers()))
        self._conn.send(("permit", nbytes))
        reply = self._conn.recv()
        return float(reply[1])

    def after_send(self, seconds: float, status: Optional[int]) -> None:
        self.answers.append((seconds, status))
        if status is not None and 0xA700 <= status <= 0xA7FF:
            self._conn.send(("answers", self.take_answers()))  # back off at once

    def take_answers(self) -> List[Tuple[float, Optional[int]]]:
        answers, self.answers = self.answers, []
        return answers


def run_child(conn: Any, results: Any, index: int, dest: Destination, settings: Settings,
              job_id: int, shared: Shared, forked: bool, parent_pid: int) -> None:
    """The child's life (started by childstart.child_main, with Ctrl+C already ignored)."""
    if forked:
        _drop_inherited({conn.fileno(), results.fileno()})
    start_thread(lambda: _watch_parent(parent_pid), "parent-watch")
    control = _ChildControl(conn, job_id, shared)
    pacer = _ChildPacer(conn, shared)
    sender = Sender(dest, settings, control, pacer, index,  # type: ignore[arg-type]
                    lambda: shared.is_set(Shared.HALT), shared.stop_check())
    try:
        conn.send(("ready",))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                return
            if message[0] == "close":
                sender.close()
            else:
                _send(conn, results, sender, pacer, shared, message[1])
            conn.send(("done", sender.associations_opened))
    except (EOFError, OSError):
        return  # the parent is gone (killed, or quit at once on a second Ctrl+C)
    finally:
        sender.close()
        conn.close()
        results.close()


def _watch_parent(parent_pid: int) -> None:
    """When the parent is gone (killed, or quit at once on a second Ctrl+C), a child must not
    go on waiting for a silent destination, reconnecting, or holding files open."""
    parent = multiprocessing.parent_process()
    if os.name == "nt" and parent is not None:
        parent.join()  # waits on the parent's process handle
    else:
        while os.getppid() == parent_pid:  # an orphan is adopted by another process
            time.sleep(0.5)
    os._exit(0)


def _drop_inherited(keep: Set[int]) -> None:
    """A forked child holds copies of every descriptor of the parent. Those of the work-folder
    lock and of the other children's pipes must go: otherwise a killed parent's lock stays
    taken, and a child never sees its parent's end of the pipe close."""
    if os.path.isdir("/proc/self/fd"):  # only the open ones (the limit may be a million)
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the listing's own descriptor, already gone
    else:
        low = 3
        for fd in sorted(keep):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, _max_fd())
    root = logging.getLogger()
    for handler in list(root.handlers):  # their files were closed with the rest
        root.removeHandler(handler)
    root.addHandler(logging.StreamHandler())


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (AttributeError, ValueError, OSError):
        return 65536


class _HeldResult:
    """With a single association, a file's result is written once the next file is on the
    wire (or sooner: before any wait, at the batch's end). Between an answer and the next
    send that destination is idle; reporting then, and waking the parent, lengthened the gap:
    A/B into Orthanc, one association, 557 -> 600 files/s. With several associations the
    others keep the destination busy, and holding measured slightly slower, so it is off.
    At most one result is held, which keeps the kill -9 bound."""

    def __init__(self, results: Any, pacer: _ChildPacer, hold: bool) -> None:
        self._results, self._pacer, self._hold = results, pacer, hold
        self._held: Optional[bytes] = None

    def hold(self, result: SendResult) -> None:
        self.flush()
        # plain pickle: Connection.send builds a ForkingPickler (a copied dispatch table)
        # per message, which cost more than the rest of reporting a result
        self._held = pickle.dumps((result.header, result.outcome.value, result.reason,
                                   result.status, result.sent_syntax,
                                   self._pacer.take_answers()), pickle.HIGHEST_PROTOCOL)
        if not self._hold:
            self.flush()

    def flush(self) -> None:
        data, self._held = self._held, None
        if data is not None:
            try:
                self._results.send_bytes(data)
            except OSError:  # the parent is gone (its end of the pipe closed)
                os._exit(0)


def _send(conn: Any, results: Any, sender: Any, pacer: _ChildPacer, shared: Shared,
          batch: List[InstanceHeader]) -> None:
    held = _HeldResult(results, pacer, shared.hold_results)
    sender.on_sent = pacer.before_wait = held.flush
    try:
        try:
            for result in sender.send_batch(batch):
                held.hold(result)
        finally:
            held.flush()
    except DestinationUnreachable as exc:
        conn.send(("unreachable", str(exc), sender.associations_opened))
    except (EOFError, OSError):
        raise  # the pipe to the parent: nothing to report to
    except Exception:  # reported to the parent, which stops the run with a reason
        conn.send(("crash", traceback.format_exc()))

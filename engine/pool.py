"""N associations sending in parallel, fed batches through a bounded queue.

The destination's ingest, not our sender, is usually the bottleneck, so several associations
in flight at once are faster. Workers never touch the manifest: they hand results back to the
migration's single writer through a queue.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, List, Optional

from .config import Destination, Settings
from .errors import DestinationUnreachable
from .headers import InstanceHeader
from .jobs import Control, process_context, start_thread
from .pacing import Pacer
from .procsend import SenderProcessFailed, SenderProcesses
from .sender import SendResult, Sender

LOG = logging.getLogger(__name__)
_STOP = object()
IDLE_CLOSE_S = 3.0  # an association idle this long is released (peers time out idle ones)


class SenderPool:
    def __init__(self, dest: Destination, settings: Settings, control: Control, size: int,
                 pacer: Optional[Pacer] = None) -> None:
        self.control = control
        self.size = size
        self._batches: "queue.Queue[object]" = queue.Queue(maxsize=size * 2)
        self._halt = threading.Event()
        self._closing = threading.Event()
        self.pacer = pacer
        self.unreachable = ""
        self._live = size
        self._lock = threading.Lock()
        self.mode = "threads"
        self._inbox: Any = _QueueInbox()  # where results wait for the writer
        self.senders: List[Any] = self._child_senders(dest, settings, control, pacer, size) or [
            Sender(dest, settings, control, pacer, i, self._halt.is_set) for i in range(size)]
        self._threads = [start_thread(lambda s=s: self._work(s), "sender-%d" % s.index)
                         for s in self.senders]

    def _child_senders(self, dest: Destination, settings: Settings, control: Control,
                       pacer: Optional[Pacer], size: int) -> List[Any]:
        """One child process per association where the platform allows; [] means threads."""
        ctx = process_context()
        if ctx is None:
            return []
        made: List[Any] = []
        try:
            factory = SenderProcesses(dest, settings, control, pacer, ctx, size)
            for i in range(size):
                made.append(factory.make(i, self._halt.set))
            for sender in made:
                sender.wait_ready()
        except (SenderProcessFailed, OSError) as exc:
            if not control.cancelled:  # a Ctrl+C during start-up is no reason to warn
                LOG.warning("Sending from child processes is not possible here (%s); sending "
                            "from threads instead.", exc)
            for sender in made:
                sender.shutdown()
            return []
        self.mode = "processes"
        self._inbox = factory.results  # the children's results come straight to the writer
        return made

    @property
    def associations_opened(self) -> int:
        return sum(s.associations_opened for s in self.senders)

    @property
    def halted(self) -> bool:
        return self._halt.is_set()

    def _work(self, sender: Sender) -> None:
        try:
            while True:
                self._wait_for_permit(sender)
                try:
                    batch = self._batches.get(timeout=IDLE_CLOSE_S)
                except queue.Empty:
                    sender.close()  # idle: the peer would time the association out
                    continue
                if batch is _STOP:
                    return
                if sender.stopped():
                    continue  # drain: unsent files stay unrecorded and are sent next run
                try:
                    for result in sender.send_batch(batch):  # type: ignore[arg-type]
                        self._inbox.put(result)
                except DestinationUnreachable as exc:
                    self.unreachable = self.unreachable or str(exc)
                    self._halt.set()
                except Exception as exc:  # a bug must stop the run, not lose a batch quietly
                    LOG.exception("Sender %d failed", sender.index)
                    self.unreachable = self.unreachable or (
                        "Sending stopped after an internal error (%s). Files not yet confirmed "
                        "are sent on the next run." % (str(exc) or type(exc).__name__))
                    self._halt.set()
        finally:
            sender.shutdown()
            with self._lock:
                self._live -= 1

    def _wait_for_permit(self, sender: Sender) -> None:
        """A sender the governor has benched takes no new batch until it is allowed again."""
        if self.pacer is None:
            return
        benched = False
        while not (self._closing.is_set() or self.control.cancelled or self._halt.is_set()
                   or self.pacer.governor.permits(sender.index)):
            if not benched:
                sender.close()  # senders keep their association between batches
                benched = True
            time.sleep(0.05)

    def results_waiting(self) -> bool:
        """Whether another result is already queued (so a commit can wait for it)."""
        return self._inbox.waiting()

    def submit(self, batch: List[InstanceHeader], record: Callable[[SendResult], None]) -> None:
        """Queue a batch; while the queue is full, record each result the moment it arrives
        (a confirmed file must reach the manifest at once to survive a kill)."""
        while True:
            try:
                self._batches.put_nowait(batch)
                return
            except queue.Full:
                self._record_next(record, 0.05)

    def _record_next(self, record: Callable[[SendResult], None], timeout: float) -> bool:
        result = self._inbox.get(timeout)
        if result is None:
            return False
        record(result)
        return True

    def drain(self, record: Callable[[SendResult], None]) -> None:
        while self._record_next(record, 0):
            pass

    def finish(self, record: Callable[[SendResult], None]) -> None:
        """Let the workers empty the queue, stop them, and record every last result."""
        self._closing.set()
        for _ in self._threads:
            self.submit(_STOP, record)  # type: ignore[arg-type]
        while any(t.is_alive() for t in self._threads):
            self._record_next(record, 0.05)
        self.drain(record)
        self._inbox.close()


class _QueueInbox:
    """Results of sender threads, with the interface of procsend.ResultPipes."""

    def __init__(self) -> None:
        self._queue: "queue.Queue[SendResult]" = queue.Queue()

    def put(self, result: SendResult) -> None:
        self._queue.put(result)

    def waiting(self) -> bool:
        return not self._queue.empty()

    def get(self, timeout: float) -> Optional[SendResult]:
        try:
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        pass

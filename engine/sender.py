"""Send files over reused associations and turn every peer reaction into an outcome.

Peer behaviour never raises: each file ends as a SendResult. Only a destination that cannot be
reached at all raises DestinationUnreachable, because then no file can get a meaningful result.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import (Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Set,
                    Tuple)

from pynetdicom import build_context

from . import status as st
from .association import open_link, sop_class_name, transfer_syntax_name
from .dimse_link import LinkBroken
from .config import Destination, Settings
from .errors import DestinationUnreachable
from .events import Outcome
from .headers import EXPLICIT_BE, InstanceHeader
from .jobs import Control
from .pacing import Pacer
from .negotiation import EXPLICIT_LE, IMPLICIT_LE, ContextPlan, plan_contexts
from .structure import Truncated, even_copy
from .transcode import TranscodeError, transcode_file

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    header: InstanceHeader
    outcome: Outcome
    reason: str
    status: Optional[int] = None
    sent_syntax: str = ""


class _NoResponse(Exception):
    """The association broke or timed out while a file was in flight."""


class Sender:
    """Owns the current association to one destination. Used by one thread at a time."""

    def __init__(self, dest: Destination, settings: Settings, control: Control,
                 pacer: Optional[Pacer] = None, index: int = 0,
                 halted: Optional[Callable[[], bool]] = None,
                 stop_check: Optional[Callable[[], bool]] = None) -> None:
        self.dest = dest
        self.settings = settings
        self.control = control
        self.pacer = pacer
        self.index = index
        self._halted = halted
        self._assoc: Any = None
        self._proposed: Set[Tuple[str, str]] = set()  # contexts the open association proposed
        self.ever_connected = False
        self.associations_opened = 0
        if stop_check is not None:  # asked several times per file: one call, not four
            self.stopped = stop_check  # type: ignore[assignment]
        self.on_sent: Callable[[], None] = lambda: None  # see DirectLink.on_sent

    def stopped(self) -> bool:
        return self.control.cancelled or bool(self._halted and self._halted())

    # -- association handling ------------------------------------------------------------
    def _open(self, plan: ContextPlan) -> Any:
        contexts = [build_context(sop, [ts]) for sop, ts in plan.contexts]
        failure = None
        for attempt in range(self.settings.retries + 1):
            if self.stopped():
                return None
            assoc, failure = open_link(self.dest, self.settings, contexts,
                                       sink=self.control.emit, job_id=self.control.job_id)
            if assoc is not None:
                if hasattr(assoc, "stop_requested"):
                    assoc.stop_requested = self.stopped
                    assoc.on_sent = lambda: self.on_sent()  # the current one, set per batch
                self.ever_connected = True
                self.associations_opened += 1
                return assoc
            if failure is not None and failure.how == "rejected" and not self.ever_connected:
                break  # a configuration problem: retrying will not change the answer
            self.control.sleep(self.settings.backoff_base_s * (2 ** attempt))
        reason = failure.reason if failure else "The destination could not be reached."
        raise DestinationUnreachable(reason)

    def close(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is None:
            return
        try:
            assoc.release()  # a link no longer established aborts instead
        except Exception:  # closing must never hide the results we already have
            LOG.warning("Closing the association failed", exc_info=True)

    def shutdown(self) -> None:
        """The pool is done with this sender."""
        self.close()

    def _drop(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            try:
                assoc.abort()
            except Exception:
                LOG.debug("Abort after failure failed", exc_info=True)

    # -- sending ---------------------------------------------------------------------------
    def send_batch(self, headers: Sequence[InstanceHeader]) -> Iterator[SendResult]:
        """Send ``headers`` on as few associations as their SOP classes allow."""
        plans = plan_contexts((h.sop_class_uid, h.transfer_syntax) for h in headers)
        for plan in plans:
            classes = set(plan.sop_classes)
            files = [h for h in headers if h.sop_class_uid in classes]
            yield from self._send_plan(plan, files)
            if self.stopped():
                return

    def _send_plan(self, plan: ContextPlan, files: List[InstanceHeader]) -> Iterator[SendResult]:
        # The association of the previous batch is kept when it proposed everything this batch
        # needs: opening one costs more than sending a hundred small files.
        if self._assoc is not None and not (set(plan.contexts) <= self._proposed
                                            and self._assoc.still_open()):
            self.close()
        pending: Deque[InstanceHeader] = deque(files)
        attempts: Dict[str, int] = {}
        finished = False
        try:
            while pending and not self.stopped():
                self.control.wait_if_paused()
                if self.pacer is not None:
                    waited = self.pacer.before_send(self.index, pending[0].size)
                    if waited > 5 and self._assoc is not None:
                        self.close()  # an idle association would be timed out by the peer
                    if self.stopped():
                        return
                if self._assoc is None or not self._assoc.is_established:
                    self._assoc = self._open(plan)
                    if self._assoc is None:
                        return
                    self._proposed = set(plan.contexts)
                header = pending[0]
                result = self._attempt(header, attempts)
                if result is not None:
                    pending.popleft()
                    yield result
            finished = True
        finally:
            if not finished or self.stopped():
                self.close()

    def _attempt(self, header: InstanceHeader, attempts: Dict[str, int]) -> Optional[SendResult]:
        """One try at one file; None means "try this file again"."""
        tries = attempts.get(header.path, 0) + 1
        attempts[header.path] = tries
        try:
            result = self._send_one(self._assoc, header)
        except _NoResponse as exc:
            self._drop()
            if self.stopped():
                return None  # not confirmed: it stays unrecorded and goes on the next run
            if tries > self.settings.retries:
                return SendResult(header, Outcome.FAILED, "The destination broke the connection "
                                  "or did not answer when this file was sent (%s: %s). The "
                                  "file may be damaged, or the destination may not handle it; "
                                  "its log will say why." % (_attempts(tries), exc))
            self.control.emit_log("warning", "The connection broke while sending %s (%s); "
                                  "reconnecting and trying again." % (header.path, exc))
            return None
        if result.status is not None and st.classify(result.status) is st.StatusKind.RETRY:
            if tries > self.settings.retries:
                return result
            pause = self.settings.backoff_base_s * (2 ** (tries - 1))
            self.control.emit_log("warning", "The destination is busy (%s); waiting %.0f s "
                                  "before trying again." % (st.describe(result.status), pause))
            self.control.sleep(pause)
            return None
        return result

    def _send_one(self, assoc: Any, header: InstanceHeader) -> SendResult:
        accepted: Set[str] = assoc.accepted_syntaxes(header.sop_class_uid)
        if not accepted:
            name = sop_class_name(header.sop_class_uid)
            return SendResult(header, Outcome.FAILED,
                              "The destination does not accept %s — ask the PACS administrator "
                              "to enable it." % name)
        payload: Any = None  # None: stream the file's own bytes
        if header.transfer_syntax in accepted and header.streamable:
            sent_ts = header.transfer_syntax
            if header.odd_length:
                try:
                    payload = even_data_set(header)
                except Truncated as exc:
                    return SendResult(header, Outcome.FAILED, "The file could not be padded to "
                                      "even length (%s)." % exc)
        else:
            sent_ts = self._fallback_syntax(header, accepted)
            if not sent_ts:
                return SendResult(header, Outcome.FAILED, self._not_accepted_reason(header))
            try:
                payload = transcode_file(header.path, sent_ts, decompress=self.settings.decompress,
                                         odd_length=header.odd_length)
            except TranscodeError as exc:
                return SendResult(header, Outcome.FAILED, " ".join(exc.reason.split()))
        return self._store(assoc, header, payload, sent_ts)

    def _fallback_syntax(self, header: InstanceHeader, accepted: Set[str]) -> str:
        if header.transfer_syntax in accepted and header.transfer_syntax in (EXPLICIT_LE,
                                                                          IMPLICIT_LE):
            return header.transfer_syntax  # same syntax, but the file needs re-encoding
        for ts in (EXPLICIT_LE, IMPLICIT_LE):
            if ts in accepted:
                return ts
        return ""

    def _not_accepted_reason(self, header: InstanceHeader) -> str:
        return ("The destination accepts %s but not in %s, and no uncompressed form was accepted "
                "either." % (sop_class_name(header.sop_class_uid),
                             transfer_syntax_name(header.transfer_syntax)))

    def _store(self, assoc: Any, header: InstanceHeader, payload: Any, sent_ts: str) -> SendResult:
        started = time.monotonic()
        try:
            if payload is None:
                answer = assoc.store_file(header.sop_class_uid, header.sop_instance_uid, sent_ts,
                                          header.path, header.dataset_offset,
                                          header.dataset_end)
            elif isinstance(payload, bytes):
                answer = assoc.store_data(header.sop_class_uid, header.sop_instance_uid,
                                          sent_ts, payload)
            else:
                answer = assoc.store_dataset(header.sop_class_uid, header.sop_instance_uid,
                                             sent_ts, payload)
        except (ValueError, AttributeError) as exc:
            return SendResult(header, Outcome.FAILED, "Could not send this file: %s" % exc)
        except LinkBroken as exc:
            raise _NoResponse(str(exc)) from exc
        except OSError as exc:  # our own read of the file, not the network
            return SendResult(header, Outcome.FAILED, "The file could not be read: %s."
                              % (exc.strerror or exc))
        if self.pacer is not None:
            # an abort or timeout is not a response time; it is handled as _NoResponse
            self.pacer.after_send(time.monotonic() - started, answer.status)
        code = answer.status
        kind = st.classify(code)
        text = st.describe(code)
        comment = answer.error_comment
        if comment:
            text += " (destination says: %s)" % comment
        if kind is st.StatusKind.SUCCESS:
            note = "" if sent_ts == header.transfer_syntax else \
                "sent as %s" % transfer_syntax_name(sent_ts)
            return SendResult(header, Outcome.SENT, note, code, sent_ts)
        if kind is st.StatusKind.WARNING:
            return SendResult(header, Outcome.WARNING, text, code, sent_ts)
        return SendResult(header, Outcome.FAILED, "The destination refused this file: " + text,
                          code, sent_ts)


def _attempts(tries: int) -> str:
    return "1 attempt" if tries == 1 else "%d attempts" % tries


def even_data_set(header: InstanceHeader) -> bytes:
    """The file's data set as it is, but with each odd-length value padded (see even_copy)."""
    with open(header.path, "rb") as fp:
        fp.seek(header.dataset_offset)
        data = fp.read((header.dataset_end or header.size) - header.dataset_offset)
    ts = header.transfer_syntax
    return even_copy(data, little=ts != EXPLICIT_BE, implicit=ts == IMPLICIT_LE)

"""C-FIND (Study Root) for verification: one association reused for every query.

Peer behaviour comes back as data (a ``FindReply`` with the matches and the final status);
only "we cannot query this destination at all" raises, because then nothing can be checked.
Works unchanged on pynetdicom 2.0 and 3.0.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

from pydicom.dataset import Dataset
from pynetdicom import build_context

from .association import open_association, seconds
from .config import Destination, Settings
from .errors import DestinationUnreachable
from .jobs import Control

LOG = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION = "1.2.840.10008.1.1"
PENDING = (0xFF00, 0xFF01)  # 0xFF01: pending, but some optional keys were not supported
SUCCESS = 0x0000
CANCELLED = 0xFE00  # "matching terminated": Orthanc's answer when it hits LimitFindInstances
REFUSED = (0x0122, 0x0124)  # SOP class not supported / not authorised


class FindRefused(DestinationUnreachable):
    """The destination talks to us but will not answer queries at all."""


def refusal_message(calling_aet: str) -> str:
    return ("The destination does not allow queries (C-FIND) from our AE title — ask the PACS "
            "administrator to allow C-FIND for %s." % calling_aet.strip())


@dataclass
class FindReply:
    """Everything one C-FIND returned. ``status`` is the final status (None: no answer)."""

    matches: List[Dataset] = field(default_factory=list)
    status: Optional[int] = None
    comment: str = ""

    @property
    def complete(self) -> bool:
        return self.status == SUCCESS

    @property
    def truncated(self) -> bool:
        """The destination stopped early (result cap, or cancelled matching)."""
        return self.status == CANCELLED

    @property
    def failed(self) -> bool:
        return self.status is not None and self.status not in (SUCCESS, CANCELLED)


def describe_find_status(status: Optional[int], comment: str = "") -> str:
    if status is None:
        text = "no answer"
    elif 0xA700 <= status <= 0xA7FF:
        text = "status 0x%04X: the destination is out of resources" % status
    elif 0xA900 <= status <= 0xA9FF:
        text = "status 0x%04X: the destination does not accept this kind of query" % status
    elif 0xC000 <= status <= 0xCFFF:
        text = "status 0x%04X: the destination could not process this query" % status
    elif status in REFUSED:
        text = "status 0x%04X: queries are not allowed" % status
    else:
        text = "status 0x%04X" % status
    return text + (" (destination says: %s)" % comment if comment else "")


def query_keys(level: str, **keys: Any) -> Dataset:
    """A query identifier: ``query_keys("IMAGE", StudyInstanceUID=u, SOPInstanceUID="")``.

    A list value becomes a DICOM multi-value, which PACS treat as "any of these UIDs".
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, list(value) if isinstance(value, (list, tuple)) else value)
    return ds


def text_of(ds: Dataset, keyword: str) -> str:
    """A value from an answer as plain text ('' when absent or empty)."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return ""
    return str(value).strip().rstrip("\x00")


def int_of(ds: Dataset, keyword: str) -> Optional[int]:
    """An optional count (e.g. NumberOfStudyRelatedInstances); None when not answered."""
    try:
        return int(text_of(ds, keyword))
    except ValueError:
        return None


class FindSession:
    """One association to ``dest`` reused for all queries; re-opened when it breaks."""

    def __init__(self, dest: Destination, settings: Settings, control: Control) -> None:
        self.dest = dest
        self.settings = settings
        self.control = control
        self._assoc: Any = None
        self.associations = 0
        self.answered = 0  # queries that got a final status: proof the destination does answer
        self.queries = 0

    def query(self, keys: Dataset) -> FindReply:
        """Send one C-FIND; re-associate and resend when the association breaks."""
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            started = time.monotonic()
            assoc = self._connect(last=attempt + 1 >= attempts)
            reply = self._send(assoc, keys) if assoc is not None else None
            if reply is not None:
                return self._answered(reply)
            if assoc is not None:
                self._drop()
                self._check_refusal(attempt, attempts, time.monotonic() - started)
            if attempt + 1 < attempts:
                self.control.sleep(self.settings.backoff_base_s * (2 ** attempt))
        raise DestinationUnreachable(
            "The connection to the destination broke during the check and could not be "
            "restored (%d attempts, each waiting up to %s). Try again later."
            % (attempts, seconds(self.settings.dimse_timeout)))

    def _connect(self, last: bool) -> Any:
        """The association, or None to try again later (only once we were connected before)."""
        try:
            return self._ensure()
        except FindRefused:
            raise
        except DestinationUnreachable:
            if self.associations == 0 or last:
                raise  # the first contact fails fast: nothing was checked yet
            return None

    def _answered(self, reply: FindReply) -> FindReply:
        self.answered += 1
        if reply.status in REFUSED:
            raise FindRefused(refusal_message(self.settings.calling_aet) + " Its answer: "
                              "%s." % describe_find_status(reply.status, reply.comment))
        return reply

    def _check_refusal(self, attempt: int, attempts: int, elapsed: float) -> None:
        # Every association ended as soon as we asked anything (and not by our timeout): that
        # is how Orthanc, among others, refuses queries from an AE title it does not know.
        if (self.answered == 0 and attempt >= min(1, attempts - 1)
                and elapsed < 0.9 * self.settings.dimse_timeout):
            raise FindRefused("The PACS closed the connection each time we asked which images "
                              "it holds. " + refusal_message(self.settings.calling_aet))

    def _send(self, assoc: Any, keys: Dataset) -> Optional[FindReply]:
        """None when the association broke or timed out before the final status."""
        self.queries += 1
        reply = FindReply()
        park_reactor(assoc)
        try:
            for status, identifier in assoc.send_c_find(keys, STUDY_ROOT_FIND):
                if not status or "Status" not in status:
                    return None  # aborted, or no answer within the DIMSE timeout
                code = int(status.Status)
                if code in PENDING:
                    if identifier is not None:
                        reply.matches.append(identifier)
                    continue
                reply.status = code
                reply.comment = str(status.get("ErrorComment", "") or "").strip()
        except RuntimeError:  # the association is no longer established
            return None
        return reply if reply.status is not None else None

    def _ensure(self) -> Any:
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        contexts = [build_context(STUDY_ROOT_FIND), build_context(VERIFICATION)]
        assoc, failure = open_association(self.dest, self.settings, contexts,
                                          sink=self.control.emit, job_id=self.control.job_id)
        if assoc is None:
            assert failure is not None
            if _refused_every_context(failure.how, failure.reason):
                raise FindRefused(refusal_message(self.settings.calling_aet))
            raise DestinationUnreachable(failure.reason)
        self.associations += 1
        if not any(cx.abstract_syntax == STUDY_ROOT_FIND for cx in assoc.accepted_contexts):
            assoc.release()
            raise FindRefused(refusal_message(self.settings.calling_aet))
        self._assoc = assoc
        return assoc

    def _drop(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            try:
                assoc.abort()
            except Exception:  # already gone: nothing more to do
                LOG.debug("Abort after a broken query failed", exc_info=True)

    def close(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is None:
            return
        try:
            if assoc.is_established:
                assoc.release()
        except Exception:  # closing must never hide the results we already have
            LOG.warning("Closing the query association failed", exc_info=True)


def park_reactor(assoc: Any, wait_s: float = 0.05) -> None:
    """Make sure pynetdicom's reactor thread is parked before a request is sent.

    Why: ``send_c_find`` (pynetdicom 2.0 and 3.0) pauses the reactor by clearing its
    checkpoint and then trusting ``_is_paused``, which can still be True from the reactor's
    previous pass. The reactor then takes the first response off the queue and drops it
    ("Received unexpected C-FIND service message"): against a fast PACS about 1 query in 100
    lost its first match, or hung until the DIMSE timeout when that was the final status.
    Here the flag is reset first, so only the reactor's next pass, which then blocks on the
    cleared checkpoint, can set it again.
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None or not hasattr(assoc, "_is_paused"):
        return  # a pynetdicom without this mechanism: nothing to work around
    checkpoint.clear()
    assoc._is_paused = False
    deadline = time.monotonic() + wait_s
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0002)
    # Still False: the reactor set it between our clear and our reset, and is now blocked on
    # the checkpoint; say so, or send_c_find would wait for the flag for ever.
    assoc._is_paused = True


def _refused_every_context(how: str, reason: str) -> bool:
    # open_association reports "accepted the association but no context" as a rejection with
    # its own sentence (no separate flag yet). We propose only C-FIND and C-ECHO, so here that
    # means: this destination will not answer queries from us.
    return how == "rejected" and "refused every kind of data" in reason


def uid_chunks(uids: Sequence[str], size: int) -> List[List[str]]:
    size = max(1, size)
    return [list(uids[i:i + size]) for i in range(0, len(uids), size)]

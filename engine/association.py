"""Opening associations: the one place that turns pynetdicom's outcomes into plain data.

Used by the sender, echo, probe and verify. Peer behaviour (refused, silent, rejected, aborted)
comes back as an ``OpenFailure`` with a reason written for clinic staff, never as an exception.
Works unchanged on pynetdicom 2.0 and 3.0: every attribute used here exists in both.
"""
from __future__ import annotations

import io
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Set, Tuple

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import RE_VALID_UID, UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT
from pynetdicom.presentation import PresentationContext

from . import compat
from .config import Destination, Settings
from .dimse_link import DirectLink, LinkBroken, StoreAnswer
from .events import AssociationClosed, AssociationOpened, Sink

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenFailure:
    """Why an association could not be opened."""

    how: str  # "refused" | "timeout" | "rejected" | "aborted"
    reason: str  # plain language, shown to the user as is
    dicom_reply: bool = False  # the peer answered with a DICOM PDU, so it does speak DICOM


def seconds(value: float) -> str:
    """'1 second', '0.5 seconds': durations in messages read naturally."""
    return "%g second%s" % (value, "" if value == 1 else "s")


def enable_nodelay(event: Any) -> None:
    """EVT_CONN_OPEN handler: turn Nagle off, or every C-STORE waits for a delayed ACK."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_ae(settings: Settings) -> AE:
    """An AE configured from ``settings``: our AE title, timeouts and receive PDU limit."""
    ae = AE(ae_title=settings.calling_aet.strip())
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.connection_timeout = settings.connect_timeout
    ae.maximum_pdu_size = settings.max_pdu
    return ae


def sop_class_name(uid: str) -> str:
    """'CT Image Storage' for a known UID, else the UID itself (private classes, typos)."""
    return _uid_name(uid)


def transfer_syntax_name(uid: str) -> str:
    """'JPEG Baseline (Process 1)' for a known UID, else the UID itself."""
    return _uid_name(uid)


def _uid_name(uid: str) -> str:
    text = str(uid).strip().rstrip("\x00")
    # Only a well-formed UID can be named; building a pydicom UID from a bad one warns.
    if len(text) <= 64 and RE_VALID_UID.match(text):
        return str(UID(text).name)
    return text


# (source, reason) -> explanation; sources: 1 the peer's application, 2 and 3 its DICOM stack.
_REJECT_REASONS = {
    (1, 2): "it does not support the standard DICOM application context",
    (2, 2): "it does not support this version of the DICOM protocol",
    (3, 1): "it is too busy right now (too many connections at once)",
    (3, 2): "it has reached its limit of simultaneous connections",
}


def describe_rejection(result: int, source: int, reason: int, *,
                       called_aet: str = "", calling_aet: str = "") -> str:
    """Plain-language explanation of an A-ASSOCIATE-RJ (result, source, reason/diagnostic)."""
    lead = "The destination rejected the association: "
    if source == 1 and reason == 7:
        text = lead + ("it does not recognise the called AE title '%s' (check the spelling, "
                       "AE titles are case-sensitive)." % called_aet)
    elif source == 1 and reason == 3:
        text = lead + ("our AE title '%s' is not allowed to connect — ask the PACS "
                       "administrator to add it." % calling_aet)
    elif (source, reason) in _REJECT_REASONS:
        text = lead + _REJECT_REASONS[(source, reason)] + "."
    else:
        text = lead + ("no reason given. Check that our AE title '%s' is registered on the "
                       "PACS and that the called AE title '%s' is right."
                       % (calling_aet, called_aet))
    if result == 2:
        text += " The PACS says this is temporary: try again in a few minutes."
    return text


class _Watch:
    """Records what happened while associating; its handlers run on pynetdicom's threads."""

    def __init__(self, dest: Destination, sink: Optional[Sink], job_id: int) -> None:
        self.dest = dest
        self.sink = sink
        self.job_id = job_id
        self.connected = False
        self.dicom_reply = False
        self.established = False
        self.rejection: Optional[Tuple[int, int, int]] = None
        self.got_accept = False  # an A-ASSOCIATE-AC arrived, even if it accepted no context
        self.peer_aborted = False
        self._closed = False
        self._lock = threading.Lock()

    def handlers(self) -> List[Any]:
        return [(evt.EVT_CONN_OPEN, self.on_conn_open), (evt.EVT_PDU_RECV, self.on_pdu),
                (evt.EVT_ACSE_RECV, self.on_acse), (evt.EVT_ESTABLISHED, self.on_established),
                (evt.EVT_RELEASED, self.on_released), (evt.EVT_ABORTED, self.on_aborted)]

    def on_conn_open(self, event: Any) -> None:
        self.connected = True
        enable_nodelay(event)

    def on_pdu(self, event: Any) -> None:
        self.dicom_reply = True  # only fires for a PDU that decoded cleanly

    def on_acse(self, event: Any) -> None:
        primitive = event.primitive
        if isinstance(primitive, A_ASSOCIATE) and primitive.result in (1, 2):
            self.rejection = (int(primitive.result), int(primitive.result_source or 0),
                              int(primitive.diagnostic or 0))
        elif isinstance(primitive, A_ASSOCIATE) and primitive.result == 0:
            self.got_accept = True
        elif isinstance(primitive, (A_ABORT, A_P_ABORT)):
            self.peer_aborted = True

    def on_established(self, event: Any) -> None:
        self.established = True

    def on_released(self, event: Any) -> None:
        self.closed("released", "")

    def on_aborted(self, event: Any) -> None:
        self.closed("aborted", "The connection to the destination was aborted.")

    def closed(self, how: str, reason: str) -> None:
        """Emit AssociationClosed once, and only for an association that was opened."""
        with self._lock:
            if self._closed or not self.established:
                return
            self._closed = True
        if self.sink is not None:
            self.sink(AssociationClosed(self.job_id, how, reason))


def open_association(dest: Destination, settings: Settings,
                     contexts: Sequence[PresentationContext], *, sink: Optional[Sink] = None,
                     job_id: int = 0) -> Tuple[Optional[Association], Optional[OpenFailure]]:
    """Associate with ``dest`` proposing ``contexts``.

    Returns ``(assoc, None)`` when established (the caller releases it), else ``(None, failure)``.
    With a ``sink``, emits AssociationOpened, then AssociationClosed when it ends or fails.
    """
    assoc, _, failure = _associate(dest, settings, contexts, sink, job_id)
    return assoc, failure


def open_link(dest: Destination, settings: Settings, contexts: Sequence[PresentationContext],
              *, sink: Optional[Sink] = None, job_id: int = 0
              ) -> Tuple[Any, Optional[OpenFailure]]:
    """Like open_association, but the established association comes back as a DirectLink
    (one thread, no pynetdicom threads) for sending; its closing emits AssociationClosed.

    Falls back to the pynetdicom Association if this pynetdicom cannot be taken over."""
    assoc, watch, failure = _associate(dest, settings, contexts, sink, job_id)
    if assoc is None or watch is None:
        return None, failure
    try:
        sock, peer_max, accepted = compat.detach_association(assoc)
    except RuntimeError:
        LOG.warning("Sending through pynetdicom: its association could not be taken over",
                    exc_info=True)
        return AssociationLink(assoc), None
    return DirectLink(sock, peer_max, accepted, dimse_timeout=settings.dimse_timeout,
                      acse_timeout=settings.acse_timeout, on_closed=watch.closed), None


class AssociationLink:
    """The DirectLink interface over a pynetdicom Association (the slower fall-back)."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc

    @property
    def is_established(self) -> bool:
        return bool(self.assoc.is_established)

    def still_open(self) -> bool:
        return self.is_established

    def accepted_syntaxes(self, sop_class: str) -> Set[str]:
        return {cx.transfer_syntax[0] for cx in self.assoc.accepted_contexts
                if cx.abstract_syntax == sop_class}

    def store_file(self, sop_class: str, sop_instance: str, ts: str, path: str,
                   offset: int, end: int = 0) -> StoreAnswer:
        if end:  # pynetdicom would stream to the end of the file: send what comes before
            with open(path, "rb") as fp:
                return self._send(dcmread(io.BytesIO(fp.read(end)), force=True))
        return self._send(path)

    def store_dataset(self, sop_class: str, sop_instance: str, ts: str, ds: Any) -> StoreAnswer:
        return self._send(ds)

    def store_data(self, sop_class: str, sop_instance: str, ts: str, data: bytes) -> StoreAnswer:
        uid = UID(ts)
        ds = compat.bytes_to_dataset(data, uid.is_implicit_VR, uid.is_little_endian)
        ds.file_meta = FileMetaDataset()  # pynetdicom picks the context by this syntax
        ds.file_meta.TransferSyntaxUID = uid
        return self._send(ds)

    def _send(self, payload: Any) -> StoreAnswer:
        try:
            rsp = self.assoc.send_c_store(payload)
        except RuntimeError as exc:  # association no longer established
            raise LinkBroken(str(exc)) from exc
        if rsp is None or "Status" not in rsp:
            raise LinkBroken("no answer within %.0f s or the connection was aborted"
                             % self.assoc.dimse_timeout)
        return StoreAnswer(int(rsp.Status), str(rsp.get("ErrorComment", "") or "").strip())

    def release(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()
        else:
            self.assoc.abort()

    def abort(self) -> None:
        self.assoc.abort()


def _associate(dest: Destination, settings: Settings, contexts: Sequence[PresentationContext],
               sink: Optional[Sink], job_id: int
               ) -> Tuple[Optional[Association], Optional[_Watch], Optional[OpenFailure]]:
    address, failure = _resolve(dest)
    closed_how = "refused"  # a name that does not resolve never reaches the network
    if failure is None:
        watch = _Watch(dest, sink, job_id)
        started = time.monotonic()
        assoc = make_ae(settings).associate(
            address, dest.port, contexts=list(contexts), ae_title=dest.called_aet.strip(),
            evt_handlers=watch.handlers())
        if assoc.is_established:
            _opened(assoc, watch)
            return assoc, watch, None
        failure = _classify(watch, dest, settings, time.monotonic() - started)
        closed_how = _closed_how(failure, watch)
    if sink is not None:
        sink(AssociationClosed(job_id, closed_how, failure.reason))
    return None, None, failure


def _closed_how(failure: OpenFailure, watch: _Watch) -> str:
    # AssociationClosed has no "timeout": silence before connecting counts as refused, after
    # connecting as aborted (pynetdicom aborts when its ACSE timeout expires).
    if failure.how != "timeout":
        return failure.how
    return "aborted" if watch.connected else "refused"


def _opened(assoc: Association, watch: _Watch) -> None:
    # Handlers only needed while negotiating come off: EVT_PDU_RECV fires on every PDU.
    for event, handler in ((evt.EVT_PDU_RECV, watch.on_pdu), (evt.EVT_ACSE_RECV, watch.on_acse)):
        assoc.unbind(event, handler)
    if watch.sink is not None:
        watch.sink(AssociationOpened(watch.job_id, str(watch.dest),
                                     len(assoc.accepted_contexts), len(assoc.rejected_contexts)))


def _resolve(dest: Destination) -> Tuple[str, Optional[OpenFailure]]:
    """The address to connect to; a name that does not resolve is a failure the user can fix."""
    host = dest.host.strip()
    try:
        infos = socket.getaddrinfo(host, dest.port, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return host, OpenFailure("refused", "The computer name '%s' could not be found. Check "
                                 "the spelling, or use its IP address instead." % host)
    # pynetdicom 2.0 only speaks IPv4, so prefer an IPv4 address when the name has one.
    ipv4 = [info[4][0] for info in infos if info[0] == socket.AF_INET]
    return (ipv4[0] if ipv4 else str(infos[0][4][0])), None


def _classify(watch: _Watch, dest: Destination, settings: Settings,
              elapsed: float) -> OpenFailure:
    where = "%s:%d" % (dest.host.strip(), dest.port)
    if watch.rejection is not None:
        result, source, reason = watch.rejection
        return OpenFailure("rejected", describe_rejection(
            result, source, reason, called_aet=dest.called_aet.strip(),
            calling_aet=settings.calling_aet.strip()), True)
    if not watch.connected:
        if elapsed >= 0.9 * settings.connect_timeout:  # pynetdicom hides the socket error
            return OpenFailure("timeout", "Nothing answered at %s within %s. Check the "
                               "address, and that no firewall blocks the port." %
                               (where, seconds(settings.connect_timeout)))
        return OpenFailure("refused", "The destination %s refused the connection. Check that "
                           "the PACS is running and the port number is right." % where)
    if watch.got_accept:  # accepted yet not established: pynetdicom found no usable context
        return OpenFailure("rejected", "The destination %s accepted the connection but refused "
                           "every kind of data we proposed (SOP class and transfer syntax)."
                           % where, True)
    if watch.peer_aborted:
        return OpenFailure("aborted", "The destination %s closed the connection without "
                           "accepting the association. It may not be a DICOM service, or it "
                           "refuses connections from this computer." % where, watch.dicom_reply)
    return OpenFailure("timeout", "The destination %s accepted the connection but did not answer "
                       "within %s. It may not be a DICOM service, or it is overloaded."
                       % (where, seconds(settings.acse_timeout)), watch.dicom_reply)

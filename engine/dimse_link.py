"""C-STORE over an established association, driven synchronously from the sending thread.

pynetdicom moves every message through two helper threads that poll every millisecond, so
each file pays several thread hand-offs and GIL waits, and its reactor can swallow a C-STORE
response (the reactor un-pauses late and takes the reply off the queue: the sender then waits
until the peer's idle timeout). Once pynetdicom has negotiated the association (all of its
checks and failure reporting stay in association.py), the socket is handed to a DirectLink and
the data phase runs here: one thread, blocking I/O, the file's bytes read straight from disk.

Only the parts of the DICOM upper layer (PS3.8) and DIMSE (PS3.7) a storage SCU needs are here.
"""
from __future__ import annotations

import functools
import io
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Set, Tuple

from . import compat

# PDU types (PS3.8 9.3)
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
ABORT_RQ = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"  # source 0 (service user), no reason

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATASET = 0x0101
PRIORITY_LOW = 0x0002  # what pynetdicom's send_c_store sends by default
# Without a peer limit (maximum length 0) the data set still goes in pieces: memory stays flat.
UNLIMITED_FRAGMENT = 1 << 20
SEND_BUFFER = 256 * 1024  # small PDUs are joined up to this size per sendall()
STOP_GRACE_S = 1.5  # after a Stop, how long an answer already on its way is still awaited
WAIT_SLICE_S = 0.25  # how often a wait for the destination looks for a Stop

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ELEM = struct.Struct("<HHI")
_PDU = struct.Struct(">BBI")
_PDV = struct.Struct(">IBB")


class LinkBroken(Exception):
    """The association ended, or the peer stayed silent, while a message was in flight."""


class _GaveUp(socket.timeout):
    """A Stop came and the destination still had not answered STOP_GRACE_S later."""


@dataclass(frozen=True)
class StoreAnswer:
    status: int
    error_comment: str = ""


def _element(group_elem: int, value: bytes) -> bytes:
    return _ELEM.pack(0, group_elem, len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode("ascii", "replace")
    return data + b"\0" if len(data) % 2 else data


@functools.lru_cache(maxsize=256)
def _class_elements(sop_class: str) -> bytes:
    return _element(0x0002, _uid(sop_class)) + _element(0x0100, _U16.pack(C_STORE_RQ))


_MESSAGE_ID = _ELEM.pack(0, 0x0110, 2)
_AFTER_ID = (_element(0x0700, _U16.pack(PRIORITY_LOW))
             + _element(0x0800, _U16.pack(0x0001)))  # a data set follows


def store_command(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """A C-STORE-RQ command set, Implicit VR Little Endian (PS3.7 9.3.1.1). Only the message
    id and the instance differ from file to file; the rest is encoded once."""
    body = b"".join((_class_elements(sop_class), _MESSAGE_ID, _U16.pack(message_id), _AFTER_ID,
                     _element(0x1000, _uid(sop_instance))))
    return _element(0x0000, _U32.pack(len(body))) + body


def parse_command(data: bytes) -> Dict[int, bytes]:
    """Element number -> raw value of a group 0000 command set (Implicit VR Little Endian)."""
    values: Dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, length = _ELEM.unpack_from(data, pos)
        pos += 8
        if group != 0 or length == 0xFFFFFFFF or pos + length > end:
            raise LinkBroken("the destination sent a malformed response")
        values[elem] = data[pos:pos + length]
        pos += length
    return values


def _u16(values: Dict[int, bytes], elem: int) -> Optional[int]:
    raw = values.get(elem)
    return _U16.unpack(raw[:2])[0] if raw is not None and len(raw) >= 2 else None


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    return _PDU.pack(P_DATA_TF, 0, 6 + len(data)) + _PDV.pack(2 + len(data), context_id,
                                                               control) + data


class DirectLink:
    """An established association owned by one thread. ``contexts`` lists the accepted
    presentation contexts as (context id, abstract syntax, transfer syntax)."""

    def __init__(self, sock: socket.socket, peer_max_pdu: int,
                 contexts: List[Tuple[int, str, str]], *, dimse_timeout: float,
                 acse_timeout: float, on_closed: Callable[[str, str], None]) -> None:
        self.sock = sock
        self.fragment = (peer_max_pdu - 6) if peer_max_pdu > 6 else UNLIMITED_FRAGMENT
        self.contexts = {(sop, ts): cid for cid, sop, ts in contexts}
        self.dimse_timeout = dimse_timeout
        self.acse_timeout = acse_timeout
        self._on_closed = on_closed
        self._message_id = 0
        self.is_established = True
        self._buf = bytearray()
        self._wait_s = dimse_timeout
        # Set by the sender: a destination that no longer answers must not hold a Stop for the
        # whole DIMSE timeout (2 minutes); the unanswered file is sent again on the next run.
        self.stop_requested: Callable[[], bool] = lambda: False
        # Set by the sender: called once a file is on the wire, before its answer is awaited,
        # so work that can wait (reporting the previous file) is done while the peer works.
        self.on_sent: Callable[[], None] = lambda: None

    def still_open(self) -> bool:
        """Between messages the peer has nothing to say: anything readable means it aborted,
        released or closed the connection while we were idle."""
        if not self.is_established:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            readable = [self.sock]
        if readable:
            self._lost("closed by the destination while idle")
        return self.is_established

    # -- what was accepted ------------------------------------------------------------------
    def accepted_syntaxes(self, sop_class: str) -> Set[str]:
        return {ts for sop, ts in self.contexts if sop == sop_class}

    # -- sending ----------------------------------------------------------------------------
    def store_file(self, sop_class: str, sop_instance: str, ts: str, path: str,
                   offset: int, end: int = 0) -> StoreAnswer:
        """Send the data set of ``path`` unchanged: from byte ``offset`` to ``end`` (0: to the
        end of the file)."""
        with open(path, "rb") as fp:
            fp.seek(offset)
            return self._store(sop_class, sop_instance, ts, _Span(fp, end - offset) if end else fp)

    def store_data(self, sop_class: str, sop_instance: str, ts: str, data: bytes) -> StoreAnswer:
        """Send ``data``, a data set already encoded in ``ts``."""
        return self._store(sop_class, sop_instance, ts, io.BytesIO(data))

    def store_dataset(self, sop_class: str, sop_instance: str, ts: str,
                      ds: Any) -> StoreAnswer:
        """Encode ``ds`` in ``ts`` (as pynetdicom would) and send it; ValueError when it
        cannot be encoded."""
        data = compat.encode_dataset(ds, ts)
        return self._store(sop_class, sop_instance, ts, io.BytesIO(data))

    def _store(self, sop_class: str, sop_instance: str, ts: str, body: BinaryIO) -> StoreAnswer:
        if not self.is_established:
            raise LinkBroken("the association is closed")
        cid = self.contexts[(sop_class, ts)]
        self._message_id = self._message_id % 0xFFFF + 1
        command = store_command(self._message_id, sop_class, sop_instance)
        try:
            self.sock.settimeout(self.dimse_timeout)
            self._wait_s = self.dimse_timeout
            self._send_message(cid, command, body)
            self.on_sent()
            return self._answer(self._message_id)
        except _GaveUp as exc:
            self.abort()
            raise LinkBroken("stopped before the destination answered") from exc
        except socket.timeout as exc:
            self.abort()
            raise LinkBroken("no answer within %.0f s" % self.dimse_timeout) from exc
        except OSError as exc:
            self._lost("the connection was lost (%s)" % (exc.strerror or exc))
            raise LinkBroken("the connection was lost (%s)" % (exc.strerror or exc)) from exc

    def _send_message(self, cid: int, command: bytes, body: BinaryIO) -> None:
        out = bytearray(_pdv(cid, 0x03, command))  # command, last fragment
        chunk = body.read(self.fragment)
        while True:
            nxt = body.read(self.fragment) if chunk else b""
            last = not nxt
            out += _pdv(cid, 0x02 if last else 0x00, chunk)
            if last or len(out) >= SEND_BUFFER:
                self.sock.sendall(out)
                out = bytearray()
            if last:
                return
            chunk = nxt

    def _answer(self, message_id: int) -> StoreAnswer:
        command = bytearray()
        values: Optional[Dict[int, bytes]] = None
        while True:
            pdu_type, payload = self._read_pdu()
            if pdu_type == A_ABORT:
                self._lost("aborted by the destination")
                raise LinkBroken("the destination aborted the association")
            if pdu_type == A_RELEASE_RQ:
                self._send_quietly(RELEASE_RP)
                self._closed("released", "")
                raise LinkBroken("the destination released the association")
            if pdu_type != P_DATA_TF:
                self.abort()
                raise LinkBroken("the destination sent an unexpected message (PDU type %d)"
                                 % pdu_type)
            pos = 0
            while pos + 6 <= len(payload):
                length, _, control = _PDV.unpack_from(payload, pos)
                data = payload[pos + 6:pos + 4 + length]
                pos += 4 + length
                if control & 0x01:
                    command += data
                    if control & 0x02:
                        values = parse_command(bytes(command))
                elif values is not None and control & 0x02:
                    return self._checked(values, message_id)  # a data set we do not need
            if values is not None and _u16(values, 0x0800) == NO_DATASET:
                return self._checked(values, message_id)

    def _checked(self, values: Dict[int, bytes], message_id: int) -> StoreAnswer:
        status = _u16(values, 0x0900)
        if (_u16(values, 0x0100) != C_STORE_RSP or status is None
                or _u16(values, 0x0120) != message_id):
            self.abort()
            raise LinkBroken("the destination answered with a message that is not the "
                             "response to this file")
        comment = values.get(0x0902, b"").decode("latin-1", "replace").strip(" \0")
        return StoreAnswer(status, comment)

    # -- reading ----------------------------------------------------------------------------
    def _fill(self, count: int) -> None:
        """Until ``count`` bytes are buffered (a whole answer usually comes in one recv)."""
        buf = self._buf
        while len(buf) < count:
            data = self._recv(max(65536, count - len(buf)))
            if not data:
                raise OSError("the destination closed the connection")
            buf += data

    def _recv(self, size: int) -> bytes:
        """recv within ``_wait_s``, giving up STOP_GRACE_S after a Stop (raises _GaveUp)."""
        now = time.monotonic()
        deadline, give_up = now + self._wait_s, None
        while True:
            if give_up is None and self.stop_requested():
                give_up = now + STOP_GRACE_S
            end = deadline if give_up is None else min(deadline, give_up)
            if now >= end:
                raise _GaveUp() if give_up is not None and end == give_up else socket.timeout()
            self.sock.settimeout(min(end - now, WAIT_SLICE_S))
            try:
                return self.sock.recv(size)
            except socket.timeout:
                now = time.monotonic()

    def _read_pdu(self) -> Tuple[int, bytes]:
        buf = self._buf
        if len(buf) < 6:
            self._fill(6)
        pdu_type, _, length = _PDU.unpack_from(buf)
        end = 6 + length
        if len(buf) < end:
            self._fill(end)
        payload = bytes(buf[6:end])
        del buf[:end]
        return pdu_type, payload

    # -- ending -----------------------------------------------------------------------------
    def release(self) -> None:
        """A-RELEASE; a peer that does not answer in time is aborted instead."""
        if not self.is_established:
            return
        deadline = time.monotonic() + self.acse_timeout
        try:
            self.sock.settimeout(self.acse_timeout)
            self._wait_s = self.acse_timeout
            self.sock.sendall(RELEASE_RQ)
            while time.monotonic() < deadline:
                pdu_type, _ = self._read_pdu()
                if pdu_type == A_RELEASE_RP:
                    self._closed("released", "")
                    return
                if pdu_type == A_RELEASE_RQ:  # both sides released at once (PS3.8 7.2.2)
                    self._send_quietly(RELEASE_RP)
                elif pdu_type == A_ABORT:
                    self._lost("aborted by the destination")
                    return
        except OSError:
            pass
        self.abort()

    def abort(self) -> None:
        if not self.is_established:
            return
        self._send_quietly(ABORT_RQ)
        self._closed("aborted", "The connection to the destination was aborted.")

    def _lost(self, why: str) -> None:
        self._closed("aborted", "The connection to the destination ended: %s." % why)

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.sock.settimeout(5)
            self.sock.sendall(data)
        except OSError:
            pass

    def _closed(self, how: str, reason: str) -> None:
        if not self.is_established:
            return
        self.is_established = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._on_closed(how, reason)


class _Span:
    """The first ``length`` bytes of ``fp`` from where it stands, read like a file."""

    def __init__(self, fp: BinaryIO, length: int) -> None:
        self.fp, self.left = fp, length

    def read(self, n: int) -> bytes:
        data = self.fp.read(min(n, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data

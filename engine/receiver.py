"""A small receiving Storage SCP: the README demo, the wizard's practice mode, the self-test.

It accepts every storage SOP class (private and unknown ones too) in any transfer syntax, plus
Verification, and writes each object unchanged as a Part 10 file, or only counts it.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import tempfile
import threading
import time
from typing import Any, List, Optional

from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, VerificationPresentationContexts, _config, evt

from .association import enable_nodelay
from .config import check_ae_title, check_port
from .errors import ConfigError, UserFacingError

LOG = logging.getLogger(__name__)

_OUT_OF_RESOURCES = 0xA700
_unrestricted_lock = threading.Lock()
_unrestricted_users = 0
_unrestricted_before = False


def _use_unrestricted_storage(on: bool) -> None:
    """Reference-count pynetdicom's process-wide "accept any storage class" switch.

    pynetdicom has no per-AE way to accept private or unknown SOP classes; the switch only
    changes how acceptors negotiate, so it is on exactly while a receiver runs.
    """
    global _unrestricted_users, _unrestricted_before
    with _unrestricted_lock:
        if on:
            if _unrestricted_users == 0:
                _unrestricted_before = _config.UNRESTRICTED_STORAGE_SERVICE
                _config.UNRESTRICTED_STORAGE_SERVICE = True
            _unrestricted_users += 1
        else:
            _unrestricted_users -= 1
            if _unrestricted_users == 0:
                _config.UNRESTRICTED_STORAGE_SERVICE = _unrestricted_before


class Receiver:
    """A running receiver. ``count`` and ``bytes`` may be read from any thread."""

    def __init__(self, aet: str, out_dir: Optional[str]) -> None:
        self.aet = aet
        self.out_dir = out_dir
        self.port = 0
        self.host = ""
        self.count = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._server: Any = None

    def handle_store(self, event: Any) -> int:
        """EVT_C_STORE handler (runs on the association's thread)."""
        raw = event.request.DataSet.getvalue()  # the bytes as sent: nothing is re-encoded
        if self.out_dir is not None:
            try:
                self._write(event, raw)
            except OSError as exc:
                LOG.error("Could not save a received object: %s", exc)
                return _OUT_OF_RESOURCES
        with self._lock:
            self.count += 1
            self.bytes += len(raw)
        return 0x0000

    def _write(self, event: Any, raw: bytes) -> None:
        assert self.out_dir is not None
        name = _safe_name(str(event.request.AffectedSOPInstanceUID or ""))
        fd, temp = tempfile.mkstemp(suffix=".part", dir=self.out_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\x00" * 128 + b"DICM")
                write_file_meta_info(DicomFileLike(handle), event.file_meta)
                handle.write(raw)
            os.replace(temp, os.path.join(self.out_dir, name + ".dcm"))
        except OSError:
            os.unlink(temp)
            raise

    def stop(self) -> None:
        """Stop listening and close open associations. Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            _use_unrestricted_storage(False)

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _safe_name(uid: str) -> str:
    # A UID is digits and dots; anything else must not be able to reach the file system.
    cleaned = re.sub(r"[^0-9A-Za-z.\-]", "_", uid.strip().rstrip("\x00")).strip(".")
    return cleaned or "no-sop-instance-uid"


def start_receiver(port: int, out_dir: Optional[str] = None, aet: str = "PRACTICE",
                   host: str = "127.0.0.1") -> Receiver:
    """Start listening on ``host:port`` (port 0 picks a free one) in the background.

    Raises ConfigError for a bad AE title or port and UserFacingError when the port is taken.
    """
    for problem in (check_ae_title(aet), check_port(port) if port else None):
        if problem:
            raise ConfigError(problem)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    receiver = Receiver(aet.strip(), out_dir)
    ae = AE(ae_title=receiver.aet)
    ae.supported_contexts = VerificationPresentationContexts
    ae.maximum_pdu_size = 0  # no limit: senders then use big PDUs, fewer round trips
    handlers: List[Any] = [(evt.EVT_C_STORE, receiver.handle_store),
                           (evt.EVT_CONN_OPEN, enable_nodelay)]
    _use_unrestricted_storage(True)
    try:
        receiver._server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    except OSError as exc:
        _use_unrestricted_storage(False)
        raise UserFacingError("Cannot receive on %s port %d (%s). Pick another port, such as "
                              "11112, or close the program that uses this one."
                              % (host, port, exc.strerror or exc))
    receiver.host, receiver.port = host, int(receiver._server.server_address[1])
    return receiver


def register(subparsers: Any) -> None:
    """Add ``dicom-migrate receive``."""
    parser = subparsers.add_parser(
        "receive", help="run a practice receiver (a small Storage SCP) until Ctrl+C",
        description="Receive DICOM objects over C-STORE, to practise or test a migration "
                    "without a real PACS. Press Ctrl+C to stop.")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--out", metavar="DIR",
                        help="save each object as DIR/<SOP Instance UID>.dcm (default: only "
                             "count them)")
    parser.add_argument("--aet", default="PRACTICE", help="our AE title (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this computer only; "
                             "0.0.0.0 for every network card)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    receiver = start_receiver(args.port, args.out, args.aet, args.host)
    where = "saving into %s" % args.out if args.out else "counting only, nothing is saved"
    print("Receiving as %s on %s:%d (%s). Press Ctrl+C to stop."
          % (receiver.aet, receiver.host, receiver.port, where), flush=True)
    shown = -1
    try:
        while True:
            if receiver.count != shown:
                shown = receiver.count
                print("\rReceived %d files (%.1f MB)" % (shown, receiver.bytes / 1e6),
                      end="", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    print("\nStopped. Received %d files (%.1f MB)." % (receiver.count, receiver.bytes / 1e6))
    return 0

"""C-ECHO: "can we talk to this PACS?" for the wizard's Test button, the CLI and discovery."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any, Optional

from pynetdicom import VerificationPresentationContexts

from .association import open_association, seconds
from .cli_common import (EXIT_OK, EXIT_UNREACHABLE, add_destination_args, destination_from_args,
                         positive_number, settings_from_args)
from .config import Destination, Settings
from .events import Sink


@dataclass(frozen=True)
class EchoResult:
    """Outcome of one C-ECHO; ``reason`` is a sentence for the user, success or not."""

    ok: bool
    how: str  # "connected" | "refused" | "timeout" | "rejected" | "aborted" | "failed"
    reason: str
    status: Optional[int]
    elapsed_ms: float
    dicom_reply: bool = False  # the peer answered in DICOM, even if it said no (discovery)


def echo(dest: Destination, settings: Settings, *, sink: Optional[Sink] = None,
         job_id: int = 0) -> EchoResult:
    """Associate with ``dest``, send one C-ECHO and release. Never raises for peer behaviour."""
    started = time.monotonic()
    assoc, failure = open_association(dest, settings, VerificationPresentationContexts,
                                      sink=sink, job_id=job_id)
    if assoc is None:
        assert failure is not None
        return EchoResult(False, failure.how, failure.reason, None, _ms_since(started),
                          failure.dicom_reply)
    try:
        reply = assoc.send_c_echo()
        status: Optional[int] = int(reply.Status) if "Status" in reply else None
    except RuntimeError:  # the peer dropped the association between accepting and our echo
        status = None
    finally:
        assoc.release()
    elapsed = _ms_since(started)
    where = "%s at %s:%d" % (dest.called_aet.strip(), dest.host.strip(), dest.port)
    if status == 0:
        return EchoResult(True, "connected", "Connected to %s — C-ECHO answered in %.0f ms."
                          % (where, elapsed), status, elapsed, True)
    if status is not None:
        return EchoResult(False, "failed", "Connected to %s, but it answered the C-ECHO with "
                          "error status 0x%04X." % (where, status), status, elapsed, True)
    # No answer: pynetdicom aborts both on its DIMSE timeout and when the peer aborts.
    if elapsed >= 900.0 * settings.dimse_timeout:
        return EchoResult(False, "timeout", "Connected to %s, but it did not answer the C-ECHO "
                          "within %s." % (where, seconds(settings.dimse_timeout)), None,
                          elapsed, True)
    return EchoResult(False, "aborted", "Connected to %s, but it closed the association instead "
                      "of answering the C-ECHO." % where, None, elapsed, True)


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


def register(subparsers: Any) -> None:
    """Add ``dicom-migrate echo``."""
    parser = subparsers.add_parser(
        "echo", help="check that the destination answers (C-ECHO)",
        description="Open an association with the destination and send a C-ECHO. Exit code 0 "
                    "when it answers, 3 when it is unreachable, refuses or does not answer.")
    add_destination_args(parser)
    parser.add_argument("--timeout", type=positive_number, default=10.0, metavar="SECONDS",
                        help="how long to wait at each step (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, dimse_timeout=args.timeout,
                                  network_timeout=args.timeout)
    result = echo(destination_from_args(args), settings)
    print(result.reason)
    return EXIT_OK if result.ok else EXIT_UNREACHABLE

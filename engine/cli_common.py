"""Options shared by several ``dicom-migrate`` sub-commands."""
from __future__ import annotations

import argparse
import logging
import warnings
from typing import Any

from .config import DEFAULT_CALLING_AET, Destination, Settings

# Exit codes promised in the README.
EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130  # stopped with Ctrl+C (the shell convention for SIGINT)


def positive_number(text: str) -> float:
    """argparse type: a finite number above 0 (0 or "nan" would make every wait meaningless)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a number above 0, not %s" % text)
    return value


def add_destination_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("destination")
    group.add_argument("--host", required=required, help="destination host name or IP address")
    group.add_argument("--port", type=int, required=required, help="destination DICOM port")
    group.add_argument("--called-aet", required=required, metavar="AET",
                       help="AE title of the destination (called AE)")
    group.add_argument("--calling-aet", default=DEFAULT_CALLING_AET, metavar="AET",
                       help="our own AE title (default: %(default)s)")


def add_network_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=positive_number, default=30.0, metavar="SECONDS",
                        help="connection and association timeout (default: %(default)s)")
    parser.add_argument("--max-pdu", type=int, default=0, metavar="BYTES",
                        help="largest PDU we accept from the peer; 0 = unlimited")


def destination_from_args(args: Any) -> Destination:
    return Destination(args.host, args.port, args.called_aet)


def settings_from_args(args: Any, **extra: Any) -> Settings:
    """Build Settings from whichever of the shared options the sub-command has."""
    values = {"calling_aet": getattr(args, "calling_aet", DEFAULT_CALLING_AET)}
    timeout = getattr(args, "timeout", None)
    if timeout is not None:
        values.update(acse_timeout=timeout, connect_timeout=timeout)
    for name in ("max_pdu", "batch_size", "retries"):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    values.update(extra)
    return Settings(**values)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Damaged input is reported per file in plain words; library chatter would bury that.
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        warnings.simplefilter("ignore")

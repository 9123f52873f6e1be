"""Find the PACS: a TCP connect sweep over hosts x ports, then a C-ECHO on each open port.

A C-ECHO that is accepted only proves the peer accepts that *called* AE title; many PACS accept
any title, so results say "accepted", never "this is its name".
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import queue
import re
import socket
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from . import jobs
from .association import seconds
from .cli_common import EXIT_OK, positive_number
from .config import DEFAULT_CALLING_AET, Destination, Settings, check_ae_title
from .echo import echo
from .errors import ConfigError
from .events import EngineEvent, LogLine, NodeFound
from .jobs import Control

LOG = logging.getLogger(__name__)

DEFAULT_PORTS = (104, 11112, 4242, 2762, 2575, 8042, 4006, 5678, 3003, 106)
COMMON_AETS = ("ANY-SCP", "ORTHANC", "DCMSCP", "PACS", "STORESCP")
MAX_ADDRESSES = 65536  # a /16
NOT_DICOM = "port open but it did not answer as DICOM"
FIRST_ANSWER_S = 1.5  # a DICOM peer answers an association request at once; others stay silent

_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def parse_targets(subnet: str, extra_hosts: str = "") -> List[str]:
    """Addresses to scan from a CIDR ("10.0.0.0/24") or range ("10.0.0.1-254",
    "10.0.0.1-10.0.0.254") plus comma/space-separated extra hosts. At most a /16."""
    hosts: List[str] = []
    for token in _tokens(subnet):
        hosts.extend(_expand(token, MAX_ADDRESSES - len(hosts)))
    for token in _tokens(extra_hosts):
        if not _is_ip(token) and not _HOST_NAME.match(token):
            raise ConfigError("'%s' is not an IP address or a computer name." % token)
        hosts.append(token)
    if not hosts:
        raise ConfigError("Enter a network range (for example 192.168.1.0/24) or at least one "
                          "host to scan.")
    return list(dict.fromkeys(hosts))  # drop repeats, keep the order


def parse_ports(text: str) -> Tuple[int, ...]:
    """"104, 11112" -> (104, 11112); empty -> DEFAULT_PORTS."""
    ports: List[int] = []
    for token in _tokens(text):
        if not token.isdigit() or not 1 <= int(token) <= 65535:
            raise ConfigError("'%s' is not a port number (1 to 65535)." % token)
        ports.append(int(token))
    return tuple(dict.fromkeys(ports)) or DEFAULT_PORTS


def _tokens(text: str) -> List[str]:
    return [token for token in re.split(r"[,\s;]+", text or "") if token]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _expand(token: str, room: int) -> List[str]:
    """One CIDR, range or single address; refuses more than ``room`` addresses."""
    try:
        if "/" in token:
            network = ipaddress.IPv4Network(token, strict=False)
            _check_size(token, network.num_addresses, room)
            # /31 and /32 have no network or broadcast address to leave out.
            found = network.hosts() if network.prefixlen < 31 else iter(network)
            return [str(address) for address in found]
        if "-" in token:
            first, last = _range_ends(token)
            _check_size(token, int(last) - int(first) + 1, room)
            return [str(ipaddress.IPv4Address(n)) for n in range(int(first), int(last) + 1)]
        return [str(ipaddress.IPv4Address(token))]
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError("'%s' is not a network range. Use the form 192.168.1.0/24 or "
                          "192.168.1.1-254." % token) from None


def _range_ends(token: str) -> Tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    start_text, end_text = token.split("-", 1)
    first = ipaddress.IPv4Address(start_text)
    if end_text.isdigit():  # "10.0.0.1-254": the end replaces the last number
        end_text = start_text.rsplit(".", 1)[0] + "." + end_text
    last = ipaddress.IPv4Address(end_text)
    if last < first:
        raise ConfigError("In '%s' the range ends before it starts." % token)
    return first, last


def _check_size(token: str, count: int, room: int) -> None:
    if count > room:
        raise ConfigError(
            "'%s' covers %s addresses; one scan can cover at most %s (a /16 such as "
            "10.1.0.0/16). Scan a smaller range, for example the /24 this computer is in."
            % (token, format(count, ","), format(MAX_ADDRESSES, ",")))


def discover(hosts: Sequence[str], ports: Sequence[int], control: Control, *, threads: int = 60,
             user_aet: Optional[str] = None, settings: Optional[Settings] = None,
             connect_timeout: float = 0.4, echo_timeout: float = 3.0,
             time_limit_s: float = 900.0) -> List[NodeFound]:
    """Scan ``hosts`` x ``ports``; emit a NodeFound for each open port as soon as it is known.

    Cancellable through ``control``; stops starting new probes after ``time_limit_s``.
    Returns what was found, sorted by address and port.
    """
    if not 1 <= threads <= 500:
        raise ConfigError("The number of threads must be between 1 and 500.")
    titles = _titles_to_try(user_aet)
    probe = replace(settings or Settings(), connect_timeout=max(echo_timeout, connect_timeout),
                    acse_timeout=echo_timeout, dimse_timeout=echo_timeout,
                    network_timeout=echo_timeout)
    found: List[NodeFound] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit_s

    def stop() -> bool:
        return control.cancelled or time.monotonic() > deadline

    def scan(target: Tuple[str, int]) -> None:
        host, port = target
        if _port_open(host, port, connect_timeout):
            node = _identify(host, port, titles, probe, stop, control.job_id)
            with lock:
                found.append(node)
            control.emit(node)

    targets = ((host, port) for host in _resolvable(hosts, control) for port in ports)
    _run_pool(targets, scan, min(threads, max(1, len(hosts) * len(ports))), stop, "discover")
    if time.monotonic() > deadline and not control.cancelled:
        limit = (seconds(time_limit_s) if time_limit_s < 120
                 else "%.0f minutes" % (time_limit_s / 60))
        control.emit(LogLine(control.job_id, "warning", "The scan stopped at its time limit "
                             "(%s) before covering every address; scan a smaller range." % limit))
    return sorted(found, key=lambda node: (_address_key(node.host), node.port))


def _titles_to_try(user_aet: Optional[str]) -> Tuple[str, ...]:
    first: Tuple[str, ...] = ()
    if user_aet and user_aet.strip():
        problem = check_ae_title(user_aet)
        if problem:
            raise ConfigError("AE title to try: " + problem)
        first = (user_aet.strip(),)
    return tuple(dict.fromkeys(first + COMMON_AETS))


_STOP = object()


def _run_pool(items: Iterable[Any], work: Callable[[Any], None], workers: int,
              stop: Callable[[], bool], name: str) -> None:
    """Run ``work`` on each item with ``workers`` threads fed through a bounded queue."""
    tasks: "queue.Queue[Any]" = queue.Queue(maxsize=workers * 4)

    def loop() -> None:
        while True:
            item = tasks.get()
            if item is _STOP:
                return
            if not stop():  # once stopped, drain the queue without working
                try:
                    work(item)
                except Exception:  # one odd host must not end the whole scan
                    LOG.error("Probe of %s failed", item, exc_info=True)

    pool = [jobs.start_thread(loop, "%s-%d" % (name, n)) for n in range(workers)]
    for item in items:
        if stop():
            break
        _put(tasks, item)
    for _ in pool:
        _put(tasks, _STOP)
    for thread in pool:
        while thread.is_alive():  # short joins: Ctrl+C cannot interrupt a bare join on Windows
            thread.join(0.2)


def _put(tasks: "queue.Queue[Any]", item: Any) -> None:
    while True:
        try:
            tasks.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def _resolvable(hosts: Sequence[str], control: Control) -> Iterable[str]:
    """Addresses pass through; names are looked up once, and a bad one is reported, not scanned."""
    for host in hosts:
        if not _is_ip(host):
            try:
                socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError):
                control.emit(LogLine(control.job_id, "warning", "The computer name '%s' could "
                                     "not be found; it was not scanned." % host))
                continue
        yield host


def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:  # refused, timed out, unreachable: all mean "not open" for a sweep
        return False


def _identify(host: str, port: int, titles: Sequence[str], probe: Settings,
              stop: Callable[[], bool], job_id: int) -> NodeFound:
    """C-ECHO with each called AE title until one is accepted."""
    settings = replace(probe, acse_timeout=min(FIRST_ANSWER_S, probe.acse_timeout))
    tried: List[str] = []
    last_reason = ""
    for title in titles:
        if stop():
            break
        result = echo(Destination(host, port, title), settings)
        if result.ok or result.status is not None:  # a status means the title was accepted
            detail = "accepted called AE title '%s' (not necessarily its own name)" % title
            if result.ok:
                detail = "C-ECHO answered; " + detail
            else:
                detail += ", but: " + result.reason
            return NodeFound(job_id, host, port, True, title, result.elapsed_ms, detail)
        if not result.dicom_reply:
            return NodeFound(job_id, host, port, False, "", result.elapsed_ms, NOT_DICOM)
        tried.append(title)
        last_reason, settings = result.reason, probe  # it speaks DICOM: allow the full wait
    if len(tried) < len(titles):
        detail = "the scan was stopped before its AE title could be found"
    else:
        detail = ("answers as DICOM but refused every called AE title tried (%s). %s"
                  % (", ".join(tried), last_reason))
    return NodeFound(job_id, host, port, bool(tried), "", 0.0, detail)


def _address_key(host: str) -> Tuple[int, int, str]:
    try:
        return 0, int(ipaddress.ip_address(host)), ""
    except ValueError:
        return 1, 0, host


def register(subparsers: Any) -> None:
    """Add ``dicom-migrate discover``."""
    parser = subparsers.add_parser(
        "discover", help="look for DICOM services (a PACS) on the network",
        description="Try a TCP connection to every address and port given, then a C-ECHO on "
                    "each open port, trying common called AE titles. Scan only networks you "
                    "are allowed to scan.")
    parser.add_argument("--subnet", default="", metavar="RANGE",
                        help="addresses to scan: 192.168.1.0/24 or 192.168.1.1-254 (at most "
                             "a /16)")
    parser.add_argument("--hosts", default="", metavar="LIST",
                        help="extra hosts, separated by commas or spaces")
    parser.add_argument("--ports", default="", metavar="LIST",
                        help="ports to try, e.g. 104,11112 (default: %s)"
                             % ",".join(str(port) for port in DEFAULT_PORTS))
    parser.add_argument("--threads", type=int, default=60,
                        help="connections tried at once (default: %(default)s)")
    parser.add_argument("--aet", metavar="AET",
                        help="called AE title to try first, e.g. the PACS's if you know it")
    parser.add_argument("--calling-aet", default=DEFAULT_CALLING_AET, metavar="AET",
                        help="our own AE title (default: %(default)s)")
    parser.add_argument("--timeout", type=positive_number, default=3.0, metavar="SECONDS",
                        help="how long to wait for each C-ECHO (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    hosts = parse_targets(args.subnet, args.hosts)
    ports = parse_ports(args.ports)
    print("Scanning %s addresses x %d ports..." % (format(len(hosts), ","), len(ports)),
          flush=True)
    control = Control(sink=_LinePrinter())
    try:
        found = discover(hosts, ports, control, threads=args.threads, user_aet=args.aet,
                         settings=Settings(calling_aet=args.calling_aet),
                         echo_timeout=args.timeout)
    except KeyboardInterrupt:
        control.cancel()
        print("\nStopped by the user.")
        return 130
    print(format_table(found))
    return EXIT_OK


class _LinePrinter:
    """Sink printing each result as it arrives (called from the scanning threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, event: EngineEvent) -> None:
        if isinstance(event, NodeFound):
            text = "  %-9s %s:%d  %s" % ("DICOM" if event.dicom else "not DICOM", event.host,
                                         event.port, event.detail)
        elif isinstance(event, LogLine):
            text = "  %s" % event.text
        else:
            return
        with self._lock:
            print(text, flush=True)


def format_table(found: Sequence[NodeFound]) -> str:
    """The final summary: one row per open port."""
    if not found:
        return "\nNo open ports found. Check the range and ports, and that no firewall blocks them."
    dicom = sum(1 for node in found if node.dicom)
    rows = ["", "Found %d open port(s), %d answering as DICOM:" % (len(found), dicom),
            "%-40s %-6s %-6s %s" % ("HOST", "PORT", "DICOM", "ACCEPTED CALLED AE")]
    for node in found:
        rows.append("%-40s %-6d %-6s %s" % (node.host, node.port, "yes" if node.dicom else "no",
                                            node.accepted_aet or "-"))
    if any(node.accepted_aet for node in found):
        rows.append("An accepted called AE title is one the PACS accepts, not necessarily its "
                    "own name: ask its administrator for the exact title.")
    return "\n".join(rows)

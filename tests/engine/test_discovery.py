"""Discovery: target parsing, and a real sweep of 127.0.0.0/29 with in-process SCPs."""
from __future__ import annotations

import socket
import time
from typing import Any, Iterator, List, Tuple

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from engine import cli
from engine.config import Settings
from engine.discovery import COMMON_AETS, NOT_DICOM, discover, parse_ports, parse_targets
from engine.errors import ConfigError
from engine.events import EngineEvent, LogLine, NodeFound
from engine.jobs import Control, start_thread
from tests.peers import free_port

# --- parsing (no network) ---------------------------------------------------------------------


def test_cidr_leaves_out_network_and_broadcast() -> None:
    assert parse_targets("127.0.0.0/29", "") == ["127.0.0.%d" % n for n in range(1, 7)]
    assert parse_targets("10.0.0.7/32", "") == ["10.0.0.7"]
    assert parse_targets("10.0.0.6/31", "") == ["10.0.0.6", "10.0.0.7"]
    assert len(parse_targets("10.1.0.0/16", "")) == 65534


def test_ranges_short_and_long() -> None:
    assert parse_targets("10.0.0.1-4", "") == ["10.0.0.%d" % n for n in range(1, 5)]
    assert parse_targets("10.0.0.254-10.0.1.1", "") == ["10.0.0.254", "10.0.0.255", "10.0.1.0",
                                                         "10.0.1.1"]


def test_extra_hosts_are_added_once_in_order() -> None:
    hosts = parse_targets("10.0.0.1-2", "pacs.clinic.local, 10.0.0.2  10.0.0.9;pacs.clinic.local")
    assert hosts == ["10.0.0.1", "10.0.0.2", "pacs.clinic.local", "10.0.0.9"]
    assert parse_targets("", "10.0.0.5") == ["10.0.0.5"]


@pytest.mark.parametrize("subnet", ["10.0.0.0/15", "10.0.0.0-10.1.0.0", "0.0.0.0/0"])
def test_more_than_a_slash_16_is_refused(subnet: str) -> None:
    with pytest.raises(ConfigError, match="at most 65,536") as info:
        parse_targets(subnet, "")
    assert "/16" in str(info.value)


@pytest.mark.parametrize("subnet, extra, message", [
    ("", "", "Enter a network range"),
    ("hello/24", "", "is not a network range"),
    ("10.0.0.9-3", "", "ends before it starts"),
    ("10.0.0.300", "", "is not a network range"),
    ("", "bad_host!", "is not an IP address or a computer name"),
])
def test_bad_targets_are_explained(subnet: str, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_targets(subnet, extra)


def test_ports() -> None:
    assert parse_ports("104, 11112 104") == (104, 11112)
    assert parse_ports("")[0] == 104
    with pytest.raises(ConfigError, match="not a port number"):
        parse_ports("104,http")


# --- sweeping real peers on loopback ----------------------------------------------------------

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def _free_port() -> int:
    """A port free on every test address, so only our peers answer on it."""
    while True:
        port = free_port("127.0.0.2")
        if all(_can_bind("127.0.0.%d" % n, port) for n in range(1, 7)):
            return port


def _can_bind(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def _not_dicom_peer(host: str, port: int, greeting: bytes) -> socket.socket:
    """Accepts, sends ``greeting`` (b"" = nothing) and closes, until the socket is closed."""
    server = socket.socket()
    server.bind((host, port))
    server.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                if greeting:
                    conn.sendall(greeting)

    start_thread(serve, "not-dicom-%s" % host)
    return server


@pytest.fixture(scope="module")
def network() -> Iterator[Tuple[List[int], str]]:
    """SCPs on .2 (any called AE), .3 (only ORTHANC), .4 (only MYPACS); garbage on .5."""
    ports = [_free_port() for _ in range(4)]
    servers: List[Any] = []
    for host, port, title, strict in [(HOSTS[0], ports[0], "WHATEVER", False),
                                      (HOSTS[1], ports[1], "ORTHANC", True),
                                      (HOSTS[2], ports[2], "MYPACS", True)]:
        ae = AE(ae_title=title)
        ae.require_called_aet = strict
        ae.add_supported_context(Verification)
        servers.append(ae.start_server((host, port), block=False))
    garbage = _not_dicom_peer(HOSTS[3], ports[3], b"SSH-2.0-OpenSSH_9.2\r\n")
    yield ports, "MYPACS"
    garbage.close()
    for server in servers:
        server.shutdown()


def _sweep(ports: List[int], **options: Any) -> Tuple[List[NodeFound], List[EngineEvent]]:
    events: List[EngineEvent] = []
    found = discover(parse_targets("127.0.0.0/29", ""), ports, Control(3, events.append),
                     settings=Settings(calling_aet="FINDER"), **options)
    return found, events


@pytest.mark.network
def test_sweep_finds_exactly_our_peers(network: Tuple[List[int], str]) -> None:
    ports, user_aet = network
    found, events = _sweep(ports, user_aet=user_aet)
    summary = [(n.host, n.port, n.dicom, n.accepted_aet) for n in found]
    assert summary == [(HOSTS[0], ports[0], True, "MYPACS"),   # accepts anything: first guess
                       (HOSTS[1], ports[1], True, "ORTHANC"),  # found in COMMON_AETS
                       (HOSTS[2], ports[2], True, "MYPACS"),   # only the user's title works
                       (HOSTS[3], ports[3], False, "")]
    assert found[3].detail == NOT_DICOM
    assert "not necessarily its own name" in found[1].detail
    assert sorted(events, key=lambda e: getattr(e, "host", "")) == found  # each one emitted
    assert all(isinstance(e, NodeFound) and e.job_id == 3 for e in events)


@pytest.mark.network
def test_without_the_right_title_the_peer_is_still_reported(
        network: Tuple[List[int], str]) -> None:
    ports, _ = network
    found, _ = _sweep(ports[2:3])
    assert [(n.host, n.dicom, n.accepted_aet) for n in found] == [(HOSTS[2], True, "")]
    assert "refused every called AE title tried (%s)" % ", ".join(COMMON_AETS) in found[0].detail
    assert "does not recognise the called AE title" in found[0].detail
    found, _ = _sweep(ports[:1])
    assert found[0].accepted_aet == COMMON_AETS[0]


@pytest.mark.network
def test_silent_port_is_not_dicom_and_quick() -> None:
    port = _free_port()
    silent = socket.socket()
    silent.bind(("127.0.0.6", port))
    silent.listen(16)  # the kernel completes connections; nobody ever answers
    try:
        started = time.monotonic()
        found, _ = _sweep([port], echo_timeout=3.0)
    finally:
        silent.close()
    assert [(n.host, n.dicom, n.detail) for n in found] == [("127.0.0.6", False, NOT_DICOM)]
    assert time.monotonic() - started < 3.0  # one short try, not one per AE title


@pytest.mark.network
def test_cancel_stops_a_large_sweep_quickly() -> None:
    control = Control()
    hosts = parse_targets("127.1.0.0/16", "")

    def cancel_soon() -> None:
        time.sleep(0.3)
        control.cancel()

    start_thread(cancel_soon, "cancel")
    started = time.monotonic()
    assert discover(hosts, [_free_port()], control, threads=20) == []
    assert time.monotonic() - started < 2.0


@pytest.mark.network
def test_time_limit_stops_and_says_so() -> None:
    events: List[EngineEvent] = []
    started = time.monotonic()
    discover(parse_targets("127.1.0.0/16", ""), [_free_port()], Control(0, events.append),
             threads=20, time_limit_s=0.3)
    assert time.monotonic() - started < 2.0
    assert any(isinstance(e, LogLine) and "scan a smaller range" in e.text for e in events)


@pytest.mark.network
def test_cli_streams_then_prints_a_table(network: Tuple[List[int], str],
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ports, _ = network
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("engine.discovery",))
    code = cli.main(["discover", "--subnet", "127.0.0.2-3", "--hosts", "127.0.0.5",
                     "--ports", ",".join(str(p) for p in ports[:2] + ports[3:])])
    out = capsys.readouterr().out
    assert code == 0
    assert ("DICOM     127.0.0.3:%d  C-ECHO answered; accepted called AE title 'ORTHANC'"
            % ports[1]) in out
    assert "not DICOM 127.0.0.5:%d  %s" % (ports[3], NOT_DICOM) in out
    assert "Found 3 open port(s), 2 answering as DICOM:" in out
    assert "ask its administrator for the exact title" in out


def test_cli_refuses_a_huge_range(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("engine.discovery",))
    assert cli.main(["discover", "--subnet", "10.0.0.0/8"]) == 2
    assert "at most 65,536" in capsys.readouterr().err

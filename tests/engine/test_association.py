"""open_association against real in-process SCPs and raw sockets on loopback."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable, Iterator, List

import pytest
from pynetdicom import AE, build_context, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from engine.association import (describe_rejection, make_ae, open_association, sop_class_name,
                                transfer_syntax_name)
from engine.config import Destination, Settings
from engine.events import AssociationClosed, AssociationOpened, EngineEvent
from engine.jobs import start_thread
from tests.peers import free_port

ECHO = [build_context(Verification)]


@pytest.fixture
def scp() -> Iterator[Callable[..., int]]:
    """Start a Verification SCP: scp(ae_title, handlers=..., **AE attributes) -> port."""
    servers: List[Any] = []

    def start(ae_title: str = "PACS", handlers: Any = (), **options: Any) -> int:
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(Verification)
        for name, value in options.items():
            setattr(ae, name, value)
        port = free_port()
        servers.append(ae.start_server(("127.0.0.1", port), block=False,
                                       evt_handlers=list(handlers)))
        return port

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener that accepts connections (kernel backlog) and never says anything."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    yield sock
    sock.close()


pytestmark = pytest.mark.network


def test_open_sets_nodelay_and_reports_open_and_release(scp: Callable[..., int]) -> None:
    port = scp()
    events: List[EngineEvent] = []
    assoc, failure = open_association(Destination("127.0.0.1", port, "PACS"), Settings(), ECHO,
                                      sink=events.append, job_id=7)
    assert failure is None and assoc is not None
    sock = assoc.dul.socket.socket
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert events == [AssociationOpened(7, "PACS@127.0.0.1:%d" % port, 1, 0),
                      AssociationClosed(7, "released", "")]


def test_wrong_called_aet_is_rejected_with_the_title_named(scp: Callable[..., int]) -> None:
    port = scp("ORTHANC", require_called_aet=True)
    events: List[EngineEvent] = []
    assoc, failure = open_association(Destination("127.0.0.1", port, "orthanc"), Settings(),
                                      ECHO, sink=events.append)
    assert assoc is None and failure is not None
    assert failure.how == "rejected" and failure.dicom_reply
    assert "does not recognise the called AE title 'orthanc'" in failure.reason
    assert "case-sensitive" in failure.reason
    assert events == [AssociationClosed(0, "rejected", failure.reason)]


def test_unknown_calling_aet_is_rejected(scp: Callable[..., int]) -> None:
    port = scp(require_calling_aet=["WORKSTATION"])
    _, failure = open_association(Destination("127.0.0.1", port, "PACS"),
                                  Settings(calling_aet="MIGRATOR"), ECHO)
    assert failure is not None and failure.how == "rejected"
    assert "our AE title 'MIGRATOR' is not allowed to connect" in failure.reason
    assert "PACS administrator" in failure.reason


def test_no_listener_is_refused() -> None:
    port = free_port()
    events: List[EngineEvent] = []
    started = time.monotonic()
    _, failure = open_association(Destination("127.0.0.1", port, "PACS"), Settings(), ECHO,
                                  sink=events.append)
    assert failure is not None and failure.how == "refused" and not failure.dicom_reply
    assert "127.0.0.1:%d refused the connection" % port in failure.reason
    assert time.monotonic() - started < 2
    assert events == [AssociationClosed(0, "refused", failure.reason)]


def test_silent_peer_times_out(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    events: List[EngineEvent] = []
    started = time.monotonic()
    _, failure = open_association(Destination("127.0.0.1", port, "PACS"),
                                  Settings(acse_timeout=0.5), ECHO, sink=events.append)
    assert failure is not None and failure.how == "timeout" and not failure.dicom_reply
    assert "did not answer within 0.5 seconds" in failure.reason
    assert time.monotonic() - started < 3
    assert events == [AssociationClosed(0, "aborted", failure.reason)]


def test_connect_that_hangs_times_out() -> None:
    # A listener whose accept queue is full drops new SYNs, like a firewall that drops packets.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            _, failure = open_association(Destination("127.0.0.1", port, "PACS"),
                                          Settings(connect_timeout=0.5), ECHO)
        finally:
            for filler in fillers:
                filler.close()
    assert failure is not None and failure.how == "timeout"
    assert "Nothing answered at 127.0.0.1:%d within 0.5 seconds" % port in failure.reason


def test_garbage_answer_is_aborted_and_not_dicom(listener: socket.socket) -> None:
    def answer_like_http() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    start_thread(answer_like_http, "http-peer")
    started = time.monotonic()
    _, failure = open_association(Destination("127.0.0.1", listener.getsockname()[1], "PACS"),
                                  Settings(acse_timeout=5), ECHO)
    assert failure is not None and failure.how == "aborted" and not failure.dicom_reply
    assert "closed the connection" in failure.reason
    assert time.monotonic() - started < 3


def test_no_accepted_context_is_a_rejection(scp: Callable[..., int]) -> None:
    port = scp()
    _, failure = open_association(Destination("127.0.0.1", port, "PACS"), Settings(),
                                  [build_context(CTImageStorage)])
    assert failure is not None and failure.how == "rejected" and failure.dicom_reply
    assert "refused every kind of data" in failure.reason


def test_abort_by_peer_after_open_is_reported(scp: Callable[..., int]) -> None:
    def abort_on_echo(event: Any) -> int:
        event.assoc.abort()
        return 0

    port = scp(handlers=[(evt.EVT_C_ECHO, abort_on_echo)])
    events: List[EngineEvent] = []
    assoc, _ = open_association(Destination("127.0.0.1", port, "PACS"),
                                Settings(dimse_timeout=5), ECHO, sink=events.append)
    assert assoc is not None
    assert "Status" not in assoc.send_c_echo()
    assoc.release()
    assert [type(e) for e in events] == [AssociationOpened, AssociationClosed]
    assert isinstance(events[-1], AssociationClosed) and events[-1].how == "aborted"


def test_unknown_host_name_is_explained() -> None:
    _, failure = open_association(Destination("no-such-pacs.invalid", 104, "PACS"),
                                  Settings(), ECHO)
    assert failure is not None and failure.how == "refused"
    assert "'no-such-pacs.invalid' could not be found" in failure.reason


def test_make_ae_applies_settings() -> None:
    ae = make_ae(Settings(calling_aet="MIGRATOR", acse_timeout=4, dimse_timeout=5,
                          network_timeout=6, connect_timeout=7, max_pdu=65536))
    assert ae.ae_title in ("MIGRATOR", b"MIGRATOR")
    assert (ae.acse_timeout, ae.dimse_timeout, ae.network_timeout) == (4, 5, 6)
    assert (ae.connection_timeout, ae.maximum_pdu_size) == (7, 65536)


@pytest.mark.parametrize("source, reason, expected", [
    (1, 1, "no reason given"),
    (1, 2, "application context"),
    (2, 2, "version of the DICOM protocol"),
    (3, 1, "too busy"),
    (3, 2, "limit of simultaneous connections"),
])
def test_describe_rejection(source: int, reason: int, expected: str) -> None:
    text = describe_rejection(1, source, reason, called_aet="PACS", calling_aet="ME")
    assert expected in text and "temporary" not in text


def test_transient_rejection_says_try_again() -> None:
    assert "try again" in describe_rejection(2, 3, 1)


def test_uid_names() -> None:
    assert sop_class_name("1.2.840.10008.5.1.4.1.1.2") == "CT Image Storage"
    assert sop_class_name("1.2.826.0.1.3680043.9.9999\x00") == "1.2.826.0.1.3680043.9.9999"
    assert transfer_syntax_name("1.2.840.10008.1.2.4.50") == "JPEG Baseline (Process 1)"
    assert transfer_syntax_name("1.2.840.10008.1.2.1 ") == "Explicit VR Little Endian"

"""echo() and ``dicom-migrate echo`` against in-process SCPs on loopback."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator, List

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from engine import cli
from engine.config import Destination, Settings
from engine.echo import echo
from tests.peers import OrthancPeer, StoreSCPPeer, free_port

pytestmark = pytest.mark.network


@pytest.fixture
def scp() -> Iterator[Callable[..., int]]:
    """Start a Verification SCP: scp(ae_title, handlers=..., **AE attributes) -> port."""
    servers: List[Any] = []

    def start(ae_title: str = "ORTHANC", handlers: Any = (), **options: Any) -> int:
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


def main(argv: List[str]) -> int:
    """``dicom-migrate`` with only this sub-command loaded (others may be half-written)."""
    original = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ("engine.echo",)
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = original


def test_echo_ok(scp: Callable[..., int]) -> None:
    port = scp()
    result = echo(Destination("127.0.0.1", port, "ORTHANC"), Settings())
    assert result.ok and result.how == "connected" and result.status == 0
    assert result.dicom_reply and 0 < result.elapsed_ms < 5000
    assert result.reason.startswith("Connected to ORTHANC at 127.0.0.1:%d — C-ECHO answered in "
                                    % port)


def test_echo_refused() -> None:
    result = echo(Destination("127.0.0.1", free_port(), "ORTHANC"), Settings())
    assert not result.ok and result.how == "refused" and result.status is None
    assert "refused the connection" in result.reason


def test_echo_rejected(scp: Callable[..., int]) -> None:
    port = scp("ORTHANC", require_called_aet=True)
    result = echo(Destination("127.0.0.1", port, "PACS"), Settings())
    assert not result.ok and result.how == "rejected" and result.dicom_reply
    assert "called AE title 'PACS'" in result.reason


def test_echo_error_status(scp: Callable[..., int]) -> None:
    port = scp(handlers=[(evt.EVT_C_ECHO, lambda event: 0x0110)])
    result = echo(Destination("127.0.0.1", port, "ORTHANC"), Settings())
    assert not result.ok and result.how == "failed" and result.status == 0x0110
    assert "error status 0x0110" in result.reason


def test_echo_without_answer(scp: Callable[..., int]) -> None:
    def slow(event: Any) -> int:
        time.sleep(2)
        return 0

    port = scp(handlers=[(evt.EVT_C_ECHO, slow)])
    result = echo(Destination("127.0.0.1", port, "ORTHANC"), Settings(dimse_timeout=0.5))
    assert not result.ok and result.how == "timeout" and result.status is None
    assert "did not answer the C-ECHO within 0.5 seconds" in result.reason


def test_echo_aborted_by_peer(scp: Callable[..., int]) -> None:
    def hang_up(event: Any) -> int:
        event.assoc.abort()
        return 0

    port = scp(handlers=[(evt.EVT_C_ECHO, hang_up)])
    result = echo(Destination("127.0.0.1", port, "ORTHANC"), Settings(dimse_timeout=10))
    assert not result.ok and result.how == "aborted" and result.status is None
    assert "closed the association instead of answering" in result.reason


def test_echo_dcmtk_storescp(storescp_factory: Callable[..., StoreSCPPeer]) -> None:
    peer = storescp_factory()
    result = echo(Destination("127.0.0.1", peer.port, peer.aet), Settings())
    assert result.ok and result.status == 0


def test_echo_orthanc_checks_the_called_title(
        orthanc_factory: Callable[..., OrthancPeer]) -> None:
    peer = orthanc_factory(DicomCheckCalledAet=True)
    assert echo(Destination("127.0.0.1", peer.dicom_port, peer.aet), Settings()).ok
    wrong = echo(Destination("127.0.0.1", peer.dicom_port, "ANY-SCP"), Settings())
    assert wrong.how == "rejected"
    assert "does not recognise the called AE title 'ANY-SCP'" in wrong.reason


def test_cli_echo_ok(scp: Callable[..., int], capsys: pytest.CaptureFixture[str]) -> None:
    port = scp()
    code = main(["echo", "--host", "127.0.0.1", "--port", str(port), "--called-aet", "ORTHANC"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Connected to ORTHANC at 127.0.0.1:%d" % port in out


def test_cli_echo_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code = main(["echo", "--host", "127.0.0.1", "--port", str(port), "--called-aet", "PACS",
                 "--calling-aet", "ME", "--timeout", "2"])
    captured = capsys.readouterr()
    assert code == 3
    assert "refused the connection" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_cli_echo_bad_ae_title(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["echo", "--host", "127.0.0.1", "--port", "104", "--called-aet", "X" * 17])
    assert code == 2
    assert "at most 16 characters" in capsys.readouterr().err

"""The practice receiver, fed by a pynetdicom sender and by the CLI on loopback."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, build_context
from pynetdicom.sop_class import Verification

from engine.config import Destination, Settings
from engine.echo import echo
from engine.errors import UserFacingError
from engine.receiver import Receiver, _safe_name, start_receiver
from tests.peers import find_binary, free_port, peer_env

pytestmark = pytest.mark.network

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# One file per family of transfer syntax: explicit LE, JPEG 2000, big endian, deflated.
SAMPLES = ["CT_small.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.3811.99.1"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with start_receiver(0, str(tmp_path / "in")) as running:
        yield running


def _send(port: int, datasets: List[Dataset]) -> List[int]:
    """Send with one exact-syntax context per dataset, as the migrator does."""
    ae = AE(ae_title="SENDER")
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="PRACTICE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _private_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = PRIVATE_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Practice^Patient"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = PRIVATE_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def test_writes_part10_files_with_the_syntax_sent(receiver: Receiver) -> None:
    sources = [pydicom.dcmread(str(TEST_FILES / name)) for name in SAMPLES]
    assert _send(receiver.port, sources) == [0] * len(sources)
    assert receiver.count == len(sources) and receiver.bytes > 0
    assert receiver.out_dir is not None
    for src in sources:
        got = pydicom.dcmread(os.path.join(receiver.out_dir, src.SOPInstanceUID + ".dcm"))
        assert got.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert got.file_meta.MediaStorageSOPInstanceUID == src.SOPInstanceUID
        assert got.PixelData == src.PixelData
        assert got == src
    assert not [name for name in os.listdir(receiver.out_dir) if name.endswith(".part")]


def test_accepts_private_sop_classes(receiver: Receiver) -> None:
    ds = _private_dataset()
    assert _send(receiver.port, [ds]) == [0]
    assert receiver.out_dir is not None
    got = pydicom.dcmread(os.path.join(receiver.out_dir, ds.SOPInstanceUID + ".dcm"))
    assert got.file_meta.MediaStorageSOPClassUID == PRIVATE_SOP_CLASS
    assert got.PatientName == "Practice^Patient"


def test_answers_c_echo_and_sets_nodelay(receiver: Receiver) -> None:
    result = echo(Destination("127.0.0.1", receiver.port, "PRACTICE"), Settings())
    assert result.ok
    assoc = AE().associate("127.0.0.1", receiver.port, [build_context(Verification)],
                           ae_title="PRACTICE")
    try:
        # The echo's association may still be winding down: look at the one open now.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            live = [a for a in receiver._server.active_associations if a.is_established]
            if live:
                break
            time.sleep(0.01)
        sock = live[0].dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


def test_dcmtk_storescu_can_send_to_it(receiver: Receiver) -> None:
    storescu = find_binary("storescu")
    if not storescu:
        pytest.skip("DCMTK storescu is not installed")
    files = [str(TEST_FILES / name) for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]
    run = subprocess.run([storescu, "-aec", "PRACTICE", "127.0.0.1", str(receiver.port)] + files,
                         capture_output=True, text=True, env=peer_env(), timeout=60)
    assert run.returncode == 0, run.stderr
    assert receiver.count == 3
    assert receiver.out_dir is not None and len(os.listdir(receiver.out_dir)) == 3


def test_count_only_writes_nothing(tmp_path: Path) -> None:
    with start_receiver(0) as counting:
        assert _send(counting.port, [pydicom.dcmread(str(TEST_FILES / "CT_small.dcm"))]) == [0]
        assert counting.count == 1 and counting.bytes > 1000
    assert list(tmp_path.iterdir()) == []


def test_port_in_use_is_a_plain_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(UserFacingError, match="Pick another port"):
            start_receiver(busy.getsockname()[1])


def test_unrestricted_switch_is_on_only_while_running() -> None:
    before = _config.UNRESTRICTED_STORAGE_SERVICE
    first, second = start_receiver(0), start_receiver(0)
    assert _config.UNRESTRICTED_STORAGE_SERVICE
    first.stop()
    assert _config.UNRESTRICTED_STORAGE_SERVICE  # the second one still needs it
    second.stop()
    second.stop()
    assert _config.UNRESTRICTED_STORAGE_SERVICE == before


def test_file_names_cannot_escape_the_folder() -> None:
    assert _safe_name("1.2.3\x00") == "1.2.3"
    assert "/" not in _safe_name("../../etc/passwd") and _safe_name("..") == "no-sop-instance-uid"


def test_cli_receives_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    # Load only this sub-command: other modules may be half-written while we work.
    code = ("import sys; from engine import cli; cli.COMMAND_MODULES = ('engine.receiver',); "
            "sys.exit(cli.main(sys.argv[1:]))")
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", code, "receive", "--port", str(port),
                             "--out", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=root))
    try:
        assert proc.stdout is not None
        assert "Receiving as PRACTICE on 127.0.0.1:%d" % port in proc.stdout.readline()
        assert _send(port, [pydicom.dcmread(str(TEST_FILES / "CT_small.dcm"))]) == [0]
        time.sleep(0.7)  # let it print the running count once
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Received 1 files" in out and "Stopped. Received 1 files" in out
    assert "Traceback" not in err
    assert len(list(tmp_path.glob("*.dcm"))) == 1

"""The practice receiver, fed by a pynetdicom sender and by the CLI on loopback; queried with
C-FIND by the engine's own verification (and resend of what is missing)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, build_context
from pynetdicom.sop_class import Verification

from engine import cli
from engine.cfind import FindSession, park_reactor, query_keys, text_of
from engine.config import Destination, Settings
from engine.echo import echo
from engine.errors import UserFacingError
from engine.jobs import Control
from engine.receiver import PATIENT_ROOT_FIND, Receiver, _safe_name, start_receiver
from engine.verify import VerifyResult, resend_missing, verify
from tests.corpus import make_dicom
from tests.engine.helpers import migrate
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
    shutil.copyfile(str(TEST_FILES / "MR_small.dcm"), str(tmp_path / "earlier.dcm"))
    # Load only this sub-command: other modules may be half-written while we work.
    code = ("import sys; from engine import cli; cli.COMMAND_MODULES = ('engine.receiver',); "
            "sys.exit(cli.main(sys.argv[1:]))")
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", code, "receive", "--port", str(port),
                             "--out", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=root),
                            preexec_fn=_sigint_default)  # see _sigint_default
    try:
        assert proc.stdout is not None
        assert "Receiving as PRACTICE on 127.0.0.1:%d" % port in proc.stdout.readline()
        assert "also for the 1 files already in" in proc.stdout.readline()
        assert _send(port, [pydicom.dcmread(str(TEST_FILES / "CT_small.dcm"))]) == [0]
        time.sleep(0.7)  # let it print the running count once
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Received 1 files" in out and "Stopped. Received 1 files" in out
    assert "Traceback" not in err
    assert len(list(tmp_path.glob("*.dcm"))) == 2


# --- C-FIND over what it holds ---------------------------------------------------------------
FAST = dict(backoff_base_s=0.05, acse_timeout=10, dimse_timeout=10, connect_timeout=5)
CORPUS = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")  # three real studies


def _tree(root: Path) -> Dict[str, Tuple[str, str, Path]]:
    """Two generated studies (series of 3+2 and 2 images) plus the corpus files:
    SOP Instance UID -> (study, series, file)."""
    for s, sizes in enumerate(((3, 2), (2,))):
        study = generate_uid()
        for k, size in enumerate(sizes):
            series = generate_uid()
            for i in range(size):
                make_dicom(root / ("P%d" % s) / ("S%d" % k) / ("%d.dcm" % i),
                           StudyInstanceUID=study, SeriesInstanceUID=series,
                           PatientName="PRACTICE^%s" % "AB"[s], PatientID="PID%d" % s,
                           StudyDate="2024011%d" % s)
    for name in CORPUS:
        (root / "corpus").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(TEST_FILES / name), str(root / "corpus" / name))
    tree = {}
    for path in sorted(root.rglob("*.dcm")):
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        tree[str(ds.SOPInstanceUID)] = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                        path)
    return tree


def _fast() -> Settings:
    return Settings(**FAST)  # type: ignore[arg-type]


def _verify(work: Path, dest: Destination) -> VerifyResult:
    return verify(str(work), dest, _fast(), Control()).result  # type: ignore[return-value]


def _uids(matches: List[Dataset], keyword: str = "SOPInstanceUID") -> Set[str]:
    return {text_of(m, keyword) for m in matches}


def test_find_answers_each_level_with_uid_lists_and_counts(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "src")
    with start_receiver(0) as running:  # counting only: the index still answers
        sent = [pydicom.dcmread(str(path)) for _, _, path in tree.values()]
        assert _send(running.port, sent) == [0] * len(sent)
        assert len(running.index) == len(tree) == 10
        dest = Destination("127.0.0.1", running.port, "PRACTICE")
        session = FindSession(dest, _fast(), Control())
        try:
            by_study: Dict[str, List[str]] = {}
            for uid, (study, _, _) in tree.items():
                by_study.setdefault(study, []).append(uid)
            big = max(by_study, key=lambda u: len(by_study[u]))
            series = sorted({tree[u][1] for u in by_study[big]})

            studies = session.query(query_keys("STUDY", StudyInstanceUID="", PatientName="",
                                               StudyDate="", NumberOfStudyRelatedInstances="",
                                               NumberOfStudyRelatedSeries="", AccessionNumber=""))
            assert studies.complete and _uids(studies.matches, "StudyInstanceUID") == set(by_study)
            row = next(m for m in studies.matches if text_of(m, "StudyInstanceUID") == big)
            assert (text_of(row, "PatientName"), text_of(row, "StudyDate")) == ("PRACTICE^A",
                                                                                "20240110")
            assert int(row.NumberOfStudyRelatedInstances) == 5
            assert int(row.NumberOfStudyRelatedSeries) == 2
            assert "AccessionNumber" in row and text_of(row, "AccessionNumber") == ""

            listed = session.query(query_keys("SERIES", StudyInstanceUID=big,
                                              SeriesInstanceUID="", Modality="",
                                              NumberOfSeriesRelatedInstances=""))
            per_series = {s: sum(1 for u in by_study[big] if tree[u][1] == s) for s in series}
            assert sorted(per_series.values()) == [2, 3]
            assert {text_of(m, "SeriesInstanceUID"): int(m.NumberOfSeriesRelatedInstances)
                    for m in listed.matches} == per_series
            assert {text_of(m, "Modality") for m in listed.matches} == {"CT"}

            # A backslash list of SOP Instance UIDs: exactly those come back, one per answer.
            wanted = sorted(by_study[big])[:3] + ["1.2.3.4.5.404"]
            images = session.query(query_keys("IMAGE", StudyInstanceUID=big,
                                              SeriesInstanceUID=series, SOPInstanceUID=wanted))
            assert images.complete and _uids(images.matches) == set(wanted[:3])
            assert len(images.matches) == 3
            one = session.query(query_keys("IMAGE", StudyInstanceUID=big,
                                           SeriesInstanceUID="", SOPInstanceUID=wanted[0]))
            assert [text_of(m, "SeriesInstanceUID") for m in one.matches] == [tree[wanted[0]][1]]
            everything = session.query(query_keys("IMAGE", SOPInstanceUID=""))
            assert _uids(everything.matches) == set(tree)

            names = session.query(query_keys("STUDY", PatientName="practice^*",
                                             StudyDate="20240111-", StudyInstanceUID=""))
            # Wildcard, case-insensitive name and an open date range: only PRACTICE^B's study.
            other = next(u for u in by_study if tree[by_study[u][0]][2].parts[-3] == "P1")
            assert [text_of(m, "StudyInstanceUID") for m in names.matches] == [other]

            bad = session.query(query_keys("FRAME", SOPInstanceUID=""))
            assert bad.failed and 0xC000 <= (bad.status or 0) <= 0xCFFF and not bad.matches
            assert "FRAME" in bad.comment
        finally:
            session.close()

        # Patient Root: the PATIENT level with its counts.
        ae = AE(ae_title="SENDER")
        ae.add_requested_context(PATIENT_ROOT_FIND)
        assoc = ae.associate("127.0.0.1", running.port, ae_title="PRACTICE")
        assert assoc.is_established
        try:
            park_reactor(assoc)
            replies = list(assoc.send_c_find(query_keys(
                "PATIENT", PatientID="PID0", PatientName="",
                NumberOfPatientRelatedInstances=""), PATIENT_ROOT_FIND))
        finally:
            assoc.release()
        assert [int(st.Status) for st, _ in replies] == [0xFF00, 0x0000]
        patient = replies[0][1]
        assert text_of(patient, "PatientName") == "PRACTICE^A"
        assert int(patient.NumberOfPatientRelatedInstances) == 5


def test_verify_against_the_receiver_matches_every_study(tmp_path: Path,
                                                         monkeypatch: Any, capsys: Any) -> None:
    tree = _tree(tmp_path / "src")
    work = tmp_path / "work"
    with start_receiver(0) as running:
        _, _, mig = migrate(tmp_path / "src", running.port, "PRACTICE", work, **FAST)
        assert mig.exit_code == 0, mig.summary
        dest = Destination("127.0.0.1", running.port, "PRACTICE")
        result = _verify(work, dest)
        assert [r.verdict for r in result.studies] == ["MATCH"] * 5, result
        assert result.all_match and not result.missing_sop_uids()
        assert sum(r.found for r in result.studies) == len(tree)

        monkeypatch.setattr(cli, "COMMAND_MODULES", ("engine.verify",))
        assert cli.main(["verify", "--work-dir", str(work), "--host", "127.0.0.1", "--port",
                         str(running.port), "--called-aet", "PRACTICE"]) == 0
        assert "5 studies checked: 5 MATCH, 0 MISMATCH" in capsys.readouterr().out


def test_restarted_receiver_knows_its_folder_names_the_deleted_and_resend_fixes_it(
        tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    tree = _tree(tmp_path / "src")
    work, out, port = tmp_path / "work", tmp_path / "received", free_port()
    with start_receiver(port, str(out)) as first:
        _, _, mig = migrate(tmp_path / "src", port, "PRACTICE", work, **FAST)
        assert mig.exit_code == 0, mig.summary
        assert first.count == len(tree)
    # One image from each series of the two-series study disappears while it is stopped.
    study = next(s for s, _, p in tree.values() if p.parts[-3] == "P0")
    gone = {min(u for u, (st, se, _) in tree.items() if st == study and se == series)
            for series in {se for st, se, _ in tree.values() if st == study}}
    assert len(gone) == 2
    for uid in gone:
        (out / (uid + ".dcm")).unlink()

    dest = Destination("127.0.0.1", port, "PRACTICE")
    with start_receiver(port, str(out)) as second:
        assert second.wait_ready(10) and second.count == 0
        assert len(second.index) == second.preloaded == len(tree) - 2
        result = _verify(work, dest)
        assert set(result.missing_sop_uids()) == gone and len(result.missing_sop_uids()) == 2
        rows = {r.study_instance_uid: r for r in result.studies}
        assert (rows[study].verdict, rows[study].expected, rows[study].found) == ("MISMATCH", 5, 3)
        assert [r.verdict for r in result.studies].count("MATCH") == 4

        monkeypatch.setattr(cli, "COMMAND_MODULES", ("engine.verify",))
        argv = ["verify", "--work-dir", str(work), "--host", "127.0.0.1", "--port", str(port),
                "--called-aet", "PRACTICE"]
        assert cli.main(argv) == 1
        printed = capsys.readouterr().out
        assert all(uid in printed for uid in gone) and "MISMATCH" in printed
        assert cli.main(argv + ["--resend-missing"]) == 0
        printed = capsys.readouterr().out
        assert "Sending 2 missing images again" in printed and "5 MATCH" in printed
        assert second.count == 2 and all((out / (uid + ".dcm")).exists() for uid in gone)
        assert _verify(work, dest).all_match


def test_resend_missing_through_the_api_after_a_restart(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "src")
    work, out, port = tmp_path / "work", tmp_path / "received", free_port()
    with start_receiver(port, str(out)):
        migrate(tmp_path / "src", port, "PRACTICE", work, **FAST)
    corpus = {u for u, (_, _, p) in tree.items() if p.parent.name == "corpus"}
    lost = sorted(corpus)[:2]  # two whole single-image studies: verdict MISSING
    for uid in lost:
        (out / (uid + ".dcm")).unlink()
    dest = Destination("127.0.0.1", port, "PRACTICE")
    with start_receiver(port, str(out)) as second:
        result = _verify(work, dest)
        assert sorted(result.missing_sop_uids()) == lost
        assert sorted(r.verdict for r in result.studies) == ["MATCH"] * 3 + ["MISSING"] * 2
        resent = resend_missing(str(work), dest, _fast(), Control(), result)
        assert resent.exit_code == 0, resent.summary
        assert second.count == 2 and _verify(work, dest).all_match


def _sigint_default() -> None:
    """A test run started in the background inherits an ignored SIGINT; Ctrl+C is the point
    of this test, so the child gets the normal disposition back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

"""The pre-flight probe: its decisions, its words, and what it asks a destination.

The decision function must say exactly what the sender then does: checked file by file
against the real Sender (with a scripted association) and against a real migration into a
restrictive Orthanc. Network tests use in-process pynetdicom SCPs and local peers only.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Set

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         RLELossless, UID, generate_uid)
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

import engine.migrate_cli  # noqa: F401  (see below)
from engine import compat, probe as probe_mod
from engine.cli import main as cli_main
from engine.config import Destination, Settings
from engine.errors import DestinationUnreachable
from engine.events import Outcome
from engine.headers import read_header
from engine.jobs import Control
from engine.probe import (AS_IS, DECOMPRESS, FAIL, REFUSED, ProbeGroup, ProbeResult, decide,
                          decompress_off_reason, format_problems, missing_decoder_reason,
                          no_fallback_reason, probe, probe_pairs, refused_reason, summary_line)
from engine.association import AssociationLink
from engine.sender import Sender
from tests.corpus import make_dicom
from tests.engine.helpers import migrate, records
from tests.peers import free_port

ELE, ILE, EBE = str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian), str(ExplicitVRBigEndian)
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG = "1.2.840.10008.1.2.4.50"
JPEG_LS = "1.2.840.10008.1.2.4.80"
RLE = str(RLELossless)
CT, MR = str(CTImageStorage), str(MRImageStorage)
SR = "1.2.840.10008.5.1.4.1.1.88.11"
# engine.migrate_cli is imported above, at collection: cli_main() imports every sub-command,
# and migrate_cli binds sys.stderr as a default argument at import time; imported during a
# capsys test it would keep that test's (then closed) stream for the rest of the session.


# --- the pure decision -------------------------------------------------------------------------
@pytest.mark.parametrize("ts,streamable,accepted,kw,action,target", [
    (ELE, True, set(), {}, REFUSED, ""),
    (ELE, True, {ELE, ILE}, {}, AS_IS, ELE),
    (ELE, False, {ELE, ILE}, {}, DECOMPRESS, ELE),  # accepted, but the bytes need re-encoding
    (ELE, True, {ILE}, {}, DECOMPRESS, ILE),
    (JPEG, True, {JPEG, ELE}, {"decompress": False}, AS_IS, JPEG),
    (JPEG, False, {JPEG, ELE}, {}, DECOMPRESS, ELE),  # non-streamable: decoded even so
    (JPEG, True, {ELE, ILE}, {}, DECOMPRESS, ELE),  # Explicit preferred
    (JPEG, True, {ILE}, {}, DECOMPRESS, ILE),
    (JPEG, True, {ELE}, {"decompress": False}, FAIL, ""),
    (JPEG, True, {ELE}, {"can_decode": False}, FAIL, ""),
    (JPEG, True, {ELE}, {"decompress": False, "has_pixels": False}, DECOMPRESS, ELE),
    (JPEG, True, {RLE}, {}, FAIL, ""),
    (DEFLATED, False, {DEFLATED, ELE}, {"decompress": False}, DECOMPRESS, ELE),  # inflated
    (EBE, True, {EBE, ELE}, {}, AS_IS, EBE),
    (EBE, True, {ELE, ILE}, {"decompress": False}, DECOMPRESS, ELE),  # not a decompression
    (EBE, False, {EBE}, {}, FAIL, ""),
    ("1.2.3.4.5", True, {ELE}, {"can_decode": False}, FAIL, ""),  # private compressed syntax
])
def test_decide(ts: str, streamable: bool, accepted: Set[str], kw: Dict[str, Any],
                action: str, target: str) -> None:
    decision = decide(CT, ts, streamable, accepted, **kw)
    assert (decision.action, decision.target_syntax) == (action, target)
    assert decision.explanation
    assert bool(decision.reason) == (action in (REFUSED, FAIL))


def test_decision_words() -> None:
    assert decide(MR, ELE, True, set()).explanation == (
        "refused: the destination does not accept MR Image Storage — ask the PACS "
        "administrator to enable it")
    assert decide(CT, ELE, True, {ELE}).explanation == "sent as is"
    assert decide(CT, JPEG, True, {ELE, ILE}).explanation == \
        "sent after decompression to Explicit VR Little Endian"
    assert decide(CT, JPEG, True, {ILE}, decompress=False).explanation == (
        "will fail: the destination refuses the compressed form (JPEG Baseline) and "
        "decompression is turned off")
    assert decide(CT, EBE, True, {ILE}).explanation == \
        "sent after conversion from big endian to Implicit VR Little Endian"
    missing = decide(CT, JPEG_LS, True, {ELE}, can_decode=False)
    assert "install the Python package %s" % compat.decoder_package(JPEG_LS) in \
        missing.explanation
    assert missing.reason == missing_decoder_reason(JPEG_LS)


# --- the decision mirrors the sender, file by file ---------------------------------------------
class _ScriptedAssoc:
    """Accepts the given contexts and answers every C-STORE with success."""

    def __init__(self, accepted: Dict[str, Set[str]]) -> None:
        self.accepted_contexts = [SimpleNamespace(abstract_syntax=sop, transfer_syntax=[ts])
                                  for sop, syntaxes in accepted.items() for ts in syntaxes]
        self.payloads: List[Any] = []

    def send_c_store(self, payload: Any) -> Dataset:
        self.payloads.append(payload)
        rsp = Dataset()
        rsp.Status = 0x0000
        return rsp


def _pixelless(path: Path, sop_class: str = SR, ts: str = JPEG) -> Path:
    """An SR whose file meta claims a compressed syntax although it holds no image."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = UID(sop_class), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^PROBE", "PRB1", "SR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    item = Dataset()
    item.ValueType, item.TextValue = "TEXT", "Nothing to decompress"
    ds.ContentSequence = [item]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compat.write_file_bytes(ds))
    return path


def _without_meta(path: Path) -> Path:
    """A bare Implicit VR data set with no preamble or file meta: never streamable."""
    src = make_dicom(path.with_suffix(".tmp"), ts=ILE)
    from pydicom import dcmread

    ds = dcmread(str(src))
    path.write_bytes(compat.dataset_to_bytes(ds, True, True))
    src.unlink()
    return path


def _testdata(name: str, dest: Path) -> Path:
    from pydicom.data import get_testdata_file

    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(get_testdata_file(name), str(dest / name)))


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: Any) -> List[Path]:
    root = tmp_path_factory.mktemp("mirror")
    return [make_dicom(root / "ct_ele.dcm"), make_dicom(root / "ct_ile.dcm", ts=ILE),
            make_dicom(root / "ct_ebe.dcm", ts=EBE), make_dicom(root / "ct_dfl.dcm", ts=DEFLATED),
            make_dicom(root / "ct_rle.dcm", ts=RLE), _pixelless(root / "sr_jpeg.dcm"),
            _without_meta(root / "ct_nometa.dcm"),
            _testdata("SC_rgb_jpeg_dcmtk.dcm", root), _testdata("MR_small_jpeg_ls_lossless.dcm",
                                                                root)]


ACCEPTED_VARIANTS = {
    "refused": lambda ts: set(), "own-only": lambda ts: {ts}, "ELE": lambda ts: {ELE},
    "ILE": lambda ts: {ILE}, "ELE+ILE": lambda ts: {ELE, ILE}, "own+ILE": lambda ts: {ts, ILE},
    "JPEG-only": lambda ts: {JPEG}, "EBE-only": lambda ts: {EBE},
}


@pytest.mark.parametrize("codec", ["codecs", "no-codecs"])
@pytest.mark.parametrize("decompress", [True, False], ids=["decompress", "no-decompress"])
@pytest.mark.parametrize("variant", sorted(ACCEPTED_VARIANTS))
def test_probe_predicts_what_the_sender_does(sample_files: List[Path], variant: str,
                                             decompress: bool, codec: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if codec == "no-codecs":  # seen by both the probe and transcode_file
        monkeypatch.setattr(compat, "decoder_available", lambda ts: False)
    settings = Settings(decompress=decompress)
    dest = Destination("127.0.0.1", 104, "ANY")
    for path in sample_files:
        header = read_header(str(path))
        accepted = {header.sop_class_uid: ACCEPTED_VARIANTS[variant](header.transfer_syntax)}
        monkeypatch.setattr(probe_mod, "ask_destination", lambda *a, **k: (accepted, 1))
        (group,) = probe([str(path)], dest, settings, Control()).result.groups
        assoc = _ScriptedAssoc(accepted)
        # the pynetdicom-style fake goes through the same adapter a real fall-back would
        sent = Sender(dest, settings, Control())._send_one(AssociationLink(assoc), header)
        where = "%s with %s" % (path.name, variant)
        if group.action in (REFUSED, FAIL):
            assert (sent.outcome, sent.reason) == (Outcome.FAILED, group.reason), where
            assert not assoc.payloads, where
            continue
        assert sent.outcome is Outcome.SENT, (where, sent.reason)
        assert sent.sent_syntax == group.target_syntax, where
        streamed = isinstance(assoc.payloads[0], str)
        assert streamed == (group.action == AS_IS), where


# --- against an in-process SCP -----------------------------------------------------------------
class RestrictiveSCP:
    """Accepts CT Image Storage in Implicit VR Little Endian only, refuses MR; records every
    association request and every DIMSE message it receives."""

    def __init__(self, contexts: Any = None, **ae_options: Any) -> None:
        self.requested: List[int] = []
        self.dimse: List[str] = []
        self.lock = threading.Lock()
        ae = AE(ae_title="RESTRICT")
        for name, value in ae_options.items():
            setattr(ae, name, value)
        for sop, syntaxes in contexts or [(CT, [ILE])]:
            ae.add_supported_context(sop, syntaxes)
        ae.add_supported_context(Verification)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_REQUESTED, self._on_request), (evt.EVT_DIMSE_RECV, self._on_dimse)])

    def _on_request(self, event: Any) -> None:
        with self.lock:
            self.requested.append(len(event.assoc.requestor.requested_contexts))

    def _on_dimse(self, event: Any) -> None:
        with self.lock:
            self.dimse.append(type(event.message).__name__)

    @property
    def dest(self) -> Destination:
        return Destination("127.0.0.1", self.port, "RESTRICT")

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp_factory() -> Any:
    made: List[RestrictiveSCP] = []

    def factory(*args: Any, **kwargs: Any) -> RestrictiveSCP:
        scp = RestrictiveSCP(*args, **kwargs)
        made.append(scp)
        return scp
    yield factory
    for scp in made:
        scp.stop()


def _mixed_folder(root: Path) -> Path:
    for i in range(2):
        make_dicom(root / "ct" / ("ile%d.dcm" % i), ts=ILE)
    for i in range(3):
        make_dicom(root / "ct" / ("ele%d.dcm" % i))
    make_dicom(root / "ct" / "rle.dcm", ts=RLE)
    make_dicom(root / "ct" / "be.dcm", ts=EBE)
    for i in range(2):
        make_dicom(root / "mr" / ("mr%d.dcm" % i), sop_class=MR)
    (root / "notes.txt").write_text("Scanned on the old PACS.\n")
    (root / "empty.dcm").write_bytes(b"")
    (root / "damaged.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    return root


def _rows(result: ProbeResult) -> List[tuple]:
    return [(g.sop_class_name, g.transfer_syntax_name, g.files, g.action, g.target_syntax)
            for g in result.groups]


@pytest.mark.network
def test_mixed_folder_against_restrictive_scp(tmp_path: Path, scp_factory: Any) -> None:
    scp = scp_factory()
    source = _mixed_folder(tmp_path / "src")
    events: List[Any] = []
    finished = probe(str(source), scp.dest, Settings(), Control(sink=events.append))
    result = finished.result
    assert _rows(result) == [
        ("CT Image Storage", "Implicit VR Little Endian", 2, AS_IS, ILE),
        ("CT Image Storage", "Explicit VR Big Endian", 1, DECOMPRESS, ILE),
        ("CT Image Storage", "Explicit VR Little Endian", 3, DECOMPRESS, ILE),
        ("CT Image Storage", "RLE Lossless", 1, DECOMPRESS, ILE),
        ("MR Image Storage", "Explicit VR Little Endian", 2, REFUSED, ""),
    ]
    assert result.groups[-1].reason == refused_reason(MR)
    assert sorted(os.path.basename(p) for p, _ in result.problems) == \
        ["damaged.dcm", "empty.dcm", "notes.txt"]
    assert finished.summary == (
        "2 files will be sent as they are, 1 after decompression, 4 after conversion, "
        "5 cannot be sent: 2 refused by the destination, 3 not DICOM or damaged.")
    assert finished.exit_code == 1
    assert scp.dimse == [], "the probe must send nothing: no C-STORE, not even a C-ECHO"
    assert scp.requested == [7]  # CT: ILE, ELE, RLE, EBE; MR: ELE, ILE; Verification
    assert result.associations == 1


@pytest.mark.network
def test_decompression_off_makes_compressed_groups_fail(tmp_path: Path,
                                                        scp_factory: Any) -> None:
    scp = scp_factory()
    source = _mixed_folder(tmp_path / "src")
    result = probe(str(source), scp.dest, Settings(decompress=False), Control()).result
    (rle,) = [g for g in result.groups if g.transfer_syntax == RLE]
    assert (rle.action, rle.reason) == (FAIL, decompress_off_reason(RLE))
    assert rle.explanation == ("will fail: the destination refuses the compressed form (RLE "
                               "Lossless) and decompression is turned off")
    be = [g for g in result.groups if g.transfer_syntax == EBE]
    assert be[0].action == DECOMPRESS  # a byte-order change is not a decompression
    assert "1 in a form the destination does not take (decompression is turned off)" in \
        summary_line(result)


@pytest.mark.network
def test_only_refused_classes_still_get_an_answer(tmp_path: Path, scp_factory: Any) -> None:
    """With Verification proposed too, a PACS refusing every storage class still
    associates, so each class is reported refused instead of "cannot connect"."""
    scp = scp_factory()
    for i in range(3):
        make_dicom(tmp_path / "src" / ("mr%d.dcm" % i), sop_class=MR)
    finished = probe(str(tmp_path / "src"), scp.dest, Settings(), Control())
    assert _rows(finished.result) == [
        ("MR Image Storage", "Explicit VR Little Endian", 3, REFUSED, "")]
    assert finished.exit_code == 1
    assert finished.summary == "3 files cannot be sent: 3 refused by the destination."


@pytest.mark.network
def test_probe_pairs_splits_at_128_contexts(scp_factory: Any) -> None:
    classes = [str(cx.abstract_syntax) for cx in StoragePresentationContexts[:50]]
    scp = scp_factory([(sop, [ELE, ILE]) for sop in classes])
    pairs = {(sop, JPEG): index + 1 for index, sop in enumerate(classes)}
    finished = probe_pairs(pairs, scp.dest, Settings(), Control())
    result = finished.result
    assert result.associations == 2 and len(scp.requested) == 2
    assert max(scp.requested) <= 128
    assert sum(scp.requested) == 50 * 3 + 2  # every class asked once, with Verification
    assert {g.sop_class for g in result.groups} == set(classes)
    assert {(g.action, g.target_syntax) for g in result.groups} == {(DECOMPRESS, ELE)}
    assert result.count(DECOMPRESS) == sum(pairs.values())
    assert scp.dimse == []


@pytest.mark.network
def test_unreachable_destination_raises(tmp_path: Path) -> None:
    make_dicom(tmp_path / "src" / "ct.dcm")
    dest = Destination("127.0.0.1", free_port(), "NOBODY")
    with pytest.raises(DestinationUnreachable, match="refused the connection"):
        probe(str(tmp_path / "src"), dest, Settings(connect_timeout=5), Control())


# --- the command line --------------------------------------------------------------------------
def _cli(source: Path, dest: Destination, *extra: str) -> int:
    return cli_main(["probe", str(source), "--host", dest.host, "--port", str(dest.port),
                     "--called-aet", dest.called_aet, "--timeout", "5"] + list(extra))


@pytest.mark.network
def test_cli_exit_codes(tmp_path: Path, scp_factory: Any, capsys: Any) -> None:
    scp = scp_factory()
    good = tmp_path / "good"
    for i in range(2):
        make_dicom(good / ("ct%d.dcm" % i), ts=ILE)
    assert _cli(good, scp.dest) == 0
    out = capsys.readouterr().out
    assert "Files  Kind of object" in out and "What will happen" in out
    assert out.rstrip().endswith("2 files will be sent as they are.")
    assert _cli(_mixed_folder(tmp_path / "mixed"), scp.dest) == 1
    out = capsys.readouterr().out
    assert "refused: the destination does not" in out  # the table wraps long cells
    assert "3 files are not sent because they are not DICOM or are damaged:" in out
    assert _cli(tmp_path / "missing", scp.dest) == 2
    closed = Destination("127.0.0.1", free_port(), "RESTRICT")
    assert _cli(good, closed) == 3
    assert "refused the connection" in capsys.readouterr().err
    assert scp.dimse == []


@pytest.mark.network
def test_cli_rejected_association_exits_3(tmp_path: Path, scp_factory: Any,
                                          capsys: Any) -> None:
    scp = scp_factory(require_called_aet=True)
    make_dicom(tmp_path / "src" / "ct.dcm")
    wrong = Destination("127.0.0.1", scp.port, "WRONGNAME")
    assert _cli(tmp_path / "src", wrong) == 3
    assert "does not recognise the called AE title 'WRONGNAME'" in capsys.readouterr().err


def test_cli_no_decompress_flag_reaches_the_probe(tmp_path: Path, monkeypatch: Any,
                                                  capsys: Any) -> None:
    make_dicom(tmp_path / "src" / "rle.dcm", ts=RLE)
    monkeypatch.setattr(probe_mod, "ask_destination", lambda *a, **k: ({CT: {ELE}}, 1))
    assert _cli(tmp_path / "src", Destination("127.0.0.1", 104, "ANY"), "--no-decompress") == 1
    assert "decompression is turned off" in capsys.readouterr().out


# --- words -------------------------------------------------------------------------------------
def _group(action: str, files: int, ts: str = ELE, reason: str = "") -> ProbeGroup:
    return ProbeGroup(CT, "CT Image Storage", ts, str(UID(ts).name), files, action,
                      ELE if action in (AS_IS, DECOMPRESS) else "", "…", reason)


def test_summary_line() -> None:
    result = ProbeResult([_group(AS_IS, 1234), _group(DECOMPRESS, 56, JPEG),
                          _group(REFUSED, 3), _group(FAIL, 2, JPEG, no_fallback_reason(CT, JPEG))],
                         [("a", "Not a DICOM file."), ("b", "Not a DICOM file.")])
    assert summary_line(result) == (
        "1,234 files will be sent as they are, 56 after decompression, 7 cannot be sent: "
        "3 refused by the destination, 2 in a form the destination does not take, "
        "2 not DICOM or damaged.")
    assert summary_line(ProbeResult([_group(AS_IS, 1)])) == "1 file will be sent as it is."
    assert summary_line(ProbeResult()) == "No files were found to check."
    assert ProbeResult([_group(AS_IS, 3), _group(DECOMPRESS, 2, EBE)]).exit_code == 0


def test_problems_are_counted_per_reason() -> None:
    problems = [("/src/a/%d.txt" % i, "Not a DICOM file.") for i in range(5)]
    problems.append(("/src/b.dcm", "The DICOM header is damaged and cannot be read (x)."))
    text = format_problems(problems, "/src")
    assert text.splitlines() == [
        "6 files are not sent because they are not DICOM or are damaged:",
        "       5 × Not a DICOM file.",
        "           a/0.txt, a/1.txt, a/2.txt and 2 more",
        "       1 × The DICOM header is damaged and cannot be read (x).",
        "           b.dcm"]


def test_groups_unpack_as_the_wizard_table_expects() -> None:
    sop, ts, files, action, why = _group(REFUSED, 4)
    assert (sop, ts, files, action, why) == ("CT Image Storage", "Explicit VR Little Endian",
                                             4, REFUSED, "…")


def test_cancelled_before_asking(tmp_path: Path) -> None:
    make_dicom(tmp_path / "src" / "ct.dcm")
    control = Control()
    control.cancel()
    finished = probe(str(tmp_path / "src"), Destination("127.0.0.1", 104, "X"), Settings(),
                     control)
    assert finished.cancelled and finished.result.groups == []


# --- against a real PACS: the prediction is what the migration then does ---------------------
def _orthanc_mixed_folder(root: Path) -> Path:
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "image_dfl.dcm",
                 "JPEG2000.dcm", "ExplVR_BigEnd.dcm"):
        _testdata(name, root / "images")
    _pixelless(root / "reports" / "sr_labelled_jpeg.dcm")
    for i in range(2):  # a private SOP class Orthanc does not know (UnknownSopClassAccepted off)
        make_dicom(root / "private" / ("vendor%d.dcm" % i), sop_class="1.2.826.0.1.3680043.9.99.1")
    (root / "images" / "readme.txt").write_text("not an image\n")
    return root


@pytest.mark.network
@pytest.mark.parametrize("decompress", [True, False], ids=["decompress", "no-decompress"])
def test_probe_agrees_with_a_real_migration(tmp_path: Path, orthanc_factory: Any,
                                            decompress: bool) -> None:
    orthanc = orthanc_factory(AcceptedTransferSyntaxes=[ELE, ILE])
    source = _orthanc_mixed_folder(tmp_path / "src")
    dest = Destination("127.0.0.1", orthanc.dicom_port, orthanc.aet)
    settings = Settings(decompress=decompress)
    predicted = probe(str(source), dest, settings, Control()).result
    assert {g.action for g in predicted.groups} >= {AS_IS, DECOMPRESS, REFUSED}
    _, _, terminal = migrate(source, orthanc.dicom_port, orthanc.aet, tmp_path / "w",
                             decompress=decompress)
    problems = dict(predicted.problems)
    by_pair = {(g.sop_class, g.transfer_syntax): g for g in predicted.groups}
    for rec in records(tmp_path / "w"):
        if rec.path in problems:
            assert rec.status in ("skipped", "failed") and rec.message == problems[rec.path]
            continue
        group = by_pair[(rec.sop_class, rec.transfer_syntax)]
        if group.action in (REFUSED, FAIL):
            assert (rec.status, rec.message) == ("failed", group.reason), rec
        else:
            assert rec.status == "sent" and rec.sent_syntax == group.target_syntax, rec
            assert (rec.sent_syntax == rec.transfer_syntax) == (group.action == AS_IS), rec
    assert terminal.exit_code == predicted.exit_code == 1

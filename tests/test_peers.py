"""The test infrastructure itself: every peer fixture works, checked with DCMTK's own clients.

If these fail, every other network test's failure is noise: run them first.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
)

from tests import corpus
from tests.peers import (
    OrthancPeer,
    PeerStartError,
    QRSCPPeer,
    StoreSCPPeer,
    port_open,
    run_dcmtk,
)

network = pytest.mark.network


def storescu(port: int, aec: str, *files: Path, args: Optional[List[str]] = None
             ) -> "subprocess.CompletedProcess[str]":
    """Send files with DCMTK storescu (TCP_NODELAY=1 set by run_dcmtk)."""
    return run_dcmtk("storescu", *(args or []), "-aet", "PYTEST", "-aec", aec,
                     "127.0.0.1", str(port), *[str(f) for f in files])


def assert_ok(result: "subprocess.CompletedProcess[str]") -> None:
    assert result.returncode == 0, result.stdout


# --- helpers that need no peer ----------------------------------------------------------------
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                ExplicitVRBigEndian, RLELossless])
def test_make_dicom_round_trips(make_dicom: Callable[..., Path], ts: str) -> None:
    path = make_dicom("gen/a.dcm", ts=ts, PatientName="DOE^JANE")
    ds = pydicom.dcmread(str(path))
    assert ds.file_meta.TransferSyntaxUID == ts
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert str(ds.PatientName) == "DOE^JANE"
    expected = corpus.pixel_pattern(16, 16, str(ds.SOPInstanceUID))
    assert np.array_equal(ds.pixel_array, expected)


def test_make_dicom_overrides_uids_and_size(make_dicom: Callable[..., Path]) -> None:
    a = make_dicom("a.dcm", sop_class=MRImageStorage, SOPInstanceUID="1.2.3.4", Rows=8)
    b = make_dicom("b.dcm")
    ds = pydicom.dcmread(str(a))
    assert (ds.SOPInstanceUID, ds.Modality, ds.pixel_array.shape) == ("1.2.3.4", "MR", (8, 16))
    assert ds.file_meta.MediaStorageSOPClassUID == MRImageStorage
    assert pydicom.dcmread(str(b)).StudyInstanceUID != ds.StudyInstanceUID


def test_corpora_are_found_and_copied_unchanged(tmp_path: Path) -> None:
    bundled = corpus.pydicom_test_files()
    extra = corpus.pydicom_data_files()
    assert len(bundled) > 100 and len(extra) > 50
    copies = corpus.copy_corpus(tmp_path / "src", bundled + extra)
    assert len({p.name.lower() for p in copies}) == len(copies)  # unique names
    assert len({p.parent for p in copies}) > 1  # really nested
    digest = corpus.tree_digest(tmp_path / "src")
    assert len(digest) == len(copies)
    for src, dst in zip(bundled + extra, copies):
        assert digest[dst.relative_to(tmp_path / "src").as_posix()] == corpus.file_digest(src)


# --- Orthanc ---------------------------------------------------------------------------------
@network
def test_orthanc_receives_from_storescu(orthanc: OrthancPeer,
                                        make_dicom: Callable[..., Path]) -> None:
    assert orthanc.aet == "ORTHANC" and orthanc.url.startswith("http://127.0.0.1:")
    assert_ok(run_dcmtk("echoscu", "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port)))
    path = make_dicom("ct.dcm")
    sent = pydicom.dcmread(str(path))
    assert_ok(storescu(orthanc.dicom_port, orthanc.aet, path))

    assert orthanc.sop_instance_uids() == {sent.SOPInstanceUID}
    oid = orthanc.find_instance(sent.SOPInstanceUID)
    assert oid is not None and orthanc.instances() == [oid]
    assert orthanc.find_instance("1.2.3.999") is None
    assert orthanc.transfer_syntax(oid) == ExplicitVRLittleEndian
    assert orthanc.instance_tags(oid)["PatientID"] == "PID0001"
    got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(orthanc.instance_file(oid)))
    assert np.array_equal(got.pixel_array, sent.pixel_array)
    assert orthanc.statistics()["CountInstances"] == 1

    orthanc.delete_instance(oid)
    assert orthanc.instances() == []


@network
def test_orthanc_keeps_the_first_copy_of_a_resent_uid(orthanc: OrthancPeer,
                                                      make_dicom: Callable[..., Path]) -> None:
    # Orthanc's id hashes Patient ID + Study/Series/SOP UIDs: keep all four the same.
    same = dict(SOPInstanceUID="1.2.826.0.1.3680043.10.99.1",
                StudyInstanceUID="1.2.826.0.1.3680043.10.99.2",
                SeriesInstanceUID="1.2.826.0.1.3680043.10.99.3")
    first = make_dicom("first.dcm", PatientName="FIRST", **same)
    second = make_dicom("second.dcm", PatientName="SECOND", **same)
    assert_ok(storescu(orthanc.dicom_port, orthanc.aet, first))
    assert_ok(storescu(orthanc.dicom_port, orthanc.aet, second))  # success status, not stored
    (oid,) = orthanc.instances()
    assert orthanc.instance_tags(oid)["PatientName"] == "FIRST"


@network
def test_orthanc_accepted_transfer_syntaxes(orthanc_factory: Callable[..., OrthancPeer],
                                            make_dicom: Callable[..., Path]) -> None:
    implicit_only = orthanc_factory(AcceptedTransferSyntaxes=[ImplicitVRLittleEndian])
    explicit = make_dicom("explicit.dcm")
    rle = make_dicom("rle.dcm", ts=RLELossless)

    # storescu re-encodes uncompressed data to the one accepted syntax...
    assert_ok(storescu(implicit_only.dicom_port, "ORTHANC", explicit, args=["-xe"]))
    (oid,) = implicit_only.instances()
    assert implicit_only.transfer_syntax(oid) == ImplicitVRLittleEndian
    # ...but cannot decode RLE, and Orthanc refuses the RLE context: nothing arrives.
    refused = storescu(implicit_only.dicom_port, "ORTHANC", rle, args=["-xr"])
    assert refused.returncode != 0
    assert implicit_only.instances() == [oid]

    # The default config accepts the compressed syntax as it is (-xr: propose RLE first).
    default = orthanc_factory()
    assert_ok(storescu(default.dicom_port, "ORTHANC", rle, args=["-xr"]))
    (rle_id,) = default.instances()
    assert default.transfer_syntax(rle_id) == RLELossless


@network
def test_orthanc_module_fixture_is_shared(orthanc_module: OrthancPeer,
                                          make_dicom: Callable[..., Path]) -> None:
    orthanc_module.clear()
    assert_ok(storescu(orthanc_module.dicom_port, "ORTHANC", make_dicom("m.dcm")))
    assert orthanc_module.statistics()["CountInstances"] == 1
    orthanc_module.clear()
    assert orthanc_module.instances() == []


@network
def test_orthanc_restart_keeps_ports_and_storage(orthanc: OrthancPeer,
                                                 make_dicom: Callable[..., Path]) -> None:
    assert_ok(storescu(orthanc.dicom_port, "ORTHANC", make_dicom("r.dcm")))
    ports = (orthanc.dicom_port, orthanc.http_port)
    orthanc.stop()
    assert not orthanc.alive and not port_open("127.0.0.1", orthanc.dicom_port)
    orthanc.start()
    assert (orthanc.dicom_port, orthanc.http_port) == ports
    assert len(orthanc.instances()) == 1


# --- DCMTK storescp --------------------------------------------------------------------------
@network
def test_storescp_writes_received_files(storescp_factory: Callable[..., StoreSCPPeer],
                                        make_dicom: Callable[..., Path],
                                        tmp_path: Path) -> None:
    scp = storescp_factory(out_dir=tmp_path / "rx")
    assert scp.aet == "STORESCP" and scp.out_dir == tmp_path / "rx"
    files = [make_dicom("in/%d.dcm" % i) for i in range(3)]
    assert_ok(storescu(scp.port, scp.aet, *files))
    received = scp.received_files()
    assert len(received) == 3 and all(p.name.startswith("CT.") for p in received)
    sent_uids = {pydicom.dcmread(str(f)).SOPInstanceUID for f in files}
    assert {pydicom.dcmread(str(p)).SOPInstanceUID for p in received} == sent_uids


@network
def test_storescp_extra_args_and_ignore(storescp_factory: Callable[..., StoreSCPPeer],
                                        make_dicom: Callable[..., Path],
                                        tmp_path: Path) -> None:
    implicit = storescp_factory("+xi", out_dir=tmp_path / "implicit")
    assert_ok(storescu(implicit.port, "STORESCP", make_dicom("x.dcm")))
    (got,) = implicit.received_files()
    assert pydicom.dcmread(str(got)).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian

    ignoring = storescp_factory()
    assert_ok(storescu(ignoring.port, "STORESCP", make_dicom("y.dcm")))
    assert ignoring.received_files() == [] and ignoring.out_dir is None


@network
def test_peer_that_cannot_start_reports_its_log(storescp_factory: Callable[..., StoreSCPPeer]
                                                ) -> None:
    with pytest.raises(PeerStartError, match="--no-such-option"):
        storescp_factory("--no-such-option")


@network
def test_stop_waits_for_exit(storescp: StoreSCPPeer) -> None:
    assert storescp.alive
    storescp.stop()
    assert not storescp.alive and storescp.process is not None
    assert storescp.process.returncode is not None


# --- DCMTK dcmqrscp --------------------------------------------------------------------------
@network
def test_dcmqrscp_stores_and_answers_study_find(dcmqrscp_factory: Callable[..., QRSCPPeer],
                                                make_dicom: Callable[..., Path],
                                                tmp_path: Path) -> None:
    qr = dcmqrscp_factory()
    assert qr.aet == "QRSCP"
    a = make_dicom("a.dcm", PatientID="PAT-A")
    b = make_dicom("b.dcm", PatientID="PAT-B")
    assert_ok(storescu(qr.port, qr.aet, a, b))
    assert len(qr.stored_files()) == 2

    out = tmp_path / "find"
    out.mkdir()
    result = run_dcmtk("findscu", "-S", "-aet", "PYTEST", "-aec", qr.aet, "-X", "-od", str(out),
                       "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=PAT-A",
                       "-k", "StudyInstanceUID", "127.0.0.1", str(qr.port))
    assert_ok(result)
    answers = [pydicom.dcmread(str(p)) for p in sorted(out.glob("rsp*.dcm"))]
    assert [ds.StudyInstanceUID for ds in answers] == [pydicom.dcmread(str(a)).StudyInstanceUID]


@network
def test_peer_start_is_fast(orthanc: OrthancPeer, storescp: StoreSCPPeer) -> None:
    # Guards the suite's overhead: every network test pays these start-up times.
    print("startup: orthanc %.3f s, storescp %.3f s"
          % (orthanc.startup_seconds, storescp.startup_seconds))
    assert orthanc.startup_seconds < 10 and storescp.startup_seconds < 5

"""The whole pydicom corpus into a real Orthanc and a real DCMTK storescp."""
from __future__ import annotations

import os

import pytest
from pydicom import dcmread

from engine.headers import InstanceHeader, read_header
from tests.corpus import copy_corpus, pydicom_data_files, pydicom_test_files, tree_digest
from tests.engine.helpers import migrate, records

pytestmark = [pytest.mark.network, pytest.mark.slow]
DONE = ("sent", "sent_with_warning")


@pytest.fixture(scope="module")
def corpus_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    copy_corpus(root, pydicom_test_files() + pydicom_data_files())
    return root


def _dataset_bytes(data: bytes) -> bytes:
    """The bytes after the file meta group (the data set itself)."""
    import io
    from engine.headers import _dataset_start
    start, _ = _dataset_start(io.BytesIO(data), data[128:132] == b"DICM")
    return data[start:]


def test_whole_corpus_into_orthanc(corpus_tree, orthanc_factory, tmp_path):
    orthanc = orthanc_factory(UnknownSopClassAccepted=True)
    before = tree_digest(corpus_tree)
    result, events, terminal = migrate(corpus_tree, orthanc.dicom_port, orthanc.aet,
                                       tmp_path / "work")
    assert tree_digest(corpus_tree) == before  # the source is byte-for-byte unchanged
    assert result.integrity is not None and result.integrity.ok
    assert not os.listdir(corpus_tree) == []  # nothing hidden created either
    rows = records(tmp_path / "work")
    assert len(rows) == len(before)  # every file has exactly one manifest row
    for rec in rows:
        assert rec.status in DONE + ("skipped", "failed")
        if rec.status not in DONE:
            assert len(rec.message) > 15, rec
    expected = {r.sop_instance_uid for r in rows if r.status in DONE}
    assert orthanc.sop_instance_uids() == expected
    assert terminal.exit_code == 1  # the corpus holds non-DICOM and broken files on purpose
    sent = sum(1 for r in rows if r.status in DONE)
    assert sent > 150, "most of the corpus must arrive"


def test_uncompressed_bytes_arrive_unchanged(tmp_path, orthanc):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = [p for p in pydicom_test_files() if p.name == "CT_small.dcm"][0]
    target = src_dir / "CT_small.dcm"
    target.write_bytes(src.read_bytes())
    result, _, terminal = migrate(src_dir, orthanc.dicom_port, orthanc.aet, tmp_path / "w")
    assert terminal.exit_code == 0, result
    (oid,) = orthanc.instances()
    stored = orthanc.instance_file(oid)
    assert _dataset_bytes(stored) == _dataset_bytes(target.read_bytes())


def test_whole_corpus_into_storescp(corpus_tree, storescp_factory, tmp_path):
    out = tmp_path / "received"
    scp = storescp_factory("--bit-preserving", out_dir=out)  # store exactly what arrived
    before = tree_digest(corpus_tree)
    result, _, _ = migrate(corpus_tree, scp.port, scp.aet, tmp_path / "work")
    assert tree_digest(corpus_tree) == before
    rows = records(tmp_path / "work")
    assert len(rows) == len(before)
    received = set()
    for path in scp.received_files():
        received.add(str(dcmread(str(path), stop_before_pixels=True).SOPInstanceUID))
    assert received == {r.sop_instance_uid for r in rows if r.status in DONE}
    # streamed files arrive with their data set bytes untouched
    from collections import Counter
    uid_count = Counter(r.sop_instance_uid for r in rows if r.status in DONE)
    compared = 0
    for rec in rows:
        if (rec.status == "sent" and rec.transfer_syntax == rec.sent_syntax
                and uid_count[rec.sop_instance_uid] == 1):
            h = read_header(rec.path)
            if isinstance(h, InstanceHeader) and h.streamable and rec.bytes < 2_000_000:
                match = [p for p in scp.received_files() if rec.sop_instance_uid in p.name]
                if len(match) == 1 and not rec.message:
                    compared += 1
                    assert _dataset_bytes(match[0].read_bytes()) == \
                        _dataset_bytes(open(rec.path, "rb").read()), rec.path
    # pydicom's dicomdirtests hold 50 CT stubs without Pixel Data: they fail as cut off
    assert compared > 30

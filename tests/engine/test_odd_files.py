"""Files that break the rules in ways pydicom forgives but a strict receiver does not: extra
bytes after the last element, a value of odd length, elements out of order, deep nesting.
Each one reaches DCMTK storescp (which aborts the association on an odd-length message) with
its data intact, and the manifest says what was odd about it."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Dict

import pytest
from pydicom import dcmread

from engine.headers import EXTRA_BYTES_REASON, ODD_LENGTH_REASON, InstanceHeader, read_header
from tests import corpus
from tests.engine.helpers import by_name, migrate
from tests.peers import StoreSCPPeer

pytestmark = pytest.mark.network
IMPLICIT = "1.2.840.10008.1.2"


def _uid(path: Path) -> str:
    return str(dcmread(str(path), stop_before_pixels=True).SOPInstanceUID)


def _implicit_odd_name(path: Path) -> Path:
    """PatientName of 9 bytes with no padding byte: the data set's length is odd."""
    corpus.make_dicom(path, ts=IMPLICIT, PatientName="ODD^NAMEX")
    data = path.read_bytes()
    even = b"\x10\x00\x10\x00\x0a\x00\x00\x00ODD^NAMEX "
    assert data.count(even) == 1
    path.write_bytes(data.replace(even, b"\x10\x00\x10\x00\x09\x00\x00\x00ODD^NAMEX"))
    return path


def _out_of_order(path: Path) -> Path:
    """SOP Instance UID moved to just before Pixel Data (pydicom reads it wherever it is)."""
    corpus.make_dicom(path)
    data = path.read_bytes()
    uid = _uid(path).encode()
    uid += b"\0" * (len(uid) % 2)
    element = b"\x08\x00\x18\x00UI" + struct.pack("<H", len(uid)) + uid
    assert data.count(element) == 1
    data = data.replace(element, b"")
    pixels = data.rindex(b"\xe0\x7f\x10\x00")
    path.write_bytes(data[:pixels] + element + data[pixels:])
    return path


def _nested(path: Path, depth: int) -> Path:
    """Undefined-length sequences nested ``depth`` deep, before the pixel data."""
    corpus.make_dicom(path)
    blob = b"\x08\x00\x00\x01SH\x04\x00CODE"
    for _ in range(depth):
        blob = (b"\x40\x00\x60\x02SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
                + blob + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    data = path.read_bytes()
    pixels = data.rindex(b"\xe0\x7f\x10\x00")
    path.write_bytes(data[:pixels] + blob + data[pixels:])
    return path


def _with_tail(path: Path, tail: bytes) -> Path:
    corpus.make_dicom(path)
    path.write_bytes(path.read_bytes() + tail)
    return path


@pytest.fixture(params=["fast", "pydicom"])
def header_of(request, monkeypatch) -> Callable[[Path], object]:
    from engine import headers
    if request.param == "pydicom":
        monkeypatch.setattr(headers, "_fast_read", lambda *args: None)
    return lambda path: read_header(str(path))


@pytest.mark.parametrize("tail", [b"\0", b"\0" * 3, b"\0" * 6, b"\0" * 9, b"\0" * 1000, b"xyz"],
                         ids=["1-zero", "3-zeros", "6-zeros", "9-zeros", "1000-zeros", "junk"])
def test_bytes_after_the_last_element_are_not_sent(tmp_path, header_of, tail):
    path = _with_tail(tmp_path / "f.dcm", tail)
    h = header_of(path)
    assert isinstance(h, InstanceHeader), h
    assert h.dataset_end == path.stat().st_size - len(tail) and not h.odd_length
    assert h.warning == EXTRA_BYTES_REASON % len(tail)


def test_value_of_odd_length_is_flagged(tmp_path, header_of):
    h = header_of(_implicit_odd_name(tmp_path / "odd.dcm"))
    assert isinstance(h, InstanceHeader) and h.odd_length and h.warning == ODD_LENGTH_REASON, h
    assert h.patient_name == "ODD^NAMEX" and h.dataset_end == 0


def test_uid_stored_out_of_order_is_found(tmp_path, header_of):
    path = _out_of_order(tmp_path / "late.dcm")
    h = header_of(path)
    assert isinstance(h, InstanceHeader) and not h.warning, h
    assert h.sop_instance_uid == _uid(path)


@pytest.mark.parametrize("depth, ok", [(40, True), (70, False)])
def test_deep_nesting(tmp_path, header_of, depth, ok):
    h = header_of(_nested(tmp_path / "deep.dcm", depth))
    if ok:
        assert isinstance(h, InstanceHeader) and not h.warning, h
    else:
        assert not isinstance(h, InstanceHeader) and "nested more than 64" in h.reason
        assert "truncated" not in h.reason


def test_cut_deflated_file_is_truncated(tmp_path, header_of):
    whole = corpus.make_dicom(tmp_path / "whole.dcm", ts="1.2.840.10008.1.2.1.99")
    assert isinstance(header_of(whole), InstanceHeader)
    data = whole.read_bytes()
    for cut in (len(data) - 5, len(data) // 2):
        path = tmp_path / ("cut%d.dcm" % cut)
        path.write_bytes(data[:cut])
        h = header_of(path)
        assert not isinstance(h, InstanceHeader) and "truncated" in h.reason, (cut, h)


@pytest.mark.parametrize("associations, through_pynetdicom", [(1, False), (2, False), (1, True)],
                         ids=["1", "2", "pynetdicom-fallback"])
def test_odd_files_reach_dcmtk_intact(tmp_path: Path,
                                      storescp_factory: Callable[..., StoreSCPPeer],
                                      monkeypatch: pytest.MonkeyPatch, associations: int,
                                      through_pynetdicom: bool) -> None:
    if through_pynetdicom:  # the slower path used when an association cannot be taken over
        from engine import compat

        def refuse(assoc):
            raise RuntimeError("not here")
        monkeypatch.setattr(compat, "detach_association", refuse)
    src = tmp_path / "src"
    src.mkdir()
    made: Dict[str, Path] = {
        "pad1.dcm": _with_tail(src / "pad1.dcm", b"\0"),
        "pad9.dcm": _with_tail(src / "pad9.dcm", b"\0" * 9),
        "junk.dcm": _with_tail(src / "junk.dcm", b"xyz"),
        "odd.dcm": _implicit_odd_name(src / "odd.dcm"),
        "late.dcm": _out_of_order(src / "late.dcm"),
        "deep.dcm": _nested(src / "deep.dcm", 40),
        "plain.dcm": corpus.make_dicom(src / "plain.dcm"),
    }
    before = corpus.tree_digest(src)
    peer = storescp_factory(out_dir=tmp_path / "got")
    result, _, terminal = migrate(src, peer.port, peer.aet, tmp_path / "w",
                                  associations=associations)
    rows = by_name(tmp_path / "w")
    assert terminal.exit_code == 0, (rows, peer.log_tail())
    assert corpus.tree_digest(src) == before
    got = {str(dcmread(str(p)).SOPInstanceUID): p for p in peer.received_files()}
    assert set(got) == {_uid(p) for p in made.values()}
    for name, path in made.items():
        sent = dcmread(str(got[_uid(path)]))
        original = dcmread(str(path))
        # pydicom reads 8 of the 9 zero bytes as an element (0000,0000): padding, not sent
        kept = [elem for elem in original if elem.tag.group != 0]
        for elem in kept:  # every value arrived (a padded value reads back the same)
            assert sent[elem.tag].value == elem.value, (name, elem.tag)
        assert len(sent) == len(kept), name
    assert rows["plain.dcm"].status == rows["late.dcm"].status == rows["deep.dcm"].status == "sent"
    assert rows["pad1.dcm"].message == EXTRA_BYTES_REASON % 1
    assert rows["junk.dcm"].message == EXTRA_BYTES_REASON % 3
    assert rows["odd.dcm"].message == ODD_LENGTH_REASON
    assert {rows[n].status for n in ("pad1.dcm", "pad9.dcm", "junk.dcm", "odd.dcm")} == {
        "sent_with_warning"}
    assert "sent_with_warning" in result.counts and result.counts["sent"] == 3

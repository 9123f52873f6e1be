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
    return str(dcmread(str(path), stop_before_pixels=True, force=True).SOPInstanceUID)


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


def _element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, elem, len(value)) + value
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH", group, elem) + vr + b"\0\0" + struct.pack("<I", len(value)) \
            + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def _before_pixels(path: Path, implicit: bool, blob: bytes) -> Path:
    corpus.make_dicom(path, ts=IMPLICIT if implicit else "1.2.840.10008.1.2.1")
    data = path.read_bytes()
    pixels = data.rindex(b"\xe0\x7f\x10\x00")
    path.write_bytes(data[:pixels] + blob + data[pixels:])
    return path


def _odd_in_sequence(path: Path, implicit: bool) -> Path:
    """A 3-byte LO inside an item of a defined-length sequence: both lengths change."""
    inner = _element(0x00400007, b"LO", b"abc", implicit)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
    return _before_pixels(path, implicit, _element(0x00400275, b"SQ", item, implicit))


def _odd_private(path: Path, implicit: bool) -> Path:
    vr = b"UN" if not implicit else b""
    return _before_pixels(path, implicit, _element(0x00710010, b"LO", b"ACME", implicit)
                          + _element(0x00711001, vr, b"\x01\x02\x03\x04\x05", implicit))


def _odd_fragment(path: Path) -> Path:
    """RLE pixel data whose last fragment has an odd length (a byte the decoder ignores)."""
    corpus.make_dicom(path, ts="1.2.840.10008.1.2.5")
    data = path.read_bytes()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    at = data.rindex(b"\xfe\xff\x00\xe0")
    length = struct.unpack_from("<I", data, at + 4)[0]
    end = at + 8 + length
    path.write_bytes(data[:at + 4] + struct.pack("<I", length + 1) + data[at + 8:end] + b"\x07"
                     + data[end:])
    return path


def _without_meta(path: Path) -> Path:
    """An old-style file (no preamble, no file meta): never streamed, so it is re-encoded."""
    h = read_header(str(path))
    assert isinstance(h, InstanceHeader)
    path.write_bytes(path.read_bytes()[h.dataset_offset:])
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


@pytest.mark.parametrize("tail", [b"\0", b"\0" * 3, b"\0" * 6, b"\0" * 9, b"\0" * 1000, b"xyz",
                                  b"\0" * 16 + b"\x01\x02", b"\0" * 8 + b"ABCDEFG"],
                         ids=["1-zero", "3-zeros", "6-zeros", "9-zeros", "1000-zeros", "junk",
                              "zeros-then-junk", "8-zeros-then-7-junk"])
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


def test_every_kind_of_odd_value_reaches_dcmtk(tmp_path: Path,
                                               storescp_factory: Callable[..., StoreSCPPeer]
                                               ) -> None:
    """Odd values in sequences, private and UN values, an odd compressed fragment, and bytes
    after the last element that look like elements: storescp (which aborts on an odd-length
    message) stores each file, with every original value, padded where it was odd."""
    src = tmp_path / "src"
    src.mkdir()
    made = {
        "seq-implicit": _odd_in_sequence(src / "seq-implicit.dcm", True),
        "seq-explicit": _odd_in_sequence(src / "seq-explicit.dcm", False),
        "private-implicit": _odd_private(src / "private-implicit.dcm", True),
        "un-explicit": _odd_private(src / "un-explicit.dcm", False),
        "rle-fragment": _odd_fragment(src / "rle-fragment.dcm"),
        "odd-and-zeros": _with_tail(_implicit_odd_name(src / "odd-and-zeros.dcm"), b"\0" * 16),
        "zeros-and-junk": _with_tail(src / "zeros-and-junk.dcm", b"\0" * 16 + b"\x01\x02"),
        # never streamed but re-encoded, where pydicom writes a private value as it is
        "odd-without-meta": _without_meta(_odd_private(src / "odd-without-meta.dcm", False)),
    }
    for name, path in made.items():
        h = read_header(str(path))
        assert isinstance(h, InstanceHeader) and h.warning, (name, h)
    before = corpus.tree_digest(src)
    peer = storescp_factory("+xa", out_dir=tmp_path / "got")  # RLE accepted: sent as it is
    result, _, terminal = migrate(src, peer.port, peer.aet, tmp_path / "w", retries=0)
    rows = by_name(tmp_path / "w")
    assert terminal.exit_code == 0, ({n: r.message for n, r in rows.items()}, peer.log_tail())
    assert {r.status for r in rows.values()} == {"sent_with_warning"}
    assert corpus.tree_digest(src) == before
    got = {str(dcmread(str(p)).SOPInstanceUID): p for p in peer.received_files()}
    for name, path in made.items():
        original, sent = dcmread(str(path), force=True), dcmread(str(got[_uid(path)]))
        for elem in original:
            if elem.tag.group == 0:
                continue  # the zero bytes after the last element, not sent
            mine = sent[elem.tag].value
            if elem.VR == "SQ":
                assert [i[0x00400007].value for i in mine] == ["abc"], name
            elif mine != elem.value:  # only a padding byte may differ
                if elem.tag == 0x7FE00010:
                    assert len(mine) == len(elem.value) + 1, name  # the fragment's pad byte
                else:
                    assert mine == elem.value + b"\0", (name, elem.tag)
    assert "(0000,0000)" not in peer.log_tail(200)

"""Header reading: every kind of file gets the right verdict and a specific reason."""
from __future__ import annotations

import os
import struct

import pytest

from engine.events import Outcome
from engine.headers import HeaderProblem, InstanceHeader, read_header
from tests.corpus import make_dicom, pydicom_test_files_dir


def test_good_file(tmp_path):
    path = make_dicom(tmp_path / "ct.dcm", PatientName="DOE^JANE")
    h = read_header(str(path))
    assert isinstance(h, InstanceHeader)
    assert h.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert h.transfer_syntax == "1.2.840.10008.1.2.1"
    assert h.has_meta and h.streamable
    assert h.patient_name == "DOE^JANE"


def test_zero_length_file_is_skipped(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    h = read_header(str(path))
    assert isinstance(h, HeaderProblem) and h.outcome is Outcome.SKIPPED
    assert "Empty file" in h.reason


def test_text_file_is_not_dicom(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Patient list\nDOE^JANE 1970\n" * 20)
    h = read_header(str(path))
    assert isinstance(h, HeaderProblem) and h.outcome is Outcome.SKIPPED
    assert h.reason == "Not a DICOM file."


def test_dicomdir_is_skipped():
    path = pydicom_test_files_dir() / "dicomdirtests" / "DICOMDIR"
    h = read_header(str(path))
    assert isinstance(h, HeaderProblem) and h.outcome is Outcome.SKIPPED
    assert "DICOMDIR" in h.reason


def test_truncated_pixel_data_fails(tmp_path):
    path = make_dicom(tmp_path / "ct.dcm", Rows=64, Columns=64)
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-1000])
    h = read_header(str(cut))
    assert isinstance(h, HeaderProblem) and h.outcome is Outcome.FAILED
    assert "truncated" in h.reason and "1000 bytes are missing" in h.reason


def test_truncated_encapsulated_fails(tmp_path):
    src = pydicom_test_files_dir() / "MR_small_RLE.dcm"
    data = src.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 300])
    h = read_header(str(cut))
    assert isinstance(h, HeaderProblem) and h.outcome is Outcome.FAILED
    assert "truncated" in h.reason


@pytest.mark.parametrize("implicit", [True, False])
def test_file_without_meta_is_still_sendable(tmp_path, implicit):
    from pydicom import dcmread
    from engine import compat
    ds = dcmread(str(make_dicom(tmp_path / "src.dcm")))
    raw = tmp_path / "raw.dcm"  # an old-style file: no preamble, no file meta
    raw.write_bytes(compat.dataset_to_bytes(ds, implicit, True))
    h = read_header(str(raw))
    assert isinstance(h, InstanceHeader), h
    assert not h.has_meta and not h.streamable
    assert h.transfer_syntax == ("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1")


def test_missing_sop_uids_fail_with_reason(tmp_path):
    path = make_dicom(tmp_path / "x.dcm")
    from pydicom import dcmread
    ds = dcmread(str(path))
    del ds.SOPInstanceUID
    from tests.corpus import save_dataset
    save_dataset(ds, tmp_path / "nouid.dcm")
    h = read_header(str(tmp_path / "nouid.dcm"))
    assert isinstance(h, HeaderProblem) and h.outcome is Outcome.FAILED
    assert "SOP Instance UID" in h.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read everything")
def test_unreadable_file_fails(tmp_path):
    path = make_dicom(tmp_path / "ct.dcm")
    path.chmod(0)
    h = read_header(str(path))
    assert isinstance(h, HeaderProblem) and "Permission denied" in h.reason


def test_every_corpus_file_gets_a_verdict():
    for path in sorted(pydicom_test_files_dir().rglob("*")):
        if path.is_file():
            h = read_header(str(path))
            if isinstance(h, HeaderProblem):
                assert h.reason and len(h.reason) > 10, path
            else:
                assert h.sop_instance_uid and h.sop_class_uid, path


def test_latin1_patient_name_is_decoded(tmp_path):
    path = make_dicom(tmp_path / "n.dcm", PatientName="Müller^Zoë")
    h = read_header(str(path))
    assert isinstance(h, InstanceHeader) and h.patient_name == "Müller^Zoë"


def test_reading_does_not_touch_the_file(tmp_path):
    path = make_dicom(tmp_path / "ct.dcm")
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    read_header(str(path))
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


def test_in_memory_truncation_walk_agrees_with_the_file_walk():
    """The fast header path walks a small file in memory; it must reach the same verdict, in
    the same words, as the seek-and-read walk for every way a real file can be cut short."""
    import io

    from engine.structure import walk_buffer, walk_structure

    checked = 0
    for path in sorted(pydicom_test_files_dir().glob("*.dcm")):
        data = path.read_bytes()
        if data[128:132] != b"DICM" or len(data) > 200_000:
            continue
        ts = data[132:4096]
        if b"1.2.840.10008.1.2.2" in ts or b"1.2.840.10008.1.2.1.99" in ts:
            continue  # big endian and deflated files never take the fast path
        start = 132
        while data[start:start + 2] == b"\x02\x00":  # past the file meta group
            start += 12 + int.from_bytes(data[start + 8:start + 12], "little") \
                if data[start + 4:start + 6] in (b"OB", b"UN", b"SQ", b"UT") \
                else 8 + int.from_bytes(data[start + 6:start + 8], "little")
        cuts = sorted({len(data)} | set(range(start, len(data), max(1, len(data) // 40)))
                      | {len(data) - k for k in (1, 2, 7, 8, 9, 100) if len(data) - k > start})
        for cut in cuts:
            buf = data[:cut]
            size = len(data) if cut % 2 else cut  # the listed size, or the file shrank since
            expected = walk_structure(io.BytesIO(buf), start, size, True)
            assert walk_buffer(buf, start, size) == expected, (path.name, cut, size)
            checked += 1
    assert checked > 500


# -- a file cut exactly between two elements -------------------------------------------------
# The walk above only sees a cut inside an element. Cut at an element boundary, an image simply
# has no Pixel Data; every way of reading a header must flag it (sent with a warning: header-only
# images also exist on purpose), and only images.
@pytest.fixture(params=["whole", "streamed", "pydicom"])
def read_path(request, monkeypatch):
    """read_header on the small-file fast path (file read whole), the large-file fast path
    (head read, rest walked element by element) or the pydicom path."""
    from engine import headers
    if request.param == "streamed":
        monkeypatch.setattr(headers, "_WHOLE_FILE", 0)
    elif request.param == "pydicom":
        monkeypatch.setattr(headers, "_fast_read", lambda *args: None)
    return lambda path: read_header(str(path))


def _ct_small() -> bytes:
    return (pydicom_test_files_dir() / "CT_small.dcm").read_bytes()


def _before_pixel_data(data: bytes, little: bool = True) -> int:
    """Offset of the last (top-level) Pixel Data element in an explicit VR file."""
    return data.rindex(b"\xe0\x7f\x10\x00OW" if little else b"\x7f\xe0\x00\x10OW")


@pytest.mark.parametrize("cut, tag", [(694, b"\x08\x00\x80\x00"), (720, b"\x08\x00\x90\x00"),
                                      (3004, b"\x27\x00\x40\x10"), (6288, b"\xe0\x7f\x10\x00")],
                         ids=["694", "720", "3004", "6288-before-pixel-data"])
def test_image_cut_between_elements_is_flagged(tmp_path, read_path, cut, tag):
    from engine.headers import NO_PIXELS_REASON
    data = _ct_small()
    assert data[cut:cut + 4] == tag  # the cut falls exactly before this element
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:cut])
    h = read_path(path)
    assert isinstance(h, InstanceHeader), h
    assert h.warning == NO_PIXELS_REASON and "cut off" in h.warning
    assert h.sop_instance_uid == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"


@pytest.mark.parametrize("cut", [705, 3003])
def test_image_cut_inside_an_element_fails(tmp_path, read_path, cut):
    path = tmp_path / "cut.dcm"
    path.write_bytes(_ct_small()[:cut])
    h = read_path(path)
    assert isinstance(h, HeaderProblem) and h.outcome is Outcome.FAILED, h
    assert "truncated" in h.reason


def test_image_cut_inside_an_element_header_is_flagged(tmp_path, read_path):
    """Fewer than 8 bytes cannot be an element: the data set ends before them, the file is
    sent without them and flagged (here also as an image without pixels)."""
    from engine.headers import EXTRA_BYTES_REASON, NO_PIXELS_REASON
    path = tmp_path / "cut.dcm"
    path.write_bytes(_ct_small()[:700])  # 6 bytes into the element at 694
    h = read_path(path)
    assert isinstance(h, InstanceHeader), h
    assert h.dataset_end == 694 and not h.odd_length
    assert h.warning == NO_PIXELS_REASON + " " + EXTRA_BYTES_REASON % 6


def test_complete_image_is_accepted(tmp_path, read_path):
    h = read_path(pydicom_test_files_dir() / "CT_small.dcm")
    assert isinstance(h, InstanceHeader) and not h.warning, h
    assert h.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"


def test_icon_pixels_in_a_sequence_are_not_the_image(tmp_path, read_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    icon = Dataset()
    icon.Rows, icon.Columns, icon.BitsAllocated = 2, 2, 8
    icon.PixelData = b"\x01\x02\x03\x04"
    icon["PixelData"].VR = "OB"
    path = make_dicom(tmp_path / "ct.dcm", IconImageSequence=Sequence([icon]))
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:_before_pixel_data(data)])
    assert data.count(b"\xe0\x7f\x10\x00") == 2
    h = read_path(cut)
    assert isinstance(h, InstanceHeader) and "no pixel data" in h.warning, h


def test_big_endian_image_cut_before_pixel_data_is_flagged(tmp_path):
    path = make_dicom(tmp_path / "be.dcm", ts="1.2.840.10008.1.2.2")
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:_before_pixel_data(data, little=False)])
    assert isinstance(read_header(str(path)), InstanceHeader)
    h = read_header(str(cut))
    assert isinstance(h, InstanceHeader) and "no pixel data" in h.warning, h


def _encapsulated_pdf(path):
    return make_dicom(path, sop_class="1.2.840.10008.5.1.4.1.1.104.1", with_pixels=False,
                      Modality="DOC", MIMETypeOfEncapsulatedDocument="application/pdf",
                      EncapsulatedDocument=b"%PDF-1.4\n%%EOF\n")


def _float_pixel_image(path):
    import numpy as np
    return make_dicom(path, with_pixels=False, SamplesPerPixel=1, Rows=2, Columns=2,
                      PhotometricInterpretation="MONOCHROME2", BitsAllocated=32,
                      FloatPixelData=np.arange(4, dtype="<f4").tobytes())


def _jpip_reference(path):
    from pydicom import dcmread
    from tests.corpus import save_dataset
    ds = dcmread(str(make_dicom(path, with_pixels=False,
                                PixelDataProviderURL="http://jpip.example/ct1")))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"  # JPIP Referenced
    save_dataset(ds, path)
    return path


@pytest.mark.parametrize("make", [
    lambda tmp: pydicom_test_files_dir() / "test-SR.dcm",        # Basic/Enhanced SR
    lambda tmp: _encapsulated_pdf(tmp / "doc.dcm"),
    lambda tmp: _float_pixel_image(tmp / "float.dcm"),           # Float Pixel Data is pixels
    lambda tmp: _jpip_reference(tmp / "jpip.dcm"),                # pixels held by a JPIP server
], ids=["sr", "pdf", "float-pixels", "jpip"])
def test_objects_without_pixel_data_element_are_accepted(tmp_path, read_path, make):
    path = make(tmp_path)
    data = path.read_bytes()
    assert b"\xe0\x7f\x10\x00" not in data[data.index(b"DICM"):]
    h = read_path(path)
    assert isinstance(h, InstanceHeader) and not h.warning, h


def test_image_without_pixels_is_sent_with_the_warning(tmp_path):
    """End to end: the cut image reaches the destination and the manifest says why to look."""
    from pynetdicom import AE, StoragePresentationContexts, evt
    from engine.headers import NO_PIXELS_REASON
    from tests.engine.helpers import migrate, records
    from tests.peers import free_port
    src = tmp_path / "src"
    src.mkdir()
    (src / "cut.dcm").write_bytes(_ct_small()[:3004])
    (src / "whole.dcm").write_bytes(_ct_small().replace(b"20040119072730.12322",
                                                        b"20040119072730.12399"))
    stored = []
    ae = AE(ae_title="ANY")
    ae.supported_contexts = StoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda e: stored.append(e.request.AffectedSOPInstanceUID) or 0)])
    try:
        _, _, terminal = migrate(src, port, "ANY", tmp_path / "w")
    finally:
        server.shutdown()
    assert terminal.exit_code == 0 and len(stored) == 2
    rows = {r.path.rsplit("/", 1)[-1]: r for r in records(tmp_path / "w")}
    assert rows["cut.dcm"].status == "sent_with_warning"
    assert rows["cut.dcm"].message == NO_PIXELS_REASON
    assert (rows["whole.dcm"].status, rows["whole.dcm"].message) == ("sent", "")



def test_fast_header_path_agrees_with_pydicom_at_every_cut(tmp_path, monkeypatch):
    """The fast path picks values and verdicts straight out of the bytes; for every file it
    takes, cut anywhere, it must say exactly what the pydicom path says (or step aside)."""
    from engine import headers

    fast_read = headers._fast_read
    checked = 0
    for src in sorted(pydicom_test_files_dir().glob("*.dcm")):
        data = src.read_bytes()
        if data[128:132] != b"DICM" or len(data) > 300_000:
            continue
        step = max(1, len(data) // 25)
        cuts = sorted({len(data)} | set(range(140, len(data), step))
                      | {len(data) - k for k in (1, 2, 8, 100) if len(data) - k > 140})
        for cut in cuts:
            path = tmp_path / ("%s-%d.dcm" % (src.stem, cut))
            path.write_bytes(data[:cut])
            st = path.stat()
            for whole in (1 << 20, 0):  # read whole, and head read plus a walk on disk
                monkeypatch.setattr(headers, "_WHOLE_FILE", whole)
                try:
                    fast = fast_read(str(path), st.st_size, st.st_mtime_ns, _problem_maker(
                        str(path), st))
                except (OSError, struct.error, UnicodeDecodeError, ValueError):
                    fast = None  # read_header then takes the pydicom path
                if fast is None:
                    continue
                monkeypatch.setattr(headers, "_fast_read", lambda *args: None)
                assert fast == read_header(str(path)), (src.name, cut, whole)
                monkeypatch.setattr(headers, "_fast_read", fast_read)
                checked += 1
            path.unlink()
    assert checked > 500


def _problem_maker(path, st):
    from engine.headers import HeaderProblem

    def problem(outcome, reason, uid=""):
        return HeaderProblem(path, st.st_size, st.st_mtime_ns, outcome, reason, uid)
    return problem


def test_implicit_length_that_spells_a_vr_is_not_misread(tmp_path, read_path):
    """In an implicit VR file, a value of 20,300 bytes has the length bytes 'LO' 00 00; a walk
    that looked for a VR there took the file for truncated (this one is complete)."""
    from pydicom import dcmread

    path = make_dicom(tmp_path / "imp.dcm", ts="1.2.840.10008.1.2")
    ds = dcmread(str(path))
    ds.add_new(0x00290010, "LO", "TEST PRIVATE")
    ds.add_new(0x00291010, "OB", b"\xff" * 0x4F4C)
    ds.save_as(str(path), write_like_original=True)
    data = path.read_bytes()
    assert b"\x29\x00\x10\x10LO\x00\x00" in data  # the length reads as a VR
    h = read_path(path)
    assert isinstance(h, InstanceHeader), getattr(h, "reason", h)
    assert h.transfer_syntax == "1.2.840.10008.1.2" and not h.warning

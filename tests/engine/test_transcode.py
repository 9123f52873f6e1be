"""Every transfer syntax arrives intact: engine.transcode against the real corpora.

For each compressed, big endian or deflated file bundled with pydicom and pydicom-data, the
transcoded Dataset is encoded the way pynetdicom sends it, decoded back as the receiver would,
and its pixels compared with what pydicom makes of the source file on this stack.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.multival import MultiValue
from pydicom.uid import UID, generate_uid
from pynetdicom import dsutils

from engine import compat
from engine.transcode import (
    EXPLICIT_BE, EXPLICIT_LE, IMPLICIT_LE, TranscodeError, needs_transcode, transcode_file,
)
from tests import corpus

ELE, ILE = EXPLICIT_LE, IMPLICIT_LE
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
TARGETS = [pytest.param(ELE, id="to-ELE"), pytest.param(ILE, id="to-ILE")]
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91"}
REPO = Path(__file__).resolve().parents[2]

# Corpus files that cannot be sent, and why. Same list on both stacks; each one is checked
# below to be broken for pydicom itself, so the classification is not a way to hide failures.
KNOWN_BROKEN = {
    "JPEG-lossy.dcm": "JPEG stream with a misplaced marker: no decoder reads it",
    "JPEG2000-embedded-sequence-delimiter.dcm": "J2K header damaged by an embedded delimiter",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "file cut short inside Pixel Data",
    "UN_sequence.dcm": "dataset fragment without SOP Class/Instance UIDs",
    "DICOMDIR-bigEnd": "a DICOMDIR, not a storable instance",
}


def _header_ts(path: Path) -> str:
    try:
        ds = dcmread(str(path), stop_before_pixels=True, force=True)
        return str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    except Exception:
        return ""  # not DICOM at all: nothing to transcode


def _corpus() -> List[Any]:
    params = []
    for label, files in (("pydicom", corpus.pydicom_test_files()),
                         ("pydicom-data", corpus.pydicom_data_files())):
        for path in files:
            ts = _header_ts(path)
            if ts and ts not in (ELE, ILE):
                params.append(pytest.param(path, id=f"{label}/{path.name}"))
    return params


CORPUS = _corpus()


def _is_encapsulated(ts: str) -> bool:
    try:
        return bool(UID(ts).is_compressed)
    except ValueError:
        return False


def _through_pynetdicom(out: Dataset, target: str) -> Dataset:
    """Encode as send_c_store() does and decode as the receiving SCP does."""
    implicit = target == ILE
    assert out.file_meta.TransferSyntaxUID == target
    # pynetdicom 3 refuses a dataset whose encoding differs from its file meta syntax
    assert compat.read_encoding(out) == (implicit, True)
    data = dsutils.encode(out, implicit, True)
    assert data is not None, "pynetdicom could not encode the transcoded dataset"
    back = dsutils.decode(io.BytesIO(data), implicit, True)
    back.file_meta = FileMetaDataset()
    back.file_meta.TransferSyntaxUID = UID(target)
    return back


def _in_declared_colour_space(expected: Any, src: Dataset, back: Dataset) -> Any:
    """pydicom 2 leaves decoded YCbCr as it is; bring it to RGB when we declared RGB."""
    src_pi = str(src.get("PhotometricInterpretation", ""))
    if (compat.PYDICOM_MAJOR < 3 and back.PhotometricInterpretation == "RGB"
            and src_pi in ("YBR_FULL", "YBR_FULL_422")):
        from pydicom.pixel_data_handlers.util import convert_color_space

        return convert_color_space(expected, "YBR_FULL", "RGB", per_frame=True)
    return expected


def _assert_pixel_attributes(src: Dataset, back: Dataset, ts: str) -> None:
    src_pi = str(src.PhotometricInterpretation)
    spp = int(back.SamplesPerPixel)
    frames = int(back.get("NumberOfFrames", 1) or 1)
    size = frames * back.Rows * back.Columns * spp * back.BitsAllocated // 8
    assert len(back.PixelData) in (size, size + 1)
    assert back.PhotometricInterpretation not in ("YBR_FULL_422", "YBR_ICT", "YBR_RCT")
    if spp > 1:
        assert back.PlanarConfiguration == 0
        assert back.PhotometricInterpretation in ("RGB", "YBR_FULL")
    if src_pi in ("YBR_ICT", "YBR_RCT"):
        assert back.PhotometricInterpretation == "RGB"
    if ts in (JPEG_BASELINE, "1.2.840.10008.1.2.4.51") and src_pi.startswith("YBR_FULL"):
        assert back.PhotometricInterpretation == "RGB"
    if ts in LOSSY:
        assert back.LossyImageCompression == "01"
        assert back.LossyImageCompressionMethod
    assert "ExtendedOffsetTable" not in back


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("path", CORPUS)
def test_corpus_file_arrives_intact(path: Path, target: str) -> None:
    src = dcmread(str(path), force=True)
    ts = str(src.file_meta.TransferSyntaxUID)
    if path.name in KNOWN_BROKEN:
        with pytest.raises(TranscodeError, match="damaged|truncated|not a DICOM"):
            transcode_file(str(path), target)
        return
    encapsulated = "PixelData" in src and _is_encapsulated(ts)
    if encapsulated and not compat.decoder_available(ts):
        with pytest.raises(TranscodeError, match=compat.decoder_package(ts) or "no decoder"):
            transcode_file(str(path), target)
        return
    expected = src.pixel_array if "PixelData" in src else None
    back = _through_pynetdicom(transcode_file(str(path), target), target)
    assert back.SOPInstanceUID == src.SOPInstanceUID
    if expected is None:
        return
    want = _in_declared_colour_space(expected, src, back)
    got = back.pixel_array
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if encapsulated:
        _assert_pixel_attributes(src, back, ts)


@pytest.mark.parametrize("name", sorted(KNOWN_BROKEN))
def test_known_broken_files_are_broken_for_pydicom_too(name: str) -> None:
    paths = [p for p in corpus.pydicom_test_files() + corpus.pydicom_data_files()
             if p.name == name]
    assert paths, f"{name} is no longer in the corpus: update KNOWN_BROKEN"
    src = dcmread(str(paths[0]), force=True)
    if "SOPInstanceUID" not in src or "PixelData" not in src:
        return  # not storable, or the pixels were cut off
    with pytest.raises(Exception):
        src.pixel_array


def _values(ds: Dataset, skip: Tuple[str, ...]) -> Dict[str, Any]:
    """Public, non-pixel element values, OW-like bytes as little endian integers."""
    widths = {"OW": "u2", "OF": "f4", "OL": "u4", "OD": "f8", "OV": "u8"}
    little = compat.read_encoding(ds)[1] is not False
    result: Dict[str, Any] = {}
    for elem in ds:
        # group lengths are retired and dropped on writing (PS3.5 7.2)
        if elem.tag.is_private or elem.tag.element == 0 or elem.tag.group == 0x7FE0:
            continue
        if elem.keyword in skip:
            continue
        if elem.VR == "SQ":
            result[str(elem.tag)] = [_values(item, skip) for item in elem.value]
        elif elem.VR in widths and elem.value:
            dtype = np.dtype(widths[elem.VR]).newbyteorder("<" if little else ">")
            result[str(elem.tag)] = np.frombuffer(elem.value, dtype).tolist()
        else:
            result[str(elem.tag)] = str(elem.value)
    return result


BIG_ENDIAN = [p for p in CORPUS if _header_ts(p.values[0]) == EXPLICIT_BE
              and p.values[0].name not in KNOWN_BROKEN]


@pytest.mark.parametrize("path", BIG_ENDIAN)
def test_big_endian_header_values_survive(path: Path) -> None:
    """Numbers, LUTs and other multi-byte values read the same after the swap to little."""
    src = dcmread(str(path))
    back = _through_pynetdicom(transcode_file(str(path), ELE), ELE)
    assert _values(back, ()) == _values(src, ())


def test_big_endian_float_pixel_data_is_swapped(tmp_path: Path) -> None:
    values = np.array([[1.5, -2.25], [3.0e10, 0.0]], dtype=">f4")
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.30", EXPLICIT_BE)  # Parametric Map
    ds.update({"Rows": 2, "Columns": 2, "SamplesPerPixel": 1, "BitsAllocated": 32,
               "PhotometricInterpretation": "MONOCHROME2"})
    ds.add_new(0x7FE00008, "OF", values.tobytes())
    path = tmp_path / "float_be.dcm"
    path.write_bytes(compat.write_file_bytes(ds))
    back = _through_pynetdicom(transcode_file(str(path), ILE), ILE)
    np.testing.assert_array_equal(np.frombuffer(back.FloatPixelData, "<f4"), values.ravel())


def _base_dataset(sop_class: str, ts: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^TRANSCODE", "TX1", "OT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


@pytest.mark.parametrize("sop_class", [
    pytest.param("1.2.840.10008.5.1.4.1.1.88.11", id="basic-text-SR"),
    pytest.param("1.2.840.10008.5.1.4.1.1.88.59", id="KOS"),
])
@pytest.mark.parametrize("target", TARGETS)
def test_pixelless_object_labelled_compressed_is_relabelled(
        tmp_path: Path, sop_class: str, target: str) -> None:
    ds = _base_dataset(sop_class, JPEG_BASELINE)
    item = Dataset()
    item.ValueType, item.TextValue = "TEXT", "No acute findings"
    ds.ContentSequence = [item]
    path = tmp_path / "sr_jpeg_ts.dcm"
    path.write_bytes(compat.write_file_bytes(ds))
    back = _through_pynetdicom(transcode_file(str(path), target, decompress=False), target)
    assert back.ContentSequence[0].TextValue == "No acute findings"
    assert back.SOPInstanceUID == ds.SOPInstanceUID


def _rewrite_pixel_data(src_name: str, dest: Path, cut: Any) -> Path:
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file(src_name))
    frames = [bytes(f) for f in compat.encapsulated_frames(ds)]
    frames[0] = cut(frames[0])
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].is_undefined_length = True
    dest.write_bytes(compat.write_file_bytes(ds))
    return dest


@pytest.mark.parametrize("name", [
    "SC_rgb_jpeg_dcmtk.dcm", "JPEG-LL.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm",
])
@pytest.mark.parametrize("cut", [
    pytest.param(lambda f: f[: len(f) // 2], id="half"),
    pytest.param(lambda f: f[:20], id="head-only"),
])
def test_truncated_stream_is_reported_damaged(tmp_path: Path, name: str, cut: Any) -> None:
    path = _rewrite_pixel_data(name, tmp_path / "cut.dcm", cut)
    with pytest.raises(TranscodeError, match="damaged and cannot be decoded"):
        transcode_file(str(path), ELE)


def test_decompression_turned_off_refuses_compressed_image() -> None:
    from pydicom.data import get_testdata_file

    with pytest.raises(TranscodeError, match="decompression is turned off"):
        transcode_file(get_testdata_file("MR_small_RLE.dcm"), ELE, decompress=False)
    # byte order and VR changes are not decompression: still allowed
    out = transcode_file(get_testdata_file("MR_small_bigendian.dcm"), ILE, decompress=False)
    assert out.file_meta.TransferSyntaxUID == ILE


_NO_JPEG_LS = """
import sys
from pydicom.data import get_testdata_file
from engine import compat
from engine.transcode import TranscodeError, transcode_file
if compat.PYDICOM_MAJOR >= 3:
    from pydicom.pixels import get_decoder
    decoder = get_decoder("1.2.840.10008.1.2.4.80")
    for label in list(decoder.available_plugins):
        decoder.remove_plugin(label)
else:
    import pydicom.config as config
    config.pixel_data_handlers = [config.np_handler, config.rle_handler]
try:
    transcode_file(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), "1.2.840.10008.1.2")
except TranscodeError as exc:
    print(exc.reason)
"""


def _reason_in_fresh_process(script: str) -> str:
    """Run ``script`` in its own interpreter (codec changes must not leak into other tests)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=str(REPO),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_missing_codec_names_the_package_to_install() -> None:
    assert _reason_in_fresh_process(_NO_JPEG_LS) == (
        "Cannot decompress JPEG-LS Lossless images: the decoder is not installed "
        f"(install the Python package {compat.decoder_package(JPEG_LS_LOSSLESS)})")


@pytest.mark.parametrize("content", [b"", b"hello, not DICOM\n", b"\x00" * 300])
def test_non_dicom_input_gives_transcode_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(content)
    with pytest.raises(TranscodeError):
        transcode_file(str(path), ELE)
    with pytest.raises(TranscodeError):
        transcode_file(str(tmp_path / "missing.dcm"), ELE)


def test_unsupported_target_is_refused() -> None:
    from pydicom.data import get_testdata_file

    with pytest.raises(TranscodeError, match="not supported"):
        transcode_file(get_testdata_file("CT_small.dcm"), JPEG_BASELINE)


@pytest.mark.parametrize("name,target", [("CT_small.dcm", ILE), ("MR_small_implicit.dcm", ELE)])
def test_vr_change_keeps_pixel_bytes(name: str, target: str) -> None:
    from pydicom.data import get_testdata_file

    src = dcmread(get_testdata_file(name))
    back = _through_pynetdicom(transcode_file(get_testdata_file(name), target), target)
    assert back.PixelData == src.PixelData
    assert _values(back, ()) == _values(src, ())


def test_source_file_is_never_written(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    names = ["SC_rgb_jpeg_dcmtk.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]
    for name in names:
        path = Path(shutil.copy(get_testdata_file(name), tmp_path / name))
        before = (corpus.file_digest(path), path.stat().st_mtime_ns)
        transcode_file(str(path), ILE)
        assert (corpus.file_digest(path), path.stat().st_mtime_ns) == before


@pytest.mark.parametrize("file_ts,accepted,expected", [
    (ELE, ELE, False), (ELE, ILE, True), (JPEG_BASELINE, ELE, True),
    (JPEG_BASELINE, JPEG_BASELINE + "\x00", False), (DEFLATED, ELE, True),
])
def test_needs_transcode(file_ts: str, accepted: str, expected: bool) -> None:
    assert needs_transcode(file_ts, accepted) is expected


def _rle_segment(plane: "np.ndarray") -> bytes:
    """PackBits runs of 128 equal bytes, else literals: enough for test images."""
    out = bytearray()
    flat = plane.ravel().tobytes()
    pos = 0
    while pos < len(flat):
        run = flat[pos:pos + 128]
        if len(run) > 1 and run == run[:1] * len(run):
            out += bytes([257 - len(run), run[0]])
        else:
            out += bytes([len(run) - 1]) + run
        pos += len(run)
    return bytes(out) + (b"\x00" if len(out) % 2 else b"")


def _rle_frame(frame: "np.ndarray") -> bytes:
    """One RLE Lossless frame: planes per sample, most significant byte first."""
    samples = frame.reshape(frame.shape[0], frame.shape[1], -1)
    segments = []
    for index in range(samples.shape[2]):
        plane = samples[:, :, index].astype(samples.dtype.newbyteorder(">"))
        raw = plane.view(np.uint8).reshape(plane.shape + (plane.dtype.itemsize,))
        segments += [_rle_segment(raw[:, :, b]) for b in range(plane.dtype.itemsize)]
    offsets, pos = [], 64
    for seg in segments:
        offsets.append(pos)
        pos += len(seg)
    header = np.zeros(16, "<u4")
    header[0], header[1:1 + len(offsets)] = len(segments), offsets
    return header.tobytes() + b"".join(segments)


def _write_rle(path: Path, frames: List[bytes], attrs: Dict[str, Any]) -> Path:
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.7", RLE)
    ds.update(attrs)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path.write_bytes(compat.write_file_bytes(ds))
    return path


def test_rle_ybr_full_stays_ybr_full(tmp_path: Path) -> None:
    """No codec converts RLE colour: the bytes stay YCbCr and are labelled YBR_FULL."""
    ybr = np.random.default_rng(7).integers(0, 255, (8, 10, 3), dtype=np.uint8)
    path = _write_rle(tmp_path / "ybr.dcm", [_rle_frame(ybr)], {
        "Rows": 8, "Columns": 10, "SamplesPerPixel": 3, "PlanarConfiguration": 1,
        "BitsAllocated": 8, "BitsStored": 8, "HighBit": 7, "PixelRepresentation": 0,
        "PhotometricInterpretation": "YBR_FULL"})
    back = _through_pynetdicom(transcode_file(str(path), ELE), ELE)
    assert back.PhotometricInterpretation == "YBR_FULL"
    assert back.PlanarConfiguration == 0
    assert back.PixelData == ybr.tobytes()


_MEASURE = """
import resource, sys
from engine.transcode import transcode_file
transcode_file(sys.argv[2], "1.2.840.10008.1.2.1")  # load codecs before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = transcode_file(sys.argv[1], "1.2.840.10008.1.2.1")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, len(out.PixelData))
"""


@pytest.mark.slow
def test_large_multiframe_decode_stays_within_memory_budget(tmp_path: Path) -> None:
    frames, rows, cols = 600, 512, 512  # 300 MiB decoded, 16-bit
    image = (np.arange(rows, dtype=np.uint16)[:, None] * 7 + np.zeros(cols, np.uint16))
    encoded = _rle_frame(image)
    path = _write_rle(tmp_path / "big_rle.dcm", [encoded] * frames, {
        "Rows": rows, "Columns": cols, "NumberOfFrames": frames, "SamplesPerPixel": 1,
        "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0,
        "PhotometricInterpretation": "MONOCHROME2"})
    small = _write_rle(tmp_path / "small_rle.dcm", [encoded], {
        "Rows": rows, "Columns": cols, "SamplesPerPixel": 1, "BitsAllocated": 16,
        "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0,
        "PhotometricInterpretation": "MONOCHROME2"})
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(_MEASURE), str(path),
                          str(small)], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    peak_delta, decoded = (int(v) for v in run.stdout.split())
    assert decoded == frames * rows * cols * 2
    print(f"peak RSS delta {peak_delta / 2**20:.0f} MiB for {decoded / 2**20:.0f} MiB "
          f"decoded ({peak_delta / decoded:.2f}x)")
    assert peak_delta <= 3.5 * decoded


def _store_scp(sops: List[str], received: Dict[str, Dataset]) -> Any:
    """An in-process Storage SCP that accepts only Explicit and Implicit VR Little Endian."""
    from pynetdicom import AE, evt

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[ds.SOPInstanceUID + ds.file_meta.TransferSyntaxUID] = ds
        return 0x0000

    scp = AE(ae_title="TXSCP")
    for sop in sops:
        scp.add_supported_context(sop, [ELE, ILE])
    return scp.start_server(("127.0.0.1", 0), block=False,
                            evt_handlers=[(evt.EVT_C_STORE, on_store)])


@pytest.mark.network
def test_pynetdicom_sends_transcoded_datasets_to_an_scp() -> None:
    """A real association: pynetdicom's own checks and encoding, both targets."""
    from pydicom.data import get_testdata_file
    from pynetdicom import AE

    names = ["SC_rgb_jpeg_dcmtk.dcm", "US1_J2KI.dcm", "SC_rgb_rle_2frame.dcm",
             "MR_small_bigendian.dcm", "image_dfl.dcm", "JPEGLSNearLossless_08.dcm"]
    paths = [p for p in (get_testdata_file(n) for n in names) if p]
    sops = sorted({str(dcmread(p, stop_before_pixels=True).SOPClassUID) for p in paths})
    received: Dict[str, Dataset] = {}
    server = _store_scp(sops, received)
    scu = AE(ae_title="TXSCU")
    for sop in sops:  # one transfer syntax per context, as the sender proposes them
        scu.add_requested_context(sop, ELE)
        scu.add_requested_context(sop, ILE)
    try:
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="TXSCP")
        assert assoc.is_established
        for path in paths:
            for target in (ELE, ILE):
                status = assoc.send_c_store(transcode_file(path, target))
                assert status.Status == 0x0000, (path, target)
        assoc.release()
    finally:
        server.shutdown()
    for path in paths:
        src = dcmread(path)
        for target in (ELE, ILE):
            got = received[src.SOPInstanceUID + target]
            want = _in_declared_colour_space(src.pixel_array, src, got)
            np.testing.assert_array_equal(got.pixel_array, want)


def test_transcoded_dataset_can_be_saved_as_a_file(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    src = get_testdata_file("SC_rgb_rle_2frame.dcm")
    data = compat.write_file_bytes(transcode_file(src, ILE))
    back = dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == ILE
    np.testing.assert_array_equal(back.pixel_array, dcmread(src).pixel_array)


@pytest.mark.parametrize("name,methods,ratios", [
    # method already recorded: kept as it is
    ("SC_rgb_jpeg_dcmtk.dcm", ["ISO_10918_1"], ["17.401"]),
    # a ratio without its method: the method of this file's compression is filled in
    ("MR2_J2KI.dcm", ["ISO_15444_1"], ["18"]),
    # nothing recorded: method and the measured ratio are added
    ("JPEGLSNearLossless_08.dcm", ["ISO_14495_1"], ["5.92"]),
])
def test_lossy_history_is_kept(name: str, methods: List[str], ratios: List[str]) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    back = _through_pynetdicom(transcode_file(path, ILE), ILE)
    assert back.LossyImageCompression == "01"
    assert [str(m) for m in _listed(back.LossyImageCompressionMethod)] == methods
    assert [str(r) for r in _listed(back.LossyImageCompressionRatio)] == ratios


def test_lossless_source_gets_no_lossy_flag() -> None:
    from pydicom.data import get_testdata_file

    back = transcode_file(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), ELE)
    assert back.get("LossyImageCompression", "00") == "00"
    assert "LossyImageCompressionMethod" not in back


def _listed(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


_NO_LIBJPEG = """
from pydicom.data import get_testdata_file
from engine import compat
from engine.transcode import TranscodeError, transcode_file
# As if pylibjpeg-libjpeg were not installed: only Pillow is left for JPEG.
compat._MODULE_OF_PACKAGE["pylibjpeg-libjpeg"] = "no_such_module_libjpeg"
if compat.PYDICOM_MAJOR >= 3:
    from pydicom.pixels import get_decoder
    decoder = get_decoder("1.2.840.10008.1.2.4.51")
    for label in list(decoder.available_plugins):
        if label != "pillow":
            decoder.remove_plugin(label)
else:
    import pydicom.config as config
    config.pixel_data_handlers = [config.np_handler, config.pillow_handler]
try:
    transcode_file(get_testdata_file("JPEG-lossy.dcm"), "1.2.840.10008.1.2")  # 12-bit JPEG
    print("decoded")
except TranscodeError as exc:
    print(exc.reason)
"""


def test_12_bit_jpeg_without_libjpeg_names_the_package_not_damage() -> None:
    """Pillow claims JPEG but cannot do 12-bit: the reason must point at the package."""
    out = _reason_in_fresh_process(_NO_LIBJPEG)
    assert "damaged" not in out
    assert "install the Python package pylibjpeg-libjpeg" in out, out

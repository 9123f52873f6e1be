"""engine.compat: the pydicom 2/3 and pynetdicom 2/3 differences, checked on this stack."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import dsutils

from engine import compat

ELE, ILE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"


def _read(name: str) -> Dataset:
    return dcmread(get_testdata_file(name))


def test_versions_match_the_installed_libraries() -> None:
    assert compat.PYDICOM_MAJOR == int(pydicom.__version__.split(".")[0])
    assert compat.PYNETDICOM_MAJOR == int(pynetdicom.__version__.split(".")[0])
    assert compat.PYDICOM_MAJOR in (2, 3) and compat.PYNETDICOM_MAJOR in (2, 3)


@pytest.mark.parametrize("name,expected", [
    ("CT_small.dcm", (False, True)),
    ("MR_small_implicit.dcm", (True, True)),
    ("MR_small_bigendian.dcm", (False, False)),
    ("image_dfl.dcm", (False, True)),
])
def test_read_encoding_describes_the_bytes_read(name: str, expected: tuple) -> None:
    assert compat.read_encoding(_read(name)) == expected
    assert compat.read_encoding(Dataset()) == (None, None)


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_dataset_to_bytes_matches_pynetdicom_encode(implicit: bool) -> None:
    ours = compat.dataset_to_bytes(_read("CT_small.dcm"), implicit, True)
    theirs = dsutils.encode(_read("CT_small.dcm"), implicit, True)
    assert ours == theirs


def test_dataset_to_bytes_leaves_the_dataset_encoding_alone() -> None:
    ds = _read("CT_small.dcm")
    before = compat.read_encoding(ds)
    compat.dataset_to_bytes(ds, True, True)
    assert compat.read_encoding(ds) == before
    assert dsutils.encode(ds, False, True) == dsutils.encode(_read("CT_small.dcm"), False, True)


def test_dataset_encoded_unlike_its_file_meta_can_be_rewritten() -> None:
    """SC_rgb_jpeg.dcm: JPEG syntax in the meta, but the dataset is implicit VR."""
    ds = _read("SC_rgb_jpeg.dcm")
    data = compat.dataset_to_bytes(ds, False, True)
    back = compat.bytes_to_dataset(data, False, True)
    assert back.SOPInstanceUID == _read("SC_rgb_jpeg.dcm").SOPInstanceUID
    assert back["ImageType"].VR == "CS"


def test_bytes_to_dataset_marks_the_encoding() -> None:
    data = compat.dataset_to_bytes(_read("CT_small.dcm"), True, True)
    back = compat.bytes_to_dataset(data, True, True)
    assert compat.read_encoding(back) == (True, True)
    assert back.PatientName == _read("CT_small.dcm").PatientName
    assert dsutils.encode(back, True, True) == data


def test_set_encoding_makes_pynetdicom_send_the_new_encoding() -> None:
    ds = _read("CT_small.dcm")
    compat.set_encoding(ds, True, True)
    ds.file_meta.TransferSyntaxUID = UID(ILE)
    # pynetdicom 3 compares this with the file meta syntax before sending
    assert compat.read_encoding(ds) == (True, True)
    sent = dsutils.encode(ds, True, True)
    back = dsutils.decode(io.BytesIO(sent), True, True)
    assert back.PixelData == _read("CT_small.dcm").PixelData
    assert back.ImagePositionPatient == _read("CT_small.dcm").ImagePositionPatient


@pytest.mark.parametrize("ts", [ELE, ILE, DEFLATED])
def test_write_file_bytes_is_a_part10_file_in_its_syntax(ts: str) -> None:
    ds = _read("CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = UID(ts)
    data = compat.write_file_bytes(ds)
    assert data[128:132] == b"DICM"
    back = dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == ts
    assert compat.read_encoding(back) == ((True, True) if ts == ILE else (False, True))
    assert back.PixelData == _read("CT_small.dcm").PixelData


def test_configure_pynetdicom_turns_on_streaming() -> None:
    from pynetdicom import _config

    saved = (_config.STORE_SEND_CHUNKED_DATASET, _config.ENFORCE_UID_CONFORMANCE)
    try:
        compat.configure_pynetdicom()
        assert _config.STORE_SEND_CHUNKED_DATASET is True
        assert _config.ENFORCE_UID_CONFORMANCE is False
    finally:
        _config.STORE_SEND_CHUNKED_DATASET, _config.ENFORCE_UID_CONFORMANCE = saved


def test_decoder_lookup() -> None:
    assert compat.decoder_available("1.2.840.10008.1.2.5")  # pydicom's own RLE decoder
    assert not compat.decoder_available("1.2.3.4.5")
    assert compat.decoder_package("1.2.840.10008.1.2.4.50") == "pylibjpeg-libjpeg"
    assert compat.decoder_package("1.2.840.10008.1.2.4.91") == "pylibjpeg-openjpeg"
    assert compat.decoder_package("1.2.840.10008.1.2.4.80") in ("pyjpegls", "pylibjpeg-libjpeg")
    assert compat.decoder_package("1.2.840.10008.1.2.5") is None


@pytest.mark.parametrize("to_rgb,expected", [(True, "RGB"), (False, "YBR_FULL")])
def test_decoded_jpeg_ycbcr_colour_space_is_reported(to_rgb: bool, expected: str) -> None:
    ds = _read("SC_rgb_dcmtk_+eb+cy+s2.dcm")  # JPEG Baseline, YBR_FULL_422
    chunks = list(compat.iter_decoded_chunks(ds, to_rgb))
    assert {pi for _, pi in chunks} == {expected}
    pixels = np.concatenate([arr.reshape(-1) for arr, _ in chunks])
    assert pixels.size == ds.Rows * ds.Columns * 3


def test_decoded_chunks_cover_every_frame() -> None:
    ds = _read("SC_rgb_rle_2frame.dcm")
    total = sum(arr.nbytes for arr, _ in compat.iter_decoded_chunks(ds, False))
    assert total == 2 * ds.Rows * ds.Columns * 3
    assert len(compat.encapsulated_frames(_read("SC_rgb_rle_2frame.dcm"))) == 2


def test_expected_pixel_bytes() -> None:
    assert compat.expected_pixel_bytes(_read("CT_small.dcm")) == 128 * 128 * 2
    assert compat.expected_pixel_bytes(Dataset()) is None

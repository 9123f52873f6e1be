"""Test inputs: generated DICOM files and the real-world corpora that ship in packages.

The corpora are files nobody on this project wrote: every file bundled in pydicom
(``pydicom/data/test_files``, some deliberately broken, some not DICOM at all) and the
``pydicom-data`` package (larger CT/MR/US/J2K/RLE/big-endian files). Several of them share one
SOP Instance UID with different content, so tests must not key on the UID alone.

The only pydicom 2.x / 3.x difference the tests need (how to write a file with its meta
header) lives in ``save_dataset``.
"""
from __future__ import annotations

import hashlib
import shutil
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UID,
    generate_uid,
)

PathLike = Union[str, Path]

PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])

_MODALITY = {
    CTImageStorage: "CT",
    MRImageStorage: "MR",
    SecondaryCaptureImageStorage: "OT",
}


# --- the stack difference ------------------------------------------------------------------
def save_dataset(ds: Dataset, path: PathLike) -> None:
    """Write ``ds`` as a DICOM file (preamble + file meta) encoded per its TransferSyntaxUID.

    pydicom 3 derives the encoding from the file meta and wants ``enforce_file_format``;
    pydicom 2.4 needs ``is_little_endian``/``is_implicit_VR`` set and ``write_like_original``.
    """
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if PYDICOM_MAJOR >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:
        ds.is_little_endian = ts.is_little_endian
        ds.is_implicit_VR = ts.is_implicit_VR
        ds.save_as(str(path), write_like_original=False)


def compress_dataset(ds: Dataset, ts: str, arr: "np.ndarray") -> None:
    """Encode ``arr`` into ``ds`` with transfer syntax ``ts``, keeping the SOP Instance UID.

    pydicom 3's ``compress`` makes a new SOP Instance UID unless told not to; 2.4 never does.
    """
    if PYDICOM_MAJOR >= 3:
        ds.compress(ts, arr, generate_instance_uid=False)
    else:
        ds.compress(ts, arr)


# --- generated files -----------------------------------------------------------------------
def make_dicom(path: PathLike, sop_class: str = CTImageStorage,
               ts: str = ExplicitVRLittleEndian, with_pixels: bool = True,
               **attrs: Any) -> Path:
    """Write a small valid image file and return its path.

    Fresh Study/Series/SOP Instance UIDs are generated unless given in ``attrs`` (any dataset
    keyword, applied last, e.g. ``PatientName="DOE^JANE"``, ``Rows=32``). Pixel data is
    ``Rows`` x ``Columns`` uint16 (16x16 by default) whose values depend on the SOP Instance
    UID, so two generated files never carry identical images. Uncompressed transfer syntaxes
    (including big endian and deflated) work on both stacks; a compressed ``ts`` goes through
    ``Dataset.compress`` (RLE on pydicom 2.4; RLE, JPEG-LS, JPEG 2000 on 3.x).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ts_uid = UID(ts)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20240115"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = _MODALITY.get(UID(sop_class), "OT")
    ds.ReferringPhysicianName = ""
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "PID0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if with_pixels:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 16
        ds.Columns = 16
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)

    meta = ds.file_meta
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PYTEST_CORPUS"
    # Compressed syntaxes are produced by the codec from a native dataset.
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if ts_uid.is_compressed else ts_uid

    if with_pixels and "PixelData" not in attrs:
        arr = pixel_pattern(int(ds.Rows), int(ds.Columns), str(ds.SOPInstanceUID))
        if ts_uid.is_compressed:
            compress_dataset(ds, ts_uid, arr)
        else:
            # Big endian files must carry byte-swapped 16-bit pixels, not relabelled ones.
            dtype = "<u2" if ts_uid.is_little_endian else ">u2"
            ds.PixelData = arr.astype(dtype).tobytes()
            ds["PixelData"].VR = "OW"
    save_dataset(ds, path)
    return path


def pixel_pattern(rows: int, columns: int, seed_text: str = "") -> "np.ndarray":
    """Deterministic 12-bit uint16 image; ``seed_text`` (a UID) shifts the values."""
    seed = zlib.crc32(seed_text.encode("ascii")) % 4096
    values = (np.arange(rows * columns, dtype=np.uint32) * 37 + seed) % 4096
    return values.astype(np.uint16).reshape(rows, columns)


# --- real-world corpora --------------------------------------------------------------------
def _files_under(root: Path) -> List[Path]:
    # Python byte-code caches are package plumbing, not corpus files.
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def pydicom_test_files_dir() -> Path:
    return Path(pydicom.__file__).resolve().parent / "data" / "test_files"


def pydicom_test_files() -> List[Path]:
    """Every file bundled in the installed pydicom's ``data/test_files`` (recursively).

    Deliberately unfiltered: DICOMDIRs, JSON/dump/text helpers, gzip files, broken and
    truncated DICOM all belong in a migration test, since the tool must give each a reason.
    """
    return _files_under(pydicom_test_files_dir())


def pydicom_data_dir() -> Path:
    """The data folder of the ``pydicom-data`` package (import name ``data_store``)."""
    try:
        import data_store  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the venv
        raise ImportError("pydicom-data is not installed (requirements/test.txt)") from exc
    return Path(data_store.__file__).resolve().parent / "data"


def pydicom_data_files() -> List[Path]:
    """Every file in the ``pydicom-data`` package's data folder (~68 larger files)."""
    return _files_under(pydicom_data_dir())


def copy_corpus(dest_dir: PathLike, files: Iterable[PathLike],
                layout: str = "nested") -> List[Path]:
    """Copy ``files`` under ``dest_dir`` and return the new paths, in input order.

    ``layout="nested"`` spreads them over ``PATIENT_xx/STUDY_y/`` folders the way an old image
    store looks; ``"flat"`` puts them all in ``dest_dir``. File names stay unique across the
    whole tree (a repeated name gets ``_2``, ``_3``... before its suffix), so a tool that
    keys anything on the base name sees no accidental clash.
    """
    if layout not in ("nested", "flat"):
        raise ValueError("layout must be 'nested' or 'flat', not %r" % layout)
    dest = Path(dest_dir)
    used = set()  # type: set
    copied = []  # type: List[Path]
    for index, src in enumerate(Path(f) for f in files):
        name = src.name
        count = 1
        while name.lower() in used:  # case-insensitive: the target may be Windows
            count += 1
            name = "%s_%d%s" % (src.stem, count, src.suffix) if src.suffix else \
                "%s_%d" % (src.name, count)
        used.add(name.lower())
        if layout == "nested":
            folder = dest / ("PATIENT_%02d" % (index % 7)) / ("STUDY_%d" % ((index // 7) % 3))
        else:
            folder = dest
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        shutil.copyfile(str(src), str(target))
        copied.append(target)
    return copied


def file_digest(path: PathLike) -> Tuple[int, str]:
    """(size, sha256 hex) of one file."""
    sha = hashlib.sha256()
    size = 0
    with open(str(path), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest()


def tree_digest(root: PathLike) -> Dict[str, Tuple[int, str]]:
    """{posix relative path: (size, sha256)} of every file under ``root``.

    Take one before and one after a migration to prove the source was not touched.
    """
    base = Path(root)
    return {p.relative_to(base).as_posix(): file_digest(p)
            for p in sorted(base.rglob("*")) if p.is_file()}

"""Read what we need to know about a file without its pixels, and decide whether it can be sent.

The values kept here feed the manifest and audit; they come from this separate read so that
nothing we look at can change the bytes that are sent.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

from pydicom import dcmread

from . import compat
from .structure import ALL_VRS, LONG_VRS, check_structure
from .events import Outcome

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
DEFLATED_TS = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

HEADER_TAGS = [
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "PatientName", "PatientID",
    "StudyDate", "StudyTime", "Modality", "StudyInstanceUID", "SeriesInstanceUID",
    "StudyDescription", "SeriesDescription", "SeriesNumber", "AccessionNumber",
]


@dataclass(frozen=True)
class InstanceHeader:
    path: str
    size: int
    mtime_ns: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    has_meta: bool
    # True when the bytes after the file meta are encoded as the meta says, so the file can be
    # streamed unchanged once the destination accepts that transfer syntax.
    streamable: bool
    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    modality: str = ""
    study_uid: str = ""
    series_uid: str = ""
    study_description: str = ""
    series_description: str = ""
    series_number: str = ""


@dataclass(frozen=True)
class HeaderProblem:
    path: str
    size: int
    mtime_ns: int
    outcome: Outcome  # SKIPPED (not something to send) or FAILED (a DICOM file we cannot send)
    reason: str
    sop_instance_uid: str = ""


HeaderResult = Union[InstanceHeader, HeaderProblem]


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
        return "" if value is None else str(value).strip()
    except Exception:  # a malformed value must not hide the whole file
        return ""


def _has_dicm_marker(path: str) -> bool:
    with open(path, "rb") as fp:
        fp.seek(128)
        return fp.read(4) == b"DICM"


def read_header(path: str, size: Optional[int] = None, mtime_ns: Optional[int] = None
                ) -> HeaderResult:
    """Classify one file: an InstanceHeader to send, or a HeaderProblem with the reason."""
    if size is None or mtime_ns is None:
        st = os.stat(path)
        size, mtime_ns = st.st_size, st.st_mtime_ns

    def problem(outcome: Outcome, reason: str, uid: str = "") -> HeaderProblem:
        return HeaderProblem(path, size or 0, mtime_ns or 0, outcome, reason, uid)

    if size == 0:
        return problem(Outcome.SKIPPED, "Empty file (0 bytes): nothing to send.")
    try:
        marker = _has_dicm_marker(path)
        with open(path, "rb") as fp:
            ds = dcmread(fp, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=True)
            start, explicit = _dataset_start(fp, marker)
            trouble = _check_truncation(fp, start, size, ds)
    except PermissionError:
        return problem(Outcome.FAILED, "Permission denied: this file cannot be opened for "
                                       "reading. Ask IT to grant read access, then retry.")
    except OSError as exc:
        return problem(Outcome.FAILED, "The file could not be read: %s." % (exc.strerror or exc))
    except Exception as exc:  # pydicom raises many types for damaged input
        if marker:
            return problem(Outcome.FAILED, "The DICOM header is damaged and cannot be read (%s)."
                           % _short(exc))
        return problem(Outcome.SKIPPED, "Not a DICOM file.")
    return _classify(ds, path, size, mtime_ns, marker, trouble, explicit, problem)


def _classify(ds: Any, path: str, size: int, mtime_ns: int, marker: bool,
              trouble: Optional[str], explicit: Optional[bool], problem: Any) -> HeaderResult:
    meta = getattr(ds, "file_meta", None)
    media_class = _text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if media_class == DICOMDIR_SOP_CLASS or os.path.basename(path).upper() == "DICOMDIR":
        return problem(Outcome.SKIPPED, "DICOMDIR index file (lists the other files; it is not "
                                        "an image): nothing to send.")
    sop_class, sop_uid = _text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID")
    if not sop_class or not sop_uid or not _UID_RE.match(sop_class) or not _UID_RE.match(sop_uid):
        if not marker and len(ds) < 3:
            return problem(Outcome.SKIPPED, "Not a DICOM file.")
        missing = [n for n, v in (("SOP Class UID", sop_class), ("SOP Instance UID", sop_uid))
                   if not v or not _UID_RE.match(v)]
        return problem(Outcome.FAILED, "DICOM file without a valid %s: a PACS cannot store it."
                       % " or ".join(missing), sop_uid)
    if trouble:
        return problem(Outcome.FAILED, trouble, sop_uid)
    implicit, little = compat.read_encoding(ds)
    meta_ts = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    if explicit is not None and meta_ts != DEFLATED_TS:
        implicit = not explicit  # what the bytes say beats what the header claims
    actual_ts = IMPLICIT_LE if implicit else (EXPLICIT_LE if little else EXPLICIT_BE)
    has_meta = bool(meta_ts) and marker
    ts = meta_ts or actual_ts
    # Streaming sends the bytes as they are, announced with the file meta's UIDs and syntax;
    # any disagreement would make the destination store something else than the dataset says.
    # Deflated files are inflated and sent uncompressed: peers handle a streamed deflate
    # body unreliably (Orthanc waits for more data until its timeout).
    streamable = (has_meta and meta_ts != DEFLATED_TS and _meta_matches(meta, sop_class, sop_uid)
                  and (meta_ts == actual_ts
                       or _is_encapsulated_or_deflated(meta_ts, bool(implicit), bool(little))))
    return InstanceHeader(
        path=path, size=size, mtime_ns=mtime_ns, sop_class_uid=sop_class, sop_instance_uid=sop_uid,
        transfer_syntax=ts, has_meta=has_meta, streamable=streamable,
        patient_name=_text(ds, "PatientName"), patient_id=_text(ds, "PatientID"),
        study_date=_text(ds, "StudyDate"), modality=_text(ds, "Modality"),
        study_uid=_text(ds, "StudyInstanceUID"), series_uid=_text(ds, "SeriesInstanceUID"),
        study_description=_text(ds, "StudyDescription"),
        series_description=_text(ds, "SeriesDescription"),
        series_number=_text(ds, "SeriesNumber"),
    )


def _meta_matches(meta: Any, sop_class: str, sop_uid: str) -> bool:
    return (_text(meta, "MediaStorageSOPClassUID") == sop_class
            and _text(meta, "MediaStorageSOPInstanceUID") == sop_uid)


def _dataset_start(fp: Any, marker: bool) -> Tuple[int, Optional[bool]]:
    """Offset of the first data set element, and whether it carries a VR (explicit VR)."""
    pos = 132 if marker else 0
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            return pos, None
        if head[0:2] != b"\x02\x00":  # past the file meta group
            return pos, head[4:6] in ALL_VRS
        if head[4:6] in LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                return pos, None
            pos += 12 + struct.unpack("<I", extra)[0]
        else:
            pos += 8 + struct.unpack("<H", head[6:8])[0]


def _check_truncation(fp: Any, start: int, size: int, ds: Any) -> Optional[str]:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and _text(meta, "TransferSyntaxUID") == DEFLATED_TS:
        return None  # the body is zlib-compressed; offsets in it are not file offsets
    _, little = compat.read_encoding(ds)
    return check_structure(fp, start, size, little is not False)


def _is_encapsulated_or_deflated(meta_ts: str, implicit: bool, little: bool) -> bool:
    """Compressed syntaxes are always explicit VR little endian underneath."""
    if meta_ts in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE):
        return False
    return (not implicit) and little


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]

"""Read what we need to know about a file without its pixels, and decide whether it can be sent.

The values kept here feed the manifest and audit; they come from this separate read so that
nothing we look at can change the bytes that are sent.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

from pydicom import dcmread

from . import compat
from .structure import ALL_VRS, LONG_VRS, Walk, walk_buffer, walk_structure
from .events import Outcome

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
DEFLATED_TS = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# Image SOP classes require Pixel Data; without it (and not a JPIP reference to pixels held
# elsewhere) the file was cut exactly between two elements, which the truncation walk misses.
IMAGE_CLASSES = compat.image_storage_classes()
JPIP_TS = frozenset(("1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.4.95",
                     "1.2.840.10008.1.2.4.204", "1.2.840.10008.1.2.4.205"))
NO_PIXELS_REASON = ("This image has no pixel data: the file was probably cut off while being "
                    "copied (it ends exactly between two elements). It was sent as it is; "
                    "check the original on the old system.")
EXTRA_BYTES_REASON = ("The file ends with %d byte(s) after its last complete element (padding, "
                      "or an element cut off at its very start); they were not sent.")
ODD_LENGTH_REASON = ("A value in this file has an odd length, which DICOM does not allow; it "
                     "was sent with that value padded by one byte, as DICOM requires.")

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
    # Where the data set starts after the preamble and file meta: what streaming sends.
    dataset_offset: int = 0
    # Sent, but recorded as sent-with-warning with this reason (e.g. an image without pixels).
    warning: str = ""
    # Where the data set ends when bytes that are no element follow it (0: at the end of the
    # file); streaming stops there.
    dataset_end: int = 0
    # The data set's length is odd (a value without its padding byte): a strict receiver
    # aborts on an odd-length message, so the file is re-encoded with even values instead.
    odd_length: bool = False


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
        fast = _fast_read(path, size, mtime_ns, problem)
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        fast = None  # the full read below reports the problem in its own words
    if fast is not None:
        return fast
    try:
        marker = _has_dicm_marker(path)
        with open(path, "rb") as fp:
            try:
                ds = dcmread(fp, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=True)
            except Exception as exc:  # pydicom raises many types (OSError too) for bad input
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise  # the disk, not the content
                return _unparsable(fp, size, marker, exc, problem)
            start, explicit = _dataset_start(fp, marker)
            walk = _check_truncation(fp, start, size, ds, explicit)
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
    return _classify(ds, path, size, mtime_ns, marker, walk, explicit, problem, start)


_VALUE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "PatientName", "PatientID", "StudyDate",
                   "Modality", "StudyInstanceUID", "SeriesInstanceUID", "StudyDescription",
                   "SeriesDescription", "SeriesNumber")
_META_KEYWORDS = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")


def _classify(ds: Any, path: str, size: int, mtime_ns: int, marker: bool, walk: Optional[Walk],
              explicit: Optional[bool], problem: Any, start: int = 0) -> HeaderResult:
    meta_ds = getattr(ds, "file_meta", None)
    meta = {k: _text(meta_ds, k) if meta_ds is not None else "" for k in _META_KEYWORDS}
    values = {k: _text(ds, k) for k in _VALUE_KEYWORDS}
    implicit, little = compat.read_encoding(ds)
    if explicit is not None and meta["TransferSyntaxUID"] != DEFLATED_TS:
        implicit = not explicit  # what the bytes say beats what the header claims
    return _verdict(values, meta, len(ds), path, size, mtime_ns, marker, walk,
                    bool(implicit), bool(little), problem, start)


def _verdict(values: Dict[str, str], meta: Dict[str, str], n_elements: int, path: str,
             size: int, mtime_ns: int, marker: bool, walk: Optional[Walk], implicit: bool,
             little: bool, problem: Any, start: int) -> HeaderResult:
    """``walk``: what the structural walk found (None: it could not look, as in a deflated
    file)."""
    trouble = walk.trouble if walk is not None else None
    media_class = meta["MediaStorageSOPClassUID"]
    if media_class == DICOMDIR_SOP_CLASS or os.path.basename(path).upper() == "DICOMDIR":
        return problem(Outcome.SKIPPED, "DICOMDIR index file (lists the other files; it is not "
                                        "an image): nothing to send.")
    sop_class, sop_uid = values["SOPClassUID"], values["SOPInstanceUID"]
    if not sop_class or not sop_uid or not _UID_RE.match(sop_class) or not _UID_RE.match(sop_uid):
        if not marker and n_elements < 3:
            return problem(Outcome.SKIPPED, "Not a DICOM file.")
        if marker and trouble:
            return problem(Outcome.FAILED, trouble)  # cut off before its UIDs: say so
        missing = [n for n, v in (("SOP Class UID", sop_class), ("SOP Instance UID", sop_uid))
                   if not v or not _UID_RE.match(v)]
        return problem(Outcome.FAILED, "DICOM file without a valid %s: a PACS cannot store it."
                       % " or ".join(missing), sop_uid)
    if trouble:
        return problem(Outcome.FAILED, trouble, sop_uid)
    meta_ts = meta["TransferSyntaxUID"]
    actual_ts = IMPLICIT_LE if implicit else (EXPLICIT_LE if little else EXPLICIT_BE)
    has_meta = bool(meta_ts) and marker
    ts = meta_ts or actual_ts
    # Sent anyway: header-only images exist in real stores (pydicom's own corpus has 50), and
    # the old system holds nothing better; the warning makes someone look at the original.
    no_pixels = (walk is not None and not walk.pixels and sop_class in IMAGE_CLASSES
                 and ts not in JPIP_TS)
    end = walk.end if walk is not None and walk.end < size else 0
    odd = walk is not None and (walk.end - start) % 2 == 1
    notes = [NO_PIXELS_REASON] if no_pixels else []
    if end:
        notes.append(EXTRA_BYTES_REASON % (size - end))
    if odd:
        notes.append(ODD_LENGTH_REASON)
    # Streaming sends the bytes as they are, announced with the file meta's UIDs and syntax;
    # any disagreement would make the destination store something else than the dataset says.
    # Deflated files are inflated and sent uncompressed: peers handle a streamed deflate
    # body unreliably (Orthanc waits for more data until its timeout).
    streamable = (has_meta and meta_ts != DEFLATED_TS
                  and meta["MediaStorageSOPClassUID"] == sop_class
                  and meta["MediaStorageSOPInstanceUID"] == sop_uid
                  and (meta_ts == actual_ts
                       or _is_encapsulated_or_deflated(meta_ts, implicit, little)))
    return InstanceHeader(
        path=path, size=size, mtime_ns=mtime_ns, sop_class_uid=sop_class, sop_instance_uid=sop_uid,
        transfer_syntax=ts, has_meta=has_meta, streamable=streamable,
        patient_name=values["PatientName"], patient_id=values["PatientID"],
        study_date=values["StudyDate"], modality=values["Modality"],
        study_uid=values["StudyInstanceUID"], series_uid=values["SeriesInstanceUID"],
        study_description=values["StudyDescription"],
        series_description=values["SeriesDescription"],
        series_number=values["SeriesNumber"], dataset_offset=start, warning=" ".join(notes),
        dataset_end=end, odd_length=odd,
    )


def _unparsable(fp: Any, size: int, marker: bool, exc: Exception, problem: Any
                ) -> HeaderProblem:
    """pydicom gave up on the file. A Part 10 file that was cut short (pydicom's words: "No
    tag to read at file position 176") is reported as truncated, like any other cut file."""
    if not marker:
        return problem(Outcome.SKIPPED, "Not a DICOM file.")
    trouble, uid = None, ""
    try:
        fp.seek(0)
        head = fp.read(_HEAD_READ)
        meta, start = _fast_meta(head)
        ts = meta.get("TransferSyntaxUID")
        if ts not in (DEFLATED_TS, EXPLICIT_BE):
            implicit = head[start + 4:start + 6] not in ALL_VRS
            trouble = walk_structure(fp, start, size, True, implicit).trouble
            uid = _known_uid(head, start)
        elif ts == EXPLICIT_BE:
            trouble = walk_structure(fp, start, size, False).trouble
    except (_Unusual, OSError, struct.error):
        pass  # the meta itself is damaged: pydicom's reason below says more
    if trouble:
        return problem(Outcome.FAILED, trouble, uid)
    return problem(Outcome.FAILED, "The DICOM header is damaged and cannot be read (%s)."
                   % _short(exc))


def _known_uid(head: bytes, start: int) -> str:
    """The SOP Instance UID of a damaged little endian file, when it comes before the damage."""
    try:
        implicit = head[start + 4:start + 6] not in ALL_VRS
        raw, _ = _fast_elements(head, start, implicit, True)
        uid = _ascii(raw.get("SOPInstanceUID", b"")).rstrip("\0 ").strip()
    except (_Unusual, struct.error):
        return ""
    return uid if _UID_RE.match(uid) else ""


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


def _check_truncation(fp: Any, start: int, size: int, ds: Any, explicit: Optional[bool]
                      ) -> Optional[Walk]:
    """The structural walk of the data set (None: a deflated body it cannot walk)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and _text(meta, "TransferSyntaxUID") == DEFLATED_TS:
        # the body is zlib-compressed: offsets in it are not file offsets. pydicom reads a cut
        # deflate stream without complaint, so look for the stream's end.
        if not _deflate_complete(fp, start):
            return Walk(_DEFLATE_CUT, True, size)
        return None
    _, little = compat.read_encoding(ds)
    return walk_structure(fp, start, size, little is not False,
                          None if explicit is None else not explicit)


_DEFLATE_CUT = ("The file is truncated (its compressed data ends early): part of the image or "
                "its data is missing. Copy the file again from its original source.")


def _deflate_complete(fp: Any, start: int) -> bool:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # a raw deflate stream, as DICOM has it
    fp.seek(start)
    try:
        while not inflater.eof:
            chunk = fp.read(1 << 16)
            if not chunk:
                return False
            while chunk and not inflater.eof:
                inflater.decompress(chunk, 1 << 20)  # bounded: inflated data is thrown away
                chunk = inflater.unconsumed_tail
    except zlib.error:
        return False  # damaged: pydicom's read of the same bytes says what
    return True


def _is_encapsulated_or_deflated(meta_ts: str, implicit: bool, little: bool) -> bool:
    """Compressed syntaxes are always explicit VR little endian underneath."""
    if meta_ts in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE):
        return False
    return (not implicit) and little


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


# -- the fast path --------------------------------------------------------------------------
# Most archives hold plain Part 10 files in little endian syntaxes. For those the few values we
# need are picked straight out of the bytes, ~10x cheaper than a pydicom read; anything
# unusual (other syntaxes, character sets, multi-valued or odd values, damaged meta) returns
# None and takes the pydicom path above, so verdicts and texts stay exactly the same.
_FAST_TAGS = {
    0x00080005: "SpecificCharacterSet", 0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID", 0x00080020: "StudyDate", 0x00080060: "Modality",
    0x00081030: "StudyDescription", 0x0008103E: "SeriesDescription",
    0x00100010: "PatientName", 0x00100020: "PatientID", 0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID", 0x00200011: "SeriesNumber",
}
_FAST_META = {0x0002: "MediaStorageSOPClassUID", 0x0003: "MediaStorageSOPInstanceUID",
              0x0010: "TransferSyntaxUID"}
_LAST_FAST_TAG = 0x00200011
_WHOLE_FILE = 1 << 20  # files up to this size are read in one go (also for the truncation walk)
_HEAD_READ = 64 * 1024
_UID_KEYWORDS = {"SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"}
_ENCAPSULATED_PREFIXES = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
_HEAD = struct.Struct("<HHI").unpack_from  # a tag and the 4 bytes after it


class _Unusual(Exception):
    """Something the fast path does not handle: use pydicom."""


def _fast_read(path: str, size: int, mtime_ns: int, problem: Any) -> Optional[HeaderResult]:
    whole = size <= _WHOLE_FILE
    # a small file is read whole in one unbuffered read; a large one buffered, because the
    # truncation walk then reads it element by element
    with open(path, "rb", buffering=0 if whole else -1) as fp:
        buf = fp.read() if whole else fp.read(_HEAD_READ)
        if buf[128:132] != b"DICM":
            return None
        try:
            meta, start = _fast_meta(buf)
            meta_ts = meta.get("TransferSyntaxUID", "")
            if meta_ts == IMPLICIT_LE:
                implicit = True
            elif meta_ts == EXPLICIT_LE or meta_ts.startswith(_ENCAPSULATED_PREFIXES):
                implicit = False
            else:
                return None  # big endian, deflated, private or missing: pydicom decides
            if len(buf) < start + 8 or (buf[start + 4:start + 6] in ALL_VRS) == implicit:
                return None  # the data set is not encoded as the meta says
            raw, resume = _fast_elements(buf, start, implicit, whole)
            values = _fast_values(raw)
        except _Unusual:
            return None
        if not values["SOPClassUID"] or not values["SOPInstanceUID"]:
            return None  # cut before them, or stored out of order: pydicom looks further
        # The elements before ``resume`` were just read whole from ``buf``: the walk for
        # truncation takes over from there (unless the file grew since it was listed).
        walk_from = resume if resume is not None and len(buf) <= size else start
        # a large file is walked element by element to its end: it sees the pixel data too
        walk = (walk_buffer(buf, walk_from, size, implicit) if whole
                else walk_structure(fp, walk_from, size, True, implicit))
    meta_text = {k: meta.get(k, "") for k in _META_KEYWORDS}
    return _verdict(values, meta_text, len(raw), path, size, mtime_ns, True, walk,
                    implicit, True, problem, start)


def _fast_meta(buf: bytes) -> Tuple[Dict[str, str], int]:
    meta: Dict[str, str] = {}
    pos = 132
    end_of_buf = len(buf)
    while buf[pos:pos + 2] == b"\x02\x00":
        if pos + 8 > end_of_buf:
            raise _Unusual()
        _, elem, length = _HEAD(buf, pos)
        vr = buf[pos + 4:pos + 6]
        if vr in LONG_VRS:
            length, head = _U32.unpack_from(buf, pos + 8)[0], 12
        elif vr in ALL_VRS:
            length, head = length >> 16, 8
        else:
            raise _Unusual()
        end = pos + head + length
        if length == 0xFFFFFFFF or end > end_of_buf:
            raise _Unusual()
        name = _FAST_META.get(elem)
        if name is not None:
            meta[name] = _ascii(buf[pos + head:end]).rstrip("\0 ").strip()
        pos = end
    return meta, pos


def _fast_elements(buf: bytes, pos: int, implicit: bool, whole: bool
                   ) -> Tuple[Dict[str, bytes], Optional[int]]:
    """Raw values of the wanted top-level elements, and where the first element after them
    starts (None when the buffer ended first); raises _Unusual when unsure."""
    found: Dict[str, bytes] = {}
    end = len(buf)
    previous = -1
    while pos < end:
        if pos + 8 > end:
            if whole:
                break  # the truncation walk reports this
            raise _Unusual()
        group, elem, length = _HEAD(buf, pos)
        tag = group << 16 | elem
        if tag > _LAST_FAST_TAG:
            return found, pos
        if tag <= previous:
            raise _Unusual()  # out of order: a wanted element may come later
        previous = tag
        if implicit or group == 0xFFFE:
            pos += 8
        else:
            vr = buf[pos + 4:pos + 6]
            if vr in LONG_VRS:
                if pos + 12 > end:
                    raise _Unusual()
                length = _U32.unpack_from(buf, pos + 8)[0]
                pos += 12
            elif vr in ALL_VRS:
                length >>= 16  # the 2-byte length after the VR
                pos += 8
            else:
                raise _Unusual()
        if length == 0xFFFFFFFF:
            pos = _skip_undefined(buf, pos, implicit, 0)
            continue
        name = _FAST_TAGS.get(tag)
        if name is not None:
            if pos + length > end:
                raise _Unusual()
            found[name] = buf[pos:pos + length]
        pos += length
    if not whole:
        raise _Unusual()
    return found, None


def _element_length(buf: bytes, pos: int, implicit: bool) -> Tuple[int, int]:
    if implicit or buf[pos:pos + 2] == b"\xfe\xff":
        return _U32.unpack_from(buf, pos + 4)[0], 8
    vr = buf[pos + 4:pos + 6]
    if vr in LONG_VRS:
        if pos + 12 > len(buf):
            raise _Unusual()
        return _U32.unpack_from(buf, pos + 8)[0], 12
    if vr in ALL_VRS:
        return _U16.unpack_from(buf, pos + 6)[0], 8
    raise _Unusual()


def _skip_undefined(buf: bytes, pos: int, implicit: bool, depth: int) -> int:
    """Past an undefined-length sequence (or encapsulated value) starting at ``pos``."""
    if depth > 16:
        raise _Unusual()
    while True:
        if pos + 8 > len(buf):
            raise _Unusual()
        group, elem = _TAG.unpack_from(buf, pos)
        length = _U32.unpack_from(buf, pos + 4)[0]
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos
        if (group, elem) != (0xFFFE, 0xE000):
            raise _Unusual()
        if length != 0xFFFFFFFF:
            pos += length
            continue
        while True:  # an item of undefined length: its elements up to the item delimiter
            if pos + 8 > len(buf):
                raise _Unusual()
            if buf[pos:pos + 4] == b"\xfe\xff\x0d\xe0":
                pos += 8
                break
            length, head = _element_length(buf, pos, implicit)
            pos += head
            pos = _skip_undefined(buf, pos, implicit, depth + 1) if length == 0xFFFFFFFF \
                else pos + length


_UID_VALUES = tuple(k for k in _VALUE_KEYWORDS if k in _UID_KEYWORDS)
_TEXT_VALUES = tuple(k for k in _VALUE_KEYWORDS if k not in _UID_KEYWORDS)


def _fast_values(raw: Dict[str, bytes]) -> Dict[str, str]:
    charset = _ascii(raw.get("SpecificCharacterSet", b"")).strip(" \0")
    values: Dict[str, str] = {}
    for keyword in _UID_VALUES:
        data = raw.get(keyword, b"")
        if b"\\" in data or not data.isascii():
            raise _Unusual()  # multi-valued, or not a UID
        values[keyword] = data.decode("ascii").rstrip("\0 ").strip()
    for keyword in _TEXT_VALUES:
        data = raw.get(keyword, b"")
        if b"\\" in data:
            raise _Unusual()  # multi-valued: pydicom's text for it differs
        text = (data.decode("ascii") if data.isascii() and b"\x1b" not in data
                else _decode(data, charset)).strip()
        if "\0" in text:
            raise _Unusual()
        values[keyword] = text
    number = values["SeriesNumber"]
    if number and not (number.isdigit() and str(int(number)) == number):
        raise _Unusual()  # pydicom normalises IS values
    return values


def _ascii(data: bytes) -> str:
    if not data.isascii():
        raise _Unusual()
    return data.decode("ascii")


def _decode(data: bytes, charset: str) -> str:
    if data.isascii() and b"\x1b" not in data:
        return data.decode("ascii")
    if charset == "ISO_IR 100":
        return data.decode("latin-1")
    if charset == "ISO_IR 192":
        return data.decode("utf-8")  # UnicodeDecodeError: pydicom decides
    raise _Unusual()

"""In-memory transcoding for a destination that refused a file's own transfer syntax.

The sender streams files unchanged when it can. When the accepted context has another transfer
syntax, transcode_file() builds a Dataset that pynetdicom's send_c_store() encodes correctly as
Explicit or Implicit VR Little Endian: compressed pixel data decoded once to native bytes with
the Image Pixel attributes describing those bytes, big endian values swapped, deflate undone.
The source file is only read.
"""
from __future__ import annotations

import copy
import struct
from typing import Any, Dict, Iterator, List, Optional, Tuple

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from engine import compat
from engine.structure import TEXT_VRS, dictionary_vr

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
_TARGETS = {EXPLICIT_LE: False, IMPLICIT_LE: True}  # target -> implicit VR?

PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = (PIXEL_DATA, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float
_ENCAPSULATION_ONLY = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

RLE_LOSSLESS = "1.2.840.10008.1.2.5"
_J = "1.2.840.10008.1.2.4."
# Short names a clinic employee can match to the PACS's documentation.
_LABELS = {_J + k: v for k, v in (
    ("50", "JPEG Baseline"), ("51", "JPEG Extended"), ("57", "JPEG Lossless"),
    ("70", "JPEG Lossless SV1"), ("80", "JPEG-LS Lossless"), ("81", "JPEG-LS Near-Lossless"),
    ("90", "JPEG 2000 Lossless"), ("91", "JPEG 2000"), ("92", "JPEG 2000 Part 2 Lossless"),
    ("93", "JPEG 2000 Part 2"), ("201", "HTJ2K Lossless"), ("202", "HTJ2K Lossless RPCL"),
    ("203", "HTJ2K"))}
_LABELS[RLE_LOSSLESS] = "RLE Lossless"
# Lossy syntaxes -> Lossy Image Compression Method code (PS3.3 C.7.6.1.1.5.1).
_LOSSY_METHODS = {_J + k: v for k, v in (
    ("50", "ISO_10918_1"), ("51", "ISO_10918_1"), ("81", "ISO_14495_1"),
    ("91", "ISO_15444_1"), ("93", "ISO_15444_2"), ("203", "ISO_15444_15"))}
# Syntaxes whose frames are marker streams ending in EOI (JPEG, JPEG-LS) or EOC (JPEG 2000).
_MARKER_STREAMS = tuple(ts for ts in _LABELS if ts != RLE_LOSSLESS)
_JP2_BOX = b"\x00\x00\x00\x0cjP  "
# Lossy JPEG: decode to RGB, as DCMTK's dcmdjpeg does, since viewers expect that.
_JPEG_LOSSY = (_J + "50", _J + "51")


class TranscodeError(Exception):
    """A file cannot be converted; `reason` is a plain sentence for the person migrating."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def needs_transcode(file_ts: str, accepted_ts: str) -> bool:
    """True if a file in `file_ts` cannot be streamed unchanged on a context of `accepted_ts`."""
    return _clean(file_ts) != _clean(accepted_ts)


def transcode_file(path: str, target_ts: str, *, decompress: bool = True,
                   odd_length: bool = False) -> Dataset:
    """Read `path` and return a Dataset that send_c_store() encodes correctly in `target_ts`.

    `target_ts` is Explicit or Implicit VR Little Endian. `odd_length` (the header reader
    found the data set's length odd): odd values are padded, or DCMTK aborts on the message.
    Raises TranscodeError (only) when the file cannot be converted; its `reason` says why in
    plain words.
    """
    target = _clean(target_ts)
    if target not in _TARGETS:
        raise TranscodeError(f"Converting images to {_label(target)} is not supported.")
    try:
        return _transcode(path, target, decompress, odd_length)
    except TranscodeError:
        raise
    except MemoryError as exc:
        raise TranscodeError("There is not enough memory to convert this image.") from exc
    except Exception as exc:  # odd files hit library corners: report, do not crash the run
        raise TranscodeError(f"The file could not be converted: {_detail(exc)}") from exc


def _pad_odd_values(ds: Dataset) -> None:
    """Pad each odd value still in its raw bytes (pydicom writes those as they are, so a
    private or UN value stays odd) the way structure.even_copy does, inside sequences too."""
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        vr = elem.VR or dictionary_vr(tag)
        if vr == "SQ":
            for item in ds[tag].value or []:
                _pad_odd_values(item)
        elif getattr(elem, "is_raw", False) and elem.value is not None \
                and elem.length != 0xFFFFFFFF and elem.length % 2:
            pad = b" " if vr.encode() in TEXT_VRS else b"\0"
            ds[tag] = elem._replace(value=elem.value + pad, length=elem.length + 1)


def _transcode(path: str, target: str, decompress: bool, odd_length: bool) -> Dataset:
    ds = _read(path)
    for tag in [t for t in ds.keys() if t.group == 0]:
        del ds[tag]  # zero bytes after the last element, read as (0000,0000): not data
    if odd_length:  # InstanceHeader.odd_length
        _pad_odd_values(ds)
    src_ts = _source_ts(ds)
    pixels, updates = _take_pixels(ds, src_ts, decompress)
    out = _reencode_header(ds, _TARGETS[target])
    for tag, vr, value in pixels:
        out.add_new(tag, vr, value)
    _apply_updates(out, updates)
    out.file_meta = _file_meta(ds, out, target)
    return out


def _detail(exc: BaseException) -> str:
    """A library's message on one line, short enough for the audit CSV."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _clean(uid: str) -> str:
    return str(uid).strip().rstrip("\x00").strip()


def _label(ts: str) -> str:
    return _LABELS.get(ts) or UID(ts).name or ts


def _read(path: str) -> Dataset:
    try:
        ds = dcmread(path, force=True)  # opens the file read-only
    except Exception as exc:
        raise TranscodeError(f"The file could not be read as DICOM: {_detail(exc)}") from exc
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
        raise TranscodeError("The file is damaged or is not a DICOM object (no SOP Class "
                             "or SOP Instance UID was found), so it cannot be converted.")
    return ds


def _source_ts(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return _clean(ts)
    implicit, little = compat.read_encoding(ds)
    return IMPLICIT_LE if implicit else (EXPLICIT_LE if little is not False else EXPLICIT_BE)


def _is_encapsulated(ds: Dataset, ts: str) -> bool:
    try:
        return bool(UID(ts).is_compressed)
    except ValueError:  # private or unknown to this pydicom: judge by the element itself
        elem = ds.get(PIXEL_DATA)
        return elem is not None and elem.is_undefined_length


Pixels = List[Tuple[int, str, bytes]]


def _take_pixels(ds: Dataset, src_ts: str, decompress: bool) -> Tuple[Pixels, Dict[str, Any]]:
    """Remove the pixel element(s) from `ds`; return them converted, plus attribute updates."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        if all(k in ds for k in ("Rows", "BitsAllocated", "PhotometricInterpretation")):
            # pydicom 2 reads a file cut inside Pixel Data as an image without pixels
            raise TranscodeError("The image data is missing: the file is probably truncated "
                                 "(cut short), so it cannot be converted.")
        return [], {}  # SR, KOS, PR, PDF...: only the header is re-encoded
    if PIXEL_DATA in ds and _is_encapsulated(ds, src_ts):
        if not decompress:
            raise TranscodeError(
                f"The destination refused this image's compression ({_label(src_ts)}) and "
                "decompression is turned off, so the image cannot be sent.")
        _require_decoder(src_ts)
        if src_ts in _MARKER_STREAMS:
            _check_stream_ends(ds)
        return _decode(ds, src_ts)
    return _native_pixels(ds), {}


def _native_pixels(ds: Dataset) -> Pixels:
    swap = compat.read_encoding(ds)[1] is False
    pixels: Pixels = []
    for tag in (t for t in _PIXEL_TAGS if t in ds):
        elem = ds[tag]
        del ds[tag]  # drop our reference so a swapped copy does not double memory
        value = elem.value or b""
        expected = compat.expected_pixel_bytes(ds) if tag == PIXEL_DATA else None
        if expected is not None and len(value) < expected:
            raise TranscodeError(
                f"The image data is damaged: it holds {len(value)} bytes where the header "
                f"describes {expected}, so the file is probably truncated (cut short).")
        if swap:
            value = _swapped(value, _pixel_swap_width(ds, tag, elem.VR))
        pixels.append((tag, elem.VR, value))
    return pixels


def _require_decoder(ts: str) -> None:
    if compat.decoder_available(ts):
        return
    package = compat.decoder_package(ts)
    if package:
        raise TranscodeError(f"Cannot decompress {_label(ts)} images: the decoder is not "
                             f"installed (install the Python package {package})")
    raise TranscodeError(f"Cannot decompress {_label(ts)} images: this version of the "
                         "program has no decoder for that compression.")


def _pixel_swap_width(ds: Dataset, tag: int, vr: str) -> int:
    if tag != PIXEL_DATA:
        return 4 if tag == 0x7FE00008 else 8
    bits = int(ds.get("BitsAllocated", 16) or 16)
    # As pydicom reads big endian pixels: BitsAllocated-wide integers, and OW data of
    # 1 or 8 bits per pixel is still swapped as 16-bit words (PS3.5 7.3).
    width = bits // 8 if bits in (16, 32, 64) else 1
    return max(width, 2) if vr == "OW" else width


def _swapped(value: bytes, width: int) -> bytes:
    if width <= 1 or not value:
        return value
    if len(value) % width:
        raise TranscodeError("The image data is damaged: its length does not match its "
                             "big endian value size, so it cannot be converted.")
    import numpy as np

    arr = np.frombuffer(value, dtype=f"u{width}").byteswap()
    del value
    return arr.tobytes()


def _decode(ds: Dataset, ts: str) -> Tuple[Pixels, Dict[str, Any]]:
    """Decode the encapsulated Pixel Data of `ds` once into native bytes."""
    compressed_size = len(ds.PixelData)
    declared_bits = int(ds.get("BitsAllocated", 8) or 8)
    parts: List[bytes] = []
    photometric, kind, bits = str(ds.get("PhotometricInterpretation", "")), "u", declared_bits
    try:
        for chunk, photometric in compat.iter_decoded_chunks(ds, ts in _JPEG_LOSSY):
            chunk = _widen(chunk, declared_bits)
            kind, bits = chunk.dtype.kind, chunk.dtype.itemsize * 8
            parts.append(chunk.tobytes())
            del chunk
    except TranscodeError:
        raise
    except Exception as exc:
        missing = compat.missing_decoder_package(ts)
        if missing:  # another codec claimed the syntax but not this variant (e.g. 12-bit)
            raise TranscodeError(f"Cannot decompress this {_label(ts)} image with the decoders "
                                 f"installed ({_detail(exc)}): install the Python package "
                                 f"{missing}, which handles more kinds of {_label(ts)}") from exc
        if isinstance(exc, NotImplementedError):
            raise TranscodeError(f"Cannot decompress this {_label(ts)} image: the installed "
                                 f"decoder does not support its variant ({_detail(exc)})") from exc
        raise TranscodeError("The compressed image data is damaged and cannot be "
                             f"decoded: {_detail(exc)}") from exc
    lossy = _lossy_updates(ds, ts, compressed_size, sum(len(p) for p in parts))
    del ds[PIXEL_DATA]  # free the compressed bytes before joining the decoded ones
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    del parts
    _check_length(ds, data, bits)  # an odd length is padded when pydicom writes it
    updates = _pixel_updates(ds, photometric, kind, bits)
    updates.update(lossy)
    return [(PIXEL_DATA, "OB" if bits <= 8 else "OW", data)], updates


def _widen(chunk: Any, declared_bits: int) -> Any:
    """Keep the declared Bits Allocated when a codec returned a smaller container."""
    have = chunk.dtype.itemsize * 8
    if declared_bits in (16, 32, 64) and have < declared_bits:
        return chunk.astype(f"{chunk.dtype.kind}{declared_bits // 8}")
    return chunk


def _check_length(ds: Dataset, data: bytes, bits: int) -> None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    expected = frames * rows * cols * samples * bits // 8
    if len(data) != expected:
        raise TranscodeError(
            "The compressed image data is damaged and cannot be decoded: it holds "
            f"{len(data)} bytes of pixels where {expected} were expected.")


def _pixel_updates(ds: Dataset, photometric: str, kind: str, bits: int) -> Dict[str, Any]:
    stored = int(ds.get("BitsStored", bits) or bits)
    if bits > int(ds.get("BitsAllocated", bits) or bits) or stored > bits:
        stored = bits  # the codec needed a bigger container than the header claimed
    updates: Dict[str, Any] = {
        "PhotometricInterpretation": photometric,
        "BitsAllocated": bits,
        "BitsStored": stored,
        "HighBit": stored - 1,
        "PixelRepresentation": 1 if kind == "i" else 0,
    }
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        updates["PlanarConfiguration"] = 0  # decoders return samples interleaved
    for keyword in _ENCAPSULATION_ONLY:
        updates[keyword] = None
    return updates


def _lossy_updates(ds: Dataset, ts: str, packed: int, unpacked: int) -> Dict[str, Any]:
    """Keep the lossy compression history (PS3.3 C.7.6.1.1.5) once the data is native."""
    method = _LOSSY_METHODS.get(ts)
    if method == "ISO_14495_1" and _jpegls_near(ds.PixelData) == 0:
        method = None  # a Near-Lossless stream coded with NEAR=0 is in fact lossless
    if method is None:
        return {}
    methods = [str(m) for m in _as_list(ds.get("LossyImageCompressionMethod"))]
    ratios = [str(r) for r in _as_list(ds.get("LossyImageCompressionRatio"))]
    if methods[-1:] == [method]:
        pass  # this compression step is already recorded
    elif len(methods) == len(ratios) - 1:
        methods.append(method)  # a ratio without its method: the step that made this file
    else:
        methods.append(method)
        ratios.append(f"{unpacked / packed if packed else 0:.2f}")
    return {"LossyImageCompression": "01", "LossyImageCompressionMethod": methods,
            "LossyImageCompressionRatio": ratios}


def _as_list(value: Any) -> List[Any]:
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [] if value is None or value == "" else [value]


def _jpegls_near(pixel_data: bytes) -> Optional[int]:
    """NEAR parameter of the first JPEG-LS scan, or None if it cannot be found."""
    fragment = bytes(next(_fragments(pixel_data), b""))
    pos = fragment.find(b"\xff\xda")  # start of scan: Ls, Ns, Ns*(Ci, Tmi), NEAR
    if pos < 0 or pos + 5 > len(fragment):
        return None
    count = fragment[pos + 4]
    index = pos + 5 + 2 * count
    return fragment[index] if index < len(fragment) else None


def _fragments(pixel_data: bytes) -> Iterator[memoryview]:
    """The fragments of encapsulated Pixel Data (Basic Offset Table skipped), as views."""
    view, offset, index = memoryview(pixel_data), 0, 0
    while offset + 8 <= len(view):
        tag, length = struct.unpack("<II", view[offset:offset + 8])
        if tag != 0xE000FFFE or length == 0xFFFFFFFF:
            return  # sequence delimiter, or junk a decoder will reject
        if index:
            yield view[offset + 8:offset + 8 + length]
        offset, index = offset + 8 + length, index + 1


def _starts_frame(fragment: memoryview) -> bool:
    head = bytes(fragment[:8])
    return head[:3] == b"\xff\xd8\xff" or head[:4] == b"\xff\x4f\xff\x51" or head == _JP2_BOX


def _ends_frame(fragment: memoryview) -> bool:
    return b"\xff\xd9" in bytes(fragment[-8:])  # EOI / EOC, maybe followed by padding


def _check_stream_ends(ds: Dataset) -> None:
    """Refuse JPEG / JPEG-LS / JPEG 2000 frames cut short before their end marker.

    Decoders silently grey-fill a truncated JPEG, and libjpeg 1.3 can crash on a truncated
    JPEG-LS stream, so every frame must start with its start marker and end with EOI/EOC.
    """
    frames, previous, intact = 0, None, True
    for fragment in _fragments(ds.PixelData):
        if _starts_frame(fragment):
            intact = intact and (previous is None or _ends_frame(previous))
            frames += 1
        else:
            intact = intact and previous is not None  # data before the first frame start
        previous = fragment
    wanted = int(ds.get("NumberOfFrames", 1) or 1)
    if not intact or previous is None or not _ends_frame(previous) or frames < wanted:
        raise TranscodeError("The compressed image data is damaged and cannot be decoded: "
                             "a frame is cut short or missing (the file was probably "
                             "truncated).")


def _swap_other_values(ds: Dataset) -> None:
    """Big endian -> little: pydicom writes OW/OF/OD/OL/OV bytes as they are, so swap them."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                _swap_other_values(item)
        elif elem.VR in _SWAP_WIDTH and elem.value and elem.tag not in _PIXEL_TAGS:
            if len(elem.value) % _SWAP_WIDTH[elem.VR] == 0:
                elem.value = _swapped(elem.value, _SWAP_WIDTH[elem.VR])


def _reencode_header(ds: Dataset, implicit: bool) -> Dataset:
    """Everything but pixel data, re-encoded as the target and read back as the target."""
    try:
        if compat.read_encoding(ds)[1] is False:
            _swap_other_values(ds)
        data = compat.dataset_to_bytes(ds, implicit, True)
        return compat.bytes_to_dataset(data, implicit, True)
    except TranscodeError:
        raise
    except Exception as exc:
        raise TranscodeError("The file's header is damaged and cannot be converted for "
                             f"the destination: {_detail(exc)}") from exc


def _apply_updates(ds: Dataset, updates: Dict[str, Any]) -> None:
    for keyword, value in updates.items():
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)


def _file_meta(src: Dataset, out: Dataset, target: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    old = getattr(src, "file_meta", None)
    if old is not None:
        for elem in old:
            meta.add(copy.deepcopy(elem))
    meta.TransferSyntaxUID = UID(target)
    if "MediaStorageSOPClassUID" not in meta:
        meta.MediaStorageSOPClassUID = out.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in meta:
        meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return meta

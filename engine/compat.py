"""The one place that knows how pydicom 2.4 / 3.0 and pynetdicom 2.0 / 3.0 differ.

Everything else in the engine imports these helpers instead of testing versions itself, so
the legacy stack (the Windows exe) and the modern stack stay in step.
"""
from __future__ import annotations

import io
from typing import Any, FrozenSet, Iterator, List, Optional, Tuple

import pydicom
import pynetdicom
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr, dcmwrite, write_dataset
from pydicom.uid import UID


def _major(version: str) -> int:
    return int(version.split(".")[0])


PYDICOM_MAJOR: int = _major(pydicom.__version__)
PYNETDICOM_MAJOR: int = _major(pynetdicom.__version__)

# Package a user installs to get a decoder, by transfer syntax family. pydicom decodes RLE
# itself on both stacks, so it is never missing.
_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
         "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
_JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
_J2K = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93")
_HTJ2K = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")


def decoder_package(ts: str) -> Optional[str]:
    """The Python package that provides a decoder for `ts`, or None if there is none."""
    if ts in _JPEG:
        return "pylibjpeg-libjpeg"
    if ts in _JPEG_LS:
        # pydicom 3 prefers pyjpegls; the legacy stack decodes JPEG-LS with libjpeg 1.x.
        return "pyjpegls" if PYDICOM_MAJOR >= 3 else "pylibjpeg-libjpeg"
    if ts in _J2K or (ts in _HTJ2K and PYDICOM_MAJOR >= 3):
        return "pylibjpeg-openjpeg"  # HTJ2K needs pydicom 3: no package helps pydicom 2
    return None


_MODULE_OF_PACKAGE = {"pylibjpeg-libjpeg": "libjpeg", "pylibjpeg-openjpeg": "openjpeg",
                      "pyjpegls": "jpeg_ls"}


def missing_decoder_package(ts: str) -> Optional[str]:
    """The preferred decoder package for `ts` when it is not installed, else None.

    Another decoder (Pillow) may still claim the syntax but fail on variants such as 12-bit
    JPEG; then the missing package, not damaged data, is the likely cause.
    """
    import importlib.util

    package = decoder_package(ts)
    if package is None:
        return None
    try:
        found = importlib.util.find_spec(_MODULE_OF_PACKAGE[package]) is not None
    except (ImportError, ValueError, AttributeError):  # e.g. blocked in sys.modules
        found = False
    return None if found else package


# --- dataset encoding -------------------------------------------------------------------


def read_encoding(ds: Dataset) -> Tuple[Optional[bool], Optional[bool]]:
    """(is_implicit_vr, is_little_endian) of the bytes `ds` was decoded from, or (None, None)."""
    if PYDICOM_MAJOR >= 3:
        return ds.original_encoding
    return ds.read_implicit_vr, ds.read_little_endian


def _set_flags(ds: Dataset, implicit_vr: Optional[bool], little_endian: Optional[bool]) -> None:
    if PYDICOM_MAJOR >= 3:
        # The public setters are deprecated in pydicom 3 (they warn on every call); the
        # private fields are what write_dataset() and pynetdicom still read.
        ds._is_implicit_VR = implicit_vr
        ds._is_little_endian = little_endian
    else:
        ds.is_implicit_VR = implicit_vr
        ds.is_little_endian = little_endian


def _get_flags(ds: Dataset) -> Tuple[Optional[bool], Optional[bool]]:
    if PYDICOM_MAJOR >= 3:
        return getattr(ds, "_is_implicit_VR", None), getattr(ds, "_is_little_endian", None)
    return ds.is_implicit_VR, ds.is_little_endian


def _materialize(ds: Dataset) -> None:
    """Parse every raw element (recursively): raw bytes are only valid in the old encoding."""
    for elem in ds:  # iterating converts RawDataElement -> DataElement
        if elem.VR == "SQ":
            for item in elem.value:
                _materialize(item)


def set_encoding(ds: Dataset, implicit_vr: bool, little_endian: bool) -> None:
    """Make `ds` encode as (implicit_vr, little_endian) wherever it is written or sent.

    Raw elements are parsed first and ambiguous VRs resolved, then the dataset is marked as
    originally encoded that way: pynetdicom 3 compares that against the file meta Transfer
    Syntax UID. Multi-byte OW/OF/OD/OL values are NOT byte-swapped here (see transcode.py).
    """
    _prepare_for_writing(ds)
    _set_flags(ds, implicit_vr, little_endian)
    if PYDICOM_MAJOR >= 3:
        ds.set_original_encoding(implicit_vr, little_endian)
    else:
        ds.set_original_encoding(implicit_vr, little_endian, ds.read_encoding)


def _prepare_for_writing(ds: Dataset) -> None:
    """Parse raw elements and resolve ambiguous VRs so any target encoding can be written.

    A file whose dataset encoding differs from its meta Transfer Syntax (it happens) reads fine,
    but its raw elements would be written with the wrong VR handling if copied as-is.
    """
    old_little = read_encoding(ds)[1]
    _materialize(ds)
    try:
        correct_ambiguous_vr(ds, True if old_little is None else old_little)
    except AttributeError:
        pass  # unresolvable (e.g. no Pixel Representation): fails later only if VR is needed


def dataset_to_bytes(ds: Dataset, implicit_vr: bool, little_endian: bool) -> bytes:
    """Encode the dataset (no preamble, no file meta) as pynetdicom's encode() would.

    Raw elements are parsed first (see _prepare_for_writing), so this also works for a dataset
    read from a file whose actual encoding differs from its file meta.
    """
    _prepare_for_writing(ds)
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit_vr
    fp.is_little_endian = little_endian
    saved = _get_flags(ds)
    try:
        write_dataset(fp, ds)
    finally:
        # pydicom 2 copies the stream's flags onto the dataset: undo that side effect.
        _set_flags(ds, *saved)
    return fp.getvalue()


def bytes_to_dataset(data: bytes, implicit_vr: bool, little_endian: bool) -> Dataset:
    """Decode dataset bytes (no file meta) encoded as (implicit_vr, little_endian)."""
    ds = read_dataset(io.BytesIO(data), implicit_vr, little_endian)
    _set_flags(ds, implicit_vr, little_endian)
    return ds


def write_file_bytes(ds: Dataset) -> bytes:
    """A complete Part 10 file (preamble, file meta, dataset) encoded per its Transfer Syntax."""
    buf = io.BytesIO()
    if PYDICOM_MAJOR >= 3:
        dcmwrite(buf, ds, enforce_file_format=True)
        return buf.getvalue()
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    saved = _get_flags(ds)
    try:
        if ts and not UID(ts).is_private:
            # pydicom 2 encodes by the dataset flags, not the file meta: make them agree.
            _set_flags(ds, UID(ts).is_implicit_VR, UID(ts).is_little_endian)
        dcmwrite(buf, ds, write_like_original=False)
    finally:
        _set_flags(ds, *saved)
    return buf.getvalue()


# --- SOP classes ----------------------------------------------------------------------------

# Image storage classes named in pydicom 3 but not yet in 2.4, so both stacks judge alike.
_NEWER_IMAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.6.3",     # Photoacoustic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.8",  # Confocal Microscopy Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.9",  # Confocal Microscopy Tiled Pyramidal Image Storage
)


def image_storage_classes() -> FrozenSet[str]:
    """SOP Class UIDs pydicom names "... Image Storage": their IODs require Pixel Data."""
    from pydicom._uid_dict import UID_dictionary  # same module and layout in 2.4 and 3.0

    named = {uid for uid, entry in UID_dictionary.items() if "Image Storage" in entry[0]}
    return frozenset(named.union(_NEWER_IMAGE_CLASSES))


# --- pixel decoding -----------------------------------------------------------------------


def decoder_available(ts: str) -> bool:
    """True if this stack has an installed decoder for compressed pixel data in `ts`."""
    uid = UID(ts)
    if PYDICOM_MAJOR >= 3:
        from pydicom.pixels import get_decoder

        try:
            return bool(get_decoder(uid).is_available)
        except NotImplementedError:  # no decoder class at all for this syntax
            return False
    import pydicom.config

    for handler in pydicom.config.pixel_data_handlers:
        if handler is None or not handler.supports_transfer_syntax(uid):
            continue
        if handler.is_available() and _v2_handler_has_codec(handler, uid):
            return True
    return False


def _v2_handler_has_codec(handler: Any, uid: UID) -> bool:
    """pydicom 2 handlers report "available" when any of their codecs is present."""
    name = handler.__name__.rsplit(".", 1)[-1]
    if name == "pylibjpeg_handler":
        return _pylibjpeg_has(uid)
    if name == "pillow_handler":  # Pillow may be built without JPEG or JPEG 2000
        if uid in getattr(handler, "PillowJPEG2000TransferSyntaxes", ()):
            return bool(getattr(handler, "HAVE_JPEG2K", False))
        return bool(getattr(handler, "HAVE_JPEG", False))
    return True


def _pylibjpeg_has(uid: UID) -> bool:
    try:
        from pylibjpeg.utils import get_pixel_data_decoders
    except ImportError:
        return False
    return uid in get_pixel_data_decoders()


def iter_decoded_chunks(ds: Dataset, ybr_to_rgb: bool) -> Iterator[Tuple[Any, str]]:
    """Decode the compressed Pixel Data of `ds`, yielding (ndarray, photometric) pieces.

    Each piece holds one or more whole frames, shaped (..., rows, columns[, samples]) with
    samples interleaved (Planar Configuration 0). `photometric` names the colour space of the
    yielded samples. With `ybr_to_rgb`, YBR_FULL/YBR_FULL_422 output is converted to RGB; else
    it stays YBR_FULL. Codecs that undo YBR_ICT/YBR_RCT themselves give RGB either way.
    Callers must drop each piece before asking for the next (memory).
    """
    if PYDICOM_MAJOR >= 3:
        return _iter_decoded_v3(ds, ybr_to_rgb)
    return _iter_decoded_v2(ds, ybr_to_rgb)


def _iter_decoded_v3(ds: Dataset, ybr_to_rgb: bool) -> Iterator[Tuple[Any, str]]:
    from pydicom.pixels import get_decoder

    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    # Frame by frame: peak memory is one decoded frame plus what the caller keeps.
    for arr, props in decoder.iter_array(ds, as_rgb=ybr_to_rgb):
        pi = str(props["photometric_interpretation"])
        yield arr, ("YBR_FULL" if pi == "YBR_FULL_422" else pi)


def _iter_decoded_v2(ds: Dataset, ybr_to_rgb: bool) -> Iterator[Tuple[Any, str]]:
    from pydicom.pixel_data_handlers.util import convert_color_space

    # pydicom 2 has no per-frame API: decode everything once with the handler pydicom picks.
    ds.convert_pixel_data()
    arr = ds._pixel_array
    ds._pixel_array = None  # the caller owns the only reference from here on
    ds._pixel_id = {}
    pi = _v2_output_photometric(str(ds.PhotometricInterpretation))
    if pi == "YBR_FULL" and ybr_to_rgb:
        if arr.ndim == 4:
            for idx in range(arr.shape[0]):  # per frame: the float temporaries stay small
                arr[idx] = convert_color_space(arr[idx], "YBR_FULL", "RGB")
        else:
            arr = convert_color_space(arr, "YBR_FULL", "RGB")
        pi = "RGB"
    yield arr, pi


def _v2_output_photometric(pi: str) -> str:
    """Colour space of pydicom 2 pixel_array output for a compressed source labelled `pi`.

    pydicom 2 handlers (Pillow, pylibjpeg) keep JPEG YCbCr unconverted but upsampled, and
    OpenJPEG undoes the J2K multi-component transform (YBR_ICT/YBR_RCT -> RGB).
    """
    if pi in ("YBR_ICT", "YBR_RCT"):
        return "RGB"
    return "YBR_FULL" if pi in ("YBR_FULL", "YBR_FULL_422") else pi


def expected_pixel_bytes(ds: Dataset) -> Optional[int]:
    """Bytes of native Pixel Data the Image Pixel attributes describe, or None if unknown."""
    if PYDICOM_MAJOR >= 3:
        from pydicom.pixels.utils import get_expected_length
    else:
        from pydicom.pixel_data_handlers.util import get_expected_length
    try:
        return int(get_expected_length(ds, "bytes"))
    except Exception:  # missing or nonsense attributes: nothing to check against
        return None


# --- pynetdicom ---------------------------------------------------------------------------


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings the migrator relies on (same on 2.0 and 3.0)."""
    from pynetdicom import _config

    # send_c_store(path) then streams the file's bytes straight from disk without decoding
    # the dataset: faster and the bytes sent are exactly the bytes stored. Needs file meta
    # and a context whose transfer syntax matches the file's (else transcode first).
    _config.STORE_SEND_CHUNKED_DATASET = True
    # Old archives hold UIDs that break the letter of PS3.5 (leading zeros, >64 chars);
    # refusing them would strand those studies. Keep pynetdicom lenient (its default).
    _config.ENFORCE_UID_CONFORMANCE = False


def encapsulated_frames(ds: Dataset) -> List[bytes]:
    """The compressed frames of encapsulated Pixel Data (both pydicom versions)."""
    nr_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if PYDICOM_MAJOR >= 3:
        from pydicom.encaps import generate_frames

        return list(generate_frames(ds.PixelData, number_of_frames=nr_frames))
    from pydicom.encaps import generate_pixel_data_frame

    return list(generate_pixel_data_frame(ds.PixelData, nr_frames))


def detach_association(assoc: Any, wait_s: float = 5.0
                       ) -> Tuple[Any, int, List[Tuple[int, str, str]]]:
    """Stop pynetdicom's threads of an established (requestor) association and hand over its
    socket: (socket, peer maximum PDU length, [(context id, abstract, transfer syntax)]).

    Only the DUL thread is stopped (its socket stays open); the association's reactor then
    notices the stopped DUL and ends by itself. Raises RuntimeError when this pynetdicom does
    not look as expected, so the caller can keep using pynetdicom instead.
    """
    dul = assoc.dul
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is None or not hasattr(dul, "_kill_thread") or not assoc.is_established:
        raise RuntimeError("cannot take over this association")
    contexts = [(int(cx.context_id), str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in assoc.accepted_contexts]
    peer_max = int(assoc.acceptor.maximum_length or 0)
    dul._kill_thread = True
    dul.join(wait_s)
    if dul.is_alive():
        raise RuntimeError("pynetdicom's network thread did not stop")
    return sock, peer_max, contexts


def encode_dataset(ds: Dataset, ts: str) -> bytes:
    """Encode ``ds`` for sending in transfer syntax ``ts`` exactly as send_c_store() would."""
    from pynetdicom.dsutils import encode

    uid = UID(ts)
    data = encode(ds, uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated)
    if data is None:
        raise ValueError("Failed to encode the supplied dataset")
    return data

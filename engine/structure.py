"""A quick structural walk over a file's elements to catch truncation.

pydicom reads a file cut short without complaint (the last value simply comes back shorter),
and a PACS would then store a silently damaged object. Walking the element lengths — without
reading values — finds where the file ends too early. Nested sequences are followed.

A file cut exactly between two elements looks complete to that walk, so it also notes whether
the data set holds pixel data at its top level; the header reader flags an image without
it (sent with a warning). Fewer than 8 bytes after the last element (or a run of zero bytes)
cannot be an element: the walk says where the data set really ends, so that only the data set
is sent (a strict receiver such as DCMTK aborts on an odd-length message).
"""
from __future__ import annotations

import struct
from typing import Any, List, NamedTuple, Optional, Tuple

LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UR", b"UT", b"UN"}
ALL_VRS = LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS",
                      b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"SV", b"TM", b"UI",
                      b"UL", b"US", b"UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
MAX_DEPTH = 64  # sequences in real files nest a few levels; pydicom reads deeper ones too
# (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data
PIXEL_GROUP, PIXEL_ELEMENTS = 0x7FE0, frozenset((0x0008, 0x0009, 0x0010))


class Truncated(Exception):
    pass


class TooDeep(Truncated):
    pass


class Walk(NamedTuple):
    """What a structural walk found."""
    trouble: Optional[str]  # a plain-language reason the file cannot be sent, or None
    pixels: bool  # the data set holds Pixel Data, Float or Double Float Pixel Data at top level
    end: int  # where the last complete top-level element ends (the file size: nothing after it)


class _Reader:
    def __init__(self, fp: Any, size: int, little: bool, implicit: Optional[bool]) -> None:
        self.fp, self.size = fp, size
        self.end = "<" if little else ">"
        self.implicit = implicit is True
        self.pixels = False  # set by the walk on top-level pixel data

    def tail(self, pos: int) -> bytes:
        self.fp.seek(pos)
        return bytes(self.fp.read(8))

    def header(self, pos: int) -> Tuple[Tuple[int, int], bytes, int, int]:
        """(tag, vr, value length, header length) of the element at ``pos``."""
        self.fp.seek(pos)
        head = self.fp.read(12)
        if len(head) < 8:
            raise Truncated("it ends inside an element header")
        group, elem = struct.unpack(self.end + "HH", head[:4])
        vr = head[4:6]
        if group == 0xFFFE or self.implicit or vr not in ALL_VRS:  # items, implicit VR
            return (group, elem), b"", struct.unpack(self.end + "I", head[4:8])[0], 8
        if vr in LONG_VRS:
            if len(head) < 12:
                raise Truncated("it ends inside an element header")
            return (group, elem), vr, struct.unpack(self.end + "I", head[8:12])[0], 12
        return (group, elem), vr, struct.unpack(self.end + "H", head[6:8])[0], 8


_REASON = ("The file is truncated (%s): part of the image or its data is missing. Copy the "
           "file again from its original source.")
_DEEP_REASON = ("The file's sequences are nested more than %d levels deep, which no real file "
                "does: it is damaged. Copy the file again from its original source." % MAX_DEPTH)


def _failed(exc: Truncated, size: int, pixels: bool) -> Walk:
    return Walk(_DEEP_REASON if isinstance(exc, TooDeep) else _REASON % exc, pixels, size)


def walk_structure(fp: Any, start: int, size: int, little: bool = True,
                   implicit: Optional[bool] = None) -> Walk:
    """Walk the data set starting at ``start`` in the file ``fp`` of ``size`` bytes.

    ``implicit``: the data set is known to be implicit VR (True), so a length whose bytes
    happen to spell a VR is not taken for one; None looks at each element."""
    reader = _Reader(fp, size, little, implicit)
    try:
        end = _walk_elements(reader, start, size, None, 0)
    except Truncated as exc:
        return _failed(exc, size, reader.pixels)
    return Walk(None, reader.pixels, end)


def walk_buffer(buf: bytes, start: int, size: int, implicit: Optional[bool] = None) -> Walk:
    """walk_structure for a little-endian file read whole into ``buf`` (``size`` is the size
    the file had when listed): the same verdicts, in one tight loop without a seek, read or
    call per element. On a real CT header this walk was the largest cost of reading it."""
    pixels = [False]
    try:
        end = _buffer_elements(buf, start, size, None, 0, implicit is True, pixels)
    except Truncated as exc:
        return _failed(exc, size, pixels[0])
    return Walk(None, pixels[0], end)


def _walk_elements(r: _Reader, pos: int, limit: int, stop: Optional[Tuple[int, int]],
                   depth: int) -> int:
    """Walk elements from ``pos`` up to ``limit`` or the ``stop`` delimiter; return the end."""
    last_group = -1
    while pos < limit:
        if limit - pos < 8 and stop is None:
            return pos  # too short for an element: padding, or an element header cut off
        here = pos
        tag, vr, length, head_len = r.header(pos)
        pos += head_len
        if stop is not None and tag == stop:
            return pos
        if not tag[0] and stop is None and (last_group > 0 or (
                tag == (0, 0) and not length and _zeros_to_end(r, here))):
            return here  # zero padding, or bytes that are no element, after the last element
        last_group = tag[0]
        if tag[0] == PIXEL_GROUP and depth == 0 and tag[1] in PIXEL_ELEMENTS:
            r.pixels = True  # not an icon's pixels inside a sequence item
        if length == UNDEFINED:
            if depth >= MAX_DEPTH:
                raise TooDeep()
            pos = _walk_items(r, pos, depth + 1)
            continue
        if pos + length > r.size:
            raise Truncated("%d bytes are missing at the end" % (pos + length - r.size))
        pos += length
    if stop is not None:
        raise Truncated("a sequence is not closed before the end of the file")
    return pos


def _zeros_to_end(r: _Reader, pos: int) -> bool:
    r.fp.seek(pos)
    while pos < r.size:
        chunk = r.fp.read(min(1 << 16, r.size - pos))
        if not chunk:
            break
        if chunk.strip(b"\0"):
            return False
        pos += len(chunk)
    return True


def _walk_items(r: _Reader, pos: int, depth: int) -> int:
    """Walk the items of an undefined-length sequence or of encapsulated pixel data."""
    while True:
        tag, _, length, head_len = r.header(pos)
        pos += head_len
        if tag == SEQ_END:
            return pos
        if tag != ITEM:
            raise Truncated("the element list is damaged")
        if length == UNDEFINED:
            pos = _walk_elements(r, pos, r.size, ITEM_END, depth)
        elif pos + length > r.size:
            raise Truncated("%d bytes are missing at the end" % (pos + length - r.size))
        else:
            pos += length


_HEAD_LE = struct.Struct("<HHI").unpack_from  # the tag and the 4 bytes after it
_U32_LE = struct.Struct("<I").unpack_from
_CUT_HEADER = "it ends inside an element header"


def _buffer_elements(buf: bytes, pos: int, size: int, stop: Optional[Tuple[int, int]],
                     depth: int, implicit: bool, pixels: List[bool]) -> int:
    """_walk_elements over memory, up to ``size`` or the ``stop`` delimiter. Kept apart and
    inline because it runs for every element of every small file."""
    n = len(buf)
    all_vrs, long_vrs = ALL_VRS, LONG_VRS
    last_group = -1
    while pos < size:
        if size - pos < 8 and stop is None:
            return pos  # too short for an element: padding, or an element header cut off
        if pos + 8 > n:
            raise Truncated(_CUT_HEADER)
        group, elem, length = _HEAD_LE(buf, pos)
        if not group and stop is None and (last_group > 0 or (
                not elem and not length and not buf[pos:size].strip(b"\0"))):
            return pos  # zero padding, or bytes that are no element, after the last element
        last_group = group
        if group == 0xFFFE or implicit:
            pos += 8
        else:
            vr = buf[pos + 4:pos + 6]
            if vr not in all_vrs:
                pos += 8
            elif vr in long_vrs:
                if pos + 12 > n:
                    raise Truncated(_CUT_HEADER)
                length = _U32_LE(buf, pos + 8)[0]
                pos += 12
            else:
                length >>= 16  # the 2-byte length that follows the VR
                pos += 8
        if stop is not None and group == stop[0] and elem == stop[1]:
            return pos
        if group == PIXEL_GROUP and depth == 0 and elem in PIXEL_ELEMENTS:
            pixels[0] = True  # not an icon's pixels inside a sequence item
        if length == UNDEFINED:
            if depth >= MAX_DEPTH:
                raise TooDeep()
            pos = _buffer_items(buf, pos, size, depth + 1, implicit, pixels)
            continue
        if pos + length > size:
            raise Truncated("%d bytes are missing at the end" % (pos + length - size))
        pos += length
    if stop is not None:
        raise Truncated("a sequence is not closed before the end of the file")
    return pos


def _buffer_items(buf: bytes, pos: int, size: int, depth: int, implicit: bool,
                  pixels: List[bool]) -> int:
    """_walk_items over memory (item tags always have the 8-byte header)."""
    while True:
        if pos + 8 > len(buf):
            raise Truncated(_CUT_HEADER)
        group, elem, length = _HEAD_LE(buf, pos)
        pos += 8
        if group != 0xFFFE or elem not in (0xE000, 0xE0DD):
            if not implicit and group != 0xFFFE and buf[pos - 4:pos - 2] in LONG_VRS \
                    and pos + 4 > len(buf):
                raise Truncated(_CUT_HEADER)  # as the file walk, which reads the header first
            raise Truncated("the element list is damaged")
        if elem == 0xE0DD:
            return pos  # the sequence delimiter
        if length == UNDEFINED:
            pos = _buffer_elements(buf, pos, size, ITEM_END, depth, implicit, pixels)
        elif pos + length > size:
            raise Truncated("%d bytes are missing at the end" % (pos + length - size))
        else:
            pos += length


# -- making every value even ------------------------------------------------------------------
# PS3.5 7.1.1: every value has an even length. A file that breaks the rule is read by pydicom
# without complaint, but an odd-length message makes DCMTK abort the association. The copy
# below pads each odd value (text with a space, anything else with a zero byte, as PS3.5 6.2
# does) and corrects the lengths of the defined-length sequences and items around it.
TEXT_VRS = {b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"PN", b"SH",
            b"ST", b"TM", b"UC", b"UR", b"UT"}


def even_copy(data: bytes, little: bool, implicit: bool) -> bytes:
    """The data set ``data`` (its elements only, no file meta) with every odd-length value
    padded. Raises Truncated when ``data`` is not a complete data set."""
    out = bytearray()
    try:
        _even_elements(data, 0, len(data), False, little, implicit, out, 0)
    except struct.error as exc:
        raise Truncated("it ends inside an element header") from exc
    return bytes(out)


def _even_elements(data: bytes, pos: int, limit: int, in_item: bool, little: bool,
                   implicit: bool, out: bytearray, depth: int) -> int:
    end = "<" if little else ">"
    if depth > MAX_DEPTH:
        raise TooDeep()
    while pos < limit:
        group, elem = struct.unpack_from(end + "HH", data, pos)
        if group == 0xFFFE:  # the item delimiter of an undefined-length item
            out += data[pos:pos + 8]
            pos += 8
            if in_item and elem == 0xE00D:
                return pos
            continue
        vr: Optional[bytes] = data[pos + 4:pos + 6]
        if implicit or vr not in ALL_VRS:
            vr, head_len, at, fmt = None, 8, 4, "I"
        elif vr in LONG_VRS:
            head_len, at, fmt = 12, 8, "I"
        else:
            head_len, at, fmt = 8, 6, "H"
        length = struct.unpack_from(end + fmt, data, pos + at)[0]
        head = bytearray(data[pos:pos + head_len])
        pos += head_len
        tag = (group, elem)
        if length == UNDEFINED:
            out += head
            fragments = tag == (PIXEL_GROUP, 0x0010) and vr != b"SQ"
            # an undefined-length UN holds a sequence encoded implicit VR (PS3.5 6.2.2)
            pos = _even_items(data, pos, len(data), True, little, implicit or vr == b"UN",
                              out, fragments, depth + 1)
            continue
        if pos + length > len(data):
            raise Truncated("%d bytes are missing at the end" % (pos + length - len(data)))
        if vr == b"SQ" or (vr is None and dictionary_vr(group << 16 | elem) == "SQ"):
            body = bytearray()
            _even_items(data, pos, pos + length, False, little, implicit, body, False, depth + 1)
        else:
            body = bytearray(data[pos:pos + length])
            if length % 2:
                text = vr in TEXT_VRS if vr is not None else \
                    dictionary_vr(group << 16 | elem).encode() in TEXT_VRS
                body += b" " if text else b"\0"
        if fmt == "H" and len(body) > 0xFFFF:
            body = bytearray(data[pos:pos + length])  # no room to say so: left as it was
        struct.pack_into(end + fmt, head, at, len(body))
        out += head + body
        pos += length
    if in_item:
        raise Truncated("a sequence is not closed before the end of the file")
    return pos


def _even_items(data: bytes, pos: int, limit: int, undefined: bool, little: bool,
                implicit: bool, out: bytearray, fragments: bool, depth: int) -> int:
    """The items of a sequence (up to its delimiter, or to ``limit`` for a defined length),
    or the fragments of encapsulated pixel data (an odd fragment gets a trailing zero byte,
    which PS3.5 A.4 allows for every encoding)."""
    end = "<" if little else ">"
    while undefined or pos < limit:
        group, elem, length = struct.unpack_from(end + "HHI", data, pos)
        head = bytearray(data[pos:pos + 8])
        pos += 8
        if (group, elem) == SEQ_END:
            out += head
            return pos
        if (group, elem) != ITEM:
            raise Truncated("the element list is damaged")
        if length == UNDEFINED and not fragments:
            out += head
            pos = _even_elements(data, pos, len(data), True, little, implicit, out, depth)
            continue
        if pos + length > len(data):
            raise Truncated("%d bytes are missing at the end" % (pos + length - len(data)))
        if fragments:
            body = bytearray(data[pos:pos + length])
            if length % 2:
                body += b"\0"
        else:
            body = bytearray()
            _even_elements(data, pos, pos + length, False, little, implicit, body, depth)
        struct.pack_into(end + "I", head, 4, len(body))
        out += head + body
        pos += length
    return pos


def dictionary_vr(tag: int) -> str:
    """The VR of a standard element (implicit VR files do not say); "" when unknown."""
    from pydicom.datadict import dictionary_VR  # only odd files get here
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""

"""A quick structural walk over a file's elements to catch truncation.

pydicom reads a file cut short without complaint (the last value simply comes back shorter),
and a PACS would then store a silently damaged object. Walking the element lengths — without
reading values — finds where the file ends too early. Nested sequences are followed.

A file cut exactly between two elements looks complete to that walk, so it also notes whether
the data set holds pixel data at its top level; the header reader flags an image without
it (sent with a warning).
"""
from __future__ import annotations

import struct
from typing import Any, List, Optional, Tuple

LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UR", b"UT", b"UN"}
ALL_VRS = LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS",
                      b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"SV", b"TM", b"UI",
                      b"UL", b"US", b"UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
MAX_DEPTH = 32
# (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data
PIXEL_GROUP, PIXEL_ELEMENTS = 0x7FE0, frozenset((0x0008, 0x0009, 0x0010))


class Truncated(Exception):
    pass


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


def walk_structure(fp: Any, start: int, size: int, little: bool = True,
                   implicit: Optional[bool] = None) -> Tuple[Optional[str], bool]:
    """(a plain-language reason when the data set starting at ``start`` is cut short, or None;
    whether the data set holds Pixel Data, Float or Double Float Pixel Data at its top level).

    ``implicit``: the data set is known to be implicit VR (True), so a length whose bytes
    happen to spell a VR is not taken for one; None looks at each element."""
    reader = _Reader(fp, size, little, implicit)
    try:
        _walk_elements(reader, start, size, None, 0)
    except Truncated as exc:
        return _REASON % exc, reader.pixels
    return None, reader.pixels


def walk_buffer(buf: bytes, start: int, size: int, implicit: Optional[bool] = None
                ) -> Tuple[Optional[str], bool]:
    """walk_structure for a little-endian file read whole into ``buf`` (``size`` is the size
    the file had when listed): the same verdicts, in one tight loop without a seek, read or
    call per element. On a real CT header this walk was the largest cost of reading it."""
    pixels = [False]
    try:
        _buffer_elements(buf, start, size, None, 0, implicit is True, pixels)
    except Truncated as exc:
        return _REASON % exc, pixels[0]
    return None, pixels[0]


def _walk_elements(r: _Reader, pos: int, limit: int, stop: Optional[Tuple[int, int]],
                   depth: int) -> int:
    """Walk elements from ``pos`` up to ``limit`` or the ``stop`` delimiter; return the end."""
    while pos < limit:
        if limit - pos < 8 and stop is None:
            if not r.tail(pos).strip(b"\0"):
                return limit  # trailing zero padding after the last element
            raise Truncated("it ends inside an element header")
        tag, vr, length, head_len = r.header(pos)
        pos += head_len
        if stop is not None and tag == stop:
            return pos
        if tag[0] == PIXEL_GROUP and depth == 0 and tag[1] in PIXEL_ELEMENTS:
            r.pixels = True  # not an icon's pixels inside a sequence item
        if length == UNDEFINED:
            if depth >= MAX_DEPTH:
                raise Truncated("sequences are nested too deeply")
            pos = _walk_items(r, pos, depth + 1)
            continue
        if pos + length > r.size:
            raise Truncated("%d bytes are missing at the end" % (pos + length - r.size))
        pos += length
    if stop is not None:
        raise Truncated("a sequence is not closed before the end of the file")
    return pos


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
    while pos < size:
        if size - pos < 8 and stop is None:
            if not buf[pos:pos + 8].strip(b"\0"):
                return size  # trailing zero padding after the last element
            raise Truncated(_CUT_HEADER)
        if pos + 8 > n:
            raise Truncated(_CUT_HEADER)
        group, elem, length = _HEAD_LE(buf, pos)
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
                raise Truncated("sequences are nested too deeply")
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

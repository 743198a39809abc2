"""The index's fast path over the raw scanner, and the Pixel Data length check.

:func:`scan_header` reads the raw bytes of selected top-level elements of a Part 10 file
(explicit or implicit VR little endian) over a 32 KiB read window, with the element
headers, VR tables, File Meta and fragment walking of :mod:`~pacs_workbench.dicom.raw`;
whenever anything is unusual it returns ``None`` and the caller reads the file with
pydicom (:func:`~pacs_workbench.dicom.read.read_header`), so pydicom stays the authority on
every odd file. :func:`pixel_data_problem` checks, for either path, that a Pixel Data
element ends inside the file.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.uid import PrivateTransferSyntaxes

from pacs_workbench.dicom.raw import (
    DEFLATED_LE,
    EXPLICIT_BE,
    IMPLICIT_LE,
    ITEM,
    ITEM_DELIM,
    LONG_VR_CODES,
    PIXEL_DATA_TAGS,
    SEQ_DELIM,
    SHORT_VR_CODES,
    UNDEFINED,
    VALID_VRS,
    VR_CODES,
    FragmentError,
    RawFormatError,
    dictionary_vr,
    element_header,
    parse_meta,
    walk_fragments,
)

_WINDOW = 32 * 1024  # bytes read per window; most headers fit in the first one
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
_TAG_BE = struct.Struct(">HH")
_EXPLICIT_HEADER = struct.Struct("<HH2sH").unpack_from
_IMPLICIT_HEADER = struct.Struct("<HHL").unpack_from


# --- Pixel Data length -------------------------------------------------------------------------


def _handle_reader(handle: BinaryIO) -> Callable[[int, int], bytes]:
    def read(pos: int, n: int) -> bytes:
        handle.seek(pos)
        return handle.read(n)

    return read


def _pixel_length_problem(value_pos: int, length: int, size: int) -> str | None:
    if value_pos + length > size:
        return f"truncated: Pixel Data needs {length} bytes but only {size - value_pos} remain"
    return None


def _fragments_problem(handle: BinaryIO, pos: int, size: int, little: bool) -> str | None:
    try:
        walk_fragments(_handle_reader(handle), pos, size, little)
    except FragmentError as exc:
        return str(exc)
    return None


def pixel_data_problem(handle: BinaryIO, pos: int, size: int, *, little: bool, explicit: bool) -> str | None:
    """A truncation message when the Pixel Data element whose header is at ``pos`` runs past the end, else ``None``.

    ``None`` too when the element at ``pos`` is not Pixel Data (or a float variant).
    """
    handle.seek(pos)
    header = handle.read(12)
    cut = f"truncated: Pixel Data element header cut off ({size - pos} bytes left)"
    if len(header) < 8:
        return cut
    group, elem = (_TAG if little else _TAG_BE).unpack_from(header, 0)
    tag = group << 16 | elem
    if tag not in PIXEL_DATA_TAGS:
        return None
    if explicit and header[4:6] not in VR_CODES:
        explicit = False  # an implicit VR data set under an explicit syntax
    if explicit and len(header) < 12:
        return cut
    try:
        _, _, length, size_of_header = element_header(header, 0, not explicit, len(header), little)
    except RawFormatError:
        return cut
    if length != UNDEFINED:
        return _pixel_length_problem(pos + size_of_header, length, size)
    return _fragments_problem(handle, pos + size_of_header, size, little)


# --- selected top-level values, over a read window (the index) ---------------------------------


@dataclass(frozen=True)
class HeaderScan:
    """Raw values of selected top-level elements, from :func:`scan_header`.

    Attributes
    ----------
    elements
        ``tag -> (VR, value bytes)`` for the requested tags present in the file
        (the VR from the file, or from the data dictionary for implicit VR).
    transfer_syntax
        (0002,0010) Transfer Syntax UID.
    media_sop_class, media_sop_instance
        (0002,0002) and (0002,0003) from the File Meta Information.
    implicit_vr
        Whether the data set is implicit VR little endian.
    pixel_problem
        A truncation message for the Pixel Data element, or ``None``.
    """

    elements: dict[int, tuple[str, bytes]]
    transfer_syntax: str | None
    media_sop_class: str | None
    media_sop_instance: str | None
    implicit_vr: bool
    pixel_problem: str | None


class _Window:
    """A read window over a file: element headers far apart cost one seek each."""

    __slots__ = ("_handle", "base", "buf", "size")

    def __init__(self, handle: BinaryIO, size: int, first: bytes) -> None:
        self._handle = handle
        self.size = size
        self.buf = first
        self.base = 0

    def ensure(self, pos: int, n: int) -> bool:
        if pos + n > self.size:
            return False
        if pos >= self.base and pos + n <= self.base + len(self.buf):
            return True
        self._handle.seek(pos)
        self.buf = self._handle.read(max(n, _WINDOW))
        self.base = pos
        return len(self.buf) >= n


#: Always kept by :func:`scan_header`: (0008,0005) Specific Character Set, (0008,0016) SOP
#: Class UID and (0008,0018) SOP Instance UID.
SCAN_ALWAYS = (0x00080005, 0x00080016, 0x00080018)


#: (0002,0002) Media Storage SOP Class UID, (0002,0003) its Instance UID, (0002,0010) Transfer Syntax UID.
_META_KEPT = frozenset({0x00020002, 0x00020003, 0x00020010})


def scan_header(handle: BinaryIO, size: int, tags: Collection[int]) -> HeaderScan | None:
    """Read the raw values of ``tags`` from a Part 10 file without pydicom.

    Handles the common case only: ``DICM`` preamble, explicit VR little endian File Meta,
    and a data set in implicit or explicit VR little endian (any compressed transfer
    syntax). Walks top-level element headers until Pixel Data, skipping values (and
    nested sequences) it was not asked for, and checks the Pixel Data length against
    the file size.

    Parameters
    ----------
    handle
        The open file, positioned anywhere.
    size
        The file's size in bytes.
    tags
        Integer tags to keep (top level only); :data:`SCAN_ALWAYS` are always kept.

    Returns
    -------
    HeaderScan or None
        ``None`` whenever the file is unusual (no preamble, big endian, deflated, an
        unknown VR, an element past the end of the file, File Meta longer than the first
        window, ...): read it with :func:`~pacs_workbench.dicom.read.read_header`
        instead, which also produces the error message. Validate the result
        (:func:`~pacs_workbench.dicom.values.validate_scan`) before trusting the values.
    """
    try:
        return _scan(handle, size, tags)
    except (RawFormatError, struct.error, UnicodeDecodeError):
        return None


def _scan(handle: BinaryIO, size: int, tags: Collection[int]) -> HeaderScan | None:
    handle.seek(0)
    win = _Window(handle, size, handle.read(_WINDOW))
    if len(win.buf) < 132 or win.buf[128:132] != b"DICM":
        return None
    meta_elements, pos = parse_meta(win.buf, 132)
    if pos + 8 > size:
        return None  # nothing but File Meta (or a cut header after it): pydicom decides
    meta: dict[int, str] = {}
    for e in meta_elements:
        if e.vr not in VALID_VRS:
            return None
        if e.tag in _META_KEPT:
            meta[e.tag] = win.buf[e.value_start : e.value_end].decode("latin-1").strip(" \0")
    ts = meta.get(0x00020010)
    if ts is None or ts in (EXPLICIT_BE, DEFLATED_LE) or ts in PrivateTransferSyntaxes:
        return None
    implicit = ts == IMPLICIT_LE
    wanted = set(tags)
    wanted.update(SCAN_ALWAYS)
    elements: dict[int, tuple[str, bytes]] = {}
    pixel = _scan_dataset(win, pos, implicit, wanted, elements)
    problem = None
    if pixel is not None:
        value_pos, length = pixel
        if length == UNDEFINED:
            problem = _fragments_problem(handle, value_pos, size, True)
        else:
            problem = _pixel_length_problem(value_pos, length, size)
    return HeaderScan(
        elements=elements,
        transfer_syntax=ts,
        media_sop_class=meta.get(0x00020002),
        media_sop_instance=meta.get(0x00020003),
        implicit_vr=implicit,
        pixel_problem=problem,
    )


def _scan_dataset(
    win: _Window, pos: int, implicit: bool, wanted: set[int], out: dict[int, tuple[str, bytes]]
) -> tuple[int, int] | None:
    """Walk the top-level data set; return Pixel Data's (value position, length), if any."""
    # The hot loop of indexing: :func:`element_header` is inlined (one unpack for tag, VR
    # and short length), the window's bounds live in locals and the window is only asked
    # for more bytes when the next header is not already in memory.
    size = win.size
    buf, base = win.buf, win.base
    limit = len(buf)
    pixel_tags = PIXEL_DATA_TAGS
    vr_short, vr_long = SHORT_VR_CODES, LONG_VR_CODES
    first = True
    while True:
        if pos + 8 > size:
            if pos < size:
                raise RawFormatError("cut element header")  # read_header reports it
            return None
        o = pos - base
        if o < 0 or o + 12 > limit:
            if not win.ensure(pos, min(12, size - pos)):
                raise RawFormatError("cut element header")
            buf, base = win.buf, win.base
            limit = len(buf)
            o = pos - base
        if implicit:
            group, elem, length = _IMPLICIT_HEADER(buf, o)
            if first and 0x40 < buf[o + 4] < 0x5B and 0x40 < buf[o + 5] < 0x5B:
                raise RawFormatError("looks explicit")  # pydicom switches encodings here
            raw_vr = b""
            vpos = pos + 8
        else:
            group, elem, raw_vr, length = _EXPLICIT_HEADER(buf, o)
            if raw_vr in vr_short:
                vpos = pos + 8
            elif raw_vr in vr_long:
                if o + 12 > limit:
                    raise RawFormatError("cut element header")  # fewer than 12 bytes left in the file
                length = _U32.unpack_from(buf, o + 8)[0]
                vpos = pos + 12
            else:
                raise RawFormatError("unknown VR")
        if group == 0xFFFE or group == 0x0002:
            raise RawFormatError("misplaced element")
        tag = group << 16 | elem
        first = False
        if tag in pixel_tags:
            return vpos, length
        if length == UNDEFINED:
            if not implicit and raw_vr != b"SQ":
                raise RawFormatError("undefined length")
            pos = _skip_sequence(win, vpos, implicit)
            buf, base = win.buf, win.base
            limit = len(buf)
            continue
        if tag in wanted:
            vo = vpos - base
            if vo + length > limit:
                if not win.ensure(vpos, length):
                    raise RawFormatError("value past the end")
                buf, base = win.buf, win.base
                limit = len(buf)
                vo = vpos - base
            out[tag] = (raw_vr.decode("ascii") if raw_vr else dictionary_vr(tag), buf[vo : vo + length])
        elif vpos + length > size:
            raise RawFormatError("value past the end")
        pos = vpos + length


def _window_header(win: _Window, pos: int, implicit: bool) -> tuple[int, bytes, int, int]:
    """:func:`element_header` at file position ``pos``, reading more of the file when needed."""
    o = pos - win.base
    if o < 0 or o + 12 > len(win.buf):
        if not win.ensure(pos, min(12, win.size - pos)):
            raise RawFormatError("cut element header")
        o = pos - win.base
    return element_header(win.buf, o, implicit, len(win.buf))


def _skip_sequence(win: _Window, pos: int, implicit: bool) -> int:
    """Skip the items of an undefined-length sequence; return the position after it."""
    while True:
        tag, _, length, _ = _window_header(win, pos, True)  # item headers: tag and 4-byte length
        if tag == SEQ_DELIM:
            return pos + 8
        if tag != ITEM:
            raise RawFormatError("malformed sequence")
        if length == UNDEFINED:
            pos = _skip_item(win, pos + 8, implicit)
        else:
            if pos + 8 + length > win.size:
                raise RawFormatError("item past the end")
            pos += 8 + length


def _skip_item(win: _Window, pos: int, implicit: bool) -> int:
    """Skip the elements of an undefined-length item; return the position after it."""
    while True:
        # _window_header inlined: this loop runs once per nested element
        o = pos - win.base
        if o < 0 or o + 12 > len(win.buf):
            if not win.ensure(pos, min(12, win.size - pos)):
                raise RawFormatError("cut element header")
            o = pos - win.base
        tag, code, length, header = element_header(win.buf, o, implicit, len(win.buf))
        if tag == ITEM_DELIM:
            return pos + 8
        if tag >> 16 == 0xFFFE:
            raise RawFormatError("misplaced delimiter")
        if not implicit and code not in VR_CODES:
            raise RawFormatError("unknown VR")  # e.g. an implicit VR item inside an explicit data set
        vpos = pos + header
        if length == UNDEFINED:
            if not implicit and code != b"SQ":
                raise RawFormatError("undefined length")
            pos = _skip_sequence(win, vpos, implicit)
            continue
        if vpos + length > win.size:
            raise RawFormatError("value past the end")
        pos = vpos + length

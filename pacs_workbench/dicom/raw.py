"""The one byte-level DICOM scanner: element headers, VRs, transfer syntaxes and lengths.

Everything that reads DICOM as bytes goes through this module, so one VR table and one
element-header reader (:func:`element_header`) know Explicit and Implicit VR, little and
big endian, undefined lengths, encapsulated Pixel Data (:func:`walk_fragments`) and the
Deflated transfer syntax. Two readers are built on it:

* :func:`~pacs_workbench.dicom.scan.scan_header`, the index's fast path
  (:mod:`~pacs_workbench.dicom.scan`): it walks the top-level element headers of a
  Part 10 file over a 32 KiB read window, keeps the raw bytes of the requested tags only
  and checks the Pixel Data length against the file size. Whenever anything is unusual it
  returns ``None`` and the caller reads the file with pydicom
  (:func:`pacs_workbench.dicom.read.read_header`), which stays the authority on odd files.
* :func:`read_file`, for de-identification: it splits a Part 10 file into its file meta
  and a tree of :class:`Element` (tag, VR and byte offsets; sequences hold their items),
  so the engine copies kept elements byte for byte and encodes only what it changes.
  Implicit and Explicit VR Little Endian, Deflated Explicit VR Little Endian (inflated
  here) and every encapsulated transfer syntax are read; Big Endian and files whose
  structure does not parse raise :class:`RawFormatError` (the quarantine reason). It
  fails closed on what cannot be trusted, since kept elements are copied as they are: an
  Explicit VR element whose VR is not a DICOM VR, or disagrees with the data dictionary
  for a public tag (``(0008,0020) Study Date has VR UL, expected DA``; multi-VR
  attributes accept each of their VRs, ``UN`` is read with the dictionary VR, PS3.5
  6.2.2), and sequences nested deeper than :data:`MAX_SEQUENCE_DEPTH` levels (the audit
  could not check them: pydicom reads sequences recursively).

:func:`sniff_dicom` and :func:`is_dicom_file` decide from the first bytes whether a file
can be DICOM at all; :func:`encode_element` and its kin encode what the engine writes.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import dictionary_VR

ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data.
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
#: Deepest sequence nesting accepted (the top-level data set is depth 0).
MAX_SEQUENCE_DEPTH = 32
#: Every VR of PS3.5 Table 6.2-1.
VALID_VRS = frozenset(
    {
        "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
        "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV",
    }
)  # fmt: skip
#: Explicit VR headers of these VRs have a 2-byte reserved field and a 4-byte length.
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
#: The same tables as the two bytes of an encoded header.
VR_CODES = frozenset(vr.encode("ascii") for vr in VALID_VRS)
LONG_VR_CODES = frozenset(vr.encode("ascii") for vr in LONG_VRS)
SHORT_VR_CODES = VR_CODES - LONG_VR_CODES

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
_U16_BE = struct.Struct(">H")
_U32_BE = struct.Struct(">I")
_TAG_BE = struct.Struct(">HH")
_ITEM_HEADER = struct.Struct("<HHL")
_ITEM_HEADER_BE = struct.Struct(">HHL")


class RawFormatError(ValueError):
    """The bytes are not DICOM this module can walk (the message is the quarantine reason)."""


# --- VRs ---------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def dictionary_vr(tag: int) -> str:
    """The data dictionary's VR of ``tag`` as pydicom spells it (``"US or SS"``), ``"UN"`` when unknown."""
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


@lru_cache(maxsize=8192)
def implicit_vr(tag: int) -> str:
    """The VR of ``tag`` when the encoding does not say (implicit VR)."""
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1:
        return "LO" if 0x0010 <= element <= 0x00FF else "UN"
    if element == 0:
        return "UL"
    vr = dictionary_vr(tag)
    if vr == "OB or OW":
        return "OW"
    if " or " in vr:
        return vr.split(" or ")[0]
    return vr


@lru_cache(maxsize=8192)
def dictionary_vrs(tag: int) -> frozenset[str] | None:
    """The VRs the data dictionary allows for a public ``tag`` (``None``: unknown tag or no VR)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    if not vr or vr == "NONE":
        return None
    return frozenset(vr.split(" or "))


def tag_name(tag: int) -> str:
    """``(gggg,eeee) Name`` for a reason message (the dictionary name when there is one)."""
    from pydicom.datadict import dictionary_description

    label = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    try:
        return f"{label} {dictionary_description(tag)}"
    except KeyError:
        return label


@lru_cache(maxsize=1 << 16)
def vr_problem(tag: int, vr: str) -> str | None:
    """Why an encoded ``vr`` cannot be trusted for ``tag`` (not a DICOM VR, or not its dictionary VR), or ``None``.

    Cached: a parser asks this for every element, and a study repeats the same few hundred tags.
    """
    if vr not in VALID_VRS:
        return f"{tag_name(tag)} has unknown VR {vr}"
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1 or element == 0 or vr == "UN":
        return None
    allowed = dictionary_vrs(tag)
    if allowed is not None and vr not in allowed:
        return f"{tag_name(tag)} has VR {vr}, expected {' or '.join(sorted(allowed))}"
    return None


def check_vr(tag: int, vr: str) -> None:
    """Raise :class:`RawFormatError` when an explicit ``vr`` is unknown or not the dictionary VR of ``tag``."""
    problem = vr_problem(tag, vr)
    if problem is not None:
        raise RawFormatError(problem)


# --- element headers ---------------------------------------------------------------------------


def element_header(buf: bytes, pos: int, implicit: bool, end: int, little: bool = True) -> tuple[int, bytes, int, int]:
    """``(tag, VR code, value length, header length)`` of the element header at ``pos``.

    The VR code is the two encoded bytes (``b""`` for implicit VR; callers decide whether
    they accept it); a long VR (:data:`LONG_VRS`) has a 12-byte header. Raises
    :class:`RawFormatError` when the header runs past ``end``.
    """
    if pos + 8 > end:
        raise RawFormatError("truncated file (element header runs past the end)")
    group, elem = (_TAG if little else _TAG_BE).unpack_from(buf, pos)
    if implicit:
        return (group << 16) | elem, b"", (_U32 if little else _U32_BE).unpack_from(buf, pos + 4)[0], 8
    code = buf[pos + 4 : pos + 6]
    if code in LONG_VR_CODES:
        if pos + 12 > end:
            raise RawFormatError("truncated file (element header runs past the end)")
        return (group << 16) | elem, code, (_U32 if little else _U32_BE).unpack_from(buf, pos + 8)[0], 12
    return (group << 16) | elem, code, (_U16 if little else _U16_BE).unpack_from(buf, pos + 6)[0], 8


class FragmentError(RawFormatError):
    """Encapsulated Pixel Data that does not walk; ``malformed`` tells a bad item from a cut file."""

    def __init__(self, message: str, *, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


def walk_fragments(read: Callable[[int, int], bytes], pos: int, size: int, little: bool = True) -> int:
    """The end (after its Sequence Delimitation Item) of encapsulated Pixel Data whose items start at ``pos``.

    ``read(pos, n)`` returns up to ``n`` bytes at ``pos`` of data ``size`` bytes long, so
    the items of a large Pixel Data element are walked without reading their values.

    Raises
    ------
    FragmentError
        With a message (``truncated: ...``) that says which item is cut or malformed.
    """
    unpack = (_ITEM_HEADER if little else _ITEM_HEADER_BE).unpack_from
    n_items = 0
    while True:
        header = read(pos, 8)
        if len(header) < 8:
            raise FragmentError(
                f"truncated: encapsulated Pixel Data ends after {n_items} items without a delimiter", malformed=False
            )
        group, elem, length = unpack(header, 0)
        tag = group << 16 | elem
        if tag == SEQ_DELIM:
            return pos + 8
        if tag != ITEM or length == UNDEFINED:
            raise FragmentError(f"truncated: encapsulated Pixel Data item {n_items} is malformed", malformed=True)
        if pos + 8 + length > size:
            raise FragmentError(
                f"truncated: encapsulated Pixel Data item {n_items} needs {length} bytes "
                f"but only {size - pos - 8} remain",
                malformed=False,
            )
        pos += 8 + length
        n_items += 1


# --- sniffing ----------------------------------------------------------------------------------


def sniff_dicom(head: bytes) -> str | None:
    """Guess how a file is encoded from its first bytes.

    Parameters
    ----------
    head
        At least the first 132 bytes of the file (fewer when the file is shorter).

    Returns
    -------
    str or None
        ``"part10"`` when bytes 128-131 are ``DICM``; ``"explicit_le"``,
        ``"implicit_le"`` or ``"explicit_be"`` for a bare data set whose first element
        is in group 0002 (File Meta) or 0008 (the usual first group, e.g. (0008,0005)
        Specific Character Set); ``None`` when the bytes cannot start a DICOM data set.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "part10"
    if len(head) < 8:
        return None
    group_le = _U16.unpack_from(head, 0)[0]
    vr = head[4:6]
    if group_le in (0x0002, 0x0008):
        if vr in VR_CODES:
            return "explicit_le"
        length = _U32.unpack_from(head, 4)[0]
        # An implicit VR first element is short (Specific Character Set, Image Type,
        # group length); a huge length means these bytes are something else.
        if not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B) and length < 0x10000:
            return "implicit_le"
        return None
    if _U16_BE.unpack_from(head, 0)[0] == 0x0008 and vr in VR_CODES:
        return "explicit_be"
    return None


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file's first bytes look like DICOM (see :func:`sniff_dicom`).

    Cheap (reads 132 bytes); a ``True`` does not promise the rest of the file parses,
    use :func:`~pacs_workbench.dicom.read.read_header` for that. Unreadable paths give ``False``.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return sniff_dicom(head) is not None


# --- the whole file, as a tree (de-identification) ---------------------------------------------


@dataclass(slots=True)
class Element:
    """One encoded data element.

    Attributes
    ----------
    tag
        ``(group << 16) | element``.
    vr
        Explicit VR, or the dictionary VR for implicit VR (``UN`` for private elements).
    start, value_start, value_end, end
        Byte offsets: header start, value start and end, end of the whole element
        (for undefined lengths: after the delimiter).
    items
        Items of a sequence (each a list of elements), else ``None``.
    implicit
        Whether the element itself is encoded in Implicit VR (items of a sequence
        stored as UN are, inside an Explicit VR file).
    """

    tag: int
    vr: str
    start: int
    value_start: int
    value_end: int
    end: int
    items: list[list[Element]] | None = None
    implicit: bool = False


@dataclass
class RawFile:
    """A parsed Part 10 file.

    ``body`` holds the data set bytes (inflated for the deflated transfer syntax); the
    offsets of ``elements`` point into it.
    """

    transfer_syntax: str
    implicit: bool
    deflated: bool
    meta: dict[int, bytes]
    body: bytes
    elements: list[Element]


def _parse_items(
    buf: bytes, pos: int, end: int, implicit: bool, defined_end: int | None, depth: int
) -> tuple[list[list[Element]], int]:
    if depth > MAX_SEQUENCE_DEPTH:
        raise RawFormatError(f"sequence nesting deeper than {MAX_SEQUENCE_DEPTH} levels")
    items: list[list[Element]] = []
    limit = defined_end if defined_end is not None else end
    while True:
        if defined_end is not None and pos >= defined_end:
            return items, pos
        if pos + 8 > limit:
            raise RawFormatError("truncated file (sequence runs past the end)")
        group, elem = _TAG.unpack_from(buf, pos)
        tag = (group << 16) | elem
        length = _U32.unpack_from(buf, pos + 4)[0]
        if tag == SEQ_DELIM:
            return items, pos + 8
        if tag != ITEM:
            raise RawFormatError("malformed sequence (expected an item)")
        if length == UNDEFINED:
            elements, pos = parse_dataset(buf, pos + 8, limit, implicit, in_item=True, depth=depth)
        else:
            item_end = pos + 8 + length
            if item_end > limit:
                raise RawFormatError("truncated file (item runs past the end)")
            elements, _ = parse_dataset(buf, pos + 8, item_end, implicit, in_item=False, depth=depth)
            pos = item_end
        items.append(elements)


#: The text of each DICOM VR code, looked up rather than decoded for every element.
_VR_TEXT = {code: code.decode("ascii") for code in VR_CODES}


def _unknown_vr_text(code: bytes) -> str:
    """The text of a VR code that is no DICOM VR (two capitals, which the VR check refuses), else raise."""
    if not (65 <= code[0] <= 90 and 65 <= code[1] <= 90):
        raise RawFormatError("malformed data set (invalid VR)")
    return code.decode("ascii")


def parse_dataset(
    buf: bytes, pos: int, end: int, implicit: bool, *, in_item: bool = False, depth: int = 0
) -> tuple[list[Element], int]:
    """Parse elements from ``pos`` to ``end`` (or to an item delimiter when ``in_item``).

    ``depth`` is the sequence nesting of this data set (0 at the top level).
    """
    out: list[Element] = []
    while pos < end:
        tag, code, length, header = element_header(buf, pos, implicit, end)
        group = tag >> 16
        if tag == ITEM_DELIM:
            if not in_item:
                raise RawFormatError("malformed data set (unexpected item delimiter)")
            return out, pos + 8
        if group == 0xFFFE:
            raise RawFormatError("malformed data set (unexpected delimiter)")
        if implicit:
            vr = implicit_vr(tag)
        else:
            vr = _VR_TEXT.get(code) or _unknown_vr_text(code)
            problem = vr_problem(tag, vr)
            if problem is not None:
                raise RawFormatError(problem)
        value_start = pos + header
        items = None
        if length == UNDEFINED:
            if tag == PIXEL_DATA:
                stop = _fragments_end(buf, value_start, end)
                value_end = stop - 8
            elif vr in ("SQ", "UN") or implicit:
                # an undefined-length UN is a sequence encoded in Implicit VR (PS3.5 6.2.2)
                if vr == "UN" and group % 2 == 0 and implicit_vr(tag) not in ("SQ", "UN"):
                    raise RawFormatError(f"{tag_name(tag)} has undefined length but is not a sequence")
                items, stop = _parse_items(buf, value_start, end, implicit or vr == "UN", None, depth + 1)
                value_end = stop - 8
                if vr == "UN":
                    vr = "SQ"
            else:
                raise RawFormatError(f"undefined length on a {vr} element")
        else:
            value_end = value_start + length
            if value_end > end:
                raise RawFormatError("truncated file (a data element runs past the end of the file)")
            stop = value_end
            if vr == "UN" and group % 2 == 0 and not implicit:
                # a public element stored as UN: read it with its dictionary VR (a sequence
                # stored as UN is encoded in Implicit VR Little Endian, PS3.5 6.2.2)
                known = implicit_vr(tag)
                if known == "SQ":
                    items, _ = _parse_items(buf, value_start, value_end, True, value_end, depth + 1)
                vr = known
            elif vr == "SQ":
                items, _ = _parse_items(buf, value_start, value_end, implicit, value_end, depth + 1)
        out.append(Element(tag, vr, pos, value_start, value_end, stop, items, implicit))
        pos = stop
    if in_item:
        raise RawFormatError("truncated file (item without delimiter)")
    return out, pos


def read_file(data: bytes) -> RawFile:
    """Parse a DICOM Part 10 file (preamble, ``DICM``, file meta, data set).

    Raises
    ------
    RawFormatError
        Not Part 10, big endian, or a structure that does not parse (truncated files).
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        raise RawFormatError("not DICOM Part 10 (no DICM prefix)")
    meta_elements, pos = parse_meta(data, 132)
    meta = {e.tag: data[e.value_start : e.value_end] for e in meta_elements}
    ts_bytes = meta.get(0x00020010)
    if ts_bytes is None:
        raise RawFormatError("no transfer syntax in the file meta")
    ts = ts_bytes.decode("ascii", "replace").strip(" \x00")
    if ts == EXPLICIT_BE:
        raise RawFormatError("big-endian transfer syntax is not supported")
    body = data[pos:]
    deflated = ts == DEFLATED_LE
    if deflated:
        try:
            body = zlib.decompress(body, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise RawFormatError("deflated data set does not inflate") from exc
    implicit = ts == IMPLICIT_LE
    elements, _ = parse_dataset(body, 0, len(body), implicit)
    return RawFile(ts, implicit, deflated, meta, body, elements)


def _fragments_end(buf: bytes, pos: int, end: int) -> int:
    """End of encapsulated Pixel Data (after its sequence delimiter) in the buffer."""
    try:
        return walk_fragments(lambda p, n: buf[p : min(p + n, end)], pos, end)
    except FragmentError as exc:
        if exc.malformed:
            raise RawFormatError("malformed encapsulated pixel data") from None
        raise RawFormatError("truncated file (encapsulated pixel data runs past the end)") from None


def parse_meta(data: bytes, pos: int) -> tuple[list[Element], int]:
    """File meta elements (always Explicit VR Little Endian, PS3.10 7.1), up to the first tag outside group 2.

    Stops quietly where ``data`` ends (the scanner passes its first window); an element
    that runs past it raises :class:`RawFormatError`. VR codes are not checked here.
    """
    out: list[Element] = []
    end = len(data)
    while pos + 8 <= end:
        if _TAG.unpack_from(data, pos)[0] != 0x0002:
            break
        tag, code, length, header = element_header(data, pos, False, end)
        value_start = pos + header
        value_end = value_start + length
        if length == UNDEFINED or value_end > end:
            raise RawFormatError("malformed file meta information")
        out.append(Element(tag, code.decode("ascii", "replace"), pos, value_start, value_end, value_end))
        pos = value_end
    return out, pos


# --- encoding ----------------------------------------------------------------------------------


def encode_element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    """One element with a defined length (``value`` already padded to even length)."""
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        return _TAG.pack(group, elem) + _U32.pack(len(value)) + value
    if vr in LONG_VRS:
        return _TAG.pack(group, elem) + vr.encode("ascii") + b"\x00\x00" + _U32.pack(len(value)) + value
    if len(value) > 0xFFFF:
        raise RawFormatError(f"value too long for VR {vr}")
    return _TAG.pack(group, elem) + vr.encode("ascii") + _U16.pack(len(value)) + value


def encode_sequence(tag: int, items: list[bytes], implicit: bool) -> bytes:
    """A sequence of undefined length whose items (encoded contents) have undefined length."""
    group, elem = tag >> 16, tag & 0xFFFF
    head = _TAG.pack(group, elem) + (_U32.pack(UNDEFINED) if implicit else b"SQ\x00\x00" + _U32.pack(UNDEFINED))
    parts = [head]
    for item in items:
        parts.append(b"\xfe\xff\x00\xe0\xff\xff\xff\xff")
        parts.append(item)
        parts.append(b"\xfe\xff\x0d\xe0\x00\x00\x00\x00")
    parts.append(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    return b"".join(parts)


def pad(value: bytes, vr: str) -> bytes:
    """Pad to even length: NUL for UI and binary VRs, space for text."""
    if len(value) % 2 == 0:
        return value
    return value + (b"\x00" if vr in ("UI", "OB", "UN") else b" ")


def encode_meta(elements: list[tuple[int, str, bytes]]) -> bytes:
    """Preamble, ``DICM`` and the file meta group (with its group length)."""
    body = b"".join(encode_element(tag, vr, pad(value, vr), False) for tag, vr, value in sorted(elements))
    length = encode_element(0x00020000, "UL", _U32.pack(len(body)), False)
    return b"\x00" * 128 + b"DICM" + length + body


def deflate(body: bytes) -> bytes:
    """Raw deflate (no zlib header), as the Deflated transfer syntax requires."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = compressor.compress(body) + compressor.flush()
    return out if len(out) % 2 == 0 else out + b"\x00"

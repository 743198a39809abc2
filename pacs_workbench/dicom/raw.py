"""Just enough DICOM encoding to de-identify without building pydicom objects.

De-identification reads every element and rewrites a few, so it works on the encoded
bytes: :func:`read_file` splits a Part 10 file into its file meta and a tree of
:class:`Element` (tag, VR and byte offsets; sequences hold their items), and the
engine copies kept elements byte for byte and encodes only what it changes. This is
several times faster than decoding every value into pydicom objects and re-encoding
them, and an element that is kept is kept *exactly* (Pixel Data stays byte-identical).

Supported: Implicit and Explicit VR Little Endian, Deflated Explicit VR Little Endian
(inflated here, deflated again on output), and every encapsulated (compressed)
transfer syntax. Big Endian and files whose structure does not parse raise
:class:`RawFormatError`, which the caller turns into a quarantine reason.

Failing closed on what cannot be trusted, since kept elements are copied as they are:

* an Explicit VR element whose VR is not a DICOM VR, or whose VR disagrees with the
  data dictionary for a public tag (``(0008,0020) Study Date has VR UL, expected DA``),
  raises :class:`RawFormatError`: the profile would act on the wrong type (a date
  left unshifted) and the copy would not re-read. The standard's multi-VR attributes
  (``US or SS``, ``OB or OW``, ...) accept each of their VRs; ``UN`` is read with the
  dictionary VR (PS3.5 6.2.2);
* sequences nested deeper than :data:`MAX_SEQUENCE_DEPTH` levels raise
  :class:`RawFormatError`: real files rarely nest more than about six levels, and a
  deeper file cannot be checked by the audit (pydicom reads sequences recursively).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import dictionary_VR

ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
#: Deepest sequence nesting accepted (the top-level data set is depth 0).
MAX_SEQUENCE_DEPTH = 32
#: Every VR of PS3.5 Table 6.2-1.
VALID_VRS = frozenset(
    {
        "AE",
        "AS",
        "AT",
        "CS",
        "DA",
        "DS",
        "DT",
        "FD",
        "FL",
        "IS",
        "LO",
        "LT",
        "OB",
        "OD",
        "OF",
        "OL",
        "OV",
        "OW",
        "PN",
        "SH",
        "SL",
        "SQ",
        "SS",
        "ST",
        "SV",
        "TM",
        "UC",
        "UI",
        "UL",
        "UN",
        "UR",
        "US",
        "UT",
        "UV",
    }
)


class RawFormatError(ValueError):
    """The bytes are not DICOM this module can walk (the message is the quarantine reason)."""


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


@lru_cache(maxsize=8192)
def implicit_vr(tag: int) -> str:
    """The VR of ``tag`` when the encoding does not say (implicit VR)."""
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1:
        return "LO" if 0x0010 <= element <= 0x00FF else "UN"
    if element == 0:
        return "UL"
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
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


def check_vr(tag: int, vr: str) -> None:
    """Raise :class:`RawFormatError` when an explicit ``vr`` is unknown or not the dictionary VR of ``tag``."""
    if vr not in VALID_VRS:
        raise RawFormatError(f"{tag_name(tag)} has unknown VR {vr}")
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1 or element == 0 or vr == "UN":
        return
    allowed = dictionary_vrs(tag)
    if allowed is not None and vr not in allowed:
        raise RawFormatError(f"{tag_name(tag)} has VR {vr}, expected {' or '.join(sorted(allowed))}")


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


def _skip_fragments(buf: bytes, pos: int, end: int) -> int:
    """End of encapsulated Pixel Data (after its sequence delimiter)."""
    while True:
        if pos + 8 > end:
            raise RawFormatError("truncated file (encapsulated pixel data runs past the end)")
        group, elem = _TAG.unpack_from(buf, pos)
        tag = (group << 16) | elem
        length = _U32.unpack_from(buf, pos + 4)[0]
        if tag == SEQ_DELIM:
            return pos + 8
        if tag != ITEM or length == UNDEFINED:
            raise RawFormatError("malformed encapsulated pixel data")
        pos += 8 + length


def parse_dataset(
    buf: bytes, pos: int, end: int, implicit: bool, *, in_item: bool = False, depth: int = 0
) -> tuple[list[Element], int]:
    """Parse elements from ``pos`` to ``end`` (or to an item delimiter when ``in_item``).

    ``depth`` is the sequence nesting of this data set (0 at the top level).
    """
    out: list[Element] = []
    while pos < end:
        if pos + 8 > end:
            raise RawFormatError("truncated file (element header runs past the end)")
        group, elem = _TAG.unpack_from(buf, pos)
        tag = (group << 16) | elem
        if tag == ITEM_DELIM:
            if not in_item:
                raise RawFormatError("malformed data set (unexpected item delimiter)")
            return out, pos + 8
        if group == 0xFFFE:
            raise RawFormatError("malformed data set (unexpected delimiter)")
        if implicit:
            vr = implicit_vr(tag)
            length = _U32.unpack_from(buf, pos + 4)[0]
            header = 8
        else:
            code = buf[pos + 4 : pos + 6]
            if not (65 <= code[0] <= 90 and 65 <= code[1] <= 90):
                raise RawFormatError("malformed data set (invalid VR)")
            vr = code.decode("ascii")
            check_vr(tag, vr)
            if vr in LONG_VRS:
                if pos + 12 > end:
                    raise RawFormatError("truncated file (element header runs past the end)")
                length = _U32.unpack_from(buf, pos + 8)[0]
                header = 12
            else:
                length = _U16.unpack_from(buf, pos + 6)[0]
                header = 8
        value_start = pos + header
        items = None
        if length == UNDEFINED:
            if tag == PIXEL_DATA:
                stop = _skip_fragments(buf, value_start, end)
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
    meta_elements, pos = _parse_meta(data, 132)
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


def _parse_meta(data: bytes, pos: int) -> tuple[list[Element], int]:
    """File meta elements (always Explicit VR Little Endian), up to the first tag outside group 2."""
    out: list[Element] = []
    end = len(data)
    while pos + 8 <= end:
        group, elem = _TAG.unpack_from(data, pos)
        if group != 0x0002:
            break
        code = data[pos + 4 : pos + 6]
        vr = code.decode("ascii", "replace")
        if vr in LONG_VRS:
            length = _U32.unpack_from(data, pos + 8)[0]
            value_start = pos + 12
        else:
            length = _U16.unpack_from(data, pos + 6)[0]
            value_start = pos + 8
        value_end = value_start + length
        if length == UNDEFINED or value_end > end:
            raise RawFormatError("malformed file meta information")
        out.append(Element((group << 16) | elem, vr, pos, value_start, value_end, value_end))
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

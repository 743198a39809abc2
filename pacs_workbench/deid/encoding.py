"""Element values in an instance's encoding, and the markers every output carries.

The engine decodes the string elements it acts on with the data set's (0008,0005)
Specific Character Set and encodes replacements in the instance's VR encoding
(:class:`InstanceContext`); elements it keeps are copied byte for byte
(:func:`copy_element`). :func:`marker_elements` encodes the PS3.15 de-identification
markers (Patient Identity Removed, De-identification Method and its codes).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from pacs_workbench import __version__
from pacs_workbench.deid.profile import TABLE_EDITION, Option, Profile, method_codes
from pacs_workbench.deid.text import Scrubber
from pacs_workbench.dicom.raw import Element, encode_element, encode_sequence, pad

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})


#: VRs whose bytes depend on (0008,0005) Specific Character Set.
CHARSET_VRS = TEXT_VRS


#: VRs holding one value (a backslash is text, not a separator).
SINGLE_VALUE_VRS = frozenset({"ST", "LT", "UT", "UR"})


BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})


#: VRs a kept element is copied byte for byte in (no text to scrub, no date to shift;
#: (0010,1010) Patient's Age is AS and so always goes through the age cap).
PLAIN_VRS = BINARY_VRS | {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS", "CS", "UI", "AT", "TM"}


@dataclass
class InstanceContext:
    key: bytes
    profile: Profile
    buf: bytes
    implicit: bool
    encodings: list[str]
    family: str | None = None
    pseudo_patient: str = ""
    offset_days: int = 0
    scrubber: Scrubber = field(default_factory=Scrubber)
    counts: Counter[str] = field(default_factory=Counter)
    actions: Counter[tuple[int, str]] = field(default_factory=Counter)
    mapping: set[tuple[str, str, str]] = field(default_factory=set)


def decode_values(ctx: InstanceContext, elem: Element) -> list[str]:
    """The values of a string element, decoded with the data set's character set."""
    raw = ctx.buf[elem.value_start : elem.value_end]
    if not raw:
        return []
    vr = elem.vr
    if vr in CHARSET_VRS:
        if len(ctx.encodings) == 1:
            text = raw.decode(ctx.encodings[0], "replace")
        else:
            from pydicom.charset import decode_bytes

            text = decode_bytes(raw, ctx.encodings, {0x5C, 0x5E, 0x3D} if vr == "PN" else {0x5C})
    else:
        text = raw.decode("ascii", "replace")
    if vr in SINGLE_VALUE_VRS:
        return [text.rstrip(" \x00")]
    return [v.strip(" \x00") for v in text.split("\\")]


def encode_values(ctx: InstanceContext, vr: str, values: list[str]) -> bytes:
    text = values[0] if vr in SINGLE_VALUE_VRS and values else "\\".join(values)
    if text.isascii():
        data = text.encode("ascii")
    elif len(ctx.encodings) == 1:
        data = text.encode(ctx.encodings[0], "replace")
    else:
        from pydicom.charset import encode_string

        data = encode_string(text, ctx.encodings)
    return pad(data, vr)


def element_bytes(ctx: InstanceContext, tag: int, vr: str, value: bytes) -> bytes:
    return encode_element(tag, vr, value, ctx.implicit)


def copy_element(ctx: InstanceContext, elem: Element) -> bytes:
    """The element exactly as it was (re-headed only when its item used another VR encoding)."""
    if elem.implicit == ctx.implicit and elem.vr != "SQ":
        return ctx.buf[elem.start : elem.end]
    return encode_element(elem.tag, elem.vr, ctx.buf[elem.value_start : elem.value_end], ctx.implicit)


OPTION_LABELS: dict[Option, str] = {
    Option.CLEAN_PIXEL_DATA: "Clean Pixel Data",
    Option.CLEAN_GRAPHICS: "Clean Graphics",
    Option.CLEAN_STRUCTURED_CONTENT: "Clean Structured Content",
    Option.CLEAN_DESCRIPTORS: "Clean Descriptors",
    Option.RETAIN_LONG_FULL_DATES: "Retain Longitudinal Full Dates",
    Option.RETAIN_LONG_MODIFIED_DATES: "Retain Longitudinal Modified Dates",
    Option.RETAIN_PATIENT_CHARS: "Retain Patient Characteristics",
    Option.RETAIN_DEVICE_ID: "Retain Device Identity",
    Option.RETAIN_UIDS: "Retain UIDs",
    Option.RETAIN_SAFE_PRIVATE: "Retain Safe Private",
    Option.RETAIN_INSTITUTION_ID: "Retain Institution Identity",
}


def marker_elements(options: frozenset[Option], implicit: bool) -> list[tuple[int, bytes]]:
    """``(tag, encoded element)`` of the markers every output carries.

    (0012,0062) Patient Identity Removed, (0012,0063) De-identification Method and its
    code sequence (0012,0064), and (0028,0303) Longitudinal Temporal Information Modified.
    """

    def text(tag: int, vr: str, values: list[str]) -> tuple[int, bytes]:
        return tag, encode_element(tag, vr, pad("\\".join(values).encode("ascii"), vr), implicit)

    labels = ["Basic Profile"] + [OPTION_LABELS[o] for o in sorted(options, key=lambda o: o.value)]
    items = []
    for value, meaning in method_codes(options):
        item = (
            text(0x00080100, "SH", [value])[1]
            + text(0x00080102, "SH", ["DCM"])[1]
            + text(0x00080104, "LO", [meaning])[1]
        )
        items.append(item)
    if Option.RETAIN_LONG_MODIFIED_DATES in options:
        temporal = "MODIFIED"
    elif Option.RETAIN_LONG_FULL_DATES in options:
        temporal = "UNMODIFIED"
    else:
        temporal = "REMOVED"
    return [
        text(0x00120062, "CS", ["YES"]),
        text(0x00120063, "LO", [f"pacs-workbench {__version__} PS3.15 E.1-1 {TABLE_EDITION}", *labels]),
        (0x00120064, encode_sequence(0x00120064, items, implicit)),
        text(0x00280303, "CS", [temporal]),
    ]


#: Dummy values (action D) by VR, and the VRs' length limits for cleaned text.
BINARY_DUMMY: dict[str, bytes] = {
    "US": struct.pack("<H", 0),
    "SS": struct.pack("<h", 0),
    "UL": struct.pack("<I", 0),
    "SL": struct.pack("<i", 0),
    "FL": struct.pack("<f", 0.0),
    "FD": struct.pack("<d", 0.0),
    "UV": struct.pack("<Q", 0),
    "SV": struct.pack("<q", 0),
    "AT": b"\x00\x00\x00\x00",
}
VR_MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240, "UC": 0, "UT": 0}


def truncate(vr: str, text: str) -> str:
    """``text`` cut to the VR's maximum length (no limit for UC and UT)."""
    limit = VR_MAX_LENGTH.get(vr, 0)
    return text[:limit] if limit else text


DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR: dict[str, str] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "UR": "urn:anonymized",
}

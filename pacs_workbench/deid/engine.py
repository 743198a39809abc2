"""Apply the confidentiality profile to one DICOM instance.

:class:`Deidentifier` walks every element of an instance, to any depth, and does what
:class:`~pacs_workbench.deid.profile.Profile` says: ``X`` removes, ``Z`` empties, ``D``
puts a dummy consistent with the VR, ``U`` replaces UIDs, ``K`` keeps (a kept sequence
has its items cleaned), ``C`` cleans (dates shifted, text cleaned, AE titles
pseudonymized, sequences cleaned item by item). Attributes outside Table E.1-1 are
kept only when on the keep-list; private elements only when safe (E.3.10-1).

It works on the encoded bytes (:mod:`~pacs_workbench.dicom.raw`): kept elements are
copied byte for byte (so Pixel Data that needs no cleaning is byte-identical), changed
ones are encoded anew, and the output is a function of key, options and input bytes
alone (no clock, no random numbers), so the same input always gives the same file.
Only images that must be checked for burned-in text go through pydicom
(:mod:`~pacs_workbench.deid.pixels`).

Keyed and consistent, so files de-identified apart still fit together:

* (0010,0020) Patient ID and (0010,0010) Patient's Name become
  ``pseudonymize(key, PatientID)`` (the same pseudonym the EHR and report stages
  compute from the MRN); (0008,0050) Accession Number becomes
  ``pseudonymize(key, AccessionNumber, "accession")``.
* UIDs become ``2.25.<decimal of the first 128 bits of HMAC(key, uid)>`` (at most 44
  characters, no leading zeros): the same UID always maps to the same new UID, in
  every file, sequence and the file meta; well-known UIDs (SOP classes, transfer
  syntaxes, coding schemes: anything in the DICOM UID registry) are never changed.
* Dates move by one keyed offset per patient, :data:`DATE_OFFSET_MIN_DAYS` to
  :data:`DATE_OFFSET_MAX_DAYS` days into the past, applied to every DA and DT value
  kept (multi-valued and safe private ones included), so the intervals between a
  patient's studies are exact. Times (TM) move with their dates by whole days, so they
  do not change. (0010,1010) Patient's Age above 89 years becomes ``090Y`` (HIPAA Safe
  Harbor).
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from io import BytesIO
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, AllTransferSyntaxes

from pacs_workbench import __version__
from pacs_workbench.core.pseudonym import digest, keyed_int
from pacs_workbench.core.pseudonym import pseudonymize as _pseudonymize
from pacs_workbench.deid.pixels import PixelCleaningError, PixelResult, assess_pixel_risk, clean_pixel_data
from pacs_workbench.deid.profile import (
    KEEP_LISTED,
    REMOVE_UNLISTED,
    RESEARCH_DEFAULT,
    TABLE_EDITION,
    Option,
    Profile,
    iod_family,
    method_codes,
    tag_label,
)
from pacs_workbench.deid.text import KNOWN_PHI_KEYWORDS, Scrubber, build_scrubber, clean_text, known_phi_terms
from pacs_workbench.dicom.raw import (
    PIXEL_DATA,
    Element,
    RawFormatError,
    deflate,
    encode_element,
    encode_meta,
    encode_sequence,
    pad,
    read_file,
)

DATE_OFFSET_MIN_DAYS = 30
DATE_OFFSET_MAX_DAYS = 365
UID_ROOT = "2.25."
#: Fixed implementation identity in the file meta, so output bytes do not depend on
#: the pydicom version: a 2.25 UID derived from the workbench name.
IMPLEMENTATION_CLASS_UID = "2.25." + str(int.from_bytes(b"pacs-workbench-deid-v1"[:16], "big"))
IMPLEMENTATION_VERSION_NAME = "PACSWB_DEID_1"

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
#: VRs whose bytes depend on (0008,0005) Specific Character Set.
CHARSET_VRS = TEXT_VRS
#: VRs holding one value (a backslash is text, not a separator).
SINGLE_VALUE_VRS = frozenset({"ST", "LT", "UT", "UR"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
#: VRs a kept element is copied byte for byte in (no text to scrub, no date to shift;
#: (0010,1010) Patient's Age is AS and so always goes through the age cap).
_PLAIN_VRS = BINARY_VRS | {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS", "CS", "UI", "AT", "TM"}
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

TAG_PATIENT_ID = 0x00100020
TAG_PATIENT_NAME = 0x00100010
TAG_ACCESSION = 0x00080050
TAG_PATIENT_AGE = 0x00101010
TAG_PIXEL_DATA = 0x7FE00010
IDENTITY_TAGS = frozenset({TAG_PATIENT_ID, TAG_PATIENT_NAME, TAG_ACCESSION})


def _truncate(vr: str, text: str) -> str:
    limit = VR_MAX_LENGTH.get(vr, 0)
    return text[:limit] if limit else text


COUNT_FIELDS = (
    "n_removed",
    "n_emptied",
    "n_dummied",
    "n_uid_replaced",
    "n_dates_shifted",
    "n_text_cleaned",
    "n_private_removed",
    "n_private_kept",
    "n_pixel_boxes",
)

_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: dict[str, str] = {
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


class DeidError(ValueError):
    """An instance the workbench refuses to de-identify; ``reason`` says why (never a PHI value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- keyed replacements ------------------------------------------------------------------------


@lru_cache(maxsize=1 << 14)
def pseudonymize(key: bytes, value: str, namespace: str = "patient") -> str:
    """:func:`~pacs_workbench.core.pseudonym.pseudonymize`, cached (a patient's files repeat it)."""
    return _pseudonymize(key, value, namespace=namespace)


@lru_cache(maxsize=1 << 16)
def _remap_uid_cached(key: bytes, uid: str) -> str:
    number = int.from_bytes(digest(key, uid, "uid")[:16], "big") or 1
    return f"{UID_ROOT}{number}"


def is_well_known_uid(uid: str) -> bool:
    """Whether ``uid`` is in the DICOM UID registry (SOP class, transfer syntax, coding scheme...)."""
    from pydicom._uid_dict import UID_dictionary

    return uid in UID_dictionary


def remap_uid(key: bytes, uid: str) -> str:
    """The keyed replacement of an instance UID: ``2.25.<int>``, same input -> same output.

    Well-known UIDs and empty values are returned unchanged.
    """
    uid = str(uid).strip().rstrip("\x00")
    if not uid or is_well_known_uid(uid):
        return uid
    return _remap_uid_cached(key, uid)


def patient_identity(ds: Dataset | dict[str, Any]) -> str:
    """The value the patient's pseudonym and date offset derive from.

    (0010,0020) Patient ID when present, else Patient's Name with Birth Date, else ``""``.
    """
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return pid
    name = str(ds.get("PatientName", "") or "").strip()
    if name:
        return f"name:{name}|{str(ds.get('PatientBirthDate', '') or '').strip()}"
    return ""


def date_offset_days(key: bytes, identity: str) -> int:
    """The patient's keyed date shift, -365..-30 days (negative: into the past)."""
    span = DATE_OFFSET_MAX_DAYS - DATE_OFFSET_MIN_DAYS + 1
    return -(DATE_OFFSET_MIN_DAYS + keyed_int(key, identity, "date-offset", span))


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value by ``days``; ``None`` when it is not a date (then it is removed).

    Accepts ``YYYYMMDD`` and the old ``YYYY.MM.DD`` form; ``YYYY`` and ``YYYYMM`` keep
    their precision (shifted from their first day).
    """
    text = value.strip()
    if not text:
        return text
    digits = text.replace(".", "") if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", text) else text
    if not re.fullmatch(r"\d{4}(?:\d{2}(?:\d{2})?)?", digits):
        return None
    try:
        d = date(int(digits[:4]), int(digits[4:6] or 1), int(digits[6:8] or 1))
        shifted = d + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return shifted.strftime("%Y%m%d")[: len(digits)]


def shift_datetime(value: str, days: int) -> str | None:
    """Shift a DT value by ``days``, keeping its time, fraction and UTC offset."""
    text = value.strip()
    if not text:
        return text
    match = re.fullmatch(r"(\d{4}(?:\d{2}(?:\d{2})?)?)(\d{0,6}(?:\.\d{1,6})?)([+-]\d{4})?", text)
    if match is None:
        return None
    shifted = shift_date(match.group(1), days)
    if shifted is None:
        return None
    return shifted + match.group(2) + (match.group(3) or "")


def cap_age(value: str) -> str:
    """Patient's Age with ages above 89 years written as ``090Y`` (HIPAA Safe Harbor)."""
    text = value.strip()
    match = re.fullmatch(r"(\d{1,3})\s*([DWMY]?)", text.upper())
    if match is None:
        return text
    number, unit = int(match.group(1)), match.group(2) or "Y"
    if unit == "Y" and number > 89:
        return "090Y"
    return text


# --- the walk ----------------------------------------------------------------------------------


@dataclass
class DeidOutput:
    """One de-identified instance and what was done to it.

    Attributes
    ----------
    data
        The de-identified DICOM file (preamble, file meta, data set), ready to write.
    relpath
        ``<pseudo PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
    counts
        The action counts of :data:`COUNT_FIELDS`.
    actions
        ``(tag, keyword, action) -> count`` (tags and keywords only, never values).
    mapping
        ``(kind, original, pseudonym)`` for patient IDs, accession numbers and UIDs:
        the escrow, written only where the user asks.
    pixels
        Pixel cleaning result, or ``None`` when the image needed no check.
    """

    data: bytes
    relpath: str
    counts: dict[str, int]
    actions: Counter[tuple[str, str, str]]
    mapping: set[tuple[str, str, str]]
    pixels: PixelResult | None = None

    @property
    def dataset(self) -> Dataset:
        """The output parsed by pydicom (for inspection; not used to write)."""
        from pydicom import dcmread

        return dcmread(BytesIO(self.data))


@dataclass
class _Context:
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


@lru_cache(maxsize=8192)
def _label(tag: int) -> tuple[str, str]:
    """``(tag label, keyword)`` for the action summary (no keyword for private elements)."""
    return tag_label(tag), ("" if (tag >> 16) % 2 else (keyword_for_tag(tag) or ""))


@lru_cache(maxsize=1)
def _phi_kind_by_tag() -> dict[int, str]:
    from pydicom.datadict import tag_for_keyword

    out = {}
    for keyword, kind in KNOWN_PHI_KEYWORDS.items():
        tag = tag_for_keyword(keyword)
        if tag is not None:
            out[int(tag)] = kind
    return out


@lru_cache(maxsize=4096)
def _scrubber_for(values: tuple[tuple[str, str], ...]) -> Scrubber:
    # Files of one patient share their identifying values: the regex is compiled once.
    return build_scrubber(known_phi_terms(values))


def _decode(ctx: _Context, elem: Element) -> list[str]:
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


def _encode(ctx: _Context, vr: str, values: list[str]) -> bytes:
    text = values[0] if vr in SINGLE_VALUE_VRS and values else "\\".join(values)
    if text.isascii():
        data = text.encode("ascii")
    elif len(ctx.encodings) == 1:
        data = text.encode(ctx.encodings[0], "replace")
    else:
        from pydicom.charset import encode_string

        data = encode_string(text, ctx.encodings)
    return pad(data, vr)


def _element(ctx: _Context, tag: int, vr: str, value: bytes) -> bytes:
    return encode_element(tag, vr, value, ctx.implicit)


def _copy(ctx: _Context, elem: Element) -> bytes:
    """The element exactly as it was (re-headed only when its item used another VR encoding)."""
    if elem.implicit == ctx.implicit and elem.vr != "SQ":
        return ctx.buf[elem.start : elem.end]
    return encode_element(elem.tag, elem.vr, ctx.buf[elem.value_start : elem.value_end], ctx.implicit)


class Deidentifier:
    """De-identify DICOM instances with one key and one set of options.

    Parameters
    ----------
    key
        The project key (:func:`~pacs_workbench.core.pseudonym.load_key`).
    options
        PS3.15 options in force (default: the research default).

    Examples
    --------
    >>> deid = Deidentifier(key, parse_options("basic,retain-uids"))   # doctest: +SKIP
    >>> out = deid.deidentify_bytes(Path("ct.dcm").read_bytes())        # doctest: +SKIP
    >>> out.dataset.PatientIdentityRemoved                              # doctest: +SKIP
    'YES'
    """

    def __init__(self, key: bytes, options: frozenset[Option] | set[Option] = RESEARCH_DEFAULT) -> None:
        self.key = key
        self.profile = Profile(options)
        self.options = self.profile.options
        self._markers: dict[bool, list[tuple[int, bytes]]] = {}

    # -- public -------------------------------------------------------------------------------

    def deidentify(self, ds: Dataset) -> DeidOutput:
        """De-identify a pydicom dataset (encoded first, then :meth:`deidentify_bytes`)."""
        return self.deidentify_bytes(dataset_bytes(ds))

    def deidentify_bytes(self, data: bytes) -> DeidOutput:
        """De-identify one DICOM Part 10 file given as bytes.

        Raises
        ------
        DeidError
            When the instance cannot be de-identified safely: not parseable (truncated,
            not Part 10, big endian), unknown transfer syntax, no SOP Instance UID, or
            an image that may carry burned-in text which cannot be checked and cleaned
            (or Clean Pixel Data is not selected).
        """
        try:
            raw = read_file(data)
        except RawFormatError as exc:
            raise DeidError(str(exc)) from exc
        ctx = _Context(
            key=self.key,
            profile=self.profile,
            buf=raw.body,
            implicit=raw.implicit,
            encodings=["iso8859"],
        )
        top = {e.tag: e for e in raw.elements}
        charset = top.get(0x00080005)
        if charset is not None:
            from pydicom.charset import convert_encodings

            names = [v for v in _decode(ctx, charset) if v] or [""]
            ctx.encodings = list(convert_encodings(names))
        header = _header_view(ctx, top, raw.transfer_syntax)
        check_instance(header, raw.transfer_syntax, ctx, top)
        pixel_reasons = assess_pixel_risk(header, has_pixels=PIXEL_DATA in top)
        if pixel_reasons and Option.CLEAN_PIXEL_DATA not in self.options:
            raise DeidError(
                "image may carry burned-in text (" + "; ".join(pixel_reasons) + ") and the "
                "clean-pixel-data option is not selected"
            )
        identity = patient_identity(header)
        ctx.family = iod_family(header.get("SOPClassUID"))
        ctx.pseudo_patient = pseudonymize(self.key, identity)
        ctx.offset_days = date_offset_days(self.key, identity)
        include_institution = Option.RETAIN_INSTITUTION_ID not in self.options
        ctx.scrubber = _scrubber_for(tuple(sorted(set(_identifying_values(ctx, raw.elements, include_institution)))))
        if identity:
            ctx.mapping.add(("PatientID", identity, ctx.pseudo_patient))

        pieces = dict(self._clean(ctx, raw.elements, nested=False, clean_text_items=False))
        pieces[TAG_PATIENT_NAME] = _element(ctx, TAG_PATIENT_NAME, "PN", pad(ctx.pseudo_patient.encode(), "PN"))
        pieces[TAG_PATIENT_ID] = _element(ctx, TAG_PATIENT_ID, "LO", pad(ctx.pseudo_patient.encode(), "LO"))
        pieces.update(self._marker_elements(ctx.implicit))
        body = b"".join(piece for _, piece in sorted(pieces.items()))
        if raw.deflated:
            body = deflate(body)

        new_uid = {t: self._new_uid(ctx, header, t) for t in (0x00080018, 0x0020000D, 0x0020000E)}
        meta = encode_meta(
            [
                (0x00020001, "OB", b"\x00\x01"),
                (0x00020002, "UI", str(header.SOPClassUID).encode()),
                (0x00020003, "UI", new_uid[0x00080018].encode()),
                (0x00020010, "UI", raw.transfer_syntax.encode()),
                (0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode()),
                (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME.encode()),
            ]
        )
        output = meta + body
        relpath = "/".join(
            [
                _path_part(ctx.pseudo_patient, "NOPATIENT"),
                _path_part(new_uid[0x0020000D], "NOSTUDY"),
                _path_part(new_uid[0x0020000E], "NOSERIES"),
                _path_part(new_uid[0x00080018], "NOINSTANCE") + ".dcm",
            ]
        )
        pixels = None
        if pixel_reasons:
            output, pixels = _clean_pixels(output, pixel_reasons)
            ctx.counts["n_pixel_boxes"] += len(pixels.boxes)
        try:
            # what is written must parse again (structure and VRs), or it is not written
            read_file(output)
        except RawFormatError as exc:
            raise DeidError(f"de-identified output does not parse ({exc})") from exc
        counts = {name: int(ctx.counts.get(name, 0)) for name in COUNT_FIELDS}
        actions: Counter[tuple[str, str, str]] = Counter()
        for (tag, action), n in ctx.actions.items():
            actions[(*_label(tag), action)] += n
        return DeidOutput(output, relpath, counts, actions, ctx.mapping, pixels)

    # -- walk -------------------------------------------------------------------------------

    def _new_uid(self, ctx: _Context, header: HeaderView, tag: int) -> str:
        value = str(header.get(_HEADER_TAGS[tag][0], "") or "").strip()
        if ctx.profile.action(tag, ctx.family, False) == "U":
            return remap_uid(self.key, value)
        return value

    def _record(self, ctx: _Context, tag: int, action: str) -> None:
        ctx.actions[(tag, action)] += 1

    def _clean(
        self, ctx: _Context, elements: list[Element], *, nested: bool, clean_text_items: bool
    ) -> list[tuple[int, bytes]]:
        creators: dict[tuple[int, int], Element] = {}
        for e in elements:
            group, element = e.tag >> 16, e.tag & 0xFFFF
            if group % 2 == 1 and 0x0010 <= element <= 0x00FF:
                creators[(group, element)] = e
        out: list[tuple[int, bytes]] = []
        kept_blocks: set[tuple[int, int]] = set()
        for e in elements:
            tag = e.tag
            group, element = tag >> 16, tag & 0xFFFF
            if element == 0x0000 or group in (0x0000, 0x0002):
                # group lengths, command and file-meta groups never belong in the data set
                if group in (0x0000, 0x0002) and element != 0:
                    ctx.counts["n_removed"] += 1
                    self._record(ctx, tag, "X")
                continue
            if group % 2 == 1:
                if element <= 0x00FF:
                    continue  # creators are added back below when their block keeps something
                creator_elem = creators.get((group, element >> 8))
                names = _decode(ctx, creator_elem) if creator_elem is not None else []
                creator = names[0] if names else ""
                piece = self._private(ctx, e, creator)
                if piece is not None:
                    kept_blocks.add((group, element >> 8))
                    out.append((tag, piece))
                continue
            action = ctx.profile.action(tag, ctx.family, nested)
            if (action == KEEP_LISTED or action == "K") and e.vr in _PLAIN_VRS and not clean_text_items:
                # the common case (geometry, pixel module, numbers, codes): copied as it is
                ctx.actions[(tag, action)] += 1
                out.append((tag, _copy(ctx, e)))
                continue
            piece = self._public(ctx, e, action, nested=nested, clean_text_items=clean_text_items)
            if piece is not None:
                out.append((tag, piece))
        for block in sorted(kept_blocks):
            creator_elem = creators[block]
            out.append((creator_elem.tag, _copy(ctx, creator_elem)))
        out.sort(key=lambda t: t[0])
        return out

    def _public(self, ctx: _Context, e: Element, action: str, *, nested: bool, clean_text_items: bool) -> bytes | None:
        tag, vr = e.tag, e.vr
        if action in ("X", REMOVE_UNLISTED):
            ctx.counts["n_removed"] += 1
            self._record(ctx, tag, action)
            return None
        self._record(ctx, tag, action)
        if tag in IDENTITY_TAGS:
            return self._identity(ctx, e)
        if action == "Z":
            ctx.counts["n_emptied"] += 1
            return _element(ctx, tag, vr, b"")
        if action == "D":
            return self._dummy(ctx, e)
        if action == "U":
            if vr == "UI":
                return self._uids(ctx, e)
            if vr == "SQ":
                return self._sequence(ctx, e, clean_text_items=clean_text_items)
            return self._dummy(ctx, e)
        if action == "C":
            return self._clean_value(ctx, e)
        # K or keep-listed
        if vr == "SQ":
            return self._sequence(ctx, e, clean_text_items=clean_text_items)
        if tag == TAG_PATIENT_AGE:
            return _element(ctx, tag, vr, _encode(ctx, vr, [cap_age(v) for v in _decode(ctx, e)]))
        if vr in ("DA", "DT") and action == KEEP_LISTED:
            # a date outside E.1-1 would escape the longitudinal options: never kept as is
            return self._dates(ctx, e)
        if vr in TEXT_VRS:
            full = clean_text_items or (action == KEEP_LISTED and ctx.profile.is_free_text(tag))
            return self._text(ctx, e, full=full)
        return _copy(ctx, e)

    def _identity(self, ctx: _Context, e: Element) -> bytes:
        ctx.counts["n_dummied"] += 1
        if e.tag == TAG_PATIENT_NAME:
            return _element(ctx, e.tag, e.vr, pad(ctx.pseudo_patient.encode(), e.vr))
        values = _decode(ctx, e)
        original = values[0].strip() if values else ""
        if e.tag == TAG_PATIENT_ID:
            pseudo = pseudonymize(ctx.key, original) if original else ctx.pseudo_patient
            if original:
                ctx.mapping.add(("PatientID", original, pseudo))
            return _element(ctx, e.tag, e.vr, pad(pseudo.encode(), e.vr))
        if not original:
            return _element(ctx, e.tag, e.vr, b"")
        pseudo = pseudonymize(ctx.key, original, namespace="accession")
        ctx.mapping.add(("AccessionNumber", original, pseudo))
        return _element(ctx, e.tag, e.vr, pad(pseudo.encode(), e.vr))

    def _dummy(self, ctx: _Context, e: Element) -> bytes:
        vr = e.vr
        if vr == "UI":
            return self._uids(ctx, e)
        ctx.counts["n_dummied"] += 1
        if vr == "SQ":
            return encode_sequence(e.tag, [b""], ctx.implicit)
        if vr in BINARY_DUMMY:
            return _element(ctx, e.tag, vr, BINARY_DUMMY[vr])
        if vr in BINARY_VRS:
            return _element(ctx, e.tag, vr, b"\x00\x00")
        return _element(ctx, e.tag, vr, pad(str(_DUMMY_BY_VR.get(vr, _DUMMY_TEXT)).encode(), vr))

    def _uid_values(self, ctx: _Context, values: list[str]) -> list[str]:
        new = []
        for v in values:
            mapped = remap_uid(ctx.key, v)
            if mapped != v:
                ctx.counts["n_uid_replaced"] += 1
                ctx.mapping.add(("UID", v, mapped))
            new.append(mapped)
        return new

    def _uids(self, ctx: _Context, e: Element) -> bytes:
        return _element(ctx, e.tag, "UI", _encode(ctx, "UI", self._uid_values(ctx, _decode(ctx, e))))

    def _date_values(self, ctx: _Context, vr: str, values: list[str]) -> list[str]:
        shift = shift_date if vr == "DA" else shift_datetime
        new = []
        for v in values:
            shifted = shift(v, ctx.offset_days)
            if shifted is None:
                ctx.counts["n_emptied"] += 1  # not a date: cannot be shifted, so it goes
                continue
            if shifted:
                ctx.counts["n_dates_shifted"] += 1
            new.append(shifted)
        return new

    def _dates(self, ctx: _Context, e: Element) -> bytes:
        return _element(ctx, e.tag, e.vr, _encode(ctx, e.vr, self._date_values(ctx, e.vr, _decode(ctx, e))))

    def _text_values(self, ctx: _Context, vr: str, values: list[str], *, full: bool) -> tuple[list[str], bool]:
        new: list[str] = []
        changed = False
        for text in values:
            cleaned = clean_text(text, ctx.scrubber) if full else ctx.scrubber.scrub(text)
            cleaned = _truncate(vr, cleaned)
            if cleaned != text:
                changed = True
                ctx.counts["n_text_cleaned"] += 1
            new.append(cleaned)
        return new, changed

    def _text(self, ctx: _Context, e: Element, *, full: bool) -> bytes:
        if not full and ctx.scrubber.is_empty:
            return _copy(ctx, e)
        new, changed = self._text_values(ctx, e.vr, _decode(ctx, e), full=full)
        if not changed:
            return _copy(ctx, e)
        return _element(ctx, e.tag, e.vr, _encode(ctx, e.vr, new))

    def _clean_value(self, ctx: _Context, e: Element) -> bytes | None:
        vr = e.vr
        if vr == "SQ":
            return self._sequence(ctx, e, clean_text_items=True)
        if vr in ("DA", "DT"):
            return self._dates(ctx, e)
        if vr == "TM":
            return _copy(ctx, e)  # whole-day shifts leave times of day unchanged
        if vr == "AS":
            return _element(ctx, e.tag, vr, _encode(ctx, vr, [cap_age(v) for v in _decode(ctx, e)]))
        if vr == "AE":
            values = _decode(ctx, e)
            ctx.counts["n_text_cleaned"] += sum(1 for v in values if v)
            pseudo = [pseudonymize(ctx.key, v, namespace="ae") if v else v for v in values]
            return _element(ctx, e.tag, vr, _encode(ctx, vr, pseudo))
        if vr == "UI":
            return self._uids(ctx, e)
        if vr in TEXT_VRS:
            return self._text(ctx, e, full=True)
        if vr in BINARY_VRS or vr == "UR":
            ctx.counts["n_removed"] += 1  # binary or a link cannot be cleaned, so it goes
            return None
        return _copy(ctx, e)  # CS codes and numbers carry no free text

    def _sequence(self, ctx: _Context, e: Element, *, clean_text_items: bool) -> bytes:
        items = []
        for item in e.items or []:
            cleaned = self._clean(ctx, item, nested=True, clean_text_items=clean_text_items)
            items.append(b"".join(piece for _, piece in cleaned))
        return encode_sequence(e.tag, items, ctx.implicit)

    def _private(self, ctx: _Context, e: Element, creator: str) -> bytes | None:
        """Keep a safe private element (cleaned like a C attribute); remove any other."""
        safe = ctx.profile.safe_private(creator, e.tag)
        encoded_vr = e.vr if e.vr != "UN" else None
        vr = encoded_vr or (safe.vr.split("/")[0] if safe is not None and safe.vr else "UN")
        # a private sequence of unknown encoding cannot be walked, so it is not kept
        keep = safe is not None and not (vr == "SQ" and e.items is None)
        if keep and vr in ("DA", "DT") and not ctx.profile.retains_dates:
            keep = False  # dates without a longitudinal option are removed, private ones too
        if not keep:
            ctx.counts["n_private_removed"] += 1
            self._record(ctx, e.tag, "X")
            return None
        ctx.counts["n_private_kept"] += 1
        self._record(ctx, e.tag, "C")
        if vr == "SQ":
            return self._sequence(ctx, e, clean_text_items=True)
        if vr not in ("DA", "DT", "UI") and vr not in TEXT_VRS:
            return _copy(ctx, e)  # numbers, codes and binary tables (E.3.10-1 lists them as safe)
        view = Element(e.tag, vr, e.start, e.value_start, e.value_end, e.end, None, e.implicit)
        values = _decode(ctx, view)
        if vr in ("DA", "DT"):
            new = values if not ctx.profile.shifts_dates else self._date_values(ctx, vr, values)
        elif vr == "UI":
            new = self._uid_values(ctx, values)
        else:
            new, _ = self._text_values(ctx, vr, values, full=True)
        return _element(ctx, e.tag, vr, _encode(ctx, vr, new))

    # -- markers ----------------------------------------------------------------------------

    def _marker_elements(self, implicit: bool) -> list[tuple[int, bytes]]:
        cached = self._markers.get(implicit)
        if cached is not None:
            return cached

        def text(tag: int, vr: str, values: list[str]) -> tuple[int, bytes]:
            return tag, encode_element(tag, vr, pad("\\".join(values).encode("ascii"), vr), implicit)

        labels = ["Basic Profile"] + [OPTION_LABELS[o] for o in sorted(self.options, key=lambda o: o.value)]
        items = []
        for value, meaning in method_codes(self.options):
            item = (
                text(0x00080100, "SH", [value])[1]
                + text(0x00080102, "SH", ["DCM"])[1]
                + text(0x00080104, "LO", [meaning])[1]
            )
            items.append(item)
        if Option.RETAIN_LONG_MODIFIED_DATES in self.options:
            temporal = "MODIFIED"
        elif Option.RETAIN_LONG_FULL_DATES in self.options:
            temporal = "UNMODIFIED"
        else:
            temporal = "REMOVED"
        markers = [
            text(0x00120062, "CS", ["YES"]),
            text(0x00120063, "LO", [f"pacs-workbench {__version__} PS3.15 E.1-1 {TABLE_EDITION}", *labels]),
            (0x00120064, encode_sequence(0x00120064, items, implicit)),
            text(0x00280303, "CS", [temporal]),
        ]
        self._markers[implicit] = markers
        return markers


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

#: Top-level attributes decoded into the header view (identity, pixel risk, checks).
_HEADER_TAGS = {
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080008: ("ImageType", "CS"),
    0x00080060: ("Modality", "CS"),
    0x00080070: ("Manufacturer", "LO"),
    0x00081090: ("ManufacturerModelName", "LO"),
    0x00100010: ("PatientName", "PN"),
    0x00100020: ("PatientID", "LO"),
    0x00100030: ("PatientBirthDate", "DA"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00280301: ("BurnedInAnnotation", "CS"),
    0x00280004: ("PhotometricInterpretation", "CS"),
    0x00280008: ("NumberOfFrames", "IS"),
}
_HEADER_US = {
    0x00280002: "SamplesPerPixel",
    0x00280006: "PlanarConfiguration",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280103: "PixelRepresentation",
}
#: (0028,0004) Photometric Interpretation values a reader can decode.
PHOTOMETRIC_VALUES = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "YBR_RCT",
        "HSV",
        "ARGB",
        "CMYK",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
    }
)


class HeaderView(dict[str, Any]):
    """A few decoded top-level attributes, read like a pydicom Dataset (``get``, attributes, ``in``).

    Decoding the handful of attributes the checks need is much cheaper than building
    pydicom elements for them.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _header_view(ctx: _Context, top: dict[int, Element], transfer_syntax: str) -> HeaderView:
    header = HeaderView()
    for tag, (keyword, vr) in _HEADER_TAGS.items():
        e = top.get(tag)
        if e is None or e.items is not None:
            continue
        view = Element(tag, vr, e.start, e.value_start, e.value_end, e.end, None, e.implicit)
        header[keyword] = _set_value(_decode(ctx, view))
    for tag, keyword in _HEADER_US.items():
        e = top.get(tag)
        if e is not None and e.value_end - e.value_start >= 2:
            header[keyword] = struct.unpack_from("<H", ctx.buf, e.value_start)[0]
    return header


def _set_value(values: list[str]) -> Any:
    if not values:
        return ""
    return values[0] if len(values) == 1 else values


def _identifying_values(ctx: _Context, elements: list[Element], include_institution: bool) -> Iterator[tuple[str, str]]:
    """``(kind, value)`` of person names and identifying attributes at any depth (see text.py)."""
    kinds = _phi_kind_by_tag()
    for e in elements:
        if e.items is not None:
            for item in e.items:
                yield from _identifying_values(ctx, item, include_institution)
            continue
        kind = "name" if e.vr == "PN" else kinds.get(e.tag)
        if kind is None or (kind in ("institution", "site") and not include_institution):
            continue
        if (e.tag >> 16) % 2:
            continue
        for value in _decode(ctx, e):
            if value.strip():
                yield kind, value.strip()


def _clean_pixels(data: bytes, reasons: list[str]) -> tuple[bytes, PixelResult]:
    from pydicom import dcmread

    ds = dcmread(BytesIO(data))
    try:
        result = clean_pixel_data(ds, reasons)
    except PixelCleaningError as exc:
        raise DeidError(f"burned-in text check failed: {exc}") from exc
    return write_bytes(ds), result


def _pixel_module_problem(header: HeaderView) -> str | None:
    """What makes the Image Pixel attributes unreadable (as a reader checks them), or ``None``."""

    def number(keyword: str) -> int | None:
        value = header.get(keyword)
        if value is None or value == "":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            return -1

    bits, stored = number("BitsAllocated"), number("BitsStored")
    rows, cols, samples = number("Rows"), number("Columns"), number("SamplesPerPixel")
    representation, frames = number("PixelRepresentation"), number("NumberOfFrames")
    if bits is None or not 1 <= bits <= 64 or (bits != 1 and bits % 8):
        return "(0028,0100) Bits Allocated"
    if stored is None or not 1 <= stored <= bits:
        return "(0028,0101) Bits Stored"
    if rows is None or not 0 < rows <= 0xFFFF:
        return "(0028,0010) Rows"
    if cols is None or not 0 < cols <= 0xFFFF:
        return "(0028,0011) Columns"
    if frames is not None and frames < 1:
        return "(0028,0008) Number of Frames"
    if str(header.get("PhotometricInterpretation", "")).strip() not in PHOTOMETRIC_VALUES:
        return "(0028,0004) Photometric Interpretation"
    if representation not in (0, 1):
        return "(0028,0103) Pixel Representation"
    if samples not in (1, 3):
        return "(0028,0002) Samples per Pixel"
    if samples == 3 and number("PlanarConfiguration") not in (0, 1):
        return "(0028,0006) Planar Configuration"
    return None


def check_instance(header: HeaderView, transfer_syntax: str, ctx: _Context, top: dict[int, Element]) -> None:
    """Refuse what cannot be de-identified safely; raises :class:`DeidError` with the reason.

    Checks: a transfer syntax pydicom knows; a SOP Class and SOP Instance UID; the Image
    Pixel attributes a reader needs to decode Pixel Data (present, in range); native
    (uncompressed) Pixel Data at least as long as its rows, columns, samples, bits and
    frames require (a shorter one is a truncated file).
    """
    ts = UID(transfer_syntax)
    if ts not in AllTransferSyntaxes:
        raise DeidError(f"unknown transfer syntax {ts}")
    if not str(header.get("SOPInstanceUID", "") or "").strip():
        raise DeidError("no SOP Instance UID")
    if not str(header.get("SOPClassUID", "") or "").strip():
        raise DeidError("no SOP Class UID")
    pixel = top.get(PIXEL_DATA)
    if pixel is None:
        sop = UID(str(header.SOPClassUID))
        if "Image Storage" in (sop.name or "") or sop.name == "Segmentation Storage":
            raise DeidError("image instance without Pixel Data (truncated file?)")
        return
    problem = _pixel_module_problem(header)
    if problem is not None:
        raise DeidError(f"image pixel attributes missing or invalid ({problem})")
    if ts.is_compressed:
        return
    try:
        rows, cols = int(header.Rows), int(header.Columns)
        bits = int(header.BitsAllocated)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DeidError("image pixel attributes missing or invalid") from exc
    expected = rows * cols * samples * frames * bits // 8 if bits >= 8 else (rows * cols * frames + 7) // 8
    length = pixel.value_end - pixel.value_start
    if length < expected:
        raise DeidError(f"pixel data shorter than the image needs ({length} of {expected} bytes): truncated")


_SAFE_PATH = re.compile(r"[^0-9A-Za-z.\-]")


def _path_part(value: str, fallback: str) -> str:
    return _SAFE_PATH.sub("_", value.strip()) or fallback


def dataset_bytes(ds: Dataset) -> bytes:
    """A pydicom dataset as a Part 10 file (file meta added when missing)."""
    from pydicom import dcmwrite

    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
        is_implicit, _ = ds.original_encoding
        meta.TransferSyntaxUID = UID("1.2.840.10008.1.2" if is_implicit else "1.2.840.10008.1.2.1")
        ds.file_meta = meta
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_bytes(ds: Dataset) -> bytes:
    """The DICOM file (preamble, file meta, data set) of a dataset changed by pixel cleaning."""
    from pydicom import dcmwrite

    buffer = BytesIO()
    ds.preamble = b"\x00" * 128
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=ts == "1.2.840.10008.1.2", little_endian=True)
    return buffer.getvalue()

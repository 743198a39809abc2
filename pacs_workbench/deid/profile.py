"""The PS3.15 Annex E confidentiality profile as data: Table E.1-1, its options and the safe private list.

Every action the engine takes on an attribute comes from the workbench's own copy of
Table E.1-1 (edition 2026c: the innolitics extraction of 2024b-e with the 2026c rows
applied, ``tables/confidentiality_profile_attributes_2026c.json``) and of Table
E.3.10-1 (``tables/safe_private_attributes_2026c.csv``). Nothing here is a hand-written
list of "PHI tags"; the only hand-written lists are the keep-list of attributes that
are *not* in E.1-1 but that research needs (``tables/keep_list.txt``), and the small
table of attribute Types used to resolve the compound codes.

Resolution of one attribute, in order:

1. An option's code overrides the Basic Profile code when that option is enabled.
   When several enabled options give a code for the same row, ``C`` (clean) wins over
   ``K`` (keep): e.g. a calibration date under Retain Device Identity (K) and Retain
   Longitudinal Temporal Information with Modified Dates (C) is shifted, not kept.
2. A compound code (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``) is resolved by the
   attribute's Type in the IOD (:data:`IOD_TYPES`, for the top level of CT, MR, SC,
   SEG and RTSTRUCT instances): Type 3 takes the first code, Type 2 needs at least
   ``Z``, Type 1 needs ``D`` (``U`` for ``X/Z/U*``). Where the Type is not known
   (another IOD, or inside a sequence) the resolution is conservative for IOD
   validity: ``X/Z`` -> ``Z``, ``X/D`` -> ``D``, ``Z/D`` -> ``D``, ``X/Z/D`` -> ``D``,
   ``X/Z/U*`` -> ``U`` (keep the reference sequence, replace the UIDs it holds).
3. A standard attribute absent from E.1-1 is decided by what its VR (from the data
   dictionary) can carry, as the table's own rows are (PS3.15 E.1: the table lists the
   attributes that can identify; structure is kept): numbers, codes (CS), tags, times,
   binary data and sequences are retained (sequence items walked, UIDs through the
   keyed remap, which leaves registry UIDs alone); free text (LO, SH, ST, LT, UT, UC)
   is cleaned, person names emptied, AE titles pseudonymized, dates shifted, ages
   capped; links (UR), unknown VRs and attributes outside the dictionary are removed.
   The keep-list names the few text attributes kept as they are (scrubbed of the
   patient's own identifiers only), where the standard leaves the choice: codes,
   equipment and acquisition names.
4. A private element is removed unless Retain Safe Private is enabled and its
   (private creator, group, element-in-block) is in Table E.3.10-1.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword

TABLE_EDITION = "2026c"
TABLES_PACKAGE = "pacs_workbench.deid"

#: Action codes of PS3.15 E.1.1 plus the two outcomes for attributes not in E.1-1.
KEEP_LISTED = "keep"
RETAIN_UNLISTED = "retain"
CLEAN_UNLISTED = "clean"
REMOVE_UNLISTED = "remove"
FINAL_ACTIONS = ("X", "Z", "D", "U", "K", "C", KEEP_LISTED, RETAIN_UNLISTED, CLEAN_UNLISTED, REMOVE_UNLISTED)

#: VRs of unlisted attributes that cannot carry identifying text: kept (UIDs remapped).
RETAINED_VRS = frozenset(
    {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS", "AT", "CS", "TM", "UI", "SQ"}
    | {"OB", "OW", "OF", "OD", "OL", "OV"}
)
#: VRs of unlisted attributes whose values are cleaned (text, names, AE titles, dates, ages).
CLEANED_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "AE", "DA", "DT", "AS"})


@lru_cache(maxsize=8192)
def unlisted_action(tag: int) -> str:
    """What happens to a standard attribute that Table E.1-1 does not list, by its dictionary VR.

    ``retain`` for :data:`RETAINED_VRS`, ``clean`` for :data:`CLEANED_VRS`, ``remove``
    for anything else (UR, UN, attributes the dictionary does not know). An attribute
    whose VR is one of several (``US or SS``) is retained only when all are retainable.
    """
    from pydicom.datadict import dictionary_VR

    try:
        vrs = set(dictionary_VR(tag).split(" or "))
    except KeyError:
        return REMOVE_UNLISTED
    if vrs <= RETAINED_VRS:
        return RETAIN_UNLISTED
    if vrs <= CLEANED_VRS | RETAINED_VRS:
        return CLEAN_UNLISTED
    return REMOVE_UNLISTED


class Option(StrEnum):
    """PS3.15 Annex E options (CID 7050 concepts), named as on the command line."""

    CLEAN_PIXEL_DATA = "clean-pixel-data"
    CLEAN_GRAPHICS = "clean-graphics"
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    RETAIN_LONG_FULL_DATES = "retain-long-full-dates"
    RETAIN_LONG_MODIFIED_DATES = "retain-long-modified-dates"
    RETAIN_PATIENT_CHARS = "retain-patient-chars"
    RETAIN_DEVICE_ID = "retain-device-id"
    RETAIN_UIDS = "retain-uids"
    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    RETAIN_INSTITUTION_ID = "retain-institution-id"


#: CID 7050 code value and meaning for the Basic Profile and each option (scheme DCM).
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[Option, tuple[str, str]] = {
    Option.CLEAN_PIXEL_DATA: ("113101", "Clean Pixel Data Option"),
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONG_FULL_DATES: ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    Option.RETAIN_LONG_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_ID: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_ID: ("113112", "Retain Institution Identity Option"),
}
CODE_TO_OPTION: dict[str, Option] = {code: option for option, (code, _) in OPTION_CODES.items()}

#: Column of Table E.1-1 (innolitics key) holding each option's code.
OPTION_COLUMNS: dict[Option, str] = {
    Option.CLEAN_GRAPHICS: "cleanGraphOpt",
    Option.CLEAN_STRUCTURED_CONTENT: "cleanStructContOpt",
    Option.CLEAN_DESCRIPTORS: "cleanDescOpt",
    Option.RETAIN_LONG_FULL_DATES: "rtnLongFullDatesOpt",
    Option.RETAIN_LONG_MODIFIED_DATES: "rtnLongModifDatesOpt",
    Option.RETAIN_PATIENT_CHARS: "rtnPatCharsOpt",
    Option.RETAIN_DEVICE_ID: "rtnDevIdOpt",
    Option.RETAIN_UIDS: "rtnUIDsOpt",
    Option.RETAIN_SAFE_PRIVATE: "rtnSafePrivOpt",
    Option.RETAIN_INSTITUTION_ID: "rtnInstIdOpt",
}

#: The research default: Basic + Retain Longitudinal Temporal Information with Modified
#: Dates + Retain Patient Characteristics + Clean Descriptors + Clean Structured Content
#: (SR documents keep their content tree, values cleaned) + Retain Safe Private +
#: Clean Pixel Data.
RESEARCH_DEFAULT: frozenset[Option] = frozenset(
    {
        Option.RETAIN_LONG_MODIFIED_DATES,
        Option.RETAIN_PATIENT_CHARS,
        Option.CLEAN_DESCRIPTORS,
        Option.CLEAN_STRUCTURED_CONTENT,
        Option.RETAIN_SAFE_PRIVATE,
        Option.CLEAN_PIXEL_DATA,
    }
)

_ALIASES: dict[str, frozenset[Option]] = {
    "basic": frozenset(),
    "research": RESEARCH_DEFAULT,
    "default": RESEARCH_DEFAULT,
}


class OptionsError(ValueError):
    """An ``--options`` value that names no option, or options that exclude each other."""


def parse_options(text: str | Iterable[str] | None) -> frozenset[Option]:
    """Options from a comma/space separated list, e.g. ``"retain-uids,clean-descriptors"``.

    ``None`` or an empty string gives :data:`RESEARCH_DEFAULT`. The Basic Profile always
    applies; the word ``basic`` alone selects it with no option; ``research`` adds the
    research default set. Underscores and case are ignored.

    Raises
    ------
    OptionsError
        For an unknown name, or both longitudinal date options at once.
    """
    if text is None:
        return RESEARCH_DEFAULT
    tokens = re.split(r"[,\s]+", text) if isinstance(text, str) else [str(t) for t in text]
    tokens = [t.strip().lower().replace("_", "-") for t in tokens if t and t.strip()]
    if not tokens:
        return RESEARCH_DEFAULT
    known = {o.value: o for o in Option}
    chosen: set[Option] = set()
    for token in tokens:
        if token in _ALIASES:
            chosen |= _ALIASES[token]
        elif token in known:
            chosen.add(known[token])
        else:
            names = ", ".join(sorted([*known, *_ALIASES]))
            raise OptionsError(f"unknown de-identification option {token!r}; choose from: {names}")
    if {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES} <= chosen:
        raise OptionsError("retain-long-full-dates and retain-long-modified-dates exclude each other")
    return frozenset(chosen)


def format_options(options: Iterable[Option]) -> str:
    """Options as the comma-separated list that :func:`parse_options` reads (``basic`` if none)."""
    names = sorted(o.value for o in options)
    return ",".join(names) if names else "basic"


def method_codes(options: Iterable[Option]) -> list[tuple[str, str]]:
    """CID 7050 (code value, meaning) pairs for the Basic Profile and ``options``, by code."""
    codes = [BASIC_CODE, *(OPTION_CODES[o] for o in options)]
    return sorted(set(codes))


# --- tables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1.

    Attributes
    ----------
    tag
        ``(GGGG,EEEE)`` as in the table (repeating groups keep their ``XX``).
    name
        The attribute name from the table (line breaks folded).
    keyword
        The DICOM keyword (from the pydicom dictionary, or derived from the name for
        attributes newer than the dictionary).
    basic
        Basic Profile code.
    option_codes
        Code per option, only where the table has one.
    """

    tag: str
    name: str
    keyword: str
    basic: str
    option_codes: dict[Option, str] = field(default_factory=dict)
    std_comp_iod: str = "N"
    retired: str = ""


def _table_text(name: str) -> str:
    return resources.files(TABLES_PACKAGE).joinpath("tables", name).read_text(encoding="utf-8")


def _keyword_from_name(name: str) -> str:
    words = re.sub(r"[^A-Za-z0-9 ]", " ", name.split("(see")[0]).split()
    return "".join(w[:1].upper() + w[1:] for w in words)


@lru_cache(maxsize=1)
def load_table() -> tuple[ProfileRow, ...]:
    """Table E.1-1 (2026c) as packaged with the workbench."""
    rows = json.loads(_table_text("confidentiality_profile_attributes_2026c.json"))
    out: list[ProfileRow] = []
    for row in rows:
        name = " ".join(str(row["name"]).split())
        keyword = ""
        ident = str(row["id"])
        if re.fullmatch(r"[0-9a-f]{8}", ident):
            keyword = keyword_for_tag(int(ident, 16)) or _keyword_from_name(name)
        codes = {opt: str(row[col]) for opt, col in OPTION_COLUMNS.items() if row.get(col)}
        out.append(
            ProfileRow(
                tag=str(row["tag"]),
                name=name,
                keyword=keyword,
                basic=str(row["basicProfile"]),
                option_codes=codes,
                std_comp_iod=str(row.get("stdCompIOD", "N")),
                retired=str(row.get("retired", "")),
            )
        )
    return tuple(out)


@lru_cache(maxsize=1)
def _rows_by_tag() -> dict[int, ProfileRow]:
    """Rows with a plain tag, keyed by the tag as an int."""
    return {
        int(r.tag[1:5] + r.tag[6:10], 16): r
        for r in load_table()
        if re.fullmatch(r"\([0-9A-F]{4},[0-9A-F]{4}\)", r.tag)
    }


@lru_cache(maxsize=1)
def _repeating_rows() -> dict[str, ProfileRow]:
    """The repeating-group rows: ``50XX,XXXX`` curves, ``60XX,3000``/``60XX,4000`` overlays."""
    return {r.tag: r for r in load_table() if "XX" in r.tag}


@lru_cache(maxsize=1)
def private_row() -> ProfileRow:
    """The single row covering all private attributes (odd groups)."""
    return next(r for r in load_table() if "ODD" in r.tag)


def row_for_tag(tag: int) -> ProfileRow | None:
    """The E.1-1 row governing a public ``tag`` (repeating groups included), or ``None``."""
    row = _rows_by_tag().get(tag)
    if row is not None:
        return row
    group, element = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x501E and group % 2 == 0:
        return _repeating_rows()["(50XX,XXXX)"]
    if 0x6000 <= group <= 0x601E and group % 2 == 0 and element in (0x3000, 0x4000):
        return _repeating_rows()[f"(60XX,{element:04X})"]
    return None


def _is_overlay(tag: int) -> bool:
    """Whether ``tag`` is in a repeating overlay group (60xx, even)."""
    group = tag >> 16
    return 0x6000 <= group <= 0x601E and group % 2 == 0


@dataclass(frozen=True)
class SafePrivate:
    """One row of Table E.3.10-1."""

    private_creator: str
    group: int
    element_in_block: int
    vr: str
    vm: str
    meaning: str


@lru_cache(maxsize=1)
def load_safe_private() -> dict[tuple[str, int, int], SafePrivate]:
    """Table E.3.10-1 keyed by (private creator stripped, group, element in block)."""
    reader = csv.DictReader(_table_text("safe_private_attributes_2026c.csv").splitlines())
    out: dict[tuple[str, int, int], SafePrivate] = {}
    for r in reader:
        item = SafePrivate(
            private_creator=r["private_creator"].strip(" \x00"),
            group=int(r["group"], 16),
            element_in_block=int(r["element_in_block"], 16),
            vr=r["vr"].strip(),
            vm=r["vm"].strip(),
            meaning=r["meaning"].strip(),
        )
        out[(item.private_creator, item.group, item.element_in_block)] = item
    return out


@dataclass(frozen=True)
class KeepList:
    """Attributes outside E.1-1 that de-identification keeps (``tables/keep_list.txt``)."""

    tags: frozenset[int]
    free_text: frozenset[int]


@lru_cache(maxsize=1)
def load_keep_list() -> KeepList:
    """The packaged keep-list; raises ``ValueError`` on an unknown keyword."""
    tags: set[int] = set()
    free: set[int] = set()
    for raw in _table_text("keep_list.txt").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        tag = tag_for_keyword(parts[0])
        if tag is None:
            raise ValueError(f"keep_list.txt: unknown DICOM keyword {parts[0]!r}")
        tags.add(tag)
        if len(parts) > 1 and parts[1] == "text":
            free.add(tag)
    return KeepList(frozenset(tags), frozenset(free))


@lru_cache(maxsize=1)
def load_vendor_regions() -> list[dict[str, Any]]:
    """Known burned-in text regions (``tables/vendor_regions.json``)."""
    entries: list[dict[str, Any]] = json.loads(_table_text("vendor_regions.json"))["entries"]
    return entries


# --- attribute Types for the compound codes ----------------------------------------------------

#: Type of the compound-code attributes at the top level of common IODs (PS3.3):
#: General Study/Series/Equipment/Image, SOP Common, Contrast/Bolus and Patient modules
#: for CT, MR and SC; the Enhanced General Equipment and Multi-frame Functional Groups
#: modules raise some of them to Type 1 for SEG; the RT Series module makes Operators'
#: Name Type 2 for RTSTRUCT. Type 2C is treated as Type 2.
_GENERAL_IMAGE_TYPES: dict[str, int] = {
    "AcquisitionDate": 3,
    "AcquisitionTime": 3,
    "AcquisitionDateTime": 3,
    "ContentDate": 2,
    "ContentTime": 2,
    "SeriesDate": 3,
    "SeriesTime": 3,
    "ProtocolName": 3,
    "OperatorsName": 3,
    "OperatorIdentificationSequence": 3,
    "ReferencedPerformedProcedureStepSequence": 3,
    "ReferencedStudySequence": 3,
    "ReferencedImageSequence": 3,
    "SourceImageSequence": 3,
    "InstanceCreationDate": 3,
    "InstanceCreationTime": 3,
    "InstitutionName": 3,
    "InstitutionCodeSequence": 3,
    "StationName": 3,
    "DeviceSerialNumber": 3,
    "ContrastBolusAgent": 2,
    "PatientID": 2,
    "PatientSexNeutered": 2,
    "AcquisitionDeviceProcessingDescription": 3,
    "DetectorID": 3,
    "DateOfLastDetectorCalibration": 3,
    "TimeOfLastDetectorCalibration": 3,
}

#: Types that are the same in every composite IOD (General Study and General Equipment
#: modules), used at the top level of an instance whose IOD family is not tabulated.
COMMON_TYPES: dict[str, int] = {
    "ReferencedStudySequence": 3,
    "InstitutionName": 3,
    "InstitutionAddress": 3,
    "InstitutionalDepartmentName": 3,
    "StationName": 3,
}

IOD_TYPES: dict[str, dict[str, int]] = {
    "CT": dict(_GENERAL_IMAGE_TYPES),
    "MR": dict(_GENERAL_IMAGE_TYPES),
    "SC": dict(_GENERAL_IMAGE_TYPES),
    "SEG": {
        **_GENERAL_IMAGE_TYPES,
        "DeviceSerialNumber": 1,
        "ContentDate": 1,
        "ContentTime": 1,
        "ContentCreatorName": 2,
    },
    "RTSTRUCT": {
        **{k: v for k, v in _GENERAL_IMAGE_TYPES.items() if k != "ContentDate" and k != "ContentTime"},
        "OperatorsName": 2,
    },
}

_SOP_CLASS_FAMILY: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
    "1.2.840.10008.5.1.4.1.1.7.1": "SC",
    "1.2.840.10008.5.1.4.1.1.7.2": "SC",
    "1.2.840.10008.5.1.4.1.1.7.3": "SC",
    "1.2.840.10008.5.1.4.1.1.7.4": "SC",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
}

COMPOUND_FALLBACK: dict[str, str] = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}


def iod_family(sop_class_uid: str | None) -> str | None:
    """``"CT"``, ``"MR"``, ``"SC"``, ``"SEG"`` or ``"RTSTRUCT"`` for the SOP Class, else ``None``."""
    return _SOP_CLASS_FAMILY.get(str(sop_class_uid or "").strip())


def resolve_compound(code: str, attribute_type: int | None) -> str:
    """Resolve a compound code by the attribute's Type (``None``: conservative fallback)."""
    if "/" not in code:
        return code
    if attribute_type is None:
        return COMPOUND_FALLBACK[code]
    parts = code.rstrip("*").split("/")
    if attribute_type == 3:
        return parts[0]
    if attribute_type == 2:
        return "Z" if "Z" in parts else parts[-1]
    return parts[-1]


# --- the profile -------------------------------------------------------------------------------


class Profile:
    """Table E.1-1 with a set of options applied, ready to answer "what happens to this tag".

    Parameters
    ----------
    options
        The options in force; the Basic Profile always applies.

    Examples
    --------
    >>> p = Profile(parse_options("basic"))
    >>> p.action(0x00100010)       # (0010,0010) Patient's Name
    'Z'
    >>> Profile(RESEARCH_DEFAULT).action(0x00080020)   # (0008,0020) Study Date: shifted
    'C'
    """

    def __init__(self, options: Iterable[Option] = RESEARCH_DEFAULT) -> None:
        self.options: frozenset[Option] = frozenset(options)
        if {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES} <= self.options:
            raise OptionsError("retain-long-full-dates and retain-long-modified-dates exclude each other")
        self.keep_list = load_keep_list()
        self._safe = load_safe_private() if Option.RETAIN_SAFE_PRIVATE in self.options else {}
        self._codes: dict[int, str] = {t: self.row_code(r) for t, r in _rows_by_tag().items()}
        self._cache: dict[tuple[int, str | None, bool], str] = {}

    def row_code(self, row: ProfileRow) -> str:
        """The code of ``row`` after the enabled options (compound codes still unresolved)."""
        enabled = [code for opt, code in row.option_codes.items() if opt in self.options]
        if not enabled:
            return row.basic
        return "C" if "C" in enabled else enabled[0]

    def action(self, tag: int, family: str | None = None, nested: bool = False) -> str:
        """Final action for a public ``tag``: one of :data:`FINAL_ACTIONS`.

        Parameters
        ----------
        tag
            The attribute tag as an int, e.g. ``0x00100010``.
        family
            IOD family of the instance (:func:`iod_family`), for the Type of compound-code
            attributes at the top level.
        nested
            ``True`` inside a sequence item, where Types are not tabulated.
        """
        key = (tag, family, nested)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        code = self._codes.get(tag)
        if code is None:
            row = row_for_tag(tag)
            code = self.row_code(row) if row is not None else None
        if code is None and _is_overlay(tag) and self.action((tag & 0xFFFF0000) | 0x3000) in ("X", REMOVE_UNLISTED):
            result = REMOVE_UNLISTED  # an overlay without its data is invalid: the group goes with it
        elif code is None:
            result = KEEP_LISTED if tag in self.keep_list.tags else unlisted_action(tag)
        elif "/" in code:
            attr_type = None
            if not nested:
                keyword = keyword_for_tag(tag)
                attr_type = IOD_TYPES[family].get(keyword) if family in IOD_TYPES else COMMON_TYPES.get(keyword)
            result = resolve_compound(code, attr_type)
        else:
            result = code
        self._cache[key] = result
        return result

    def is_free_text(self, tag: int) -> bool:
        """Whether a keep-listed attribute is free text to clean."""
        return tag in self.keep_list.free_text

    def safe_private(self, creator: str | None, tag: int) -> SafePrivate | None:
        """The E.3.10-1 row for a private data element under Retain Safe Private, else ``None``.

        Parameters
        ----------
        creator
            Value of the Private Creator element reserving the element's block.
        tag
            The private data element tag ``(gggg,bbee)``.
        """
        if not self._safe or not creator:
            return None
        group, element = tag >> 16, tag & 0xFFFF
        return self._safe.get((creator.strip(" \x00"), group, element & 0xFF))

    @property
    def retains_dates(self) -> bool:
        """Whether a Retain Longitudinal Temporal Information option is enabled."""
        return bool(self.options & {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES})

    @property
    def shifts_dates(self) -> bool:
        """Whether dates are shifted (Retain Longitudinal ... Modified Dates)."""
        return Option.RETAIN_LONG_MODIFIED_DATES in self.options


def tag_label(tag: int) -> str:
    """``(GGGG,EEEE)``; private data elements as ``(GGGG,xxEE)`` (the block is not meaningful)."""
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1 and element >= 0x1000:
        return f"({group:04X},xx{element & 0xFF:02X})"
    return f"({group:04X},{element:04X})"

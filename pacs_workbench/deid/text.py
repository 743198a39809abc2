"""Free-text cleaning: known PHI of the patient plus PHI patterns, clinical words kept.

Attributes kept under Clean Descriptors (``C``: Study Description, Image Comments,
Requested Procedure Description, ...) are cleaned, not just kept. Two things are
removed:

* the known PHI of *this* patient, read from the header before anything is changed
  (:func:`collect_known_phi`): every person name in every form (components, "First
  Last", "Last, First", DICOM ``Last^First``), identifiers (Patient ID, other IDs,
  accession numbers, with or without separators), the birth date in the usual date
  formats, addresses and telephone numbers;
* PHI patterns (:data:`PHI_PATTERNS`): telephone numbers, e-mail addresses, dates,
  MRN-like identifiers (digit runs of six or more), street addresses and ZIP codes,
  DICOM person names, and the words after a title or label (``Dr.``, ``MRN:``,
  ``Name:``, ``DOB:``, ...).

Clinical wording survives: ``"CT CHEST W/O"`` stays ``"CT CHEST W/O"``. Removed text
becomes ``***`` so a reader can see that something was there.

The same variant generators (:func:`name_variants`, :func:`date_variants`,
:func:`phi_variants`) feed the audit's byte scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

from pydicom.dataset import Dataset

REDACTED = "***"

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_RE = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"

#: Keywords whose values are identifying (collected at any depth), by kind.
KNOWN_PHI_KEYWORDS: dict[str, str] = {
    "PatientID": "id",
    "OtherPatientIDs": "id",
    "AccessionNumber": "id",
    "MedicalRecordLocator": "id",
    "AdmissionID": "id",
    "ServiceEpisodeID": "id",
    "RequestedProcedureID": "id",
    "PerformedProcedureStepID": "id",
    "ScheduledProcedureStepID": "id",
    "PlacerOrderNumberImagingServiceRequest": "id",
    "FillerOrderNumberImagingServiceRequest": "id",
    "StudyID": "id",
    "PatientBirthDate": "date",
    "PatientAddress": "address",
    "InstitutionAddress": "address",
    "ReferringPhysicianAddress": "address",
    "PersonAddress": "address",
    "PatientTelephoneNumbers": "phone",
    "ReferringPhysicianTelephoneNumbers": "phone",
    "PersonTelephoneNumbers": "phone",
    "OrderCallbackPhoneNumber": "phone",
    "InstitutionName": "institution",
    "InstitutionalDepartmentName": "site",
    "StationName": "site",
}
#: Kinds the audit searches for (``site`` values such as a department name are cleaned
#: from free text but are too generic to count as a leak on their own).
AUDIT_KINDS = frozenset({"name", "id", "date", "address", "phone", "institution"})

_SEP = r"[\s\^,._\-/()]*"
_BOUND_L = r"(?<![A-Za-z0-9])"
_BOUND_R = r"(?![A-Za-z0-9])"


def _valid_date(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        return None


def date_variants(value: str) -> list[str]:
    """A DICOM date ``YYYYMMDD`` written the ways people write dates.

    Returns the DICOM form, ISO, slashed/dotted/dashed US and European orders (with and
    without leading zeros), two-digit years, and month-name forms.
    """
    text = value.strip()
    d = _valid_date(text) if re.fullmatch(r"\d{8}", text) else None
    if d is None:
        return [text] if text else []
    y, m, dd = f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}"
    yy = y[2:]
    month = MONTHS[d.month - 1]
    out = {
        f"{y}{m}{dd}",
        f"{y}-{m}-{dd}",
        f"{y}/{m}/{dd}",
        f"{y}.{m}.{dd}",
        f"{m}/{dd}/{y}",
        f"{dd}/{m}/{y}",
        f"{dd}.{m}.{y}",
        f"{m}-{dd}-{y}",
        f"{dd}-{m}-{y}",
        f"{d.month}/{d.day}/{y}",
        f"{d.day}/{d.month}/{y}",
        f"{d.day}.{d.month}.{y}",
        f"{m}/{dd}/{yy}",
        f"{dd}/{m}/{yy}",
        f"{month} {d.day}, {y}",
        f"{month[:3]} {d.day}, {y}",
        f"{d.day} {month} {y}",
        f"{d.day} {month[:3]} {y}",
        f"{dd}-{month[:3]}-{y}",
    }
    return sorted(out)


def name_components(value: str) -> list[str]:
    """Name parts of a person name in DICOM (``Last^First^Middle``) or plain form."""
    groups = value.split("=")[0]  # alphabetic group only; ideographic groups are checked as a whole
    return [p for p in re.split(r"[\^\s,]+", groups) if p and p.strip(".")]


def name_variants(value: str, min_component: int = 2) -> list[str]:
    """A person name in the forms it appears in text.

    Parameters
    ----------
    value
        ``Last^First^Middle^Prefix^Suffix`` or free "First Last".
    min_component
        Shortest single component listed on its own (the audit uses 4).
    """
    value = value.strip()
    if not value:
        return []
    out = {value}
    if "^" in value:
        parts = [p.strip() for p in value.split("=")[0].split("^")]
        last = parts[0] if parts else ""
        first = parts[1] if len(parts) > 1 else ""
        middle = parts[2] if len(parts) > 2 else ""
        if last and first:
            out |= {
                f"{first} {last}",
                f"{last} {first}",
                f"{last}, {first}",
                f"{last},{first}",
                f"{last}^{first}",
            }
            if middle:
                out |= {f"{first} {middle} {last}", f"{first} {middle[0]} {last}", f"{first} {middle[0]}. {last}"}
    # family, given and middle names; a prefix or suffix ("Dr", "Jr") identifies no one
    person = "^".join(value.split("=")[0].split("^")[:3]) if "^" in value else value
    for comp in name_components(person):
        comp = comp.strip(".")
        if len(comp) >= min_component and comp.lower() not in GENERIC_WORDS:
            out.add(comp)
    return sorted(s for s in out if s.strip())


def phone_variants(value: str) -> list[str]:
    """A telephone number as written and as its bare digits."""
    digits = re.sub(r"\D", "", value)
    out = {value.strip()}
    if len(digits) >= 7:
        out.add(digits)
        if len(digits) == 10:
            out |= {
                f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
                f"{digits[:3]}-{digits[3:6]}-{digits[6:]}",
                f"{digits[:3]}.{digits[3:6]}.{digits[6:]}",
            }
    return sorted(s for s in out if s)


def address_variants(value: str, min_part: int = 4) -> list[str]:
    """An address as written, with ``^`` as spaces, and its comma/``^`` separated parts."""
    value = value.strip()
    if not value:
        return []
    out = {value, value.replace("^", " "), value.replace("^", ", ")}
    for part in re.split(r"[\^,\n]+", value):
        part = part.strip()
        if len(part) >= min_part and part.lower() not in GENERIC_WORDS:
            out.add(part)
    return sorted(out)


def id_variants(value: str) -> list[str]:
    """An identifier as written and without its separators."""
    value = value.strip()
    if not value:
        return []
    out = {value}
    compact = re.sub(r"[^A-Za-z0-9]", "", value)
    if len(compact) >= 4:
        out.add(compact)
    return sorted(out)


#: Words of institution names and addresses that identify no one on their own: an
#: institution or address is searched as a whole, never by these words.
GENERIC_WORDS = frozenset(
    {
        "academic", "avenue", "care", "center", "centre", "city", "clinic", "clinics", "college", "community",
        "county", "court", "drive", "east", "foundation", "general", "group", "health", "healthcare",
        "heart", "hospital", "hospitals", "imaging", "institute", "lake", "lane", "medical", "medicine",
        "memorial", "mount", "north", "park", "place", "radiology", "regional", "road", "saint", "south",
        "street", "suite", "system", "systems", "university", "valley", "west",
    }
)  # fmt: skip


def phi_variants(value: str, kind: str = "auto", min_component: int = 4) -> list[str]:
    """Variants of one PHI value for searching, by kind.

    Parameters
    ----------
    value
        The PHI string.
    kind
        ``"name"``, ``"date"``, ``"id"``, ``"phone"``, ``"address"``, ``"institution"`` or
        ``"auto"`` (guess from the shape of the value: a list of known PHI strings says
        nothing about kinds).
    min_component
        Shortest name or address component searched on its own.
    """
    value = value.strip()
    if not value:
        return []
    if kind == "auto":
        if re.fullmatch(r"\d{8}", value) and _valid_date(value):
            kind = "date"
        elif re.fullmatch(r"[\d\s()+.\-]{7,}", value):
            kind = "phone"
        elif "^" in value and re.search(r"\d", value) is None:
            kind = "name"
        elif re.search(r"\d", value) and re.search(r"[A-Za-z]{3,}", value) and " " in value:
            kind = "address"
        elif any(w in GENERIC_WORDS for w in re.split(r"[^a-z]+", value.lower())):
            kind = "institution"
        elif re.fullmatch(r"[A-Za-z][A-Za-z'\-]*(?: [A-Za-z][A-Za-z'\-.]*){1,3}", value):
            kind = "name"
        else:
            kind = "id"
    if kind == "name":
        return name_variants(value, min_component=min_component)
    if kind == "date":
        return date_variants(value)
    if kind == "phone":
        return phone_variants(value)
    if kind == "address":
        return address_variants(value, min_part=min_component)
    if kind == "id":
        return id_variants(value)
    return [value]


# --- known PHI of one dataset ------------------------------------------------------------------


def _string_values(value: object) -> list[str]:
    if value is None:
        return []
    from pydicom.multival import MultiValue

    items: Iterable[object] = value if isinstance(value, MultiValue | list | tuple) else [value]
    out = []
    for item in items:
        text = item.decode("latin-1", "replace") if isinstance(item, bytes) else str(item)
        if text.strip():
            out.append(text.strip())
    return out


def iter_identifying_values(ds: Dataset, *, include_institution: bool = True) -> Iterator[tuple[str, str]]:
    """Yield ``(kind, value)`` for every identifying value in ``ds`` at any depth.

    Person names (every PN element) and the attributes of :data:`KNOWN_PHI_KEYWORDS`.
    Bulk values (pixel data, contour data) are never decoded.
    """
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if raw is None:
            continue
        vr = raw.VR
        if vr is None or vr in ("UN", "OB or OW", "US or SS"):
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN"
        keyword = keyword_for_tag(tag)
        kind = KNOWN_PHI_KEYWORDS.get(keyword)
        if vr == "SQ":
            try:
                items = ds[tag].value
            except Exception:  # a broken item cannot be read for PHI either
                continue
            for item in items or []:
                yield from iter_identifying_values(item, include_institution=include_institution)
            continue
        if vr != "PN" and kind is None:
            continue
        if kind in ("institution", "site") and not include_institution:
            continue
        try:
            value = ds[tag].value
        except Exception:
            continue
        for text in _string_values(value):
            yield ("name" if vr == "PN" else (kind or "id")), text


def known_phi_terms(values: Iterable[tuple[str, str]]) -> list[str]:
    """Search terms (with variants) for ``(kind, value)`` pairs, for cleaning text."""
    terms: set[str] = set()
    for kind, value in values:
        if kind in ("institution", "site"):
            terms.add(value)
            continue
        terms.update(phi_variants(value, kind, min_component=2))
    return sorted(t for t in terms if len(t.strip()) >= 2)


def collect_known_phi(ds: Dataset, *, include_institution: bool = True) -> list[str]:
    """Known PHI strings of one dataset, each expanded to its variants (for cleaning text).

    Parameters
    ----------
    ds
        The source dataset, before any change.
    include_institution
        Whether institution and station names count (not when Retain Institution
        Identity keeps them).
    """
    return known_phi_terms(iter_identifying_values(ds, include_institution=include_institution))


def _term_regex(term: str) -> str:
    """A regex for a term that tolerates any separators between its words/characters."""
    words = [w for w in re.split(r"[\s\^,._\-/()]+", term) if w]
    if not words:
        return re.escape(term)
    if len(words) == 1 and re.fullmatch(r"[\d]+", words[0]) and len(words[0]) >= 6:
        # A long number: also match it written with separators (555-123-4567, 1234 5678).
        return r"[\s().\-]*".join(re.escape(c) for c in words[0])
    return _SEP.join(re.escape(w) for w in words)


def _squash(text: str) -> str:
    """Lower case without separators: a cheap test of whether a term can occur in a text."""
    return _SQUASH.sub("", text.lower())


_SQUASH = re.compile(r"[\W_]+")


@lru_cache(maxsize=1 << 14)
def _terms_regex(terms: tuple[str, ...]) -> re.Pattern[str]:
    alternation = "|".join(_term_regex(t) for t in terms)
    return re.compile(f"{_BOUND_L}(?:{alternation}){_BOUND_R}", re.IGNORECASE)


#: Cleaned texts a :class:`Scrubber` remembers (one patient's distinct texts fit many times over).
MEMO_SIZE = 1 << 14


@dataclass(frozen=True)
class Scrubber:
    """Removes the known PHI of one patient from text.

    Build with :func:`build_scrubber`. A term can only match where its letters and
    digits appear in order (separators aside), so each text is first tested against
    the squashed terms and a regex is compiled (and cached) only for the terms present.
    """

    terms: tuple[tuple[str, str], ...] = ()
    #: Texts cleaned so far (a patient's files repeat their descriptions, names and places).
    memo: dict[tuple[bool, str], str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_empty(self) -> bool:
        """Nothing known to remove."""
        return not self.terms

    def scrub(self, text: str) -> str:
        """``text`` with every known PHI term replaced by ``***``."""
        if not self.terms or not text:
            return text
        squashed = _squash(text)
        present = tuple(term for key, term in self.terms if key in squashed)
        if not present:
            return text
        return _terms_regex(present).sub(REDACTED, text)

    def cleaned(self, text: str, *, full: bool) -> str:
        """:func:`clean_text` of ``text`` with this scrubber (``full``), else :meth:`scrub`; remembered."""
        key = (full, text)
        out = self.memo.get(key)
        if out is None:
            out = clean_text(text, self) if full else self.scrub(text)
            if len(self.memo) < MEMO_SIZE:
                self.memo[key] = out
        return out


def build_scrubber(terms: Iterable[str]) -> Scrubber:
    """A :class:`Scrubber` for ``terms`` (longest first, case-insensitive, word-bounded)."""
    unique = sorted({t.strip() for t in terms if t and t.strip()}, key=lambda t: (-len(t), t))
    return Scrubber(tuple((_squash(t), t) for t in unique))


#: PHI patterns removed from free text, in the order applied.
PHI_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")),
    ("url", re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)),
    (
        "labelled",
        re.compile(
            r"\b(?:MRN|MR#|Med(?:ical)?\s*Rec(?:ord)?(?:\s*(?:No|Number))?|Patient(?:\s*Name)?|Pt|Name|DOB|"
            r"D\.O\.B|Birth\s*Date|Acc(?:ession)?(?:\s*(?:No|Number|#))?|SSN|ID|Phone|Tel|Address|Addr|"
            r"Ref(?:erring)?(?:\s*(?:Phys(?:ician)?|MD))?|Physician|Tech(?:nologist)?|Attending|Reader)"
            r"\s*(?:#|No\.?|Number)?\s*[:=#]\s*"
            r"[A-Za-z0-9^'.,\-/]+(?:[ ^][A-Za-z0-9'.\-/]+){0,2}",
            re.IGNORECASE,
        ),
    ),
    (
        "titled_name",
        re.compile(r"\b(?:Dr|Drs|Doctor|Mr|Mrs|Ms|Miss|Prof)\.?\s+[A-Z][A-Za-z'\-]+(?:[\s,^]+[A-Z][A-Za-z'\-]+)?"),
    ),
    ("dicom_name", re.compile(r"\b[A-Za-z][A-Za-z'\-]+\^[A-Za-z][A-Za-z'\-]*(?:\^[A-Za-z.'\-]*)*")),
    (
        "phone",
        re.compile(r"(?<!\d)(?:\+?\d{1,3}[\s.\-]?)?\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}(?!\d)"),
    ),
    (
        "date_numeric",
        re.compile(r"(?<!\d)(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2}))(?!\d)"),
    ),
    (
        "date_words",
        re.compile(
            rf"\b(?:{_MONTH_RE}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{2,4}}|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH_RE},?\s+\d{{2,4}})\b",
            re.IGNORECASE,
        ),
    ),
    (
        "street_address",
        re.compile(
            r"\b\d{1,6}\s+(?:[A-Za-z0-9'.\-]+\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|"
            r"Drive|Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir|Highway|Hwy|Parkway|Pkwy)\b\.?",
            re.IGNORECASE,
        ),
    ),
    ("zip", re.compile(r"\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")),
    ("long_id", re.compile(r"\b[A-Za-z]{0,4}[\-#]?\d{6,}[A-Za-z]{0,2}\b")),
)


_MAY_MATCH = re.compile(r"[\d@^:=#]|\b(?:Drs?|Doctor|Mrs?|Ms|Miss|Prof|www)\b", re.IGNORECASE)


def clean_text(text: str, scrubber: Scrubber | None = None) -> str:
    """Remove known PHI and PHI patterns from ``text``, keeping the clinical words.

    Parameters
    ----------
    text
        A descriptor value, e.g. (0008,1030) Study Description.
    scrubber
        The patient's known PHI (:func:`build_scrubber`); patterns apply either way.

    Examples
    --------
    >>> clean_text("CT CHEST W/O")
    'CT CHEST W/O'
    >>> clean_text("Follow-up per Dr. Smith, call 555-123-4567")
    'Follow-up per ***, call ***'
    """
    if not text:
        return text
    out = scrubber.scrub(text) if scrubber is not None else text
    if _MAY_MATCH.search(out):  # every pattern needs a digit, one of these signs or a title
        for _, pattern in PHI_PATTERNS:
            out = pattern.sub(REDACTED, out)
    if out != text:
        out = re.sub(r"(?:\*\*\*[\s,;:]*){2,}", REDACTED + " ", out)
        out = re.sub(r"[ \t]{2,}", " ", out).strip()
    return out

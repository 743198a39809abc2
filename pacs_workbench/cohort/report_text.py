"""Report text: what identifies stripped, then sections and sentences.

Reports arrive as text files named by (0008,0050) Accession Number, with a header of
identifiers (name, MRN, birth date, referring physician) and free-text sections.
:func:`strip_phi` drops everything before the first clinical section heading and signature
lines, and replaces dates, accession numbers and other IDs, physician names and phone numbers
in the body; :func:`split_sections` and :func:`split_sentences` cut what is left.
"""

from __future__ import annotations

import re

SECTION_NAMES = (
    "CLINICAL HISTORY", "HISTORY", "INDICATION", "INDICATIONS", "CLINICAL INFORMATION", "REASON FOR EXAM",
    "TECHNIQUE", "PROCEDURE", "COMPARISON", "COMPARISONS", "FINDINGS", "IMPRESSION", "CONCLUSION",
    "CONCLUSIONS", "SUMMARY", "RECOMMENDATION", "RECOMMENDATIONS", "LUNGS", "LUNG", "PLEURA", "AIRWAYS",
    "MEDIASTINUM", "HEART", "BONES", "UPPER ABDOMEN", "SOFT TISSUES", "OTHER",
)  # fmt: skip
# Sections that open the clinical body; anything before the first one is header (identifiers).
_BODY_START = {"CLINICAL HISTORY", "HISTORY", "INDICATION", "INDICATIONS", "CLINICAL INFORMATION",
               "REASON FOR EXAM", "TECHNIQUE", "PROCEDURE", "COMPARISON", "COMPARISONS", "FINDINGS",
               "IMPRESSION"}  # fmt: skip


_PHI_LABELS = re.compile(
    r"^\s*(PATIENT( NAME)?|NAME|MRN|MEDICAL RECORD( NUMBER| NO\.?)?|PATIENT ID|ID|DOB|DATE OF BIRTH|BIRTH ?DATE"
    r"|SEX|AGE|ACCESSION( NUMBER| NO\.?| #)?|ACC( #)?|EXAM DATE|DATE( OF (EXAM|SERVICE))?|STUDY DATE"
    r"|REFERRING( PHYSICIAN)?|ORDERING( PHYSICIAN)?|ATTENDING|PHYSICIAN|ADDRESS|PHONE|LOCATION|FACILITY"
    r"|INSTITUTION|HOSPITAL|ENCOUNTER|VISIT|CSN|FIN)\s*[:#]",
    re.IGNORECASE,
)
_SIGNATURE = re.compile(
    r"(electronically )?(signed|dictated|transcribed|reviewed|verified|read) by|attending radiologist|^\s*(dr\.?|md)\b",
    re.IGNORECASE,
)
_SCRUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b"), "[DATE]"),
    (re.compile(r"\b(19|20)\d{2}-\d{2}-\d{2}\b"), "[DATE]"),
    (re.compile(r"\b(19|20)\d{6}\b"), "[DATE]"),
    (
        re.compile(r"\b(accession|acc|mrn|medical record|patient id)( number| no\.?| #)?[:#]?\s*[A-Za-z0-9-]+", re.I),
        "[ID]",
    ),
    (re.compile(r"\b[A-Z]{1,3}\d{5,}\b"), "[ID]"),
    (re.compile(r"\(?\b\d{3}\)?[ .-]\d{3}-\d{4}\b"), "[PHONE]"),
    (re.compile(r"\b(Dr|Doctor)\.?\s+[A-Z][a-zA-Z'-]+(\s+[A-Z][a-zA-Z'-]+)*(,?\s*(MD|DO|PhD))?"), "[PHYSICIAN]"),
)


def _heading(line: str) -> tuple[str, str] | None:
    match = re.match(r"^\s*([A-Za-z][A-Za-z /&]{2,40}?)\s*:\s*(.*)$", line)
    if not match:
        return None
    name = re.sub(r"\s+", " ", match.group(1).strip().upper())
    return (name, match.group(2)) if name in SECTION_NAMES else None


def strip_phi(text: str) -> str:
    """The report without what identifies: header block, signature, dates, IDs, names, phones.

    Everything before the first clinical section heading (``CLINICAL HISTORY``,
    ``TECHNIQUE``, ``COMPARISON``, ``FINDINGS``, ``IMPRESSION``...) is dropped: report
    headers carry the name, MRN, birth date and accession number. A report without any
    heading keeps its lines except those labelled like header fields (``MRN:``...). In the
    body, signature lines are dropped and dates, identifiers, physician names and phone
    numbers are replaced by ``[DATE]``, ``[ID]``, ``[PHYSICIAN]``, ``[PHONE]``.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if (h := _heading(line)) and h[0] in _BODY_START), None)
    kept = lines[start:] if start is not None else [line for line in lines if not _PHI_LABELS.match(line)]
    out = []
    for line in kept:
        if _SIGNATURE.search(line) or _PHI_LABELS.match(line):
            continue
        for pattern, replacement in _SCRUBS:
            line = pattern.sub(replacement, line)
        out.append(line)
    return "\n".join(out).strip()


def split_sections(text: str) -> list[tuple[str, str]]:
    """``(section, text)`` pairs in order; text before any heading is section ``""``."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.split("\n"):
        heading = _heading(line)
        if heading:
            sections.append((heading[0], [heading[1]] if heading[1].strip() else []))
        else:
            sections[-1][1].append(line)
    return [(name, " ".join(" ".join(body).split())) for name, body in sections if " ".join(body).strip()]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\[(A-Z0-9])|(?<=\.)\s*(?=\d+\.\s)|\s+(?=\d+\.\s+[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of one section (decimals such as ``3.0`` and list numbers stay intact)."""
    parts = [p.strip() for p in _SENTENCE_END.split(text) if p and p.strip()]
    # Drop bare list numbers ("1.") left alone by the split.
    return [p for p in parts if not re.fullmatch(r"\d+\.", p)]

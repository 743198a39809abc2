"""Report mining: structured findings from free-text radiology reports (first version).

Reports arrive as text files named by (0008,0050) Accession Number, with a header of
identifiers (name, MRN, birth date, referring physician) and free-text sections. This
module:

1. strips what identifies (:func:`strip_phi`): everything before the first clinical
   section heading, signature lines, dates, accession numbers and other IDs, physician
   names and phone numbers in the body;
2. splits the remaining text into sections and sentences;
3. extracts per nodule its size in mm (``8 mm``, ``8-mm``, ``0.8 cm``, ``12 x 9 mm`` ->
   largest dimension; the prior size in ``increased from 5 mm`` is kept apart), its
   lobe (``right upper lobe``/``RUL``, lingula -> LUL), its change versus the prior
   (new, stable, growing, decreased), composition and margin;
4. reads the Lung-RADS-like impression category (``Lung-RADS 4A``, ``LR-3``);
5. classifies mentions of a small finding vocabulary (effusion, pneumothorax,
   consolidation, lymphadenopathy, ...) as present, absent or possible with
   NegEx-style triggers (Chapman et al., J Biomed Inform 34 (2001) 301-310): a
   pre-negation trigger (``no``, ``without``, ``negative for``...) negates what follows
   it, a post-negation trigger (``is not seen``, ``has resolved``...) what precedes it,
   within the sentence and up to a termination term (``but``, ``however``, ``;``...);
   pseudo-negations (``no change``, ``no interval growth``) are not triggers.

Everything handed on is keyed by ``pseudo_accession`` =
``pseudonymize(key, AccessionNumber, "accession")``; no text leaves, only the fields.
:func:`link_reports` attaches the cohort's ``pseudo_study_id``/``pseudo_patient_id``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.pseudonym import pseudonymize

# --- vocabularies ------------------------------------------------------------------------------

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

LOBES: dict[str, re.Pattern[str]] = {
    "RUL": re.compile(r"\bright\s+upper\s+lobe\b|\bRUL\b|\bright\s+apex\b|\bright\s+apical\b", re.I),
    "RML": re.compile(r"\b(right\s+)?middle\s+lobe\b|\bRML\b", re.I),
    "RLL": re.compile(r"\bright\s+lower\s+lobe\b|\bRLL\b|\bright\s+(lung\s+)?base\b", re.I),
    "LUL": re.compile(r"\bleft\s+upper\s+lobe\b|\bLUL\b|\blingula(r)?\b|\bleft\s+apex\b|\bleft\s+apical\b", re.I),
    "LLL": re.compile(r"\bleft\s+lower\s+lobe\b|\bLLL\b|\bleft\s+(lung\s+)?base\b", re.I),
}
FINDINGS: dict[str, re.Pattern[str]] = {
    "nodule": re.compile(r"\b(micro)?nodules?\b|\bnodular\s+opacit(y|ies)\b", re.I),
    "mass": re.compile(r"\bmass(es)?\b", re.I),
    "pleural_effusion": re.compile(
        r"\bpleural\b(?=\s+(or|and|and/or|/)\s+pericardial\s+effusions?)|\b(pleural\s+)?effusions?\b", re.I
    ),
    "pericardial_effusion": re.compile(r"\bpericardial\s+effusions?\b", re.I),
    "pneumothorax": re.compile(r"\bpneumothora(x|ces)\b", re.I),
    "consolidation": re.compile(r"\bconsolidations?\b|\bairspace\s+disease\b", re.I),
    "lymphadenopathy": re.compile(
        r"\blymphadenopathy\b|\badenopathy\b|\benlarged\s+(\w+\s+){0,2}lymph\s+nodes?\b|\blymph\s+node\s+enlargement\b",
        re.I,
    ),
    "emphysema": re.compile(r"\bemphysema(tous)?\b", re.I),
    "atelectasis": re.compile(r"\batelecta(sis|tic)\b", re.I),
    "ground_glass": re.compile(r"\bground[- ]glass\b|\bGGOs?\b", re.I),
    "osseous_lesion": re.compile(r"\b(osseous|bone|bony|lytic|sclerotic|blastic)\s+(lesions?|metastas[ie]s)\b", re.I),
    "fibrosis": re.compile(r"\bfibros(is|ing)\b|\bfibrotic\b|\bhoneycombing\b", re.I),
}
# NegEx-style triggers (lower case). Longer phrases are matched first.
_PSEUDO = (
    r"no (significant |interval |appreciable )*(change|increase|growth|enlargement)",
    r"not (significantly )?changed", r"without (significant |interval )?(change|growth)", r"not only",
    r"no longer enlarged", r"gram negative", r"no further",
)  # fmt: skip
_PRE_NEG = (
    r"no evidence of", r"no signs? of", r"no suspicious", r"no definite", r"no new", r"no other", r"no",
    r"negative for", r"without", r"free of", r"absence of", r"rules? out", r"ruled out", r"not",
    r"neither", r"nor", r"resolution of", r"resolved",
)  # fmt: skip
_POST_NEG = (
    r"(is|are|was|were) not (seen|identified|present|visualized|demonstrated|evident)",
    r"not (seen|identified|present|visualized|demonstrated)", r"(is|are|has|have) resolved",
    r"(has|have) (since )?resolved", r"(is|are|was|were) (absent|excluded|ruled out)",
    r"no longer (seen|visible|present|identified)",
    r"(is|are) no longer (seen|visible|present|identified)", r"unlikely",
)  # fmt: skip
# Uncertainty: before the finding ("possible effusion") or after it ("effusion cannot be
# excluded"); "concerning for malignancy" after a mass qualifies the mass, not its presence.
_POSSIBLE_PRE = (
    r"possible", r"possibly", r"may represent", r"may be", r"might represent", r"suspicious for",
    r"concerning for", r"questionable", r"equivocal", r"probable", r"probably", r"suggestive of",
    r"versus", r"vs\.?", r"differential includes", r"likely", r"suspected",
)  # fmt: skip
_POSSIBLE_POST = (
    r"cannot be excluded", r"can ?not be ruled out", r"not excluded", r"is (possible|suspected|likely)",
    r"versus", r"vs\.?", r"or not",
)  # fmt: skip
_TERMINATE = (
    r"but", r"however", r"although", r"though", r"except", r"aside from", r"apart from", r"which",
    r"with the exception of", r"otherwise", r"whereas", r"yet", r"still", r"there is", r"there are",
    r"there has been", r";",
)  # fmt: skip


def _alternation(phrases: Iterable[str]) -> re.Pattern[str]:
    ordered = sorted(phrases, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(ordered) + r")(?![\w-])", re.IGNORECASE)


_PSEUDO_RE = _alternation(_PSEUDO)
_PRE_RE = _alternation(_PRE_NEG)
_POST_RE = _alternation(_POST_NEG)
_POSSIBLE_PRE_RE = _alternation(_POSSIBLE_PRE)
_POSSIBLE_POST_RE = _alternation(_POSSIBLE_POST)
_TERM_RE = re.compile(r"(?<![\w-])(" + "|".join(t for t in _TERMINATE if t != ";") + r")(?![\w-])|;", re.I)

_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_UNIT = r"(mm|millimet(?:er|re)s?|cm|centimet(?:er|re)s?)\b"
# "12 x 9 x 8 mm", "4-6 mm", "8-mm", "8mm", "0.8 cm", "4 and 6 mm"
_MEASURE = re.compile(
    rf"{_NUMBER}(?:\s*(?:x|×|by)\s*{_NUMBER})?(?:\s*(?:x|×|by)\s*{_NUMBER})?"
    rf"(?:\s*(?:-|–|to|and)\s*{_NUMBER})?\s*-?\s*{_UNIT}",
    re.IGNORECASE,
)
_PRIOR_CUE = re.compile(
    r"(from|compared (with|to)|previously( measuring| measured)?|prior( measurement)?( of)?|previous"
    r"|was|were|formerly|versus|vs\.?|measuring previously)"
    r"\s+(approximately\s+|about\s+)?$",
    re.I,
)
_SHORT_AXIS = re.compile(r"^\s*(in\s+)?short[- ]axis", re.I)
_CHANGE = (
    ("stable", re.compile(r"\b(stable|unchanged|no (significant |interval |appreciable )*(change|growth|increase|"
                          r"enlargement)|not (significantly )?changed|without (significant |interval )*"
                          r"(change|growth|increase|enlargement))\b", re.I)),
    ("growing", re.compile(r"\b(increas\w*|enlarg\w*|grow\w*|grew|interval growth|larger|progress\w*)\b", re.I)),
    ("decreased", re.compile(r"\b(decreas\w*|smaller|shrunk|shrink\w*|regress\w*|resolv\w*)\b", re.I)),
    ("stable", re.compile(r"\b(redemonstrated|persistent|persists)\b", re.I)),
    ("new", re.compile(r"\b(new|newly|interval development|developed|incident)\b", re.I)),
)  # fmt: skip
_COMPOSITION = (
    ("calcified", re.compile(r"\bcalcifi\w*\b|\bgranuloma\b", re.I)),
    ("part-solid", re.compile(r"\bpart[- ]?solid\b|\bsemi[- ]?solid\b|\bmixed\b", re.I)),
    ("ground-glass", re.compile(r"\bground[- ]glass\b|\bnon[- ]?solid\b|\bGGO\b|\bGGN\b", re.I)),
    ("solid", re.compile(r"\bsolid\b", re.I)),
)
_MARGIN = (
    ("spiculated", re.compile(r"\bspicul\w*\b", re.I)),
    ("lobulated", re.compile(r"\blobulat\w*\b", re.I)),
    ("irregular", re.compile(r"\birregular\w*\b", re.I)),
    ("smooth", re.compile(r"\bsmooth\w*\b|\bwell[- ]circumscribed\b|\bwell[- ]defined\b", re.I)),
)
_LUNG_RADS = re.compile(
    r"\b(?:lung[- ]?rads|LR)\b(?:\s*(?:v?\d\.\d|version\s+\d\.\d))?\s*[- :]?\s*(?:category\s*|cat\.?\s*)?"
    r"(4\s*[ABX]|[0-4][SC]?|[0-4])\b",
    re.IGNORECASE,
)
_NO_COMPARISON = re.compile(r"^\s*(none|no prior|not available|n/?a|no comparison|no previous)", re.I)
STATUS_ORDER = {"absent": 0, "possible": 1, "present": 2}


class ReportError(ValueError):
    """A report that cannot be mined (empty, no readable text)."""


# --- cleaning and splitting --------------------------------------------------------------------


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


# --- sentence level ----------------------------------------------------------------------------


def _mask(text: str, pattern: re.Pattern[str]) -> tuple[str, list[tuple[int, int]]]:
    spans = [m.span() for m in pattern.finditer(text)]
    masked = text
    for a, b in spans:
        masked = masked[:a] + " " * (b - a) + masked[b:]
    return masked, spans


NEGATION_WINDOW = 6  # words between a trigger and its finding (NegEx used 5)


def _blocked(text: str, a: int, b: int) -> bool:
    """Whether the gap ``text[a:b]`` ends the scope: a termination term or too many words."""
    gap = text[a:b]
    return bool(_TERM_RE.search(gap)) or len(re.findall(r"[\w-]+", gap)) > NEGATION_WINDOW


def mention_status(sentence: str, start: int, end: int) -> str:
    """``present``, ``absent`` or ``possible`` for the finding at ``sentence[start:end]``."""
    masked, _ = _mask(sentence, _PSEUDO_RE)
    masked, post_spans = _mask(masked, _POST_RE)
    pre = [m.span() for m in _PRE_RE.finditer(masked)]
    for _a, b in pre:
        if b <= start and not _blocked(sentence, b, start):
            return "absent"
    for a, _b in post_spans:
        if a >= end and not _blocked(sentence, end, a):
            return "absent"
    for m in _POSSIBLE_PRE_RE.finditer(masked):
        if m.end() <= start and not _blocked(sentence, m.end(), start):
            return "possible"
    for m in _POSSIBLE_POST_RE.finditer(masked):
        if m.start() >= end and not _blocked(sentence, end, m.start()):
            return "possible"
    return "present"


def find_mentions(sentence: str) -> list[tuple[str, str, int, int]]:
    """``(finding, status, start, end)`` for every vocabulary finding mentioned in ``sentence``."""
    found = []
    taken: list[tuple[int, int]] = []
    # Specific names first so "pericardial effusion" is not also a pleural effusion.
    for name in ("pericardial_effusion", *[n for n in FINDINGS if n != "pericardial_effusion"]):
        for m in FINDINGS[name].finditer(sentence):
            a, b = m.span()
            if any(a < y and x < b for x, y in taken):
                continue
            taken.append((a, b))
            found.append((name, mention_status(sentence, a, b), a, b))
    return sorted(found, key=lambda f: f[2])


def _to_mm(value: float, unit: str) -> float:
    return value * 10.0 if unit.lower().startswith("c") else value


def measurements(sentence: str) -> list[dict[str, Any]]:
    """Every size in ``sentence``: ``{"mm", "start", "end", "prior", "short_axis"}`` (largest dimension)."""
    out = []
    for m in _MEASURE.finditer(sentence):
        numbers = [float(g) for g in m.groups()[:4] if g is not None]
        unit = m.group(5)
        if not numbers:
            continue
        mm = max(_to_mm(n, unit) for n in numbers)
        before = sentence[max(0, m.start() - 40) : m.start()]
        after = sentence[m.end() : m.end() + 20]
        out.append(
            {
                "mm": round(mm, 2),
                "start": m.start(),
                "end": m.end(),
                "prior": bool(_PRIOR_CUE.search(before)),
                "short_axis": bool(_SHORT_AXIS.match(after)),
            }
        )
    return out


def _first(patterns: Iterable[tuple[str, re.Pattern[str]]], text: str) -> str | None:
    return next((name for name, pattern in patterns if pattern.search(text)), None)


def lobe_of(text: str) -> str | None:
    """The lobe (``RUL``, ``RML``, ``RLL``, ``LUL``, ``LLL``) named first in ``text``."""
    hits = [(m.start(), code) for code, pattern in LOBES.items() for m in [pattern.search(text)] if m]
    return min(hits)[1] if hits else None


def nodules_in_sentence(sentence: str) -> list[dict[str, Any]]:
    """Affirmed (not negated) nodule mentions of one sentence, with their attributes."""
    mentions = [m for m in find_mentions(sentence) if m[0] in ("nodule", "mass") and m[1] != "absent"]
    if not mentions:
        return []
    sizes = [s for s in measurements(sentence) if not s["short_axis"]]
    current = [s for s in sizes if not s["prior"]]
    prior = [s for s in sizes if s["prior"]]
    results = []
    # One nodule per sentence in this version: the first affirmed mention, its nearest size.
    name, status, a, b = mentions[0]
    size = min(current, key=lambda s: min(abs(s["end"] - a), abs(s["start"] - b)), default=None)
    change = _first(_CHANGE, sentence)
    if change is None and size and prior:
        # Sizes without words: Lung-RADS counts growth above 1.5 mm.
        delta = size["mm"] - prior[0]["mm"]
        change = "growing" if delta > 1.5 else "decreased" if delta < -1.5 else "stable"
    results.append(
        {
            "finding": name,
            "status": status,
            "size_mm": size["mm"] if size else None,
            "prior_size_mm": prior[0]["mm"] if prior else None,
            "location": lobe_of(sentence),
            "change": change,
            "composition": _first(_COMPOSITION, sentence),
            "margin": _first(_MARGIN, sentence),
        }
    )
    return results


def lung_rads_of(text: str) -> str | None:
    """The Lung-RADS category named in ``text`` (``"4A"``, ``"2"``...), the highest when several."""
    found = [re.sub(r"\s+", "", m.group(1)).upper() for m in _LUNG_RADS.finditer(text)]
    order = ["0", "1", "2", "3", "4A", "4B", "4X"]
    ranked = [c for c in found if c.rstrip("SC") in order]
    return max(ranked, key=lambda c: order.index(c.rstrip("SC"))) if ranked else None


# --- report level ------------------------------------------------------------------------------


@dataclass
class MinedReport:
    """What one report says, without its text."""

    fields: dict[str, Any]
    nodules: list[dict[str, Any]] = field(default_factory=list)
    mentions: list[dict[str, Any]] = field(default_factory=list)


def mine_report(text: str) -> MinedReport:
    """Structured findings of one report (identifiers stripped first, see :func:`strip_phi`).

    Returns
    -------
    MinedReport
        ``fields``: ``sections_found``, ``has_prior`` (from COMPARISON; None if absent),
        ``nodule_present``, ``nodule_count``, ``nodule_size_mm`` (largest current size),
        ``nodule_location``, ``nodule_change`` (of the largest nodule), ``lung_rads``,
        and ``finding_<name>`` = present/absent/possible/None per vocabulary finding;
        ``nodules``: one dict per nodule mention in the findings; ``mentions``: every
        vocabulary mention with its status and section.

    Raises
    ------
    ReportError
        When nothing is left to read after stripping identifiers.
    """
    body = strip_phi(text)
    if not body.strip():
        raise ReportError("empty report (nothing left after removing the header)")
    sections = split_sections(body)
    names = [name for name, _ in sections]
    fields: dict[str, Any] = {"sections_found": any(names)}
    comparison = next((t for n, t in sections if n in ("COMPARISON", "COMPARISONS")), None)
    fields["has_prior"] = None if comparison is None else not bool(_NO_COMPARISON.match(comparison))
    # Nodules are counted where the reader describes them; the impression repeats them.
    descriptive = {"FINDINGS", "LUNGS", "LUNG", "PLEURA", "AIRWAYS", "MEDIASTINUM", "HEART", "BONES", ""}
    nodule_sections = [s for s in sections if s[0] in descriptive] or sections
    nodules: list[dict[str, Any]] = []
    mentions: list[dict[str, Any]] = []
    for name, section_text in sections:
        if name in ("CLINICAL HISTORY", "HISTORY", "INDICATION", "INDICATIONS", "CLINICAL INFORMATION",
                    "REASON FOR EXAM", "TECHNIQUE", "PROCEDURE", "COMPARISON", "COMPARISONS"):  # fmt: skip
            continue  # what was asked or done, not what was found
        for sentence in split_sentences(section_text):
            for finding, status, _a, _b in find_mentions(sentence):
                mentions.append({"finding": finding, "status": status, "section": name or None})
            if (name, section_text) in nodule_sections:
                for nodule in nodules_in_sentence(sentence):
                    nodules.append({**nodule, "section": name or None})
    if fields["has_prior"] is False:
        for nodule in nodules:
            if nodule["change"] is None:
                nodule["change"] = "new"  # nothing to compare with: first seen on this exam
    for finding in FINDINGS:
        statuses = [m["status"] for m in mentions if m["finding"] == finding]
        fields[f"finding_{finding}"] = max(statuses, key=STATUS_ORDER.__getitem__) if statuses else None
    sized = [n for n in nodules if n["size_mm"] is not None]
    main = max(sized, key=lambda n: n["size_mm"]) if sized else (nodules[0] if nodules else None)
    fields["nodule_present"] = bool(nodules) or fields["finding_nodule"] == "present"
    fields["nodule_count"] = len(nodules)
    fields["nodule_size_mm"] = main["size_mm"] if main else None
    fields["nodule_location"] = main["location"] if main else None
    fields["nodule_change"] = main["change"] if main else None
    impression = " ".join(t for n, t in sections if n in ("IMPRESSION", "CONCLUSION", "CONCLUSIONS", "SUMMARY"))
    fields["lung_rads"] = lung_rads_of(impression) or lung_rads_of(body)
    return MinedReport(fields, nodules, mentions)


@dataclass
class ReportMining:
    """Mined reports keyed by ``pseudo_accession`` (no text, no identifiers)."""

    reports: pd.DataFrame
    nodules: pd.DataFrame
    mentions: pd.DataFrame
    errors: pd.DataFrame


def _mine_file(path: Path) -> MinedReport:
    return mine_report(path.read_text(encoding="utf-8", errors="replace"))


def mine_reports(
    report_dir: str | os.PathLike[str], key: bytes, *, pattern: str = "*.txt"
) -> ReportMining:
    """Mine every report ``<AccessionNumber>.txt`` in ``report_dir``.

    Parameters
    ----------
    report_dir
        Folder of report files named by (0008,0050) Accession Number.
    key
        Project key; ``pseudo_accession = pseudonymize(key, accession, "accession")``.

    Returns
    -------
    ReportMining
        ``reports`` (one row per report: ``pseudo_accession`` + :func:`mine_report`
        fields), ``nodules`` (one row per nodule mention), ``mentions`` (one row per
        finding mention) and ``errors`` (``source`` = ``report #<n>``, ``error``; the
        file name is an accession number and is never shown).
    """
    report_rows, nodule_rows, mention_rows, errors = [], [], [], []
    files = sorted(Path(report_dir).glob(pattern))
    for n, path in enumerate(files, start=1):
        pseudo = pseudonymize(key, path.stem, "accession")
        try:
            mined = _mine_file(path)
        except (OSError, ReportError) as exc:
            message = str(exc) if isinstance(exc, ReportError) else type(exc).__name__
            errors.append({"source": f"report #{n}", "error": message})
            continue
        report_rows.append({"pseudo_accession": pseudo, **mined.fields})
        nodule_rows += [{"pseudo_accession": pseudo, "nodule_index": i, **nod} for i, nod in enumerate(mined.nodules)]
        mention_rows += [{"pseudo_accession": pseudo, **m} for m in mined.mentions]
    reports = pd.DataFrame(report_rows)
    if not reports.empty:
        reports["nodule_size_mm"] = reports["nodule_size_mm"].astype(float)
        reports["nodule_count"] = reports["nodule_count"].astype("Int64")
    return ReportMining(
        reports,
        pd.DataFrame(nodule_rows),
        pd.DataFrame(mention_rows),
        pd.DataFrame(errors, columns=["source", "error"]),
    )


def link_reports(mining: ReportMining, studies: pd.DataFrame, key: bytes) -> tuple[pd.DataFrame, dict[str, int]]:
    """Attach ``pseudo_study_id`` and ``pseudo_patient_id`` to each mined report.

    Parameters
    ----------
    studies
        Identified studies table: ``AccessionNumber``, ``StudyInstanceUID``, ``PatientID``.

    Returns
    -------
    (pandas.DataFrame, dict)
        Reports with the two pseudonyms (missing where no study has the accession) and
        counts: ``reports``, ``linked``, ``reports_without_study``, ``studies_without_report``.
    """
    needed = {"AccessionNumber", "StudyInstanceUID", "PatientID"}
    if needed - set(studies.columns):
        raise ValueError(f"studies table lacks column(s) {', '.join(sorted(needed - set(studies.columns)))}")
    keyed = studies.drop_duplicates("StudyInstanceUID").dropna(subset=["AccessionNumber"])
    table = pd.DataFrame(
        {
            "pseudo_accession": [pseudonymize(key, str(a), "accession") for a in keyed["AccessionNumber"]],
            "pseudo_study_id": [pseudonymize(key, str(s), "study") for s in keyed["StudyInstanceUID"]],
            "pseudo_patient_id": [pseudonymize(key, str(p), "patient") for p in keyed["PatientID"]],
        }
    ).drop_duplicates("pseudo_accession")
    reports = mining.reports
    if reports.empty:
        reports = pd.DataFrame(columns=["pseudo_accession"])
    linked = reports.merge(table, on="pseudo_accession", how="left")
    counts = {
        "reports": len(reports),
        "linked": int(linked["pseudo_study_id"].notna().sum()),
        "reports_without_study": int(linked["pseudo_study_id"].isna().sum()),
        "studies_without_report": int((~table["pseudo_accession"].isin(reports["pseudo_accession"])).sum()),
        "report_errors": len(mining.errors),
    }
    return linked, counts


# --- evaluation --------------------------------------------------------------------------------


def score_fields(predicted: pd.DataFrame, gold: pd.DataFrame, fields: Mapping[str, float | None]) -> pd.DataFrame:
    """Precision and recall per field of an extraction against gold labels.

    Rows are matched by position (both frames aligned). For each field a prediction
    counts when it is not missing: a true positive when it equals the gold value (numbers
    within the field's tolerance), a false positive otherwise; a gold value that was not
    predicted correctly is a false negative.

    Parameters
    ----------
    fields
        Field name -> numeric tolerance (``None`` for exact match of labels).

    Returns
    -------
    pandas.DataFrame
        ``field``, ``n_gold``, ``n_predicted``, ``tp``, ``precision``, ``recall``.
    """
    rows = []
    for name, tolerance in fields.items():
        tp = fp = fn = 0
        for p, g in zip(predicted[name], gold[name], strict=True):
            p_set, g_set = not _missing(p), not _missing(g)
            if p_set and g_set and _match(p, g, tolerance):
                tp += 1
                continue
            fp += p_set
            fn += g_set
        rows.append(
            {
                "field": name,
                "n_gold": int(gold[name].map(lambda v: not _missing(v)).sum()),
                "n_predicted": tp + fp,
                "tp": tp,
                "precision": tp / (tp + fp) if tp + fp else float("nan"),
                "recall": tp / (tp + fn) if tp + fn else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _match(p: Any, g: Any, tolerance: float | None) -> bool:
    if tolerance is not None:
        try:
            return abs(float(p) - float(g)) <= tolerance + 1e-9
        except (TypeError, ValueError):
            return False
    return str(p).strip().lower() == str(g).strip().lower()

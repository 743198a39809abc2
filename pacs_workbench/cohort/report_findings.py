"""Sentence-level findings: nodules (size, lobe, change, composition, margin), Lung-RADS, negation.

Per sentence, :func:`nodules_in_sentence` extracts the nodule's size in mm (``8 mm``, ``8-mm``,
``0.8 cm``, ``12 x 9 mm`` -> largest dimension; the prior size in ``increased from 5 mm`` is
kept apart), its lobe (``right upper lobe``/``RUL``, lingula -> LUL), its change versus the
prior (new, stable, growing, decreased), composition and margin; :func:`lung_rads_of` reads the
Lung-RADS-like category (``Lung-RADS 4A``, ``LR-3``). :func:`find_mentions` classifies mentions
of a small finding vocabulary (effusion, pneumothorax, consolidation, lymphadenopathy, ...) as
present, absent or possible with NegEx-style triggers (Chapman et al., J Biomed Inform 34
(2001) 301-310): a pre-negation trigger (``no``, ``without``, ``negative for``...) negates what
follows it, a post-negation trigger (``is not seen``, ``has resolved``...) what precedes it,
within the sentence and up to a termination term (``but``, ``however``, ``;``...);
pseudo-negations (``no change``, ``no interval growth``) are not triggers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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

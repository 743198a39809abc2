"""Vocabulary: make what vendors write differently comparable.

Four vendors describe the same chest CT four ways: ``CHEST`` or ``THORAX`` or nothing in
(0018,0015) Body Part Examined, ``Thorax 1.0 B70f`` or ``CHEST W/O`` in (0008,103E)
Series Description, ``B70f``, ``LUNG``, ``L`` or ``FC52`` in (0018,1210) Convolution
Kernel. :func:`normalize_series` adds columns cohorts can filter on, beside the raw
values it read:

``body_part_norm``, ``body_part_radlex``, ``body_part_source``
    RadLex anatomy term and ID, from Body Part Examined, else from whole words of
    (0018,1030) Protocol Name / Series Description (the source column is named).
``protocol_norm``, ``protocol_radlex``
    A controlled protocol term (and RadLex Playbook ID where known).
``contrast_norm``, ``contrast_source``, ``contrast_conflict``
    ``"yes"``/``"no"`` from (0018,0010) Contrast/Bolus Agent, (0018,1040)
    Contrast/Bolus Route, what the protocol implies, and tokens in the descriptions
    (``W/``, ``C+``, ``WITH``, ``CONTRAST`` / ``W/O``, ``NON CON``, ``C-``); the first
    decisive source wins and disagreement between sources is flagged. When nothing
    speaks of contrast on an image series, ``"no"`` with source ``"no contrast
    attributes"`` (the Contrast/Bolus module is only present when contrast was used);
    filter on ``contrast_source`` to leave out this weakest evidence.
``kernel_norm``
    ``"soft"`` or ``"sharp"`` reconstruction kernel, per vendor.
``slice_thickness_norm``
    (0018,0050) Slice Thickness bin: ``"<=1.5 mm"``, ``"1.5-3 mm"``, ``">3 mm"``.

The mappings are CSV tables in ``pacs_workbench/cohort/data/vocab/`` (regular expressions, first
match wins). Users extend them with their own CSVs of the same columns in a folder
passed as ``user_tables``; user rows are tried first. :func:`unmapped_report` lists
what no rule matched, so the tables can grow where the data needs it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TABLES = {
    "body_part": ("pattern", "radlex_id", "radlex_term"),
    "protocol": ("modality", "pattern", "protocol_norm", "radlex_id", "contrast"),
    "kernel": ("manufacturer", "pattern", "kernel_class"),
}
THICKNESS_EDGES = (1.5, 3.0)
THICKNESS_LABELS = ("<=1.5 mm", "1.5-3 mm", ">3 mm")
NORM_COLUMNS = (
    "body_part_norm",
    "body_part_radlex",
    "body_part_source",
    "protocol_norm",
    "protocol_radlex",
    "contrast_norm",
    "contrast_source",
    "contrast_conflict",
    "kernel_norm",
    "slice_thickness_norm",
)

_SEPARATORS = re.compile(r"[_\-/,.+^]+")
_SPACES = re.compile(r"\s+")
# Contrast tokens in free-text descriptions. Negatives are matched (and removed) first, so
# "NON CONTRAST" or "WITHOUT" never count as "CONTRAST" or "WITH".
_CONTRAST_NO = re.compile(
    r"(W/O|\bWO\b|\bWITHOUT\b|\bNON[ -]?CON(TRAST)?\b|\bNONCON\b|\bNC\b|\bC-(?=\s|$)|\bPLAIN\b"
    r"|\bNATIVE?\b|\bUNENHANCED\b|\bNON[ -]?ENHANCED\b|\bNO\b|\bOHNE\b|\bSINE\b)"
    # what a negation is about goes with it: "WITHOUT IV CONTRAST" leaves no "CONTRAST" behind
    r"(\s+(IV|I\.V\.|ORAL))?(\s+(CONTRAST|CON|KM|CM|ENHANCEMENT)\b)?",
)
_CONTRAST_YES = re.compile(
    r"W/(?!O)|\bWITH\b|\bC\+|\bCONTRAST\b|\bCE\b|\bENHANCED\b|\bIV\b|\bPOST[ -]?CON|\bARTERIAL\b"
    r"|\bVENOUS\b|\bPORTAL\b|\bANGIO\b|\bCTA\b|\bKM\b|\bMIT KM\b",
)
# "W AND W/O", "W/WO", "WITH & WITHOUT": both phases in one description, no vote.
_CONTRAST_BOTH = re.compile(r"\bW(ITH)?\s*(/|&|AND|\+)\s*W(ITHOUT|/O|O)\b")
_AGENT_NONE = {"", "NONE", "NO", "N/A", "NA", "0", "NIL", "-", "NO CONTRAST", "WITHOUT", "KEIN", "KEINE"}
_ROUTE_YES = re.compile(r"\b(IV|I\.V\.|INTRAVENOUS|ORAL|PO|INTRA.?ARTERIAL|RECTAL)\b")


class VocabularyError(ValueError):
    """A mapping table that cannot be used (missing columns, invalid pattern)."""


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    values: tuple[str, ...]
    guard: re.Pattern[str] | None = None  # modality or manufacturer


def _compile(text: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise VocabularyError(f"{where}: invalid pattern {text!r} ({exc})") from None


def _read_table(path: Path | Any, name: str) -> list[_Rule]:
    columns = TABLES[name]
    frame = pd.read_csv(path, dtype=str, comment="#", keep_default_na=False, skipinitialspace=True)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise VocabularyError(f"{path}: {name} table lacks column(s) {', '.join(missing)}")
    rules = []
    for i, row in enumerate(frame.to_dict("records"), start=2):
        where = f"{path} row {i}"
        if name == "body_part":
            rules.append(_Rule(_compile(row["pattern"], where), (row["radlex_id"], row["radlex_term"])))
        elif name == "protocol":
            contrast = row["contrast"].strip().lower()
            if contrast not in ("", "yes", "no"):
                raise VocabularyError(f"{where}: contrast must be yes, no or empty, not {contrast!r}")
            rules.append(
                _Rule(
                    _compile(row["pattern"], where),
                    (row["protocol_norm"], row["radlex_id"], contrast),
                    _compile(row["modality"] or ".*", where),
                )
            )
        else:
            kernel_class = row["kernel_class"].strip().lower()
            if kernel_class not in ("soft", "sharp"):
                raise VocabularyError(f"{where}: kernel_class must be soft or sharp, not {kernel_class!r}")
            rules.append(
                _Rule(_compile(row["pattern"], where), (kernel_class,), _compile(row["manufacturer"] or ".*", where))
            )
    return rules


@lru_cache(maxsize=8)
def _load_rules(user_dir: str | None, _stamp: tuple[Any, ...] = ()) -> dict[str, list[_Rule]]:
    rules: dict[str, list[_Rule]] = {}
    package = resources.files("pacs_workbench.cohort") / "data" / "vocab"
    for name in TABLES:
        own: list[_Rule] = []
        if user_dir is not None:
            user_file = Path(user_dir) / f"{name}.csv"
            if user_file.is_file():
                own = _read_table(user_file, name)
        with resources.as_file(package / f"{name}.csv") as builtin:
            rules[name] = own + _read_table(builtin, name)
    return rules


def load_rules(user_tables: str | os.PathLike[str] | None = None) -> dict[str, list[_Rule]]:
    """The mapping rules: user tables (``body_part.csv``, ``protocol.csv``, ``kernel.csv`` in
    ``user_tables``, any subset) first, then the package's.

    Raises
    ------
    VocabularyError
        When a table lacks a column or holds an invalid pattern or value.
    """
    if user_tables is not None and not Path(user_tables).is_dir():
        raise VocabularyError(f"user vocabulary folder not found: {user_tables}")
    if user_tables is None:
        return _load_rules(None)
    folder = Path(user_tables).resolve()
    # Edited user tables are read again (the cache key includes their size and mtime).
    stamp = tuple(
        (name, (folder / f"{name}.csv").stat().st_mtime_ns, (folder / f"{name}.csv").stat().st_size)
        for name in TABLES
        if (folder / f"{name}.csv").is_file()
    )
    return _load_rules(str(folder), stamp)


# --- one value at a time -----------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip()


def _clean(value: Any) -> str:
    return _SPACES.sub(" ", _SEPARATORS.sub(" ", _text(value).upper())).strip()


def map_body_part(
    body_part: Any, protocol: Any = None, description: Any = None, *, rules: list[_Rule]
) -> tuple[str | None, str | None, str | None]:
    """RadLex ``(term, id, source column)`` for one series, ``(None, None, None)`` if unmapped."""
    raw = _clean(body_part)
    if raw:
        for rule in rules:
            if rule.pattern.fullmatch(raw):
                return rule.values[1], rule.values[0], "BodyPartExamined"
        return None, None, None
    for column, value in (("ProtocolName", protocol), ("SeriesDescription", description)):
        text = _clean(value)
        if not text:
            continue
        for rule in rules:
            if re.search(rf"\b(?:{rule.pattern.pattern})\b", text, re.IGNORECASE):
                return rule.values[1], rule.values[0], column
    return None, None, None


def map_protocol(
    modality: Any, protocol: Any, description: Any, *, rules: list[_Rule]
) -> tuple[str | None, str | None, str | None]:
    """``(protocol term, RadLex Playbook ID or None, implied contrast or None)`` for one series."""
    mod = _text(modality).upper()
    texts = [_text(v).upper() for v in (protocol, description)]
    if not any(texts) and mod not in _NON_IMAGE:
        return None, None, None
    # Rule-major: the most specific rule matching either attribute wins (a localizer keeps
    # its "TOPOGRAM" description although its protocol name is the exam's).
    for rule in rules:
        if rule.guard is not None and not rule.guard.fullmatch(mod):
            continue
        if any(rule.pattern.fullmatch(text) for text in texts):
            term, radlex, contrast = rule.values
            return term, radlex or None, contrast or None
    return None, None, None


def detect_contrast(
    agent: Any, route: Any, protocol: Any, description: Any, implied: str | None = None
) -> tuple[str | None, str | None, bool]:
    """Whether contrast was given: ``(yes|no|None, deciding source, sources disagree)``.

    Evidence, strongest first: (0018,0010) Contrast/Bolus Agent (a named agent is yes,
    ``NONE``/``NO`` is no), (0018,1040) Contrast/Bolus Route, the contrast the protocol
    table implies, then tokens of Protocol Name and Series Description (negations such
    as ``W/O`` and ``NON CON`` are read before ``W/``, ``WITH`` or ``CONTRAST``).
    """
    votes: list[tuple[str, str]] = []
    agent_text = _text(agent).upper()
    if agent_text:
        votes.append(("no" if agent_text in _AGENT_NONE else "yes", "ContrastBolusAgent"))
    route_text = _text(route).upper()
    if route_text:
        if _ROUTE_YES.search(route_text):
            votes.append(("yes", "ContrastBolusRoute"))
        elif route_text in _AGENT_NONE:
            votes.append(("no", "ContrastBolusRoute"))
    if implied in ("yes", "no"):
        votes.append((implied, "protocol"))
    for column, value in (("ProtocolName", protocol), ("SeriesDescription", description)):
        text = _text(value).upper()
        if not text or _CONTRAST_BOTH.search(text):
            continue
        negative = bool(_CONTRAST_NO.search(text))
        positive = bool(_CONTRAST_YES.search(_CONTRAST_NO.sub(" ", text)))
        if negative != positive:  # both ("W AND W/O") or neither: no vote
            votes.append(("no" if negative else "yes", column))
    if not votes:
        return None, None, False
    decided, source = votes[0]
    conflict = any(v != decided for v, _ in votes[1:])
    return decided, source, conflict


def classify_kernel(manufacturer: Any, kernel: Any, *, rules: list[_Rule]) -> str | None:
    """``"soft"``, ``"sharp"`` or ``None`` for one (0018,1210) Convolution Kernel."""
    # Multi-valued kernels (Siemens "Br40d\\3") carry the kernel first.
    value = _text(kernel).split("\\")[0].strip().upper()
    if not value:
        return None
    maker = _text(manufacturer).upper()
    for rule in rules:
        if rule.guard is not None and not rule.guard.fullmatch(maker):
            continue
        if rule.pattern.fullmatch(value):
            return rule.values[0]
    return None


def bin_slice_thickness(thickness: Any) -> str | None:
    """(0018,0050) Slice Thickness in mm -> ``"<=1.5 mm"``, ``"1.5-3 mm"``, ``">3 mm"`` (None if absent)."""
    try:
        mm = float(_text(thickness).split("\\")[0])
    except ValueError:
        return None
    if not np.isfinite(mm) or mm <= 0:
        return None
    if mm <= THICKNESS_EDGES[0]:
        return THICKNESS_LABELS[0]
    if mm <= THICKNESS_EDGES[1]:
        return THICKNESS_LABELS[1]
    return THICKNESS_LABELS[2]


# --- tables ------------------------------------------------------------------------------------

_NON_IMAGE = {"SEG", "RTSTRUCT", "SR", "KO", "PR"}
_CONTRAST_MODALITIES = {"CT", "MR", "PT", "XA", "RF", "MG"}
_NO_CONTRAST_PROTOCOLS = {"localizer", "dose report"}
_INPUTS = (
    "Modality",
    "Manufacturer",
    "BodyPartExamined",
    "ProtocolName",
    "SeriesDescription",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "ConvolutionKernel",
    "SliceThickness",
)


def _normalize_row(values: tuple[Any, ...], rules: dict[str, list[_Rule]]) -> tuple[Any, ...]:
    modality, maker, body, protocol, description, agent, route, kernel, thickness = values
    body_term, body_id, body_source = map_body_part(body, protocol, description, rules=rules["body_part"])
    proto_term, proto_id, implied = map_protocol(modality, protocol, description, rules=rules["protocol"])
    contrast, contrast_source, conflict = detect_contrast(agent, route, protocol, description, implied)
    if (
        contrast is None
        and _text(modality).upper() in _CONTRAST_MODALITIES
        and proto_term not in _NO_CONTRAST_PROTOCOLS
        and not _text(agent)
        and not _text(route)
    ):
        # Weakest evidence, named as such: the Contrast/Bolus module is present only when
        # contrast was used, and nothing in the descriptions says otherwise.
        contrast, contrast_source = "no", "no contrast attributes"
    return (
        body_term,
        body_id,
        body_source,
        proto_term,
        proto_id,
        contrast,
        contrast_source,
        conflict,
        classify_kernel(maker, kernel, rules=rules["kernel"]),
        bin_slice_thickness(thickness),
    )


def normalize_series(df: pd.DataFrame, *, user_tables: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Add the normalized ``*_norm`` columns (see module docstring) beside the raw ones.

    Parameters
    ----------
    df
        Series (or instance) table with DICOM keyword columns; absent columns count as empty.
    user_tables
        Folder with user mapping CSVs (``body_part.csv``, ``protocol.csv``, ``kernel.csv``).

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with :data:`NORM_COLUMNS` added (``None`` where nothing matched).
    """
    rules = load_rules(user_tables)
    out = df.copy()
    inputs = pd.DataFrame({c: (df[c] if c in df.columns else None) for c in _INPUTS}, index=df.index)
    # Each distinct combination is mapped once: an instance table repeats them thousands of times.
    keys = [tuple(_text(v) for v in row) for row in inputs.itertuples(index=False, name=None)]
    cache = {key: _normalize_row(key, rules) for key in dict.fromkeys(keys)}
    results = [cache[key] for key in keys]
    for i, column in enumerate(NORM_COLUMNS):
        values = [r[i] for r in results]
        out[column] = pd.Series(values, index=df.index, dtype="boolean" if column == "contrast_conflict" else object)
    return out


def unmapped_report(df: pd.DataFrame, *, show_values: bool = True) -> pd.DataFrame:
    """What the vocabulary could not map, to extend the tables where the data needs it.

    Parameters
    ----------
    df
        Output of :func:`normalize_series`.
    show_values
        Include the raw values. They come from free-text attributes; set ``False`` for
        reports that leave the identified zone (counts per field only).

    Returns
    -------
    pandas.DataFrame
        ``field``, ``raw_value`` (when shown), ``n_rows``; one row per unmapped value
        (``field`` one of body_part, protocol, contrast, contrast_conflict, kernel,
        slice_thickness), most frequent first.
    """
    if "body_part_norm" not in df.columns:
        raise ValueError("unmapped_report needs the output of normalize_series")

    def col(name: str) -> pd.Series:
        return df[name].map(_text) if name in df.columns else pd.Series("", index=df.index)

    contrast_raw = (
        col("ContrastBolusAgent") + " | " + col("ContrastBolusRoute") + " | " + col("ProtocolName")
        + " | " + col("SeriesDescription")
    )
    raw = {
        "body_part": col("BodyPartExamined").where(
            col("BodyPartExamined") != "", "(empty) " + col("SeriesDescription")
        ),
        "protocol": col("Modality") + " | " + col("ProtocolName") + " | " + col("SeriesDescription"),
        "contrast": contrast_raw,
        "contrast_conflict": contrast_raw,
        "kernel": col("Manufacturer") + " | " + col("ConvolutionKernel"),
        "slice_thickness": col("SliceThickness"),
    }
    # Anatomy, contrast and kernel mean nothing for segmentations, reports, localizers.
    images = ~col("Modality").str.upper().isin(_NON_IMAGE) & ~df["protocol_norm"].isin(_NO_CONTRAST_PROTOCOLS)
    unmapped = {
        "body_part": df["body_part_norm"].isna() & images,
        "protocol": df["protocol_norm"].isna(),
        "contrast": df["contrast_norm"].isna() & images,
        "contrast_conflict": df["contrast_conflict"].fillna(False).astype(bool),
        "kernel": df["kernel_norm"].isna() & (col("ConvolutionKernel") != "") & images,
        "slice_thickness": df["slice_thickness_norm"].isna() & (col("SliceThickness") != ""),
    }
    frames = []
    for name, mask in unmapped.items():
        if not mask.any():
            continue
        counts = raw[name][mask].value_counts()
        frames.append(pd.DataFrame({"field": name, "raw_value": counts.index, "n_rows": counts.to_numpy()}))
    if not frames:
        return pd.DataFrame({"field": [], "raw_value": [], "n_rows": []}).astype({"n_rows": int})
    report = pd.concat(frames, ignore_index=True)
    if not show_values:
        report = report.groupby("field", as_index=False, sort=False).agg(n_rows=("n_rows", "sum"))
    return report.sort_values(["n_rows", "field"], ascending=[False, True], ignore_index=True)

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
``sequence_norm``, ``sequence_source``, ``sequence_conflict``
    MR sequence type, ``T1``, ``T1C`` (T1 after contrast), ``T2``, ``FLAIR``, ``DWI`` or ``ADC``,
    from the acquisition attributes first (:func:`classify_sequence`: (0008,0008) Image Type,
    (0018,9087) Diffusion b-Value, (0008,9209) Acquisition Contrast, (0018,0020) Scanning
    Sequence, (0018,9008) Echo Pulse Sequence, TR/TE/TI and the contrast evidence), the
    descriptions only when the attributes do not decide; the source names what decided, and a
    description saying otherwise is flagged.

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
    "sequence": ("modality", "pattern", "sequence"),
}
SEQUENCE_TYPES = ("T1", "T1C", "T2", "FLAIR", "DWI", "ADC")
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
    "sequence_norm",
    "sequence_source",
    "sequence_conflict",
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
        elif name == "sequence":
            sequence = row["sequence"].strip().upper()
            if sequence not in SEQUENCE_TYPES:
                raise VocabularyError(f"{where}: sequence must be one of {', '.join(SEQUENCE_TYPES)}, not {sequence!r}")
            rules.append(
                _Rule(_compile(row["pattern"], where), (sequence,), _compile(row["modality"] or ".*", where))
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
    """The mapping rules: user tables (``body_part.csv``, ``protocol.csv``, ``kernel.csv``,
    ``sequence.csv`` in ``user_tables``, any subset) first, then the package's.

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


# MR post-contrast tokens of a description whose separators are spaces ("t1_se_tra_KM", "T1WI_SE_AX+C").
_POST_CONTRAST = re.compile(r"\+ ?C\b|\bC\+|\bKM\b|\bPOST\b|\bGD\b|\bGADO(LINIUM)?\b|\bCE\b|\bCONTRAST\b|\bENHANCED\b")
_MR_SEPARATORS = re.compile(r"[_\-/,.^]+")


def _number(value: Any) -> float | None:
    try:
        number = float(_text(value).split("\\")[0])
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def _weighting_from_attributes(
    image_type: set[str], scanning: set[str], echo_pulse: str, acquisition_contrast: str,
    tr: float | None, te: float | None, ti: float | None, b_value: float | None,
) -> tuple[str | None, str | None]:
    """``(type, deciding attribute)`` from acquisition attributes alone (T1 never T1C here)."""
    if "ADC" in image_type:
        return "ADC", "ImageType"
    if b_value is not None and b_value > 0:
        return "DWI", "DiffusionBValue"
    if acquisition_contrast == "DIFFUSION" or image_type & {"DIFFUSION", "TRACEW", "TRACE"}:
        return "DWI", "AcquisitionContrast" if acquisition_contrast == "DIFFUSION" else "ImageType"
    flavor = {"T1": "T1", "T2": "T2", "FLUID_ATTENUATED": "FLAIR"}.get(acquisition_contrast)
    if flavor is not None:
        return flavor, "AcquisitionContrast"
    derived = "DERIVED" in image_type
    if "EP" in scanning and not derived and te is not None and te >= 50 and (tr is None or tr >= 2000):
        return "DWI", "ScanningSequence"  # spin-echo EPI of a routine brain protocol: the diffusion trace
    if te is None:
        return None, None
    inversion = "IR" in scanning or (ti is not None and ti > 0)
    gradient = "GR" in scanning or echo_pulse == "GRADIENT"
    if inversion and ti is not None and ti >= 1500 and te >= 60:
        return "FLAIR", "InversionTime"
    if gradient and te < 10 and ((tr is not None and tr < 50) or (ti is not None and 300 <= ti <= 1300)):
        return "T1", "EchoTime"  # spoiled or IR-prepared 3D gradient echo (MPRAGE, BRAVO, TFE)
    if tr is None:
        return None, None
    if te < 30 and tr < 1000 and not inversion:
        return "T1", "RepetitionTime"
    if te >= 60 and tr >= 2000 and not inversion:
        return "T2", "RepetitionTime"
    return None, None


def classify_sequence(
    modality: Any, image_type: Any, scanning_sequence: Any, echo_pulse: Any, acquisition_contrast: Any,
    repetition_time: Any, echo_time: Any, inversion_time: Any, b_value: Any, contrast: str | None,
    protocol: Any, description: Any, *, rules: list[_Rule],
) -> tuple[str | None, str | None, bool]:
    """MR sequence type ``(T1|T1C|T2|FLAIR|DWI|ADC or None, deciding source, descriptions disagree)``.

    Attributes decide first, the strongest first: (0008,0008) Image Type ``ADC``; (0018,9087)
    Diffusion b-Value > 0 or ``DIFFUSION`` in Image Type or (0008,9209) Acquisition Contrast;
    Acquisition Contrast ``T1``/``T2``/``FLUID_ATTENUATED`` of enhanced images; spin-echo EPI
    in (0018,0020) Scanning Sequence; then TR/TE/TI: an inversion with TI >= 1500 ms and
    TE >= 60 ms is FLAIR, a gradient echo with TE < 10 ms and TR < 50 ms or an inversion
    preparation (TI 300-1300 ms) is T1 (MPRAGE, BRAVO, 3D TFE), TE < 30 ms with TR < 1000 ms
    is T1, TE >= 60 ms with TR >= 2000 ms is T2. Only when they do not decide, the description
    table (``sequence.csv``: Series Description, then Protocol Name). A T1 becomes ``T1C`` when
    ``contrast`` is ``"yes"`` or the description says post-contrast (``+C``, ``KM``, ``POST``,
    ``GD``...). Non-MR series give ``(None, None, False)``.
    """
    if _text(modality).upper() != "MR":
        return None, None, False
    flavor = {v.strip().upper() for v in _text(image_type).split("\\")}
    if "LOCALIZER" in flavor:
        return None, None, False
    scanning = {v.strip().upper() for v in _text(scanning_sequence).split("\\")}
    kind, source = _weighting_from_attributes(
        flavor, scanning, _text(echo_pulse).upper(), _text(acquisition_contrast).upper(),
        _number(repetition_time), _number(echo_time), _number(inversion_time), _number(b_value),
    )  # fmt: skip
    texts = {column: _MR_SEPARATORS.sub(" ", _text(value).upper()) for column, value in
             (("SeriesDescription", description), ("ProtocolName", protocol))}  # fmt: skip
    described: tuple[str | None, str | None] = (None, None)
    for column, text in texts.items():
        match = next((r.values[0] for r in rules if text and (r.guard is None or r.guard.fullmatch("MR"))
                      and r.pattern.fullmatch(_SPACES.sub(" ", text).strip())), None)  # fmt: skip
        if match is not None:
            described = (match, column)
            break
    conflict = False
    if kind is None:
        kind, source = described
    elif described[0] is not None:
        conflict = described[0].replace("T1C", "T1") != kind.replace("T1C", "T1")
    if kind in ("T1", "T1C"):
        post = contrast == "yes" or bool(_POST_CONTRAST.search(texts["SeriesDescription"]))
        kind = "T1C" if post or kind == "T1C" else "T1"
    return kind, source, conflict


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
    "ImageType",
    "ScanningSequence",
    "EchoPulseSequence",
    "AcquisitionContrast",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "DiffusionBValue",
    "contrast",
)


def _normalize_row(values: tuple[Any, ...], rules: dict[str, list[_Rule]]) -> tuple[Any, ...]:
    modality, maker, body, protocol, description, agent, route, kernel, thickness = values[:9]
    image_type, scanning, echo_pulse, acquisition_contrast, tr, te, ti, b_value, flagged = values[9:]
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
    if _text(flagged).lower() == "true" and contrast != "yes" and _text(modality).upper() == "MR":
        # The index found contrast where the vocabulary reads none (an enhanced MR image's agent code).
        contrast, contrast_source = "yes", "contrast attributes"
    sequence, sequence_source, sequence_conflict = classify_sequence(
        modality, image_type, scanning, echo_pulse, acquisition_contrast, tr, te, ti, b_value, contrast,
        protocol, description, rules=rules["sequence"],
    )  # fmt: skip
    if sequence == "T1C" and contrast != "yes":
        contrast, contrast_source = "yes", f"{sequence_source or 'SeriesDescription'} (post-contrast T1)"
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
        sequence,
        sequence_source,
        sequence_conflict,
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
        A copy of ``df`` with :data:`NORM_COLUMNS` added (``None`` where nothing matched; the
        ``*_conflict`` flags are booleans).
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
        flag = column in ("contrast_conflict", "sequence_conflict")
        out[column] = pd.Series(values, index=df.index, dtype="boolean" if flag else object)
    return out


def _column_or_none(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series(None, index=df.index, dtype=object)


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
        slice_thickness, sequence (an MR image series whose attributes and descriptions name no
        sequence type), sequence_conflict (a description naming another type than the
        attributes)), most frequent first.
    """
    if "body_part_norm" not in df.columns:
        raise ValueError("unmapped_report needs the output of normalize_series")

    def col(name: str) -> pd.Series:
        return df[name].map(_text) if name in df.columns else pd.Series("", index=df.index)

    contrast_raw = (
        col("ContrastBolusAgent") + " | " + col("ContrastBolusRoute") + " | " + col("ProtocolName")
        + " | " + col("SeriesDescription")
    )
    sequence_raw = (
        col("ImageType") + " | " + col("ScanningSequence") + " | TR " + col("RepetitionTime") + " TE "
        + col("EchoTime") + " TI " + col("InversionTime") + " b " + col("DiffusionBValue") + " | "
        + col("SeriesDescription")
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
        "sequence": sequence_raw,
        "sequence_conflict": sequence_raw,
    }
    # Anatomy, contrast and kernel mean nothing for segmentations, reports, localizers.
    images = ~col("Modality").str.upper().isin(_NON_IMAGE) & ~df["protocol_norm"].isin(_NO_CONTRAST_PROTOCOLS)
    unmapped = {
        "body_part": df["body_part_norm"].isna() & images,
        # An MR series' protocol name is often its sequence's ("t2_tse_tra_p2"): the sequence type is its term.
        "protocol": df["protocol_norm"].isna() & ~(_column_or_none(df, "sequence_norm").notna()),
        "contrast": df["contrast_norm"].isna() & images,
        "contrast_conflict": df["contrast_conflict"].fillna(False).astype(bool),
        "kernel": df["kernel_norm"].isna() & (col("ConvolutionKernel") != "") & images,
        "slice_thickness": df["slice_thickness_norm"].isna() & (col("SliceThickness") != ""),
        "sequence": _column_or_none(df, "sequence_norm").isna() & images & (col("Modality").str.upper() == "MR")
        & ~col("ImageType").str.upper().str.contains("LOCALIZER"),
        "sequence_conflict": _column_or_none(df, "sequence_conflict").fillna(False).astype(bool),
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

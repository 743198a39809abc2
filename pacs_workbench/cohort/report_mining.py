"""Report mining: structured findings from free-text radiology reports (first version).

Each report is stripped of what identifies and split into sections and sentences
(:mod:`pacs_workbench.cohort.report_text`); its sentences are read for nodules, the Lung-RADS
category and negated findings (:mod:`pacs_workbench.cohort.report_findings`); :func:`mine_report`
folds them into one row of fields per report.

Everything handed on is keyed by ``pseudo_accession`` =
``pseudonymize(key, AccessionNumber, "accession")``; no text leaves, only the fields.
:func:`link_reports` attaches the cohort's ``pseudo_study_id``/``pseudo_patient_id``;
:func:`score_fields` scores an extraction against gold labels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.cohort.report_findings import FINDINGS, find_mentions, lung_rads_of, nodules_in_sentence
from pacs_workbench.cohort.report_text import split_sections, split_sentences, strip_phi
from pacs_workbench.core.pseudonym import pseudonymize

_NO_COMPARISON = re.compile(r"^\s*(none|no prior|not available|n/?a|no comparison|no previous)", re.I)
STATUS_ORDER = {"absent": 0, "possible": 1, "present": 2}


class ReportError(ValueError):
    """A report that cannot be mined (empty, no readable text)."""


# --- cleaning and splitting --------------------------------------------------------------------


# --- sentence level ----------------------------------------------------------------------------


# --- report level ------------------------------------------------------------------------------


@dataclass
class MinedReport:
    """What one report says, without its text."""

    fields: dict[str, Any]
    nodules: list[dict[str, Any]] = field(default_factory=list)
    mentions: list[dict[str, Any]] = field(default_factory=list)


def mine_report(text: str) -> MinedReport:
    """Structured findings of one report, its identifiers stripped first (:func:`.report_text.strip_phi`).

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

"""Cohort building from the index: candidates, annotation, pseudonymized output, the parameter file.

The index (``instances.parquet``) lives in the identified zone. A cohort is a set of
image series chosen by criteria (:mod:`pacs_workbench.cohort.criteria`) from the run
parameters. The candidate series are first harmonized
(:func:`pacs_workbench.cohort.vocab.normalize_series`: kernel class, contrast, anatomy and
protocol terms comparable across vendors) and, when given, joined with the linked EHR
(:mod:`pacs_workbench.cohort.ehr`: outcome, age at scan, smoking, labs) and the findings mined
from the radiology reports (:mod:`pacs_workbench.cohort.report_mining`) through the keyed
``pseudo_study_id``.

A cohort leaves this module with keyed pseudonyms only (``pseudo_patient_id``,
``pseudo_study_id``, ``pseudo_series_id``), relative timing (``days_from_baseline``,
``days_to_outcome``) instead of dates, and no free text (descriptions can carry names).
The UIDs needed to retrieve or de-identify the selected series are written to a separate
file that stays in the identified zone and is never shown in a report.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from pacs_workbench.cohort import vocab
from pacs_workbench.cohort.criteria import AGE_CAP, CohortCriteria, apply_criteria, baseline_value
from pacs_workbench.cohort.dose import DOSE_COLUMNS, study_dose
from pacs_workbench.cohort.ehr import EhrLinkage, IdentifierLeakError, cohort_columns
from pacs_workbench.core.files import write_atomic
from pacs_workbench.core.pseudonym import pseudonymize

THICKNESS_BINS = [0.0, 1.5, 3.0, np.inf]
THICKNESS_LABELS = ["<=1.5 mm", "1.5-3 mm", ">3 mm"]
SERIES_COLUMNS = [
    "PatientID",
    "PatientSex",
    "PatientAge",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "Modality",
    "SOPClassUID",
    "ImageType",
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "SliceThickness",
    "KVP",
    "contrast",
    "ContrastBolusAgent",
    "BodyPartExamined",
    "ProtocolName",
    "SeriesDescription",
    # MR acquisition (enhanced images: from their functional groups)
    "ScanningSequence",
    "SequenceVariant",
    "SequenceName",
    "EchoPulseSequence",
    "AcquisitionContrast",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "DiffusionBValue",
    "MagneticFieldStrength",
    "ReceiveCoilName",
]
# Harmonized vocabulary columns handed on (the raw descriptions they come from are not).
VOCAB_COLUMNS = [
    "body_part_norm", "protocol_norm", "contrast_norm", "contrast_source", "kernel_norm", "sequence_norm",
]  # fmt: skip
COHORT_COLUMNS = [
    "pseudo_patient_id",
    "pseudo_study_id",
    "pseudo_series_id",
    "study_index",
    "days_from_baseline",
    "age_years",
    "PatientSex",
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "SliceThickness",
    "thickness_bin",
    "KVP",
    "MagneticFieldStrength",
    "ReceiveCoilName",
    *DOSE_COLUMNS,
    "contrast",
    "n_instances",
    *VOCAB_COLUMNS,
]
#: EHR columns joined by ``pseudo_study_id`` (plus one column per lab, e.g. ``cea_ng_ml``).
EHR_COLUMNS = ["in_ehr", "outcome", "days_to_outcome", "smoking_status", "pack_years"]
#: Report-derived columns joined by ``pseudo_study_id``; ``baseline_nodule_mm`` is the patient's.
REPORT_COLUMNS = [
    "report_linked",
    "nodule_present",
    "nodule_count",
    "nodule_size_mm",
    "nodule_location",
    "nodule_change",
    "lung_rads",
    "baseline_nodule_mm",
]
_REPORT_FIELDS = ["nodule_present", "nodule_count", "nodule_size_mm", "nodule_location", "nodule_change", "lung_rads"]
# EHR columns never handed on: dates (outcome_date becomes days_to_outcome), folded or constant ones.
_EHR_DROPPED = {"pseudo_patient_id", "age_at_scan", "outcome_date", "in_imaging"}
# Identified columns: may exist in the candidate table, never in a cohort output.
IDENTIFIED_COLUMNS = frozenset(
    {
        "PatientID", "PatientName", "PatientBirthDate", "PatientAge", "AccessionNumber", "StudyInstanceUID",
        "SeriesInstanceUID", "SOPInstanceUID", "StudyDate", "StudyTime", "SeriesDate", "StudyDescription",
        "SeriesDescription", "ProtocolName", "ContrastBolusAgent", "InstitutionName", "path", "mrn",
        "birth_date", "outcome_date", "pseudo_accession",
    }
)  # fmt: skip


@dataclass
class Cohort:
    """A built cohort: pseudonymized rows, attrition, and the identified selection."""

    series: pd.DataFrame
    attrition: pd.DataFrame
    selection: pd.DataFrame = field(repr=False)

    @property
    def n_patients(self) -> int:
        """Patients in the cohort."""
        return int(self.series["pseudo_patient_id"].nunique())


def load_series_table(
    index_dir: str | os.PathLike[str], *, user_vocab: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """One row per series from ``index_dir/instances.parquet``, harmonized.

    Descriptive columns take the series' first non-null value; ``n_instances`` counts
    its images (the frames of an enhanced multi-frame image each count). The vocabulary
    columns of :func:`pacs_workbench.cohort.vocab.normalize_series` (``kernel_norm``,
    ``contrast_norm``, ``body_part_norm``, ``sequence_norm``, ...) are added beside the raw
    ones, ``contrast`` is true when the index found contrast attributes or the
    harmonized contrast is ``"yes"``, and the study's dose from its X-Ray Radiation Dose SR
    (:func:`pacs_workbench.cohort.dose.study_dose`: ``CTDIvol_mGy``, ``DLP_mGycm_total``,
    ``CTDIw_phantom``; missing without one) is on each of its series.

    Parameters
    ----------
    index_dir
        Folder with ``instances.parquet``.
    user_vocab
        Folder of user mapping CSVs for :func:`pacs_workbench.cohort.vocab.normalize_series`.
    """
    path = Path(index_dir) / "instances.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no index at {path}; run `pacs-workbench index` first")
    available = set(pq.read_schema(path).names) if path.is_file() else None
    wanted = [c for c in [*SERIES_COLUMNS, "NumberOfFrames"] if available is None or c in available]
    instances = pd.read_parquet(path, columns=wanted)
    present = [c for c in SERIES_COLUMNS if c in instances.columns]
    if "SeriesInstanceUID" not in present:
        raise ValueError(f"{path} has no SeriesInstanceUID column")
    grouped = instances[present].groupby("SeriesInstanceUID", sort=True, dropna=True)
    series = grouped.first()
    if "NumberOfFrames" in instances.columns:
        frames = pd.to_numeric(instances["NumberOfFrames"], errors="coerce").fillna(1).clip(lower=1)
        series["n_instances"] = frames.groupby(instances["SeriesInstanceUID"]).sum().astype(int)
    else:
        series["n_instances"] = grouped.size()
    series = series.reset_index()
    for column in SERIES_COLUMNS:
        if column not in series.columns:
            series[column] = None
    series["SliceThickness"] = pd.to_numeric(series["SliceThickness"], errors="coerce")
    for column in ("KVP", "RepetitionTime", "EchoTime", "InversionTime", "DiffusionBValue", "MagneticFieldStrength"):
        series[column] = pd.to_numeric(series[column], errors="coerce")
    series = series.merge(study_dose(index_dir), on="StudyInstanceUID", how="left")
    series = vocab.normalize_series(series, user_tables=user_vocab)
    flagged = series["contrast"].astype("boolean").fillna(False).astype(bool)
    series["contrast"] = flagged | (series["contrast_norm"] == "yes")
    return series


def studies_table(series: pd.DataFrame) -> pd.DataFrame:
    """The identified studies of a series table (``PatientID``, ``StudyInstanceUID``,
    ``StudyDate``, ``AccessionNumber``), for EHR and report linkage."""
    columns = ["PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber"]
    return series[columns].dropna(subset=["StudyInstanceUID"]).drop_duplicates("StudyInstanceUID")


def _age_years(value: Any) -> float:
    """(0010,1010) Patient's Age ``nnnY`` in years, capped at 90 (HIPAA Safe Harbor)."""
    if not isinstance(value, str) or len(value) != 4 or not value[:3].isdigit():
        return float("nan")
    number, unit = int(value[:3]), value[3].upper()
    years = {"Y": number, "M": number / 12, "W": number / 52, "D": number / 365}.get(unit, float("nan"))
    return float(min(years, AGE_CAP))


def annotate_series(
    series: pd.DataFrame,
    key: bytes,
    *,
    ehr: EhrLinkage | None = None,
    reports: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Add pseudonyms, age, EHR and report columns to the (identified) series table.

    Parameters
    ----------
    series
        From :func:`load_series_table`.
    key
        Project key; pseudonyms are the ones :mod:`pacs_workbench.cohort.ehr` and
        :mod:`pacs_workbench.cohort.report_mining` use, so the three sources join on them.
    ehr
        From :func:`pacs_workbench.cohort.ehr.load_and_link`; adds :data:`EHR_COLUMNS` and the
        labs, and the EHR age at scan replaces (0010,1010) Patient's Age where known.
    reports
        Linked reports from :func:`pacs_workbench.cohort.report_mining.link_reports`; adds
        :data:`REPORT_COLUMNS` (one report per study: the one with the largest nodule).

    Returns
    -------
    pandas.DataFrame
        The candidates: still identified (UIDs, dates), for :func:`apply_criteria`.
    """
    frame = series.copy()
    frame["pseudo_patient_id"] = [pseudonymize(key, str(v), "patient") for v in frame["PatientID"]]
    frame["pseudo_study_id"] = [pseudonymize(key, str(v), "study") for v in frame["StudyInstanceUID"]]
    frame["pseudo_series_id"] = [pseudonymize(key, str(v), "series") for v in frame["SeriesInstanceUID"]]
    frame["age_years"] = frame["PatientAge"].map(_age_years)
    if ehr is not None:
        per_study = cohort_columns(ehr).drop_duplicates("pseudo_study_id")
        frame = frame.merge(
            per_study.drop(columns=["pseudo_patient_id"]), on="pseudo_study_id", how="left", validate="many_to_one"
        )
        ehr_age = pd.to_numeric(frame["age_at_scan"], errors="coerce").clip(upper=AGE_CAP)
        frame["age_years"] = ehr_age.astype(float).fillna(frame["age_years"])
        frame["in_ehr"] = frame["in_ehr"].astype("boolean").fillna(False).astype(bool)
        frame = frame.drop(columns=[c for c in _EHR_DROPPED if c in frame.columns and c != "pseudo_patient_id"])
    if reports is not None:
        frame = _join_reports(frame, reports)
    return frame


def _join_reports(frame: pd.DataFrame, reports: pd.DataFrame) -> pd.DataFrame:
    linked = reports.dropna(subset=["pseudo_study_id"]) if "pseudo_study_id" in reports.columns else reports.iloc[:0]
    fields = [c for c in _REPORT_FIELDS if c in linked.columns]
    per_study = (
        linked.sort_values("nodule_size_mm", ascending=False, na_position="last")
        if "nodule_size_mm" in linked.columns
        else linked
    )
    per_study = per_study.drop_duplicates("pseudo_study_id")[["pseudo_study_id", *fields]]
    per_study = per_study.assign(report_linked=True)
    frame = frame.merge(per_study, on="pseudo_study_id", how="left", validate="many_to_one")
    frame["report_linked"] = frame["report_linked"].astype("boolean").fillna(False).astype(bool)
    for column in _REPORT_FIELDS:
        if column not in frame.columns:
            frame[column] = None
    frame["nodule_size_mm"] = pd.to_numeric(frame["nodule_size_mm"], errors="coerce").astype(float)
    return frame


def _output_columns(frame: pd.DataFrame) -> list[str]:
    columns = list(COHORT_COLUMNS)
    if "in_ehr" in frame.columns:
        labs = [
            c for c in frame.columns
            if c not in columns and c not in EHR_COLUMNS and c not in REPORT_COLUMNS
            and c not in IDENTIFIED_COLUMNS and c not in SERIES_COLUMNS and c not in vocab.NORM_COLUMNS
            and not c.startswith("pseudo_") and c not in {"n_instances", "age_years"}
        ]  # fmt: skip
        columns += EHR_COLUMNS + labs
    if "report_linked" in frame.columns:
        columns += REPORT_COLUMNS
    return columns


def pseudonymize_series(kept: pd.DataFrame, key: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replace identifiers with keyed pseudonyms and dates with days from each patient's baseline.

    Returns
    -------
    (cohort, selection)
        ``cohort`` has :data:`COHORT_COLUMNS` (plus :data:`EHR_COLUMNS`, labs and
        :data:`REPORT_COLUMNS` when the candidates were annotated with them);
        ``selection`` maps ``pseudo_series_id`` to the identified (0020,000D)/(0020,000E)
        UIDs for retrieval and stays in the identified zone.

    Raises
    ------
    IdentifierLeakError
        When an output column would carry an identifier, a date or an identified value.
    """
    frame = kept.copy()
    if "pseudo_series_id" not in frame.columns:
        frame["pseudo_patient_id"] = [pseudonymize(key, str(v), "patient") for v in frame["PatientID"]]
        frame["pseudo_study_id"] = [pseudonymize(key, str(v), "study") for v in frame["StudyInstanceUID"]]
        frame["pseudo_series_id"] = [pseudonymize(key, str(v), "series") for v in frame["SeriesInstanceUID"]]
    if "age_years" not in frame.columns:
        frame["age_years"] = frame["PatientAge"].map(_age_years)
    for column in VOCAB_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    dates = pd.to_datetime(frame["StudyDate"], format="%Y%m%d", errors="coerce")
    baseline = dates.groupby(frame["PatientID"]).transform("min")
    frame["days_from_baseline"] = (dates - baseline).dt.days
    frame["study_index"] = dates.groupby(frame["PatientID"]).rank(method="dense").astype("Int64") - 1
    frame["thickness_bin"] = pd.cut(
        frame["SliceThickness"], bins=THICKNESS_BINS, labels=THICKNESS_LABELS, include_lowest=True
    ).astype(str)
    if "report_linked" in frame.columns:
        frame["baseline_nodule_mm"] = (
            baseline_value(frame, "nodule_size_mm").astype(float) if len(frame) else pd.Series(dtype=float)
        )
    columns = _output_columns(frame)
    cohort = frame[columns].sort_values(["pseudo_patient_id", "study_index", "pseudo_series_id"])
    selection = frame[["pseudo_patient_id", "pseudo_series_id", "StudyInstanceUID", "SeriesInstanceUID"]]
    check_pseudonymized(cohort, kept)
    return cohort.reset_index(drop=True), selection.reset_index(drop=True)


def check_pseudonymized(cohort: pd.DataFrame, identified: pd.DataFrame) -> None:
    """Fail closed: no identified column, no date column, no identified value in ``cohort``.

    Raises
    ------
    IdentifierLeakError
        Naming the column (never the value).
    """
    bad = sorted(set(cohort.columns) & IDENTIFIED_COLUMNS)
    if bad:
        raise IdentifierLeakError(f"identified column(s) in the cohort output: {bad}")
    known: set[str] = set()
    # Free-text columns are kept out by name: their values can equal coded output values ("CHEST").
    for column in ("PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "StudyDate"):
        if column in identified.columns:
            # Values too short to identify ("2") would only raise false alarms against codes.
            known.update(str(v) for v in identified[column].dropna() if len(str(v).strip()) >= 4)
    for column in cohort.columns:
        values = cohort[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            raise IdentifierLeakError(f"date column in the cohort output: {column!r}")
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        present = values.dropna()
        if present.map(lambda v: hasattr(v, "year") and hasattr(v, "month")).any():
            raise IdentifierLeakError(f"date values in cohort output column {column!r}")
        if known and present.astype(str).isin(known).any():
            raise IdentifierLeakError(f"an identified value in cohort output column {column!r}")


def select_cohort(candidates: pd.DataFrame, criteria: CohortCriteria, key: bytes) -> Cohort:
    """Apply ``criteria`` to annotated candidates and pseudonymize what is kept."""
    kept, attrition = apply_criteria(candidates, criteria)
    cohort, selection = pseudonymize_series(kept, key)
    return Cohort(series=cohort, attrition=attrition, selection=selection)


def build_cohort(
    index_dir: str | os.PathLike[str],
    criteria: CohortCriteria,
    key: bytes,
    *,
    ehr: EhrLinkage | None = None,
    reports: pd.DataFrame | None = None,
    user_vocab: str | os.PathLike[str] | None = None,
) -> Cohort:
    """Select series from the index by ``criteria`` and pseudonymize them.

    Parameters
    ----------
    index_dir
        Folder with ``instances.parquet`` from :func:`pacs_workbench.cohort.index.build_index`.
    criteria
        Inclusion criteria.
    key
        Project key from :func:`pacs_workbench.core.pseudonym.load_key`.
    ehr, reports
        Linked EHR and reports (see :func:`annotate_series`).
    user_vocab
        Folder of user vocabulary CSVs.
    """
    series = load_series_table(index_dir, user_vocab=user_vocab)
    return select_cohort(annotate_series(series, key, ehr=ehr, reports=reports), criteria, key)


def write_cohort(cohort: Cohort, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``cohort.parquet``, ``attrition.csv`` and the identified ``selection.parquet`` atomically."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = {
        "cohort": folder / "cohort.parquet",
        "attrition": folder / "attrition.csv",
        "selection": folder / "selection.parquet",
    }
    write_atomic(written["cohort"], lambda p: cohort.series.to_parquet(p, index=False))
    write_atomic(written["attrition"], lambda p: cohort.attrition.to_csv(p, index=False))
    write_atomic(written["selection"], lambda p: cohort.selection.to_parquet(p, index=False))
    return written


def save_criteria(criteria: CohortCriteria, params_file: str | os.PathLike[str], section: str = "01_cohort") -> Path:
    """Write ``criteria`` into the ``section`` of a run parameter file, atomically.

    The section's other keys (``index_dir``, ...) and every other section stay; the
    other sections keep their text (comments included) byte for byte. A missing file
    is created with just this section. Use it to turn an interactive exploration into
    a reproducible ``pacs-workbench run --params FILE``.

    Raises
    ------
    ValueError
        When the file is not a YAML mapping of sections.
    """
    criteria.validate()
    path = Path(params_file)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    data = yaml.safe_load(text) if text.strip() else {}
    if not isinstance(data, dict) or not isinstance(data.get(section) or {}, dict):
        raise ValueError(f"{path.name}: expected a mapping of sections with a {section!r} mapping")
    merged = {**(data.get(section) or {}), **criteria.to_params()}
    expected = {**data, section: merged}
    block = yaml.safe_dump({section: merged}, sort_keys=False, default_flow_style=False, allow_unicode=True)
    updated = _replace_section(text, section, block)
    if yaml.safe_load(updated) != expected:  # an unusual layout: rewrite the whole file correctly
        updated = yaml.safe_dump(expected, sort_keys=False, default_flow_style=False, allow_unicode=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else None  # keep the file's permissions
    write_atomic(path, lambda temp: temp.write_text(updated, encoding="utf-8"), mode=mode)
    return path


def _replace_section(text: str, section: str, block: str) -> str:
    """``text`` with the top-level ``section:`` block replaced by ``block`` (appended if absent)."""
    lines = text.splitlines(keepends=True)
    header = re.compile(rf"^(['\"]?){re.escape(section)}\1\s*:")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        separator = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return text + separator + block
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    # Comments and blank lines just above the next section belong to it.
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    tail = lines[end:]
    gap = "\n" if tail and tail[0].strip() else ""
    return "".join(lines[:start]) + block + gap + "".join(tail)

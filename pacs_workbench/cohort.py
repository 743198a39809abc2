"""Cohort building from the index: criteria, attrition, distributions, pseudonymized output.

The index (``instances.parquet``) lives in the identified zone. A cohort is a set of
image series chosen by criteria from the run parameters; it leaves this module with
keyed pseudonyms only (``pseudo_patient_id``, ``pseudo_study_id``,
``pseudo_series_id``), relative timing (``days_from_baseline``) instead of dates, and
no free text (descriptions can carry names). The UIDs needed to retrieve or
de-identify the selected series are written to a separate file that stays in the
identified zone and is never shown in a report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.deid.pseudonym import pseudonymize

# SOP classes of cross-sectional CT/MR images; localizers, SEG, RTSTRUCT and secondary
# captures are not cohort series.
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
}
THICKNESS_BINS = [0.0, 1.5, 3.0, np.inf]
THICKNESS_LABELS = ["<=1.5 mm", "1.5-3 mm", ">3 mm"]
SERIES_COLUMNS = [
    "PatientID",
    "PatientSex",
    "PatientAge",
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
    "BodyPartExamined",
]
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
    "contrast",
    "n_instances",
]


@dataclass
class CohortCriteria:
    """Inclusion criteria, applied in this order (each one is a row of the attrition table).

    Parameters
    ----------
    modality
        (0008,0060) Modality to keep, e.g. ``"CT"``; empty keeps all.
    min_instances
        Minimum images in a series to count as a volume (drops localizers and stray images).
    date_from, date_to
        (0008,0020) Study Date range, ``YYYY-MM-DD``; empty means open.
    slice_thickness_min, slice_thickness_max
        (0018,0050) Slice Thickness range in mm.
    contrast
        ``"any"``, ``"with"`` or ``"without"`` contrast (from (0018,0010) Contrast/Bolus Agent).
    vendors
        (0008,0070) Manufacturer values to keep (case-insensitive substring); empty keeps all.
    """

    modality: str = "CT"
    min_instances: int = 10
    date_from: str = ""
    date_to: str = ""
    slice_thickness_min: float = 0.0
    slice_thickness_max: float = 10.0
    contrast: str = "any"
    vendors: list[str] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CohortCriteria:
        """Build criteria from notebook parameters, ignoring unrelated keys."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        criteria = cls(**known)
        if criteria.contrast not in {"any", "with", "without"}:
            raise ValueError(f"contrast must be 'any', 'with' or 'without', not {criteria.contrast!r}")
        return criteria


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


def load_series_table(index_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per series from ``index_dir/instances.parquet``.

    Descriptive columns take the series' first value; ``n_instances`` counts its images.
    """
    path = Path(index_dir) / "instances.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no index at {path}; run `pacs-workbench index` first")
    instances = pd.read_parquet(path)
    present = [c for c in SERIES_COLUMNS if c in instances.columns]
    if "SeriesInstanceUID" not in present:
        raise ValueError(f"{path} has no SeriesInstanceUID column")
    grouped = instances[present].groupby("SeriesInstanceUID", sort=True, dropna=True)
    series = grouped.first()
    series["n_instances"] = grouped.size()
    series = series.reset_index()
    for column in SERIES_COLUMNS:
        if column not in series.columns:
            series[column] = None
    series["SliceThickness"] = pd.to_numeric(series["SliceThickness"], errors="coerce")
    series["KVP"] = pd.to_numeric(series["KVP"], errors="coerce")
    series["contrast"] = series["contrast"].fillna(False).astype(bool)
    return series


def _count(frame: pd.DataFrame) -> dict[str, int]:
    return {
        "patients": int(frame["PatientID"].nunique()),
        "studies": int(frame["StudyInstanceUID"].nunique()),
        "series": len(frame),
    }


def apply_criteria(series: pd.DataFrame, criteria: CohortCriteria) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Filter series step by step and record the attrition.

    Returns
    -------
    (kept, attrition)
        The remaining series and a CONSORT-style table with one row per step:
        ``step``, ``criterion``, ``patients``, ``studies``, ``series``, ``series_excluded``.
    """
    steps: list[tuple[str, Callable[[pd.DataFrame], pd.Series]]] = []
    if criteria.modality:
        steps.append((f"Modality = {criteria.modality}", lambda f: f["Modality"] == criteria.modality))
    steps.append(
        (
            "cross-sectional image series (no localizer, SEG, RTSTRUCT, secondary capture)",
            lambda f: f["SOPClassUID"].isin(list(IMAGE_SOP_CLASSES))
            & ~f["ImageType"].fillna("").str.upper().str.contains("LOCALIZER"),
        )
    )
    steps.append(
        (f">= {criteria.min_instances} images in the series", lambda f: f["n_instances"] >= criteria.min_instances)
    )
    if criteria.date_from or criteria.date_to:
        lo = criteria.date_from.replace("-", "") or "00000000"
        hi = criteria.date_to.replace("-", "") or "99999999"
        steps.append(
            (
                f"study date in [{criteria.date_from or 'open'}, {criteria.date_to or 'open'}]",
                lambda f: f["StudyDate"].fillna("").between(lo, hi),
            )
        )
    steps.append(
        (
            f"slice thickness {criteria.slice_thickness_min:g}-{criteria.slice_thickness_max:g} mm",
            lambda f: f["SliceThickness"].between(criteria.slice_thickness_min, criteria.slice_thickness_max),
        )
    )
    if criteria.contrast != "any":
        wanted = criteria.contrast == "with"
        steps.append((f"contrast: {criteria.contrast}", lambda f: f["contrast"] == wanted))
    if criteria.vendors:
        needles = [v.lower() for v in criteria.vendors]
        steps.append(
            (
                "vendor in " + ", ".join(criteria.vendors),
                lambda f: f["Manufacturer"]
                .fillna("")
                .str.lower()
                .map(lambda m: any(n in m for n in needles))
                .astype(bool),
            )
        )

    rows = [{"step": 0, "criterion": "all series in the index", **_count(series), "series_excluded": 0}]
    kept = series
    for number, (label, predicate) in enumerate(steps, start=1):
        mask = predicate(kept).fillna(False).astype(bool)
        excluded = int((~mask).sum())
        kept = kept[mask]
        rows.append({"step": number, "criterion": label, **_count(kept), "series_excluded": excluded})
    return kept.reset_index(drop=True), pd.DataFrame(rows)


def _age_years(value: Any) -> float:
    """(0010,1010) Patient's Age ``nnnY`` in years, capped at 90 (HIPAA Safe Harbor)."""
    if not isinstance(value, str) or len(value) != 4 or not value[:3].isdigit():
        return float("nan")
    number, unit = int(value[:3]), value[3].upper()
    years = {"Y": number, "M": number / 12, "W": number / 52, "D": number / 365}.get(unit, float("nan"))
    return float(min(years, 90))


def pseudonymize_series(kept: pd.DataFrame, key: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replace identifiers with keyed pseudonyms and dates with days from each patient's baseline.

    Returns
    -------
    (cohort, selection)
        ``cohort`` has :data:`COHORT_COLUMNS` only; ``selection`` maps ``pseudo_series_id``
        to the identified (0020,000D)/(0020,000E) UIDs for retrieval and stays in the
        identified zone.
    """
    frame = kept.copy()
    frame["pseudo_patient_id"] = [pseudonymize(key, str(v), "patient") for v in frame["PatientID"]]
    frame["pseudo_study_id"] = [pseudonymize(key, str(v), "study") for v in frame["StudyInstanceUID"]]
    frame["pseudo_series_id"] = [pseudonymize(key, str(v), "series") for v in frame["SeriesInstanceUID"]]
    dates = pd.to_datetime(frame["StudyDate"], format="%Y%m%d", errors="coerce")
    baseline = dates.groupby(frame["PatientID"]).transform("min")
    frame["days_from_baseline"] = (dates - baseline).dt.days
    frame["study_index"] = dates.groupby(frame["PatientID"]).rank(method="dense").astype("Int64") - 1
    frame["age_years"] = frame["PatientAge"].map(_age_years)
    frame["thickness_bin"] = pd.cut(
        frame["SliceThickness"], bins=THICKNESS_BINS, labels=THICKNESS_LABELS, include_lowest=True
    ).astype(str)
    cohort = frame[COHORT_COLUMNS].sort_values(["pseudo_patient_id", "study_index", "pseudo_series_id"])
    selection = frame[["pseudo_patient_id", "pseudo_series_id", "StudyInstanceUID", "SeriesInstanceUID"]]
    return cohort.reset_index(drop=True), selection.reset_index(drop=True)


def build_cohort(index_dir: str | os.PathLike[str], criteria: CohortCriteria, key: bytes) -> Cohort:
    """Select series from the index by ``criteria`` and pseudonymize them.

    Parameters
    ----------
    index_dir
        Folder with ``instances.parquet`` from :func:`pacs_workbench.index.build_index`.
    criteria
        Inclusion criteria.
    key
        Project key from :func:`pacs_workbench.deid.pseudonym.load_key`.
    """
    series = load_series_table(index_dir)
    kept, attrition = apply_criteria(series, criteria)
    cohort, selection = pseudonymize_series(kept, key)
    return Cohort(series=cohort, attrition=attrition, selection=selection)


def write_cohort(cohort: Cohort, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``cohort.parquet``, ``attrition.csv`` and the identified ``selection.parquet`` atomically."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = {
        "cohort": folder / "cohort.parquet",
        "attrition": folder / "attrition.csv",
        "selection": folder / "selection.parquet",
    }
    _write_atomic(written["cohort"], lambda p: cohort.series.to_parquet(p, index=False))
    _write_atomic(written["attrition"], lambda p: cohort.attrition.to_csv(p, index=False))
    _write_atomic(written["selection"], lambda p: cohort.selection.to_parquet(p, index=False))
    return written


def _write_atomic(target: Path, write: Callable[[Path], Any]) -> None:
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def distribution_table(cohort: pd.DataFrame, column: str) -> pd.DataFrame:
    """Series, studies and patients per value of ``column`` (e.g. ``Manufacturer``)."""
    grouped = cohort.groupby(cohort[column].fillna("(missing)").astype(str))
    table = pd.DataFrame(
        {
            "series": grouped.size(),
            "studies": grouped["pseudo_study_id"].nunique(),
            "patients": grouped["pseudo_patient_id"].nunique(),
        }
    )
    table["share_of_series"] = (table["series"] / max(len(cohort), 1)).round(3)
    return table.sort_values("series", ascending=False)


def studies_per_patient(cohort: pd.DataFrame) -> pd.DataFrame:
    """How many patients have 1, 2, 3, ... studies in the cohort."""
    per_patient = cohort.groupby("pseudo_patient_id")["pseudo_study_id"].nunique()
    counts = per_patient.value_counts().sort_index()
    return pd.DataFrame({"studies": counts.index, "patients": counts.to_numpy()})


def follow_up_intervals(cohort: pd.DataFrame) -> pd.Series:
    """Days between consecutive studies of each patient (baseline to first follow-up, ...)."""
    per_study = cohort.drop_duplicates("pseudo_study_id")[["pseudo_patient_id", "days_from_baseline"]]
    ordered = per_study.sort_values(["pseudo_patient_id", "days_from_baseline"])
    gaps = ordered.groupby("pseudo_patient_id")["days_from_baseline"].diff().dropna()
    return gaps.astype(int).rename("days_between_studies").reset_index(drop=True)

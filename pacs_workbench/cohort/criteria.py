"""Inclusion criteria and the attrition they cause: each active criterion is one row of the table.

:class:`CohortCriteria` holds the criteria of the run parameters; :func:`apply_criteria` applies
them in the documented order to the candidate series (imaging first, then the EHR and the
report findings) and counts patients, studies and series left after each step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# SOP classes of cross-sectional CT/MR images; localizers, SEG, RTSTRUCT and secondary
# captures are not cohort series.
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
}
AGE_CAP = 90  # HIPAA Safe Harbor: ages above 89 are reported as 90
CONTRAST_CHOICES = ("any", "with", "without")
KERNEL_CHOICES = ("any", "soft", "sharp")
SEQUENCE_CHOICES = ("any", "T1", "T1C", "T2", "FLAIR", "DWI", "ADC")
NODULE_CHANGE_CHOICES = ("any", "new", "stable", "growing", "decreased")


@dataclass
class CohortCriteria:
    """Inclusion criteria, applied in this order (each one is a row of the attrition table).

    Criteria at their default value (an open range, ``"any"``) add no row.

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
        ``"any"``, ``"with"`` or ``"without"`` contrast: (0018,0010) Contrast/Bolus Agent
        and related attributes, else what the protocol and descriptions say
        (:func:`pacs_workbench.cohort.vocab.detect_contrast`).
    vendors
        (0008,0070) Manufacturer values to keep (case-insensitive substring); empty keeps all.
    kernel
        Reconstruction kernel class from (0018,1210) Convolution Kernel per vendor:
        ``"any"``, ``"soft"`` or ``"sharp"``.
    sequence
        MR sequence type a study must supply, ``"any"`` or one of ``T1``, ``T1C`` (T1 after
        contrast), ``T2``, ``FLAIR``, ``DWI``, ``ADC``: keeps the series of that type
        (``sequence_norm``, from the acquisition attributes:
        :func:`pacs_workbench.cohort.vocab.classify_sequence`), so a study without one drops out.
    max_ctdivol_mgy
        Keep series whose study's X-Ray Radiation Dose SR reports a CTDIvol (mGy) of the main
        acquisition of at most this (``CTDIvol_mGy``); 0 is off. Studies without a dose SR fail
        an active limit.
    age_min, age_max
        Age at scan in years (EHR birth date to Study Date, else (0010,1010) Patient's
        Age), inclusive; ages above 89 count as 90. Unknown ages fail an active range.
    outcome_known
        Keep only patients whose EHR records the outcome (0 or 1).
    min_baseline_nodule_mm
        Keep only patients whose baseline study (their earliest study left by the
        criteria above) has a report describing a nodule of at least this size; 0 is off.
    nodule_change
        Keep only patients with a report describing a nodule as ``"new"``, ``"stable"``,
        ``"growing"`` or ``"decreased"``; ``"any"`` is off.
    """

    modality: str = "CT"
    min_instances: int = 10
    date_from: str = ""
    date_to: str = ""
    slice_thickness_min: float = 0.0
    slice_thickness_max: float = 10.0
    contrast: str = "any"
    vendors: list[str] = field(default_factory=list)
    kernel: str = "any"
    sequence: str = "any"
    max_ctdivol_mgy: float = 0.0
    age_min: float = 0.0
    age_max: float = float(AGE_CAP)
    outcome_known: bool = False
    min_baseline_nodule_mm: float = 0.0
    nodule_change: str = "any"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CohortCriteria:
        """Build criteria from notebook parameters, ignoring unrelated keys.

        Raises
        ------
        ValueError
            For a choice outside its options or an empty range.
        """
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        criteria = cls(**known)
        criteria.validate()
        return criteria

    def validate(self) -> None:
        """Check choices and ranges (:class:`ValueError` naming the parameter)."""
        for name, choices in (
            ("contrast", CONTRAST_CHOICES),
            ("kernel", KERNEL_CHOICES),
            ("sequence", SEQUENCE_CHOICES),
            ("nodule_change", NODULE_CHANGE_CHOICES),
        ):
            value = getattr(self, name)
            if value not in choices:
                options = ", ".join(repr(c) for c in choices)
                raise ValueError(f"{name} must be one of {options}, not {value!r}")
        if self.slice_thickness_min > self.slice_thickness_max:
            raise ValueError("slice_thickness_min is larger than slice_thickness_max")
        if self.age_min > self.age_max:
            raise ValueError("age_min is larger than age_max")
        if self.max_ctdivol_mgy < 0:
            raise ValueError("max_ctdivol_mgy must be 0 (off) or a positive dose in mGy")
        if not isinstance(self.vendors, list | tuple):
            raise ValueError(f"vendors must be a list of manufacturer names, not {type(self.vendors).__name__}")

    def to_params(self) -> dict[str, Any]:
        """The criteria as notebook parameters (plain literals, for a parameter file)."""
        params = dataclasses.asdict(self)
        params["vendors"] = [str(v) for v in self.vendors]
        for name in (
            "slice_thickness_min", "slice_thickness_max", "max_ctdivol_mgy", "age_min", "age_max",
            "min_baseline_nodule_mm",
        ):  # fmt: skip
            params[name] = float(params[name])
        params["min_instances"] = int(params["min_instances"])
        params["outcome_known"] = bool(params["outcome_known"])
        return params


# --- candidates --------------------------------------------------------------------------------


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column, or missing values when the candidates lack it (then an active criterion excludes)."""
    return frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index, dtype=object)


def baseline_value(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per row, ``column`` of its patient's earliest study in ``frame`` (the baseline)."""
    dates = frame["StudyDate"].fillna("99999999").astype(str)
    order = frame.assign(_date=dates).sort_values(["_date", "StudyInstanceUID"], kind="stable")
    first_study = order.groupby("PatientID", sort=False)["StudyInstanceUID"].first()
    baseline_rows = order[order["StudyInstanceUID"].isin(set(first_study))]
    values = baseline_rows.drop_duplicates("PatientID").set_index("PatientID")[column]
    return frame["PatientID"].map(values)


# --- criteria ----------------------------------------------------------------------------------


def is_image_series(series: pd.DataFrame) -> pd.Series:
    """Cross-sectional CT/MR image series: :data:`IMAGE_SOP_CLASSES` and not a
    localizer by (0008,0008) Image Type."""
    return series["SOPClassUID"].isin(list(IMAGE_SOP_CLASSES)) & ~series["ImageType"].fillna("").astype(
        str
    ).str.upper().str.contains("LOCALIZER")


def _count(frame: pd.DataFrame) -> dict[str, int]:
    return {
        "patients": int(frame["PatientID"].nunique()),
        "studies": int(frame["StudyInstanceUID"].nunique()),
        "series": len(frame),
    }


Step = tuple[str, Callable[[pd.DataFrame], pd.Series]]


def _steps(criteria: CohortCriteria) -> list[Step]:
    """The active criteria as ``(label, predicate)``, in the documented order."""
    return _imaging_steps(criteria) + _clinical_steps(criteria)


def _imaging_steps(criteria: CohortCriteria) -> list[Step]:
    """Criteria on the images: modality, image series, size, date, thickness, contrast, vendor, kernel,
    MR sequence, dose."""
    steps: list[Step] = []
    if criteria.modality:
        steps.append((f"Modality = {criteria.modality}", lambda f: f["Modality"] == criteria.modality))
    steps.append(("cross-sectional image series (no localizer, SEG, RTSTRUCT, secondary capture)", is_image_series))
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
                lambda f: (
                    f["Manufacturer"].fillna("").str.lower().map(lambda m: any(n in m for n in needles)).astype(bool)
                ),
            )
        )
    if criteria.kernel != "any":
        steps.append((f"kernel class: {criteria.kernel}", lambda f: _column(f, "kernel_norm") == criteria.kernel))
    if criteria.sequence != "any":
        steps.append(
            (f"MR sequence: {criteria.sequence}", lambda f: _column(f, "sequence_norm") == criteria.sequence)
        )
    if criteria.max_ctdivol_mgy > 0:
        limit = criteria.max_ctdivol_mgy
        steps.append(
            (
                f"CTDIvol <= {limit:g} mGy (dose SR)",
                lambda f: pd.to_numeric(_column(f, "CTDIvol_mGy"), errors="coerce") <= limit,
            )
        )
    return steps


def _clinical_steps(criteria: CohortCriteria) -> list[Step]:
    """Criteria on the EHR (age at scan, outcome known) and the report findings."""
    steps: list[Step] = []
    if criteria.age_min > 0 or criteria.age_max < AGE_CAP:
        steps.append(
            (
                f"age at scan {criteria.age_min:g}-{criteria.age_max:g} years",
                lambda f: pd.to_numeric(_column(f, "age_years"), errors="coerce").between(
                    criteria.age_min, criteria.age_max
                ),
            )
        )
    if criteria.outcome_known:
        steps.append(("outcome known (EHR)", lambda f: _column(f, "outcome").notna()))
    if criteria.min_baseline_nodule_mm > 0:
        threshold = criteria.min_baseline_nodule_mm
        steps.append(
            (
                f"nodule >= {threshold:g} mm on the baseline report",
                lambda f: pd.to_numeric(baseline_value(f.assign(_n=_column(f, "nodule_size_mm")), "_n"),
                                        errors="coerce") >= threshold,
            )
        )  # fmt: skip
    if criteria.nodule_change != "any":
        change = criteria.nodule_change

        def _patients_with_change(f: pd.DataFrame) -> pd.Series:
            hits = f.loc[_column(f, "nodule_change") == change, "PatientID"]
            return f["PatientID"].isin(set(hits))

        steps.append((f"a report describes a {change} nodule", _patients_with_change))
    return steps


def apply_criteria(series: pd.DataFrame, criteria: CohortCriteria) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Filter series step by step and record the attrition.

    Parameters
    ----------
    series
        Candidates from :func:`load_series_table`, best after :func:`annotate_series`
        (the EHR and report criteria need its columns; without them they exclude all).
    criteria
        Inclusion criteria.

    Returns
    -------
    (kept, attrition)
        The remaining series and a CONSORT-style table with one row per step:
        ``step``, ``criterion``, ``patients``, ``studies``, ``series``, ``series_excluded``.
    """
    rows = [{"step": 0, "criterion": "all series in the index", **_count(series), "series_excluded": 0}]
    kept = series
    for number, (label, predicate) in enumerate(_steps(criteria), start=1):
        mask = predicate(kept).astype("boolean").fillna(False).astype(bool)
        excluded = int((~mask).sum())
        kept = kept[mask]
        rows.append({"step": number, "criterion": label, **_count(kept), "series_excluded": excluded})
    return kept.reset_index(drop=True), pd.DataFrame(rows)


# --- pseudonymized output ----------------------------------------------------------------------


# --- parameter file ----------------------------------------------------------------------------


# --- summaries ---------------------------------------------------------------------------------



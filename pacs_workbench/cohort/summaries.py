"""Summary tables of a cohort: distributions, harmonization, studies per patient, follow-up.

Every table counts; none shows an identifier, a date or a free-text value.
"""

from __future__ import annotations

import pandas as pd


def distribution_table(cohort: pd.DataFrame, column: str) -> pd.DataFrame:
    """Series, studies and patients per value of ``column`` (e.g. ``Manufacturer``)."""
    grouped = cohort.groupby(cohort[column].astype(object).where(cohort[column].notna(), "(missing)").astype(str))
    table = pd.DataFrame(
        {
            "series": grouped.size(),
            "studies": grouped["pseudo_study_id"].nunique(),
            "patients": grouped["pseudo_patient_id"].nunique(),
        }
    )
    table["share_of_series"] = (table["series"] / max(len(cohort), 1)).round(3)
    return table.sort_values("series", ascending=False)


#: What a cohort's make-up is shown by: kernel and slice thickness for CT; field strength and receive coil for MR.
DISTRIBUTION_COLUMNS = {
    "CT": ["Manufacturer", "kernel_norm", "thickness_bin", "contrast"],
    "MR": ["Manufacturer", "MagneticFieldStrength", "ReceiveCoilName", "sequence_norm"],
}


def distribution_columns(cohort: pd.DataFrame) -> list[str]:
    """The columns to show a cohort's make-up by (:data:`DISTRIBUTION_COLUMNS`; the CT ones unless all MR)."""
    modalities = set(cohort["Modality"].dropna().astype(str).str.upper()) if "Modality" in cohort.columns else set()
    columns = DISTRIBUTION_COLUMNS["MR" if modalities == {"MR"} else "CT"]
    return [c for c in columns if c in cohort.columns]


def harmonization_table(series: pd.DataFrame, raw: str, normalized: str) -> pd.DataFrame:
    """Series counts of a normalized column per value of a coded raw column.

    For coded attributes only, e.g. (0008,0070) Manufacturer against ``kernel_norm``:
    free-text attributes (descriptions, protocol names) can carry names and are never
    tabulated by value.
    """
    if raw in {"SeriesDescription", "ProtocolName", "StudyDescription", "ContrastBolusAgent"}:
        raise ValueError(f"{raw} is free text; tabulate its normalized column instead")
    rows = series[raw].astype(object).where(series[raw].notna(), "(missing)").astype(str)
    cols = series[normalized].astype(object).where(series[normalized].notna(), "(unmapped)").astype(str)
    return pd.crosstab(rows, cols).rename_axis(index=raw, columns=normalized)


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

"""The model table: from the feature and cohort tables to one row per patient, and reading it.

Notebook 04 builds the table it models from the feature stage's output and the cohort
(:func:`build_model_table`) and writes it as ``model_table.parquet`` in the features folder
(:func:`write_model_table`), which the explain stage (notebook 06) reads. :func:`read_table`
reads any case table given to ``pacs-workbench model``; :func:`select_feature_columns` decides
which of its columns are candidate features and :func:`label_at_horizon` turns a time-to-event
outcome into a binary one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.datadict import tag_for_keyword

from pacs_workbench.core.files import write_atomic
from pacs_workbench.radiomics.combat import ComBat

MODEL_TABLE_FILE = "model_table.parquet"
"""The model table's file name in the features folder (notebook 06's ``features_file`` reads it)."""


class ModelingError(ValueError):
    """A table or setting that cannot give a valid model (the message says which and why)."""


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a case table from Parquet (``.parquet``/``.pq``) or CSV (optionally gzip-compressed)."""
    file = Path(path)
    if not file.is_file():
        raise ModelingError(f"table not found: {file}")
    name = file.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(file)
        return pd.read_csv(file, compression="infer")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ModelingError(f"{file.name}: cannot read as Parquet or CSV ({type(exc).__name__})") from exc


def label_at_horizon(event: pd.Series, time: pd.Series, horizon: float) -> tuple[pd.Series, int]:
    """Binary label "event at or before ``horizon``" from a time-to-event outcome.

    Parameters
    ----------
    event
        1 for an event, 0 for censoring.
    time
        Time to event or censoring (same unit as ``horizon``).
    horizon
        The fixed time point.

    Returns
    -------
    tuple
        The label (1: event by the horizon; 0: event-free at the horizon; NaN: censored before
        the horizon without event, or missing event/time) and the number of censored-before-
        horizon cases excluded.
    """
    ev = pd.to_numeric(event, errors="coerce")
    t = pd.to_numeric(time, errors="coerce")
    label = pd.Series(np.nan, index=event.index, dtype=float)
    label[(ev == 1) & (t <= horizon)] = 1.0
    label[t > horizon] = 0.0
    label[(ev == 0) & (t >= horizon)] = 0.0
    censored = (ev == 0) & (t < horizon)
    return label, int(censored.sum())


#: Columns that say which case a row is, never what the lesion is like: ``segment_number`` is the
#: segment of a SEG the case came from.
CASE_KEY_COLUMNS = ("case_id", "segment_number")


def select_feature_columns(table: pd.DataFrame, reserved: Sequence[str]) -> tuple[list[str], int]:
    """Candidate feature columns and the number of other columns left out.

    Numeric columns only, except ``reserved`` and :data:`CASE_KEY_COLUMNS`, columns named for a DICOM
    attribute (provenance, e.g. `(0008,0070) Manufacturer`, `(0018,0050) Slice Thickness`) and
    ``diagnostics_*``.
    """
    skip = set(reserved) | set(CASE_KEY_COLUMNS)
    features = []
    for col in table.columns:
        name = str(col)
        if col in skip or name.startswith("diagnostics_") or tag_for_keyword(name) is not None:
            continue
        if pd.api.types.is_numeric_dtype(table[col]) and not pd.api.types.is_bool_dtype(table[col]):
            features.append(name)
    return features, len(table.columns) - len(features) - len(skip & set(table.columns))


#: Patient-level columns taken from the cohort's baseline study.
CLINICAL_COLUMNS = ("age_years", "pack_years")
#: Acquisition columns taken from the cohort's latest study (the index lesion's), when the cohort
#: has them: the dose of its X-Ray Radiation Dose SR, a covariate for image noise.
DOSE_COLUMNS = ("CTDIvol_mGy", "DLP_mGycm_total")


GROWTH_COLUMN = "delta_shape_VolumeGrowthRatio"


def build_model_table(
    features: pd.DataFrame,
    cohort: pd.DataFrame,
    *,
    size_feature: str = "original_shape_VoxelVolume",
    label: str = "outcome",
) -> pd.DataFrame:
    """One row per patient: the index lesion, its growth, and the patient's clinical factors.

    The index lesion is the largest lesion (by ``size_feature``) on the patient's latest study;
    ``delta_shape_VolumeGrowthRatio`` is its size over the largest lesion's size on the earliest
    study (1 with a single study), so growth enters the model as an imaging feature. Clinical
    columns and the outcome come from the cohort's baseline row of the same pseudonymous patient;
    the dose (a candidate covariate) from the patient's latest study in the cohort.

    Parameters
    ----------
    features
        Output of :func:`pacs_workbench.radiomics.features.extract_features` with ``pseudo_patient_id`` and
        ``StudyDate`` (de-identified, shifted dates: only their order and intervals are used).
    cohort
        ``cohort.parquet`` of the cohort stage (``pseudo_patient_id``, ``study_index``, the label
        and clinical columns).
    size_feature
        Feature that ranks lesions by size.
    label
        Outcome column of the cohort.

    Returns
    -------
    pandas.DataFrame
        Feature columns, ``GROWTH_COLUMN``, ``case_id``, ``pseudo_patient_id``, ``Manufacturer``,
        the clinical columns, the dose columns (:data:`DOSE_COLUMNS`, when the cohort has dose)
        and ``label``; only patients in the cohort with a known outcome.
    """
    usable = features
    if "error" in usable.columns:
        usable = usable[usable["error"].isna() | (usable["error"] == "")]
    if size_feature not in usable.columns:
        raise ModelingError(f"feature table has no {size_feature!r} column to pick index lesions by")
    usable = usable.dropna(subset=[size_feature, "pseudo_patient_id"])
    by_size = usable.sort_values(["pseudo_patient_id", "StudyDate", size_feature], ascending=[True, True, False])
    largest_per_study = by_size.drop_duplicates(["pseudo_patient_id", "StudyDate"], keep="first")
    first = largest_per_study.drop_duplicates("pseudo_patient_id", keep="first").set_index("pseudo_patient_id")
    latest = largest_per_study.drop_duplicates("pseudo_patient_id", keep="last").set_index("pseudo_patient_id")
    latest[GROWTH_COLUMN] = latest[size_feature] / first[size_feature].replace(0, np.nan)

    baseline = cohort.sort_values(["pseudo_patient_id", "study_index"]).drop_duplicates("pseudo_patient_id")
    wanted = [c for c in (label, *CLINICAL_COLUMNS) if c in baseline.columns]
    if label not in wanted:
        raise ModelingError(f"cohort has no {label!r} column; link the EHR in 01_cohort")
    patients = baseline.set_index("pseudo_patient_id")[wanted]
    dose = [c for c in DOSE_COLUMNS if c in cohort.columns and cohort[c].notna().any()]
    if dose:
        by_study = cohort.sort_values(["pseudo_patient_id", "study_index"])
        last = by_study.drop_duplicates("pseudo_patient_id", keep="last")
        patients = patients.join(last.set_index("pseudo_patient_id")[dose].astype(float))
    table = latest.join(patients, how="inner", lsuffix="_case")
    table = table[table[label].notna()].reset_index()
    table[label] = table[label].astype(int)
    return table


def write_model_table(
    features: pd.DataFrame,
    cases: pd.DataFrame | str | os.PathLike[str],
    cohort_file: str | os.PathLike[str],
    features_dir: str | os.PathLike[str],
) -> Path:
    """Build the model table and write it atomically as ``<features_dir>/model_table.parquet``.

    Parameters
    ----------
    features
        Output of :func:`pacs_workbench.radiomics.features.extract_features`.
    cases
        The case table the features were extracted from (``case_id``, ``image``, ``mask``), or
        its Parquet file; its image and mask columns are joined on ``case_id``.
    cohort_file
        ``cohort.parquet`` of the cohort stage.
    features_dir
        Folder of the feature stage's outputs.

    Returns
    -------
    Path
        The written file (:data:`MODEL_TABLE_FILE` in ``features_dir``).
    """
    case_table = cases if isinstance(cases, pd.DataFrame) else pd.read_parquet(cases)
    table = build_model_table(
        features.merge(case_table[["case_id", "image", "mask"]], on="case_id", how="left"),
        pd.read_parquet(cohort_file),
    )
    path = Path(features_dir) / MODEL_TABLE_FILE
    write_atomic(path, lambda temp: table.to_parquet(temp, index=False))
    return path


def harmonization_preview(
    table: pd.DataFrame, features: Sequence[str], batch: str = "Manufacturer"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features before and after ComBat fitted on the whole table, for display only.

    The models never use this: inside the cross-validation ComBat is fitted on each training
    fold alone. This shows a reader how much the vendors differ and what harmonization changes.
    """
    columns = [c for c in features if c in table.columns]
    before = table[[batch, *columns]].dropna()
    harmonized = ComBat(batch_col=batch, feature_cols=columns).fit_transform(before)
    after = before.copy()
    after[columns] = np.asarray(harmonized[columns] if isinstance(harmonized, pd.DataFrame) else harmonized)
    return before, after

"""The model table: one row per patient from features and cohort, its file, and its columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pacs_workbench.radiomics.table import (
    GROWTH_COLUMN,
    MODEL_TABLE_FILE,
    ModelingError,
    build_model_table,
    label_at_horizon,
    read_table,
    select_feature_columns,
    write_model_table,
)
from tests.radiomics.fixtures import make_table


def test_label_at_horizon() -> None:
    event = pd.Series([1, 1, 0, 0, 0, 1, None])
    time = pd.Series([10, 40, 10, 30, 50, 30, 5])
    label, excluded = label_at_horizon(event, time, 30.0)
    # event by 30 -> 1; event after -> 0; censored before 30 -> excluded; followed to 30 -> 0
    assert label.iloc[[0, 1, 3, 4, 5]].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert np.isnan(label.iloc[2])
    assert np.isnan(label.iloc[6]) and excluded == 1


def test_dicom_provenance_columns_are_not_features() -> None:
    table = make_table()
    extra = table.assign(SliceThickness=1.0, KVP=120.0, diagnostics_Mask_VoxelNum=5.0)
    features, _ = select_feature_columns(extra, ["label", "patient", "age", "Manufacturer"])
    assert "SliceThickness" not in features and "KVP" not in features
    assert "diagnostics_Mask_VoxelNum" not in features and "original_firstorder_F0" in features




def _features_and_cohort() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two patients: P1 with a growing lesion over two studies (plus a smaller one), P2 once."""
    features = pd.DataFrame(
        {
            "case_id": ["a1", "a2", "a3", "b1", "bad"],
            "pseudo_patient_id": ["P1", "P1", "P1", "P2", "P2"],
            "StudyDate": ["20200101", "20200101", "20210101", "20200301", "20200401"],
            "original_shape_VoxelVolume": [100.0, 40.0, 150.0, 80.0, np.nan],
            "original_firstorder_Mean": [1.0, 2.0, 3.0, 4.0, np.nan],
            "Manufacturer": ["SIEMENS", "SIEMENS", "SIEMENS", "Philips", "Philips"],
            "error": [None, None, None, None, "image file not found"],
        }
    )
    cases = pd.DataFrame(
        {"case_id": list(features["case_id"]), "image": [f"{c}.nii.gz" for c in features["case_id"]],
         "mask": [f"{c}_mask.nii.gz" for c in features["case_id"]], "extra": 1}
    )
    cohort = pd.DataFrame(
        {
            "pseudo_patient_id": ["P1", "P1", "P2", "P3"],
            "study_index": [1, 0, 0, 0],
            "outcome": [1.0, 1.0, 0.0, 1.0],
            "age_years": [71.0, 70.0, 64.0, 50.0],
            "pack_years": [30.0, 30.0, 0.0, 5.0],
        }
    )
    return features, cases, cohort


def test_model_table_takes_the_largest_latest_lesion_and_its_growth() -> None:
    features, cases, cohort = _features_and_cohort()
    table = build_model_table(features.merge(cases[["case_id", "image", "mask"]], on="case_id"), cohort)
    rows = table.set_index("pseudo_patient_id")
    assert sorted(rows.index) == ["P1", "P2"]  # P3 has no features
    assert rows.loc["P1", "case_id"] == "a3" and rows.loc["P1", GROWTH_COLUMN] == pytest.approx(1.5)
    assert rows.loc["P2", "case_id"] == "b1" and rows.loc["P2", GROWTH_COLUMN] == pytest.approx(1.0)
    assert rows.loc["P1", "age_years"] == 70.0  # the baseline study's value
    assert table["outcome"].tolist() == [1, 0]
    with pytest.raises(ModelingError, match="outcome"):
        build_model_table(features, cohort.drop(columns=["outcome"]))


def test_model_table_carries_the_latest_study_dose_as_a_candidate_covariate() -> None:
    features, cases, cohort = _features_and_cohort()
    cohort["CTDIvol_mGy"] = [4.5, 9.0, 6.0, 3.0]  # P1: latest study (index 1) 4.5 mGy
    cohort["DLP_mGycm_total"] = [180.0, 350.0, 240.0, 120.0]
    table = build_model_table(features.merge(cases[["case_id", "image", "mask"]], on="case_id"), cohort)
    rows = table.set_index("pseudo_patient_id")
    assert rows.loc["P1", "CTDIvol_mGy"] == 4.5 and rows.loc["P2", "DLP_mGycm_total"] == 240.0
    features_used, _ = select_feature_columns(table, reserved=["outcome", "case_id"])
    assert "CTDIvol_mGy" in features_used
    # Without dose in the cohort the table has no dose columns.
    assert "CTDIvol_mGy" not in build_model_table(features, cohort.drop(columns=["CTDIvol_mGy"])).columns


def test_write_model_table_writes_the_table_notebook_06_reads(tmp_path) -> None:
    features, cases, cohort = _features_and_cohort()
    cases_file, cohort_file = tmp_path / "cases.parquet", tmp_path / "cohort.parquet"
    cases.to_parquet(cases_file, index=False)
    cohort.to_parquet(cohort_file, index=False)
    folder = tmp_path / "features"
    path = write_model_table(features, cases_file, cohort_file, folder)
    assert path == folder / MODEL_TABLE_FILE == folder / "model_table.parquet"
    assert [p.name for p in folder.iterdir()] == [MODEL_TABLE_FILE]  # no temporary file left
    expected = build_model_table(features.merge(cases[["case_id", "image", "mask"]], on="case_id"), cohort)
    pd.testing.assert_frame_equal(read_table(path), expected)
    assert "extra" not in read_table(path).columns
    # A DataFrame of cases gives the same file.
    again = write_model_table(features, cases, cohort_file, tmp_path / "again")
    pd.testing.assert_frame_equal(read_table(again), expected)


def test_read_table_refuses_a_missing_or_unreadable_file(tmp_path) -> None:
    with pytest.raises(ModelingError, match="not found"):
        read_table(tmp_path / "nope.parquet")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(ModelingError, match="cannot read"):
        read_table(broken)

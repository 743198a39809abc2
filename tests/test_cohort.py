from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench import cohort as cohort_stage
from pacs_workbench.cohort import CohortCriteria
from pacs_workbench.deid.pseudonym import generate_key, load_key, pseudonymize

CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def _series(patient: str, study: str, series: str, date: str, n: int, **extra: object) -> list[dict]:
    base = {
        "PatientID": patient,
        "PatientSex": "F",
        "PatientAge": "061Y",
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "StudyDate": date,
        "Modality": "CT",
        "SOPClassUID": CT,
        "ImageType": "ORIGINAL\\PRIMARY\\AXIAL",
        "Manufacturer": "SIEMENS",
        "ManufacturerModelName": "SOMATOM",
        "ConvolutionKernel": "B30f",
        "SliceThickness": 2.0,
        "KVP": 120.0,
        "contrast": False,
        "BodyPartExamined": "CHEST",
        "SeriesDescription": "CHEST SMITH^JANE",
    }
    base.update(extra)
    return [dict(base, SOPInstanceUID=f"{series}.{i}") for i in range(n)]


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    rows = (
        _series("MRN001", "1.1", "1.1.1", "20200105", 30)
        + _series("MRN001", "1.1", "1.1.2", "20200105", 1, ImageType="ORIGINAL\\PRIMARY\\LOCALIZER")
        + _series("MRN001", "1.1", "1.1.3", "20200105", 1, Modality="SEG", SOPClassUID=SEG)
        + _series("MRN001", "1.2", "1.2.1", "20200704", 30)  # follow-up: 181 days later
        + _series("MRN002", "2.1", "2.1.1", "20210310", 25, SliceThickness=5.0, Manufacturer="GE MEDICAL SYSTEMS")
        + _series("MRN003", "3.1", "3.1.1", "20190101", 40, contrast=True, PatientAge="095Y")
        + _series("MRN004", "4.1", "4.1.1", "20220101", 5)  # too few images
    )
    folder = tmp_path / "index"
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / "instances.parquet")
    return folder


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return load_key(generate_key(tmp_path / "k.key"))


def test_attrition_counts_each_criterion(index_dir: Path, key: bytes) -> None:
    criteria = CohortCriteria(slice_thickness_max=3.0)
    built = cohort_stage.build_cohort(index_dir, criteria, key)
    steps = built.attrition.set_index("criterion")
    assert steps.iloc[0]["series"] == 7
    assert list(built.attrition["series_excluded"]) == [0, 1, 1, 1, 1]
    assert steps.iloc[-1][["patients", "studies", "series"]].tolist() == [2, 3, 3]


def test_cohort_has_pseudonyms_only(index_dir: Path, key: bytes) -> None:
    built = cohort_stage.build_cohort(index_dir, CohortCriteria(), key)
    text = built.series.to_csv()
    for identifier in ["MRN001", "MRN002", "1.1.1", "SMITH", "20200105"]:
        assert identifier not in text
    assert set(built.series.columns) == set(cohort_stage.COHORT_COLUMNS)
    assert pseudonymize(key, "MRN001") in set(built.series["pseudo_patient_id"])


def test_follow_up_and_age_cap(index_dir: Path, key: bytes) -> None:
    built = cohort_stage.build_cohort(index_dir, CohortCriteria(), key)
    assert cohort_stage.follow_up_intervals(built.series).tolist() == [181]
    per_patient = cohort_stage.studies_per_patient(built.series)
    assert per_patient.set_index("studies")["patients"].to_dict() == {1: 2, 2: 1}
    assert built.series["age_years"].max() == 90


def test_contrast_vendor_and_date_criteria(index_dir: Path, key: bytes) -> None:
    with_contrast = cohort_stage.build_cohort(index_dir, CohortCriteria(contrast="with"), key)
    assert len(with_contrast.series) == 1
    ge = cohort_stage.build_cohort(index_dir, CohortCriteria(vendors=["ge medical"]), key)
    assert set(ge.series["Manufacturer"]) == {"GE MEDICAL SYSTEMS"}
    dated = cohort_stage.build_cohort(index_dir, CohortCriteria(date_from="2020-01-01", date_to="2020-12-31"), key)
    assert len(dated.series) == 2
    with pytest.raises(ValueError, match="contrast"):
        CohortCriteria.from_mapping({"contrast": "maybe"})


def test_write_cohort_keeps_uids_apart(index_dir: Path, key: bytes, tmp_path: Path) -> None:
    built = cohort_stage.build_cohort(index_dir, CohortCriteria(), key)
    written = cohort_stage.write_cohort(built, tmp_path / "out")
    assert "SeriesInstanceUID" not in pd.read_parquet(written["cohort"]).columns
    selection = pd.read_parquet(written["selection"])
    assert set(selection["SeriesInstanceUID"]) == {"1.1.1", "1.2.1", "2.1.1", "3.1.1"}
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_missing_index_is_a_clear_error(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(FileNotFoundError, match="pacs-workbench index"):
        cohort_stage.build_cohort(tmp_path, CohortCriteria(), key)

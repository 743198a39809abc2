"""What the cohort-building tests share: small indexes written as Parquet, a key, EHR and report linkage."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort.build import (
    annotate_series,
    load_series_table,
    studies_table,
)
from pacs_workbench.cohort.criteria import CohortCriteria
from pacs_workbench.cohort.ehr import EhrLinkage, link_ehr
from pacs_workbench.core.pseudonym import generate_key, load_key, pseudonymize

CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def series_rows(patient: str, study: str, series: str, date: str, n: int, **extra: object) -> list[dict]:
    """``n`` instance rows of one CT series (``extra`` overrides columns)."""
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
        series_rows("MRN001", "1.1", "1.1.1", "20200105", 30)
        + series_rows("MRN001", "1.1", "1.1.2", "20200105", 1, ImageType="ORIGINAL\\PRIMARY\\LOCALIZER")
        + series_rows("MRN001", "1.1", "1.1.3", "20200105", 1, Modality="SEG", SOPClassUID=SEG)
        + series_rows("MRN001", "1.2", "1.2.1", "20200704", 30)  # follow-up: 181 days later
        + series_rows("MRN002", "2.1", "2.1.1", "20210310", 25, SliceThickness=5.0, Manufacturer="GE MEDICAL SYSTEMS")
        + series_rows("MRN003", "3.1", "3.1.1", "20190101", 40, contrast=True, PatientAge="095Y")
        + series_rows("MRN004", "4.1", "4.1.1", "20220101", 5)  # too few images
    )
    folder = tmp_path / "index"
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / "instances.parquet")
    return folder


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return load_key(generate_key(tmp_path / "k.key"))


@pytest.fixture
def rich_index(tmp_path: Path) -> Path:
    """Four patients; MRN001 has a baseline (soft kernel) and a follow-up (sharp kernel)."""
    rows = (
        series_rows("MRN001", "1.1", "1.1.1", "20200105", 30, PatientAge="")
        + series_rows("MRN001", "1.2", "1.2.1", "20200704", 30, ConvolutionKernel="B70f")
        + series_rows(
            "MRN002", "2.1", "2.1.1", "20210310", 25, Manufacturer="GE MEDICAL SYSTEMS", ConvolutionKernel="LUNG"
        )
        + series_rows("MRN003", "3.1", "3.1.1", "20190101", 40, PatientAge="071Y", contrast=True)
        + series_rows("MRN004", "4.1", "4.1.1", "20220101", 20, ConvolutionKernel="B70f", PatientAge="050Y")
    )
    frame = pd.DataFrame(rows)
    frame["AccessionNumber"] = "ACC" + frame["StudyInstanceUID"].str.replace(".", "", regex=False)
    folder = tmp_path / "rich"
    folder.mkdir()
    frame.to_parquet(folder / "instances.parquet")
    return folder


def ehr_linkage(index_dir: Path, key: bytes) -> EhrLinkage:
    """The EHR of the rich index's patients, linked."""
    # MRN001..MRN003 in the EHR (MRN003 without a recorded outcome), MRN004 imaging only,
    # MRN009 EHR only.
    patients = pd.DataFrame(
        {
            "mrn": ["MRN001", "MRN002", "MRN003", "MRN009"],
            "birth_date": [dt.date(1960, 3, 1), dt.date(1980, 1, 1), dt.date(1950, 6, 1), dt.date(1970, 1, 1)],
            "smoking_status": ["current", "never", "former", "never"],
            "pack_years": [40.0, 0.0, 20.0, 0.0],
            "outcome": [1, 0, None, 0],
            "outcome_date": [dt.date(2021, 1, 5), None, None, None],
            "cea_ng_ml": [3.1, 1.2, None, 2.0],
        }
    )
    studies = studies_table(load_series_table(index_dir))
    return link_ehr(patients, studies, key)


def report_fields(key: bytes) -> pd.DataFrame:
    """Linked report fields as link_reports hands them on (study pseudonyms)."""
    rows = [
        ("1.1", 6.0, "new"),  # MRN001 baseline: small
        ("1.2", 10.0, "growing"),  # MRN001 follow-up: grew
        ("2.1", 9.0, "new"),  # MRN002 baseline: large enough
        # MRN003, MRN004: no report
    ]
    return pd.DataFrame(
        {
            "pseudo_accession": [pseudonymize(key, f"ACC{s.replace('.', '')}", "accession") for s, _, _ in rows],
            "pseudo_study_id": [pseudonymize(key, s, "study") for s, _, _ in rows],
            "nodule_present": [True] * len(rows),
            "nodule_count": [1] * len(rows),
            "nodule_size_mm": [mm for _, mm, _ in rows],
            "nodule_location": ["RUL"] * len(rows),
            "nodule_change": [change for _, _, change in rows],
            "lung_rads": ["3", "4A", "4A"],
        }
    )


@pytest.fixture
def candidates(rich_index: Path, key: bytes) -> pd.DataFrame:
    series = load_series_table(rich_index)
    return annotate_series(series, key, ehr=ehr_linkage(rich_index, key), reports=report_fields(key))


def checked_criteria(**values: object) -> CohortCriteria:
    """Checked criteria from keyword values."""
    return CohortCriteria.from_mapping(values)


def final_counts(attrition: pd.DataFrame) -> list[int]:
    """Patients, studies and series left after the last step."""
    return attrition.iloc[-1][["patients", "studies", "series"]].tolist()

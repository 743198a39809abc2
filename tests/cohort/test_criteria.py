from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort import criteria as cohort_stage
from pacs_workbench.cohort import ehr
from pacs_workbench.cohort import report_mining as reports_text
from pacs_workbench.cohort.criteria import CohortCriteria
from pacs_workbench.cohort.ehr import IdentifierLeakError
from pacs_workbench.cohort.index import build_index
from pacs_workbench.core.params import NOTEBOOK_DIR
from pacs_workbench.core.pseudonym import generate_key, load_key, pseudonymize
from tests.orthanc import OrthancServer, orthanc_server

__all__ = ["orthanc_server"]  # the fixture is used by name

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


# --- harmonization, EHR, reports -------------------------------------------------------------------


@pytest.fixture
def rich_index(tmp_path: Path) -> Path:
    """Four patients; MRN001 has a baseline (soft kernel) and a follow-up (sharp kernel)."""
    rows = (
        _series("MRN001", "1.1", "1.1.1", "20200105", 30, PatientAge="")
        + _series("MRN001", "1.2", "1.2.1", "20200704", 30, ConvolutionKernel="B70f")
        + _series("MRN002", "2.1", "2.1.1", "20210310", 25, Manufacturer="GE MEDICAL SYSTEMS", ConvolutionKernel="LUNG")
        + _series("MRN003", "3.1", "3.1.1", "20190101", 40, PatientAge="071Y", contrast=True)
        + _series("MRN004", "4.1", "4.1.1", "20220101", 20, ConvolutionKernel="B70f", PatientAge="050Y")
    )
    frame = pd.DataFrame(rows)
    frame["AccessionNumber"] = "ACC" + frame["StudyInstanceUID"].str.replace(".", "", regex=False)
    folder = tmp_path / "rich"
    folder.mkdir()
    frame.to_parquet(folder / "instances.parquet")
    return folder


def _linkage(index_dir: Path, key: bytes) -> ehr.EhrLinkage:
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
    studies = cohort_stage.studies_table(cohort_stage.load_series_table(index_dir))
    return ehr.link_ehr(patients, studies, key)


def _reports(key: bytes) -> pd.DataFrame:
    """Linked report fields as reports_text.link_reports hands them on (study pseudonyms)."""
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
    series = cohort_stage.load_series_table(rich_index)
    return cohort_stage.annotate_series(series, key, ehr=_linkage(rich_index, key), reports=_reports(key))


def _criteria(**values: object) -> CohortCriteria:
    return CohortCriteria.from_mapping(values)


def _final(attrition: pd.DataFrame) -> list[int]:
    return attrition.iloc[-1][["patients", "studies", "series"]].tolist()


def test_series_table_is_harmonized(rich_index: Path) -> None:
    series = cohort_stage.load_series_table(rich_index).set_index("SeriesInstanceUID")
    assert series.loc["1.1.1", "kernel_norm"] == "soft"
    assert series.loc["1.2.1", "kernel_norm"] == "sharp"
    assert series.loc["2.1.1", "kernel_norm"] == "sharp"  # GE LUNG
    assert series.loc["3.1.1", "contrast"]  # the index flag survives
    table = cohort_stage.harmonization_table(series, "Manufacturer", "kernel_norm")
    assert table.loc["SIEMENS", "sharp"] == 2 and table.loc["SIEMENS", "soft"] == 2
    with pytest.raises(ValueError, match="free text"):
        cohort_stage.harmonization_table(series, "SeriesDescription", "protocol_norm")


def test_kernel_age_and_outcome_criteria(candidates: pd.DataFrame, key: bytes) -> None:
    sharp = cohort_stage.select_cohort(candidates, _criteria(kernel="sharp"), key)
    assert sharp.attrition.iloc[-1]["criterion"] == "kernel class: sharp"
    assert _final(sharp.attrition) == [3, 3, 3]
    # EHR age at scan replaces the DICOM age (MRN001 has none in DICOM; MRN003 is 68, not 71).
    ages = candidates.set_index("SeriesInstanceUID")["age_years"]
    assert ages["1.1.1"] == 59 and ages["1.2.1"] == 60 and ages["3.1.1"] == 68
    assert ages["4.1.1"] == 50  # imaging only: DICOM age
    middle = cohort_stage.select_cohort(candidates, _criteria(age_min=55, age_max=65), key)
    assert _final(middle.attrition) == [1, 2, 2]
    known = cohort_stage.select_cohort(candidates, _criteria(outcome_known=True), key)
    assert set(known.series["outcome"]) == {0, 1}  # MRN003 (no outcome) and MRN004 (no EHR) left out
    assert _final(known.attrition) == [2, 3, 3]


def test_baseline_nodule_and_change_criteria(candidates: pd.DataFrame, key: bytes) -> None:
    large = cohort_stage.select_cohort(candidates, _criteria(min_baseline_nodule_mm=8), key)
    # MRN001's nodule reached 10 mm on the follow-up only; MRN002 had 9 mm at baseline.
    assert large.attrition.iloc[-1]["criterion"] == "nodule >= 8 mm on the baseline report"
    assert _final(large.attrition) == [1, 1, 1]
    assert large.series["baseline_nodule_mm"].tolist() == [9.0]
    # Without the baseline study (date window), the follow-up becomes MRN001's baseline.
    later = cohort_stage.select_cohort(candidates, _criteria(date_from="2020-06-01", min_baseline_nodule_mm=8), key)
    assert _final(later.attrition) == [2, 2, 2]
    growing = cohort_stage.select_cohort(candidates, _criteria(nodule_change="growing"), key)
    assert _final(growing.attrition) == [1, 2, 2]  # whole patient, both studies
    assert growing.series.sort_values("study_index")["nodule_size_mm"].tolist() == [6.0, 10.0]


def test_enriched_cohort_is_pseudonymized(candidates: pd.DataFrame, key: bytes) -> None:
    built = cohort_stage.select_cohort(candidates, CohortCriteria(), key)
    columns = set(built.series.columns)
    assert set(cohort_stage.EHR_COLUMNS) <= columns and set(cohort_stage.REPORT_COLUMNS) <= columns
    assert "cea_ng_ml" in columns  # labs are cohort columns
    assert not columns & {"outcome_date", "age_at_scan", "in_imaging", "pseudo_accession", "PatientID"}
    first = built.series[built.series["pseudo_patient_id"] == pseudonymize(key, "MRN001")]
    assert first["days_to_outcome"].tolist() == [366, 185]  # outcome date as days from each scan
    text = built.series.to_csv()
    for identifier in ["MRN001", "MRN009", "ACC11", "1.2.1", "20200704", "2021-01-05", "1960"]:
        assert identifier not in text
    assert built.series["report_linked"].sum() == 3
    # Fail closed: an identified value in any output column stops the run.
    leaky = candidates.assign(smoking_status=candidates["PatientID"])
    with pytest.raises(IdentifierLeakError, match="smoking_status"):
        cohort_stage.select_cohort(leaky, CohortCriteria(), key)


def test_criteria_validation_and_params_round_trip() -> None:
    cases = [({"kernel": "medium"}, "kernel"), ({"nodule_change": "bigger"}, "nodule_change"),
             ({"age_min": 70, "age_max": 60}, "age_min")]  # fmt: skip
    for bad, name in cases:
        with pytest.raises(ValueError, match=name):
            CohortCriteria.from_mapping(bad)
    criteria = CohortCriteria(vendors=["GE"], kernel="soft", min_baseline_nodule_mm=6)
    params = criteria.to_params()
    assert CohortCriteria.from_mapping({**params, "unrelated": 1}) == criteria
    assert isinstance(params["min_baseline_nodule_mm"], float) and params["vendors"] == ["GE"]


# --- the 01_cohort notebook against a real PACS ------------------------------------------------------


@pytest.mark.slow
def test_notebook_on_orthanc_gives_the_folder_cohort(orthanc_server: OrthancServer, tmp_path: Path) -> None:
    """Index the Orthanc-loaded extract over DICOMweb in 01_cohort; same cohort as from the files."""
    import papermill as pm

    data = orthanc_server.data_dir
    assert data is not None
    key_file = generate_key(tmp_path / "project.key")
    key = load_key(key_file)
    criteria = {"modality": "CT", "min_instances": 10, "slice_thickness_max": 5.0, "min_baseline_nodule_mm": 4.0}

    # From the folder, with the package.
    build_index([data / "dicom"], tmp_path / "folder_index", workers=1, progress=False)
    series = cohort_stage.load_series_table(tmp_path / "folder_index")
    studies = cohort_stage.studies_table(series)
    linkage = ehr.load_and_link(data / "ehr", studies, key)
    reports, _ = reports_text.link_reports(reports_text.mine_reports(data / "reports", key), studies, key)
    candidates = cohort_stage.annotate_series(series, key, ehr=linkage, reports=reports)
    expected = cohort_stage.select_cohort(candidates, CohortCriteria.from_mapping(criteria), key)
    assert len(expected.series) > 0 and "nodule >= 4 mm on the baseline report" in set(expected.attrition["criterion"])

    # From the PACS, through the notebook.
    parameters = {
        "data_dir": str(data),
        "pacs_url": orthanc_server.dicomweb_url,
        "index_dir": str(tmp_path / "pacs_index"),
        "cohort_dir": str(tmp_path / "cohort"),
        "key_file": str(key_file),
        "params_file": str(tmp_path / "params.yaml"),
        "interactive": False,
        "workers": 1,
        **criteria,
    }
    executed = tmp_path / "01_cohort.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK_DIR / "01_cohort.ipynb"), str(executed), parameters=parameters, cwd=str(tmp_path),
        progress_bar=False, kernel_name="python3",
    )  # fmt: skip
    cohort = pd.read_parquet(tmp_path / "cohort" / "cohort.parquet")
    attrition = pd.read_csv(tmp_path / "cohort" / "attrition.csv")
    assert set(cohort["pseudo_series_id"]) == set(expected.series["pseudo_series_id"])
    pd.testing.assert_frame_equal(attrition, expected.attrition, check_dtype=False)
    assert (pd.read_parquet(tmp_path / "pacs_index" / "instances.parquet")["path"].str.startswith("http://")).all()
    # The same cohort row for row, EHR and report columns included.
    got = cohort.sort_values("pseudo_series_id").reset_index(drop=True)
    want = expected.series.sort_values("pseudo_series_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want[got.columns], check_dtype=False)
    # No planted identifier in what the run shows.
    phi = [v.strip() for v in (data / "truth" / "phi_values.txt").read_text().splitlines() if len(v.strip()) >= 4]
    shown = executed.read_text(encoding="utf-8").lower()
    assert not [v for v in phi if v.lower() in shown]

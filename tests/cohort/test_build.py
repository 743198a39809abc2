"""Tests for pacs_workbench.cohort.build: candidates, pseudonymized output, the notebook against a real PACS."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort.build import (
    COHORT_COLUMNS,
    EHR_COLUMNS,
    REPORT_COLUMNS,
    annotate_series,
    build_cohort,
    load_series_table,
    select_cohort,
    studies_table,
    write_cohort,
)
from pacs_workbench.cohort.criteria import CohortCriteria
from pacs_workbench.cohort.ehr import IdentifierLeakError, load_and_link
from pacs_workbench.cohort.index import build_index
from pacs_workbench.cohort.report_mining import link_reports, mine_reports
from pacs_workbench.cohort.summaries import harmonization_table
from pacs_workbench.core.params import NOTEBOOK_DIR
from pacs_workbench.core.pseudonym import generate_key, load_key, pseudonymize
from tests.cohort.cohort_fixtures import (
    candidates,
    index_dir,
    key,
    rich_index,
)
from tests.orthanc import OrthancServer, orthanc_server

__all__ = ["candidates", "index_dir", "key", "orthanc_server", "rich_index"]  # fixtures used by name


def test_cohort_has_pseudonyms_only(index_dir: Path, key: bytes) -> None:
    built = build_cohort(index_dir, CohortCriteria(), key)
    text = built.series.to_csv()
    for identifier in ["MRN001", "MRN002", "1.1.1", "SMITH", "20200105"]:
        assert identifier not in text
    assert set(built.series.columns) == set(COHORT_COLUMNS)
    assert pseudonymize(key, "MRN001") in set(built.series["pseudo_patient_id"])


def test_write_cohort_keeps_uids_apart(index_dir: Path, key: bytes, tmp_path: Path) -> None:
    built = build_cohort(index_dir, CohortCriteria(), key)
    written = write_cohort(built, tmp_path / "out")
    assert "SeriesInstanceUID" not in pd.read_parquet(written["cohort"]).columns
    selection = pd.read_parquet(written["selection"])
    assert set(selection["SeriesInstanceUID"]) == {"1.1.1", "1.2.1", "2.1.1", "3.1.1"}
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_missing_index_is_a_clear_error(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(FileNotFoundError, match="pacs-workbench index"):
        build_cohort(tmp_path, CohortCriteria(), key)


def test_series_table_is_harmonized(rich_index: Path) -> None:
    series = load_series_table(rich_index).set_index("SeriesInstanceUID")
    assert series.loc["1.1.1", "kernel_norm"] == "soft"
    assert series.loc["1.2.1", "kernel_norm"] == "sharp"
    assert series.loc["2.1.1", "kernel_norm"] == "sharp"  # GE LUNG
    assert series.loc["3.1.1", "contrast"]  # the index flag survives
    table = harmonization_table(series, "Manufacturer", "kernel_norm")
    assert table.loc["SIEMENS", "sharp"] == 2 and table.loc["SIEMENS", "soft"] == 2
    with pytest.raises(ValueError, match="free text"):
        harmonization_table(series, "SeriesDescription", "protocol_norm")


def test_enriched_cohort_is_pseudonymized(candidates: pd.DataFrame, key: bytes) -> None:
    built = select_cohort(candidates, CohortCriteria(), key)
    columns = set(built.series.columns)
    assert set(EHR_COLUMNS) <= columns and set(REPORT_COLUMNS) <= columns
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
        select_cohort(leaky, CohortCriteria(), key)


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
    series = load_series_table(tmp_path / "folder_index")
    studies = studies_table(series)
    linkage = load_and_link(data / "ehr", studies, key)
    reports, _ = link_reports(mine_reports(data / "reports", key), studies, key)
    candidates = annotate_series(series, key, ehr=linkage, reports=reports)
    expected = select_cohort(candidates, CohortCriteria.from_mapping(criteria), key)
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

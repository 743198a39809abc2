"""The cohort explorer: widget callbacks change the counts; Save writes the run's parameter file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pacs_workbench.cohort import explorer as widgets
from pacs_workbench.cohort.build import annotate_series, load_series_table, studies_table
from pacs_workbench.cohort.criteria import CohortCriteria, apply_criteria
from pacs_workbench.cohort.ehr import link_ehr
from pacs_workbench.core.params import load_params
from pacs_workbench.core.pseudonym import generate_key, load_key, pseudonymize

CT = "1.2.840.10008.5.1.4.1.1.2"
# (patient, study, series, date, images, vendor, kernel, thickness, DICOM age)
SERIES = [
    ("MRN101", "9.1", "9.1.1", "20190301", 30, "SIEMENS", "B30f", 1.0, "061Y"),
    ("MRN101", "9.2", "9.2.1", "20200301", 30, "SIEMENS", "B70f", 1.0, "062Y"),
    ("MRN102", "9.3", "9.3.1", "20200601", 30, "GE MEDICAL SYSTEMS", "STANDARD", 2.5, "045Y"),
    ("MRN103", "9.4", "9.4.1", "20210101", 30, "Philips", "L", 5.0, "077Y"),
    ("MRN104", "9.5", "9.5.1", "20210505", 30, "TOSHIBA", "FC13", 1.0, "058Y"),
    ("MRN104", "9.5", "9.5.2", "20210505", 1, "TOSHIBA", "", 1.0, "058Y"),  # a stray image
]
PARAMS_TEXT = """\
# Run parameters (a comment that must survive)
shared:
  data_dir: data/demo   # the extract
  workers: 2

01_cohort:
  index_dir: data/demo/index
  interactive: false
  modality: CT

# preprocessing comes next
03_preprocessing:
  out_dir: data/demo/preprocessed
"""


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return load_key(generate_key(tmp_path / "k.key"))


@pytest.fixture
def candidates(tmp_path: Path, key: bytes) -> pd.DataFrame:
    rows = []
    for patient, study, series, date, n, vendor, kernel, thickness, age in SERIES:
        for i in range(n):
            rows.append(
                {
                    "PatientID": patient, "PatientAge": age, "PatientSex": "M", "StudyInstanceUID": study,
                    "SeriesInstanceUID": series, "SOPInstanceUID": f"{series}.{i}", "StudyDate": date,
                    "AccessionNumber": "A" + study.replace(".", ""), "Modality": "CT", "SOPClassUID": CT,
                    "ImageType": "ORIGINAL\\PRIMARY\\AXIAL", "Manufacturer": vendor, "ConvolutionKernel": kernel,
                    "SliceThickness": thickness, "contrast": False, "BodyPartExamined": "CHEST",
                }
            )  # fmt: skip
    (tmp_path / "index").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "index" / "instances.parquet")
    series_table = load_series_table(tmp_path / "index")
    patients = pd.DataFrame(
        {
            "mrn": ["MRN101", "MRN102", "MRN103"],
            "birth_date": [dt.date(1958, 1, 1), dt.date(1975, 1, 1), dt.date(1944, 1, 1)],
            "outcome": [1, 0, None],
            "outcome_date": [dt.date(2021, 1, 1), None, None],
        }
    )
    linkage = link_ehr(patients, studies_table(series_table), key)
    reports = pd.DataFrame(
        {
            "pseudo_study_id": [pseudonymize(key, s, "study") for s in ("9.1", "9.2", "9.3", "9.5")],
            "nodule_size_mm": [9.0, 12.0, 5.0, 14.0],
            "nodule_change": ["new", "growing", "new", "new"],
            "nodule_present": [True] * 4,
        }
    )
    return annotate_series(series_table, key, ehr=linkage, reports=reports)


def _expected(candidates: pd.DataFrame, criteria: CohortCriteria) -> dict[str, int]:
    _, attrition = apply_criteria(candidates, criteria)
    return {k: int(attrition.iloc[-1][k]) for k in ("patients", "studies", "series")}


def test_each_filter_updates_the_counts(candidates: pd.DataFrame) -> None:
    explorer = widgets.CohortExplorer(candidates, CohortCriteria())
    assert explorer.counts == {"patients": 4, "studies": 5, "series": 5}  # the stray image is out
    first_png = explorer.histograms.value
    c = explorer.controls
    steps = [
        ("vendors", ("SIEMENS", "TOSHIBA"), {"patients": 2, "studies": 3, "series": 3}),
        ("kernel", "soft", {"patients": 2, "studies": 2, "series": 2}),
        ("age", (60.0, 90.0), {"patients": 1, "studies": 1, "series": 1}),  # MRN101 at 61 (EHR age)
        ("kernel", "any", {"patients": 1, "studies": 2, "series": 2}),
        ("outcome_known", True, {"patients": 1, "studies": 2, "series": 2}),
        ("min_baseline_nodule_mm", 10.0, {"patients": 0, "studies": 0, "series": 0}),  # 9 mm at baseline
        ("min_baseline_nodule_mm", 0.0, {"patients": 1, "studies": 2, "series": 2}),
        ("date_from", dt.date(2020, 1, 1), {"patients": 1, "studies": 1, "series": 1}),
    ]
    for name, value, expected in steps:
        c[name].value = value
        assert explorer.counts == expected, name
        assert explorer.counts == _expected(candidates, explorer.criteria)
    assert explorer.histograms.value != first_png
    assert "kernel class" not in explorer.attrition_html.value  # back to "any": no row
    assert "age at scan 60-90 years" in explorer.attrition_html.value


def test_report_and_thickness_filters(candidates: pd.DataFrame) -> None:
    explorer = widgets.CohortExplorer(candidates, CohortCriteria(nodule_change="growing"))
    assert explorer.counts["patients"] == 1  # only MRN101 has a growing nodule
    explorer.controls["nodule_change"].value = "new"
    assert explorer.counts == {"patients": 3, "studies": 4, "series": 4}
    explorer.controls["slice_thickness"].value = (0.0, 2.0)
    assert explorer.counts == {"patients": 2, "studies": 3, "series": 3}
    explorer.controls["modality"].value = ""
    explorer.controls["contrast"].value = "with"
    assert explorer.counts["series"] == 0
    assert explorer.criteria.contrast == "with" and explorer.criteria.modality == ""


def test_initial_criteria_come_from_the_parameters(candidates: pd.DataFrame) -> None:
    criteria = CohortCriteria(vendors=["ge medical"], slice_thickness_max=5.0, kernel="soft", age_min=40)
    explorer = widgets.CohortExplorer(candidates, criteria)
    assert explorer.controls["vendors"].value == ("GE MEDICAL SYSTEMS",)
    assert explorer.counts == _expected(candidates, criteria)


def test_save_writes_the_cohort_section_only(candidates: pd.DataFrame, tmp_path: Path) -> None:
    params_file = tmp_path / "run.yaml"
    params_file.write_text(PARAMS_TEXT)
    explorer = widgets.CohortExplorer(candidates, CohortCriteria(), params_file=params_file)
    explorer.controls["kernel"].value = "sharp"
    explorer.controls["vendors"].value = ("Philips", "SIEMENS")
    explorer.controls["min_baseline_nodule_mm"].value = 6.0
    explorer.save_button.click()
    text = params_file.read_text()
    # Other sections keep their text, comments included; the section keeps its other keys.
    assert text.startswith(PARAMS_TEXT.split("01_cohort:")[0])
    assert text.endswith("# preprocessing comes next\n03_preprocessing:\n  out_dir: data/demo/preprocessed\n")
    params = load_params(params_file)
    assert params["01_cohort"]["index_dir"] == "data/demo/index" and params["01_cohort"]["interactive"] is False
    assert params["shared"] == {"data_dir": "data/demo", "workers": 2}
    assert CohortCriteria.from_mapping(params["01_cohort"]) == explorer.criteria
    assert params["01_cohort"]["vendors"] == ["Philips", "SIEMENS"]
    assert "run.yaml" in explorer.message.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "k.key", "run.yaml"]  # no temp file left
    # Saving twice gives the same file (the explorer's state is the file's).
    explorer.save()
    assert params_file.read_text() == text


def test_save_creates_a_missing_file_and_rejects_bad_ones(candidates: pd.DataFrame, tmp_path: Path) -> None:
    explorer = widgets.CohortExplorer(candidates, CohortCriteria(kernel="soft"))
    assert explorer.save_button.disabled  # no parameter file given
    new = explorer.save(tmp_path / "new.yaml")
    assert yaml.safe_load(new.read_text())["01_cohort"]["kernel"] == "soft"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not sections\n")
    with pytest.raises(ValueError, match="mapping"):
        explorer.save(bad)
    assert bad.read_text() == "- a list\n- not sections\n"


def test_static_summary_under_papermill(candidates: pd.DataFrame) -> None:
    interactive = widgets.cohort_explorer(candidates, CohortCriteria())
    assert interactive._repr_mimebundle_()["text/plain"].startswith("Cohort explorer")
    static = widgets.cohort_explorer(candidates, CohortCriteria(kernel="sharp"), interactive=False)
    html = static._repr_html_()
    assert "kernel class: sharp" in html and "<img src='data:image/png;base64," in html
    assert static.counts == {"patients": 2, "studies": 2, "series": 2}  # B70f and Philips L
    for identifier in ["MRN10", "9.1.1", "A91", "20190301"]:
        assert identifier not in html

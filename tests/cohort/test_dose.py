"""Dose per study from the index's dose SR rows (pacs_workbench.cohort.dose), the dose criterion and table."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from pacs_workbench.cohort import CohortCriteria, apply_criteria, build_index, dose_table, load_series_table, study_dose
from pacs_workbench.synth.dose import StudyDose
from pacs_workbench.synth.dose_sr import XRAY_RADIATION_DOSE_SR_STORAGE, dose_content
from tests.cohort.index_fixtures import PATIENT_ID, make_study


def write_dose_sr(path: Path, study: str, ctdi: float, dlp: float) -> None:
    """A minimal X-Ray Radiation Dose SR of ``study`` (TID 10011 content tree)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(XRAY_RADIATION_DOSE_SR_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = XRAY_RADIATION_DOSE_SR_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = PATIENT_ID
    ds.Modality = "SR"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.StudyDate = "20210304"
    ds.ValueType = "CONTAINER"
    dose = StudyDose(ctdi, dlp, 0.1, 2.1, ("113691", "IEC Body Dosimetry Phantom"), 100.0)
    ds.ContentSequence = dose_content(dose, "CHEST", (generate_uid(), generate_uid()))
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


@pytest.fixture
def dosed_index(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """Two studies of two CT series each; the first has a dose SR (sent twice: a re-send), the second none."""
    dosed, undosed = make_study(tmp_path / "src" / "a"), make_study(tmp_path / "src" / "b")
    write_dose_sr(tmp_path / "src" / "a" / "dose.dcm", dosed["study"], 6.5, 240.0)
    write_dose_sr(tmp_path / "src" / "a" / "dose_partial.dcm", dosed["study"], 6.5, 120.0)
    out = tmp_path / "index"
    build_index([tmp_path / "src"], out, workers=1, progress=False)
    return out, dosed, undosed


def test_one_dose_row_per_study_on_each_of_its_series(dosed_index) -> None:
    out, dosed, undosed = dosed_index
    dose = study_dose(out)
    assert dose.to_dict("records") == [
        {"StudyInstanceUID": dosed["study"], "CTDIvol_mGy": 6.5, "DLP_mGycm_total": 242.1,
         "CTDIw_phantom": "IEC Body Dosimetry Phantom"}
    ]  # fmt: skip
    series = load_series_table(out).set_index("SeriesInstanceUID")
    assert series.loc[dosed["plain"], "CTDIvol_mGy"] == 6.5
    assert series.loc[dosed["contrast"], "DLP_mGycm_total"] == 242.1
    assert series.loc[[undosed["plain"], undosed["contrast"]], "CTDIvol_mGy"].isna().all()


def test_dose_criterion_and_table(dosed_index) -> None:
    out, dosed, _ = dosed_index
    series = load_series_table(out)
    criteria = CohortCriteria(min_instances=2, max_ctdivol_mgy=10.0)
    kept, attrition = apply_criteria(series, criteria)
    assert set(kept["StudyInstanceUID"]) == {dosed["study"]}  # no dose SR: excluded by an active limit
    assert "CTDIvol <= 10 mGy (dose SR)" in set(attrition["criterion"])
    kept, _ = apply_criteria(series, CohortCriteria(min_instances=2, max_ctdivol_mgy=5.0))
    assert kept.empty
    assert CohortCriteria.from_mapping(criteria.to_params()) == criteria
    with pytest.raises(ValueError, match="max_ctdivol_mgy"):
        CohortCriteria(max_ctdivol_mgy=-1.0).validate()
    cohort = series.assign(pseudo_study_id=series["StudyInstanceUID"], protocol_norm="chest")
    table = dose_table(cohort[cohort["Modality"] == "CT"])
    row = table.iloc[0]
    assert row["studies"] == 2 and row["without_dose"] == 1 and row["CTDIvol_mGy_median"] == 6.5
    assert not any("UID" in str(c) or "Patient" in str(c) for c in table.columns)

"""CT dose from X-Ray Radiation Dose SR content trees (pacs_workbench.dicom.dose)."""

from __future__ import annotations

import copy

import pydicom
import pytest
from pydicom.dataset import Dataset

from pacs_workbench.dicom.dose import DOSE_COLUMNS, is_dose_sr, read_ct_dose
from pacs_workbench.dicom.schema import dataset_to_row
from pacs_workbench.synth.dose import StudyDose
from pacs_workbench.synth.dose_sr import XRAY_RADIATION_DOSE_SR_STORAGE, dose_content

DOSE = StudyDose(
    ctdivol_mgy=7.25, dlp_mgycm=261.0, localizer_ctdivol_mgy=0.1, localizer_dlp_mgycm=2.1,
    phantom=("113691", "IEC Body Dosimetry Phantom"), scan_length_mm=360.0,
)  # fmt: skip


def _sr(dose: StudyDose = DOSE) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = XRAY_RADIATION_DOSE_SR_STORAGE
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContentSequence = dose_content(dose, "Thorax_Routine", ("1.2.3.5", "1.2.3.6"))
    return ds


def test_reads_the_main_acquisition_and_the_total() -> None:
    dose = read_ct_dose(_sr())
    assert dose == {
        "CTDIvol_mGy": 7.25, "DLP_mGycm_total": 263.1, "CTDIw_phantom": "IEC Body Dosimetry Phantom",
        "n_irradiation_events": 2,
    }  # fmt: skip
    assert set(dose) == set(DOSE_COLUMNS)


def test_gray_is_converted_and_unknown_units_give_no_value() -> None:
    ds = _sr()
    helical = ds.ContentSequence[3]
    ctdi = helical.ContentSequence[3].ContentSequence[0].MeasuredValueSequence[0]
    ctdi.NumericValue = "0.00725"
    ctdi.MeasurementUnitsCodeSequence[0].CodeValue = "Gy"
    assert read_ct_dose(ds)["CTDIvol_mGy"] == pytest.approx(7.25)
    ctdi.MeasurementUnitsCodeSequence[0].CodeValue = "rad"
    assert read_ct_dose(ds)["CTDIvol_mGy"] is None


def test_total_from_the_events_when_the_accumulated_container_is_missing() -> None:
    ds = _sr()
    del ds.ContentSequence[1]
    assert read_ct_dose(ds)["DLP_mGycm_total"] == pytest.approx(263.1)


def test_an_sr_without_ct_dose_content_has_no_dose() -> None:
    ds = _sr()
    ds.ContentSequence = []
    assert set(read_ct_dose(ds).values()) == {None}


def test_rows_carry_dose_only_for_dose_srs() -> None:
    row = dataset_to_row(_sr(), "dicomweb://pacs/1")
    assert row["CTDIvol_mGy"] == 7.25 and row["CTDIw_phantom"] == "IEC Body Dosimetry Phantom"
    ct = copy.deepcopy(_sr())
    ct.SOPClassUID = pydicom.uid.CTImageStorage
    assert all(dataset_to_row(ct, "x")[c] is None for c in DOSE_COLUMNS)
    assert is_dose_sr(XRAY_RADIATION_DOSE_SR_STORAGE) and not is_dose_sr(pydicom.uid.CTImageStorage)

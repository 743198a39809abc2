"""X-Ray Radiation Dose SRs through de-identification: the dose values and the content tree stay usable."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from pacs_workbench.deid.engine import Deidentifier
from pacs_workbench.deid.profile import parse_options
from pacs_workbench.dicom.dose import read_ct_dose
from pacs_workbench.synth.dose import StudyDose
from pacs_workbench.synth.dose_sr import XRAY_RADIATION_DOSE_SR_STORAGE, dose_content

KEY = bytes(range(32))


def _dose_sr() -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(XRAY_RADIATION_DOSE_SR_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = XRAY_RADIATION_DOSE_SR_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "MRN7654321", "19600101"
    ds.StudyDate = ds.ContentDate = "20210304"
    ds.Modality = "SR"
    ds.Manufacturer = "SIEMENS"
    ds.DeviceSerialNumber = "SN-48213"
    ds.InstitutionName = "Harrowgate Valley Clinic"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [Dataset()]
    ds.ConceptNameCodeSequence[0].CodeValue = "113701"
    ds.ConceptNameCodeSequence[0].CodingSchemeDesignator = "DCM"
    ds.ConceptNameCodeSequence[0].CodeMeaning = "X-Ray Radiation Dose Report"
    dose = StudyDose(7.25, 261.0, 0.1, 2.1, ("113691", "IEC Body Dosimetry Phantom"), 360.0)
    ds.ContentSequence = dose_content(dose, "Thorax_Routine", (generate_uid(), generate_uid()))
    return ds


@pytest.mark.parametrize("options", ["research", "basic"])
def test_dose_sr_keeps_its_dose_through_deid(options: str) -> None:
    source = _dose_sr()
    raw = io.BytesIO()
    source.save_as(raw, enforce_file_format=True)
    out = Deidentifier(KEY, parse_options(options)).deidentify_bytes(raw.getvalue())
    ds = pydicom.dcmread(io.BytesIO(out.data))
    assert ds.SOPClassUID == XRAY_RADIATION_DOSE_SR_STORAGE
    assert read_ct_dose(ds) == read_ct_dose(source) and read_ct_dose(ds)["CTDIvol_mGy"] == 7.25
    assert "DOE" not in str(ds.PatientName) and ds.get("InstitutionName") != "Harrowgate Valley Clinic"

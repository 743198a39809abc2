"""The X-Ray Radiation Dose SR of a CT study (TID 10011 CT Radiation Dose), beside the dose screen.

X-Ray Radiation Dose SR Storage (1.2.840.10008.5.1.4.1.1.88.67), Modality ``SR``. The content
tree is built with pydicom (highdicom's SR classes stamp the current date and time and have no
TID 10011 template), so the same seed gives the same bytes:

- (113701, DCM) X-Ray Radiation Dose Report, with (121058, DCM) Procedure reported = CT;
- (113811, DCM) CT Accumulated Dose Data: (113812) Total Number of Irradiation Events and
  (113813) CT Dose Length Product Total (mGy.cm);
- one (113819, DCM) CT Acquisition per irradiation event (localizer, helical): (125203)
  Acquisition Protocol, (113820) CT Acquisition Type, (113769) Irradiation Event UID and
  (113829) CT Dose with (113830) Mean CTDIvol (mGy), (113838) DLP (mGy.cm) and (113835) CTDIw
  Phantom Type.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacs_workbench.synth.dicom_writer import (
    StudyUIDs,
    add_equipment,
    add_patient_study,
    dicom_date,
    file_meta_for,
    series_texts,
    study_moment,
    vendor_time,
)
from pacs_workbench.synth.dose import StudyDose, study_dose
from pacs_workbench.synth.patients import PatientPlan, StudyPlan

XRAY_RADIATION_DOSE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.67"
DOSE_SR_SERIES_NUMBER = 997


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _item(relationship: str, kind: str, concept: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = kind
    item.ConceptNameCodeSequence = Sequence([_code(*concept)])
    return item


def _num(concept: tuple[str, str, str], value: float, unit: tuple[str, str, str]) -> Dataset:
    item = _item("CONTAINS", "NUM", concept)
    measured = Dataset()
    measured.NumericValue = f"{value:g}"
    measured.MeasurementUnitsCodeSequence = Sequence([_code(*unit)])
    item.MeasuredValueSequence = Sequence([measured])
    return item


def _container(concept: tuple[str, str, str], children: list[Dataset], relationship: str = "CONTAINS") -> Dataset:
    item = _item(relationship, "CONTAINER", concept)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(children)
    return item


_MGY = ("mGy", "UCUM", "mGy")
_MGYCM = ("mGy.cm", "UCUM", "mGy.cm")


def _acquisition(protocol: str, kind: tuple[str, str, str], event_uid: str, ctdi: float, dlp: float,
                 phantom: tuple[str, str]) -> Dataset:
    """One (113819, DCM) CT Acquisition (TID 10013) with its CT Dose container."""
    text = _item("CONTAINS", "TEXT", ("125203", "DCM", "Acquisition Protocol"))
    text.TextValue = protocol
    acquisition_type = _item("CONTAINS", "CODE", ("113820", "DCM", "CT Acquisition Type"))
    acquisition_type.ConceptCodeSequence = Sequence([_code(*kind)])
    event = _item("CONTAINS", "UIDREF", ("113769", "DCM", "Irradiation Event UID"))
    event.UID = event_uid
    phantom_type = _item("CONTAINS", "CODE", ("113835", "DCM", "CTDIw Phantom Type"))
    phantom_type.ConceptCodeSequence = Sequence([_code(phantom[0], "DCM", phantom[1])])
    mean_ctdi = _num(("113830", "DCM", "Mean CTDIvol"), ctdi, _MGY)
    event_dlp = _num(("113838", "DCM", "DLP"), dlp, _MGYCM)
    dose = _container(("113829", "DCM", "CT Dose"), [mean_ctdi, phantom_type, event_dlp])
    return _container(("113819", "DCM", "CT Acquisition"), [text, acquisition_type, event, dose])


def dose_content(dose: StudyDose, protocol_name: str, event_uids: tuple[str, str]) -> list[Dataset]:
    """The children of the report's root container."""
    procedure = _item("HAS CONCEPT MOD", "CODE", ("121058", "DCM", "Procedure reported"))
    procedure.ConceptCodeSequence = Sequence([_code("77477000", "SCT", "Computed Tomography X-Ray")])
    accumulated = _container(
        ("113811", "DCM", "CT Accumulated Dose Data"),
        [
            _num(("113812", "DCM", "Total Number of Irradiation Events"), 2, ("{events}", "UCUM", "events")),
            _num(("113813", "DCM", "CT Dose Length Product Total"), dose.total_dlp_mgycm, _MGYCM),
        ],
    )
    scout = _acquisition(
        "Topogram", ("113805", "DCM", "Constant Angle Acquisition"), event_uids[0],
        dose.localizer_ctdivol_mgy, dose.localizer_dlp_mgycm, dose.phantom,
    )  # fmt: skip
    helical = _acquisition(
        protocol_name, ("116152004", "SCT", "Spiral Acquisition"), event_uids[1],
        dose.ctdivol_mgy, dose.dlp_mgycm, dose.phantom,
    )  # fmt: skip
    return [procedure, accumulated, scout, helical]


def build_dose_sr(plan: PatientPlan, study: StudyPlan, uids: StudyUIDs) -> Dataset:
    """The study's X-Ray Radiation Dose SR (TID 10011), same values as the dose screen."""
    p = study.protocol
    dose = study_dose(plan.anatomy, p)
    ds = Dataset()
    sop_uid = uids.instance(plan, study, "dose_sr", 1)
    ds.file_meta = file_meta_for(XRAY_RADIATION_DOSE_SR_STORAGE, sop_uid, p.vendor)
    add_patient_study(ds, plan, study, uids)
    ds.SOPClassUID = XRAY_RADIATION_DOSE_SR_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "SR"
    add_equipment(ds, study)
    t = study_moment(study, 9.0)
    ds.SeriesDate = ds.ContentDate = dicom_date(study.date)
    ds.SeriesTime = ds.ContentTime = vendor_time(t, p.vendor)
    ds.SeriesDescription = "Radiation Dose Information"
    ds.SeriesInstanceUID = uids.instance(plan, study, "dose_sr_series", 1)
    ds.SeriesNumber = DOSE_SR_SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("113701", "DCM", "X-Ray Radiation Dose Report")])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "10011"
    ds.ContentTemplateSequence = Sequence([template])
    events = (uids.instance(plan, study, "irradiation_event", 1), uids.instance(plan, study, "irradiation_event", 2))
    ds.ContentSequence = Sequence(dose_content(dose, series_texts(study)["protocol"], events))
    return ds

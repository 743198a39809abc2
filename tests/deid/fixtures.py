"""Small synthetic DICOM with planted PHI for the de-identification tests.

Every builder returns real pydicom datasets (CT slices, a Secondary Capture dose
screen with text drawn by PIL, a highdicom SEG and an RTSTRUCT referencing the CT),
each carrying PHI in the places real exports do: the patient module, physicians, the
institution, free text, nested public sequences, private blocks (safe and unsafe),
private sequences, and file names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
ROOT = "1.2.826.0.1.3680043.10.999."


@dataclass
class Person:
    """A synthetic patient and the PHI planted with them."""

    last: str
    first: str
    mrn: str
    birth: str
    phone: str
    address: str
    age: str = "054Y"

    @property
    def dicom_name(self) -> str:
        return f"{self.last}^{self.first}"

    def phi(self) -> list[str]:
        return [self.dicom_name, f"{self.first} {self.last}", self.mrn, self.birth, self.phone, self.address]


ALICE = Person(
    "Kowalczyk", "Beatrix", "MRN4471023", "19580312", "(617) 555-0142", "42 Elmwood Avenue^Springfield^MA 01103"
)
BOB = Person(
    "Okonkwo", "Thaddeus", "88120457", "19491105", "(413) 555-0187", "7 Birchmere Road^Amherst^MA 01002", "094Y"
)
REFERRER = "Haverbrook^Lucinda^^Dr"
RADIOLOGIST = "Quillfeather^Osmund"
INSTITUTION = "Saint Ambrose Memorial Hospital"
INSTITUTION_ADDRESS = "1200 Harbor Street, Boston"


@dataclass
class StudySpec:
    """One study of a person: date, accession, UIDs."""

    person: Person
    date: str
    accession: str
    study_uid: str = field(default_factory=lambda: generate_uid(prefix=ROOT))
    series_uid: str = field(default_factory=lambda: generate_uid(prefix=ROOT))
    for_uid: str = field(default_factory=lambda: generate_uid(prefix=ROOT))


def _meta(sop_class: str, sop_instance: str, ts: str = ExplicitVRLittleEndian) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = UID(ROOT + "1")
    meta.SourceApplicationEntityTitle = "KOWALCZYK_WS"
    return meta


def _patient_study(ds: Dataset, spec: StudySpec) -> None:
    p = spec.person
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = p.dicom_name
    ds.PatientID = p.mrn
    ds.IssuerOfPatientID = "SAMH"
    ds.PatientBirthDate = p.birth
    ds.PatientSex = "F" if p is ALICE else "M"
    ds.PatientAge = p.age
    ds.PatientWeight = "61.5"
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = p.phone
    ds.OtherPatientIDs = p.mrn + "-OLD"
    other = Dataset()
    other.PatientID = "X" + p.mrn
    other.IssuerOfPatientID = "OTHERHOSP"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientComments = f"Call {p.phone} before exam. DOB {p.birth[4:6]}/{p.birth[6:]}/{p.birth[:4]}."
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate = spec.date
    ds.StudyTime = "093000"
    ds.AccessionNumber = spec.accession
    ds.StudyID = "S" + spec.accession[-4:]
    ds.ReferringPhysicianName = REFERRER
    ds.NameOfPhysiciansReadingStudy = RADIOLOGIST
    ds.StudyDescription = f"CT CHEST W/O for {p.first} {p.last}"
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.StationName = "CTAWP91021"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.ManufacturerModelName = "LightSpeed VCT"
    ds.DeviceSerialNumber = "SN-778812"
    ds.SoftwareVersions = "07MW18.4"
    request = Dataset()
    request.AccessionNumber = spec.accession
    request.RequestedProcedureID = "RP" + spec.accession
    request.RequestedProcedureDescription = f"CT CHEST, ordered by Dr. {REFERRER.split('^')[0]}"
    request.StudyInstanceUID = spec.study_uid
    # a private element nested in a public sequence: never safe
    request.private_block(0x0041, "ACME_RIS 1.0", create=True).add_new(0x01, "LO", p.dicom_name)
    ds.RequestAttributesSequence = Sequence([request])


def make_ct_series(spec: StudySpec, n: int = 3, size: int = 16) -> list[Dataset]:
    """``n`` axial CT slices (``size`` x ``size``) of one series with PHI everywhere."""
    out = []
    rng = np.random.default_rng(abs(hash(spec.series_uid)) % (2**32))
    for i in range(n):
        sop = generate_uid(prefix=ROOT)
        ds = Dataset()
        ds.file_meta = _meta(CT, sop)
        _patient_study(ds, spec)
        ds.SOPClassUID = CT
        ds.SOPInstanceUID = sop
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesInstanceUID = spec.series_uid
        ds.SeriesNumber = 2
        ds.InstanceNumber = i + 1
        ds.SeriesDate = spec.date
        ds.AcquisitionDate = spec.date
        ds.ContentDate = spec.date
        ds.AcquisitionDateTime = spec.date + "093512.250000+0100"
        ds.SeriesTime = "093100"
        ds.ContentTime = "093512"
        ds.InstanceCreationDate = spec.date
        ds.SeriesDescription = "AX CHEST 1.25mm"
        ds.ProtocolName = "CHEST ROUTINE"
        ds.OperatorsName = "Tech^Imogen"
        ds.PerformingPhysicianName = RADIOLOGIST
        ds.BodyPartExamined = "CHEST"
        ds.ImageComments = f"Pt {spec.person.first} {spec.person.last} repositioned, arms up"
        ds.BurnedInAnnotation = "NO"
        ds.FrameOfReferenceUID = spec.for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceThickness = "1.25"
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-5.6, -5.6, -10.0 + 1.25 * i]
        ds.SliceLocation = str(-10.0 + 1.25 * i)
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        pixels = (rng.normal(1000, 50, (size, size))).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT
        ref.ReferencedSOPInstanceUID = generate_uid(prefix=ROOT)
        ds.ReferencedImageSequence = Sequence([ref])
        # vendor private blocks: one element on the safe list (GEMS_ACQU_01 (0019,xx23) Table
        # Speed), one unsafe element with the MRN, and an unsafe private sequence with a name
        acq = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        acq.add_new(0x23, "DS", "39.375")
        acq.add_new(0x9E, "LO", f"SEQ {spec.person.last}")  # safe-listed text carrying PHI: cleaned
        ds.private_block(0x0011, "GEMS_PATI_01", create=True).add_new(0x12, "LO", spec.person.mrn)
        item = Dataset()
        item.private_block(0x0021, "SIEMENS MED", create=True).add_new(0x11, "LO", spec.person.dicom_name)
        item.PatientName = spec.person.dicom_name  # a public element inside a private sequence
        ds.private_block(0x0021, "SIEMENS MED", create=True).add_new(0x10, "SQ", Sequence([item]))
        out.append(ds)
    return out


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_image(lines: list[str], size: tuple[int, int] = (320, 160), rgb: bool = False) -> np.ndarray:
    """Dark image with white text lines drawn by PIL (uint8, grey or RGB)."""
    img = Image.new("RGB" if rgb else "L", size, 0)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((12, 14 + 30 * i), line, fill=(255, 255, 255) if rgb else 255, font=_font(18))
    return np.asarray(img)


def make_dose_screen(spec: StudySpec, *, rgb: bool = True, frames: int = 1) -> Dataset:
    """A Secondary Capture dose screen with the name and MRN burned into the pixels."""
    sop = generate_uid(prefix=ROOT)
    ds = Dataset()
    ds.file_meta = _meta(SC, sop)
    _patient_study(ds, spec)
    ds.SOPClassUID = SC
    ds.SOPInstanceUID = sop
    ds.Modality = "CT"
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.SeriesInstanceUID = generate_uid(prefix=ROOT)
    ds.SeriesNumber = 999
    ds.InstanceNumber = 1
    ds.SeriesDescription = "Dose Report"
    ds.BurnedInAnnotation = "YES"
    arr = text_image([f"{spec.person.last} {spec.person.first}", f"ID {spec.person.mrn}", "DLP 412 mGy.cm"], rgb=rgb)
    if frames > 1:
        arr = np.stack([arr] * frames)
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = int(arr.shape[-3 if rgb else -2]), int(arr.shape[-2 if rgb else -1])
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    return ds


def make_rtstruct(spec: StudySpec, ct: list[Dataset]) -> Dataset:
    """An RTSTRUCT with one ROI whose contours reference the CT slices."""
    sop = generate_uid(prefix=ROOT)
    ds = Dataset()
    ds.file_meta = _meta(RTSTRUCT, sop)
    _patient_study(ds, spec)
    ds.SOPClassUID = RTSTRUCT
    ds.SOPInstanceUID = sop
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid(prefix=ROOT)
    ds.SeriesNumber = 400
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "NODULES"
    ds.StructureSetName = f"Contours by {RADIOLOGIST}"
    ds.StructureSetDate = spec.date
    ds.StructureSetTime = "120000"
    ds.OperatorsName = "Tech^Imogen"

    def image_ref(s: Dataset) -> Dataset:
        r = Dataset()
        r.ReferencedSOPClassUID = s.SOPClassUID
        r.ReferencedSOPInstanceUID = s.SOPInstanceUID
        return r

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = spec.series_uid
    series_ref.ContourImageSequence = Sequence([image_ref(s) for s in ct])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = spec.study_uid
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = spec.for_uid
    for_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_ref])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = spec.for_uid
    roi.ROIName = "Nodule 1"
    roi.ROIDescription = f"Nodule 1 RUL seen by Dr. {RADIOLOGIST.split('^')[0]}"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])
    contour = Dataset()
    contour.ContourImageSequence = Sequence([image_ref(ct[0])])
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 3
    contour.ContourData = [
        0.0,
        0.0,
        float(ct[0].ImagePositionPatient[2]),
        1.0,
        0.0,
        float(ct[0].ImagePositionPatient[2]),
        0.0,
        1.0,
        float(ct[0].ImagePositionPatient[2]),
    ]
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ROIDisplayColor = [255, 0, 0]
    rc.ContourSequence = Sequence([contour])
    ds.ROIContourSequence = Sequence([rc])
    obs = Dataset()
    obs.ObservationNumber = 1
    obs.ReferencedROINumber = 1
    obs.RTROIInterpretedType = "ORGAN"
    obs.ROIInterpreter = RADIOLOGIST
    ds.RTROIObservationsSequence = Sequence([obs])
    return ds


def make_seg(ct: list[Dataset]) -> Dataset:
    """A highdicom BINARY SEG of one segment referencing every CT slice."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask = np.zeros((len(ct), int(ct[0].Rows), int(ct[0].Columns)), dtype=bool)
    mask[:, 4:8, 4:8] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Nodule 1",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=ct,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=generate_uid(prefix=ROOT),
        series_number=300,
        sop_instance_uid=generate_uid(prefix=ROOT),
        instance_number=1,
        manufacturer="Lumen Imaging Tools",
        manufacturer_model_name="Lumen Annotate",
        software_versions="3.2.1",
        device_serial_number="LA3-0042",
        content_creator_name=RADIOLOGIST,
    )
    return seg


def study_datasets(
    spec: StudySpec, *, n_ct: int = 3, dose: bool = False, seg: bool = False, rt: bool = False
) -> list[Dataset]:
    """The objects of one study."""
    ct = make_ct_series(spec, n_ct)
    out = list(ct)
    if dose:
        out.append(make_dose_screen(spec))
    if seg:
        out.append(make_seg(ct))
    if rt:
        out.append(make_rtstruct(spec, ct))
    return out


def write_tree(root: Path, datasets: list[Dataset]) -> list[Path]:
    """Write datasets the way a PACS export names them: PHI in every folder and file name."""
    paths = []
    for i, ds in enumerate(datasets):
        folder = (
            root
            / f"{ds.PatientName.family_name}_{ds.PatientName.given_name}_{ds.PatientID}"
            / f"{ds.StudyDate}_{ds.AccessionNumber}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:04d}_{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def phi_strings() -> list[str]:
    """Every PHI string planted by these builders (for --phi-list)."""
    out = [*ALICE.phi(), *BOB.phi(), REFERRER, RADIOLOGIST, INSTITUTION, INSTITUTION_ADDRESS]
    out += ["ACC7781203", "ACC7781999", "ACC5512001", "CTAWP91021", "SN-778812"]
    return out


def today() -> str:
    """A fixed date for tests that need one."""
    return dt.date(2021, 3, 4).strftime("%Y%m%d")

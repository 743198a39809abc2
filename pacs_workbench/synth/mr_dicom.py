"""The DICOM objects of one synthetic brain MR study: classic MR series and what every object shares.

MR Image Storage (1.2.840.10008.5.1.4.1.1.4), one file per slice (:func:`build_classic_series`),
as GE, Canon and Siemens VE11 write it: the sequence in (0018,0020) Scanning Sequence,
(0018,0021) Sequence Variant, (0018,0022) Scan Options, (0018,0024) Sequence Name; timing in
(0018,0080)/(0018,0081)/(0018,0082); (0018,0087) Magnetic Field Strength, (0018,1250) Receive
Coil Name; the b-value of a diffusion trace in (0018,9087) Diffusion b-Value (Canon) or in a
private element only (GE ``GEMS_PARM_01`` (0043,xx39), Siemens ``SIEMENS MR HEADER``
(0019,xx0C)); contrast in (0018,0010) Contrast/Bolus Agent (GE, Canon) or only in the series
description (Siemens VE11). Enhanced multi-frame objects come from
:mod:`pacs_workbench.synth.mr_enhanced`. Patient, study and institution attributes, private
blocks carrying PHI and file meta are shared by both (:func:`add_mr_patient_study`).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from pacs_workbench.synth.common import make_uid
from pacs_workbench.synth.dicom_writer import add_patient, dicom_date, vendor_time
from pacs_workbench.synth.mr_phantom import MR_MATRIX
from pacs_workbench.synth.mr_plan import MRPatientPlan, MRStudyPlan, MRStudyUIDs
from pacs_workbench.synth.mr_sequences import PHILIPS_RESCALE_SLOPE, VENDOR_SCALE, MRScanner, SequenceSpec
from pacs_workbench.synth.patients import INSTITUTIONS, staff_forms

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
MR_IMPLEMENTATION_VERSION = {
    "siemens": "SIEMENS_MR_XA",
    "ge": "GE_MR_29",
    "philips": "PHILIPS_MR_571",
    "canon": "TMS_MR_V80",
}
#: Contrast agent per vendor habit: (0018,0010) text, (0018,1041) volume ml.
CONTRAST_AGENT = {"ge": ("GADAVIST", "7.5"), "canon": ("GADOBUTROL 1.0 MMOL/ML", "7"),
                  "siemens": ("Gadovist", "7.5"), "philips": ("Gadovist", "7.5")}  # fmt: skip
GYROMAGNETIC_MHZ_PER_T = 42.577478


def study_moment(study: MRStudyPlan, minutes: float) -> dt.datetime:
    """The time ``minutes`` after the study started."""
    return dt.datetime.combine(study.date, study.time) + dt.timedelta(minutes=minutes)


def series_moment(study: MRStudyPlan, spec: SequenceSpec) -> dt.datetime:
    """When a series was acquired: the protocol's series follow each other about 4 minutes apart."""
    return study_moment(study, 3.0 + 4.0 * study.sequences.index(spec))


def mr_file_meta(sop_class: str, sop_instance: str, vendor: str) -> FileMetaDataset:
    """File meta information as the scanner's software writes it (Explicit VR Little Endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(make_uid(0, "implementation", f"mr-{vendor}"))
    meta.ImplementationVersionName = MR_IMPLEMENTATION_VERSION[vendor]
    return meta


def mr_study_description(plan: MRPatientPlan, study: MRStudyPlan) -> str:
    """(0008,1030) Study Description in the institution's style, sometimes with PHI typed in."""
    style = ["MRI BRAIN W WO CONTRAST", "MR HEAD WITH AND WITHOUT CONTRAST", "BRAIN MRI W/WO GADOLINIUM"][
        plan.base.institution
    ]
    if plan.base.phi_in_description and study.index == 0:
        return f"{style} - {plan.person.comma_name} MRN {plan.person.mrn}"[:64]
    return style


def add_mr_patient_study(ds: Dataset, plan: MRPatientPlan, study: MRStudyPlan, uids: MRStudyUIDs) -> None:
    """Patient, general study and institution attributes shared by every object of a study."""
    person = plan.person
    base = plan.base
    inst = INSTITUTIONS[base.institution]
    vendor = study.scanner.vendor
    add_patient(ds, person, inst.name, base.flags, study.date)
    if base.phi_in_patient_comments:
        ds.PatientComments = f"Claustrophobic, call {person.phone_dashed}. DOB {person.birth_date_forms()[2]}."
    ds.StudyInstanceUID = uids.study
    ds.StudyDate = dicom_date(study.date)
    ds.StudyTime = vendor_time(study_moment(study, 0), vendor)
    ds.AccessionNumber = study.accession
    ds.StudyID = uids.study[-5:].lstrip("0") or "1"
    ds.ReferringPhysicianName = staff_forms(base.referrer)[0]
    ds.NameOfPhysiciansReadingStudy = staff_forms(study.radiologist)[0]
    ds.StudyDescription = mr_study_description(plan, study)
    ds.InstitutionName = inst.name
    ds.InstitutionAddress = inst.address
    ds.InstitutionalDepartmentName = "Neuroradiology"


def add_mr_equipment(ds: Dataset, scanner: MRScanner) -> None:
    """General Equipment attributes of the scanner."""
    ds.Manufacturer = scanner.manufacturer
    ds.ManufacturerModelName = scanner.model
    ds.SoftwareVersions = scanner.software
    ds.StationName = scanner.station
    ds.DeviceSerialNumber = scanner.serial


def add_mr_series(ds: Dataset, plan: MRPatientPlan, study: MRStudyPlan, uids: MRStudyUIDs,
                  spec: SequenceSpec) -> None:
    """General Series attributes of one series, and the private blocks its vendor writes."""
    scanner = study.scanner
    when = series_moment(study, spec)
    ds.SeriesInstanceUID = uids.uid("series", spec.series_number)
    ds.SeriesNumber = spec.series_number
    ds.SeriesDate = ds.ContentDate = dicom_date(study.date)
    ds.SeriesTime = vendor_time(when, scanner.vendor)
    ds.Modality = "MR"
    ds.SeriesDescription = spec.description
    ds.ProtocolName = spec.protocol_name
    ds.OperatorsName = staff_forms(study.technologist)[0]
    ds.BodyPartExamined = "BRAIN" if scanner.vendor in ("ge", "philips") else "HEAD"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    _add_private(ds, plan, study, spec)


def _add_private(ds: Dataset, plan: MRPatientPlan, study: MRStudyPlan, spec: SequenceSpec) -> None:
    """Vendor private blocks: the b-value where the vendor keeps it, and PHI in a private sequence."""
    person = plan.person
    vendor = study.scanner.vendor
    if vendor == "siemens":
        header = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        header.add_new(0x08, "CS", "IMAGE NUM 4")  # CSA Image Header Type
        if spec.kind == "DWI" and not study.scanner.enhanced:
            header.add_new(0x0C, "IS", f"{spec.b_value:g}")  # B_value
        item = Dataset()
        item.private_block(0x0021, "SIEMENS MED", create=True).add_new(0xF5, "PN", person.dicom_name)
        ds.private_block(0x0021, "SIEMENS MED", create=True).add_new(0xF4, "SQ", Sequence([item]))
    elif vendor == "ge":
        ds.private_block(0x0011, "GEMS_PATI_01", create=True).add_new(0xF4, "LO", person.mrn)
        parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        if spec.kind == "DWI":
            parm.add_new(0x39, "IS", [f"{1_000_000_000 + int(spec.b_value or 0)}", "8", "0", "0"])  # Slop_int_6..9
    elif vendor == "philips":
        item = Dataset()
        item.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(
            0xF5, "LO", f"Ref: {staff_forms(plan.base.referrer)[1]}"
        )
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x5F, "SQ", Sequence([item]))
    else:
        tos = ds.private_block(0x700D, "TOSHIBA_MEC_MR3", create=True)
        tos.add_new(0xF4, "LO", study.accession)


def add_contrast(ds: Dataset, study: MRStudyPlan, spec: SequenceSpec) -> None:
    """Contrast on a classic series, the way each vendor writes (or does not write) it."""
    vendor = study.scanner.vendor
    if not spec.contrast or vendor == "siemens":
        return  # Siemens VE11: only "_KM" in the series description tells
    agent, volume = CONTRAST_AGENT[vendor]
    ds.ContrastBolusAgent = agent
    ds.ContrastBolusRoute = "IV"
    ds.ContrastBolusVolume = volume


def add_mr_acquisition(ds: Dataset, study: MRStudyPlan, spec: SequenceSpec) -> None:
    """MR Image module acquisition attributes of a classic series."""
    scanner = study.scanner
    g = study.geometry
    ds.ScanningSequence = spec.scanning_sequence.split("\\")
    ds.SequenceVariant = spec.sequence_variant.split("\\")
    ds.ScanOptions = spec.scan_options.split("\\") if spec.scan_options else ""
    ds.MRAcquisitionType = spec.acquisition_type
    ds.SequenceName = spec.sequence_name
    ds.AngioFlag = "N"
    ds.SliceThickness = f"{g.thickness:g}"
    ds.RepetitionTime = f"{spec.repetition_time:g}"
    ds.EchoTime = f"{spec.echo_time:g}"
    if spec.inversion_time and "IR" in spec.scanning_sequence.split("\\"):  # GE BRAVO: only in Scan Options
        ds.InversionTime = f"{spec.inversion_time:g}"
    ds.NumberOfAverages = "1" if spec.weighting != "se" else "2"
    ds.ImagingFrequency = f"{GYROMAGNETIC_MHZ_PER_T * scanner.field_t:.6f}"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = f"{scanner.field_t:g}"
    ds.SpacingBetweenSlices = f"{g.spacing:g}"
    ds.EchoTrainLength = str(spec.echo_train_length)
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = "1502" if spec.weighting in ("dwi", "adc") else "200"
    ds.ReceiveCoilName = scanner.coil
    ds.TransmitCoilName = "Body"
    ds.AcquisitionMatrix = [0, MR_MATRIX, MR_MATRIX, 0]
    ds.InPlanePhaseEncodingDirection = "COL"
    ds.FlipAngle = f"{spec.flip_angle:g}"
    ds.VariableFlipAngleFlag = "N"
    if spec.kind == "DWI" and scanner.vendor == "canon":
        ds.DiffusionBValue = spec.b_value


def add_mr_pixel(ds: Dataset, scanner: MRScanner, spec: SequenceSpec) -> None:
    """Image Pixel attributes (and Philips' rescale) of a classic slice or an enhanced frame."""
    bits, top = VENDOR_SCALE[scanner.vendor]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = MR_MATRIX
    ds.Columns = MR_MATRIX
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    center = 1200 if spec.weighting == "adc" else int(top * 0.45)
    ds.WindowCenter, ds.WindowWidth = str(center), str(2 * center)


def build_classic_series(
    plan: MRPatientPlan, study: MRStudyPlan, uids: MRStudyUIDs, spec: SequenceSpec, pixels: np.ndarray, z: np.ndarray,
    origin_xy: tuple[float, float],
) -> tuple[Dataset, list[Dataset]]:
    """One classic MR series: ``(template, slices)`` in Instance Number order (see :func:`encode_series`).

    ``pixels`` is the stored uint16 volume ``[k, row, column]`` along increasing z, ``z`` the
    slice positions in mm.
    """
    volume = np.asarray(pixels)
    zs = np.asarray(z, dtype=float)
    scanner = study.scanner
    g = study.geometry
    when = series_moment(study, spec)
    ds = Dataset()
    add_mr_patient_study(ds, plan, study, uids)
    ds.ImageType = list(spec.image_type)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.AcquisitionDate = dicom_date(study.date)
    add_mr_equipment(ds, scanner)
    add_mr_series(ds, plan, study, uids, spec)
    add_contrast(ds, study, spec)
    add_mr_acquisition(ds, study, spec)
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ps = f"{g.pixel_spacing:.6f}".rstrip("0").rstrip(".")
    ds.PixelSpacing = [ps, ps]
    add_mr_pixel(ds, scanner, spec)
    if scanner.vendor == "philips":
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", f"{PHILIPS_RESCALE_SLOPE:g}", "US"
    n = g.n_slices
    order = list(range(n - 1, -1, -1)) if g.descending else list(range(n))
    slices = []
    for number, k in enumerate(order, start=1):
        sl = Dataset(dict(ds.items()))
        sop_uid = uids.uid(f"mr-{spec.series_number}", number)
        sl.file_meta = mr_file_meta(MR_IMAGE_STORAGE, sop_uid, scanner.vendor)
        sl.SOPInstanceUID = sop_uid
        acquired = when + dt.timedelta(seconds=2.5 * number)
        sl.AcquisitionTime = sl.ContentTime = vendor_time(acquired, scanner.vendor)
        sl.InstanceNumber = number
        position = f"{float(zs[k]):.4f}"
        sl.ImagePositionPatient = [f"{origin_xy[0]:.4f}", f"{origin_xy[1]:.4f}", position]
        sl.SliceLocation = position
        if plan.base.phi_in_image_comments and number == 1 and spec.kind == "T1":
            sl.ImageComments = f"Pt {plan.person.natural_name} moved, repeated"
        sl.add_new(0x7FE00010, "OW", np.ascontiguousarray(volume[k]).tobytes())
        slices.append(sl)
    return ds, slices

"""The study's images besides the axial series: the localizer and the dose screen.

- CT Image Storage (1.2.840.10008.5.1.4.1.1.2): the coronal localizer (scout),
  ``ImageType`` ``ORIGINAL\\PRIMARY\\LOCALIZER``.
- Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7): the dose screen (the values of
  :func:`pacs_workbench.synth.dose.study_dose`, as in the dose SR), with the
  patient's name, MRN and accession number burned into the pixels
  ((0028,0301) Burned In Annotation ``YES``; (0008,0060) Modality ``CT`` as scanners write it).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from pacs_workbench.synth.dicom_writer import (
    CT_IMAGE_STORAGE,
    SERIES_NUMBERS,
    StudyUIDs,
    add_equipment,
    add_patient_study,
    dicom_date,
    file_meta_for,
    series_texts,
    study_moment,
    vendor_time,
)
from pacs_workbench.synth.dose import study_dose
from pacs_workbench.synth.imaging import render_localizer
from pacs_workbench.synth.patients import PatientPlan, StudyPlan, staff_forms

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def build_localizer(plan: PatientPlan, study: StudyPlan, uids: StudyUIDs) -> Dataset:
    """One coronal localizer (scout) image, ``ImageType`` ``ORIGINAL\\PRIMARY\\LOCALIZER``."""
    p = study.protocol
    image, top_left, ps = render_localizer(plan.anatomy, study.pose, study.z_center, p.contrast)
    ds = Dataset()
    sop_uid = uids.instance(plan, study, "localizer", 1)
    ds.file_meta = file_meta_for(CT_IMAGE_STORAGE, sop_uid, p.vendor)
    add_patient_study(ds, plan, study, uids)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    t = study_moment(study, 0.5)
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = dicom_date(study.date)
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = vendor_time(t, p.vendor)
    ds.Modality = "CT"
    add_equipment(ds, study)
    ds.SeriesDescription = series_texts(study)["localizer"]
    ds.ProtocolName = series_texts(study)["protocol"]
    ds.OperatorsName = staff_forms(study.technologist)[0]
    if p.body_part:
        ds.BodyPartExamined = p.body_part
    ds.SliceThickness = "0.6"
    ds.KVP = "120"
    ds.XRayTubeCurrent = 35
    ds.PatientPosition = "HFS"
    ds.SeriesInstanceUID = uids.localizer_series
    ds.SeriesNumber = SERIES_NUMBERS[p.vendor][0]
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in top_left]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.PixelSpacing = [f"{ps:g}", f"{ps:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = "1600", "3000"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    if plan.phi_in_image_comments:
        ds.ImageComments = f"Pt {plan.person.natural_name} repositioned, arms up"
    ds.PixelData = image.tobytes()
    return ds


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:  # no TrueType font: PIL's bitmap font scales too (Pillow >= 10.1)
        return ImageFont.load_default(size=size)


def dose_screen_lines(plan: PatientPlan, study: StudyPlan) -> list[tuple[str, int]]:
    """Text lines (and font sizes) burned into the dose screen."""
    p = study.protocol
    dose = study_dose(plan.anatomy, p)
    ctdi, dlp = dose.ctdivol_mgy, dose.total_dlp_mgycm
    return [
        (f"{study.scanner.manufacturer} {study.scanner.model} - Dose Report", 18),
        (f"Patient: {plan.person.comma_name}", 24),
        (f"MRN: {plan.person.mrn}", 24),
        (f"Accession: {study.accession}   Exam: {study.date.isoformat()}", 18),
        ("Series   Scan       kV    CTDIvol   DLP", 16),
        ("1        Scout      120   0.10      2.1", 16),
        (f"{SERIES_NUMBERS[p.vendor][1]:<8} Helical    {p.kvp:<5} {ctdi:<9.2f} {dose.dlp_mgycm:.1f}", 16),
        (f"Total DLP: {dlp:.1f} mGy*cm", 18),
    ]


def build_dose_screen(plan: PatientPlan, study: StudyPlan, uids: StudyUIDs) -> tuple[Dataset, list[str]]:
    """The dose screen (Secondary Capture) with identifying text burned into the pixels.

    Returns
    -------
    tuple
        The dataset and the burned-in text lines (for the PHI ground truth).
    """
    p = study.protocol
    image = Image.new("L", (512, 256), 0)
    draw = ImageDraw.Draw(image)
    y = 12
    lines = dose_screen_lines(plan, study)
    for text, size in lines:
        draw.text((16, y), text, fill=235, font=_font(size))
        y += int(size * 1.45)
    ds = Dataset()
    sop_uid = uids.instance(plan, study, "dose", 1)
    ds.file_meta = file_meta_for(SECONDARY_CAPTURE_STORAGE, sop_uid, p.vendor)
    add_patient_study(ds, plan, study, uids)
    ds.ImageType = {
        "siemens": ["DERIVED", "SECONDARY", "OTHER"],
        "ge": ["ORIGINAL", "PRIMARY", "SCREEN SAVE"],
        "philips": ["DERIVED", "SECONDARY", "DOSE_INFO"],
        "canon": ["DERIVED", "SECONDARY"],
    }[p.vendor]
    ds.SOPClassUID = SECONDARY_CAPTURE_STORAGE
    ds.SOPInstanceUID = sop_uid
    t = study_moment(study, 9.0)
    ds.SeriesDate = ds.ContentDate = dicom_date(study.date)
    ds.SeriesTime = ds.ContentTime = vendor_time(t, p.vendor)
    ds.Modality = "CT"
    ds.ConversionType = "WSD"
    add_equipment(ds, study)
    ds.SeriesDescription = series_texts(study)["dose"]
    ds.SeriesInstanceUID = uids.dose_series
    ds.SeriesNumber = SERIES_NUMBERS[p.vendor][2]
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 256, 512
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "YES"
    ds.PixelData = np.asarray(image, dtype=np.uint8).tobytes()
    return ds, [text for text, _ in lines]

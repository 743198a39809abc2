"""DICOM files for the reader tests: a small CT written by pydicom, pydicom's bundled files,
and the fast path's and pydicom's values of one file side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from pacs_workbench.dicom.read import DicomReadError, read_header, tags_for_keywords
from pacs_workbench.dicom.scan import scan_header
from pacs_workbench.dicom.values import dataset_values, scan_values, validate_scan

KEYWORDS = [
    "SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName",
    "PatientBirthDate", "Modality", "StudyDate", "StudyDescription", "Manufacturer", "SliceThickness",
    "PixelSpacing", "KVP", "ConvolutionKernel", "Rows", "Columns", "SeriesNumber", "InstanceNumber",
    "ImageType", "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "NumberOfFrames",
    "ContrastBolusAgent", "BurnedInAnnotation",
]  # fmt: skip


KEYWORD_TAGS = tags_for_keywords(KEYWORDS)


PYDICOM_DATA = Path(pydicom.data.__file__).parent


def bundled(name: str) -> Path:
    """A file bundled with pydicom (``get_testdata_file`` may try to download others)."""
    return PYDICOM_DATA / "test_files" / name


def write_ct(
    path: Path,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    patient_name: str = "Doe^Jane",
    charset: str = "ISO_IR 100",
    with_sequence: bool = True,
) -> Dataset:
    """A small CT slice with a private block and a nested sequence."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = "20200102"
    ds.Modality = "CT"
    ds.Manufacturer = "SIEMENS"
    ds.StudyDescription = "CT CHEST"
    ds.PatientName = patient_name
    ds.PatientID = "MRN0042"
    ds.PatientBirthDate = "19600101"
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    ds.ConvolutionKernel = ["B70f", "3"]
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 3
    ds.InstanceNumber = 7
    ds.ImagePositionPatient = [-100.0, -100.0, -12.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = -12.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.PixelSpacing = [0.5, 0.75]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if with_sequence:
        item = Dataset()
        item.CodeValue = "123"
        item.CodingSchemeDesignator = "99LOCAL"
        ds.RequestAttributesSequence = Sequence([item])
        ds.add_new(0x00291010, "LO", "PRIVATE CREATOR")
        ds.add_new(0x00291011, "OB", bytes(range(64)))
    big = transfer_syntax == ExplicitVRBigEndian
    ds.PixelData = np.arange(64, dtype=">i2" if big else "<i2").tobytes()
    # The encoding follows the Transfer Syntax UID of the File Meta.
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return ds


def fast_values(path: Path) -> dict | tuple | None:
    """Values from the fast path, an error tuple, or None when it defers to pydicom."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        scan = scan_header(handle, size, KEYWORD_TAGS.values()) if size else None
        if scan is None:
            return None
        try:
            validate_scan(scan)
        except DicomReadError as error:
            return ("error", type(error).__name__, error.message)
        values = scan_values(scan)
    return {k: values.get(t) for k, t in KEYWORD_TAGS.items()}


def slow_values(path: Path, *, specific: bool = True) -> dict | tuple:
    try:
        ds = read_header(path, specific_tags=list(KEYWORD_TAGS.values()) if specific else None)
    except DicomReadError as error:
        return ("error", type(error).__name__, error.message)
    return dataset_values(ds, KEYWORD_TAGS)


def pydicom_files() -> list[Path]:
    files = [p for folder in ("test_files", "charset_files") for p in (PYDICOM_DATA / folder).rglob("*")]
    return sorted(p for p in files if p.is_file())

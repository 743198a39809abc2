"""Tests for pacs_workbench.dicom.read: sniffing, tolerant reading, fast path vs pydicom."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from pacs_workbench.dicom import read as dicomio
from pacs_workbench.dicom.read import (
    DicomReadError,
    EmptyFileError,
    NotDicomError,
    TruncatedDicomError,
    UnidentifiedDicomError,
)

KEYWORDS = [
    "SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName",
    "PatientBirthDate", "Modality", "StudyDate", "StudyDescription", "Manufacturer", "SliceThickness",
    "PixelSpacing", "KVP", "ConvolutionKernel", "Rows", "Columns", "SeriesNumber", "InstanceNumber",
    "ImageType", "ImagePositionPatient", "ImageOrientationPatient", "SliceLocation", "NumberOfFrames",
    "ContrastBolusAgent", "BurnedInAnnotation",
]  # fmt: skip
KEYWORD_TAGS = dicomio.tags_for_keywords(KEYWORDS)
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
        scan = dicomio.scan_header(handle, size, KEYWORD_TAGS.values()) if size else None
        if scan is None:
            return None
        try:
            scan.validate()
        except DicomReadError as error:
            return ("error", type(error).__name__, error.message)
        values = scan.values()
    return {k: values.get(t) for k, t in KEYWORD_TAGS.items()}


def slow_values(path: Path, *, specific: bool = True) -> dict | tuple:
    try:
        ds = dicomio.read_header(path, specific_tags=list(KEYWORD_TAGS.values()) if specific else None)
    except DicomReadError as error:
        return ("error", type(error).__name__, error.message)
    return dicomio.dataset_values(ds, KEYWORD_TAGS)


def pydicom_files() -> list[Path]:
    files = [p for folder in ("test_files", "charset_files") for p in (PYDICOM_DATA / folder).rglob("*")]
    return sorted(p for p in files if p.is_file())


# --- sniffing ----------------------------------------------------------------------------------


def test_sniff_recognizes_encodings_and_rejects_other_bytes(tmp_path: Path) -> None:
    part10 = tmp_path / "a.dcm"
    write_ct(part10)
    assert dicomio.sniff_dicom(part10.read_bytes()[:132]) == "part10"
    no_meta_le = bundled("ExplVR_LitEndNoMeta.dcm")
    no_meta_be = bundled("ExplVR_BigEndNoMeta.dcm")
    assert dicomio.sniff_dicom(no_meta_le.read_bytes()[:132]) == "explicit_le"
    assert dicomio.sniff_dicom(no_meta_be.read_bytes()[:132]) == "explicit_be"
    implicit = b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100"
    assert dicomio.sniff_dicom(implicit) == "implicit_le"
    assert dicomio.sniff_dicom(b"hello world, this is not DICOM" * 10) is None
    assert dicomio.sniff_dicom(b"") is None
    assert dicomio.sniff_dicom(b"\x08\x00") is None
    # Group 0008 with a huge implicit length is not a plausible first element.
    assert dicomio.sniff_dicom(b"\x08\x00\x05\x00\xff\xff\xff\x7f" + bytes(200)) is None
    assert dicomio.is_dicom_file(part10)
    assert not dicomio.is_dicom_file(tmp_path / "missing.dcm")


# --- read_header -------------------------------------------------------------------------------


def test_read_header_reads_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    written = write_ct(path)
    ds = dicomio.read_header(path)
    assert ds.SOPInstanceUID == written.SOPInstanceUID
    assert "PixelData" not in ds
    values = dicomio.dataset_values(ds, KEYWORD_TAGS)
    assert values["PixelSpacing"] == ["0.5", "0.75"]
    assert values["Rows"] == 8
    assert values["ConvolutionKernel"] == ["B70f", "3"]
    assert values["NumberOfFrames"] is None


def test_empty_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with pytest.raises(EmptyFileError, match="empty file"):
        dicomio.read_header(path)
    with pytest.raises(EmptyFileError):
        dicomio.read_tag_values(path, [0x00080018])


def test_random_bytes_are_not_dicom_even_when_they_start_like_a_data_set(tmp_path: Path) -> None:
    rng = random.Random(7)
    plain = tmp_path / "noise.bin"
    plain.write_bytes(bytes(rng.randrange(256) for _ in range(4000)))
    with pytest.raises(NotDicomError, match="no DICM preamble and no valid group"):
        dicomio.read_header(plain)
    # Bytes that pass the sniff (an implicit VR (0008,0005) element) but carry no
    # instance identity must not be forced into an instance.
    lookalike = tmp_path / "lookalike.bin"
    lookalike.write_bytes(
        b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100" + bytes(rng.randrange(256) for _ in range(4000))
    )
    with pytest.raises(DicomReadError) as caught:
        dicomio.read_header(lookalike)
    assert caught.value.kind in {"not_dicom", "truncated", "unreadable"}


def test_forced_read_of_a_bare_data_set_works(tmp_path: Path) -> None:
    ds = dicomio.read_header(bundled("ExplVR_LitEndNoMeta.dcm"))
    assert ds.SOPInstanceUID == "1.2.333.4444.5.6.7.8"
    ds = dicomio.read_header(bundled("ExplVR_BigEndNoMeta.dcm"))
    assert ds.SOPInstanceUID


def test_truncated_files_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    write_ct(path)
    data = path.read_bytes()
    cut_pixels = tmp_path / "cut_pixels.dcm"
    cut_pixels.write_bytes(data[:-40])
    with pytest.raises(TruncatedDicomError, match="Pixel Data needs 128 bytes but only 88 remain"):
        dicomio.read_header(cut_pixels)
    with pytest.raises(TruncatedDicomError, match="Pixel Data"):
        dicomio.read_tag_values(cut_pixels, [0x00080018])
    cut_header = tmp_path / "cut_header.dcm"
    cut_header.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedDicomError, match="truncated"):
        dicomio.read_header(cut_header)
    # pydicom itself ignores a partial element header at the end of a data set.
    offset = data.index(b"\xe0\x7f\x10\x00")  # the Pixel Data tag
    cut_in_tag = tmp_path / "cut_in_tag.dcm"
    cut_in_tag.write_bytes(data[: offset + 5])
    with pytest.raises(TruncatedDicomError, match="ends inside an element header"):
        dicomio.read_header(cut_in_tag)
    # pydicom's own cut files.
    with pytest.raises(TruncatedDicomError):
        dicomio.read_header(bundled("MR_truncated.dcm"))
    with pytest.raises(TruncatedDicomError):
        dicomio.read_header(bundled("rtplan_truncated.dcm"))


def test_part10_file_without_identity_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(UnidentifiedDicomError, match="without a valid"):
        dicomio.read_header(bundled("meta_missing_tsyntax.dcm"))


def test_error_messages_never_quote_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "Doe_Jane_MRN0042"
    folder.mkdir()
    path = folder / "Doe_Jane.dcm"
    write_ct(path)
    data = path.read_bytes()
    for cut in range(200, len(data), 97):
        path.write_bytes(data[:cut])
        try:
            dicomio.read_header(path, specific_tags=list(KEYWORD_TAGS.values()))
        except DicomReadError as error:
            assert "Doe" not in error.message and "MRN0042" not in error.message
    assert logging.getLogger("pydicom").propagate is False


# --- fast path agrees with pydicom -------------------------------------------------------------


@pytest.mark.parametrize(
    "transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_fast_path_matches_pydicom_on_synthetic_files(tmp_path: Path, transfer_syntax: str) -> None:
    path = tmp_path / "ct.dcm"
    write_ct(path, transfer_syntax=transfer_syntax, patient_name="Müller^Zoë", charset="ISO_IR 192")
    fast = fast_values(path)
    slow = slow_values(path)
    assert isinstance(slow, dict)
    assert slow["PatientName"] == "Müller^Zoë"
    if transfer_syntax == ExplicitVRBigEndian:
        assert fast is None  # left to pydicom
    else:
        assert fast == slow


def test_fast_path_matches_pydicom_on_pydicom_test_files() -> None:
    n_fast = 0
    for path in pydicom_files():
        fast = fast_values(path)
        slow = slow_values(path)
        if fast is not None:
            n_fast += 1
            assert fast == slow, path.name
        # Reading only some tags never changes the verdict.
        full = slow_values(path, specific=False)
        assert isinstance(full, tuple) == isinstance(slow, tuple), path.name
    assert n_fast > 100


@pytest.mark.parametrize(
    "name", ["rtplan.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "UN_sequence.dcm", "reportsi.dcm"]
)
def test_fast_path_matches_pydicom_on_every_truncation(tmp_path: Path, name: str) -> None:
    data = bundled(name).read_bytes()
    path = tmp_path / "cut.dcm"
    step = max(1, len(data) // 150)
    n_errors = 0
    for cut in [*range(128, len(data), step), len(data) - 1]:
        path.write_bytes(data[:cut])
        fast = fast_values(path)
        slow = slow_values(path)
        if fast is not None:
            assert fast == slow, cut
        n_errors += isinstance(slow, tuple)
    assert n_errors > 0


# --- values ------------------------------------------------------------------------------------


def test_to_python_gives_plain_values() -> None:
    ds = Dataset()
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.InstanceNumber = "12"
    ds.PatientName = "Doe^Jane"
    ds.SOPInstanceUID = "1.2.3"
    item = Dataset()
    item.CodeValue = "X"
    ds.RequestAttributesSequence = Sequence([item])
    assert dicomio.to_python(ds["PixelSpacing"].value) == [0.5, 0.5]
    assert dicomio.to_python(ds["InstanceNumber"].value) == 12
    assert type(dicomio.to_python(ds["InstanceNumber"].value)) is int
    assert dicomio.to_python(ds["PatientName"].value) == "Doe^Jane"
    assert type(dicomio.to_python(ds["SOPInstanceUID"].value)) is str
    assert dicomio.to_python(ds["RequestAttributesSequence"].value) == [{"CodeValue": "X"}]
    assert dicomio.to_python(b"\x00\x01") == "AAE="
    assert dicomio.to_python(np.float32(1.5)) == 1.5
    assert dicomio.to_python(None) is None


def test_raw_to_python_converts_binary_and_delegates_the_rest() -> None:
    assert dicomio.raw_to_python(0x00280010, "US", b"\x00\x02") == 512
    assert dicomio.raw_to_python(0x00280010, "US", b"\x00\x02", is_little_endian=False) == 2
    assert dicomio.raw_to_python(0x00280010, "US", b"\x01\x00\x02\x00") == [1, 2]
    assert dicomio.raw_to_python(0x00180050, "DS", b"1.25 ") == "1.25 "
    assert dicomio.raw_to_python(0x00080008, "CS", b"A\\B") == ["A", "B"]
    assert dicomio.raw_to_python(0x00280010, None, b"\x08\x00", is_implicit_vr=True) == 8
    latin = "Müller^Hans".encode("latin-1")
    assert dicomio.raw_to_python(0x00100010, "PN", latin, encodings=["latin_1"]) == "Müller^Hans"
    assert dicomio.raw_to_python(0x00100010, "PN", b"") is None


def test_read_values_by_keyword(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    written = write_ct(path)
    values = dicomio.read_values(path, ["SOPInstanceUID", "Rows", "PatientAge"])
    assert values == {"SOPInstanceUID": written.SOPInstanceUID, "Rows": 8, "PatientAge": None}
    with pytest.raises(KeyError):
        dicomio.tags_for_keywords(["NotAKeyword"])


def test_unreadable_path_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="unreadable"):
        dicomio.read_tag_values(tmp_path / "missing.dcm", [0x00080018])
    if os.geteuid() != 0:  # root reads anything
        path = tmp_path / "locked.dcm"
        write_ct(path)
        path.chmod(0)
        with pytest.raises(DicomReadError, match="Permission denied"):
            dicomio.read_header(path)

"""Tolerant reading with pydicom (pacs_workbench.dicom.read): errors, truncation, identity, value conversion."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacs_workbench.dicom import read as dicomio
from pacs_workbench.dicom.read import (
    DicomReadError,
    EmptyFileError,
    NotDicomError,
    TruncatedDicomError,
    UnidentifiedDicomError,
)
from pacs_workbench.dicom.values import dataset_values, read_tag_values
from tests.dicom.fixtures import KEYWORD_TAGS, bundled, write_ct

# --- read_header -------------------------------------------------------------------------------


def test_read_header_reads_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    written = write_ct(path)
    ds = dicomio.read_header(path)
    assert ds.SOPInstanceUID == written.SOPInstanceUID
    assert "PixelData" not in ds
    values = dataset_values(ds, KEYWORD_TAGS)
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
        read_tag_values(path, [0x00080018])


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
        read_tag_values(cut_pixels, [0x00080018])
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
    assert dicomio.raw_to_python(0x00180050, "DS", b"1.25 ") == "1.25"  # the padding is not the value
    assert dicomio.raw_to_python(0x00080008, "CS", b"A\\B") == ["A", "B"]
    assert dicomio.raw_to_python(0x00280010, None, b"\x08\x00", is_implicit_vr=True) == 8
    latin = "Müller^Hans".encode("latin-1")
    assert dicomio.raw_to_python(0x00100010, "PN", latin, encodings=["latin_1"]) == "Müller^Hans"
    assert dicomio.raw_to_python(0x00100010, "PN", b"") is None


def test_unreadable_path_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="unreadable"):
        read_tag_values(tmp_path / "missing.dcm", [0x00080018])
    if os.geteuid() != 0:  # root reads anything
        path = tmp_path / "locked.dcm"
        write_ct(path)
        path.chmod(0)
        with pytest.raises(DicomReadError, match="Permission denied"):
            dicomio.read_header(path)

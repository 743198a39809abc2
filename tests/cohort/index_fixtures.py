"""What the index tests share: small CT studies written to disk, pydicom's odd sample files, readers of the index."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "MRN0042"

# pydicom's own odd files: no preamble, deflated, big endian, compressed, broken, DICOMDIR.
PYDICOM_SAMPLE = [
    "CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
    "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm", "MR_truncated.dcm",
    "ExplVR_BigEnd.dcm", "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "JPEG2000.dcm",
    "JPEG-lossy.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg.dcm", "SC_rgb_small_odd.dcm", "UN_sequence.dcm",
    "badVR.dcm", "empty_charset_LEI.dcm", "image_dfl.dcm", "liver_1frame.dcm", "meta_missing_tsyntax.dcm",
    "nested_priv_SQ.dcm", "no_meta.dcm", "no_meta_group_length.dcm", "priv_SQ.dcm", "reportsi.dcm",
    "rtdose.dcm", "rtdose_rle.dcm", "rtplan.dcm", "rtplan_truncated.dcm", "rtstruct.dcm", "test-SR.dcm",
    "waveform_ecg.dcm", "693_J2KI.dcm", "rtplan.dump", "README.txt", "zipMR.gz",
]  # fmt: skip
PYDICOM_DATA = Path(pydicom.data.__file__).parent / "test_files"
# Files of the sample that must not become instances.
PYDICOM_ERRORS = {
    "MR_truncated.dcm", "rtplan_truncated.dcm", "no_meta.dcm", "meta_missing_tsyntax.dcm",
    "empty_charset_LEI.dcm", "nested_priv_SQ.dcm", "rtplan.dump", "README.txt", "zipMR.gz",
}  # fmt: skip


def write_ct(
    path: Path,
    *,
    study: str,
    series: str,
    number: int,
    z: float,
    series_number: int = 2,
    contrast: str | None = None,
    implicit: bool = False,
) -> Dataset:
    """A 4x4 axial CT slice at height ``z``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = "20210304"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = "CT"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = f"AXIAL {series_number}"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.SliceThickness = "2.5"
    ds.KVP = "120"
    ds.ConvolutionKernel = "LUNG"
    if contrast is not None:
        ds.ContrastBolusAgent = contrast
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [-10.0, -10.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 4
    ds.Columns = 4
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.zeros((4, 4), np.int16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return ds


def make_study(folder: Path, *, n_slices: int = 4) -> dict[str, str]:
    """Two CT series of one study: plain (z step 2.5) and with contrast."""
    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    series = {"plain": generate_uid(), "contrast": generate_uid()}
    for i in range(n_slices):
        write_ct(folder / f"plain_{i:03d}.dcm", study=study, series=series["plain"], number=i + 1, z=-2.5 * i)
        write_ct(
            folder / f"contrast_{i:03d}.dcm", study=study, series=series["contrast"], number=i + 1,
            z=-2.5 * i, series_number=3, contrast="IOHEXOL", implicit=i % 2 == 1,
        )  # fmt: skip
    return {"study": study, **series}


def all_regular_files(root: Path) -> set[str]:
    """Every file path a crawl must account for (followed links, loops walked once)."""
    found: set[str] = set()
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in files:
            path = os.path.join(folder, name)
            if os.path.isfile(path) or os.path.islink(path):
                found.add(path)
        for name in dirs:
            path = os.path.join(folder, name)
            if os.path.islink(path) and not os.path.exists(path):
                found.add(path)
    return found


def query(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    return con.sql(sql).to_arrow_table().to_pylist()


def read_rows(out: Path) -> tuple[pa.Table, pa.Table]:
    instances = pq.read_table(out / "instances.parquet").sort_by("path")
    errors = pq.read_table(out / "errors.parquet").sort_by("path")
    return instances, errors


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder of good, odd and bad files."""
    root = tmp_path / "src"
    uids = make_study(root / "Doe_Jane_MRN0042" / "20210304_ACC0001")
    odd = root / "pydicom"
    odd.mkdir()
    for name in PYDICOM_SAMPLE:  # bundled with pydicom (get_testdata_file may download)
        shutil.copy(PYDICOM_DATA / name, odd / name)
    shutil.copy(PYDICOM_DATA / "dicomdirtests" / "DICOMDIR", odd / "DICOMDIR")
    rng = random.Random(1)
    bad = root / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not an image\n")
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "noise.bin").write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    (bad / "lookalike.bin").write_bytes(
        b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100" + bytes(rng.randrange(256) for _ in range(3000))
    )
    good = (root / "Doe_Jane_MRN0042" / "20210304_ACC0001" / "plain_000.dcm").read_bytes()
    (bad / "truncated.dcm").write_bytes(good[: len(good) - 20])
    (bad / "truncated_header.dcm").write_bytes(good[:400])
    hidden = root / ".hidden"
    hidden.mkdir()
    shutil.copy(root / "Doe_Jane_MRN0042" / "20210304_ACC0001" / "plain_001.dcm", hidden / ".copy.dcm")
    links = root / "links"
    links.mkdir()
    os.symlink(root / "Doe_Jane_MRN0042" / "20210304_ACC0001" / "plain_002.dcm", links / "to_file.dcm")
    os.symlink(root, links / "loop")  # a folder link back to the root: walked once
    os.symlink(root / "missing.dcm", links / "broken.dcm")
    return root, uids

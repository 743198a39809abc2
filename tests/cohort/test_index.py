"""Tests for pacs_workbench.cohort.index: crawl, rerun, parallel runs, DuckDB views, CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from pacs_workbench.cli import main as cli_main
from pacs_workbench.cohort import index
from pacs_workbench.cohort.index import (
    ERROR_SCHEMA,
    INSTANCE_SCHEMA,
    UnsupportedSourceError,
    build_index,
    connect_index,
    dataset_to_row,
    read_instance,
)
from pacs_workbench.dicom.read import DicomReadError
from tests.orthanc import OrthancServer, free_port, orthanc_server

__all__ = ["orthanc_server"]  # the fixture is used by name

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


# --- crawl -------------------------------------------------------------------------------------


def test_every_file_lands_in_exactly_one_table(mixed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, _ = mixed
    out = tmp_path / "index"
    summary = build_index([root], out, workers=1, progress=False)
    instances, errors = read_rows(out)
    inst_paths = set(instances.column("path").to_pylist())
    err_paths = set(errors.column("path").to_pylist())
    assert not inst_paths & err_paths
    assert inst_paths | err_paths == all_regular_files(root)
    assert instances.num_rows == len(inst_paths) and errors.num_rows == len(err_paths)
    assert summary["files_seen"] == summary["instances"] + summary["errors"] == len(inst_paths | err_paths)
    assert summary["instances"] == instances.num_rows
    assert summary["read"] == summary["new"] == summary["files_seen"]
    assert summary["previous_index"] == "none"
    assert instances.schema.equals(INSTANCE_SCHEMA) and errors.schema.equals(ERROR_SCHEMA)

    by_name = {Path(r["path"]).name: r["error"] for r in errors.to_pylist()}
    assert by_name["empty.dcm"] == "empty file"
    assert by_name["notes.txt"].startswith("not a DICOM file (no DICM preamble and no valid group")
    assert by_name["noise.bin"].startswith("not a DICOM file")
    assert "lookalike.bin" in by_name
    assert by_name["truncated.dcm"].startswith("truncated: Pixel Data needs")
    assert by_name["truncated_header.dcm"].startswith("truncated")
    assert by_name["broken.dcm"].startswith("unreadable: broken symbolic link")
    for name in PYDICOM_ERRORS:
        assert name in by_name, name
    inst_names = {Path(p).name for p in inst_paths}
    for name in set(PYDICOM_SAMPLE) - PYDICOM_ERRORS:
        assert name in inst_names, name
    # Hidden files, followed links; the link loop adds nothing.
    assert ".copy.dcm" in inst_names and "to_file.dcm" in inst_names
    assert not any("/loop/" in p for p in inst_paths | err_paths)
    # Error messages and kinds never hold a path.
    assert all(str(root) not in e for e in errors.column("error").to_pylist())
    assert set(summary["errors_by_kind"]) <= {"empty", "not_dicom", "truncated", "invalid", "unreadable"}
    assert sum(summary["errors_by_kind"].values()) == summary["errors"]
    assert summary["read_with_pydicom"] > 0  # big endian, deflated, no preamble...
    # Nothing identifying in the summary.
    text = json.dumps(summary)
    assert PATIENT_ID not in text and "Doe" not in text


def test_rows_hold_typed_values(mixed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, uids = mixed
    out = tmp_path / "index"
    build_index([root], out, workers=1, progress=False)
    instances, _ = read_rows(out)
    rows = {Path(r["path"]).name: r for r in instances.to_pylist()}
    plain = rows["plain_001.dcm"]
    assert plain["SeriesInstanceUID"] == uids["plain"] and plain["StudyInstanceUID"] == uids["study"]
    assert plain["PatientName"] == PATIENT_NAME and plain["PatientID"] == PATIENT_ID
    assert plain["PixelSpacing"] == [0.5, 0.5]
    assert plain["ImagePositionPatient"] == [-10.0, -10.0, -2.5]
    assert plain["ImageOrientationPatient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert plain["ImageType"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert plain["SliceThickness"] == 2.5 and plain["KVP"] == 120.0
    assert plain["Rows"] == 4 and plain["InstanceNumber"] == 2 and plain["SeriesNumber"] == 2
    assert plain["contrast"] is False and plain["ContrastBolusAgent"] is None
    assert plain["TransferSyntaxUID"] == ExplicitVRLittleEndian
    assert plain["file_size"] == (root / "Doe_Jane_MRN0042" / "20210304_ACC0001" / "plain_001.dcm").stat().st_size
    implicit = rows["contrast_001.dcm"]
    assert implicit["contrast"] is True and implicit["ContrastBolusAgent"] == "IOHEXOL"
    assert implicit["TransferSyntaxUID"] == ImplicitVRLittleEndian
    assert implicit["PixelSpacing"] == [0.5, 0.5]
    # Files pydicom reads (big endian, deflated, no preamble) give the same kinds of values.
    assert rows["MR_small_bigendian.dcm"]["Rows"] == 64
    assert rows["image_dfl.dcm"]["SOPInstanceUID"]
    assert rows["ExplVR_LitEndNoMeta.dcm"]["SOPInstanceUID"] == "1.2.333.4444.5.6.7.8"
    assert rows["ExplVR_LitEndNoMeta.dcm"]["TransferSyntaxUID"] is None
    # A DICOMDIR identifies itself through its File Meta only.
    assert rows["DICOMDIR"]["SOPClassUID"] == "1.2.840.10008.1.3.10"


def test_rerun_reads_only_changed_files(mixed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, uids = mixed
    out = tmp_path / "index"
    first = build_index([root], out, workers=1, progress=False)
    series_dir = root / "Doe_Jane_MRN0042" / "20210304_ACC0001"
    changed = series_dir / "plain_003.dcm"
    write_ct(changed, study=uids["study"], series=uids["plain"], number=99, z=-7.5)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # coarse clocks
    added = series_dir / "plain_004.dcm"
    write_ct(added, study=uids["study"], series=uids["plain"], number=5, z=-10.0)
    (series_dir / "plain_000.dcm").unlink()
    (root / "bad" / "notes.txt").unlink()  # an error row disappears too

    second = build_index([root], out, workers=1, progress=False)
    assert second["previous_index"] == "reused"
    assert second["read"] == 2 and second["changed"] == 1 and second["new"] == 1
    assert second["removed"] == 2
    assert second["skipped_unchanged"] == first["files_seen"] - 2 - 1
    assert second["files_seen"] == first["files_seen"] - 2 + 1  # two gone, one added
    instances, errors = read_rows(out)
    assert instances.num_rows + errors.num_rows == second["files_seen"]
    rows = {Path(r["path"]).name: r for r in instances.to_pylist()}
    assert rows["plain_003.dcm"]["InstanceNumber"] == 99
    assert rows["plain_004.dcm"]["InstanceNumber"] == 5
    assert "plain_000.dcm" not in rows
    assert "notes.txt" not in {Path(p).name for p in errors.column("path").to_pylist()}

    third = build_index([root], out, workers=1, progress=False)
    assert third["read"] == 0 and third["skipped_unchanged"] == third["files_seen"]
    again_instances, again_errors = read_rows(out)
    assert again_instances.equals(instances) and again_errors.equals(errors)


def test_incompatible_previous_index_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_study(root, n_slices=2)
    out = tmp_path / "index"
    out.mkdir()
    pq.write_table(pa.table({"path": ["x"]}), out / "instances.parquet")
    pq.write_table(pa.table({"path": ["x"]}), out / "errors.parquet")
    summary = build_index([root], out, workers=1, progress=False)
    assert summary["previous_index"] == "incompatible"
    assert summary["read"] == summary["files_seen"] == 4


def test_empty_folder_gives_empty_tables_with_the_schema(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    summary = build_index([tmp_path / "src"], tmp_path / "index", workers=1, progress=False)
    assert summary["files_seen"] == 0
    instances, errors = read_rows(tmp_path / "index")
    assert instances.num_rows == 0 and instances.schema.equals(INSTANCE_SCHEMA)
    assert errors.num_rows == 0 and errors.schema.equals(ERROR_SCHEMA)
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["errors.parquet", "instances.parquet"]


def test_output_folder_inside_the_source_is_not_crawled(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_study(root, n_slices=2)
    summary = build_index([root], root / "index", workers=1, progress=False)
    assert summary["files_seen"] == 4
    summary = build_index([root], root / "index", workers=1, progress=False)
    assert summary["files_seen"] == 4 and summary["read"] == 0
    with pytest.raises(ValueError, match="cannot be one of the sources"):
        build_index([root], root, workers=1, progress=False)


def test_temp_files_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_study(root, n_slices=1)
    out = tmp_path / "index"
    out.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid is free now
    stale = out / f".instances.{finished.pid}-abcd1234.tmp"
    stale.write_bytes(b"partial")
    live = out / f".instances.{os.getpid()}-abcd1234.tmp"  # a run in progress elsewhere
    live.write_bytes(b"partial")
    build_index([root], out, workers=1, progress=False)
    assert not stale.exists() and live.exists()


def test_unsupported_and_missing_sources_fail_before_writing(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedSourceError, match="unsupported PACS source"):
        build_index(["dicomweb+ftp://127.0.0.1:8042/dicom-web"], tmp_path / "index", progress=False)
    with pytest.raises(ValueError, match="without a host"):
        build_index(["dicomweb+http:///dicom-web"], tmp_path / "index", progress=False)
    with pytest.raises(FileNotFoundError):
        build_index([tmp_path / "nowhere"], tmp_path / "index", progress=False)
    assert not (tmp_path / "index").exists()


def test_single_files_and_overlapping_sources_are_indexed_once(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_study(root, n_slices=2)
    one = root / "plain_000.dcm"
    summary = build_index([root, one, root], tmp_path / "index", workers=1, progress=False)
    assert summary["files_seen"] == 4
    instances, _ = read_rows(tmp_path / "index")
    assert instances.num_rows == 4


# --- rows from data sets -----------------------------------------------------------------------


def test_dataset_to_row_matches_the_file_reader(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    ds = write_ct(path, study=generate_uid(), series=generate_uid(), number=3, z=1.5, contrast="NONE")
    from_file = read_instance(path)
    in_memory = dataset_to_row(ds, str(path), from_file["file_size"], from_file["mtime_ns"])
    assert in_memory == from_file
    assert from_file["contrast"] is False  # "NONE" is no contrast
    del ds.file_meta
    without_meta = dataset_to_row(ds, "dicomweb+http://pacs/instances/1")
    assert without_meta["TransferSyntaxUID"] is None
    assert without_meta["SOPInstanceUID"] == from_file["SOPInstanceUID"]
    anonymous = Dataset()
    anonymous.PatientID = "X"
    with pytest.raises(DicomReadError, match="without a valid"):
        dataset_to_row(anonymous, "x")


def test_contrast_flag() -> None:
    assert index._has_contrast("IOHEXOL", None, None)
    assert not index._has_contrast("NONE", "", None)
    assert not index._has_contrast(" no ", None, "0")
    assert index._has_contrast(None, "IV", None)
    assert index._has_contrast(None, None, "80")
    assert not index._has_contrast(None, None, None)


# --- parallel ----------------------------------------------------------------------------------


def test_two_workers_give_the_same_rows(mixed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, _ = mixed
    build_index([root], tmp_path / "one", workers=1, progress=False)
    summary = build_index([root], tmp_path / "two", workers=2, chunk_size=8, progress=False)
    assert summary["read"] == summary["files_seen"]
    one, two = read_rows(tmp_path / "one"), read_rows(tmp_path / "two")
    assert one[0].equals(two[0]) and one[1].equals(two[1])


@pytest.mark.slow
def test_dask_cluster_gives_the_same_rows(mixed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    from distributed import LocalCluster

    root, _ = mixed
    build_index([root], tmp_path / "local", workers=1, progress=False)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        summary = build_index([root], tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False)
    assert summary["read"] == summary["files_seen"]
    local, dask = read_rows(tmp_path / "local"), read_rows(tmp_path / "dask")
    assert local[0].equals(dask[0]) and local[1].equals(dask[1])


# --- DuckDB views ------------------------------------------------------------------------------


def test_views_count_studies_series_and_extent(tmp_path: Path) -> None:
    root = tmp_path / "src"
    first = make_study(root / "a", n_slices=4)
    second = make_study(root / "b", n_slices=3)
    (root / "junk.txt").write_text("x")
    out = tmp_path / "index"
    build_index([root], out, workers=1, progress=False)
    con = connect_index(out)
    assert con.execute("SELECT count(*) FROM instances").fetchall() == [(14,)]
    assert con.execute("SELECT count(*) FROM errors").fetchall() == [(1,)]
    studies = {r["StudyInstanceUID"]: r for r in query(con, "SELECT * FROM studies")}
    assert set(studies) == {first["study"], second["study"]}
    study = studies[first["study"]]
    assert study["n_series"] == 2 and study["n_instances"] == 8 and study["n_files"] == 8
    assert study["modalities"] == ["CT"] and study["manufacturers"] == ["GE MEDICAL SYSTEMS"]
    assert study["PatientID"] == PATIENT_ID and study["AccessionNumber"] == "ACC0001"
    assert str(study["study_date"]) == "2021-03-04"
    assert study["contrast"] is True
    series = {r["SeriesInstanceUID"]: r for r in query(con, "SELECT * FROM series")}
    assert len(series) == 4
    plain = series[first["plain"]]
    assert plain["n_instances"] == 4 and plain["n_frames"] == 4
    assert plain["StudyInstanceUID"] == first["study"]
    assert plain["SeriesNumber"] == 2 and plain["SeriesDescription"] == "AXIAL 2"
    assert plain["extent_mm"] == pytest.approx(7.5)
    assert plain["min_slice_location"] == pytest.approx(-7.5) and plain["max_slice_location"] == 0.0
    assert plain["contrast"] is False and series[first["contrast"]]["contrast"] is True
    assert plain["PixelSpacing"] == [0.5, 0.5]
    assert Path(plain["first_path"]).name == "plain_000.dcm"
    assert series[second["plain"]]["extent_mm"] == pytest.approx(5.0)
    with pytest.raises(FileNotFoundError):
        connect_index(tmp_path / "nothing")


# --- command line ------------------------------------------------------------------------------


def test_cli_indexes_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_study(root, n_slices=2)
    (root / "readme.txt").write_text("hello")
    out = tmp_path / "index"
    result = subprocess.run(
        [sys.executable, "-m", "pacs_workbench", "index", str(root), "--out", str(out), "--workers", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_seen"] == 5 and summary["instances"] == 4 and summary["errors"] == 1
    assert PATIENT_ID not in result.stdout + result.stderr
    assert "Doe" not in result.stdout + result.stderr
    assert (out / "instances.parquet").is_file() and (out / "errors.parquet").is_file()


# --- with the synthetic extract ----------------------------------------------------------------


@pytest.mark.slow
def test_synthetic_extract_is_fully_indexed(tmp_path: Path) -> None:
    synth = pytest.importorskip("pacs_workbench.synth")
    if not hasattr(synth, "generate"):
        pytest.skip("pacs_workbench.synth.generate is not available")
    synth.generate(tmp_path / "extract", patients=2)
    dicom = tmp_path / "extract" / "dicom"
    out = tmp_path / "index"
    summary = build_index([dicom], out, workers=2, progress=False)
    assert summary["errors"] == 0
    assert summary["instances"] == summary["files_seen"] == len(all_regular_files(dicom))
    con = connect_index(out)
    n_patients = con.execute("SELECT count(DISTINCT PatientID) FROM studies").fetchall()
    assert n_patients == [(2,)]
    modalities = {m for (ms,) in con.execute("SELECT modalities FROM studies").fetchall() for m in ms}
    assert "CT" in modalities


# --- from a PACS (Orthanc) ---------------------------------------------------------------------

# Columns a PACS source must give exactly as the folder crawl does.
PACS_COLUMNS = [
    "SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientAge",
    "AccessionNumber", "Modality", "StudyDate", "SeriesDescription", "Manufacturer", "ConvolutionKernel",
    "SliceThickness", "ImageType", "SeriesNumber", "InstanceNumber", "contrast", "ContrastBolusAgent",
]  # fmt: skip


def _instances(out: Path) -> pa.Table:
    return pq.read_table(out / "instances.parquet").sort_by("SOPInstanceUID")


@pytest.fixture(scope="module")
def folder_index(orthanc_server: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files loaded into Orthanc, indexed from their folder."""
    assert orthanc_server.data_dir is not None
    out = tmp_path_factory.mktemp("folder_index")
    build_index([orthanc_server.data_dir / "dicom"], out, workers=1, progress=False)
    return out


def test_cli_indexes_a_dicomweb_pacs_like_the_folder(
    orthanc_server: OrthancServer, folder_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pacs_index"
    assert cli_main(["index", orthanc_server.dicomweb_url, "--out", str(out), "--workers", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    folder, pacs = _instances(folder_index), _instances(out)
    assert summary["pacs_instances"] == summary["instances"] == folder.num_rows == len(orthanc_server.uploaded)
    assert summary["files_seen"] == 0 and summary["errors"] == 0
    assert pacs.schema.equals(INSTANCE_SCHEMA, check_metadata=False)
    for column in PACS_COLUMNS:
        assert pacs.column(column).to_pylist() == folder.column(column).to_pylist(), column
    assert all(p.startswith(orthanc_server.dicomweb_url.removeprefix("dicomweb+")) for p in pacs["path"].to_pylist())
    # The DuckDB views see the same studies and series.
    views = "SELECT count(*), sum(n_instances) FROM series"
    assert connect_index(out).execute(views).fetchall() == connect_index(folder_index).execute(views).fetchall()
    # A rerun queries the PACS again: nothing doubled, nothing counted as removed.
    again = build_index([orthanc_server.dicomweb_url], out, workers=1, progress=False)
    assert again["instances"] == summary["instances"] and again["removed"] == 0


def test_folder_and_dimse_sources_in_one_index(
    orthanc_server: OrthancServer, folder_index: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    make_study(extra, n_slices=2)  # 4 instances
    (extra / "notes.txt").write_text("not DICOM")
    out = tmp_path / "mixed"
    summary = build_index([extra, orthanc_server.dimse_url], out, workers=1, progress=False)
    folder = _instances(folder_index)
    assert summary["files_seen"] == 5 and summary["errors"] == 1 and summary["pacs_instances"] == folder.num_rows
    assert summary["instances"] + summary["errors"] == summary["files_seen"] + summary["pacs_instances"]
    mixed = _instances(out)
    from_pacs = mixed.filter(pc.starts_with(mixed["path"], "dimse://"))
    for column in ("SOPInstanceUID", "SeriesInstanceUID", "PatientID", "Modality", "StudyDate", "ConvolutionKernel"):
        assert from_pacs.column(column).to_pylist() == folder.column(column).to_pylist(), column
    # A rerun reads no file again; the PACS part is queried again.
    again = build_index([extra, orthanc_server.dimse_url], out, workers=1, progress=False)
    assert again["read"] == 0 and again["skipped_unchanged"] == 5 and again["instances"] == summary["instances"]


def test_unreachable_pacs_leaves_the_previous_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "src"
    make_study(root, n_slices=2)
    out = tmp_path / "index"
    build_index([root], out, workers=1, progress=False)
    before = (out / "instances.parquet").read_bytes()
    down = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(requests.ConnectionError):
        build_index([root, down], out, workers=1, progress=False)
    assert (out / "instances.parquet").read_bytes() == before
    assert cli_main(["index", str(root), down, "--out", str(out), "--workers", "1"]) == 2
    assert "PACS query failed (ConnectionError)" in capsys.readouterr().err
    assert (out / "instances.parquet").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["errors.parquet", "instances.parquet"]

"""Tests for pacs_workbench.cohort.index: crawl, rerun, parallel runs, the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs_workbench.cohort.index import build_index
from pacs_workbench.cohort.index_schema import ERROR_SCHEMA, INSTANCE_SCHEMA
from pacs_workbench.cohort.index_views import connect_index
from tests.cohort.index_fixtures import (
    PATIENT_ID,
    PATIENT_NAME,
    PYDICOM_ERRORS,
    PYDICOM_SAMPLE,
    all_regular_files,
    make_study,
    mixed,
    read_rows,
    write_ct,
)

__all__ = ["mixed"]  # fixtures used by name


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


def test_single_files_and_overlapping_sources_are_indexed_once(tmp_path: Path) -> None:
    root = tmp_path / "src"
    make_study(root, n_slices=2)
    one = root / "plain_000.dcm"
    summary = build_index([root, one, root], tmp_path / "index", workers=1, progress=False)
    assert summary["files_seen"] == 4
    instances, _ = read_rows(tmp_path / "index")
    assert instances.num_rows == 4


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

"""Tests for pacs_workbench.cohort.index_sources: unsupported sources, and PACS sources (Orthanc) beside folders."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests

from pacs_workbench.cli import main as cli_main
from pacs_workbench.cohort.index import build_index
from pacs_workbench.cohort.index_schema import INSTANCE_SCHEMA
from pacs_workbench.cohort.index_sources import UnsupportedSourceError
from pacs_workbench.cohort.index_views import connect_index
from pacs_workbench.dicom.dose import DOSE_COLUMNS, XRAY_RADIATION_DOSE_SR
from tests.cohort.index_fixtures import (
    make_study,
)
from tests.orthanc import OrthancServer, free_port, orthanc_server

__all__ = ["orthanc_server"]  # fixtures used by name


def test_unsupported_and_missing_sources_fail_before_writing(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedSourceError, match="unsupported PACS source"):
        build_index(["dicomweb+ftp://127.0.0.1:8042/dicom-web"], tmp_path / "index", progress=False)
    with pytest.raises(ValueError, match="without a host"):
        build_index(["dicomweb+http:///dicom-web"], tmp_path / "index", progress=False)
    with pytest.raises(FileNotFoundError):
        build_index([tmp_path / "nowhere"], tmp_path / "index", progress=False)
    assert not (tmp_path / "index").exists()


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


def _dose_rows(table: pa.Table) -> list[tuple]:
    dose = table.filter(pc.equal(table["SOPClassUID"], XRAY_RADIATION_DOSE_SR))
    return list(zip(*(dose.column(c).to_pylist() for c in ("SOPInstanceUID", *DOSE_COLUMNS)), strict=True))


def test_dose_srs_read_from_the_dicomweb_pacs_as_from_the_folder(
    orthanc_server: OrthancServer, folder_index: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pacs_dose"
    build_index([orthanc_server.dicomweb_url], out, workers=1, progress=False)
    from_folder, from_pacs = _dose_rows(_instances(folder_index)), _dose_rows(_instances(out))
    assert len(from_folder) >= 2  # one dose SR per CT study
    assert all(ctdi > 0 and dlp > ctdi and phantom for _, ctdi, dlp, phantom, _ in from_folder)
    assert from_pacs == from_folder


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

"""Tests for pacs_workbench.dicom.net.retrieve (and its fetchers) against Orthanc: WADO-RS, C-GET, C-MOVE, resuming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pacs_workbench.cli import main
from pacs_workbench.dicom.net.retrieve import read_series_list, retrieve_series
from pacs_workbench.dicom.net.store import SeriesRef
from tests.dicom.net_fixtures import assert_same_instances, pick_series, source
from tests.orthanc import OrthancServer, orthanc_server, restart, start_orthanc

__all__ = ["orthanc_server", "source"]  # fixtures used by name


def test_read_series_list_checks_columns(tmp_path: Path) -> None:
    good = tmp_path / "c.csv"
    pd.DataFrame({"StudyInstanceUID": ["1.2", "1.2"], "SeriesInstanceUID": ["1.2.3", "1.2.3"]}).to_csv(good)
    assert read_series_list(good) == [SeriesRef("1.2", "1.2.3")]
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"StudyInstanceUID": ["1.2"]}).to_parquet(bad)
    with pytest.raises(ValueError, match="SeriesInstanceUID"):
        read_series_list(bad)


def test_wado_retrieve_is_resumable(orthanc_server: OrthancServer, source: pd.DataFrame, tmp_path: Path) -> None:
    selection = pick_series(source, 3)
    out = tmp_path / "raw"
    first = retrieve_series(orthanc_server.dicomweb_url, selection, out, progress=False)
    assert first.ok and first.fetched_series == len(selection)
    assert_same_instances(out, source, selection)
    assert json.loads((out / "retrieve_summary.json").read_text())["ok"] is True

    second = retrieve_series(orthanc_server.dicomweb_url, selection, out, progress=False)
    assert second.ok and second.already_complete == len(selection)
    assert second.fetched_instances == 0 and second.requests == 0  # not one request

    files = sorted(out.rglob("*.dcm"))
    victim = files[len(files) // 2]
    stamps = {f: f.stat().st_mtime_ns for f in files if f != victim}
    victim.unlink()
    third = retrieve_series(orthanc_server.dicomweb_url, selection, out, progress=False)
    assert third.ok and third.fetched_instances == 1 and third.fetched_series == 1
    assert victim.is_file()
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items())  # nothing else rewritten
    assert_same_instances(out, source, selection)


@pytest.mark.parametrize("method", ["get", "move"])
def test_dimse_retrieve(method: str, orthanc_server: OrthancServer, source: pd.DataFrame, tmp_path: Path) -> None:
    selection = pick_series(source, 3)
    out = tmp_path / method
    kwargs: dict[str, Any] = {"method": method, "move_port": orthanc_server.our_port, "listen_host": "127.0.0.1"}
    first = retrieve_series(orthanc_server.dimse_url, selection, out, progress=False, **kwargs)
    assert first.ok, first.missing
    assert_same_instances(out, source, selection)
    victim = sorted(out.rglob("*.dcm"))[0]
    victim.unlink()
    again = retrieve_series(orthanc_server.dimse_url, selection, out, progress=False, **kwargs)
    assert again.ok and again.fetched_instances == 1 and again.already_complete == len(selection) - 1
    assert victim.is_file()


def test_cli_retrieve_reports_missing_when_pacs_is_down(
    orthanc_server: OrthancServer, source: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A PACS of our own (this test stops it), holding a few small series of the extract.
    counts = source.groupby(["StudyInstanceUID", "SeriesInstanceUID"]).size().sort_values()
    table = counts.index[:3].to_frame(index=False)
    files = list(source.merge(table, on=["StudyInstanceUID", "SeriesInstanceUID"])["path"])
    with start_orthanc(tmp_path / "orthanc", files) as server:
        # An unusable row is reported, not dropped, and does not stop the others.
        table.loc[len(table)] = ["not-a-uid", "../../etc"]
        table.loc[len(table)] = ["1.2.3.4", "1.2.3.4.5"]  # valid, but not on the PACS
        cohort = tmp_path / "cohort.csv"
        table.to_csv(cohort, index=False)
        out = tmp_path / "raw"
        argv = ["retrieve", "--pacs", server.dicomweb_url, "--cohort", str(cohort), "--out", str(out)]
        argv += ["--retries", "1", "--backoff", "0.05", "--timeout", "10"]

        server.stop()
        assert main(argv) == 1
        report = json.loads(capsys.readouterr().out)
        assert len(report["missing"]) == len(table)
        down = [m for m in report["missing"] if m["StudyInstanceUID"] != "not-a-uid"]
        assert all(m["attempts"] == 2 and len(m["errors"]) == 2 for m in down)
        assert "ConnectionError" in down[0]["errors"][0]
        assert not list(out.rglob("*.dcm"))

        restart(server)
        assert main(argv) == 1  # the bad row stays missing; everything else arrives
        report = json.loads(capsys.readouterr().out)
        missing = {m["SeriesInstanceUID"]: m for m in report["missing"]}
        assert set(missing) == {"../../etc", "1.2.3.4.5"}
        assert "no instance" in missing["1.2.3.4.5"]["errors"][-1]
        assert report["fetched_series"] == len(table) - 2
        assert len(list(out.rglob("*.dcm"))) == len(files)
        assert not (tmp_path / "etc").exists()

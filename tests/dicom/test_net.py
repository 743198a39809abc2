"""Query and retrieve against a real Orthanc (DICOMweb and DIMSE)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
import pytest

from pacs_workbench.cli import main
from pacs_workbench.cohort.index import INSTANCE_SCHEMA
from pacs_workbench.dicom import net as pacs
from tests.orthanc import OrthancServer, free_port, orthanc_server, restart, start_orthanc

__all__ = ["orthanc_server"]  # the fixture is used by name


# --- helpers -----------------------------------------------------------------------------------


def _headers(files: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


@pytest.fixture(scope="module")
def source(orthanc_server: OrthancServer) -> pd.DataFrame:
    """What was loaded into Orthanc, one row per instance, read from the files."""
    rows = []
    for path, ds in zip(orthanc_server.uploaded, _headers(orthanc_server.uploaded), strict=True):
        rows.append(
            {
                "path": path,
                "StudyInstanceUID": ds.StudyInstanceUID,
                "SeriesInstanceUID": ds.SeriesInstanceUID,
                "SOPInstanceUID": ds.SOPInstanceUID,
                "SOPClassUID": ds.SOPClassUID,
                "SeriesDescription": str(ds.get("SeriesDescription", "")),
                "Modality": ds.Modality,
                "ConvolutionKernel": str(ds.get("ConvolutionKernel", "")) or None,
                "SliceThickness": float(ds.SliceThickness) if "SliceThickness" in ds else None,
            }
        )
    return pd.DataFrame(rows)


def _pick_series(source: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` series, the biggest first (so a CT volume is among them), plus other SOP classes."""
    counts = source.groupby(["StudyInstanceUID", "SeriesInstanceUID"]).size().sort_values(ascending=False)
    picked = list(counts.index[:1])
    by_class = source.drop_duplicates("SOPClassUID")
    for study, series in zip(by_class["StudyInstanceUID"], by_class["SeriesInstanceUID"], strict=True):
        if len(picked) < n and (study, series) not in picked:
            picked.append((study, series))
    for key in counts.index:
        if len(picked) < n and key not in picked:
            picked.append(key)
    return pd.DataFrame(picked, columns=["StudyInstanceUID", "SeriesInstanceUID"])


def _assert_same_instances(out: Path, source: pd.DataFrame, selection: pd.DataFrame) -> None:
    wanted = source.merge(selection, on=["StudyInstanceUID", "SeriesInstanceUID"])
    got = sorted(p for p in out.rglob("*.dcm"))
    assert len(got) == len(wanted)
    by_sop = dict(zip(wanted["SOPInstanceUID"], wanted["path"], strict=True))
    for file in got:
        ds = pydicom.dcmread(file)
        assert file.stem == ds.SOPInstanceUID
        assert file.parent.name == ds.SeriesInstanceUID
        assert file.parent.parent.name == ds.StudyInstanceUID
        original = pydicom.dcmread(by_sop[ds.SOPInstanceUID])
        assert ds.SOPClassUID == original.SOPClassUID
        if "PixelData" in original:
            assert ds.PixelData == original.PixelData


# --- URLs and politeness (no server) -------------------------------------------------------------


def test_parse_pacs_url_forms() -> None:
    web = pacs.parse_pacs_url("dicomweb+http://127.0.0.1:8042/dicom-web/")
    assert (web.protocol, web.url, web.port) == ("dicomweb", "http://127.0.0.1:8042/dicom-web", 8042)
    dimse = pacs.parse_pacs_url("dimse://ORTHANC@pacs.example:104")
    assert (dimse.protocol, dimse.called_aet, dimse.host, dimse.port) == ("dimse", "ORTHANC", "pacs.example", 104)
    assert str(dimse) == "dimse://ORTHANC@pacs.example:104"
    for bad in ("http://x:1/dicom-web", "dimse://host:104", "dimse://A@host", "dimse://WAYTOOLONGAETITLE17@h:1"):
        with pytest.raises(ValueError):
            pacs.parse_pacs_url(bad)
    assert pacs.is_pacs_url("dicomweb+https://h/x") and not pacs.is_pacs_url("/data/dicom")


def test_rate_limiter_counts_every_request() -> None:
    limiter = pacs.RateLimiter(1000.0)
    for _ in range(5):
        limiter.acquire()
    assert limiter.count == 5
    assert limiter.interval == pytest.approx(0.001)
    assert pacs.RateLimiter(None).interval == 0.0


def test_read_series_list_checks_columns(tmp_path: Path) -> None:
    good = tmp_path / "c.csv"
    pd.DataFrame({"StudyInstanceUID": ["1.2", "1.2"], "SeriesInstanceUID": ["1.2.3", "1.2.3"]}).to_csv(good)
    assert pacs.read_series_list(good) == [pacs.SeriesRef("1.2", "1.2.3")]
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"StudyInstanceUID": ["1.2"]}).to_parquet(bad)
    with pytest.raises(ValueError, match="SeriesInstanceUID"):
        pacs.read_series_list(bad)


# --- DICOMweb ------------------------------------------------------------------------------------


def test_qido_at_three_levels(orthanc_server: OrthancServer, source: pd.DataFrame) -> None:
    url = orthanc_server.dicomweb_url
    studies = pacs.query_studies(url)
    assert set(studies["StudyInstanceUID"]) == set(source["StudyInstanceUID"])
    series = pacs.query_series(url, studies["StudyInstanceUID"])
    assert set(series["SeriesInstanceUID"]) == set(source["SeriesInstanceUID"])
    # Paging: pages of 3 must add up to every instance exactly once.
    instances = list(pacs.search_dicomweb(url, "instance", page_size=3))
    assert Counter(r["SOPInstanceUID"] for r in instances) == Counter(source["SOPInstanceUID"])
    # A filter is passed through to the PACS.
    one = source["StudyInstanceUID"].iloc[0]
    matched = list(pacs.search_dicomweb(url, "study", filters={"StudyInstanceUID": one}))
    assert [r["StudyInstanceUID"] for r in matched] == [one]


def test_query_instances_dicomweb_gives_index_rows(orthanc_server: OrthancServer, source: pd.DataFrame) -> None:
    rows = pd.DataFrame(pacs.query_instances_dicomweb(orthanc_server.dicomweb_url, progress=False))
    assert set(rows.columns) == set(INSTANCE_SCHEMA.names)  # the folder crawl's columns
    assert sorted(rows["SOPInstanceUID"]) == sorted(source["SOPInstanceUID"])
    merged = rows.merge(source, on="SOPInstanceUID", suffixes=("", "_file"))
    assert (merged["SeriesInstanceUID"] == merged["SeriesInstanceUID_file"]).all()
    assert (merged["Modality"] == merged["Modality_file"]).all()
    pairs = zip(rows["path"], rows["SOPInstanceUID"], strict=True)
    assert all(p.startswith("http://127.0.0.1:") and p.endswith(s) for p, s in pairs)
    # Full headers, not just QIDO's main attributes.
    with_kernel = merged[merged["ConvolutionKernel_file"].notna()]
    assert len(with_kernel) > len(merged) // 2
    assert (with_kernel["ConvolutionKernel"] == with_kernel["ConvolutionKernel_file"]).all()
    light = pd.DataFrame(pacs.query_instances_dicomweb(orthanc_server.dicomweb_url, metadata=False, progress=False))
    assert sorted(light["SOPInstanceUID"]) == sorted(source["SOPInstanceUID"])  # QIDO-RS only, paged
    with_thickness = merged[merged["SliceThickness_file"].notna()]
    assert (with_thickness["SliceThickness"].astype(float) == with_thickness["SliceThickness_file"]).all()


# --- DIMSE ---------------------------------------------------------------------------------------


def test_dimse_echo_and_find(orthanc_server: OrthancServer, source: pd.DataFrame) -> None:
    url = orthanc_server.dimse_url
    assert pacs.echo_dimse(url) == 0
    studies = pacs.find_dimse(url, "study")
    assert {s["StudyInstanceUID"] for s in studies} == set(source["StudyInstanceUID"])
    study = source["StudyInstanceUID"].iloc[0]
    series = pacs.find_dimse(url, "series", {"StudyInstanceUID": study})
    expected = set(source.loc[source["StudyInstanceUID"] == study, "SeriesInstanceUID"])
    assert {s["SeriesInstanceUID"] for s in series} == expected
    rows = pd.DataFrame(pacs.query_instances_dimse(url, progress=False))
    assert set(rows.columns) == set(INSTANCE_SCHEMA.names)
    assert sorted(rows["SOPInstanceUID"]) == sorted(source["SOPInstanceUID"])
    assert rows["path"].str.startswith("dimse://ORTHANC@127.0.0.1:").all()
    merged = rows.merge(source, on="SOPInstanceUID", suffixes=("", "_file"))
    with_kernel = merged[merged["ConvolutionKernel_file"].notna()]
    assert (with_kernel["ConvolutionKernel"] == with_kernel["ConvolutionKernel_file"]).all()


def test_echo_to_nothing_raises() -> None:
    with pytest.raises(pacs.PacsError):
        pacs.echo_dimse(f"dimse://NOBODY@127.0.0.1:{free_port()}", timeout=5)


# --- retrieve ------------------------------------------------------------------------------------


def test_wado_retrieve_is_resumable(orthanc_server: OrthancServer, source: pd.DataFrame, tmp_path: Path) -> None:
    selection = _pick_series(source, 3)
    out = tmp_path / "raw"
    first = pacs.retrieve_series(orthanc_server.dicomweb_url, selection, out, progress=False)
    assert first.ok and first.fetched_series == len(selection)
    _assert_same_instances(out, source, selection)
    assert json.loads((out / "retrieve_summary.json").read_text())["ok"] is True

    second = pacs.retrieve_series(orthanc_server.dicomweb_url, selection, out, progress=False)
    assert second.ok and second.already_complete == len(selection)
    assert second.fetched_instances == 0 and second.requests == 0  # not one request

    files = sorted(out.rglob("*.dcm"))
    victim = files[len(files) // 2]
    stamps = {f: f.stat().st_mtime_ns for f in files if f != victim}
    victim.unlink()
    third = pacs.retrieve_series(orthanc_server.dicomweb_url, selection, out, progress=False)
    assert third.ok and third.fetched_instances == 1 and third.fetched_series == 1
    assert victim.is_file()
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items())  # nothing else rewritten
    _assert_same_instances(out, source, selection)


@pytest.mark.parametrize("method", ["get", "move"])
def test_dimse_retrieve(method: str, orthanc_server: OrthancServer, source: pd.DataFrame, tmp_path: Path) -> None:
    selection = _pick_series(source, 3)
    out = tmp_path / method
    kwargs: dict[str, Any] = {"method": method, "move_port": orthanc_server.our_port, "listen_host": "127.0.0.1"}
    first = pacs.retrieve_series(orthanc_server.dimse_url, selection, out, progress=False, **kwargs)
    assert first.ok, first.missing
    _assert_same_instances(out, source, selection)
    victim = sorted(out.rglob("*.dcm"))[0]
    victim.unlink()
    again = pacs.retrieve_series(orthanc_server.dimse_url, selection, out, progress=False, **kwargs)
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

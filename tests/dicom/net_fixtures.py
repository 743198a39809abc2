"""What the network tests share: the extract loaded into Orthanc, read from its files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from tests.orthanc import OrthancServer


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


def pick_series(source: pd.DataFrame, n: int) -> pd.DataFrame:
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


def assert_same_instances(out: Path, source: pd.DataFrame, selection: pd.DataFrame) -> None:
    """The retrieved files are the selected series' instances, filed by UID, pixels intact."""
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

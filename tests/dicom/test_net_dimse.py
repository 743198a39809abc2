"""Tests for pacs_workbench.dicom.net.dimse against Orthanc: C-ECHO, C-FIND, index rows."""

from __future__ import annotations

import pandas as pd
import pytest

from pacs_workbench.cohort.index_schema import INSTANCE_SCHEMA
from pacs_workbench.dicom.net.dimse import echo_dimse, find_dimse, query_instances_dimse
from pacs_workbench.dicom.net.pacs import PacsError
from tests.dicom.net_fixtures import source
from tests.orthanc import OrthancServer, free_port, orthanc_server

__all__ = ["orthanc_server", "source"]  # fixtures used by name


def test_dimse_echo_and_find(orthanc_server: OrthancServer, source: pd.DataFrame) -> None:
    url = orthanc_server.dimse_url
    assert echo_dimse(url) == 0
    studies = find_dimse(url, "study")
    assert {s["StudyInstanceUID"] for s in studies} == set(source["StudyInstanceUID"])
    study = source["StudyInstanceUID"].iloc[0]
    series = find_dimse(url, "series", {"StudyInstanceUID": study})
    expected = set(source.loc[source["StudyInstanceUID"] == study, "SeriesInstanceUID"])
    assert {s["SeriesInstanceUID"] for s in series} == expected
    rows = pd.DataFrame(query_instances_dimse(url, progress=False))
    assert set(rows.columns) == set(INSTANCE_SCHEMA.names)
    assert sorted(rows["SOPInstanceUID"]) == sorted(source["SOPInstanceUID"])
    assert rows["path"].str.startswith("dimse://ORTHANC@127.0.0.1:").all()
    merged = rows.merge(source, on="SOPInstanceUID", suffixes=("", "_file"))
    with_kernel = merged[merged["ConvolutionKernel_file"].notna()]
    assert (with_kernel["ConvolutionKernel"] == with_kernel["ConvolutionKernel_file"]).all()


def test_echo_to_nothing_raises() -> None:
    with pytest.raises(PacsError):
        echo_dimse(f"dimse://NOBODY@127.0.0.1:{free_port()}", timeout=5)

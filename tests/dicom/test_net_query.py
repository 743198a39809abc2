"""Tests for pacs_workbench.dicom.net.query against Orthanc: studies, series, paged instances."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from pacs_workbench.dicom.net.dicomweb import search_dicomweb
from pacs_workbench.dicom.net.query import query_series, query_studies
from tests.dicom.net_fixtures import source
from tests.orthanc import OrthancServer, orthanc_server

__all__ = ["orthanc_server", "source"]  # fixtures used by name


def test_qido_at_three_levels(orthanc_server: OrthancServer, source: pd.DataFrame) -> None:
    url = orthanc_server.dicomweb_url
    studies = query_studies(url)
    assert set(studies["StudyInstanceUID"]) == set(source["StudyInstanceUID"])
    series = query_series(url, studies["StudyInstanceUID"])
    assert set(series["SeriesInstanceUID"]) == set(source["SeriesInstanceUID"])
    # Paging: pages of 3 must add up to every instance exactly once.
    instances = list(search_dicomweb(url, "instance", page_size=3))
    assert Counter(r["SOPInstanceUID"] for r in instances) == Counter(source["SOPInstanceUID"])
    # A filter is passed through to the PACS.
    one = source["StudyInstanceUID"].iloc[0]
    matched = list(search_dicomweb(url, "study", filters={"StudyInstanceUID": one}))
    assert [r["StudyInstanceUID"] for r in matched] == [one]

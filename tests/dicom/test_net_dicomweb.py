"""Tests for pacs_workbench.dicom.net.dicomweb against Orthanc: index rows from QIDO-RS and WADO-RS."""

from __future__ import annotations

import pandas as pd

from pacs_workbench.cohort.index_schema import INSTANCE_SCHEMA
from pacs_workbench.dicom.net.dicomweb import query_instances_dicomweb
from tests.dicom.net_fixtures import source
from tests.orthanc import OrthancServer, orthanc_server

__all__ = ["orthanc_server", "source"]  # fixtures used by name


def test_query_instances_dicomweb_gives_index_rows(orthanc_server: OrthancServer, source: pd.DataFrame) -> None:
    rows = pd.DataFrame(query_instances_dicomweb(orthanc_server.dicomweb_url, progress=False))
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
    light = pd.DataFrame(query_instances_dicomweb(orthanc_server.dicomweb_url, metadata=False, progress=False))
    assert sorted(light["SOPInstanceUID"]) == sorted(source["SOPInstanceUID"])  # QIDO-RS only, paged
    with_thickness = merged[merged["SliceThickness_file"].notna()]
    assert (with_thickness["SliceThickness"].astype(float) == with_thickness["SliceThickness_file"]).all()

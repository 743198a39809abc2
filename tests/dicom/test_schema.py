"""Tests for pacs_workbench.dicom.schema: instance rows from data sets, the contrast flag."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pacs_workbench.cohort.crawl import read_instance
from pacs_workbench.dicom.read import DicomReadError
from pacs_workbench.dicom.schema import dataset_to_row, has_contrast
from tests.cohort.index_fixtures import (
    write_ct,
)


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
    assert has_contrast("IOHEXOL", None, None)
    assert not has_contrast("NONE", "", None)
    assert not has_contrast(" no ", None, "0")
    assert has_contrast(None, "IV", None)
    assert has_contrast(None, None, "80")
    assert not has_contrast(None, None, None)

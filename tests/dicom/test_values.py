"""Values of one file by keyword or tag (pacs_workbench.dicom.values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs_workbench.dicom.read import tags_for_keywords
from pacs_workbench.dicom.values import read_values
from tests.dicom.fixtures import write_ct


def test_read_values_by_keyword(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    written = write_ct(path)
    values = read_values(path, ["SOPInstanceUID", "Rows", "PatientAge"])
    assert values == {"SOPInstanceUID": written.SOPInstanceUID, "Rows": 8, "PatientAge": None}
    with pytest.raises(KeyError):
        tags_for_keywords(["NotAKeyword"])

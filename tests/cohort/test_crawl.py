"""Tests for pacs_workbench.cohort.crawl: the walk, and one row per file of a chunk."""

from __future__ import annotations

import os
from pathlib import Path

from pydicom.uid import generate_uid

from pacs_workbench.cohort.crawl import index_files, walk_files
from pacs_workbench.cohort.index_schema import ERROR_SCHEMA, INSTANCE_SCHEMA
from tests.cohort.index_fixtures import write_ct


def test_walk_reports_broken_links_and_walks_a_loop_once(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.dcm").write_bytes(b"x")
    os.symlink(root, root / "a" / "loop")
    os.symlink(root / "missing.dcm", root / "broken.dcm")
    found = {Path(path).name: problem for path, _, _, problem in walk_files([root])}
    assert found["one.dcm"] is None
    assert "broken symbolic link" in (found["broken.dcm"] or "")
    assert len(found) == 2


def test_index_files_gives_one_row_per_path(tmp_path: Path) -> None:
    good = tmp_path / "ct.dcm"
    write_ct(good, study=generate_uid(), series=generate_uid(), number=1, z=0.0)
    bad = tmp_path / "notes.txt"
    bad.write_text("not DICOM")
    instances, errors, _ = index_files([str(good), str(bad), str(tmp_path / "gone.dcm")])
    assert instances.schema.equals(INSTANCE_SCHEMA, check_metadata=False) and instances.num_rows == 1
    assert errors.schema.equals(ERROR_SCHEMA, check_metadata=False) and errors.num_rows == 2
    assert set(errors.column("path").to_pylist()) == {str(bad), str(tmp_path / "gone.dcm")}
    assert all(str(tmp_path) not in message for message in errors.column("error").to_pylist())

"""Header reading: reasons never carry file paths."""

from __future__ import annotations

from pacs_workbench.preprocess.headers import scrub_paths


def test_scrub_paths_removes_folders_from_reasons() -> None:
    text = "[Errno 2] No such file or directory: '/data/Smith_John_123/ct/0001.dcm'"
    assert "Smith" not in scrub_paths(text) and "<path>" in scrub_paths(text)

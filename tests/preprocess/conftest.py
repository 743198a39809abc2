"""Shared fixtures of the preprocessing tests: one DICOM tree per module."""

from __future__ import annotations

from typing import Any

import pytest

from tests.preprocess.fixtures import build_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tree")
    info = build_tree(root / "dicom")
    info["root"] = root / "dicom"
    return info

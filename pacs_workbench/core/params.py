"""Paths and parameter-file loading.

A run is driven by one YAML parameter file with a ``shared`` section (paths used by
every notebook) and one section per notebook, named after the notebook's stem
(``01_cohort``, ``02_deid_audit``, ...). Values are literals only; identifiers and the
key never belong in a parameter file (papermill stores parameters in its outputs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
DEFAULT_PARAMS = NOTEBOOK_DIR / "params" / "default.yaml"
KEY_FILE_ENV = "PACS_WORKBENCH_KEY_FILE"
REFERENCE_ENV = "PACS_WORKBENCH_REFERENCE"


class ParameterError(ValueError):
    """A parameter file that cannot drive a run (missing, malformed or unsafe)."""


def load_params(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load a run parameter file.

    Parameters
    ----------
    path
        YAML file; the packaged ``notebooks/params/default.yaml`` when ``None``.

    Returns
    -------
    dict
        ``{"shared": {...}, "<notebook stem>": {...}, ...}``.
    """
    file = Path(path) if path is not None else DEFAULT_PARAMS
    if not file.is_file():
        raise ParameterError(f"parameter file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{file}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"{file}: expected a mapping of sections, got {type(data).__name__}")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ParameterError(f"{file}: section {section!r} must be a mapping")
    data.setdefault("shared", {})
    return data


def notebook_params(params: dict[str, Any], notebook_stem: str) -> dict[str, Any]:
    """Parameters for one notebook: the shared section overlaid by the notebook's own."""
    merged = dict(params.get("shared", {}))
    merged.update(params.get(notebook_stem, {}))
    return merged


def is_shipped_file(path: str | os.PathLike[str]) -> bool:
    """Whether a relative path names a file shipped with the workbench (``notebooks/...``)."""
    relative = Path(path)
    return not relative.is_absolute() and relative.parts[:1] == ("notebooks",) and (REPO_ROOT / relative).is_file()


def shipped_file(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it exists, else the workbench's shipped file of that relative name.

    Parameter files name shipped files relatively (``notebooks/params/radiomics/ct_default.yaml``)
    so that no run's parameters carry an installation path.
    """
    given = Path(path)
    if given.exists() or not is_shipped_file(given):
        return given
    return REPO_ROOT / given


def reference_dir() -> Path | None:
    """The reference-data folder from ``PACS_WORKBENCH_REFERENCE``, or ``None`` when unset."""
    value = os.environ.get(REFERENCE_ENV)
    return Path(value) if value else None

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
    data = read_yaml_mapping(file, str(file), what="a mapping of sections")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ParameterError(f"{file}: section {section!r} must be a mapping")
    data.setdefault("shared", {})
    return data


def read_yaml_mapping(path: Path, name: str, *, what: str = "a mapping") -> dict[str, Any]:
    """The YAML mapping in ``path`` (empty when the file is empty); ``name`` labels the errors.

    Raises
    ------
    ParameterError
        The file is not valid YAML, or holds something other than a mapping.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{name}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"{name}: expected {what}, got {type(data).__name__}")
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


# =================================================================================================
# The project root: what relative path parameters mean, wherever a notebook runs
# =================================================================================================

#: The project root when set; a run sets it for its kernels to the run's base folder.
HOME_ENV = "PACS_WORKBENCH_HOME"
#: Parameters named like this hold paths (the runner expresses them relative to the project root).
PATH_SUFFIXES = ("_dir", "_file", "_path", "_list")


class MissingInputError(FileNotFoundError):
    """An input a notebook needs does not exist yet; the message says what to run first.

    Jupyter shows it as its one sentence, without a traceback (IPython's ``_render_traceback_``).
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def project_root() -> Path:
    """The folder relative path parameters resolve against: ``PACS_WORKBENCH_HOME``, else the checkout.

    Never the current directory: a kernel opened from JupyterLab's file browser starts in
    ``notebooks/``, a papermill run or a script wherever it was started.
    """
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser().absolute() if value else REPO_ROOT


def project_path(value: str | os.PathLike[str] | None, root: str | os.PathLike[str] | None = None) -> Path | None:
    """A path parameter as a path: absolute as given, relative against the project root.

    Parameters
    ----------
    value
        The parameter; ``""`` and ``None`` (an unset optional path) give ``None``.
    root
        Folder to resolve against; default :func:`project_root`.

    A relative name of a file shipped with the workbench (``notebooks/params/...``) that the
    project does not hold is the shipped file, so parameter files never carry an installation path.
    """
    if value is None or str(value) == "":
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    base = Path(root) if root is not None else project_root()
    resolved = Path(os.path.normpath(base / path))
    if not resolved.exists() and is_shipped_file(path):
        return REPO_ROOT / path
    return resolved


def project_paths(*values: str | os.PathLike[str] | None) -> tuple[Path | None, ...]:
    """:func:`project_path` of each value, in order (a notebook's first cell unpacks them)."""
    return tuple(project_path(value) for value in values)


def _shown(path: Path) -> str:
    """``path`` relative to the project root when inside it: the sentence names no installation path."""
    root = project_root()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _first_missing(paths: tuple[str | os.PathLike[str] | None, ...]) -> Path | None:
    for value in paths:
        path = project_path(value)
        if path is not None and not path.exists():
            return path
    return None


def require_inputs(*paths: str | os.PathLike[str] | None, run_first: str) -> None:
    """Stop a notebook in its first section when an upstream output is missing.

    Parameters
    ----------
    paths
        The notebook's inputs (resolved by :func:`project_path`; empty ones are skipped).
    run_first
        The notebook that writes them (``01_cohort``).

    Raises
    ------
    MissingInputError
        One sentence naming the missing input and the notebook to run first.
    """
    missing = _first_missing(paths)
    if missing is not None:
        raise MissingInputError(f"{_shown(missing)} does not exist yet: run notebooks/{run_first}.ipynb first.")


def require_data(*paths: str | os.PathLike[str] | None) -> None:
    """Stop the first notebook when the extract is missing: there is no data yet, and ``make demo`` makes it.

    Raises
    ------
    MissingInputError
        One line saying so, naming the missing folder.
    """
    missing = _first_missing(paths)
    if missing is not None:
        raise MissingInputError(
            f"There is no data yet ({_shown(missing)} does not exist): `make demo` makes the synthetic demo "
            "extract, or point the parameters at your own."
        )

"""pyradiomics parameter files: the shipped ones, loading with pyradiomics' own schema, digests.

A parameter file (YAML, ``imageType``/``featureClass``/``setting``) is validated exactly as
``RadiomicsFeatureExtractor`` validates it (pykwalify), so a typo stops a run before any case
with pyradiomics' explanation. :func:`params_digest` hashes the parameter content, not the
file's layout or comments: it keys the feature cache and is recorded with every output.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pacs_workbench.core.params import NOTEBOOK_DIR, ParameterError, read_yaml_mapping, shipped_file

PARAMS_DIR = NOTEBOOK_DIR / "params" / "radiomics"
"""Shipped pyradiomics parameter files (``ct_default.yaml``, ``mr_default.yaml``, ...)."""


def load_radiomics_params(
    params_file: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a pyradiomics parameter file and validate it with pyradiomics' own schema.

    Parameters
    ----------
    params_file
        YAML (or JSON) parameter file with ``imageType``, ``featureClass``, ``setting`` sections.
    overrides
        Settings laid over the file's ``setting`` section before validation
        (e.g. ``{"force2D": True}``).

    Returns
    -------
    dict
        The validated parameters.

    Raises
    ------
    ParameterError
        Missing file, malformed YAML, or a value pyradiomics' schema rejects (with its message).
    """
    path = shipped_file(params_file)
    if not path.is_file():
        raise ParameterError(f"radiomics parameter file not found: {params_file}")
    data = read_yaml_mapping(path, path.name)
    if overrides:
        data = copy.deepcopy(data)
        settings = data.get("setting") or {}
        settings.update(overrides)
        data["setting"] = settings
    return validate_radiomics_params(data, name=path.name)


def validate_radiomics_params(params: Mapping[str, Any], *, name: str = "parameters") -> dict[str, Any]:
    """Validate a parameter mapping exactly as ``RadiomicsFeatureExtractor`` does (pykwalify).

    Parameters
    ----------
    params
        Parsed parameter file.
    name
        Label used in the error message.

    Returns
    -------
    dict
        The validated parameters (pykwalify's normalised copy).

    Raises
    ------
    ParameterError
        With pykwalify's explanation of every violation.
    """
    import pykwalify.core
    import pykwalify.errors
    from radiomics import getParameterValidationFiles

    memo_key = params_digest(params)
    if memo_key in _VALIDATED:
        return copy.deepcopy(_VALIDATED[memo_key])
    # pykwalify logs each violation at ERROR; the exception carries the same text.
    logging.getLogger("pykwalify").addHandler(logging.NullHandler())
    logging.getLogger("pykwalify").propagate = False
    schema_file, schema_funcs = getParameterValidationFiles()
    core = pykwalify.core.Core(
        source_data=copy.deepcopy(dict(params)), schema_files=[schema_file], extensions=[schema_funcs]
    )
    try:
        validated = core.validate(raise_exception=True)
    except (pykwalify.errors.PyKwalifyException, ValueError, TypeError) as exc:
        message = getattr(exc, "msg", None) or str(exc)
        raise ParameterError(f"{name}: rejected by pyradiomics' parameter schema: {message}") from exc
    # Validation re-reads pyradiomics' schema with ruamel (~70 ms); a cached rerun should not pay it twice.
    _VALIDATED[memo_key] = dict(validated or {})
    return copy.deepcopy(_VALIDATED[memo_key])


_VALIDATED: dict[str, dict[str, Any]] = {}


def params_digest(params: Mapping[str, Any]) -> str:
    """SHA-256 of the parameter content (canonical JSON; comments and layout do not count)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def pyradiomics_version() -> str:
    """The installed pyradiomics version (``v3.1.0``)."""
    import radiomics

    return str(radiomics.__version__)


def iter_param_files(folder: Path = PARAMS_DIR) -> Iterator[Path]:
    """The shipped radiomics parameter files."""
    yield from sorted(folder.glob("*.yaml"))

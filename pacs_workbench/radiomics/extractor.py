"""pyradiomics on one image and mask, in this process: raw values as plain Python.

One :class:`radiomics.featureextractor.RadiomicsFeatureExtractor` is built per parameter set and
thread (building one re-validates the schema) and kept; :func:`run_pyradiomics` returns its
output with features as ``float`` and ``diagnostics_*`` entries as JSON-able values, so they can
be cached as JSON and corrected (:mod:`pacs_workbench.radiomics.ibsi`) without pyradiomics.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

DIAGNOSTIC_PREFIX = "diagnostics_"
"""pyradiomics' prefix of the diagnostic (not feature) entries of its output."""


_LOCAL = threading.local()


def extractor_ready(digest: str) -> bool:
    """Whether this thread has built the extractor of ``digest`` already (set-up is paid once)."""
    return digest in (getattr(_LOCAL, "extractors", None) or {})


def _extractor(params: Mapping[str, Any], digest: str) -> Any:
    """One extractor per parameter set and thread (construction re-validates the schema)."""
    import radiomics
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    cache: dict[str, Any] = getattr(_LOCAL, "extractors", None) or {}
    _LOCAL.extractors = cache
    if digest not in cache:
        radiomics.setVerbosity(logging.ERROR)
        extractor = RadiomicsFeatureExtractor(copy.deepcopy(dict(params)))
        # Diagnostics feed the provenance table and the voxel count of the axis correction.
        extractor.settings["additionalInfo"] = True
        cache[digest] = extractor
    return cache[digest]


def warm_extractor(params: Mapping[str, Any], digest: str) -> None:
    """Import pyradiomics and build this thread's extractor for ``digest`` before its first case."""
    _extractor(params, digest)


def run_pyradiomics(image: Any, mask: Any, params: Mapping[str, Any], digest: str) -> dict[str, Any]:
    """pyradiomics' raw output for one case, as JSON-able Python values.

    ``image`` and ``mask`` are file paths or SimpleITK images already read.
    """
    raw = _extractor(params, digest).execute(image, mask)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith(DIAGNOSTIC_PREFIX):
            values[key] = _jsonable(value)
        else:
            # Shape axes come from numpy.linalg.eigvals, which returns complex numbers with a ~1e-16
            # imaginary part for (near-)degenerate eigenvalues of the symmetric covariance matrix.
            values[key] = float(np.real(value))
    return values


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)

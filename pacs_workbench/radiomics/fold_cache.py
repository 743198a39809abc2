"""Fold results cached by content hash: a rerun of the modeling stage with nothing changed fits nothing.

Every outer fold's result (fitted pipelines, out-of-fold probabilities, test matrix) is stored as
one joblib file named by the SHA-256 of what produced it (:func:`fold_key`): the content of the
modeling table as the folds see it (input columns, labels and patient groups, :func:`table_digest`),
the settings that change a fit (:func:`settings_digest`: the :class:`~pacs_workbench.radiomics.model.ModelingConfig`
less the reporting-only fields, the feature and clinical columns, the versions of the fitting
libraries and :data:`CACHE_FORMAT`) and the fold itself (repeat, fold, seed, training and test rows).
The final model of the package is cached the same way. Entries are written atomically
(:func:`pacs_workbench.core.files.write_atomic`); one that cannot be read or does not carry its key is a
miss, never an error; a cache that cannot be written costs a refit on the next run, not this one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pacs_workbench.core.files import json_ready, write_atomic

#: Bump when a code change changes what a fold's fit produces, so older entries are refitted.
CACHE_FORMAT = 1
#: Settings that change only the report (bootstrap resamples, risk cut-offs), never a fit.
REPORTING_ONLY = frozenset({"n_boot", "risk_cutoffs"})
_LIBRARIES = ("lightgbm", "scikit-learn", "numpy", "pandas", "scipy", "torch", "monai")


def _versions() -> dict[str, str]:
    found = {}
    for name in _LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def table_digest(X: pd.DataFrame, y: NDArray[Any], groups: NDArray[Any]) -> str:
    """SHA-256 of the modeling input: column names and types, every value, the labels and the groups."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in X.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    digest.update(np.ascontiguousarray(np.asarray(y, dtype=np.int64)).tobytes())
    digest.update("\x1f".join(str(g) for g in groups).encode())
    return digest.hexdigest()


def settings_digest(settings: Mapping[str, Any], *parts: Any) -> str:
    """SHA-256 of the fitting settings (reporting-only fields left out), ``parts`` and the library versions."""
    kept = {k: v for k, v in settings.items() if k not in REPORTING_ONLY}
    material = {"format": CACHE_FORMAT, "settings": json_ready(kept), "parts": json_ready(list(parts)),
                "versions": _versions()}  # fmt: skip
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def fold_key(
    table: str, settings: str, repeat: int, fold: int, seed: int, train: NDArray[Any], test: NDArray[Any]
) -> str:
    """The cache key of one outer fold."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}:{table}:{settings}:{repeat}:{fold}:{seed}:".encode())
    for rows in (train, test):
        digest.update(np.ascontiguousarray(np.asarray(rows, dtype=np.int64)).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def entry_path(folder: Path, key: str, suffix: str = ".joblib") -> Path:
    """Where the entry of ``key`` lives in ``folder``."""
    return folder / f"{key}{suffix}"


def read_entry(path: Path, key: str) -> Any | None:
    """The cached value of ``key``, or ``None`` when the entry is missing, unreadable or not its own."""
    if not path.is_file():
        return None
    try:
        entry = joblib.load(path)
    except Exception:  # a torn or foreign file is a miss
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    return entry.get("value")


def write_entry(path: Path, key: str, value: Any) -> None:
    """Store ``value`` under ``key`` atomically; a cache that cannot be written (a full disk) is not an error."""
    buffer = io.BytesIO()
    joblib.dump({"key": key, "value": value}, buffer)
    with contextlib.suppress(OSError):
        write_atomic(path, lambda temp: temp.write_bytes(buffer.getvalue()))


def prune(folder: Path, keep: Iterable[str], pattern: str = "*.joblib") -> int:
    """Delete the entries of ``folder`` (matching ``pattern``) whose key is not in ``keep``; returns the count.

    The cache then holds one run's folds only, so it does not grow with every change of settings.
    """
    wanted = set(keep)
    removed = 0
    if not folder.is_dir():
        return 0
    for path in folder.glob(pattern):
        if path.name.split(".", 1)[0] not in wanted:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


def cache_folder(out: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None, name: str) -> Path:
    """``<cache_dir or <out>/cache>/<name>``."""
    return Path(cache_dir) / name if cache_dir is not None else Path(out) / "cache" / name


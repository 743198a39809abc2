"""The per-case cache of pyradiomics' raw values: one small JSON file per key.

The key is the SHA-256 of the image file, the mask file, the parameter content, the pyradiomics
version and :data:`CACHE_FORMAT`, so a rerun computes only the cases whose inputs or parameters
changed. Entries are written atomically (:func:`pacs_workbench.core.files.write_json_atomic`);
one that cannot be read or does not carry its key is a miss, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pacs_workbench.core.files import write_json_atomic

CacheMode = Literal["default", "off"]
"""``"off"`` neither reads nor writes the cache."""


# Bump when the cached representation of pyradiomics' output changes; old entries are then ignored.
CACHE_FORMAT = 1


def cache_key(image_sha: str, mask_sha: str, params_sha: str, version: str) -> str:
    """The cache key of one case: its inputs' hashes, the parameters, pyradiomics and the format."""
    text = f"{CACHE_FORMAT}:{image_sha}:{mask_sha}:{params_sha}:{version}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def cache_file(cache_dir: Path, key: str) -> Path:
    """Where the entry of ``key`` lives (256 subfolders keep folders small)."""
    return cache_dir / key[:2] / f"{key}.json"


def read_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The cached raw values of ``key``, or ``None`` when the entry is missing, unreadable or not its own."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("values"), dict):
        return None
    return entry["values"]


def default_cache_dir(out: str | os.PathLike[str]) -> Path:
    """The cache folder used for an output file: ``<out>.cache/`` next to it."""
    out_path = Path(out)
    return out_path.with_name(out_path.name + ".cache")


def write_cache(path: Path, key: str, values: Mapping[str, Any]) -> None:
    """Store one case's raw values; a cache that cannot be written (a full disk) is not an error."""
    with contextlib.suppress(OSError):
        write_json_atomic(path, {"key": key, "values": values})

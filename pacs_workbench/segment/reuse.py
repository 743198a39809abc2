"""What a rerun of the segmentation stage can take from the last one, by content hash.

A case's rows (its lesions, Dice and uncertainty, and the probability, uncertainty and mask
files they name) are kept under the SHA-256 of the model's checkpoint, the inference settings,
the case's voxels and reference mask, and the row fields the rows carry
(:func:`case_key`); a DICOM SEG under the hash of the checkpoint, the workbench version, its
source series' files and the masks it holds (:func:`seg_key`). A rerun with nothing changed
segments nothing and writes no SEG; any change to an input is a new key. An entry whose files
are gone is not used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.files import json_ready, sha256_file, write_json_atomic, write_text_atomic
from pacs_workbench.segment.data import CaseVolume

CACHE_DIR = "cache"
_FILE_FIELDS = ("probability", "uncertainty_map", "mask")
# Kept as JSON, where a missing measurement (NaN) is null: read back as NaN, as first computed.
_MEASURES = ("uncertainty", "dice", "hd95_mm", "reference_mm3", "volume_mm3")


def case_key(row: pd.Series, case: CaseVolume, checkpoint_sha: str, patch: int, min_mm3: float) -> str:
    """SHA-256 of everything one case's rows depend on."""
    fields = {
        "checkpoint": checkpoint_sha, "patch": patch, "min_mm3": min_mm3, "case_id": case.case_id,
        "spacing": case.spacing, "shape": case.image.shape, "dtype": str(case.image.dtype),
        "row": {k: row.get(k) for k in ("split", "labelled", "pseudo_patient_id", "SeriesInstanceUID", "mask")},
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    add_case_voxels(digest, case)
    return digest.hexdigest()


def add_case_voxels(digest: Any, case: CaseVolume) -> None:
    """Feed a case's voxels and reference mask (when it has one) to a running hash."""
    digest.update(np.ascontiguousarray(case.image).tobytes())
    if case.reference is not None:
        digest.update(np.ascontiguousarray(case.reference, dtype=np.uint8).tobytes())


def cached_rows(out: Path, case_id: str, key: str) -> list[dict[str, Any]] | None:
    """The rows kept for this case under ``key``, when every file they name is still there."""
    entry = out / CACHE_DIR / "cases" / f"{case_id}.json"
    try:
        record = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    rows: list[dict[str, Any]] = record.get("rows") or []
    named = [row[f] for row in rows for f in _FILE_FIELDS if row.get(f)]
    if not rows or not all(Path(p).is_file() for p in named):
        return None
    return [{**row, **{m: float("nan") for m in _MEASURES if m in row and row[m] is None}} for row in rows]


def keep_rows(out: Path, case_id: str, key: str, rows: list[dict[str, Any]]) -> None:
    """Keep a case's rows under ``key`` for the next run."""
    write_json_atomic(out / CACHE_DIR / "cases" / f"{case_id}.json", json_ready({"key": key, "rows": rows}))


def seg_key(
    checkpoint_sha: str, version: str, series_uid: str, sources: Sequence[str | Path], masks: Sequence[str | Path]
) -> str:
    """SHA-256 of what one series' SEG is made from: model, workbench, source files and masks."""
    digest = hashlib.sha256(f"{checkpoint_sha}|{version}|{series_uid}".encode())
    for path in [*sorted(map(Path, sources)), *map(Path, masks)]:
        try:
            content = sha256_file(path)
        except OSError:  # a file that is gone: a key no SEG was written under
            content = "missing"
        digest.update(f"|{path.name}|{content}".encode())
    return digest.hexdigest()


def seg_is_current(out: Path, target: Path, key: str) -> bool:
    """Whether ``target`` was written from inputs with this key (and is still there)."""
    marker = out / CACHE_DIR / "seg" / f"{target.name}.sha256"
    try:
        return target.is_file() and marker.read_text().strip() == key
    except OSError:
        return False


def mark_seg(out: Path, target: Path, key: str) -> None:
    """Record the key ``target`` was written from."""
    write_text_atomic(out / CACHE_DIR / "seg" / f"{target.name}.sha256", key + "\n")

"""Retrieved series on disk: one folder per series, whole files, and the manifest of what to expect.

``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/`` holds one ``<SOPInstanceUID>.dcm`` per
instance, each written to a temporary file and renamed (:mod:`pacs_workbench.core.files`),
and ``manifest.json``: the SOP Instance (and Class) UIDs the PACS reported for the series.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from pacs_workbench.core.files import write_atomic, write_bytes_atomic, write_json_atomic

MANIFEST = "manifest.json"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class SeriesRef:
    """A series to retrieve, by (0020,000D) Study and (0020,000E) Series Instance UID."""

    StudyInstanceUID: str
    SeriesInstanceUID: str


def valid_uid(uid: str) -> bool:
    """Whether ``uid`` is a syntactically valid DICOM UID (safe as a file name, too)."""
    return 0 < len(uid) <= 64 and bool(_UID.match(uid))


def series_dir(out_dir: Path, ref: SeriesRef) -> Path:
    """Folder of one retrieved series: ``OUT/<StudyInstanceUID>/<SeriesInstanceUID>``."""
    return out_dir / ref.StudyInstanceUID / ref.SeriesInstanceUID


def write_instance(folder: Path, sop: str, data: bytes | Dataset) -> None:
    """Write one instance as ``folder/<sop>.dcm``: encoded bytes as received, or a data set."""
    path = folder / f"{sop}.dcm"
    if isinstance(data, bytes):
        write_bytes_atomic(path, data)
    else:
        write_atomic(path, lambda temp: data.save_as(temp, enforce_file_format=True))


def on_disk(folder: Path) -> set[str]:
    """SOP Instance UIDs of the whole files in a series folder."""
    if not folder.is_dir():
        return set()
    return {p.name[:-4] for p in folder.iterdir() if p.name.endswith(".dcm") and not p.name.startswith(".")}


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The series' manifest, or ``None`` when missing or damaged."""
    file = folder / MANIFEST
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged manifest is rebuilt from the PACS
    if not isinstance(data, dict) or not isinstance(data.get("expected"), list):
        return None
    return data


def write_manifest(folder: Path, ref: SeriesRef, expected: Sequence[str], sop_classes: Sequence[str]) -> None:
    """Record what the PACS holds for the series (sorted, so reruns write the same bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "StudyInstanceUID": ref.StudyInstanceUID,
        "SeriesInstanceUID": ref.SeriesInstanceUID,
        "expected": sorted(expected),
        "sop_classes": sorted(set(sop_classes)),
    }
    write_json_atomic(folder / MANIFEST, body, indent=1)

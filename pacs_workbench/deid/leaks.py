"""Count the strings of a PHI list still present in a folder (benchmarks, tool comparisons).

:func:`leaked_phi_strings` searches every file's bytes, every file and folder name and
the OCR text of images that could carry text, and returns counts only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pacs_workbench.core.executor import map_items
from pacs_workbench.deid.audit import BATCH, list_files, list_names
from pacs_workbench.deid.audit_checks import AuditTask
from pacs_workbench.deid.phi_match import (
    MIN_TERM,
    build_matcher,
    matcher_for,
    read_dicom,
    search_file,
    usable_term,
)
from pacs_workbench.deid.text import phi_variants


def _normalized(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _leak_batch(task: AuditTask) -> set[str]:
    """Ids of the PHI strings found in a batch of files (bytes, or OCR text of their pixels)."""
    from pacs_workbench.deid.pixels import (
        PixelCleaningError,
        assess_pixel_risk,
        decoded_frames,
        read_text,
        render_frame,
        sample_frames,
    )

    matcher = matcher_for(task.terms)
    ocr_terms = [(_normalized(term), ident) for term, ident in task.terms if len(_normalized(term)) >= MIN_TERM]
    found: set[str] = set()
    root = Path(task.root)
    for relpath in task.relpaths:
        data = (root / relpath).read_bytes()
        ds = None
        if data[128:132] == b"DICM":
            try:
                ds = read_dicom(data)
            except Exception:  # unreadable: still searched as bytes
                ds = None
        found.update(kind for _, kind in search_file(matcher, data, ds))
        if not task.ocr or ds is None or not assess_pixel_risk(ds):
            continue
        try:
            arr, photometric = decoded_frames(ds)
        except PixelCleaningError:
            continue
        for i in sample_frames(arr.shape[0]):
            text = _normalized(" ".join(t for _, t, _ in read_text(render_frame(arr[i], photometric))))
            found.update(ident for term, ident in ocr_terms if term in text)
    return found


def leaked_phi_strings(
    dst: str | os.PathLike[str],
    phi_list: str | os.PathLike[str],
    *,
    ocr: bool = True,
    workers: int | None = 1,
    progress: bool = False,
) -> dict[str, int]:
    """How many strings of a PHI list can still be found in a folder (any tool's output).

    A string counts as leaked when one of its variants occurs in the bytes of any file,
    in a file or folder name, or in the OCR text of an image that could carry text.
    Used to compare de-identification tools; returns counts only.
    """
    root = Path(dst)
    lines = [v.strip() for v in Path(phi_list).read_text(encoding="utf-8").splitlines() if v.strip()]
    terms: dict[str, str] = {}
    for i, value in enumerate(lines):
        for variant in {value, *phi_variants(value, "auto", min_component=MIN_TERM)}:
            if usable_term(variant):
                terms.setdefault(variant, f"L{i}")
    matcher = build_matcher(terms)
    found: set[str] = set()
    for name in list_names(root):
        found.update(kind for _, kind in matcher.find(name.rsplit("/", 1)[-1].encode("utf-8", "replace")))
    files = list_files(root)
    items = tuple(sorted(terms.items()))
    tasks = [
        AuditTask(str(root.resolve()), tuple(files[i : i + BATCH]), items, ocr) for i in range(0, len(files), BATCH)
    ]
    for result in map_items(
        _leak_batch, tasks, workers=workers, desc="leak check", total=len(tasks), progress=progress
    ):
        found |= result
    return {"phi_strings": len(lines), "leaked": len(found)}

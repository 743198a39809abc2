"""The same instance more than once in a source: written once, the other copies accounted for.

Two inputs with one SOP Instance UID give one output path. When their pixels decode to
the same array (one copy uncompressed and one losslessly compressed, or big and little
endian) the instance is written once, from the copy chosen by a fixed order (native
little-endian pixels first, then the smaller source sha256), and every other copy gets
outcome ``duplicate`` with ``output`` pointing at the written file and ``reason`` naming
the written copy's source sha256. Copies whose pixels differ (a lossy copy, or another
image under a reused UID) cannot both be the instance: all but the chosen one go to the
quarantine with that reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _pixels_and_order(path: str) -> tuple[np.ndarray | None, int]:
    """Decoded pixels (``None`` without Pixel Data) and the copy's rank (0: native little endian)."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        ts = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", ""))
        rank = 0 if ts in NATIVE_LITTLE_ENDIAN else 1
        if "PixelData" not in ds:
            return None, rank
        return np.asarray(ds.pixel_array), rank


def same_pixels(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two decoded copies hold the same image (both without pixels counts as same)."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


def resolve_duplicates(
    records: list[dict[str, Any]],
    rewrite: Callable[[str], dict[str, Any]],
    quarantine: Callable[[str, str, str], dict[str, Any]],
) -> None:
    """Give each output path one written source; mark or quarantine the others (in place).

    Parameters
    ----------
    records
        The run's records (``source_path``, ``source_sha256``, ``outcome``, ``output``).
    rewrite
        De-identify a source path again (the chosen copy's output is rewritten, since
        another worker may have written last); returns its record.
    quarantine
        ``(source path, sha256, reason) -> record`` for a copy that cannot be the instance.
    """
    by_output: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["outcome"] == "written":
            by_output.setdefault(r["output"], []).append(r)
    for output, group in sorted(by_output.items()):
        if len(group) < 2:
            continue
        if len({r["source_sha256"] for r in group}) < 2:  # identical copies wrote identical bytes
            first = min(group, key=lambda r: str(r["source_path"]))
            for r in group:
                if r is not first:
                    r.update(outcome="duplicate", reason=f"same file as source {first['source_sha256']}")
            continue
        decoded: dict[str, tuple[np.ndarray | None, int] | None] = {}
        for r in group:
            try:
                decoded[r["source_sha256"]] = _pixels_and_order(r["source_path"])
            except Exception:  # a copy that does not decode here cannot be shown to be the same
                decoded[r["source_sha256"]] = None
        order = sorted(group, key=lambda r: (_rank(decoded[r["source_sha256"]]), r["source_sha256"]))
        winner = order[0]
        win_sha = winner["source_sha256"]
        fresh = rewrite(winner["source_path"])
        if fresh.get("output") == output:
            winner.update({k: v for k, v in fresh.items() if k in winner})
        for r in order[1:]:
            if r["source_sha256"] == win_sha:
                r.update(outcome="duplicate", reason=f"same file as source {win_sha}")
                continue
            mine, theirs = decoded[r["source_sha256"]], decoded[win_sha]
            if mine is not None and theirs is not None and same_pixels(mine[0], theirs[0]):
                r.update(outcome="duplicate", reason=f"same instance as source {win_sha} (written once)")
                continue
            q = quarantine(r["source_path"], r["source_sha256"], _different(mine, theirs, win_sha))
            r.clear()
            r.update(q)


def _rank(decoded: tuple[np.ndarray | None, int] | None) -> int:
    return 2 if decoded is None else decoded[1]


def _different(mine: Any, theirs: Any, win_sha: str) -> str:
    if mine is None or theirs is None:
        return f"same SOP Instance UID as source {win_sha}, and the pixels of one copy could not be decoded to compare"
    return f"same SOP Instance UID as source {win_sha} with different pixels (a lossy copy or a reused UID)"

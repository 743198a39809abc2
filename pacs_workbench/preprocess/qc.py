"""Tables for the QC notebook: series geometry, exclusions, flags, masks, the run and montages.

No table shows a UID, a path or header free text; series appear by :func:`~pacs_workbench.preprocess.cases.series_key`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.preprocess.cases import TreeScan


def series_table(scan: TreeScan) -> pd.DataFrame:
    """Per-series geometry table with flagged problems, keyed by ``series_key`` (no UIDs or paths)."""
    if scan.series.empty:
        return pd.DataFrame()
    frame = scan.series

    def triple(prefix: str, digits: int) -> pd.Series:
        values = frame[[f"{prefix}_x", f"{prefix}_y", f"{prefix}_z"]]
        return values.apply(
            lambda row: "" if row.isna().any() else " x ".join(f"{v:.{digits}f}" for v in row), axis=1
        )

    table = pd.DataFrame(
        {
            "series_key": frame["series_key"],
            "Modality": frame["Modality"],
            "Manufacturer": frame["Manufacturer"],
            "n_files": frame["n_files"],
            "n_slices": frame["n_slices"],
            "size": triple("size", 0),
            "spacing_mm": triple("spacing", 3),
            "SliceThickness": frame["SliceThickness"],
            "gantry_tilt_deg": frame["gantry_tilt_deg"],
            "n_cases": frame["n_cases"] if "n_cases" in frame.columns else 0,
            "valid": frame["valid"],
            "flags": frame["flags"].map(lambda v: ", ".join(v) if len(v) else ""),
            "reason": frame["reason"],
        }
    )
    return table.sort_values(["valid", "Modality", "series_key"]).reset_index(drop=True)


def exclusions_table(result: pd.DataFrame) -> pd.DataFrame:
    """Cases not preprocessed, with stage and reason."""
    columns = ["case_id", "status", "stage", "reason", "mask_source", "Manufacturer"]
    return result.loc[result["status"] != "ok", columns].reset_index(drop=True)


def spacing_summary(result: pd.DataFrame) -> pd.DataFrame:
    """Spacing and slice thickness before/after, summarized per manufacturer (ok cases)."""
    ok = result[result["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(Manufacturer=ok["Manufacturer"].fillna("unknown"))
    columns = [
        "in_spacing_x", "in_spacing_z", "SliceThickness", "out_spacing_x", "out_spacing_z", "mask_volume_mm3",
    ]
    return ok.groupby("Manufacturer")[columns].median().round(3).assign(n_cases=ok.groupby("Manufacturer").size())


# Flags that describe a series without questioning it.
_INFORMATIVE_FLAGS = frozenset({"oblique"})


def _problems(flags: Any) -> list[str]:
    return [f for f in (flags if isinstance(flags, list | tuple | np.ndarray) else []) if f not in _INFORMATIVE_FLAGS]


def flagged_cases(result: pd.DataFrame) -> list[str]:
    """Case ids of preprocessed cases whose series or mask raised a problem flag or warning."""
    ok = result[result["status"] == "ok"]
    flagged = ok[(ok["flags"].map(lambda v: len(_problems(v))) > 0) | (ok["warnings"].map(len) > 0)]
    return sorted(flagged["case_id"].tolist())


def flag_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How many rows (series or cases) carry each flag."""
    counts: dict[str, int] = {}
    for flags in frame.get("flags", pd.Series(dtype=object)):
        items = flags.split(", ") if isinstance(flags, str) else list(flags if flags is not None else [])
        for flag in items:
            if flag:
                counts[flag] = counts.get(flag, 0) + 1
    ordered: list[tuple[str, int]] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame(ordered, columns=["flag", "count"])


def mask_summary(scan: TreeScan) -> pd.DataFrame:
    """SEG/RTSTRUCT instances by kind and what became of them (no paths or UIDs)."""
    if scan.masks.empty:
        return pd.DataFrame(columns=["mask_source", "matched", "used", "reason", "instances", "segments"])
    return (
        scan.masks.groupby(["mask_source", "matched", "used", "reason"], dropna=False)
        .agg(instances=("mask_source", "size"), segments=("n_segments", "sum"))
        .reset_index()
    )


def run_summary(result: pd.DataFrame) -> pd.DataFrame:
    """Cases by status, and how many were reused from the cache."""
    if result.empty:
        return pd.DataFrame(columns=["status", "cases", "from_cache"])
    return (
        result.groupby("status")
        .agg(cases=("case_id", "size"), from_cache=("cached", "sum"))
        .reset_index()
    )


def case_labels(result: pd.DataFrame) -> dict[str, str]:
    """Short text per case for figure titles: its problem flags."""
    return {str(r.case_id): ", ".join(_problems(r.flags)) for r in result.itertuples()}


def montage_inputs(result: pd.DataFrame, case_ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(case_id, image, mask)`` for :func:`pacs_workbench.preprocess.plots.plot_mask_montage`."""
    rows = result.set_index("case_id")
    return [(c, str(rows.at[c, "image"]), str(rows.at[c, "mask"])) for c in case_ids if c in rows.index]


def cases_preview(out_dir: str | os.PathLike[str], n: int = 5) -> pd.DataFrame:
    """The first rows of ``cases.csv`` without paths or UIDs (what the features stage will read)."""
    table = pd.read_csv(Path(out_dir) / "cases.csv")
    keep = ["case_id", "pseudo_patient_id", "Modality", "Manufacturer", "mask_source", "segment_number"]
    return table[[c for c in keep if c in table.columns]].head(n)


def montage_cases(result: pd.DataFrame, max_cases: int = 12, seed: int = 0) -> list[str]:
    """A random sample of ``max_cases`` preprocessed cases plus every flagged one."""
    ok = result[result["status"] == "ok"]["case_id"].tolist()
    flagged = flagged_cases(result)
    rest = sorted(set(ok) - set(flagged))
    rng = np.random.default_rng(seed)
    sample = sorted(rng.choice(rest, size=min(max_cases, len(rest)), replace=False).tolist()) if rest else []
    return flagged + sample

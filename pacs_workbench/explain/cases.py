"""Single cases: which to review, their contributions, and their images and vendors.

The cases a reviewer should look at are the highest-risk ones, the false negatives and the false
positives; each is explained by its contributions averaged over the repeats (each from a model
that did not see it). The features table gives each case's lesion image and mask, its scanner
vendor and its raw (unharmonized) feature values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.fmt import is_number
from pacs_workbench.explain.families import short_name
from pacs_workbench.explain.shap import ExplainError, Explanations

CASE_COLUMNS = ("case_id", "image", "mask", "vendor")


def case_summary(expl: Explanations) -> pd.DataFrame:
    """One row per case, averaged over repeats: ``case_id``, ``row_index``, ``label``, ``risk``
    (mean out-of-fold probability), ``raw_output`` (mean log-odds), ``n_repeats``."""
    if expl.shap.empty:
        return pd.DataFrame(columns=["case_id", "row_index", "label", "risk", "raw_output", "n_repeats"])
    grouped = expl.shap.groupby("case_id", sort=False)
    out = pd.DataFrame(
        {
            "row_index": grouped["row_index"].first(),
            "label": grouped["label"].first(),
            "risk": grouped["prob"].mean(),
            "raw_output": grouped["raw_output"].mean(),
            "n_repeats": grouped["repeat"].nunique(),
        }
    )
    return out.reset_index()


def select_cases(expl: Explanations, n: int = 3, threshold: float | None = None) -> pd.DataFrame:
    """The cases a reviewer should look at: highest risk, false negatives, false positives.

    Parameters
    ----------
    expl
        From :func:`explain_model`.
    n
        Cases per group.
    threshold
        Risk at or above which a case counts as predicted positive; ``None``: the event rate of
        the cohort (the threshold at which the model is as often positive as the outcome).

    Returns
    -------
    DataFrame
        :func:`case_summary` columns plus ``category`` (``highest risk``, ``false negative``:
        events with the lowest risk below the threshold, ``false positive``: non-events with the
        highest risk at or above it) and ``threshold``. A case is listed once, under its first
        category.
    """
    cases = case_summary(expl)
    if cases.empty:
        return cases.assign(category=pd.Series(dtype=str), threshold=pd.Series(dtype=float))
    labels = cases["label"].astype(float)
    cut = float(labels.mean()) if threshold is None else float(threshold)
    top = cases.sort_values("risk", ascending=False, kind="stable").head(n).assign(category="highest risk")
    fn = cases[(labels == 1) & (cases["risk"] < cut)].sort_values("risk", kind="stable").head(n)
    fp = cases[(labels == 0) & (cases["risk"] >= cut)].sort_values("risk", ascending=False, kind="stable").head(n)
    chosen = pd.concat(
        [top, fn.assign(category="false negative"), fp.assign(category="false positive")], ignore_index=True
    )
    chosen = chosen.drop_duplicates("case_id", keep="first").reset_index(drop=True)
    chosen["threshold"] = cut
    return chosen


@dataclass
class CaseExplanation:
    """One case's contributions, averaged over the repeats (each from a model that did not see it).

    ``expected_value + contributions["shap"].sum() == raw_output`` (log-odds).
    """

    case_id: str
    label: float
    risk: float
    expected_value: float
    raw_output: float
    n_repeats: int
    contributions: pd.DataFrame  # feature, family, value (model input), raw_value (features table), shap


def explain_case(expl: Explanations, case_id: str, raw_values: pd.DataFrame | None = None) -> CaseExplanation:
    """The contributions of one case, largest |SHAP| first.

    Parameters
    ----------
    expl
        From :func:`explain_model`.
    case_id
        Pseudonymous case key.
    raw_values
        Optional features table indexed by ``case_id`` (columns: TABLE feature names), for showing
        the unharmonized value beside each contribution.
    """
    rows = expl.shap[expl.shap["case_id"] == case_id]
    if rows.empty:
        raise ExplainError("case not found among the explained cases")
    names = expl.feature_names
    vals = expl.values.loc[rows.index, names]
    table = expl.features[["feature", "source", "family"]].copy()
    table["value"] = vals.mean(axis=0).to_numpy(dtype=float)
    table["shap"] = rows[names].mean(axis=0).to_numpy(dtype=float)
    if raw_values is not None and case_id in raw_values.index:
        raw = raw_values.loc[case_id]
        table["raw_value"] = [
            float(raw[s]) if s in raw.index and is_number(raw[s]) else float("nan") for s in table["source"]
        ]
    else:
        table["raw_value"] = np.nan
    table = table.reindex(table["shap"].abs().sort_values(ascending=False, kind="stable").index)
    return CaseExplanation(
        case_id=str(case_id),
        label=float(rows["label"].iloc[0]) if pd.notna(rows["label"].iloc[0]) else float("nan"),
        risk=float(rows["prob"].mean()),
        expected_value=float(rows["expected_value"].mean()),
        raw_output=float(rows["raw_output"].mean()),
        n_repeats=int(rows["repeat"].nunique()),
        contributions=table.reset_index(drop=True),
    )


def top_contributions(case: CaseExplanation, n: int = 3) -> str:
    """The ``n`` largest contributions as short text, e.g. ``shape_Sphericity -0.41; age +0.22``."""
    top = case.contributions.head(n)
    pairs = zip(top["feature"].astype(str), top["shap"].astype(float), strict=True)
    return "; ".join(f"{short_name(f)} {s:+.2f}" for f, s in pairs if s != 0)


def _resolve(path: Any, base: Path) -> str:
    if not isinstance(path, str) or not path:
        return ""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return str(candidate)
    return str(base / candidate)


def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix.lower() in {".parquet", ".pq"} else pd.read_csv(path)


def _unique_cases(table: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """The features table with ``case_id`` as text and the first row of each case only."""
    table["case_id"] = table["case_id"].astype(str)
    if table["case_id"].duplicated().any():
        notes.append(
            f"{int(table['case_id'].duplicated().sum())} duplicated case_id row(s) in the features table; "
            "the first of each is used."
        )
        table = table.drop_duplicates("case_id", keep="first")
    return table


def _image_paths(
    table: pd.DataFrame, base: Path, images_file: str | os.PathLike[str] | None, notes: list[str]
) -> tuple[Path, pd.DataFrame]:
    """The table holding each case's ``image`` and ``mask`` and the folder its relative paths start from."""
    if images_file and Path(images_file).is_file():
        paths = _read_table(Path(images_file))
        wanted = [c for c in ("case_id", "image", "mask") if c in paths.columns]
        paths = paths[wanted].assign(case_id=lambda f: f["case_id"].astype(str)).drop_duplicates("case_id")
        return Path(images_file).parent, table[["case_id"]].merge(paths, on="case_id", how="left")
    if images_file:
        notes.append(f"Image table {Path(images_file).name} not found.")
    return base, table


def load_cases(
    features_file: str | os.PathLike[str] | None,
    vendor_col: str = "Manufacturer",
    images_file: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Images, masks, vendors and raw feature values per case from the features table.

    Parameters
    ----------
    features_file
        Parquet or CSV with ``case_id`` and optionally ``image``, ``mask`` (NIfTI paths, relative
        ones resolved against the working folder, then the table's folder), ``vendor_col`` and the
        feature columns. ``None`` or ``""``: nothing.
    vendor_col
        The scanner vendor column, `(0008,0070) Manufacturer` by default.
    images_file
        Optional table with ``case_id``, ``image``, ``mask`` (e.g. the preprocessing stage's
        ``cases.parquet``) for features tables that do not carry the paths; only those three
        columns are read.

    Returns
    -------
    tuple
        ``cases`` (``case_id``, ``image``, ``mask``, ``vendor``; ``""`` where unknown), ``raw``
        (numeric columns indexed by ``case_id``) and notes on anything missing.
    """
    empty = pd.DataFrame(columns=list(CASE_COLUMNS))
    if not features_file:
        return empty, pd.DataFrame(), ["No features table given: no lesion images, vendors or raw values."]
    path = Path(features_file)
    if not path.is_file():
        return (
            empty,
            pd.DataFrame(),
            [f"Features table {path.name} not found: no lesion images, vendors or raw values."],
        )
    table = _read_table(path)
    if "case_id" not in table.columns:
        return empty, pd.DataFrame(), [f"Features table {path.name} has no case_id column."]
    notes: list[str] = []
    table = _unique_cases(table, notes)
    base, source = _image_paths(table, path.parent, images_file, notes)
    cases = pd.DataFrame({"case_id": table["case_id"].to_numpy()})
    for col in ("image", "mask"):
        if col in source.columns:
            cases[col] = [_resolve(v, base) for v in source[col]]
        else:
            cases[col] = ""
            notes.append(f"No {col!r} column for the cases: case studies show contributions only.")
    if vendor_col in table.columns:
        cases["vendor"] = table[vendor_col].fillna("unknown").astype(str).to_numpy()
    else:
        cases["vendor"] = ""
        notes.append(f"The features table has no {vendor_col!r} column: scanner dependence cannot be shown.")
    numeric = table.set_index("case_id").select_dtypes(include="number")
    return cases, numeric, notes


def vendor_share(values: pd.DataFrame, vendor: pd.Series) -> pd.Series:
    """Per column, the share of its variance explained by the vendor (eta squared, 0..1).

    Parameters
    ----------
    values
        Numeric columns, rows aligned with ``vendor``.
    vendor
        The vendor of each row.
    """
    out = {}
    groups = vendor.astype(str).to_numpy()
    for col in values.columns:
        x = pd.to_numeric(values[col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x)
        if ok.sum() < 3:
            out[col] = float("nan")
            continue
        xs, gs = x[ok], groups[ok]
        total = float(((xs - xs.mean()) ** 2).sum())
        if total <= 0:
            out[col] = 0.0
            continue
        between = sum(
            float((gs == g).sum()) * (float(xs[gs == g].mean()) - float(xs.mean())) ** 2 for g in np.unique(gs)
        )
        out[col] = between / total
    return pd.Series(out, dtype=float)

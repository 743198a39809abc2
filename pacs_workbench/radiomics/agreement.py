"""Reference or model masks for radiomics, and how far features on the two agree.

The segmentation stage (``04_segmentation``) writes ``segmentation.parquet`` with one row per case
and lesion: ``mask_source`` is ``reference`` where the case's reference mask was used and ``model``
where the model's mask stands in (reference hidden, or none exported). :func:`cases_with_masks`
turns the preprocess cases table into the one radiomics extracts from: the reference mask where
one is used, the model mask elsewhere, and a ``mask_source`` column saying which.

For cases that have both (in the demo, the hidden references), :func:`paired_cases` gives the two
case tables, and :func:`feature_agreement` the ICC(3,1) per feature between features on the
reference and on the model masks (two-way mixed effects, consistency, single measurement; Shrout
and Fleiss 1979, McGraw and Wong 1996), with :func:`agreement_summary` the share of features with
ICC >= 0.75 (Koo and Li 2016's "good").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.files import names_a_file

#: ICC at or above which a feature counts as reproducible between reference and model masks.
GOOD_ICC = 0.75


def read_segmentation(segmentation: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """One row per case of ``segmentation.parquet``: ``case_id``, ``mask_source``, ``mask``, ``status``.

    Raises
    ------
    FileNotFoundError
        When the file does not exist (run ``04_segmentation`` first).
    """
    if isinstance(segmentation, pd.DataFrame):
        frame = segmentation
    else:
        path = Path(segmentation)
        if not path.is_file():
            raise FileNotFoundError(f"{path.name} not found: run 04_segmentation first")
        frame = pd.read_parquet(path)
    frame = frame.sort_values(["case_id", "lesion"]) if "lesion" in frame.columns else frame
    return frame.groupby("case_id", as_index=False).first()[["case_id", "mask_source", "mask", "status"]]


def cases_with_masks(
    cases: str | os.PathLike[str] | pd.DataFrame, segmentation: str | os.PathLike[str] | pd.DataFrame
) -> pd.DataFrame:
    """The cases table radiomics extracts from: reference masks where used, model masks elsewhere.

    ``mask_source`` is ``reference`` or ``model``; ``reference_mask`` keeps the exported reference
    (for the agreement) and ``reference_mask_kind`` the preprocessing's ``mask_source`` (SEG,
    RTSTRUCT). Cases the segmentation could not give a mask (empty prediction, error) are left
    out; ``attrs["left_out"]`` lists them with the reason.
    """
    frame = pd.read_parquet(cases) if not isinstance(cases, pd.DataFrame) else cases.copy()
    frame["case_id"] = frame["case_id"].astype(str)
    seg = read_segmentation(segmentation).set_index("case_id")
    frame["reference_mask"] = frame["mask"] if "mask" in frame.columns else None
    if "mask_source" in frame.columns:  # the reference's kind (SEG, RTSTRUCT) from preprocessing
        frame = frame.rename(columns={"mask_source": "reference_mask_kind"})
    source = frame["case_id"].map(seg["mask_source"])
    model_mask = frame["case_id"].map(seg["mask"])
    use_model = source == "model"
    frame["mask_source"] = np.where(use_model, "model", "reference")
    frame["mask"] = np.where(use_model, model_mask, frame["reference_mask"])
    usable = frame["mask"].map(names_a_file)
    left_out = frame.loc[~usable, ["case_id"]].copy()
    left_out["reason"] = frame.loc[~usable, "case_id"].map(seg["status"]).fillna("not segmented").map(
        lambda s: f"no mask for radiomics (segmentation status: {s})"
    )
    kept = frame[usable].reset_index(drop=True)
    kept.attrs["left_out"] = left_out.to_dict(orient="records")
    return kept


def paired_cases(cases_masks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For the cases with a model mask and a reference: the table on reference and the one on model masks."""
    has_reference = cases_masks["reference_mask"].map(names_a_file)
    both = cases_masks[(cases_masks["mask_source"] == "model") & has_reference]
    on_reference = both.assign(mask=both["reference_mask"], mask_source="reference").reset_index(drop=True)
    return on_reference, both.reset_index(drop=True)


def icc_3_1(ratings: np.ndarray) -> float:
    """ICC(3,1) of an (n subjects x k raters) array: (MSR - MSE) / (MSR + (k - 1) MSE).

    ``nan`` when fewer than two subjects or no between-subject variance and no error.
    """
    y = np.asarray(ratings, dtype=float)
    y = y[np.isfinite(y).all(axis=1)]
    n, k = y.shape if y.ndim == 2 else (0, 0)
    if n < 2 or k < 2:
        return float("nan")
    grand = y.mean()
    ss_rows = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_error = ((y - grand) ** 2).sum() - ss_rows - ss_cols
    msr, mse = ss_rows / (n - 1), ss_error / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse
    return float((msr - mse) / denominator) if denominator > 0 else float("nan")


def feature_agreement(
    on_reference: pd.DataFrame, on_model: pd.DataFrame, *, id_col: str = "case_id", prefix: str = "original_"
) -> pd.DataFrame:
    """ICC(3,1) per feature between features on reference masks and on model masks of the same cases.

    Parameters
    ----------
    on_reference, on_model
        Feature tables (one row per case, ``id_col`` and feature columns starting with ``prefix``).

    Returns
    -------
    pandas.DataFrame
        ``feature``, ``icc``, ``n`` (cases with both values), ``good`` (ICC >= 0.75), worst first.
    """
    left = on_reference.set_index(on_reference[id_col].astype(str))
    right = on_model.set_index(on_model[id_col].astype(str))
    shared = left.index.intersection(right.index)
    features = [c for c in left.columns if c.startswith(prefix) and c in right.columns]
    rows = []
    for feature in features:
        pair = np.column_stack([
            pd.to_numeric(left.loc[shared, feature], errors="coerce"),
            pd.to_numeric(right.loc[shared, feature], errors="coerce"),
        ])
        finite = np.isfinite(pair).all(axis=1)
        value = icc_3_1(pair)
        rows.append({"feature": feature, "icc": value, "n": int(finite.sum()), "good": bool(value >= GOOD_ICC)})
    return pd.DataFrame(rows, columns=["feature", "icc", "n", "good"]).sort_values("icc").reset_index(drop=True)


def agreement_summary(agreement: pd.DataFrame) -> dict[str, Any]:
    """Features compared, cases, median ICC and the share with ICC >= 0.75 (features with an ICC)."""
    scored = agreement[agreement["icc"].notna()]
    return {
        "features": len(scored),
        "cases": int(agreement["n"].max()) if len(agreement) else 0,
        "median_icc": float(scored["icc"].median()) if len(scored) else float("nan"),
        "share_good": float(scored["good"].mean()) if len(scored) else float("nan"),
        "threshold": GOOD_ICC,
    }

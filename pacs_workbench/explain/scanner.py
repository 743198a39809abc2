"""Did the model learn the scanner? The SHAP of vendor-sensitive features, per vendor.

A feature is vendor-sensitive when the scanner vendor explains much of its raw (unharmonized)
variance. If the SHAP values of such features follow the vendor while the event rates do not,
the model reads the scanner rather than the disease; shown for the model under review and, when
given, the same model fitted the other way (with or without ComBat harmonization).
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.files import write_atomic
from pacs_workbench.explain.cases import case_summary, vendor_share
from pacs_workbench.explain.review import ShapReview


@dataclass
class ScannerCheck:
    """How much of the contributions of vendor-sensitive features follows the vendor.

    Attributes
    ----------
    per_vendor : DataFrame
        ``variant``, ``feature``, ``vendor``, ``n``, ``mean_shap``, ``mean_abs_shap``.
    summary : DataFrame
        ``variant``, ``feature``, ``vendor_share_feature`` (eta squared of the raw feature by
        vendor), ``vendor_share_shap`` (of its SHAP values), ``mean_abs_shap``.
    outcome : DataFrame
        ``vendor``, ``n_cases``, ``event_rate`` and ``mean_risk_<variant>`` per variant.
    statement : str
    vendor_share : dict
        Per variant, the vendor's share of the SHAP variation of the shown features, averaged
        with their mean |SHAP| as weights (0: contributions do not follow the vendor).
    """

    per_vendor: pd.DataFrame
    summary: pd.DataFrame
    outcome: pd.DataFrame
    statement: str
    vendor_share: dict[str, float] = field(default_factory=dict)

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        """Write ``scanner_dependence.csv`` and ``scanner_summary.csv``."""
        if self.per_vendor.empty:
            return {}
        out = Path(out_dir)
        per_vendor, summary = out / "scanner_dependence.csv", out / "scanner_summary.csv"
        write_atomic(per_vendor, lambda temp: self.per_vendor.to_csv(temp, index=False))
        write_atomic(summary, lambda temp: self.summary.to_csv(temp, index=False))
        return {"per_vendor": str(per_vendor), "summary": str(summary)}


def scanner_dependence(
    review: ShapReview, other: ShapReview | None = None, *, n_features: int = 6, min_vendor_share: float = 0.1
) -> ScannerCheck:
    """Per-vendor SHAP of the most vendor-sensitive features, for one or two model variants.

    Parameters
    ----------
    review
        The model under review (usually harmonized).
    other
        The same model fitted without (or with) harmonization; ``None`` or an empty review:
        only ``review`` is shown.
    n_features
        Vendor-sensitive features to show: those used by a model (mean |SHAP| > 0) whose raw
        variance the vendor explains at least ``min_vendor_share`` of, most sensitive first.
    min_vendor_share
        Smallest vendor share (eta squared, 0..1) of a feature's raw variance to call it
        vendor-sensitive.
    """
    empty = ScannerCheck(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), "")
    reviews = [r for r in (review, other) if r is not None and r.available]
    if not reviews:
        empty.statement = "No fold models: nothing to compare across vendors."
        return empty
    skipped = (
        ""
        if len(reviews) == 2
        else " No second model variant (with or without harmonization) was given, so there is no before/after "
        "comparison: run the modeling stage both ways and set unharmonized_model_dir."
    )
    vendor = _case_vendors(reviews)
    if vendor.empty:
        empty.statement = "The vendor of the cases is unknown (no vendor column in the features table): skipped."
        return empty
    sens = _raw_vendor_share(reviews, vendor)
    if sens is None:
        empty.statement = (
            "No raw feature values (features table or unharmonized model) to tell vendor-sensitive features."
        )
        return empty
    source_of, ordered = _by_vendor_share(reviews, sens)
    sensitive = [f for s, f in ordered if s >= min_vendor_share][:n_features]
    # Nothing clearly vendor-sensitive: show the most vendor-dependent features anyway, and say so.
    chosen = sensitive or [f for _, f in ordered[:n_features]]
    per_vendor: list[dict[Hashable, Any]] = []
    summary: list[dict[str, object]] = []
    outcome: pd.DataFrame | None = None
    for r in reviews:
        label = _variant_label(r)
        for f in chosen:
            rows, line = _feature_by_vendor(r, f, label, vendor, float(sens.get(source_of.get(f, f), np.nan)))
            per_vendor += rows
            summary.append(line)
        part = _vendor_outcome(r, vendor, label)
        outcome = part if outcome is None else outcome.join(part[[f"mean_risk_{label}"]], how="outer")
    summary_frame = pd.DataFrame(summary)
    check = ScannerCheck(
        pd.DataFrame(per_vendor),
        summary_frame,
        outcome.reset_index() if outcome is not None else pd.DataFrame(),
        "",
        _weighted_vendor_share(summary_frame),
    )
    check.statement = _scanner_statement(check, chosen, bool(sensitive), min_vendor_share) + skipped
    return check


def _variant_label(review: ShapReview) -> str:
    return f"harmonized (ComBat by {review.harmonized_by})" if review.harmonized_by else "not harmonized"


def _case_vendors(reviews: Sequence[ShapReview]) -> pd.Series:
    """The vendor of each case (by ``case_id``) where the features tables name one."""
    vendor = pd.concat([r.cases.set_index("case_id")["vendor"] for r in reviews if len(r.cases)])
    vendor = vendor[~vendor.index.duplicated()]
    return vendor[vendor.astype(str) != ""]


def _raw_vendor_share(reviews: Sequence[ShapReview], vendor: pd.Series) -> pd.Series | None:
    """Per raw feature, the vendor's share of its variance; ``None`` without raw values."""
    # Raw (unharmonized) values decide which features are vendor-sensitive.
    raw = next((r.raw_values for r in reviews if len(r.raw_values)), pd.DataFrame())
    if len(raw):
        return vendor_share(raw.reindex(vendor.index), vendor)
    plain = next((r for r in reviews if not r.harmonized_by), None)
    if plain is None:
        return None
    vals = plain.explanations.values
    return vendor_share(vals[plain.explanations.feature_names], vals["case_id"].map(vendor).fillna("unknown"))


def _by_vendor_share(reviews: Sequence[ShapReview], sens: pd.Series) -> tuple[dict[str, str], list[tuple[float, str]]]:
    """Each model feature's source column, and the features some model uses, most vendor-sensitive first."""
    source_of: dict[str, str] = {}
    used: set[str] = set()
    for r in reviews:
        imp = r.importance
        source_of.update(dict(zip(imp["feature"], imp["source"], strict=True)))
        used.update(imp.loc[imp["mean_abs_shap"] > 0, "feature"])
    candidates = [
        (float(sens.get(source_of[f], sens.get(f, np.nan))), f)
        for f in used
        if source_of.get(f) in sens.index or f in sens.index
    ]
    return source_of, sorted(((s, f) for s, f in candidates if math.isfinite(s)), key=lambda t: (-t[0], t[1]))


def _feature_by_vendor(
    review: ShapReview, feature: str, label: str, vendor: pd.Series, raw_share: float
) -> tuple[list[dict[Hashable, Any]], dict[str, object]]:
    """One feature's SHAP per vendor in one model variant, and its summary line."""
    frame = review.explanations.shap
    case_vendor = frame["case_id"].map(vendor).fillna("unknown")
    s = frame[feature] if feature in frame.columns else pd.Series(0.0, index=frame.index)
    stats = pd.DataFrame(
        {
            "n": s.groupby(case_vendor).size(),
            "mean_shap": s.groupby(case_vendor).mean(),
            "mean_abs_shap": s.abs().groupby(case_vendor).mean(),
        }
    )
    rows = [{"variant": label, "feature": feature, "vendor": v, **row.to_dict()} for v, row in stats.iterrows()]
    line = {
        "variant": label,
        "feature": feature,
        "vendor_share_feature": raw_share,
        "vendor_share_shap": float(vendor_share(s.to_frame(), case_vendor).iloc[0]),
        "mean_abs_shap": float(s.abs().mean()),
    }
    return rows, line


def _vendor_outcome(review: ShapReview, vendor: pd.Series, label: str) -> pd.DataFrame:
    """Cases, event rate and mean risk per vendor in one model variant."""
    cases = case_summary(review.explanations).assign(vendor=lambda c: c["case_id"].map(vendor).fillna("unknown"))
    grouped = cases.groupby("vendor")
    return pd.DataFrame(
        {
            "n_cases": grouped.size(),
            "event_rate": grouped["label"].apply(lambda v: v.astype(float).mean()),
            f"mean_risk_{label}": grouped["risk"].mean(),
        }
    )


def _weighted_vendor_share(summary: pd.DataFrame) -> dict[str, float]:
    """Per variant, the vendor share of the shown features' SHAP, weighted by their mean |SHAP|."""
    shares: dict[str, float] = {}
    for variant in dict.fromkeys(summary["variant"] if len(summary) else []):
        rows = summary[summary["variant"] == variant]
        weights = rows["mean_abs_shap"].to_numpy(dtype=float)
        values = rows["vendor_share_shap"].to_numpy(dtype=float)
        shares[str(variant)] = float(np.average(values, weights=weights)) if weights.sum() > 0 else 0.0
    return shares


def _scanner_statement(check: ScannerCheck, chosen: Sequence[str], sensitive: bool, threshold: float) -> str:
    if not chosen:
        return "No feature used by the model has raw values to compare across vendors."
    lead = (
        f"The {len(chosen)} most vendor-sensitive features the model uses"
        if sensitive
        else f"No feature the model uses is clearly vendor-sensitive (vendor share of the raw variance under "
        f"{threshold:.0%}); the {len(chosen)} most vendor-dependent ones"
    )
    parts = [
        f"{lead} (vendor explains "
        f"{check.summary['vendor_share_feature'].min():.0%}-{check.summary['vendor_share_feature'].max():.0%} "
        "of their raw variance):"
    ]
    for variant, rows in check.summary.groupby("variant", sort=False):
        parts.append(
            f"{variant}: the vendor explains {check.vendor_share[str(variant)]:.1%} of their SHAP variation "
            f"(weighted by mean |SHAP|), total mean |SHAP| {rows['mean_abs_shap'].sum():.3f}."
        )
    if len(check.outcome):
        rates = check.outcome["event_rate"].astype(float)
        parts.append(
            f"Event rate by vendor: {rates.min():.0%}-{rates.max():.0%}. "
            "A large vendor share with similar event rates means the model reads the scanner, not the disease; "
            "when event rates differ by vendor, part of the vendor share can be real case mix."
        )
    return " ".join(parts)

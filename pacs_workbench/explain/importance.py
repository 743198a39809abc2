"""Global SHAP importance: per feature and per feature family, with its spread over the fold models.

A feature's importance is its mean |SHAP| over all explained cases; its rank in every fold model
tells whether that importance is stable (a feature that ranks high in one fold and nowhere in
another is flagged ``unstable``). Family contributions are the summed SHAP values of a family's
features, so they add up per case like the features' own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pacs_workbench.explain.families import FAMILIES
from pacs_workbench.explain.shap import Explanations


def fold_importance(expl: Explanations) -> pd.DataFrame:
    """Mean |SHAP| per feature within each (repeat, outer fold), with the feature's rank there.

    Returns
    -------
    DataFrame
        ``repeat``, ``outer_fold``, ``feature``, ``mean_abs_shap`` (0 when that fold's model lacked
        the feature), ``in_model``, ``rank`` (1 = largest within the fold).
    """
    names = expl.feature_names
    if not names or expl.shap.empty:
        return pd.DataFrame(columns=["repeat", "outer_fold", "feature", "mean_abs_shap", "in_model", "rank"])
    keys = ["repeat", "outer_fold"]
    mean_abs = expl.shap[names].abs().groupby([expl.shap[k] for k in keys]).mean()
    in_model = expl.values[names].notna().groupby([expl.values[k] for k in keys]).any()
    ranks = mean_abs.rank(axis=1, ascending=False, method="min")

    def melt(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        return frame.rename_axis(index=keys).reset_index().melt(id_vars=keys, var_name="feature", value_name=name)

    long = melt(mean_abs, "mean_abs_shap").merge(melt(in_model, "in_model"), on=[*keys, "feature"])
    long = long.merge(melt(ranks, "rank"), on=[*keys, "feature"])
    long["in_model"] = long["in_model"].astype(bool)
    long["rank"] = long["rank"].astype(int)
    return long


def importance_table(expl: Explanations, *, top_k: int = 10, min_stability: float = 0.5) -> pd.DataFrame:
    """Global mean |SHAP| ranking with its spread over folds and repeats.

    Parameters
    ----------
    expl
        From :func:`explain_model`.
    top_k
        A feature "ranks high" in a fold when it is among that fold's ``top_k``.
    min_stability
        A feature that ranks high in some fold but in fewer than this share of folds is flagged
        ``unstable`` (it ranks high in one fold and nowhere in another).

    Returns
    -------
    DataFrame
        One row per feature, sorted by ``rank``: ``feature``, ``source``, ``family``,
        ``feature_class``, ``image_type``, ``mean_abs_shap``, ``mean_abs_shap_sd``, ``rank``,
        ``fold_rank_median``, ``fold_rank_min``, ``fold_rank_max``, ``fold_stability``,
        ``in_model_share``, ``unstable``.
    """
    columns = [
        "feature",
        "source",
        "family",
        "feature_class",
        "image_type",
        "mean_abs_shap",
        "mean_abs_shap_sd",
        "rank",
        "fold_rank_median",
        "fold_rank_min",
        "fold_rank_max",
        "fold_stability",
        "in_model_share",
        "unstable",
    ]
    names = expl.feature_names
    if not names or expl.shap.empty:
        return pd.DataFrame(columns=columns)
    per_fold = fold_importance(expl)
    # A feature the fold's model never used ties with the other unused ones; it does not rank high.
    per_fold["high"] = (per_fold["rank"] <= top_k) & (per_fold["mean_abs_shap"] > 0)
    grouped = per_fold.groupby("feature", sort=False)
    table = expl.features.drop(columns=["n_folds"]).set_index("feature")
    table["mean_abs_shap"] = expl.shap[names].abs().mean()
    table["mean_abs_shap_sd"] = grouped["mean_abs_shap"].std(ddof=1).reindex(table.index).fillna(0.0)
    table["fold_rank_median"] = grouped["rank"].median().reindex(table.index)
    table["fold_rank_min"] = grouped["rank"].min().reindex(table.index)
    table["fold_rank_max"] = grouped["rank"].max().reindex(table.index)
    table["fold_stability"] = grouped["high"].mean().reindex(table.index)
    table["in_model_share"] = grouped["in_model"].mean().reindex(table.index)
    table["unstable"] = (table["fold_stability"] > 0) & (table["fold_stability"] < min_stability)
    table = table.sort_values("mean_abs_shap", ascending=False, kind="stable")
    table["rank"] = np.arange(1, len(table) + 1)
    return table.reset_index()[columns]


def family_contributions(expl: Explanations) -> pd.DataFrame:
    """Per case and repeat, the summed SHAP value of each feature family (additive by construction).

    Returns
    -------
    DataFrame
        ``row_index``, ``case_id``, ``repeat``, ``outer_fold`` and one column per family present.
    """
    keys = expl.shap[["row_index", "case_id", "repeat", "outer_fold"]].reset_index(drop=True)
    if not expl.feature_names:
        return keys
    parts = {}
    for family in FAMILIES:
        members = expl.features.loc[expl.features["family"] == family, "feature"].tolist()
        if members:
            parts[family] = expl.shap[members].sum(axis=1).to_numpy(dtype=float)
    return pd.concat([keys, pd.DataFrame(parts)], axis=1)


def family_importance(expl: Explanations) -> pd.DataFrame:
    """Mean |summed SHAP| per feature family, its share, rank and spread over folds.

    Returns
    -------
    DataFrame
        ``family``, ``n_features``, ``mean_abs_shap``, ``share``, ``rank``,
        ``fold_mean_abs_shap_sd``, ``fold_rank_min``, ``fold_rank_max``.
    """
    columns = [
        "family",
        "n_features",
        "mean_abs_shap",
        "share",
        "rank",
        "fold_mean_abs_shap_sd",
        "fold_rank_min",
        "fold_rank_max",
    ]
    contrib = family_contributions(expl)
    families = [f for f in FAMILIES if f in contrib.columns]
    if not families or contrib.empty:
        return pd.DataFrame(columns=columns)
    absolute = contrib[families].abs()
    overall = absolute.mean()
    per_fold = absolute.groupby([contrib["repeat"], contrib["outer_fold"]]).mean()
    fold_ranks = per_fold.rank(axis=1, ascending=False, method="min")
    counts = expl.features["family"].value_counts()
    table = pd.DataFrame(
        {
            "family": families,
            "n_features": [int(counts.get(f, 0)) for f in families],
            "mean_abs_shap": overall.to_numpy(),
            "fold_mean_abs_shap_sd": per_fold.std(ddof=1).fillna(0.0).to_numpy(),
            "fold_rank_min": fold_ranks.min().to_numpy(dtype=int),
            "fold_rank_max": fold_ranks.max().to_numpy(dtype=int),
        }
    )
    total = float(table["mean_abs_shap"].sum())
    table["share"] = table["mean_abs_shap"] / total if total > 0 else 0.0
    table = table.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table[columns]


def interaction_partner(expl: Explanations, feature: str, candidates: Sequence[str] | None = None) -> str | None:
    """The feature whose values best explain the spread of ``feature``'s SHAP at equal values.

    Rows are sorted by the feature's value and cut into bins; within each bin the SHAP values
    are correlated with every candidate's values (the binning approach of
    ``shap.utils.approximate_interactions``, written to cope with features absent from some
    folds). Returns ``None`` when no candidate varies within the bins.
    """
    names = [c for c in (candidates or expl.feature_names) if c != feature]
    x = expl.values[feature].to_numpy(dtype=float)
    s = expl.shap[feature].to_numpy(dtype=float)
    keep = np.isfinite(x)
    if keep.sum() < 10 or not names:
        return None
    order = np.argsort(x[keep], kind="stable")
    s_sorted = s[keep][order]
    n = order.size
    size = max(5, n // 10)
    best, best_score = None, 0.0
    for name in names:
        other = expl.values[name].to_numpy(dtype=float)[keep][order]
        score = 0.0
        for start in range(0, n, size):
            a, b = s_sorted[start : start + size], other[start : start + size]
            ok = np.isfinite(b)
            if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
                continue
            score += abs(float(np.corrcoef(a[ok], b[ok])[0, 1])) * ok.sum()
        if score > best_score:
            best, best_score = name, score
    return best

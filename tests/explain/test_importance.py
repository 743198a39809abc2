"""Global importance: stability over fold models, family contributions that add up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pacs_workbench.explain.families import FAMILIES, describe_features
from pacs_workbench.explain.importance import family_contributions, importance_table
from pacs_workbench.explain.review import ShapReview
from pacs_workbench.explain.shap import Explanations


def _toy_explanations(per_fold: list[dict[str, float]]) -> Explanations:
    """Explanations with one case per fold and given |SHAP| per feature (0 = feature not in that model)."""
    names = list(per_fold[0])
    rows: list[dict[str, object]] = []
    values: list[dict[str, object]] = []
    for fold, shap_values in enumerate(per_fold):
        keys: dict[str, object] = {"row_index": fold, "case_id": f"c{fold}", "repeat": 0, "outer_fold": fold}
        rows.append({**keys, "label": 0, "expected_value": 0.0, "raw_output": 0.0, "prob": 0.5, **shap_values})
        values.append({**keys, **{n: (1.0 if v else np.nan) for n, v in shap_values.items()}})
    features = describe_features(names, names, ())
    features["n_folds"] = len(per_fold)
    return Explanations(pd.DataFrame(rows), pd.DataFrame(values), features, pd.DataFrame())


def test_a_feature_high_in_one_fold_and_absent_elsewhere_is_unstable() -> None:
    folds = [
        {"original_shape_A": 1.0, "original_glcm_B": 0.5, "original_glcm_C": 0.9},
        {"original_shape_A": 1.0, "original_glcm_B": 0.5, "original_glcm_C": 0.0},
        {"original_shape_A": 1.0, "original_glcm_B": 0.5, "original_glcm_C": 0.0},
        {"original_shape_A": 1.0, "original_glcm_B": 0.5, "original_glcm_C": 0.0},
    ]
    table = importance_table(_toy_explanations(folds), top_k=2, min_stability=0.5).set_index("feature")
    assert table.loc["original_shape_A", "rank"] == 1 and table.loc["original_shape_A", "fold_stability"] == 1.0
    assert not table.loc["original_glcm_B", "unstable"]
    assert table.loc["original_glcm_C", "fold_stability"] == 0.25
    assert table.loc["original_glcm_C", "unstable"]
    assert table.loc["original_glcm_C", "in_model_share"] == 0.25
    assert table.loc["original_glcm_C", "fold_rank_min"] == 2 and table.loc["original_glcm_C", "fold_rank_max"] == 3
    # With room for every feature in the "top", an unused feature still does not rank high there.
    roomy = importance_table(_toy_explanations(folds), top_k=3).set_index("feature")
    assert roomy.loc["original_glcm_C", "fold_stability"] == 0.25 and roomy.loc["original_glcm_C", "unstable"]


def test_family_contributions_add_up_per_case(review: ShapReview) -> None:
    expl = review.explanations
    families = family_contributions(expl)
    summed = families[[f for f in FAMILIES if f in families.columns]].sum(axis=1)
    np.testing.assert_allclose(summed, expl.shap[expl.feature_names].sum(axis=1), atol=1e-12)
    assert review.families["share"].sum() == pytest.approx(1.0)

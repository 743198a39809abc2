"""TreeSHAP: exact (contributions add up to the booster's output), both implementations agree, fold-correct."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import numpy as np
import pandas as pd
import pytest

from pacs_workbench.explain.review import ShapReview
from pacs_workbench.explain.shap import ExplainError, FoldLeakError, explain_model, tree_shap


def test_contributions_add_up_to_the_booster_raw_output(workspace: dict[str, Any], review: ShapReview) -> None:
    shap_file = pd.read_parquet(workspace["root"] / "explain" / "shap.parquet")
    features = review.explanations.feature_names
    models = workspace["root"] / "model" / "models"
    worst = 0.0
    for (repeat, fold), rows in shap_file.groupby(["repeat", "outer_fold"]):
        booster = lightgbm.Booster(model_file=str(models / f"r{repeat}_f{fold}.txt"))
        matrix = pd.read_parquet(models / f"r{repeat}_f{fold}_test.parquet").set_index("row_index")
        raw = booster.predict(matrix.loc[rows["row_index"], booster.feature_name()], raw_score=True)
        total = rows[features].sum(axis=1).to_numpy() + rows["expected_value"].to_numpy()
        worst = max(worst, float(np.max(np.abs(total - raw))))
    assert worst < 1e-9
    assert review.explanations.folds["additivity_max_error"].max() < 1e-9
    # The explained risk is the one the modeling stage reported for that case and repeat.
    assert review.explanations.folds["prediction_max_diff"].max() < 1e-9


def test_pred_contrib_matches_shap_tree_explainer(workspace: dict[str, Any]) -> None:
    models = workspace["root"] / "model" / "models"
    booster = lightgbm.Booster(model_file=str(models / "r0_f0.txt"))
    X = pd.read_parquet(models / "r0_f0_test.parquet")[booster.feature_name()]
    native, native_expected = tree_shap(booster, X, "lightgbm")
    package, package_expected = tree_shap(booster, X, "shap")
    assert native.shape == package.shape == X.shape
    assert np.max(np.abs(native - package)) < 1e-9
    assert np.max(np.abs(native_expected - package_expected)) < 1e-9
    assert np.abs(native).sum() > 0
    with pytest.raises(ExplainError):
        tree_shap(booster, X, "kernel")


def test_every_case_is_explained_by_a_model_that_did_not_train_on_it(
    workspace: dict[str, Any], review: ShapReview
) -> None:
    shap_frame = review.explanations.shap
    models = workspace["root"] / "model" / "models"
    predictions = pd.read_parquet(workspace["root"] / "model" / "predictions.parquet")
    group_of = predictions.drop_duplicates("row_index").set_index("row_index")["group"]
    for (repeat, fold), rows in shap_frame.groupby(["repeat", "outer_fold"]):
        bundle = joblib.load(models / f"r{repeat}_f{fold}.joblib")
        explained = set(rows["row_index"])
        assert explained == set(bundle["test_rows"])
        assert not explained & set(bundle["train_rows"])
        assert not set(group_of[list(explained)]) & set(group_of[bundle["train_rows"]])
    # Each case once per repeat, every predicted case explained.
    assert not shap_frame.duplicated(["row_index", "repeat"]).any()
    assert len(shap_frame) == len(predictions)


def test_a_fold_that_would_explain_its_own_training_cases_is_refused(workspace: dict[str, Any], tmp_path: Path) -> None:
    tampered = tmp_path / "model"
    shutil.copytree(workspace["root"] / "model", tampered)
    bundle_file = tampered / "models" / "r1_f2.joblib"
    bundle = joblib.load(bundle_file)
    bundle["train_rows"] = [*bundle["train_rows"], bundle["test_rows"][0]]
    joblib.dump(bundle, bundle_file)
    with pytest.raises(FoldLeakError, match="repeat 1 fold 2"):
        explain_model(tampered, progress=False)

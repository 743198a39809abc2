"""The planted-truth check: planted families found, a miss said so, no identifiers in its output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pacs_workbench.explain.review import ShapReview
from pacs_workbench.explain.shap import ExplainError
from pacs_workbench.explain.truth import DRIVER_FAMILIES, compare_with_truth, planted_drivers
from tests.explain.fixtures import COEF, make_table


def test_planted_driver_families_rank_above_the_rest(workspace: dict[str, Any], review: ShapReview) -> None:
    # In this table heterogeneity is planted in first-order Entropy only, so texture carries no driver.
    mapping = {**DRIVER_FAMILIES, "x_heterogeneity": ("first order",)}
    check = compare_with_truth(review, workspace["truth"], driver_families=mapping)
    groups = check.groups.set_index("group")
    planted = groups.loc[["shape", "first order", "clinical"], "shap_rank"]
    assert planted.max() < groups.loc["texture", "shap_rank"], check.verdict
    assert check.passed and check.verdict.startswith("**The model found the planted signal.**")
    assert check.drivers["found"].all()
    assert groups.loc["texture", "planted_sd"] == 0 and not groups.loc["texture", "planted"]
    # The default mapping (heterogeneity may show in first order or texture) agrees.
    default = compare_with_truth(review, workspace["truth"])
    assert default.passed
    assert "first order + texture" in set(default.groups["group"])


def test_truth_check_says_so_when_the_model_misses_the_signal(workspace: dict[str, Any], review: ShapReview) -> None:
    # Pretend the outcome was driven by texture only: the model's texture family is not what it leans on.
    check = compare_with_truth(review, workspace["truth"], driver_families={"x_heterogeneity": ("texture",)})
    assert check.passed is False
    assert "did not find" in check.verdict or "only part" in check.verdict


def test_truth_outputs_carry_no_identifiers(workspace: dict[str, Any], review: ShapReview, tmp_path: Path) -> None:
    saved = compare_with_truth(review, workspace["truth"]).save(tmp_path)
    text = Path(saved["truth"]).read_text()
    assert "H4000" not in text and "PatientID" not in text


def test_without_model_json_the_coefficients_come_from_the_linear_predictor(tmp_path: Path) -> None:
    _, drivers = make_table(n_patients=20)
    lp = -1.0 + sum(COEF[d] * drivers[d] for d in COEF)
    pd.DataFrame({"PatientID": "H0000000", "has_imaging": 1, **drivers, "linear_predictor": lp}).to_csv(
        tmp_path / "patients.csv", index=False
    )
    values, coef = planted_drivers(tmp_path)
    assert list(values.columns) == list(COEF) and coef == pytest.approx(COEF, abs=1e-9)
    pd.DataFrame(drivers).to_csv(tmp_path / "patients.csv", index=False)
    with pytest.raises(ExplainError, match="no linear_predictor"):
        planted_drivers(tmp_path)

"""Cases: the right ones picked, their contributions add up, images from the features or a cases table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pacs_workbench.explain.cases import CASE_COLUMNS, case_summary, load_cases
from pacs_workbench.explain.plots import plot_case_studies
from pacs_workbench.explain.review import ShapReview


def test_case_studies_pick_the_right_cases_and_show_their_lesions(review: ShapReview) -> None:
    studies = review.case_studies(3)
    summary = case_summary(review.explanations)
    threshold = float(summary["label"].astype(float).mean())
    top = studies[studies["category"] == "highest risk"]
    assert top["risk"].min() >= summary["risk"].nlargest(3).min() - 1e-12
    fn = studies[studies["category"] == "false negative"]
    fp = studies[studies["category"] == "false positive"]
    assert len(fn) and (fn["label"] == 1).all() and (fn["risk"] < threshold).all()
    assert len(fp) and (fp["label"] == 0).all() and (fp["risk"] >= threshold).all()
    assert studies["image_available"].all()
    case = review.case(str(fn["case_id"].iloc[0]))
    assert case.expected_value + case.contributions["shap"].sum() == pytest.approx(case.raw_output, abs=1e-9)
    # Raw (unharmonized) values from the features table sit beside the model inputs.
    assert case.contributions["raw_value"].notna().sum() >= 7
    fig = plot_case_studies(review, studies.head(2))
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2 * 3


def test_image_paths_can_come_from_a_separate_cases_table(workspace: dict[str, Any], tmp_path: Path) -> None:
    features = pd.read_parquet(workspace["features"])
    features.drop(columns=["image", "mask"]).to_parquet(tmp_path / "features.parquet")
    features[["case_id", "image", "mask"]].assign(series_folder="identified/zone").to_parquet(
        tmp_path / "cases.parquet"
    )
    cases, raw, notes = load_cases(tmp_path / "features.parquet", images_file=tmp_path / "cases.parquet")
    assert not notes and list(cases.columns) == list(CASE_COLUMNS)
    assert cases["image"].map(lambda p: Path(p).is_file()).all() and "original_shape_Sphericity" in raw.columns
    _, _, notes = load_cases(tmp_path / "features.parquet")
    assert any("'image'" in n for n in notes)

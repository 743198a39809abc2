"""Figures of the review: a missing lesion image is drawn as missing."""

from __future__ import annotations

from pathlib import Path

from pacs_workbench.explain.plots import plot_case_studies
from pacs_workbench.explain.review import ShapReview


def test_a_missing_lesion_image_is_shown_as_missing(review: ShapReview, tmp_path: Path) -> None:
    case_id = str(review.explanations.shap["case_id"].iloc[0])
    cases = review.cases.copy()
    cases.loc[cases["case_id"] == case_id, "image"] = str(tmp_path / "gone.nii.gz")
    partial = ShapReview(
        review.explanations, review.importance, review.fold_importance, review.families, cases, review.raw_values
    )
    assert partial.lesion(case_id) == ("", "")
    fig = plot_case_studies(partial, [case_id])
    assert not any(ax.images for ax in fig.axes)
    assert any("not available" in t.get_text() for ax in fig.axes for t in ax.texts)

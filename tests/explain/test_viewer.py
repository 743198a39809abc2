"""The case picker lists every case and draws the one picked."""

from __future__ import annotations

from pacs_workbench.explain.review import ShapReview
from pacs_workbench.explain.viewer import case_picker


def test_case_picker_lists_every_case_and_draws_one(review: ShapReview) -> None:
    picker = case_picker(review)
    dropdown = picker.children[0]
    assert len(dropdown.options) == review.explanations.shap["case_id"].nunique()
    assert dropdown.value == review.typical_cases(1)[0]
    assert "JupyterLab" in picker._repr_mimebundle_()["text/plain"]
    image = picker.children[1]
    first = bytes(image.value)
    assert first.startswith(b"\x89PNG")
    dropdown.value = dropdown.options[0][1]  # the highest-risk case
    assert bytes(image.value).startswith(b"\x89PNG") and bytes(image.value) != first

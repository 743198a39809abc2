"""Scanner dependence: ComBat removes the vendor from the contributions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pacs_workbench.explain.review import ShapReview
from pacs_workbench.explain.scanner import scanner_dependence
from tests.explain.fixtures import VENDORS


def test_harmonization_removes_the_vendor_from_the_contributions(
    review: ShapReview, unharmonized: ShapReview, tmp_path: Path
) -> None:
    assert review.harmonized_by == "Manufacturer" and unharmonized.harmonized_by is None
    check = scanner_dependence(review, unharmonized)
    shares = check.vendor_share
    before, after = shares["not harmonized"], shares["harmonized (ComBat by Manufacturer)"]
    # Texture and firstorder Mean carry a pure vendor shift: without ComBat their SHAP follows the vendor.
    assert before > 0.05 and after < before / 3, check.statement
    chosen = set(check.summary["feature"])
    assert "original_glcm_Contrast" in chosen and check.summary["vendor_share_feature"].min() >= 0.1
    assert set(check.per_vendor["vendor"]) == set(VENDORS)
    assert set(check.outcome["vendor"]) == set(VENDORS)
    written = check.save(tmp_path)
    assert pd.read_csv(written["per_vendor"]).shape[0] == len(check.per_vendor)
    single = scanner_dependence(review)
    assert "no before/after" in single.statement

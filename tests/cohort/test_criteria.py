"""Tests for pacs_workbench.cohort.criteria: each criterion, the attrition table, validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pacs_workbench.cohort.build import (
    build_cohort,
    select_cohort,
)
from pacs_workbench.cohort.criteria import CohortCriteria
from tests.cohort.cohort_fixtures import (
    candidates,
    checked_criteria,
    final_counts,
    index_dir,
    key,
    rich_index,
)

__all__ = ["candidates", "index_dir", "key", "rich_index"]  # fixtures used by name


def test_attrition_counts_each_criterion(index_dir: Path, key: bytes) -> None:
    criteria = CohortCriteria(slice_thickness_max=3.0)
    built = build_cohort(index_dir, criteria, key)
    steps = built.attrition.set_index("criterion")
    assert steps.iloc[0]["series"] == 7
    assert list(built.attrition["series_excluded"]) == [0, 1, 1, 1, 1]
    assert steps.iloc[-1][["patients", "studies", "series"]].tolist() == [2, 3, 3]


def test_contrast_vendor_and_date_criteria(index_dir: Path, key: bytes) -> None:
    with_contrast = build_cohort(index_dir, CohortCriteria(contrast="with"), key)
    assert len(with_contrast.series) == 1
    ge = build_cohort(index_dir, CohortCriteria(vendors=["ge medical"]), key)
    assert set(ge.series["Manufacturer"]) == {"GE MEDICAL SYSTEMS"}
    dated = build_cohort(index_dir, CohortCriteria(date_from="2020-01-01", date_to="2020-12-31"), key)
    assert len(dated.series) == 2
    with pytest.raises(ValueError, match="contrast"):
        CohortCriteria.from_mapping({"contrast": "maybe"})


def test_kernel_age_and_outcome_criteria(candidates: pd.DataFrame, key: bytes) -> None:
    sharp = select_cohort(candidates, checked_criteria(kernel="sharp"), key)
    assert sharp.attrition.iloc[-1]["criterion"] == "kernel class: sharp"
    assert final_counts(sharp.attrition) == [3, 3, 3]
    # EHR age at scan replaces the DICOM age (MRN001 has none in DICOM; MRN003 is 68, not 71).
    ages = candidates.set_index("SeriesInstanceUID")["age_years"]
    assert ages["1.1.1"] == 59 and ages["1.2.1"] == 60 and ages["3.1.1"] == 68
    assert ages["4.1.1"] == 50  # imaging only: DICOM age
    middle = select_cohort(candidates, checked_criteria(age_min=55, age_max=65), key)
    assert final_counts(middle.attrition) == [1, 2, 2]
    known = select_cohort(candidates, checked_criteria(outcome_known=True), key)
    assert set(known.series["outcome"]) == {0, 1}  # MRN003 (no outcome) and MRN004 (no EHR) left out
    assert final_counts(known.attrition) == [2, 3, 3]


def test_baseline_nodule_and_change_criteria(candidates: pd.DataFrame, key: bytes) -> None:
    large = select_cohort(candidates, checked_criteria(min_baseline_nodule_mm=8), key)
    # MRN001's nodule reached 10 mm on the follow-up only; MRN002 had 9 mm at baseline.
    assert large.attrition.iloc[-1]["criterion"] == "nodule >= 8 mm on the baseline report"
    assert final_counts(large.attrition) == [1, 1, 1]
    assert large.series["baseline_nodule_mm"].tolist() == [9.0]
    # Without the baseline study (date window), the follow-up becomes MRN001's baseline.
    later = select_cohort(candidates, checked_criteria(date_from="2020-06-01", min_baseline_nodule_mm=8), key)
    assert final_counts(later.attrition) == [2, 2, 2]
    growing = select_cohort(candidates, checked_criteria(nodule_change="growing"), key)
    assert final_counts(growing.attrition) == [1, 2, 2]  # whole patient, both studies
    assert growing.series.sort_values("study_index")["nodule_size_mm"].tolist() == [6.0, 10.0]


def test_criteria_validation_and_params_round_trip() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kernel": "medium"}, "kernel"), ({"nodule_change": "bigger"}, "nodule_change"),
        ({"age_min": 70, "age_max": 60}, "age_min"),
    ]  # fmt: skip
    for bad, name in cases:
        with pytest.raises(ValueError, match=name):
            CohortCriteria.from_mapping(bad)
    criteria = CohortCriteria(vendors=["GE"], kernel="soft", min_baseline_nodule_mm=6)
    params = criteria.to_params()
    assert CohortCriteria.from_mapping({**params, "unrelated": 1}) == criteria
    assert isinstance(params["min_baseline_nodule_mm"], float) and params["vendors"] == ["GE"]

"""Tests for pacs_workbench.cohort.summaries: studies per patient, follow-up intervals."""

from __future__ import annotations

from pathlib import Path

from pacs_workbench.cohort.build import (
    build_cohort,
)
from pacs_workbench.cohort.criteria import CohortCriteria
from pacs_workbench.cohort.summaries import follow_up_intervals, studies_per_patient
from tests.cohort.cohort_fixtures import (
    index_dir,
    key,
)

__all__ = ["index_dir", "key"]  # fixtures used by name


def test_follow_up_and_age_cap(index_dir: Path, key: bytes) -> None:
    built = build_cohort(index_dir, CohortCriteria(), key)
    assert follow_up_intervals(built.series).tolist() == [181]
    per_patient = studies_per_patient(built.series)
    assert per_patient.set_index("studies")["patients"].to_dict() == {1: 2, 2: 1}
    assert built.series["age_years"].max() == 90

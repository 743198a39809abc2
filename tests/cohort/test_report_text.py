"""Tests for pacs_workbench.cohort.report_text: identifiers stripped from report text."""

from __future__ import annotations

from pacs_workbench.cohort.report_text import strip_phi
from tests.cohort.report_fixtures import PHI, REPORT


def test_strip_phi_removes_header_signature_dates_and_ids() -> None:
    body = strip_phi(REPORT)
    for value in PHI:
        assert value not in body
    assert body.startswith("CLINICAL HISTORY:")
    assert "spiculated nodule in the left lower lobe" in body
    # Without any section heading, labelled header lines still go.
    bare = strip_phi("Name: Rosalind Quintero\nMRN: H1234567\nSmall nodule in the RUL, 4 mm.")
    assert bare == "Small nodule in the RUL, 4 mm."

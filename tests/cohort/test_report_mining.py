"""Tests for pacs_workbench.cohort.report_mining: report fields, the synthetic extract, linking."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort.report_mining import link_reports, mine_report, mine_reports, score_fields
from pacs_workbench.core.pseudonym import pseudonymize
from tests.cohort.report_fixtures import REPORT
from tests.orthanc import cached_extract

KEY = bytes(range(32))


def test_mine_report_fields() -> None:
    mined = mine_report(REPORT)
    f = mined.fields
    assert f["has_prior"] is True
    assert f["nodule_present"] and f["nodule_count"] == 2  # the impression's repeat is not counted
    assert (f["nodule_size_mm"], f["nodule_location"], f["nodule_change"]) == (14.0, "LLL", "growing")
    assert f["lung_rads"] == "4X"
    assert f["finding_pleural_effusion"] == "present"  # history's "no effusion on prior" is not a finding
    assert f["finding_pericardial_effusion"] == "absent"
    assert f["finding_pneumothorax"] == "absent"
    assert f["finding_lymphadenopathy"] == "present"
    assert f["finding_consolidation"] is None
    big, small = mined.nodules
    assert (big["size_mm"], big["prior_size_mm"], big["margin"]) == (14.0, 9.0, "spiculated")
    assert (small["size_mm"], small["location"], small["change"]) == (3.0, "RML", "stable")
    assert small["composition"] == "solid"


@pytest.fixture(scope="module")
def extract() -> Path:
    return cached_extract(patients=4, seed=3)


def _truth(extract: Path) -> pd.DataFrame:
    """Per report: what the reader wrote (sizes rounded as printed), lobe, change, Lung-RADS."""
    nodules = pd.read_csv(extract / "truth" / "nodules.csv", dtype={"AccessionNumber": str})
    studies = pd.read_csv(extract / "truth" / "studies.csv", dtype={"AccessionNumber": str, "lung_rads": str})
    nodules = nodules.sort_values(["tracking_uid", "study_index"])
    nodules["written_mm"] = nodules["reported_diameter_mm"].map(lambda v: float(f"{v:.0f}"))
    nodules["prior_mm"] = nodules.groupby("tracking_uid")["reported_diameter_mm"].shift()
    growth = nodules["reported_diameter_mm"] - nodules["prior_mm"]
    nodules["change"] = ["new" if pd.isna(g) else "growing" if float(g) >= 1.5 else "stable" for g in growth]
    rows = []
    for accession, group in nodules.groupby("AccessionNumber"):
        main = group.sort_values("written_mm").iloc[-1]
        rows.append(
            {
                "AccessionNumber": accession,
                "nodule_count": len(group),
                "nodule_size_mm": main["written_mm"],
                "nodule_location": main["lobe"],
                "nodule_change": main["change"],
            }
        )
    truth = studies[["AccessionNumber", "lung_rads"]].merge(pd.DataFrame(rows), on="AccessionNumber", how="left")
    truth["pseudo_accession"] = [pseudonymize(KEY, a, "accession") for a in truth["AccessionNumber"]]
    return truth


def test_mining_the_synthetic_reports_matches_ground_truth(extract: Path) -> None:
    mining = mine_reports(extract / "reports", KEY)
    assert mining.errors.empty
    truth = _truth(extract)
    assert len(mining.reports) == len(truth)
    merged = truth.merge(mining.reports, on="pseudo_accession", suffixes=("_gold", ""))
    assert len(merged) == len(truth)  # every report keyed by its pseudonymized accession
    gold = merged[[c for c in merged.columns if c.endswith("_gold")]].rename(columns=lambda c: c[:-5])
    scores = score_fields(
        merged,
        gold,
        {"nodule_size_mm": 0.01, "nodule_location": None, "nodule_change": None, "lung_rads": None,
         "nodule_count": 0.0},
    ).set_index("field")  # fmt: skip
    print(scores.to_string())
    assert scores.loc["nodule_size_mm", "recall"] == 1.0  # size extraction accuracy
    assert scores.loc["nodule_size_mm", "precision"] == 1.0
    assert (scores["precision"] >= 0.9).all() and (scores["recall"] >= 0.9).all(), scores
    # Negated findings the reports always carry.
    assert set(mining.reports["finding_pneumothorax"]) == {"absent"}
    assert set(mining.reports["finding_pleural_effusion"]) == {"absent"}


def test_outputs_carry_no_text_or_identifiers(extract: Path) -> None:
    mining = mine_reports(extract / "reports", KEY)
    phi = [v for v in (extract / "truth" / "phi_values.txt").read_text().splitlines() if v]
    for frame in (mining.reports, mining.nodules, mining.mentions):
        cells = {str(v) for v in frame.to_numpy().ravel()} | set(frame.columns)
        assert not [v for v in phi if any(v in c for c in cells)]
        assert not any(len(c) > 40 for c in cells if not c.replace(".", "").isdigit())  # no free text


def test_link_reports_and_bad_input(extract: Path, tmp_path: Path) -> None:
    studies = pd.read_csv(extract / "truth" / "studies.csv", dtype=str)
    reports_dir = tmp_path / "reports"
    reports_dir.mkdir()
    for path in sorted((extract / "reports").glob("*.txt"))[:2]:
        (reports_dir / path.name).write_text(path.read_text())
    (reports_dir / "A0000000.txt").write_text("PATIENT: DOE, JOHN\nMRN: H0000000\n")  # header only
    mining = mine_reports(reports_dir, KEY)
    assert list(mining.errors["source"]) == ["report #1"] and "empty" in mining.errors["error"][0]
    linked, counts = link_reports(mining, studies, KEY)
    assert counts["reports"] == 2 and counts["linked"] == 2 and counts["report_errors"] == 1
    assert counts["studies_without_report"] == len(studies) - 2
    expected = {pseudonymize(KEY, s, "study") for s in studies["StudyInstanceUID"]}
    assert set(linked["pseudo_study_id"]) <= expected

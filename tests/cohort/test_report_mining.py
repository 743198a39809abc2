"""Report mining: PHI stripping, negation, sizes and units, scored against ground truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort import report_mining as rt
from pacs_workbench.core.pseudonym import pseudonymize
from tests.orthanc import cached_extract

KEY = bytes(range(32))
SENTENCES = Path(__file__).resolve().parents[1] / "data" / "report_sentences.csv"

REPORT = """RADIOLOGY REPORT
Lakeside General Hospital - Department of Radiology

PATIENT: QUINTERO, ROSALIND
MRN: H1234567
DOB: 03/14/1951    SEX: F
ACCESSION: A7654321
EXAM DATE: 05/06/2019
REFERRING PHYSICIAN: Dr. Evander Kristiansen
EXAM: CT CHEST WITH CONTRAST

CLINICAL HISTORY: 68-year-old female, current smoker. Follow-up of pulmonary nodule. No effusion on prior.

TECHNIQUE: Axial CT images of the chest were obtained following intravenous contrast, 1 mm slices.

COMPARISON: CT chest 11/02/2018 (accession A1111111).

FINDINGS:
LUNGS: A 1.4 x 1.1 cm spiculated nodule in the left lower lobe (series 3, image 40), increased from 9 mm.
Additional 3 mm solid nodule in the right middle lobe, stable. No pneumothorax.
PLEURA: Small right pleural effusion. No pericardial effusion.
MEDIASTINUM: Enlarged subcarinal lymph node, 12 mm short axis.

IMPRESSION:
1. 14 mm spiculated nodule in the left lower lobe with interval growth. Lung-RADS category 4X.
2. Small right pleural effusion.

Electronically signed by: Dr. Tiberius Oduya, MD on 05/06/2019 17:02
"""
PHI = ["QUINTERO", "ROSALIND", "H1234567", "03/14/1951", "A7654321", "A1111111", "Kristiansen", "Oduya",
       "05/06/2019", "11/02/2018", "Lakeside"]  # fmt: skip


def test_strip_phi_removes_header_signature_dates_and_ids() -> None:
    body = rt.strip_phi(REPORT)
    for value in PHI:
        assert value not in body
    assert body.startswith("CLINICAL HISTORY:")
    assert "spiculated nodule in the left lower lobe" in body
    # Without any section heading, labelled header lines still go.
    bare = rt.strip_phi("Name: Rosalind Quintero\nMRN: H1234567\nSmall nodule in the RUL, 4 mm.")
    assert bare == "Small nodule in the RUL, 4 mm."


def test_mine_report_fields() -> None:
    mined = rt.mine_report(REPORT)
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


@pytest.mark.parametrize(
    ("text", "sizes"),
    [("8 mm", [8.0]), ("8-mm", [8.0]), ("8mm", [8.0]), ("0.8 cm", [8.0]), ("1.2 x 0.9 cm", [12.0]),
     ("12 x 9 x 7 mm", [12.0]), ("4-6 mm", [6.0]), ("11 millimeters", [11.0]), ("2 centimetres", [20.0]),
     ("series 4, image 17", []), ("3.5 mm", [3.5])],
)  # fmt: skip
def test_sizes_and_units(text: str, sizes: list[float]) -> None:
    assert [m["mm"] for m in rt.measurements(f"A {text} nodule.")] == sizes


def test_prior_size_is_not_the_current_size() -> None:
    (nodule,) = rt.nodules_in_sentence("The RUL nodule now measures 9 mm, previously measuring 6 mm.")
    assert (nodule["size_mm"], nodule["prior_size_mm"], nodule["change"]) == (9.0, 6.0, "growing")


def test_hand_written_sentences_precision_recall() -> None:
    gold = pd.read_csv(SENTENCES, dtype=str, keep_default_na=False).replace("", None)
    assert len(gold["sentence"].unique()) >= 40
    rows = []
    for sentence, finding in zip(gold["sentence"], gold["finding"], strict=True):
        statuses = [m[1] for m in rt.find_mentions(sentence) if m[0] == finding]
        nodules = [n for n in rt.nodules_in_sentence(sentence) if n["finding"] == finding]
        first = nodules[0] if nodules else {}
        rows.append(
            {
                "status": max(statuses, key=rt.STATUS_ORDER.__getitem__) if statuses else None,
                "size_mm": first.get("size_mm"),
                "location": first.get("location"),
                "change": first.get("change"),
            }
        )
    scores = rt.score_fields(
        pd.DataFrame(rows), gold, {"status": None, "size_mm": 0.01, "location": None, "change": None}
    ).set_index("field")
    print(scores.to_string())
    assert int(gold["status"].notna().sum()) >= 40
    assert (scores["precision"] >= 0.9).all(), scores
    assert (scores["recall"] >= 0.9).all(), scores


# --- against the synthetic extract's ground truth -------------------------------------------------


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
    mining = rt.mine_reports(extract / "reports", KEY)
    assert mining.errors.empty
    truth = _truth(extract)
    assert len(mining.reports) == len(truth)
    merged = truth.merge(mining.reports, on="pseudo_accession", suffixes=("_gold", ""))
    assert len(merged) == len(truth)  # every report keyed by its pseudonymized accession
    gold = merged[[c for c in merged.columns if c.endswith("_gold")]].rename(columns=lambda c: c[:-5])
    scores = rt.score_fields(
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
    mining = rt.mine_reports(extract / "reports", KEY)
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
    mining = rt.mine_reports(reports_dir, KEY)
    assert list(mining.errors["source"]) == ["report #1"] and "empty" in mining.errors["error"][0]
    linked, counts = rt.link_reports(mining, studies, KEY)
    assert counts["reports"] == 2 and counts["linked"] == 2 and counts["report_errors"] == 1
    assert counts["studies_without_report"] == len(studies) - 2
    expected = {pseudonymize(KEY, s, "study") for s in studies["StudyInstanceUID"]}
    assert set(linked["pseudo_study_id"]) <= expected

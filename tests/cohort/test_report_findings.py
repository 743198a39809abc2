"""Tests for pacs_workbench.cohort.report_findings: sizes, prior sizes, hand-written sentences."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort.report_findings import find_mentions, measurements, nodules_in_sentence
from pacs_workbench.cohort.report_mining import STATUS_ORDER, score_fields

SENTENCES = Path(__file__).resolve().parents[1] / "data" / "report_sentences.csv"


@pytest.mark.parametrize(
    ("text", "sizes"),
    [("8 mm", [8.0]), ("8-mm", [8.0]), ("8mm", [8.0]), ("0.8 cm", [8.0]), ("1.2 x 0.9 cm", [12.0]),
     ("12 x 9 x 7 mm", [12.0]), ("4-6 mm", [6.0]), ("11 millimeters", [11.0]), ("2 centimetres", [20.0]),
     ("series 4, image 17", []), ("3.5 mm", [3.5])],
)  # fmt: skip
def test_sizes_and_units(text: str, sizes: list[float]) -> None:
    assert [m["mm"] for m in measurements(f"A {text} nodule.")] == sizes


def test_prior_size_is_not_the_current_size() -> None:
    (nodule,) = nodules_in_sentence("The RUL nodule now measures 9 mm, previously measuring 6 mm.")
    assert (nodule["size_mm"], nodule["prior_size_mm"], nodule["change"]) == (9.0, 6.0, "growing")


def test_hand_written_sentences_precision_recall() -> None:
    gold = pd.read_csv(SENTENCES, dtype=str, keep_default_na=False).replace("", None)
    assert len(gold["sentence"].unique()) >= 40
    rows = []
    for sentence, finding in zip(gold["sentence"], gold["finding"], strict=True):
        statuses = [m[1] for m in find_mentions(sentence) if m[0] == finding]
        nodules = [n for n in nodules_in_sentence(sentence) if n["finding"] == finding]
        first = nodules[0] if nodules else {}
        rows.append(
            {
                "status": max(statuses, key=STATUS_ORDER.__getitem__) if statuses else None,
                "size_mm": first.get("size_mm"),
                "location": first.get("location"),
                "change": first.get("change"),
            }
        )
    scores = score_fields(
        pd.DataFrame(rows), gold, {"status": None, "size_mm": 0.01, "location": None, "change": None}
    ).set_index("field")
    print(scores.to_string())
    assert int(gold["status"].notna().sum()) >= 40
    assert (scores["precision"] >= 0.9).all(), scores
    assert (scores["recall"] >= 0.9).all(), scores

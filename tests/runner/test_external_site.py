"""The demo's external validation: a second synthetic site through 01-03, scored by the frozen package."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from pacs_workbench.runner.demo import EXTERNAL_DIR

pytestmark = pytest.mark.slow


def test_external_site_is_validated_and_listed_on_the_run_page(tiny_run: dict[str, Any]) -> None:
    reports = tiny_run["reports"]
    assert tiny_run["result"].ok, (reports / "run.json").read_text()
    last = tiny_run["result"].notebooks[-1]
    assert (last.name, last.status) == ("07_external_validation", "ok")
    assert f'href="{EXTERNAL_DIR}/07_external_validation.html"' in (reports / "index.html").read_text()
    site = reports / EXTERNAL_DIR
    for stem in ("01_cohort", "02_deid_audit", "03_preprocessing", "07_external_validation"):
        assert (site / f"{stem}.html").is_file(), stem
    report = (site / "07_external_validation.html").read_text()
    assert "AUC" in report and "Calibration" in report


def test_external_predictions_come_from_the_other_site(tiny_run: dict[str, Any]) -> None:
    data = tiny_run["data"]
    external = data / EXTERNAL_DIR
    predictions = pd.read_parquet(external / "predict" / "predictions.parquet")
    cases = pd.read_parquet(external / "preprocessed" / "cases.parquet")
    assert len(predictions) > 0 and predictions["risk"].between(0, 1).all()
    assert set(predictions["case_id"]) <= set(cases["case_id"])
    # Pseudonyms under the external site's own key: no patient is shared with development.
    development = pd.read_parquet(data / "preprocessed" / "cases.parquet")
    assert not set(predictions["pseudo_patient_id"]) & set(development["pseudo_patient_id"])
    assert predictions["label"].notna().all() and predictions["label"].isin([0, 1]).all()


def test_external_reports_carry_no_phi_and_no_key(tiny_run: dict[str, Any]) -> None:
    external = tiny_run["data"] / EXTERNAL_DIR
    phi = [v.strip() for v in (external / "truth" / "phi_values.txt").read_text().splitlines() if len(v.strip()) >= 4]
    key_hex = (external / "project.key").read_text().strip()
    assert phi
    site = tiny_run["reports"] / EXTERNAL_DIR
    outputs = [*site.glob("*.html"), *site.glob("*.ipynb"), site / "run.json"]
    outputs.append(external / "predict" / "predict_summary.json")
    for output in outputs:
        text = output.read_text(encoding="utf-8", errors="replace").lower()
        assert not [value for value in phi if value.lower() in text], output.name
        assert key_hex.lower() not in text, output.name

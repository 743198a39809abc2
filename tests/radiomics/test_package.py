"""The model package: the final model on every case, its feature specification and its manifest."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pandas as pd
import pytest

from pacs_workbench.core.files import sha256_file
from pacs_workbench.radiomics.package import MANIFEST_FILE, UNSEEN_BATCH_RULE
from tests.radiomics.fixtures import make_table, run_quiet, small_config


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    table = make_table(n_patients=40)
    out = tmp_path_factory.mktemp("model")
    run_quiet(table, out, small_config(recalibrate=True))
    return out / "package", table


def test_manifest_lists_every_file_with_its_sha256(packaged: tuple[Path, pd.DataFrame]) -> None:
    package, _ = packaged
    manifest = json.loads((package / MANIFEST_FILE).read_text())
    on_disk = {p.name for p in package.iterdir() if p.is_file() and p.name != MANIFEST_FILE}
    assert set(manifest["files"]) == on_disk
    assert {"pipeline.joblib", "booster.txt", "features.json", "model_card.md", "versions.json"} <= on_disk
    for name, digest in manifest["files"].items():
        assert sha256_file(package / name) == digest, name


def test_final_model_is_the_fold_pipeline_fitted_on_every_case(packaged: tuple[Path, pd.DataFrame]) -> None:
    package, table = packaged
    bundle = joblib.load(package / "pipeline.joblib")
    fold = joblib.load(package.parent / "models" / "r0_f0.joblib")
    final, folded = bundle["pipeline"], fold["pipeline"]
    assert [name for name, _ in final.steps] == [name for name, _ in folded.steps]
    prep = final.named_steps["prep"]
    assert prep.n_samples_fit_ == len(table) > len(fold["train_rows"])
    assert prep.combat_ is not None and list(prep.combat_.batches_) == sorted(table["Manufacturer"].unique())
    assert bundle["recalibrator"] is not None
    # The booster text is the final model's booster: same predictions on the final model's input.
    booster = lightgbm.Booster(model_file=str(package / "booster.txt"))
    matrix = prep.transform(table[fold["input_columns"]])
    expected = final.predict_proba(table[fold["input_columns"]])[:, 1]
    assert np.allclose(booster.predict(matrix), expected)


def test_feature_specification_holds_order_dtypes_and_ranges(packaged: tuple[Path, pd.DataFrame]) -> None:
    package, table = packaged
    spec = json.loads((package / "features.json").read_text())
    described = json.loads((package / "package.json").read_text())
    fold = joblib.load(package.parent / "models" / "r0_f0.joblib")
    assert [s["name"] for s in spec] == described["input_columns"] == fold["input_columns"]
    by_name = {s["name"]: s for s in spec}
    column = by_name["original_firstorder_F0"]
    assert column["role"] == "radiomic" and column["dtype"] == "float64"
    assert column["min"] == pytest.approx(table["original_firstorder_F0"].min())
    assert column["max"] == pytest.approx(table["original_firstorder_F0"].max())
    assert by_name["wavelet_glcm_N0"]["missing"] == int(table["wavelet_glcm_N0"].isna().sum()) > 0
    assert by_name["smoking"]["role"] == "clinical"
    assert set(by_name["smoking"]["categories"]) == {"never", "former", "current"}
    assert by_name["Manufacturer"]["role"] == "batch"


def test_package_records_its_rules_and_what_it_lacks(packaged: tuple[Path, pd.DataFrame]) -> None:
    described = json.loads((packaged[0] / "package.json").read_text())
    assert described["unseen_batch_rule"] == UNSEEN_BATCH_RULE
    assert described["batches_seen"] == sorted(packaged[1]["Manufacturer"].unique())
    # Made from a table alone: no parameter files, no criteria, and no segmentation model or CNN.
    assert described["radiomics_params"] is None and described["preprocessing"] is None
    assert described["cohort_criteria"] is None
    assert set(described["not_used"]) == {"segmentation_model", "cnn"}
    low, high = described["risk_cutoffs"]
    assert 0.0 < low < high < 1.0

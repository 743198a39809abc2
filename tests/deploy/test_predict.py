"""predict: a package applied to new cases through the development code path, its refusals and flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from pacs_workbench.cli import main
from pacs_workbench.deploy import PackageError, load_package, predict_cases
from pacs_workbench.deploy.predict import build_rows
from pacs_workbench.radiomics.package import write_manifest
from tests.deploy.fixtures import DEV_VENDORS, EXTERNAL_VENDORS, develop, make_site


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sites")
    make_site(root / "dev", 24, seed=1, vendors=DEV_VENDORS)
    developed = develop(root / "dev", root / "model")
    # Another site: other seeds (brighter lesions), another vendor mix with one the model never saw.
    make_site(root / "ext", 14, seed=2, vendors=EXTERNAL_VENDORS, first_case_seed=14)
    return {"root": root, "package": root / "model" / "package", "table": developed["table"]}


def _predict(sites: dict[str, Any], site: str, out: str, **kwargs: Any) -> pd.DataFrame:
    root = sites["root"]
    predict_cases(sites["package"], root / site / "cases.parquet", root / out, cohort=root / site / "cohort.parquet",
                  progress=False, **kwargs)  # fmt: skip
    return pd.read_parquet(root / out / "predictions.parquet")


def _copy_package(sites: dict[str, Any], tmp_path: Path) -> Path:
    copy = tmp_path / "package"
    shutil.copytree(sites["package"], copy)
    return copy


def test_round_trip_gives_the_final_models_risks_on_the_development_cases(sites: dict[str, Any]) -> None:
    predictions = _predict(sites, "dev", "pred_dev")
    final = joblib.load(sites["package"] / "pipeline.joblib")["pipeline"]
    table = sites["table"].set_index("case_id")
    described = json.loads((sites["package"] / "package.json").read_text())
    expected = final.predict_proba(table.loc[predictions["case_id"], described["input_columns"]])[:, 1]
    assert len(predictions) == len(table)
    assert np.allclose(predictions["risk"], expected)
    # Development cases lie inside the development ranges and come from known scanners.
    assert (predictions["n_out_of_range"] == 0).all() and not predictions["unseen_batch"].any()
    assert set(predictions["risk_group"]) <= {"low", "intermediate", "high"}


def test_out_of_range_inputs_and_unseen_scanners_are_flagged_per_case(sites: dict[str, Any]) -> None:
    predictions = _predict(sites, "ext", "pred_ext")
    spec = {s["name"]: s for s in json.loads((sites["package"] / "features.json").read_text())}
    rows = pd.read_parquet(sites["root"] / "pred_ext" / "rows.parquet").set_index("case_id")
    mean = spec["original_firstorder_Mean"]
    for _, row in predictions.iterrows():
        value = rows.at[row["case_id"], "original_firstorder_Mean"]
        outside = value < mean["min"] or value > mean["max"]
        assert ("out_of_range:original_firstorder_Mean" in list(row["flags"])) == outside
        assert row["unseen_batch"] == (row["Manufacturer"] == "Philips")
    assert predictions["n_out_of_range"].gt(0).any(), "the brighter site should leave the development range"
    assert set(predictions.columns) >= {"case_id", "pseudo_patient_id", "risk", "risk_group", "flags"}


def test_a_package_that_does_not_match_its_manifest_is_refused(sites: dict[str, Any], tmp_path: Path) -> None:
    copy = _copy_package(sites, tmp_path)
    booster = copy / "booster.txt"
    booster.write_text(booster.read_text().replace("learning_rate", "learning_rate ", 1))
    with pytest.raises(PackageError, match=r"does not match its manifest.*booster\.txt changed"):
        load_package(copy)
    root = sites["root"]
    code = main(["predict", str(copy), str(root / "ext" / "cases.parquet"), "--out", str(tmp_path / "out"),
                 "--cohort", str(root / "ext" / "cohort.parquet")])  # fmt: skip
    assert code == 2 and not (tmp_path / "out" / "predictions.parquet").exists()


def test_an_added_or_missing_file_is_refused(sites: dict[str, Any], tmp_path: Path) -> None:
    copy = _copy_package(sites, tmp_path)
    (copy / "extra.txt").write_text("not part of the package")
    with pytest.raises(PackageError, match=r"extra\.txt not in the manifest"):
        load_package(copy)
    (copy / "extra.txt").unlink()
    (copy / "model_card.md").unlink()
    with pytest.raises(PackageError, match=r"model_card\.md missing"):
        load_package(copy)


def test_radiomics_parameters_that_changed_are_refused(sites: dict[str, Any], tmp_path: Path) -> None:
    copy = _copy_package(sites, tmp_path)
    params = copy / "radiomics_params.yaml"
    params.write_text(params.read_text().replace("binWidth: 25", "binWidth: 10"))
    write_manifest(copy)  # the manifest agrees: the parameters no longer match the model's
    with pytest.raises(PackageError, match="radiomics parameter hash mismatch"):
        load_package(copy)


def test_cases_preprocessed_otherwise_are_refused(sites: dict[str, Any]) -> None:
    root = sites["root"]
    make_site(root / "other", 4, seed=3, vendors=DEV_VENDORS, preprocessing={"target_spacing_mm": (2.0, 2.0, 2.0)})
    with pytest.raises(PackageError, match="preprocessing parameter hash mismatch: 4 CT case"):
        _predict(sites, "other", "pred_other")
    assert not (root / "pred_other" / "predictions.parquet").exists()


def test_missing_features_are_refused_with_their_names(sites: dict[str, Any]) -> None:
    package = load_package(sites["package"])
    cohort = pd.read_parquet(sites["root"] / "ext" / "cohort.parquet").drop(columns=["age_years"])
    features = sites["table"].drop(columns=["age_years"])
    with pytest.raises(PackageError, match=r"missing features: 1 column\(s\).*age_years"):
        build_rows(package, features, features, cohort, None)
    with pytest.raises(PackageError, match="give --cohort"):
        build_rows(package, features, features, None, None)


@pytest.mark.slow
def test_external_validation_report_renders(sites: dict[str, Any], tmp_path: Path) -> None:
    root = sites["root"]
    out = tmp_path / "validation"
    code = main(["predict", str(sites["package"]), str(root / "ext" / "cases.parquet"), "--out", str(out),
                 "--cohort", str(root / "ext" / "cohort.parquet"), "--label", "outcome",
                 "--bootstrap", "50"])  # fmt: skip
    assert code == 0
    html = (out / "07_external_validation.html").read_text()
    shown = ("calibration-in-the-large", "external, recalibrated", "decision curve", "data:image/png", "Philips")
    for expected in (*shown, "TRIPOD"):
        assert expected in html, expected
    assert str(tmp_path) not in html and "Traceback" not in html
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert predictions["label"].notna().all()

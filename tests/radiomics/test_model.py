"""Modeling stage: grouped nested CV without leakage, outputs, guard rails, CLI, reference AUC."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pandas as pd
import pytest

from pacs_workbench.cli import main
from pacs_workbench.core.params import reference_dir
from pacs_workbench.radiomics import model as modeling
from pacs_workbench.radiomics.combat import ComBat
from pacs_workbench.radiomics.model import (
    EventsPerVariableWarning,
    GroupLeakError,
    ModelingConfig,
    check_groups_disjoint,
    run_modeling,
)
from pacs_workbench.radiomics.table import ModelingError, label_at_horizon
from pacs_workbench.radiomics.transformers import RadiomicsPreprocessor
from tests.radiomics.fixtures import make_table, run_quiet, small_config


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, table):
    out = tmp_path_factory.mktemp("model")
    summary = run_quiet(table, out, small_config(recalibrate=True))
    return out, summary


# --- grouping and leakage ------------------------------------------------------------------------


def test_no_patient_in_train_and_test_of_any_fold(fitted, table) -> None:
    out, _ = fitted
    preds = pd.read_parquet(out / "predictions.parquet")
    # Every case predicted exactly once per repeat.
    assert sorted(preds["row_index"]) == list(range(len(table)))
    patients = table["patient"].to_numpy()
    for path in sorted((out / "models").glob("r*_f*.joblib")):
        bundle = joblib.load(path)
        train, test = set(patients[bundle["train_rows"]]), set(patients[bundle["test_rows"]])
        assert train and test and not train & test
        assert not set(bundle["train_rows"]) & set(bundle["test_rows"])
    # And the prediction table agrees: each patient sits in one outer fold per repeat.
    assert (preds.groupby(["repeat", "group"])["outer_fold"].nunique() == 1).all()


def test_group_overlap_is_refused() -> None:
    check_groups_disjoint(["a", "b"], ["c"])
    with pytest.raises(GroupLeakError, match="1 patient group"):
        check_groups_disjoint(["a", "b"], ["b", "c"])


def test_fold_with_overlapping_groups_is_reported_not_fitted(table) -> None:
    X = table[["original_firstorder_F0", "wavelet_glcm_N1"]]
    y = table["label"].to_numpy()
    groups = table["patient"].to_numpy()
    first = np.flatnonzero(groups == groups[0])
    train = np.arange(len(table))  # contains the test patient: a leaking split
    task = modeling.FoldTask(0, 0, X, y, groups, train, first, small_config(batch=None, clinical=()),
                             list(X.columns), [], 0)
    result = modeling.fit_fold(task)
    assert "GroupLeakError" in result["error"]


def test_in_fold_steps_never_see_test_rows(tmp_path, table, monkeypatch) -> None:
    """Spies on every preprocessing and ComBat fit: each sees a subset of one outer training part."""
    seen: list[set[int]] = []
    combat_seen: list[set[int]] = []
    prep_fit, combat_fit = RadiomicsPreprocessor.fit, ComBat.fit

    def spy_prep(self, X, y=None):
        seen.append(set(X.index))
        return prep_fit(self, X, y)

    def spy_combat(self, X, y=None):
        combat_seen.append(set(X.index))
        return combat_fit(self, X, y)

    monkeypatch.setattr(RadiomicsPreprocessor, "fit", spy_prep)
    monkeypatch.setattr(ComBat, "fit", spy_combat)
    # The package's final model is fitted on every case by design (tests/radiomics/test_package.py).
    run_quiet(table, tmp_path, small_config(), workers=1, save_package=False)
    bundles = [joblib.load(p) for p in sorted((tmp_path / "models").glob("r*_f*.joblib"))]
    trains = [set(b["train_rows"]) for b in bundles]
    tests = [set(b["test_rows"]) for b in bundles]
    assert len(seen) > len(bundles) and len(combat_seen) == len(seen)
    for rows in seen + combat_seen:
        owners = [k for k, tr in enumerate(trains) if rows <= tr]
        assert owners, "a fit saw rows outside every training part"
        assert all(not rows & tests[k] for k in owners)


def test_saved_preprocessing_is_fitted_on_training_rows_only(fitted, table) -> None:
    out, _ = fitted
    bundle = joblib.load(out / "models" / "r0_f0.joblib")
    prep = bundle["preprocessor"]
    X = table[bundle["input_columns"]]
    train = bundle["train_rows"]
    assert prep.n_samples_fit_ == len(train) and prep.combat_.n_samples_fit_ == len(train)
    assert prep.combat_ is not None
    again = RadiomicsPreprocessor(**prep.get_params()).fit(X.iloc[train], table["label"].iloc[train])
    assert again.combat_ is not None
    np.testing.assert_allclose(again.combat_.grand_mean_, prep.combat_.grand_mean_)
    np.testing.assert_allclose(again.medians_, prep.medians_)
    leaky = RadiomicsPreprocessor(**prep.get_params()).fit(X, table["label"])
    assert leaky.combat_ is not None
    assert not np.allclose(leaky.combat_.gamma_star_, prep.combat_.gamma_star_)


def test_explain_inputs_reproduce_the_predictions(fitted, table) -> None:
    out, _ = fitted
    preds = pd.read_parquet(out / "predictions.parquet")
    folds = pd.read_parquet(out / "models" / "folds.parquet")
    assert len(folds) == 3
    for row in folds.itertuples():
        bundle = joblib.load(out / row.pipeline)
        booster = lightgbm.Booster(model_file=str(out / row.booster))
        matrix = pd.read_parquet(out / row.test_matrix)
        assert list(matrix.columns[2:]) == bundle["feature_columns"] == booster.feature_name()
        assert list(matrix["row_index"]) == bundle["test_rows"]
        recomputed = bundle["preprocessor"].transform(table.iloc[bundle["test_rows"]][bundle["input_columns"]])
        np.testing.assert_allclose(recomputed.to_numpy(), matrix[bundle["feature_columns"]].to_numpy())
        expected = preds[(preds["repeat"] == row.repeat) & (preds["outer_fold"] == row.outer_fold)]
        expected = expected.set_index("row_index").loc[matrix["row_index"], "prob_lightgbm"]
        np.testing.assert_allclose(booster.predict(matrix[bundle["feature_columns"]]), expected, rtol=1e-6)
    # Filtering happened in-fold: the near-constant and the duplicated feature are gone.
    cols = bundle["feature_columns"]
    assert "original_shape_Constant" not in cols
    assert not {"original_firstorder_F0", "original_firstorder_F0_copy"} <= set(cols)
    assert {"age", "smoking=current"} <= set(cols)


# --- outputs -------------------------------------------------------------------------------------


def test_metrics_json_fields(fitted, table) -> None:
    out, summary = fitted
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("auc", "auc_ci", "brier", "pr_auc", "n", "n_events", "calibration_slope", "models", "comparisons"):
        assert key in metrics
    assert metrics["n"] == len(table) and metrics["n_events"] == int(table["label"].sum())
    assert metrics["n_groups"] == table["patient"].nunique()
    assert set(metrics["models"]) == {"lightgbm", "radiomics_lr", "clinical_lr", "lightgbm_recalibrated"}
    for model in metrics["models"].values():
        lo, hi = model["auc_ci"]
        assert 0 <= lo <= model["auc"] <= hi <= 1
        assert len(model["risk_strata"]) == 3 and sum(s["n"] for s in model["risk_strata"]) == len(table)
        assert model["decision_curve"][0]["threshold"] == pytest.approx(0.05)
    # The synthetic signal is real: the radiomics model beats chance.
    assert metrics["auc"] > 0.7
    assert "lightgbm_vs_clinical_lr" in metrics["comparisons"]
    assert summary["auc"] == metrics["auc"]
    preds = pd.read_parquet(out / "predictions.parquet")
    assert {"row_index", "case_id", "group", "label", "repeat", "outer_fold", "prob_lightgbm",
            "prob_radiomics_lr", "prob_clinical_lr", "prob_lightgbm_recalibrated"} <= set(preds.columns)
    card = (out / "model_card.md").read_text()
    for section in ("## Intended use", "## Data", "## Validation", "## Performance", "## Limits"):
        assert section in card
    assert "P00" not in card and "C00" not in card  # counts only, no identifiers


def test_reproducible_with_random_state(tmp_path, table) -> None:
    cfg = small_config(batch=None, clinical=(), repeats=2)
    run_quiet(table, tmp_path / "a", cfg)
    run_quiet(table, tmp_path / "b", cfg, workers=2)
    run_quiet(table, tmp_path / "c", small_config(batch=None, clinical=(), repeats=2, random_state=1))
    a, b, c = (pd.read_parquet(tmp_path / d / "predictions.parquet") for d in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not a["outer_fold"].equals(c["outer_fold"]) or not np.allclose(a["prob_lightgbm"], c["prob_lightgbm"])
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert ma["auc_ci"] == mb["auc_ci"]


# --- time to event and guard rails ---------------------------------------------------------------


def test_time_to_event_run_reports_exclusions(tmp_path, table) -> None:
    rng = np.random.default_rng(3)
    t2e = table.copy()
    t2e["event"] = t2e["label"]
    t2e["months"] = np.where(t2e["event"] == 1, rng.uniform(1, 24, len(t2e)), rng.uniform(6, 60, len(t2e)))
    expected_label, censored = label_at_horizon(t2e["event"], t2e["months"], 24.0)
    cfg = small_config(label="event", time="months", horizon=24.0, batch=None)
    run_quiet(t2e.drop(columns=["label"]), tmp_path, cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_excluded_censored"] == censored > 0
    assert metrics["n"] == len(t2e) - censored
    assert metrics["n_events"] == int(expected_label.sum())
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    np.testing.assert_array_equal(preds.sort_values("row_index")["label"], expected_label.dropna().astype(int))
    assert "censored before the horizon" in (tmp_path / "model_card.md").read_text()
    with pytest.raises(ModelingError, match="horizon"):
        run_quiet(t2e, tmp_path / "x", small_config(label="event", time="months"))


def test_epv_warning(tmp_path) -> None:
    wide = make_table(n_patients=40, p_noise=40, seed=1)
    with pytest.warns(EventsPerVariableWarning, match="events per variable"):
        run_modeling(wide, tmp_path / "wide", small_config(batch=None, clinical=()), progress=False)
    metrics = json.loads((tmp_path / "wide" / "metrics.json").read_text())
    assert metrics["events_per_variable"] < 10 and metrics["warnings"]


def test_no_epv_warning_with_few_features(tmp_path) -> None:
    narrow = make_table(n_patients=160, p_noise=0, seed=2).drop(
        columns=["original_shape_Constant", "original_firstorder_F0_copy", "original_firstorder_F2"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", EventsPerVariableWarning)
        run_modeling(narrow, tmp_path, small_config(batch=None, clinical=()), progress=False, save_models=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["events_per_variable"] >= 10


def test_bad_input_is_explained(tmp_path, table) -> None:
    bad = table.copy()
    bad.loc[0, "label"] = 2
    with pytest.raises(ModelingError, match="0/1"):
        run_quiet(bad, tmp_path, small_config())
    with pytest.raises(ModelingError, match="not in the table"):
        run_quiet(table, tmp_path, small_config(group="nope"))
    assert not (tmp_path / "metrics.json").exists()


# --- command line --------------------------------------------------------------------------------


def test_cli_end_to_end_on_gzip_csv(tmp_path, table, capsys) -> None:
    path = tmp_path / "features.csv.gz"
    table.to_csv(path, index=False, compression="gzip")
    out = tmp_path / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            [
                "model", str(path), "--label", "label", "--group", "patient", "--out", str(out),
                "--batch", "Manufacturer", "--clinical", "age,smoking", "--repeats", "1",
                "--outer-folds", "3", "--inner-folds", "2", "--bootstrap", "100", "--risk-cutoffs", "0.2,0.6",
            ]
        )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == len(table) and 0 <= summary["auc"] <= 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["lightgbm"]["risk_cutoffs"] == [0.2, 0.6]
    assert (out / "predictions.parquet").is_file() and (out / "model_card.md").is_file()
    assert len(list((out / "models").glob("r0_f*.txt"))) == 3
    assert not list(out.rglob("*.tmp"))
    code = main(["model", str(path), "--label", "age", "--group", "patient", "--out", str(tmp_path / "bad")])
    assert code != 0


# --- reference data ------------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.slow
def test_radmlbench_reference_auc(tmp_path) -> None:
    ref = reference_dir()
    if ref is None:
        pytest.skip("PACS_WORKBENCH_REFERENCE is not set (points at the shared reference data)")
    folder = ref / "radmlbench"
    with (folder / "radmlbench_datasets_and_aucs.csv").open() as handle:
        published = {r["dataset"]: float(r["auc_final_30x10cv"]) for r in csv.DictReader(handle)}
    name = "HNSCC"  # 93 cases, 105 features: small and quick
    cfg = ModelingConfig(label="Target", group="ID", id_col="ID", repeats=1, random_state=0, n_boot=200)
    summary = run_quiet(Path(folder / "datasets" / f"{name}.gz"), tmp_path, cfg, save_models=False)
    # Nested CV lands at or a little below the optimistic, non-nested published figure; well above
    # it would mean leakage.
    assert published[name] - 0.15 <= summary["auc"] <= published[name] + 0.05

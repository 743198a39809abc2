"""The CNN and the hybrid in LightGBM's folds: the same test patients, no leakage, cached, deterministic, reported."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil

import joblib
import numpy as np
import pandas as pd
import pytest

from pacs_workbench.radiomics import cnn as cnn_module
from pacs_workbench.radiomics import deep as deep_module
from pacs_workbench.radiomics import folds
from pacs_workbench.radiomics.cnn import CropError
from pacs_workbench.radiomics.deep import DeepConfig
from tests.radiomics.fixtures import TINY_DEEP, lesion_cohort, lesion_config, run_quiet


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> pd.DataFrame:
    return lesion_cohort(tmp_path_factory.mktemp("cohort"), n_patients=24)


def _digest(crop: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(crop, dtype=np.float32).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def spied(cohort, tmp_path_factory):
    """One run with the CNN and the hybrid, recording which crops each network was fitted on and embedded."""
    fitted: dict[int, set[str]] = {}
    embedded: list[tuple[int, list[str]]] = []
    real_fit, real_transform = cnn_module.CNNClassifier.fit, cnn_module.CNNClassifier.transform
    counter = itertools.count()

    def fit(self, X, y, groups=None):
        self.spy_ = next(counter)
        fitted[self.spy_] = {_digest(c) for c in np.asarray(X)}
        return real_fit(self, X, y, groups)

    def transform(self, X):
        embedded.append((self.spy_, [_digest(c) for c in np.asarray(X)]))
        return real_transform(self, X)

    out = tmp_path_factory.mktemp("deep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cnn_module.CNNClassifier, "fit", fit)
        patch.setattr(cnn_module.CNNClassifier, "transform", transform)
        summary = run_quiet(cohort, out, lesion_config(), deep=TINY_DEEP)
    return {"out": out, "summary": summary, "fitted": fitted, "embedded": embedded}


def test_cnn_and_lightgbm_see_the_same_test_patients_per_fold(spied, cohort) -> None:
    out = spied["out"]
    folds = pd.read_parquet(out / "models" / "cnn" / "folds.parquet")
    assert len(folds) == 6  # 2 repeats x 3 outer folds
    patients = cohort["patient"].to_numpy()
    for row in folds.itertuples():
        bundle = joblib.load(out / "models" / f"r{row.repeat}_f{row.outer_fold}.joblib")
        assert list(row.test_rows) == bundle["test_rows"] and list(row.train_rows) == bundle["train_rows"]
        assert not set(patients[list(row.test_rows)]) & set(patients[list(row.train_rows)])
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert {"prob_lightgbm", "prob_cnn", "prob_hybrid"} <= set(predictions.columns)
    assert predictions[["prob_cnn", "prob_hybrid"]].notna().all().all()
    # One row per case and repeat: every model's prediction of a case comes from the same held-out fold.
    assert sorted(predictions.loc[predictions["repeat"] == 0, "row_index"]) == list(range(len(cohort)))


def test_a_test_case_is_never_embedded_by_a_cnn_that_saw_it(spied, cohort) -> None:
    fitted, embedded = spied["fitted"], spied["embedded"]
    assert len(fitted) == 6 and embedded
    crops = np.load(spied["out"] / "models" / "cnn" / "crops.npy")
    digests = [_digest(c) for c in crops]
    assert len(set(digests)) == len(digests)
    folds = pd.read_parquet(spied["out"] / "models" / "cnn" / "folds.parquet")
    tests = [{digests[i] for i in row.test_rows} for row in folds.itertuples()]
    for network, rows in embedded:
        seen = fitted[network]
        # Each network embeds either its own training rows or rows it never saw: the test rows of its fold.
        unseen = [r for r in rows if r not in seen]
        assert not unseen or any(set(unseen) == t for t in tests)
        assert not set(unseen) & seen
    for test in tests:
        embedders = [n for n, rows in embedded if set(rows) == test]
        assert embedders and all(not test & fitted[n] for n in embedders)
    # The embeddings written for the hybrid are those of the test rows, by fold.
    written = pd.read_parquet(spied["out"] / "models" / "cnn" / "embeddings.parquet")
    for row in folds.itertuples():
        part = written[(written["repeat"] == row.repeat) & (written["outer_fold"] == row.outer_fold)]
        assert sorted(part["row_index"]) == sorted(row.test_rows)


def test_metrics_and_card_report_the_paired_comparisons(spied) -> None:
    metrics = json.loads((spied["out"] / "metrics.json").read_text())
    assert {"cnn", "hybrid"} <= set(metrics["models"])
    for key in ("cnn_vs_lightgbm", "hybrid_vs_lightgbm"):
        comparison = metrics["comparisons"][key]
        assert len(comparison["delta_auc_ci"]) == 2
        assert comparison["delong"]["applies"] and 0 <= comparison["delong"]["p_value"] <= 1
        assert len(comparison["delong"]["p_value_per_repeat"]) == 2
    for record in (metrics["models"]["cnn"], metrics["models"]["hybrid"]):
        assert {"auc_ci", "brier", "calibration_slope", "decision_curve"} <= set(record)
    assert metrics["settings"]["deep"]["crop_size"] == TINY_DEEP["crop_size"]
    assert metrics["deep"]["crops"]["n"] == 24
    card = (spied["out"] / "model_card.md").read_text()
    assert "## Paired comparisons" in card and "| cnn - lightgbm |" in card and "| hybrid - lightgbm |" in card
    assert "3-D CNN on lesion crops" in card and "L00" not in card and "Q00" not in card


def test_a_rerun_trains_nothing_and_a_hybrid_change_reuses_the_checkpoints(spied, cohort, monkeypatch, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(spied["out"], out)  # the cache lives in the output folder
    before = pd.read_parquet(out / "predictions.parquet")

    def refuse(*args, **kwargs):
        raise AssertionError("trained although nothing changed")

    monkeypatch.setattr(cnn_module.CNNClassifier, "fit", refuse)
    again = run_quiet(cohort, out, lesion_config(), deep=TINY_DEEP)
    deep = again["cache"]["deep"]
    assert deep["cnn_trained"] == 0 and deep["results_from_cache"] == 6 and again["cache"]["fitted"] == 0
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "predictions.parquet"))
    # Another LightGBM grid refits LightGBM and the hybrid, from the same CNN checkpoints.
    changed = run_quiet(cohort, out, lesion_config(lightgbm_grid={"clf__max_depth": [1]}), deep=TINY_DEEP)
    assert changed["cache"]["fitted"] == 6
    assert changed["cache"]["deep"]["cnn_trained"] == 0 and changed["cache"]["deep"]["results_from_cache"] == 0
    after = pd.read_parquet(out / "predictions.parquet")
    np.testing.assert_array_equal(after["prob_cnn"], before["prob_cnn"])


def test_runs_are_deterministic_whatever_the_workers(spied, cohort, tmp_path) -> None:
    run_quiet(cohort, tmp_path / "w2", lesion_config(), deep=TINY_DEEP, workers=2, cache=False)
    a = pd.read_parquet(spied["out"] / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "w2" / "predictions.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert not (tmp_path / "w2" / "cache").exists()


def test_a_case_without_a_mask_stops_the_run_before_any_fit(cohort, tmp_path, monkeypatch) -> None:
    table = cohort.copy()
    table.loc[3, "mask"] = None

    def refuse(*args, **kwargs):
        raise AssertionError("fitted although the crops could not be made")

    monkeypatch.setattr(folds, "_fit_fold", refuse)
    with pytest.raises(CropError, match=r"1 of 24 case\(s\) cannot be cropped.*L003"):
        run_quiet(table, tmp_path / "out", lesion_config(), deep=TINY_DEEP)
    assert not (tmp_path / "out" / "predictions.parquet").exists()


def test_a_run_without_the_cnn_removes_its_models(spied, cohort, tmp_path) -> None:
    out = tmp_path / "out"
    run_quiet(cohort, out, lesion_config(repeats=1), deep=TINY_DEEP, save_package=False)
    assert (out / "models" / "cnn" / "folds.parquet").is_file()
    summary = run_quiet(cohort, out, lesion_config(repeats=1), save_package=False)
    assert "cnn" not in summary["models"] and not (out / "models" / "cnn").exists()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="epoch"):
        DeepConfig.coerce({"epoch": 3})
    assert DeepConfig.coerce({"widths": [4, 8, 8, 16]}).widths == (4, 8, 8, 16)
    assert deep_module.cnn_seed(1) != deep_module.cnn_seed(2)

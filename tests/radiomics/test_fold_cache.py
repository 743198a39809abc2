"""Fold results cached by content hash: a rerun with nothing changed fits nothing, any change refits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pacs_workbench.radiomics import fold_cache, folds
from pacs_workbench.radiomics import model as modeling
from pacs_workbench.radiomics import package as packaging
from tests.radiomics.fixtures import make_table, run_quiet, small_config


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table(n_patients=50)


def _no_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any fold fit or final fit fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("a fit ran although nothing changed")

    monkeypatch.setattr(folds, "_fit_fold", refuse)
    monkeypatch.setattr(modeling, "fit_final_model", refuse)
    monkeypatch.setattr(packaging, "fit_final_model", refuse)


def test_a_rerun_with_nothing_changed_fits_nothing(tmp_path, table, monkeypatch) -> None:
    config = small_config(repeats=2)
    first = run_quiet(table, tmp_path / "out", config)
    assert first["cache"]["fitted"] == 6 and first["cache"]["from_cache"] == 0
    assert first["cache"]["final_model"] == "fitted"
    before = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    with monkeypatch.context() as patched:
        _no_fits(patched)
        second = run_quiet(table, tmp_path / "out", config, workers=2)
    assert second["cache"] == {**first["cache"], "fitted": 0, "from_cache": 6, "final_model": "cached"}
    pd.testing.assert_frame_equal(before, pd.read_parquet(tmp_path / "out" / "predictions.parquet"))
    assert second["auc"] == first["auc"] and second["auc_ci"] == first["auc_ci"]
    # A reporting-only setting (bootstrap resamples) changes no fit.
    with monkeypatch.context() as patched:
        _no_fits(patched)
        third = run_quiet(table, tmp_path / "out", small_config(repeats=2, n_boot=50))
    assert third["cache"]["fitted"] == 0


def test_a_changed_table_or_setting_refits(tmp_path, table) -> None:
    config = small_config()
    run_quiet(table, tmp_path / "out", config, save_package=False)
    changed = table.copy()
    changed.loc[0, "original_firstorder_F0"] += 1.0
    assert run_quiet(changed, tmp_path / "out", config, save_package=False)["cache"]["fitted"] == 3
    refit = run_quiet(changed, tmp_path / "out", small_config(corr_threshold=0.8), save_package=False)
    assert refit["cache"]["fitted"] == 3
    # Only the entries of the last run are kept.
    assert len(list((tmp_path / "out" / "cache" / "folds").glob("*.joblib"))) == 3
    off = run_quiet(changed, tmp_path / "off", config, save_package=False, cache=False)
    assert off["cache"]["fitted"] == 3 and not (tmp_path / "off" / "cache").exists()


def test_broken_or_foreign_entries_are_misses(tmp_path) -> None:
    path = fold_cache.entry_path(tmp_path, "k1")
    fold_cache.write_entry(path, "k1", {"probs": np.arange(3)})
    assert np.array_equal(fold_cache.read_entry(path, "k1")["probs"], np.arange(3))
    assert fold_cache.read_entry(path, "k2") is None
    path.write_bytes(b"not a joblib file")
    assert fold_cache.read_entry(path, "k1") is None
    assert fold_cache.read_entry(tmp_path / "missing.joblib", "k1") is None


def test_table_digest_sees_values_labels_and_groups(table) -> None:
    X = table[["original_firstorder_F0", "age"]]
    y, groups = table["label"].to_numpy(), table["patient"].to_numpy()
    base = fold_cache.table_digest(X, y, groups)
    assert base == fold_cache.table_digest(X.copy(), y.copy(), groups.copy())
    flipped = y.copy()
    flipped[0] = 1 - flipped[0]
    moved = groups.copy()
    moved[0] = "another"
    others = {
        fold_cache.table_digest(X.assign(age=X["age"] + 1e-9), y, groups),
        fold_cache.table_digest(X, flipped, groups),
        fold_cache.table_digest(X, y, moved),
        fold_cache.table_digest(X.rename(columns={"age": "age2"}), y, groups),
    }
    assert base not in others and len(others) == 4

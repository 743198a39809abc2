"""The review: outputs written with their columns and cached, a clear note without fold models, the notebook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill as pm
import pytest

from pacs_workbench.core.params import NOTEBOOK_DIR
from pacs_workbench.explain.plots import (
    plot_beeswarm,
    plot_case_studies,
    plot_family_importance,
    plot_scanner_dependence,
    plot_shap_importance,
)
from pacs_workbench.explain.review import ShapReview, describe_model, run_explain
from pacs_workbench.explain.scanner import scanner_dependence
from pacs_workbench.explain.shap import KEY_COLUMNS, ExplainError, explain_model
from pacs_workbench.explain.truth import compare_with_truth

NOTEBOOK = NOTEBOOK_DIR / "06_shap_review.ipynb"


def test_missing_folds_fail_clearly_or_skip_with_a_note(tmp_path: Path) -> None:
    with pytest.raises(ExplainError, match="no fold models"):
        explain_model(tmp_path, progress=False)
    empty = run_explain(tmp_path, missing_ok=True, progress=False)
    assert not empty.available and "No fold models" in empty.notes[0]
    assert empty.importance.empty and empty.case_studies().empty
    assert compare_with_truth(empty, tmp_path).passed is None
    assert "nothing" in describe_model(tmp_path)
    figures = [
        plot_shap_importance(empty.importance),
        plot_beeswarm(empty.explanations, empty.importance),
        plot_family_importance(empty.families),
        plot_scanner_dependence(scanner_dependence(empty)),
        plot_case_studies(empty, []),
    ]
    assert all(fig.axes for fig in figures)


def test_outputs_are_written_with_their_columns_and_cached(workspace: dict[str, Any], review: ShapReview) -> None:
    out = workspace["root"] / "explain"
    shap_file = pd.read_parquet(out / "shap.parquet")
    assert list(shap_file.columns[: len(KEY_COLUMNS)]) == list(KEY_COLUMNS)
    assert "original_shape_Sphericity" in shap_file.columns and "age" in shap_file.columns
    importance = pd.read_csv(out / "shap_importance.csv")
    for column in ("feature", "family", "mean_abs_shap", "rank", "fold_stability", "unstable"):
        assert column in importance.columns
    assert list(importance["rank"]) == list(range(1, len(importance) + 1))
    assert importance["mean_abs_shap"].is_monotonic_decreasing
    assert set(importance["family"]) == {"shape", "first order", "texture", "clinical"}
    manifest = json.loads((out / "explain.json").read_text())
    assert manifest["n_folds"] == 8 and manifest["additivity_max_error"] < 1e-9
    again = run_explain(workspace["root"] / "model", out, features_file=workspace["features"], progress=False)
    assert again.from_cache
    pd.testing.assert_frame_equal(again.importance, review.importance)


def test_notebook_is_saved_without_outputs_and_has_literal_parameters() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# 06")
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines()[1:]:
        assert ": " in line and " = " in line and "  # " in line, line
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
            assert "def " not in cell.source and "class " not in cell.source
    declared = pm.inspect_notebook(str(NOTEBOOK))
    assert {"model_dir", "unharmonized_model_dir", "features_file", "truth_dir", "out_dir", "n_cases"} <= set(declared)


@pytest.mark.slow
def test_notebook_runs_under_papermill(workspace: dict[str, Any], tmp_path: Path) -> None:
    root = workspace["root"]
    out_dir = tmp_path / "explain"
    executed = tmp_path / "06_shap_review.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters={
            "model_dir": str(root / "model"),
            "unharmonized_model_dir": str(root / "model_unharmonized"),
            "features_file": str(workspace["features"]),
            "truth_dir": str(workspace["truth"]),
            "out_dir": str(out_dir),
            "n_cases": 2,
        },
        cwd=str(tmp_path),
        progress_bar=False,
        execution_timeout=300,  # a hung cell fails the test instead of stalling the run
    )
    for name in ("shap.parquet", "shap_importance.csv", "shap_family_importance.csv", "explain.json",
                 "truth_check.json", "scanner_dependence.csv"):  # fmt: skip
        assert (out_dir / name).is_file(), name
    text = executed.read_text()
    assert "The model found the planted signal" in text
    assert "image/png" in text
    assert "H4000" not in text, "an identifier from the truth table reached the report"
    assert json.loads((out_dir / "truth_check.json").read_text())["passed"] is True


@pytest.mark.slow
def test_notebook_before_the_modeling_stage_has_run(tmp_path: Path) -> None:
    """No model folder yet (e.g. a run too small to model): every section says so instead of failing."""
    executed = tmp_path / "06_shap_review.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters={
            "model_dir": str(tmp_path / "no_model"),
            "features_file": str(tmp_path / "no_features.parquet"),
            "truth_dir": "",
            "out_dir": str(tmp_path / "explain"),
        },
        cwd=str(tmp_path),
        progress_bar=False,
        execution_timeout=300,  # a hung cell fails the test instead of stalling the run
    )
    text = executed.read_text()
    assert "the modeling stage has not run" in text and "No fold models" in text
    assert not (tmp_path / "explain" / "shap.parquet").exists()

"""Shared fixtures: one small end-to-end run of every notebook, reused by the tests that inspect its outputs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pacs_workbench.runner import prepare_demo_data, retarget_params, run_notebooks
from pacs_workbench.runner.demo import EXTERNAL_DIR, external_validation_step

PATIENTS = 12
# The demo's second site, validated with the run's model package as `pacs-workbench demo` does.
EXTERNAL_PATIENTS = 16
# Enough patients for a model, with a cross-validation small enough for a test.
SMALL_MODEL = {"repeats": 1, "outer_folds": 3, "inner_folds": 2, "bootstrap": 100, "cnn_epochs": 2, "cnn_crop_size": 16}
# A few training steps: the segmentation notebook runs end to end, not to a good model.
SMALL_SEGMENTATION = {
    "iterations": 40, "active_learning_seeds": 1, "active_learning_rounds": 1, "active_learning_iterations": 10,
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tiny")
    data_dir = root / "data"
    data_dir.mkdir()
    prepare_demo_data(data_dir, patients=PATIENTS, seed=3)
    params = retarget_params(data_dir)
    params["05_radiomics_model"].update(SMALL_MODEL)
    params["04_segmentation"].update(SMALL_SEGMENTATION)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    external = external_validation_step(data_dir / EXTERNAL_DIR, data_dir / "model" / "package",
                                        patients=EXTERNAL_PATIENTS, seed=4, base_dir=root)  # fmt: skip
    result = run_notebooks(params_file, root / "reports", base_dir=root, followed_by=[external])
    # Run again at once, before any test touches the outputs: everything is up to date and nothing re-runs.
    rerun = run_notebooks(params_file, root / "reports", base_dir=root, followed_by=[external])
    return {"root": root, "data": data_dir, "params": params_file, "reports": root / "reports", "result": result,
            "rerun": rerun}  # fmt: skip



"""Every numbered notebook end to end on a tiny synthetic brain MR extract, from `notebooks/params/mr.yaml`.

The parameter file's own settings drive the run (its `synth` section prepares the extract, pointed at a
folder of the test with fewer patients; model and segmentation sizes as in the CT tiny run), so what
`pacs-workbench run --params notebooks/params/mr.yaml` does is what this test checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pacs_workbench.core.params import NOTEBOOK_DIR
from pacs_workbench.runner import run as runner
from pacs_workbench.runner import run_notebooks
from tests.conftest import SMALL_MODEL, SMALL_SEGMENTATION

pytestmark = pytest.mark.slow

MR_PARAMS = NOTEBOOK_DIR / "params" / "mr.yaml"
PREFIX = "data/mr_demo"
PATIENTS = 12


def _retarget(value: Any, data_dir: Path) -> Any:
    if isinstance(value, str) and value.startswith(PREFIX):
        return str(data_dir / value.removeprefix(PREFIX).lstrip("/"))
    if isinstance(value, dict):
        return {k: _retarget(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_retarget(v, data_dir) for v in value]
    return value


@pytest.fixture(scope="module")
def mr_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mr")
    data_dir = root / "data"
    params = _retarget(yaml.safe_load(MR_PARAMS.read_text()), data_dir)
    params["synth"]["patients"] = PATIENTS
    params["01_cohort"]["params_file"] = str(root / "params.yaml")
    params["03_preprocessing"]["target_spacing_mm"] = [2.0, 2.0, 2.0]
    params["05_radiomics_model"].update(SMALL_MODEL)
    params["04_segmentation"].update(SMALL_SEGMENTATION)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_notebooks(params_file, root / "reports", base_dir=root)
    return {"root": root, "data": data_dir, "reports": root / "reports", "result": result}


def test_every_notebook_renders_on_the_mr_demo(mr_run: dict[str, Any]) -> None:
    assert mr_run["result"].ok, (mr_run["reports"] / "run.json").read_text()
    for path in runner.discover_notebooks():
        assert (mr_run["reports"] / f"{path.stem}.html").is_file()
    assert (mr_run["data"] / "demo.json").is_file() and (mr_run["data"] / "truth" / "series.csv").is_file()


def test_mr_cohort_preprocessing_and_model(mr_run: dict[str, Any]) -> None:
    data = mr_run["data"]
    cohort = pd.read_parquet(data / "cohort" / "cohort.parquet")
    assert set(cohort["Modality"]) == {"MR"} and set(cohort["sequence_norm"]) == {"T1C"}
    assert cohort.groupby("pseudo_study_id").size().max() == 1  # one series per study: the post-contrast T1
    steps = pd.read_parquet(data / "preprocessed" / "preprocess.parquet")
    ok = steps[steps["status"] == "ok"]
    assert len(ok) > 0 and set(ok["Modality"]) == {"MR"}
    done = ok["steps"].iloc[0]
    assert '"bias_field"' in done and '"region": "body"' in done
    assert (data / "model" / "metrics.json").is_file()
    assert any((data / "explain").glob("shap*"))
    html = (mr_run["reports"] / "01_cohort.html").read_text(encoding="utf-8")
    assert "No radiation dose for MR" in html


def test_no_mr_report_contains_planted_phi(mr_run: dict[str, Any]) -> None:
    phi = [v.strip() for v in (mr_run["data"] / "truth" / "phi_values.txt").read_text().splitlines() if len(v) >= 4]
    assert phi
    reports = mr_run["reports"]
    for output in [*reports.glob("*.html"), *reports.glob("*.ipynb")]:
        text = output.read_text(encoding="utf-8", errors="replace").lower()
        assert not [v for v in phi if v.lower() in text], output.name

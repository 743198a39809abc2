"""The QC notebook runs under papermill and shows no identifying values."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.preprocess.fixtures import build_tree

# --- the QC notebook -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_notebook_runs_under_papermill(tmp_path: Path) -> None:
    import nbformat
    import papermill as pm

    from pacs_workbench.core.params import NOTEBOOK_DIR

    try:
        from pacs_workbench.synth import generate  # type: ignore[attr-defined]
    except ImportError:
        generate = None
    if generate is not None:
        generate(tmp_path / "synth", patients=2)
        dicom_dir = tmp_path / "synth" / "dicom"
    else:
        dicom_dir = tmp_path / "dicom"
        build_tree(dicom_dir)
    out_dir = tmp_path / "preprocessed"
    executed = tmp_path / "03_preprocessing.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK_DIR / "03_preprocessing.ipynb"),
        str(executed),
        parameters={"dicom_dir": str(dicom_dir), "out_dir": str(out_dir), "workers": 1, "max_montage_cases": 2},
        cwd=str(tmp_path),
        progress_bar=False,
        kernel_name="python3",
    )
    assert (out_dir / "cases.csv").is_file() and (out_dir / "preprocess.parquet").is_file()
    result = pd.read_parquet(out_dir / "preprocess.parquet")
    assert (result["status"] == "ok").sum() >= 1
    notebook = nbformat.read(executed, as_version=4)
    outputs = json.dumps([cell.get("outputs", []) for cell in notebook.cells])
    secrets = ["Testperson", "MRN-A-5531", "MRN-B-7700", str(dicom_dir)]
    phi_file = tmp_path / "synth" / "truth" / "phi_values.txt"
    if phi_file.is_file():
        secrets += [v.strip() for v in phi_file.read_text().splitlines() if len(v.strip()) >= 4]
    leaked = [value for value in secrets if value.lower() in outputs.lower()]
    assert not leaked, f"{len(leaked)} identifying strings in the notebook outputs"
    source = nbformat.read(NOTEBOOK_DIR / "03_preprocessing.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in source.cells if cell.cell_type == "code")

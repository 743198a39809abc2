"""Every numbered notebook end to end on a tiny synthetic extract: papermill, nbval, and no PHI out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import papermill as pm
import pytest
import yaml

from pacs_workbench.core.params import HOME_ENV, notebook_params
from pacs_workbench.runner import run as runner

pytestmark = pytest.mark.slow
def test_every_notebook_runs_and_renders(tiny_run: dict[str, Any]) -> None:
    notebooks = runner.discover_notebooks()
    assert notebooks, "no numbered notebooks found"
    assert tiny_run["result"].ok, (tiny_run["reports"] / "run.json").read_text()
    index = (tiny_run["reports"] / "index.html").read_text()
    for path in notebooks:
        assert (tiny_run["reports"] / f"{path.stem}.html").is_file()
        assert f'href="{path.stem}.html"' in index


def test_no_report_contains_planted_phi(tiny_run: dict[str, Any]) -> None:
    phi = [line.strip() for line in (tiny_run["data"] / "truth" / "phi_values.txt").read_text().splitlines()]
    phi = [value for value in phi if len(value) >= 4]
    assert phi, "the synthetic extract planted no PHI"
    reports = tiny_run["reports"]
    outputs = [*reports.glob("*.html"), *reports.glob("*.ipynb"), reports / "run.json"]
    for output in outputs:
        text = output.read_text(encoding="utf-8", errors="replace").lower()
        leaked = [value for value in phi if value.lower() in text]
        assert not leaked, f"{output.name} contains {len(leaked)} planted PHI strings"


def test_key_never_reaches_a_report(tiny_run: dict[str, Any]) -> None:
    key_hex = (tiny_run["data"] / "project.key").read_text().strip()
    key_bytes = bytes.fromhex(key_hex)
    for output in (path for path in tiny_run["reports"].rglob("*") if path.is_file()):
        content = output.read_bytes()
        assert key_hex.encode() not in content.lower() and key_bytes not in content, output.name


def test_notebooks_pass_nbval(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    params = yaml.safe_load(tiny_run["params"].read_text())
    prepared = []
    for path in runner.discover_notebooks():
        declared = pm.inspect_notebook(str(path))
        given = {k: v for k, v in notebook_params(params, path.stem).items() if k in declared}
        # Relative to the run's root, as the runner passes them: the kernel knows the root from
        # PACS_WORKBENCH_HOME alone (nbval starts it in the notebook's folder, like JupyterLab).
        values = runner._resolve_paths(given, tiny_run["root"])
        target = tmp_path / path.name
        pm.execute_notebook(str(path), str(target), parameters=values, prepare_only=True, progress_bar=False)
        prepared.append(str(target))
    command = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider"]
    proc = subprocess.run(
        [*command, *prepared],
        cwd=tmp_path,
        env={**os.environ, HOME_ENV: str(tiny_run["root"])},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]

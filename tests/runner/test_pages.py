"""Reviewer pages: the HTML of executed notebooks, the run page and its provenance.

The browser test opens the run page and every report in headless Chromium (images load, no
console error); its screenshots go to ``$PACS_WORKBENCH_ARTIFACTS`` (default: the test's
temporary folder) so a reviewer of the test run can look at them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from pacs_workbench.runner import run as runner
from pacs_workbench.runner.pages import (
    Highlights,
    NotebookRun,
    RunResult,
    collect_highlights,
    fingerprint_inputs,
    render_html,
    write_index,
)
from tests.runner.browser import chromium
from tests.runner.fixtures import make_notebook, write_params


@pytest.fixture(scope="module")
def browser() -> Any:
    with chromium() as launched:
        yield launched


@pytest.mark.slow
def test_run_page_and_reports_render(tiny_run: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    reports: Path = tiny_run["reports"]
    artifacts = Path(os.environ.get("PACS_WORKBENCH_ARTIFACTS", tmp_path / "screenshots"))
    artifacts.mkdir(parents=True, exist_ok=True)
    pages = ["index.html", *sorted(p.name for p in reports.glob("[0-9][0-9]_*.html"))]
    assert len(pages) >= 2
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    for name in pages:
        page.goto((reports / name).as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt])")
        broken = [alt for ok, alt in images if not ok]
        assert not broken, f"{name}: {len(broken)} images did not load"
        page.screenshot(path=str(artifacts / f"{Path(name).stem}.png"), full_page=name == "index.html")
        assert not problems, f"{name}: {problems[:3]}"
    page.goto((reports / "index.html").as_uri(), wait_until="load")
    text = page.inner_text("body")
    for heading in ("Reports", "Cohort", "De-identification audit", "Model"):
        assert heading in text, f"run page lacks the {heading!r} section"
    links = page.evaluate("Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    for link in links:
        assert (reports / link).is_file(), f"run page links to a missing {link}"


def test_fingerprint_changes_with_content_not_with_time(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "x.dcm").write_bytes(b"one")
    before = fingerprint_inputs([data])
    assert fingerprint_inputs([data]) == before
    (data / "x.dcm").write_bytes(b"two")
    assert fingerprint_inputs([data]) != before


def test_fingerprint_of_known_inputs_is_stable(tmp_path: Path) -> None:
    # Recorded in earlier runs' provenance: the same inputs must keep giving the same digest.
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "x.dcm").write_bytes(b"one")
    (tmp_path / "d" / "sub" / "y.txt").write_bytes(b"two")
    (tmp_path / "single.csv").write_bytes(b"three")
    digest = fingerprint_inputs([tmp_path / "d", tmp_path / "single.csv", tmp_path / "missing"])
    assert digest == "75d84daefe6aa8a8e0d15df5df196785c1fc458c3a4aea7a2a4b159ec520f5f8"


def test_render_html_hides_code_unless_tagged_and_drops_progress_bars(tmp_path: Path) -> None:
    nb = new_notebook()
    hidden = new_code_cell("hidden_marker_code = 1")
    hidden.outputs = [
        new_output("stream", name="stdout", text="visible result\n"),
        new_output("stream", name="stderr", text="features:  50%|#####     | 5/10\r"),
    ]
    shown = new_code_cell("shown_marker_code = 2")
    shown.metadata["tags"] = ["show-code"]
    nb.cells = [new_markdown_cell("# The report title"), hidden, shown]
    ipynb = tmp_path / "01_x.ipynb"
    nbformat.write(nb, ipynb)
    render_html(ipynb, tmp_path / "01_x.html")
    page = (tmp_path / "01_x.html").read_text()
    assert "visible result" in page and "50%|" not in page
    assert "hidden_marker_code" not in page and "shown_marker_code" in page
    assert "<title>The report title</title>" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_x.html", "01_x.ipynb"]


def test_run_page_shows_highlights_and_missing_numbers_as_n_a(tmp_path: Path) -> None:
    result = RunResult(run_id="20260101T000000Z-abc123", out_dir=tmp_path, index_html=tmp_path / "index.html")
    result.notebooks = [
        NotebookRun("01_cohort", "ok", html="01_cohort.html", ipynb="01_cohort.ipynb"),
        NotebookRun("02_deid_audit"),
    ]
    provenance = {
        "run_id": result.run_id,
        "started": "2026-01-01T00:00:00+00:00",
        "params_file": "default.yaml",
        "git_commit": "abc",
        "packages": {"papermill": "2.6.0"},
        "input_fingerprint": "0" * 64,
    }
    metrics = {"model": "lightgbm", "auc": 0.71234, "auc_ci": [None, 0.8], "brier": None, "n": 40, "n_events": 9}
    write_index(result, provenance, Highlights(audit={"ok": True, "files_checked": 12}, metrics=[metrics]))
    page = (tmp_path / "index.html").read_text()
    assert "FAILED" in page and "not run" in page
    assert "<td>0.712</td><td>n/a-0.800</td><td>n/a</td>" in page
    assert "no residual PHI found (12 files checked)" in page
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["status"] == "FAILED" and record["highlights"]["metrics"] == [metrics]


def test_attrition_figure_is_written_whole(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "attrition.csv").write_text(
        "step,criterion,patients,studies,series\n0,all indexed,10,20,60\n1,CT chest with a nodule,8,15,30\n"
    )
    found = collect_highlights({"01_cohort": {"cohort_dir": "cohort"}}, tmp_path, tmp_path)
    assert found.attrition_png == "attrition.png"
    assert found.attrition_final == {"patients": 8, "studies": 15, "series": 30}
    assert (tmp_path / "attrition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_reports_carry_no_absolute_paths(tmp_path: Path) -> None:
    params_file = write_params(tmp_path)
    body = "import warnings, os\nwarnings.warn('checked ' + os.getcwd())\nprint(os.path.abspath('inputs'))"
    first = make_notebook(tmp_path / "01_first.ipynb", body)
    result = runner.run_notebooks(params_file, tmp_path / "out", notebooks=[first], base_dir=tmp_path)
    assert result.ok
    for name in ("01_first.ipynb", "01_first.html", "run.json", "index.html"):
        text = (tmp_path / "out" / name).read_text()
        assert str(tmp_path) not in text, name
    executed = nbformat.read(tmp_path / "out" / "01_first.ipynb", as_version=4)
    assert executed.metadata["papermill"]["output_path"] == "01_first.ipynb"
    assert "&lt;run-base&gt;/inputs" in (tmp_path / "out" / "01_first.html").read_text()

"""The runner on small notebooks made in the test: real papermill, real nbconvert."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from pacs_workbench.cli import main
from pacs_workbench.runner import run as runner
from pacs_workbench.runner import run_summary
from pacs_workbench.runner.engine import NotebookProgress, format_elapsed
from tests.runner.fixtures import make_notebook, write_params


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    return write_params(tmp_path)


@pytest.mark.slow
def test_run_renders_html_hides_code_and_records_provenance(tmp_path: Path, params_file: Path) -> None:
    body = "hidden_marker_code = value * 6\nprint('answer', value * 6, label)"
    first = make_notebook(tmp_path / "01_first.ipynb", body)
    second = make_notebook(tmp_path / "02_second.ipynb", "shown_marker_code = 1\nprint('second ran')", show=True)
    result = runner.run_notebooks(params_file, tmp_path / "out", notebooks=[first, second], base_dir=tmp_path)
    assert result.ok
    html_first = (tmp_path / "out" / "01_first.html").read_text()
    assert "answer 42 first-label" in html_first
    assert "hidden_marker_code" not in html_first
    assert "shown_marker_code" in (tmp_path / "out" / "02_second.html").read_text()
    assert (tmp_path / "out" / "01_first.ipynb").is_file()
    index = (tmp_path / "out" / "index.html").read_text()
    assert 'href="01_first.html"' in index and 'href="02_second.html"' in index
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [nb["status"] for nb in record["notebooks"]] == ["ok", "ok"]
    assert record["parameters"]["01_first"] == {"value": 7, "label": "first-label"}
    assert len(record["input_fingerprint"]) == 64 and record["packages"]["papermill"]
    assert record["input_fingerprint"] in index


@pytest.mark.slow
def test_failing_notebook_gets_html_and_stops_the_run(tmp_path: Path, params_file: Path) -> None:
    first = make_notebook(tmp_path / "01_first.ipynb", "raise RuntimeError('planted failure')")
    second = make_notebook(tmp_path / "02_second.ipynb", "print('should not run')")
    result = runner.run_notebooks(params_file, tmp_path / "out", notebooks=[first, second], base_dir=tmp_path)
    assert not result.ok
    assert [nb.status for nb in result.notebooks] == ["failed", "not run"]
    assert "planted failure" in (tmp_path / "out" / "01_first.html").read_text()
    assert not (tmp_path / "out" / "02_second.html").exists()
    assert "not run" in (tmp_path / "out" / "index.html").read_text()


def test_second_run_into_a_locked_folder_is_refused(tmp_path: Path) -> None:
    with runner._run_lock(tmp_path), pytest.raises(RuntimeError, match="another run"), runner._run_lock(tmp_path):
        pass


def test_discover_notebooks_in_order(tmp_path: Path) -> None:
    for name in ["02_b.ipynb", "01_a.ipynb", "notes.ipynb", "10_c.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in runner.discover_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb"]


def test_notebooks_run_by_a_command_are_not_part_of_the_run(tmp_path: Path) -> None:
    (tmp_path / "01_a.ipynb").write_text(json.dumps({"metadata": {}}))
    command_run = {"metadata": {"pacs_workbench": {"run_by": "pacs-workbench predict"}}}
    (tmp_path / "07_report.ipynb").write_text(json.dumps(command_run))
    assert [p.name for p in runner.discover_notebooks(tmp_path)] == ["01_a.ipynb"]
    assert runner.run_by_command(runner.NOTEBOOK_DIR / "07_external_validation.ipynb") == "pacs-workbench predict"
    assert "07_external_validation" not in {p.stem for p in runner.discover_notebooks()}


def test_malformed_parameter_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    assert main(["run", "--params", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "expected a mapping" in capsys.readouterr().err


def test_relative_paths_resolve_against_base_then_shipped_files(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("x: 1\n")
    resolved = runner._resolve_paths(
        {
            "data_dir": "data/demo",
            "params_file": "mine.yaml",
            "radiomics_file": "notebooks/params/default.yaml",
            "label": "data/demo",
        },
        tmp_path,
    )
    assert resolved["data_dir"] == "data/demo"
    assert resolved["params_file"] == "mine.yaml"
    assert resolved["radiomics_file"] == "notebooks/params/default.yaml"
    assert resolved["label"] == "data/demo"
    assert runner._resolve_paths({"out_dir": str(tmp_path / "x")}, tmp_path)["out_dir"] == "x"


@pytest.mark.slow
def test_rerun_into_a_folder_leaves_no_stale_reports(tmp_path: Path, params_file: Path) -> None:
    first = make_notebook(tmp_path / "01_first.ipynb", "print('one')")
    out = tmp_path / "out"
    out.mkdir()
    (out / "07_old.html").write_text("an older run's report")
    result = runner.run_notebooks(params_file, out, notebooks=[first], base_dir=tmp_path)
    assert result.ok
    assert not (out / "07_old.html").exists()
    assert (out / "01_first.html").is_file()


@pytest.mark.slow
def test_run_shows_one_line_per_notebook_and_no_kernel_chatter(
    tmp_path: Path, params_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notebooks").mkdir()
    # The kernel starts in the notebook's folder, as in JupyterLab, and finds the run's root all the same.
    body = (
        "import os\nfrom pathlib import Path\nfrom pacs_workbench.core.params import project_path\n"
        "assert Path.cwd().name == 'notebooks', Path.cwd()\nassert project_path('inputs/dicom/a.dcm').is_file()"
    )
    first = make_notebook(tmp_path / "notebooks" / "01_first.ipynb", body)
    second = make_notebook(tmp_path / "notebooks" / "02_second.ipynb", "raise RuntimeError('planted failure')")
    third = make_notebook(tmp_path / "notebooks" / "03_third.ipynb", "print('not reached')")
    progress = io.StringIO()
    result = runner.run_notebooks(
        params_file, tmp_path / "out", notebooks=[first, second, third], base_dir=tmp_path, progress=progress
    )
    assert [nb.status for nb in result.notebooks] == ["ok", "failed", "not run"]
    lines = progress.getvalue().splitlines()
    assert len(lines) == 2, lines  # a log (not a terminal) gets each notebook's finished line once
    assert re.fullmatch(r"01_first  cell 3 of 3  \d+ s  ok", lines[0]), lines[0]
    assert re.fullmatch(r"02_second  cell 3 of 3  \d+ s  failed \(RuntimeError\)", lines[1]), lines[1]
    assert "IPKernelApp" not in capfd.readouterr().err
    summary = run_summary(result).splitlines()
    assert summary[-1].startswith("3 notebooks: 1 ok, 1 failed, 1 not run, in ")
    assert "RuntimeError" in summary[1] and "not run" in summary[2]


def test_progress_line_is_rewritten_in_place_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = NotebookProgress("01_cohort", 12, screen)
    progress.advance()
    progress.advance()
    progress.finish("ok")
    assert screen.getvalue().count("\n") == 1
    assert screen.getvalue().split("\r\x1b[K")[2].startswith("01_cohort  cell 2 of 12  0 s")
    assert [format_elapsed(s) for s in (4.2, 185, 3725)] == ["4 s", "3 min 05 s", "1 h 02 min"]


def test_synth_section_prepares_the_extract_once_and_never_replaces_other_data(tmp_path: Path) -> None:
    from pacs_workbench.core.params import ParameterError

    params = {"synth": {"data_dir": "mr", "modality": "MR", "patients": 1, "seed": 4}, "shared": {}}
    key = runner.prepare_synthetic_data(params, tmp_path)
    assert key is not None and key.is_file()
    marker = json.loads((tmp_path / "mr" / "demo.json").read_text())
    assert marker == {"patients": 1, "seed": 4, "modality": "MR"}
    before = (tmp_path / "mr" / "truth" / "series.csv").stat().st_mtime_ns
    runner.prepare_synthetic_data(params, tmp_path)  # same settings: kept as it is
    assert (tmp_path / "mr" / "truth" / "series.csv").stat().st_mtime_ns == before
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "study.dcm").write_bytes(b"someone's data")
    with pytest.raises(ParameterError, match="no synthetic run made"):
        runner.prepare_synthetic_data({"synth": {"data_dir": "own", "modality": "MR"}}, tmp_path)
    assert (tmp_path / "own" / "study.dcm").read_bytes() == b"someone's data"
    assert runner.prepare_synthetic_data({"shared": {}}, tmp_path) is None

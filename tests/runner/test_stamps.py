"""Up-to-date checks of a run: an unchanged notebook is not re-run, anything changed is."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest

from pacs_workbench.core.params import ParameterError
from pacs_workbench.runner import run as runner
from pacs_workbench.runner import run_summary
from pacs_workbench.runner.pages import NotebookRun, RunResult
from pacs_workbench.runner.stamps import (
    STAMPS_FILE,
    Declaration,
    FileHasher,
    StampBook,
    expand,
    notebook_stamp,
    run_context,
)
from tests.runner.fixtures import make_declared_notebook

# A source file name that could carry an identifier: it must never reach run.json or stamps.json.
SOURCE_NAME = "DOE_JANE_19700101.txt"


# --- the hasher, the templates and the stamp ----------------------------------------------------


def test_tree_digest_follows_names_and_content_not_times(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("one")
    (folder / "sub" / "b.txt").write_text("two")
    before = FileHasher().tree(folder)
    os.utime(folder / "a.txt", ns=(1, 1))
    assert FileHasher().tree(folder) == before  # the same bytes under the same names
    (folder / "a.txt").write_text("ONE")
    assert FileHasher().tree(folder) != before
    (folder / "a.txt").write_text("one")
    (folder / "sub" / "b.txt").rename(folder / "sub" / "c.txt")
    assert FileHasher().tree(folder) != before
    (folder / "sub" / "c.txt").rename(folder / "sub" / "b.txt")
    assert FileHasher().tree(folder) == before
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    assert FileHasher().tree(folder) == before
    missing = FileHasher().tree(tmp_path / "nowhere")
    assert missing != before and len(missing) == 64
    assert FileHasher().tree(folder / "a.txt") != FileHasher().tree(folder / "sub" / "b.txt")


def test_hasher_reads_a_file_once_per_run_until_it_changes(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "b.bin").write_bytes(b"y" * 10)
    hasher = FileHasher()
    first = hasher.tree(tmp_path)
    assert hasher.tree(tmp_path) == first and hasher.files_read == 2 and hasher.bytes_read == 1010
    (tmp_path / "b.bin").write_bytes(b"z" * 11)  # another size: read again
    assert hasher.tree(tmp_path) != first and hasher.files_read == 3


def test_templates_expand_to_the_notebooks_paths(tmp_path: Path) -> None:
    values = {"data_dir": "data", "cases_file": "data/pre/cases.parquet", "model_file": "", "abs_dir": "/srv/x"}
    paths = expand(["{data_dir}/ehr", "{cases_file}/..", "{model_file}", "{abs_dir}", "{data_dir}.quarantine"],
                   values, tmp_path)  # fmt: skip
    assert paths == [tmp_path / "data" / "ehr", tmp_path / "data" / "pre", Path("/srv/x"), tmp_path / "data.quarantine"]
    with pytest.raises(ParameterError, match="no parameter"):
        expand(["{nope_dir}"], values, tmp_path)


def test_every_numbered_notebook_declares_paths_over_its_own_parameters() -> None:
    for path in runner.discover_notebooks():
        declaration = Declaration.of_notebook(path)
        assert declaration is not None, f"{path.stem} declares no inputs and outputs: it would always re-run"
        defaults = runner.notebook_defaults(path)
        assert expand(declaration.inputs, defaults, Path("/p")), path.stem
        assert expand(declaration.outputs, defaults, Path("/p")), path.stem
        assert set(declaration.always_run_with) <= set(defaults), path.stem


def test_stamp_changes_with_code_values_inputs_kernel_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.txt").write_text("1")
    hasher = FileHasher()
    context = run_context("python3", hasher)
    stamp = notebook_stamp(hasher, context, b"notebook", {"a": 1, "b": "x"}, [tmp_path / "in.txt"])
    assert notebook_stamp(FileHasher(), context, b"notebook", {"b": "x", "a": 1}, [tmp_path / "in.txt"]) == stamp
    assert notebook_stamp(hasher, context, b"notebook!", {"a": 1, "b": "x"}, [tmp_path / "in.txt"]) != stamp
    assert notebook_stamp(hasher, context, b"notebook", {"a": 2, "b": "x"}, [tmp_path / "in.txt"]) != stamp
    assert notebook_stamp(hasher, run_context("other", hasher), b"notebook", {"a": 1, "b": "x"},
                          [tmp_path / "in.txt"]) != stamp  # fmt: skip
    (tmp_path / "in.txt").write_text("2")
    assert notebook_stamp(FileHasher(), context, b"notebook", {"a": 1, "b": "x"}, [tmp_path / "in.txt"]) != stamp
    monkeypatch.setenv("PACS_WORKBENCH_HOME", str(tmp_path))  # where relative paths resolve: not the outcome
    assert run_context("python3", FileHasher()) == context
    monkeypatch.setenv("PACS_WORKBENCH_SOMETHING", "1")
    assert run_context("python3", FileHasher()) != context


def test_stamp_book_reuses_only_an_ok_record_with_the_same_stamp_and_outputs(tmp_path: Path) -> None:
    (tmp_path / "result.txt").write_text("r")
    (tmp_path / "01_a.html").write_text("<p>report</p>")
    record = NotebookRun("01_a", "ok", duration_s=4.0, html="01_a.html")
    book = StampBook(tmp_path, "run-1", FileHasher())
    book.executed("01_a", "s1", [tmp_path / "result.txt"], record)
    again = StampBook(tmp_path, "run-2", FileHasher())
    reused = again.reusable("01_a", "s1", [tmp_path / "result.txt"])
    assert reused is not None and reused.reused_from == "run-1" and reused.duration_s == 4.0
    assert again.reusable("01_a", "s2", [tmp_path / "result.txt"]) is None
    (tmp_path / "01_a.html").write_text("<p>edited</p>")
    assert StampBook(tmp_path, "run-3", FileHasher()).reusable("01_a", "s1", [tmp_path / "result.txt"]) is None
    book.executed("01_a", "s1", [tmp_path / "result.txt"], NotebookRun("01_a", "failed", html="01_a.html"))
    assert "01_a" not in json.loads((tmp_path / STAMPS_FILE).read_text())["notebooks"]


# --- real runs of two small notebooks, the second reading what the first writes -----------------

FIRST = (
    "from pacs_workbench.core.params import project_path\n"
    "src, mid = project_path(in_dir), project_path(mid_dir)\n"
    "total = sum(int(p.read_text()) for p in sorted(src.iterdir()))\n"
    "mid.mkdir(parents=True, exist_ok=True)\n"
    "(mid / 'total.txt').write_text(str(total))\n"
    "print('total', total)"
)
SECOND = (
    "from pacs_workbench.core.params import project_path\n"
    "final = project_path(final_dir)\n"
    "final.mkdir(parents=True, exist_ok=True)\n"
    "(final / 'double.txt').write_text(str(2 * int((project_path(mid_dir) / 'total.txt').read_text())))"
)


def _make_project(root: Path) -> None:
    (root / "inputs" / "source").mkdir(parents=True)
    (root / "inputs" / "source" / SOURCE_NAME).write_text("3")
    (root / "inputs" / "project.key").write_text(secrets.token_hex(32))
    make_declared_notebook(root / "01_first.ipynb", {"in_dir": "", "key_file": "", "mid_dir": ""}, FIRST,
                           ["{in_dir}", "{key_file}"], ["{mid_dir}"])  # fmt: skip
    make_declared_notebook(root / "02_second.ipynb", {"mid_dir": "", "final_dir": ""}, SECOND,
                           ["{mid_dir}"], ["{final_dir}"])  # fmt: skip
    shared = {"in_dir": "inputs/source", "key_file": "inputs/project.key", "mid_dir": "work/mid",
              "final_dir": "work/final"}  # fmt: skip
    (root / "params.yaml").write_text(json.dumps({"shared": shared}))


def _run(root: Path, **kwargs: Any) -> RunResult:
    notebooks = [root / "01_first.ipynb", root / "02_second.ipynb"]
    return runner.run_notebooks(root / "params.yaml", root / "out", notebooks=notebooks, base_dir=root, **kwargs)


def _executed(result: RunResult) -> list[str]:
    assert result.ok, [(nb.name, nb.status, nb.error) for nb in result.notebooks]
    return [nb.name for nb in result.notebooks if not nb.reused_from]


@pytest.fixture(scope="module")
def done_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The two notebooks run once; each test works on a copy (the records are by content, not place)."""
    root = tmp_path_factory.mktemp("stamped")
    _make_project(root)
    result = _run(root)
    assert _executed(result) == ["01_first", "02_second"]
    return root, result.run_id


@pytest.fixture
def project(done_once: tuple[Path, str], tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(done_once[0], copy)
    return copy


@pytest.mark.slow
def test_second_run_executes_nothing_and_keeps_the_reports(project: Path, done_once: tuple[Path, str]) -> None:
    out = project / "out"
    reports = [out / f"{stem}.{ext}" for stem in ("01_first", "02_second") for ext in ("ipynb", "html")]
    before = [path.stat().st_mtime_ns for path in reports]
    progress = io.StringIO()
    result = _run(project, progress=progress)
    assert _executed(result) == []
    assert [nb.reused_from for nb in result.notebooks] == [done_once[1]] * 2
    assert [path.stat().st_mtime_ns for path in reports] == before
    lines = progress.getvalue().splitlines()
    assert [line.split("  ")[:2] for line in lines] == [["01_first", "unchanged, not re-run"],
                                                        ["02_second", "unchanged, not re-run"]]  # fmt: skip
    assert f"ok - unchanged, reused from run {done_once[1]}" in (out / "index.html").read_text()
    record = json.loads((out / "run.json").read_text())
    assert [nb["reused_from"] for nb in record["notebooks"]] == [done_once[1]] * 2
    assert "up_to_date_check_s" in record  # how long the checks took is the benchmark's to judge
    assert "(2 unchanged, not re-run)" in run_summary(result)
    # Reused again: still the run that executed them.
    assert [nb.reused_from for nb in _run(project).notebooks] == [done_once[1]] * 2


@pytest.mark.slow
def test_records_hold_digests_only_never_source_names_or_the_key(project: Path) -> None:
    key_hex = (project / "inputs" / "project.key").read_text().strip()
    for name in (STAMPS_FILE, "run.json", "index.html"):
        content = (project / "out" / name).read_bytes()
        assert SOURCE_NAME.encode() not in content and b"DOE_JANE" not in content, name
        assert key_hex.encode() not in content.lower() and bytes.fromhex(key_hex) not in content, name
    stamps = (project / "out" / STAMPS_FILE).read_text()
    assert "inputs/" not in stamps and "work/" not in stamps and str(project) not in stamps


@pytest.mark.slow
def test_a_changed_input_re_executes_the_notebook_and_those_its_outputs_feed(project: Path) -> None:
    (project / "inputs" / "source" / SOURCE_NAME).write_text("4")
    assert _executed(_run(project)) == ["01_first", "02_second"]
    assert (project / "work" / "final" / "double.txt").read_text() == "8"
    # A new input file that leaves the first notebook's output as it was: the second is not re-run.
    (project / "inputs" / "source" / "zero.txt").write_text("0")
    assert _executed(_run(project)) == ["01_first"]


@pytest.mark.slow
def test_a_deleted_report_or_output_re_executes_its_notebook(project: Path) -> None:
    (project / "out" / "02_second.html").unlink()
    assert _executed(_run(project)) == ["02_second"]
    assert (project / "out" / "02_second.html").is_file()
    # The first notebook writes its output again with the same content: the second stays up to date.
    (project / "work" / "mid" / "total.txt").unlink()
    assert _executed(_run(project)) == ["01_first"]


@pytest.mark.slow
def test_force_and_a_changed_parameter_or_key_re_execute(project: Path) -> None:
    assert _executed(_run(project, force=True)) == ["01_first", "02_second"]
    params = json.loads((project / "params.yaml").read_text())
    params["02_second"] = {"final_dir": "work/final2"}
    (project / "params.yaml").write_text(json.dumps(params))
    assert _executed(_run(project)) == ["02_second"]
    (project / "inputs" / "project.key").write_text(secrets.token_hex(32))
    assert _executed(_run(project)) == ["01_first"]


@pytest.mark.slow
def test_a_notebook_without_declarations_always_executes_and_stale_reports_go(project: Path) -> None:
    from tests.runner.fixtures import make_notebook

    plain = make_notebook(project / "03_plain.ipynb", "print('plain')")
    notebooks = [project / "01_first.ipynb", plain]
    result = runner.run_notebooks(project / "params.yaml", project / "out", notebooks=notebooks, base_dir=project)
    assert _executed(result) == ["03_plain"]
    assert not (project / "out" / "02_second.html").exists()  # not part of this run: its reports are gone
    assert "02_second" not in json.loads((project / "out" / STAMPS_FILE).read_text())["notebooks"]


@pytest.mark.slow
def test_the_pipeline_run_again_re_runs_nothing(tiny_run: dict[str, Any]) -> None:
    from pacs_workbench.runner.demo import EXTERNAL_DIR

    first, again = tiny_run["result"], tiny_run["rerun"]
    assert first.ok and again.ok, [(nb.name, nb.status, nb.error) for nb in again.notebooks]
    assert [nb.name for nb in again.notebooks] == [nb.name for nb in first.notebooks]
    developed = [nb for nb in again.notebooks if nb.name != "07_external_validation"]
    assert {nb.reused_from for nb in developed} == {first.run_id}, [(nb.name, nb.reused_from) for nb in developed]
    assert again.notebooks[-1].reused_from, "the external site's notebooks and validation were re-run"
    site = json.loads((tiny_run["reports"] / EXTERNAL_DIR / "run.json").read_text())
    assert [nb["name"] for nb in site["notebooks"] if not nb["reused_from"]] == []
    assert "up_to_date_check_s" in site


def test_force_reaches_the_runner_from_the_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pacs_workbench import runner as package
    from pacs_workbench.cli import main

    seen: list[tuple[str, bool]] = []

    def fake(name: str) -> Any:
        def call(*_: Any, **kwargs: Any) -> RunResult:
            seen.append((name, kwargs["force"]))
            return RunResult("r", tmp_path, tmp_path / "index.html")

        return call

    monkeypatch.setattr(package, "run_notebooks", fake("run"))
    monkeypatch.setattr(package, "run_demo", fake("demo"))
    for argv in (["run", "--out", str(tmp_path)], ["run", "--force"], ["demo"], ["demo", "--force"]):
        assert main(argv) == 0
    assert seen == [("run", False), ("run", True), ("demo", False), ("demo", True)]

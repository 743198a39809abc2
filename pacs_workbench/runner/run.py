"""Run the numbered notebooks with papermill, and the demo run.

:func:`run_notebooks` executes ``notebooks/NN_*.ipynb`` in order from one parameter file (a
``shared`` section overlaid by one section per notebook; path parameters expressed relative to
the run's base folder), under a lock on the report folder, and leaves each executed notebook,
its HTML and the run page (:mod:`pacs_workbench.runner.pages`). A failing notebook still gets
its HTML; the notebooks after it are marked not run. Relative paths mean the same to the runner
and to the notebooks: both resolve them with :func:`pacs_workbench.core.params.project_path`, the
kernel told the run's base folder through ``PACS_WORKBENCH_HOME``
(:mod:`~pacs_workbench.runner.engine`). :func:`prepare_demo_data` makes a synthetic extract
once per setting; :func:`retarget_params` points the default parameters at another data folder
(the demo itself is :mod:`~pacs_workbench.runner.demo`).
"""

from __future__ import annotations

import ast
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import papermill as pm

from pacs_workbench.core.files import write_json_atomic
from pacs_workbench.core.params import (
    DEFAULT_PARAMS,
    HOME_ENV,
    NOTEBOOK_DIR,
    PATH_SUFFIXES,
    ParameterError,
    is_shipped_file,
    load_params,
    notebook_params,
    project_path,
    project_root,
)
from pacs_workbench.runner.engine import ENGINE_NAME, NotebookProgress, reused_line
from pacs_workbench.runner.pages import (
    NotebookRun,
    RunResult,
    collect_highlights,
    fingerprint_inputs,
    git_commit,
    package_versions,
    render_html,
    scrub_paths,
    write_index,
)
from pacs_workbench.runner.stamps import (
    Declaration,
    FileHasher,
    StampBook,
    expand,
    notebook_stamp,
    run_context,
    workbench_metadata,
)

CELL_TIMEOUT_S = 1800


class RunStep(NamedTuple):
    """A step a run takes after its notebooks, reported on the run page as a notebook is.

    ``run(out_dir, progress)`` does the work and returns the step's record (its HTML relative
    to ``out_dir``); it is called only when every notebook before it succeeded. A step that
    declares its ``inputs`` (files or folders; ``values``: its settings) and ``outputs`` is up to
    date as a declared notebook is (:mod:`~pacs_workbench.runner.stamps`): unchanged, it is not
    run again and its record and reports are kept. ``inputs=None``: it always runs.
    """

    name: str
    run: Callable[[Path, TextIO | None], NotebookRun]
    inputs: Sequence[Path] | None = None
    outputs: Sequence[Path] = ()
    values: Mapping[str, Any] | None = None


def discover_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) of a run, in run order.

    A notebook that a command runs on its own inputs (its metadata ``pacs_workbench.run_by``,
    e.g. ``07_external_validation`` run by ``pacs-workbench predict``) is not part of the run.
    """
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file() and not run_by_command(p))


def run_by_command(path: Path) -> str | None:
    """The command that runs this notebook instead of ``pacs-workbench run`` (notebook metadata), if any."""
    command = workbench_metadata(path).get("run_by")
    return str(command) if command else None


def new_run_id() -> str:
    """A sortable run id: UTC time plus a random suffix."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@contextmanager
def _run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the report folder; a second run into it fails fast."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".run.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another run is writing into {out_dir}; choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _resolve_paths(values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Express path parameters (:data:`~pacs_workbench.core.params.PATH_SUFFIXES`) relative to ``base_dir``.

    ``base_dir`` is the run's project root: each path is resolved against it as the notebook's
    :func:`~pacs_workbench.core.params.project_path` will (its kernel runs with
    ``PACS_WORKBENCH_HOME=base_dir``), then written relative to it, which keeps home folders and
    user names out of the executed notebooks and reports (papermill stores parameters in its
    outputs). A relative name of a file shipped with the workbench (``notebooks/params/...``)
    that the project does not hold is passed on as it is; ``project_path`` finds it.
    """
    resolved = {}
    for name, value in values.items():
        if isinstance(value, str) and value and name.endswith(PATH_SUFFIXES):
            path = project_path(value, root=base_dir)
            shipped = not Path(value).is_absolute() and is_shipped_file(value) and not (base_dir / value).exists()
            if shipped or path is None:
                resolved[name] = Path(value).as_posix()
            else:
                resolved[name] = os.path.relpath(path.resolve(), base_dir.resolve())
        else:
            resolved[name] = value
    return resolved


def run_notebooks(
    params_file: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    notebooks: Sequence[Path] | None = None,
    base_dir: Path | None = None,
    kernel_name: str = "python3",
    progress: TextIO | None = None,
    followed_by: Sequence[RunStep] = (),
    force: bool = False,
) -> RunResult:
    """Execute the numbered notebooks in order and render the run's reports.

    Parameters
    ----------
    params_file
        YAML with a ``shared`` section and one section per notebook stem; default
        ``notebooks/params/default.yaml``.
    out_dir
        Report folder; default ``reports/<run-id>``.
    notebooks
        Notebooks to run, in order; default every ``notebooks/NN_*.ipynb``.
    base_dir
        The run's project root, which relative ``*_dir``/``*_file`` parameters are resolved
        against (default: :func:`~pacs_workbench.core.params.project_root`, never the current
        directory).
    kernel_name
        Jupyter kernel to execute with.
    progress
        Stream for one progress line per notebook (:class:`~pacs_workbench.runner.engine.NotebookProgress`);
        ``None``: quiet.
    followed_by
        Steps after the notebooks (the demo's external validation), each run when everything
        before it succeeded and listed on the run page.
    force
        Execute every notebook and step. Otherwise one that declares its inputs and outputs and
        is up to date since the last run into ``out_dir`` is not executed again: its reports are
        kept and its record is marked ``reused_from`` (:mod:`~pacs_workbench.runner.stamps`).
    """
    params = load_params(params_file)
    run_id = new_run_id()
    base = Path(base_dir).absolute() if base_dir is not None else project_root()
    prepare_synthetic_data(params, base)
    out = Path(out_dir) if out_dir is not None else base / "reports" / run_id
    chosen = list(notebooks) if notebooks is not None else discover_notebooks()
    hasher = FileHasher()
    provenance = _provenance(run_id, params_file, _input_paths(params, base), hasher)
    result = RunResult(run_id=run_id, out_dir=out, index_html=out / "index.html")
    with _run_lock(out):
        _clear_previous_run(out)
        checks = _Checks(StampBook(out, run_id, hasher), run_context(kernel_name, hasher), force, progress)
        used_params: dict[str, dict[str, Any]] = {}
        for path in chosen:
            record = NotebookRun(name=path.stem)
            if all(earlier.status == "ok" for earlier in result.notebooks):
                defaults = notebook_defaults(path)
                used_params[path.stem] = _declared_params(path.stem, defaults, params, base)
                record = _notebook_or_reuse(path, used_params[path.stem], defaults, base, out, kernel_name, checks)
            result.notebooks.append(record)
        for step in followed_by:
            ready = all(earlier.status == "ok" for earlier in result.notebooks)
            result.notebooks.append(_step_or_reuse(step, out, checks) if ready else NotebookRun(name=step.name))
        kept = [nb.name for nb in result.notebooks if nb.status != "not run"]
        _remove_stale_reports(out, kept)
        checks.book.keep_only(nb.name for nb in result.notebooks if nb.status == "ok")
        provenance["ended"] = _now()
        provenance["parameters"] = used_params
        provenance["up_to_date_check_s"] = round(hasher.seconds, 2)
        write_index(result, provenance, collect_highlights(used_params, base, out))
    return result


@dataclass
class _Checks:
    """What a run needs to tell whether a notebook or step is up to date (:mod:`~pacs_workbench.runner.stamps`)."""

    book: StampBook
    context: str
    force: bool
    progress: TextIO | None


def _notebook_or_reuse(
    path: Path,
    values: dict[str, Any],
    defaults: dict[str, Any],
    base: Path,
    out: Path,
    kernel_name: str,
    checks: _Checks,
) -> NotebookRun:
    """Execute one notebook, unless it declares its inputs and outputs and is up to date."""
    declaration = Declaration.of_notebook(path)
    stamp, outputs = None, []
    if declaration is not None:
        effective = {**defaults, **values}
        outputs = expand(declaration.outputs, effective, base)
        if not declaration.always_runs(effective):
            inputs = expand(declaration.inputs, effective, base)
            stamp = notebook_stamp(checks.book.hasher, checks.context, path.read_bytes(), values, inputs)
            reused = _reusable(path.stem, stamp, outputs, checks)
            if reused is not None:
                return reused
    _remove_reports(out, path.stem)  # a notebook that fails before papermill writes leaves none of an older run
    record = NotebookRun(name=path.stem)
    _run_notebook(path, values, record, base, out, kernel_name, checks.progress)
    checks.book.executed(path.stem, stamp, outputs, record)
    return record


def _step_or_reuse(step: RunStep, out: Path, checks: _Checks) -> NotebookRun:
    """Run a step after the notebooks, unless it declares its inputs and outputs and is up to date."""
    stamp = None
    if step.inputs is not None:
        values = dict(step.values or {})
        stamp = notebook_stamp(checks.book.hasher, checks.context, step.name.encode(), values, list(step.inputs))
        reused = _reusable(step.name, stamp, list(step.outputs), checks)
        if reused is not None:
            return reused
    record = step.run(out, checks.progress)
    checks.book.executed(step.name, stamp, list(step.outputs), record)
    return record


def _reusable(name: str, stamp: str, outputs: list[Path], checks: _Checks) -> NotebookRun | None:
    """The earlier record of an up-to-date notebook (unless the run is forced), its line on the console."""
    reused = None if checks.force else checks.book.reusable(name, stamp, outputs)
    if reused is not None and checks.progress is not None:
        checks.progress.write(reused_line(reused) + "\n")
        checks.progress.flush()
    return reused


def notebook_defaults(path: Path) -> dict[str, Any]:
    """Every parameter of the notebook as its parameters cell sets it (a literal's value; anything else as written)."""
    defaults = {}
    for name, spec in pm.inspect_notebook(str(path)).items():
        text = str(spec.get("default", ""))
        try:
            defaults[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            defaults[name] = text
    return defaults


#: Top-level section of a parameter file asking for a synthetic extract (``data_dir``, ``modality``,
#: ``patients``, ``seed``), prepared before the notebooks run (:func:`prepare_demo_data`).
SYNTH_SECTION = "synth"


def prepare_synthetic_data(params: dict[str, Any], base: Path) -> Path | None:
    """Prepare the synthetic extract a parameter file's ``synth`` section asks for (``None``: no section).

    ``notebooks/params/mr.yaml`` runs on a brain MR demo this way: ``synth: {data_dir: data/mr_demo,
    modality: MR, patients: 40, seed: 0}``. The extract is made once per setting, as the CT demo's.
    """
    section = params.get(SYNTH_SECTION)
    if not section:
        return None
    folder = section.get("data_dir") or params.get("shared", {}).get("data_dir")
    if not folder:
        raise ParameterError(f"section {SYNTH_SECTION!r} needs a data_dir (or shared.data_dir)")
    data_dir = Path(project_path(str(folder), root=base) or base / str(folder))
    made_here = (data_dir / "demo.json").is_file() or (data_dir / ".pacs-workbench-synth.json").is_file()
    if data_dir.is_dir() and any(data_dir.iterdir()) and not made_here:
        # Never replace a folder of someone's own data because a parameter file names it.
        raise ParameterError(
            f"section {SYNTH_SECTION!r}: {data_dir.name} holds data that no synthetic run made; "
            "name an empty or new folder"
        )
    return prepare_demo_data(
        data_dir, int(section.get("patients", 40)), int(section.get("seed", 0)),
        str(section.get("modality", "CT")),
    )  # fmt: skip


def _input_paths(params: dict[str, Any], base: Path) -> list[Path]:
    """The run's input data, fingerprinted for provenance: ``fingerprint_paths``, else the extract's parts."""
    shared = _resolve_paths(params.get("shared", {}), base)
    inputs = [base / p for p in shared.get("fingerprint_paths", [])]
    if not inputs and shared.get("data_dir"):
        inputs = [base / shared["data_dir"] / sub for sub in ("dicom", "ehr", "reports")]
    return inputs


def _provenance(
    run_id: str, params_file: str | os.PathLike[str] | None, inputs: list[Path], hasher: FileHasher
) -> dict[str, Any]:
    """What the run page records about the run before any notebook executes.

    The input fingerprint reads the files through the run's hasher, so the up-to-date checks
    after it do not read the extract again.
    """
    return {
        "run_id": run_id,
        "started": _now(),
        "params_file": str(Path(params_file).name if params_file else DEFAULT_PARAMS.name),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "input_fingerprint": fingerprint_inputs(inputs, hash_file=hasher.file),
    }


def _declared_params(stem: str, declared: dict[str, Any], params: dict[str, Any], base: Path) -> dict[str, Any]:
    """The notebook's parameters from the file (shared overlaid by its section), those it declares only."""
    values = _resolve_paths(notebook_params(params, stem), base)
    return {k: v for k, v in values.items() if k in declared}


def _run_notebook(
    path: Path,
    values: dict[str, Any],
    record: NotebookRun,
    base: Path,
    out: Path,
    kernel_name: str,
    stream: TextIO | None = None,
) -> None:
    """Execute one notebook into ``out``, render its HTML and fill in ``record``.

    The kernel starts in the notebook's folder, as JupyterLab starts it, with the run's base
    folder as its project root (``PACS_WORKBENCH_HOME``).
    """
    executed = out / f"{path.stem}.ipynb"
    record.ipynb, record.html = executed.name, f"{path.stem}.html"
    record.started = _now()
    progress = NotebookProgress(path.stem, 0, stream) if stream is not None else None
    start = time.monotonic()
    try:
        pm.execute_notebook(
            str(path),
            str(executed),
            parameters=values,
            kernel_name=kernel_name,
            engine_name=ENGINE_NAME,
            kernel_env={**os.environ, HOME_ENV: str(base)},
            kernel_cwd=str(path.parent.absolute()),
            progress=progress,
            progress_bar=False,
            # A cell that never returns (a stuck kernel or widget) fails the run instead of hanging it.
            execution_timeout=CELL_TIMEOUT_S,
        )
        record.status = "ok"
    except Exception as exc:  # the notebook's own error is shown in its HTML
        record.status = "failed"
        record.error = getattr(exc, "ename", type(exc).__name__)
    record.duration_s = round(time.monotonic() - start, 1)
    record.ended = _now()
    if progress is not None:
        progress.finish(record.status if record.status == "ok" else f"failed ({record.error})")
    if executed.exists():
        render_html(executed, out / record.html, scrub_paths(executed, base, out))
    else:
        record.html = ""


def run_command_notebook(
    name: str,
    values: dict[str, Any],
    out_dir: Path,
    *,
    kernel_name: str = "python3",
    progress: TextIO | None = None,
) -> NotebookRun:
    """Execute a notebook a command runs on its own (``07_external_validation``) into ``out_dir``, with its HTML.

    Executed as a run executes its notebooks (papermill, the same kernel setup and HTML), with
    ``out_dir`` as the project root its relative path parameters resolve against.
    """
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    out = Path(out_dir).absolute()
    record = NotebookRun(name=name)
    _run_notebook(path, _resolve_paths(values, out), record, out, out, kernel_name, progress)
    return record


def _clear_previous_run(out: Path) -> None:
    """Remove the run page of an earlier run into the same folder, so it is never mistaken for this run's.

    The notebooks' reports stay until this run decides: an up-to-date notebook keeps them, an
    executed one replaces them (:func:`_remove_reports` first), and those of notebooks this run
    neither executed nor reused go at its end (:func:`_remove_stale_reports`).
    """
    for name in ("index.html", "run.json", "attrition.png"):
        (out / name).unlink(missing_ok=True)


def _remove_reports(out: Path, stem: str) -> None:
    """Remove a notebook's ``.ipynb`` and ``.html`` of an earlier run."""
    for suffix in (".ipynb", ".html"):
        (out / f"{stem}{suffix}").unlink(missing_ok=True)


def _remove_stale_reports(out: Path, kept: Sequence[str]) -> None:
    """Remove the reports of notebooks this run neither executed nor reused (an earlier run's)."""
    for pattern in ("[0-9][0-9]_*.html", "[0-9][0-9]_*.ipynb"):
        for stale in out.glob(pattern):
            if stale.stem not in kept:
                stale.unlink()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def prepare_demo_data(
    data_dir: Path, patients: int, seed: int, modality: str = "CT", site: str = "development"
) -> Path:
    """Generate the synthetic extract and a project key into ``data_dir`` unless already there.

    Returns the key file's path. An extract made with other settings (patients, seed, modality,
    site) is replaced together with everything derived from it (and its key: synthetic
    pseudonyms need no continuity).
    """
    from pacs_workbench.core.pseudonym import generate_key
    from pacs_workbench.synth import generate

    marker = data_dir / "demo.json"
    modality = modality.upper()
    wanted: dict[str, Any] = {"patients": patients, "seed": seed}
    if modality != "CT":  # CT extracts keep the marker they always had
        wanted["modality"] = modality
    if site != "development":
        wanted["site"] = site
    current = json.loads(marker.read_text()) if marker.is_file() else None
    if current != wanted:
        shutil.rmtree(data_dir, ignore_errors=True)
        generate(data_dir, patients=patients, seed=seed, modality=modality, site=site)
        write_json_atomic(marker, wanted)
    key_file = data_dir / "project.key"
    if not key_file.exists():
        generate_key(key_file)
    return key_file


DEMO_PREFIX = "data/demo"


def _retarget(value: Any, data_dir: Path) -> Any:
    """Point a ``data/demo`` path (or every one inside a mapping) at ``data_dir``."""
    if isinstance(value, str) and value.startswith(DEMO_PREFIX):
        return str(data_dir / value.removeprefix(DEMO_PREFIX).lstrip("/"))
    if isinstance(value, dict):
        return {k: _retarget(v, data_dir) for k, v in value.items()}
    return value


def retarget_params(data_dir: Path, notebooks: Sequence[Path] | None = None) -> dict[str, Any]:
    """The default parameters with every ``data/demo`` path pointed at ``data_dir``.

    A notebook default naming a ``data/demo`` path that the parameter file does not set is
    pointed at ``data_dir`` too, so a run made from these parameters reads and writes only there
    (tests and benchmarks use this to run the demo pipeline in a folder of their own).
    """
    params: dict[str, Any] = _retarget(load_params(DEFAULT_PARAMS), data_dir)
    for path in notebooks if notebooks is not None else discover_notebooks():
        section = params.setdefault(path.stem, {})
        for name, default in notebook_defaults(path).items():
            if name in section or name in params.get("shared", {}):
                continue
            if isinstance(default, str) and default.startswith(DEMO_PREFIX):
                section[name] = _retarget(default, data_dir)
    return params

"""Run the numbered notebooks with papermill and render reviewer HTML.

``run_notebooks`` executes ``notebooks/NN_*.ipynb`` in order from one parameter file,
writes each executed notebook and its HTML (code hidden unless a cell is tagged
``show-code``) to the report folder, and an ``index.html`` with the run's provenance:
run id, timing and status per notebook, parameters, package versions, git commit and a
fingerprint of the input data. A failing notebook still gets its HTML; the notebooks
after it are marked not run.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import html
import importlib.metadata
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill as pm
from nbconvert import HTMLExporter
from traitlets.config import Config

from pacs_workbench.config import DEFAULT_PARAMS, NOTEBOOK_DIR, REPO_ROOT, load_params, notebook_params

SHOW_CODE_TAG = "show-code"
CELL_TIMEOUT_S = 1800
HIDE_INPUT_TAG = "hide-input"
VERSIONED_PACKAGES = [
    "pacs-workbench",
    "pydicom",
    "highdicom",
    "pyradiomics",
    "SimpleITK",
    "numpy",
    "pandas",
    "scikit-learn",
    "lightgbm",
    "shap",
    "papermill",
    "nbconvert",
]


@dataclass
class NotebookRun:
    """Outcome of one notebook in a run."""

    name: str
    status: str = "not run"  # "ok", "failed" or "not run"
    started: str = ""
    ended: str = ""
    duration_s: float = 0.0
    html: str = ""
    ipynb: str = ""
    error: str = ""


@dataclass
class RunResult:
    """Outcome of a whole run."""

    run_id: str
    out_dir: Path
    index_html: Path
    notebooks: list[NotebookRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every notebook ran without error."""
        return all(nb.status == "ok" for nb in self.notebooks)


def discover_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in run order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())


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


def fingerprint_inputs(paths: Sequence[Path]) -> str:
    """SHA-256 over every input file's relative path, size and content.

    File names can carry PHI, so only this digest (never a listing) reaches a report.
    """
    total = hashlib.sha256()
    for root in paths:
        if not root.exists():
            total.update(f"missing:{root.name}".encode())
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            content = hashlib.sha256()
            with open(file, "rb") as handle:
                while block := handle.read(1 << 20):
                    content.update(block)
            total.update(str(file.relative_to(root.parent)).encode() + b"\0")
            total.update(content.digest())
    return total.hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a reviewer cares about."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    """HEAD commit of the workbench checkout, with ``-dirty`` when it has local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def render_html(ipynb: Path, target: Path) -> None:
    """Render an executed notebook for reviewers: code hidden unless tagged ``show-code``."""
    notebook = nbformat.read(ipynb, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = list(cell.metadata.get("tags", []))
        if SHOW_CODE_TAG not in tags:
            tags.append(HIDE_INPUT_TAG)
        cell.metadata["tags"] = tags
        # Progress bars on stderr are noise in a report; the executed .ipynb keeps them.
        cell.outputs = [o for o in cell.get("outputs", []) if not _is_progress_output(o)]
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT_TAG}
    exporter = HTMLExporter(config=config)
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": _title(notebook, ipynb)}})
    _write_text_atomic(target, body)


def _is_progress_output(output: Any) -> bool:
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        text = output.get("text", "")
        return "%|" in text or "\r" in text
    data = output.get("data", {})
    return "application/vnd.jupyter.widget-view+json" in data and "text/html" not in data


def _title(notebook: Any, path: Path) -> str:
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def _write_text_atomic(target: Path, text: str) -> None:
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, target)


def _resolve_paths(values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make relative paths in ``*_dir``/``*_file`` parameters absolute against ``base_dir``.

    A relative path that names a file shipped with the workbench (``notebooks/params/...``) and
    does not exist under ``base_dir`` resolves to the shipped file.
    """
    resolved = {}
    for name, value in values.items():
        if isinstance(value, str) and value and (name.endswith("_dir") or name.endswith("_file")):
            path = Path(value)
            if not path.is_absolute():
                shipped = REPO_ROOT / path
                path = shipped if not (base_dir / path).exists() and shipped.exists() else base_dir / path
            resolved[name] = str(path.resolve())
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
        Folder that relative ``*_dir``/``*_file`` parameters are resolved against
        (default: the current directory).
    kernel_name
        Jupyter kernel to execute with.
    """
    params = load_params(params_file)
    run_id = new_run_id()
    out = Path(out_dir) if out_dir is not None else REPO_ROOT / "reports" / run_id
    base = base_dir or Path.cwd()
    chosen = list(notebooks) if notebooks is not None else discover_notebooks()
    shared = _resolve_paths(params.get("shared", {}), base)
    inputs = [Path(p) for p in shared.get("fingerprint_paths", [])]
    if not inputs and shared.get("data_dir"):
        inputs = [Path(shared["data_dir"]) / sub for sub in ("dicom", "ehr", "reports")]
    provenance: dict[str, Any] = {
        "run_id": run_id,
        "started": _now(),
        "params_file": str(Path(params_file).name if params_file else DEFAULT_PARAMS.name),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "input_fingerprint": fingerprint_inputs([Path(p) for p in inputs]),
    }
    result = RunResult(run_id=run_id, out_dir=out, index_html=out / "index.html")
    with _run_lock(out):
        used_params: dict[str, dict[str, Any]] = {}
        failed = False
        for path in chosen:
            record = NotebookRun(name=path.stem)
            result.notebooks.append(record)
            if failed:
                continue
            declared = pm.inspect_notebook(str(path))
            values = _resolve_paths(notebook_params(params, path.stem), base)
            values = {k: v for k, v in values.items() if k in declared}
            used_params[path.stem] = values
            executed = out / f"{path.stem}.ipynb"
            record.ipynb, record.html = executed.name, f"{path.stem}.html"
            record.started = _now()
            start = time.monotonic()
            try:
                pm.execute_notebook(
                    str(path),
                    str(executed),
                    parameters=values,
                    kernel_name=kernel_name,
                    cwd=str(base),
                    progress_bar=False,
                    # A cell that never returns (a stuck kernel or widget) fails the run instead of hanging it.
                    execution_timeout=CELL_TIMEOUT_S,
                )
                record.status = "ok"
            except Exception as exc:  # the notebook's own error is shown in its HTML
                record.status, failed = "failed", True
                record.error = getattr(exc, "ename", type(exc).__name__)
            record.duration_s = round(time.monotonic() - start, 1)
            record.ended = _now()
            if executed.exists():
                render_html(executed, out / record.html)
            else:
                record.html = ""
        provenance["ended"] = _now()
        provenance["parameters"] = used_params
        write_index(result, provenance)
    return result


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_index(result: RunResult, provenance: dict[str, Any]) -> None:
    """Write ``index.html`` and ``run.json`` (the same facts, machine-readable)."""
    rows = []
    for nb in result.notebooks:
        link = f'<a href="{html.escape(nb.html)}">{html.escape(nb.name)}</a>' if nb.html else html.escape(nb.name)
        code = f'<a href="{html.escape(nb.ipynb)}">.ipynb</a>' if nb.ipynb and nb.status != "not run" else ""
        rows.append(
            f"<tr class='{nb.status.replace(' ', '-')}'><td>{link}</td><td>{nb.status}</td>"
            f"<td>{html.escape(nb.started)}</td><td>{html.escape(nb.ended)}</td><td>{nb.duration_s:.1f} s</td>"
            f"<td>{html.escape(nb.error)}</td><td>{code}</td></tr>"
        )
    packages = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in provenance["packages"].items()
    )
    parameters = html.escape(json.dumps(provenance.get("parameters", {}), indent=2))
    status = "completed" if result.ok else "FAILED"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pacs-workbench run {html.escape(result.run_id)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }}
tr.ok td:nth-child(2) {{ color: #17692e; font-weight: bold; }}
tr.failed td:nth-child(2) {{ color: #b00020; font-weight: bold; }}
tr.not-run td {{ color: #888; }}
pre {{ background: #f6f6f6; padding: 1rem; overflow-x: auto; }}
</style></head><body>
<h1>pacs-workbench run <code>{html.escape(result.run_id)}</code>: {status}</h1>
<p>Started {html.escape(provenance['started'])}, ended {html.escape(provenance.get('ended', ''))}.
Parameter file <code>{html.escape(provenance['params_file'])}</code>; workbench commit
<code>{html.escape(provenance['git_commit'])}</code>; input data fingerprint (SHA-256)
<code>{html.escape(provenance['input_fingerprint'])}</code>.</p>
<h2>Reports</h2>
<table><tr><th>notebook</th><th>status</th><th>started</th><th>ended</th><th>duration</th><th>error</th><th>code</th></tr>
{''.join(rows)}</table>
<h2>Parameters</h2><pre>{parameters}</pre>
<h2>Package versions</h2><table><tr><th>package</th><th>version</th></tr>{packages}</table>
</body></html>
"""
    _write_text_atomic(result.index_html, page)
    record = {**provenance, "status": status, "notebooks": [asdict(nb) for nb in result.notebooks]}
    _write_text_atomic(result.out_dir / "run.json", json.dumps(record, indent=2))


def prepare_demo_data(data_dir: Path, patients: int, seed: int) -> Path:
    """Generate the synthetic extract and a project key into ``data_dir`` unless already there.

    Returns the key file's path. An extract made with other settings is replaced together with
    everything derived from it (and its key: synthetic pseudonyms need no continuity).
    """
    from pacs_workbench.deid.pseudonym import generate_key
    from pacs_workbench.synth import generate

    marker = data_dir / "demo.json"
    wanted = {"patients": patients, "seed": seed}
    current = json.loads(marker.read_text()) if marker.is_file() else None
    if current != wanted:
        shutil.rmtree(data_dir, ignore_errors=True)
        generate(data_dir, patients=patients, seed=seed)
        _write_text_atomic(marker, json.dumps(wanted))
    key_file = data_dir / "project.key"
    if not key_file.exists():
        generate_key(key_file)
    return key_file


def run_demo(patients: int = 120, seed: int = 0) -> RunResult:
    """``pacs-workbench demo``: synthetic data into ``data/demo``, every notebook into ``reports/demo``."""
    prepare_demo_data(REPO_ROOT / "data" / "demo", patients, seed)
    return run_notebooks(DEFAULT_PARAMS, REPO_ROOT / "reports" / "demo", base_dir=REPO_ROOT)

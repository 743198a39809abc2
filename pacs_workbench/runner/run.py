"""Run the numbered notebooks with papermill and render reviewer HTML.

``run_notebooks`` executes ``notebooks/NN_*.ipynb`` in order from one parameter file,
writes each executed notebook and its HTML (code hidden unless a cell is tagged
``show-code``) to the report folder, and an ``index.html`` with the run's provenance:
run id, timing and status per notebook, parameters, package versions, git commit and a
fingerprint of the input data. A failing notebook still gets its HTML; the notebooks
after it are marked not run.
"""

from __future__ import annotations

import ast
import datetime as dt
import fcntl
import hashlib
import html
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
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

from pacs_workbench.core.files import write_atomic as _write_atomic
from pacs_workbench.core.files import write_text_atomic as _write_text_atomic
from pacs_workbench.core.params import (
    DEFAULT_PARAMS,
    NOTEBOOK_DIR,
    REPO_ROOT,
    is_shipped_file,
    load_params,
    notebook_params,
)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
SHOW_CODE_TAG = "show-code"
CELL_TIMEOUT_S = 1800
#: Parameters named like this hold paths: the runner expresses them relative to the run's base folder.
PATH_SUFFIXES = ("_dir", "_file", "_path", "_list")
#: Written by ``02_deid_audit`` into the de-identified folder: the audit's JSON summary (counts only).
AUDIT_SUMMARY = "audit_summary.json"
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


def _path_replacements(base: Path, out_dir: Path) -> list[tuple[re.Pattern[str], str]]:
    """Absolute locations that may appear in outputs (warnings, tracebacks) and what replaces them."""
    rules = [
        (sys.prefix, "<python>"),
        (str(REPO_ROOT), "<workbench>"),
        (str(out_dir.resolve()), "."),
        (str(base.resolve()), "<run-base>"),
        (tempfile.gettempdir(), "<tmp>"),
        (str(Path.home()), "~"),
    ]
    # Longest first, so a folder inside another is replaced by its own, more specific name.
    ordered = sorted({(p, r) for p, r in rules if len(p) > 1}, key=lambda pr: -len(pr[0]))
    return [(re.compile(re.escape(p) + r"(?=/|\b|$)"), r) for p, r in ordered]


def scrub_paths(ipynb: Path, base: Path, out_dir: Path) -> Any:
    """Rewrite absolute paths in an executed notebook (outputs and papermill metadata).

    Reports must name no home folder or user name; paths become relative to the run folder or
    a named root (``<workbench>``, ``<python>``, ``<tmp>``). Returns the rewritten notebook.
    """
    notebook = nbformat.read(ipynb, as_version=4)
    rules = _path_replacements(base, out_dir)

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for pattern, replacement in rules:
                value = pattern.sub(replacement, value)
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    papermill = notebook.metadata.get("papermill", {})
    if papermill.get("input_path"):
        papermill["input_path"] = f"notebooks/{Path(papermill['input_path']).name}"
    if papermill.get("output_path"):
        papermill["output_path"] = Path(papermill["output_path"]).name
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(clean(dict(o))) for o in cell.get("outputs", [])]
    _write_atomic(ipynb, lambda temp: nbformat.write(notebook, temp))
    return notebook


def render_html(ipynb: Path, target: Path, notebook: Any = None) -> None:
    """Render an executed notebook for reviewers: code hidden unless tagged ``show-code``.

    ``notebook`` is the already-read content of ``ipynb``, when the caller has it.
    """
    if notebook is None:
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
    exporter = HTMLExporter(config=config, template_name="reviewer", extra_template_basedirs=[str(TEMPLATE_DIR)])
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




def _resolve_paths(values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Express path parameters (:data:`PATH_SUFFIXES`) relative to ``base_dir`` (the notebooks' working folder).

    Relative paths keep home folders and user names out of the executed notebooks and reports
    (papermill stores parameters in its outputs). A relative path that names a file shipped with
    the workbench (``notebooks/params/...``) and does not exist under ``base_dir`` is passed on
    as it is; :func:`pacs_workbench.core.params.shipped_file` finds it.
    """
    resolved = {}
    for name, value in values.items():
        if isinstance(value, str) and value and name.endswith(PATH_SUFFIXES):
            path = Path(value)
            shipped = not path.is_absolute() and is_shipped_file(path) and not (base_dir / path).exists()
            if shipped:
                # Named as shipped (notebooks/params/...): the stage finds it in the workbench.
                resolved[name] = path.as_posix()
                continue
            if not path.is_absolute():
                path = base_dir / path
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
    inputs = [base / p for p in shared.get("fingerprint_paths", [])]
    if not inputs and shared.get("data_dir"):
        inputs = [base / shared["data_dir"] / sub for sub in ("dicom", "ehr", "reports")]
    provenance: dict[str, Any] = {
        "run_id": run_id,
        "started": _now(),
        "params_file": str(Path(params_file).name if params_file else DEFAULT_PARAMS.name),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "input_fingerprint": fingerprint_inputs(inputs),
    }
    result = RunResult(run_id=run_id, out_dir=out, index_html=out / "index.html")
    with _run_lock(out):
        _clear_previous_run(out)
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
                render_html(executed, out / record.html, scrub_paths(executed, base, out))
            else:
                record.html = ""
        provenance["ended"] = _now()
        provenance["parameters"] = used_params
        highlights = collect_highlights(used_params, base, out)
        write_index(result, provenance, highlights)
    return result


def _clear_previous_run(out: Path) -> None:
    """Remove the reports of an earlier run into the same folder, so none is mistaken for this run's."""
    for pattern in ("[0-9][0-9]_*.html", "[0-9][0-9]_*.ipynb", "index.html", "run.json", "attrition.png"):
        for stale in out.glob(pattern):
            stale.unlink()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Highlights:
    """What a reviewer wants first from a run, read from the stages' outputs (no identifiers)."""

    attrition_png: str = ""
    attrition_final: dict[str, int] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    model_notes: list[str] = field(default_factory=list)


def _param_path(used: dict[str, dict[str, Any]], name: str, base: Path) -> Path | None:
    for values in used.values():
        if values.get(name):
            return base / str(values[name])
    return None


def collect_highlights(used: dict[str, dict[str, Any]], base: Path, out_dir: Path) -> Highlights:
    """Attrition, audit verdict and headline metrics of the run, where the stages wrote them."""
    found = Highlights()
    cohort_dir = _param_path(used, "cohort_dir", base)
    if cohort_dir is not None and (cohort_dir / "attrition.csv").is_file():
        import pandas as pd

        attrition = pd.read_csv(cohort_dir / "attrition.csv")
        _plot_attrition(attrition, out_dir / "attrition.png")
        found.attrition_png = "attrition.png"
        last = attrition.iloc[-1]
        found.attrition_final = {k: int(last[k]) for k in ("patients", "studies", "series") if k in attrition}
    deid_dir = _param_path(used, "deid_dir", base)
    if deid_dir is not None and (deid_dir / AUDIT_SUMMARY).is_file():
        audit = json.loads((deid_dir / AUDIT_SUMMARY).read_text(encoding="utf-8"))
        found.audit = {k: audit[k] for k in ("ok", "n_findings", "files_checked", "checks") if k in audit}
    model_dir = _param_path(used, "model_dir", base)
    if model_dir is not None and (model_dir / "metrics.json").is_file():
        metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
        for name, record in metrics.get("models", {}).items():
            found.metrics.append(
                {
                    "model": name,
                    "auc": record.get("auc"),
                    "auc_ci": record.get("auc_ci", [None, None]),
                    "brier": record.get("brier"),
                    "n": metrics.get("n"),
                    "n_events": metrics.get("n_events"),
                }
            )
        found.model_notes = [str(metrics["added_value"])] if metrics.get("added_value") else []
    return found


def _plot_attrition(attrition: Any, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt

    labels = [
        textwrap.shorten(f"{int(r.step)}. {r.criterion}", width=48, placeholder="...") for r in attrition.itertuples()
    ]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    ax.barh(labels, attrition["series"], color="#9fb7d9", label="series")
    ax.barh(labels, attrition["patients"], color="#4c72b0", label="patients")
    for y, (series, patients) in enumerate(zip(attrition["series"], attrition["patients"], strict=True)):
        ax.text(series, y, f" {series} series / {patients} patients", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, attrition["series"].max() * 1.8)
    ax.set_xlabel("remaining after each criterion")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp.png")
    fig.savefig(temp, dpi=110)
    plt.close(fig)
    os.replace(temp, target)


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def _highlights_html(found: Highlights) -> str:
    parts = []
    if found.attrition_png:
        final = ", ".join(f"{v} {k}" for k, v in found.attrition_final.items())
        parts.append(
            f"<section><h2>Cohort</h2><p>After every criterion: {html.escape(final)}.</p>"
            f'<img src="{found.attrition_png}" alt="Cohort attrition: patients and series left after each criterion">'
            "</section>"
        )
    if found.audit:
        ok = found.audit.get("ok")
        verdict = "no residual PHI found" if ok else f"{found.audit.get('n_findings', '?')} findings: do not share"
        files = found.audit.get("files_checked")
        detail = f" ({files} files checked)" if files is not None else ""
        parts.append(
            f"<section><h2>De-identification audit</h2><p class='{'pass' if ok else 'fail'}'>"
            f"{html.escape(verdict)}{html.escape(detail)}</p></section>"
        )
    if found.metrics:
        rows = "".join(
            f"<tr><td>{html.escape(m['model'])}</td><td>{_fmt(m['auc'])}</td>"
            f"<td>{_fmt(m['auc_ci'][0])}-{_fmt(m['auc_ci'][1])}</td><td>{_fmt(m['brier'])}</td></tr>"
            for m in found.metrics
        )
        first = found.metrics[0]
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in found.model_notes)
        parts.append(
            f"<section><h2>Model</h2><p>Nested cross-validation on {first['n']} cases with {first['n_events']} "
            f"events (out-of-fold).</p><table><tr><th>model</th><th>AUC</th><th>95% CI</th><th>Brier</th></tr>"
            f"{rows}</table>{notes}</section>"
        )
    return "".join(parts)


def write_index(result: RunResult, provenance: dict[str, Any], highlights: Highlights | None = None) -> None:
    """Write ``index.html`` (the reviewer's front door) and ``run.json`` (the same facts, machine-readable)."""
    found = highlights or Highlights()
    rows = []
    for nb in result.notebooks:
        link = f'<a href="{html.escape(nb.html)}">{html.escape(nb.name)}</a>' if nb.html else html.escape(nb.name)
        code = f'<a href="{html.escape(nb.ipynb)}">.ipynb</a>' if nb.ipynb and nb.status != "not run" else ""
        rows.append(
            f"<tr class='{nb.status.replace(' ', '-')}'><td>{link}</td><td>{nb.status}</td>"
            f"<td>{html.escape(nb.started)}</td><td>{nb.duration_s:.1f} s</td>"
            f"<td>{html.escape(nb.error)}</td><td>{code}</td></tr>"
        )
    packages = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in provenance["packages"].items()
    )
    parameters = html.escape(json.dumps(provenance.get("parameters", {}), indent=2))
    status = "completed" if result.ok else "FAILED"
    total = sum(nb.duration_s for nb in result.notebooks)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>pacs-workbench run {html.escape(result.run_id)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1000px; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.15rem; margin-top: 1.6rem; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: .6rem 0; }}
td, th {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; }}
tr.ok td:nth-child(2), .pass {{ color: #17692e; font-weight: bold; }}
tr.failed td:nth-child(2), .fail {{ color: #b00020; font-weight: bold; }}
tr.not-run td {{ color: #888; }}
img {{ max-width: 100%; height: auto; }}
pre {{ background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .8rem; }}
details {{ margin: .6rem 0; }}
@media print {{ details {{ display: block; }} details > * {{ display: block; }} a {{ color: inherit; }}
  section, table, img {{ break-inside: avoid; }} }}
</style></head><body>
<h1>pacs-workbench run <code>{html.escape(result.run_id)}</code>:
<span class="{'pass' if result.ok else 'fail'}">{status}</span></h1>
<p>Started {html.escape(provenance['started'])}, ended {html.escape(provenance.get('ended', ''))}
({total:.0f} s of notebook time). Parameter file <code>{html.escape(provenance['params_file'])}</code>;
workbench commit <code>{html.escape(provenance['git_commit'])}</code>; input data fingerprint (SHA-256)
<code>{html.escape(provenance['input_fingerprint'])}</code>.</p>
<h2>Reports</h2>
<table><tr><th>notebook</th><th>status</th><th>started</th><th>duration</th><th>error</th><th>code</th></tr>
{''.join(rows)}</table>
{_highlights_html(found)}
<h2>Provenance</h2>
<details><summary>Parameters</summary><pre>{parameters}</pre></details>
<details><summary>Package versions</summary><table><tr><th>package</th><th>version</th></tr>{packages}</table></details>
</body></html>
"""
    _write_text_atomic(result.index_html, page)
    record = {
        **provenance,
        "status": status,
        "notebooks": [asdict(nb) for nb in result.notebooks],
        "highlights": asdict(found),
    }
    _write_text_atomic(result.out_dir / "run.json", json.dumps(record, indent=2))


def prepare_demo_data(data_dir: Path, patients: int, seed: int) -> Path:
    """Generate the synthetic extract and a project key into ``data_dir`` unless already there.

    Returns the key file's path. An extract made with other settings is replaced together with
    everything derived from it (and its key: synthetic pseudonyms need no continuity).
    """
    from pacs_workbench.core.pseudonym import generate_key
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
        for name, spec in pm.inspect_notebook(str(path)).items():
            if name in section or name in params.get("shared", {}):
                continue
            try:
                default = ast.literal_eval(str(spec.get("default", "")))
            except (ValueError, SyntaxError):
                continue
            if isinstance(default, str) and default.startswith(DEMO_PREFIX):
                section[name] = _retarget(default, data_dir)
    return params


def run_demo(patients: int = 120, seed: int = 0) -> RunResult:
    """``pacs-workbench demo``: synthetic data into ``data/demo``, every notebook into ``reports/demo``."""
    prepare_demo_data(REPO_ROOT / "data" / "demo", patients, seed)
    return run_notebooks(DEFAULT_PARAMS, REPO_ROOT / "reports" / "demo", base_dir=REPO_ROOT)

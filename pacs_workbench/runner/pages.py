"""What a run leaves for reviewers: the notebooks' HTML, the run page and its provenance.

:func:`render_html` turns an executed notebook into a reviewer's report (code hidden unless a
cell is tagged ``show-code``, progress bars dropped) after :func:`scrub_paths` has replaced the
absolute paths in its outputs. :func:`write_index` writes the run page ``index.html`` (status
and timing per notebook, the highlights :func:`collect_highlights` reads from the stages'
outputs, the attrition figure) and ``run.json`` with the same facts. Provenance:
:func:`package_versions`, :func:`git_commit` and :func:`fingerprint_inputs`.
"""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter
from traitlets.config import Config

from pacs_workbench.core.files import sha256_file, write_atomic, write_json_atomic, write_text_atomic
from pacs_workbench.core.fmt import format_number
from pacs_workbench.core.params import REPO_ROOT

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
SHOW_CODE_TAG = "show-code"
HIDE_INPUT_TAG = "hide-input"
#: Written by ``02_deid_audit`` into the de-identified folder: the audit's JSON summary (counts only).
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
    #: The run that executed it, when this run found it up to date and kept its reports
    #: (:mod:`~pacs_workbench.runner.stamps`); its times are that run's.
    reused_from: str = ""


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


def fingerprint_inputs(paths: Sequence[Path], hash_file: Callable[[Path], str] = sha256_file) -> str:
    """SHA-256 over every input file's relative path and content (in path order).

    File names can carry PHI, so only this digest (never a listing) reaches a report.
    ``hash_file`` gives a file's SHA-256 (hex); a run passes its memoizing hasher.
    """
    total = hashlib.sha256()
    for root in paths:
        if not root.exists():
            total.update(f"missing:{root.name}".encode())
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            total.update(str(file.relative_to(root.parent)).encode() + b"\0")
            total.update(bytes.fromhex(hash_file(file)))
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
    write_atomic(ipynb, lambda temp: nbformat.write(notebook, temp))
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
    write_text_atomic(target, body)


def _is_progress_output(output: Any) -> bool:
    """A progress bar: carriage-return text on stderr, or a widget without an HTML fallback."""
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        text = output.get("text", "")
        return "%|" in text or "\r" in text
    data = output.get("data", {})
    return "application/vnd.jupyter.widget-view+json" in data and "text/html" not in data


def _title(notebook: Any, path: Path) -> str:
    """The report's title: the notebook's first Markdown heading, else its file name."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


@dataclass
class Highlights:
    """What a reviewer wants first from a run, read from the stages' outputs (no identifiers)."""

    attrition_png: str = ""
    attrition_final: dict[str, int] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    model_notes: list[str] = field(default_factory=list)


def _param_path(used: dict[str, dict[str, Any]], name: str, base: Path) -> Path | None:
    """The folder a notebook of the run was given as parameter ``name``, if any was."""
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
    from pacs_workbench.deid.report import AUDIT_SUMMARY  # the file name belongs to the stage that writes it

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
    """The run page's attrition figure: series and patients left after each criterion."""
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
    try:
        # The temporary name ends in .tmp: tell matplotlib the format.
        write_atomic(target, lambda temp: fig.savefig(temp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def _cohort_html(found: Highlights) -> str:
    if not found.attrition_png:
        return ""
    final = ", ".join(f"{v} {k}" for k, v in found.attrition_final.items())
    return (
        f"<section><h2>Cohort</h2><p>After every criterion: {html.escape(final)}.</p>"
        f'<img src="{found.attrition_png}" alt="Cohort attrition: patients and series left after each criterion">'
        "</section>"
    )


def _audit_html(found: Highlights) -> str:
    if not found.audit:
        return ""
    ok = found.audit.get("ok")
    verdict = "no residual PHI found" if ok else f"{found.audit.get('n_findings', '?')} findings: do not share"
    files = found.audit.get("files_checked")
    detail = f" ({files} files checked)" if files is not None else ""
    return (
        f"<section><h2>De-identification audit</h2><p class='{'pass' if ok else 'fail'}'>"
        f"{html.escape(verdict)}{html.escape(detail)}</p></section>"
    )


def _model_html(found: Highlights) -> str:
    if not found.metrics:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(m['model'])}</td><td>{format_number(m['auc'])}</td>"
        f"<td>{format_number(m['auc_ci'][0])}-{format_number(m['auc_ci'][1])}</td>"
        f"<td>{format_number(m['brier'])}</td></tr>"
        for m in found.metrics
    )
    first = found.metrics[0]
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in found.model_notes)
    return (
        f"<section><h2>Model</h2><p>Nested cross-validation on {first['n']} cases with {first['n_events']} "
        f"events (out-of-fold).</p><table><tr><th>model</th><th>AUC</th><th>95% CI</th><th>Brier</th></tr>"
        f"{rows}</table>{notes}</section>"
    )


def _highlights_html(found: Highlights) -> str:
    """The run page's sections on the cohort, the de-identification audit and the model."""
    return _cohort_html(found) + _audit_html(found) + _model_html(found)


def status_text(nb: NotebookRun) -> str:
    """A notebook's status as the run page and the console show it: ``ok - unchanged, reused from run X``."""
    return f"{nb.status} - unchanged, reused from run {nb.reused_from}" if nb.reused_from else nb.status


def write_index(result: RunResult, provenance: dict[str, Any], highlights: Highlights | None = None) -> None:
    """Write ``index.html`` (the reviewer's front door) and ``run.json`` (the same facts, machine-readable)."""
    found = highlights or Highlights()
    rows = []
    for nb in result.notebooks:
        link = f'<a href="{html.escape(nb.html)}">{html.escape(nb.name)}</a>' if nb.html else html.escape(nb.name)
        code = f'<a href="{html.escape(nb.ipynb)}">.ipynb</a>' if nb.ipynb and nb.status != "not run" else ""
        css = nb.status.replace(" ", "-") + (" reused" if nb.reused_from else "")
        rows.append(
            f"<tr class='{css}'><td>{link}</td><td>{html.escape(status_text(nb))}</td>"
            f"<td>{html.escape(nb.started)}</td><td>{nb.duration_s:.1f} s{' (then)' if nb.reused_from else ''}</td>"
            f"<td>{html.escape(nb.error)}</td><td>{code}</td></tr>"
        )
    packages = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in provenance["packages"].items()
    )
    parameters = html.escape(json.dumps(provenance.get("parameters", {}), indent=2))
    status = "completed" if result.ok else "FAILED"
    reused = [nb for nb in result.notebooks if nb.reused_from]
    total = sum(nb.duration_s for nb in result.notebooks if not nb.reused_from)
    reuse_note = (
        f"; {len(reused)} unchanged since an earlier run and not re-run, their "
        f"{sum(nb.duration_s for nb in reused):.0f} s spent then; up-to-date checks "
        f"{provenance.get('up_to_date_check_s', 0):.1f} s"
        if reused else ""
    )  # fmt: skip
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
tr.reused td:nth-child(2) {{ color: #17692e; font-weight: normal; }}
img {{ max-width: 100%; height: auto; }}
pre {{ background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .8rem; }}
details {{ margin: .6rem 0; }}
@media print {{ details {{ display: block; }} details > * {{ display: block; }} a {{ color: inherit; }}
  section, table, img {{ break-inside: avoid; }} }}
</style></head><body>
<h1>pacs-workbench run <code>{html.escape(result.run_id)}</code>:
<span class="{'pass' if result.ok else 'fail'}">{status}</span></h1>
<p>Started {html.escape(provenance['started'])}, ended {html.escape(provenance.get('ended', ''))}
({total:.0f} s of notebook time{html.escape(reuse_note)}).
Parameter file <code>{html.escape(provenance['params_file'])}</code>;
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
    write_text_atomic(result.index_html, page)
    record = {
        **provenance,
        "status": status,
        "notebooks": [asdict(nb) for nb in result.notebooks],
        "highlights": asdict(found),
    }
    write_json_atomic(result.out_dir / "run.json", record, indent=2)

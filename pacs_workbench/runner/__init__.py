"""Runs of the numbered notebooks and what a reviewer reads of them.

``pacs-workbench run`` and ``pacs-workbench demo`` call :func:`run_notebooks` and :func:`run_demo`
(:mod:`~pacs_workbench.runner.run`: papermill execution, parameters, the demo data;
:mod:`~pacs_workbench.runner.demo`: the demo with its external site; ``predict`` with a label is
:func:`predict_with_report`); the reviewer
HTML, the run page ``index.html`` and its provenance come from :mod:`~pacs_workbench.runner.pages`.
"""

from pacs_workbench.runner.demo import run_demo, run_external_site
from pacs_workbench.runner.engine import NotebookProgress, run_summary
from pacs_workbench.runner.pages import NotebookRun, RunResult, fingerprint_inputs, render_html, write_index
from pacs_workbench.runner.run import (
    discover_notebooks,
    prepare_demo_data,
    retarget_params,
    run_notebooks,
)
from pacs_workbench.runner.validation import predict_with_report

__all__ = [
    "NotebookProgress",
    "NotebookRun",
    "RunResult",
    "discover_notebooks",
    "fingerprint_inputs",
    "predict_with_report",
    "prepare_demo_data",
    "render_html",
    "retarget_params",
    "run_demo",
    "run_external_site",
    "run_notebooks",
    "run_summary",
    "write_index",
]

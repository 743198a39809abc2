"""External validation: a model package applied to another site's cases, with its report.

:func:`predict_with_report` is what ``pacs-workbench predict PACKAGE CASES --out DIR --label COL``
does: :func:`pacs_workbench.deploy.predict_cases` scores the cases with the package, then, with a
label, ``07_external_validation`` reports on them (discrimination, calibration, decision curve,
case mix), executed by papermill as a run's notebooks are.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, TextIO

from pacs_workbench.deploy import predict_cases
from pacs_workbench.deploy.predict import PREDICTIONS_FILE
from pacs_workbench.runner.pages import NotebookRun
from pacs_workbench.runner.run import run_command_notebook

VALIDATION_NOTEBOOK = "07_external_validation"


def predict_with_report(
    package_dir: str | os.PathLike[str],
    cases: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    label: str | None = None,
    cohort: str | os.PathLike[str] | None = None,
    bootstrap: int = 1000,
    workers: int | None = 1,
    report_dir: str | os.PathLike[str] | None = None,
    progress: TextIO | None = None,
) -> tuple[dict[str, Any], NotebookRun | None]:
    """Score ``cases`` with the package; with ``label``, also run the external-validation report.

    Parameters
    ----------
    package_dir, cases, out_dir, label, cohort, workers
        As :func:`pacs_workbench.deploy.predict_cases`.
    bootstrap
        Patient bootstrap resamples for the report's AUC confidence interval.
    report_dir
        Folder for ``07_external_validation.ipynb`` and ``.html`` (default ``out_dir``).
    progress
        Stream for the report's progress line; ``None``: quiet (and no progress bar while scoring).

    Returns
    -------
    tuple
        The prediction summary (with ``report``: status, HTML and error, when a label was given)
        and the report's record (``None`` without a label); the record's duration covers the
        scoring and the report.
    """
    started = time.monotonic()
    out = Path(out_dir)
    summary = predict_cases(package_dir, cases, out, label=label, cohort=cohort, workers=workers,
                            progress=progress is not None)  # fmt: skip
    if not label:
        return summary, None
    values = {
        "predictions_file": str((out / PREDICTIONS_FILE).absolute()),
        "package_dir": str(Path(package_dir).absolute()),
        "bootstrap": bootstrap,
    }
    record = run_command_notebook(VALIDATION_NOTEBOOK, values, Path(report_dir or out), progress=progress)
    record.duration_s = round(time.monotonic() - started, 1)
    summary["report"] = {"status": record.status, "html": record.html, "error": record.error}
    return summary, record

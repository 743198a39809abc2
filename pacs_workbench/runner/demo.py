"""``pacs-workbench demo``: the development site through every notebook, then an external site.

The development extract (``data/demo``) runs through the numbered notebooks into
``reports/demo``. Then a second synthetic site is made and the demo's model validated on it
(:func:`run_external_site`): another seed, the external site's vendor mix and scanner calibration
(:mod:`pacs_workbench.synth.sites`), into ``data/demo/external``. ``01_cohort``,
``02_deid_audit`` and ``03_preprocessing`` build its cohort, de-identify it under its own key and
preprocess it with the development parameters (reports in ``reports/demo/external``); then the
frozen model package scores its cases and ``07_external_validation`` reports on them
(:func:`~pacs_workbench.runner.validation.predict_with_report`). The demo's run page lists the
external validation as its last row.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from pacs_workbench.core.files import write_text_atomic
from pacs_workbench.core.params import (
    DEFAULT_PARAMS,
    NOTEBOOK_DIR,
    ParameterError,
    load_params,
    notebook_params,
    project_path,
    project_root,
)
from pacs_workbench.runner.pages import NotebookRun, RunResult
from pacs_workbench.runner.run import DEMO_PREFIX, RunStep, prepare_demo_data, retarget_params, run_notebooks
from pacs_workbench.runner.validation import VALIDATION_NOTEBOOK, predict_with_report

#: The notebooks that bring the external site's extract to preprocessed cases.
EXTERNAL_NOTEBOOKS = ("01_cohort", "02_deid_audit", "03_preprocessing")
#: The external site's folder, under the demo's data folder and under its report folder.
EXTERNAL_DIR = "external"
#: The outcome column of the cohort (01) that the external validation is measured against.
LABEL = "outcome"


def run_demo(
    patients: int = 120,
    seed: int = 0,
    progress: TextIO | None = None,
    external_patients: int | None = None,
    force: bool = False,
) -> RunResult:
    """``pacs-workbench demo``: both sites' extracts, every notebook, and the external validation.

    Parameters
    ----------
    patients, seed
        The development extract (``data/demo``).
    progress
        Stream for one progress line per notebook; ``None``: quiet.
    external_patients
        Patients of the external site (default: half of ``patients``; 0: no external site). Its
        seed is ``seed + 1``, so the two sites share no patient.
    force
        Execute every notebook and step, even those unchanged since the last demo (which are
        otherwise not re-run: :mod:`~pacs_workbench.runner.stamps`).
    """
    root = project_root()
    prepare_demo_data(root / DEMO_PREFIX, patients, seed)
    n_external = patients // 2 if external_patients is None else external_patients
    steps = []
    if n_external > 0:
        package = _param_path(load_params(DEFAULT_PARAMS), "05_radiomics_model", "model_dir", root) / "package"
        steps.append(external_validation_step(root / DEMO_PREFIX / EXTERNAL_DIR, package, patients=n_external,
                                              seed=seed + 1, base_dir=root, force=force))  # fmt: skip
    return run_notebooks(DEFAULT_PARAMS, root / "reports" / "demo", base_dir=root, progress=progress,
                         followed_by=steps, force=force)  # fmt: skip


def external_validation_step(
    data_dir: Path, package_dir: Path, *, patients: int, seed: int, base_dir: Path, force: bool = False
) -> RunStep:
    """The external site as the last step of a run: its record links the site's validation report.

    The site's own run decides what is up to date there (``force``: nothing is); when all of it
    was, the step's record is marked reused too, with the time its parts took when they ran.
    """

    def run(out: Path, progress: TextIO | None) -> NotebookRun:
        started = time.monotonic()
        site = run_external_site(data_dir, package_dir, out / EXTERNAL_DIR, patients=patients, seed=seed,
                                 base_dir=base_dir, progress=progress, force=force)  # fmt: skip
        failed = next((nb for nb in site.notebooks if nb.status != "ok"), None)
        report = next((nb for nb in site.notebooks if nb.name == VALIDATION_NOTEBOOK), None)
        reused = site.ok and all(nb.reused_from for nb in site.notebooks)
        return NotebookRun(
            name=VALIDATION_NOTEBOOK,
            status="ok" if site.ok else "failed",
            started=report.started if reused and report else "",
            duration_s=sum(nb.duration_s for nb in site.notebooks) if reused else round(time.monotonic() - started, 1),
            html=f"{EXTERNAL_DIR}/{report.html}" if report and report.html else f"{EXTERNAL_DIR}/index.html",
            ipynb=f"{EXTERNAL_DIR}/{report.ipynb}" if report and report.ipynb else "",
            error=f"{failed.name}: {failed.error or failed.status}" if failed else "",
            reused_from=max(nb.reused_from for nb in site.notebooks) if reused else "",
        )

    return RunStep(VALIDATION_NOTEBOOK, run)


def run_external_site(
    data_dir: Path,
    package_dir: Path,
    out_dir: Path,
    *,
    patients: int,
    seed: int,
    base_dir: Path,
    progress: TextIO | None = None,
    bootstrap: int = 1000,
    force: bool = False,
) -> RunResult:
    """Make an external site's extract, bring it to preprocessed cases and validate the package on it.

    Parameters
    ----------
    data_dir
        The site's folder: its extract, key, index, cohort, de-identified tree, cases and the
        package's predictions (``predict/``).
    package_dir
        The development run's ``model/package``.
    out_dir
        The site's reports: 01–03, ``07_external_validation`` and its own run page.
    patients, seed
        The external extract (:func:`~pacs_workbench.runner.run.prepare_demo_data`, site ``external``).
    base_dir
        The project root the run's relative paths resolve against.
    progress
        Stream for one progress line per notebook; ``None``: quiet.
    bootstrap
        Patient bootstrap resamples for the external AUC's confidence interval.
    force
        Execute every notebook and the validation, even when up to date since the last run
        into ``out_dir``. Otherwise the validation (scoring and report) is not repeated while
        the package, the site's cases and cohort and its own outputs are unchanged.
    """
    prepare_demo_data(data_dir, patients, seed, site="external")
    notebooks = [NOTEBOOK_DIR / f"{stem}.ipynb" for stem in EXTERNAL_NOTEBOOKS]
    # Relative to the project root where it can be, so the parameters name no home folder.
    where = Path(os.path.relpath(data_dir.absolute(), base_dir.absolute())) if data_dir.is_absolute() else data_dir
    params = retarget_params(where, notebooks)
    params_file = data_dir / "run_params.yaml"
    write_text_atomic(params_file, yaml.safe_dump(params, sort_keys=False))

    cases = _param_path(params, "03_preprocessing", "out_dir", base_dir) / "cases.parquet"
    cohort = _param_path(params, "01_cohort", "cohort_dir", base_dir) / "cohort.parquet"
    settings = {"label": LABEL, "bootstrap": bootstrap, "workers": params["shared"].get("workers", 1)}

    def validate(out: Path, stream: TextIO | None) -> NotebookRun:
        _, record = predict_with_report(package_dir, cases, data_dir / "predict", cohort=cohort, report_dir=out,
                                        progress=stream, **settings)  # fmt: skip
        assert record is not None  # a label was given
        return record

    # Up to date while the package, the site's cases (the table and its volumes), its cohort and the
    # report's notebook are unchanged, and the predictions and report are as that run left them.
    inputs = [package_dir, cases, cases.parent, cohort, NOTEBOOK_DIR / f"{VALIDATION_NOTEBOOK}.ipynb"]
    step = RunStep(VALIDATION_NOTEBOOK, validate, inputs=inputs, outputs=[data_dir / "predict"], values=settings)
    return run_notebooks(params_file, out_dir, notebooks=notebooks, base_dir=base_dir, progress=progress,
                         followed_by=[step], force=force)  # fmt: skip


def _param_path(params: dict[str, Any], notebook: str, name: str, base_dir: Path) -> Path:
    """A notebook's path parameter (shared, overlaid by its section), resolved as the notebook resolves it."""
    path = project_path(notebook_params(params, notebook).get(name), root=base_dir)
    if path is None:
        raise ParameterError(f"{notebook}: parameter {name!r} is not set")
    return path

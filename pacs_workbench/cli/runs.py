"""Subcommands that run the notebooks: run and demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# --- run / demo --------------------------------------------------------------------------------


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run every numbered notebook with papermill and render HTML reports",
        description=(
            "Execute notebooks/01_*.ipynb, 02_*.ipynb, ... in order from one YAML parameter file, render "
            "each executed notebook to HTML for reviewers (code hidden) and write OUT/index.html with the "
            "run's provenance. A failing notebook still gets its HTML; later notebooks are marked not run "
            "and the command exits non-zero. Into a folder an earlier run wrote, a notebook whose inputs, "
            "parameters, code and outputs are unchanged is not re-run (its reports are kept; --force re-runs all)."
        ),
    )
    p.add_argument(
        "--params", type=Path, default=None, help="YAML parameter file (default: notebooks/params/default.yaml)"
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default: reports/<run-id>)")
    _add_force(p)
    p.set_defaults(handler=_cmd_run)


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="execute every notebook, also those unchanged since the last run into the same folder "
        "(by default they are not re-run and their reports are kept)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from pacs_workbench.runner import run_notebooks, run_summary

    result = run_notebooks(params_file=args.params, out_dir=args.out, progress=sys.stderr, force=args.force)
    print(run_summary(result))
    return 0 if result.ok else 1


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate the demo extract into data/demo and run every notebook into reports/demo",
        description=(
            "Generate the synthetic demo extract (data/demo), a project key, and run every notebook with "
            "the default parameters into reports/demo/ (open reports/demo/index.html). Then validate the demo "
            "model on a second synthetic site (data/demo/external: another seed, vendor mix and scanner "
            "calibration), brought through 01-03 and scored with predict --label (reports/demo/external/). "
            "Run again, it re-runs only what changed since (--force: everything)."
        ),
    )
    p.add_argument("--patients", type=int, default=120, help="number of synthetic patients (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--external-patients",
        type=int,
        default=None,
        help="patients of the external site the demo model is validated on (default: half of --patients; 0: none)",
    )
    _add_force(p)
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pacs_workbench.runner import run_demo, run_summary

    result = run_demo(
        patients=args.patients,
        seed=args.seed,
        progress=sys.stderr,
        external_patients=args.external_patients,
        force=args.force,
    )
    print(run_summary(result))
    return 0 if result.ok else 1

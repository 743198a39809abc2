"""The ``pacs-workbench`` command.

Each subcommand is a thin layer over one stage module: it parses arguments, calls the
stage's function and turns its summary into an exit code. Stage imports happen inside
the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def _print_json(summary: Any) -> None:
    print(json.dumps(summary, indent=2, default=str))


# --- synth -------------------------------------------------------------------------------------


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic PACS export (DICOM, EHR, reports, ground truth)",
        description=(
            "Write a synthetic research extract that behaves like a real one: CT chest studies with "
            "nodules and follow-ups from four vendors, SEG and RTSTRUCT segmentations, localizers, "
            "dose screens with burned-in text, FHIR and CSV EHR exports, free-text radiology reports, "
            "and planted PHI. The ground truth (outcome drivers, every planted PHI string) goes to "
            "OUT/truth/, apart from the data. The same seed always gives the same files."
        ),
    )
    p.add_argument("out", type=Path, help="folder to write the extract into")
    p.add_argument("--patients", type=int, default=120, help="number of patients (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same extract (default 0)")
    p.set_defaults(handler=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from pacs_workbench.synth import generate

    summary = generate(args.out, patients=args.patients, seed=args.seed)
    _print_json(summary)
    return 0


# --- index -------------------------------------------------------------------------------------


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="crawl DICOM folders (or a DICOMweb PACS) into a queryable Parquet index",
        description=(
            "Read the header of every file under each SRC and write DIR/instances.parquet (one row per "
            "readable DICOM instance, with the attributes cohort building needs) and DIR/errors.parquet "
            "(one row per file that is not readable DICOM, with the reason). Every file lands in exactly "
            "one of the two. A rerun reads only new or changed files."
        ),
    )
    p.add_argument("src", nargs="+", help="folders to crawl, or dicomweb+http://HOST:PORT/dicom-web")
    p.add_argument("--out", type=Path, required=True, help="folder for instances.parquet and errors.parquet")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: every core)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")
    p.set_defaults(handler=_cmd_index)


def _cmd_index(args: argparse.Namespace) -> int:
    from pacs_workbench.index import build_index

    summary = build_index(args.src, args.out, workers=args.workers, scheduler=args.scheduler)
    _print_json(summary)
    return 0


# --- keygen ------------------------------------------------------------------------------------


def _add_keygen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="create a new pseudonymization key file (mode 0600)",
        description=(
            "Create the project key that turns patient IDs, accession numbers and UIDs into stable "
            "pseudonyms. Keep it outside the data you share: whoever holds it can re-link pseudonyms. "
            "An existing file is never overwritten."
        ),
    )
    p.add_argument("file", type=Path, help="where to write the key")
    p.set_defaults(handler=_cmd_keygen)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from pacs_workbench.deid.pseudonym import generate_key

    try:
        path = generate_key(args.file)
    except FileExistsError:
        print(f"refusing to overwrite existing key file {args.file}", file=sys.stderr)
        return 1
    print(f"wrote key file {path} (mode 0600)")
    return 0


# --- run / demo --------------------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run every numbered notebook with papermill and render HTML reports",
        description=(
            "Execute notebooks/01_*.ipynb, 02_*.ipynb, ... in order from one YAML parameter file, render "
            "each executed notebook to HTML for reviewers (code hidden) and write OUT/index.html with the "
            "run's provenance. A failing notebook still gets its HTML; later notebooks are marked not run "
            "and the command exits non-zero."
        ),
    )
    p.add_argument(
        "--params", type=Path, default=None, help="YAML parameter file (default: notebooks/params/default.yaml)"
    )
    p.add_argument("--out", type=Path, default=None, help="report folder (default: reports/<run-id>)")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from pacs_workbench.runner import run_notebooks

    result = run_notebooks(params_file=args.params, out_dir=args.out)
    print(f"report: {result.index_html}")
    return 0 if result.ok else 1


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate the demo extract into data/demo and run every notebook into reports/demo",
        description=(
            "Generate the synthetic demo extract (data/demo), a project key, and run every notebook with "
            "the default parameters into reports/demo/ (open reports/demo/index.html)."
        ),
    )
    p.add_argument("--patients", type=int, default=120, help="number of synthetic patients (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pacs_workbench.runner import run_demo

    result = run_demo(patients=args.patients, seed=args.seed)
    print(f"report: {result.index_html}")
    return 0 if result.ok else 1


# Stage subcommands register here, in the order data flows.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth,
    _add_index,
    _add_keygen,
    _add_run,
    _add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pacs-workbench",
        description=(
            "Research workbench for radiology PACS data: build a cohort, de-identify it to DICOM PS3.15, "
            "preprocess images, extract radiomic features, fit validated risk models and review them "
            "with SHAP. Each step is reproducible and leaves a report."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pacs-workbench``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ValueError, PermissionError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        # Input problems the user can fix: one clear line, no traceback.
        print(f"pacs-workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

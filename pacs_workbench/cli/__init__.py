"""The ``pacs-workbench`` command.

Each subcommand is a thin layer over one stage package: it parses arguments, calls the
stage's function and turns its summary into an exit code. Stage imports happen inside
the handlers so ``--help`` stays fast. The errors a user can fix (a bad input, a missing
file, an unreachable PACS) end a command with one line on stderr and exit code 2 (1 where
noted); which errors those are is declared on each handler with :func:`refuses`, and
:func:`main` is the one place that turns them into exit codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pacs_workbench.cli.base import GENERAL_REFUSAL, Handler
from pacs_workbench.cli.deploy import add_listen
from pacs_workbench.cli.learn import add_features, add_model, add_predict, add_segment
from pacs_workbench.cli.prepare import add_audit, add_deid, add_index, add_keygen, add_retrieve, add_synth
from pacs_workbench.cli.runs import add_demo, add_run

__all__ = ["build_parser", "main"]

# Stage subcommands register here, in the order data flows.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_synth,
    add_index,
    add_retrieve,
    add_keygen,
    add_deid,
    add_audit,
    add_features,
    add_segment,
    add_model,
    add_predict,
    add_listen,
    add_run,
    add_demo,
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
    except Exception as exc:
        for refusal in [*getattr(handler, "refusals", []), GENERAL_REFUSAL]:
            if isinstance(exc, refusal.errors()):
                message = refusal.message.format(command=args.command, exc=exc, exc_type=type(exc).__name__, args=args)
                print(message, file=sys.stderr)
                return int(refusal.code)
        raise


if __name__ == "__main__":
    sys.exit(main())

"""What every subcommand shares: the errors it reports in one line, JSON summaries, parallel options."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[argparse.Namespace], int]
ErrorTypes = tuple[type[BaseException], ...]


@dataclass(frozen=True)
class Refusal:
    """Errors a command reports in one line instead of a traceback, and with which exit code.

    ``errors`` returns the exception types; it is called only once an exception has happened
    (the handler has imported the stage by then), so declaring it costs ``--help`` nothing.
    ``message`` is formatted with ``command``, ``exc``, ``exc_type`` (its class name) and ``args``.
    """

    errors: Callable[[], ErrorTypes]
    message: str
    code: int = 2


# Input problems the user can fix, for every command: one clear line, no traceback.
GENERAL_REFUSAL = Refusal(
    lambda: (ValueError, PermissionError, FileNotFoundError, FileExistsError, RuntimeError),
    "pacs-workbench {command}: error: {exc}",
)


def refuses(errors: Callable[[], ErrorTypes], message: str, code: int = 2) -> Callable[[Handler], Handler]:
    """Declare errors of a handler that :func:`main` reports as ``message`` with exit ``code``.

    Checked in the order declared, before :data:`GENERAL_REFUSAL`.
    """

    def declare(handler: Handler) -> Handler:
        refusals: list[Refusal] = getattr(handler, "refusals", [])
        # Decorators apply bottom-up: prepend, so the topmost declaration is checked first.
        handler.refusals = [Refusal(errors, message, code), *refusals]  # type: ignore[attr-defined]
        return handler

    return declare


def requests_error() -> ErrorTypes:
    import requests

    return (requests.RequestException,)


def print_json(summary: Any) -> None:
    print(json.dumps(summary, indent=2, default=str))


def add_parallel_args(
    p: argparse.ArgumentParser,
    default_workers: int | None = None,
    what: str = "local worker processes (default: every core)",
) -> None:
    """``--workers`` and ``--scheduler``: every stage that runs over many items takes both."""
    p.add_argument("--workers", type=int, default=default_workers, help=what)
    p.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")



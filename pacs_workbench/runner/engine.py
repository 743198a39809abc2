"""The papermill engine of a run: the kernel's project root, a quiet kernel and a progress line.

:class:`RunEngine` is papermill's nbclient engine with three differences: the kernel starts with
``PACS_WORKBENCH_HOME`` set to the run's base folder (so the notebooks' :func:`project_path`
resolves their relative parameters there, wherever the kernel's working folder is), its own log
stays below errors (no "running over TCP without encryption" warning per notebook on a scheduled
run's console), and each code cell it starts moves a :class:`NotebookProgress` line on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from papermill.utils import remove_args

from pacs_workbench.runner.pages import NotebookRun, RunResult

ENGINE_NAME = "pacs-workbench"
#: The kernel's own log, silenced: its per-start transport warning and the "KeyboardInterrupt caught"
#: of a slow shutdown on a busy machine are not the run's business; cell errors reach the notebook itself.
QUIET_KERNEL = ["--IPKernelApp.log_level=CRITICAL"]


def format_elapsed(seconds: float) -> str:
    """``41 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class NotebookProgress:
    """One line per notebook: its name, the code cell running (k of n) and the time so far.

    On a terminal the line is rewritten in place as cells start; otherwise (a scheduler's log)
    only the finished line is written, once per notebook.

    Parameters
    ----------
    name
        The notebook's stem.
    total
        Its code cells (the engine counts them again once papermill has injected the parameters).
    stream
        Where the line goes (``sys.stderr`` by default).
    """

    def __init__(self, name: str, total: int, stream: TextIO | None = None) -> None:
        self.name = name
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.cell = 0
        self.started = time.monotonic()
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, status: str = "") -> str:
        """The progress line as it reads now."""
        elapsed = format_elapsed(time.monotonic() - self.started)
        text = f"{self.name}  cell {self.cell} of {self.total}  {elapsed}"
        return f"{text}  {status}" if status else text

    def advance(self, **_: Any) -> None:
        """A code cell starts (nbclient's ``on_cell_execute`` hook)."""
        self.cell += 1
        if self.live:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()

    def finish(self, status: str) -> None:
        """The notebook ended with ``status`` (``ok``, ``failed``): the line is written for good."""
        self.stream.write(("\r\x1b[K" if self.live else "") + self.line(status) + "\n")
        self.stream.flush()


def reused_line(record: NotebookRun) -> str:
    """The progress line of a notebook found up to date: not executed, its reports kept."""
    took = format_elapsed(record.duration_s)
    return f"{record.name}  unchanged, not re-run  (ran in run {record.reused_from}, {took})"


def run_summary(result: RunResult) -> str:
    """What the console shows after a run: one line per notebook (status, time, error), then the totals.

    The time of a notebook reused from an earlier run is that run's and does not count in the total.
    """
    lines = []
    for nb in result.notebooks:
        took = format_elapsed(nb.duration_s) if nb.status != "not run" else ""
        error = f"  {nb.error}" if nb.error else ""
        reused = f"  unchanged, reused from run {nb.reused_from}" if nb.reused_from else ""
        lines.append(f"  {nb.name:<24} {nb.status:<8} {took:>12}{error}{reused}")
    counts = {status: sum(nb.status == status for nb in result.notebooks) for status in ("ok", "failed", "not run")}
    n_reused = sum(bool(nb.reused_from) for nb in result.notebooks)
    total = format_elapsed(sum(nb.duration_s for nb in result.notebooks if not nb.reused_from))
    ok = f"{counts['ok']} ok ({n_reused} unchanged, not re-run)" if n_reused else f"{counts['ok']} ok"
    lines.append(
        f"{len(result.notebooks)} notebooks: {ok}, {counts['failed']} failed, "
        f"{counts['not run']} not run, in {total}; report: {result.index_html}"
    )
    return "\n".join(lines)


class RunEngine(NBClientEngine):
    """papermill's nbclient engine with the kernel's environment, a quiet kernel and progress.

    Extra keyword arguments (through :func:`papermill.execute_notebook`): ``kernel_env`` (the
    kernel's whole environment), ``kernel_cwd`` (its working folder) and ``progress``
    (a :class:`NotebookProgress`).
    """

    @classmethod
    def execute_managed_notebook(  # type: ignore[override]
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        kernel_env: dict[str, str] | None = None,
        kernel_cwd: str | None = None,
        progress: NotebookProgress | None = None,
        **kwargs: Any,
    ) -> Any:
        client_kwargs = remove_args(["input_path", "timeout", "startup_timeout", "extra_arguments"], **kwargs)
        if progress is not None:
            # Counted in the notebook as executed: papermill has injected the parameters by now.
            progress.total = sum(cell.get("cell_type") == "code" for cell in nb_man.nb.cells)
            client_kwargs["on_cell_execute"] = progress.advance
        client = PapermillNotebookClient(
            nb_man,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            extra_arguments=[*kwargs.get("extra_arguments", []), *QUIET_KERNEL],
            **client_kwargs,
        )
        start: dict[str, Any] = {}
        if kernel_env is not None:
            start["env"] = kernel_env
        if kernel_cwd is not None:
            start["cwd"] = kernel_cwd
        return client.execute(**start)


papermill_engines.register(ENGINE_NAME, RunEngine)

"""Index: crawl DICOM folders into Parquet and query them with DuckDB.

``build_index(SRC..., out)`` walks every regular file under the sources and writes

* ``out/instances.parquet``: one row per readable instance (:data:`INSTANCE_SCHEMA`:
  ``path``, ``file_size``, ``mtime_ns``, the DICOM attributes cohort building needs under
  their keywords, and the derived ``contrast`` flag);
* ``out/errors.parquet``: one row per file that is not a readable instance
  (:data:`ERROR_SCHEMA`: ``path``, ``error``, ``error_kind``, ``file_size``, ``mtime_ns``).

Every file found lands in exactly one of the two. A bad file never stops the crawl.

A source may also be a PACS (``dicomweb+http://HOST:PORT/dicom-web`` or
``dimse://AET@HOST:PORT``, see :mod:`pacs_workbench.cohort.index_sources`): its instances
are queried with :func:`pacs_workbench.dicom.net.query.query_instances` and their rows (``path``
is the instance's URL) stream into the same ``instances.parquet``. A PACS has no
modification time to compare, so it is queried in full on every run.

Reruns compare ``path``, ``file_size`` and ``mtime_ns`` with the previous index and read
only new or changed files; rows of files that disappeared are dropped. Files are read
in chunks (many paths per task, to amortize process overhead) through
:func:`pacs_workbench.core.executor.map_items`: in this process, a local process pool, or a
Dask cluster. Rows stream into both Parquet files in row groups, so memory stays flat,
and the two files replace the previous ones only when the run completes.

:func:`pacs_workbench.cohort.index_views.connect_index` opens a DuckDB connection with the views ``instances``,
``errors``, ``series`` and ``studies``.

The index lives in the identified zone: its rows hold names, IDs and dates. Nothing
this module prints or returns as a summary carries any of them (counts only), and the
error messages never quote a path or a value.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pacs_workbench.cohort.crawl import index_files
from pacs_workbench.cohort.index_plan import RowGroupWriter, chunks, plan_rerun, previous_index, write_listing
from pacs_workbench.cohort.index_schema import ERROR_SCHEMA, ERRORS_FILE, INSTANCE_SCHEMA, INSTANCES_FILE
from pacs_workbench.cohort.index_sources import check_out, check_sources, index_pacs
from pacs_workbench.core.executor import default_workers, map_items
from pacs_workbench.core.files import (
    TEMP_SUFFIX,
    remove_stale_temp_files,
    temp_prefix,
    write_together,
)

CHUNK_SIZE = 256  # paths per task: large enough to amortize a process round trip
_SCRATCH = ("listing", "unique", "to_read", "spill")


@dataclass
class _Options:
    """How to read: worker processes or a Dask scheduler, paths per task, a progress bar."""

    workers: int | None
    scheduler: str | None
    chunk_size: int
    progress: bool


@dataclass
class _Outcome:
    """What a run wrote: the plan's counts and what reading and querying added."""

    counts: dict[str, int]
    instances: int = 0
    errors: int = 0
    pacs_instances: int = 0
    read_with_pydicom: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


def build_index(
    src: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> dict[str, Any]:
    """Crawl folders into ``out/instances.parquet`` and ``out/errors.parquet``.

    Parameters
    ----------
    src
        Folders (or single files) to crawl, and/or PACS URLs (``dicomweb+http://HOST:PORT/PATH``,
        ``dimse://AET@HOST:PORT``) to query.
    out
        Output folder; never crawled itself, even when it lies under a source.
    workers
        Local worker processes (``None``: every core; 1: this process).
    scheduler
        Dask scheduler address; when given, chunks run on that cluster.
    chunk_size
        Most paths per task (fewer when there is little to read, to keep every
        worker busy).
    progress
        Show a tqdm progress bar (on stderr).

    Returns
    -------
    dict
        Counts only (JSON-able): ``files_seen`` (+ ``pacs_instances`` = ``instances`` +
        ``errors``), ``pacs_instances`` (rows queried from PACS sources), ``read``
        (new or changed files read this run), ``new``, ``changed``,
        ``skipped_unchanged``, ``removed`` (rows of files that disappeared),
        ``errors_by_kind``, ``read_with_pydicom`` (files the fast reader left to
        pydicom), ``previous_index`` (``"none"``, ``"reused"``, ``"incompatible"``),
        ``elapsed_s`` and ``files_per_s`` (files read per second).

    Raises
    ------
    UnsupportedSourceError, FileNotFoundError, ValueError
        Before anything is written, for a source that cannot be crawled.
    pacs_workbench.dicom.net.pacs.PacsError, requests.RequestException
        When a PACS source fails; the previous index is left as it was.
    """
    started = time.perf_counter()
    sources, pacs_sources = check_sources(src)
    out_dir = Path(out)
    if out_dir.exists():
        check_out(out_dir, sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    had_files = (out_dir / INSTANCES_FILE).exists() or (out_dir / ERRORS_FILE).exists()
    previous = previous_index(out_dir)
    remove_stale_temp_files(out_dir)  # temp files, and DuckDB's spill folder of a killed run
    token = secrets.token_hex(4)
    scratch = {name: out_dir / f"{temp_prefix(out_dir / name)}{token}{TEMP_SUFFIX}" for name in _SCRATCH}
    options = _Options(workers, scheduler, chunk_size, progress)
    outcomes: list[_Outcome] = []

    def fill(instances: Path, errors: Path) -> None:
        write_listing(sources, scratch["listing"], out_dir)
        outcomes.append(_fill(instances, errors, scratch, previous, pacs_sources, options))

    try:
        _write_both(out_dir, fill)
    finally:
        for path in scratch.values():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    outcome = outcomes[0]
    state = "reused" if previous else ("incompatible" if had_files else "none")
    return _summary(outcome, state, time.perf_counter() - started)


def _write_both(out_dir: Path, fill: Callable[[Path, Path], None]) -> None:
    """Write both index files through ``fill(instances, errors)``; they replace the old ones together.

    ``errors.parquet`` is renamed first, then ``instances.parquet``; when anything fails,
    neither is replaced and both temporary files are removed.
    """
    write_together([out_dir / ERRORS_FILE, out_dir / INSTANCES_FILE], lambda temps: fill(temps[1], temps[0]))


def _fill(
    instances_path: Path,
    errors_path: Path,
    scratch: dict[str, Path],
    previous: tuple[Path, Path] | None,
    pacs_sources: Sequence[str],
    options: _Options,
) -> _Outcome:
    """Copy what is unchanged, read what is new or changed, query the PACS sources."""
    instances = RowGroupWriter(instances_path, INSTANCE_SCHEMA)
    errors = RowGroupWriter(errors_path, ERROR_SCHEMA)
    try:
        counts = plan_rerun(scratch, previous, instances, errors)
        outcome = _Outcome(counts)
        outcome.read_with_pydicom = _read_changed(scratch["to_read"], counts["read"], instances, errors, options)
        outcome.pacs_instances = sum(index_pacs(url, instances, progress=options.progress) for url in pacs_sources)
        instances.close()
        errors.close()
    finally:
        for writer in (instances, errors):
            # Already closed on success; on failure the original error matters more.
            with contextlib.suppress(Exception):
                writer.close()
    outcome.instances, outcome.errors = instances.rows, errors.rows
    outcome.errors_by_kind = _count_kinds(errors_path)
    return outcome


def _read_changed(
    to_read: Path, n_read: int, instances: RowGroupWriter, errors: RowGroupWriter, options: _Options
) -> int:
    """Read the listed files in chunks on the workers; returns how many needed pydicom."""
    slots = 8 if options.scheduler else (options.workers or default_workers())
    chunk_size = options.chunk_size
    # Fewer paths per task when there is little to read, to keep every worker busy.
    per_task = max(1, min(chunk_size, math.ceil(n_read / (4 * slots)))) if slots > 1 else chunk_size
    n_tasks = math.ceil(n_read / per_task) if n_read else 0
    n_pydicom = 0
    results = map_items(
        index_files,
        chunks(to_read, per_task, errors),
        workers=options.workers,
        scheduler=options.scheduler,
        desc="index chunks",
        total=n_tasks,
        progress=options.progress,
    )
    for found, failed, pydicom_count in results:
        instances.write(found)
        errors.write(failed)
        n_pydicom += pydicom_count
    return n_pydicom


def _summary(outcome: _Outcome, previous_state: str, elapsed: float) -> dict[str, Any]:
    counts = outcome.counts
    return {
        "files_seen": counts["files_seen"],
        "pacs_instances": outcome.pacs_instances,
        "instances": outcome.instances,
        "errors": outcome.errors,
        "read": counts["read"],
        "new": counts["new"],
        "changed": counts["changed"],
        "skipped_unchanged": counts["skipped_unchanged"],
        "removed": counts["removed"],
        "errors_by_kind": outcome.errors_by_kind,
        "read_with_pydicom": outcome.read_with_pydicom,
        "previous_index": previous_state,
        "elapsed_s": round(elapsed, 3),
        "files_per_s": round(counts["read"] / elapsed, 1) if elapsed > 0 else None,
    }


def _count_kinds(errors_path: Path) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for batch in pq.ParquetFile(errors_path).iter_batches(columns=["error_kind"]):
        for item in pc.value_counts(batch.column("error_kind")).to_pylist():
            kinds[str(item["values"])] += int(item["counts"])
    return dict(sorted(kinds.items()))

"""Index sources: folders and files to crawl, PACS URLs to query.

A PACS source (``dicomweb+http://HOST:PORT/dicom-web`` or ``dimse://AET@HOST:PORT``, see
:func:`pacs_workbench.dicom.net.pacs.is_pacs_url`) is queried with
:func:`pacs_workbench.dicom.net.query.query_instances`; its rows (``path`` is the instance's
URL) stream into the same ``instances.parquet`` as the files'. A PACS has no modification time
to compare, so it is queried in full on every run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from pacs_workbench.cohort.index_plan import RowGroupWriter
from pacs_workbench.cohort.index_schema import INSTANCE_SCHEMA
from pacs_workbench.dicom.net.pacs import is_pacs_url, parse_pacs_url
from pacs_workbench.dicom.net.query import query_instances


class UnsupportedSourceError(ValueError):
    """An index source this version cannot crawl (e.g. a ``dicomweb+ftp://`` URL)."""


def check_sources(src: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """Folders/files and PACS URLs among the sources (a malformed URL fails here, before writing)."""
    sources: list[str] = []
    pacs_sources: list[str] = []
    for source in src:
        text = os.fspath(source)
        if is_pacs_url(text):
            parse_pacs_url(text)
            pacs_sources.append(text)
            continue
        if text.startswith(("dicomweb+", "dimse:")):
            raise UnsupportedSourceError(
                f"unsupported PACS source {text.split('://')[0]}://...: "
                "use dicomweb+http(s)://HOST:PORT/PATH or dimse://AET@HOST:PORT"
            )
        if not os.path.exists(text):
            raise FileNotFoundError(f"index source does not exist: {text}")
        sources.append(text)
    if not sources and not pacs_sources:
        raise ValueError("index needs at least one source folder or PACS URL")
    return sources, pacs_sources


def index_pacs(url: str, instances: RowGroupWriter, *, progress: bool, batch_rows: int = 1024) -> int:
    """Stream the instance rows of a PACS into ``instances``; returns how many."""
    written = 0
    rows: list[dict[str, Any]] = []
    for row in query_instances(url, progress=progress):
        rows.append(row)
        if len(rows) >= batch_rows:
            instances.write(pa.RecordBatch.from_pylist(rows, schema=INSTANCE_SCHEMA))
            written += len(rows)
            rows = []
    if rows:
        instances.write(pa.RecordBatch.from_pylist(rows, schema=INSTANCE_SCHEMA))
        written += len(rows)
    return written


def check_out(out_dir: Path, sources: Sequence[str]) -> None:
    # The output folder is never crawled (its own files would churn on every rerun), so it
    # cannot also be a source.
    for source in sources:
        if os.path.isdir(source) and os.path.samefile(source, out_dir):
            raise ValueError("the index output folder cannot be one of the sources; use a separate folder")

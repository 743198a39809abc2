"""Crawling: every regular file under the sources, and the rows read from a chunk of them.

:func:`walk_files` lists files depth first (links followed, each folder once);
:func:`index_files` is the task :func:`pacs_workbench.cohort.index.build_index` sends to its
workers: it reads a chunk of files into instance rows and error rows, one row per file, and a
bad file never stops it. Headers are read by the fast scanner; only X-Ray Radiation Dose SRs are
parsed whole, for their dose (:mod:`pacs_workbench.dicom.dose`), and enhanced multi-frame images
up to their pixels, for the functional groups (:mod:`pacs_workbench.dicom.multiframe`). Error
messages never quote a path or a value.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from pacs_workbench.cohort.index_schema import ERROR_SCHEMA, INSTANCE_SCHEMA
from pacs_workbench.dicom import read as dicomio
from pacs_workbench.dicom.dose import is_dose_sr, read_ct_dose
from pacs_workbench.dicom.multiframe import fill_enhanced, is_enhanced_image
from pacs_workbench.dicom.read import DicomReadError
from pacs_workbench.dicom.schema import KEYWORD_TAGS, RowSource, values_to_row
from pacs_workbench.dicom.values import read_tag_values

_READ_TAGS: tuple[int, ...] = tuple(KEYWORD_TAGS.values())


def _read_row(path: str) -> tuple[dict[str, Any], bool]:
    header = read_tag_values(path, _READ_TAGS)
    values = {keyword: header.values.get(tag) for keyword, tag in KEYWORD_TAGS.items()}
    source = RowSource(
        path, header.size, header.mtime_ns, header.transfer_syntax, header.media_sop_class, header.media_sop_instance
    )
    row = values_to_row(values, source)
    if is_dose_sr(row["SOPClassUID"]):
        row.update(_dose_values(path))
        return row, False
    if is_enhanced_image(row["SOPClassUID"]):
        return _enhanced_row(row, path), False
    return row, header.fast


def _dose_values(path: str) -> dict[str, Any]:
    """The dose columns of a dose SR file: the one kind of instance parsed whole (its content tree)."""
    try:
        ds = dicomio.read_header(path, stop_before_pixels=True)
    except DicomReadError:
        return {}  # the header was read; a content tree that is not is no dose, not a lost instance
    return read_ct_dose(ds)


def _enhanced_row(row: dict[str, Any], path: str) -> dict[str, Any]:
    """An enhanced image's row with geometry, MR timing and contrast from its functional groups."""
    try:
        ds = dicomio.read_header(path, stop_before_pixels=True)
    except DicomReadError:
        return row  # the header was read; functional groups that are not stay unknown
    return fill_enhanced(row, ds)


def read_instance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one file into an ``instances.parquet`` row.

    Raises
    ------
    DicomReadError
        Or a subclass (``EmptyFileError``, ``NotDicomError``, ``TruncatedDicomError``,
        ``UnidentifiedDicomError``) when the file is not a readable instance.
    """
    return _read_row(os.fspath(path))[0]


def stat_or_none(path: str) -> tuple[int | None, int | None]:
    """``(size, mtime_ns)`` of a file, else of the link itself, else ``(None, None)``."""
    for follow in (True, False):
        try:
            st = os.stat(path, follow_symlinks=follow)
        except OSError:
            continue
        return st.st_size, st.st_mtime_ns
    return None, None


def index_files(paths: Sequence[str]) -> tuple[pa.RecordBatch, pa.RecordBatch, int]:
    """Read a chunk of files: the task :func:`pacs_workbench.cohort.index.build_index` sends to workers.

    Parameters
    ----------
    paths
        File paths.

    Returns
    -------
    instances, errors, n_pydicom
        Record batches in :data:`INSTANCE_SCHEMA` and :data:`ERROR_SCHEMA` (together one
        row per path) and how many files needed the pydicom reader.
    """
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    n_pydicom = 0
    for path in paths:
        try:
            row, fast = _read_row(path)
        except DicomReadError as error:
            size, mtime_ns = stat_or_none(path)
            errors.append(
                {"path": path, "error": error.message, "error_kind": error.kind,
                 "file_size": size, "mtime_ns": mtime_ns}
            )
            continue
        except Exception as error:  # a reader bug must cost one file, not the crawl
            size, mtime_ns = stat_or_none(path)
            errors.append(
                {"path": path, "error": f"unreadable: unexpected {type(error).__name__}",
                 "error_kind": "unreadable", "file_size": size, "mtime_ns": mtime_ns}
            )
            continue
        rows.append(row)
        n_pydicom += not fast
    return (
        pa.RecordBatch.from_pylist(rows, schema=INSTANCE_SCHEMA),
        pa.RecordBatch.from_pylist(errors, schema=ERROR_SCHEMA),
        n_pydicom,
    )


def walk_files(
    sources: Iterable[str | os.PathLike[str]], *, skip_dirs: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[tuple[str, int | None, int | None, str | None]]:
    """Every regular file under the sources, depth first in name order.

    Hidden files and folders are included. Symbolic links are followed; a folder
    reached twice (a link loop, or overlapping sources) is walked once. Sockets, pipes
    and devices are skipped (reading them could block).

    Yields
    ------
    path, size, mtime_ns, problem
        Absolute path (symbolic links not resolved) and ``stat`` of the file; for a
        broken link, a link loop or an unlistable folder, ``problem`` says so (and the
        size and time are the link's own, when known).
    """
    visited: set[tuple[int, int]] = set()
    for skip in skip_dirs:
        try:
            st = os.stat(skip)
        except OSError:
            continue
        visited.add((st.st_dev, st.st_ino))
    for source in sources:
        root = os.path.abspath(os.fspath(source))
        st = os.stat(root)
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key not in visited:
                visited.add(key)
                yield from _walk_dir(root, visited)
        elif stat.S_ISREG(st.st_mode):
            yield root, st.st_size, st.st_mtime_ns, None


def _walk_dir(root: str, visited: set[tuple[int, int]]) -> Iterator[tuple[str, int | None, int | None, str | None]]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as error:
            yield folder, None, None, f"unreadable folder: {error.strerror or type(error).__name__}"
            continue
        subfolders: list[str] = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as error:
                size, mtime_ns = stat_or_none(entry.path)
                if entry.is_symlink():
                    problem = "unreadable: broken symbolic link (or a link loop)"
                else:
                    problem = f"unreadable: {error.strerror or type(error).__name__}"
                yield entry.path, size, mtime_ns, problem
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key not in visited:
                    visited.add(key)
                    subfolders.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                yield entry.path, st.st_size, st.st_mtime_ns, None
        stack.extend(reversed(subfolders))

"""Index: crawl DICOM folders into Parquet and query them with DuckDB.

``build_index(SRC..., out)`` walks every regular file under the sources and writes

* ``out/instances.parquet``: one row per readable instance (:data:`INSTANCE_SCHEMA`:
  ``path``, ``file_size``, ``mtime_ns``, the DICOM attributes cohort building needs under
  their keywords, and the derived ``contrast`` flag);
* ``out/errors.parquet``: one row per file that is not a readable instance
  (:data:`ERROR_SCHEMA`: ``path``, ``error``, ``error_kind``, ``file_size``, ``mtime_ns``).

Every file found lands in exactly one of the two. A bad file never stops the crawl.

A source may also be a PACS (``dicomweb+http://HOST:PORT/dicom-web`` or
``dimse://AET@HOST:PORT``, see :func:`pacs_workbench.dicom.net.is_pacs_url`): its instances
are queried with :func:`pacs_workbench.dicom.net.query_instances` and their rows (``path``
is the instance's URL) stream into the same ``instances.parquet``. A PACS has no
modification time to compare, so it is queried in full on every run.

Reruns compare ``path``, ``file_size`` and ``mtime_ns`` with the previous index and read
only new or changed files; rows of files that disappeared are dropped. Files are read
in chunks (many paths per task, to amortize process overhead) through
:func:`pacs_workbench.core.executor.map_items`: in this process, a local process pool, or a
Dask cluster. Rows stream into both Parquet files in row groups, so memory stays flat,
and the two files replace the previous ones only when the run completes.

:func:`connect_index` opens a DuckDB connection with the views ``instances``,
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
import stat
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydicom.dataset import Dataset

from pacs_workbench.core.executor import default_workers, map_items
from pacs_workbench.core.files import pid_alive as _pid_alive
from pacs_workbench.dicom.read import (
    DicomReadError,
    UnidentifiedDicomError,
    dataset_values,
    is_valid_uid,
    read_tag_values,
    tags_for_keywords,
)

__all__ = [
    "ATTRIBUTE_KEYWORDS",
    "ERROR_SCHEMA",
    "INSTANCE_SCHEMA",
    "UnsupportedSourceError",
    "build_index",
    "connect_index",
    "dataset_to_row",
    "index_files",
    "read_instance",
    "walk_files",
]

SCHEMA_VERSION = "1"
INSTANCES_FILE = "instances.parquet"
ERRORS_FILE = "errors.parquet"
CHUNK_SIZE = 256  # paths per task: large enough to amortize a process round trip
_ROW_GROUP_ROWS = 16_384
_DUCKDB_MEMORY = "256MB"  # for the rerun diff; larger listings spill to disk
_METADATA = {b"pacs_workbench.cohort.index.schema_version": SCHEMA_VERSION.encode()}

_STR, _FLOAT, _INT, _FLOATS = "str", "float", "int", "floats"

# (keyword, kind, Arrow type): the DICOM attributes stored per instance, in column order.
# Multi-valued text (ImageType, ConvolutionKernel) is joined with a backslash, as DICOM
# encodes it; DS/IS numbers become floats/ints (unparsable values become null).
_ATTRIBUTES: tuple[tuple[str, str, pa.DataType], ...] = (
    ("SOPInstanceUID", _STR, pa.string()),
    ("SOPClassUID", _STR, pa.string()),
    ("StudyInstanceUID", _STR, pa.string()),
    ("SeriesInstanceUID", _STR, pa.string()),
    ("PatientID", _STR, pa.string()),
    ("PatientName", _STR, pa.string()),
    ("PatientBirthDate", _STR, pa.string()),
    ("PatientSex", _STR, pa.string()),
    ("PatientAge", _STR, pa.string()),
    ("AccessionNumber", _STR, pa.string()),
    ("Modality", _STR, pa.string()),
    ("StudyDate", _STR, pa.string()),
    ("StudyTime", _STR, pa.string()),
    ("SeriesDate", _STR, pa.string()),
    ("SeriesTime", _STR, pa.string()),
    ("AcquisitionDate", _STR, pa.string()),
    ("StudyDescription", _STR, pa.string()),
    ("SeriesDescription", _STR, pa.string()),
    ("ProtocolName", _STR, pa.string()),
    ("BodyPartExamined", _STR, pa.string()),
    ("Manufacturer", _STR, pa.string()),
    ("ManufacturerModelName", _STR, pa.string()),
    ("InstitutionName", _STR, pa.string()),
    ("SliceThickness", _FLOAT, pa.float64()),
    ("SpacingBetweenSlices", _FLOAT, pa.float64()),
    ("PixelSpacing", _FLOATS, pa.list_(pa.float64())),
    ("KVP", _FLOAT, pa.float64()),
    ("ContrastBolusAgent", _STR, pa.string()),
    ("ConvolutionKernel", _STR, pa.string()),
    ("Rows", _INT, pa.int32()),
    ("Columns", _INT, pa.int32()),
    ("SeriesNumber", _INT, pa.int64()),
    ("InstanceNumber", _INT, pa.int64()),
    ("ImageType", _STR, pa.string()),
    ("ImagePositionPatient", _FLOATS, pa.list_(pa.float64())),
    ("ImageOrientationPatient", _FLOATS, pa.list_(pa.float64())),
    ("SliceLocation", _FLOAT, pa.float64()),
    ("BurnedInAnnotation", _STR, pa.string()),
    ("NumberOfFrames", _INT, pa.int64()),
)
#: DICOM keywords stored as columns of ``instances.parquet`` (besides the derived ones).
ATTRIBUTE_KEYWORDS: tuple[str, ...] = tuple(keyword for keyword, _, _ in _ATTRIBUTES)
# Read for the derived ``contrast`` column only.
_CONTRAST_KEYWORDS = ("ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusVolume")
_KEYWORD_TAGS: dict[str, int] = tags_for_keywords((*ATTRIBUTE_KEYWORDS, *_CONTRAST_KEYWORDS[1:]))
_READ_TAGS: tuple[int, ...] = tuple(_KEYWORD_TAGS.values())
_NO_CONTRAST = frozenset({"", "NONE", "NO"})

_ATTRIBUTE_TYPES = {keyword: arrow_type for keyword, _, arrow_type in _ATTRIBUTES}
_DERIVED_TYPES = {
    "path": pa.string(), "file_size": pa.int64(), "mtime_ns": pa.int64(),
    "contrast": pa.bool_(), "TransferSyntaxUID": pa.string(),
}  # fmt: skip
_AFTER_AGENT = ATTRIBUTE_KEYWORDS.index("ContrastBolusAgent") + 1
_FRAMES = ATTRIBUTE_KEYWORDS.index("NumberOfFrames")
_COLUMN_ORDER = (
    "path", "file_size", "mtime_ns",
    *ATTRIBUTE_KEYWORDS[:_AFTER_AGENT], "contrast", *ATTRIBUTE_KEYWORDS[_AFTER_AGENT:_FRAMES],
    "TransferSyntaxUID", "NumberOfFrames",
)  # fmt: skip
#: Columns of ``instances.parquet``, in order.
INSTANCE_SCHEMA = pa.schema(
    [pa.field(name, (_ATTRIBUTE_TYPES | _DERIVED_TYPES)[name]) for name in _COLUMN_ORDER],
    metadata=_METADATA,
)
#: Columns of ``errors.parquet``, in order.
ERROR_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("error", pa.string()),
        pa.field("error_kind", pa.string()),
        pa.field("file_size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
    ],
    metadata=_METADATA,
)
_LISTING_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("file_size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("walk_error", pa.string()),
    ]
)


class UnsupportedSourceError(ValueError):
    """An index source this version cannot crawl (e.g. a ``dicomweb+ftp://`` URL)."""


# --- rows --------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        parts = ["" if v is None else str(v).strip(" \0") for v in value]
        joined = "\\".join(parts)
        return joined if joined.strip("\\") else None
    text = str(value).strip(" \0")
    return text or None


def _float(value: Any) -> float | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value.strip(" \0") if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip(" \0")
        try:
            return int(text)
        except ValueError:
            value = text
    number = _float(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    numbers = [_float(v) for v in items]
    if not numbers or any(n is None for n in numbers):
        return None  # a partly unreadable vector would mislead more than a null
    return [n for n in numbers if n is not None]


_COERCE = {_STR: _text, _FLOAT: _float, _INT: _int, _FLOATS: _floats}
_ROW_PLAN = tuple((keyword, _COERCE[kind]) for keyword, kind, _ in _ATTRIBUTES)


def _has_contrast(agent: Any, route: Any, volume: Any) -> bool:
    """The derived ``contrast`` flag.

    True when (0018,0010) Contrast/Bolus Agent or (0018,1040) Contrast/Bolus Route holds
    a value other than empty/"NONE"/"NO", or (0018,1041) Contrast/Bolus Volume is a
    positive number.
    """
    for value in (agent, route):
        text = _text(value)
        if text is not None and text.upper() not in _NO_CONTRAST:
            return True
    amount = _float(volume)
    return amount is not None and amount > 0


def _make_row(
    values: Mapping[str, Any],
    path: str,
    size: int | None,
    mtime_ns: int | None,
    transfer_syntax: str | None,
    media_sop_class: str | None,
    media_sop_instance: str | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path, "file_size": size, "mtime_ns": mtime_ns}
    for keyword, coerce in _ROW_PLAN:
        value = values.get(keyword)
        if value is None:
            row[keyword] = None
        elif coerce is _text and type(value) is str:
            row[keyword] = value.strip(" \0") or None  # the commonest case, inlined
        else:
            row[keyword] = coerce(value)
    # A DICOMDIR or a bare File Meta identifies itself only in group 0002.
    if row["SOPClassUID"] is None:
        row["SOPClassUID"] = media_sop_class
    if row["SOPInstanceUID"] is None:
        row["SOPInstanceUID"] = media_sop_instance
    row["contrast"] = _has_contrast(
        values.get("ContrastBolusAgent"), values.get("ContrastBolusRoute"), values.get("ContrastBolusVolume")
    )
    row["TransferSyntaxUID"] = _text(transfer_syntax)
    return row


def dataset_to_row(
    ds: Dataset, path: str, size: int | None = None, mtime_ns: int | None = None
) -> dict[str, Any]:
    """Turn a pydicom data set into an ``instances.parquet`` row.

    The same row builder serves files read from disk and data sets from other sources
    (e.g. a PACS query, where ``path`` is the instance's URL and ``size``/``mtime_ns``
    are unknown).

    Parameters
    ----------
    ds
        The data set; raw elements from a file and converted elements both work.
    path
        What identifies the instance's source (a file path or a URL).
    size, mtime_ns
        File size and modification time, or ``None``.

    Returns
    -------
    dict
        One value per column of :data:`INSTANCE_SCHEMA`, plain Python.

    Raises
    ------
    DicomReadError
        When the data set carries no valid (0008,0016)/(0008,0018) SOP Class/Instance
        UID (nor a File Meta equivalent).
    """
    values = dataset_values(ds, _KEYWORD_TAGS)
    meta = getattr(ds, "file_meta", None)
    meta_values = dataset_values(
        meta,
        {"TransferSyntaxUID": 0x00020010, "MediaStorageSOPClassUID": 0x00020002,
         "MediaStorageSOPInstanceUID": 0x00020003},
    ) if meta is not None else {}
    media_class = _text(meta_values.get("MediaStorageSOPClassUID"))
    media_instance = _text(meta_values.get("MediaStorageSOPInstanceUID"))
    identifiers = (_text(values.get("SOPClassUID")), _text(values.get("SOPInstanceUID")), media_class, media_instance)
    if not any(is_valid_uid(value) for value in identifiers):
        raise UnidentifiedDicomError(
            "invalid DICOM: data set without a valid (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID"
        )
    return _make_row(
        values, path, size, mtime_ns, _text(meta_values.get("TransferSyntaxUID")), media_class, media_instance
    )


def _read_row(path: str) -> tuple[dict[str, Any], bool]:
    header = read_tag_values(path, _READ_TAGS)
    values = {keyword: header.values.get(tag) for keyword, tag in _KEYWORD_TAGS.items()}
    row = _make_row(
        values,
        path,
        header.size,
        header.mtime_ns,
        header.transfer_syntax,
        header.media_sop_class,
        header.media_sop_instance,
    )
    return row, header.fast


def read_instance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one file into an ``instances.parquet`` row.

    Raises
    ------
    DicomReadError
        Or a subclass (``EmptyFileError``, ``NotDicomError``, ``TruncatedDicomError``,
        ``UnidentifiedDicomError``) when the file is not a readable instance.
    """
    return _read_row(os.fspath(path))[0]


def _stat_or_none(path: str) -> tuple[int | None, int | None]:
    for follow in (True, False):
        try:
            st = os.stat(path, follow_symlinks=follow)
        except OSError:
            continue
        return st.st_size, st.st_mtime_ns
    return None, None


def index_files(paths: Sequence[str]) -> tuple[pa.RecordBatch, pa.RecordBatch, int]:
    """Read a chunk of files: the task :func:`build_index` sends to workers.

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
            size, mtime_ns = _stat_or_none(path)
            errors.append(
                {"path": path, "error": error.message, "error_kind": error.kind,
                 "file_size": size, "mtime_ns": mtime_ns}
            )
            continue
        except Exception as error:  # a reader bug must cost one file, not the crawl
            size, mtime_ns = _stat_or_none(path)
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


# --- crawling ----------------------------------------------------------------------------------


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
                size, mtime_ns = _stat_or_none(entry.path)
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


# --- writing -----------------------------------------------------------------------------------


class _Writer:
    """Buffer record batches and write them to Parquet in row groups."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int = _ROW_GROUP_ROWS) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._rows_per_group = rows_per_group
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if batch.schema != self.schema:
            batch = pa.Table.from_batches([batch]).cast(self.schema).to_batches()[0]
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self._rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            self._writer.write_table(table, row_group_size=max(self._pending_rows, 1))
            self._pending = []
            self._pending_rows = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


def _sql_text(value: str | os.PathLike[str]) -> str:
    return "'" + os.fspath(value).replace("'", "''") + "'"


def _previous_index(out: Path) -> tuple[Path, Path] | None:
    """The previous index files, when both exist and have this module's schema."""
    instances, errors = out / INSTANCES_FILE, out / ERRORS_FILE
    if not (instances.is_file() and errors.is_file()):
        return None
    try:
        for path, schema in ((instances, INSTANCE_SCHEMA), (errors, ERROR_SCHEMA)):
            found = pq.read_schema(path)
            version = (found.metadata or {}).get(b"pacs_workbench.cohort.index.schema_version")
            if version != SCHEMA_VERSION.encode() or found.names != schema.names:
                return None
    except (OSError, pa.ArrowInvalid):
        return None
    return instances, errors


def _check_sources(src: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """Folders/files and PACS URLs among the sources (a malformed URL fails here, before writing)."""
    from pacs_workbench.dicom.net import is_pacs_url, parse_pacs_url

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


def _index_pacs(url: str, instances: _Writer, *, progress: bool, batch_rows: int = 1024) -> int:
    """Stream the instance rows of a PACS (:func:`pacs_workbench.dicom.net.query_instances`) into ``instances``."""
    from pacs_workbench.dicom.net import query_instances

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


def _check_out(out_dir: Path, sources: Sequence[str]) -> None:
    # The output folder is never crawled (its own files would churn on every rerun), so it
    # cannot also be a source.
    for source in sources:
        if os.path.isdir(source) and os.path.samefile(source, out_dir):
            raise ValueError("the index output folder cannot be one of the sources; use a separate folder")


def _write_listing(sources: Sequence[str], path: Path, skip: Path) -> None:
    writer = pq.ParquetWriter(path, _LISTING_SCHEMA)
    try:
        columns: dict[str, list[Any]] = {name: [] for name in _LISTING_SCHEMA.names}
        for entry in walk_files(sources, skip_dirs=[skip]):
            for name, value in zip(_LISTING_SCHEMA.names, entry, strict=True):
                columns[name].append(value)
            if len(columns["path"]) >= 50_000:
                writer.write_table(pa.table(columns, schema=_LISTING_SCHEMA))
                columns = {name: [] for name in _LISTING_SCHEMA.names}
        writer.write_table(pa.table(columns, schema=_LISTING_SCHEMA))
    finally:
        writer.close()


def _plan(
    listing: Path,
    previous: tuple[Path, Path] | None,
    to_read: Path,
    spill: Path,
    instances: _Writer,
    errors: _Writer,
) -> dict[str, int]:
    """Copy unchanged rows of the previous index and list the files to read.

    DuckDB does the comparison so that neither the listing nor the previous index has
    to fit in Python memory.
    """
    con = duckdb.connect()
    try:
        # Bounded memory: beyond the limit DuckDB spills to a folder next to the outputs.
        con.execute(f"SET memory_limit = '{_DUCKDB_MEMORY}'")
        con.execute(f"SET temp_directory = {_sql_text(spill)}")
        con.execute(
            "CREATE VIEW listing AS SELECT DISTINCT ON (path) * FROM read_parquet("
            f"{_sql_text(listing)}) ORDER BY path"
        )
        if previous is None:
            con.execute(
                "CREATE VIEW old_keys AS SELECT NULL::VARCHAR AS path, NULL::BIGINT AS file_size, "
                "NULL::BIGINT AS mtime_ns WHERE false"
            )
        else:
            con.execute(
                f"CREATE VIEW old_instances AS SELECT * FROM read_parquet({_sql_text(previous[0])})"
            )
            con.execute(f"CREATE VIEW old_errors AS SELECT * FROM read_parquet({_sql_text(previous[1])})")
            # Rows of a PACS source (path = URL) are queried again, not compared with files.
            con.execute(
                "CREATE VIEW old_keys AS SELECT path, file_size, mtime_ns FROM old_instances "
                "WHERE path NOT LIKE '%://%' UNION ALL SELECT path, file_size, mtime_ns FROM old_errors"
            )
        same = "o.path = l.path AND o.file_size = l.file_size AND o.mtime_ns = l.mtime_ns"
        counts: dict[str, int] = {}
        (counts["files_seen"],) = _one(con, "SELECT count(*) FROM listing")
        (counts["removed"],) = _one(con, "SELECT count(*) FROM old_keys o ANTI JOIN listing l ON o.path = l.path")
        if previous is not None:
            for table, writer in (("old_instances", instances), ("old_errors", errors)):
                # A cursor of its own: a streaming result blocks its connection until closed.
                cursor = con.cursor()
                try:
                    query = cursor.sql(f"SELECT o.* FROM {table} o SEMI JOIN listing l ON {same}")
                    for batch in query.to_arrow_reader(_ROW_GROUP_ROWS) or ():
                        writer.write(batch)
                finally:
                    cursor.close()
        counts["skipped_unchanged"] = instances.rows + errors.rows
        con.execute(
            f"COPY (SELECT l.* FROM listing l ANTI JOIN old_keys o ON {same} ORDER BY l.path) "
            f"TO {_sql_text(to_read)} (FORMAT PARQUET)"
        )
        (counts["changed"],) = _one(
            con,
            f"SELECT count(*) FROM read_parquet({_sql_text(to_read)}) l "
            "SEMI JOIN old_keys o ON o.path = l.path",
        )
        (counts["read"],) = _one(con, f"SELECT count(*) FROM read_parquet({_sql_text(to_read)})")
    finally:
        con.close()
    counts["new"] = counts["read"] - counts["changed"]
    return counts


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    row = con.execute(sql).fetchone()
    if row is None:  # aggregates always return a row; this is for the type checker
        raise RuntimeError("query returned no row")
    return tuple(row)


def _chunks(to_read: Path, size: int, errors: _Writer) -> Iterator[list[str]]:
    """Paths to read, ``size`` per task; walk problems go straight to the error rows."""
    chunk: list[str] = []
    for batch in pq.ParquetFile(to_read).iter_batches(batch_size=8192):
        problems = batch.column("walk_error")
        if problems.null_count < batch.num_rows:
            bad = batch.filter(pc.is_valid(problems))
            errors.write(
                pa.RecordBatch.from_arrays(
                    [
                        bad.column("path"),
                        bad.column("walk_error"),
                        pa.array(["unreadable"] * bad.num_rows, pa.string()),
                        bad.column("file_size"),
                        bad.column("mtime_ns"),
                    ],
                    schema=ERROR_SCHEMA,
                )
            )
            batch = batch.filter(pc.is_null(problems))
        for path in batch.column("path").to_pylist():
            chunk.append(path)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


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
    pacs_workbench.dicom.net.PacsError, requests.RequestException
        When a PACS source fails; the previous index is left as it was.
    """
    started = time.perf_counter()
    sources, pacs_sources = _check_sources(src)
    out_dir = Path(out)
    if out_dir.exists():
        _check_out(out_dir, sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    had_files = (out_dir / INSTANCES_FILE).exists() or (out_dir / ERRORS_FILE).exists()
    previous = _previous_index(out_dir)
    _remove_stale_temp_files(out_dir)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    temp = {
        name: out_dir / f".{name}.{token}.tmp" for name in ("listing", "to_read", "spill", "instances", "errors")
    }
    instances = errors = None
    try:
        _write_listing(sources, temp["listing"], out_dir)
        instances = _Writer(temp["instances"], INSTANCE_SCHEMA)
        errors = _Writer(temp["errors"], ERROR_SCHEMA)
        counts = _plan(temp["listing"], previous, temp["to_read"], temp["spill"], instances, errors)
        slots = 8 if scheduler else (workers or default_workers())
        per_task = max(1, min(chunk_size, math.ceil(counts["read"] / (4 * slots)))) if slots > 1 else chunk_size
        n_tasks = math.ceil(counts["read"] / per_task) if counts["read"] else 0
        n_pydicom = 0
        results = map_items(
            index_files,
            _chunks(temp["to_read"], per_task, errors),
            workers=workers,
            scheduler=scheduler,
            desc="index chunks",
            total=n_tasks,
            progress=progress,
        )
        for found, failed, pydicom_count in results:
            instances.write(found)
            errors.write(failed)
            n_pydicom += pydicom_count
        pacs_instances = sum(_index_pacs(url, instances, progress=progress) for url in pacs_sources)
        instances.close()
        errors.close()
        kinds = _count_kinds(temp["errors"])
        os.replace(temp["errors"], out_dir / ERRORS_FILE)
        os.replace(temp["instances"], out_dir / INSTANCES_FILE)
    finally:
        for writer in (instances, errors):
            if writer is not None:
                # Already closed on success; on failure the original error matters more.
                with contextlib.suppress(Exception):
                    writer.close()
        for path in temp.values():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    summary: dict[str, Any] = {
        "files_seen": counts["files_seen"],
        "pacs_instances": pacs_instances,
        "instances": instances.rows,
        "errors": errors.rows,
        "read": counts["read"],
        "new": counts["new"],
        "changed": counts["changed"],
        "skipped_unchanged": counts["skipped_unchanged"],
        "removed": counts["removed"],
        "errors_by_kind": kinds,
        "read_with_pydicom": n_pydicom,
        "previous_index": "reused" if previous else ("incompatible" if had_files else "none"),
        "elapsed_s": round(elapsed, 3),
        "files_per_s": round(counts["read"] / elapsed, 1) if elapsed > 0 else None,
    }
    return summary


def _remove_stale_temp_files(out_dir: Path) -> None:
    """Delete temp files a killed run left behind (named ``.<part>.<pid>-<hex>.tmp``)."""
    for path in out_dir.glob(".*.*-*.tmp"):
        try:
            pid = int(path.name.split(".")[2].split("-")[0])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)




def _count_kinds(errors_path: Path) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for batch in pq.ParquetFile(errors_path).iter_batches(columns=["error_kind"]):
        for item in pc.value_counts(batch.column("error_kind")).to_pylist():
            kinds[str(item["values"])] += int(item["counts"])
    return dict(sorted(kinds.items()))


# --- querying ----------------------------------------------------------------------------------

_SERIES_FIRST = (
    "StudyInstanceUID", "PatientID", "Modality", "SOPClassUID", "SeriesNumber", "SeriesDescription",
    "ProtocolName", "BodyPartExamined", "SeriesDate", "SeriesTime", "Manufacturer", "ManufacturerModelName",
    "InstitutionName", "ConvolutionKernel", "SliceThickness", "SpacingBetweenSlices", "PixelSpacing", "KVP",
    "ContrastBolusAgent", "Rows", "Columns", "ImageType", "ImageOrientationPatient", "BurnedInAnnotation",
    "TransferSyntaxUID",
)  # fmt: skip
_STUDY_FIRST = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge", "AccessionNumber",
    "StudyDate", "StudyTime", "StudyDescription", "InstitutionName", "Manufacturer", "ManufacturerModelName",
)  # fmt: skip


def _series_sql() -> str:
    first = ",\n  ".join(
        f"first({c} ORDER BY InstanceNumber NULLS LAST, path) FILTER (WHERE {c} IS NOT NULL) AS {c}"
        for c in _SERIES_FIRST
    )
    # Slice position along the slice normal (row x column direction cosines of (0020,0037)),
    # so the extent is right for oblique and sagittal series too.
    return f"""
WITH geometry AS (
  SELECT *,
    CASE WHEN len(ImageOrientationPatient) = 6 AND len(ImagePositionPatient) = 3 THEN
      ImagePositionPatient[1] * (ImageOrientationPatient[2] * ImageOrientationPatient[6]
                                 - ImageOrientationPatient[3] * ImageOrientationPatient[5])
    + ImagePositionPatient[2] * (ImageOrientationPatient[3] * ImageOrientationPatient[4]
                                 - ImageOrientationPatient[1] * ImageOrientationPatient[6])
    + ImagePositionPatient[3] * (ImageOrientationPatient[1] * ImageOrientationPatient[5]
                                 - ImageOrientationPatient[2] * ImageOrientationPatient[4])
    END AS slice_position
  FROM instances
  WHERE SeriesInstanceUID IS NOT NULL
)
SELECT
  SeriesInstanceUID,
  {first},
  count(DISTINCT SOPInstanceUID) AS n_instances,
  count(*) AS n_files,
  CAST(sum(coalesce(NumberOfFrames, 1)) AS BIGINT) AS n_frames,
  bool_or(contrast) AS contrast,
  min(SliceLocation) AS min_slice_location,
  max(SliceLocation) AS max_slice_location,
  min(slice_position) AS min_slice_position,
  max(slice_position) AS max_slice_position,
  max(slice_position) - min(slice_position) AS extent_mm,
  min(InstanceNumber) AS min_instance_number,
  max(InstanceNumber) AS max_instance_number,
  first(path ORDER BY InstanceNumber NULLS LAST, path) AS first_path
FROM geometry
GROUP BY SeriesInstanceUID
"""


def _studies_sql() -> str:
    first = ",\n  ".join(
        f"first({c} ORDER BY SeriesNumber NULLS LAST, InstanceNumber NULLS LAST, path) "
        f"FILTER (WHERE {c} IS NOT NULL) AS {c}"
        for c in _STUDY_FIRST
    )
    return f"""
SELECT
  StudyInstanceUID,
  {first},
  CAST(try_strptime(first(StudyDate) FILTER (WHERE StudyDate IS NOT NULL), '%Y%m%d') AS DATE) AS study_date,
  count(DISTINCT SeriesInstanceUID) AS n_series,
  count(DISTINCT SOPInstanceUID) AS n_instances,
  count(*) AS n_files,
  list_sort(list(DISTINCT Modality) FILTER (WHERE Modality IS NOT NULL)) AS modalities,
  list_sort(list(DISTINCT Manufacturer) FILTER (WHERE Manufacturer IS NOT NULL)) AS manufacturers,
  bool_or(contrast) AS contrast
FROM instances
WHERE StudyInstanceUID IS NOT NULL
GROUP BY StudyInstanceUID
"""


def connect_index(
    index_dir: str | os.PathLike[str], con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """Open an index with DuckDB.

    Registers the views

    * ``instances`` and ``errors``: the two Parquet files as written;
    * ``series``: one row per (0020,000E) Series Instance UID with the first non-null
      value (by Instance Number) of the descriptive columns, ``n_instances`` (distinct
      SOP Instance UIDs), ``n_files``, ``n_frames``, ``contrast`` (any instance),
      ``min/max_slice_location``, ``min/max_slice_position`` and ``extent_mm`` (position
      along the slice normal from (0020,0032) and (0020,0037)), ``first_path``;
    * ``studies``: one row per (0020,000D) Study Instance UID with patient and study
      attributes, ``study_date`` (a DATE), ``n_series``, ``n_instances``, ``n_files``,
      ``modalities`` and ``manufacturers`` (sorted lists) and ``contrast``.

    Parameters
    ----------
    index_dir
        Folder holding ``instances.parquet`` and ``errors.parquet``.
    con
        An existing connection to add the views to (default: a new in-memory one).

    Raises
    ------
    FileNotFoundError
        When the folder holds no index.
    """
    folder = Path(index_dir)
    paths = {name: folder / file for name, file in (("instances", INSTANCES_FILE), ("errors", ERRORS_FILE))}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"no index in {folder} (missing {path.name}); run `pacs-workbench index`")
    con = con if con is not None else duckdb.connect()
    for name, path in paths.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_sql_text(path.resolve())})")
    con.execute(f"CREATE OR REPLACE VIEW series AS {_series_sql()}")
    con.execute(f"CREATE OR REPLACE VIEW studies AS {_studies_sql()}")
    return con

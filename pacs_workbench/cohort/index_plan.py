"""The incremental index: what a rerun can keep, what it must read, and the row-group writer.

The previous index, the new listing and the comparison between them live in Parquet files
that DuckDB reads: neither the listing nor the previous index has to fit in Python memory.
Unchanged rows (same ``path``, ``file_size`` and ``mtime_ns``) are copied over; new and
changed files are listed for reading; rows of files that disappeared are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pacs_workbench.cohort.crawl import walk_files
from pacs_workbench.cohort.index_schema import (
    ERROR_SCHEMA,
    ERRORS_FILE,
    INSTANCE_SCHEMA,
    INSTANCES_FILE,
    LISTING_SCHEMA,
    SCHEMA_VERSION,
    VERSION_KEY,
    sql_text,
)

ROW_GROUP_ROWS = 16_384
# DuckDB's share of the rerun comparison: one thread and a small buffer pool, so its memory is
# the same for ten thousand files and for a million (more spills to disk, it does not grow).
_DUCKDB_MEMORY = "64MB"
_DUCKDB_THREADS = 1
_LISTING_BATCH = 8_192


class RowGroupWriter:
    """Buffer record batches and write them to Parquet in row groups."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int = ROW_GROUP_ROWS) -> None:
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


def previous_index(out: Path) -> tuple[Path, Path] | None:
    """The previous index files, when both exist and have this module's schema."""
    instances, errors = out / INSTANCES_FILE, out / ERRORS_FILE
    if not (instances.is_file() and errors.is_file()):
        return None
    try:
        for path, schema in ((instances, INSTANCE_SCHEMA), (errors, ERROR_SCHEMA)):
            found = pq.read_schema(path)
            version = (found.metadata or {}).get(VERSION_KEY)
            if version != SCHEMA_VERSION.encode() or found.names != schema.names:
                return None
    except (OSError, pa.ArrowInvalid):
        return None
    return instances, errors


def write_listing(sources: Sequence[str], path: Path, skip: Path) -> None:
    writer = pq.ParquetWriter(path, LISTING_SCHEMA)
    try:
        columns: dict[str, list[Any]] = {name: [] for name in LISTING_SCHEMA.names}
        for entry in walk_files(sources, skip_dirs=[skip]):
            for name, value in zip(LISTING_SCHEMA.names, entry, strict=True):
                columns[name].append(value)
            if len(columns["path"]) >= _LISTING_BATCH:
                writer.write_table(pa.table(columns, schema=LISTING_SCHEMA))
                columns = {name: [] for name in LISTING_SCHEMA.names}
        writer.write_table(pa.table(columns, schema=LISTING_SCHEMA))
    finally:
        writer.close()


def plan_rerun(
    scratch: Mapping[str, Path],
    previous: tuple[Path, Path] | None,
    instances: RowGroupWriter,
    errors: RowGroupWriter,
) -> dict[str, int]:
    """Copy unchanged rows of the previous index and list the files to read.

    DuckDB does the comparison so that neither the listing nor the previous index has
    to fit in Python memory. ``scratch`` names the files of the run: ``listing`` (the
    walk), ``unique`` (the listing once per path, sorted), ``to_read`` and ``spill``
    (DuckDB's folder for what exceeds its memory limit).
    """
    con = duckdb.connect()
    try:
        # Bounded memory: beyond the limit DuckDB spills to a folder next to the outputs.
        con.execute(f"SET memory_limit = '{_DUCKDB_MEMORY}'")
        con.execute(f"SET threads = {_DUCKDB_THREADS}")
        con.execute(f"SET temp_directory = {sql_text(scratch['spill'])}")
        # Sorted and made unique once, into a file: a view would sort the listing again for
        # every query that reads it.
        con.execute(
            f"COPY (SELECT DISTINCT ON (path) * FROM read_parquet({sql_text(scratch['listing'])}) ORDER BY path) "
            f"TO {sql_text(scratch['unique'])} (FORMAT PARQUET)"
        )
        con.execute(f"CREATE VIEW listing AS SELECT * FROM read_parquet({sql_text(scratch['unique'])})")
        if previous is None:
            con.execute(
                "CREATE VIEW old_keys AS SELECT NULL::VARCHAR AS path, NULL::BIGINT AS file_size, "
                "NULL::BIGINT AS mtime_ns WHERE false"
            )
        else:
            con.execute(f"CREATE VIEW old_instances AS SELECT * FROM read_parquet({sql_text(previous[0])})")
            con.execute(f"CREATE VIEW old_errors AS SELECT * FROM read_parquet({sql_text(previous[1])})")
            # Rows of a PACS source (path = URL) are queried again, not compared with files.
            con.execute(
                "CREATE VIEW old_keys AS SELECT path, file_size, mtime_ns FROM old_instances "
                "WHERE path NOT LIKE '%://%' UNION ALL SELECT path, file_size, mtime_ns FROM old_errors"
            )
        counts = _compare(con, scratch["to_read"], previous is not None, instances, errors)
    finally:
        con.close()
    counts["new"] = counts["read"] - counts["changed"]
    return counts


def _compare(
    con: duckdb.DuckDBPyConnection, to_read: Path, has_previous: bool, instances: RowGroupWriter, errors: RowGroupWriter
) -> dict[str, int]:
    """The counts of the comparison; unchanged rows copied, the files to read written to ``to_read``."""
    same = "o.path = l.path AND o.file_size = l.file_size AND o.mtime_ns = l.mtime_ns"
    counts: dict[str, int] = {}
    (counts["files_seen"],) = _one(con, "SELECT count(*) FROM listing")
    (counts["removed"],) = _one(con, "SELECT count(*) FROM old_keys o ANTI JOIN listing l ON o.path = l.path")
    if has_previous:
        for table, writer in (("old_instances", instances), ("old_errors", errors)):
            # A cursor of its own: a streaming result blocks its connection until closed.
            cursor = con.cursor()
            try:
                query = cursor.sql(f"SELECT o.* FROM {table} o SEMI JOIN listing l ON {same}")
                for batch in query.to_arrow_reader(ROW_GROUP_ROWS) or ():
                    writer.write(batch)
            finally:
                cursor.close()
    counts["skipped_unchanged"] = instances.rows + errors.rows
    # the listing is sorted by path already, and the anti join keeps its order with one thread
    con.execute(
        f"COPY (SELECT l.* FROM listing l ANTI JOIN old_keys o ON {same}) TO {sql_text(to_read)} (FORMAT PARQUET)"
    )
    (counts["changed"],) = _one(
        con,
        f"SELECT count(*) FROM read_parquet({sql_text(to_read)}) l SEMI JOIN old_keys o ON o.path = l.path",
    )
    (counts["read"],) = _one(con, f"SELECT count(*) FROM read_parquet({sql_text(to_read)})")
    return counts


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    row = con.execute(sql).fetchone()
    if row is None:  # aggregates always return a row; this is for the type checker
        raise RuntimeError("query returned no row")
    return tuple(row)


def chunks(to_read: Path, size: int, errors: RowGroupWriter) -> Iterator[list[str]]:
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

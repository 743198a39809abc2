"""The files of an index: ``instances.parquet`` and ``errors.parquet``, their columns and version.

:data:`INSTANCE_SCHEMA` is the instance row of :mod:`pacs_workbench.dicom.schema` with the
index's schema version in the file metadata; :data:`ERROR_SCHEMA` holds one row per file that
is not a readable instance. A previous index of another version is rebuilt, not reused.
"""

from __future__ import annotations

import os

import pyarrow as pa

from pacs_workbench.dicom.schema import ROW_SCHEMA

SCHEMA_VERSION = "3"  # 2: dose columns of X-Ray Radiation Dose SRs; 3: MR acquisition columns
INSTANCES_FILE = "instances.parquet"
ERRORS_FILE = "errors.parquet"
VERSION_KEY = b"pacs_workbench.cohort.index.schema_version"
_METADATA = {VERSION_KEY: SCHEMA_VERSION.encode()}

#: Columns of ``instances.parquet``, in order.
INSTANCE_SCHEMA = ROW_SCHEMA.with_metadata(_METADATA)
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
#: Columns of the walk's listing (a scratch file of one run).
LISTING_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("file_size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("walk_error", pa.string()),
    ]
)


def sql_text(value: str | os.PathLike[str]) -> str:
    """A path or text as a quoted DuckDB string literal."""
    return "'" + os.fspath(value).replace("'", "''") + "'"

"""Querying an index with DuckDB: the views ``instances``, ``errors``, ``series`` and ``studies``."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from pacs_workbench.cohort.index_schema import ERRORS_FILE, INSTANCES_FILE, sql_text

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
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({sql_text(path.resolve())})")
    con.execute(f"CREATE OR REPLACE VIEW series AS {_series_sql()}")
    con.execute(f"CREATE OR REPLACE VIEW studies AS {_studies_sql()}")
    return con

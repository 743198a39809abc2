"""The attribute schema of an instance row: which DICOM attributes, as what type, built how.

An instance row is what the workbench knows of one DICOM instance from its header:
``path`` (a file, or a PACS URL), ``file_size``, ``mtime_ns``, the attributes of
:data:`ATTRIBUTES` under their keywords, the derived ``contrast`` flag, the
``TransferSyntaxUID`` and the dose columns of X-Ray Radiation Dose SRs (:data:`ROW_SCHEMA`); an
enhanced multi-frame image's empty geometry, MR timing and contrast columns are filled from its
functional groups (:func:`pacs_workbench.dicom.multiframe.fill_enhanced`).
:func:`dataset_to_row` and :func:`values_to_row` build rows the same way for files crawled
from a folder and for instances queried from a PACS, with the coercers of :mod:`pacs_workbench.dicom.attributes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydicom.dataset import Dataset

from pacs_workbench.dicom.attributes import to_float, to_floats, to_int, to_text
from pacs_workbench.dicom.dose import DOSE_COLUMNS, is_dose_sr, read_ct_dose
from pacs_workbench.dicom.multiframe import fill_enhanced, is_enhanced_image
from pacs_workbench.dicom.read import UnidentifiedDicomError, is_valid_uid, tags_for_keywords
from pacs_workbench.dicom.values import dataset_values

_COERCERS: dict[str, Callable[[Any], Any]] = {"str": to_text, "float": to_float, "int": to_int, "floats": to_floats}

#: ``(keyword, kind, Arrow type)`` of the DICOM attributes an instance row holds, in column
#: order; ``kind`` names the coercer (``str``: :func:`to_text`, ``float``, ``int``, ``floats``).
#: Multi-valued text (ImageType, ConvolutionKernel) is joined with a backslash, as DICOM encodes
#: it; DS/IS numbers become floats/ints (unparsable values become null).
ATTRIBUTES: tuple[tuple[str, str, pa.DataType], ...] = (
    ("SOPInstanceUID", "str", pa.string()),
    ("SOPClassUID", "str", pa.string()),
    ("StudyInstanceUID", "str", pa.string()),
    ("SeriesInstanceUID", "str", pa.string()),
    ("PatientID", "str", pa.string()),
    ("PatientName", "str", pa.string()),
    ("PatientBirthDate", "str", pa.string()),
    ("PatientSex", "str", pa.string()),
    ("PatientAge", "str", pa.string()),
    ("AccessionNumber", "str", pa.string()),
    ("Modality", "str", pa.string()),
    ("StudyDate", "str", pa.string()),
    ("StudyTime", "str", pa.string()),
    ("SeriesDate", "str", pa.string()),
    ("SeriesTime", "str", pa.string()),
    ("AcquisitionDate", "str", pa.string()),
    ("StudyDescription", "str", pa.string()),
    ("SeriesDescription", "str", pa.string()),
    ("ProtocolName", "str", pa.string()),
    ("BodyPartExamined", "str", pa.string()),
    ("Manufacturer", "str", pa.string()),
    ("ManufacturerModelName", "str", pa.string()),
    ("InstitutionName", "str", pa.string()),
    ("SliceThickness", "float", pa.float64()),
    ("SpacingBetweenSlices", "float", pa.float64()),
    ("PixelSpacing", "floats", pa.list_(pa.float64())),
    ("KVP", "float", pa.float64()),
    ("ContrastBolusAgent", "str", pa.string()),
    ("ConvolutionKernel", "str", pa.string()),
    ("Rows", "int", pa.int32()),
    ("Columns", "int", pa.int32()),
    ("SeriesNumber", "int", pa.int64()),
    ("InstanceNumber", "int", pa.int64()),
    ("ImageType", "str", pa.string()),
    ("ImagePositionPatient", "floats", pa.list_(pa.float64())),
    ("ImageOrientationPatient", "floats", pa.list_(pa.float64())),
    ("SliceLocation", "float", pa.float64()),
    ("BurnedInAnnotation", "str", pa.string()),
    # MR acquisition: what the vocabulary normalizes the sequence type from (enhanced images: from
    # their functional groups, :mod:`pacs_workbench.dicom.multiframe`).
    ("ScanningSequence", "str", pa.string()),
    ("SequenceVariant", "str", pa.string()),
    ("SequenceName", "str", pa.string()),
    ("EchoPulseSequence", "str", pa.string()),
    ("AcquisitionContrast", "str", pa.string()),
    ("RepetitionTime", "float", pa.float64()),
    ("EchoTime", "float", pa.float64()),
    ("InversionTime", "float", pa.float64()),
    ("FlipAngle", "float", pa.float64()),
    ("DiffusionBValue", "float", pa.float64()),
    ("MagneticFieldStrength", "float", pa.float64()),
    ("ReceiveCoilName", "str", pa.string()),
    ("NumberOfFrames", "int", pa.int64()),
)
#: DICOM keywords stored as columns of an instance row (besides the derived ones).
ATTRIBUTE_KEYWORDS: tuple[str, ...] = tuple(keyword for keyword, _, _ in ATTRIBUTES)
# Read for the derived ``contrast`` column only.
_CONTRAST_KEYWORDS = ("ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusVolume")
#: Keyword -> tag of every top-level element a row is made from.
KEYWORD_TAGS: dict[str, int] = tags_for_keywords((*ATTRIBUTE_KEYWORDS, *_CONTRAST_KEYWORDS[1:]))
_META_TAGS = {
    "TransferSyntaxUID": 0x00020010, "MediaStorageSOPClassUID": 0x00020002, "MediaStorageSOPInstanceUID": 0x00020003,
}  # fmt: skip
_NO_CONTRAST = frozenset({"", "NONE", "NO"})
_ROW_PLAN = tuple((keyword, _COERCERS[kind]) for keyword, kind, _ in ATTRIBUTES)

_ATTRIBUTE_TYPES = {keyword: arrow_type for keyword, _, arrow_type in ATTRIBUTES}
_DERIVED_TYPES = {
    "path": pa.string(), "file_size": pa.int64(), "mtime_ns": pa.int64(),
    "contrast": pa.bool_(), "TransferSyntaxUID": pa.string(),
    "CTDIvol_mGy": pa.float64(), "DLP_mGycm_total": pa.float64(), "CTDIw_phantom": pa.string(),
    "n_irradiation_events": pa.int32(),
}  # fmt: skip
_AFTER_AGENT = ATTRIBUTE_KEYWORDS.index("ContrastBolusAgent") + 1
_FRAMES = ATTRIBUTE_KEYWORDS.index("NumberOfFrames")
_COLUMN_ORDER = (
    "path", "file_size", "mtime_ns",
    *ATTRIBUTE_KEYWORDS[:_AFTER_AGENT], "contrast", *ATTRIBUTE_KEYWORDS[_AFTER_AGENT:_FRAMES],
    "TransferSyntaxUID", "NumberOfFrames", *DOSE_COLUMNS,
)  # fmt: skip
#: Columns of an instance row, in order: ``path``, ``file_size``, ``mtime_ns``, the attributes,
#: the derived ``contrast`` flag, the file's ``TransferSyntaxUID`` and, for X-Ray Radiation Dose
#: SR instances only, the dose of :func:`pacs_workbench.dicom.dose.read_ct_dose`.
ROW_SCHEMA = pa.schema([pa.field(name, (_ATTRIBUTE_TYPES | _DERIVED_TYPES)[name]) for name in _COLUMN_ORDER])


def has_contrast(agent: Any, route: Any, volume: Any) -> bool:
    """The derived ``contrast`` flag.

    True when (0018,0010) Contrast/Bolus Agent or (0018,1040) Contrast/Bolus Route holds
    a value other than empty/"NONE"/"NO", or (0018,1041) Contrast/Bolus Volume is a
    positive number.
    """
    for value in (agent, route):
        text = to_text(value)
        if text is not None and text.upper() not in _NO_CONTRAST:
            return True
    amount = to_float(volume)
    return amount is not None and amount > 0


@dataclass(frozen=True, slots=True)
class RowSource:
    """Where a row's values came from: ``path`` and what the file (meta) says beside them."""

    path: str
    size: int | None = None
    mtime_ns: int | None = None
    transfer_syntax: str | None = None
    media_sop_class: str | None = None
    media_sop_instance: str | None = None


def values_to_row(values: Mapping[str, Any], source: RowSource) -> dict[str, Any]:
    """An instance row (:data:`ROW_SCHEMA`) from plain values keyed by :data:`KEYWORD_TAGS` keywords."""
    row: dict[str, Any] = {"path": source.path, "file_size": source.size, "mtime_ns": source.mtime_ns}
    for keyword, coerce in _ROW_PLAN:
        value = values.get(keyword)
        if value is None:
            row[keyword] = None
        elif coerce is to_text and type(value) is str:
            row[keyword] = value.strip(" \0") or None  # the commonest case, inlined
        else:
            row[keyword] = coerce(value)
    # A DICOMDIR or a bare File Meta identifies itself only in group 0002.
    if row["SOPClassUID"] is None:
        row["SOPClassUID"] = source.media_sop_class
    if row["SOPInstanceUID"] is None:
        row["SOPInstanceUID"] = source.media_sop_instance
    row["contrast"] = has_contrast(
        values.get("ContrastBolusAgent"), values.get("ContrastBolusRoute"), values.get("ContrastBolusVolume")
    )
    row["TransferSyntaxUID"] = to_text(source.transfer_syntax)
    row.update(dict.fromkeys(DOSE_COLUMNS))
    return row


def dataset_to_row(ds: Dataset, path: str, size: int | None = None, mtime_ns: int | None = None) -> dict[str, Any]:
    """Turn a pydicom data set into an instance row (:data:`ROW_SCHEMA`).

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
        One value per column of :data:`ROW_SCHEMA`, plain Python.

    Raises
    ------
    DicomReadError
        When the data set carries no valid (0008,0016)/(0008,0018) SOP Class/Instance
        UID (nor a File Meta equivalent).
    """
    values = dataset_values(ds, KEYWORD_TAGS)
    meta = getattr(ds, "file_meta", None)
    meta_values = dataset_values(meta, _META_TAGS) if meta is not None else {}
    media_class = to_text(meta_values.get("MediaStorageSOPClassUID"))
    media_instance = to_text(meta_values.get("MediaStorageSOPInstanceUID"))
    own = (to_text(values.get("SOPClassUID")), to_text(values.get("SOPInstanceUID")))
    if not any(is_valid_uid(value) for value in (*own, media_class, media_instance)):
        raise UnidentifiedDicomError(
            "invalid DICOM: data set without a valid (0008,0016) SOP Class UID or (0008,0018) SOP Instance UID"
        )
    transfer_syntax = to_text(meta_values.get("TransferSyntaxUID"))
    row = values_to_row(values, RowSource(path, size, mtime_ns, transfer_syntax, media_class, media_instance))
    # A dose SR's content tree comes with it (WADO-RS metadata, a file); a C-FIND answer has none.
    if is_dose_sr(row["SOPClassUID"]) and "ContentSequence" in ds:
        row.update(read_ct_dose(ds))
    # An enhanced image's geometry and MR timing come with it (WADO-RS metadata, a file), not with C-FIND.
    if is_enhanced_image(row["SOPClassUID"]) and "SharedFunctionalGroupsSequence" in ds:
        fill_enhanced(row, ds)
    return row

"""DICOM headers of image and mask files: what series checks and case discovery read.

Only the attributes a :class:`HeaderRecord` holds are parsed (:data:`HEADER_KEYWORDS`), so a
whole tree can be crawled without reading pixel data. Values are coerced with
:mod:`pacs_workbench.dicom.attributes`: an unreadable value is ``None``, never a guess.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydicom

from pacs_workbench.dicom import read as dicomio
from pacs_workbench.dicom.attributes import to_float, to_floats, to_int

# Modalities whose files carry no image of their own; they are masks, reports or presentation objects.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG"})


_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:]+)+[\\/]?")


def scrub_paths(text: str) -> str:
    """Replace anything that looks like a file path in ``text`` by ``<path>``.

    Exception messages from file I/O name the file, and in a source tree file and folder
    names can hold patient names; reasons written to reports go through this first.
    """
    return _PATH_RE.sub("<path>", text)


@dataclass(frozen=True)
class HeaderRecord:
    """The header attributes of one DICOM file that series inspection and case discovery need.

    ``PatientID`` is kept only so callers can pseudonymize it; it is never written out.
    """

    path: str
    SOPInstanceUID: str
    SeriesInstanceUID: str
    StudyInstanceUID: str
    SOPClassUID: str
    Modality: str
    Manufacturer: str
    StudyDate: str
    PatientID: str
    PatientIdentityRemoved: str
    FrameOfReferenceUID: str
    ImageType: tuple[str, ...]
    ImagePositionPatient: tuple[float, float, float] | None
    ImageOrientationPatient: tuple[float, ...] | None
    PixelSpacing: tuple[float, float] | None
    Rows: int | None
    Columns: int | None
    NumberOfFrames: int
    SliceThickness: float | None
    GantryDetectorTilt: float | None
    InstanceNumber: int | None
    AcquisitionNumber: int | None
    TemporalPositionIdentifier: int | None
    EchoNumbers: str
    TriggerTime: float | None
    ImagesInAcquisition: int | None
    RescaleSlope: float
    RescaleIntercept: float
    has_pixels: bool
    referenced_series: tuple[str, ...] = ()
    segment_numbers: tuple[int, ...] = ()
    # Enhanced multi-frame images: one record per frame (geometry from the functional groups), each
    # with its 1-based frame number and the dimensions that tell stacks and time points apart.
    frames: tuple[HeaderRecord, ...] = ()
    frame_number: int | None = None
    StackID: str = ""
    TemporalPositionIndex: int | None = None

    @property
    def is_image(self) -> bool:
        """True for files that hold an image slice (not a mask, report or presentation state)."""
        return self.has_pixels and self.Modality not in NON_IMAGE_MODALITIES

    @property
    def is_localizer(self) -> bool:
        """True when (0008,0008) Image Type says LOCALIZER (scout / topogram)."""
        return any(value.upper() == "LOCALIZER" for value in self.ImageType)


def _vector(value: Any, n: int) -> tuple[float, ...] | None:
    numbers = to_floats(value, n)
    return tuple(numbers) if numbers is not None else None


def _str(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _referenced_series(ds: pydicom.Dataset) -> tuple[str, ...]:
    """Series a SEG or RTSTRUCT says it was drawn on."""
    uids: list[str] = []
    for item in ds.get("ReferencedSeriesSequence", []) or []:
        uid = str(item.get("SeriesInstanceUID", "")).strip()
        if uid:
            uids.append(uid)
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for study in frame.get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                uid = str(series.get("SeriesInstanceUID", "")).strip()
                if uid:
                    uids.append(uid)
    return tuple(dict.fromkeys(uids))


def _segment_numbers(ds: pydicom.Dataset) -> tuple[int, ...]:
    """SEG (0062,0004) Segment Number values, or RTSTRUCT (3006,0084) ROI numbers that have contours."""
    numbers: list[int] = []
    for item in ds.get("SegmentSequence", []) or []:
        number = to_int(item.get("SegmentNumber"))
        if number is not None:
            numbers.append(number)
    for item in ds.get("ROIContourSequence", []) or []:
        number = to_int(item.get("ReferencedROINumber"))
        if number is not None and len(item.get("ContourSequence", []) or []) > 0:
            numbers.append(number)
    return tuple(sorted(set(numbers)))


def _frame_group(shared: Any, per_frame: Any, keyword: str) -> Any:
    """The first item of a functional group macro, per frame when there, else shared."""
    for groups in (per_frame, shared):
        items = groups.get(keyword) if groups is not None else None
        if items:
            return items[0]
    return None


def _frame_records(ds: pydicom.Dataset, base: HeaderRecord) -> tuple[HeaderRecord, ...]:
    """One record per frame of an enhanced multi-frame image, from its functional groups.

    Geometry comes from (0020,9113) Plane Position Sequence, (0020,9116) Plane Orientation
    Sequence and (0028,9110) Pixel Measures Sequence, the rescale from (0028,9145) Pixel Value
    Transformation Sequence and the stack and time point from (0020,9111) Frame Content
    Sequence, each per frame when present there, else shared. Empty when the image has no
    (5200,9230) Per-frame Functional Groups Sequence.
    """
    shared_items = ds.get("SharedFunctionalGroupsSequence") or [None]
    shared = shared_items[0]
    per_frames = ds.get("PerFrameFunctionalGroupsSequence") or []
    records: list[HeaderRecord] = []
    for number, per_frame in enumerate(per_frames, start=1):
        position = _frame_group(shared, per_frame, "PlanePositionSequence")
        orientation = _frame_group(shared, per_frame, "PlaneOrientationSequence")
        measures = _frame_group(shared, per_frame, "PixelMeasuresSequence")
        rescale = _frame_group(shared, per_frame, "PixelValueTransformationSequence")
        content = _frame_group(shared, per_frame, "FrameContentSequence")
        slope = to_float(rescale.get("RescaleSlope")) if rescale is not None else None
        intercept = to_float(rescale.get("RescaleIntercept")) if rescale is not None else None
        records.append(
            replace(
                base,
                ImagePositionPatient=_vector(position.get("ImagePositionPatient"), 3) if position else None,  # type: ignore[arg-type]
                ImageOrientationPatient=_vector(orientation.get("ImageOrientationPatient"), 6) if orientation else None,
                PixelSpacing=_vector(measures.get("PixelSpacing"), 2) if measures else None,  # type: ignore[arg-type]
                SliceThickness=to_float(measures.get("SliceThickness")) if measures else None,
                RescaleSlope=base.RescaleSlope if slope is None else slope,
                RescaleIntercept=base.RescaleIntercept if intercept is None else intercept,
                NumberOfFrames=1,
                frame_number=number,
                StackID=str(content.get("StackID", "") or "").strip() if content else "",
                TemporalPositionIndex=to_int(content.get("TemporalPositionIndex")) if content else None,
                InstanceNumber=number,
            )
        )
    return tuple(records)


def header_from_dataset(ds: pydicom.Dataset, path: str) -> HeaderRecord:
    """Extract a :class:`HeaderRecord` from a dataset read with or without pixel data.

    An enhanced multi-frame image gets one record for the file and, in ``frames``, one per frame.
    """
    image_type = ds.get("ImageType", [])
    if isinstance(image_type, str):
        image_type = [image_type]
    position = _vector(ds.get("ImagePositionPatient"), 3)
    orientation = _vector(ds.get("ImageOrientationPatient"), 6)
    spacing = _vector(ds.get("PixelSpacing"), 2)
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")) or (
        ds.get("Rows") is not None and ds.get("Columns") is not None and ds.get("BitsAllocated") is not None
    )
    modality = _str(ds, "Modality").upper()
    record = HeaderRecord(
        path=str(path),
        SOPInstanceUID=_str(ds, "SOPInstanceUID"),
        SeriesInstanceUID=_str(ds, "SeriesInstanceUID"),
        StudyInstanceUID=_str(ds, "StudyInstanceUID"),
        SOPClassUID=_str(ds, "SOPClassUID"),
        Modality=modality,
        Manufacturer=_str(ds, "Manufacturer"),
        StudyDate=_str(ds, "StudyDate"),
        PatientID=_str(ds, "PatientID"),
        PatientIdentityRemoved=_str(ds, "PatientIdentityRemoved").upper(),
        FrameOfReferenceUID=_str(ds, "FrameOfReferenceUID"),
        ImageType=tuple(str(v).strip() for v in image_type),
        ImagePositionPatient=position,  # type: ignore[arg-type]
        ImageOrientationPatient=orientation,
        PixelSpacing=spacing,  # type: ignore[arg-type]
        Rows=to_int(ds.get("Rows")),
        Columns=to_int(ds.get("Columns")),
        NumberOfFrames=to_int(ds.get("NumberOfFrames")) or 1,
        SliceThickness=to_float(ds.get("SliceThickness")),
        GantryDetectorTilt=to_float(ds.get("GantryDetectorTilt")),
        InstanceNumber=to_int(ds.get("InstanceNumber")),
        AcquisitionNumber=to_int(ds.get("AcquisitionNumber")),
        TemporalPositionIdentifier=to_int(ds.get("TemporalPositionIdentifier")),
        EchoNumbers=_str(ds, "EchoNumbers"),
        TriggerTime=to_float(ds.get("TriggerTime")),
        ImagesInAcquisition=to_int(ds.get("ImagesInAcquisition")),
        RescaleSlope=to_float(ds.get("RescaleSlope")) or 1.0,
        RescaleIntercept=to_float(ds.get("RescaleIntercept")) or 0.0,
        has_pixels=has_pixels and modality not in NON_IMAGE_MODALITIES,
        referenced_series=_referenced_series(ds) if modality in ("SEG", "RTSTRUCT") else (),
        segment_numbers=_segment_numbers(ds) if modality in ("SEG", "RTSTRUCT") else (),
    )
    if record.NumberOfFrames > 1 and record.has_pixels:
        frames = _frame_records(ds, record)
        if frames:
            record = replace(record, frames=frames)
    return record


# What header_from_dataset reads; parsing only these keeps crawls of large trees fast.
HEADER_KEYWORDS = (
    "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID", "Modality", "Manufacturer",
    "StudyDate", "PatientID", "PatientIdentityRemoved", "FrameOfReferenceUID", "ImageType",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "BitsAllocated",
    "NumberOfFrames", "SliceThickness", "GantryDetectorTilt", "InstanceNumber", "AcquisitionNumber",
    "TemporalPositionIdentifier", "EchoNumbers", "TriggerTime", "ImagesInAcquisition", "RescaleSlope",
    "RescaleIntercept", "ReferencedSeriesSequence", "ReferencedFrameOfReferenceSequence", "SegmentSequence",
    "ROIContourSequence", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "PixelData",
    "FloatPixelData", "DoubleFloatPixelData",
)


def read_header(path: str | os.PathLike[str]) -> HeaderRecord | None:
    """Read one file's header; ``None`` when the file is not DICOM (see :mod:`pacs_workbench.dicom.read`).

    Raises
    ------
    OSError
        When the file cannot be read at all.
    """
    try:
        ds = dicomio.read_header(os.fspath(path), stop_before_pixels=True, specific_tags=HEADER_KEYWORDS)
    except (dicomio.NotDicomError, dicomio.EmptyFileError):
        return None
    except dicomio.DicomReadError as exc:
        raise OSError(str(exc)) from None
    return header_from_dataset(ds, os.fspath(path))


def list_files(folder: str | os.PathLike[str]) -> list[str]:
    """Every regular file under ``folder`` (recursively, hidden files skipped), sorted."""
    root = Path(folder)
    if root.is_file():
        return [str(root)]
    files = [
        str(p)
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files)


def collect_headers(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_uid: str | None = None,
    *,
    skipped: list[str] | None = None,
) -> list[HeaderRecord]:
    """Headers of the image files in a folder (recursive) or a list of files.

    Parameters
    ----------
    source
        A folder, or an explicit list of files.
    series_uid
        Keep only files of this (0020,000E) Series Instance UID.
    skipped
        When given, receives the reason for each DICOM-looking file that could not be read
        (files that are not DICOM at all are ignored silently).
    """
    paths = list_files(source) if isinstance(source, str | os.PathLike) else [os.fspath(p) for p in source]
    records: list[HeaderRecord] = []
    for path in paths:
        try:
            record = read_header(path)
        except OSError as exc:  # a DicomReadError's message: never a path or a value
            if skipped is not None:
                skipped.append(scrub_paths(str(exc)))
            continue
        except Exception as exc:
            # A malformed element (unknown VR, odd length, ...) raises whatever pydicom raises when
            # the value is converted; the message may quote the value, so only the type is kept.
            if skipped is not None:
                skipped.append(f"malformed header ({type(exc).__name__})")
            continue
        if record is None or not record.is_image:
            continue
        if series_uid is not None and record.SeriesInstanceUID != series_uid:
            continue
        records.append(record)
    return records

"""DICOM series to a 3D volume with correct geometry, and the checks that decide whether it can be one.

A series becomes a volume only when its slices tile space regularly: one orientation,
one slice per position, even spacing along the slice normal, a stack perpendicular to
the slices (no gantry tilt) and no second acquisition or phase interleaved. The checks
run on headers alone (:func:`inspect_headers`), so a whole tree can be screened without
reading pixels; :func:`read_series` then builds the image from the plan the checks
produced. A series that fails is reported with its reason (:class:`SeriesError`), never
forced into a volume.

Conventions: slices are sorted by (0020,0032) Image Position (Patient) projected on the
normal of (0020,0037) Image Orientation (Patient), never by Instance Number or file
name. The image axes are x = row direction (increasing column), y = column direction
(increasing row) and z = the slice normal, so the direction matrix is orthonormal and
the voxel spacing positive. Stored values are mapped through (0028,1053) Rescale Slope
and (0028,1052) Rescale Intercept (Hounsfield units for CT) and returned as float32.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk

from pacs_workbench.dicom import read as dicomio

# Modalities whose files carry no image of their own; they are masks, reports or presentation objects.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG"})
# Metadata keys set on images returned by :func:`read_series` (DICOM tag notation, as ITK uses).
META_SERIES_UID = "0020|000e"
META_FRAME_OF_REFERENCE_UID = "0020|0052"
META_MODALITY = "0008|0060"
META_MANUFACTURER = "0008|0070"

_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:]+)+[\\/]?")
_SAME_POSITION_MM = 0.01
_ORIENTATION_TOL = 1e-3


class SeriesError(ValueError):
    """A series that cannot form a valid volume.

    Attributes
    ----------
    reason
        Why, in words fit for a report (never a file path or a header value that could identify).
    report
        The per-series checks that led to the decision, when they ran.
    """

    def __init__(self, reason: str, report: SeriesReport | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.report = report


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

    @property
    def is_image(self) -> bool:
        """True for files that hold an image slice (not a mask, report or presentation state)."""
        return self.has_pixels and self.Modality not in NON_IMAGE_MODALITIES

    @property
    def is_localizer(self) -> bool:
        """True when (0008,0008) Image Type says LOCALIZER (scout / topogram)."""
        return any(value.upper() == "LOCALIZER" for value in self.ImageType)


def _float(value: Any) -> float | None:
    try:
        if value is None or value == "":
            return None
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != n or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


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
        number = _int(item.get("SegmentNumber"))
        if number is not None:
            numbers.append(number)
    for item in ds.get("ROIContourSequence", []) or []:
        number = _int(item.get("ReferencedROINumber"))
        if number is not None and len(item.get("ContourSequence", []) or []) > 0:
            numbers.append(number)
    return tuple(sorted(set(numbers)))


def header_from_dataset(ds: pydicom.Dataset, path: str) -> HeaderRecord:
    """Extract a :class:`HeaderRecord` from a dataset read with or without pixel data."""
    image_type = ds.get("ImageType", [])
    if isinstance(image_type, str):
        image_type = [image_type]
    position = _floats(ds.get("ImagePositionPatient"), 3)
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    spacing = _floats(ds.get("PixelSpacing"), 2)
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")) or (
        ds.get("Rows") is not None and ds.get("Columns") is not None and ds.get("BitsAllocated") is not None
    )
    modality = _str(ds, "Modality").upper()
    return HeaderRecord(
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
        Rows=_int(ds.get("Rows")),
        Columns=_int(ds.get("Columns")),
        NumberOfFrames=_int(ds.get("NumberOfFrames")) or 1,
        SliceThickness=_float(ds.get("SliceThickness")),
        GantryDetectorTilt=_float(ds.get("GantryDetectorTilt")),
        InstanceNumber=_int(ds.get("InstanceNumber")),
        AcquisitionNumber=_int(ds.get("AcquisitionNumber")),
        TemporalPositionIdentifier=_int(ds.get("TemporalPositionIdentifier")),
        EchoNumbers=_str(ds, "EchoNumbers"),
        TriggerTime=_float(ds.get("TriggerTime")),
        ImagesInAcquisition=_int(ds.get("ImagesInAcquisition")),
        RescaleSlope=_float(ds.get("RescaleSlope")) or 1.0,
        RescaleIntercept=_float(ds.get("RescaleIntercept")) or 0.0,
        has_pixels=has_pixels and modality not in NON_IMAGE_MODALITIES,
        referenced_series=_referenced_series(ds) if modality in ("SEG", "RTSTRUCT") else (),
        segment_numbers=_segment_numbers(ds) if modality in ("SEG", "RTSTRUCT") else (),
    )


# What header_from_dataset reads; parsing only these keeps crawls of large trees fast.
HEADER_KEYWORDS = (
    "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID", "Modality", "Manufacturer",
    "StudyDate", "PatientID", "PatientIdentityRemoved", "FrameOfReferenceUID", "ImageType",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "BitsAllocated",
    "NumberOfFrames", "SliceThickness", "GantryDetectorTilt", "InstanceNumber", "AcquisitionNumber",
    "TemporalPositionIdentifier", "EchoNumbers", "TriggerTime", "ImagesInAcquisition", "RescaleSlope",
    "RescaleIntercept", "ReferencedSeriesSequence", "ReferencedFrameOfReferenceSequence", "SegmentSequence",
    "ROIContourSequence", "PixelData", "FloatPixelData", "DoubleFloatPixelData",
)
_PIXEL_KEYWORDS = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames", "PixelData", "FloatPixelData",
    "DoubleFloatPixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
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


@dataclass
class SeriesReport:
    """What the checks found for one series. ``errors`` non-empty means it cannot be a volume.

    Geometry fields describe the volume that would be (or was) built: ``size`` and
    ``spacing`` in image axis order (x, y, z), ``origin`` in patient LPS millimetres and
    ``direction`` as the row-major 3x3 matrix whose columns are the axes.
    """

    SeriesInstanceUID: str = ""
    StudyInstanceUID: str = ""
    Modality: str = ""
    Manufacturer: str = ""
    FrameOfReferenceUID: str = ""
    n_files: int = 0
    n_slices: int = 0
    n_localizers: int = 0
    n_duplicates: int = 0
    n_missing: int = 0
    n_orientations: int = 0
    n_acquisitions: int = 0
    Rows: int | None = None
    Columns: int | None = None
    SliceThickness: float | None = None
    slice_spacing_mm: float | None = None
    slice_spacing_min_mm: float | None = None
    slice_spacing_max_mm: float | None = None
    gantry_tilt_deg: float = 0.0
    GantryDetectorTilt: float | None = None
    oblique: bool = False
    tilt_corrected: bool = False
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    origin: tuple[float, float, float] | None = None
    direction: tuple[float, ...] | None = None
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """True when the series can form a volume."""
        return not self.errors

    @property
    def reason(self) -> str:
        """The errors joined into one line ('' when valid)."""
        return "; ".join(self.errors)

    def flag(self, name: str) -> None:
        """Record a short problem flag once (``tilt``, ``missing``, ...)."""
        if name not in self.flags:
            self.flags.append(name)

    def to_record(self) -> dict[str, Any]:
        """A flat dict for a DataFrame row (tuples become lists; lists stay lists)."""
        record = asdict(self)
        for key in ("size", "spacing", "origin", "direction"):
            value = record.pop(key)
            if key in ("size", "spacing"):
                for axis, item in zip("xyz", value or (None, None, None), strict=True):
                    record[f"{key}_{axis}"] = item
            else:
                record[key] = list(value) if value is not None else None
        record["valid"] = self.valid
        record["reason"] = self.reason
        return record


@dataclass
class SlicePlan:
    """How to assemble a valid series: files in stacking order and the geometry to give the volume."""

    paths: list[str]
    slopes: list[float]
    intercepts: list[float]
    # In-plane offsets (mm along x and y) of each slice relative to the first; zero unless tilted.
    shifts_mm: list[tuple[float, float]]
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]


def _orientation_groups(records: Sequence[HeaderRecord]) -> list[list[HeaderRecord]]:
    groups: list[tuple[np.ndarray, list[HeaderRecord]]] = []
    for record in records:
        iop = np.asarray(record.ImageOrientationPatient, dtype=float)
        for reference, members in groups:
            if np.max(np.abs(reference - iop)) <= _ORIENTATION_TOL:
                members.append(record)
                break
        else:
            groups.append((iop, [record]))
    return sorted((members for _, members in groups), key=len, reverse=True)


def _phase_key(record: HeaderRecord) -> tuple[Any, ...]:
    """Attributes that tell apart acquisitions or phases sharing slice positions."""
    return (
        record.AcquisitionNumber,
        record.TemporalPositionIdentifier,
        record.EchoNumbers,
        record.TriggerTime,
        tuple(v.upper() for v in record.ImageType[:2]),
    )


def inspect_headers(
    records: Sequence[HeaderRecord],
    *,
    correct_tilt: bool = False,
    spacing_tolerance: float = 0.01,
    tilt_tolerance_deg: float = 0.05,
    min_slices: int = 2,
) -> tuple[SeriesReport, SlicePlan | None]:
    """Check the headers of one series and plan its volume.

    Parameters
    ----------
    records
        Image headers of one series (files of other series should be filtered out first).
    correct_tilt
        When the slice stack is sheared by (0018,1120) Gantry/Detector Tilt, shift each slice in
        plane to undo it instead of excluding the series.
    spacing_tolerance
        Allowed deviation of a slice gap from the median gap, as a fraction of it (at least 0.005 mm).
    tilt_tolerance_deg
        Angle between the stacking direction and the slice normal above which the stack counts as tilted.
    min_slices
        Fewer slices than this cannot make a 3D volume (never fewer than 2: one position gives no
        slice spacing).

    Returns
    -------
    SeriesReport, SlicePlan or None
        The plan is ``None`` when the report has errors.
    """
    report = SeriesReport(n_files=len(records))
    if not records:
        report.errors.append("no image files in the series")
        report.flag("empty")
        return report, None
    first = records[0]
    report.SeriesInstanceUID = first.SeriesInstanceUID
    report.StudyInstanceUID = first.StudyInstanceUID
    report.Modality = first.Modality
    report.Manufacturer = first.Manufacturer
    report.GantryDetectorTilt = first.GantryDetectorTilt
    uids = {r.SeriesInstanceUID for r in records}
    if len(uids) > 1:
        report.errors.append(f"files of {len(uids)} different series mixed together")
        report.flag("mixed_series")

    localizers = [r for r in records if r.is_localizer]
    slices = [r for r in records if not r.is_localizer]
    report.n_localizers = len(localizers)
    if localizers:
        report.flag("localizer")
        report.warnings.append(f"{len(localizers)} localizer image(s) left out of the volume")
    if not slices:
        report.errors.append("only localizer images")
        return report, None

    multiframe = [r for r in slices if r.NumberOfFrames > 1]
    if multiframe:
        report.errors.append("multi-frame (enhanced) images are not supported as series")
        report.flag("multiframe")
        return report, None
    no_geometry = [r for r in slices if r.ImagePositionPatient is None or r.ImageOrientationPatient is None]
    if no_geometry:
        report.errors.append(
            f"{len(no_geometry)} image(s) without Image Position/Orientation (Patient); not a volume"
        )
        report.flag("no_geometry")
        return report, None
    if any(r.PixelSpacing is None for r in slices):
        report.errors.append("image(s) without Pixel Spacing")
        report.flag("no_geometry")
        return report, None

    groups = _orientation_groups(slices)
    report.n_orientations = len(groups)
    if len(groups) > 1:
        sizes = "/".join(str(len(g)) for g in groups)
        report.errors.append(
            f"mixed orientations: {len(groups)} different Image Orientation (Patient) ({sizes} images)"
        )
        report.flag("mixed_orientation")
        return report, None

    shapes = {(r.Rows, r.Columns) for r in slices}
    pixel_spacings = {tuple(round(v, 4) for v in r.PixelSpacing or ()) for r in slices}
    if len(shapes) > 1 or len(pixel_spacings) > 1:
        report.errors.append("slices differ in Rows/Columns or Pixel Spacing")
        report.flag("mixed_matrix")
        return report, None
    frames = {r.FrameOfReferenceUID for r in slices}
    if len(frames) > 1:
        report.errors.append(f"slices in {len(frames)} different frames of reference")
        report.flag("mixed_frame_of_reference")
        return report, None
    report.FrameOfReferenceUID = next(iter(frames))
    report.Rows, report.Columns = first.Rows, first.Columns
    thicknesses = [r.SliceThickness for r in slices if r.SliceThickness is not None]
    report.SliceThickness = float(np.median(thicknesses)) if thicknesses else None

    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    if abs(float(np.dot(row_dir, col_dir))) > 1e-3:
        report.errors.append("Image Orientation (Patient) row and column directions are not perpendicular")
        report.flag("bad_orientation")
        return report, None
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    report.oblique = bool(np.max(np.abs(normal)) < 1 - 1e-4)
    if report.oblique:
        report.flag("oblique")

    # Stack by distance along the normal; ties resolved by SOP UID only to make the order deterministic.
    ordered = sorted(
        slices, key=lambda r: (float(np.dot(r.ImagePositionPatient, normal)), r.SOPInstanceUID)  # type: ignore[arg-type]
    )
    distances = np.array([float(np.dot(r.ImagePositionPatient, normal)) for r in ordered])  # type: ignore[arg-type]

    # Group slices that share a position.
    positions: list[list[HeaderRecord]] = [[ordered[0]]]
    position_d = [distances[0]]
    for record, d in zip(ordered[1:], distances[1:], strict=True):
        if abs(d - position_d[-1]) <= _SAME_POSITION_MM:
            positions[-1].append(record)
        else:
            positions.append([record])
            position_d.append(d)
    phases = {_phase_key(r) for r in ordered}
    report.n_acquisitions = len(phases)
    repeated = [group for group in positions if len(group) > 1]
    if repeated:
        same_instance = all(len({r.SOPInstanceUID for r in group}) == 1 for group in repeated)
        group_phases = [{_phase_key(r) for r in group} for group in repeated]
        if same_instance:
            dropped = sum(len(group) - 1 for group in repeated)
            report.n_duplicates = dropped
            report.flag("duplicate")
            report.warnings.append(f"{dropped} duplicate file(s) of the same instance dropped")
            positions = [[group[0]] for group in positions]
        elif len(phases) > 1 and all(len(p) > 1 for p in group_phases):
            report.errors.append(
                f"multiple acquisitions or phases in one series ({len(phases)} distinct Acquisition Number/"
                f"Temporal Position/Echo/Trigger Time combinations sharing {len(repeated)} position(s))"
            )
            report.flag("multi_phase")
            return report, None
        else:
            n_dup = sum(len(group) - 1 for group in repeated)
            report.n_duplicates = n_dup
            report.errors.append(
                f"duplicate slice position(s): {n_dup} extra image(s) at {len(repeated)} position(s) "
                "with different instances"
            )
            report.flag("duplicate")
            return report, None
    elif len(phases) > 1:
        report.warnings.append(f"{len(phases)} acquisition/phase attribute combinations, no shared positions")

    used = [group[0] for group in positions]
    d = np.asarray(position_d)
    report.n_slices = len(used)
    needed = max(2, min_slices)  # the slice spacing of a volume needs two positions
    if len(used) < needed:
        report.errors.append(f"{len(used)} slice(s); at least {needed} needed for a volume")
        report.flag("too_few_slices")
        return report, None

    gaps = np.diff(d)
    median_gap = float(np.median(gaps))
    report.slice_spacing_mm = median_gap
    report.slice_spacing_min_mm = float(gaps.min())
    report.slice_spacing_max_mm = float(gaps.max())
    tolerance = max(0.005, spacing_tolerance * median_gap)
    irregular = np.abs(gaps - median_gap) > tolerance
    if irregular.any():
        ratios = gaps[irregular] / median_gap
        multiples = np.abs(ratios - np.round(ratios)) <= max(0.1, tolerance / median_gap)
        if np.all(multiples & (np.round(ratios) >= 2)):
            missing = int(np.sum(np.round(ratios) - 1))
            report.n_missing = missing
            report.errors.append(f"{missing} missing slice(s) in {int(irregular.sum())} gap(s) of the stack")
            report.flag("missing")
        else:
            report.errors.append(
                f"non-uniform slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm, median {median_gap:.3f} mm)"
            )
            report.flag("nonuniform_spacing")
        return report, None
    expected = first.ImagesInAcquisition
    if expected and report.n_acquisitions == 1 and expected > len(used):
        report.warnings.append(
            f"Images in Acquisition says {expected}, the series has {len(used)} slices (possible missing end slices)"
        )
        report.flag("incomplete")

    # Tilt: the stack drifts in plane from slice to slice when the gantry was tilted.
    p0 = np.asarray(used[0].ImagePositionPatient, dtype=float)
    offsets = np.array([np.asarray(r.ImagePositionPatient, dtype=float) - p0 for r in used])
    along_row = offsets @ row_dir
    along_col = offsets @ col_dir
    span = d[-1] - d[0]
    drift = math.hypot(along_row[-1], along_col[-1])
    tilt = math.degrees(math.atan2(drift, span)) if span > 0 else 0.0
    report.gantry_tilt_deg = round(tilt, 4)
    header_tilt = first.GantryDetectorTilt or 0.0
    shifts = [(0.0, 0.0)] * len(used)
    if tilt > tilt_tolerance_deg:
        report.flag("tilt")
        if not correct_tilt:
            report.errors.append(f"gantry tilt of {tilt:.2f} degrees (slice stack not perpendicular to the slices)")
            return report, None
        report.tilt_corrected = True
        report.warnings.append(f"gantry tilt of {tilt:.2f} degrees corrected by shifting slices in plane")
        shifts = [(float(u), float(w)) for u, w in zip(along_row, along_col, strict=True)]
    elif abs(header_tilt) > tilt_tolerance_deg:
        report.warnings.append(
            f"Gantry/Detector Tilt is {header_tilt:g} degrees but the slice stack is perpendicular (already resampled)"
        )

    pixel_spacing = used[0].PixelSpacing or (1.0, 1.0)
    # (0028,0030) Pixel Spacing is (between rows, between columns) = (y, x). The mean gap over the
    # whole stack puts the last slice where its header says, which the median need not.
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), float(span / (len(used) - 1)))
    direction = tuple(float(v) for v in np.column_stack([row_dir, col_dir, normal]).ravel())
    size = (int(first.Columns or 0), int(first.Rows or 0), len(used))
    report.size, report.spacing = size, spacing
    report.origin = (float(p0[0]), float(p0[1]), float(p0[2]))
    report.direction = direction
    plan = SlicePlan(
        paths=[r.path for r in used],
        slopes=[r.RescaleSlope for r in used],
        intercepts=[r.RescaleIntercept for r in used],
        shifts_mm=shifts,
        size=size,
        spacing=spacing,
        origin=report.origin,
        direction=direction,
    )
    return report, plan


def inspect_series(
    folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_uid: str | None = None,
    *,
    correct_tilt: bool = False,
    spacing_tolerance: float = 0.01,
    min_slices: int = 2,
) -> SeriesReport:
    """Run the per-series checks on the headers in ``folder`` without reading pixel data.

    Checks: localizers mixed in, missing or duplicate slices, non-uniform slice spacing,
    gantry tilt (from the geometry, cross-checked with (0018,1120) Gantry/Detector Tilt),
    mixed orientations, multiple acquisitions or phases, mixed matrices or frames of reference.

    Parameters
    ----------
    folder
        Folder with the series' files (searched recursively), or a list of files.
    series_uid
        Which series, when the folder holds more than one.
    correct_tilt, spacing_tolerance, min_slices
        See :func:`inspect_headers`.
    """
    skipped: list[str] = []
    records = collect_headers(folder, series_uid, skipped=skipped)
    if series_uid is None:
        counts = Counter(r.SeriesInstanceUID for r in records)
        if len(counts) > 1:
            report = SeriesReport(n_files=len(records))
            report.errors.append(f"the folder holds {len(counts)} image series; say which one")
            report.flag("mixed_series")
            return _note_skipped(report, skipped)
    report, _ = inspect_headers(
        records, correct_tilt=correct_tilt, spacing_tolerance=spacing_tolerance, min_slices=min_slices
    )
    return _note_skipped(report, skipped)


def _note_skipped(report: SeriesReport, skipped: Sequence[str]) -> SeriesReport:
    """Say in the report that DICOM files of the folder could not be read (they are not in the volume)."""
    if skipped:
        reasons = "; ".join(sorted(set(skipped))[:3])
        report.warnings.append(f"{len(skipped)} unreadable DICOM file(s) in the folder left out ({reasons})")
        report.flag("unreadable_files")
    return report


def _read_pixels(path: str) -> tuple[np.ndarray, bool]:
    """Stored pixel values of one slice, and whether the modality rescale was already applied."""
    ds = dicomio.read_header(path, stop_before_pixels=False, specific_tags=_PIXEL_KEYWORDS)
    try:
        return np.asarray(ds.pixel_array), False
    except Exception:
        # pydicom lacks a decoder for this transfer syntax; GDCM inside SimpleITK has most of them
        # (and applies the rescale itself).
        image = sitk.ReadImage(path)
        return sitk.GetArrayFromImage(image).reshape(image.GetHeight(), image.GetWidth()), True


def read_series(
    folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_uid: str | None = None,
    *,
    correct_tilt: bool = False,
    spacing_tolerance: float = 0.01,
    min_slices: int = 2,
) -> tuple[sitk.Image, SeriesReport]:
    """Build the volume of a series and return it with its report.

    Raises
    ------
    SeriesError
        When the checks exclude the series or its pixels cannot be decoded.
    """
    skipped: list[str] = []
    records = collect_headers(folder, series_uid, skipped=skipped)
    if series_uid is None and len({r.SeriesInstanceUID for r in records}) > 1:
        report = _note_skipped(SeriesReport(n_files=len(records)), skipped)
        report.errors.append("the folder holds more than one image series; say which one")
        report.flag("mixed_series")
        raise SeriesError(report.reason, report)
    try:
        image, report = volume_from_headers(
            records, correct_tilt=correct_tilt, spacing_tolerance=spacing_tolerance, min_slices=min_slices
        )
    except SeriesError as exc:
        if exc.report is not None:
            _note_skipped(exc.report, skipped)
        raise
    return image, _note_skipped(report, skipped)


def volume_from_headers(
    records: Sequence[HeaderRecord],
    *,
    correct_tilt: bool = False,
    spacing_tolerance: float = 0.01,
    min_slices: int = 2,
) -> tuple[sitk.Image, SeriesReport]:
    """Check one series' headers and, when valid, read its pixels into a volume.

    Raises
    ------
    SeriesError
        When the checks exclude the series or its pixels cannot be decoded.
    """
    report, plan = inspect_headers(
        records, correct_tilt=correct_tilt, spacing_tolerance=spacing_tolerance, min_slices=min_slices
    )
    if plan is None:
        raise SeriesError(report.reason or "series cannot form a volume", report)
    nx, ny, nz = plan.size
    volume = np.empty((nz, ny, nx), dtype=np.float32)
    for k, (path, slope, intercept) in enumerate(zip(plan.paths, plan.slopes, plan.intercepts, strict=True)):
        try:
            stored, rescaled = _read_pixels(path)
        except Exception as exc:
            report.errors.append(f"slice {k} pixel data unreadable ({scrub_paths(type(exc).__name__)})")
            report.flag("unreadable_pixels")
            raise SeriesError(report.reason, report) from None
        if stored.shape != (ny, nx):
            report.errors.append(f"slice {k} pixel matrix {stored.shape} differs from Rows/Columns")
            report.flag("unreadable_pixels")
            raise SeriesError(report.reason, report)
        values = stored.astype(np.float64)
        if not rescaled:
            values = values * slope + intercept
        volume[k] = values.astype(np.float32)
    if report.tilt_corrected:
        _undo_shear(volume, plan)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(plan.spacing)
    image.SetOrigin(plan.origin)
    image.SetDirection(plan.direction)
    image.SetMetaData(META_SERIES_UID, report.SeriesInstanceUID)
    image.SetMetaData(META_FRAME_OF_REFERENCE_UID, report.FrameOfReferenceUID)
    image.SetMetaData(META_MODALITY, report.Modality)
    image.SetMetaData(META_MANUFACTURER, report.Manufacturer)
    return image, report


def _undo_shear(volume: np.ndarray, plan: SlicePlan) -> None:
    """Resample each slice (linear) onto the grid of the first one, in place."""
    from scipy import ndimage

    fill = float(volume.min())
    dx, dy = plan.spacing[0], plan.spacing[1]
    for k, (u, w) in enumerate(plan.shifts_mm):
        if u == 0.0 and w == 0.0:
            continue
        # Slice k's pixel (r', c') lies where the first slice's grid has (r' + w/dy, c' + u/dx).
        volume[k] = ndimage.shift(volume[k], (w / dy, u / dx), order=1, mode="constant", cval=fill)


def load_series(
    folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_uid: str | None = None,
    *,
    correct_tilt: bool = False,
) -> sitk.Image:
    """Load the series in ``folder`` as a float32 ``SimpleITK.Image`` with its DICOM geometry.

    Parameters
    ----------
    folder
        Folder with the series' files (searched recursively), or a list of files.
    series_uid
        (0020,000E) Series Instance UID to pick when the folder holds several series.
    correct_tilt
        Undo gantry tilt by in-plane shifts instead of refusing the series.

    Returns
    -------
    SimpleITK.Image
        Rescaled values (HU for CT), spacing/origin/direction from the headers; metadata
        ``0020|000e`` (series UID), ``0020|0052`` (frame of reference), ``0008|0060`` (modality),
        ``0008|0070`` (manufacturer).

    Raises
    ------
    SeriesError
        With the reason when the series cannot form a valid volume.
    """
    image, _ = read_series(folder, series_uid, correct_tilt=correct_tilt)
    return image


# --- grid helpers --------------------------------------------------------------------------------


def grid_of(image: sitk.Image) -> dict[str, Any]:
    """Size, spacing, origin and direction of an image as plain lists."""
    return {
        "size": list(image.GetSize()),
        "spacing": [float(v) for v in image.GetSpacing()],
        "origin": [float(v) for v in image.GetOrigin()],
        "direction": [float(v) for v in image.GetDirection()],
    }


def same_grid(a: sitk.Image, b: sitk.Image, *, spacing_rtol: float = 1e-4, origin_atol_mm: float = 1e-3) -> bool:
    """True when two images share size, spacing, origin and direction within tolerance."""
    if a.GetSize() != b.GetSize() or a.GetDimension() != b.GetDimension():
        return False
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=spacing_rtol, atol=0):
        return False
    tolerance = max(origin_atol_mm, 1e-3 * min(a.GetSpacing()))
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=tolerance):
        return False
    return bool(np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))


def physical_bounds(image: sitk.Image, index_lo: Iterable[float], index_hi: Iterable[float]) -> np.ndarray:
    """The 8 physical corners of the index box ``[lo, hi]`` (continuous indices), shape (8, 3)."""
    lo, hi = list(index_lo), list(index_hi)
    corners = []
    for i in (lo[0], hi[0]):
        for j in (lo[1], hi[1]):
            for k in (lo[2], hi[2]):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k))))
    return np.asarray(corners, dtype=float)

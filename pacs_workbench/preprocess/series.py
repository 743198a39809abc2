"""DICOM series to a 3D volume with correct geometry, and the checks that decide whether it can be one.

A series becomes a volume only when its slices tile space regularly: one orientation,
one slice per position, even spacing along the slice normal, a stack perpendicular to
the slices (no gantry tilt) and no second acquisition or phase interleaved. The checks
run on headers alone (:func:`~pacs_workbench.preprocess.checks.inspect_headers`), so a whole
tree can be screened without reading pixels; :func:`read_series` then builds the image from
the plan the checks produced. An enhanced multi-frame image is one file holding the series: its
frames stand in for slices in the checks, and :mod:`~pacs_workbench.preprocess.enhanced` reads
them. A series that fails is reported with its reason (:class:`SeriesError`), never
forced into a volume.

Conventions: slices are sorted by (0020,0032) Image Position (Patient) projected on the
normal of (0020,0037) Image Orientation (Patient), never by Instance Number or file
name. The image axes are x = row direction (increasing column), y = column direction
(increasing row) and z = the slice normal, so the direction matrix is orthonormal and
the voxel spacing positive. Stored values are mapped through (0028,1053) Rescale Slope
and (0028,1052) Rescale Intercept (Hounsfield units for CT) and returned as float32.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from pacs_workbench.dicom import read as dicomio
from pacs_workbench.preprocess.checks import SeriesReport, SlicePlan, inspect_headers
from pacs_workbench.preprocess.headers import HeaderRecord, collect_headers, scrub_paths

# Metadata keys set on images returned by :func:`read_series` (DICOM tag notation, as ITK uses).
META_SERIES_UID = "0020|000e"
META_FRAME_OF_REFERENCE_UID = "0020|0052"
META_MODALITY = "0008|0060"
META_MANUFACTURER = "0008|0070"


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


_PIXEL_KEYWORDS = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames", "PixelData", "FloatPixelData",
    "DoubleFloatPixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
)


def inspect_series(
    folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_uid: str | None = None,
    *,
    correct_tilt: bool = False,
    spacing_tolerance: float = 0.01,
    min_slices: int = 2,
    frame_group: str | None = None,
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
    correct_tilt, spacing_tolerance, min_slices, frame_group
        See :func:`~pacs_workbench.preprocess.checks.inspect_headers`.
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
        records, correct_tilt=correct_tilt, spacing_tolerance=spacing_tolerance, min_slices=min_slices,
        frame_group=frame_group,
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
    frame_group: str | None = None,
) -> tuple[sitk.Image, SeriesReport]:
    """Build the volume of a series and return it with its report.

    ``frame_group`` picks one stack or time point of an enhanced multi-frame image (see
    :func:`~pacs_workbench.preprocess.checks.inspect_headers`).

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
            records, correct_tilt=correct_tilt, spacing_tolerance=spacing_tolerance, min_slices=min_slices,
            frame_group=frame_group,
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
    frame_group: str | None = None,
) -> tuple[sitk.Image, SeriesReport]:
    """Check one series' headers and, when valid, read its pixels into a volume.

    Frames of enhanced multi-frame images are read by
    :func:`~pacs_workbench.preprocess.enhanced.read_enhanced_frames`.

    Raises
    ------
    SeriesError
        When the checks exclude the series or its pixels cannot be decoded.
    """
    report, plan = inspect_headers(
        records, correct_tilt=correct_tilt, spacing_tolerance=spacing_tolerance, min_slices=min_slices,
        frame_group=frame_group,
    )
    if plan is None:
        raise SeriesError(report.reason or "series cannot form a volume", report)
    enhanced = any(frame is not None for frame in plan.frames)
    volume = _enhanced_pixels(plan, report) if enhanced else _slice_pixels(plan, report)
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


def _enhanced_pixels(plan: SlicePlan, report: SeriesReport) -> np.ndarray:
    """The frames of enhanced multi-frame image(s), in the plan's order."""
    from pacs_workbench.preprocess.enhanced import read_enhanced_frames

    try:
        return read_enhanced_frames(plan)
    except Exception as exc:
        report.errors.append(f"frame pixel data unreadable ({scrub_paths(type(exc).__name__)})")
        report.flag("unreadable_pixels")
        raise SeriesError(report.reason, report) from None


def _slice_pixels(plan: SlicePlan, report: SeriesReport) -> np.ndarray:
    """The slices of a classic series, rescaled, in the plan's order."""
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
    return volume


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
    frame_group: str | None = None,
) -> sitk.Image:
    """Load the series in ``folder`` as a float32 ``SimpleITK.Image`` with its DICOM geometry.

    Classic single-frame series and enhanced multi-frame images (Enhanced CT/MR, Legacy
    Converted Enhanced) alike; see :func:`load_volumes` for an enhanced image with several
    stacks or time points.

    Parameters
    ----------
    folder
        Folder with the series' files (searched recursively), or a list of files.
    series_uid
        (0020,000E) Series Instance UID to pick when the folder holds several series.
    correct_tilt
        Undo gantry tilt by in-plane shifts instead of refusing the series.
    frame_group
        The stack and time point of an enhanced image, as ``SeriesReport.frame_groups`` names
        them (``"StackID=1,TemporalPositionIndex=2"``); needed when it holds more than one.

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
    image, _ = read_series(folder, series_uid, correct_tilt=correct_tilt, frame_group=frame_group)
    return image


def load_volumes(
    folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    series_uid: str | None = None,
    *,
    correct_tilt: bool = False,
) -> dict[str, sitk.Image]:
    """Every volume of a series: one per stack and time point of an enhanced image.

    Returns
    -------
    dict
        Frame group label (``''`` for a classic series or a single-stack image) to volume.

    Raises
    ------
    SeriesError
        With the reason when a stack or the series cannot form a valid volume.
    """
    report = inspect_series(folder, series_uid, correct_tilt=correct_tilt, frame_group=None)
    groups = report.frame_groups if "multi_stack" in report.flags else [None]
    volumes: dict[str, sitk.Image] = {}
    for group in groups:
        image, _ = read_series(folder, series_uid, correct_tilt=correct_tilt, frame_group=group)
        volumes[group or ""] = image
    return volumes


def meta_value(image: sitk.Image, key: str) -> str:
    """An image's metadata value (e.g. :data:`META_MODALITY`), or ``''`` when not set."""
    return image.GetMetaData(key).strip() if image.HasMetaDataKey(key) else ""

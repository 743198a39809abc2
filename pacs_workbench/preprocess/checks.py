"""The checks that decide whether a series' headers can form one volume, and the plan to build it.

:func:`inspect_headers` runs one check per rule, in order, and stops at the first that
excludes the series: localizers (left out), slice geometry present, one orientation, one
matrix and frame of reference, perpendicular axes, one image per position (duplicates,
phases), enough slices, even spacing (missing slices), gantry tilt. Each check writes its
flags, warnings and errors into the :class:`SeriesReport`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pacs_workbench.preprocess.headers import HeaderRecord

# Slices closer than this along the normal share a position; orientations closer than this are one.
_SAME_POSITION_MM = 0.01
_ORIENTATION_TOL = 1e-3


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
    # Stacks or time points of an enhanced multi-frame image ("StackID=1,TemporalPositionIndex=2"),
    # each its own volume, and the one the volume was built from.
    frame_groups: list[str] = field(default_factory=list)
    frame_group: str = ""
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
    # 1-based frame of each slice in an enhanced multi-frame file; ``None`` for single-frame files.
    frames: list[int | None]
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


@dataclass
class _Stack:
    """Slices of one orientation, sorted along the normal: what the spacing and tilt checks measure."""

    used: list[HeaderRecord]
    distances: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray


def _describe(report: SeriesReport, records: Sequence[HeaderRecord]) -> None:
    """Identity of the series from its first file; files of several series are an error."""
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


def _check_localizers(report: SeriesReport, records: Sequence[HeaderRecord]) -> list[HeaderRecord] | None:
    """The slices that are not localizers; ``None`` when there are none."""
    localizers = [r for r in records if r.is_localizer]
    slices = [r for r in records if not r.is_localizer]
    report.n_localizers = len(localizers)
    if localizers:
        report.flag("localizer")
        report.warnings.append(f"{len(localizers)} localizer image(s) left out of the volume")
    if not slices:
        report.errors.append("only localizer images")
        return None
    return slices


def frame_group_label(record: HeaderRecord) -> str:
    """Which stack and time point of an enhanced image a frame belongs to (``''`` for single frames)."""
    parts = []
    if record.StackID:
        parts.append(f"StackID={record.StackID}")
    if record.TemporalPositionIndex is not None:
        parts.append(f"TemporalPositionIndex={record.TemporalPositionIndex}")
    return ",".join(parts)


def expand_frames(records: Sequence[HeaderRecord]) -> list[HeaderRecord]:
    """Enhanced multi-frame files replaced by their frames, so every rule sees frames as slices."""
    return [frame for record in records for frame in (record.frames or (record,))]


def _check_frame_groups(
    report: SeriesReport, slices: Sequence[HeaderRecord], frame_group: str | None
) -> list[HeaderRecord] | None:
    """One stack and time point of an enhanced image: the one asked for, or the only one."""
    labels = sorted({frame_group_label(r) for r in slices if r.frame_number is not None})
    report.frame_groups = labels
    if frame_group is None and len(labels) > 1:
        shown = ", ".join(labels[:4]) + (", ..." if len(labels) > 4 else "")
        report.errors.append(
            f"the enhanced image holds {len(labels)} stacks or temporal positions ({shown}); "
            "each is its own volume: choose one (frame_group)"
        )
        report.flag("multi_stack")
        return None
    if frame_group is None:
        report.frame_group = labels[0] if labels else ""
        return list(slices)
    kept = [r for r in slices if r.frame_number is not None and frame_group_label(r) == frame_group]
    if not kept:
        report.errors.append(f"no frames of {frame_group} (the image has {', '.join(labels) or 'no frame groups'})")
        report.flag("multi_stack")
        return None
    report.frame_group = frame_group
    return kept


def _check_slice_geometry(report: SeriesReport, slices: Sequence[HeaderRecord]) -> bool:
    """Single-frame images or frames, each with position, orientation and pixel spacing."""
    if any(r.NumberOfFrames > 1 for r in slices):
        report.errors.append(
            "multi-frame image without Per-frame Functional Groups: its frames have no Plane Position/"
            "Orientation of their own, so they cannot be placed in a volume"
        )
        report.flag("multiframe_no_geometry")
        return False
    no_geometry = [r for r in slices if r.ImagePositionPatient is None or r.ImageOrientationPatient is None]
    if no_geometry:
        report.errors.append(
            f"{len(no_geometry)} image(s) without Image Position/Orientation (Patient); not a volume"
        )
        report.flag("no_geometry")
        return False
    if any(r.PixelSpacing is None for r in slices):
        report.errors.append("image(s) without Pixel Spacing")
        report.flag("no_geometry")
        return False
    return True


def _check_orientation(report: SeriesReport, slices: Sequence[HeaderRecord]) -> bool:
    """One Image Orientation (Patient) for every slice."""
    groups = _orientation_groups(slices)
    report.n_orientations = len(groups)
    if len(groups) > 1:
        sizes = "/".join(str(len(g)) for g in groups)
        report.errors.append(
            f"mixed orientations: {len(groups)} different Image Orientation (Patient) ({sizes} images)"
        )
        report.flag("mixed_orientation")
        return False
    return True


def _check_matrix(report: SeriesReport, slices: Sequence[HeaderRecord], first: HeaderRecord) -> bool:
    """One pixel matrix, pixel spacing and frame of reference; records them and the slice thickness."""
    shapes = {(r.Rows, r.Columns) for r in slices}
    pixel_spacings = {tuple(round(v, 4) for v in r.PixelSpacing or ()) for r in slices}
    if len(shapes) > 1 or len(pixel_spacings) > 1:
        report.errors.append("slices differ in Rows/Columns or Pixel Spacing")
        report.flag("mixed_matrix")
        return False
    frames = {r.FrameOfReferenceUID for r in slices}
    if len(frames) > 1:
        report.errors.append(f"slices in {len(frames)} different frames of reference")
        report.flag("mixed_frame_of_reference")
        return False
    report.FrameOfReferenceUID = next(iter(frames))
    report.Rows, report.Columns = first.Rows, first.Columns
    thicknesses = [r.SliceThickness for r in slices if r.SliceThickness is not None]
    report.SliceThickness = float(np.median(thicknesses)) if thicknesses else None
    return True


def _slice_axes(report: SeriesReport, slices: Sequence[HeaderRecord]) -> tuple[np.ndarray, ...] | None:
    """Unit row, column and normal directions; ``None`` when row and column are not perpendicular."""
    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    if abs(float(np.dot(row_dir, col_dir))) > 1e-3:
        report.errors.append("Image Orientation (Patient) row and column directions are not perpendicular")
        report.flag("bad_orientation")
        return None
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    report.oblique = bool(np.max(np.abs(normal)) < 1 - 1e-4)
    if report.oblique:
        report.flag("oblique")
    return row_dir, col_dir, normal


def _positions(
    slices: Sequence[HeaderRecord], normal: np.ndarray
) -> tuple[list[HeaderRecord], list[list[HeaderRecord]], list[float]]:
    """Slices sorted along the normal, grouped by shared position, and each position's distance."""
    # Ties resolved by SOP UID only to make the order deterministic.
    ordered = sorted(
        slices,
        key=lambda r: (float(np.dot(r.ImagePositionPatient, normal)), r.SOPInstanceUID, r.frame_number or 0),  # type: ignore[arg-type]
    )
    distances = np.array([float(np.dot(r.ImagePositionPatient, normal)) for r in ordered])  # type: ignore[arg-type]
    positions: list[list[HeaderRecord]] = [[ordered[0]]]
    position_d = [distances[0]]
    for record, d in zip(ordered[1:], distances[1:], strict=True):
        if abs(d - position_d[-1]) <= _SAME_POSITION_MM:
            positions[-1].append(record)
        else:
            positions.append([record])
            position_d.append(d)
    return ordered, positions, position_d


def _check_duplicates(
    report: SeriesReport, ordered: Sequence[HeaderRecord], positions: list[list[HeaderRecord]]
) -> list[list[HeaderRecord]] | None:
    """One image per position: copies of one instance are dropped, other images sharing a position
    (duplicates or interleaved phases) exclude the series."""
    phases = {_phase_key(r) for r in ordered}
    report.n_acquisitions = len(phases)
    repeated = [group for group in positions if len(group) > 1]
    if not repeated:
        if len(phases) > 1:
            report.warnings.append(f"{len(phases)} acquisition/phase attribute combinations, no shared positions")
        return positions
    same_instance = all(len({(r.SOPInstanceUID, r.frame_number) for r in group}) == 1 for group in repeated)
    group_phases = [{_phase_key(r) for r in group} for group in repeated]
    if same_instance:
        dropped = sum(len(group) - 1 for group in repeated)
        report.n_duplicates = dropped
        report.flag("duplicate")
        report.warnings.append(f"{dropped} duplicate file(s) of the same instance dropped")
        return [[group[0]] for group in positions]
    if len(phases) > 1 and all(len(p) > 1 for p in group_phases):
        report.errors.append(
            f"multiple acquisitions or phases in one series ({len(phases)} distinct Acquisition Number/"
            f"Temporal Position/Echo/Trigger Time combinations sharing {len(repeated)} position(s))"
        )
        report.flag("multi_phase")
        return None
    n_dup = sum(len(group) - 1 for group in repeated)
    report.n_duplicates = n_dup
    report.errors.append(
        f"duplicate slice position(s): {n_dup} extra image(s) at {len(repeated)} position(s) "
        "with different instances"
    )
    report.flag("duplicate")
    return None


def _check_slice_count(report: SeriesReport, used: Sequence[HeaderRecord], min_slices: int) -> bool:
    """Enough slices for a volume."""
    report.n_slices = len(used)
    needed = max(2, min_slices)  # the slice spacing of a volume needs two positions
    if len(used) < needed:
        report.errors.append(f"{len(used)} slice(s); at least {needed} needed for a volume")
        report.flag("too_few_slices")
        return False
    return True


def _check_spacing(report: SeriesReport, distances: np.ndarray, spacing_tolerance: float) -> bool:
    """Even gaps along the normal; irregular gaps are missing slices (whole multiples) or non-uniform."""
    gaps = np.diff(distances)
    median_gap = float(np.median(gaps))
    report.slice_spacing_mm = median_gap
    report.slice_spacing_min_mm = float(gaps.min())
    report.slice_spacing_max_mm = float(gaps.max())
    tolerance = max(0.005, spacing_tolerance * median_gap)
    irregular = np.abs(gaps - median_gap) > tolerance
    if not irregular.any():
        return True
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
    return False


def _check_completeness(report: SeriesReport, first: HeaderRecord, n_slices: int) -> None:
    """Warn when (0020,1002) Images in Acquisition promises more slices than there are."""
    expected = first.ImagesInAcquisition
    if expected and report.n_acquisitions == 1 and expected > n_slices:
        report.warnings.append(
            f"Images in Acquisition says {expected}, the series has {n_slices} slices (possible missing end slices)"
        )
        report.flag("incomplete")


def _check_tilt(
    report: SeriesReport, stack: _Stack, first: HeaderRecord, *, correct_tilt: bool, tolerance_deg: float
) -> list[tuple[float, float]] | None:
    """In-plane shift of each slice to undo gantry tilt (zeros when the stack is perpendicular);
    ``None`` when the stack is tilted and ``correct_tilt`` is off."""
    # The stack drifts in plane from slice to slice when the gantry was tilted.
    p0 = np.asarray(stack.used[0].ImagePositionPatient, dtype=float)
    offsets = np.array([np.asarray(r.ImagePositionPatient, dtype=float) - p0 for r in stack.used])
    along_row = offsets @ stack.row_dir
    along_col = offsets @ stack.col_dir
    span = stack.distances[-1] - stack.distances[0]
    drift = math.hypot(along_row[-1], along_col[-1])
    tilt = math.degrees(math.atan2(drift, span)) if span > 0 else 0.0
    report.gantry_tilt_deg = round(tilt, 4)
    header_tilt = first.GantryDetectorTilt or 0.0
    if tilt > tolerance_deg:
        report.flag("tilt")
        if not correct_tilt:
            report.errors.append(f"gantry tilt of {tilt:.2f} degrees (slice stack not perpendicular to the slices)")
            return None
        report.tilt_corrected = True
        report.warnings.append(f"gantry tilt of {tilt:.2f} degrees corrected by shifting slices in plane")
        return [(float(u), float(w)) for u, w in zip(along_row, along_col, strict=True)]
    if abs(header_tilt) > tolerance_deg:
        report.warnings.append(
            f"Gantry/Detector Tilt is {header_tilt:g} degrees but the slice stack is perpendicular (already resampled)"
        )
    return [(0.0, 0.0)] * len(stack.used)


def _plan(report: SeriesReport, stack: _Stack, first: HeaderRecord, shifts: list[tuple[float, float]]) -> SlicePlan:
    """The volume's geometry (recorded in the report) and the files in stacking order."""
    used = stack.used
    p0 = np.asarray(used[0].ImagePositionPatient, dtype=float)
    span = stack.distances[-1] - stack.distances[0]
    pixel_spacing = used[0].PixelSpacing or (1.0, 1.0)
    # (0028,0030) Pixel Spacing is (between rows, between columns) = (y, x). The mean gap over the
    # whole stack puts the last slice where its header says, which the median need not.
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), float(span / (len(used) - 1)))
    direction = tuple(float(v) for v in np.column_stack([stack.row_dir, stack.col_dir, stack.normal]).ravel())
    size = (int(first.Columns or 0), int(first.Rows or 0), len(used))
    report.size, report.spacing = size, spacing
    report.origin = (float(p0[0]), float(p0[1]), float(p0[2]))
    report.direction = direction
    return SlicePlan(
        paths=[r.path for r in used],
        slopes=[r.RescaleSlope for r in used],
        intercepts=[r.RescaleIntercept for r in used],
        shifts_mm=shifts,
        frames=[r.frame_number for r in used],
        size=size,
        spacing=spacing,
        origin=report.origin,
        direction=direction,
    )


def _checked_slices(
    report: SeriesReport, records: Sequence[HeaderRecord], frame_group: str | None = None
) -> list[HeaderRecord] | None:
    """The per-file (per-frame) checks: localizers left out, one stack and time point, geometry
    present, one orientation and matrix."""
    slices = _check_localizers(report, expand_frames(records))
    if slices is not None:
        slices = _check_frame_groups(report, slices, frame_group)
    if slices is None or not _check_slice_geometry(report, slices) or not _check_orientation(report, slices):
        return None
    return slices if _check_matrix(report, slices, records[0]) else None


def inspect_headers(
    records: Sequence[HeaderRecord],
    *,
    correct_tilt: bool = False,
    spacing_tolerance: float = 0.01,
    tilt_tolerance_deg: float = 0.05,
    min_slices: int = 2,
    frame_group: str | None = None,
) -> tuple[SeriesReport, SlicePlan | None]:
    """Check the headers of one series and plan its volume.

    Enhanced multi-frame images are checked frame by frame, their frames standing in for slices.
    The checks run in order and the first that excludes the series ends them: localizers,
    stacks and time points of an enhanced image, slice geometry,
    orientation, matrix and frame of reference, perpendicular axes, duplicate
    positions and phases, slice count, slice spacing, gantry tilt.

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
    frame_group
        The stack and time point of an enhanced image to build (one of ``report.frame_groups``,
        see :func:`frame_group_label`); needed when it holds more than one.

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
    _describe(report, records)
    slices = _checked_slices(report, records, frame_group)
    axes = _slice_axes(report, slices) if slices is not None else None
    if slices is None or axes is None:
        return report, None
    ordered, positions, distances = _positions(slices, axes[2])
    kept = _check_duplicates(report, ordered, positions)
    if kept is None:
        return report, None
    used = [group[0] for group in kept]
    if not _check_slice_count(report, used, min_slices):
        return report, None
    stack = _Stack(used, np.asarray(distances), *axes)
    if not _check_spacing(report, stack.distances, spacing_tolerance):
        return report, None
    _check_completeness(report, first, len(used))
    shifts = _check_tilt(report, stack, first, correct_tilt=correct_tilt, tolerance_deg=tilt_tolerance_deg)
    if shifts is None:
        return report, None
    return report, _plan(report, stack, first, shifts)

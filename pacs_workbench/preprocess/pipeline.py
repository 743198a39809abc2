"""Preprocessing: DICOM series and segmentations to analysis-ready image/mask volumes.

The stage turns each case (an image series plus one lesion's segmentation) into a pair of
NIfTI files on a common grid, records what every step did, and caches the result by a
hash of the input files and the parameters that affect the case.

* :func:`load_series` / :func:`inspect_series` (from :mod:`pacs_workbench.preprocess.series`):
  series to volume with geometry checks; invalid series raise :class:`SeriesError`.
* :func:`load_mask`: DICOM SEG (highdicom), RTSTRUCT (contours rasterized on voxel
  centres, even-odd rule) or a NIfTI/NRRD label map, onto the image's grid.
* :func:`preprocess_image`: resampling (IBSI grid alignment), CT rounding, re-segmentation
  range, HU clipping, normalization, denoising, N4 bias-field correction, cropping.
* :func:`scan_tree` / :func:`find_cases`: discover cases in any DICOM tree by header.
* :func:`preprocess_cases`: the cached, parallel run writing ``volumes/``,
  ``preprocess.parquet`` and ``cases.parquet``/``cases.csv``.

IBSI grid alignment (``grid_alignment="center"``, the default): the resampled grid keeps
the centre of the original grid, its size along each axis is ``ceil(n * s / s')`` and
the mask is interpolated linearly and thresholded at 0.5 (IBSI 1, section 2.4);
``"corner"`` reproduces pyradiomics, which aligns the corner of the origin voxel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from pacs_workbench.core.executor import map_items
from pacs_workbench.dicom import read as dicomio
from pacs_workbench.preprocess.series import (
    META_FRAME_OF_REFERENCE_UID,
    META_MODALITY,
    META_SERIES_UID,
    HeaderRecord,
    SeriesError,
    SeriesReport,
    collect_headers,
    grid_of,
    inspect_headers,
    inspect_series,
    list_files,
    load_series,
    physical_bounds,
    read_header,
    read_series,
    same_grid,
    scrub_paths,
    volume_from_headers,
)

__all__ = [
    "MaskError",
    "MaskReport",
    "PreprocessParams",
    "SeriesError",
    "SeriesReport",
    "TreeScan",
    "find_cases",
    "inspect_series",
    "load_mask",
    "load_series",
    "preprocess_cases",
    "preprocess_image",
    "read_mask",
    "read_series",
    "scan_tree",
    "target_grid",
]

# Bump when a change in the code changes outputs, so caches from older code are redone.
PIPELINE_VERSION = "1"
MASK_SOURCES = ("SEG", "RTSTRUCT", "labelmap")
_CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SAMPLE_SIZE = 2048


# =================================================================================================
# Masks
# =================================================================================================


class MaskError(ValueError):
    """A mask that cannot be used with its image (empty, off the image, another frame of reference)."""

    def __init__(self, reason: str, report: MaskReport | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.report = report


@dataclass
class MaskReport:
    """How a mask was brought onto its image's grid."""

    mask_source: str
    segments: list[int] = field(default_factory=list)
    referenced_series: list[str] = field(default_factory=list)
    references_image_series: bool | None = None
    same_frame_of_reference: bool | None = None
    on_grid: bool = True
    n_voxels_source: int = 0
    n_voxels: int = 0
    volume_mm3: float = 0.0
    n_contours: int = 0
    n_contours_off_image: int = 0
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def flag(self, name: str) -> None:
        """Record a short problem flag once."""
        if name not in self.flags:
            self.flags.append(name)


def detect_mask_source(path: str | os.PathLike[str]) -> str:
    """``"SEG"``, ``"RTSTRUCT"`` or ``"labelmap"`` from the file's content (not its name).

    Raises
    ------
    MaskError
        For a DICOM file that is neither a SEG nor an RTSTRUCT.
    """
    try:
        ds = dicomio.read_header(os.fspath(path), stop_before_pixels=True, specific_tags=["Modality"])
    except (dicomio.NotDicomError, dicomio.EmptyFileError):
        return "labelmap"
    except dicomio.DicomReadError as exc:
        raise MaskError(f"mask file unreadable: {exc}") from None
    modality = str(ds.get("Modality", "")).upper()
    if modality in ("SEG", "RTSTRUCT"):
        return modality
    raise MaskError(f"DICOM file with Modality {modality or 'unset'} is not a SEG or RTSTRUCT")


def _meta(image: sitk.Image, key: str) -> str:
    return image.GetMetaData(key).strip() if image.HasMetaDataKey(key) else ""


def _check_reference(report: MaskReport, image: sitk.Image, referenced: Sequence[str], frame_uid: str) -> None:
    """Compare the series/frame of reference a DICOM mask points to with the image's."""
    report.referenced_series = list(referenced)
    image_series = _meta(image, META_SERIES_UID)
    image_frame = _meta(image, META_FRAME_OF_REFERENCE_UID)
    if image_frame and frame_uid:
        report.same_frame_of_reference = image_frame == frame_uid
    if image_series and referenced:
        report.references_image_series = image_series in referenced
        if not report.references_image_series:
            report.flag("mask_other_series")
            if report.same_frame_of_reference is False:
                raise MaskError("mask references another series in another frame of reference", report)
            report.warnings.append("mask references another series (same frame of reference); resampled by position")
    elif report.same_frame_of_reference is False:
        raise MaskError("mask is in another frame of reference than the image", report)


def _image_affine(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Matrix M and origin o with physical = o + M @ index (index in x, y, z order)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = direction @ np.diag(image.GetSpacing())
    return matrix, np.asarray(image.GetOrigin(), dtype=float)


def _sitk_from_ijk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image from an (i, j, k) array and a 4x4 index-to-LPS affine."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection([float(v) for v in (columns / spacing).ravel()])
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    return image


def _aligned_subgrid(source: sitk.Image, image: sitk.Image) -> bool:
    """True when every source voxel centre is a voxel centre of ``image`` (same lattice).

    Axes may be permuted or flipped (highdicom volumes put the slice axis first); an axis
    with a single voxel has no step to check.
    """
    matrix, origin = _image_affine(image)
    source_matrix, source_origin = _image_affine(source)
    inverse = np.linalg.inv(matrix)
    start = inverse @ (source_origin - origin)
    if np.any(np.abs(start - np.round(start)) > 1e-2):
        return False
    for axis, n in enumerate(source.GetSize()):
        if n < 2:
            continue
        step = inverse @ source_matrix[:, axis]
        if np.any(np.abs(step - np.round(step)) > 1e-3) or np.abs(np.round(step)).sum() != 1:
            return False
    return True


def _onto_grid(source: sitk.Image, image: sitk.Image, report: MaskReport) -> sitk.Image:
    """Binary ``source`` (any grid) onto ``image``'s grid by nearest neighbour."""
    source = sitk.Cast(source, sitk.sitkUInt8)
    if same_grid(source, image):
        result = sitk.Image(source)
        result.CopyInformation(image)
        return result
    if not _aligned_subgrid(source, image):
        report.on_grid = False
        report.flag("mask_resampled")
        report.warnings.append("mask grid differs from the image grid; resampled (nearest neighbour)")
    return sitk.Resample(source, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _seg_mask(path: str, image: sitk.Image, segment: int | None, report: MaskReport) -> sitk.Image:
    import highdicom as hd

    seg = hd.seg.segread(path)
    numbers = [int(n) for n in seg.segment_numbers]
    chosen = numbers if segment is None else [int(segment)]
    if segment is not None and int(segment) not in numbers:
        raise MaskError(f"segment {segment} is not in the SEG (it has {numbers})", report)
    if segment is None and len(numbers) > 1:
        report.warnings.append(f"{len(numbers)} segments combined into one mask")
    report.segments = chosen
    referenced = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", []) or []]
    _check_reference(report, image, referenced, str(seg.get("FrameOfReferenceUID", "")))
    volume = seg.get_volume(segment_numbers=chosen, combine_segments=False, rescale_fractional=True)
    array = np.asarray(volume.array)
    binary: np.ndarray = np.asarray(array >= 0.5 if array.dtype.kind == "f" else array > 0)
    while binary.ndim > 3:
        binary = np.asarray(binary.any(axis=-1))
    report.n_voxels_source = int(binary.sum())
    source = _sitk_from_ijk(binary.astype(np.uint8), np.asarray(volume.affine, dtype=float))
    return _onto_grid(source, image, report)


def _rtstruct_mask(path: str, image: sitk.Image, segment: int | None, report: MaskReport) -> sitk.Image:
    from matplotlib.path import Path as PolygonPath

    ds = dicomio.read_header(path)
    frames = {
        int(item.ROINumber): str(item.get("ReferencedFrameOfReferenceUID", ""))
        for item in ds.get("StructureSetROISequence", []) or []
    }
    contours = {
        int(item.ReferencedROINumber): list(item.get("ContourSequence", []) or [])
        for item in ds.get("ROIContourSequence", []) or []
    }
    with_contours = sorted(n for n, items in contours.items() if items)
    if segment is not None and int(segment) not in with_contours:
        raise MaskError(f"ROI {segment} has no contours in the RTSTRUCT (ROIs with contours: {with_contours})", report)
    chosen = with_contours if segment is None else [int(segment)]
    if not chosen:
        raise MaskError("the RTSTRUCT has no contours", report)
    if segment is None and len(chosen) > 1:
        report.warnings.append(f"{len(chosen)} ROIs combined into one mask")
    report.segments = chosen
    frame_uids = {frames.get(n, "") for n in chosen} - {""}
    referenced = [
        str(series.SeriesInstanceUID)
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []) or []
        for study in frame.get("RTReferencedStudySequence", []) or []
        for series in study.get("RTReferencedSeriesSequence", []) or []
    ]
    _check_reference(report, image, referenced, next(iter(frame_uids)) if len(frame_uids) == 1 else "")

    nx, ny, nz = image.GetSize()
    matrix, origin = _image_affine(image)
    inverse = np.linalg.inv(matrix)
    mask = np.zeros((nz, ny, nx), dtype=bool)
    skipped_types: dict[str, int] = {}
    off_plane = 0
    for number in chosen:
        roi = np.zeros_like(mask)
        for contour in contours[number]:
            kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            points = np.asarray(contour.get("ContourData", []), dtype=float).reshape(-1, 3)
            report.n_contours += 1
            if kind != "CLOSED_PLANAR" or len(points) < 3:
                skipped_types[kind] = skipped_types.get(kind, 0) + 1
                continue
            index = (points - origin) @ inverse.T
            k_float = index[:, 2]
            k = round(float(np.mean(k_float)))
            if float(np.ptp(k_float)) > 0.5:
                off_plane += 1
            if not 0 <= k < nz:
                report.n_contours_off_image += 1
                continue
            # Voxel centres inside the polygon, in index space; the bounding box keeps the test small.
            x_lo = max(0, math.ceil(index[:, 0].min()))
            x_hi = min(nx - 1, math.floor(index[:, 0].max()))
            y_lo = max(0, math.ceil(index[:, 1].min()))
            y_hi = min(ny - 1, math.floor(index[:, 1].max()))
            if x_lo > x_hi or y_lo > y_hi:
                report.n_contours_off_image += 1
                continue
            yy, xx = np.mgrid[y_lo : y_hi + 1, x_lo : x_hi + 1]
            centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
            inside = PolygonPath(index[:, :2]).contains_points(centres).reshape(yy.shape)
            # Even-odd rule: a contour inside another on the same slice is a hole.
            roi[k, y_lo : y_hi + 1, x_lo : x_hi + 1] ^= inside
        mask |= roi
    for kind, count in skipped_types.items():
        report.warnings.append(f"{count} {kind} contour(s) ignored (only CLOSED_PLANAR fill an area)")
    if off_plane:
        report.flag("contour_off_plane")
        report.warnings.append(f"{off_plane} contour(s) not parallel to the image slices; put on the nearest slice")
    if report.n_contours_off_image:
        report.flag("contour_off_image")
        report.warnings.append(f"{report.n_contours_off_image} contour(s) outside the image")
    report.n_voxels_source = int(mask.sum())
    result = sitk.GetImageFromArray(mask.astype(np.uint8))
    result.CopyInformation(image)
    return result


def _labelmap_mask(path: str, image: sitk.Image, segment: int | None, report: MaskReport) -> sitk.Image:
    labels = sitk.ReadImage(path)
    if labels.GetDimension() != 3:
        raise MaskError(f"label map must be 3D (got {labels.GetDimension()}D)", report)
    # Overlapping segments (e.g. 3D Slicer .seg.nrrd with several layers) come as components;
    # a voxel belongs to a label when any layer holds it.
    array = sitk.GetArrayFromImage(labels)
    if labels.GetNumberOfComponentsPerPixel() > 1:
        report.warnings.append(f"{labels.GetNumberOfComponentsPerPixel()} label layers combined")
    values = np.unique(array)
    present = [int(v) for v in values if v != 0]
    if segment is None:
        binary = array != 0
        if binary.ndim == 4:
            binary = binary.any(axis=-1)
        if len(present) > 1:
            report.warnings.append(f"{len(present)} labels combined into one mask")
        report.segments = present
    else:
        if int(segment) not in present:
            raise MaskError(f"label {segment} is not in the label map (labels: {present[:20]})", report)
        binary = array == int(segment)
        if binary.ndim == 4:
            binary = binary.any(axis=-1)
        report.segments = [int(segment)]
    report.n_voxels_source = int(binary.sum())
    source = sitk.GetImageFromArray(binary.astype(np.uint8))
    source.SetSpacing(labels.GetSpacing())
    source.SetOrigin(labels.GetOrigin())
    source.SetDirection(labels.GetDirection())
    return _onto_grid(source, image, report)


def read_mask(
    path: str | os.PathLike[str], image: sitk.Image, *, segment: int | None = None
) -> tuple[sitk.Image, MaskReport]:
    """Read a SEG, RTSTRUCT or label map onto ``image``'s grid, with a report.

    Parameters
    ----------
    path
        DICOM SEG, DICOM RTSTRUCT, or a label map SimpleITK can read (NIfTI, NRRD, MHA, ...).
    image
        The image whose grid the mask must be on (from :func:`load_series` or any SimpleITK image).
    segment
        SEG (0062,0004) Segment Number, RTSTRUCT (3006,0022) ROI Number, or label value; all
        segments/ROIs/labels combined when ``None``.

    Raises
    ------
    MaskError
        When the mask is empty, does not overlap the image, or lies in another frame of reference.
    """
    file = os.fspath(path)
    source = detect_mask_source(file)
    report = MaskReport(mask_source=source)
    reader = {"SEG": _seg_mask, "RTSTRUCT": _rtstruct_mask, "labelmap": _labelmap_mask}[source]
    try:
        mask = reader(file, image, segment, report)
    except MaskError:
        raise
    except Exception as exc:
        raise MaskError(f"{source} unreadable: {type(exc).__name__}: {scrub_paths(str(exc))[:200]}", report) from None
    count = int(sitk.GetArrayViewFromImage(mask).sum())
    report.n_voxels = count
    report.volume_mm3 = float(count * np.prod(image.GetSpacing()))
    if report.n_voxels_source == 0:
        raise MaskError("mask is empty", report)
    if count == 0:
        report.flag("mask_no_overlap")
        raise MaskError("mask does not overlap the image", report)
    if report.on_grid and report.n_voxels_source > count and source != "RTSTRUCT":
        report.flag("mask_partly_outside")
        report.warnings.append(f"{report.n_voxels_source - count} mask voxel(s) outside the image")
    return mask, report


def load_mask(path: str | os.PathLike[str], image: sitk.Image, *, segment: int | None = None) -> sitk.Image:
    """A binary (0/1, UInt8) mask on ``image``'s grid from a SEG, RTSTRUCT or label-map file.

    Parameters
    ----------
    path
        DICOM SEG (read with highdicom), DICOM RTSTRUCT (closed planar contours rasterized on
        voxel centres with the even-odd rule, so inner contours are holes) or a NIfTI/NRRD label map.
    image
        Target grid. When it came from :func:`load_series`, the mask's referenced series and
        frame of reference are checked against it.
    segment
        Which segment/ROI/label; all combined when ``None``.

    Raises
    ------
    MaskError
        Empty mask, no overlap with the image, or another frame of reference.
    """
    mask, _ = read_mask(path, image, segment=segment)
    return mask


# =================================================================================================
# Parameters and the per-image pipeline
# =================================================================================================

_INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "lanczos": sitk.sitkLanczosWindowedSinc,
}


def _pair(value: Any, name: str) -> tuple[float, float] | None:
    if value is None or (isinstance(value, list | tuple) and len(value) == 0):
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers [low, high] or empty, got {value!r}") from None
    if not lo < hi:
        raise ValueError(f"{name} must have low < high, got {value!r}")
    return (lo, hi)


@dataclass(frozen=True)
class PreprocessParams:
    """Every preprocessing step, as a parameter.

    Attributes
    ----------
    target_spacing_mm
        Output voxel size (x, y, z) in mm; a single number means isotropic; ``None`` keeps the native
        grid; 0 (or ``None``) on an axis keeps that axis as is (e.g. ``(2, 2, 0)``: in-plane only).
    interpolator
        Image interpolation: ``linear`` (IBSI configs B-D), ``bspline`` (cubic, config E),
        ``nearest``, ``lanczos``.
    mask_interpolator
        ``linear`` (interpolate, then threshold at ``mask_threshold``; IBSI) or ``nearest``.
    mask_threshold
        Partial-volume threshold for a linearly interpolated mask.
    grid_alignment
        ``center`` (IBSI: keep the grid centre, size ``ceil(n s / s')``) or ``corner`` (pyradiomics).
    round_ct
        Round interpolated CT values to whole HU (IBSI).
    hu_window
        CT only: clip intensities to [low, high] HU.
    resegment_range
        Drop mask voxels whose intensity is outside [low, high] (IBSI re-segmentation; CT in HU).
    normalization
        ``none``, ``zscore`` or ``percentile`` (maps the two ``normalization_percentiles`` to 0 and 1).
    normalization_region
        Voxels the statistics come from: ``foreground`` (Otsu), ``image`` or ``mask``; always the
        whole native image, so they do not depend on the crop.
    normalize_modalities
        Modalities normalization applies to (default MR; CT keeps HU).
    denoise
        ``none``, ``curvature_flow`` (``denoise_iterations`` steps) or ``median`` (``denoise_radius``).
    bias_field
        ``none`` or ``n4`` (SimpleITK N4 on a shrunk copy, applied at full resolution) for
        ``bias_field_modalities``.
    crop_margin_mm
        Crop to the mask's bounding box plus this margin; ``None`` keeps the whole image.
    correct_tilt
        Undo gantry tilt (in-plane shifts) instead of excluding the series.
    spacing_tolerance, min_slices, min_mask_voxels
        Series checks and the smallest usable mask.
    """

    target_spacing_mm: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    interpolator: str = "linear"
    mask_interpolator: str = "linear"
    mask_threshold: float = 0.5
    grid_alignment: str = "center"
    round_ct: bool = True
    hu_window: tuple[float, float] | None = None
    resegment_range: tuple[float, float] | None = None
    normalization: str = "none"
    normalization_percentiles: tuple[float, float] = (1.0, 99.0)
    normalization_region: str = "foreground"
    normalize_modalities: tuple[str, ...] = ("MR",)
    denoise: str = "none"
    denoise_iterations: int = 5
    denoise_radius: int = 1
    bias_field: str = "none"
    bias_field_modalities: tuple[str, ...] = ("MR",)
    n4_shrink: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 30)
    crop_margin_mm: float | None = 10.0
    correct_tilt: bool = False
    spacing_tolerance: float = 0.01
    min_slices: int = 2
    min_mask_voxels: int = 1

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        spacing = self.target_spacing_mm
        if spacing is not None and not (isinstance(spacing, list | tuple) and len(spacing) == 0):
            values = [spacing] * 3 if isinstance(spacing, int | float) else list(spacing)
            if len(values) == 1:
                values = values * 3
            if len(values) != 3:
                raise ValueError(f"target_spacing_mm needs 1 or 3 values, got {spacing!r}")
            cleaned = tuple(0.0 if v is None else float(v) for v in values)
            if any(v < 0 for v in cleaned):
                raise ValueError(f"target_spacing_mm must be positive (0 keeps an axis), got {spacing!r}")
            set_(self, "target_spacing_mm", None if all(v == 0 for v in cleaned) else cleaned)
        else:
            set_(self, "target_spacing_mm", None)
        choices = {
            "interpolator": tuple(_INTERPOLATORS),
            "mask_interpolator": ("linear", "nearest"),
            "grid_alignment": ("center", "corner"),
            "normalization": ("none", "zscore", "percentile"),
            "normalization_region": ("foreground", "image", "mask"),
            "denoise": ("none", "curvature_flow", "median"),
            "bias_field": ("none", "n4"),
        }
        for name, allowed in choices.items():
            value = str(getattr(self, name) or "none").lower()
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
            set_(self, name, value)
        set_(self, "hu_window", _pair(self.hu_window, "hu_window"))
        set_(self, "resegment_range", _pair(self.resegment_range, "resegment_range"))
        percentiles = _pair(self.normalization_percentiles, "normalization_percentiles")
        set_(self, "normalization_percentiles", percentiles or (1.0, 99.0))
        set_(self, "normalize_modalities", tuple(str(m).upper() for m in self.normalize_modalities))
        set_(self, "bias_field_modalities", tuple(str(m).upper() for m in self.bias_field_modalities))
        set_(self, "n4_iterations", tuple(int(v) for v in self.n4_iterations))
        if self.crop_margin_mm is not None:
            if float(self.crop_margin_mm) < 0:
                raise ValueError("crop_margin_mm must be >= 0 or None")
            set_(self, "crop_margin_mm", float(self.crop_margin_mm))
        if not 0 < float(self.mask_threshold) <= 1:
            raise ValueError("mask_threshold must be in (0, 1]")

    @classmethod
    def coerce(cls, params: PreprocessParams | dict[str, Any] | None) -> PreprocessParams:
        """Parameters from an instance, a dict (e.g. notebook or YAML values) or ``None`` (defaults).

        Raises
        ------
        ValueError
            On unknown keys or invalid values.
        """
        if params is None:
            return cls()
        if isinstance(params, PreprocessParams):
            return params  # type: ignore[return-value]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing parameter(s): {', '.join(unknown)}")
        values = dict(params)
        for name in ("normalize_modalities", "bias_field_modalities", "n4_iterations"):
            if name in values and values[name] is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> PreprocessParams:
        """Parameters from a larger mapping (e.g. a notebook's ``globals()``): known fields only.

        Notebook conventions: an empty list means "none" and a negative ``crop_margin_mm``
        keeps the whole image.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        picked = {k: v for k, v in values.items() if k in known}
        margin = picked.get("crop_margin_mm")
        if margin is not None and float(margin) < 0:
            picked["crop_margin_mm"] = None
        return cls.coerce(picked)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def effective(self, modality: str) -> dict[str, Any]:
        """Only the parameters that change the output for an image of ``modality``.

        Used for the cache key, so a change that cannot affect a case (e.g. MR normalization
        for a CT case) does not redo it.
        """
        modality = modality.upper()
        resampled = self.target_spacing_mm is not None
        out: dict[str, Any] = {
            "target_spacing_mm": self.target_spacing_mm,
            "crop_margin_mm": self.crop_margin_mm,
            "correct_tilt": self.correct_tilt,
            "spacing_tolerance": self.spacing_tolerance,
            "min_slices": self.min_slices,
            "min_mask_voxels": self.min_mask_voxels,
            "resegment_range": self.resegment_range,
            "denoise": self.denoise,
        }
        if resampled:
            out.update(
                interpolator=self.interpolator,
                mask_interpolator=self.mask_interpolator,
                grid_alignment=self.grid_alignment,
            )
            if self.mask_interpolator == "linear":
                out["mask_threshold"] = self.mask_threshold
            if modality == "CT":
                out["round_ct"] = self.round_ct
        if modality == "CT":
            out["hu_window"] = self.hu_window
        if self.denoise == "curvature_flow":
            out["denoise_iterations"] = self.denoise_iterations
        elif self.denoise == "median":
            out["denoise_radius"] = self.denoise_radius
        if modality in self.normalize_modalities and self.normalization != "none":
            out.update(
                normalization=self.normalization,
                normalization_region=self.normalization_region,
            )
            if self.normalization == "percentile":
                out["normalization_percentiles"] = self.normalization_percentiles
        if modality in self.bias_field_modalities and self.bias_field != "none":
            out.update(bias_field=self.bias_field, n4_shrink=self.n4_shrink, n4_iterations=self.n4_iterations)
        return json.loads(json.dumps(out))


@dataclass(frozen=True)
class Grid:
    """A sampling grid: size, spacing and direction in image axis order, origin in LPS mm."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        """The grid of an existing image."""
        return cls(
            tuple(int(v) for v in image.GetSize()),  # type: ignore[arg-type]
            tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
            tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
            tuple(float(v) for v in image.GetDirection()),
        )

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Continuous indices (n, 3) to physical points (n, 3)."""
        matrix = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        return np.asarray(self.origin) + np.atleast_2d(index) @ matrix.T

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """Physical points (n, 3) to continuous indices (n, 3)."""
        matrix = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        return (np.atleast_2d(points) - np.asarray(self.origin)) @ np.linalg.inv(matrix).T

    def sub(self, lo: Sequence[int], hi: Sequence[int]) -> Grid:
        """The part of this grid from index ``lo`` to ``hi`` (inclusive)."""
        origin = self.index_to_physical(np.asarray(lo, dtype=float))[0]
        size = tuple(int(h - lo_ + 1) for lo_, h in zip(lo, hi, strict=True))
        return Grid(size, self.spacing, tuple(float(v) for v in origin), self.direction)  # type: ignore[arg-type]

    def resample(self, image: sitk.Image, interpolator: int, default: float, pixel_type: int) -> sitk.Image:
        """Sample ``image`` on this grid (identity transform)."""
        return sitk.Resample(
            image,
            list(self.size),
            sitk.Transform(),
            interpolator,
            list(self.origin),
            list(self.spacing),
            list(self.direction),
            default,
            pixel_type,
        )


def target_grid(
    image: sitk.Image, spacing_mm: Sequence[float] | None, alignment: str = "center"
) -> Grid:
    """The resampling grid for ``image`` at ``spacing_mm``.

    Parameters
    ----------
    image
        Native image.
    spacing_mm
        Target spacing (x, y, z); 0 or ``None`` on an axis (or ``None`` overall) keeps it.
    alignment
        ``center``: IBSI -- the new grid has ``ceil(n s / s')`` voxels and the same centre as the
        original. ``corner``: pyradiomics -- the corner of the origin voxel stays put.
    """
    native = Grid.of(image)
    if spacing_mm is None:
        return native
    size, spacing, shift = [], [], []
    for n, s, target in zip(native.size, native.spacing, spacing_mm, strict=True):
        if not target:
            size.append(n)
            spacing.append(s)
            shift.append(0.0)
            continue
        t = float(target)
        m = max(1, math.ceil(n * s / t - 1e-6))
        size.append(m)
        spacing.append(t)
        if alignment == "center":
            shift.append(((n - 1) * s - (m - 1) * t) / 2.0)
        else:
            shift.append((t - s) / 2.0)
    direction = np.asarray(native.direction).reshape(3, 3)
    origin = np.asarray(native.origin) + direction @ np.asarray(shift)
    return Grid(
        tuple(size),  # type: ignore[arg-type]
        tuple(spacing),  # type: ignore[arg-type]
        tuple(float(v) for v in origin),  # type: ignore[arg-type]
        native.direction,
    )


def _mask_index_box(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray] | None:
    array = sitk.GetArrayViewFromImage(mask)
    nonzero = np.nonzero(array)
    if len(nonzero[0]) == 0:
        return None
    lo = np.array([nonzero[2].min(), nonzero[1].min(), nonzero[0].min()], dtype=float)
    hi = np.array([nonzero[2].max(), nonzero[1].max(), nonzero[0].max()], dtype=float)
    return lo, hi


def _crop_box(grid: Grid, mask: sitk.Image, margin_mm: float) -> tuple[list[int], list[int]]:
    """Index range of ``grid`` covering the mask's voxels plus ``margin_mm``."""
    box = _mask_index_box(mask)
    assert box is not None
    corners = physical_bounds(mask, box[0] - 0.5, box[1] + 0.5)
    index = grid.physical_to_index(corners)
    lo, hi = [], []
    for axis in range(3):
        margin = math.ceil(margin_mm / grid.spacing[axis] - 1e-9)
        first = math.ceil(index[:, axis].min() - 0.5 - 1e-6) - margin
        last = math.floor(index[:, axis].max() + 0.5 + 1e-6) + margin
        lo.append(max(0, first))
        hi.append(min(grid.size[axis] - 1, last))
    return lo, hi


def _native_cover(image: sitk.Image, grid: Grid, pad: int) -> sitk.Image:
    """The part of ``image`` that ``grid`` samples, plus ``pad`` voxels for kernel support."""
    lo_idx = np.zeros(3) - 0.5
    hi_idx = np.asarray(grid.size, dtype=float) - 0.5
    corners = np.array(
        [[x, y, z] for x in (lo_idx[0], hi_idx[0]) for y in (lo_idx[1], hi_idx[1]) for z in (lo_idx[2], hi_idx[2])]
    )
    native = Grid.of(image)
    index = native.physical_to_index(grid.index_to_physical(corners))
    lo = [max(0, math.floor(index[:, a].min()) - pad) for a in range(3)]
    hi = [min(native.size[a] - 1, math.ceil(index[:, a].max()) + pad) for a in range(3)]
    if any(h < lo_ for lo_, h in zip(lo, hi, strict=True)):
        return image
    size = [h - lo_ + 1 for lo_, h in zip(lo, hi, strict=True)]
    if size == list(native.size):
        return image
    return sitk.RegionOfInterest(image, size, lo)


def _sample(array: np.ndarray, seed: int = 0) -> list[float]:
    flat = np.asarray(array, dtype=np.float32).ravel()
    if flat.size > _SAMPLE_SIZE:
        flat = flat[np.random.default_rng(seed).choice(flat.size, _SAMPLE_SIZE, replace=False)]
    return [round(float(v), 3) for v in flat]


def _n4(image: sitk.Image, params: PreprocessParams) -> tuple[sitk.Image, dict[str, Any]]:
    floating = sitk.Cast(image, sitk.sitkFloat32)
    foreground = sitk.OtsuThreshold(floating, 0, 1, 200)
    shrink = max(1, min(params.n4_shrink, *(max(1, s // 8) for s in floating.GetSize())))
    small = sitk.Shrink(floating, [shrink] * 3)
    small_mask = sitk.Shrink(foreground, [shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(params.n4_iterations))
    corrector.Execute(small, small_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(floating)
    corrected = sitk.Cast(floating / sitk.Exp(log_bias), sitk.sitkFloat32)
    corrected.CopyInformation(image)
    bias = sitk.GetArrayViewFromImage(log_bias)
    return corrected, {
        "step": "bias_field",
        "method": "n4",
        "shrink": shrink,
        "iterations": list(params.n4_iterations),
        "log_bias_range": [round(float(bias.min()), 4), round(float(bias.max()), 4)],
    }


def _normalization_stats(
    image: sitk.Image, mask: sitk.Image, params: PreprocessParams
) -> tuple[float, float, dict[str, Any]]:
    """Offset and scale with ``normalized = (value - offset) / scale``."""
    values = sitk.GetArrayViewFromImage(image)
    if params.normalization_region == "mask":
        region = sitk.GetArrayViewFromImage(mask) > 0
    elif params.normalization_region == "foreground":
        region = sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1, 200)) > 0
    else:
        region = np.ones(values.shape, dtype=bool)
    selected = values[region] if region.any() else values.ravel()
    info: dict[str, Any]
    if params.normalization == "zscore":
        offset, scale = float(selected.mean()), float(selected.std())
        info = {"mean": round(offset, 4), "std": round(scale, 4)}
    else:
        p_lo, p_hi = params.normalization_percentiles
        offset, high = (float(v) for v in np.percentile(selected, [p_lo, p_hi]))
        scale = high - offset
        info = {f"p{p_lo:g}": round(offset, 4), f"p{p_hi:g}": round(high, 4)}
    if not scale > 0:
        scale = 1.0
        info["warning"] = "zero spread; scale 1 used"
    info.update(step="normalize", method=params.normalization, region=params.normalization_region)
    return offset, scale, info


def preprocess_image(
    image: sitk.Image,
    mask: sitk.Image,
    params: PreprocessParams | dict[str, Any] | None = None,
    *,
    modality: str | None = None,
) -> tuple[sitk.Image, sitk.Image, dict[str, Any]]:
    """Apply the preprocessing steps to one image and its mask.

    Order: N4 bias field (whole native image) -> normalization statistics (whole native
    image) -> crop the native image to what the output grid needs -> denoise -> resample
    image and mask onto the target grid (IBSI alignment; cropped to the mask plus margin)
    -> round CT to whole HU -> re-segmentation range -> HU clipping -> normalization.

    Parameters
    ----------
    image, mask
        Native image (float) and binary mask on the same grid.
    params
        :class:`PreprocessParams` or a dict of its fields.
    modality
        ``CT``, ``MR``, ...; read from the image metadata (``0008|0060``) when ``None``.

    Returns
    -------
    image, mask, info
        Float32 image, UInt8 mask, and ``info`` with ``steps`` (one dict per step, saying what it
        did), ``warnings``, voxel samples before/after (for histograms) and mask voxel counts.

    Raises
    ------
    MaskError
        When the mask is empty after resampling or re-segmentation.
    """
    p = PreprocessParams.coerce(params)
    modality = (modality or _meta(image, META_MODALITY) or "").upper()
    steps: list[dict[str, Any]] = []
    warnings: list[str] = []
    if not same_grid(image, mask):
        raise MaskError("mask is not on the image grid")
    image = sitk.Cast(image, sitk.sitkFloat32)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask_in = int(sitk.GetArrayViewFromImage(mask).sum())
    if mask_in < p.min_mask_voxels:
        raise MaskError(f"mask has {mask_in} voxel(s); at least {p.min_mask_voxels} needed")
    steps.append({"step": "load", "modality": modality, **grid_of(image), "mask_voxels": mask_in})

    if p.bias_field == "n4" and modality in p.bias_field_modalities:
        image, info = _n4(image, p)
        steps.append(info)

    norm: tuple[float, float, dict[str, Any]] | None = None
    if p.normalization != "none" and modality in p.normalize_modalities:
        norm = _normalization_stats(image, mask, p)

    grid = target_grid(image, p.target_spacing_mm, p.grid_alignment)
    full_grid = grid
    if p.crop_margin_mm is not None:
        lo, hi = _crop_box(grid, mask, p.crop_margin_mm)
        grid = grid.sub(lo, hi)
    resampled = p.target_spacing_mm is not None and Grid.of(image) != full_grid
    pad = 8 + (p.denoise_iterations if p.denoise == "curvature_flow" else p.denoise_radius)
    region = _native_cover(image, grid, pad)
    before = _sample(sitk.GetArrayFromImage(_native_cover(image, grid, 0)))

    if p.denoise == "curvature_flow":
        region = sitk.CurvatureFlow(region, timeStep=0.0625, numberOfIterations=p.denoise_iterations)
        steps.append({"step": "denoise", "method": "curvature_flow", "iterations": p.denoise_iterations})
    elif p.denoise == "median":
        region = sitk.Median(region, [p.denoise_radius] * 3)
        steps.append({"step": "denoise", "method": "median", "radius": p.denoise_radius})

    fill = float(sitk.GetArrayViewFromImage(region).min())
    if resampled:
        out_image = grid.resample(region, _INTERPOLATORS[p.interpolator], fill, sitk.sitkFloat32)
        if p.mask_interpolator == "linear":
            fraction = grid.resample(sitk.Cast(mask, sitk.sitkFloat32), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            out_mask = sitk.Cast(fraction >= p.mask_threshold, sitk.sitkUInt8)
        else:
            out_mask = grid.resample(mask, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        steps.append(
            {
                "step": "resample",
                "from_spacing": list(image.GetSpacing()),
                "to_spacing": list(grid.spacing),
                "full_size": list(full_grid.size),
                "alignment": p.grid_alignment,
                "interpolator": p.interpolator,
                "mask_interpolator": p.mask_interpolator,
                **({"mask_threshold": p.mask_threshold} if p.mask_interpolator == "linear" else {}),
            }
        )
    else:
        # Same lattice: copy voxels exactly (no interpolation).
        out_image = grid.resample(region, sitk.sitkNearestNeighbor, fill, sitk.sitkFloat32)
        out_mask = grid.resample(mask, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if p.crop_margin_mm is not None:
        steps.append(
            {"step": "crop", "margin_mm": p.crop_margin_mm, "size": list(grid.size), "full_size": list(full_grid.size)}
        )

    array = sitk.GetArrayFromImage(out_image)
    mask_array = sitk.GetArrayFromImage(out_mask).astype(bool)
    if resampled and modality == "CT" and p.round_ct and p.interpolator != "nearest":
        array = np.round(array)
        steps.append({"step": "round", "what": "interpolated CT values to whole HU"})
    if p.resegment_range is not None:
        lo_v, hi_v = p.resegment_range
        keep = (array >= lo_v) & (array <= hi_v)
        removed = int((mask_array & ~keep).sum())
        mask_array &= keep
        steps.append({"step": "resegment", "range": [lo_v, hi_v], "mask_voxels_removed": removed})
    if p.hu_window is not None and modality == "CT":
        lo_v, hi_v = p.hu_window
        clipped = int(((array < lo_v) | (array > hi_v)).sum())
        array = np.clip(array, lo_v, hi_v)
        steps.append({"step": "clip", "range": [lo_v, hi_v], "voxels_clipped": clipped})
    if norm is not None:
        offset, scale, info = norm
        array = (array - offset) / scale
        steps.append(info)

    mask_out = int(mask_array.sum())
    if mask_out < p.min_mask_voxels:
        raise MaskError(f"mask has {mask_out} voxel(s) after resampling/re-segmentation")
    result = sitk.GetImageFromArray(array.astype(np.float32))
    result.CopyInformation(out_image)
    result_mask = sitk.GetImageFromArray(mask_array.astype(np.uint8))
    result_mask.CopyInformation(out_image)
    info = {
        "steps": steps,
        "warnings": warnings,
        "mask_voxels_in": mask_in,
        "mask_voxels_out": mask_out,
        "mask_volume_mm3": float(mask_out * np.prod(grid.spacing)),
        "sample_before": before,
        "sample_after": _sample(array),
    }
    return result, result_mask, info


# =================================================================================================
# Case discovery
# =================================================================================================


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def series_key(series_uid: str) -> str:
    """A short, non-reversible key for a series, for reports that must not show UIDs."""
    return "s" + _short_hash(series_uid, 10)


def make_case_id(series_uid: str, mask_uid: str, segment: int) -> str:
    """``<hash of SeriesInstanceUID>_<hash of mask SOP Instance UID + segment number>``.

    The mask instance is part of the key because trees often hold one SEG per lesion, each
    with segment number 1.
    """
    return f"{_short_hash(series_uid, 10)}_{_short_hash(f'{mask_uid}|{int(segment)}', 6)}"


@dataclass
class TreeScan:
    """What :func:`scan_tree` found.

    Attributes
    ----------
    series
        One row per image series (all modalities): the header checks of
        :func:`~pacs_workbench.preprocess.series.inspect_headers` plus ``series_folder``, ``series_key`` and
        ``n_masks``.
    masks
        One row per SEG/RTSTRUCT instance: ``mask_source``, ``mask_path``, referenced series,
        ``matched`` (the referenced series is in the tree), ``used`` and ``reason`` when not used.
    cases
        The case table (see :func:`find_cases`).
    n_files, n_not_dicom, n_unreadable
        Every file under the root lands in exactly one of: a header above, not DICOM, unreadable.
    """

    series: pd.DataFrame
    masks: pd.DataFrame
    cases: pd.DataFrame
    n_files: int = 0
    n_not_dicom: int = 0
    n_unreadable: int = 0


def _read_header_batch(paths: list[str]) -> list[HeaderRecord | tuple[str, str]]:
    """Worker: headers of a batch of files; ``(path, 'not_dicom'|'unreadable')`` for the rest."""
    out: list[HeaderRecord | tuple[str, str]] = []
    for path in paths:
        try:
            record = read_header(path)
        except Exception:
            out.append((path, "unreadable"))
            continue
        out.append(record if record is not None else (path, "not_dicom"))
    return out


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pseudonymizer(
    records: Iterable[HeaderRecord], key_file: str | os.PathLike[str] | None = None
) -> tuple[dict[str, str], str]:
    """PatientID -> pseudo_patient_id for the scan, and where the pseudonyms come from.

    De-identified data ((0012,0062) Patient Identity Removed = YES) already carries the
    pseudonym in (0010,0020) Patient ID. Otherwise the project key (``PACS_WORKBENCH_KEY_FILE``)
    (``key_file``, else ``PACS_WORKBENCH_KEY_FILE``) makes the same pseudonyms as the rest of
    the workbench; without a key a random key for this scan only keeps patients apart without
    identifying them (scope ``run``).
    """
    from pacs_workbench.core.pseudonym import KeyFileError, load_key, pseudonymize

    ids = {r.PatientID for r in records}
    all_removed = all(r.PatientIdentityRemoved == "YES" for r in records)
    if all_removed:
        return {pid: pid for pid in ids}, "deid"
    try:
        key, scope = load_key(key_file or None), "key"
    except (KeyFileError, OSError, ValueError):
        key, scope = secrets.token_bytes(32), "run"
    return {pid: pseudonymize(key, pid or "(none)", "patient") for pid in ids}, scope


def scan_tree(
    dicom_root: str | os.PathLike[str],
    *,
    modalities: Sequence[str] = ("CT", "MR"),
    mask_preference: Sequence[str] = ("SEG", "RTSTRUCT"),
    correct_tilt: bool = False,
    key_file: str | os.PathLike[str] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> TreeScan:
    """Read every header under ``dicom_root`` and match segmentations to image series.

    Files are grouped by (0020,000E) Series Instance UID from their headers, never by folder
    names, so any layout works. A SEG or RTSTRUCT belongs to the series its
    (0008,1115) Referenced Series Sequence / RT Referenced Series Sequence names.

    Parameters
    ----------
    dicom_root
        Folder to scan (recursively).
    modalities
        Image modalities that make cases.
    mask_preference
        When a series has both SEG and RTSTRUCT masks, only the first kind in this order makes
        cases (they usually outline the same lesions); the others are listed as not used.
    correct_tilt
        Passed to the series checks.
    key_file
        Project key file for ``pseudo_patient_id`` when the tree is not de-identified (default:
        ``PACS_WORKBENCH_KEY_FILE``; without either, pseudonyms are valid for this scan only).
    workers, scheduler, progress
        See :func:`pacs_workbench.core.executor.map_items`.
    """
    if not Path(dicom_root).is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {dicom_root}")
    paths = list_files(dicom_root)
    results: list[HeaderRecord | tuple[str, str]] = []
    batches = list(_batches(paths, 64))
    for batch in map_items(
        _read_header_batch, batches, workers=workers, scheduler=scheduler,
        desc="read headers", total=len(batches), progress=progress,
    ):
        results.extend(batch)
    records = [r for r in results if isinstance(r, HeaderRecord)]
    problems = [r for r in results if not isinstance(r, HeaderRecord)]
    n_not_dicom = sum(1 for r in problems if r[1] == "not_dicom")

    images: dict[str, list[HeaderRecord]] = {}
    mask_records: list[HeaderRecord] = []
    for record in records:
        if record.Modality in ("SEG", "RTSTRUCT"):
            mask_records.append(record)
        elif record.is_image:
            images.setdefault(record.SeriesInstanceUID, []).append(record)
    pseudonyms, scope = _pseudonymizer([r for group in images.values() for r in group], key_file)

    series_rows: list[dict[str, Any]] = []
    reports: dict[str, SeriesReport] = {}
    for uid, group in sorted(images.items()):
        report, _ = inspect_headers(group, correct_tilt=correct_tilt)
        reports[uid] = report
        row = report.to_record()
        row["series_key"] = series_key(uid)
        row["series_folder"] = os.path.commonpath([os.path.dirname(r.path) for r in group])
        series_rows.append(row)

    mask_rows: list[dict[str, Any]] = []
    by_series: dict[str, list[HeaderRecord]] = {}
    for record in sorted(mask_records, key=lambda r: (r.Modality, r.SOPInstanceUID, r.path)):
        matched = [uid for uid in record.referenced_series if uid in images]
        mask_rows.append(
            {
                "mask_source": record.Modality,
                "mask_path": record.path,
                "SOPInstanceUID": record.SOPInstanceUID,
                "referenced_SeriesInstanceUID": record.referenced_series[0] if record.referenced_series else "",
                "SeriesInstanceUID": matched[0] if matched else "",
                "n_segments": len(record.segment_numbers),
                "matched": bool(matched),
                "used": False,
                "reason": "" if matched else (
                    "references a series not in the tree" if record.referenced_series else "no referenced series"
                ),
            }
        )
        if matched:
            by_series.setdefault(matched[0], []).append(record)

    wanted = {m.upper() for m in modalities}
    case_rows: list[dict[str, Any]] = []
    for uid, masks in sorted(by_series.items()):
        group = images[uid]
        first = group[0]
        order = [kind for kind in mask_preference if any(m.Modality == kind for m in masks)]
        if first.Modality not in wanted:
            for row in mask_rows:
                if row["SeriesInstanceUID"] == uid:
                    row["reason"] = f"series modality {first.Modality} not in {sorted(wanted)}"
            continue
        chosen = order[0] if order else None
        for row in mask_rows:
            if row["SeriesInstanceUID"] != uid:
                continue
            if row["mask_source"] == chosen:
                row["used"] = True
            else:
                row["reason"] = f"series also has {chosen}, preferred"
        report = reports[uid]
        for mask in masks:
            if mask.Modality != chosen:
                continue
            if not mask.segment_numbers:
                for row in mask_rows:
                    if row["mask_path"] == mask.path:
                        row["used"], row["reason"] = False, "no segments/contours"
                continue
            for segment in mask.segment_numbers:
                case_rows.append(
                    {
                        "case_id": make_case_id(uid, mask.SOPInstanceUID, segment),
                        "series_folder": os.path.commonpath([os.path.dirname(r.path) for r in group]),
                        "mask_path": mask.path,
                        "SeriesInstanceUID": uid,
                        "StudyInstanceUID": first.StudyInstanceUID,
                        "Modality": first.Modality,
                        "Manufacturer": first.Manufacturer,
                        "StudyDate": first.StudyDate,
                        "pseudo_patient_id": pseudonyms.get(first.PatientID, ""),
                        "pseudo_patient_id_scope": scope,
                        "mask_source": mask.Modality,
                        "segment_number": int(segment),
                        "series_valid": report.valid,
                        "series_flags": list(report.flags),
                    }
                )
    case_columns = [
        "case_id", "series_folder", "mask_path", "SeriesInstanceUID", "StudyInstanceUID", "Modality",
        "Manufacturer", "StudyDate", "pseudo_patient_id", "pseudo_patient_id_scope", "mask_source",
        "segment_number", "series_valid", "series_flags",
    ]
    cases = pd.DataFrame(case_rows, columns=case_columns)
    if not cases.empty:
        cases = cases.sort_values("case_id").reset_index(drop=True)
    series = pd.DataFrame(series_rows)
    if not series.empty:
        counts = cases.groupby("SeriesInstanceUID").size() if not cases.empty else pd.Series(dtype=int)
        series["n_cases"] = series["SeriesInstanceUID"].map(counts).fillna(0).astype(int)
    return TreeScan(
        series=series,
        masks=pd.DataFrame(mask_rows),
        cases=cases,
        n_files=len(paths),
        n_not_dicom=n_not_dicom,
        n_unreadable=len(problems) - n_not_dicom,
    )


def find_cases(
    dicom_root: str | os.PathLike[str],
    *,
    modalities: Sequence[str] = ("CT", "MR"),
    mask_preference: Sequence[str] = ("SEG", "RTSTRUCT"),
    key_file: str | os.PathLike[str] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Discover cases in a DICOM tree: one per segment/ROI of each SEG or RTSTRUCT on an image series.

    Parameters
    ----------
    dicom_root
        Any DICOM tree (normally the de-identified output); files are grouped by header.
    modalities, mask_preference, key_file, workers, scheduler, progress
        See :func:`scan_tree`.

    Returns
    -------
    pandas.DataFrame
        ``case_id`` (short hash of the series UID and of the mask instance + segment number),
        ``series_folder``, ``mask_path`` (inputs for :func:`preprocess_cases`; do not print them,
        source folder names can identify), ``SeriesInstanceUID``, ``StudyInstanceUID``,
        ``Modality``, ``Manufacturer``, ``StudyDate``, ``pseudo_patient_id``,
        ``pseudo_patient_id_scope`` (``deid``/``key``/``run``), ``mask_source``,
        ``segment_number``, ``series_valid``, ``series_flags``.
    """
    return scan_tree(
        dicom_root, modalities=modalities, mask_preference=mask_preference, key_file=key_file,
        workers=workers, scheduler=scheduler, progress=progress,
    ).cases


# =================================================================================================
# The cached, parallel run
# =================================================================================================

_PROVENANCE = (
    "SeriesInstanceUID", "StudyInstanceUID", "Modality", "Manufacturer", "StudyDate",
    "pseudo_patient_id", "mask_source", "segment_number",
)


@dataclass(frozen=True)
class CaseTask:
    """One case for the worker (picklable)."""

    case_id: str
    series_folder: str
    mask_path: str
    series_uid: str | None
    segment: int | None
    params: dict[str, Any]
    volumes_dir: str
    provenance: dict[str, Any]


def _file_digest(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _stat_key(path: str) -> str:
    """Path, size and modification time, hashed: source paths can hold names, so only this is stored."""
    info = os.stat(path)
    return hashlib.sha256(f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:32]


def _digests(paths: Sequence[str], known: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Content digests of ``paths``, reusing ``known`` ones for files whose path/size/mtime are unchanged."""
    digests, memo = [], {}
    for path in paths:
        key = _stat_key(path)
        digest = known.get(key) or _file_digest(path)
        memo[key] = digest
        digests.append(digest)
    return digests, memo


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _atomic_write_image(image: sitk.Image, target: Path) -> None:
    # The temporary name keeps the .nii.gz suffix so SimpleITK picks the NIfTI writer.
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    sitk.WriteImage(image, str(tmp), useCompression=True)
    os.replace(tmp, target)


def _remove_outputs(volumes: Path, case_id: str) -> None:
    for suffix in ("_image.nii.gz", "_mask.nii.gz"):
        (volumes / f"{case_id}{suffix}").unlink(missing_ok=True)


def _base_record(task: CaseTask, *, only_given: bool = False) -> dict[str, Any]:
    """``case_id`` and the provenance the caller gave (``only_given``: skip the ones it left empty)."""
    record: dict[str, Any] = {"case_id": task.case_id}
    for name in _PROVENANCE:
        value = task.provenance.get(name)
        if value is not None or not only_given:
            record[name] = value
    return record


_INTERNAL_KEYS = ("file_digests", "input_fingerprint", "series_digests", "mask_digest", "cache_modality")


def process_case(task: CaseTask) -> dict[str, Any]:
    """Worker: preprocess one case, or reuse its cached result. Never raises.

    The cache key hashes the content of the series' files and of the mask file, the parameters
    that affect the case (:meth:`PreprocessParams.effective`) and the pipeline version. A rerun
    first compares path/size/modification time of every file in the series folder with the
    last run; only when something changed are headers read and contents hashed again.

    Returns a record for ``preprocess.parquet`` with ``status`` ``ok``, ``excluded`` (the
    series or mask cannot be used; ``reason`` says why) or ``error`` (unexpected failure, not
    cached so a rerun retries it).
    """
    started = time.perf_counter()
    record = _base_record(task)
    volumes = Path(task.volumes_dir)
    image_path = volumes / f"{task.case_id}_image.nii.gz"
    mask_path = volumes / f"{task.case_id}_mask.nii.gz"
    sidecar = volumes / f"{task.case_id}.json"
    try:
        params = PreprocessParams.coerce(task.params)
        missing = [
            what
            for what, path in (("series folder", task.series_folder), ("mask file", task.mask_path))
            if not os.path.exists(path)
        ]
        if missing:
            record.update(
                status="excluded", stage="input", reason=f"{' and '.join(missing)} not found", cached=False,
                elapsed_s=round(time.perf_counter() - started, 3),
            )
            return record
        cached: dict[str, Any] = {}
        if sidecar.is_file():
            try:
                cached = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cached = {}
        stat_keys = sorted(_stat_key(p) for p in list_files(task.series_folder))
        fingerprint = hashlib.sha256(
            json.dumps([stat_keys, _stat_key(task.mask_path), task.series_uid]).encode()
        ).hexdigest()
        records: list[HeaderRecord] | None = None
        unreadable: list[str] = []
        if cached.get("input_fingerprint") == fingerprint and "series_digests" in cached:
            # Nothing in the folder or the mask file changed since the last run: reuse its digests.
            digests, mask_digest = list(cached["series_digests"]), str(cached["mask_digest"])
            modality = str(cached.get("cache_modality", ""))
            memo = dict(cached.get("file_digests", {}))
        else:
            records = collect_headers(task.series_folder, task.series_uid, skipped=unreadable)
            modality = records[0].Modality if records else ""
            digest_list, memo = _digests([r.path for r in records] + [task.mask_path], cached.get("file_digests", {}))
            digests, mask_digest = sorted(digest_list[:-1]), digest_list[-1]
        effective = params.effective(modality)
        key_material = {
            "version": PIPELINE_VERSION,
            "case_id": task.case_id,
            "series_uid": task.series_uid,
            "segment": task.segment,
            "series_files": digests,
            "mask_file": mask_digest,
            "params": effective,
        }
        cache_key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()
        outputs_ok = cached.get("status") != "ok" or (image_path.is_file() and mask_path.is_file())
        if cached.get("cache_key") == cache_key and outputs_ok:
            for key in _INTERNAL_KEYS:
                cached.pop(key, None)
            cached.update(_base_record(task, only_given=True))
            cached["cached"] = True
            cached["elapsed_s"] = round(time.perf_counter() - started, 3)
            return cached
        if records is None:
            records = collect_headers(task.series_folder, task.series_uid, skipped=unreadable)
        record.update(cache_key=cache_key, input_sha256=hashlib.sha256("".join(digests).encode()).hexdigest())
        record["parameters"] = json.dumps(effective, sort_keys=True)
        record.update(_run_case(task, records, params, modality, image_path, mask_path))
        if unreadable:
            # Files that could not be read at all are not part of the volume; a gap check may also catch them.
            record["warnings"] = [*record.get("warnings", []), f"{len(unreadable)} unreadable file(s) in the folder"]
            record["flags"] = [*record.get("flags", []), "unreadable_files"]
        if record["status"] != "ok":
            _remove_outputs(volumes, task.case_id)
        record["cached"] = False
        record["elapsed_s"] = round(time.perf_counter() - started, 3)
        stored = {
            **record,
            "file_digests": memo,
            "input_fingerprint": fingerprint,
            "series_digests": digests,
            "mask_digest": mask_digest,
            "cache_modality": modality,
        }
        _atomic_write_bytes(sidecar, json.dumps(stored, sort_keys=True, default=str).encode())
        return record
    except Exception as exc:
        record.update(
            status="error",
            stage="run",
            reason=f"{type(exc).__name__}: {scrub_paths(str(exc))[:300]}",
            cached=False,
            elapsed_s=round(time.perf_counter() - started, 3),
        )
        return record


def _run_case(
    task: CaseTask,
    records: list[HeaderRecord],
    params: PreprocessParams,
    modality: str,
    image_path: Path,
    mask_path: Path,
) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "ok", "stage": "", "reason": ""}
    warnings: list[str] = []
    flags: list[str] = []
    try:
        image, report = volume_from_headers(
            records,
            correct_tilt=params.correct_tilt,
            spacing_tolerance=params.spacing_tolerance,
            min_slices=params.min_slices,
        )
    except SeriesError as exc:
        if exc.report is not None:
            out.update(_series_columns(exc.report))
            out.update(_derived_provenance(task, exc.report))
        out.update(status="excluded", stage="series", reason=exc.reason)
        return out
    out.update(_series_columns(report))
    out.update(_derived_provenance(task, report))
    warnings.extend(report.warnings)
    flags.extend(report.flags)
    try:
        mask, mask_report = read_mask(task.mask_path, image, segment=task.segment)
        if task.provenance.get("mask_source") is None:
            out["mask_source"] = mask_report.mask_source
        warnings.extend(mask_report.warnings)
        flags.extend(f for f in mask_report.flags if f not in flags)
        out["mask_voxels_source"] = mask_report.n_voxels
        processed, processed_mask, info = preprocess_image(image, mask, params, modality=modality)
    except MaskError as exc:
        if exc.report is not None:
            warnings.extend(exc.report.warnings)
            flags.extend(f for f in exc.report.flags if f not in flags)
        out.update(status="excluded", stage="mask", reason=exc.reason, warnings=warnings, flags=flags)
        return out
    warnings.extend(info["warnings"])
    _atomic_write_image(processed, image_path)
    _atomic_write_image(processed_mask, mask_path)
    grid = grid_of(processed)
    out.update(
        {
            "out_size_x": grid["size"][0], "out_size_y": grid["size"][1], "out_size_z": grid["size"][2],
            "out_spacing_x": grid["spacing"][0], "out_spacing_y": grid["spacing"][1],
            "out_spacing_z": grid["spacing"][2],
            "out_origin": grid["origin"], "out_direction": grid["direction"],
            "mask_voxels_in": info["mask_voxels_in"], "mask_voxels_out": info["mask_voxels_out"],
            "mask_volume_mm3": info["mask_volume_mm3"],
            "steps": json.dumps(info["steps"]),
            "sample_before": info["sample_before"], "sample_after": info["sample_after"],
            "image": str(image_path.resolve()), "mask": str(mask_path.resolve()),
            "warnings": warnings, "flags": flags,
        }
    )
    return out


def _derived_provenance(task: CaseTask, report: SeriesReport) -> dict[str, Any]:
    """Provenance the caller did not give, from the headers (never identifying attributes)."""
    return {
        name: getattr(report, name) or None
        for name in ("SeriesInstanceUID", "StudyInstanceUID", "Modality", "Manufacturer")
        if task.provenance.get(name) is None
    }


def _series_columns(report: SeriesReport) -> dict[str, Any]:
    """Input-geometry columns of a series report (prefixed ``in_``) and its checks."""
    return {
        "in_size_x": report.size[0] if report.size else None,
        "in_size_y": report.size[1] if report.size else None,
        "in_size_z": report.size[2] if report.size else None,
        "in_spacing_x": report.spacing[0] if report.spacing else None,
        "in_spacing_y": report.spacing[1] if report.spacing else None,
        "in_spacing_z": report.spacing[2] if report.spacing else None,
        "in_origin": list(report.origin) if report.origin else None,
        "in_direction": list(report.direction) if report.direction else None,
        "SliceThickness": report.SliceThickness,
        "slice_spacing_mm": report.slice_spacing_mm,
        "n_files": report.n_files,
        "n_slices": report.n_slices,
        "n_localizers": report.n_localizers,
        "n_duplicates": report.n_duplicates,
        "n_missing": report.n_missing,
        "gantry_tilt_deg": report.gantry_tilt_deg,
        "oblique": report.oblique,
        "flags": list(report.flags),
        "warnings": list(report.warnings),
    }


_RESULT_COLUMNS = [
    "case_id", "status", "stage", "reason", "cached", *_PROVENANCE,
    "in_size_x", "in_size_y", "in_size_z", "in_spacing_x", "in_spacing_y", "in_spacing_z", "in_origin",
    "in_direction", "SliceThickness", "slice_spacing_mm", "n_files", "n_slices", "n_localizers",
    "n_duplicates", "n_missing", "gantry_tilt_deg", "oblique",
    "out_size_x", "out_size_y", "out_size_z", "out_spacing_x", "out_spacing_y", "out_spacing_z", "out_origin",
    "out_direction", "mask_voxels_source", "mask_voxels_in", "mask_voxels_out", "mask_volume_mm3",
    "flags", "warnings", "steps", "parameters", "cache_key", "input_sha256", "image", "mask",
    "sample_before", "sample_after", "elapsed_s",
]
CASES_COLUMNS = [
    "case_id", "image", "mask", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "mask_source",
    "segment_number", "pseudo_patient_id", "StudyDate", "Manufacturer",
]


def _cases_frame(cases: pd.DataFrame | Sequence[Sequence[Any]]) -> pd.DataFrame:
    if isinstance(cases, pd.DataFrame):
        frame = cases.copy()
    else:
        rows = [list(c) for c in cases]
        if any(len(r) != 3 for r in rows):
            raise ValueError("cases must be (case_id, series_folder, mask_path) tuples or a DataFrame")
        frame = pd.DataFrame(rows, columns=["case_id", "series_folder", "mask_path"])
    missing = {"case_id", "series_folder", "mask_path"} - set(frame.columns)
    if missing:
        raise ValueError(f"cases table lacks column(s): {', '.join(sorted(missing))}")
    frame["case_id"] = frame["case_id"].astype(str)
    duplicated = frame["case_id"][frame["case_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"case_id values must be unique; repeated: {duplicated[:5]}")
    return frame.reset_index(drop=True)


def _value(row: pd.Series, name: str) -> Any:
    value = row.get(name)
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value


def _write_parquet(frame: pd.DataFrame, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, target)


def preprocess_cases(
    cases: pd.DataFrame | Sequence[Sequence[Any]],
    out_dir: str | os.PathLike[str],
    params: PreprocessParams | dict[str, Any] | None = None,
    *,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Preprocess every case; cached, parallel and resumable.

    Parameters
    ----------
    cases
        ``(case_id, series_folder, mask_path)`` tuples, or a DataFrame with those columns and
        optionally ``SeriesInstanceUID`` (to pick the series in a shared folder), ``segment_number``
        and provenance columns (``StudyInstanceUID``, ``Modality``, ``Manufacturer``, ``StudyDate``,
        ``pseudo_patient_id``, ``mask_source``) -- the output of :func:`find_cases`. ``case_id`` must be
        a pseudonymous key (letters, digits, ``._-``): it names the output files.
    out_dir
        Receives ``volumes/<case_id>_image.nii.gz``, ``volumes/<case_id>_mask.nii.gz`` (plus a
        ``<case_id>.json`` cache record), ``preprocess.parquet``, ``cases.parquet`` and ``cases.csv``.
    params
        :class:`PreprocessParams` or a dict of its fields.
    workers, scheduler, progress
        See :func:`pacs_workbench.core.executor.map_items`.

    Returns
    -------
    pandas.DataFrame
        The ``preprocess.parquet`` table: one row per case with ``status`` (``ok``, ``excluded``,
        ``error``), ``stage``/``reason``, ``cached``, input and output geometry (``in_*``, ``out_*``),
        mask voxel counts, ``flags``, ``warnings``, ``steps`` and ``parameters`` (JSON), and
        ``image``/``mask`` paths. Cases are cached by a hash of their input files and of the
        parameters that affect them; a rerun with the same inputs and parameters does nothing.
    """
    p = PreprocessParams.coerce(params)
    frame = _cases_frame(cases)
    out = Path(out_dir)
    volumes = out / "volumes"
    volumes.mkdir(parents=True, exist_ok=True)
    tasks: list[CaseTask] = []
    bad: list[dict[str, Any]] = []
    for _, row in frame.iterrows():
        case_id = str(row["case_id"])
        provenance = {name: _value(row, name) for name in _PROVENANCE}
        segment = _value(row, "segment_number")
        task = CaseTask(
            case_id=case_id,
            series_folder=str(row["series_folder"]),
            mask_path=str(row["mask_path"]) if _value(row, "mask_path") else "",
            series_uid=_value(row, "SeriesInstanceUID") or None,
            segment=int(segment) if segment is not None else None,
            params=p.to_dict(),
            volumes_dir=str(volumes),
            provenance=provenance,
        )
        if not _CASE_ID_RE.match(case_id):
            record = _base_record(task)
            record.update(status="error", stage="input", reason="case_id must be letters, digits, '.', '_' or '-'")
            bad.append(record)
            continue
        if not task.mask_path:
            record = _base_record(task)
            record.update(status="excluded", stage="mask", reason="no mask file for the case")
            bad.append(record)
            continue
        tasks.append(task)
    records = list(
        map_items(
            process_case, tasks, workers=workers, scheduler=scheduler,
            desc="preprocess cases", total=len(tasks), progress=progress,
        )
    )
    records.extend(bad)
    result = pd.DataFrame(records)
    for column in _RESULT_COLUMNS:
        if column not in result.columns:
            result[column] = None
    result = result[_RESULT_COLUMNS].sort_values("case_id").reset_index(drop=True)
    for column in ("flags", "warnings"):
        result[column] = result[column].map(lambda v: list(v) if isinstance(v, list | tuple | np.ndarray) else [])
    result["cached"] = result["cached"].fillna(False).astype(bool)
    _write_parquet(result, out / "preprocess.parquet")
    ok = result[result["status"] == "ok"]
    cases_table = ok[[c for c in CASES_COLUMNS if c in ok.columns]].reset_index(drop=True)
    _write_parquet(cases_table, out / "cases.parquet")
    tmp = out / f".cases.csv.{os.getpid()}.tmp"
    cases_table.to_csv(tmp, index=False)
    os.replace(tmp, out / "cases.csv")
    return result


# =================================================================================================
# Report helpers (tables for the QC notebook; no UIDs, paths or header free text)
# =================================================================================================


def series_table(scan: TreeScan) -> pd.DataFrame:
    """Per-series geometry table with flagged problems, keyed by ``series_key`` (no UIDs or paths)."""
    if scan.series.empty:
        return pd.DataFrame()
    frame = scan.series

    def triple(prefix: str, digits: int) -> pd.Series:
        values = frame[[f"{prefix}_x", f"{prefix}_y", f"{prefix}_z"]]
        return values.apply(
            lambda row: "" if row.isna().any() else " x ".join(f"{v:.{digits}f}" for v in row), axis=1
        )

    table = pd.DataFrame(
        {
            "series_key": frame["series_key"],
            "Modality": frame["Modality"],
            "Manufacturer": frame["Manufacturer"],
            "n_files": frame["n_files"],
            "n_slices": frame["n_slices"],
            "size": triple("size", 0),
            "spacing_mm": triple("spacing", 3),
            "SliceThickness": frame["SliceThickness"],
            "gantry_tilt_deg": frame["gantry_tilt_deg"],
            "n_cases": frame["n_cases"] if "n_cases" in frame.columns else 0,
            "valid": frame["valid"],
            "flags": frame["flags"].map(lambda v: ", ".join(v) if len(v) else ""),
            "reason": frame["reason"],
        }
    )
    return table.sort_values(["valid", "Modality", "series_key"]).reset_index(drop=True)


def exclusions_table(result: pd.DataFrame) -> pd.DataFrame:
    """Cases not preprocessed, with stage and reason."""
    columns = ["case_id", "status", "stage", "reason", "mask_source", "Manufacturer"]
    return result.loc[result["status"] != "ok", columns].reset_index(drop=True)


def spacing_summary(result: pd.DataFrame) -> pd.DataFrame:
    """Spacing and slice thickness before/after, summarized per manufacturer (ok cases)."""
    ok = result[result["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(Manufacturer=ok["Manufacturer"].fillna("unknown"))
    columns = [
        "in_spacing_x", "in_spacing_z", "SliceThickness", "out_spacing_x", "out_spacing_z", "mask_volume_mm3",
    ]
    return ok.groupby("Manufacturer")[columns].median().round(3).assign(n_cases=ok.groupby("Manufacturer").size())


# Flags that describe a series without questioning it.
_INFORMATIVE_FLAGS = frozenset({"oblique"})


def _problems(flags: Any) -> list[str]:
    return [f for f in (flags if isinstance(flags, list | tuple | np.ndarray) else []) if f not in _INFORMATIVE_FLAGS]


def flagged_cases(result: pd.DataFrame) -> list[str]:
    """Case ids of preprocessed cases whose series or mask raised a problem flag or warning."""
    ok = result[result["status"] == "ok"]
    flagged = ok[(ok["flags"].map(lambda v: len(_problems(v))) > 0) | (ok["warnings"].map(len) > 0)]
    return sorted(flagged["case_id"].tolist())


def flag_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How many rows (series or cases) carry each flag."""
    counts: dict[str, int] = {}
    for flags in frame.get("flags", pd.Series(dtype=object)):
        items = flags.split(", ") if isinstance(flags, str) else list(flags if flags is not None else [])
        for flag in items:
            if flag:
                counts[flag] = counts.get(flag, 0) + 1
    ordered: list[tuple[str, int]] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame(ordered, columns=["flag", "count"])


def mask_summary(scan: TreeScan) -> pd.DataFrame:
    """SEG/RTSTRUCT instances by kind and what became of them (no paths or UIDs)."""
    if scan.masks.empty:
        return pd.DataFrame(columns=["mask_source", "matched", "used", "reason", "instances", "segments"])
    return (
        scan.masks.groupby(["mask_source", "matched", "used", "reason"], dropna=False)
        .agg(instances=("mask_source", "size"), segments=("n_segments", "sum"))
        .reset_index()
    )


def run_summary(result: pd.DataFrame) -> pd.DataFrame:
    """Cases by status, and how many were reused from the cache."""
    if result.empty:
        return pd.DataFrame(columns=["status", "cases", "from_cache"])
    return (
        result.groupby("status")
        .agg(cases=("case_id", "size"), from_cache=("cached", "sum"))
        .reset_index()
    )


def case_labels(result: pd.DataFrame) -> dict[str, str]:
    """Short text per case for figure titles: its problem flags."""
    return {str(r.case_id): ", ".join(_problems(r.flags)) for r in result.itertuples()}


def montage_inputs(result: pd.DataFrame, case_ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(case_id, image, mask)`` for :func:`pacs_workbench.plots.plot_mask_montage`."""
    rows = result.set_index("case_id")
    return [(c, str(rows.at[c, "image"]), str(rows.at[c, "mask"])) for c in case_ids if c in rows.index]


def cases_preview(out_dir: str | os.PathLike[str], n: int = 5) -> pd.DataFrame:
    """The first rows of ``cases.csv`` without paths or UIDs (what the features stage will read)."""
    table = pd.read_csv(Path(out_dir) / "cases.csv")
    keep = ["case_id", "pseudo_patient_id", "Modality", "Manufacturer", "mask_source", "segment_number"]
    return table[[c for c in keep if c in table.columns]].head(n)


def montage_cases(result: pd.DataFrame, max_cases: int = 12, seed: int = 0) -> list[str]:
    """A random sample of ``max_cases`` preprocessed cases plus every flagged one."""
    ok = result[result["status"] == "ok"]["case_id"].tolist()
    flagged = flagged_cases(result)
    rest = sorted(set(ok) - set(flagged))
    rng = np.random.default_rng(seed)
    sample = sorted(rng.choice(rest, size=min(max_cases, len(rest)), replace=False).tolist()) if rest else []
    return flagged + sample


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A notebook path parameter made absolute.

    Relative paths resolve against the working directory when their first folder exists there
    (a papermill run starts in the run's base folder), otherwise against the repository root
    (JupyterLab starts notebooks in ``notebooks/``).
    """
    from pacs_workbench.core.params import REPO_ROOT

    candidate = Path(path)
    if candidate.is_absolute():
        return candidate
    if candidate.parts and (Path.cwd() / candidate.parts[0]).exists():
        return (Path.cwd() / candidate).resolve()
    return REPO_ROOT / candidate

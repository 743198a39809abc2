"""Masks onto the image grid: DICOM SEG, RTSTRUCT or a label map, with a report of what was done.

The mask's kind comes from the file's content (:func:`detect_mask_source`). SEG frames are read
with highdicom, RTSTRUCT closed planar contours are rasterized on voxel centres with the
even-odd rule (an inner contour is a hole), label maps are read with SimpleITK. A mask on
another lattice is resampled by nearest neighbour and flagged; a mask in another frame of
reference, empty or off the image raises :class:`MaskError`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from pacs_workbench.dicom import read as dicomio
from pacs_workbench.preprocess.grid import same_grid
from pacs_workbench.preprocess.headers import scrub_paths
from pacs_workbench.preprocess.series import META_FRAME_OF_REFERENCE_UID, META_SERIES_UID, meta_value

MASK_SOURCES = ("SEG", "RTSTRUCT", "labelmap")


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


def _check_reference(report: MaskReport, image: sitk.Image, referenced: Sequence[str], frame_uid: str) -> None:
    """Compare the series/frame of reference a DICOM mask points to with the image's."""
    report.referenced_series = list(referenced)
    image_series = meta_value(image, META_SERIES_UID)
    image_frame = meta_value(image, META_FRAME_OF_REFERENCE_UID)
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


def _fill_contours(
    contours: list[Any], image: sitk.Image, report: MaskReport, skipped_types: dict[str, int]
) -> tuple[np.ndarray, int]:
    """One ROI's closed planar contours rasterized on ``image``'s voxel centres (z, y, x array).

    Returns the ROI mask and how many contours were not parallel to the slices. Contours of
    other kinds are counted in ``skipped_types``, those off the image in the report.
    """
    from matplotlib.path import Path as PolygonPath

    nx, ny, nz = image.GetSize()
    matrix, origin = _image_affine(image)
    inverse = np.linalg.inv(matrix)
    roi = np.zeros((nz, ny, nx), dtype=bool)
    off_plane = 0
    for contour in contours:
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
    return roi, off_plane


def _rtstruct_mask(path: str, image: sitk.Image, segment: int | None, report: MaskReport) -> sitk.Image:
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

    mask = np.zeros(image.GetSize()[::-1], dtype=bool)
    skipped_types: dict[str, int] = {}
    off_plane = 0
    for number in chosen:
        roi, off = _fill_contours(contours[number], image, report, skipped_types)
        off_plane += off
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
        The image whose grid the mask must be on (from
        :func:`~pacs_workbench.preprocess.series.load_series` or any SimpleITK image).
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
        Target grid. When it came from :func:`~pacs_workbench.preprocess.series.load_series`, the
        mask's referenced series and frame of reference are checked against it.
    segment
        Which segment/ROI/label; all combined when ``None``.

    Raises
    ------
    MaskError
        Empty mask, no overlap with the image, or another frame of reference.
    """
    mask, _ = read_mask(path, image, segment=segment)
    return mask

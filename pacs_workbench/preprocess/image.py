"""The per-image pipeline: :class:`PreprocessParams` and :func:`preprocess_image`.

Steps, each recorded in ``info["steps"]``: N4 bias field, normalization statistics (both on
the whole native image), crop to what the output grid needs, denoise, resample image and mask
(IBSI grid alignment, :mod:`pacs_workbench.preprocess.grid`), round CT to whole HU,
re-segmentation range, HU clipping, normalization.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from pacs_workbench.preprocess.grid import Grid, grid_of, physical_bounds, same_grid, target_grid
from pacs_workbench.preprocess.masks import MaskError
from pacs_workbench.preprocess.series import META_MODALITY, meta_value

# Voxels kept per image for the before/after intensity histograms.
_SAMPLE_SIZE = 2048
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
        Voxels the statistics come from: ``body`` (the body or brain: Otsu foreground, its largest
        connected component with holes filled, so dark tissue inside the head such as fluid and
        the lesion's necrosis counts and air and noise do not; the region for MR z-scores),
        ``foreground`` (Otsu voxels alone), ``image`` or ``mask``; always the whole native image,
        so they do not depend on the crop.
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
            "normalization_region": ("body", "foreground", "image", "mask"),
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


def body_mask(image: sitk.Image) -> np.ndarray:
    """The body (for a head: the brain and skull) as a boolean ``(z, y, x)`` array.

    Otsu's threshold separates tissue from air and noise; the largest connected component drops
    isolated noise voxels and the holes, filled in 3-D and slice by slice, give back the dark
    tissue inside (cerebrospinal fluid, necrosis, cortical bone), so a z-score over it describes
    the patient, not how much air the field of view held.
    """
    from scipy import ndimage

    foreground = sitk.GetArrayFromImage(sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1, 200)) > 0
    labels, count = ndimage.label(foreground)
    if count == 0:
        return foreground
    sizes = np.bincount(labels.ravel())[1:]
    body = labels == (int(np.argmax(sizes)) + 1)
    body = ndimage.binary_fill_holes(body)
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return np.asarray(body, dtype=bool)


def _normalization_stats(
    image: sitk.Image, mask: sitk.Image, params: PreprocessParams
) -> tuple[float, float, dict[str, Any]]:
    """Offset and scale with ``normalized = (value - offset) / scale``."""
    values = sitk.GetArrayViewFromImage(image)
    if params.normalization_region == "mask":
        region = sitk.GetArrayViewFromImage(mask) > 0
    elif params.normalization_region == "body":
        region = body_mask(image)
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


def _checked_inputs(image: sitk.Image, mask: sitk.Image, p: PreprocessParams) -> tuple[sitk.Image, sitk.Image, int]:
    """Float32 image, 0/1 UInt8 mask on its grid, and the mask's voxel count."""
    if not same_grid(image, mask):
        raise MaskError("mask is not on the image grid")
    image = sitk.Cast(image, sitk.sitkFloat32)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask_in = int(sitk.GetArrayViewFromImage(mask).sum())
    if mask_in < p.min_mask_voxels:
        raise MaskError(f"mask has {mask_in} voxel(s); at least {p.min_mask_voxels} needed")
    return image, mask, mask_in


def _output_grid(image: sitk.Image, mask: sitk.Image, p: PreprocessParams) -> tuple[Grid, Grid]:
    """The output grid (cropped to the mask plus margin when asked) and the whole target grid."""
    full_grid = target_grid(image, p.target_spacing_mm, p.grid_alignment)
    if p.crop_margin_mm is None:
        return full_grid, full_grid
    lo, hi = _crop_box(full_grid, mask, p.crop_margin_mm)
    return full_grid.sub(lo, hi), full_grid


def _denoise(region: sitk.Image, p: PreprocessParams, steps: list[dict[str, Any]]) -> sitk.Image:
    if p.denoise == "curvature_flow":
        steps.append({"step": "denoise", "method": "curvature_flow", "iterations": p.denoise_iterations})
        return sitk.CurvatureFlow(region, timeStep=0.0625, numberOfIterations=p.denoise_iterations)
    if p.denoise == "median":
        steps.append({"step": "denoise", "method": "median", "radius": p.denoise_radius})
        return sitk.Median(region, [p.denoise_radius] * 3)
    return region


def _resample(
    region: sitk.Image, mask: sitk.Image, grid: Grid, p: PreprocessParams, *, resampled: bool
) -> tuple[sitk.Image, sitk.Image]:
    """Image and mask on ``grid``: interpolated when resampling, copied voxel by voxel otherwise."""
    fill = float(sitk.GetArrayViewFromImage(region).min())
    if not resampled:
        # Same lattice: copy voxels exactly (no interpolation).
        out_image = grid.resample(region, sitk.sitkNearestNeighbor, fill, sitk.sitkFloat32)
        return out_image, grid.resample(mask, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out_image = grid.resample(region, _INTERPOLATORS[p.interpolator], fill, sitk.sitkFloat32)
    if p.mask_interpolator == "linear":
        fraction = grid.resample(sitk.Cast(mask, sitk.sitkFloat32), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return out_image, sitk.Cast(fraction >= p.mask_threshold, sitk.sitkUInt8)
    return out_image, grid.resample(mask, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _resample_step(image: sitk.Image, grid: Grid, full_grid: Grid, p: PreprocessParams) -> dict[str, Any]:
    return {
        "step": "resample",
        "from_spacing": list(image.GetSpacing()),
        "to_spacing": list(grid.spacing),
        "full_size": list(full_grid.size),
        "alignment": p.grid_alignment,
        "interpolator": p.interpolator,
        "mask_interpolator": p.mask_interpolator,
        **({"mask_threshold": p.mask_threshold} if p.mask_interpolator == "linear" else {}),
    }


def _intensity_steps(
    array: np.ndarray,
    mask_array: np.ndarray,
    p: PreprocessParams,
    *,
    modality: str,
    resampled: bool,
    norm: tuple[float, float, dict[str, Any]] | None,
    steps: list[dict[str, Any]],
) -> tuple[np.ndarray, np.ndarray]:
    """CT rounding, re-segmentation, HU clipping and normalization, on the output grid."""
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
    return array, mask_array


def _on_grid_of(reference: sitk.Image, *arrays: np.ndarray) -> list[sitk.Image]:
    """Images of ``arrays`` (z, y, x) with the grid of ``reference``."""
    images = []
    for array in arrays:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(reference)
        images.append(image)
    return images


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
    modality = (modality or meta_value(image, META_MODALITY) or "").upper()
    steps: list[dict[str, Any]] = []
    warnings: list[str] = []
    image, mask, mask_in = _checked_inputs(image, mask, p)
    steps.append({"step": "load", "modality": modality, **grid_of(image), "mask_voxels": mask_in})
    if p.bias_field == "n4" and modality in p.bias_field_modalities:
        image, info = _n4(image, p)
        steps.append(info)
    norm: tuple[float, float, dict[str, Any]] | None = None
    if p.normalization != "none" and modality in p.normalize_modalities:
        norm = _normalization_stats(image, mask, p)

    grid, full_grid = _output_grid(image, mask, p)
    resampled = p.target_spacing_mm is not None and Grid.of(image) != full_grid
    pad = 8 + (p.denoise_iterations if p.denoise == "curvature_flow" else p.denoise_radius)
    region = _denoise(_native_cover(image, grid, pad), p, steps)
    before = _sample(sitk.GetArrayFromImage(_native_cover(image, grid, 0)))
    out_image, out_mask = _resample(region, mask, grid, p, resampled=resampled)
    if resampled:
        steps.append(_resample_step(image, grid, full_grid, p))
    if p.crop_margin_mm is not None:
        steps.append(
            {"step": "crop", "margin_mm": p.crop_margin_mm, "size": list(grid.size), "full_size": list(full_grid.size)}
        )
    array, mask_array = _intensity_steps(
        sitk.GetArrayFromImage(out_image), sitk.GetArrayFromImage(out_mask).astype(bool), p,
        modality=modality, resampled=resampled, norm=norm, steps=steps,
    )

    mask_out = int(mask_array.sum())
    if mask_out < p.min_mask_voxels:
        raise MaskError(f"mask has {mask_out} voxel(s) after resampling/re-segmentation")
    result, result_mask = _on_grid_of(out_image, array.astype(np.float32), mask_array.astype(np.uint8))
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

"""Sampling grids: the resampling grid of an image (IBSI centre or pyradiomics corner alignment).

IBSI grid alignment (``center``): the resampled grid keeps the centre of the original grid
and has ``ceil(n * s / s')`` voxels along each axis (IBSI 1, section 2.4); ``corner``
reproduces pyradiomics, which aligns the corner of the origin voxel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk


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

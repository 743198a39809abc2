"""Pixels of enhanced multi-frame images (Enhanced CT, Enhanced MR, Legacy Converted Enhanced) as volumes.

The header checks (:func:`~pacs_workbench.preprocess.checks.inspect_headers`) see each frame as
a slice, so missing frames, uneven spacing and mixed orientations are found by the same rules as
for classic series, and they order the frames by their (0020,9113) Plane Position Sequence. The
pixels are read with highdicom: a whole single-stack image through ``highdicom.Image.get_volume``,
which applies the (0028,9145) Pixel Value Transformation Sequence (shared or per frame).
"""

from __future__ import annotations

import numpy as np

from pacs_workbench.preprocess.checks import SlicePlan

# Frame origins closer than this (mm) and direction cosines closer than this are the same geometry.
_POSITION_TOL_MM = 1e-3
_DIRECTION_TOL = 1e-4

# Stored values to modality values (HU for CT) only, as for classic slices: no real-world value
# map (it would turn a perfusion map's HU into ml/100ml/s), no VOI window, no presentation inversion.
_TRANSFORMS = {
    "apply_real_world_transform": False,
    "apply_modality_transform": None,
    "apply_voi_transform": False,
    "apply_presentation_lut": False,
}


def _as_plan_axes(array: np.ndarray, affine: np.ndarray, plan: SlicePlan) -> np.ndarray | None:
    """A highdicom volume array (slice, row, column) on the plan's grid, or ``None`` if it is not.

    highdicom stacks slices in the order it finds them (often head to feet); the workbench's
    volumes run along the slice normal (row x column direction), so the slice axis may be flipped.
    """
    direction = np.asarray(plan.direction, dtype=float).reshape(3, 3)
    steps = np.asarray(affine, dtype=float)[:3, :3]
    origin = np.asarray(affine, dtype=float)[:3, 3]
    if float(np.dot(steps[:, 0], direction[:, 2])) < 0:
        origin = origin + steps[:, 0] * (array.shape[0] - 1)
        steps = steps * np.array([-1.0, 1.0, 1.0])
        array = array[::-1]
    expected = direction[:, [2, 1, 0]] * np.asarray(plan.spacing, dtype=float)[[2, 1, 0]]
    if array.shape != tuple(plan.size[::-1]) or np.max(np.abs(steps - expected)) > _DIRECTION_TOL * 10:
        return None
    if np.max(np.abs(origin - np.asarray(plan.origin, dtype=float))) > _POSITION_TOL_MM:
        return None
    return np.ascontiguousarray(array, dtype=np.float32)


def read_enhanced_frames(plan: SlicePlan) -> np.ndarray:
    """The plan's frames as a float32 (z, y, x) array of modality values (HU for CT).

    Raises
    ------
    Exception
        Whatever highdicom or pydicom raise when a file or its pixel data cannot be read.
    """
    import highdicom as hd

    paths = list(dict.fromkeys(plan.paths))
    images = {path: hd.imread(path, lazy_frame_retrieval=True) for path in paths}
    if len(paths) == 1 and len(plan.frames) == int(images[paths[0]].get("NumberOfFrames", 1)):
        try:
            volume = images[paths[0]].get_volume(dtype=np.float32, **_TRANSFORMS)  # type: ignore[arg-type]
        except (RuntimeError, ValueError):
            volume = None
        if volume is not None and volume.array.ndim == 3:
            array = _as_plan_axes(np.asarray(volume.array), np.asarray(volume.affine), plan)
            if array is not None:
                return array
    # One stack or time point out of several, frames spread over files, or a highdicom geometry
    # that disagrees with the header checks' plan: highdicom 0.28's get_volume has no frame
    # filter (it refuses frames sharing a position), so the checked frames are read one by one
    # in the plan's order, still through highdicom's per-frame transforms.
    nx, ny, nz = plan.size
    out = np.empty((nz, ny, nx), dtype=np.float32)
    for k, (path, frame) in enumerate(zip(plan.paths, plan.frames, strict=True)):
        out[k] = images[path].get_frame(int(frame or 1), dtype=np.float32, **_TRANSFORMS)  # type: ignore[arg-type]
    return out

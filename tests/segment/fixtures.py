"""Tiny preprocessed cases for the segmentation tests: spheres of soft tissue in noisy lung."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

#: Small enough for seconds of training on one core.
TINY = {"patch": 16, "channels": (4, 8), "iterations": 40, "batch_size": 2, "learning_rate": 1e-2, "threads": 1}


def sphere_case(size: int, radius: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A (z, y, x) CT crop: lung (-850 HU) with noise and a soft-tissue sphere (20 HU) near the centre."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0:size, 0:size, 0:size]
    centre = size / 2 + rng.uniform(-2, 2, size=3)
    mask = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= radius**2
    image = np.where(mask, 20.0, -850.0) + rng.normal(0, 60, size=mask.shape)
    return image.astype(np.float32), mask.astype(np.uint8)


def write_cases(root: Path, n_patients: int = 6, *, size: int = 20, constant: str | None = None) -> pd.DataFrame:
    """One case per patient written as NIfTI at 1 mm; ``constant`` names a case whose image is flat."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_patients):
        image, mask = sphere_case(size, 3.0 + (i % 3), seed=i)
        case_id = f"case{i:02d}"
        if case_id == constant:
            image[:] = -1000.0
        paths = []
        for array, name in ((image, "image"), (mask, "mask")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing((1.0, 1.0, 1.0))
            path = root / f"{case_id}_{name}.nii.gz"
            sitk.WriteImage(itk, str(path))
            paths.append(str(path))
        rows.append({"case_id": case_id, "image": paths[0], "mask": paths[1], "pseudo_patient_id": f"P{i:02d}",
                     "SeriesInstanceUID": f"2.25.{1000 + i}"})
    return pd.DataFrame(rows)

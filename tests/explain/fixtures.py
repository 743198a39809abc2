"""Builders for the explain tests: a radiomics-like table with planted drivers, small model settings, lesions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from pacs_workbench.radiomics import model as modeling
from pacs_workbench.radiomics.model import ModelingConfig

VENDORS = ("SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA")
# Planted log-odds per driver unit (the synthetic extract's driver definitions; heterogeneity made
# strong enough that 120 cases can show it).
COEF = {"x_diameter": 1.9, "x_irregularity": 2.6, "x_heterogeneity": 3.5, "x_age": 0.9, "x_pack_years": 1.0}
# Stand-ins for medical record numbers in the truth table: they must never reach an output.
FAKE_MRN = "H{:07d}"


def make_table(n_patients: int = 60, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Two lesions per patient. Planted drivers: size (Maximum3DDiameter) and margin irregularity
    (Sphericity) in shape, heterogeneity in first-order Entropy, age and pack-years clinical. Texture
    features are noise plus a vendor shift (no outcome signal); firstorder Mean is vendor plus noise."""
    rng = np.random.default_rng(seed)
    per = 2
    n = n_patients * per
    pid = np.repeat(np.arange(n_patients), per)
    age = rng.normal(65, 10, n_patients)
    pack = rng.gamma(2.0, 15.0, n_patients)
    vendor = np.asarray(VENDORS)[rng.integers(0, len(VENDORS), n_patients)]
    diam = np.exp(rng.normal(np.log(9.0), 0.5, n))
    irr = rng.uniform(0, 1, n)
    het = rng.uniform(0, 1, n)
    x = {
        "x_diameter": np.log2(diam / 8),
        "x_irregularity": irr - 0.5,
        "x_heterogeneity": het - 0.5,
        "x_age": ((age - 65) / 10)[pid],
        "x_pack_years": ((pack - 30) / 20)[pid],
    }
    lp = -0.3 + sum(COEF[k] * x[k] for k in COEF)
    label = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    shift = np.array([VENDORS.index(v) for v in vendor], float)[pid]
    table = pd.DataFrame(
        {
            "case_id": [f"case{i:03d}" for i in range(n)],
            "patient": [f"pt{p:02d}" for p in pid],
            "label": label,
            "age": age[pid],
            "pack_years": pack[pid],
            "Manufacturer": vendor[pid],
        }
    )
    table["original_shape_Maximum3DDiameter"] = diam * 1.1 + rng.normal(0, 0.5, n)
    table["original_shape_Sphericity"] = 0.92 - 0.35 * irr + rng.normal(0, 0.03, n)
    table["original_firstorder_Entropy"] = 2.0 + 2.0 * het + rng.normal(0, 0.2, n) + 0.1 * shift
    table["original_firstorder_Mean"] = rng.normal(-40, 25, n) + 30 * shift
    table["original_glcm_Contrast"] = rng.normal(10, 2, n) + 2.5 * shift
    table["original_glrlm_RunEntropy"] = rng.normal(4, 0.4, n) + 0.5 * shift
    table["original_ngtdm_Coarseness"] = rng.normal(0.01, 0.003, n)
    return table, x


def small_config(batch: str | None) -> ModelingConfig:
    return ModelingConfig(
        label="label",
        group="patient",
        batch=batch,
        clinical=("age", "pack_years"),
        repeats=2,
        outer_folds=4,
        inner_folds=3,
        n_boot=100,
        lightgbm_params=dict(modeling.LIGHTGBM_PARAMS, n_estimators=100),
        lightgbm_grid={"clf__min_child_samples": [5, 15]},
    )


def write_lesion(folder: Path, case_id: str, diameter_mm: float) -> tuple[str, str]:
    """A tiny CT-like volume with a sphere of the given diameter and its mask (NIfTI)."""
    spacing = (0.8, 0.8, 1.5)
    zz, yy, xx = np.mgrid[0:12, 0:36, 0:36]
    radius = diameter_mm / 2
    dist = np.sqrt(((xx - 18) * spacing[0]) ** 2 + ((yy - 18) * spacing[1]) ** 2 + ((zz - 6) * spacing[2]) ** 2)
    mask = (dist <= radius).astype(np.uint8)
    rng = np.random.default_rng(int(case_id[-3:]))
    image = np.where(mask > 0, 30.0, -850.0) + rng.normal(0, 25, mask.shape)
    paths = []
    for name, array in (("image", image.astype(np.float32)), ("mask", mask)):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing(spacing)
        path = folder / f"{case_id}_{name}.nii.gz"
        sitk.WriteImage(itk, str(path))
        paths.append(str(path))
    return paths[0], paths[1]

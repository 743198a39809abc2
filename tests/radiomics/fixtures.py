"""Shared test inputs of the radiomics stage: image/mask cases on disk and model tables.

``write_case`` writes a CT-like noisy sphere and its mask as NIfTI (also used by the fault
tests); ``make_table`` builds a radiomics-like table with a known signal, a vendor shift and
clinical covariates; ``small_config`` is a quick modeling configuration for it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from pacs_workbench.core.params import reference_dir
from pacs_workbench.radiomics import PARAMS_DIR, ModelingConfig, run_modeling
from pacs_workbench.radiomics.model import LIGHTGBM_PARAMS

CT_PARAMS = PARAMS_DIR / "ct_default.yaml"
REFERENCE = reference_dir()
needs_reference = pytest.mark.skipif(
    REFERENCE is None, reason="PACS_WORKBENCH_REFERENCE is not set (IBSI phantoms and reference values)"
)
VENDORS = np.array(["SIEMENS", "GE MEDICAL SYSTEMS", "Philips"])


def write_case(
    folder: Path, name: str, radius: float, seed: int, shape: tuple[int, int, int] = (14, 22, 22)
) -> tuple[Path, Path]:
    """A CT-like volume: noisy soft-tissue sphere in lung-like background; mask = the sphere."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    # Spacing (x, y, z) = (0.8, 0.8, 2.0) mm: distances in mm.
    dist = np.sqrt(((zz - centre[0]) * 2.0) ** 2 + ((yy - centre[1]) * 0.8) ** 2 + ((xx - centre[2]) * 0.8) ** 2)
    inside = dist <= radius
    image = rng.normal(-800, 60, shape)
    image[inside] = rng.normal(30 + 5 * seed, 40, inside.sum())
    img = sitk.GetImageFromArray(np.round(image).astype(np.int16))
    msk = sitk.GetImageFromArray(inside.astype(np.uint8))
    for item in (img, msk):
        item.SetSpacing((0.8, 0.8, 2.0))
        item.SetOrigin((-10.0, -12.0, 40.0))
    image_path, mask_path = folder / f"{name}_image.nii.gz", folder / f"{name}_mask.nii.gz"
    sitk.WriteImage(img, str(image_path))
    sitk.WriteImage(msk, str(mask_path))
    return image_path, mask_path


def case_table(folder: Path, n: int = 4) -> pd.DataFrame:
    rows = []
    for i in range(n):
        image, mask = write_case(folder, f"c{i}", radius=5.0 + i, seed=i)
        rows.append(
            {
                "case_id": f"case{i:02d}",
                "image": str(image),
                "mask": str(mask),
                "SeriesInstanceUID": f"2.25.{1000 + i}",
                "mask_source": "SEG" if i % 2 == 0 else "RTSTRUCT",
                "pseudo_patient_id": f"P{i:04d}",
                "Manufacturer": ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA"][i % 4],
            }
        )
    return pd.DataFrame(rows)


def make_table(n_patients: int = 70, p_noise: int = 12, seed: int = 0) -> pd.DataFrame:
    """Patients with one or two lesions; three informative features, noise, a near-constant and a
    duplicated feature, a vendor shift on every feature, and clinical age and smoking."""
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 3, n_patients)
    patient = np.repeat([f"P{i:03d}" for i in range(n_patients)], per_patient)
    n = patient.size
    age = np.repeat(rng.normal(65, 8, n_patients), per_patient)
    smoking = np.repeat(rng.choice(["never", "former", "current"], n_patients), per_patient)
    vendor = np.repeat(rng.choice(VENDORS, n_patients), per_patient)
    informative = rng.normal(0, 1, (n, 3))
    lp = 1.4 * informative[:, 0] - 1.0 * informative[:, 1] + 0.8 * informative[:, 2] + 0.03 * (age - 65)
    label = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    table = pd.DataFrame(
        {
            "case_id": [f"C{i:04d}" for i in range(n)],
            "patient": patient,
            "label": label,
            "age": age,
            "smoking": smoking,
            "Manufacturer": vendor,
        }
    )
    shift = {v: k * 0.8 for k, v in enumerate(VENDORS)}
    offset = np.array([shift[v] for v in vendor])
    for j in range(3):
        table[f"original_firstorder_F{j}"] = informative[:, j] + offset
    for j in range(p_noise):
        table[f"wavelet_glcm_N{j}"] = rng.normal(0, 1, n) + offset
    table["original_shape_Constant"] = np.where(rng.random(n) < 0.98, 1.0, 2.0)
    table["original_firstorder_F0_copy"] = table["original_firstorder_F0"] * 2.0 + 0.01 * rng.normal(0, 1, n)
    table.loc[rng.random(n) < 0.05, "wavelet_glcm_N0"] = np.nan
    return table


def small_config(**overrides: Any) -> ModelingConfig:
    base: dict[str, Any] = dict(
        label="label",
        group="patient",
        batch="Manufacturer",
        clinical=("age", "smoking"),
        repeats=1,
        outer_folds=3,
        inner_folds=2,
        random_state=0,
        n_boot=200,
        lightgbm_params=dict(LIGHTGBM_PARAMS, n_estimators=60),
        # Tiny tables have fewer features than the pre-selection keeps: tune depth only.
        lightgbm_grid={"clf__max_depth": [1, 3]},
        lasso_grid={"clf__C": [0.1, 1.0]},
    )
    base.update(overrides)
    return ModelingConfig(**base)


def run_quiet(table: pd.DataFrame | Path, out: Path, config: ModelingConfig, **kwargs: Any) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_modeling(table, out, config, progress=False, **kwargs)


# scikit-learn's estimator checks that need no data, or only data our estimators accept.
# The full check_estimator cannot run on them: it fits on bare NumPy arrays, while
# RadiomicsPreprocessor, ComBat and ClinicalEncoder select DataFrame columns by name (features,
# a batch column, clinical columns) and LogitRecalibrator takes a 1-d array of probabilities.
SKLEARN_CHECKS = (
    "check_parameters_default_constructible",
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimators_unfitted",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_mixin_order",
)
SKLEARN_TRANSFORMER_CHECKS = (*SKLEARN_CHECKS, "check_transformers_unfitted")


def run_sklearn_check(name: str, estimator: Any) -> None:
    """Run one of scikit-learn's estimator checks by name."""
    from sklearn.utils import estimator_checks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(estimator_checks, name)(type(estimator).__name__, estimator)


# --- lesion cohorts for the CNN ------------------------------------------------------------------

#: A CNN small enough for seconds per fold: 12-voxel crops, a few channels, two epochs.
TINY_DEEP: dict[str, Any] = {
    "crop_size": 12, "crop_spacing_mm": 1.5, "widths": (2, 4, 4, 8), "epochs": 2, "patience": 2, "batch_size": 8,
}  # fmt: skip


def lesion_cohort(folder: Path, n_patients: int = 24, seed: int = 0) -> pd.DataFrame:
    """One lesion per patient written as image and mask (``write_case``); the outcome follows the lesion's size.

    Columns: ``case_id``, ``patient``, ``label``, ``age``, ``Manufacturer``, ``image``, ``mask``, a noisy
    size feature and three noise features.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    radius = rng.uniform(2.5, 6.5, n_patients)
    label = (radius + rng.normal(0, 0.6, n_patients) > 4.5).astype(int)
    rows = []
    for i in range(n_patients):
        image, mask = write_case(folder, f"l{i:02d}", float(radius[i]), seed=i)
        rows.append({"case_id": f"L{i:03d}", "patient": f"Q{i:03d}", "label": int(label[i]),
                     "age": float(rng.normal(65, 8)), "Manufacturer": str(VENDORS[i % 2]), "image": str(image),
                     "mask": str(mask)})  # fmt: skip
    table = pd.DataFrame(rows)
    table["original_shape_Diameter"] = 2 * radius + rng.normal(0, 1.0, n_patients)
    for j in range(3):
        table[f"original_firstorder_N{j}"] = rng.normal(0, 1, n_patients)
    return table


def lesion_config(**overrides: Any) -> ModelingConfig:
    """Quick modeling settings for :func:`lesion_cohort`."""
    base: dict[str, Any] = dict(
        label="label", group="patient", id_col="case_id", batch=None, clinical=("age",), repeats=2, outer_folds=3,
        inner_folds=2, random_state=0, n_boot=100,
        lightgbm_params=dict(LIGHTGBM_PARAMS, n_estimators=30, min_child_samples=3),
        lightgbm_grid={"clf__max_depth": [2]}, lasso_grid={"clf__C": [1.0]},
    )  # fmt: skip
    base.update(overrides)
    return ModelingConfig(**base)

"""The per-image pipeline: resampling, rounding, clipping, re-segmentation, cropping, mask
interpolation, MR normalization, denoising, N4, parameters; and the IBSI CT radiomics phantom."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from pacs_workbench.preprocess.image import PreprocessParams, preprocess_image
from pacs_workbench.preprocess.masks import load_mask
from pacs_workbench.preprocess.series import load_series
from tests.preprocess.fixtures import array_of


def _ct_with_mask(noise: float = 0.0) -> tuple[sitk.Image, sitk.Image]:
    rng = np.random.default_rng(0)
    volume = np.full((10, 20, 20), -800.0) + rng.normal(0, noise, (10, 20, 20))
    volume[3:7, 6:14, 6:14] = 60.0
    volume[5, 9, 9] = 900.0  # a calcification inside the lesion
    image = sitk.GetImageFromArray(volume.astype(np.float32))
    image.SetSpacing([0.7, 0.7, 2.5])
    image.SetMetaData("0008|0060", "CT")
    mask = sitk.GetImageFromArray((volume > 0).astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def test_resample_round_clip_resegment_crop_are_recorded() -> None:
    image, mask = _ct_with_mask()
    params = {"target_spacing_mm": [1.0, 1.0, 1.0], "hu_window": [-1000, 400], "resegment_range": [-100, 400],
              "crop_margin_mm": 2.0}
    out, out_mask, info = preprocess_image(image, mask, params)
    steps = [s["step"] for s in info["steps"]]
    assert steps == ["load", "resample", "crop", "round", "resegment", "clip"]
    assert out.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    values = array_of(out)
    assert values.max() <= 400 and np.array_equal(values, np.round(values))
    resegment = next(s for s in info["steps"] if s["step"] == "resegment")
    assert resegment["mask_voxels_removed"] >= 1  # the 900 HU calcification left the mask
    # Crop: the mask's extent plus 2 mm (2 voxels at 1 mm) on each side, not the whole image.
    full = next(s for s in info["steps"] if s["step"] == "crop")["full_size"]
    assert all(o < f for o, f in zip(out.GetSize(), full, strict=True))
    nz = np.nonzero(array_of(out_mask))
    assert min(nz[2]) >= 2 and max(nz[2]) <= out.GetSize()[0] - 3
    assert same_physical_volume(info["mask_volume_mm3"], 4 * 8 * 8 * 0.7 * 0.7 * 2.5, rel=0.15)


def same_physical_volume(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * b


def test_mask_interpolation_nearest_versus_linear_threshold() -> None:
    zz, yy, xx = np.mgrid[0:10, 0:20, 0:20]
    ball = ((xx - 9.7) * 0.7) ** 2 + ((yy - 10.2) * 0.7) ** 2 + ((zz - 4.6) * 2.5) ** 2 < 4.1**2
    image = sitk.GetImageFromArray(np.where(ball, 60.0, -800.0).astype(np.float32))
    image.SetSpacing([0.7, 0.7, 2.5])
    mask = sitk.GetImageFromArray(ball.astype(np.uint8))
    mask.CopyInformation(image)
    params = {"target_spacing_mm": 2.0, "crop_margin_mm": None}
    _, linear, _ = preprocess_image(image, mask, params, modality="CT")
    _, nearest, _ = preprocess_image(image, mask, {**params, "mask_interpolator": "nearest"}, modality="CT")
    assert linear.GetSize() == nearest.GetSize() == (7, 7, 13)
    native_mm3 = ball.sum() * 0.7 * 0.7 * 2.5
    linear_mm3, nearest_mm3 = array_of(linear).sum() * 8.0, array_of(nearest).sum() * 8.0
    assert linear_mm3 != nearest_mm3
    # Partial-volume thresholding keeps the volume closer to the original than nearest neighbour here.
    assert abs(linear_mm3 - native_mm3) < abs(nearest_mm3 - native_mm3)


def test_mr_normalization_denoise_and_n4() -> None:
    _, yy, xx = np.mgrid[0:12, 0:40, 0:40]
    body = ((yy - 20) ** 2 + (xx - 20) ** 2) < 16**2
    bias = np.exp(0.4 * (xx - 20) / 20)  # smooth multiplicative field across the body
    rng = np.random.default_rng(1)
    volume = np.where(body, 400.0 * bias, 5.0) + rng.normal(0, 8, body.shape)
    image = sitk.GetImageFromArray(np.clip(volume, 1, None).astype(np.float32))
    image.SetSpacing([1.0, 1.0, 3.0])
    mask = sitk.GetImageFromArray(((yy - 20) ** 2 + (xx - 20) ** 2 < 36).astype(np.uint8))
    mask.CopyInformation(image)
    params = {"target_spacing_mm": None, "crop_margin_mm": None, "normalization": "zscore",
              "denoise": "median", "bias_field": "n4", "n4_shrink": 2, "n4_iterations": [20, 20]}
    out, _, info = preprocess_image(image, mask, params, modality="MR")
    assert [s["step"] for s in info["steps"]] == ["load", "bias_field", "denoise", "normalize"]
    values = array_of(out)
    inside = values[body]
    raw_inside = volume[body]
    # N4 flattens the left-right gradient inside the body.
    cv_before = raw_inside.std() / raw_inside.mean()
    corrected = array_of(preprocess_image(image, mask, {**params, "normalization": "none", "denoise": "none"},
                                             modality="MR")[0])[body]
    assert corrected.std() / corrected.mean() < 0.5 * cv_before
    # z-score over the (Otsu) foreground: the body has mean ~0 and unit spread before denoising ...
    plain = array_of(preprocess_image(image, mask, {**params, "denoise": "none"}, modality="MR")[0])[body]
    assert abs(plain.mean()) < 0.1 and 0.8 < plain.std() < 1.2
    # ... and the median filter then removes most of the (white) noise.
    assert abs(inside.mean()) < 0.1 and inside.std() < 0.6 * plain.std()
    # The same parameters leave a CT untouched by MR-only steps.
    ct_image, ct_mask = _ct_with_mask()
    _, _, ct_info = preprocess_image(ct_image, ct_mask, params, modality="CT")
    assert [s["step"] for s in ct_info["steps"]] == ["load", "denoise"]


def test_params_validation_and_effective_parameters() -> None:
    with pytest.raises(ValueError, match="unknown preprocessing parameter"):
        PreprocessParams.coerce({"spacing": 1})
    with pytest.raises(ValueError, match="interpolator must be one of"):
        PreprocessParams(interpolator="cubic")
    p = PreprocessParams.coerce({"target_spacing_mm": [2, 2, 0], "hu_window": [], "normalization": "zscore"})
    assert p.target_spacing_mm == (2.0, 2.0, 0.0) and p.hu_window is None
    assert "normalization" in p.effective("MR") and "normalization" not in p.effective("CT")
    assert "round_ct" in p.effective("CT") and "round_ct" not in p.effective("MR")


# --- IBSI CT radiomics phantom ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom() -> dict[str, Any]:
    reference = os.environ.get("PACS_WORKBENCH_REFERENCE")
    if not reference:
        pytest.skip("PACS_WORKBENCH_REFERENCE is not set (IBSI CT phantom reference data)")
    root = Path(reference) / "ibsi" / "ct_radiomics_phantom"
    image = load_series(root / "dicom" / "image")
    mask = load_mask(root / "dicom" / "mask" / "DCM_RS_00060.dcm", image)
    return {
        "image": image,
        "mask": mask,
        "nifti_image": sitk.ReadImage(str(root / "nifti" / "image_phantom.nii.gz")),
        "nifti_mask": sitk.ReadImage(str(root / "nifti" / "mask.nii.gz")),
        "reference_csv": Path(reference) / "ibsi" / "ibsi1_reference_values_all_configs.csv",
    }


@pytest.mark.reference
def test_ibsi_phantom_dicom_matches_nifti(phantom: dict[str, Any]) -> None:
    image, reference = phantom["image"], phantom["nifti_image"]
    assert image.GetSize() == reference.GetSize() == (204, 201, 60)
    assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert np.array_equal(array_of(image), array_of(reference))
    ours, theirs = array_of(phantom["mask"]).astype(bool), array_of(phantom["nifti_mask"]).astype(bool)
    assert theirs.sum() == 125_256
    assert abs(int(ours.sum()) - 125_256) <= 0.001 * 125_256
    assert (ours ^ theirs).sum() <= 0.001 * 125_256


@pytest.mark.reference
@pytest.mark.parametrize(
    ("config", "spacing", "resegment"), [("config. B", (2, 2, 0), (-500, 400)), ("config. C", (2, 2, 2), (-1000, 400))]
)
def test_ibsi_phantom_resampling_matches_reference_values(
    phantom: dict[str, Any], config: str, spacing: tuple[float, float, float], resegment: tuple[float, float]
) -> None:
    table = pd.read_csv(phantom["reference_csv"])
    rows = table[(table["data"] == config) & (table["ibsi_code"].isin(["YEKZ", "Q4LE"]))].drop_duplicates("ibsi_code")
    reference = rows.set_index("ibsi_code")
    params = {"target_spacing_mm": list(spacing), "crop_margin_mm": 10.0}
    # Voxel-counting volume comes from the morphological mask (before re-segmentation).
    _, _, info = preprocess_image(phantom["image"], phantom["mask"], params)
    volume = info["mask_volume_mm3"]
    assert abs(volume - reference.loc["YEKZ", "value"]) <= reference.loc["YEKZ", "tolerance"]
    image, intensity, _ = preprocess_image(
        phantom["image"], phantom["mask"], {**params, "resegment_range": list(resegment)}
    )
    mean = float(array_of(image)[array_of(intensity).astype(bool)].mean())
    assert abs(mean - reference.loc["Q4LE", "value"]) <= reference.loc["Q4LE", "tolerance"]


def test_mr_zscore_within_the_body_mask_ignores_air_and_counts_dark_tissue_inside() -> None:
    """A head in a field of air: the body region's z-score does not depend on how much air there is."""
    from pacs_workbench.preprocess.image import body_mask

    def head(fov: int) -> sitk.Image:
        z, y, x = np.mgrid[0:12, 0:fov, 0:fov].astype(float)
        c = (fov - 1) / 2.0
        r2 = ((x - c) / 20.0) ** 2 + ((y - c) / 24.0) ** 2 + ((z - 5.5) / 8.0) ** 2
        array = np.where(r2 <= 1.0, 800.0, 0.0)
        array[r2 <= 0.15] = 150.0  # dark fluid inside the head still belongs to it
        array += np.random.default_rng(0).normal(0.0, 15.0, array.shape)
        image = sitk.GetImageFromArray(np.abs(array).astype(np.float32))
        image.SetSpacing((1.0, 1.0, 3.0))
        return image

    small, large = head(56), head(96)
    region = body_mask(small)
    assert region[5, 27, 27] and not region[0, 0, 0]  # the dark core is inside, the corner air is not
    mask = sitk.Image(small.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(small)
    mask[27, 27, 5] = 1
    params = {"normalization": "zscore", "normalization_region": "body", "target_spacing_mm": None,
              "crop_margin_mm": None}  # fmt: skip
    _, _, info_small = preprocess_image(small, mask, params, modality="MR")
    large_mask = sitk.Image(large.GetSize(), sitk.sitkUInt8)
    large_mask.CopyInformation(large)
    large_mask[47, 47, 5] = 1
    _, _, info_large = preprocess_image(large, large_mask, params, modality="MR")
    stats = [next(s for s in info["steps"] if s["step"] == "normalize") for info in (info_small, info_large)]
    assert stats[0]["region"] == "body"
    assert stats[0]["mean"] == pytest.approx(stats[1]["mean"], rel=0.02)
    assert stats[0]["std"] == pytest.approx(stats[1]["std"], rel=0.05)
    with pytest.raises(ValueError, match="normalization_region"):
        PreprocessParams(normalization_region="skull")

"""The CNN's crops and classifier: clear crop errors, padding at the edge, scikit-learn conventions, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from sklearn.base import clone

from pacs_workbench.radiomics.cnn import CNNClassifier, CropError, CropSettings, lesion_crop, make_crops
from tests.radiomics.fixtures import TINY_DEEP, lesion_cohort

TINY_NET = {"widths": TINY_DEEP["widths"], "epochs": 2, "patience": 2, "batch_size": 8}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> pd.DataFrame:
    return lesion_cohort(tmp_path_factory.mktemp("lesions"), n_patients=16)


@pytest.fixture(scope="module")
def crops(cohort):
    return make_crops(cohort, CropSettings(size=12, spacing_mm=1.5))


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return str(path)


# --- crops ---------------------------------------------------------------------------------------


def test_crops_are_lesion_centred_with_an_optional_mask_channel(cohort, crops) -> None:
    assert crops.arrays.shape == (16, 2, 12, 12, 12) and crops.arrays.dtype == np.float32
    assert list(crops.case_ids) == cohort["case_id"].tolist()
    # The lesion (soft tissue, mask 1) sits at the centre, air-like lung around it.
    centre = crops.arrays[:, :, 5:7, 5:7, 5:7]
    assert (centre[:, 1] == 1).all()
    assert crops.arrays[:, 0].min() >= 0 and crops.arrays[:, 0].max() <= 1
    assert centre[:, 0].mean() > crops.arrays[:, 0, 0, 0, 0].mean()
    image_only = make_crops(cohort.head(3), CropSettings(size=12, spacing_mm=1.5, with_mask=False))
    assert image_only.arrays.shape == (3, 1, 12, 12, 12)
    np.testing.assert_array_equal(image_only.arrays[:, 0], crops.arrays[:3, 0])


def test_a_case_without_a_mask_is_a_clear_error(cohort) -> None:
    table = cohort.head(4).copy()
    table.loc[1, "mask"] = None
    table.loc[2, "mask"] = ""
    with pytest.raises(CropError, match=r"2 of 4 case\(s\) cannot be cropped.*L001: no mask file given"):
        make_crops(table, CropSettings(size=12))
    with pytest.raises(CropError, match="no 'mask' column"):
        make_crops(cohort.drop(columns=["mask"]), CropSettings(size=12))


def test_an_empty_mask_or_another_grid_is_a_clear_error(tmp_path) -> None:
    image = _write(tmp_path / "image.nii.gz", np.full((10, 10, 10), -800, np.int16))
    empty = _write(tmp_path / "empty.nii.gz", np.zeros((10, 10, 10), np.uint8))
    other = _write(tmp_path / "other.nii.gz", np.ones((8, 10, 10), np.uint8))
    with pytest.raises(CropError, match="the mask is empty"):
        lesion_crop(image, empty, CropSettings(size=8), "c1")
    with pytest.raises(CropError, match="differs from the image"):
        lesion_crop(image, other, CropSettings(size=8), "c2")
    with pytest.raises(CropError, match="mask file not found"):
        lesion_crop(image, tmp_path / "missing.nii.gz", CropSettings(size=8), "c3")


def test_a_lesion_at_the_volume_edge_is_padded_and_logged(tmp_path, caplog) -> None:
    volume = np.full((16, 16, 16), -850, np.int16)
    mask = np.zeros((16, 16, 16), np.uint8)
    mask[6:10, 6:10, 0:3] = 1  # touches the x = 0 face
    volume[mask > 0] = 40
    image, mask_file = _write(tmp_path / "i.nii.gz", volume), _write(tmp_path / "m.nii.gz", mask)
    with caplog.at_level(logging.INFO, logger="pacs_workbench.radiomics.cnn"):
        crop, info = lesion_crop(image, mask_file, CropSettings(size=12, spacing_mm=1.0), "edge")
    assert info["lesion_at_edge"] and info["padded_share"] > 0.3
    assert any("edge" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # Beyond the volume: air on the image channel (0 after scaling) and no mask.
    assert crop[0, :, :, 0].max() == 0.0 and crop[1, :, :, 0].max() == 0.0
    assert crop[1].sum() == mask.sum()
    inside = np.full((16, 16, 16), -850, np.int16)
    centred = np.zeros((16, 16, 16), np.uint8)
    centred[6:10, 6:10, 6:10] = 1
    caplog.clear()
    _, info = lesion_crop(_write(tmp_path / "i2.nii.gz", inside), _write(tmp_path / "m2.nii.gz", centred),
                          CropSettings(size=8, spacing_mm=1.0), "inside")  # fmt: skip
    assert not info["lesion_at_edge"] and info["padded_share"] == 0.0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_anisotropic_voxels_are_sampled_in_mm(tmp_path) -> None:
    # 2 mm slices: a cube 8 mm on each side is 4 slices by 8 rows by 8 columns.
    mask = np.zeros((12, 24, 24), np.uint8)
    mask[4:8, 8:16, 8:16] = 1
    image = _write(tmp_path / "i.nii.gz", np.where(mask > 0, 40, -850).astype(np.int16), (1.0, 1.0, 2.0))
    crop, _ = lesion_crop(image, _write(tmp_path / "m.nii.gz", mask, (1.0, 1.0, 2.0)),
                          CropSettings(size=16, spacing_mm=1.0), "a")  # fmt: skip
    extent = [int(np.any(crop[1] > 0, axis=tuple(a for a in range(3) if a != axis)).sum()) for axis in range(3)]
    assert extent == [8, 8, 8]


# --- the classifier ------------------------------------------------------------------------------


def test_fit_returns_self_with_learned_state_and_sklearn_params(cohort, crops) -> None:
    model = CNNClassifier(**TINY_NET, random_state=3)
    assert not [k for k in vars(model) if k.endswith("_")]
    assert clone(model).get_params() == model.get_params()
    fitted = model.fit(crops.arrays, cohort["label"], groups=cohort["patient"])
    assert fitted is model
    assert {"network_", "history_", "best_epoch_", "classes_", "n_channels_", "embedding_dim_"} <= set(vars(model))
    assert model.n_train_ + model.n_validation_ == 16 and model.n_validation_ > 0
    assert 1 <= model.best_epoch_ <= len(model.history_) <= 2
    proba = model.predict_proba(crops.arrays)
    assert proba.shape == (16, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert model.transform(crops.arrays).shape == (16, TINY_NET["widths"][-1])
    with pytest.raises(ValueError, match="crops must have shape"):
        model.predict_proba(crops.arrays[:, :1])


def test_training_is_deterministic_for_a_seed(cohort, crops) -> None:
    args = (crops.arrays, cohort["label"])
    a = CNNClassifier(**TINY_NET, random_state=5).fit(*args, groups=cohort["patient"])
    b = CNNClassifier(**TINY_NET, random_state=5).fit(*args, groups=cohort["patient"])
    c = CNNClassifier(**TINY_NET, random_state=6).fit(*args, groups=cohort["patient"])
    for (name, p), q in zip(a.network_.state_dict().items(), b.network_.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert np.array_equal(a.predict_proba(crops.arrays), b.predict_proba(crops.arrays))
    assert a.history_ == b.history_
    assert not np.array_equal(a.predict_proba(crops.arrays), c.predict_proba(crops.arrays))


def test_early_stopping_keeps_the_best_epoch(cohort, crops) -> None:
    model = CNNClassifier(**{**TINY_NET, "epochs": 12, "patience": 1, "learning_rate": 0.05}, random_state=0)
    model.fit(crops.arrays, cohort["label"], groups=cohort["patient"])
    losses = [h["validation_loss"] for h in model.history_]
    assert model.best_epoch_ == int(np.argmin(losses)) + 1
    assert len(losses) <= model.best_epoch_ + 1  # stopped one epoch without improvement later


def test_weights_round_trip(cohort, crops) -> None:
    model = CNNClassifier(**TINY_NET, random_state=1).fit(crops.arrays, cohort["label"], groups=cohort["patient"])
    record = {"history": model.history_, "best_epoch": model.best_epoch_, "n_train": model.n_train_}
    loaded = CNNClassifier(**TINY_NET).load_state(model.state_bytes(), 2, (12, 12, 12), record)
    assert np.array_equal(loaded.predict_proba(crops.arrays), model.predict_proba(crops.arrays))
    assert np.array_equal(loaded.transform(crops.arrays), model.transform(crops.arrays))

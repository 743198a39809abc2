"""Masks onto the image grid: SEG, RTSTRUCT (even-odd holes) and label maps, with their reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pacs_workbench.preprocess.masks import MaskError, load_mask, read_mask
from pacs_workbench.preprocess.series import load_series
from tests.preprocess.fixtures import array_of, make_rtstruct, make_seg, make_series, rectangle, write


@pytest.fixture
def ct(tmp_path: Path) -> dict[str, Any]:
    datasets = make_series(n=6, rows=12, cols=10)
    write(datasets, tmp_path / "ct")
    return {"datasets": datasets, "folder": tmp_path / "ct", "image": load_series(tmp_path / "ct")}


def test_seg_round_trip_and_segment_choice(ct: dict[str, Any], tmp_path: Path) -> None:
    labels = np.zeros((6, 12, 10), dtype=np.uint8)
    labels[1:3, 2:5, 3:7] = 1
    labels[4, 6:9, 1:4] = 2
    seg = make_seg(ct["datasets"], labels, segments=2)
    seg.save_as(tmp_path / "seg.dcm")
    both = array_of(load_mask(tmp_path / "seg.dcm", ct["image"]))
    assert np.array_equal(both, labels > 0)
    second, report = read_mask(tmp_path / "seg.dcm", ct["image"], segment=2)
    assert np.array_equal(array_of(second), labels == 2)
    assert report.references_image_series and report.on_grid and report.mask_source == "SEG"
    with pytest.raises(MaskError, match="segment 3 is not in the SEG"):
        load_mask(tmp_path / "seg.dcm", ct["image"], segment=3)


def test_seg_on_another_series_is_reported(ct: dict[str, Any], tmp_path: Path) -> None:
    mask = np.zeros((6, 12, 10), dtype=bool)
    mask[2, 3:6, 3:6] = True
    # Same frame of reference, another series (e.g. another reconstruction): usable, but flagged.
    sibling = make_series(n=6, frame_uid=ct["datasets"][0].FrameOfReferenceUID)
    make_seg(sibling, mask).save_as(tmp_path / "sibling.dcm")
    loaded, report = read_mask(tmp_path / "sibling.dcm", ct["image"])
    assert report.references_image_series is False and "mask_other_series" in report.flags
    assert array_of(loaded).sum() == 9
    # Another frame of reference: positions mean nothing on this image.
    stranger = make_series(n=6)
    make_seg(stranger, mask).save_as(tmp_path / "stranger.dcm")
    with pytest.raises(MaskError, match="another frame of reference"):
        load_mask(tmp_path / "stranger.dcm", ct["image"])


def test_rtstruct_even_odd_holes_and_roi_choice(ct: dict[str, Any], tmp_path: Path) -> None:
    ds = ct["datasets"]
    outer = rectangle(ds[2], 1.5, 1.5, 8.5, 9.5)  # voxel centres 2..8 (cols) x 2..9 (rows): 7 x 8 = 56
    hole = rectangle(ds[2], 3.5, 3.5, 6.5, 6.5)  # centres 4..6 x 4..6 = 9
    other = rectangle(ds[4], 0.5, 0.5, 2.5, 2.5)  # centres 1..2 x 1..2 = 4
    make_rtstruct(ds, {1: [outer, hole], 2: [other]}).save_as(tmp_path / "rs.dcm")
    first, report = read_mask(tmp_path / "rs.dcm", ct["image"], segment=1)
    mask = array_of(first)
    assert mask.sum() == 56 - 9 and mask[2, 5, 5] == 0 and mask[2, 2, 2] == 1
    assert report.mask_source == "RTSTRUCT" and report.n_contours == 2 and report.references_image_series
    union = array_of(load_mask(tmp_path / "rs.dcm", ct["image"]))
    assert union.sum() == 47 + 4 and union[4, 1:3, 1:3].all()


def test_rtstruct_outside_the_image_does_not_overlap(ct: dict[str, Any], tmp_path: Path) -> None:
    far = rectangle(ct["datasets"][2], 40, 40, 45, 45)
    make_rtstruct(ct["datasets"], {1: [far]}).save_as(tmp_path / "rs.dcm")
    with pytest.raises(MaskError, match=r"empty|does not overlap") as caught:
        load_mask(tmp_path / "rs.dcm", ct["image"])
    assert caught.value.report is not None and caught.value.report.n_contours_off_image == 1


def test_label_maps_same_grid_other_grid_and_elsewhere(ct: dict[str, Any], tmp_path: Path) -> None:
    image = ct["image"]
    labels = np.zeros((6, 12, 10), dtype=np.uint8)
    labels[2:4, 4:8, 3:6] = 3
    labels[5, 0:2, 0:2] = 1
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    sitk.WriteImage(label_image, str(tmp_path / "labels.nii.gz"))
    sitk.WriteImage(label_image, str(tmp_path / "labels.nrrd"))
    for name in ("labels.nii.gz", "labels.nrrd"):
        loaded, report = read_mask(tmp_path / name, image, segment=3)
        assert np.array_equal(array_of(loaded), labels == 3) and report.mask_source == "labelmap" and report.on_grid
    # Written the way nibabel (and 3D Slicer) write NIfTI: RAS affine, (i, j, k) array order.
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = matrix, image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), affine), tmp_path / "slicer.nii.gz")
    assert np.array_equal(array_of(load_mask(tmp_path / "slicer.nii.gz", image, segment=3)), labels == 3)
    # Two overlapping layers (a .seg.nrrd with layers reads as a two-component image).
    layers = sitk.Compose(sitk.GetImageFromArray((labels == 3).astype(np.uint8)),
                          sitk.GetImageFromArray((labels == 1).astype(np.uint8) * 2))
    layers.CopyInformation(image)
    sitk.WriteImage(layers, str(tmp_path / "layers.nrrd"))
    assert np.array_equal(array_of(load_mask(tmp_path / "layers.nrrd", image)), labels > 0)
    # A finer grid (e.g. a segmentation tool's supersampled label map) comes back by position.
    fine = sitk.Resample(label_image, [20, 24, 12], sitk.Transform(), sitk.sitkNearestNeighbor,
                         image.TransformContinuousIndexToPhysicalPoint((-0.25, -0.25, -0.25)),
                         [s / 2 for s in image.GetSpacing()], image.GetDirection(), 0, sitk.sitkUInt8)
    sitk.WriteImage(fine, str(tmp_path / "fine.nii.gz"))
    loaded, report = read_mask(tmp_path / "fine.nii.gz", image, segment=3)
    assert not report.on_grid and "mask_resampled" in report.flags
    assert np.array_equal(array_of(loaded), labels == 3)
    moved = sitk.Image(label_image)
    moved.SetOrigin([v + 500 for v in image.GetOrigin()])
    sitk.WriteImage(moved, str(tmp_path / "moved.nii.gz"))
    with pytest.raises(MaskError, match="does not overlap"):
        load_mask(tmp_path / "moved.nii.gz", image)

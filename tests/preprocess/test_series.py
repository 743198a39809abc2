"""Series to volume: slice order, geometry, rescale, and every check that excludes a series
(missing slices, spacing, tilt, duplicates, localizers, orientations, phases, mixed series)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pacs_workbench.preprocess.series import SeriesError, inspect_series, load_series, read_series
from tests.preprocess.fixtures import array_of, make_series, write


def test_shuffled_files_reversed_instance_numbers_sort_by_position(tmp_path: Path) -> None:
    datasets = make_series(n=7)
    for ds in datasets:  # Instance Number runs against the stack: only the position may decide
        ds.InstanceNumber = 100 - ds.InstanceNumber
    write(datasets, tmp_path / "s", names="shuffled")
    image, report = read_series(tmp_path / "s")
    volume = array_of(image)
    assert report.valid and report.n_slices == 7
    for k in range(7):
        assert volume[k, 0, 0] == pytest.approx(100 * k)
        assert volume[k, 3, 2] == pytest.approx(100 * k + 5)
    assert image.GetOrigin() == pytest.approx((-10.0, -12.0, 5.0))
    assert image.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))  # x = columns, y = rows


def test_reversed_slice_order_gives_a_positive_stack(tmp_path: Path) -> None:
    datasets = make_series(n=5, positions=[40.0, 37.5, 35.0, 32.5, 30.0])  # written top to bottom
    write(datasets, tmp_path / "s")
    image = load_series(tmp_path / "s")
    volume = array_of(image)
    # Lowest position first, whatever order the files came in; slice written 4th (k=4) sits lowest.
    assert volume[0, 0, 0] == pytest.approx(400)
    assert volume[-1, 0, 0] == pytest.approx(0)
    assert image.GetOrigin()[2] == pytest.approx(5.0 + 30.0)
    assert image.GetSpacing()[2] == pytest.approx(2.5)


def test_oblique_series_matches_gdcm_and_header_geometry(tmp_path: Path) -> None:
    a, b = math.radians(25), math.radians(17)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rotation = rz @ rx
    iop = (*rotation[:, 0], *rotation[:, 1])
    datasets = make_series(n=6, iop=iop, dz=3.0)
    files = write(datasets, tmp_path / "s")
    image, report = read_series(tmp_path / "s")
    assert report.oblique and "oblique" in report.flags
    # Independent check: GDCM's own sorting and geometry through SimpleITK's series reader.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    reference = reader.Execute()
    assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    assert np.array_equal(array_of(image), array_of(reference).astype(np.float32))
    # Every slice's first voxel sits at its file's Image Position (Patient) (slice k was written k-th).
    for k, path in enumerate(files):
        position = [float(v) for v in pydicom.dcmread(path).ImagePositionPatient]
        assert image.TransformIndexToPhysicalPoint((0, 0, k)) == pytest.approx(position, abs=1e-4)


def test_rescale_slope_and_intercept_applied(tmp_path: Path) -> None:
    write(make_series(n=3, slope=2.0, intercept=-1000.0, values=lambda k: np.full((12, 10), -600.0 + 40 * k)), tmp_path)
    volume = array_of(load_series(tmp_path))
    assert volume.dtype == np.float32
    assert volume[:, 0, 0].tolist() == [-600.0, -560.0, -520.0]


def test_missing_slice_excluded_with_reason(tmp_path: Path) -> None:
    datasets = make_series(n=8)
    del datasets[4]
    write(datasets, tmp_path)
    report = inspect_series(tmp_path)
    assert not report.valid and report.n_missing == 1 and "missing" in report.flags
    with pytest.raises(SeriesError, match="1 missing slice"):
        load_series(tmp_path)


def test_non_uniform_spacing_excluded(tmp_path: Path) -> None:
    write(make_series(positions=[0.0, 2.5, 5.0, 8.2, 10.0, 12.5]), tmp_path)
    with pytest.raises(SeriesError, match="non-uniform slice spacing") as caught:
        load_series(tmp_path)
    assert caught.value.report is not None and "nonuniform_spacing" in caught.value.report.flags


def _tilted_square(k: int, shift_px: int) -> np.ndarray:
    """A bright block that stays put in space while a tilted stack slides under it by ``shift_px`` per slice."""
    plane = np.full((24, 12), -1000.0)
    plane[10 - k * shift_px : 14 - k * shift_px, 4:8] = 500.0
    return plane


def test_gantry_tilt_detected_then_corrected(tmp_path: Path) -> None:
    dy, dz, shift_px = 0.8, 2.0, 1
    # Each slice's origin moves one row down (+y), so fixed anatomy sits one row higher per slice.
    datasets = make_series(
        n=5, rows=24, cols=12, pixel_spacing=(dy, 0.7), dz=dz, drift_mm=(0.0, shift_px * dy),
        values=lambda k: _tilted_square(k, shift_px),
    )
    for ds in datasets:
        ds.GantryDetectorTilt = math.degrees(math.atan(dy / dz))
    write(datasets, tmp_path)
    report = inspect_series(tmp_path)
    assert "tilt" in report.flags and not report.valid
    assert report.gantry_tilt_deg == pytest.approx(math.degrees(math.atan(dy / dz)), abs=0.01)
    with pytest.raises(SeriesError, match="gantry tilt"):
        load_series(tmp_path)
    image, corrected = read_series(tmp_path, correct_tilt=True)
    assert corrected.tilt_corrected and corrected.valid
    volume = array_of(image)
    # After the in-plane correction the block occupies the same rows on every slice.
    rows_hit = [tuple(np.flatnonzero(volume[k, :, 5] > 0)) for k in range(5)]
    assert all(r == rows_hit[0] for r in rows_hit) and rows_hit[0] == (10, 11, 12, 13)


def test_duplicate_file_dropped_but_conflicting_duplicate_excluded(tmp_path: Path) -> None:
    datasets = make_series(n=5)
    write(datasets, tmp_path / "a")
    shutil.copy(next((tmp_path / "a").iterdir()), tmp_path / "a" / "copy.dcm")
    image, report = read_series(tmp_path / "a")
    assert report.n_duplicates == 1 and "duplicate" in report.flags and image.GetSize()[2] == 5

    clash = make_series(n=5, series_uid=datasets[0].SeriesInstanceUID, frame_uid=datasets[0].FrameOfReferenceUID)
    write(datasets + clash[2:3], tmp_path / "b")
    with pytest.raises(SeriesError, match="duplicate slice position"):
        load_series(tmp_path / "b")


def test_localizer_mixed_in_is_left_out(tmp_path: Path) -> None:
    datasets = make_series(n=5)
    scout = make_series(
        n=1, iop=(1, 0, 0, 0, 0, -1), series_uid=datasets[0].SeriesInstanceUID,
        frame_uid=datasets[0].FrameOfReferenceUID, rows=12, cols=10,
    )[0]
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    write([*datasets, scout], tmp_path)
    image, report = read_series(tmp_path)
    assert report.valid and report.n_localizers == 1 and "localizer" in report.flags
    assert image.GetSize() == (10, 12, 5)


def test_mixed_orientations_excluded(tmp_path: Path) -> None:
    datasets = make_series(n=5)
    other = make_series(n=2, iop=(1, 0, 0, 0, 0, -1), series_uid=datasets[0].SeriesInstanceUID)
    write(datasets + other, tmp_path)
    report = inspect_series(tmp_path)
    assert "mixed_orientation" in report.flags and "mixed orientations" in report.reason


def test_two_phases_in_one_series_excluded(tmp_path: Path) -> None:
    arterial = make_series(n=4)
    venous = make_series(n=4, series_uid=arterial[0].SeriesInstanceUID, frame_uid=arterial[0].FrameOfReferenceUID)
    for ds in arterial:
        ds.AcquisitionNumber = 1
    for ds in venous:
        ds.AcquisitionNumber = 2
    write(arterial + venous, tmp_path)
    report = inspect_series(tmp_path)
    assert "multi_phase" in report.flags
    with pytest.raises(SeriesError, match="multiple acquisitions or phases"):
        load_series(tmp_path)


def test_folder_with_two_series_needs_a_choice(tmp_path: Path) -> None:
    first, second = make_series(n=3), make_series(n=4)
    write(first + second, tmp_path)
    with pytest.raises(SeriesError, match="more than one image series"):
        load_series(tmp_path)
    assert load_series(tmp_path, second[0].SeriesInstanceUID).GetSize()[2] == 4

"""Enhanced multi-frame images as volumes: the IBSI CT phantom converted to Legacy Converted Enhanced CT,
pydicom-data's enhanced CT and MR test files, QC on frames, several stacks, SEG on frames, case discovery."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pacs_workbench.preprocess import find_cases, load_mask, scan_tree
from pacs_workbench.preprocess.series import SeriesError, load_series, load_volumes, read_series

pytestmark = pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent:UserWarning")


def _phantom_dir() -> Path:
    reference = os.environ.get("PACS_WORKBENCH_REFERENCE")
    if not reference:
        pytest.skip("PACS_WORKBENCH_REFERENCE is not set (IBSI CT phantom reference data)")
    return Path(reference) / "ibsi" / "ct_radiomics_phantom" / "dicom"


def _convert(datasets: Sequence[pydicom.Dataset], path: Path) -> pydicom.Dataset:
    """Classic CT slices to one Legacy Converted Enhanced CT image written to ``path``."""
    import highdicom as hd
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    image = LegacyConvertedEnhancedCTImage(
        datasets, series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(path)
    return image


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The classic series, its volume, and the same slices as a Legacy Converted Enhanced CT image."""
    root = _phantom_dir()
    files = sorted((root / "image").glob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    out = tmp_path_factory.mktemp("enhanced")
    enhanced_path = out / "enhanced" / "image.dcm"
    enhanced = _convert(datasets, enhanced_path)
    return {
        "datasets": datasets,
        "classic": load_series(root / "image"),
        "enhanced_path": enhanced_path,
        "enhanced": enhanced,
        "rtstruct": root / "mask" / "DCM_RS_00060.dcm",
        "out": out,
    }


def _same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-12)


def test_legacy_converted_phantom_is_the_classic_volume_voxel_for_voxel(phantom: dict) -> None:
    image, report = read_series(phantom["enhanced_path"].parent)
    classic = phantom["classic"]
    _same_geometry(image, classic)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(classic))
    assert report.n_files == 1 and report.n_slices == 60
    assert report.frame_groups == ["StackID=1"] and report.valid


def test_rtstruct_mask_on_the_enhanced_volume_is_the_classic_mask(phantom: dict) -> None:
    enhanced = load_series(phantom["enhanced_path"])
    on_enhanced = sitk.GetArrayFromImage(load_mask(phantom["rtstruct"], enhanced))
    on_classic = sitk.GetArrayFromImage(load_mask(phantom["rtstruct"], phantom["classic"]))
    assert on_classic.sum() > 1000
    assert np.array_equal(on_enhanced, on_classic)


def test_seg_referencing_enhanced_frames_gives_the_mask(phantom: dict) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    enhanced_ds = phantom["enhanced"]
    enhanced = load_series(phantom["enhanced_path"])
    mask = sitk.GetArrayFromImage(load_mask(phantom["rtstruct"], enhanced)).astype(bool)
    # SEG frames follow the source frames: frame k lies at its Plane Position, i.e. volume slice index_k.
    frames = enhanced_ds.PerFrameFunctionalGroupsSequence
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]
    order = np.argsort(np.argsort(z))
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="GTV", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=[enhanced_ds], pixel_array=mask[order].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
        series_instance_uid=hd.UID(), series_number=901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="workbench", manufacturer_model_name="test", software_versions="0", device_serial_number="0",
    )
    path = phantom["out"] / "seg.dcm"
    seg.save_as(path)
    loaded = sitk.GetArrayFromImage(load_mask(path, enhanced))
    assert np.array_equal(loaded.astype(bool), mask)


def test_per_frame_rescale_is_applied(phantom: dict, tmp_path: Path) -> None:
    # Half the slices store values 24 higher with an intercept 24 lower: the same HU, a per-frame
    # Pixel Value Transformation Sequence in the converted image.
    datasets = [copy.deepcopy(ds) for ds in phantom["datasets"]]
    for ds in datasets[::2]:
        ds.PixelData = (ds.pixel_array.astype(np.int32) + 24).astype(ds.pixel_array.dtype).tobytes()
        ds.RescaleIntercept = float(ds.RescaleIntercept) - 24
    converted = _convert(datasets, tmp_path / "rescaled.dcm")
    assert "PixelValueTransformationSequence" in converted.PerFrameFunctionalGroupsSequence[0]
    image = load_series(tmp_path / "rescaled.dcm")
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(phantom["classic"]))


def test_missing_frames_are_found_as_missing_slices(phantom: dict, tmp_path: Path) -> None:
    datasets = [ds for i, ds in enumerate(phantom["datasets"]) if i not in (20, 21)]
    _convert(datasets, tmp_path / "gap.dcm")
    with pytest.raises(SeriesError) as info:
        load_series(tmp_path / "gap.dcm")
    assert info.value.report is not None and "missing" in info.value.report.flags
    assert "2 missing slice(s)" in info.value.reason


def test_two_stacks_are_two_volumes_or_refused(phantom: dict, tmp_path: Path) -> None:
    ds = pydicom.dcmread(phantom["enhanced_path"])
    frames = ds.PerFrameFunctionalGroupsSequence
    # Alternate slices (along z) go to stack 1 and stack 2.
    rank = np.argsort(np.argsort([float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]))
    for k, frame in enumerate(frames):
        frame.FrameContentSequence[0].StackID = "1" if rank[k] % 2 == 0 else "2"
    path = tmp_path / "stacks.dcm"
    ds.save_as(path)
    with pytest.raises(SeriesError) as info:
        load_series(path)
    assert "2 stacks or temporal positions" in info.value.reason
    volumes = load_volumes(path)
    assert sorted(volumes) == ["StackID=1", "StackID=2"]
    classic = sitk.GetArrayFromImage(phantom["classic"])
    assert np.array_equal(sitk.GetArrayFromImage(volumes["StackID=1"]), classic[0::2])
    assert np.array_equal(sitk.GetArrayFromImage(volumes["StackID=2"]), classic[1::2])
    assert volumes["StackID=1"].GetSpacing()[2] == pytest.approx(6.0)


def test_enhanced_image_is_one_series_in_case_discovery(phantom: dict, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "img").mkdir(parents=True)
    (root / "img" / "ct.dcm").write_bytes(phantom["enhanced_path"].read_bytes())
    scan = scan_tree(root, progress=False)
    assert len(scan.series) == 1
    row = scan.series.iloc[0]
    assert bool(row["valid"]) and int(row["n_slices"]) == 60 and int(row["n_files"]) == 1
    assert len(find_cases(root, progress=False)) == 0  # no mask in the tree: a series, no case


def test_pydicom_enhanced_ct_loads_and_enhanced_mr_is_refused_for_its_geometry() -> None:
    data = pytest.importorskip("pydicom.data")
    try:
        ct_path = data.get_testdata_file("eCT_Supplemental.dcm")
        mr_path = data.get_testdata_file("emri_small.dcm")
    except Exception as exc:  # pragma: no cover - pydicom-data not installed
        pytest.skip(f"pydicom-data test files unavailable ({type(exc).__name__})")
    image, report = read_series([ct_path])
    assert image.GetSize() == (512, 512, 2)
    assert image.GetSpacing() == pytest.approx((0.388672, 0.388672, 10.0))
    assert report.Modality == "CT" and report.valid
    # Modality values (HU), not the real-world rCBF map the file also carries.
    raw = pydicom.dcmread(ct_path).pixel_array.astype(float) - 1024
    assert float(sitk.GetArrayFromImage(image).mean()) == pytest.approx(float(raw.mean()), abs=1e-3)
    with pytest.raises(SeriesError) as info:
        load_series([mr_path])
    assert "Per-frame Functional Groups" in info.value.reason
    assert "not supported" not in info.value.reason

"""Preprocessing stage: series geometry, masks (SEG, RTSTRUCT, label maps), the pipeline, caching,
case discovery, the IBSI CT phantom and the QC notebook.

Every fixture is real DICOM written here with pydicom (series, RTSTRUCT) and highdicom (SEG).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from pacs_workbench.preprocess import pipeline as pp
from pacs_workbench.preprocess.series import inspect_series, read_series, scrub_paths

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
PATIENT_NAME = "Testperson^Hilda"
PATIENT_ID = "MRN99812"


# --- builders --------------------------------------------------------------------------------------


def _unit(v: Any) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def make_series(
    *,
    n: int = 6,
    rows: int = 12,
    cols: int = 10,
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    dz: float = 2.5,
    origin: tuple[float, float, float] = (-10.0, -12.0, 5.0),
    iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    drift_mm: tuple[float, float] = (0.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    manufacturer: str = "ACME",
    positions: list[float] | None = None,
    values: Callable[[int], np.ndarray] | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    patient_id: str = PATIENT_ID,
    deidentified: bool = False,
) -> list[Dataset]:
    """CT/MR slices; slice k lies at ``origin + d_k * normal (+ k * drift in plane)``.

    Pixel value (after rescale) of slice k at (r, c) is ``100 * k + r + c`` unless ``values`` is given,
    so a test can tell which slice ended up where.
    """
    row_dir, col_dir = _unit(iop[:3]), _unit(iop[3:])
    normal = np.cross(row_dir, col_dir)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    distances = positions if positions is not None else [k * dz for k in range(n)]
    out = []
    for k, d in enumerate(distances):
        ipp = np.asarray(origin) + d * normal + k * drift_mm[0] * row_dir + k * drift_mm[1] * col_dir
        ds = Dataset()
        meta = FileMetaDataset()
        sop = generate_uid()
        sop_class = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.Manufacturer = modality, manufacturer
        ds.PatientName, ds.PatientID = PATIENT_NAME, patient_id
        if deidentified:
            ds.PatientIdentityRemoved = "YES"
        ds.PatientBirthDate, ds.PatientSex = "19600101", "F"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20200101", "120000", "A1", ""
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 2, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        # DS values hold at most 16 characters.
        ds.ImagePositionPatient = [round(float(v), 6) for v in ipp]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in iop]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        rr, cc = np.mgrid[0:rows, 0:cols]
        real = values(k) if values is not None else 100.0 * k + rr + cc
        stored = np.round((np.asarray(real, dtype=float) - intercept) / slope).astype(np.int16)
        ds.PixelData = stored.tobytes()
        out.append(ds)
    return out


def write(datasets: list[Dataset], folder: Path, names: str = "sop") -> list[Path]:
    """Write datasets; ``names`` = ``sop`` (UID file names, unordered) or ``shuffled`` (numbers in random order)."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(3).permutation(len(datasets))
    paths = []
    for i, ds in enumerate(datasets):
        name = f"{ds.SOPInstanceUID}.dcm" if names == "sop" else f"IMG{order[i]:04d}"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_seg(source: list[Dataset], mask: np.ndarray, *, segments: int = 1) -> Dataset:
    """A binary highdicom SEG; ``mask`` is (slices, rows, cols) bool or int labels 1..segments."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=f"lesion {i}",
            segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
            segmented_property_type=hd.sr.CodedConcept("4147007", "SCT", "Mass"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i in range(1, segments + 1)
    ]
    pixel_array = mask.astype(np.uint8) if segments > 1 else mask.astype(bool)
    if segments > 1:
        pixel_array = np.stack([(mask == i) for i in range(1, segments + 1)], axis=-1).astype(np.uint8)
    return hd.seg.Segmentation(
        source_images=source,
        pixel_array=pixel_array,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=100,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="ACME",
        manufacturer_model_name="seg",
        software_versions="1",
        device_serial_number="1",
    )


def make_rtstruct(source: list[Dataset], rois: dict[int, list[np.ndarray]]) -> Dataset:
    """An RTSTRUCT on ``source`` with ``rois``: ROI number -> list of (n, 3) closed contours in LPS mm."""
    first = source[0]
    ds = Dataset()
    meta = FileMetaDataset()
    sop = generate_uid()
    meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTSTRUCT_STORAGE, sop, "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, generate_uid()
    ds.PatientName, ds.PatientID = first.PatientName, first.PatientID
    ds.StructureSetLabel = "lesions"
    contour_images = DicomSequence()
    for image in source:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
        contour_images.append(item)
    series_item = Dataset()
    series_item.SeriesInstanceUID = first.SeriesInstanceUID
    series_item.ContourImageSequence = contour_images
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_item.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_item.RTReferencedSeriesSequence = DicomSequence([series_item])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    roi_items, contour_items = DicomSequence(), DicomSequence()
    for number, polygons in rois.items():
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, first.FrameOfReferenceUID
        roi.ROIName, roi.ROIGenerationAlgorithm = f"GTV-{number}", "MANUAL"
        roi_items.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = [255, 0, 0]
        contours = DicomSequence()
        for polygon in polygons:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(polygon)
            contour.ContourData = [round(float(v), 4) for v in np.asarray(polygon).ravel()]
            contours.append(contour)
        item.ContourSequence = contours
        contour_items.append(item)
    ds.StructureSetROISequence = roi_items
    ds.ROIContourSequence = contour_items
    return ds


def rectangle(ds: Dataset, c0: float, r0: float, c1: float, r1: float) -> np.ndarray:
    """A closed contour on slice ``ds`` through the pixel-index corners (c0, r0) and (c1, r1)."""
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    row_dir, col_dir = _unit(ds.ImageOrientationPatient[:3]), _unit(ds.ImageOrientationPatient[3:])
    dy, dx = (float(v) for v in ds.PixelSpacing)
    corners = [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]
    return np.array([ipp + c * dx * row_dir + r * dy * col_dir for c, r in corners])


def array_of(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


# --- series geometry ---------------------------------------------------------------------------------


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
    image = pp.load_series(tmp_path / "s")
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
    volume = array_of(pp.load_series(tmp_path))
    assert volume.dtype == np.float32
    assert volume[:, 0, 0].tolist() == [-600.0, -560.0, -520.0]


def test_missing_slice_excluded_with_reason(tmp_path: Path) -> None:
    datasets = make_series(n=8)
    del datasets[4]
    write(datasets, tmp_path)
    report = inspect_series(tmp_path)
    assert not report.valid and report.n_missing == 1 and "missing" in report.flags
    with pytest.raises(pp.SeriesError, match="1 missing slice"):
        pp.load_series(tmp_path)


def test_non_uniform_spacing_excluded(tmp_path: Path) -> None:
    write(make_series(positions=[0.0, 2.5, 5.0, 8.2, 10.0, 12.5]), tmp_path)
    with pytest.raises(pp.SeriesError, match="non-uniform slice spacing") as caught:
        pp.load_series(tmp_path)
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
    with pytest.raises(pp.SeriesError, match="gantry tilt"):
        pp.load_series(tmp_path)
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
    with pytest.raises(pp.SeriesError, match="duplicate slice position"):
        pp.load_series(tmp_path / "b")


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
    with pytest.raises(pp.SeriesError, match="multiple acquisitions or phases"):
        pp.load_series(tmp_path)


def test_folder_with_two_series_needs_a_choice(tmp_path: Path) -> None:
    first, second = make_series(n=3), make_series(n=4)
    write(first + second, tmp_path)
    with pytest.raises(pp.SeriesError, match="more than one image series"):
        pp.load_series(tmp_path)
    assert pp.load_series(tmp_path, second[0].SeriesInstanceUID).GetSize()[2] == 4


def test_scrub_paths_removes_folders_from_reasons() -> None:
    text = "[Errno 2] No such file or directory: '/data/Smith_John_123/ct/0001.dcm'"
    assert "Smith" not in scrub_paths(text) and "<path>" in scrub_paths(text)


# --- masks ---------------------------------------------------------------------------------------------


@pytest.fixture
def ct(tmp_path: Path) -> dict[str, Any]:
    datasets = make_series(n=6, rows=12, cols=10)
    write(datasets, tmp_path / "ct")
    return {"datasets": datasets, "folder": tmp_path / "ct", "image": pp.load_series(tmp_path / "ct")}


def test_seg_round_trip_and_segment_choice(ct: dict[str, Any], tmp_path: Path) -> None:
    labels = np.zeros((6, 12, 10), dtype=np.uint8)
    labels[1:3, 2:5, 3:7] = 1
    labels[4, 6:9, 1:4] = 2
    seg = make_seg(ct["datasets"], labels, segments=2)
    seg.save_as(tmp_path / "seg.dcm")
    both = array_of(pp.load_mask(tmp_path / "seg.dcm", ct["image"]))
    assert np.array_equal(both, labels > 0)
    second, report = pp.read_mask(tmp_path / "seg.dcm", ct["image"], segment=2)
    assert np.array_equal(array_of(second), labels == 2)
    assert report.references_image_series and report.on_grid and report.mask_source == "SEG"
    with pytest.raises(pp.MaskError, match="segment 3 is not in the SEG"):
        pp.load_mask(tmp_path / "seg.dcm", ct["image"], segment=3)


def test_seg_on_another_series_is_reported(ct: dict[str, Any], tmp_path: Path) -> None:
    mask = np.zeros((6, 12, 10), dtype=bool)
    mask[2, 3:6, 3:6] = True
    # Same frame of reference, another series (e.g. another reconstruction): usable, but flagged.
    sibling = make_series(n=6, frame_uid=ct["datasets"][0].FrameOfReferenceUID)
    make_seg(sibling, mask).save_as(tmp_path / "sibling.dcm")
    loaded, report = pp.read_mask(tmp_path / "sibling.dcm", ct["image"])
    assert report.references_image_series is False and "mask_other_series" in report.flags
    assert array_of(loaded).sum() == 9
    # Another frame of reference: positions mean nothing on this image.
    stranger = make_series(n=6)
    make_seg(stranger, mask).save_as(tmp_path / "stranger.dcm")
    with pytest.raises(pp.MaskError, match="another frame of reference"):
        pp.load_mask(tmp_path / "stranger.dcm", ct["image"])


def test_rtstruct_even_odd_holes_and_roi_choice(ct: dict[str, Any], tmp_path: Path) -> None:
    ds = ct["datasets"]
    outer = rectangle(ds[2], 1.5, 1.5, 8.5, 9.5)  # voxel centres 2..8 (cols) x 2..9 (rows): 7 x 8 = 56
    hole = rectangle(ds[2], 3.5, 3.5, 6.5, 6.5)  # centres 4..6 x 4..6 = 9
    other = rectangle(ds[4], 0.5, 0.5, 2.5, 2.5)  # centres 1..2 x 1..2 = 4
    make_rtstruct(ds, {1: [outer, hole], 2: [other]}).save_as(tmp_path / "rs.dcm")
    first, report = pp.read_mask(tmp_path / "rs.dcm", ct["image"], segment=1)
    mask = array_of(first)
    assert mask.sum() == 56 - 9 and mask[2, 5, 5] == 0 and mask[2, 2, 2] == 1
    assert report.mask_source == "RTSTRUCT" and report.n_contours == 2 and report.references_image_series
    union = array_of(pp.load_mask(tmp_path / "rs.dcm", ct["image"]))
    assert union.sum() == 47 + 4 and union[4, 1:3, 1:3].all()


def test_rtstruct_outside_the_image_does_not_overlap(ct: dict[str, Any], tmp_path: Path) -> None:
    far = rectangle(ct["datasets"][2], 40, 40, 45, 45)
    make_rtstruct(ct["datasets"], {1: [far]}).save_as(tmp_path / "rs.dcm")
    with pytest.raises(pp.MaskError, match=r"empty|does not overlap") as caught:
        pp.load_mask(tmp_path / "rs.dcm", ct["image"])
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
        loaded, report = pp.read_mask(tmp_path / name, image, segment=3)
        assert np.array_equal(array_of(loaded), labels == 3) and report.mask_source == "labelmap" and report.on_grid
    # Written the way nibabel (and 3D Slicer) write NIfTI: RAS affine, (i, j, k) array order.
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = matrix, image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), affine), tmp_path / "slicer.nii.gz")
    assert np.array_equal(array_of(pp.load_mask(tmp_path / "slicer.nii.gz", image, segment=3)), labels == 3)
    # Two overlapping layers (a .seg.nrrd with layers reads as a two-component image).
    layers = sitk.Compose(sitk.GetImageFromArray((labels == 3).astype(np.uint8)),
                          sitk.GetImageFromArray((labels == 1).astype(np.uint8) * 2))
    layers.CopyInformation(image)
    sitk.WriteImage(layers, str(tmp_path / "layers.nrrd"))
    assert np.array_equal(array_of(pp.load_mask(tmp_path / "layers.nrrd", image)), labels > 0)
    # A finer grid (e.g. a segmentation tool's supersampled label map) comes back by position.
    fine = sitk.Resample(label_image, [20, 24, 12], sitk.Transform(), sitk.sitkNearestNeighbor,
                         image.TransformContinuousIndexToPhysicalPoint((-0.25, -0.25, -0.25)),
                         [s / 2 for s in image.GetSpacing()], image.GetDirection(), 0, sitk.sitkUInt8)
    sitk.WriteImage(fine, str(tmp_path / "fine.nii.gz"))
    loaded, report = pp.read_mask(tmp_path / "fine.nii.gz", image, segment=3)
    assert not report.on_grid and "mask_resampled" in report.flags
    assert np.array_equal(array_of(loaded), labels == 3)
    moved = sitk.Image(label_image)
    moved.SetOrigin([v + 500 for v in image.GetOrigin()])
    sitk.WriteImage(moved, str(tmp_path / "moved.nii.gz"))
    with pytest.raises(pp.MaskError, match="does not overlap"):
        pp.load_mask(tmp_path / "moved.nii.gz", image)


# --- the pipeline ------------------------------------------------------------------------------------


def test_target_grid_keeps_the_centre_and_rounds_up() -> None:
    image = sitk.Image([204, 201, 60], sitk.sitkFloat32)
    image.SetSpacing([0.977, 0.977, 3.0])
    image.SetOrigin([-174.4, -79.6, -100.4])
    grid = pp.target_grid(image, (2, 2, 2), "center")
    assert grid.size == (100, 99, 90)  # ceil(204 * 0.977 / 2), ceil(201 * 0.977 / 2), ceil(60 * 3 / 2)
    centre_in = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    centre_out = grid.index_to_physical(np.array([(n - 1) / 2 for n in grid.size]))[0]
    assert np.allclose(centre_in, centre_out)
    in_plane = pp.target_grid(image, (2, 2, 0), "center")
    assert in_plane.size == (100, 99, 60) and in_plane.spacing[2] == 3.0
    corner = pp.target_grid(image, (2, 2, 2), "corner")
    assert corner.origin[0] == pytest.approx(-174.4 + (2 - 0.977) / 2)


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
    out, out_mask, info = pp.preprocess_image(image, mask, params)
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
    _, linear, _ = pp.preprocess_image(image, mask, params, modality="CT")
    _, nearest, _ = pp.preprocess_image(image, mask, {**params, "mask_interpolator": "nearest"}, modality="CT")
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
    out, _, info = pp.preprocess_image(image, mask, params, modality="MR")
    assert [s["step"] for s in info["steps"]] == ["load", "bias_field", "denoise", "normalize"]
    values = array_of(out)
    inside = values[body]
    raw_inside = volume[body]
    # N4 flattens the left-right gradient inside the body.
    cv_before = raw_inside.std() / raw_inside.mean()
    corrected = array_of(pp.preprocess_image(image, mask, {**params, "normalization": "none", "denoise": "none"},
                                             modality="MR")[0])[body]
    assert corrected.std() / corrected.mean() < 0.5 * cv_before
    # z-score over the (Otsu) foreground: the body has mean ~0 and unit spread before denoising ...
    plain = array_of(pp.preprocess_image(image, mask, {**params, "denoise": "none"}, modality="MR")[0])[body]
    assert abs(plain.mean()) < 0.1 and 0.8 < plain.std() < 1.2
    # ... and the median filter then removes most of the (white) noise.
    assert abs(inside.mean()) < 0.1 and inside.std() < 0.6 * plain.std()
    # The same parameters leave a CT untouched by MR-only steps.
    ct_image, ct_mask = _ct_with_mask()
    _, _, ct_info = pp.preprocess_image(ct_image, ct_mask, params, modality="CT")
    assert [s["step"] for s in ct_info["steps"]] == ["load", "denoise"]


def test_params_validation_and_effective_parameters() -> None:
    with pytest.raises(ValueError, match="unknown preprocessing parameter"):
        pp.PreprocessParams.coerce({"spacing": 1})
    with pytest.raises(ValueError, match="interpolator must be one of"):
        pp.PreprocessParams(interpolator="cubic")
    p = pp.PreprocessParams.coerce({"target_spacing_mm": [2, 2, 0], "hu_window": [], "normalization": "zscore"})
    assert p.target_spacing_mm == (2.0, 2.0, 0.0) and p.hu_window is None
    assert "normalization" in p.effective("MR") and "normalization" not in p.effective("CT")
    assert "round_ct" in p.effective("CT") and "round_ct" not in p.effective("MR")


# --- trees, cases, the cached run -----------------------------------------------------------------


def build_tree(root: Path, *, deidentified: bool = False) -> dict[str, Any]:
    """Two patients: A has a CT with one SEG per nodule and an RTSTRUCT on the same CT (SEG preferred),
    a localizer series and a text file; B has a CT with an RTSTRUCT of two ROIs, written flat with
    numbered file names, plus a tilted CT with an RTSTRUCT (excluded) and a SEG on a series not in the tree.
    """
    a = make_series(n=6, rows=16, cols=16, patient_id="MRN-A-5531", deidentified=deidentified, manufacturer="SIEMENS")
    write(a, root / "patient_a" / "study" / "ct")
    for i, (zs, rs, cs) in enumerate([((1, 3), (3, 7), (3, 7)), ((3, 5), (9, 13), (8, 12))]):
        mask = np.zeros((6, 16, 16), dtype=bool)
        mask[zs[0] : zs[1], rs[0] : rs[1], cs[0] : cs[1]] = True
        seg = make_seg(a, mask)
        write([seg], root / "patient_a" / "study" / f"seg{i}")
    write([make_rtstruct(a, {1: [rectangle(a[2], 2.5, 2.5, 6.5, 6.5)]})], root / "patient_a" / "study" / "rt")
    scout = make_series(n=1, rows=16, cols=16, iop=(1, 0, 0, 0, 0, -1), patient_id="MRN-A-5531",
                        deidentified=deidentified, study_uid=a[0].StudyInstanceUID)[0]
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    write([scout], root / "patient_a" / "study" / "scout")
    (root / "patient_a" / "notes.txt").write_text("not DICOM")

    b = make_series(n=5, rows=16, cols=16, patient_id="MRN-B-7700", deidentified=deidentified,
                    manufacturer="GE MEDICAL SYSTEMS")
    rt = make_rtstruct(b, {1: [rectangle(b[1], 1.5, 1.5, 5.5, 5.5)], 7: [rectangle(b[3], 8.5, 8.5, 12.5, 12.5)]})
    write([*b, rt], root / "flat", names="shuffled")
    tilted = make_series(n=5, rows=16, cols=16, drift_mm=(0.0, 1.0), patient_id="MRN-B-7700",
                         deidentified=deidentified, manufacturer="GE MEDICAL SYSTEMS")
    write([*tilted, make_rtstruct(tilted, {1: [rectangle(tilted[2], 4.5, 4.5, 8.5, 8.5)]})], root / "tilted")
    orphan_source = make_series(n=3, rows=16, cols=16)
    orphan = make_seg(orphan_source, np.ones((3, 16, 16), dtype=bool))
    write([orphan], root / "orphan")
    return {"a": a, "b": b, "tilted": tilted}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tree")
    info = build_tree(root / "dicom")
    info["root"] = root / "dicom"
    return info


def test_find_cases_groups_by_header_and_matches_masks(tree: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACS_WORKBENCH_KEY_FILE", raising=False)
    scan = pp.scan_tree(tree["root"], progress=False)
    cases = scan.cases
    a_uid, b_uid = tree["a"][0].SeriesInstanceUID, tree["b"][0].SeriesInstanceUID
    assert sorted(cases.groupby("SeriesInstanceUID").size().items()) == sorted(
        [(a_uid, 2), (b_uid, 2), (tree["tilted"][0].SeriesInstanceUID, 1)]
    )
    assert set(cases.loc[cases.SeriesInstanceUID == a_uid, "mask_source"]) == {"SEG"}
    assert sorted(cases.loc[cases.SeriesInstanceUID == b_uid, "segment_number"]) == [1, 7]
    assert cases["case_id"].is_unique and cases["case_id"].str.match(r"^[0-9a-f]{10}_[0-9a-f]{6}$").all()
    assert cases["case_id"].tolist() == pp.find_cases(tree["root"], progress=False)["case_id"].tolist()
    # Not de-identified and no key: per-scan pseudonyms, never the MRN.
    assert (cases["pseudo_patient_id_scope"] == "run").all()
    assert not cases["pseudo_patient_id"].str.contains("MRN").any()
    assert cases.groupby("SeriesInstanceUID")["pseudo_patient_id"].nunique().max() == 1
    masks = scan.masks.set_index("mask_source")
    assert (~scan.masks["matched"]).sum() == 1  # the orphan SEG
    assert masks.loc["RTSTRUCT"].query("SeriesInstanceUID == @a_uid")["reason"].str.contains("SEG").all()
    assert scan.n_not_dicom == 1 and scan.n_unreadable == 0
    series = pp.series_table(scan)
    assert {"localizer", "tilt"} <= set(", ".join(series["flags"]).split(", "))
    assert "SeriesInstanceUID" not in series.columns and "series_folder" not in series.columns


def test_pseudonyms_from_key_or_deidentified_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacs_workbench.core.pseudonym import generate_key, load_key, pseudonymize

    key_file = generate_key(tmp_path / "project.key")
    monkeypatch.setenv("PACS_WORKBENCH_KEY_FILE", str(key_file))
    root = tmp_path / "raw"
    info = build_tree(root)
    cases = pp.find_cases(root, progress=False)
    expected = pseudonymize(load_key(key_file), "MRN-A-5531", "patient")
    a_rows = cases[cases.SeriesInstanceUID == info["a"][0].SeriesInstanceUID]
    assert (a_rows["pseudo_patient_id"] == expected).all() and (a_rows["pseudo_patient_id_scope"] == "key").all()
    deid_root = tmp_path / "deid"
    build_tree(deid_root, deidentified=True)
    deid_cases = pp.find_cases(deid_root, progress=False)
    assert (deid_cases["pseudo_patient_id_scope"] == "deid").all()
    assert set(deid_cases["pseudo_patient_id"]) == {"MRN-A-5531", "MRN-B-7700"}  # already pseudonyms there


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.nii.gz")}


def test_preprocess_cases_writes_caches_and_redoes_only_what_changed(tree: dict[str, Any], tmp_path: Path) -> None:
    cases = pp.find_cases(tree["root"], progress=False)
    out = tmp_path / "out"
    params = {"target_spacing_mm": [1.0, 1.0, 1.0], "crop_margin_mm": 3.0}
    first = pp.preprocess_cases(cases, out, params, workers=2, progress=False)
    status = first.set_index("case_id")["status"]
    assert (status == "ok").sum() == 4 and (status == "excluded").sum() == 1
    excluded = first[first.status == "excluded"].iloc[0]
    assert excluded["stage"] == "series" and "gantry tilt" in excluded["reason"] and "tilt" in excluded["flags"]
    for row in first[first.status == "ok"].itertuples():
        image, mask = sitk.ReadImage(row.image), sitk.ReadImage(row.mask)
        assert image.GetSpacing() == pytest.approx((1, 1, 1)) and mask.GetSize() == image.GetSize()
        assert array_of(mask).sum() == row.mask_voxels_out > 0
        assert Path(row.image).name == f"{row.case_id}_image.nii.gz"
        assert [s["step"] for s in json.loads(row.steps)][:2] == ["load", "resample"]
    table = pd.read_csv(out / "cases.csv")
    assert list(table.columns[:3]) == ["case_id", "image", "mask"] and len(table) == 4
    assert {"SeriesInstanceUID", "mask_source", "pseudo_patient_id", "StudyDate", "Manufacturer"} <= set(table.columns)
    assert pd.read_parquet(out / "preprocess.parquet").shape[0] == 5
    # Nothing identifying in the outputs: no patient name, MRN, or source folder.
    for file in [out / "cases.csv", out / "preprocess.parquet", *sorted((out / "volumes").glob("*.json"))]:
        text = file.read_bytes()
        for secret in (b"Testperson", b"MRN-A-5531", b"MRN-B-7700", str(tree["root"]).encode()):
            assert secret not in text, (file.name, secret)

    before = _mtimes(out / "volumes")
    second = pp.preprocess_cases(cases, out, params, workers=1, progress=False)
    assert second["cached"].all() and _mtimes(out / "volumes") == before
    assert second.drop(columns=["cached", "elapsed_s"]).equals(first.drop(columns=["cached", "elapsed_s"]))

    # An MR-only parameter cannot change CT cases: still nothing to do.
    third = pp.preprocess_cases(cases, out, {**params, "normalization": "zscore"}, progress=False)
    assert third["cached"].all()

    # A parameter that matters redoes every case; a changed mask file only its own cases.
    fourth = pp.preprocess_cases(cases, out, {**params, "crop_margin_mm": 5.0}, progress=False)
    assert not fourth["cached"].any()
    rt_path = cases.loc[cases.mask_source == "RTSTRUCT", "mask_path"].iloc[0]
    ds = pydicom.dcmread(rt_path)
    ds.StructureSetLabel = "edited"
    ds.save_as(rt_path)
    fifth = pp.preprocess_cases(cases, out, {**params, "crop_margin_mm": 5.0}, progress=False)
    redone = set(fifth.loc[~fifth["cached"], "case_id"])
    assert redone == set(cases.loc[cases.mask_path == rt_path, "case_id"])


def test_bad_cases_are_accounted_for(tree: dict[str, Any], tmp_path: Path) -> None:
    folder = str(tree["root"] / "patient_a" / "study" / "ct")
    seg = next((tree["root"] / "patient_a" / "study" / "seg0").iterdir())
    cases = [
        ("good", folder, str(seg)),
        ("no-mask-file", folder, str(tmp_path / "missing.nii.gz")),
        ("bad id/../x", folder, str(seg)),
        ("empty-folder", str(tmp_path), str(seg)),
    ]
    (tmp_path / "junk.txt").write_text("x")
    result = pp.preprocess_cases(cases, tmp_path / "out", {"target_spacing_mm": None}, progress=False)
    by_id = result.set_index("case_id")
    assert by_id.loc["good", "status"] == "ok"
    assert by_id.loc["bad id/../x", "status"] == "error" and "case_id" in by_id.loc["bad id/../x", "reason"]
    assert by_id.loc["empty-folder", "status"] == "excluded" and "no image files" in by_id.loc["empty-folder", "reason"]
    assert by_id.loc["no-mask-file", "status"] in ("excluded", "error")
    assert str(tmp_path) not in " ".join(result["reason"].fillna(""))
    # Provenance the tuples did not carry comes from the headers and the mask file.
    assert by_id.loc["good", "mask_source"] == "SEG" and by_id.loc["good", "Manufacturer"] == "SIEMENS"
    assert by_id.loc["good", "SeriesInstanceUID"] == tree["a"][0].SeriesInstanceUID
    # Native grid kept when no target spacing is given.
    good = sitk.ReadImage(by_id.loc["good", "image"])
    assert good.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))


def test_truncated_file_is_reported_not_silently_dropped(tmp_path: Path) -> None:
    datasets = make_series(n=6)
    paths = write(datasets, tmp_path / "ct")
    mask = np.zeros((6, 12, 10), dtype=bool)
    mask[1:3, 3:6, 3:6] = True
    make_seg(datasets, mask).save_as(tmp_path / "seg.dcm")
    top = paths[-1]  # the highest slice: losing it leaves no gap to notice
    top.write_bytes(top.read_bytes()[:-100])
    result = pp.preprocess_cases([("c1", str(tmp_path / "ct"), str(tmp_path / "seg.dcm"))], tmp_path / "out",
                                 {"target_spacing_mm": None}, progress=False)
    row = result.iloc[0]
    assert row["status"] == "ok" and row["n_slices"] == 5
    assert "unreadable_files" in row["flags"] and any("unreadable" in w for w in row["warnings"])


def test_no_cases_still_writes_empty_tables(tmp_path: Path) -> None:
    result = pp.preprocess_cases([], tmp_path / "out", progress=False)
    assert result.empty and "status" in result.columns
    assert list(pd.read_csv(tmp_path / "out" / "cases.csv").columns) == pp.CASES_COLUMNS


@pytest.mark.slow
def test_dask_cluster_gives_the_same_volumes(tree: dict[str, Any], tmp_path: Path) -> None:
    from distributed import LocalCluster

    cases = pp.find_cases(tree["root"], progress=False)
    params = {"target_spacing_mm": [1.0, 1.0, 1.0], "interpolator": "bspline"}
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        remote = pp.preprocess_cases(cases, tmp_path / "dask", params, scheduler=cluster.scheduler_address,
                                     progress=False)
    local = pp.preprocess_cases(cases, tmp_path / "local", params, progress=False)
    assert remote["status"].tolist() == local["status"].tolist()
    for a, b in zip(remote[remote.status == "ok"].itertuples(), local[local.status == "ok"].itertuples(), strict=True):
        assert np.array_equal(array_of(sitk.ReadImage(a.image)), array_of(sitk.ReadImage(b.image)))
        assert np.array_equal(array_of(sitk.ReadImage(a.mask)), array_of(sitk.ReadImage(b.mask)))


# --- IBSI CT radiomics phantom ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom() -> dict[str, Any]:
    reference = os.environ.get("PACS_WORKBENCH_REFERENCE")
    if not reference:
        pytest.skip("PACS_WORKBENCH_REFERENCE is not set (IBSI CT phantom reference data)")
    root = Path(reference) / "ibsi" / "ct_radiomics_phantom"
    image = pp.load_series(root / "dicom" / "image")
    mask = pp.load_mask(root / "dicom" / "mask" / "DCM_RS_00060.dcm", image)
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
    _, _, info = pp.preprocess_image(phantom["image"], phantom["mask"], params)
    volume = info["mask_volume_mm3"]
    assert abs(volume - reference.loc["YEKZ", "value"]) <= reference.loc["YEKZ", "tolerance"]
    image, intensity, _ = pp.preprocess_image(
        phantom["image"], phantom["mask"], {**params, "resegment_range": list(resegment)}
    )
    mean = float(array_of(image)[array_of(intensity).astype(bool)].mean())
    assert abs(mean - reference.loc["Q4LE", "value"]) <= reference.loc["Q4LE", "tolerance"]


# --- the QC notebook -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_notebook_runs_under_papermill(tmp_path: Path) -> None:
    import nbformat
    import papermill as pm

    from pacs_workbench.core.params import NOTEBOOK_DIR

    try:
        from pacs_workbench.synth import generate  # type: ignore[attr-defined]
    except ImportError:
        generate = None
    if generate is not None:
        generate(tmp_path / "synth", patients=2)
        dicom_dir = tmp_path / "synth" / "dicom"
    else:
        dicom_dir = tmp_path / "dicom"
        build_tree(dicom_dir)
    out_dir = tmp_path / "preprocessed"
    executed = tmp_path / "03_preprocessing.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK_DIR / "03_preprocessing.ipynb"),
        str(executed),
        parameters={"dicom_dir": str(dicom_dir), "out_dir": str(out_dir), "workers": 1, "max_montage_cases": 2},
        cwd=str(tmp_path),
        progress_bar=False,
        kernel_name="python3",
    )
    assert (out_dir / "cases.csv").is_file() and (out_dir / "preprocess.parquet").is_file()
    result = pd.read_parquet(out_dir / "preprocess.parquet")
    assert (result["status"] == "ok").sum() >= 1
    notebook = nbformat.read(executed, as_version=4)
    outputs = json.dumps([cell.get("outputs", []) for cell in notebook.cells])
    secrets = ["Testperson", "MRN-A-5531", "MRN-B-7700", str(dicom_dir)]
    phi_file = tmp_path / "synth" / "truth" / "phi_values.txt"
    if phi_file.is_file():
        secrets += [v.strip() for v in phi_file.read_text().splitlines() if len(v.strip()) >= 4]
    leaked = [value for value in secrets if value.lower() in outputs.lower()]
    assert not leaked, f"{len(leaked)} identifying strings in the notebook outputs"
    source = nbformat.read(NOTEBOOK_DIR / "03_preprocessing.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in source.cells if cell.cell_type == "code")

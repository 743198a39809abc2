"""Builders of real DICOM for the preprocessing tests: series (pydicom), SEG (highdicom), RTSTRUCT,
and a whole tree of patients with masks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

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

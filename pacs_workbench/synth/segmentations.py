"""The annotation objects of one synthetic study: a SEG per nodule and an RTSTRUCT for all of them.

- Segmentation Storage (1.2.840.10008.5.1.4.1.1.66.4): one BINARY SEG per nodule, built
  with highdicom and referencing every slice of the axial series.
- RT Structure Set Storage (1.2.840.10008.5.1.4.1.1.481.3): all nodules of a study as
  closed planar contours traced along voxel edges (:func:`trace_contours`), so that filling
  each contour at voxel centres gives back exactly the SEG mask.

Both are made by a reading-room annotation tool (:data:`ANNOTATION_EQUIPMENT`); every UID
and time highdicom would draw at random is pinned to the study plan.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID
from pydicom.valuerep import DA, TM

from pacs_workbench.synth.common import make_uid
from pacs_workbench.synth.dicom_writer import (
    ANNOTATION_EQUIPMENT,
    CT_IMAGE_STORAGE,
    StudyUIDs,
    add_patient_study,
    dicom_date,
    file_meta_for,
    study_moment,
)
from pacs_workbench.synth.imaging import RenderedSeries
from pacs_workbench.synth.patients import PatientPlan, StudyPlan, staff_forms

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
SEG_SERIES_BASE = 300
RTSTRUCT_SERIES_NUMBER = 400
LOBE_CODES = {
    "RUL": hd.sr.CodedConcept("45653009", "SCT", "Upper lobe of lung"),
    "RML": hd.sr.CodedConcept("72481006", "SCT", "Middle lobe of right lung"),
    "RLL": hd.sr.CodedConcept("90572001", "SCT", "Lower lobe of lung"),
    "LUL": hd.sr.CodedConcept("44714003", "SCT", "Upper lobe of left lung"),
    "LLL": hd.sr.CodedConcept("90572001", "SCT", "Lower lobe of lung"),
}


def _pin_uids_and_times(ds: Dataset, replacements: dict[str, str]) -> None:
    """Replace library-generated UIDs everywhere in ``ds`` (recursively)."""
    for elem in ds.iterall():
        if elem.VR == "UI" and isinstance(elem.value, str) and elem.value in replacements:
            elem.value = replacements[elem.value]


def pin_seg_provenance(
    seg: Dataset, created: str, when: str, dimension_organization_uid: str, contributed: str
) -> None:
    """Pin what highdicom stamps at run time, so a seed gives the same bytes.

    ``created``/``when`` become (0008,0012) Instance Creation Date and (0008,0013) Instance Creation
    Time, every generated (0020,9164) Dimension Organization UID becomes ``dimension_organization_uid``,
    every (0018,A002) Contribution DateTime ``contributed``, and the File Meta names the annotation tool.
    """
    seg.InstanceCreationDate = DA(created)
    seg.InstanceCreationTime = TM(when)
    generated = {item.DimensionOrganizationUID: dimension_organization_uid
                 for item in seg.get("DimensionOrganizationSequence", [])}  # fmt: skip
    _pin_uids_and_times(seg, generated)
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = contributed
    seg.file_meta.ImplementationClassUID = UID(make_uid(0, "implementation", "annotation"))
    seg.file_meta.ImplementationVersionName = ANNOTATION_EQUIPMENT["version_name"]


def build_segmentation(
    plan: PatientPlan,
    study: StudyPlan,
    uids: StudyUIDs,
    ct_slices: list[Dataset],
    mask: np.ndarray,
    nodule_index: int,
    lobe: str,
) -> Dataset:
    """One BINARY DICOM SEG (highdicom) of one nodule, referencing the axial series.

    Parameters
    ----------
    ct_slices
        The axial series in Instance Number order.
    mask
        ``[k, row, column]`` along increasing z (as rendered).
    """
    order = list(range(mask.shape[0] - 1, -1, -1)) if study.protocol.descending else list(range(mask.shape[0]))
    tracking_uid = make_uid(plan.seed, "patient", plan.index, "nodule", nodule_index)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=f"Nodule {nodule_index}",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=tracking_uid,
        tracking_id=f"Nodule {nodule_index}",
        anatomic_regions=[LOBE_CODES[lobe]],
    )
    when = study_moment(study, 40.0 + nodule_index)
    series_uid = uids.instance(plan, study, "seg-series", nodule_index)
    seg = hd.seg.Segmentation(
        source_images=ct_slices,
        pixel_array=mask[order].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=series_uid,
        series_number=SEG_SERIES_BASE + nodule_index,
        sop_instance_uid=uids.instance(plan, study, "seg", nodule_index),
        instance_number=1,
        manufacturer=ANNOTATION_EQUIPMENT["manufacturer"],
        manufacturer_model_name=ANNOTATION_EQUIPMENT["model"],
        software_versions=ANNOTATION_EQUIPMENT["software"],
        device_serial_number=ANNOTATION_EQUIPMENT["serial"],
        content_description=f"Nodule {nodule_index} {lobe}",
        content_creator_name=staff_forms(study.radiologist)[0],
        content_label=f"NODULE{nodule_index}",
        series_description=f"Nodule {nodule_index} SEG",
        content_date=study.date,
        content_time=when.time(),
        series_date=study.date,
        series_time=when.time(),
    )
    pin_seg_provenance(seg, dicom_date(study.date), when.strftime("%H%M%S"),
                       uids.instance(plan, study, "seg-dimorg", nodule_index),
                       study_moment(study, 2.0).strftime("%Y%m%d%H%M%S"))  # fmt: skip
    return seg


def trace_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed outlines along voxel edges of a 2-D mask (one per 4-connected component).

    Vertices are pixel corners in ``(column, row)`` units, where pixel ``(r, c)`` spans
    ``[c - 0.5, c + 0.5] x [r - 0.5, r + 0.5]``. Because every voxel centre lies half a
    voxel from any edge, filling the outlines at voxel centres (even-odd or union) gives
    back ``mask2d`` exactly. Holes must already be filled.
    """
    m = np.pad(mask2d.astype(bool), 1)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    rows, cols = np.nonzero(m)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        # Clockwise on screen (y down): interior on the right of the direction of travel.
        if not m[r - 1, c]:
            edges.setdefault((c, r), []).append((c + 1, r))
        if not m[r, c + 1]:
            edges.setdefault((c + 1, r), []).append((c + 1, r + 1))
        if not m[r + 1, c]:
            edges.setdefault((c + 1, r + 1), []).append((c, r + 1))
        if not m[r, c - 1]:
            edges.setdefault((c, r + 1), []).append((c, r))
    loops: list[np.ndarray] = []
    while edges:
        start = min(edges)
        points = [start]
        prev = start
        current = edges[start].pop(0)
        if not edges[start]:
            del edges[start]
        while current != start:
            outgoing = edges[current]
            if len(outgoing) > 1:
                # Two components touching at a corner: turn right to stay on this pixel.
                din = (current[0] - prev[0], current[1] - prev[1])
                outgoing.sort(key=lambda q: -(din[0] * (q[1] - current[1]) - din[1] * (q[0] - current[0])))
            nxt = outgoing.pop(0)
            if not outgoing:
                del edges[current]
            points.append(current)
            prev, current = current, nxt
        pts = np.array(points, dtype=float)
        # Drop vertices in the middle of straight runs.
        before = np.roll(pts, 1, axis=0)
        after = np.roll(pts, -1, axis=0)
        cross = (pts[:, 0] - before[:, 0]) * (after[:, 1] - pts[:, 1]) - (pts[:, 1] - before[:, 1]) * (
            after[:, 0] - pts[:, 0]
        )
        # Back to unpadded pixel indices: corner (c, r) of the padded grid is (c - 1.5, r - 1.5).
        loops.append(pts[cross != 0] - 1.5)
    return loops


def _image_ref(sop_uid: str) -> Dataset:
    """A reference to one CT slice (Contour Image Sequence item)."""
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    ref.ReferencedSOPInstanceUID = sop_uid
    return ref


def _referenced_frame(uids: StudyUIDs, ct_slices: list[Dataset]) -> Dataset:
    """(3006,0010) Referenced Frame of Reference Sequence item: the study, the axial series and its slices."""
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = uids.ct_series
    series_ref.ContourImageSequence = Sequence([_image_ref(s.SOPInstanceUID) for s in ct_slices])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = STUDY_COMPONENT_MANAGEMENT
    study_ref.ReferencedSOPInstanceUID = uids.study
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = uids.frame_of_reference
    for_ref.RTReferencedStudySequence = Sequence([study_ref])
    return for_ref


def _roi_contours(mask: np.ndarray, rendered: RenderedSeries, sop_of_k: dict[int, str]) -> list[Dataset]:
    """Contour Sequence items of one nodule: each traced outline on each slice it touches, in patient mm."""
    ps = rendered.pixel_spacing
    x0, y0 = rendered.origin_xy
    contours: list[Dataset] = []
    for k in range(mask.shape[0]):
        if not mask[k].any():
            continue
        z = float(rendered.z[k])
        for loop in trace_contours(mask[k]):
            item = Dataset()
            item.ContourImageSequence = Sequence([_image_ref(sop_of_k[k])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(loop)
            item.ContourNumber = len(contours) + 1
            xyz = []
            for c, r in loop:
                xyz += [f"{x0 + c * ps:.3f}", f"{y0 + r * ps:.3f}", f"{z:.3f}"]
            item.ContourData = xyz
            contours.append(item)
    return contours


def _roi_items(
    i: int, lobe: str, contours: list[Dataset], study: StudyPlan, uids: StudyUIDs
) -> tuple[Dataset, Dataset, Dataset]:
    """The Structure Set ROI, ROI Contour and RT ROI Observations items of nodule ``i``."""
    roi = Dataset()
    roi.ROINumber = i
    roi.ReferencedFrameOfReferenceUID = uids.frame_of_reference
    roi.ROIName = f"Nodule {i}"
    roi.ROIDescription = f"Nodule {i} {lobe}"
    roi.ROIGenerationAlgorithm = "MANUAL"
    rc = Dataset()
    rc.ROIDisplayColor = [[255, 64, 64], [64, 200, 255], [255, 200, 0]][(i - 1) % 3]
    rc.ReferencedROINumber = i
    rc.ContourSequence = Sequence(contours)
    obs = Dataset()
    obs.ObservationNumber = i
    obs.ReferencedROINumber = i
    obs.RTROIInterpretedType = "GTV"
    obs.ROIInterpreter = staff_forms(study.radiologist)[0]
    return roi, rc, obs


def build_rtstruct(
    plan: PatientPlan,
    study: StudyPlan,
    uids: StudyUIDs,
    ct_slices: list[Dataset],
    rendered: RenderedSeries,
    lobes: list[str],
) -> Dataset:
    """An RT Structure Set with one ROI per nodule, contours traced from the masks."""
    p = study.protocol
    ds = Dataset()
    ds.file_meta = file_meta_for(RT_STRUCTURE_SET_STORAGE, uids.rtstruct_instance, "annotation")
    ds.file_meta.ImplementationClassUID = UID(make_uid(0, "implementation", "annotation"))
    add_patient_study(ds, plan, study, uids)
    when = study_moment(study, 55.0)
    ds.InstanceCreationDate = dicom_date(study.date)
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = uids.rtstruct_instance
    ds.Modality = "RTSTRUCT"
    ds.SeriesDate = dicom_date(study.date)
    ds.SeriesTime = when.strftime("%H%M%S")
    ds.Manufacturer = ANNOTATION_EQUIPMENT["manufacturer"]
    ds.ManufacturerModelName = ANNOTATION_EQUIPMENT["model"]
    ds.SoftwareVersions = ANNOTATION_EQUIPMENT["software"]
    ds.DeviceSerialNumber = ANNOTATION_EQUIPMENT["serial"]
    ds.SeriesDescription = "Nodule contours"
    ds.SeriesInstanceUID = uids.rtstruct_series
    ds.SeriesNumber = RTSTRUCT_SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.OperatorsName = staff_forms(study.radiologist)[0]
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.StructureSetLabel = "Nodules"
    ds.StructureSetName = f"Nodules {study.date.isoformat()}"
    ds.StructureSetDate = dicom_date(study.date)
    ds.StructureSetTime = when.strftime("%H%M%S")
    ds.ReferencedFrameOfReferenceSequence = Sequence([_referenced_frame(uids, ct_slices)])

    # Slice k (along +z) is instance n - k when the vendor numbers from the top.
    n = p.n_slices
    sop_of_k = {
        k: ct_slices[(n - 1 - k) if p.descending else k].SOPInstanceUID for k in range(n)
    }
    items = [
        _roi_items(i, lobe, _roi_contours(mask[:n], rendered, sop_of_k), study, uids)
        for i, (mask, lobe) in enumerate(zip(rendered.masks, lobes, strict=True), start=1)
    ]
    ds.StructureSetROISequence = Sequence([roi for roi, _, _ in items])
    ds.ROIContourSequence = Sequence([rc for _, rc, _ in items])
    ds.RTROIObservationsSequence = Sequence([obs for _, _, obs in items])
    ds.ApprovalStatus = "UNAPPROVED"
    return ds

"""What an enhanced multi-frame image keeps in functional groups, as the index's classic columns.

Enhanced CT/MR images (Enhanced CT, Enhanced MR, Legacy Converted Enhanced) leave the top-level
attributes a classic slice carries empty: geometry, timing, b-value, coil and contrast sit in
the (5200,9229) Shared Functional Groups Sequence, or per frame in the (5200,9230) Per-frame
Functional Groups Sequence. :func:`enhanced_values` reads them (shared first, else the first
frame) into the keywords of an instance row, so a series table, the vocabulary and the criteria
see an enhanced series as they see a classic one:

- (0028,0030) Pixel Spacing, (0018,0050) Slice Thickness, (0018,0088) Spacing Between Slices
  from the Pixel Measures Sequence; (0020,0037) from the Plane Orientation Sequence;
  (0020,0032) of the first frame from its Plane Position Sequence;
- (0018,0080) Repetition Time and (0018,1314) Flip Angle from the MR Timing and Related
  Parameters Sequence, (0018,0081) Echo Time from (0018,9082) Effective Echo Time of the MR
  Echo Sequence, (0018,0082) Inversion Time from (0018,9079) Inversion Times of the MR
  Modifier Sequence, (0018,9087) Diffusion b-Value from the MR Diffusion Sequence,
  (0018,1250) Receive Coil Name from the MR Receive Coil Sequence, (0008,9209) Acquisition
  Contrast from the MR Image Frame Type Sequence when not at the top level;
- (0018,0010) Contrast/Bolus Agent from the code meaning of the (0018,0012) Contrast/Bolus
  Agent Sequence, and ``contrast_administered`` from (0018,9342) Contrast/Bolus Agent
  Administered of the Contrast/Bolus Usage Sequence.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from pacs_workbench.dicom.attributes import to_float, to_floats, to_text

#: SOP classes of enhanced multi-frame CT and MR images.
ENHANCED_IMAGE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    }
)


def is_enhanced_image(sop_class_uid: Any) -> bool:
    """True for the SOP classes of :data:`ENHANCED_IMAGE_CLASSES`."""
    return to_text(sop_class_uid) in ENHANCED_IMAGE_CLASSES


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    items = ds.get(keyword) or []
    return items[0] if len(items) else None


def _group(ds: Dataset, keyword: str) -> Dataset | None:
    """One functional group's item: shared, else the first frame's."""
    for container in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = _first(ds, container)
        if groups is not None:
            item = _first(groups, keyword)
            if item is not None:
                return item
    return None


def _value(ds: Dataset, group: str, keyword: str) -> Any:
    item = _group(ds, group)
    return item.get(keyword) if item is not None else None


def enhanced_values(ds: Dataset) -> dict[str, Any]:
    """Instance-row values of an enhanced image from its functional groups (``None`` where absent)."""
    inversion = to_floats(_value(ds, "MRModifierSequence", "InversionTimes"))
    agent = _first(ds, "ContrastBolusAgentSequence")
    usage = _value(ds, "ContrastBolusUsageSequence", "ContrastBolusAgentAdministered")
    position = None
    frames = _first(ds, "PerFrameFunctionalGroupsSequence")
    plane = _first(frames, "PlanePositionSequence") if frames is not None else None
    if plane is None:
        plane = _group(ds, "PlanePositionSequence")
    if plane is not None:
        position = to_floats(plane.get("ImagePositionPatient"), 3)
    contrast = to_text(ds.get("AcquisitionContrast")) or to_text(
        _value(ds, "MRImageFrameTypeSequence", "AcquisitionContrast")
    )
    return {
        "PixelSpacing": to_floats(_value(ds, "PixelMeasuresSequence", "PixelSpacing"), 2),
        "SliceThickness": to_float(_value(ds, "PixelMeasuresSequence", "SliceThickness")),
        "SpacingBetweenSlices": to_float(_value(ds, "PixelMeasuresSequence", "SpacingBetweenSlices")),
        "ImageOrientationPatient": to_floats(_value(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
        "ImagePositionPatient": position,
        "RepetitionTime": to_float(_value(ds, "MRTimingAndRelatedParametersSequence", "RepetitionTime")),
        "FlipAngle": to_float(_value(ds, "MRTimingAndRelatedParametersSequence", "FlipAngle")),
        "EchoTime": to_float(_value(ds, "MREchoSequence", "EffectiveEchoTime")),
        "InversionTime": inversion[0] if inversion else None,
        "DiffusionBValue": to_float(_value(ds, "MRDiffusionSequence", "DiffusionBValue")),
        "ReceiveCoilName": to_text(_value(ds, "MRReceiveCoilSequence", "ReceiveCoilName")),
        "AcquisitionContrast": contrast,
        "ContrastBolusAgent": to_text(agent.get("CodeMeaning")) if agent is not None else None,
        "contrast_administered": None if usage is None else to_text(usage) == "YES",
    }


def fill_enhanced(row: dict[str, Any], ds: Dataset) -> dict[str, Any]:
    """``row`` with its empty columns filled from the functional groups of an enhanced image.

    The derived ``contrast`` flag becomes true when the image says a contrast agent was given.
    """
    values = enhanced_values(ds)
    administered = values.pop("contrast_administered")
    for keyword, value in values.items():
        if keyword in row and row[keyword] is None and value is not None:
            row[keyword] = value
    if administered or (values["ContrastBolusAgent"] and administered is None):
        row["contrast"] = True
    return row

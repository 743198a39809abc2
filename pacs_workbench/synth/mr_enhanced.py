"""Enhanced MR Image Storage (1.2.840.10008.5.1.4.1.1.4.1) and the lesion's SEG of a synthetic MR study.

Siemens XA and Philips scanners write one multi-frame object per series
(:func:`build_enhanced_series`). Nothing of the sequence sits where classic images keep it:
the timing is in the Shared Functional Groups (MR Timing and Related Parameters, MR Echo, MR
Modifier with the inversion time), the b-value in the MR Diffusion Sequence, the contrast in
the Enhanced Contrast/Bolus module (a code sequence) and the per-frame Contrast/Bolus Usage,
the weighting in (0008,9209) Acquisition Contrast and the MR flavour of (0008,0008) Image Type.
Each frame's position is in its Plane Position Sequence; Siemens stores the frames head to
feet, Philips feet to head. Built with pydicom (highdicom writes no Enhanced MR images) from the
study plan alone, so the same seed gives the same bytes.

:func:`build_mr_segmentation` is the reader's DICOM SEG of the lesion (highdicom), on the
post-contrast T1 series, classic slices or enhanced frames alike.
"""

from __future__ import annotations

import datetime as dt

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag

from pacs_workbench.synth.common import make_uid
from pacs_workbench.synth.dicom_writer import ANNOTATION_EQUIPMENT, dicom_date
from pacs_workbench.synth.mr_dicom import (
    CONTRAST_AGENT,
    ENHANCED_MR_IMAGE_STORAGE,
    GYROMAGNETIC_MHZ_PER_T,
    add_mr_equipment,
    add_mr_patient_study,
    add_mr_pixel,
    add_mr_series,
    mr_file_meta,
    series_moment,
    study_moment,
)
from pacs_workbench.synth.mr_phantom import MR_MATRIX
from pacs_workbench.synth.mr_plan import MRPatientPlan, MRStudyPlan, MRStudyUIDs
from pacs_workbench.synth.mr_sequences import PHILIPS_RESCALE_SLOPE, SequenceSpec
from pacs_workbench.synth.patients import staff_forms
from pacs_workbench.synth.segmentations import pin_seg_provenance

SEG_SERIES_NUMBER = 300
BRAIN = hd.sr.CodedConcept("12738006", "SCT", "Brain")
GADOLINIUM = ("C-17800", "SRT", "Gadolinium")
INTRAVENOUS = ("47625008", "SCT", "Intravenous route")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _item(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _shared_groups(study: MRStudyPlan, spec: SequenceSpec) -> Dataset:
    """The Shared Functional Groups: geometry, timing, echo, modifiers, coils, contrast, diffusion."""
    scanner = study.scanner
    g = study.geometry
    inversion = spec.inversion_time is not None
    ps = f"{g.pixel_spacing:.6f}".rstrip("0").rstrip(".")
    slope = f"{PHILIPS_RESCALE_SLOPE:g}" if scanner.vendor == "philips" else "1"
    shared = _item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=[ps, ps], SliceThickness=f"{g.thickness:g}",
                                              SpacingBetweenSlices=f"{g.spacing:g}")]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        MRTimingAndRelatedParametersSequence=Sequence([_item(
            RepetitionTime=spec.repetition_time, FlipAngle=spec.flip_angle, EchoTrainLength=spec.echo_train_length,
            RFEchoTrainLength=spec.echo_train_length if spec.echo_pulse == "SPIN" else 0,
            GradientEchoTrainLength=1 if spec.echo_pulse == "GRADIENT" else 0,
            OperatingModeSequence=Sequence([_item(OperatingModeType=kind, OperatingMode="IEC_NORMAL")
                                            for kind in ("STATIC FIELD", "RF", "GRADIENT")]),
            SpecificAbsorptionRateSequence=Sequence([_item(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                                           SpecificAbsorptionRateValue=0.8)]),
        )]),
        MREchoSequence=Sequence([_item(EffectiveEchoTime=spec.echo_time)]),
        MRModifierSequence=Sequence([_item(
            InversionRecovery="YES" if inversion else "NO",
            **({"InversionTimes": [spec.inversion_time]} if inversion else {}),
            FlowCompensation="NONE", T2Preparation="NO", SpectrallySelectedExcitation="NONE",
            SpatialPresaturation="NONE", PartialFourier="NO", ParallelAcquisition="YES",
            ParallelAcquisitionTechnique="OTHER" if scanner.vendor == "siemens" else "SENSE",  # GRAPPA is no term
            ParallelReductionFactorInPlane=2.0, ParallelReductionFactorOutOfPlane=1.0,
            ParallelReductionFactorSecondInPlane=1.0,
        )]),
        MRImagingModifierSequence=Sequence([_item(
            MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE",
            TransmitterFrequency=round(GYROMAGNETIC_MHZ_PER_T * scanner.field_t, 6),
            PixelBandwidth=1502.0 if spec.weighting in ("dwi", "adc") else 200.0,
        )]),
        MRReceiveCoilSequence=Sequence([_item(ReceiveCoilName=scanner.coil, ReceiveCoilManufacturerName=
                                              scanner.manufacturer, ReceiveCoilType="MULTICOIL",
                                              QuadratureReceiveCoil="NO", MultiCoilDefinitionSequence=Sequence([
                                                  _item(MultiCoilElementName=f"HE{i}", MultiCoilElementUsed="YES")
                                                  for i in range(1, 5)]))]),
        MRTransmitCoilSequence=Sequence([_item(TransmitCoilName="Body", TransmitCoilManufacturerName=
                                               scanner.manufacturer, TransmitCoilType="BODY")]),
        MRFOVGeometrySequence=Sequence([_item(
            InPlanePhaseEncodingDirection="COLUMN", MRAcquisitionFrequencyEncodingSteps=MR_MATRIX,
            MRAcquisitionPhaseEncodingStepsInPlane=MR_MATRIX, PercentSampling=100.0, PercentPhaseFieldOfView=100.0,
        )]),
        MRAveragesSequence=Sequence([_item(NumberOfAverages=1.0 if spec.weighting != "se" else 2.0)]),
        PixelValueTransformationSequence=Sequence([_item(RescaleIntercept="0", RescaleSlope=slope,
                                                         RescaleType="US")]),
        FrameAnatomySequence=Sequence([_item(AnatomicRegionSequence=Sequence([_code("12738006", "SCT", "Brain")]),
                                             FrameLaterality="U")]),
        FrameVOILUTSequence=Sequence([_item(WindowCenter="600", WindowWidth="1200")]),
        MRImageFrameTypeSequence=Sequence([_item(
            FrameType=list(spec.image_type), PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
            VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
            AcquisitionContrast=spec.acquisition_contrast,
        )]),
    )  # fmt: skip
    if spec.b_value is not None:
        shared.MRDiffusionSequence = Sequence([_item(DiffusionBValue=spec.b_value,
                                                     DiffusionDirectionality="ISOTROPIC")])
    if spec.kind == "T1C":
        shared.ContrastBolusUsageSequence = Sequence([_item(ContrastBolusAgentNumber=1,
                                                            ContrastBolusAgentAdministered="YES",
                                                            ContrastBolusAgentDetected="YES")])
    return shared


def _pulse_sequence(ds: Dataset, spec: SequenceSpec) -> None:
    """MR Pulse Sequence module (what classic images say in Scanning Sequence and Sequence Variant)."""
    epi = spec.weighting in ("dwi", "adc")
    ds.PulseSequenceName = spec.sequence_name
    ds.MRAcquisitionType = spec.acquisition_type
    ds.EchoPulseSequence = spec.echo_pulse
    if spec.echo_pulse == "SPIN":
        ds.MultipleSpinEcho = "NO"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "YES" if epi else "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "FAT" if epi else "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE" if epi else "PARTIAL"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.NumberOfKSpaceTrajectories = 1
    if spec.acquisition_type == "3D":
        ds.CoverageOfKSpace = "FULL"


def _dimensions(ds: Dataset, uids: MRStudyUIDs, spec: SequenceSpec) -> None:
    organization = uids.uid(f"dimorg-{spec.series_number}")
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=organization)])
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = Sequence([
        _item(DimensionOrganizationUID=organization, DimensionIndexPointer=Tag("StackID"),
              FunctionalGroupPointer=Tag("FrameContentSequence"), DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=organization, DimensionIndexPointer=Tag("InStackPositionNumber"),
              FunctionalGroupPointer=Tag("FrameContentSequence"), DimensionDescriptionLabel="In-Stack Position"),
    ])  # fmt: skip


def frame_order(study: MRStudyPlan) -> list[int]:
    """Slice index (along increasing z) of each frame: Siemens head to feet, Philips feet to head."""
    n = study.geometry.n_slices
    return list(range(n - 1, -1, -1)) if study.scanner.vendor == "siemens" else list(range(n))


def build_enhanced_series(
    plan: MRPatientPlan, study: MRStudyPlan, uids: MRStudyUIDs, spec: SequenceSpec, pixels: np.ndarray,
    z: np.ndarray, origin_xy: tuple[float, float],
) -> Dataset:
    """One Enhanced MR Image of a whole series (frames in :func:`frame_order`)."""
    scanner = study.scanner
    when = series_moment(study, spec)
    sop_uid = uids.uid(f"mr-{spec.series_number}", 1)
    ds = Dataset()
    ds.file_meta = mr_file_meta(ENHANCED_MR_IMAGE_STORAGE, sop_uid, scanner.vendor)
    add_mr_patient_study(ds, plan, study, uids)
    ds.ImageType = list(spec.image_type)
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S.%f")
    ds.ContentTime = when.strftime("%H%M%S.%f")
    add_mr_equipment(ds, scanner)
    add_mr_series(ds, plan, study, uids, spec)
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDuration = 180.0
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = scanner.field_t
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = spec.acquisition_contrast
    ds.PresentationLUTShape = "IDENTITY"
    if not spec.derived:  # the MR Pulse Sequence module describes acquired (ORIGINAL) images only
        _pulse_sequence(ds, spec)
    if spec.kind == "T1C":
        agent = _item(ContrastBolusAgentNumber=1, ContrastBolusVolume=float(CONTRAST_AGENT[scanner.vendor][1]),
                      ContrastBolusAdministrationRouteSequence=Sequence([_code(*INTRAVENOUS)]),
                      ContrastBolusIngredientCodeSequence=Sequence([_code(*GADOLINIUM)]),
                      ContrastBolusIngredientConcentration=604.72)  # gadobutrol 1 mmol/ml in mg/ml  # fmt: skip
        agent.CodeValue, agent.CodingSchemeDesignator, agent.CodeMeaning = GADOLINIUM
        ds.ContrastBolusAgentSequence = Sequence([agent])
    ds.AcquisitionContextSequence = Sequence()
    _dimensions(ds, uids, spec)
    if plan.base.phi_in_image_comments and spec.kind == "T1":
        ds.ImageComments = f"Pt {plan.person.natural_name} moved, repeated"
    order = frame_order(study)
    ds.NumberOfFrames = len(order)
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(study, spec)])
    frames = []
    for number, k in enumerate(order, start=1):
        acquired = when + dt.timedelta(seconds=2.5 * number)
        content = _item(
            FrameAcquisitionDateTime=acquired.strftime("%Y%m%d%H%M%S.%f"),
            FrameReferenceDateTime=acquired.strftime("%Y%m%d%H%M%S.%f"), FrameAcquisitionDuration=2500.0,
            StackID="1", InStackPositionNumber=number, DimensionIndexValues=[1, number],
        )  # fmt: skip
        position = _item(ImagePositionPatient=[f"{origin_xy[0]:.4f}", f"{origin_xy[1]:.4f}", f"{float(z[k]):.4f}"])
        frames.append(_item(FrameContentSequence=Sequence([content]), PlanePositionSequence=Sequence([position])))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    add_mr_pixel(ds, scanner, spec)
    for keyword in ("WindowCenter", "WindowWidth"):  # in the Frame VOI LUT functional group instead
        del ds[keyword]
    ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(pixels[order]).tobytes())
    return ds


def build_mr_segmentation(
    plan: MRPatientPlan, study: MRStudyPlan, uids: MRStudyUIDs, source: list[Dataset], mask: np.ndarray
) -> Dataset:
    """The lesion's BINARY DICOM SEG (highdicom) on the post-contrast T1 series.

    Parameters
    ----------
    source
        The series' classic slices in Instance Number order, or its one enhanced image.
    mask
        ``[k, row, column]`` along increasing z (as rendered).
    """
    if len(source) == 1 and int(source[0].get("NumberOfFrames", 1)) > 1:
        order = frame_order(study)
    else:
        n = mask.shape[0]
        order = list(range(n - 1, -1, -1)) if study.geometry.descending else list(range(n))
    tracking_uid = make_uid(plan.seed, "mr-patient", plan.index, "lesion", 1)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lesion 1",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=tracking_uid,
        tracking_id="Lesion 1",
        anatomic_regions=[BRAIN],
    )
    when = study_moment(study, 45.0)
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=mask[order].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=uids.uid("seg-series", 1),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uids.uid("seg", 1),
        instance_number=1,
        manufacturer=ANNOTATION_EQUIPMENT["manufacturer"],
        manufacturer_model_name=ANNOTATION_EQUIPMENT["model"],
        software_versions=ANNOTATION_EQUIPMENT["software"],
        device_serial_number=ANNOTATION_EQUIPMENT["serial"],
        content_description=f"Lesion {plan.lesion.lobe}",
        content_creator_name=staff_forms(study.radiologist)[0],
        content_label="LESION1",
        series_description="Lesion SEG",
        content_date=study.date,
        content_time=when.time(),
        series_date=study.date,
        series_time=when.time(),
    )
    pin_seg_provenance(seg, dicom_date(study.date), when.strftime("%H%M%S"), uids.uid("seg-dimorg", 1),
                       study_moment(study, 2.0).strftime("%Y%m%d%H%M%S"))  # fmt: skip
    return seg

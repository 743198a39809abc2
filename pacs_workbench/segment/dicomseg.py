"""Model masks as DICOM SEG (highdicom), written on the source series' own frames.

The prediction lives on the preprocessed grid (resampled, cropped); the SEG must lie on the
frames of the series it segments, so each lesion mask is resampled back onto the source
series' grid by nearest neighbour and the SEG is built from the source instances. One SEG per
series, one segment per lesion; ``preprocess.load_mask`` reads it back voxel for voxel.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pacs_workbench.dicom.derived import write_derived

#: SNOMED CT: (49755003) Morphologically abnormal structure / (27925004) Nodule, in the (39607008) Lung.
NODULE_CATEGORY = ("49755003", "SCT", "Morphologically abnormal structure")
NODULE_TYPE = ("27925004", "SCT", "Nodule")
LUNG_REGION = ("39607008", "SCT", "Lung")


def index_series(dicom_dir: str | os.PathLike[str], wanted: set[str]) -> dict[str, list[str]]:
    """Files of each wanted (0020,000E) Series Instance UID under ``dicom_dir`` (headers only)."""
    import pydicom

    found: dict[str, list[str]] = defaultdict(list)
    for root, _, names in os.walk(dicom_dir):
        for name in names:
            path = os.path.join(root, name)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Modality"])
            except Exception:  # not DICOM: not a source frame
                continue
            uid = str(ds.get("SeriesInstanceUID", ""))
            if uid in wanted and ds.get("Modality") not in ("SEG", "RTSTRUCT", "SR"):
                found[uid].append(path)
    return dict(found)


def sorted_sources(files: Sequence[str]) -> list[Any]:
    """The series' instances along the slice normal (the order of the SimpleITK volume's z axis)."""
    import pydicom

    datasets = [pydicom.dcmread(p) for p in files]
    datasets = [d for d in datasets if "ImagePositionPatient" in d and "ImageOrientationPatient" in d]
    if not datasets:
        raise ValueError("the series has no frames with a position and orientation")
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(datasets, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=float))))


def source_grid(sources: Sequence[Any]) -> sitk.Image:
    """An empty image with the geometry of the sorted source frames (no pixel data decoded)."""
    first = sources[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    positions = [np.asarray(d.ImagePositionPatient, dtype=float) for d in sources]
    step = float(np.dot(normal, positions[1] - positions[0])) if len(positions) > 1 else float(
        first.get("SliceThickness", 1.0) or 1.0
    )
    rows, cols = int(first.Rows), int(first.Columns)
    image = sitk.Image([cols, rows, len(sources)], sitk.sitkUInt8)
    spacing = [float(v) for v in first.PixelSpacing]
    image.SetSpacing([spacing[1], spacing[0], abs(step) or 1.0])
    image.SetOrigin([float(v) for v in positions[0]])
    image.SetDirection([float(v) for v in np.column_stack([iop[:3], iop[3:], normal]).ravel()])
    return image


def onto_source(mask: sitk.Image, source: sitk.Image) -> np.ndarray:
    """A binary mask on the preprocessed grid resampled onto the source grid (nearest), as (z, y, x)."""
    resampled = sitk.Resample(sitk.Cast(mask, sitk.sitkUInt8), source, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled).astype(np.uint8)


def write_series_seg(
    source_files: Sequence[str],
    lesion_masks: Sequence[np.ndarray],
    target: str | os.PathLike[str],
    *,
    algorithm_version: str,
    checkpoint_sha256: str,
    series_number: int = 900,
) -> Path:
    """One BINARY SEG of the source series with one segment per lesion mask.

    Parameters
    ----------
    source_files
        The source series' files; the SEG references them ((0008,1115) Referenced Series Sequence).
    lesion_masks
        One (z, y, x) array per lesion on the source grid, z along the slice normal.
    algorithm_version, checkpoint_sha256
        Algorithm identification: the workbench's version and the SHA-256 of the checkpoint.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    from pacs_workbench import __version__

    sources = sorted_sources(source_files)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="pacs-workbench lesion U-Net",
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version or __version__,
        parameters={"checkpoint_sha256": checkpoint_sha256[:64]},
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"Lung nodule {i + 1}",
            segmented_property_category=Code(*NODULE_CATEGORY),
            segmented_property_type=Code(*NODULE_TYPE),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[Code(*LUNG_REGION)],
        )
        for i in range(len(lesion_masks))
    ]
    stacked = np.stack([np.asarray(m, dtype=np.uint8) for m in lesion_masks], axis=-1)
    if stacked.shape[0] != len(sources):
        raise ValueError(f"mask has {stacked.shape[0]} slices, the series {len(sources)} frames")
    version = algorithm_version or __version__
    return write_derived(
        lambda: _segmentation(sources, stacked, descriptions, version, series_number), sources[0], target
    )


def _segmentation(
    sources: Sequence[Any], stacked: np.ndarray, descriptions: list[Any], version: str, series_number: int
) -> Any:
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pacs-workbench",
        manufacturer_model_name="lesion U-Net",
        software_versions=version,
        device_serial_number="0",
        series_description="Lung nodules (model)",
        content_label="NODULES",
        content_description="Lung nodules segmented by the workbench U-Net",
        omit_empty_frames=True,
    )

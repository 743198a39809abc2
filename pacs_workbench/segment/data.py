"""The segmentation stage's inputs: the preprocess cases table, who is labelled, and the volumes.

A case is one lesion of one series, as ``03_preprocessing`` wrote it: an image volume and its
reference mask on the preprocessed grid (NIfTI). Which patients count as labelled is decided
here, by patient (``pseudo_patient_id``), so no patient is both taught and tested on.

Masks drawn in a viewer join the training set on the next run. A mask saved as DICOM SEG or
RTSTRUCT on the source series goes into the DICOM tree and reaches the cases table through
``03_preprocessing`` like any other. A NIfTI (or NRRD) label map drawn on the case's
preprocessed image (``volumes/<case_id>_image.nii.gz``, the grid of the probability maps) is
saved as ``<case_id>_mask.nii.gz`` in the annotations folder (``<out_dir>/annotations/`` by
default): :func:`add_annotations` takes it as the case's reference, and the case is labelled
whatever the labelled fraction.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from pacs_workbench.core.files import names_a_file

#: Columns the stage needs from the cases table (``preprocess.CASES_COLUMNS`` holds them).
REQUIRED_COLUMNS = ("case_id", "image", "pseudo_patient_id")

#: CT intensities the network sees: HU clipped to this window, then scaled to [0, 1].
HU_WINDOW = (-1000.0, 400.0)


class SegmentationError(ValueError):
    """A clear, specific reason why segmentation cannot go on (for the whole run or one case)."""


@dataclass
class CaseVolume:
    """One case's image (and reference mask when labelled) as arrays in (z, y, x) order."""

    case_id: str
    image: np.ndarray
    spacing: tuple[float, float, float]
    reference: np.ndarray | None
    sitk_image: sitk.Image


def read_cases(cases: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """The preprocess cases table (Parquet or CSV, or a frame), checked for the columns the stage needs.

    Raises
    ------
    SegmentationError
        When the file is missing, or the table lacks ``case_id``, ``image`` or ``pseudo_patient_id``.
    """
    if isinstance(cases, pd.DataFrame):
        frame = cases.copy()
    else:
        path = Path(cases)
        if not path.is_file():
            raise SegmentationError(f"cases table {path.name} not found: run 03_preprocessing first")
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise SegmentationError(f"cases table lacks column(s) {', '.join(missing)}")
    if "mask" not in frame.columns:
        frame["mask"] = None
    frame["case_id"] = frame["case_id"].astype(str)
    return frame.sort_values("case_id").reset_index(drop=True)


#: File names :func:`add_annotations` looks for, per case, in the annotations folder.
ANNOTATION_SUFFIXES = ("_mask.nii.gz", "_mask.nii", "_mask.nrrd")


def add_annotations(cases: pd.DataFrame, folder: str | os.PathLike[str] | None) -> pd.DataFrame:
    """Take masks drawn in a viewer from ``folder`` (``<case_id>_mask.nii.gz``) as the cases' references.

    Adds ``annotated`` (True where a file was found); an annotation replaces the case's ``mask``.
    A folder that does not exist adds nothing.
    """
    frame = cases.copy()
    frame["annotated"] = False
    root = Path(folder) if folder is not None else None
    if root is None or not root.is_dir():
        return frame
    for index, case_id in frame["case_id"].items():
        found = next((root / f"{case_id}{s}" for s in ANNOTATION_SUFFIXES if (root / f"{case_id}{s}").is_file()), None)
        if found is not None:
            frame.at[index, "mask"] = str(found)
            frame.at[index, "annotated"] = True
    return frame


def _rank(value: str, seed: int, salt: str) -> str:
    return hashlib.sha256(f"{salt}|{seed}|{value}".encode()).hexdigest()


def assign_splits(
    cases: pd.DataFrame, labelled_fraction: float, *, validation_fraction: float = 0.25, seed: int = 0
) -> pd.DataFrame:
    """Add ``has_reference``, ``labelled`` and ``split`` (``train``, ``validation``, ``unlabelled``) per case.

    Patients are ordered by a seeded hash of their pseudonym; the first ``round(F * n)`` of those
    with a reference mask are labelled (at least one when ``F > 0``). The others' reference masks
    are hidden from training (``labelled`` False) and used only to score the model. Of the labelled
    patients, ``validation_fraction`` (at least one when three or more) are kept for validation.
    Cases ``annotated`` in a viewer (:func:`add_annotations`) are labelled in any case (``train``
    unless their patient is a validation one).
    """
    if not 0.0 <= labelled_fraction <= 1.0:
        raise SegmentationError(f"labelled fraction must be between 0 and 1, got {labelled_fraction}")
    frame = cases.copy()
    frame["has_reference"] = frame["mask"].map(names_a_file)
    annotated = frame["annotated"].astype(bool) if "annotated" in frame.columns else pd.Series(False, frame.index)
    # Annotated cases are labelled anyway; they must not shift which exported references are hidden.
    with_ref = frame.loc[frame["has_reference"] & ~annotated, "pseudo_patient_id"].astype(str).unique().tolist()
    ordered = sorted(with_ref, key=lambda p: _rank(p, seed, "label"))
    n_labelled = round(labelled_fraction * len(ordered))
    if labelled_fraction > 0 and ordered:
        n_labelled = max(1, n_labelled)
    labelled = ordered[:n_labelled]
    by_val = sorted(labelled, key=lambda p: _rank(p, seed, "validation"))
    n_val = max(1, round(validation_fraction * len(labelled))) if len(labelled) >= 3 else 0
    validation = set(by_val[:n_val])
    patient = frame["pseudo_patient_id"].astype(str)
    frame["labelled"] = frame["has_reference"] & (patient.isin(labelled) | annotated)
    frame["split"] = np.where(
        frame["labelled"], np.where(patient.isin(validation), "validation", "train"), "unlabelled"
    )
    return frame


def scale_intensity(array: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """HU clipped to ``window`` and scaled to [0, 1] (float32)."""
    low, high = window
    return ((np.clip(array, low, high) - low) / (high - low)).astype(np.float32)


def load_case(row: pd.Series, *, with_reference: bool) -> CaseVolume:
    """The case's preprocessed image (and reference mask) as arrays.

    Raises
    ------
    SegmentationError
        When the image file is missing or the volume is empty (no voxels, or one constant value).
    """
    path = Path(str(row["image"]))
    if not path.is_file():
        raise SegmentationError(f"case {row['case_id']}: image volume not found")
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    if array.size == 0 or float(array.max()) == float(array.min()):
        raise SegmentationError(f"case {row['case_id']}: empty volume (no voxels or a single value)")
    reference = None
    if with_reference:
        mask = sitk.ReadImage(str(row["mask"]), sitk.sitkUInt8)
        reference = (sitk.GetArrayFromImage(mask) > 0).astype(np.uint8)
        if reference.shape != array.shape:
            raise SegmentationError(f"case {row['case_id']}: reference mask and image differ in size")
    spacing = tuple(float(s) for s in image.GetSpacing())
    return CaseVolume(str(row["case_id"]), array, (spacing[0], spacing[1], spacing[2]), reference, image)

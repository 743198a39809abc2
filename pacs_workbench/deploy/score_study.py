"""Scoring one received study with a model package: volume, lesions, features, risk, then SEG and SR.

:class:`StudyScorer` is what ``pacs-workbench listen`` runs on each complete study folder
(:class:`~pacs_workbench.deploy.listen.Listener`). Everything it applies comes from the package:

1. **Series.** The study's image series that match the package's cohort criteria: a modality the
   development cases had (the package's preprocessing parameters are per modality), a CT/MR image
   storage class, no localizer, at least the preprocessing's minimum number of slices. Of several,
   the one with the most slices is scored.
2. **Volume.** The series is read with the package's geometry checks (:func:`~pacs_workbench.preprocess.read_series`)
   and preprocessed whole with the package's frozen parameters (no crop: the lesions are not known yet).
3. **Lesions.** The package's U-Net (the segmentation stage's checkpoint, frozen in the package)
   segments the volume (one sliding-window pass; lesions as :func:`pacs_workbench.segment.run.lesions_of` finds them);
   each lesion is resampled onto the source series' frames, as its DICOM SEG holds it.
4. **Features.** Each lesion, on the source grid, is preprocessed exactly as a development case
   was (:func:`~pacs_workbench.preprocess.preprocess_image`, cropped around it) and its features are
   extracted with the package's own radiomics parameters (:func:`~pacs_workbench.deploy.predict.package_features`).
5. **Risk.** Rows are built and scored by :mod:`~pacs_workbench.deploy.predict` (index lesion,
   growth, clinical columns; the risk, its group and the flags). Of the clinical columns only the
   age is in the headers ((0010,1010) Patient's Age, else (0010,0030) Patient's Birth Date at
   (0008,0020) Study Date); the others are missing, imputed with the development median and flagged.
6. **Results.** A DICOM SEG of the lesions and a TID 1500 SR (lesion volume and diameter, risk,
   risk group, model identification), both on the source study, under ``out/results/<study>/``
   with ``result.json``; with ``store_to`` they are also sent to a PACS.

A study that cannot be scored (no matching series, geometry refused, empty segmentation, no
lesion left after preprocessing) raises :class:`ValueError` with the reason and writes no SR.
Logs and ``result.json`` carry the study's pseudonym (its folder name), counts, timings and the
outcome, never a name, ID, date or UID.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import pdist

from pacs_workbench.core.files import sha256_file, write_atomic, write_json_atomic
from pacs_workbench.core.pseudonym import pseudonymize
from pacs_workbench.deploy.listen_scp import STORAGE_CLASSES
from pacs_workbench.deploy.package import ModelPackage, PackageError
from pacs_workbench.deploy.predict import build_rows, package_features, score_rows
from pacs_workbench.deploy.report_sr import LesionMeasurement, write_measurement_report
from pacs_workbench.preprocess import MaskError, PreprocessParams, SeriesError, preprocess_image
from pacs_workbench.preprocess.series import read_series
from pacs_workbench.radiomics.package import preprocessing_digest

LOG = logging.getLogger("pacs_workbench.listen")
RESULTS = "results"
RESULT_FILE = "result.json"
MODEL_NAME = "pacs-workbench risk model"
AGE_CAP = 90  # ages above 89 count as 90, as the cohort stage counts them
_HEADER_TAGS = [
    "SeriesInstanceUID", "Modality", "SOPClassUID", "ImageType", "NumberOfFrames", "Manufacturer",
    "PatientID", "PatientAge", "PatientBirthDate", "StudyDate",
]  # fmt: skip


@dataclass
class LesionSegmenter:
    """The package's lesion U-Net, loaded once (a warm model for every study)."""

    network: Any
    patch: int
    min_lesion_mm3: float
    checkpoint_sha256: str

    @classmethod
    def from_package(cls, package: ModelPackage, threads: int = 1) -> LesionSegmenter:
        """Load the package's U-Net; :class:`PackageError` when the package holds none."""
        import torch

        from pacs_workbench.segment.net import TrainConfig, load_unet
        from pacs_workbench.segment.run import MIN_LESION_MM3

        info = package.segmentation
        if info is None:
            reason = (package.description.get("not_used") or {}).get("segmentation_model", "none was frozen")
            raise PackageError(
                f"the package holds no segmentation model ({reason}): incoming studies cannot be segmented; "
                "rebuild it with the segmentation stage's folder (pacs-workbench model --segmentation DIR)"
            )
        settings = json.loads((package.folder / info["settings"]).read_text(encoding="utf-8"))
        config = TrainConfig.coerce(settings.get("config") or {})
        torch.set_num_threads(max(1, int(threads)))
        network = load_unet(package.folder / info["file"], config)
        minimum = settings.get("min_lesion_mm3")
        smallest = float(MIN_LESION_MM3 if minimum is None else minimum)
        return cls(network, config.patch, smallest, info["checkpoint_sha256"])

    def lesions(self, volume: sitk.Image) -> np.ndarray:
        """Lesions numbered 1.. on the volume's grid, (z, y, x).

        One sliding-window pass, without the segmentation stage's test-time augmentation: that
        serves the uncertainty of the annotation worklist and would take four times as long.
        """
        from pacs_workbench.segment.net import predict_probability
        from pacs_workbench.segment.run import lesions_of

        spacing = tuple(float(s) for s in volume.GetSpacing())
        probability = predict_probability(self.network, sitk.GetArrayFromImage(volume), self.patch)
        return lesions_of(probability, (spacing[0], spacing[1], spacing[2]), self.min_lesion_mm3)


def _frames(ds: Any) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def matching_series(folder: Path, modalities: set[str], min_slices: int) -> tuple[list[str], Any]:
    """The files of the study's series to score and one of its headers.

    Raises
    ------
    ValueError
        No series matches, with what the study holds instead (modalities and counts only).
    """
    import pydicom

    series: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception:  # an unreadable file is no candidate
            continue
        series[str(ds.get("SeriesInstanceUID", ""))].append((str(path), ds))
    candidates, seen = [], []
    for members in series.values():
        first = members[0][1]
        modality = str(first.get("Modality", "") or "?")
        localizer = any("LOCALIZER" in str(v).upper() for v in (first.get("ImageType") or []))
        slices = sum(_frames(ds) for _, ds in members)
        image_class = str(first.get("SOPClassUID", "")) in STORAGE_CLASSES
        if modality in modalities and image_class and not localizer and slices >= min_slices:
            candidates.append((slices, [p for p, _ in members], first))
            continue
        seen.append(f"{modality}{' localizer' if localizer else ''} ({slices} image(s))")
    if not candidates:
        held = ", ".join(sorted(seen)) or "no readable instance"
        wanted = "/".join(sorted(modalities))
        raise ValueError(
            f"no series matches the package's cohort criteria ({wanted} images, no localizer, at least "
            f"{min_slices} slices); the study holds: {held}"
        )
    candidates.sort(key=lambda c: -c[0])
    return candidates[0][1], candidates[0][2]


def age_years(ds: Any) -> float:
    """Age at the study from (0010,1010) Patient's Age, else birth date and study date; NaN if unknown."""
    text = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[text[3]]
        return float(min(AGE_CAP, int(text[:3]) / per_year))
    try:
        born = dt.datetime.strptime(str(ds.get("PatientBirthDate", "")), "%Y%m%d").date()
        on = dt.datetime.strptime(str(ds.get("StudyDate", "")), "%Y%m%d").date()
    except ValueError:
        return float("nan")
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return float(min(AGE_CAP, years)) if years >= 0 else float("nan")


def lesion_measurement(mask: np.ndarray, image: sitk.Image) -> LesionMeasurement:
    """Volume (voxels x voxel volume) and maximum 3-D diameter (largest distance between voxel centres)."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    volume = float(mask.sum() * np.prod(spacing))
    surface = mask & ~ndimage.binary_erosion(mask)
    zyx = np.argwhere(surface if surface.any() else mask)[:4000]
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    points = (direction @ (zyx[:, ::-1] * spacing).T).T
    diameter = float(pdist(points).max()) if len(points) > 1 else float(spacing.min())
    return LesionMeasurement(volume, diameter)


def _write_nifti(image: sitk.Image, target: Path) -> Path:
    write_atomic(target, lambda temp: sitk.WriteImage(image, str(temp), useCompression=True), suffix=".nii.gz")
    return target


class StudyScorer:
    """Score study folders with one package (the :data:`~pacs_workbench.deploy.listen.Scorer` of the listener).

    Parameters
    ----------
    package
        The opened package (:func:`~pacs_workbench.deploy.load_package`).
    out
        Results go to ``out/results/<study>/``; temporary volumes to ``out/work/``.
    key
        Pseudonymization key: the patient pseudonym of the rows.
    store_to
        PACS URL (``dimse://AET@HOST:PORT`` or ``dicomweb+http://...``) the SEG and SR are sent to.
    threads
        Torch threads of the segmentation.

    Raises
    ------
    PackageError
        A package that cannot score images: no preprocessing or radiomics parameters, no segmentation model.
    """

    def __init__(
        self, package: ModelPackage, out: str | os.PathLike[str], key: bytes, *, store_to: str | None = None,
        threads: int = 1,
    ) -> None:
        self.package = package
        self.out = Path(out)
        self.key = key
        self.store_to = store_to
        preprocessing = package.description.get("preprocessing")
        if not preprocessing or package.radiomics_params_file is None:
            raise PackageError(
                "the package was made from a feature table alone (no preprocessing or radiomics parameters): "
                "it cannot score images"
            )
        parameters = json.loads((package.folder / preprocessing["file"]).read_text(encoding="utf-8"))
        self.params: dict[str, PreprocessParams] = {}
        for modality, values in parameters.items():
            params = PreprocessParams.coerce(values)
            if preprocessing_digest(params.effective(modality)) != preprocessing["sha256_by_modality"][modality]:
                raise PackageError(
                    f"the package's {modality} preprocessing parameters do not hash to the recorded digest"
                )
            self.params[modality] = params
        self.segmenter = LesionSegmenter.from_package(package, threads)

    def __call__(self, folder: Path) -> dict[str, Any]:
        return self.score(folder)

    def score(self, folder: Path) -> dict[str, Any]:
        """Score one study folder; returns what was written (also ``result.json``)."""
        token, clock = folder.name, _Clock()
        min_slices = min(p.min_slices for p in self.params.values())
        files, header = matching_series(folder, set(self.params), max(2, min_slices))
        modality = str(header.Modality)
        params = self.params[modality]
        try:
            image, _ = read_series(files, correct_tilt=params.correct_tilt, spacing_tolerance=params.spacing_tolerance,
                                   min_slices=params.min_slices)  # fmt: skip
        except SeriesError as exc:
            raise ValueError(f"geometry refused: {exc.reason}") from None
        whole = sitk.Cast(image * 0 + 1, sitk.sitkUInt8)
        volume, _, _ = preprocess_image(
            image, whole, dataclasses.replace(params, crop_margin_mm=None, resegment_range=None), modality=modality
        )
        clock.lap("volume")
        masks = self._lesion_masks(files, volume, image, token)
        clock.lap("segmentation")
        work_root = self.out / "work"
        work_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work_root, prefix=f"{token}-") as temp:
            lesions, prediction = self._risk(Path(temp), token, header, image, masks, params, modality)
        clock.lap("features_and_risk")
        result = self._write(folder, token, files, masks, lesions, prediction)
        clock.lap("results")
        result["seconds"] = clock.laps
        write_json_atomic(self.out / RESULTS / token / RESULT_FILE, result, indent=2)
        LOG.info(
            "study %s: %d lesion(s), risk group %s, flags %d (%s)", token, len(lesions), result["risk_group"],
            len(result["flags"]), ", ".join(f"{k} {v:.1f} s" for k, v in clock.laps.items()),
        )  # fmt: skip
        return result

    def _lesion_masks(self, files: list[str], volume: sitk.Image, image: sitk.Image, token: str) -> list[np.ndarray]:
        """The segmented lesions on the source series' frames, one (z, y, x) array each."""
        from pacs_workbench.segment.dicomseg import onto_source, sorted_sources, source_grid

        labels = self.segmenter.lesions(volume)
        if not labels.any():
            raise ValueError(
                f"segmentation empty: no lesion of at least {self.segmenter.min_lesion_mm3:g} mm^3 found"
            )
        grid = source_grid(sorted_sources(files))
        masks = []
        for number in range(1, int(labels.max()) + 1):
            lesion = sitk.GetImageFromArray((labels == number).astype(np.uint8))
            lesion.CopyInformation(volume)
            on_source = onto_source(lesion, grid)
            if on_source.any():
                masks.append(on_source)
        if not masks:
            raise ValueError("segmentation empty: no lesion is left on the source series' frames")
        if masks[0].shape != sitk.GetArrayViewFromImage(image).shape:
            raise ValueError("geometry refused: the series' frames do not form the volume that was segmented")
        return masks

    def _risk(
        self, work: Path, token: str, header: Any, image: sitk.Image, masks: list[np.ndarray],
        params: PreprocessParams, modality: str,
    ) -> tuple[list[LesionMeasurement], dict[str, Any]]:
        """Each lesion preprocessed as a development case, its features, the rows and their risk."""
        patient = pseudonymize(self.key, str(header.get("PatientID", "")), namespace="patient")
        rows, lesions, refused = [], [], []
        for number, mask in enumerate(masks, start=1):
            lesion = sitk.GetImageFromArray(mask)
            lesion.CopyInformation(image)
            lesions.append(lesion_measurement(mask.astype(bool), image))
            try:
                case_image, case_mask, _ = preprocess_image(image, lesion, params, modality=modality)
            except MaskError as exc:
                refused.append(exc.reason)
                continue
            case_id = f"{token}-L{number}"
            rows.append({
                "case_id": case_id, "Modality": modality, "Manufacturer": str(header.get("Manufacturer", "") or ""),
                "pseudo_patient_id": patient, "StudyDate": "0", "mask_source": "model",
                "image": str(_write_nifti(case_image, work / f"{case_id}_image.nii.gz")),
                "mask": str(_write_nifti(case_mask, work / f"{case_id}_mask.nii.gz")),
            })  # fmt: skip
        if not rows:
            raise ValueError(f"no lesion left after preprocessing: {'; '.join(sorted(set(refused)))}")
        cases = pd.DataFrame(rows)
        cases_file = work / "cases.parquet"
        write_atomic(cases_file, lambda temp: cases.to_parquet(temp, index=False))
        features = package_features(self.package, cases, cases_file, work, 1, False)
        if "error" in features and features["error"].notna().all():
            raise ValueError(f"features failed on every lesion: {str(features['error'].dropna().iloc[0])[:200]}")
        cohort = self._cohort(patient, header)
        table = build_rows(self.package, cases, features, cohort, None)
        predictions = score_rows(self.package, table, None)
        if len(predictions) > 1:  # one row per lesion: the study's risk is its largest lesion's
            size = table.get("original_shape_VoxelVolume", pd.Series(np.zeros(len(table))))
            predictions = predictions.iloc[[int(np.nanargmax(size.to_numpy(dtype=float)))]]
        return lesions, {str(k): v for k, v in predictions.iloc[0].items()}

    def _cohort(self, patient: str, header: Any) -> pd.DataFrame:
        """The one-patient cohort the rows take clinical columns from: the age, the rest missing."""
        clinical = [f["name"] for f in self.package.features if f.get("role") == "clinical"]
        row: dict[str, Any] = {"pseudo_patient_id": patient, "study_index": 0}
        for name in clinical:
            row[name] = age_years(header) if name == "age_years" else np.nan
        return pd.DataFrame([row])

    def _write(
        self, folder: Path, token: str, files: list[str], masks: list[np.ndarray],
        lesions: list[LesionMeasurement], prediction: dict[str, Any],
    ) -> dict[str, Any]:
        """The SEG and the SR under ``results/<study>/`` (and sent with ``store_to``)."""
        from pacs_workbench import __version__
        from pacs_workbench.segment.dicomseg import write_series_seg

        target = self.out / RESULTS / token
        target.mkdir(parents=True, exist_ok=True)
        seg = write_series_seg(files, masks, target / "seg.dcm", algorithm_version=__version__,
                               checkpoint_sha256=self.segmenter.checkpoint_sha256)  # fmt: skip
        risk, group = float(prediction["risk"]), str(prediction["risk_group"])
        sr = write_measurement_report(files, lesions, risk, group, target / "sr.dcm", model_name=MODEL_NAME,
                                      model_version=self.package.model_id)  # fmt: skip
        result: dict[str, Any] = {
            "study": token, "model_id": self.package.model_id, "series_images": len(files), "lesions": len(lesions),
            "lesion_volumes_mm3": [round(m.volume_mm3, 1) for m in lesions],
            "risk": risk, "risk_group": group, "flags": [str(f) for f in prediction.get("flags", [])],
            "seg": seg.name, "sr": sr.name, "seg_sha256": sha256_file(seg), "sent": 0,
        }  # fmt: skip
        if self.store_to:
            from pacs_workbench.deploy.listen_send import send_results
            from pacs_workbench.dicom.net.pacs import PacsError

            try:
                result["sent"] = send_results([seg, sr], self.store_to)
            except (PacsError, OSError) as exc:
                raise ValueError(f"results written but not sent to the PACS: {exc}") from None
        return result


class _Clock:
    """Seconds per step of one study."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def score_study(
    folder: str | os.PathLike[str], package: ModelPackage, out: str | os.PathLike[str], key: bytes, *,
    store_to: str | None = None, threads: int = 1,
) -> dict[str, Any]:
    """Score one study folder with ``package`` (a cold :class:`StudyScorer`; the listener keeps one warm)."""
    return StudyScorer(package, out, key, store_to=store_to, threads=threads).score(Path(folder))

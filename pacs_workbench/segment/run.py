"""The segmentation run: train (or bring) a model, segment every case, score, rank and write.

:func:`segment_cases` writes into ``out_dir``:

* ``segmentation.parquet``: one row per case and lesion -- ``case_id``, ``lesion``, ``voxels``,
  ``volume_mm3``, ``mask_source`` (``reference`` for labelled cases, ``model`` for the others),
  ``mask`` (the mask downstream stages use), ``uncertainty``, ``dice``/``hd95_mm`` where a
  reference exists (also for hidden ones: they score the model), ``split``, ``status``, ``reason``;
* ``worklist.csv``: unlabelled cases ranked by uncertainty ("annotate these next"), pseudonymous ids only;
* ``masks/<case>_mask.nii.gz``, ``probability/<case>_probability.nii.gz`` and ``_uncertainty.nii.gz``;
* ``seg/<series key>.dcm``: one DICOM SEG per segmented series (when the DICOM tree is given);
* ``model/``: the cached checkpoint (masks drawn in a viewer are read from ``annotations/``,
  see :mod:`~pacs_workbench.segment.data`); ``segment.json``: settings, training curve, timings.

Lesions are the connected components (26-connected) of the mean TTA probability >= 0.5;
components smaller than ``min_lesion_mm3`` are dropped (default 14 mm^3, a 3 mm sphere: below
the smallest nodule a report records, 4 mm, so only specks go). Uncertainty is the mean
voxel-wise standard deviation of the test-time-augmented probabilities (flips on the three axes)
inside the predicted lesions grown by two voxels (or where the probability exceeds 0.1), so
the empty background does not dilute it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from pacs_workbench.core.files import json_ready, write_atomic, write_json_atomic
from pacs_workbench.segment.data import (
    CaseVolume,
    SegmentationError,
    add_annotations,
    assign_splits,
    load_case,
    read_cases,
)
from pacs_workbench.segment.net import TrainConfig, TrainResult, dice, predict_stack, train_network
from pacs_workbench.segment.reuse import cached_rows, case_key, keep_rows, mark_seg, seg_is_current, seg_key

MIN_LESION_MM3 = 14.0

COLUMNS = [
    "case_id", "lesion", "voxels", "volume_mm3", "mask_source", "mask", "uncertainty", "dice", "hd95_mm",
    "split", "labelled", "pseudo_patient_id", "SeriesInstanceUID", "status", "reason", "probability",
    "uncertainty_map", "seg", "reference_mm3",
]


@dataclass
class SegmentationRun:
    """What :func:`segment_cases` did (the tables are also on disk)."""

    table: pd.DataFrame
    worklist: pd.DataFrame
    history: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    seg_files: list[Path] = field(default_factory=list)


def _write_image(array: np.ndarray, like: sitk.Image, target: Path, pixel: int) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    image = sitk.Cast(image, pixel)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, lambda temp: sitk.WriteImage(image, str(temp), useCompression=True), suffix=".nii.gz")


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """95th-percentile symmetric surface distance in mm (``nan`` when either mask is empty)."""
    if not prediction.any() or not reference.any():
        return float("nan")
    zyx = (spacing[2], spacing[1], spacing[0])

    def surface(mask: np.ndarray) -> np.ndarray:
        return mask & ~ndimage.binary_erosion(mask)

    a, b = surface(prediction.astype(bool)), surface(reference.astype(bool))
    to_b = ndimage.distance_transform_edt(~b, sampling=zyx)[a]
    to_a = ndimage.distance_transform_edt(~a, sampling=zyx)[b]
    return float(np.percentile(np.concatenate([to_b, to_a]), 95))


def lesions_of(probability: np.ndarray, spacing: tuple[float, float, float], min_mm3: float) -> np.ndarray:
    """Connected components of ``probability >= 0.5`` numbered 1.., those under ``min_mm3`` dropped."""
    labels, n = ndimage.label(probability >= 0.5, structure=np.ones((3, 3, 3)))
    voxel_mm3 = float(np.prod(spacing))
    kept = np.zeros_like(labels)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1)) if n else []
    number = 0
    for index, size in enumerate(sizes, start=1):
        if size * voxel_mm3 >= min_mm3:
            number += 1
            kept[labels == index] = number
    return kept


def uncertainty_score(stack: np.ndarray, lesions: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean TTA standard deviation around the predicted lesions, and the voxel-wise map."""
    spread = stack.std(axis=0).astype(np.float32)
    region = ndimage.binary_dilation(lesions > 0, iterations=2) if lesions.any() else stack.mean(axis=0) > 0.1
    return (float(spread[region].mean()) if region.any() else float(spread.max())), spread


def predict_lesions(network: Any, case: CaseVolume, patch: int, min_mm3: float) -> tuple[np.ndarray, np.ndarray]:
    """The test-time-augmentation probabilities of one case (identity and each flipped axis) and its lesions."""
    stack = predict_stack(network, case.image, patch, flips=(0, 1, 2))
    return stack, lesions_of(stack.mean(axis=0), case.spacing, min_mm3)


def _case_rows(
    row: pd.Series, case: CaseVolume, network: Any, patch: int, out: Path, min_mm3: float
) -> list[dict[str, Any]]:
    """Segment one case and describe it: one row per lesion (one row with the reason when none)."""
    stack, lesions = predict_lesions(network, case, patch, min_mm3)
    probability = stack.mean(axis=0)
    score, spread = uncertainty_score(stack, lesions)
    prob_path = out / "probability" / f"{case.case_id}_probability.nii.gz"
    unc_path = out / "probability" / f"{case.case_id}_uncertainty.nii.gz"
    _write_image(probability.astype(np.float32), case.sitk_image, prob_path, sitk.sitkFloat32)
    _write_image(spread, case.sitk_image, unc_path, sitk.sitkFloat32)
    predicted = lesions > 0
    base = {
        "case_id": case.case_id, "split": row["split"], "labelled": bool(row["labelled"]),
        "pseudo_patient_id": row.get("pseudo_patient_id"), "SeriesInstanceUID": row.get("SeriesInstanceUID"),
        "uncertainty": score, "probability": str(prob_path), "uncertainty_map": str(unc_path),
        "dice": dice(predicted, case.reference) if case.reference is not None else np.nan,
        "hd95_mm": hd95(predicted, case.reference, case.spacing) if case.reference is not None else np.nan,
        "reference_mm3": float(case.reference.sum() * np.prod(case.spacing)) if case.reference is not None else np.nan,
        "status": "ok", "reason": "",
    }
    voxel_mm3 = float(np.prod(case.spacing))
    if row["labelled"]:
        voxels = int(case.reference.sum()) if case.reference is not None else 0
        return [{**base, "lesion": 1, "voxels": voxels, "volume_mm3": voxels * voxel_mm3,
                 "mask_source": "reference", "mask": str(row["mask"])}]
    if not predicted.any():
        return [{**base, "lesion": 0, "voxels": 0, "volume_mm3": 0.0, "mask_source": "model", "mask": None,
                 "status": "empty", "reason": "empty prediction: no lesion of at least "
                 f"{min_mm3:g} mm^3 found; annotate this case"}]
    mask_path = out / "masks" / f"{case.case_id}_mask.nii.gz"
    _write_image(predicted.astype(np.uint8), case.sitk_image, mask_path, sitk.sitkUInt8)
    rows = []
    for number in range(1, int(lesions.max()) + 1):
        voxels = int((lesions == number).sum())
        rows.append({**base, "lesion": number, "voxels": voxels, "volume_mm3": voxels * voxel_mm3,
                     "mask_source": "model", "mask": str(mask_path)})
    return rows


def _error_row(row: pd.Series, reason: str) -> dict[str, Any]:
    return {"case_id": row["case_id"], "lesion": 0, "voxels": 0, "volume_mm3": 0.0, "split": row["split"],
            "labelled": bool(row["labelled"]), "pseudo_patient_id": row.get("pseudo_patient_id"),
            "SeriesInstanceUID": row.get("SeriesInstanceUID"), "mask_source": None, "mask": None,
            "status": "error", "reason": reason}


def _load_all(frame: pd.DataFrame) -> tuple[dict[str, CaseVolume], dict[str, str]]:
    volumes, errors = {}, {}
    for _, row in frame.iterrows():
        try:
            volumes[row["case_id"]] = load_case(row, with_reference=bool(row["has_reference"]))
        except (SegmentationError, RuntimeError, OSError) as exc:
            errors[row["case_id"]] = str(exc) if isinstance(exc, SegmentationError) else (
                f"case {row['case_id']}: volume unreadable ({type(exc).__name__})")
    return volumes, errors


def _model(
    frame: pd.DataFrame, volumes: dict[str, CaseVolume], out: Path, config: TrainConfig,
    model: str | os.PathLike[str] | None, progress: bool,
) -> tuple[Any, TrainResult | None, str]:
    """The trained (or cached) U-Net, or the model brought along, with its checkpoint's SHA-256."""
    if model is not None:
        from pacs_workbench.segment.external import load_external_model

        external = load_external_model(model, [volumes[c].spacing for c in volumes])
        return external, None, external.sha256
    labelled = frame[frame["labelled"] & frame["case_id"].isin(volumes)]
    if labelled.empty:
        raise SegmentationError(
            "no labelled case to train on: no case has a reference mask (give --model PATH, or annotate "
            "cases and rerun 03_preprocessing)"
        )
    train = [volumes[c] for c in labelled.loc[labelled["split"] == "train", "case_id"]]
    validation = [volumes[c] for c in labelled.loc[labelled["split"] == "validation", "case_id"]]
    files = [(str(r.case_id), str(r.image), str(r.mask)) for r in labelled.itertuples()]
    result = train_network(train, validation, files, out / "model", config, progress=progress)
    return result.network, result, result.checkpoint_sha256


def _segment_all(
    frame: pd.DataFrame, volumes: dict[str, CaseVolume], errors: dict[str, str], network: Any, patch: int,
    out: Path, min_lesion_mm3: float, progress: bool, checkpoint_sha: str,
) -> pd.DataFrame:
    """Every case's lesion rows (or its error row), in the columns of ``segmentation.parquet``.

    A case whose inputs and model are those of the last run takes that run's rows
    (:mod:`~pacs_workbench.segment.reuse`).
    """
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    for _, row in tqdm(frame.iterrows(), total=len(frame), desc="segment cases", disable=not progress):
        if row["case_id"] in errors:
            rows.append(_error_row(row, errors[row["case_id"]]))
            continue
        try:
            case = volumes[row["case_id"]]
            key = case_key(row, case, checkpoint_sha, patch, min_lesion_mm3)
            found = cached_rows(out, case.case_id, key)
            if found is None:
                found = _case_rows(row, case, network, patch, out, min_lesion_mm3)
                keep_rows(out, case.case_id, key, found)
            rows.extend(found)
        except SegmentationError as exc:
            rows.append(_error_row(row, str(exc)))
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table.columns:
            table[column] = None
    return table[COLUMNS].sort_values(["case_id", "lesion"]).reset_index(drop=True)


def segment_cases(
    cases: str | os.PathLike[str] | pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    dicom_dir: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | None = None,
    labelled_fraction: float = 1.0,
    config: TrainConfig | dict[str, Any] | None = None,
    min_lesion_mm3: float = MIN_LESION_MM3,
    threads: int = 1,
    annotations_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> SegmentationRun:
    """Train on the labelled cases (or use ``model``), segment every case, write the outputs.

    Parameters
    ----------
    cases
        The preprocess cases table (``cases.parquet``): ``case_id``, ``image``, ``mask``,
        ``pseudo_patient_id``, ``SeriesInstanceUID``.
    out_dir
        Receives the outputs listed in the module docstring.
    dicom_dir
        The DICOM tree the cases came from (de-identified); needed for the DICOM SEG files.
    model
        A TorchScript (``.pt``/``.ts``) or ONNX (``.onnx``) model with a YAML beside it (see
        :mod:`~pacs_workbench.segment.external`), used instead of training.
    labelled_fraction
        Share of patients whose reference masks the model may learn from; the rest are hidden and
        only score the model (the demo's way to exercise the mask-less path).
    config
        :class:`~pacs_workbench.segment.net.TrainConfig` or a dict of its fields.
    min_lesion_mm3
        Smallest component kept as a lesion.
    threads
        Torch threads. One is fastest for this small U-Net on small volumes: with two on two cores,
        training steps took ten times as long (each thread waits on the other, far longer when another
        process holds a core).
    annotations_dir
        Masks drawn in a viewer on the preprocessed images, ``<case_id>_mask.nii.gz``
        (default ``<out_dir>/annotations``): those cases are labelled and trained on
        (:func:`~pacs_workbench.segment.data.add_annotations`).

    Raises
    ------
    SegmentationError
        When no case can be segmented (no labelled case to train on, a model that does not fit).
    """
    started = time.perf_counter()
    cfg = TrainConfig.coerce(config)
    cfg.threads = max(1, int(threads or 1))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    annotated = add_annotations(read_cases(cases), annotations_dir if annotations_dir else out / "annotations")
    frame = assign_splits(annotated, labelled_fraction if model is None else 0.0, seed=cfg.seed)
    volumes, errors = _load_all(frame)
    network, trained, checkpoint_sha = _model(frame, volumes, out, cfg, model, progress)
    train_s = time.perf_counter() - started
    patch = getattr(network, "roi_size", cfg.patch)
    infer_started = time.perf_counter()
    table = _segment_all(frame, volumes, errors, network, patch, out, min_lesion_mm3, progress, checkpoint_sha)
    infer_s = time.perf_counter() - infer_started
    seg_files = _write_segs(table, frame, volumes, out, dicom_dir, checkpoint_sha) if dicom_dir else []
    write_atomic(out / "segmentation.parquet", lambda temp: table.to_parquet(temp, index=False))
    worklist = rank_worklist(table)
    write_atomic(out / "worklist.csv", lambda temp: worklist.to_csv(temp, index=False))
    summary = {
        "n_cases": len(frame), "n_labelled": int(frame["labelled"].sum()),
        "n_annotated": int((frame["annotated"] & frame["labelled"]).sum()),
        "n_patients_labelled": int(frame.loc[frame["labelled"], "pseudo_patient_id"].nunique()),
        "labelled_fraction": labelled_fraction, "checkpoint_sha256": checkpoint_sha,
        "model": "external" if model is not None else "unet", "cached": bool(trained and trained.cached),
        "train_s": round(train_s, 2), "inference_s": round(infer_s, 2),
        "inference_s_per_volume": round(infer_s / max(1, len(volumes)), 3),
        "config": trained.config if trained else {}, "history": trained.history if trained else [],
        "min_lesion_mm3": min_lesion_mm3, "n_seg_files": len(seg_files),
    }
    write_json_atomic(out / "segment.json", json_ready(summary), indent=1)
    return SegmentationRun(table, worklist, trained.history if trained else [], summary, seg_files)


def rank_worklist(table: pd.DataFrame) -> pd.DataFrame:
    """Unlabelled cases, most uncertain first: the cases to annotate next (pseudonymous ids only)."""
    model_rows = table[(table["split"] == "unlabelled") & table["status"].isin(["ok", "empty"])]
    per_case = model_rows.groupby("case_id", as_index=False).agg(
        uncertainty=("uncertainty", "max"), lesions=("lesion", "max"), status=("status", "first")
    )
    per_case = per_case.sort_values(["uncertainty", "case_id"], ascending=[False, True]).reset_index(drop=True)
    per_case.insert(0, "rank", np.arange(1, len(per_case) + 1))
    return per_case


def series_name(series_uid: str) -> str:
    """A file name for a series that carries no UID: ``s`` + 10 hex digits of its SHA-256."""
    return "s" + hashlib.sha256(series_uid.encode()).hexdigest()[:10]


def _write_segs(
    table: pd.DataFrame, frame: pd.DataFrame, volumes: dict[str, CaseVolume], out: Path,
    dicom_dir: str | os.PathLike[str], checkpoint_sha: str,
) -> list[Path]:
    """One SEG per series with model masks; a series that fails is recorded, the rest go on."""
    from pacs_workbench import __version__
    from pacs_workbench.segment.dicomseg import index_series, onto_source, sorted_sources, source_grid, write_series_seg

    model_rows = table[(table["mask_source"] == "model") & (table["status"] == "ok")]
    wanted = {str(u) for u in model_rows["SeriesInstanceUID"].dropna().unique()}
    files = index_series(dicom_dir, wanted) if wanted else {}
    written = []
    for uid in sorted(wanted):
        cases = sorted(model_rows.loc[model_rows["SeriesInstanceUID"] == uid, "case_id"].unique())
        if uid not in files:
            table.loc[table["case_id"].isin(cases), "reason"] = "source series not found for the DICOM SEG"
            continue
        try:
            mask_files = [out / "masks" / f"{case}_mask.nii.gz" for case in cases]
            target = out / "seg" / f"{series_name(uid)}.dcm"
            key = seg_key(checkpoint_sha, __version__, uid, files[uid], mask_files)
            if seg_is_current(out, target, key):  # same model, sources and masks: the SEG written last time
                written.append(target)
                table.loc[table["case_id"].isin(cases), "seg"] = str(target)
                continue
            grid = source_grid(sorted_sources(files[uid]))
            masks = [onto_source(sitk.ReadImage(str(path), sitk.sitkUInt8), grid) for path in mask_files]
            masks = [m for m in masks if m.any()]
            if not masks:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(write_series_seg(files[uid], masks, target, algorithm_version=__version__,
                                            checkpoint_sha256=checkpoint_sha))
            mark_seg(out, target, key)
            table.loc[table["case_id"].isin(cases), "seg"] = str(target)
        except (ValueError, RuntimeError) as exc:
            table.loc[table["case_id"].isin(cases), "reason"] = f"DICOM SEG not written: {str(exc)[:200]}"
    return written

"""The CNN and the hybrid in the outer folds of the modeling stage, so every comparison with LightGBM is paired.

:func:`run_deep_folds` is called by :func:`pacs_workbench.radiomics.model.run_modeling` when it is given a
:class:`DeepConfig`. It cuts one lesion-centred crop per case of the modeling table
(:func:`pacs_workbench.radiomics.cnn.make_crops`, from the table's ``image`` and ``mask`` columns) and, in
exactly the (repeat, outer fold) splits that LightGBM uses, with the same training and test rows:

- trains :class:`~pacs_workbench.radiomics.cnn.CNNClassifier` on the training rows (early stopping on an
  inner split of the training patients) and predicts the test rows: model ``cnn``;
- with ``hybrid``: takes the penultimate-layer embeddings of that fold's CNN for the training and the test
  rows (a test case never shapes the network that embeds it) and fits the LightGBM pipeline, tuned in the
  same inner folds, on the radiomic and clinical features plus the embeddings (``cnn_embedding_00``, ...):
  model ``hybrid``.

Each fold's CNN checkpoint is cached by the SHA-256 of its inputs (the training crops, labels and patients)
and the settings (:func:`checkpoint_key`), and each fold's result (probabilities, embeddings, the hybrid's
tuning) by that key with the modeling table's content and settings, so a rerun with nothing changed trains
nothing and fits nothing. Folds run through :func:`pacs_workbench.core.executor.map_items` (one torch
thread per worker by default: the result does not depend on the number of workers).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedGroupKFold

from pacs_workbench.core.executor import map_items
from pacs_workbench.core.files import write_atomic, write_json_atomic
from pacs_workbench.radiomics import fold_cache
from pacs_workbench.radiomics.cnn import CNNClassifier, CropSet, CropSettings, device
from pacs_workbench.radiomics.folds import (
    FoldTask,
    GroupLeakError,
    ModelingConfig,
    build_models,
    check_groups_disjoint,
    fit_one,
)
from pacs_workbench.radiomics.table import ModelingError

#: Bump when a code change changes what CNN training produces, so older checkpoints are retrained.
TRAINING_VERSION = "2"
EMBEDDING_PREFIX = "cnn_embedding_"


@dataclass
class DeepConfig:
    """The CNN and the hybrid: crops, network, training and where the images are (all in the cache keys)."""

    crop_size: int = 32  # crop edge in voxels
    crop_spacing_mm: float = 1.5  # isotropic sampling of the crop
    with_mask: bool = True  # the lesion mask as a second input channel
    widths: tuple[int, ...] = (8, 16, 32, 64)  # channels of the four ResNet stages; the last is the embedding
    dropout: float = 0.2
    epochs: int = 30
    patience: int = 8  # early stopping on the inner validation loss
    batch_size: int = 8
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.2  # of the training patients, for early stopping
    augment: bool = True  # flips, small rotations, intensity jitter
    rotate_degrees: float = 10.0
    intensity_jitter: float = 0.05
    test_time_flips: bool = True  # predict and embed as the mean over the crop and its flips
    hybrid: bool = True  # also fit LightGBM on the features plus the CNN embeddings
    threads: int = 1  # torch threads per fold (fixed: results do not depend on the number of workers)
    device: str = "auto"  # a GPU when torch sees one
    image_col: str = "image"
    mask_col: str = "mask"

    @classmethod
    def coerce(cls, value: DeepConfig | dict[str, Any] | None) -> DeepConfig:
        if isinstance(value, DeepConfig):
            return value
        given = dict(value or {})
        unknown = sorted(set(given) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown CNN setting(s): {', '.join(unknown)}")
        if "widths" in given:
            given["widths"] = tuple(int(c) for c in given["widths"])
        return cls(**given)

    def crops(self) -> CropSettings:
        return CropSettings(self.crop_size, self.crop_spacing_mm, self.with_mask)

    def estimator(self, random_state: int) -> CNNClassifier:
        return CNNClassifier(
            widths=tuple(self.widths), dropout=self.dropout, epochs=self.epochs, patience=self.patience,
            batch_size=self.batch_size, learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            validation_fraction=self.validation_fraction, augment=self.augment, rotate_degrees=self.rotate_degrees,
            intensity_jitter=self.intensity_jitter, test_time_flips=self.test_time_flips, random_state=random_state,
            threads=self.threads,
            device=self.device,
        )  # fmt: skip


def cnn_seed(fold_seed: int) -> int:
    """The CNN's seed in a fold: from the fold's seed (the one its LightGBM models use)."""
    return int(np.random.SeedSequence([int(fold_seed), 7]).generate_state(1)[0] % (2**31 - 1))


def _array_digest(*arrays: Any) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes() if values.dtype != object else "\x1f".join(map(str, values.ravel())).encode())
    return digest.hexdigest()


def checkpoint_key(
    crops: NDArray[Any], y: NDArray[Any], groups: NDArray[Any], settings: DeepConfig, seed: int
) -> str:
    """SHA-256 of a fold's CNN inputs (its training crops, labels and patients), the settings and the seed."""
    training = {k: v for k, v in asdict(settings).items() if k not in {"hybrid", "image_col", "mask_col"}}
    training["device"] = str(device(settings.device).type)
    material = {
        "version": TRAINING_VERSION,
        "inputs": _array_digest(crops, np.asarray(y, dtype=np.int64), np.asarray(groups).astype(str)),
        "settings": training,
        "seed": int(seed),
    }
    return fold_cache.settings_digest(material)


@dataclass
class DeepFoldTask(FoldTask):
    """LightGBM's fold task with what the CNN and the hybrid add: the crops, settings and checkpoint."""

    crops_file: str
    deep: DeepConfig
    cnn_key: str
    checkpoint: str


def fit_deep_fold(task: DeepFoldTask) -> dict[str, Any]:
    """Train (or load) one fold's CNN, predict its test rows and fit the hybrid; errors come back as a record."""
    try:
        return _fit_deep_fold(task)
    except Exception as exc:  # reported per fold; the caller fails the run
        return {"repeat": task.repeat, "fold": task.fold, "error": f"{type(exc).__name__}: {exc}"}


def _train_or_load(task: DeepFoldTask, crops: NDArray[Any]) -> tuple[CNNClassifier, bool, float, float]:
    """The fold's CNN, from its checkpoint when there is one; whether it was cached, training wall and CPU seconds."""
    estimator = task.deep.estimator(cnn_seed(task.seed))
    checkpoint, record_file = Path(task.checkpoint), Path(task.checkpoint).with_suffix(".json")
    if checkpoint.is_file() and record_file.is_file():
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
            if record.get("cache_key") == task.cnn_key:
                estimator.load_state(checkpoint.read_bytes(), crops.shape[1], crops.shape[2:], record)
                return estimator, True, 0.0, 0.0
        except (OSError, ValueError, RuntimeError):  # a torn checkpoint is retrained
            pass
    started, cpu = time.perf_counter(), time.process_time()
    estimator.fit(crops[task.train], task.y[task.train], task.groups[task.train])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    data = estimator.state_bytes()
    write_atomic(checkpoint, lambda temp: temp.write_bytes(data))
    record = {
        "cache_key": task.cnn_key, "history": estimator.history_, "best_epoch": estimator.best_epoch_,
        "n_train": estimator.n_train_, "n_validation": estimator.n_validation_, "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "settings": asdict(task.deep), "seed": cnn_seed(task.seed),
    }  # fmt: skip
    write_json_atomic(record_file, record, indent=1)
    return estimator, False, seconds, cpu


def embedding_columns(width: int) -> list[str]:
    return [f"{EMBEDDING_PREFIX}{i:02d}" for i in range(width)]


def _fit_deep_fold(task: DeepFoldTask) -> dict[str, Any]:
    check_groups_disjoint(task.groups[task.train], task.groups[task.test])
    crops = np.load(task.crops_file, mmap_mode="r")
    fold_cpu = time.process_time()
    estimator, cached, seconds, train_cpu = _train_or_load(task, crops)
    # The spy every fold carries: the CNN learned from the training rows and nothing else.
    if estimator.n_train_ + estimator.n_validation_ != task.train.size:
        raise GroupLeakError("cnn: trained on rows outside the fold's training part")
    probs = {"cnn": estimator.predict_proba(crops[task.test])[:, 1]}
    result: dict[str, Any] = {
        "repeat": task.repeat, "fold": task.fold, "train": task.train, "test": task.test, "probs": probs,
        "cnn_key": task.cnn_key, "cnn_cached": cached, "train_seconds": seconds, "train_cpu_seconds": train_cpu,
        "history": estimator.history_,
        "best_epoch": estimator.best_epoch_, "n_train": estimator.n_train_, "n_validation": estimator.n_validation_,
    }  # fmt: skip
    if not task.deep.hybrid:
        return result | {"cpu_seconds": time.process_time() - fold_cpu}
    names = embedding_columns(estimator.embedding_dim_)
    embedded = task.X.copy()
    values = np.full((len(embedded), len(names)), np.nan)
    # Both parts embedded by this fold's CNN, which never saw a test row.
    values[task.train] = estimator.transform(crops[task.train])
    values[task.test] = estimator.transform(crops[task.test])
    embedded[names] = values
    features = [*task.features, *names]
    pipe, grid = build_models(task.config, features, task.clinical, task.seed)["lightgbm"]
    inner = StratifiedGroupKFold(n_splits=task.config.inner_folds, shuffle=True, random_state=task.seed)
    model, params = fit_one("hybrid", pipe, grid, replace(task, X=embedded, features=features), inner)
    if getattr(model.steps[0][1], "n_samples_fit_", task.train.size) != task.train.size:
        raise GroupLeakError("hybrid: preprocessing was fitted on rows outside the training part")
    probs["hybrid"] = model.predict_proba(embedded.iloc[task.test])[:, 1]
    prep = model.named_steps["prep"]
    kept = [c for c in prep.feature_names_out_ if str(c).startswith(EMBEDDING_PREFIX)]
    result.update(
        embedding_test=values[task.test].astype(np.float32), embedding_names=names, hybrid_params=params,
        n_embedding_kept=len(kept), n_features_hybrid=len(prep.feature_names_out_),
        cpu_seconds=time.process_time() - fold_cpu,
    )  # fmt: skip
    return result


# --- the stage's part ----------------------------------------------------------------------------


@dataclass
class DeepRun:
    """What :func:`run_deep_folds` produced: per-fold results (sorted), the crops, a report and the weights."""

    results: list[dict[str, Any]]
    crops: CropSet
    report: dict[str, Any]
    checkpoints: dict[tuple[int, int], bytes]  # each fold's state dict (torch.save), by (repeat, fold)


def run_deep_folds(
    crops: CropSet,
    X: pd.DataFrame,
    y: NDArray[np.int64],
    groups: NDArray[Any],
    plan: Sequence[tuple[int, int, NDArray[np.int64], NDArray[np.int64], int]],
    config: ModelingConfig,
    features: list[str],
    clinical: list[str],
    deep: DeepConfig,
    *,
    out: Path,
    table_key: str,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> DeepRun:
    """The CNN (and hybrid) in every (repeat, outer fold) of ``plan``; see the module docstring.

    Parameters
    ----------
    crops
        One crop per modeling row, in row order (:func:`pacs_workbench.radiomics.cnn.make_crops`).
    X, y, groups
        The LightGBM input columns, labels and patients of the same rows.
    plan
        ``(repeat, fold, train positions, test positions, fold seed)``: LightGBM's folds, unchanged.
    table_key
        Content hash of ``X``, ``y`` and ``groups`` (:func:`pacs_workbench.radiomics.fold_cache.table_digest`).

    Raises
    ------
    ModelingError
        When a fold failed.
    """
    started = time.perf_counter()
    with _fold_folder(out, cache, cache_dir) as folder:
        crops_file = _save_crops(crops, folder)
        tasks, keys = _fold_tasks(crops, crops_file, folder, X, y, groups, plan, config, features, clinical, deep,
                                  table_key)  # fmt: skip
        results = _fold_results(tasks, keys, folder, cache, workers, scheduler, progress)
        if cache:
            fold_cache.prune(folder, keys.values())
            fold_cache.prune(folder, [Path(t.checkpoint).stem for t in tasks], "cnn-*.pt")
            fold_cache.prune(folder, [Path(t.checkpoint).stem for t in tasks], "cnn-*.json")
            fold_cache.prune(folder, [crops_file.stem], "crops-*.npy")
        checkpoints = {(t.repeat, t.fold): Path(t.checkpoint).read_bytes() for t in tasks}
    return DeepRun(results, crops, _deep_report(results, crops, deep, started), checkpoints)


@contextmanager
def _fold_folder(out: Path, cache: bool, cache_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    """The CNN's cache folder, or a scratch folder removed afterwards when nothing is cached."""
    if cache:
        folder = fold_cache.cache_folder(out, cache_dir, "cnn")
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="pacs-workbench-cnn-") as scratch:
        yield Path(scratch)


def _save_crops(crops: CropSet, folder: Path) -> Path:
    """The crops as one ``.npy`` named by their content hash (written once), for the fold workers."""
    crops_file = folder / f"crops-{_array_digest(crops.arrays)[:16]}.npy"
    if not crops_file.is_file():
        write_atomic(crops_file, lambda temp: np.save(temp, crops.arrays, allow_pickle=False), suffix=".npy")
    return crops_file


def _fold_tasks(
    crops: CropSet,
    crops_file: Path,
    folder: Path,
    X: pd.DataFrame,
    y: NDArray[np.int64],
    groups: NDArray[Any],
    plan: Sequence[tuple[int, int, NDArray[np.int64], NDArray[np.int64], int]],
    config: ModelingConfig,
    features: list[str],
    clinical: list[str],
    deep: DeepConfig,
    table_key: str,
) -> tuple[list[DeepFoldTask], dict[tuple[int, int], str]]:
    """One task per fold of ``plan``, and each fold's result key (its CNN's checkpoint key, the table, the settings)."""
    settings = fold_cache.settings_digest(asdict(config), features, clinical, asdict(deep), TRAINING_VERSION)
    tasks, keys = [], {}
    for repeat, fold, train, test, seed in plan:
        cnn_key = checkpoint_key(crops.arrays[train], y[train], groups[train], deep, cnn_seed(seed))
        keys[(repeat, fold)] = fold_cache.settings_digest({"cnn": cnn_key}, table_key, settings)
        checkpoint = str(folder / f"cnn-{cnn_key[:24]}.pt")
        tasks.append(DeepFoldTask(repeat, fold, X, y, groups, train, test, config, features, clinical, int(seed),
                                  str(crops_file), deep, cnn_key, checkpoint))  # fmt: skip
    return tasks, keys


def _fold_results(
    tasks: list[DeepFoldTask],
    keys: dict[tuple[int, int], str],
    folder: Path,
    cache: bool,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
) -> list[dict[str, Any]]:
    """Every fold's result, read back from the cache where it holds one, fitted otherwise; sorted by fold."""
    results = []
    for task in tasks if cache else []:
        key = keys[(task.repeat, task.fold)]
        hit = fold_cache.read_entry(fold_cache.entry_path(folder, key), key)
        if hit is not None and Path(task.checkpoint).is_file():
            results.append({**hit, "from_cache": True})
    done = {(r["repeat"], r["fold"]) for r in results}
    todo = [t for t in tasks if (t.repeat, t.fold) not in done]
    fitted = list(
        map_items(fit_deep_fold, todo, workers=workers if len(todo) > 1 else 1, scheduler=scheduler,
                  desc="CNN folds", total=len(todo), progress=progress and bool(todo))
    )  # fmt: skip
    failed = [r for r in fitted if "error" in r]
    if failed:
        detail = "; ".join(f"repeat {r['repeat']} fold {r['fold']}: {r['error']}" for r in failed[:3])
        raise ModelingError(f"{len(failed)} of {len(tasks)} CNN folds failed ({detail})")
    for res in fitted:
        key = keys[(res["repeat"], res["fold"])]
        if cache:
            fold_cache.write_entry(fold_cache.entry_path(folder, key), key, res)
        results.append({**res, "from_cache": False})
    results.sort(key=lambda r: (r["repeat"], r["fold"]))
    return results


def _deep_report(results: list[dict[str, Any]], crops: CropSet, deep: DeepConfig, started: float) -> dict[str, Any]:
    """What the CNN folds cost and where their results came from (``metrics.json``'s ``deep``)."""
    return {
        "folds": len(results),
        "cnn_trained": sum(1 for r in results if not r["from_cache"] and not r["cnn_cached"]),
        "cnn_from_cache": sum(1 for r in results if r["from_cache"] or r["cnn_cached"]),
        "results_from_cache": sum(1 for r in results if r["from_cache"]),
        "train_seconds": float(sum(r["train_seconds"] for r in results if not r["from_cache"])),
        "train_cpu_seconds": float(sum(r["train_cpu_seconds"] for r in results if not r["from_cache"])),
        "fold_cpu_seconds": float(sum(r["cpu_seconds"] for r in results if not r["from_cache"])),
        "seconds": time.perf_counter() - started,
        "crops_seconds": float(crops.seconds),
        "best_epochs": [int(r["best_epoch"]) for r in results],
        "crops": {"n": len(crops.info), "padded": int((crops.info["padded_share"] > 0).sum()),
                  "lesion_at_edge": int(crops.info["lesion_at_edge"].sum()),
                  "shape": list(crops.arrays.shape[1:])},
        "device": str(device(deep.device).type),
    }  # fmt: skip

"""What a modeling run writes to its folder: metrics, predictions, the model card and ``models/``.

Every file is written atomically (:mod:`pacs_workbench.core.files`). ``metrics.json`` is strict
JSON (NaN and infinities become ``null``); ``models/`` holds, per outer fold, the LightGBM
booster, the fitted pipeline bundle and the exact booster input of the test fold, which the
explain stage reads (see :mod:`pacs_workbench.radiomics.model` for the layout).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline

from pacs_workbench.core.files import (
    json_ready,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from pacs_workbench.radiomics.card import render_model_card
from pacs_workbench.radiomics.transformers import RadiomicsPreprocessor

if TYPE_CHECKING:
    from pacs_workbench.radiomics.deep import DeepConfig, DeepRun

#: The CNN's files in ``models/`` (for the explain stage's saliency maps).
CNN_FOLDER = "cnn"


def write_results(out: Path, predictions: pd.DataFrame, metrics: dict[str, Any]) -> None:
    """``predictions.parquet``, ``metrics.json`` and ``model_card.md`` in ``out``."""
    _write_parquet(out / "predictions.parquet", predictions)
    write_text_atomic(out / "metrics.json", json.dumps(json_ready(metrics), indent=2, default=str))
    write_text_atomic(out / "model_card.md", render_model_card(metrics))


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    write_atomic(path, lambda temp: frame.to_parquet(temp, index=False))


def fold_records(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (repeat, outer fold): sizes, tuned parameters and its files in ``models/``."""
    rows = []
    for res in results:
        stem = f"r{res['repeat']}_f{res['fold']}"
        rows.append(
            {
                "repeat": int(res["repeat"]),
                "outer_fold": int(res["fold"]),
                "n_train": int(res["train"].size),
                "n_test": int(res["test"].size),
                "n_features_after_filter": int(res["n_features_after_filter"]),
                "n_features_radiomics_lr": int(res["n_features_radiomics_lr"]),
                "best_params": res["best_params"],
                "booster": f"models/{stem}.txt",
                "pipeline": f"models/{stem}.joblib",
                "test_matrix": f"models/{stem}_test.parquet",
            }
        )
    return rows


def write_fold_models(
    folder: Path,
    results: Sequence[dict[str, Any]],
    row_index: NDArray[Any],
    case_ids: NDArray[Any],
    input_cols: list[str],
) -> None:
    """Write every fold's booster, pipeline bundle and test matrix, and ``folds.parquet``."""
    folder.mkdir(parents=True, exist_ok=True)
    for res in results:
        stem = f"r{res['repeat']}_f{res['fold']}"
        pipe: Pipeline = res["pipeline"]
        prep: RadiomicsPreprocessor = pipe.named_steps["prep"]
        booster = pipe.named_steps["clf"].booster_

        def save_booster(temp: Path, b: Any = booster) -> None:
            b.save_model(str(temp))

        write_atomic(folder / f"{stem}.txt", save_booster)
        bundle = {
            "pipeline": pipe,
            "preprocessor": prep,
            "feature_columns": list(prep.feature_names_out_),
            "feature_sources": list(prep.feature_sources_),
            "input_columns": input_cols,
            "train_rows": row_index[res["train"]].tolist(),
            "test_rows": row_index[res["test"]].tolist(),
            "best_params": res["best_params"].get("lightgbm", {}),
            "recalibrator": res["recalibrator"],
        }
        buffer = io.BytesIO()
        joblib.dump(bundle, buffer)
        write_bytes_atomic(folder / f"{stem}.joblib", buffer.getvalue())
        matrix = res["test_matrix"].reset_index(drop=True)
        matrix.insert(0, "case_id", case_ids[res["test"]])
        matrix.insert(0, "row_index", row_index[res["test"]])
        _write_parquet(folder / f"{stem}_test.parquet", matrix)
    index = pd.DataFrame(fold_records(results)).drop(columns=["best_params"])
    _write_parquet(folder / "folds.parquet", index)


def write_cnn_models(
    folder: Path,
    deep_run: DeepRun | None,
    settings: DeepConfig | None,
    row_index: NDArray[Any],
    case_ids: NDArray[Any],
) -> None:
    """``models/cnn/``: every fold's CNN checkpoint, the crops, the folds and the test rows' embeddings.

    ``r{repeat}_f{fold}.pt`` (state dict), ``settings.json`` (:class:`~pacs_workbench.radiomics.deep.DeepConfig`,
    channels, crop shape), ``crops.npy`` with ``crops.parquet`` (``row_index``, ``case_id``, padding per
    crop, in the order of ``crops.npy``), ``folds.parquet`` (``repeat``, ``outer_fold``, ``checkpoint``,
    ``train_rows``, ``test_rows``, ``best_epoch``, ...) and ``embeddings.parquet`` (the hybrid's embedding of
    each test row by the CNN of the fold that held it out). A run without the CNN removes the folder, so
    no stale network is explained.
    """
    if deep_run is None or settings is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    crops = deep_run.crops
    write_atomic(folder / "crops.npy", lambda temp: np.save(temp, crops.arrays, allow_pickle=False), suffix=".npy")
    info = crops.info.drop(columns=["case_id"]).assign(row_index=row_index, case_id=case_ids)
    _write_parquet(folder / "crops.parquet", info[["row_index", "case_id", "padded_share", "lesion_at_edge"]])
    rows, embeddings = [], []
    for res in deep_run.results:
        stem = f"r{res['repeat']}_f{res['fold']}"
        write_bytes_atomic(folder / f"{stem}.pt", deep_run.checkpoints[(res["repeat"], res["fold"])])
        rows.append({
            "repeat": int(res["repeat"]), "outer_fold": int(res["fold"]), "checkpoint": f"{stem}.pt",
            "cnn_key": res["cnn_key"], "best_epoch": int(res["best_epoch"]), "epochs_run": len(res["history"]),
            "n_train": int(res["n_train"]), "n_validation": int(res["n_validation"]), "n_test": int(res["test"].size),
            "train_rows": row_index[res["train"]].tolist(), "test_rows": row_index[res["test"]].tolist(),
        })  # fmt: skip
        if "embedding_test" in res:
            part = pd.DataFrame(res["embedding_test"], columns=res["embedding_names"])
            part.insert(0, "outer_fold", int(res["fold"]))
            part.insert(0, "repeat", int(res["repeat"]))
            part.insert(0, "case_id", case_ids[res["test"]])
            part.insert(0, "row_index", row_index[res["test"]])
            embeddings.append(part)
    _write_parquet(folder / "folds.parquet", pd.DataFrame(rows))
    if embeddings:
        _write_parquet(folder / "embeddings.parquet", pd.concat(embeddings, ignore_index=True))
    else:
        (folder / "embeddings.parquet").unlink(missing_ok=True)
    described = json_ready(asdict(settings)) | {
        "in_channels": int(crops.arrays.shape[1]), "crop_shape": [int(v) for v in crops.arrays.shape[2:]],
    }  # fmt: skip
    write_json_atomic(folder / "settings.json", described, indent=1)


def read_results(model_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """``metrics.json`` and ``predictions.parquet`` of a modeling run."""
    folder = Path(model_dir)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    return metrics, pd.read_parquet(folder / "predictions.parquet")

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline

from pacs_workbench.core.files import json_ready, write_atomic, write_bytes_atomic, write_text_atomic
from pacs_workbench.radiomics.card import render_model_card
from pacs_workbench.radiomics.transformers import RadiomicsPreprocessor


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


def read_results(model_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """``metrics.json`` and ``predictions.parquet`` of a modeling run."""
    folder = Path(model_dir)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    return metrics, pd.read_parquet(folder / "predictions.parquet")

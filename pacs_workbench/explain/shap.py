"""Exact TreeSHAP values of the modeling stage's fold models, each on its own held-out cases.

Every case is explained by the LightGBM model of the outer fold that held it out, so no case is
explained by a model that trained on it (checked in code: :class:`FoldLeakError`, per case and
per patient). Contributions are on the model's raw (log-odds) scale, from LightGBM's own
``pred_contrib`` (the default: it needs no model conversion and is the faster of the two) or from
the ``shap`` package's ``TreeExplainer`` (``method="shap"``); both give the same numbers, and in
each case ``expected_value + sum(contributions) == raw output`` (the additivity error is recorded
per fold).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pacs_workbench.explain.families import describe_features

FloatArray = NDArray[np.float64]

METHODS = ("lightgbm", "shap")
KEY_COLUMNS = ("row_index", "case_id", "repeat", "outer_fold", "label", "expected_value", "raw_output", "prob")


class ExplainError(ValueError):
    """Model outputs that cannot be explained (the message says which and why)."""


class FoldLeakError(AssertionError):
    """A case would be explained by a model that was trained on it (or on its patient)."""


def tree_shap(booster: Any, X: pd.DataFrame, method: str = "lightgbm") -> tuple[FloatArray, FloatArray]:
    """Exact TreeSHAP contributions of a LightGBM booster on the raw (log-odds) scale.

    Parameters
    ----------
    booster
        A ``lightgbm.Booster`` (binary objective).
    X
        Booster input, columns in the booster's feature order.
    method
        ``"lightgbm"``: ``Booster.predict(pred_contrib=True)``; ``"shap"``: ``shap.TreeExplainer``
        with the tree-path-dependent algorithm.

    Returns
    -------
    tuple
        Contributions ``(n_cases, n_features)`` and the expected value per case ``(n_cases,)``.
    """
    if method == "lightgbm":
        out = np.asarray(booster.predict(X, pred_contrib=True), dtype=float)
        if out.shape[1] != X.shape[1] + 1:
            raise ExplainError(f"pred_contrib returned {out.shape[1]} columns for {X.shape[1]} features")
        return out[:, :-1], out[:, -1]
    if method == "shap":
        import warnings

        import shap

        explainer = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
        with warnings.catch_warnings():
            # shap announces its output layout for LightGBM binary models on every call.
            warnings.simplefilter("ignore", UserWarning)
            values = explainer.shap_values(X)
        array = np.asarray(values[-1] if isinstance(values, list) else values, dtype=float)
        if array.ndim == 3:  # (n, p, classes): the positive class
            array = array[:, :, -1]
        expected = np.ravel(np.asarray(explainer.expected_value, dtype=float))[-1]
        return array, np.full(array.shape[0], float(expected))
    raise ExplainError(f"unknown SHAP method {method!r}; use one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class FoldJob:
    """One outer fold to explain (paths only, so it pickles cheaply for worker processes)."""

    repeat: int
    fold: int
    booster: str
    bundle: str
    test: str
    method: str = "lightgbm"


def explain_fold(job: FoldJob) -> dict[str, Any]:
    """SHAP values of one fold's model on that fold's held-out cases.

    Module-level for :func:`pacs_workbench.core.executor.map_items`; failures come back as a record
    with ``error`` (and ``leak`` when the fold would explain a case its model trained on).
    """
    try:
        return _explain_fold(job)
    except FoldLeakError as exc:
        return {"repeat": job.repeat, "fold": job.fold, "error": str(exc), "leak": True}
    except Exception as exc:  # reported per fold; the caller fails the run
        return {"repeat": job.repeat, "fold": job.fold, "error": f"{type(exc).__name__}: {exc}", "leak": False}


def _explain_fold(job: FoldJob) -> dict[str, Any]:
    import joblib
    import lightgbm

    bundle = joblib.load(job.bundle)
    booster = lightgbm.Booster(model_file=job.booster)
    matrix = pd.read_parquet(job.test)
    features = [str(c) for c in bundle["feature_columns"]]
    if list(booster.feature_name()) != features:
        raise ExplainError("the booster's features differ from the pipeline's feature_columns")
    missing = [c for c in ["row_index", "case_id", *features] if c not in matrix.columns]
    if missing:
        raise ExplainError(f"test matrix lacks {len(missing)} column(s), e.g. {missing[0]!r}")
    train_rows = {int(v) for v in bundle["train_rows"]}
    test_rows = [int(v) for v in matrix["row_index"]]
    if set(test_rows) != {int(v) for v in bundle["test_rows"]}:
        raise FoldLeakError(f"repeat {job.repeat} fold {job.fold}: the test matrix is not the fold's test part")
    seen = train_rows.intersection(test_rows)
    if seen:
        raise FoldLeakError(
            f"repeat {job.repeat} fold {job.fold}: {len(seen)} case(s) to explain were in the model's training part"
        )
    X = matrix[features].astype(float)
    start = time.perf_counter()
    contrib, expected = tree_shap(booster, X, job.method)
    seconds = time.perf_counter() - start
    raw = np.asarray(booster.predict(X, raw_score=True), dtype=float)
    prob = np.asarray(booster.predict(X), dtype=float)
    prep = bundle.get("preprocessor")
    clinical_encoder = getattr(prep, "clinical_", None)
    clinical = list(getattr(clinical_encoder, "feature_names_out_", []) or [])
    sources = [str(s) for s in bundle.get("feature_sources", features)]
    return {
        "repeat": job.repeat,
        "fold": job.fold,
        "features": features,
        "sources": sources,
        "clinical": clinical,
        "row_index": np.asarray(test_rows, dtype=np.int64),
        "case_id": matrix["case_id"].astype(str).to_numpy(),
        "values": X.to_numpy(dtype=float),
        "contrib": contrib,
        "expected": expected,
        "raw": raw,
        "prob": prob,
        "train_rows": sorted(train_rows),
        "additivity_max_error": float(np.max(np.abs(contrib.sum(axis=1) + expected - raw))) if len(raw) else 0.0,
        "seconds": seconds,
    }


@dataclass
class Explanations:
    """Per-case SHAP values of every outer fold of every repeat.

    Attributes
    ----------
    shap : DataFrame
        :data:`KEY_COLUMNS` then one column per feature (its SHAP value; 0 where absent).
    values : DataFrame
        ``row_index``, ``case_id``, ``repeat``, ``outer_fold`` then the model input values (NaN
        where that fold's model lacked the feature).
    features : DataFrame
        ``feature``, ``source``, ``family``, ``feature_class``, ``image_type``, ``n_folds``.
    folds : DataFrame
        Per (repeat, outer fold): ``n_test``, ``n_features``, ``expected_value``,
        ``additivity_max_error``, ``prediction_max_diff`` (against ``predictions.parquet``),
        ``seconds`` (TreeSHAP time).
    method : str
        The TreeSHAP implementation used.
    """

    shap: pd.DataFrame
    values: pd.DataFrame
    features: pd.DataFrame
    folds: pd.DataFrame
    method: str = "lightgbm"

    @property
    def feature_names(self) -> list[str]:
        """Model features (union over folds), in order of first appearance."""
        return [str(f) for f in self.features["feature"]]

    def contributions(self) -> FloatArray:
        """SHAP values ``(rows, features)``."""
        return self.shap[self.feature_names].to_numpy(dtype=float)

    @classmethod
    def empty(cls, method: str = "lightgbm") -> Explanations:
        """No model to explain: empty tables with the documented columns."""
        return cls(
            shap=pd.DataFrame(columns=list(KEY_COLUMNS)),
            values=pd.DataFrame(columns=list(KEY_COLUMNS[:4])),
            features=pd.DataFrame(columns=["feature", "source", "family", "feature_class", "image_type", "n_folds"]),
            folds=pd.DataFrame(
                columns=[
                    "repeat",
                    "outer_fold",
                    "n_test",
                    "n_features",
                    "expected_value",
                    "additivity_max_error",
                    "prediction_max_diff",
                    "seconds",
                ]
            ),
            method=method,
        )


def fold_jobs(model_dir: str | os.PathLike[str], method: str = "lightgbm") -> list[FoldJob]:
    """The folds listed in ``model_dir/models/folds.parquet``, as jobs for :func:`explain_fold`."""
    root = Path(model_dir)
    index_file = root / "models" / "folds.parquet"
    if not index_file.is_file():
        raise ExplainError(f"no fold models in {root.name}/models (folds.parquet missing): run the modeling stage")
    index = pd.read_parquet(index_file)
    jobs = []
    for row in index.sort_values(["repeat", "outer_fold"]).to_dict(orient="records"):
        paths = {key: root / str(row[key]) for key in ("booster", "pipeline", "test_matrix")}
        for key, path in paths.items():
            if not path.is_file():
                raise ExplainError(f"repeat {row['repeat']} fold {row['outer_fold']}: {key} file {path.name} missing")
        jobs.append(
            FoldJob(
                int(row["repeat"]),
                int(row["outer_fold"]),
                str(paths["booster"]),
                str(paths["pipeline"]),
                str(paths["test_matrix"]),
                method,
            )
        )
    if not jobs:
        raise ExplainError(f"folds.parquet in {root.name}/models lists no folds")
    return jobs


def _check_patients(results: Sequence[dict[str, Any]], predictions: pd.DataFrame) -> None:
    """No patient (group) of a fold's explained cases is in that fold's training part."""
    if "group" not in predictions.columns:
        return
    group_of = predictions.drop_duplicates("row_index").set_index("row_index")["group"].astype(str)
    for res in results:
        train = set(group_of.reindex(res["train_rows"]).dropna())
        test = set(group_of.reindex(res["row_index"]).dropna())
        shared = train & test
        if shared:
            # The count only: groups are patient pseudonyms.
            raise FoldLeakError(
                f"repeat {res['repeat']} fold {res['fold']}: {len(shared)} patient(s) explained by a model "
                "trained on another of their cases"
            )


def explain_model(
    model_dir: str | os.PathLike[str],
    *,
    method: str = "lightgbm",
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
) -> Explanations:
    """SHAP values of every outer-fold model on its own held-out cases.

    Parameters
    ----------
    model_dir
        Output folder of :func:`pacs_workbench.radiomics.run_modeling` (with ``models/``).
    method
        ``"lightgbm"`` (``pred_contrib``) or ``"shap"`` (``TreeExplainer``); see :func:`tree_shap`.
    workers, scheduler
        Parallelism over folds via :func:`pacs_workbench.core.executor.map_items`.
    progress
        Show a progress bar.

    Returns
    -------
    Explanations

    Raises
    ------
    FoldLeakError
        A case (or its patient) would be explained by a model that trained on it.
    ExplainError
        Missing or inconsistent model outputs, or cases of ``predictions.parquet`` left unexplained.
    """
    from pacs_workbench.core.executor import map_items

    if method not in METHODS:
        raise ExplainError(f"unknown SHAP method {method!r}; use one of {', '.join(METHODS)}")
    root = Path(model_dir)
    jobs = fold_jobs(root, method)
    results = list(
        map_items(
            explain_fold,
            jobs,
            workers=workers,
            scheduler=scheduler,
            desc="SHAP folds",
            total=len(jobs),
            progress=progress,
        )
    )
    leaks = [r for r in results if r.get("leak")]
    if leaks:
        raise FoldLeakError("; ".join(r["error"] for r in leaks))
    failed = [r for r in results if "error" in r]
    if failed:
        detail = "; ".join(f"repeat {r['repeat']} fold {r['fold']}: {r['error']}" for r in failed[:3])
        raise ExplainError(f"{len(failed)} of {len(results)} folds could not be explained ({detail})")
    results.sort(key=lambda r: (r["repeat"], r["fold"]))
    pred_file = root / "predictions.parquet"
    predictions = pd.read_parquet(pred_file) if pred_file.is_file() else pd.DataFrame()
    if not predictions.empty:
        _check_patients(results, predictions)
    return _assemble(results, predictions, method)


def _assemble(results: Sequence[dict[str, Any]], predictions: pd.DataFrame, method: str) -> Explanations:
    order: dict[str, str] = {}
    clinical: set[str] = set()
    n_folds: dict[str, int] = {}
    for res in results:
        clinical.update(res["clinical"])
        for name, source in zip(res["features"], res["sources"], strict=True):
            order.setdefault(name, source)
            n_folds[name] = n_folds.get(name, 0) + 1
    names = list(order)
    clash = set(names) & set(KEY_COLUMNS)
    if clash:
        raise ExplainError(f"feature name(s) {sorted(clash)} clash with the key columns of shap.parquet")
    features = describe_features(names, [order[n] for n in names], clinical)
    features["n_folds"] = [n_folds[n] for n in names]
    position = {name: j for j, name in enumerate(names)}
    shap_parts, value_parts, fold_rows = [], [], []
    for res in results:
        n = len(res["row_index"])
        cols = [position[f] for f in res["features"]]
        contrib = np.zeros((n, len(names)))
        values = np.full((n, len(names)), np.nan)
        contrib[:, cols] = res["contrib"]
        values[:, cols] = res["values"]
        keys = pd.DataFrame(
            {
                "row_index": res["row_index"],
                "case_id": res["case_id"],
                "repeat": res["repeat"],
                "outer_fold": res["fold"],
            }
        )
        shap_part = keys.assign(label=np.nan, expected_value=res["expected"], raw_output=res["raw"], prob=res["prob"])
        shap_parts.append(pd.concat([shap_part, pd.DataFrame(contrib, columns=names)], axis=1))
        value_parts.append(pd.concat([keys, pd.DataFrame(values, columns=names)], axis=1))
        fold_rows.append(
            {
                "repeat": res["repeat"],
                "outer_fold": res["fold"],
                "n_test": n,
                "n_features": len(res["features"]),
                "expected_value": float(res["expected"][0]) if n else float("nan"),
                "additivity_max_error": res["additivity_max_error"],
                "prediction_max_diff": float("nan"),
                "seconds": res["seconds"],
            }
        )
    shap_frame = pd.concat(shap_parts, ignore_index=True)
    value_frame = pd.concat(value_parts, ignore_index=True)
    folds = pd.DataFrame(fold_rows)
    if not predictions.empty:
        _attach_predictions(shap_frame, folds, predictions)
    shap_frame["label"] = shap_frame["label"].astype("Int64")
    return Explanations(shap_frame, value_frame, features, folds, method)


def _attach_predictions(shap_frame: pd.DataFrame, folds: pd.DataFrame, predictions: pd.DataFrame) -> None:
    """Labels from ``predictions.parquet``; every predicted case explained once, with the same risk."""
    pred = predictions.set_index(["row_index", "repeat"])
    keys = pd.MultiIndex.from_arrays([shap_frame["row_index"], shap_frame["repeat"]])
    if keys.duplicated().any():
        raise ExplainError("a case is explained twice within one repeat (overlapping test folds)")
    predicted, explained = set(pred.index), set(keys)
    unexplained = predicted - explained
    if unexplained:
        raise ExplainError(f"{len(unexplained)} predicted case-repeat(s) have no fold model to explain them")
    unknown = explained - predicted
    if unknown:
        raise ExplainError(f"{len(unknown)} explained case-repeat(s) are not in predictions.parquet")
    matched = pred.reindex(keys)
    shap_frame["label"] = matched["label"].to_numpy()
    if "prob_lightgbm" in matched.columns:
        diff = np.abs(matched["prob_lightgbm"].to_numpy(dtype=float) - shap_frame["prob"].to_numpy(dtype=float))
        per_fold = pd.Series(diff).groupby([shap_frame["repeat"], shap_frame["outer_fold"]]).max()
        folds["prediction_max_diff"] = [
            float(per_fold.get((r, f), float("nan"))) for r, f in zip(folds["repeat"], folds["outer_fold"], strict=True)
        ]

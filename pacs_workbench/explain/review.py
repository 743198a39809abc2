"""Explain stage: SHAP review of the modeling stage's fold models.

Every case is explained by the LightGBM model of the outer fold that held it out, so no case is
explained by a model that trained on it (checked in code: :class:`FoldLeakError`). Contributions
are exact TreeSHAP values on the model's raw (log-odds) scale, from LightGBM's own
``pred_contrib`` (the default: it needs no model conversion and is the faster of the two) or from
the ``shap`` package's ``TreeExplainer`` (``method="shap"``); both give the same numbers, and in
each case ``expected_value + sum(contributions) == raw output`` (the additivity error is recorded
per fold).

From those contributions the stage builds what a reviewer needs:

- global: mean |SHAP| per feature with its spread over folds and repeats and a stability flag,
  the same grouped by feature family (shape, first order, texture, clinical, other);
- local: the highest-risk cases, the false negatives and the false positives, each with its top
  contributions (averaged over repeats) and its image and mask from the features table;
- scanner dependence: how much of the contribution of vendor-sensitive features follows the
  vendor, with and without harmonization;
- a check against planted ground truth (synthetic data only).

Inputs
------
``model_dir``: the output folder of :func:`pacs_workbench.radiomics.model.run_modeling` (its
``models/`` folder, ``predictions.parquet`` and ``metrics.json``). ``features_file``
(optional): the features table (``case_id``, ``image``, ``mask``, the vendor column such as
`(0008,0070) Manufacturer`, the feature columns), used for the lesion images, the vendor of each
case and the raw feature values.

Outputs (in ``out_dir``, each written atomically)
--------------------------------------------------
``shap.parquet``
    One row per case and repeat: ``row_index``, ``case_id``, ``repeat``, ``outer_fold``,
    ``label``, ``expected_value``, ``raw_output`` (log-odds), ``prob``, then one column per
    model feature holding its SHAP value (0 where that fold's model did not have the feature).
``shap_features.parquet``
    The same keys with the model input value of every feature (NaN where absent).
``shap_importance.csv``
    ``feature``, ``source``, ``family``, ``feature_class``, ``image_type``, ``mean_abs_shap``,
    ``mean_abs_shap_sd`` (over folds), ``rank``, ``fold_rank_median``/``_min``/``_max``,
    ``fold_stability`` (share of folds where the feature is in the top ``top_k``),
    ``in_model_share`` (share of folds whose model had it) and ``unstable``.
``shap_family_importance.csv``
    ``family``, ``n_features``, ``mean_abs_shap`` (of the family's summed contribution),
    ``share``, ``rank``, ``fold_mean_abs_shap_sd``, ``fold_rank_min``, ``fold_rank_max``.
``explain.json``
    Method, input fingerprint (the cache key), per-fold checks (additivity error, agreement with
    ``predictions.parquet``, timing) and the feature descriptions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pacs_workbench.core.files import write_atomic as _atomic_write

FloatArray = NDArray[np.float64]

FORMAT_VERSION = 1
METHODS = ("lightgbm", "shap")
FAMILIES = ("shape", "first order", "texture", "clinical", "other")
TEXTURE_CLASSES = frozenset({"glcm", "glrlm", "glszm", "gldm", "ngtdm"})
SHAPE_CLASSES = frozenset({"shape", "shape2D"})
KEY_COLUMNS = ("row_index", "case_id", "repeat", "outer_fold", "label", "expected_value", "raw_output", "prob")
CASE_COLUMNS = ("case_id", "image", "mask", "vendor")

DRIVER_FAMILIES: dict[str, tuple[str, ...]] = {
    "x_diameter": ("shape",),
    "x_irregularity": ("shape",),
    "x_heterogeneity": ("first order", "texture"),
    "x_age": ("clinical",),
    "x_pack_years": ("clinical",),
}
"""Planted drivers of the synthetic outcome (``truth/patients.csv``) and the feature families
that can carry them: size and growth and margin irregularity are shape, internal heterogeneity
is first-order or texture, age and smoking are clinical."""

DRIVER_LABELS: dict[str, str] = {
    "x_diameter": "size and growth",
    "x_irregularity": "margin irregularity",
    "x_heterogeneity": "internal heterogeneity",
    "x_age": "age",
    "x_pack_years": "smoking (pack-years)",
}


class ExplainError(ValueError):
    """Model outputs that cannot be explained (the message says which and why)."""


class FoldLeakError(AssertionError):
    """A case would be explained by a model that was trained on it (or on its patient)."""


# --- feature families ----------------------------------------------------------------------------


def feature_family(name: str, clinical: Collection[str] = ()) -> tuple[str, str, str]:
    """Family, feature class and image type of one model feature.

    Parameters
    ----------
    name
        A model feature: a pyradiomics name ``<image type>_<class>_<feature>`` such as
        ``original_shape_Maximum3DDiameter`` or ``wavelet-LLH_glcm_Contrast``, or a clinical column.
    clinical
        Names of the clinical model inputs (``age``, ``smoking=current``, ...).

    Returns
    -------
    tuple
        ``(family, feature_class, image_type)``; family is one of :data:`FAMILIES` (texture covers
        glcm, glrlm, glszm, gldm and ngtdm); class and image type are ``""`` when not pyradiomics.
    """
    if name in clinical:
        return "clinical", "clinical", ""
    parts = name.split("_", 2)
    if len(parts) == 3:
        image_type, cls, _ = parts
        if cls in SHAPE_CLASSES:
            return "shape", cls, image_type
        if cls == "firstorder":
            return "first order", cls, image_type
        if cls in TEXTURE_CLASSES:
            return "texture", cls, image_type
    return "other", "", ""


def describe_features(names: Sequence[str], sources: Sequence[str], clinical: Collection[str]) -> pd.DataFrame:
    """One row per model feature: ``feature``, ``source`` (TABLE column), ``family``, class, image type."""
    rows = []
    for name, source in zip(names, sources, strict=True):
        family, cls, image_type = feature_family(str(source), clinical)
        if family == "other" and name != source:
            family, cls, image_type = feature_family(str(name), clinical)
        rows.append(
            {"feature": name, "source": source, "family": family, "feature_class": cls, "image_type": image_type}
        )
    return pd.DataFrame(rows, columns=["feature", "source", "family", "feature_class", "image_type"])


def short_name(feature: str) -> str:
    """A feature name for plot labels: pyradiomics' ``original_`` prefix dropped."""
    return feature.removeprefix("original_")


# --- TreeSHAP ------------------------------------------------------------------------------------


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


# --- explanations of a whole model ---------------------------------------------------------------


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
        Output folder of :func:`pacs_workbench.radiomics.model.run_modeling` (with ``models/``).
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


# --- global importance ---------------------------------------------------------------------------


def fold_importance(expl: Explanations) -> pd.DataFrame:
    """Mean |SHAP| per feature within each (repeat, outer fold), with the feature's rank there.

    Returns
    -------
    DataFrame
        ``repeat``, ``outer_fold``, ``feature``, ``mean_abs_shap`` (0 when that fold's model lacked
        the feature), ``in_model``, ``rank`` (1 = largest within the fold).
    """
    names = expl.feature_names
    if not names or expl.shap.empty:
        return pd.DataFrame(columns=["repeat", "outer_fold", "feature", "mean_abs_shap", "in_model", "rank"])
    keys = ["repeat", "outer_fold"]
    mean_abs = expl.shap[names].abs().groupby([expl.shap[k] for k in keys]).mean()
    in_model = expl.values[names].notna().groupby([expl.values[k] for k in keys]).any()
    ranks = mean_abs.rank(axis=1, ascending=False, method="min")

    def melt(frame: pd.DataFrame, name: str) -> pd.DataFrame:
        return frame.rename_axis(index=keys).reset_index().melt(id_vars=keys, var_name="feature", value_name=name)

    long = melt(mean_abs, "mean_abs_shap").merge(melt(in_model, "in_model"), on=[*keys, "feature"])
    long = long.merge(melt(ranks, "rank"), on=[*keys, "feature"])
    long["in_model"] = long["in_model"].astype(bool)
    long["rank"] = long["rank"].astype(int)
    return long


def importance_table(expl: Explanations, *, top_k: int = 10, min_stability: float = 0.5) -> pd.DataFrame:
    """Global mean |SHAP| ranking with its spread over folds and repeats.

    Parameters
    ----------
    expl
        From :func:`explain_model`.
    top_k
        A feature "ranks high" in a fold when it is among that fold's ``top_k``.
    min_stability
        A feature that ranks high in some fold but in fewer than this share of folds is flagged
        ``unstable`` (it ranks high in one fold and nowhere in another).

    Returns
    -------
    DataFrame
        One row per feature, sorted by ``rank``: ``feature``, ``source``, ``family``,
        ``feature_class``, ``image_type``, ``mean_abs_shap``, ``mean_abs_shap_sd``, ``rank``,
        ``fold_rank_median``, ``fold_rank_min``, ``fold_rank_max``, ``fold_stability``,
        ``in_model_share``, ``unstable``.
    """
    columns = [
        "feature",
        "source",
        "family",
        "feature_class",
        "image_type",
        "mean_abs_shap",
        "mean_abs_shap_sd",
        "rank",
        "fold_rank_median",
        "fold_rank_min",
        "fold_rank_max",
        "fold_stability",
        "in_model_share",
        "unstable",
    ]
    names = expl.feature_names
    if not names or expl.shap.empty:
        return pd.DataFrame(columns=columns)
    per_fold = fold_importance(expl)
    # A feature the fold's model never used ties with the other unused ones; it does not rank high.
    per_fold["high"] = (per_fold["rank"] <= top_k) & (per_fold["mean_abs_shap"] > 0)
    grouped = per_fold.groupby("feature", sort=False)
    table = expl.features.drop(columns=["n_folds"]).set_index("feature")
    table["mean_abs_shap"] = expl.shap[names].abs().mean()
    table["mean_abs_shap_sd"] = grouped["mean_abs_shap"].std(ddof=1).reindex(table.index).fillna(0.0)
    table["fold_rank_median"] = grouped["rank"].median().reindex(table.index)
    table["fold_rank_min"] = grouped["rank"].min().reindex(table.index)
    table["fold_rank_max"] = grouped["rank"].max().reindex(table.index)
    table["fold_stability"] = grouped["high"].mean().reindex(table.index)
    table["in_model_share"] = grouped["in_model"].mean().reindex(table.index)
    table["unstable"] = (table["fold_stability"] > 0) & (table["fold_stability"] < min_stability)
    table = table.sort_values("mean_abs_shap", ascending=False, kind="stable")
    table["rank"] = np.arange(1, len(table) + 1)
    return table.reset_index()[columns]


def family_contributions(expl: Explanations) -> pd.DataFrame:
    """Per case and repeat, the summed SHAP value of each feature family (additive by construction).

    Returns
    -------
    DataFrame
        ``row_index``, ``case_id``, ``repeat``, ``outer_fold`` and one column per family present.
    """
    keys = expl.shap[["row_index", "case_id", "repeat", "outer_fold"]].reset_index(drop=True)
    if not expl.feature_names:
        return keys
    parts = {}
    for family in FAMILIES:
        members = expl.features.loc[expl.features["family"] == family, "feature"].tolist()
        if members:
            parts[family] = expl.shap[members].sum(axis=1).to_numpy(dtype=float)
    return pd.concat([keys, pd.DataFrame(parts)], axis=1)


def family_importance(expl: Explanations) -> pd.DataFrame:
    """Mean |summed SHAP| per feature family, its share, rank and spread over folds.

    Returns
    -------
    DataFrame
        ``family``, ``n_features``, ``mean_abs_shap``, ``share``, ``rank``,
        ``fold_mean_abs_shap_sd``, ``fold_rank_min``, ``fold_rank_max``.
    """
    columns = [
        "family",
        "n_features",
        "mean_abs_shap",
        "share",
        "rank",
        "fold_mean_abs_shap_sd",
        "fold_rank_min",
        "fold_rank_max",
    ]
    contrib = family_contributions(expl)
    families = [f for f in FAMILIES if f in contrib.columns]
    if not families or contrib.empty:
        return pd.DataFrame(columns=columns)
    absolute = contrib[families].abs()
    overall = absolute.mean()
    per_fold = absolute.groupby([contrib["repeat"], contrib["outer_fold"]]).mean()
    fold_ranks = per_fold.rank(axis=1, ascending=False, method="min")
    counts = expl.features["family"].value_counts()
    table = pd.DataFrame(
        {
            "family": families,
            "n_features": [int(counts.get(f, 0)) for f in families],
            "mean_abs_shap": overall.to_numpy(),
            "fold_mean_abs_shap_sd": per_fold.std(ddof=1).fillna(0.0).to_numpy(),
            "fold_rank_min": fold_ranks.min().to_numpy(dtype=int),
            "fold_rank_max": fold_ranks.max().to_numpy(dtype=int),
        }
    )
    total = float(table["mean_abs_shap"].sum())
    table["share"] = table["mean_abs_shap"] / total if total > 0 else 0.0
    table = table.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table[columns]


def interaction_partner(expl: Explanations, feature: str, candidates: Sequence[str] | None = None) -> str | None:
    """The feature whose values best explain the spread of ``feature``'s SHAP at equal values.

    Rows are sorted by the feature's value and cut into bins; within each bin the SHAP values
    are correlated with every candidate's values (the binning approach of
    ``shap.utils.approximate_interactions``, written to cope with features absent from some
    folds). Returns ``None`` when no candidate varies within the bins.
    """
    names = [c for c in (candidates or expl.feature_names) if c != feature]
    x = expl.values[feature].to_numpy(dtype=float)
    s = expl.shap[feature].to_numpy(dtype=float)
    keep = np.isfinite(x)
    if keep.sum() < 10 or not names:
        return None
    order = np.argsort(x[keep], kind="stable")
    s_sorted = s[keep][order]
    n = order.size
    size = max(5, n // 10)
    best, best_score = None, 0.0
    for name in names:
        other = expl.values[name].to_numpy(dtype=float)[keep][order]
        score = 0.0
        for start in range(0, n, size):
            a, b = s_sorted[start : start + size], other[start : start + size]
            ok = np.isfinite(b)
            if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
                continue
            score += abs(float(np.corrcoef(a[ok], b[ok])[0, 1])) * ok.sum()
        if score > best_score:
            best, best_score = name, score
    return best


# --- cases ---------------------------------------------------------------------------------------


def case_summary(expl: Explanations) -> pd.DataFrame:
    """One row per case, averaged over repeats: ``case_id``, ``row_index``, ``label``, ``risk``
    (mean out-of-fold probability), ``raw_output`` (mean log-odds), ``n_repeats``."""
    if expl.shap.empty:
        return pd.DataFrame(columns=["case_id", "row_index", "label", "risk", "raw_output", "n_repeats"])
    grouped = expl.shap.groupby("case_id", sort=False)
    out = pd.DataFrame(
        {
            "row_index": grouped["row_index"].first(),
            "label": grouped["label"].first(),
            "risk": grouped["prob"].mean(),
            "raw_output": grouped["raw_output"].mean(),
            "n_repeats": grouped["repeat"].nunique(),
        }
    )
    return out.reset_index()


def select_cases(expl: Explanations, n: int = 3, threshold: float | None = None) -> pd.DataFrame:
    """The cases a reviewer should look at: highest risk, false negatives, false positives.

    Parameters
    ----------
    expl
        From :func:`explain_model`.
    n
        Cases per group.
    threshold
        Risk at or above which a case counts as predicted positive; ``None``: the event rate of
        the cohort (the threshold at which the model is as often positive as the outcome).

    Returns
    -------
    DataFrame
        :func:`case_summary` columns plus ``category`` (``highest risk``, ``false negative``:
        events with the lowest risk below the threshold, ``false positive``: non-events with the
        highest risk at or above it) and ``threshold``. A case is listed once, under its first
        category.
    """
    cases = case_summary(expl)
    if cases.empty:
        return cases.assign(category=pd.Series(dtype=str), threshold=pd.Series(dtype=float))
    labels = cases["label"].astype(float)
    cut = float(labels.mean()) if threshold is None else float(threshold)
    top = cases.sort_values("risk", ascending=False, kind="stable").head(n).assign(category="highest risk")
    fn = cases[(labels == 1) & (cases["risk"] < cut)].sort_values("risk", kind="stable").head(n)
    fp = cases[(labels == 0) & (cases["risk"] >= cut)].sort_values("risk", ascending=False, kind="stable").head(n)
    chosen = pd.concat(
        [top, fn.assign(category="false negative"), fp.assign(category="false positive")], ignore_index=True
    )
    chosen = chosen.drop_duplicates("case_id", keep="first").reset_index(drop=True)
    chosen["threshold"] = cut
    return chosen


@dataclass
class CaseExplanation:
    """One case's contributions, averaged over the repeats (each from a model that did not see it).

    ``expected_value + contributions["shap"].sum() == raw_output`` (log-odds).
    """

    case_id: str
    label: float
    risk: float
    expected_value: float
    raw_output: float
    n_repeats: int
    contributions: pd.DataFrame  # feature, family, value (model input), raw_value (features table), shap


def explain_case(expl: Explanations, case_id: str, raw_values: pd.DataFrame | None = None) -> CaseExplanation:
    """The contributions of one case, largest |SHAP| first.

    Parameters
    ----------
    expl
        From :func:`explain_model`.
    case_id
        Pseudonymous case key.
    raw_values
        Optional features table indexed by ``case_id`` (columns: TABLE feature names), for showing
        the unharmonized value beside each contribution.
    """
    rows = expl.shap[expl.shap["case_id"] == case_id]
    if rows.empty:
        raise ExplainError("case not found among the explained cases")
    names = expl.feature_names
    vals = expl.values.loc[rows.index, names]
    table = expl.features[["feature", "source", "family"]].copy()
    table["value"] = vals.mean(axis=0).to_numpy(dtype=float)
    table["shap"] = rows[names].mean(axis=0).to_numpy(dtype=float)
    if raw_values is not None and case_id in raw_values.index:
        raw = raw_values.loc[case_id]
        table["raw_value"] = [
            float(raw[s]) if s in raw.index and _is_number(raw[s]) else float("nan") for s in table["source"]
        ]
    else:
        table["raw_value"] = np.nan
    table = table.reindex(table["shap"].abs().sort_values(ascending=False, kind="stable").index)
    return CaseExplanation(
        case_id=str(case_id),
        label=float(rows["label"].iloc[0]) if pd.notna(rows["label"].iloc[0]) else float("nan"),
        risk=float(rows["prob"].mean()),
        expected_value=float(rows["expected_value"].mean()),
        raw_output=float(rows["raw_output"].mean()),
        n_repeats=int(rows["repeat"].nunique()),
        contributions=table.reset_index(drop=True),
    )


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def top_contributions(case: CaseExplanation, n: int = 3) -> str:
    """The ``n`` largest contributions as short text, e.g. ``shape_Sphericity -0.41; age +0.22``."""
    top = case.contributions.head(n)
    pairs = zip(top["feature"].astype(str), top["shap"].astype(float), strict=True)
    return "; ".join(f"{short_name(f)} {s:+.2f}" for f, s in pairs if s != 0)


# --- cases table (images, vendors, raw values) ---------------------------------------------------


def _resolve(path: Any, base: Path) -> str:
    if not isinstance(path, str) or not path:
        return ""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return str(candidate)
    return str(base / candidate)


def _read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix.lower() in {".parquet", ".pq"} else pd.read_csv(path)


def load_cases(
    features_file: str | os.PathLike[str] | None,
    vendor_col: str = "Manufacturer",
    images_file: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Images, masks, vendors and raw feature values per case from the features table.

    Parameters
    ----------
    features_file
        Parquet or CSV with ``case_id`` and optionally ``image``, ``mask`` (NIfTI paths, relative
        ones resolved against the working folder, then the table's folder), ``vendor_col`` and the
        feature columns. ``None`` or ``""``: nothing.
    vendor_col
        The scanner vendor column, `(0008,0070) Manufacturer` by default.
    images_file
        Optional table with ``case_id``, ``image``, ``mask`` (e.g. the preprocessing stage's
        ``cases.parquet``) for features tables that do not carry the paths; only those three
        columns are read.

    Returns
    -------
    tuple
        ``cases`` (``case_id``, ``image``, ``mask``, ``vendor``; ``""`` where unknown), ``raw``
        (numeric columns indexed by ``case_id``) and notes on anything missing.
    """
    empty = pd.DataFrame(columns=list(CASE_COLUMNS))
    if not features_file:
        return empty, pd.DataFrame(), ["No features table given: no lesion images, vendors or raw values."]
    path = Path(features_file)
    if not path.is_file():
        return (
            empty,
            pd.DataFrame(),
            [f"Features table {path.name} not found: no lesion images, vendors or raw values."],
        )
    table = _read_table(path)
    if "case_id" not in table.columns:
        return empty, pd.DataFrame(), [f"Features table {path.name} has no case_id column."]
    notes: list[str] = []
    table["case_id"] = table["case_id"].astype(str)
    if table["case_id"].duplicated().any():
        notes.append(
            f"{int(table['case_id'].duplicated().sum())} duplicated case_id row(s) in the features table; "
            "the first of each is used."
        )
        table = table.drop_duplicates("case_id", keep="first")
    base, source = path.parent, table
    if images_file and Path(images_file).is_file():
        base = Path(images_file).parent
        paths = _read_table(Path(images_file))
        wanted = [c for c in ("case_id", "image", "mask") if c in paths.columns]
        paths = paths[wanted].assign(case_id=lambda f: f["case_id"].astype(str)).drop_duplicates("case_id")
        source = table[["case_id"]].merge(paths, on="case_id", how="left")
    elif images_file:
        notes.append(f"Image table {Path(images_file).name} not found.")
    cases = pd.DataFrame({"case_id": table["case_id"].to_numpy()})
    for col in ("image", "mask"):
        if col in source.columns:
            cases[col] = [_resolve(v, base) for v in source[col]]
        else:
            cases[col] = ""
            notes.append(f"No {col!r} column for the cases: case studies show contributions only.")
    if vendor_col in table.columns:
        cases["vendor"] = table[vendor_col].fillna("unknown").astype(str).to_numpy()
    else:
        cases["vendor"] = ""
        notes.append(f"The features table has no {vendor_col!r} column: scanner dependence cannot be shown.")
    numeric = table.set_index("case_id").select_dtypes(include="number")
    return cases, numeric, notes


def vendor_share(values: pd.DataFrame, vendor: pd.Series) -> pd.Series:
    """Per column, the share of its variance explained by the vendor (eta squared, 0..1).

    Parameters
    ----------
    values
        Numeric columns, rows aligned with ``vendor``.
    vendor
        The vendor of each row.
    """
    out = {}
    groups = vendor.astype(str).to_numpy()
    for col in values.columns:
        x = pd.to_numeric(values[col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x)
        if ok.sum() < 3:
            out[col] = float("nan")
            continue
        xs, gs = x[ok], groups[ok]
        total = float(((xs - xs.mean()) ** 2).sum())
        if total <= 0:
            out[col] = 0.0
            continue
        between = sum(
            float((gs == g).sum()) * (float(xs[gs == g].mean()) - float(xs.mean())) ** 2 for g in np.unique(gs)
        )
        out[col] = between / total
    return pd.Series(out, dtype=float)


# --- the review ----------------------------------------------------------------------------------


@dataclass
class ShapReview:
    """Everything the SHAP review shows, for one model folder.

    Attributes
    ----------
    explanations : Explanations
    importance : DataFrame
        :func:`importance_table`.
    fold_importance : DataFrame
        :func:`fold_importance`.
    families : DataFrame
        :func:`family_importance`.
    cases : DataFrame
        ``case_id``, ``image``, ``mask``, ``vendor`` from the features table (may be empty).
    raw_values : DataFrame
        Numeric columns of the features table indexed by ``case_id`` (may be empty).
    harmonized_by : str or None
        The batch column the model was harmonized by (from ``metrics.json``), ``None`` if not.
    notes : list of str
        What could not be shown and why.
    paths : dict
        Files written.
    """

    explanations: Explanations
    importance: pd.DataFrame
    fold_importance: pd.DataFrame
    families: pd.DataFrame
    cases: pd.DataFrame
    raw_values: pd.DataFrame
    harmonized_by: str | None = None
    notes: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    from_cache: bool = False
    top_k: int = 10

    @property
    def available(self) -> bool:
        """True when there were fold models to explain."""
        return not self.explanations.shap.empty

    def summary(self) -> pd.DataFrame:
        """:func:`case_summary` with each case's vendor."""
        cases = case_summary(self.explanations)
        vendor = self.cases.set_index("case_id")["vendor"] if len(self.cases) else pd.Series(dtype=str)
        cases["vendor"] = cases["case_id"].map(vendor).fillna("")
        return cases

    def case(self, case_id: str) -> CaseExplanation:
        """:func:`explain_case` with the raw values of the features table."""
        return explain_case(self.explanations, case_id, self.raw_values if len(self.raw_values) else None)

    def lesion(self, case_id: str) -> tuple[str, str]:
        """``(image, mask)`` paths of a case (``""`` when unknown or missing on disk)."""
        rows = self.cases[self.cases["case_id"] == case_id]
        if rows.empty:
            return "", ""
        image, mask = str(rows["image"].iloc[0]), str(rows["mask"].iloc[0])
        if not (image and mask and Path(image).is_file() and Path(mask).is_file()):
            return "", ""
        return image, mask

    def case_studies(self, n: int = 3, threshold: float | None = None) -> pd.DataFrame:
        """:func:`select_cases` with the top contributions and whether the lesion image is available."""
        chosen = select_cases(self.explanations, n, threshold)
        chosen["top_contributions"] = [top_contributions(self.case(c)) for c in chosen["case_id"]]
        chosen["image_available"] = [bool(self.lesion(c)[0]) for c in chosen["case_id"]]
        return chosen

    def typical_cases(self, n: int = 1) -> list[str]:
        """The ``n`` cases whose risk is closest to the median (the static stand-in for the case picker)."""
        cases = case_summary(self.explanations)
        if cases.empty:
            return []
        gap = (cases["risk"] - cases["risk"].median()).abs().to_numpy()
        return [str(c) for c in cases["case_id"].to_numpy()[np.argsort(gap, kind="stable")[:n]]]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(model_dir: str | os.PathLike[str], method: str) -> str:
    """Content hash of the model outputs the explanations depend on (the cache key)."""
    root = Path(model_dir)
    total = hashlib.sha256(f"explain-{FORMAT_VERSION}-{method}".encode())
    files = [root / "models" / "folds.parquet", root / "predictions.parquet"]
    for job in fold_jobs(root, method):
        files += [Path(job.booster), Path(job.bundle), Path(job.test)]
    for file in files:
        total.update(file.name.encode())
        total.update(_sha256(file).encode() if file.is_file() else b"missing")
    return total.hexdigest()




def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    """Write a table atomically as Parquet or CSV (by suffix); returns the path."""
    target = Path(path)

    def write(p: Path) -> None:
        if target.suffix == ".parquet":
            frame.to_parquet(p, index=False)
        else:
            frame.to_csv(p, index=False)

    _atomic_write(target, write)
    return str(target)


def write_json(data: Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    """Write JSON atomically (NaN as ``null``); returns the path."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    text = json.dumps(clean(dict(data)), indent=2)

    def write(p: Path) -> None:
        p.write_text(text + "\n", encoding="utf-8")

    _atomic_write(Path(path), write)
    return str(path)


def _load_cached(out: Path, key: str) -> Explanations | None:
    manifest = out / "explain.json"
    needed = [manifest, out / "shap.parquet", out / "shap_features.parquet"]
    if not all(p.is_file() for p in needed):
        return None
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != key:
        return None
    shap_frame = pd.read_parquet(out / "shap.parquet")
    shap_frame["label"] = shap_frame["label"].astype("Int64")
    features = pd.DataFrame(meta["features"])
    folds = pd.DataFrame(meta["folds"])
    return Explanations(shap_frame, pd.read_parquet(out / "shap_features.parquet"), features, folds, meta["method"])


def _harmonized_by(model_dir: Path) -> str | None:
    metrics = model_dir / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        settings = json.loads(metrics.read_text(encoding="utf-8")).get("settings", {})
    except ValueError:
        return None
    batch = settings.get("batch")
    return str(batch) if batch else None


def run_explain(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    features_file: str | os.PathLike[str] | None = None,
    images_file: str | os.PathLike[str] | None = None,
    vendor_col: str = "Manufacturer",
    method: str = "lightgbm",
    top_k: int = 10,
    min_stability: float = 0.5,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
    missing_ok: bool = False,
    use_cache: bool = True,
) -> ShapReview:
    """Explain every fold model of a modeling run and write the SHAP tables.

    Parameters
    ----------
    model_dir
        Output folder of :func:`pacs_workbench.radiomics.model.run_modeling`.
    out_dir
        Where ``shap.parquet``, ``shap_features.parquet``, ``shap_importance.csv``,
        ``shap_family_importance.csv`` and ``explain.json`` go; ``None``: nothing written.
    features_file, images_file
        Features table for images, masks, vendors and raw values, and an optional table of image
        and mask paths by ``case_id`` (see :func:`load_cases`).
    vendor_col
        Vendor column of the features table.
    method, workers, scheduler, progress
        See :func:`explain_model`.
    top_k, min_stability
        See :func:`importance_table`.
    missing_ok
        When ``model_dir`` is empty or has no fold models, return an empty review with a note
        instead of raising (the notebook's behaviour before the modeling stage has run).
    use_cache
        Reuse ``out_dir``'s tables when their fingerprint matches the model outputs.

    Returns
    -------
    ShapReview
    """
    cases, raw, notes = load_cases(features_file, vendor_col, images_file)
    if not model_dir or not (Path(model_dir) / "models" / "folds.parquet").is_file():
        reason = (
            "No model folder given."
            if not model_dir
            else f"No fold models in {Path(model_dir).name}/models: the modeling stage has not written any."
        )
        if not missing_ok:
            raise ExplainError(reason)
        empty = Explanations.empty(method)
        return ShapReview(
            empty,
            importance_table(empty),
            fold_importance(empty),
            family_importance(empty),
            cases,
            raw,
            None,
            [reason, *notes],
        )
    root = Path(model_dir)
    key = fingerprint(root, method)
    out = Path(out_dir) if out_dir else None
    expl = _load_cached(out, key) if out is not None and use_cache else None
    from_cache = expl is not None
    if expl is None:
        expl = explain_model(root, method=method, workers=workers, scheduler=scheduler, progress=progress)
    importance = importance_table(expl, top_k=top_k, min_stability=min_stability)
    review = ShapReview(
        expl,
        importance,
        fold_importance(expl),
        family_importance(expl),
        cases,
        raw,
        _harmonized_by(root),
        notes,
        from_cache=from_cache,
        top_k=top_k,
    )
    explained = set(expl.shap["case_id"].astype(str))
    if len(cases):
        unknown = explained - set(cases["case_id"])
        if unknown:
            review.notes.append(f"{len(unknown)} explained case(s) are not in the features table (no image or vendor).")
    if out is not None:
        paths = {
            "importance": write_table(importance, out / "shap_importance.csv"),
            "families": write_table(review.families, out / "shap_family_importance.csv"),
        }
        if not from_cache:
            paths["shap"] = write_table(expl.shap, out / "shap.parquet")
            paths["features"] = write_table(expl.values, out / "shap_features.parquet")
            meta = {
                "format": FORMAT_VERSION,
                "method": expl.method,
                "fingerprint": key,
                "n_cases": int(expl.shap["case_id"].nunique()),
                "n_rows": len(expl.shap),
                "n_folds": len(expl.folds),
                "harmonized_by": review.harmonized_by,
                "top_k": top_k,
                "min_stability": min_stability,
                "additivity_max_error": float(expl.folds["additivity_max_error"].max()),
                "prediction_max_diff": float(expl.folds["prediction_max_diff"].max()),
                "folds": expl.folds.to_dict(orient="records"),
                "features": expl.features.to_dict(orient="records"),
            }
            paths["manifest"] = write_json(meta, out / "explain.json")
        else:
            paths.update({"shap": str(out / "shap.parquet"), "manifest": str(out / "explain.json")})
        review.paths = paths
    return review


# --- model description ---------------------------------------------------------------------------


def _read_metrics(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    if not model_dir:
        return None
    file = Path(model_dir) / "metrics.json"
    if not file.is_file():
        return None
    data: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return data


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _is_number(value) else "n/a"


def describe_model(model_dir: str | os.PathLike[str], review: ShapReview | None = None) -> str:
    """One paragraph (Markdown) on what the model is and how well it does, from ``metrics.json``."""
    metrics = _read_metrics(model_dir)
    if metrics is None:
        return (
            "No model metrics found (`metrics.json` missing): the modeling stage has not run on this data, "
            "so there is nothing to explain yet."
        )
    s = metrics.get("settings", {})
    clinical = [str(c) for c in s.get("clinical", []) or []]
    n_feat = metrics.get("n_features_candidate", "?")
    lo, hi = (metrics.get("auc_ci") or [None, None])[:2]
    parts = [
        f"The model is a LightGBM classifier (gradient-boosted shallow trees) predicting `{s.get('label', 'label')}` "
        f"from {n_feat} candidate radiomic features"
        + (f" and the clinical covariates {', '.join(f'`{c}`' for c in clinical)}" if clinical else "")
        + (
            f", harmonized with ComBat by `{s['batch']}` inside each training fold"
            if s.get("batch")
            else ", without harmonization"
        )
        + f". It was validated by {s.get('repeats', '?')} repeat(s) of {s.get('outer_folds', '?')}-fold "
        f"patient-grouped nested cross-validation on {metrics.get('n', '?')} cases ({metrics.get('n_events', '?')} "
        f"events) from {metrics.get('n_groups', '?')} patients.",
        f"Out-of-fold ROC AUC {_fmt(metrics.get('auc'))} (95% CI {_fmt(lo)}-{_fmt(hi)}), PR AUC "
        f"{_fmt(metrics.get('pr_auc'))}, Brier score {_fmt(metrics.get('brier'))}, calibration slope "
        f"{_fmt(metrics.get('calibration_slope'), 2)}.",
        str(metrics.get("added_value", "")),
    ]
    if review is not None and review.available:
        folds = review.explanations.folds
        parts.append(
            f"Every explanation below comes from the model of the outer fold that held the case out "
            f"({len(folds)} fold models; TreeSHAP via "
            f"{'LightGBM pred_contrib' if review.explanations.method == 'lightgbm' else 'shap.TreeExplainer'}, "
            f"log-odds scale; largest additivity error {folds['additivity_max_error'].max():.1e})."
        )
    return " ".join(p for p in parts if p)


def headline_metrics(model_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The headline metrics of each model in ``metrics.json`` (LightGBM and its baselines)."""
    from pacs_workbench.radiomics.model import metrics_table

    metrics = _read_metrics(model_dir)
    if metrics is None or not metrics.get("models"):
        return pd.DataFrame()
    labels = {
        "lightgbm": "LightGBM (explained here)",
        "lightgbm_recalibrated": "LightGBM, recalibrated",
        "radiomics_lr": "L1 logistic regression, radiomics",
        "clinical_lr": "logistic regression, clinical only",
    }
    return metrics_table(metrics).rename(index=labels)


# --- scanner dependence --------------------------------------------------------------------------


@dataclass
class ScannerCheck:
    """How much of the contributions of vendor-sensitive features follows the vendor.

    Attributes
    ----------
    per_vendor : DataFrame
        ``variant``, ``feature``, ``vendor``, ``n``, ``mean_shap``, ``mean_abs_shap``.
    summary : DataFrame
        ``variant``, ``feature``, ``vendor_share_feature`` (eta squared of the raw feature by
        vendor), ``vendor_share_shap`` (of its SHAP values), ``mean_abs_shap``.
    outcome : DataFrame
        ``vendor``, ``n_cases``, ``event_rate`` and ``mean_risk_<variant>`` per variant.
    statement : str
    vendor_share : dict
        Per variant, the vendor's share of the SHAP variation of the shown features, averaged
        with their mean |SHAP| as weights (0: contributions do not follow the vendor).
    """

    per_vendor: pd.DataFrame
    summary: pd.DataFrame
    outcome: pd.DataFrame
    statement: str
    vendor_share: dict[str, float] = field(default_factory=dict)

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        """Write ``scanner_dependence.csv`` and ``scanner_summary.csv``."""
        if self.per_vendor.empty:
            return {}
        out = Path(out_dir)
        return {
            "per_vendor": write_table(self.per_vendor, out / "scanner_dependence.csv"),
            "summary": write_table(self.summary, out / "scanner_summary.csv"),
        }


def stability_summary(review: ShapReview, top: int = 12) -> str:
    """A few sentences on how stable the explanations are over the fold models (Markdown)."""
    if not review.available:
        return "No fold models: nothing to assess."
    imp = review.importance
    folds = review.explanations.folds
    head = imp.head(top)
    unstable = head[head["unstable"]]
    always = head[head["fold_stability"] == 1.0]
    lines = [
        f"{len(folds)} fold models ({folds['repeat'].nunique()} repeat(s) of {folds['outer_fold'].nunique()} outer "
        f"folds), each explaining only the cases it held out ({int(folds['n_test'].sum())} case explanations).",
        f"Of the top {len(head)} features, {len(always)} rank in the top {review.top_k} of every fold model"
        + (
            f"; {len(unstable)} rank high in some folds but not in most (unstable): "
            + ", ".join(f"`{short_name(str(f))}`" for f in unstable["feature"])
            + "."
            if len(unstable)
            else "; none is unstable."
        ),
        f"Features used by every fold model: {int((imp['in_model_share'] == 1).sum())} of {len(imp)} (the in-fold "
        "filters can drop a feature or keep a correlated look-alike instead).",
        f"TreeSHAP additivity (expected value plus contributions against the booster's raw output): largest "
        f"error {folds['additivity_max_error'].max():.1e}.",
    ]
    return " ".join(lines)


def _variant_label(review: ShapReview) -> str:
    return f"harmonized (ComBat by {review.harmonized_by})" if review.harmonized_by else "not harmonized"


def scanner_dependence(
    review: ShapReview, other: ShapReview | None = None, *, n_features: int = 6, min_vendor_share: float = 0.1
) -> ScannerCheck:
    """Per-vendor SHAP of the most vendor-sensitive features, for one or two model variants.

    Parameters
    ----------
    review
        The model under review (usually harmonized).
    other
        The same model fitted without (or with) harmonization; ``None`` or an empty review:
        only ``review`` is shown.
    n_features
        Vendor-sensitive features to show: those used by a model (mean |SHAP| > 0) whose raw
        variance the vendor explains at least ``min_vendor_share`` of, most sensitive first.
    min_vendor_share
        Smallest vendor share (eta squared, 0..1) of a feature's raw variance to call it
        vendor-sensitive.
    """
    empty = ScannerCheck(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), "")
    reviews = [r for r in (review, other) if r is not None and r.available]
    if not reviews:
        empty.statement = "No fold models: nothing to compare across vendors."
        return empty
    skipped = (
        ""
        if len(reviews) == 2
        else " No second model variant (with or without harmonization) was given, so there is no before/after "
        "comparison: run the modeling stage both ways and set unharmonized_model_dir."
    )
    vendor = pd.concat([r.cases.set_index("case_id")["vendor"] for r in reviews if len(r.cases)])
    vendor = vendor[~vendor.index.duplicated()]
    vendor = vendor[vendor.astype(str) != ""]
    if vendor.empty:
        empty.statement = "The vendor of the cases is unknown (no vendor column in the features table): skipped."
        return empty
    # Raw (unharmonized) values decide which features are vendor-sensitive.
    raw = next((r.raw_values for r in reviews if len(r.raw_values)), pd.DataFrame())
    plain = next((r for r in reviews if not r.harmonized_by), None)
    if len(raw):
        sens = vendor_share(raw.reindex(vendor.index), vendor)
    elif plain is not None:
        vals = plain.explanations.values
        sens = vendor_share(vals[plain.explanations.feature_names], vals["case_id"].map(vendor).fillna("unknown"))
    else:
        empty.statement = (
            "No raw feature values (features table or unharmonized model) to tell vendor-sensitive features."
        )
        return empty
    source_of: dict[str, str] = {}
    used: set[str] = set()
    for r in reviews:
        imp = r.importance
        source_of.update(dict(zip(imp["feature"], imp["source"], strict=True)))
        used.update(imp.loc[imp["mean_abs_shap"] > 0, "feature"])
    candidates = [
        (float(sens.get(source_of[f], sens.get(f, np.nan))), f)
        for f in used
        if source_of.get(f) in sens.index or f in sens.index
    ]
    ordered = sorted(((s, f) for s, f in candidates if math.isfinite(s)), key=lambda t: (-t[0], t[1]))
    sensitive = [f for s, f in ordered if s >= min_vendor_share][:n_features]
    # Nothing clearly vendor-sensitive: show the most vendor-dependent features anyway, and say so.
    chosen = sensitive or [f for _, f in ordered[:n_features]]
    per_vendor, summary = [], []
    outcome = None
    for r in reviews:
        label = _variant_label(r)
        frame = r.explanations.shap
        case_vendor = frame["case_id"].map(vendor).fillna("unknown")
        for f in chosen:
            s = frame[f] if f in frame.columns else pd.Series(0.0, index=frame.index)
            stats = pd.DataFrame(
                {
                    "n": s.groupby(case_vendor).size(),
                    "mean_shap": s.groupby(case_vendor).mean(),
                    "mean_abs_shap": s.abs().groupby(case_vendor).mean(),
                }
            )
            for v, row in stats.iterrows():
                per_vendor.append({"variant": label, "feature": f, "vendor": v, **row.to_dict()})
            summary.append(
                {
                    "variant": label,
                    "feature": f,
                    "vendor_share_feature": float(sens.get(source_of.get(f, f), np.nan)),
                    "vendor_share_shap": float(vendor_share(s.to_frame(), case_vendor).iloc[0]),
                    "mean_abs_shap": float(s.abs().mean()),
                }
            )
        cases = case_summary(r.explanations).assign(vendor=lambda c: c["case_id"].map(vendor).fillna("unknown"))
        grouped = cases.groupby("vendor")
        part = pd.DataFrame(
            {
                "n_cases": grouped.size(),
                "event_rate": grouped["label"].apply(lambda v: v.astype(float).mean()),
                f"mean_risk_{label}": grouped["risk"].mean(),
            }
        )
        outcome = part if outcome is None else outcome.join(part[[f"mean_risk_{label}"]], how="outer")
    summary_frame = pd.DataFrame(summary)
    check = ScannerCheck(
        pd.DataFrame(per_vendor),
        summary_frame,
        outcome.reset_index() if outcome is not None else pd.DataFrame(),
        "",
    )
    for variant in dict.fromkeys(summary_frame["variant"] if len(summary_frame) else []):
        rows = summary_frame[summary_frame["variant"] == variant]
        weights = rows["mean_abs_shap"].to_numpy(dtype=float)
        shares = rows["vendor_share_shap"].to_numpy(dtype=float)
        check.vendor_share[str(variant)] = float(np.average(shares, weights=weights)) if weights.sum() > 0 else 0.0
    check.statement = _scanner_statement(check, chosen, bool(sensitive), min_vendor_share) + skipped
    return check


def _scanner_statement(check: ScannerCheck, chosen: Sequence[str], sensitive: bool, threshold: float) -> str:
    if not chosen:
        return "No feature used by the model has raw values to compare across vendors."
    lead = (
        f"The {len(chosen)} most vendor-sensitive features the model uses"
        if sensitive
        else f"No feature the model uses is clearly vendor-sensitive (vendor share of the raw variance under "
        f"{threshold:.0%}); the {len(chosen)} most vendor-dependent ones"
    )
    parts = [
        f"{lead} (vendor explains "
        f"{check.summary['vendor_share_feature'].min():.0%}-{check.summary['vendor_share_feature'].max():.0%} "
        "of their raw variance):"
    ]
    for variant, rows in check.summary.groupby("variant", sort=False):
        parts.append(
            f"{variant}: the vendor explains {check.vendor_share[str(variant)]:.1%} of their SHAP variation "
            f"(weighted by mean |SHAP|), total mean |SHAP| {rows['mean_abs_shap'].sum():.3f}."
        )
    if len(check.outcome):
        rates = check.outcome["event_rate"].astype(float)
        parts.append(
            f"Event rate by vendor: {rates.min():.0%}-{rates.max():.0%}. "
            "A large vendor share with similar event rates means the model reads the scanner, not the disease; "
            "when event rates differ by vendor, part of the vendor share can be real case mix."
        )
    return " ".join(parts)


# --- the planted truth ---------------------------------------------------------------------------


@dataclass
class TruthCheck:
    """The SHAP family ranking against the planted drivers of the synthetic outcome.

    Attributes
    ----------
    groups : DataFrame
        One row per signal group (families linked by a shared driver, e.g. first order + texture
        for heterogeneity; families without a driver alone): ``group``, ``families``,
        ``drivers``, ``planted``, ``planted_sd`` (SD of the group's planted log-odds term over the
        patients), ``planted_share``, ``mean_abs_shap`` (of the group's summed SHAP),
        ``shap_share``, ``shap_rank``, ``top_feature``.
    drivers : DataFrame
        ``driver``, ``meaning``, ``coefficient``, ``planted_sd``, ``group``, ``found``.
    passed : bool or None
        Planted groups rank above every group without a driver and each holds at least
        ``min_share`` of the SHAP; ``None`` when there is no truth to compare with.
    verdict : str
        Markdown, plain words.
    order_matches : bool or None
        The model orders the planted groups as their planted strength does.
    look_alikes : DataFrame
        For each planted group holding much more SHAP than its planted share (over 1.5 times), its
        leading features (``group``, ``feature``, ``mean_abs_shap``) with the most similar feature
        of an under-credited planted group (``look_alike``, ``look_alike_group``) and their
        absolute Spearman ``rho`` over cases: a hint that the over-credited group carries another
        group's signal.
    """

    groups: pd.DataFrame
    drivers: pd.DataFrame
    passed: bool | None
    verdict: str
    order_matches: bool | None = None
    look_alikes: pd.DataFrame = field(default_factory=pd.DataFrame)

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        """Write ``truth_check.json`` (no identifiers: driver names and aggregates only)."""
        if self.passed is None:
            return {}
        data = {
            "passed": self.passed,
            "verdict": self.verdict,
            "order_matches": self.order_matches,
            "groups": self.groups.to_dict(orient="records"),
            "drivers": self.drivers.to_dict(orient="records"),
            "look_alikes": self.look_alikes.to_dict(orient="records"),
        }
        return {"truth": write_json(data, Path(out_dir) / "truth_check.json")}


def planted_drivers(truth_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Driver values per patient and their coefficients from a synthetic extract's ``truth/``.

    Reads only the driver columns (``x_*``) of ``patients.csv`` and ``has_imaging``, never an
    identifier; coefficients from ``model.json`` (the generator's defaults if it is missing).
    """
    root = Path(truth_dir)
    patients = root / "patients.csv"
    if not patients.is_file():
        raise ExplainError(f"no patients.csv in {root.name}")
    header = pd.read_csv(patients, nrows=0).columns
    wanted = [c for c in header if c.startswith("x_") or c == "has_imaging"]
    table = pd.read_csv(patients, usecols=wanted)
    if "has_imaging" in table.columns:
        table = table[table["has_imaging"].astype(float) == 1].drop(columns=["has_imaging"])
    model = root / "model.json"
    if model.is_file():
        coef = {str(k): float(v) for k, v in json.loads(model.read_text(encoding="utf-8"))["coefficients"].items()}
    else:
        from pacs_workbench.synth.patients import OUTCOME_MODEL

        coef = dict(OUTCOME_MODEL.coef)
    return table, coef


def _signal_groups(families: Sequence[str], driver_families: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Families joined when a driver spans them; each other family on its own."""
    groups: list[set[str]] = []
    for fams in driver_families.values():
        members = {f for f in fams if f in families}
        if not members:
            continue
        merged = [g for g in groups if g & members]
        for g in merged:
            groups.remove(g)
            members |= g
        groups.append(members)
    covered = set().union(*groups) if groups else set()
    groups += [{f} for f in families if f not in covered]
    return [[f for f in FAMILIES if f in g] for g in groups]


def compare_with_truth(
    review: ShapReview | Explanations,
    truth_dir: str | os.PathLike[str] | None,
    *,
    driver_families: Mapping[str, Sequence[str]] | None = None,
    min_share: float = 0.05,
) -> TruthCheck:
    """Did the model find the planted signal? SHAP by feature family against the known drivers.

    Families that a driver can show up in form one *signal group* (shape: size and margin;
    first order + texture: heterogeneity; clinical: age and smoking); families no driver maps to
    are groups of their own. The planted strength of a group is the SD over patients of its
    drivers' term in the true linear predictor; the model's is the mean |summed SHAP| of its
    families. The check passes when every planted group ranks above every unplanted one and
    holds at least ``min_share`` of the SHAP.

    Parameters
    ----------
    review
        The review (or its explanations).
    truth_dir
        ``truth/`` of the synthetic extract (see :func:`planted_drivers`); ``None``/``""``: no check.
    driver_families
        Driver column -> families that can carry it (default :data:`DRIVER_FAMILIES`).
    min_share
        Smallest share of the family-level SHAP a planted group must hold to count as found.
    """
    mapping = dict(driver_families or DRIVER_FAMILIES)
    empty_groups = pd.DataFrame(
        columns=[
            "group",
            "families",
            "drivers",
            "planted",
            "planted_sd",
            "planted_share",
            "mean_abs_shap",
            "shap_share",
            "shap_rank",
            "top_feature",
        ]
    )
    empty_drivers = pd.DataFrame(columns=["driver", "meaning", "coefficient", "planted_sd", "group", "found"])
    if not truth_dir or not (Path(truth_dir) / "patients.csv").is_file():
        note = "No ground truth given" if not truth_dir else "No ground truth found"
        return TruthCheck(
            empty_groups,
            empty_drivers,
            None,
            f"{note}: the comparison with planted drivers applies to the synthetic extract only.",
        )
    expl = review.explanations if isinstance(review, ShapReview) else review
    if expl.shap.empty:
        return TruthCheck(empty_groups, empty_drivers, None, "No explanations to compare with the ground truth.")
    drivers, coef = planted_drivers(truth_dir)
    contrib = family_contributions(expl)
    present = [f for f in FAMILIES if f in contrib.columns]
    groups = _signal_groups(present, mapping)
    importance = importance_table(expl)
    rows = []
    for members in groups:
        members_drivers = [d for d, fams in mapping.items() if any(f in members for f in fams)]
        planted_term = sum(
            (coef.get(d, 0.0) * drivers[d].astype(float) for d in members_drivers if d in drivers.columns),
            start=pd.Series(0.0, index=drivers.index),
        )
        top = importance[importance["family"].isin(members)].head(1)
        rows.append(
            {
                "group": " + ".join(members),
                "families": members,
                "drivers": [DRIVER_LABELS.get(d, d) for d in members_drivers],
                "planted": bool(members_drivers),
                "planted_sd": float(planted_term.std(ddof=1)) if members_drivers and len(planted_term) > 1 else 0.0,
                "mean_abs_shap": float(contrib[members].sum(axis=1).abs().mean()),
                "top_feature": str(top["feature"].iloc[0]) if len(top) else "",
            }
        )
    table = pd.DataFrame(rows)
    table["planted_share"] = table["planted_sd"] / max(float(table["planted_sd"].sum()), 1e-12)
    table["shap_share"] = table["mean_abs_shap"] / max(float(table["mean_abs_shap"].sum()), 1e-12)
    table = table.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
    table["shap_rank"] = np.arange(1, len(table) + 1)
    planted = table[table["planted"]]
    unplanted = table[~table["planted"]]
    worst_planted = int(planted["shap_rank"].max()) if len(planted) else 0
    best_unplanted = int(unplanted["shap_rank"].min()) if len(unplanted) else len(table) + 1
    group_found = {
        str(r["group"]): bool(r["shap_rank"] < best_unplanted and r["shap_share"] >= min_share)
        for r in planted.to_dict(orient="records")
    }
    driver_rows = []
    for d, fams in mapping.items():
        group = next(
            (str(g) for g, members in zip(table["group"], table["families"], strict=True) if set(fams) & set(members)),
            "",
        )
        sd = float((coef.get(d, 0.0) * drivers[d].astype(float)).std(ddof=1)) if d in drivers.columns else float("nan")
        driver_rows.append(
            {
                "driver": d,
                "meaning": DRIVER_LABELS.get(d, d),
                "coefficient": coef.get(d, float("nan")),
                "planted_sd": sd,
                "group": group,
                "found": group_found.get(group, False),
            }
        )
    passed = bool(len(planted)) and worst_planted < best_unplanted and all(group_found.values())
    table = table[
        [
            "group",
            "families",
            "drivers",
            "planted",
            "planted_sd",
            "planted_share",
            "mean_abs_shap",
            "shap_share",
            "shap_rank",
            "top_feature",
        ]
    ]
    check = TruthCheck(table, pd.DataFrame(driver_rows), passed, "")
    by_planted = planted.sort_values("planted_sd", ascending=False, kind="stable")["group"].tolist()
    check.order_matches = by_planted == planted.sort_values("shap_rank")["group"].tolist()
    check.look_alikes = _look_alikes(review, importance, table)
    check.verdict = _truth_verdict(check, min_share)
    return check


def _case_values(review: ShapReview | Explanations) -> pd.DataFrame:
    """Feature values per case: the features table's raw values when known, else the model inputs."""
    if isinstance(review, ShapReview) and len(review.raw_values):
        return review.raw_values
    expl = review.explanations if isinstance(review, ShapReview) else review
    return expl.values.groupby("case_id")[expl.feature_names].mean()


def _look_alikes(
    review: ShapReview | Explanations, importance: pd.DataFrame, groups: pd.DataFrame, top: int = 5
) -> pd.DataFrame:
    """For over-credited planted groups: each leading feature's most similar feature of an under-credited group."""
    columns = ["group", "feature", "mean_abs_shap", "look_alike", "look_alike_group", "rho"]
    planted = groups[groups["planted"]]
    over = planted[planted["shap_share"] > 1.5 * planted["planted_share"]]
    under = planted[planted["shap_share"] < planted["planted_share"]]
    if over.empty or under.empty:
        return pd.DataFrame(columns=columns)
    values = _case_values(review)
    clinical = set(importance.loc[importance["family"] == "clinical", "source"])
    family_of = {str(c): feature_family(str(c), clinical)[0] for c in values.columns}
    rows = []
    for group in over.to_dict(orient="records"):
        leading = importance[importance["family"].isin(group["families"]) & (importance["mean_abs_shap"] > 0)]
        for feature in leading.head(top).to_dict(orient="records"):
            source = str(feature["source"])
            if source not in values.columns:
                continue
            best: tuple[float, str, str] | None = None
            for other in under.to_dict(orient="records"):
                candidates = [c for c, fam in family_of.items() if fam in other["families"] and c != source]
                if not candidates:
                    continue
                ranks = values[[source, *candidates]].apply(pd.to_numeric, errors="coerce").rank()
                rho = ranks[candidates].corrwith(ranks[source]).abs().dropna()
                if len(rho) and (best is None or float(rho.max()) > best[0]):
                    best = (float(rho.max()), str(rho.idxmax()), str(other["group"]))
            if best is not None:
                rows.append(
                    {
                        "group": group["group"],
                        "feature": source,
                        "mean_abs_shap": float(feature["mean_abs_shap"]),
                        "look_alike": best[1],
                        "look_alike_group": best[2],
                        "rho": best[0],
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def _truth_verdict(check: TruthCheck, min_share: float) -> str:
    g = check.groups
    planted, unplanted = g[g["planted"]], g[~g["planted"]]
    by_planted = planted.sort_values("planted_sd", ascending=False, kind="stable")["group"].tolist()
    by_model = planted.sort_values("shap_rank")["group"].tolist()
    missed = check.drivers[~check.drivers["found"]]
    headline = (
        (
            "**The model found the planted signal.**"
            if check.order_matches
            else "**The model found the planted signal, but weighs it differently from the truth.**"
        )
        if check.passed
        else (
            "**The model did not find the planted signal: it leans on something else.**"
            if len(unplanted) and int(unplanted["shap_rank"].min()) == 1
            else "**The model found only part of the planted signal.**"
        )
    )
    lines = [headline]
    describe = "; ".join(
        f"{r['group']}: {', '.join(r['drivers'])} ({r['shap_share']:.0%} of the SHAP)"
        for r in planted.to_dict(orient="records")
    )
    lines.append(
        f"The planted drivers map to {len(planted)} signal group(s) ({describe}), together "
        f"{planted['shap_share'].sum():.0%} of the family-level SHAP."
    )
    if len(unplanted):
        lines.append(
            "Families without a planted driver: "
            + ", ".join(
                f"{r['group']} (rank {r['shap_rank']}, {r['shap_share']:.0%})"
                for r in unplanted.to_dict(orient="records")
            )
            + (
                "; every planted group ranks above them."
                if check.passed or int(unplanted["shap_rank"].min()) > int(planted["shap_rank"].max())
                else "; some rank above a planted group."
            )
        )
    else:
        lines.append("Every family in the model can carry a planted driver, so the check rests on each group's share.")
    if len(missed):
        lines.append(
            "Not found (rank below an unplanted family or under "
            f"{min_share:.0%} of the SHAP): " + ", ".join(str(m) for m in missed["meaning"]) + "."
        )
    order = "matches" if check.order_matches else "differs from"
    lines.append(
        f"By planted strength the groups order {' > '.join(by_planted)}; the model's order "
        f"({' > '.join(by_model)}) {order} it."
    )
    over = planted[planted["shap_share"] > 1.5 * planted["planted_share"]]
    hints = check.look_alikes
    for r in over.to_dict(orient="records"):
        text = (
            f"{r['group']} holds {r['shap_share']:.0%} of the SHAP against {r['planted_share']:.0%} of the "
            "planted signal"
        )
        mine = hints[hints["group"] == r["group"]] if len(hints) else hints
        alike = mine[mine["rho"] >= 0.5] if len(mine) else mine
        if len(alike):
            example = alike.sort_values("rho", ascending=False).iloc[0]
            share = float(alike["mean_abs_shap"].sum() / max(float(mine["mean_abs_shap"].sum()), 1e-12))
            text += (
                f"; {len(alike)} of its {len(mine)} leading features track features of "
                f"{', '.join(sorted(set(alike['look_alike_group'])))} (|Spearman rho| >= 0.5, e.g. "
                f"`{short_name(str(example['feature']))}` and `{short_name(str(example['look_alike']))}`, rho "
                f"{float(example['rho']):.2f}) and hold {share:.0%} of their SHAP: part of this credit is likely "
                "that group's signal seen through look-alike features."
            )
        else:
            text += (
                "; none of its leading features resembles a feature of an under-credited group, so it may carry "
                "something other than the planted signal."
            )
        lines.append(text[0].upper() + text[1:])
    lines.append(
        "Size and margin irregularity both live in shape features, so the family view cannot tell them apart; "
        "the top feature of each group is in the table."
    )
    return " ".join(lines)


# --- limitations ---------------------------------------------------------------------------------


def limitations(review: ShapReview, model_dir: str | os.PathLike[str] | None = None) -> str:
    """Markdown bullets: what these explanations can and cannot say, with this run's numbers."""
    bullets = [
        "SHAP values explain the model, not the disease: a feature with a large contribution is one the "
        "model relies on, which need not be causal or even specific to the lesion.",
        "Contributions are on the log-odds scale and are conditional on the other features; correlated "
        "features share credit, and the in-fold correlation filter keeps one of each correlated set, so "
        "credit can move between look-alike features from fold to fold.",
        "TreeSHAP here uses the trees' own coverage (tree-path-dependent), not an interventional background.",
        "Internal cross-validation only: these explanations describe models fitted on this cohort's scanners "
        "and protocols.",
    ]
    if review.available:
        unstable = int(review.importance["unstable"].sum())
        n_folds = len(review.explanations.folds)
        bullets.append(
            f"{unstable} feature(s) rank high in some of the {n_folds} fold models but not in most (flagged "
            "unstable): do not read them as findings."
        )
    metrics = _read_metrics(model_dir) if model_dir else None
    for note in (metrics or {}).get("warnings", []):
        bullets.append(f"Modeling warning: {note}")
    bullets += [f"Not shown: {n}" for n in review.notes]
    return "\n".join(f"- {b}" for b in bullets)

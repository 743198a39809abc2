"""The folds of the modeling stage: the models, their settings, and one outer fold fitted.

:mod:`~pacs_workbench.radiomics.model` plans the repeated patient-grouped outer folds and runs
:func:`fit_fold` on each; :mod:`~pacs_workbench.radiomics.deep` trains the CNN in the same
folds. Both import from here, so neither imports the other's module for the fold machinery.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pacs_workbench.radiomics.transformers import ClinicalEncoder, LogitRecalibrator, RadiomicsPreprocessor

FloatArray = NDArray[np.float64]

# Small-data LightGBM: shallow trees, strong L2, row and column subsampling, a few hundred
# trees with a small learning rate. The grid varies depth (stumps: an additive model) and an
# in-fold univariate pre-selection that keeps noise features away from the trees when p >> n.
LIGHTGBM_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "learning_rate": 0.03,
    "max_depth": 2,
    "num_leaves": 4,
    "min_child_samples": 10,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "reg_lambda": 5.0,
    "reg_alpha": 0.0,
    "min_split_gain": 0.0,
    "n_jobs": 1,
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}
LIGHTGBM_GRID: dict[str, list[Any]] = {
    "clf__max_depth": [1, 3],
    "prep__select_k": [None, 32],
}
LASSO_GRID: dict[str, list[Any]] = {"clf__C": [0.05, 0.2, 1.0]}
MODEL_NAMES = ("lightgbm", "radiomics_lr", "clinical_lr", "lightgbm_recalibrated", "cnn", "hybrid")
#: Paired AUC comparisons reported when both models ran (``a - b``).
COMPARISONS = (
    ("lightgbm", "clinical_lr"), ("lightgbm", "radiomics_lr"), ("radiomics_lr", "clinical_lr"),
    ("cnn", "lightgbm"), ("hybrid", "lightgbm"), ("hybrid", "cnn"),
)
EPV_MINIMUM = 10.0


class GroupLeakError(AssertionError):
    """The same patient (group) ended up in both the training and the test part of a split."""


class EventsPerVariableWarning(UserWarning):
    """Too few events for the number of candidate variables: the model is likely to overfit."""


# --- configuration -------------------------------------------------------------------------------


@dataclass
class ModelingConfig:
    """What to model and how to validate it (the CLI flags of ``pacs-workbench model``)."""

    label: str
    group: str
    time: str | None = None
    horizon: float | None = None
    id_col: str | None = None
    batch: str | None = None
    clinical: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    clinical_in_model: bool = True
    repeats: int = 3
    outer_folds: int = 5
    inner_folds: int = 3
    random_state: int = 0
    recalibrate: bool = False
    corr_threshold: float = 0.9
    max_mode_fraction: float = 0.95
    select_k: int | None = None
    n_boot: int = 1000
    risk_cutoffs: tuple[float, float] | None = None
    lightgbm_params: dict[str, Any] = field(default_factory=lambda: dict(LIGHTGBM_PARAMS))
    lightgbm_grid: dict[str, list[Any]] = field(default_factory=lambda: dict(LIGHTGBM_GRID))
    lasso_grid: dict[str, list[Any]] = field(default_factory=lambda: dict(LASSO_GRID))


def build_models(
    config: ModelingConfig, features: Sequence[str], clinical: Sequence[str], random_state: int
) -> dict[str, tuple[Pipeline, dict[str, list[Any]]]]:
    """The untrained pipelines and their tuning grids, keyed by model name."""

    def prep(with_clinical: bool) -> RadiomicsPreprocessor:
        return RadiomicsPreprocessor(
            feature_cols=list(features),
            batch_col=config.batch,
            clinical_cols=tuple(clinical) if with_clinical else (),
            max_mode_fraction=config.max_mode_fraction,
            corr_threshold=config.corr_threshold,
            select_k=config.select_k,
        )

    models: dict[str, tuple[Pipeline, dict[str, list[Any]]]] = {
        "lightgbm": (
            Pipeline(
                [
                    ("prep", prep(config.clinical_in_model)),
                    ("clf", LGBMClassifier(**config.lightgbm_params, random_state=random_state)),
                ]
            ),
            config.lightgbm_grid,
        ),
        "radiomics_lr": (
            Pipeline(
                [
                    ("prep", prep(False)),
                    ("scale", StandardScaler()),
                    (
                        "clf",
                        LogisticRegression(
                            l1_ratio=1.0, solver="liblinear", max_iter=2000, random_state=random_state
                        ),
                    ),
                ]
            ),
            config.lasso_grid,
        ),
    }
    if clinical:
        models["clinical_lr"] = (
            Pipeline(
                [
                    ("prep", ClinicalEncoder(tuple(clinical))),
                    ("scale", StandardScaler()),
                    ("clf", LogisticRegression(C=1.0, max_iter=2000, random_state=random_state)),
                ]
            ),
            {},
        )
    return models


# --- folds ---------------------------------------------------------------------------------------


def check_groups_disjoint(train_groups: Any, test_groups: Any) -> None:
    """Raise :class:`GroupLeakError` when a patient is on both sides of a split."""
    shared = set(pd.unique(np.asarray(train_groups))) & set(pd.unique(np.asarray(test_groups)))
    if shared:
        # The count only: group values are patient pseudonyms and stay out of messages.
        raise GroupLeakError(f"{len(shared)} patient group(s) in both the training and the test part")


def outer_splits(
    y: Any, groups: Any, n_splits: int, repeats: int, random_state: int
) -> list[tuple[int, int, NDArray[np.int64], NDArray[np.int64]]]:
    """``(repeat, fold, train positions, test positions)`` of the repeated outer CV."""
    seeds = np.random.SeedSequence(random_state).generate_state(repeats)
    splits = []
    dummy = np.zeros((len(y), 1))
    for r in range(repeats):
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=int(seeds[r]))
        for f, (train, test) in enumerate(cv.split(dummy, y, groups)):
            check_groups_disjoint(np.asarray(groups)[train], np.asarray(groups)[test])
            splits.append((r, f, train.astype(np.int64), test.astype(np.int64)))
    return splits


def fold_plan(
    y: Any, groups: Any, config: ModelingConfig
) -> list[tuple[int, int, NDArray[np.int64], NDArray[np.int64], int]]:
    """``(repeat, fold, train positions, test positions, fold seed)``: the outer folds every model is fitted in."""
    splits = outer_splits(y, groups, config.outer_folds, config.repeats, config.random_state)
    seeds = np.random.SeedSequence([config.random_state, 1]).generate_state(len(splits))
    return [(r, f, tr, te, int(seed)) for (r, f, tr, te), seed in zip(splits, seeds, strict=True)]


@dataclass
class FoldTask:
    """One outer fold of one repeat, with everything needed to fit it in another process."""

    repeat: int
    fold: int
    X: pd.DataFrame
    y: NDArray[np.int64]
    groups: NDArray[Any]
    train: NDArray[np.int64]
    test: NDArray[np.int64]
    config: ModelingConfig
    features: list[str]
    clinical: list[str]
    seed: int


def fit_one(
    name: str, pipe: Pipeline, grid: dict[str, list[Any]], task: FoldTask, inner: StratifiedGroupKFold
) -> tuple[Pipeline, dict[str, Any]]:
    X_tr, y_tr, g_tr = task.X.iloc[task.train], task.y[task.train], task.groups[task.train]
    if not grid:
        return clone(pipe).fit(X_tr, y_tr), {}
    search = GridSearchCV(
        pipe, grid, scoring="roc_auc", cv=inner, refit=True, n_jobs=1, error_score="raise"
    )
    with warnings.catch_warnings():
        # Lasso with a small C can drop every feature in an inner fold; that is a valid outcome.
        warnings.filterwarnings("ignore", message=".*Only one class.*")
        search.fit(X_tr, y_tr, groups=g_tr)
    return search.best_estimator_, {k.split("__", 1)[-1]: v for k, v in search.best_params_.items()}


def fit_fold(task: FoldTask) -> dict[str, Any]:
    """Fit every model on one outer training part and predict its test part.

    Module-level so :func:`pacs_workbench.core.executor.map_items` can run folds in parallel; errors
    come back as a record (``error``) instead of stopping the other folds.
    """
    try:
        return _fit_fold(task)
    except Exception as exc:  # reported per fold; the caller fails the run
        return {"repeat": task.repeat, "fold": task.fold, "error": f"{type(exc).__name__}: {exc}"}


def _fit_fold(task: FoldTask) -> dict[str, Any]:
    check_groups_disjoint(task.groups[task.train], task.groups[task.test])
    inner = StratifiedGroupKFold(n_splits=task.config.inner_folds, shuffle=True, random_state=task.seed)
    X_te = task.X.iloc[task.test]
    probs: dict[str, FloatArray] = {}
    fitted: dict[str, Pipeline] = {}
    best: dict[str, dict[str, Any]] = {}
    for name, (pipe, grid) in build_models(task.config, task.features, task.clinical, task.seed).items():
        model, params = fit_one(name, pipe, grid, task, inner)
        prep = model.steps[0][1]
        # The spy every fold carries: preprocessing saw the training rows and nothing else.
        if getattr(prep, "n_samples_fit_", task.train.size) != task.train.size:
            raise GroupLeakError(f"{name}: preprocessing was fitted on rows outside the training part")
        fitted[name], best[name] = model, params
        probs[name] = model.predict_proba(X_te)[:, 1]
    recalibrator: LogitRecalibrator | None = None
    if task.config.recalibrate:
        X_tr, y_tr, g_tr = task.X.iloc[task.train], task.y[task.train], task.groups[task.train]
        oof = cross_val_predict(
            clone(fitted["lightgbm"]), X_tr, y_tr, groups=g_tr, cv=inner, method="predict_proba"
        )[:, 1]
        recalibrator = LogitRecalibrator().fit(oof, y_tr)
        probs["lightgbm_recalibrated"] = recalibrator.predict(probs["lightgbm"])
    lgbm = fitted["lightgbm"]
    prep = lgbm.named_steps["prep"]
    test_matrix = prep.transform(X_te)
    return {
        "repeat": task.repeat,
        "fold": task.fold,
        "test": task.test,
        "train": task.train,
        "probs": probs,
        "best_params": best,
        "pipeline": lgbm,
        "recalibrator": recalibrator,
        "test_matrix": test_matrix,
        "n_features_after_filter": len(prep.feature_names_out_),
        "n_features_radiomics_lr": len(fitted["radiomics_lr"].named_steps["prep"].feature_names_out_),
    }

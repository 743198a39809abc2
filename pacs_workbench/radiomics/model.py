"""Modeling stage: validated risk models from a radiomic feature table.

``run_modeling`` (and ``pacs-workbench model TABLE --label COL --group COL [--time COL] --out DIR``)
fits a LightGBM classifier for a binary outcome, or for a time-to-event outcome at a fixed
horizon, and estimates how well it would do on new patients with repeated, patient-grouped,
nested cross-validation:

- outer folds (``StratifiedGroupKFold``, reshuffled per repeat) give the estimate: every case is
  predicted once per repeat by models that never saw its patient (checked in code:
  :class:`GroupLeakError`);
- inner folds (the same splitter on the outer training part) pick the hyperparameters from a
  small grid (:data:`LIGHTGBM_GRID`, :data:`LASSO_GRID`);
- every data-dependent step is part of the fitted pipeline and so is learned on the training
  part only: median imputation, the near-constant and correlation filters, optional univariate
  selection, optional ComBat harmonization by scanner or vendor (:mod:`pacs_workbench.radiomics.combat`),
  the clinical encoding, the scaler, and optional logistic recalibration (fitted on inner
  out-of-fold predictions).

Two baselines are fitted in the same folds: a clinical-only logistic regression (the
``clinical`` columns, e.g. age and smoking) and an L1 logistic regression on the radiomic
features. ``metrics.json`` and the model card say whether the LightGBM model adds anything to
them (paired patient-bootstrap AUC differences, :mod:`pacs_workbench.radiomics.metrics`).

Inputs
------
TABLE: Parquet or CSV (gzip allowed), one row per case. ``label`` holds 0/1 (the event indicator
when ``time`` is given), ``group`` the patient (pseudonymized, e.g. from `(0010,0020) Patient ID`);
optional ``id`` (default ``case_id`` when present), ``batch`` (e.g. `(0008,0070) Manufacturer`)
and ``clinical`` columns. Feature columns: every numeric column except those, the ones named
in ``exclude``, columns named for DICOM attributes (provenance such as `(0018,0050) Slice
Thickness` is not a feature) and pyradiomics ``diagnostics_*`` columns.

With ``time`` and ``horizon``: label = event at or before the horizon; cases without event
followed beyond (or up to) the horizon are 0; cases censored before it are excluded and counted
(``n_excluded_censored``).

Outputs (in DIR, each file written atomically)
----------------------------------------------
``metrics.json``
    ``auc``, ``auc_ci``, ``pr_auc``, ``brier``, calibration, ``n``, ``n_events`` for the LightGBM
    model at the top level; ``models`` with one entry per model (``lightgbm``, ``radiomics_lr``,
    ``clinical_lr``, ``lightgbm_recalibrated``) holding the same metrics plus calibration curve,
    decision curve and risk strata; ``comparisons`` (paired AUC differences), ``settings``,
    ``warnings``, ``folds``.
``predictions.parquet``
    One row per case and repeat: ``row_index`` (0-based row of TABLE as read), ``case_id``,
    ``group``, ``label``, ``repeat``, ``outer_fold``, ``prob_<model>`` per model.
``model_card.md``
    Intended use, data, validation, performance, limits. Counts only, never identifiers.
``models/`` (for the explain stage: SHAP per outer fold on held-out cases only)
    ``r{repeat}_f{fold}.txt``: the fitted LightGBM booster (``booster.save_model``), whose
    feature names are the preprocessed columns.
    ``r{repeat}_f{fold}.joblib``: a dict with ``pipeline`` (the fitted preprocessing + LightGBM
    pipeline), ``preprocessor`` (its first step: imputation, filters, ComBat, clinical encoding),
    ``feature_columns`` (booster input columns after in-fold filtering), ``feature_sources``
    (the TABLE column each came from), ``input_columns`` (TABLE columns the pipeline reads),
    ``train_rows`` / ``test_rows`` (``row_index`` values), ``best_params`` and ``recalibrator``.
    ``r{repeat}_f{fold}_test.parquet``: the exact booster input for the test fold (harmonized
    when ComBat is on): ``row_index``, ``case_id`` and ``feature_columns``.
    ``folds.parquet``: one row per (repeat, fold) with the file names and sizes.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from numpy.typing import NDArray
from pydicom.datadict import tag_for_keyword
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pacs_workbench.core.files import write_atomic as _atomic_write
from pacs_workbench.radiomics import metrics as perf
from pacs_workbench.radiomics.combat import ComBat

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
MODEL_NAMES = ("lightgbm", "radiomics_lr", "clinical_lr", "lightgbm_recalibrated")
EPV_MINIMUM = 10.0
# Characters LightGBM cannot keep in a feature name (it stores names in JSON-like text).
_UNSAFE_NAME = re.compile(r'[",:\[\]{}\s]')


class ModelingError(ValueError):
    """A table or setting that cannot give a valid model (the message says which and why)."""


class GroupLeakError(AssertionError):
    """The same patient (group) ended up in both the training and the test part of a split."""


class EventsPerVariableWarning(UserWarning):
    """Too few events for the number of candidate variables: the model is likely to overfit."""


# --- input ---------------------------------------------------------------------------------------


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a case table from Parquet (``.parquet``/``.pq``) or CSV (optionally gzip-compressed)."""
    file = Path(path)
    if not file.is_file():
        raise ModelingError(f"table not found: {file}")
    name = file.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(file)
        return pd.read_csv(file, compression="infer")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ModelingError(f"{file.name}: cannot read as Parquet or CSV ({type(exc).__name__})") from exc


def label_at_horizon(event: pd.Series, time: pd.Series, horizon: float) -> tuple[pd.Series, int]:
    """Binary label "event at or before ``horizon``" from a time-to-event outcome.

    Parameters
    ----------
    event
        1 for an event, 0 for censoring.
    time
        Time to event or censoring (same unit as ``horizon``).
    horizon
        The fixed time point.

    Returns
    -------
    tuple
        The label (1: event by the horizon; 0: event-free at the horizon; NaN: censored before
        the horizon without event, or missing event/time) and the number of censored-before-
        horizon cases excluded.
    """
    ev = pd.to_numeric(event, errors="coerce")
    t = pd.to_numeric(time, errors="coerce")
    label = pd.Series(np.nan, index=event.index, dtype=float)
    label[(ev == 1) & (t <= horizon)] = 1.0
    label[t > horizon] = 0.0
    label[(ev == 0) & (t >= horizon)] = 0.0
    censored = (ev == 0) & (t < horizon)
    return label, int(censored.sum())


def select_feature_columns(table: pd.DataFrame, reserved: Sequence[str]) -> tuple[list[str], int]:
    """Candidate feature columns and the number of other columns left out.

    Numeric columns only, except ``reserved``, columns named for a DICOM attribute (provenance,
    e.g. `(0008,0070) Manufacturer`, `(0018,0050) Slice Thickness`) and ``diagnostics_*``.
    """
    skip = set(reserved)
    features = []
    for col in table.columns:
        name = str(col)
        if col in skip or name.startswith("diagnostics_") or tag_for_keyword(name) is not None:
            continue
        if pd.api.types.is_numeric_dtype(table[col]) and not pd.api.types.is_bool_dtype(table[col]):
            features.append(name)
    return features, len(table.columns) - len(features) - len(skip & set(table.columns))


def safe_feature_names(names: Sequence[str]) -> list[str]:
    """Names LightGBM can store: unsafe characters replaced by ``_``, made unique."""
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        base = _UNSAFE_NAME.sub("_", str(name).strip()) or "feature"
        candidate, k = base, 1
        while candidate in seen:
            k += 1
            candidate = f"{base}__{k}"
        seen.add(candidate)
        out.append(candidate)
    return out


# --- transformers --------------------------------------------------------------------------------


class ClinicalEncoder(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Clinical covariates to numbers: medians for missing numbers, one-hot for categories.

    Parameters
    ----------
    columns
        Clinical columns (numeric such as age, or categorical such as smoking status).

    Attributes
    ----------
    medians_ : dict
        Training median per numeric column (imputes missing values).
    categories_ : dict
        Training categories per categorical column (unseen or missing: all zeros).
    feature_names_out_ : list of str
        Output columns (``col`` or ``col=value``).
    """

    def __init__(self, columns: Sequence[str] = ()) -> None:
        self.columns = columns

    def fit(self, X: pd.DataFrame, y: Any = None) -> ClinicalEncoder:
        """Learn medians and categories on the training rows."""
        self.medians_: dict[str, float] = {}
        self.categories_: dict[str, list[str]] = {}
        names: list[str] = []
        for col in self.columns:
            values = X[col]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                median = float(np.nanmedian(values.to_numpy(dtype=float))) if values.notna().any() else 0.0
                self.medians_[col] = median
                names.append(col)
            else:
                cats = sorted({str(v) for v in values.dropna()})
                self.categories_[col] = cats
                names.extend(f"{col}={c}" for c in cats)
        self.feature_names_out_ = names
        self.n_samples_fit_ = int(X.shape[0])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Encode the rows of ``X`` with the training medians and categories."""
        parts: dict[str, Any] = {}
        for col in self.columns:
            if col in self.medians_:
                parts[col] = pd.to_numeric(X[col], errors="coerce").fillna(self.medians_[col]).to_numpy(float)
            else:
                text = X[col].astype(str).where(X[col].notna(), None)
                for cat in self.categories_[col]:
                    parts[f"{col}={cat}"] = (text == cat).to_numpy(dtype=float)
        return pd.DataFrame(parts, index=X.index, columns=self.feature_names_out_)


def _max_tie_fraction(values: FloatArray) -> FloatArray:
    """Per column, the share of rows holding its most frequent value."""
    n = values.shape[0]
    if n == 0:
        return np.zeros(values.shape[1])
    ordered = np.sort(values, axis=0)
    run = np.ones(values.shape[1])
    best = np.ones(values.shape[1])
    for i in range(1, n):
        run = np.where(ordered[i] == ordered[i - 1], run + 1.0, 1.0)
        best = np.maximum(best, run)
    return np.asarray(best / n, dtype=float)


def _correlation_filter(values: FloatArray, threshold: float) -> NDArray[np.bool_]:
    """Keep a column unless its |Pearson r| with an earlier kept column exceeds ``threshold``."""
    p = values.shape[1]
    keep = np.zeros(p, dtype=bool)
    if p == 0:
        return keep
    centered = values - values.mean(axis=0)
    norm = np.sqrt((centered**2).sum(axis=0))
    norm[norm == 0] = 1.0
    unit = centered / norm
    corr = np.abs(unit.T @ unit)
    dropped = np.zeros(p, dtype=bool)
    for j in range(p):
        if dropped[j]:
            continue
        keep[j] = True
        dropped |= corr[j] > threshold
    return keep


class RadiomicsPreprocessor(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Every data-dependent feature step of the workbench, learned on the training fold only.

    In order: median imputation; removal of near-constant features (a single value in at least
    ``max_mode_fraction`` of the rows); ComBat harmonization by ``batch_col`` (when given);
    removal of highly correlated features (greedy, keeping the earlier column); optional
    univariate selection (ANOVA F, top ``select_k``, needs ``y``); then the clinical columns,
    encoded, are appended untouched by filters and harmonization.

    Parameters
    ----------
    feature_cols
        Radiomic feature columns (``None``: every numeric column except batch and clinical).
    batch_col
        Scanner or vendor column for ComBat (e.g. `(0008,0070) Manufacturer`); ``None``: no
        harmonization.
    clinical_cols
        Clinical columns passed through (encoded by :class:`ClinicalEncoder`).
    max_mode_fraction, corr_threshold, select_k
        Filter settings (``corr_threshold >= 1`` disables the correlation filter).

    Attributes
    ----------
    medians_ : ndarray
        Training medians of ``feature_cols``.
    constant_mask_ : ndarray of bool
        Features removed as near-constant.
    combat_ : ComBat or None
        The fitted harmonization.
    feature_sources_ : list of str
        TABLE column behind each output column.
    feature_names_out_ : list of str
        Output columns (LightGBM-safe names), radiomic then clinical.
    clinical_ : ClinicalEncoder or None
    n_samples_fit_ : int
        Rows seen in ``fit``: the training fold size, never more.
    """

    def __init__(
        self,
        feature_cols: Sequence[str] | None = None,
        batch_col: str | None = None,
        clinical_cols: Sequence[str] = (),
        max_mode_fraction: float = 0.95,
        corr_threshold: float = 0.9,
        select_k: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.batch_col = batch_col
        self.clinical_cols = clinical_cols
        self.max_mode_fraction = max_mode_fraction
        self.corr_threshold = corr_threshold
        self.select_k = select_k

    def _feature_list(self, X: pd.DataFrame) -> list[str]:
        if self.feature_cols is not None:
            return list(self.feature_cols)
        skip = {self.batch_col, *self.clinical_cols}
        return [c for c in X.columns if c not in skip and pd.api.types.is_numeric_dtype(X[c])]

    def fit(self, X: pd.DataFrame, y: Any = None) -> RadiomicsPreprocessor:
        """Learn imputation, filters, harmonization and selection on the rows of ``X``."""
        features = self._feature_list(X)
        raw = X[features].to_numpy(dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
            medians = np.nanmedian(raw, axis=0) if raw.shape[0] else np.zeros(raw.shape[1])
        medians = np.where(np.isnan(medians), 0.0, medians)
        filled = np.where(np.isnan(raw), medians, raw)
        constant = _max_tie_fraction(filled) >= self.max_mode_fraction
        kept = [f for f, c in zip(features, constant, strict=True) if not c]
        values = filled[:, ~constant]
        combat: ComBat | None = None
        if self.batch_col is not None and kept:
            frame = pd.DataFrame(values, columns=kept, index=X.index)
            frame[self.batch_col] = X[self.batch_col].to_numpy()
            combat = ComBat(batch_col=self.batch_col, feature_cols=kept).fit(frame)
            values = combat.transform(frame).to_numpy(dtype=float)
        keep = (
            _correlation_filter(values, self.corr_threshold)
            if self.corr_threshold < 1.0
            else np.ones(values.shape[1], dtype=bool)
        )
        if self.select_k is not None and y is not None and keep.sum() > self.select_k:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constant-in-fold features give NaN F
                f_stat, _ = f_classif(values[:, keep], np.asarray(y))
            f_stat = np.nan_to_num(f_stat, nan=-1.0)
            top = np.argsort(-f_stat, kind="stable")[: self.select_k]
            chosen = np.zeros(int(keep.sum()), dtype=bool)
            chosen[top] = True
            keep[np.flatnonzero(keep)] = chosen
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.features_ = features
        self.medians_ = medians
        self.constant_mask_ = constant
        self.combat_ = combat
        self.kept_after_constant_ = kept
        self.selected_mask_ = keep
        radiomic = [f for f, k in zip(kept, keep, strict=True) if k]
        self.clinical_ = ClinicalEncoder(self.clinical_cols).fit(X) if self.clinical_cols else None
        clinical_names = self.clinical_.feature_names_out_ if self.clinical_ is not None else []
        self.feature_sources_ = radiomic + list(clinical_names)
        self.feature_names_out_ = safe_feature_names(self.feature_sources_)
        self.n_samples_fit_ = int(X.shape[0])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Apply the learned steps; returns the model input with ``feature_names_out_`` columns."""
        raw = X[self.features_].to_numpy(dtype=float)
        filled = np.where(np.isnan(raw), self.medians_, raw)
        values = filled[:, ~self.constant_mask_]
        if self.combat_ is not None:
            frame = pd.DataFrame(values, columns=self.kept_after_constant_, index=X.index)
            frame[self.batch_col] = X[self.batch_col].to_numpy()
            values = self.combat_.transform(frame).to_numpy(dtype=float)
        parts = [values[:, self.selected_mask_]]
        if self.clinical_ is not None:
            parts.append(self.clinical_.transform(X).to_numpy(dtype=float))
        return pd.DataFrame(np.hstack(parts), index=X.index, columns=self.feature_names_out_)

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        """Output column names."""
        return np.asarray(self.feature_names_out_, dtype=object)


class LogitRecalibrator(BaseEstimator):  # type: ignore[misc]
    """Logistic recalibration ``P = sigmoid(a + b logit(p))`` of predicted probabilities.

    Attributes
    ----------
    intercept_, slope_ : float
    """

    def fit(self, p: Any, y: Any) -> LogitRecalibrator:
        """Fit ``a`` and ``b`` on (out-of-fold) probabilities ``p`` and outcomes ``y``."""
        beta = perf.fit_logistic(perf.logit(p), y)
        self.intercept_, self.slope_ = float(beta[0]), float(beta[1])
        return self

    def predict(self, p: Any) -> FloatArray:
        """Recalibrated probabilities."""
        z = self.intercept_ + self.slope_ * perf.logit(p)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=float)


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


def _fit_one(
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
        model, params = _fit_one(name, pipe, grid, task, inner)
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


# --- outputs -------------------------------------------------------------------------------------




def _write_text(path: Path, text: str) -> None:
    def write(p: Path) -> None:
        p.write_text(text, encoding="utf-8")

    _atomic_write(path, write)


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    def write(p: Path) -> None:
        frame.to_parquet(p, index=False)

    _atomic_write(path, write)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _clean_json(value: Any) -> Any:
    """NaN/inf to ``null`` so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    return value


# --- the stage -----------------------------------------------------------------------------------


def _prepare(
    table: pd.DataFrame, config: ModelingConfig
) -> tuple[pd.DataFrame, dict[str, Any], list[str], list[str]]:
    """Validate the table, derive the label, drop unusable rows; returns cases and counts."""
    needed = [config.label, config.group, config.time, config.batch, config.id_col, *config.clinical]
    missing = [c for c in needed if c is not None and c not in table.columns]
    if missing:
        raise ModelingError(f"column(s) not in the table: {', '.join(missing)}")
    counts: dict[str, Any] = {"n_rows": len(table)}
    data = table.reset_index(drop=True).copy()
    data["_row_index"] = np.arange(len(data))
    raw_label = pd.to_numeric(data[config.label], errors="coerce")
    bad = raw_label.notna() & ~raw_label.isin([0, 1])
    if bad.any():
        values = sorted({str(v) for v in raw_label[bad].unique()})[:5]
        raise ModelingError(f"label column {config.label!r} must hold 0/1; found {', '.join(values)}")
    if config.time is not None:
        if config.horizon is None:
            raise ModelingError("a time-to-event outcome (--time) needs --horizon")
        label, censored = label_at_horizon(raw_label, data[config.time], float(config.horizon))
        counts["n_excluded_censored"] = censored
        counts["horizon"] = float(config.horizon)
    else:
        label = raw_label.astype(float)
    counts["n_excluded_missing_label"] = int(label.isna().sum()) - counts.get("n_excluded_censored", 0)
    data["_label"] = label
    no_group = data[config.group].isna()
    counts["n_excluded_missing_group"] = int((no_group & label.notna()).sum())
    data = data[label.notna() & ~no_group].reset_index(drop=True)
    if config.batch is not None:
        data[config.batch] = data[config.batch].astype(str).where(data[config.batch].notna(), "unknown")
    reserved = [
        c for c in [config.label, config.group, config.time, config.batch, config.id_col] if c is not None
    ]
    reserved += [*config.clinical, *config.exclude, "case_id", "_row_index", "_label"]
    features, n_ignored = select_feature_columns(data, reserved)
    counts["n_columns_ignored"] = n_ignored
    if not features:
        raise ModelingError("no numeric feature columns left after excluding label, group and metadata")
    y = data["_label"].to_numpy()
    n_pos = int(y.sum())
    n_groups = int(data[config.group].nunique())
    if min(n_pos, len(y) - n_pos) < config.outer_folds:
        raise ModelingError(
            f"{n_pos} events and {len(y) - n_pos} non-events: each outcome needs at least "
            f"{config.outer_folds} cases for {config.outer_folds} outer folds"
        )
    if n_groups < config.outer_folds * config.inner_folds:
        raise ModelingError(
            f"{n_groups} patients: nested CV with {config.outer_folds} x {config.inner_folds} folds needs "
            f"at least {config.outer_folds * config.inner_folds}"
        )
    counts.update({"n": len(y), "n_events": n_pos, "n_groups": n_groups})
    return data, counts, features, list(config.clinical)


def events_per_variable(n_events: int, n_nonevents: int, n_variables: int) -> float:
    """Events per candidate variable (the smaller outcome class counts as the events)."""
    return min(n_events, n_nonevents) / max(n_variables, 1)


def run_modeling(
    table: str | os.PathLike[str] | pd.DataFrame,
    out_dir: str | os.PathLike[str],
    config: ModelingConfig,
    *,
    workers: int | None = 1,
    scheduler: str | None = None,
    progress: bool = True,
    save_models: bool = True,
) -> dict[str, Any]:
    """Fit, validate and document the models; write metrics, predictions, model card and folds.

    Parameters
    ----------
    table
        Path to the case table (Parquet or CSV, gzip allowed) or a DataFrame.
    out_dir
        Output folder (created).
    config
        What to model and how (:class:`ModelingConfig`).
    workers, scheduler
        Parallelism over (repeat, outer fold) via :func:`pacs_workbench.core.executor.map_items`.
    save_models
        Write ``models/`` (boosters, fitted pipelines, test matrices) for the explain stage.

    Returns
    -------
    dict
        The summary: ``auc``, ``auc_ci``, ``n``, ``n_events``, per-model AUCs, warnings, paths.
    """
    from pacs_workbench.core.executor import map_items

    frame = table if isinstance(table, pd.DataFrame) else read_table(table)
    data, counts, features, clinical = _prepare(frame, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    n_vars = len(features) + len(clinical)
    epv = events_per_variable(counts["n_events"], counts["n"] - counts["n_events"], n_vars)
    counts["events_per_variable"] = epv
    if epv < EPV_MINIMUM:
        message = (
            f"events per variable is {epv:.2f} ({min(counts['n_events'], counts['n'] - counts['n_events'])} "
            f"cases in the smaller outcome class for {n_vars} candidate variables; at least "
            f"{EPV_MINIMUM:.0f} is advised): the models may overfit and the estimate is uncertain; "
            "read the confidence interval and prefer fewer, pre-specified features"
        )
        warnings.warn(message, EventsPerVariableWarning, stacklevel=2)
        notes.append(message)

    id_col = config.id_col or ("case_id" if "case_id" in data.columns else None)
    case_ids = data[id_col].astype(str).to_numpy() if id_col else data["_row_index"].astype(str).to_numpy()
    input_cols = list(dict.fromkeys([*features, *([config.batch] if config.batch else []), *clinical]))
    X = data[input_cols]
    y = data["_label"].to_numpy().astype(np.int64)
    groups = data[config.group].astype(str).to_numpy()
    splits = outer_splits(y, groups, config.outer_folds, config.repeats, config.random_state)
    fold_seeds = np.random.SeedSequence([config.random_state, 1]).generate_state(len(splits))
    tasks = (
        FoldTask(r, f, X, y, groups, tr, te, config, features, clinical, int(seed))
        for (r, f, tr, te), seed in zip(splits, fold_seeds, strict=True)
    )
    results = list(
        map_items(
            fit_fold, tasks, workers=workers, scheduler=scheduler, desc="model folds",
            total=len(splits), progress=progress,
        )
    )
    failed = [r for r in results if "error" in r]
    if failed:
        detail = "; ".join(f"repeat {r['repeat']} fold {r['fold']}: {r['error']}" for r in failed[:3])
        raise ModelingError(f"{len(failed)} of {len(results)} folds failed ({detail})")
    results.sort(key=lambda r: (r["repeat"], r["fold"]))

    row_index = data["_row_index"].to_numpy()
    names = [m for m in MODEL_NAMES if m in results[0]["probs"]]
    pred_parts = []
    for res in results:
        te = res["test"]
        part = pd.DataFrame(
            {
                "row_index": row_index[te],
                "case_id": case_ids[te],
                "group": groups[te],
                "label": y[te],
                "repeat": res["repeat"],
                "outer_fold": res["fold"],
            }
        )
        for name in names:
            part[f"prob_{name}"] = res["probs"][name]
        pred_parts.append(part)
    predictions = pd.concat(pred_parts, ignore_index=True)

    metrics = summarize(predictions, names, config, counts, notes, results)
    fold_rows = _fold_records(results, row_index)
    metrics["folds"] = fold_rows

    if save_models:
        _save_models(out / "models", results, row_index, case_ids, input_cols)
    _write_parquet(out / "predictions.parquet", predictions)
    _write_text(out / "metrics.json", json.dumps(_clean_json(metrics), indent=2, default=_json_default))
    _write_text(out / "model_card.md", render_model_card(metrics))
    return {
        "auc": metrics["auc"],
        "auc_ci": metrics["auc_ci"],
        "n": metrics["n"],
        "n_events": metrics["n_events"],
        "models": {name: metrics["models"][name]["auc"] for name in names},
        "warnings": notes,
        "out": str(out),
    }


def summarize(
    predictions: pd.DataFrame,
    names: Sequence[str],
    config: ModelingConfig,
    counts: dict[str, Any],
    notes: list[str],
    results: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """metrics.json content from the out-of-fold predictions."""
    wide = predictions.sort_values(["repeat", "row_index"])
    repeats = sorted(wide["repeat"].unique())
    first = wide[wide["repeat"] == repeats[0]]
    y = first["label"].to_numpy()
    boot_w = perf.group_bootstrap_weights(first["group"].to_numpy(), config.n_boot, config.random_state)
    folds = np.vstack([wide.loc[wide["repeat"] == r, "outer_fold"].to_numpy() for r in repeats])
    models: dict[str, Any] = {}
    boots: dict[str, FloatArray] = {}
    for name in names:
        probs = np.vstack([wide.loc[wide["repeat"] == r, f"prob_{name}"].to_numpy() for r in repeats])
        models[name], boots[name] = perf.summarize_model(
            y, probs, folds, boot_w, risk_cutoffs=config.risk_cutoffs
        )
    comparisons: dict[str, Any] = {}
    for a, b in [("lightgbm", "clinical_lr"), ("lightgbm", "radiomics_lr"), ("radiomics_lr", "clinical_lr")]:
        if a in models and b in models:
            comparisons[f"{a}_vs_{b}"] = perf.compare_auc(boots[a], boots[b], models[a]["auc"], models[b]["auc"])
    main = models["lightgbm"]
    n_features = [r["n_features_after_filter"] for r in results]
    settings = {
        k: v for k, v in asdict(config).items() if k not in {"lightgbm_params"}
    } | {"lightgbm_params": {k: v for k, v in config.lightgbm_params.items()}}
    return {
        "auc": main["auc"],
        "auc_ci": main["auc_ci"],
        "pr_auc": main["pr_auc"],
        "brier": main["brier"],
        "calibration_slope": main["calibration_slope"],
        "calibration_intercept": main["calibration_intercept"],
        **counts,
        "n_features_candidate": int(sum(1 for _ in results[0]["pipeline"].named_steps["prep"].features_)),
        "n_features_after_filter_median": float(np.median(n_features)),
        "primary_model": "lightgbm",
        "models": models,
        "comparisons": comparisons,
        "added_value": added_value_statement(models, comparisons),
        "warnings": notes,
        "settings": settings,
    }


def added_value_statement(models: dict[str, Any], comparisons: dict[str, Any]) -> str:
    """One sentence: does the radiomics model add discrimination to the baselines?"""
    main = models["lightgbm"]
    parts = []
    if "lightgbm_vs_clinical_lr" in comparisons:
        c = comparisons["lightgbm_vs_clinical_lr"]
        lo, hi = c["delta_auc_ci"]
        verdict = (
            "adds discrimination beyond"
            if lo > 0
            else ("is worse than" if hi < 0 else "shows no clear gain over")
        )
        parts.append(
            f"The LightGBM radiomics model {verdict} the clinical-only model "
            f"(AUC difference {c['delta_auc']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})."
        )
    else:
        lo = main["auc_ci"][0]
        verdict = "discriminates better than chance" if lo > 0.5 else "is not clearly better than chance"
        parts.append(f"No clinical baseline was given; the LightGBM model {verdict} (AUC CI lower bound {lo:.3f}).")
    if "lightgbm_vs_radiomics_lr" in comparisons:
        c = comparisons["lightgbm_vs_radiomics_lr"]
        lo, hi = c["delta_auc_ci"]
        parts.append(
            f"Against the L1 logistic regression on the same features: AUC difference {c['delta_auc']:+.3f} "
            f"(95% CI {lo:+.3f} to {hi:+.3f})."
        )
    return " ".join(parts)


def _fold_records(results: Sequence[dict[str, Any]], row_index: NDArray[Any]) -> list[dict[str, Any]]:
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


def _save_models(
    folder: Path,
    results: Sequence[dict[str, Any]],
    row_index: NDArray[Any],
    case_ids: NDArray[Any],
    input_cols: list[str],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for res in results:
        stem = f"r{res['repeat']}_f{res['fold']}"
        pipe: Pipeline = res["pipeline"]
        prep: RadiomicsPreprocessor = pipe.named_steps["prep"]
        booster = pipe.named_steps["clf"].booster_

        def save_booster(p: Path, b: Any = booster) -> None:
            b.save_model(str(p))

        _atomic_write(folder / f"{stem}.txt", save_booster)
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

        def dump(p: Path, obj: dict[str, Any] = bundle) -> None:
            buffer = io.BytesIO()
            joblib.dump(obj, buffer)
            p.write_bytes(buffer.getvalue())

        _atomic_write(folder / f"{stem}.joblib", dump)
        matrix = res["test_matrix"].reset_index(drop=True)
        matrix.insert(0, "case_id", case_ids[res["test"]])
        matrix.insert(0, "row_index", row_index[res["test"]])
        _write_parquet(folder / f"{stem}_test.parquet", matrix)
    index = pd.DataFrame(_fold_records(results, row_index)).drop(columns=["best_params"])
    _write_parquet(folder / "folds.parquet", index)


# --- model card ----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def render_model_card(metrics: dict[str, Any]) -> str:
    """The model card (Markdown): intended use, data, validation, performance, limits."""
    s = metrics["settings"]
    outcome = (
        f"event within {s['horizon']:g} time units (time-to-event column `{s['time']}`, event column "
        f"`{s['label']}`)"
        if s.get("time")
        else f"binary outcome `{s['label']}`"
    )
    lines = [
        "# Model card: radiomics risk model",
        "",
        "## Intended use",
        "",
        f"Research estimate of the risk of the {outcome} from radiomic features"
        + (" and clinical covariates" if s["clinical"] and s["clinical_in_model"] else "")
        + ". For hypothesis generation and for planning an external validation; not for clinical "
        "decisions about individual patients. The reported performance is internal (cross-validated) "
        "and applies to cases like those in the training data (same population, scanners and protocols).",
        "",
        "## Data",
        "",
        f"- Cases: {metrics['n']} ({metrics['n_events']} events, {metrics['n'] - metrics['n_events']} "
        f"non-events) from {metrics['n_groups']} patients; {metrics['n_rows']} rows in the table.",
        f"- Excluded: {metrics.get('n_excluded_missing_label', 0)} without label, "
        f"{metrics.get('n_excluded_missing_group', 0)} without patient group"
        + (
            f", {metrics['n_excluded_censored']} censored before the horizon without event"
            if "n_excluded_censored" in metrics
            else ""
        )
        + ".",
        f"- Candidate radiomic features: {metrics['n_features_candidate']}; after in-fold filtering "
        f"(median over folds): {metrics['n_features_after_filter_median']:g}.",
        f"- Clinical covariates: {', '.join(f'`{c}`' for c in s['clinical']) or 'none'}.",
        "- Harmonization: "
        + (f"ComBat by `{s['batch']}` (fitted on training folds only)." if s["batch"] else "none."),
        f"- Events per candidate variable: {metrics['events_per_variable']:.2f}.",
        "",
        "## Validation",
        "",
        f"Nested cross-validation grouped by patient: {s['repeats']} repeat(s) of {s['outer_folds']} outer "
        f"folds (StratifiedGroupKFold) for the estimate and {s['inner_folds']} inner folds for tuning "
        "(grid search on ROC AUC). Imputation, near-constant and correlation filters (|r| > "
        f"{s['corr_threshold']})"
        + (f", selection of the {s['select_k']} best features" if s["select_k"] else "")
        + (", ComBat harmonization" if s["batch"] else "")
        + ", scaling"
        + (" and recalibration" if s["recalibrate"] else "")
        + " are learned inside each training fold. Tuning grids: LightGBM "
        + ", ".join(f"{k.split('__', 1)[-1]} {v}" for k, v in s["lightgbm_grid"].items())
        + "; L1 logistic regression "
        + ", ".join(f"{k.split('__', 1)[-1]} {v}" for k, v in s["lasso_grid"].items())
        + ". No patient is in both the training and the test part "
        "of any split (checked in code). The AUC CI is a patient-level bootstrap "
        f"({s['n_boot']} resamples) of the out-of-fold predictions.",
        "",
        "## Performance (out-of-fold)",
        "",
        "| model | ROC AUC (95% CI) | PR AUC | Brier | calibration slope | calibration intercept |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "lightgbm": "LightGBM (radiomics" + (" + clinical)" if s["clinical"] and s["clinical_in_model"] else ")"),
        "lightgbm_recalibrated": "LightGBM, recalibrated in-fold",
        "radiomics_lr": "L1 logistic regression (radiomics)",
        "clinical_lr": "logistic regression (clinical only)",
    }
    for name, m in metrics["models"].items():
        lo, hi = m["auc_ci"]
        lines.append(
            f"| {labels.get(name, name)} | {_fmt(m['auc'])} ({_fmt(lo)}-{_fmt(hi)}) | {_fmt(m['pr_auc'])} | "
            f"{_fmt(m['brier'])} | {_fmt(m['calibration_slope'], 2)} | {_fmt(m['calibration_intercept'], 2)} |"
        )
    prevalence = metrics["n_events"] / metrics["n"]
    main = metrics["models"]["lightgbm"]
    lines += [
        "",
        f"Event rate {prevalence:.3f}; a Brier score of {prevalence * (1 - prevalence):.3f} is what always "
        "predicting the event rate gives.",
        "",
        metrics["added_value"],
        "",
        "Risk strata of the LightGBM model (cutoffs "
        + ("given" if s["risk_cutoffs"] else "at the tertiles of the out-of-fold predictions")
        + f": {main['risk_cutoffs'][0]:.3f}, {main['risk_cutoffs'][1]:.3f}; all repeats pooled):",
        "",
        "| stratum | predicted risk | cases | events | observed event rate |",
        "|---|---|---|---|---|",
    ]
    for row in main["risk_strata"]:
        lines.append(
            f"| {row['stratum']} | {row['lower']:.3f}-{row['upper']:.3f} | {row['n']} | {row['n_events']} | "
            f"{_fmt(row['event_rate'])} |"
        )
    useful = [d for d in main["decision_curve"] if d["model"] > max(d["treat_all"], 0.0) + 1e-9]
    lines += [
        "",
        "Decision curve: the model has higher net benefit than treating all or none at thresholds "
        + (
            f"{min(d['threshold'] for d in useful):.2f}-{max(d['threshold'] for d in useful):.2f}"
            if useful
            else "none of those examined"
        )
        + " (full curve and calibration curve in metrics.json).",
        "",
        "## Limits",
        "",
        "- Internal validation only: performance on other hospitals, scanners or protocols is unknown "
        "and usually lower; validate externally before any use.",
        "- Cross-validated estimates vary with the split; the CI covers case sampling, not every "
        "source of variation.",
        "- Retrospective data: selection and labelling biases of the source cohort carry over.",
    ]
    if s["batch"] is None:
        lines.append("- No harmonization: scanner or vendor differences may be learned as signal.")
    for note in metrics["warnings"]:
        lines.append(f"- Warning: {note}")
    lines.append("")
    return "\n".join(lines)


# --- from features and cohort to a model table, and reading the results back (04_radiomics_model) ---

#: Patient-level columns taken from the cohort's baseline study.
CLINICAL_COLUMNS = ("age_years", "pack_years")
GROWTH_COLUMN = "delta_shape_VolumeGrowthRatio"


def build_model_table(
    features: pd.DataFrame,
    cohort: pd.DataFrame,
    *,
    size_feature: str = "original_shape_VoxelVolume",
    label: str = "outcome",
) -> pd.DataFrame:
    """One row per patient: the index lesion, its growth, and the patient's clinical factors.

    The index lesion is the largest lesion (by ``size_feature``) on the patient's latest study;
    ``delta_shape_VolumeGrowthRatio`` is its size over the largest lesion's size on the earliest
    study (1 with a single study), so growth enters the model as an imaging feature. Clinical
    columns and the outcome come from the cohort's baseline row of the same pseudonymous patient.

    Parameters
    ----------
    features
        Output of :func:`pacs_workbench.radiomics.features.extract_features` with ``pseudo_patient_id`` and
        ``StudyDate`` (de-identified, shifted dates: only their order and intervals are used).
    cohort
        ``cohort.parquet`` of the cohort stage (``pseudo_patient_id``, ``study_index``, the label
        and clinical columns).
    size_feature
        Feature that ranks lesions by size.
    label
        Outcome column of the cohort.

    Returns
    -------
    pandas.DataFrame
        Feature columns, ``GROWTH_COLUMN``, ``case_id``, ``pseudo_patient_id``, ``Manufacturer``,
        the clinical columns and ``label``; only patients in the cohort with a known outcome.
    """
    usable = features
    if "error" in usable.columns:
        usable = usable[usable["error"].isna() | (usable["error"] == "")]
    if size_feature not in usable.columns:
        raise ModelingError(f"feature table has no {size_feature!r} column to pick index lesions by")
    usable = usable.dropna(subset=[size_feature, "pseudo_patient_id"])
    by_size = usable.sort_values(["pseudo_patient_id", "StudyDate", size_feature], ascending=[True, True, False])
    largest_per_study = by_size.drop_duplicates(["pseudo_patient_id", "StudyDate"], keep="first")
    first = largest_per_study.drop_duplicates("pseudo_patient_id", keep="first").set_index("pseudo_patient_id")
    latest = largest_per_study.drop_duplicates("pseudo_patient_id", keep="last").set_index("pseudo_patient_id")
    latest[GROWTH_COLUMN] = latest[size_feature] / first[size_feature].replace(0, np.nan)

    baseline = cohort.sort_values(["pseudo_patient_id", "study_index"]).drop_duplicates("pseudo_patient_id")
    wanted = [c for c in (label, *CLINICAL_COLUMNS) if c in baseline.columns]
    if label not in wanted:
        raise ModelingError(f"cohort has no {label!r} column; link the EHR in 01_cohort")
    patients = baseline.set_index("pseudo_patient_id")[wanted]
    table = latest.join(patients, how="inner", lsuffix="_case")
    table = table[table[label].notna()].reset_index()
    table[label] = table[label].astype(int)
    return table


def metrics_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """The headline metrics of every model in ``metrics.json``, one row per model."""
    rows = []
    for name, record in metrics["models"].items():
        low, high = record["auc_ci"]
        rows.append(
            {
                "model": name,
                "AUC": round(record["auc"], 3),
                "AUC 95% CI": f"{low:.3f}-{high:.3f}",
                "PR AUC": round(record["pr_auc"], 3),
                "Brier": round(record["brier"], 3),
                "calibration slope": round(record["calibration_slope"], 2),
                "calibration intercept": round(record["calibration_intercept"], 2),
            }
        )
    return pd.DataFrame(rows).set_index("model")


def read_results(model_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """``metrics.json`` and ``predictions.parquet`` of a modeling run."""
    folder = Path(model_dir)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    return metrics, pd.read_parquet(folder / "predictions.parquet")


def compare_with_truth(
    predictions: pd.DataFrame, truth_patients: pd.DataFrame, key: bytes, model: str = "lightgbm"
) -> dict[str, float]:
    """Score out-of-fold risk against the synthetic ground truth (``truth/patients.csv``).

    The truth is keyed by the source (0010,0020) Patient ID, so it is pseudonymized with the
    project key before joining; no identifier leaves this function. Returns the AUC of the
    model, the AUC the true outcome probability reaches on the same patients (the best any
    model could expect), and the rank correlation of predicted risk with the true linear
    predictor.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from pacs_workbench.core.pseudonym import pseudonymize

    truth = truth_patients.assign(
        group=[pseudonymize(key, str(v), "patient") for v in truth_patients["PatientID"]]
    )[["group", "probability", "linear_predictor"]]
    risk = predictions.groupby("group", as_index=False).agg(label=("label", "first"), risk=(f"prob_{model}", "mean"))
    joined = risk.merge(truth, on="group", how="inner")
    rho = spearmanr(joined["risk"], joined["linear_predictor"]).statistic
    return {
        "patients": len(joined),
        "auc_model": float(roc_auc_score(joined["label"], joined["risk"])),
        "auc_true_probability": float(roc_auc_score(joined["label"], joined["probability"])),
        "spearman_risk_vs_true_predictor": float(rho),
    }


def harmonization_preview(
    table: pd.DataFrame, features: Sequence[str], batch: str = "Manufacturer"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features before and after ComBat fitted on the whole table, for display only.

    The models never use this: inside the cross-validation ComBat is fitted on each training
    fold alone. This shows a reader how much the vendors differ and what harmonization changes.
    """
    columns = [c for c in features if c in table.columns]
    before = table[[batch, *columns]].dropna()
    harmonized = ComBat(batch_col=batch, feature_cols=columns).fit_transform(before)
    after = before.copy()
    after[columns] = np.asarray(harmonized[columns] if isinstance(harmonized, pd.DataFrame) else harmonized)
    return before, after

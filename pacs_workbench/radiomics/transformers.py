"""The in-fold steps of the modeling pipelines, as scikit-learn estimators.

:class:`RadiomicsPreprocessor` holds every data-dependent feature step (imputation, filters,
ComBat, selection, clinical encoding), :class:`ClinicalEncoder` encodes clinical covariates for
the clinical-only baseline, and :class:`LogitRecalibrator` recalibrates predicted probabilities.
Each follows scikit-learn's conventions: ``fit`` learns on the training fold and returns the
estimator, learned state ends in ``_``, ``transform``/``predict`` refuse to run unfitted
(:class:`sklearn.exceptions.NotFittedError`) and the transformers name their output columns
(``get_feature_names_out``). No step is random, so none takes a ``random_state``. They are
pickled into the fold bundles the explain stage reads.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import f_classif
from sklearn.utils.validation import check_is_fitted

from pacs_workbench.radiomics import metrics as perf
from pacs_workbench.radiomics.combat import ComBat

FloatArray = NDArray[np.float64]

# Characters LightGBM cannot keep in a feature name (it stores names in JSON-like text).
_UNSAFE_NAME = re.compile(r'[",:\[\]{}\s]')


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
        check_is_fitted(self)
        parts: dict[str, Any] = {}
        for col in self.columns:
            if col in self.medians_:
                parts[col] = pd.to_numeric(X[col], errors="coerce").fillna(self.medians_[col]).to_numpy(float)
            else:
                text = X[col].astype(str).where(X[col].notna(), None)
                for cat in self.categories_[col]:
                    parts[f"{col}={cat}"] = (text == cat).to_numpy(dtype=float)
        return pd.DataFrame(parts, index=X.index, columns=self.feature_names_out_)


    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        """Output column names (``col`` for numbers, ``col=value`` per category)."""
        check_is_fitted(self)
        return np.asarray(self.feature_names_out_, dtype=object)

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


def _top_f_scores(values: FloatArray, y: Any, k: int) -> NDArray[np.bool_]:
    """The ``k`` columns with the largest ANOVA F against ``y`` (ties: the earlier column)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant-in-fold features give NaN F
        f_stat, _ = f_classif(values, np.asarray(y))
    f_stat = np.nan_to_num(f_stat, nan=-1.0)
    top = np.argsort(-f_stat, kind="stable")[:k]
    chosen = np.zeros(values.shape[1], dtype=bool)
    chosen[top] = True
    return chosen


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

    def _with_batch(self, values: FloatArray, columns: Sequence[str], X: pd.DataFrame) -> pd.DataFrame:
        """The feature values beside ``X``'s batch column: ComBat's input."""
        frame = pd.DataFrame(values, columns=list(columns), index=X.index)
        frame[self.batch_col] = X[self.batch_col].to_numpy()
        return frame

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
            frame = self._with_batch(values, kept, X)
            combat = ComBat(batch_col=self.batch_col, feature_cols=kept).fit(frame)
            values = combat.transform(frame).to_numpy(dtype=float)
        keep = (
            _correlation_filter(values, self.corr_threshold)
            if self.corr_threshold < 1.0
            else np.ones(values.shape[1], dtype=bool)
        )
        if self.select_k is not None and y is not None and keep.sum() > self.select_k:
            keep[np.flatnonzero(keep)] = _top_f_scores(values[:, keep], y, self.select_k)
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
        check_is_fitted(self)
        raw = X[self.features_].to_numpy(dtype=float)
        filled = np.where(np.isnan(raw), self.medians_, raw)
        values = filled[:, ~self.constant_mask_]
        if self.combat_ is not None:
            frame = self._with_batch(values, self.kept_after_constant_, X)
            values = self.combat_.transform(frame).to_numpy(dtype=float)
        parts = [values[:, self.selected_mask_]]
        if self.clinical_ is not None:
            parts.append(self.clinical_.transform(X).to_numpy(dtype=float))
        return pd.DataFrame(np.hstack(parts), index=X.index, columns=self.feature_names_out_)

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        """Output column names (LightGBM-safe), radiomic then clinical."""
        check_is_fitted(self)
        return np.asarray(self.feature_names_out_, dtype=object)


class LogitRecalibrator(BaseEstimator):  # type: ignore[misc]
    """Logistic recalibration ``P = sigmoid(a + b logit(p))`` of predicted probabilities.

    Takes a 1-d array of probabilities (not a feature matrix) and has no parameters.

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
        check_is_fitted(self)
        z = self.intercept_ + self.slope_ * perf.logit(p)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=float)

"""ComBat harmonization of radiomic features across scanners or vendors.

Radiomic features shift and stretch with the scanner that made the image (vendor,
reconstruction kernel, protocol). ComBat (Johnson, Li and Rabinovic, *Biostatistics* 8 (2007)
118-127; Fortin et al., *NeuroImage* 167 (2018) 104-120 for imaging) models each feature as

    Y_ijg = alpha_g + X_ij beta_g + gamma_ig + delta_ig * eps_ijg

for batch ``i`` (the scanner or vendor, e.g. `(0008,0070) Manufacturer`), case ``j`` and feature
``g``, and removes the additive (``gamma``) and multiplicative (``delta``) batch effects:

1. Standardize. Least squares on the design ``[batch indicators, covariates]`` gives
   ``alpha_g`` (the batch-size-weighted mean of the batch coefficients), ``beta_g`` and the pooled
   variance ``sigma2_g = mean_j (Y - fitted)^2``; ``Z = (Y - alpha_g - X beta_g) / sigma_g``.
2. Empirical Bayes. Per batch, ``gamma_hat_ig = mean_j Z`` and ``delta2_hat_ig = var_j Z`` (ddof 1).
   Priors across features: ``gamma_ig ~ N(gamma_bar_i, tau2_i)`` with the sample mean and
   variance of ``gamma_hat_i.``; ``delta2_ig ~ InvGamma(lambda_i, theta_i)`` with method-of-moments
   ``lambda = (V^2 + 2 S2) / S2`` and ``theta = (V^3 + V S2) / S2`` (``V``, ``S2``: mean and
   variance of ``delta2_hat_i.``). The posteriors are iterated to a fixed point:
   ``gamma* = (n_i tau2 gamma_hat + delta2* gamma_bar) / (n_i tau2 + delta2*)`` and
   ``delta2* = (theta + 0.5 sum_j (Z - gamma*)^2) / (n_i / 2 + lambda - 1)``.
3. Adjust: ``Y* = sigma_g / delta*_ig (Z - gamma*_ig) + alpha_g + X beta_g``.

:class:`ComBat` is a scikit-learn transformer that learns these estimates on the rows given to
``fit`` (the training fold) and applies them unchanged in ``transform`` (the test fold), so the
test fold never shapes the harmonization. Rows of a batch unseen in ``fit`` keep their values
(with a warning): there is no estimate to remove.

The workbench keeps this small implementation rather than depending on neuroCombat or inmoose:
it is parametric only, holds its fitted state as plain arrays (picklable with joblib for the
explain stage) and is checked against a direct transcription of the equations in the tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

FloatArray = NDArray[np.float64]

# Guards against division by zero for features that are constant overall or within a batch.
_EPS = 1e-12


class ComBatWarning(UserWarning):
    """Harmonization could not be applied as asked (unseen or one-case batch)."""


def _design(batch_codes: NDArray[np.int64], n_batches: int, covariates: FloatArray | None) -> FloatArray:
    onehot = np.zeros((batch_codes.size, n_batches))
    onehot[np.arange(batch_codes.size), batch_codes] = 1.0
    if covariates is None or covariates.shape[1] == 0:
        return onehot
    return np.hstack([onehot, covariates])


def _inverse_gamma_priors(delta_hat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Method-of-moments ``lambda`` and ``theta`` per batch from ``delta2_hat`` (batches x features)."""
    mean = delta_hat.mean(axis=1)
    var = np.maximum(delta_hat.var(axis=1, ddof=1), _EPS)
    lam = (mean**2 + 2.0 * var) / var
    theta = (mean**3 + mean * var) / var
    return lam, theta


def _posterior(
    z: FloatArray,
    gamma_hat: FloatArray,
    delta_hat: FloatArray,
    gamma_bar: float,
    tau2: float,
    lam: float,
    theta: float,
    *,
    tol: float,
    max_iter: int,
    mean_only: bool,
) -> tuple[FloatArray, FloatArray, int]:
    """Fixed-point iteration of the parametric EB posteriors for one batch (rows of ``z``)."""
    n = z.shape[0]
    g_old, d_old = gamma_hat.copy(), delta_hat.copy()
    for iteration in range(1, max_iter + 1):
        g_new = (n * tau2 * gamma_hat + d_old * gamma_bar) / (n * tau2 + d_old)
        if mean_only:
            d_new = np.ones_like(d_old)
        else:
            ssq = ((z - g_new) ** 2).sum(axis=0)
            d_new = (theta + 0.5 * ssq) / (n / 2.0 + lam - 1.0)
        change = max(
            float(np.max(np.abs(g_new - g_old) / np.maximum(np.abs(g_old), _EPS))),
            float(np.max(np.abs(d_new - d_old) / np.maximum(np.abs(d_old), _EPS))),
        )
        g_old, d_old = g_new, d_new
        if change < tol:
            return g_new, d_new, iteration
    return g_old, d_old, max_iter


class ComBat(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Parametric empirical-Bayes ComBat as a scikit-learn transformer on a DataFrame.

    Parameters
    ----------
    batch_col
        Column holding the batch (scanner, vendor, e.g. `(0008,0070) Manufacturer`).
    feature_cols
        Columns to harmonize; ``None``: every numeric column except ``batch_col`` and
        ``covariate_cols``.
    covariate_cols
        Numeric columns whose effect is preserved (modelled as ``X beta``), e.g. age. Never the
        outcome: it is not known for the cases to be harmonized at prediction time.
    empirical_bayes
        Shrink the batch estimates with the empirical-Bayes priors (ComBat); ``False`` uses the
        per-batch location/scale estimates as they are.
    mean_only
        Adjust location only (``delta* = 1``).
    tol, max_iter
        Convergence of the posterior fixed point (relative change).

    Attributes
    ----------
    batches_ : ndarray
        Batch labels seen in ``fit`` (sorted).
    batch_counts_ : ndarray
        Training cases per batch.
    feature_names_in_ : ndarray
        Harmonized feature columns.
    grand_mean_ : ndarray
        ``alpha_g`` per feature.
    beta_ : ndarray
        Covariate coefficients (covariates x features).
    var_pooled_ : ndarray
        ``sigma2_g`` per feature.
    gamma_hat_, delta_hat_ : ndarray
        Per-batch location and scale estimates (batches x features).
    gamma_star_, delta_star_ : ndarray
        Posterior estimates used for the adjustment (batches x features).
    gamma_bar_, tau2_, lambda_, theta_ : ndarray
        Prior hyperparameters per batch.
    n_samples_fit_ : int
        Rows seen in ``fit``.
    """

    def __init__(
        self,
        batch_col: str = "batch",
        feature_cols: Sequence[str] | None = None,
        covariate_cols: Sequence[str] = (),
        empirical_bayes: bool = True,
        mean_only: bool = False,
        tol: float = 1e-4,
        max_iter: int = 1000,
    ) -> None:
        self.batch_col = batch_col
        self.feature_cols = feature_cols
        self.covariate_cols = covariate_cols
        self.empirical_bayes = empirical_bayes
        self.mean_only = mean_only
        self.tol = tol
        self.max_iter = max_iter

    def _features(self, X: pd.DataFrame) -> list[str]:
        if self.feature_cols is not None:
            return list(self.feature_cols)
        skip = {self.batch_col, *self.covariate_cols}
        return [c for c in X.columns if c not in skip and pd.api.types.is_numeric_dtype(X[c])]

    def _covariates(self, X: pd.DataFrame) -> FloatArray | None:
        if not self.covariate_cols:
            return None
        return X[list(self.covariate_cols)].to_numpy(dtype=float)

    @staticmethod
    def _stand_mean(
        grand_mean: FloatArray, beta: FloatArray, covariates: FloatArray | None, shape: tuple[int, ...]
    ) -> FloatArray:
        mean = np.broadcast_to(grand_mean, shape).astype(float)
        return mean + covariates @ beta if covariates is not None else mean

    def fit(self, X: pd.DataFrame, y: Any = None) -> ComBat:
        """Estimate the batch effects on the rows of ``X`` (the training fold)."""
        features = self._features(X)
        values = X[features].to_numpy(dtype=float)
        if np.isnan(values).any():
            raise ValueError("ComBat needs complete features: impute before harmonizing")
        batch = X[self.batch_col].astype(str).to_numpy()
        batches, codes, counts = np.unique(batch, return_inverse=True, return_counts=True)
        covariates = self._covariates(X)
        design = _design(codes, batches.size, covariates)
        coef, *_ = np.linalg.lstsq(design, values, rcond=None)
        k = batches.size
        grand_mean = (counts / counts.sum()) @ coef[:k]
        beta = coef[k:]
        var_pooled = ((values - design @ coef) ** 2).mean(axis=0)
        scale = np.sqrt(np.maximum(var_pooled, _EPS))
        stand_mean = self._stand_mean(grand_mean, beta, covariates, values.shape)
        z = (values - stand_mean) / scale

        p = len(features)
        gamma_hat = np.zeros((k, p))
        delta_hat = np.ones((k, p))
        for i in range(k):
            rows = z[codes == i]
            gamma_hat[i] = rows.mean(axis=0)
            if rows.shape[0] > 1:
                delta_hat[i] = np.maximum(rows.var(axis=0, ddof=1), _EPS)
        small = batches[counts < 2]
        if small.size:
            warnings.warn(
                f"{small.size} batch(es) with a single training case: their scale is not estimated",
                ComBatWarning,
                stacklevel=2,
            )

        gamma_bar = gamma_hat.mean(axis=1)
        tau2 = gamma_hat.var(axis=1, ddof=1) if p > 1 else np.ones(k)
        lam, theta = _inverse_gamma_priors(delta_hat) if p > 1 else (np.ones(k), np.ones(k))
        gamma_star, delta_star = gamma_hat.copy(), delta_hat.copy()
        if self.mean_only:
            delta_star[:] = 1.0
        if self.empirical_bayes and p > 1:
            for i in range(k):
                gamma_star[i], delta_star[i], _ = _posterior(
                    z[codes == i],
                    gamma_hat[i],
                    delta_hat[i],
                    float(gamma_bar[i]),
                    float(tau2[i]),
                    float(lam[i]),
                    float(theta[i]),
                    tol=self.tol,
                    max_iter=self.max_iter,
                    mean_only=self.mean_only,
                )

        self.batches_ = batches
        self.batch_counts_ = counts
        self.feature_names_in_ = np.asarray(features, dtype=object)
        self.n_features_in_ = p
        self.grand_mean_ = grand_mean
        self.beta_ = beta
        self.var_pooled_ = var_pooled
        self.gamma_hat_, self.delta_hat_ = gamma_hat, delta_hat
        self.gamma_bar_, self.tau2_, self.lambda_, self.theta_ = gamma_bar, tau2, lam, theta
        self.gamma_star_, self.delta_star_ = gamma_star, delta_star
        self.n_samples_fit_ = int(values.shape[0])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Harmonize the rows of ``X`` with the estimates learned in ``fit``.

        Returns
        -------
        DataFrame
            The feature columns (``feature_names_in_``), harmonized, with the index of ``X``.
        """
        check_is_fitted(self)
        features = list(self.feature_names_in_)
        values = X[features].to_numpy(dtype=float)
        covariates = self._covariates(X)
        stand_mean = self._stand_mean(self.grand_mean_, self.beta_, covariates, values.shape)
        scale = np.sqrt(np.maximum(self.var_pooled_, _EPS))
        z = (values - stand_mean) / scale
        batch = X[self.batch_col].astype(str).to_numpy()
        lookup = {b: i for i, b in enumerate(self.batches_)}
        codes = np.array([lookup.get(b, -1) for b in batch], dtype=np.int64)
        out = values.copy()
        known = codes >= 0
        if known.any():
            g = self.gamma_star_[codes[known]]
            d = np.sqrt(self.delta_star_[codes[known]])
            out[known] = (z[known] - g) / d * scale + stand_mean[known]
        if (~known).any():
            warnings.warn(
                f"{int((~known).sum())} row(s) from batch(es) not seen in fit left unharmonized",
                ComBatWarning,
                stacklevel=2,
            )
        return pd.DataFrame(out, index=X.index, columns=features)

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        """The harmonized columns, in order."""
        check_is_fitted(self)
        return np.asarray(self.feature_names_in_, dtype=object)

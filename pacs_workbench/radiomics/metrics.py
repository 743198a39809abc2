"""Performance of out-of-fold risk predictions: discrimination, calibration, clinical utility.

Everything here works on out-of-fold probabilities only (each case predicted by a model that
never saw its patient). With repeated cross-validation every case has one prediction per
repeat; statistics are computed per repeat and averaged, and their uncertainty comes from a
patient-level (cluster) bootstrap: whole patients are resampled, with the same resample applied
to every repeat and every model, so differences between models are paired.

- Discrimination: ROC AUC (with bootstrap 95 % CI and fold-level spread), PR AUC (average
  precision).
- Calibration: Brier score; calibration slope (logistic regression of the outcome on the logit
  of the prediction) and calibration-in-the-large (intercept with the logit as offset); a binned
  calibration curve.
- Paired comparisons: the AUC difference of two models with its patient-bootstrap CI (the same
  resamples for both), and DeLong's test (DeLong et al. 1988, fast form of Sun & Xu 2014) where cases
  are independent (one case per patient), per repeat.
- Clinical utility: decision curve (net benefit = TP/n - FP/n * t/(1-t) at threshold t, against
  treat-all and treat-none); risk strata (low / intermediate / high with observed event rates).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

FloatArray = NDArray[np.float64]

_CLIP = 1e-6
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))


def logit(p: ArrayLike) -> FloatArray:
    """``log(p / (1 - p))`` with ``p`` clipped away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=float), _CLIP, 1.0 - _CLIP)
    return np.asarray(np.log(q / (1.0 - q)), dtype=float)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=float)


def fit_logistic(
    x: ArrayLike, y: ArrayLike, *, offset: ArrayLike | None = None, max_iter: int = 100
) -> FloatArray:
    """Unpenalized logistic regression by Newton-Raphson.

    Parameters
    ----------
    x
        Design matrix without the intercept column (n x k; k may be 0).
    y
        Binary outcome.
    offset
        Fixed term added to the linear predictor (e.g. ``logit(p)`` for calibration-in-the-large).

    Returns
    -------
    ndarray
        ``[intercept, coef_1, ..., coef_k]``.
    """
    yy = np.asarray(y, dtype=float)
    xx = np.asarray(x, dtype=float).reshape(yy.size, -1)
    design = np.hstack([np.ones((yy.size, 1)), xx])
    off = np.zeros(yy.size) if offset is None else np.asarray(offset, dtype=float)
    beta = np.zeros(design.shape[1])
    for _ in range(max_iter):
        mu = _sigmoid(design @ beta + off)
        w = np.maximum(mu * (1.0 - mu), 1e-10)
        grad = design.T @ (yy - mu)
        hess = design.T @ (design * w[:, None])
        # A tiny ridge keeps separable data (perfect predictions) from blowing up.
        step = np.linalg.solve(hess + 1e-8 * np.eye(hess.shape[0]), grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta


def calibration_slope_intercept(y: ArrayLike, p: ArrayLike) -> tuple[float, float]:
    """Calibration slope and calibration-in-the-large.

    The slope is the coefficient of ``logit(p)`` in ``logit P(y) = a + b logit(p)`` (1 is ideal;
    below 1 means too extreme predictions, typical of overfitting); the intercept is ``a`` in
    ``logit P(y) = a + logit(p)`` (0 is ideal; positive means risks are underestimated).
    """
    lp = logit(p)
    slope = float(fit_logistic(lp, y)[1])
    intercept = float(fit_logistic(np.zeros((lp.size, 0)), y, offset=lp)[0])
    return slope, intercept


def calibration_curve(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> list[dict[str, float]]:
    """Observed event rate against mean prediction in quantile bins of the prediction."""
    yy, pp = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    order = np.argsort(pp, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(n_bins, max(1, pp.size))):
        if chunk.size == 0:
            continue
        rows.append(
            {
                "mean_predicted": float(pp[chunk].mean()),
                "observed_rate": float(yy[chunk].mean()),
                "n": int(chunk.size),
            }
        )
    return rows


def net_benefit(
    y: ArrayLike, p: ArrayLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> list[dict[str, float]]:
    """Decision curve: net benefit of the model, of treating all and of treating none.

    ``NB(t) = TP/n - FP/n * t / (1 - t)``: the benefit of acting on cases predicted at or above
    risk ``t``, with false positives weighed by the odds at which one is indifferent.
    """
    yy, pp = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    n = yy.size
    prevalence = yy.mean()
    rows = []
    for t in thresholds:
        act = pp >= t
        tp = float(np.sum(act & (yy == 1)))
        fp = float(np.sum(act & (yy == 0)))
        odds = t / (1.0 - t)
        rows.append(
            {
                "threshold": float(t),
                "model": tp / n - fp / n * odds,
                "treat_all": float(prevalence - (1.0 - prevalence) * odds),
                "treat_none": 0.0,
            }
        )
    return rows


def risk_strata(
    y: ArrayLike, p: ArrayLike, cutoffs: tuple[float, float] | None = None
) -> tuple[tuple[float, float], list[dict[str, Any]]]:
    """Low / intermediate / high risk groups with their observed event rates.

    Parameters
    ----------
    cutoffs
        ``(low_upper, high_lower)`` probabilities; ``None`` uses the tertiles of ``p`` (a
        descriptive split, not a clinical rule).

    Returns
    -------
    tuple
        The cutoffs used and one record per stratum: ``stratum``, ``lower``, ``upper``, ``n``,
        ``n_events``, ``event_rate``, ``mean_predicted``.
    """
    yy, pp = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if cutoffs is None:
        lo, hi = (float(v) for v in np.quantile(pp, [1.0 / 3.0, 2.0 / 3.0]))
    else:
        lo, hi = float(cutoffs[0]), float(cutoffs[1])
    bounds = [
        ("low", 0.0, lo, pp < lo),
        ("intermediate", lo, hi, (pp >= lo) & (pp < hi)),
        ("high", hi, 1.0, pp >= hi),
    ]
    rows: list[dict[str, Any]] = []
    for name, a, b, mask in bounds:
        n = int(mask.sum())
        rows.append(
            {
                "stratum": name,
                "lower": a,
                "upper": b,
                "n": n,
                "n_events": int(yy[mask].sum()),
                "event_rate": float(yy[mask].mean()) if n else float("nan"),
                "mean_predicted": float(pp[mask].mean()) if n else float("nan"),
            }
        )
    return (lo, hi), rows


def weighted_auc(y: ArrayLike, score: ArrayLike, weights: ArrayLike) -> FloatArray:
    """ROC AUC (Mann-Whitney, ties count one half) under case weights, for many weight vectors.

    Parameters
    ----------
    y, score
        Outcome and score per case (length n).
    weights
        Case weights, shape (n,) or (B, n) (e.g. bootstrap multiplicities).

    Returns
    -------
    ndarray
        One AUC per weight vector (NaN where a class has zero weight).
    """
    yy = np.asarray(y, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    levels, inverse = np.unique(np.asarray(score, dtype=float), return_inverse=True)
    onehot = np.zeros((yy.size, levels.size))
    onehot[np.arange(yy.size), inverse] = 1.0
    pos = (w * yy) @ onehot
    neg = (w * (1.0 - yy)) @ onehot
    below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(den > 0, num / den, np.nan), dtype=float)


def group_bootstrap_weights(
    groups: ArrayLike, n_boot: int, random_state: int | None = 0
) -> NDArray[np.float64]:
    """Case multiplicities (n_boot x n) from resampling whole groups (patients) with replacement."""
    codes, _ = _codes(groups)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    rng = np.random.default_rng(random_state)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    per_group = np.zeros((n_boot, n_groups))
    np.add.at(per_group, (np.repeat(np.arange(n_boot), n_groups), draws.ravel()), 1.0)
    return np.asarray(per_group[:, codes], dtype=float)


def _codes(values: ArrayLike) -> tuple[NDArray[np.int64], NDArray[Any]]:
    uniques, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes.astype(np.int64), uniques


def summarize_model(
    y: ArrayLike,
    probs: ArrayLike,
    folds: ArrayLike,
    boot_weights: NDArray[np.float64],
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    risk_cutoffs: tuple[float, float] | None = None,
    level: float = 0.95,
) -> tuple[dict[str, Any], FloatArray]:
    """All metrics of one model from its out-of-fold predictions.

    Parameters
    ----------
    y
        Outcome per case (n).
    probs
        Out-of-fold probability per repeat and case (R x n).
    folds
        Outer fold per repeat and case (R x n), for the fold-level AUC spread.
    boot_weights
        Patient-bootstrap multiplicities (B x n), shared across models for paired comparisons.

    Returns
    -------
    tuple
        The metrics record and the bootstrap distribution of the repeat-averaged AUC (B,).
    """
    yy = np.asarray(y, dtype=float)
    pp = np.atleast_2d(np.asarray(probs, dtype=float))
    ff = np.atleast_2d(np.asarray(folds))
    aucs = np.array([roc_auc_score(yy, p) for p in pp])
    boot = np.mean([weighted_auc(yy, p, boot_weights) for p in pp], axis=0)
    alpha = (1.0 - level) / 2.0
    ci = [float(v) for v in np.nanquantile(boot, [alpha, 1.0 - alpha])]
    fold_aucs = []
    for p, f in zip(pp, ff, strict=True):
        for fold in np.unique(f):
            m = f == fold
            if 0 < yy[m].sum() < m.sum():
                fold_aucs.append(roc_auc_score(yy[m], p[m]))
    slopes, intercepts = zip(*(calibration_slope_intercept(yy, p) for p in pp), strict=True)
    stacked_y = np.tile(yy, pp.shape[0])
    stacked_p = pp.ravel()
    cutoffs, strata = risk_strata(stacked_y, stacked_p, risk_cutoffs)
    record: dict[str, Any] = {
        "auc": float(aucs.mean()),
        "auc_ci": ci,
        "auc_ci_method": f"patient-level bootstrap ({boot_weights.shape[0]} resamples), percentile",
        "auc_per_repeat": [float(a) for a in aucs],
        "auc_fold_mean": float(np.mean(fold_aucs)) if fold_aucs else float("nan"),
        "auc_fold_sd": float(np.std(fold_aucs, ddof=1)) if len(fold_aucs) > 1 else float("nan"),
        "pr_auc": float(np.mean([average_precision_score(yy, p) for p in pp])),
        "brier": float(np.mean([brier_score_loss(yy, p) for p in pp])),
        "brier_reference": float(yy.mean() * (1.0 - yy.mean())),
        "calibration_slope": float(np.mean(slopes)),
        "calibration_intercept": float(np.mean(intercepts)),
        "calibration_curve": calibration_curve(stacked_y, stacked_p),
        "decision_curve": net_benefit(stacked_y, stacked_p, thresholds),
        "risk_cutoffs": list(cutoffs),
        "risk_strata": strata,
    }
    return record, boot


def compare_auc(
    boot_a: FloatArray, boot_b: FloatArray, auc_a: float, auc_b: float, level: float = 0.95
) -> dict[str, Any]:
    """Paired AUC difference ``a - b`` with its bootstrap CI (same resamples for both)."""
    diff = boot_a - boot_b
    alpha = (1.0 - level) / 2.0
    lo, hi = (float(v) for v in np.nanquantile(diff, [alpha, 1.0 - alpha]))
    return {
        "delta_auc": float(auc_a - auc_b),
        "delta_auc_ci": [lo, hi],
        "p_delta_le_0": float(np.nanmean(diff <= 0)),
    }


def _midrank(x: FloatArray) -> FloatArray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(x, method="average"), dtype=float)


def delong_test(y: ArrayLike, score_a: ArrayLike, score_b: ArrayLike, level: float = 0.95) -> dict[str, Any]:
    """DeLong's test of two correlated ROC AUCs on the same cases (fast algorithm of Sun & Xu 2014).

    Returns
    -------
    dict
        ``auc_a``, ``auc_b``, ``delta_auc`` (a - b), ``se``, ``z``, ``p_value`` (two-sided) and the normal
        ``delta_auc_ci`` at ``level``. ``se`` 0 (identical scores) gives ``z`` 0 and ``p_value`` 1.
    """
    from scipy.stats import norm

    yy = np.asarray(y).astype(int)
    scores = np.vstack([np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)])
    pos, neg = scores[:, yy == 1], scores[:, yy == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong's test needs at least two cases of each outcome")
    aucs, v10, v01 = np.zeros(2), np.zeros((2, m)), np.zeros((2, n))
    for k in range(2):
        tx, ty = _midrank(pos[k]), _midrank(neg[k])
        tz = _midrank(np.concatenate([pos[k], neg[k]]))
        aucs[k] = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
        v10[k] = (tz[:m] - tx) / n
        v01[k] = 1.0 - (tz[m:] - ty) / m
    cov = np.cov(v10) / m + np.cov(v01) / n
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    delta = float(aucs[0] - aucs[1])
    z = delta / se if se > 0 else 0.0
    half = float(norm.ppf(0.5 + level / 2.0)) * se
    return {
        "auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "delta_auc": delta, "se": se, "z": float(z),
        "p_value": float(2.0 * norm.sf(abs(z))) if se > 0 else 1.0, "delta_auc_ci": [delta - half, delta + half],
    }  # fmt: skip


def delong_repeats(y: ArrayLike, probs_a: ArrayLike, probs_b: ArrayLike, applies: bool = True) -> dict[str, Any]:
    """DeLong's test per repeat of the cross-validation (R x n out-of-fold predictions of each model).

    ``applies`` False (several cases per patient: cases are not independent) records why it was not run.
    The headline ``p_value`` is the median over repeats; ``p_value_per_repeat`` and ``z_per_repeat`` show
    the spread.
    """
    if not applies:
        return {"applies": False, "reason": "several cases per patient: cases are not independent "
                "(read the patient-bootstrap CI)"}  # fmt: skip
    a, b = np.atleast_2d(np.asarray(probs_a, dtype=float)), np.atleast_2d(np.asarray(probs_b, dtype=float))
    tests = [delong_test(y, pa, pb) for pa, pb in zip(a, b, strict=True)]
    return {
        "applies": True,
        "p_value": float(np.median([t["p_value"] for t in tests])),
        "p_value_per_repeat": [t["p_value"] for t in tests],
        "z_per_repeat": [t["z"] for t in tests],
        "delta_auc_ci_first_repeat": tests[0]["delta_auc_ci"],
        "method": "DeLong (Sun & Xu fast algorithm) per repeat; median p over repeats",
    }

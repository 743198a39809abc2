"""ComBat against the published equations (Johnson, Li and Rabinovic 2007) and in-fold use."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from pacs_workbench.radiomics.combat import ComBat, ComBatWarning
from tests.radiomics.fixtures import SKLEARN_TRANSFORMER_CHECKS, run_sklearn_check


def make_batches(seed: int = 0, n_per_batch=(30, 40, 25), p: int = 12, covariate: bool = False):
    """Features with no true batch difference, then a known shift and stretch per batch."""
    rng = np.random.default_rng(seed)
    n = sum(n_per_batch)
    batch = np.repeat([f"vendor{i}" for i in range(len(n_per_batch))], n_per_batch)
    age = rng.normal(60, 10, n)
    signal = rng.normal(0, 1, (n, p)) + (0.05 * (age - 60))[:, None] * (1.0 if covariate else 0.0)
    shifts = np.array([[0.0] * p, [1.5] * p, [-1.0] * p]) + rng.normal(0, 0.2, (3, p))
    scales = np.array([[1.0] * p, [2.0] * p, [0.6] * p]) * np.exp(rng.normal(0, 0.1, (3, p)))
    codes = np.repeat(np.arange(len(n_per_batch)), n_per_batch)
    values = signal * scales[codes] + shifts[codes] + 10.0
    frame = pd.DataFrame(values, columns=[f"f{j}" for j in range(p)])
    frame["vendor"] = batch
    frame["age"] = age
    return frame, signal


FEATURES = [f"f{j}" for j in range(12)]


def combat_direct(y: np.ndarray, batch: np.ndarray, covariates: np.ndarray | None, *, eb: bool = True):
    """The 2007 equations transcribed feature by feature and batch by batch (slow and plain)."""
    n, p = y.shape
    labels = sorted(set(batch))
    n_i = {b: int(np.sum(batch == b)) for b in labels}
    onehot = np.column_stack([(batch == b).astype(float) for b in labels])
    design = onehot if covariates is None else np.column_stack([onehot, covariates])
    z = np.empty_like(y)
    alpha = np.empty(p)
    sigma = np.empty(p)
    xbeta = np.zeros((n, p))
    for g in range(p):
        coef = np.linalg.solve(design.T @ design, design.T @ y[:, g])
        # alpha_g: batch coefficients weighted by batch size (constraint sum_i n_i gamma_ig = 0)
        alpha[g] = sum(n_i[b] * coef[k] for k, b in enumerate(labels)) / n
        if covariates is not None:
            xbeta[:, g] = covariates @ coef[len(labels):]
        resid = y[:, g] - design @ coef
        sigma[g] = np.sqrt(np.sum(resid**2) / n)
        z[:, g] = (y[:, g] - alpha[g] - xbeta[:, g]) / sigma[g]
    out = np.empty_like(y)
    for b in labels:
        rows = batch == b
        gamma_hat = np.array([np.mean(z[rows, g]) for g in range(p)])
        delta2_hat = np.array([np.var(z[rows, g], ddof=1) for g in range(p)])
        gamma_bar = np.mean(gamma_hat)
        tau2 = np.var(gamma_hat, ddof=1)
        v = np.mean(delta2_hat)
        s2 = np.var(delta2_hat, ddof=1)
        lam = (v**2 + 2 * s2) / s2
        theta = (v**3 + v * s2) / s2
        for g in range(p):
            if not eb:
                gamma_star, delta2_star = gamma_hat[g], delta2_hat[g]
            else:
                gamma_star, delta2_star = gamma_hat[g], delta2_hat[g]
                for _ in range(10000):
                    new_gamma = (n_i[b] * tau2 * gamma_hat[g] + delta2_star * gamma_bar) / (
                        n_i[b] * tau2 + delta2_star
                    )
                    new_delta2 = (theta + 0.5 * np.sum((z[rows, g] - new_gamma) ** 2)) / (n_i[b] / 2 + lam - 1)
                    done = abs(new_gamma - gamma_star) < 1e-13 and abs(new_delta2 - delta2_star) < 1e-13
                    gamma_star, delta2_star = new_gamma, new_delta2
                    if done:
                        break
            out[rows, g] = sigma[g] / np.sqrt(delta2_star) * (z[rows, g] - gamma_star) + alpha[g] + xbeta[rows, g]
    return out


@pytest.mark.parametrize("with_covariate", [False, True])
def test_matches_direct_transcription_of_the_equations(with_covariate: bool) -> None:
    frame, _ = make_batches(seed=1, covariate=with_covariate)
    features = [c for c in frame.columns if c.startswith("f")]
    cov = ("age",) if with_covariate else ()
    model = ComBat(batch_col="vendor", feature_cols=features, covariate_cols=cov, tol=1e-12)
    got = model.fit(frame).transform(frame).to_numpy()
    expected = combat_direct(
        frame[features].to_numpy(), frame["vendor"].to_numpy(), frame[["age"]].to_numpy() if cov else None
    )
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7)


def test_location_scale_without_eb_is_exact() -> None:
    """Without shrinkage every batch gets exactly the grand mean and the pooled variance."""
    frame, _ = make_batches(seed=2)
    features = [c for c in frame.columns if c.startswith("f")]
    model = ComBat(batch_col="vendor", feature_cols=FEATURES, empirical_bayes=False).fit(frame)
    out = model.transform(frame)
    np.testing.assert_allclose(out.to_numpy(), combat_direct(frame[features].to_numpy(), frame["vendor"].to_numpy(),
                                                             None, eb=False), atol=1e-9)
    for _, rows in out.groupby(frame["vendor"]):
        np.testing.assert_allclose(rows.mean().to_numpy(), model.grand_mean_, atol=1e-9)
        np.testing.assert_allclose(rows.var(ddof=1).to_numpy(), model.var_pooled_, rtol=1e-9)


def test_removes_injected_batch_shift_and_scale() -> None:
    frame, _ = make_batches(seed=3)
    features = [c for c in frame.columns if c.startswith("f")]
    before = frame.groupby("vendor")[features].mean()
    out = ComBat(batch_col="vendor", feature_cols=FEATURES).fit_transform(frame)
    after = out.groupby(frame["vendor"]).mean()
    # Injected shifts are 1.0-1.5 (and scales 0.6-2x); what remains is sampling noise.
    assert (before.max() - before.min()).min() > 1.5
    assert (after.max() - after.min()).median() < 0.3
    sd = out.groupby(frame["vendor"]).std()
    assert (sd.max() / sd.min()).max() < 1.6
    assert (frame.groupby("vendor")[features].std().max() / frame.groupby("vendor")[features].std().min()).min() > 2


def test_covariate_effect_is_preserved() -> None:
    frame, _ = make_batches(seed=4, covariate=True)
    features = [c for c in frame.columns if c.startswith("f")]
    out = ComBat(batch_col="vendor", covariate_cols=("age",)).fit_transform(frame)
    slopes = [np.polyfit(frame["age"], out[f], 1)[0] for f in features]
    # True within-batch age slope is 0.05 x the batch scale (1 after harmonization).
    assert 0.03 < float(np.median(slopes)) < 0.07


def test_fitted_on_training_rows_applied_unchanged_to_test_rows() -> None:
    frame, _ = make_batches(seed=5, n_per_batch=(300, 300, 300))
    train = frame.sample(frac=0.5, random_state=0)
    test = frame.drop(train.index)
    model = ComBat(batch_col="vendor", feature_cols=FEATURES).fit(train)
    state = {k: np.copy(v) for k, v in vars(model).items() if k.endswith("_") and isinstance(v, np.ndarray)}
    assert model.n_samples_fit_ == len(train)
    assert model.batch_counts_.sum() == len(train)
    out = model.transform(test)
    for key, value in state.items():
        np.testing.assert_array_equal(getattr(model, key), value)  # transform learns nothing
    after = out.groupby(test["vendor"]).mean()
    before = test.groupby("vendor")[FEATURES].mean()
    assert (before.max() - before.min()).min() > 1.5
    assert (after.max() - after.min()).median() < 0.3  # shift learned on train removed from test
    # The estimates differ when the test rows are included: they were not used.
    full = ComBat(batch_col="vendor", feature_cols=FEATURES).fit(frame)
    assert not np.allclose(full.gamma_star_, model.gamma_star_)


def test_unseen_batch_passes_through_with_a_warning() -> None:
    frame, _ = make_batches(seed=6)
    model = ComBat(batch_col="vendor", feature_cols=FEATURES).fit(frame[frame["vendor"] != "vendor2"])
    unseen = frame[frame["vendor"] == "vendor2"]
    with pytest.warns(ComBatWarning, match="not seen"):
        out = model.transform(unseen)
    np.testing.assert_array_equal(out.to_numpy(), unseen[list(model.feature_names_in_)].to_numpy())


def test_missing_values_are_refused() -> None:
    frame, _ = make_batches(seed=7)
    frame.loc[0, "f0"] = np.nan
    with pytest.raises(ValueError, match="impute"):
        ComBat(batch_col="vendor", feature_cols=FEATURES).fit(frame)


def test_single_case_batch_warns_and_still_fits() -> None:
    frame, _ = make_batches(seed=8)
    extra = frame.iloc[[0]].copy()
    extra["vendor"] = "lonely"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ComBat(batch_col="vendor", feature_cols=FEATURES).fit(pd.concat([frame, extra], ignore_index=True))
    assert any(issubclass(w.category, ComBatWarning) for w in caught)
    assert np.isfinite(model.gamma_star_).all() and np.isfinite(model.delta_star_).all()


# --- scikit-learn conventions ----------------------------------------------------------------------
# ComBat needs a DataFrame with a batch column, so scikit-learn's full check_estimator (which fits
# on bare arrays) cannot run; the data-free checks do, and the rest is checked here on real data.
# ComBat has no random step and so no random_state.


@pytest.mark.parametrize("check", SKLEARN_TRANSFORMER_CHECKS)
def test_sklearn_checks(check: str) -> None:
    run_sklearn_check(check, ComBat())


def test_sklearn_conventions() -> None:
    frame, _ = make_batches(seed=9)
    model = ComBat(batch_col="vendor", feature_cols=FEATURES, covariate_cols=("age",))
    assert not [k for k in vars(model) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        model.transform(frame)
    with pytest.raises(NotFittedError):
        model.get_feature_names_out()
    assert model.fit(frame) is model
    learned = [k for k in vars(model) if k not in model.get_params()]
    assert learned and all(k.endswith("_") for k in learned)
    out = model.transform(frame)
    assert list(model.get_feature_names_out()) == list(out.columns) == FEATURES

    twin = clone(model)
    assert twin.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        twin.transform(frame)
    pd.testing.assert_frame_equal(twin.fit(frame).transform(frame), out)
    params = model.get_params()
    assert clone(model).set_params(**params).get_params() == params
    assert clone(model).set_params(mean_only=True).fit(frame).delta_star_.max() == 1.0

"""Out-of-fold performance metrics against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pacs_workbench.radiomics import metrics as perf


def test_weighted_auc_matches_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150)
    score = np.round(rng.random(150) + 0.4 * y, 1)  # many ties
    weights = rng.integers(0, 4, (5, 150))
    got = perf.weighted_auc(y, score, weights)
    expected = [roc_auc_score(y, score, sample_weight=w) for w in weights]
    np.testing.assert_allclose(got, expected)


def test_group_bootstrap_keeps_patients_whole() -> None:
    groups = np.repeat(np.arange(30), 3)
    w = perf.group_bootstrap_weights(groups, 50, random_state=1)
    assert w.shape == (50, 90)
    assert (w.reshape(50, 30, 3) == w.reshape(50, 30, 3)[:, :, :1]).all()
    np.testing.assert_array_equal(w.sum(axis=1), 90)


def test_calibration_slope_and_intercept() -> None:
    rng = np.random.default_rng(2)
    lp = rng.normal(0, 1.5, 20000)
    y = (rng.random(lp.size) < 1 / (1 + np.exp(-lp))).astype(int)
    slope, intercept = perf.calibration_slope_intercept(y, 1 / (1 + np.exp(-lp)))
    assert slope == pytest.approx(1.0, abs=0.05) and intercept == pytest.approx(0.0, abs=0.05)
    # Overconfident predictions (logit doubled): slope about one half.
    slope, _ = perf.calibration_slope_intercept(y, 1 / (1 + np.exp(-2 * lp)))
    assert slope == pytest.approx(0.5, abs=0.05)
    # Risks underestimated by 1 on the logit scale: intercept about +1.
    _, intercept = perf.calibration_slope_intercept(y, 1 / (1 + np.exp(-(lp - 1))))
    assert intercept == pytest.approx(1.0, abs=0.05)


def test_net_benefit_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.6, 0.1, 0.2])
    (row,) = perf.net_benefit(y, p, thresholds=[0.25])
    # at 0.25: treated = {0.9, 0.3, 0.6}: TP 2, FP 1; odds 1/3
    assert row["model"] == pytest.approx(2 / 5 - 1 / 5 / 3)
    assert row["treat_all"] == pytest.approx(2 / 5 - 3 / 5 / 3)
    assert row["treat_none"] == 0.0


def test_risk_strata_counts_and_rates() -> None:
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.05, 0.1, 0.3, 0.4, 0.8, 0.9])
    cutoffs, strata = perf.risk_strata(y, p, (0.2, 0.6))
    assert cutoffs == (0.2, 0.6)
    assert [s["n"] for s in strata] == [2, 2, 2]
    assert [s["event_rate"] for s in strata] == [0.0, 0.5, 1.0]


def test_paired_comparison_sign() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    good = y + rng.normal(0, 0.5, 200)
    bad = y + rng.normal(0, 3.0, 200)
    w = perf.group_bootstrap_weights(np.arange(200), 300, random_state=0)
    folds = np.zeros((1, 200))
    rec_good, boot_good = perf.summarize_model(y, (good - good.min()) / np.ptp(good), folds, w)
    rec_bad, boot_bad = perf.summarize_model(y, (bad - bad.min()) / np.ptp(bad), folds, w)
    cmp = perf.compare_auc(boot_good, boot_bad, rec_good["auc"], rec_bad["auc"])
    assert cmp["delta_auc"] > 0 and cmp["delta_auc_ci"][0] > 0
    assert rec_good["auc_ci"][0] < rec_good["auc"] < rec_good["auc_ci"][1]


def test_delong_agrees_with_the_auc_and_a_bootstrap() -> None:
    delong_test, delong_repeats = perf.delong_test, perf.delong_repeats
    rng = np.random.default_rng(4)
    n = 400
    y = (rng.random(n) < 0.35).astype(int)
    signal = rng.normal(0, 1, n) + 1.0 * y
    a = signal + rng.normal(0, 0.7, n)
    b = signal + rng.normal(0, 1.6, n)
    test = delong_test(y, a, b)
    assert test["auc_a"] == pytest.approx(roc_auc_score(y, a)) and test["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert test["delta_auc"] == pytest.approx(test["auc_a"] - test["auc_b"])
    boot = []
    for _ in range(400):
        i = rng.integers(0, n, n)
        boot.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert test["se"] == pytest.approx(np.std(boot), rel=0.2)
    assert test["p_value"] < 0.01 and test["delta_auc_ci"][0] > 0
    same = delong_test(y, a, a)
    assert same["delta_auc"] == 0 and same["p_value"] == 1.0
    repeated = delong_repeats(y, np.vstack([a, a]), np.vstack([b, b]))
    assert repeated["p_value"] == pytest.approx(test["p_value"]) and len(repeated["z_per_repeat"]) == 2
    assert not delong_repeats(y, a, b, applies=False)["applies"]

"""The in-fold estimators follow scikit-learn's conventions.

``fit`` returns the estimator, learned state ends in ``_``, using an unfitted estimator raises
:class:`~sklearn.exceptions.NotFittedError`, ``clone`` and ``get_params``/``set_params`` round-trip,
and the transformers name their output columns. The data-free checks of
:mod:`sklearn.utils.estimator_checks` run on each estimator; why the full ``check_estimator``
cannot is said beside ``SKLEARN_CHECKS`` in :mod:`tests.radiomics.fixtures`. No step is random, so
none has a ``random_state``.
"""

from __future__ import annotations

import io
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError

from pacs_workbench.radiomics.transformers import (
    ClinicalEncoder,
    LogitRecalibrator,
    RadiomicsPreprocessor,
    safe_feature_names,
)
from tests.radiomics.fixtures import SKLEARN_CHECKS, SKLEARN_TRANSFORMER_CHECKS, make_table, run_sklearn_check

FEATURES = [f"original_firstorder_F{j}" for j in range(3)] + [f"wavelet_glcm_N{j}" for j in range(12)] + [
    "original_shape_Constant",
    "original_firstorder_F0_copy",
]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


def transformers() -> list[BaseEstimator]:
    return [
        ClinicalEncoder(columns=("age", "smoking")),
        RadiomicsPreprocessor(feature_cols=FEATURES, batch_col="Manufacturer", clinical_cols=("age", "smoking")),
        RadiomicsPreprocessor(feature_cols=FEATURES, select_k=4),
    ]


def learned(estimator: BaseEstimator) -> set[str]:
    return {k for k in vars(estimator) if k not in estimator.get_params()}


@pytest.mark.parametrize("check", SKLEARN_TRANSFORMER_CHECKS)
@pytest.mark.parametrize("estimator", [ClinicalEncoder(), RadiomicsPreprocessor()], ids=lambda e: type(e).__name__)
def test_sklearn_checks_transformers(estimator: BaseEstimator, check: str) -> None:
    run_sklearn_check(check, estimator)


@pytest.mark.parametrize(
    "check",
    [
        *SKLEARN_CHECKS,
        # LogitRecalibrator reads any array of probabilities, so these fitting checks apply too.
        "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters",
        "check_fit_check_is_fitted",
        "check_estimators_pickle",
    ],
)
def test_sklearn_checks_recalibrator(check: str) -> None:
    run_sklearn_check(check, LogitRecalibrator())


@pytest.mark.parametrize("estimator", transformers(), ids=lambda e: type(e).__name__)
def test_transformer_conventions(estimator: BaseEstimator, table: pd.DataFrame) -> None:
    X, y = table, table["label"].to_numpy()
    assert not learned(estimator)
    with pytest.raises(NotFittedError):
        estimator.transform(X)
    with pytest.raises(NotFittedError):
        estimator.get_feature_names_out()

    assert estimator.fit(X, y) is estimator
    state = learned(estimator)
    assert state and all(name.endswith("_") for name in state), state
    out = estimator.transform(X)
    assert list(out.columns) == list(estimator.get_feature_names_out())
    assert out.index.equals(X.index) and not out.isna().any().any()
    assert estimator.n_samples_fit_ == len(X)

    twin = clone(estimator)
    assert twin.get_params() == estimator.get_params() and not learned(twin)
    with pytest.raises(NotFittedError):
        twin.transform(X)
    pd.testing.assert_frame_equal(twin.fit(X, y).transform(X), out)

    params: dict[str, Any] = estimator.get_params()
    assert clone(estimator).set_params(**params).get_params() == params
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    pd.testing.assert_frame_equal(joblib.load(buffer).transform(X), out)


def test_set_params_changes_the_fit(table: pd.DataFrame) -> None:
    prep = RadiomicsPreprocessor(feature_cols=FEATURES)
    wide = list(prep.fit(table).get_feature_names_out())
    narrow = list(prep.set_params(corr_threshold=0.3).fit(table).get_feature_names_out())
    assert prep.get_params()["corr_threshold"] == 0.3
    assert set(narrow) < set(wide)


def test_clinical_encoder_columns(table: pd.DataFrame) -> None:
    encoder = ClinicalEncoder(columns=("age", "smoking")).fit(table.iloc[:40])
    assert list(encoder.get_feature_names_out()) == ["age", "smoking=current", "smoking=former", "smoking=never"]
    smoking: list[str | None] = ["unknown", None, "never"]
    unseen = table.iloc[:3].assign(smoking=smoking, age=[np.nan, 50.0, 60.0])
    encoded = encoder.transform(unseen)
    assert encoded.loc[unseen.index[0], "age"] == encoder.medians_["age"]
    assert encoded.iloc[:2, 1:].to_numpy().sum() == 0  # unseen or missing category: all zeros
    assert encoded.iloc[2]["smoking=never"] == 1.0


def test_logit_recalibrator_conventions() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 400)
    y = (rng.random(400) < p**2).astype(int)  # over-confident predictions: slope and intercept change
    recalibrator = LogitRecalibrator()
    with pytest.raises(NotFittedError):
        recalibrator.predict(p)
    assert recalibrator.fit(p, y) is recalibrator
    assert learned(recalibrator) == {"intercept_", "slope_"}
    recalibrated = recalibrator.predict(p)
    assert ((recalibrated > 0) & (recalibrated < 1)).all()
    assert abs(recalibrated.mean() - y.mean()) < 0.02  # calibrated in the large
    twin = clone(recalibrator)
    assert twin.get_params() == {} and not learned(twin)
    np.testing.assert_allclose(twin.fit(p, y).predict(p), recalibrated)


def test_safe_feature_names_are_unique_and_storable() -> None:
    names = safe_feature_names(["a b", "a_b", 'x"y', "", "a b"])
    assert names == ["a_b", "a_b__2", "x_y", "feature", "a_b__3"]

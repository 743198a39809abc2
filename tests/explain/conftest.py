"""Shared fixtures of the explain tests: one workspace of model outputs, explained once per test run."""

from __future__ import annotations

import json
import warnings
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from pacs_workbench.explain.review import ShapReview, run_explain
from pacs_workbench.radiomics.model import run_modeling
from tests.explain.fixtures import COEF, FAKE_MRN, make_table, small_config, write_lesion


@pytest.fixture(autouse=True)
def _close_figures() -> Any:
    yield
    plt.close("all")


@pytest.fixture(scope="package")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Model outputs with and without ComBat, a features table with images, and a truth folder."""
    root = tmp_path_factory.mktemp("explain")
    table, drivers = make_table()
    truth = root / "truth"
    truth.mkdir()
    pd.DataFrame(
        {"PatientID": [FAKE_MRN.format(4_000_000 + i) for i in range(len(table))], "has_imaging": 1, **drivers}
    ).to_csv(truth / "patients.csv", index=False)
    (truth / "model.json").write_text(json.dumps({"coefficients": COEF}))
    volumes = root / "volumes"
    volumes.mkdir()
    images, masks = [], []
    for case_id, diameter in zip(table["case_id"], table["original_shape_Maximum3DDiameter"], strict=True):
        image, mask = write_lesion(volumes, case_id, float(diameter))
        images.append(image)
        masks.append(mask)
    features = table.drop(columns=["label", "patient", "age", "pack_years"]).assign(image=images, mask=masks)
    features.to_parquet(root / "features.parquet", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_modeling(table, root / "model", small_config("Manufacturer"), progress=False)
        run_modeling(table, root / "model_unharmonized", small_config(None), progress=False)
    return {"root": root, "table": table, "truth": truth, "features": root / "features.parquet"}


@pytest.fixture(scope="package")
def review(workspace: dict[str, Any]) -> ShapReview:
    return run_explain(
        workspace["root"] / "model", workspace["root"] / "explain", features_file=workspace["features"], progress=False
    )


@pytest.fixture(scope="package")
def unharmonized(workspace: dict[str, Any]) -> ShapReview:
    return run_explain(workspace["root"] / "model_unharmonized", features_file=workspace["features"], progress=False)

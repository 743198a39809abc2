"""Notebook 05's score against the synthetic ground truth reads truth/patients.csv only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pacs_workbench.core.pseudonym import pseudonymize
from pacs_workbench.radiomics.truth import TRUTH_PATIENTS_FILE, compare_with_truth

KEY = b"k" * 32


def test_compare_with_truth_joins_on_pseudonyms(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"PAT{i:03d}" for i in range(60)]
    predictor = rng.normal(0, 1, len(ids))
    probability = 1 / (1 + np.exp(-2 * predictor))
    label = (rng.random(len(ids)) < probability).astype(int)
    pd.DataFrame(
        {"PatientID": [*ids, "UNSEEN"], "probability": [*probability, 0.5], "linear_predictor": [*predictor, 0.0]}
    ).to_csv(tmp_path / TRUTH_PATIENTS_FILE, index=False)
    # Two repeats per patient; the risk is the true one plus noise.
    groups = [pseudonymize(KEY, pid, "patient") for pid in ids]
    predictions = pd.DataFrame(
        {
            "group": groups * 2,
            "label": list(label) * 2,
            "prob_lightgbm": np.clip(np.tile(probability, 2) + rng.normal(0, 0.05, 2 * len(ids)), 0, 1),
        }
    )
    scores = compare_with_truth(predictions, tmp_path, KEY)
    assert scores["patients"] == len(ids)  # the patient without predictions does not count
    assert scores["auc_model"] == pytest.approx(scores["auc_true_probability"], abs=0.05)
    assert scores["spearman_risk_vs_true_predictor"] > 0.9

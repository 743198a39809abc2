"""Notebook 04 scored against the planted ground truth of the synthetic PACS.

The synthetic data come with a ``truth/`` folder written beside them; this module reads its
``patients.csv`` (never the generator itself) to say how close the model's out-of-fold risk
comes to the true risk. Real data have no such folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pacs_workbench.core.pseudonym import pseudonymize

TRUTH_PATIENTS_FILE = "patients.csv"
"""Per source patient: ``PatientID``, the true outcome ``probability`` and ``linear_predictor``."""


def compare_with_truth(
    predictions: pd.DataFrame, truth_dir: str | os.PathLike[str], key: bytes, model: str = "lightgbm"
) -> dict[str, float]:
    """Score out-of-fold risk against the synthetic ground truth (``truth/patients.csv``).

    The truth is keyed by the source (0010,0020) Patient ID, so it is pseudonymized with the
    project key before joining; no identifier leaves this function.

    Parameters
    ----------
    predictions
        ``predictions.parquet`` of a modeling run (``group`` holds the patient pseudonym).
    truth_dir
        The synthetic data's ``truth/`` folder.
    key
        The project key the pseudonyms were made with.
    model
        Which model's probabilities to score.

    Returns
    -------
    dict
        ``patients`` joined, the AUC of the model, the AUC the true outcome probability reaches
        on the same patients (the best any model could expect), and the rank correlation of
        predicted risk with the true linear predictor.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    truth_patients = pd.read_csv(Path(truth_dir) / TRUTH_PATIENTS_FILE)
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

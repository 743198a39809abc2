"""External validation of a model package on a labelled new cohort (notebook ``07_external_validation``).

:func:`external_validation` reads ``predictions.parquet`` of ``pacs-workbench predict --label``
and the package, and measures what TRIPOD+AI asks of an external evaluation:

- discrimination: AUC with a patient-bootstrap 95 % CI (:func:`pacs_workbench.radiomics.metrics.summarize_model`);
- calibration: slope and intercept (``logit P(y) = a + b logit(p)``), calibration-in-the-large
  (``a`` with the slope fixed at 1), the calibration curve, the Brier score;
- a recalibrated variant: logistic recalibration fitted on this cohort (an update for local use,
  measured on the same cases: not an independent estimate);
- clinical utility: the decision curve and the package's risk groups with observed event rates;
- case mix against development: vendors, kernels where recorded, the standardized shift of each
  feature's mean, the share of cases outside the development ranges.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.deploy.package import load_package
from pacs_workbench.deploy.predict import ROWS_FILE
from pacs_workbench.radiomics import metrics as perf
from pacs_workbench.radiomics.transformers import LogitRecalibrator

#: The TRIPOD+AI (Collins et al., BMJ 2024) items this report gives evidence for, and how.
TRIPOD_AI_ITEMS = (
    ("5", "Data: the validation cohort's source and size (cases scored, patients, events)"),
    ("12f", "Model output: predicted risks from the frozen package, risk groups with the development cut-offs"),
    ("12g", "External validation: the package applied unchanged (manifest verified, its own parameter files)"),
    ("14", "Fairness/shift: case mix by vendor against development, feature shift, out-of-range flags"),
    ("23a", "Performance with CIs: AUC with a patient-bootstrap 95 % CI, Brier score"),
    ("23a", "Calibration: slope, intercept, calibration-in-the-large, calibration curve"),
    ("23b", "Model updating: a logistic recalibration fitted on this cohort, reported beside the original"),
    ("23a", "Clinical utility: the decision curve (net benefit against treat all / treat none)"),
    ("27b", "Handling of poor-quality or unavailable input: flags for missing, unseen and out-of-range values"),
)


def _record(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, cutoffs: list[float], n_boot: int, seed: int
) -> dict[str, Any]:
    weights = perf.group_bootstrap_weights(groups, n_boot, seed)
    folds = np.zeros((1, y.size))
    record, _ = perf.summarize_model(y, p[None, :], folds, weights, risk_cutoffs=(cutoffs[0], cutoffs[1]))
    a, b = perf.fit_logistic(perf.logit(p), y)
    record["calibration_in_the_large"] = record.pop("calibration_intercept")
    record["calibration_intercept"] = float(a)
    record["calibration_slope"] = float(b)
    record["observed_rate"] = float(y.mean())
    record["mean_predicted"] = float(p.mean())
    return record


def case_mix(predictions: pd.DataFrame, features: pd.DataFrame | None, spec: list[dict[str, Any]]) -> dict[str, Any]:
    """Vendors (and kernels where recorded) here and in development, and the shift of each feature."""
    by_name = {s["name"]: s for s in spec}
    mix: dict[str, Any] = {}
    for column in ("Manufacturer", "ConvolutionKernel"):
        development = by_name.get(column, {}).get("categories")
        here = predictions[column].value_counts().to_dict() if column in predictions.columns else None
        if development is None and here is None:
            continue
        mix[column] = {"development": development or "not recorded", "validation": here or "not recorded"}
    shift = []
    if features is not None:
        for s in spec:
            if s["role"] == "batch" or "mean" not in s or s["name"] not in features.columns:
                continue
            values = pd.to_numeric(features[s["name"]], errors="coerce")
            sd = s["sd"] or 1.0
            shift.append(
                {
                    "feature": s["name"],
                    "role": s["role"],
                    "development_mean": s["mean"],
                    "validation_mean": float(values.mean()),
                    "standardized_shift": float((values.mean() - s["mean"]) / sd),
                }
            )
    mix["feature_shift"] = sorted(shift, key=lambda r: -abs(r["standardized_shift"]))
    mix["rows_out_of_range"] = int((predictions["n_out_of_range"] > 0).sum())
    return mix


def external_validation(
    predictions_file: str | os.PathLike[str],
    package_dir: str | os.PathLike[str],
    *,
    n_boot: int = 1000,
    random_state: int = 0,
) -> dict[str, Any]:
    """Every measure of the report (see the module docstring) as one JSON-able record.

    ``models`` holds ``lightgbm`` (the package as it is) and ``lightgbm_recalibrated``, in the
    layout of the modeling stage's ``metrics.json`` (so its figures draw them).
    """
    package = load_package(package_dir)
    predictions = pd.read_parquet(predictions_file)
    scored = predictions[predictions["label"].notna()] if "label" in predictions.columns else predictions.iloc[:0]
    y = scored["label"].to_numpy(dtype=float)
    if y.size == 0 or y.min() == y.max():
        raise ValueError("external validation needs labelled cases with both outcomes")
    p = scored["risk"].to_numpy(dtype=float)
    group_col = "pseudo_patient_id" if "pseudo_patient_id" in scored.columns else "case_id"
    groups = scored[group_col].astype(str).to_numpy()
    cutoffs = package.description["risk_cutoffs"]
    main = _record(y, p, groups, cutoffs, n_boot, random_state)
    recalibrated = LogitRecalibrator().fit(p, y).predict(p)
    updated = _record(y, recalibrated, groups, cutoffs, n_boot, random_state)
    rows_file = Path(predictions_file).with_name(ROWS_FILE)
    features = pd.read_parquet(rows_file) if rows_file.is_file() else None
    counts = {
        "cases_scored": len(predictions),
        "labelled": int(y.size),
        "events": int(y.sum()),
        "patients": len(set(groups)),
        "flagged_out_of_range": int((predictions["n_out_of_range"] > 0).sum()),
        "unseen_batch": int(predictions["unseen_batch"].sum()),
    }
    return {
        "counts": counts,
        "development": package.description["development"],
        "models": {"lightgbm": main, "lightgbm_recalibrated": updated},
        "case_mix": case_mix(scored, features, package.features),
        "tripod_ai": [{"item": item, "covered_by": text} for item, text in TRIPOD_AI_ITEMS],
    }


def performance_table(report: dict[str, Any]) -> pd.DataFrame:
    """Development (cross-validated) against external performance, one row per measure."""
    dev, ext, upd = report["development"], report["models"]["lightgbm"], report["models"]["lightgbm_recalibrated"]
    rows = [
        ("AUC", dev.get("auc"), ext["auc"], upd["auc"]),
        ("AUC 95 % CI", _ci(dev.get("auc_ci")), _ci(ext["auc_ci"]), _ci(upd["auc_ci"])),
        ("Brier score", dev.get("brier"), ext["brier"], upd["brier"]),
        ("calibration slope", dev.get("calibration_slope"), ext["calibration_slope"], upd["calibration_slope"]),
        ("calibration intercept", None, ext["calibration_intercept"], upd["calibration_intercept"]),
        ("calibration-in-the-large", dev.get("calibration_intercept"), ext["calibration_in_the_large"],
         upd["calibration_in_the_large"]),
        ("observed event rate", None, ext["observed_rate"], upd["observed_rate"]),
        ("mean predicted risk", None, ext["mean_predicted"], upd["mean_predicted"]),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["measure", "development (nested CV)", "external", "external, recalibrated"])
    return frame.set_index("measure")


def _ci(ci: Any) -> str | None:
    return f"{ci[0]:.3f} - {ci[1]:.3f}" if ci and None not in ci else None


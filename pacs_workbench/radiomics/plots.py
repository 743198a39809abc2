"""Figures of the radiomics model stage: ROC, calibration and decision curves, ComBat effect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

_MODEL_COLOURS = {
    "lightgbm": "#4c72b0", "radiomics_lr": "#dd8452", "clinical_lr": "#55a868", "cnn": "#c44e52", "hybrid": "#8172b3",
}  # fmt: skip


def plot_roc(
    predictions: pd.DataFrame, models: Sequence[str] = ("lightgbm", "radiomics_lr", "clinical_lr", "cnn", "hybrid")
) -> Figure:
    """Out-of-fold ROC curves of each model (repeats pooled; models the run did not fit are left out)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name in models:
        column = f"prob_{name}"
        if column not in predictions.columns:
            continue
        fpr, tpr, _ = roc_curve(predictions["label"], predictions[column])
        auc = roc_auc_score(predictions["label"], predictions[column])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.2f})", color=_MODEL_COLOURS.get(name))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC, out-of-fold")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_calibration_and_decision(
    metrics: dict[str, Any], models: Sequence[str] = ("lightgbm", "clinical_lr", "cnn", "hybrid")
) -> Figure:
    """Calibration curves and decision curves (net benefit) from ``metrics.json`` (absent models left out)."""
    fig, (cal, dca) = plt.subplots(1, 2, figsize=(9.5, 4))
    for name in models:
        record = metrics["models"].get(name)
        if record is None:
            continue
        curve = pd.DataFrame(record["calibration_curve"])
        colour = _MODEL_COLOURS.get(name)
        cal.plot(curve["mean_predicted"], curve["observed_rate"], marker="o", label=name, color=colour)
        decision = pd.DataFrame(record["decision_curve"])
        dca.plot(decision["threshold"], decision["model"], label=name, color=_MODEL_COLOURS.get(name))
    cal.plot([0, 1], [0, 1], linestyle=":", color="grey")
    cal.set_xlabel("mean predicted risk")
    cal.set_ylabel("observed event rate")
    cal.set_title("calibration")
    cal.legend(fontsize=8)
    first = next(iter(metrics["models"].values()))
    decision = pd.DataFrame(first["decision_curve"])
    dca.plot(decision["threshold"], decision["treat_all"], linestyle="--", color="grey", label="treat all")
    dca.axhline(0.0, color="black", linewidth=0.8, label="treat none")
    top = max(0.05, float(decision["treat_all"].max()) * 1.3)
    dca.set_ylim(-0.05, top)
    dca.set_xlabel("threshold probability")
    dca.set_ylabel("net benefit")
    dca.set_title("decision curve")
    dca.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_vendor_distributions(before: pd.DataFrame, after: pd.DataFrame, features: Sequence[str], by: str) -> Figure:
    """Per-vendor boxplots of a few features before and after harmonization."""
    fig, axes = plt.subplots(2, len(features), figsize=(3.2 * len(features), 5.6), squeeze=False)
    for column, feature in enumerate(features):
        for row, (label, frame) in enumerate((("before", before), ("after", after))):
            groups = [(name, g[feature].dropna().to_numpy()) for name, g in frame.groupby(by)]
            ax = axes[row][column]
            ax.boxplot([values for _, values in groups], tick_labels=[str(name)[:10] for name, _ in groups])
            ax.set_title(f"{feature.replace('original_', '')}\n{label} harmonization", fontsize=8)
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    return fig

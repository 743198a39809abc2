"""Figures of the cohort stage (01_cohort): distributions, follow-up, the explorer's histograms."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pacs_workbench.cohort.criteria import baseline_value


def plot_distributions(tables: dict[str, pd.DataFrame], value: str = "series") -> Figure:
    """Bar charts side by side, one per table from :func:`pacs_workbench.cohort.summaries.distribution_table`."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.2), squeeze=False)
    for ax, (title, table) in zip(axes[0], tables.items(), strict=True):
        table[value].plot.bar(ax=ax, color="#4c72b0")
        ax.set_title(title)
        ax.set_xlabel("")
        ax.set_ylabel(value)
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def plot_follow_up(studies_per_patient: pd.DataFrame, intervals: pd.Series) -> Figure:
    """Studies per patient and the days between consecutive studies."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.bar(studies_per_patient["studies"].astype(str), studies_per_patient["patients"], color="#55a868")
    left.set_xlabel("studies per patient")
    left.set_ylabel("patients")
    if len(intervals):
        right.hist(intervals, bins=min(20, max(5, len(intervals) // 3)), color="#c44e52")
    right.set_xlabel("days between consecutive studies")
    right.set_ylabel("intervals")
    fig.tight_layout()
    return fig


# Histograms of the kept series: (column, x label). Only numbers, never identifiers.
_HISTOGRAMS = (
    ("SliceThickness", "slice thickness (mm)"),
    ("age_years", "age at scan (years)"),
    ("baseline_nodule_mm", "nodule on baseline report (mm)"),
)


def _with_baseline_nodule(kept: pd.DataFrame) -> pd.DataFrame:
    if "nodule_size_mm" not in kept.columns or kept.empty:
        return kept.assign(baseline_nodule_mm=np.nan)
    return kept.assign(baseline_nodule_mm=baseline_value(kept, "nodule_size_mm"))


def plot_cohort_histograms(kept: pd.DataFrame) -> Figure:
    """Small histograms of the kept series: slice thickness, age at scan, baseline nodule size.

    The nodule size counts patients (their baseline study), the others series.
    """
    frame = _with_baseline_nodule(kept)
    fig, axes = plt.subplots(1, len(_HISTOGRAMS), figsize=(3.0 * len(_HISTOGRAMS), 2.0))
    for ax, (column, label) in zip(axes, _HISTOGRAMS, strict=True):
        values = pd.to_numeric(frame[column], errors="coerce") if column in frame.columns else pd.Series(dtype=float)
        if column == "baseline_nodule_mm" and "PatientID" in frame.columns:
            values = pd.to_numeric(frame.drop_duplicates("PatientID")[column], errors="coerce")
        values = values.dropna()
        if values.empty:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        else:
            ax.hist(values, bins=min(20, max(5, values.nunique())), color="#4c72b0")
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("count", fontsize=8)
    fig.tight_layout()
    return fig

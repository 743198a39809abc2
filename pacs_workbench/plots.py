"""Figures for the reports. Each function takes tables the stage modules produce and returns a Figure.

Figures never label anything with identifiers: pseudonymous keys, counts and distributions only.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

# --- cohort (01_cohort) ----------------------------------------------------------------------------


def plot_distributions(tables: dict[str, pd.DataFrame], value: str = "series") -> Figure:
    """Bar charts side by side, one per table from :func:`pacs_workbench.cohort.distribution_table`."""
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

"""Figures of the preprocessing stage (03_preprocessing): mask montage, spacing, intensities."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pacs_workbench.core.display import draw_slice, slices_through


def plot_mask_montage(
    cases: Sequence[tuple[str, str, str]],
    *,
    n_slices: int = 3,
    window: tuple[float, float] | None = None,
    labels: dict[str, str] | None = None,
) -> Figure:
    """A few axial slices through each lesion, mask outlined in colour, one row per case.

    Parameters
    ----------
    cases
        ``(case_id, image_path, mask_path)`` of preprocessed volumes (NIfTI).
    n_slices
        Slices per case, spread over the lesion's extent.
    window
        Display range; each image's 1st-99th percentile when ``None``.
    labels
        Extra text per case_id for the row title (e.g. its flags).
    """
    import SimpleITK as sitk

    rows = max(1, len(cases))
    fig, axes = plt.subplots(rows, n_slices, figsize=(2.4 * n_slices, 2.5 * rows), squeeze=False)
    for row, (case_id, image_path, mask_path) in enumerate(cases):
        image = sitk.ReadImage(str(image_path))
        volume = sitk.GetArrayFromImage(image)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
        spacing = tuple(float(v) for v in image.GetSpacing())
        picks = slices_through(mask, n_slices)
        for col in range(n_slices):
            ax = axes[row][col]
            if col >= len(picks):
                ax.axis("off")
                continue
            draw_slice(ax, volume, mask, picks[col], window=window, spacing=spacing)  # type: ignore[arg-type]
            ax.set_title(f"z={picks[col]}", fontsize=8)
        extra = (labels or {}).get(case_id, "")
        axes[row][0].set_ylabel(f"{case_id}\n{extra}".strip(), fontsize=8)
    if not cases:
        axes[0][0].text(0.5, 0.5, "no preprocessed cases", ha="center", va="center")
        for ax in axes[0]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_spacing_before_after(result: pd.DataFrame) -> Figure:
    """In-plane spacing, slice spacing and slice thickness before preprocessing against the output spacing."""
    ok = result[result["status"] == "ok"]
    panels = [
        ("in-plane spacing (mm)", "in_spacing_x", "out_spacing_x"),
        ("slice spacing (mm)", "in_spacing_z", "out_spacing_z"),
        ("slice thickness (mm)", "SliceThickness", "out_spacing_z"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.0))
    for ax, (title, before, after) in zip(axes, panels, strict=True):
        values_before = pd.to_numeric(ok[before], errors="coerce").dropna()
        values_after = pd.to_numeric(ok[after], errors="coerce").dropna()
        if len(values_before) or len(values_after):
            both = pd.concat([values_before, values_after])
            bins = np.linspace(float(both.min()) - 0.05, float(both.max()) + 0.05, 21)
            ax.hist(values_before, bins=bins, alpha=0.6, label="input", color="#4c72b0")
            ax.hist(values_after, bins=bins, alpha=0.6, label="output", color="#dd8452")
        ax.set_title(title)
        ax.set_ylabel("cases")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_intensity_histograms(result: pd.DataFrame, by: str = "Manufacturer") -> Figure:
    """Intensity histograms per group (vendor) before and after preprocessing.

    Uses the voxel samples ``sample_before`` (native values in the output region) and
    ``sample_after`` (output volume) that :func:`pacs_workbench.preprocess.run.preprocess_cases` records.
    """
    ok = result[result["status"] == "ok"]
    groups = sorted(ok[by].fillna("unknown").astype(str).unique()) if len(ok) else []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for column, ax, title in (("sample_before", axes[0], "input"), ("sample_after", axes[1], "output")):
        for group in groups:
            rows = ok[ok[by].fillna("unknown").astype(str) == group]
            values = np.concatenate([np.asarray(v, dtype=float) for v in rows[column] if v is not None and len(v)])
            if values.size:
                ax.hist(values, bins=60, histtype="step", density=True, label=f"{group} (n={len(rows)})")
        ax.set_title(f"{title} intensities by {by}")
        ax.set_xlabel("value")
        ax.set_ylabel("density")
    if groups:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig

"""The segmentation notebook's tables and figures (pseudonymous case ids only, no UIDs or paths)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from matplotlib.figure import Figure

#: A sphere of 6 mm diameter: the size from which the Dice target is set.
SIX_MM_SPHERE_MM3 = float(np.pi / 6 * 6.0**3)


def _bootstrap(values: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(n, len(values)), replace=True), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def per_case(table: pd.DataFrame) -> pd.DataFrame:
    """One row per case: split, Dice, HD95, reference volume, uncertainty, status."""
    return table.groupby("case_id", as_index=False).agg(
        split=("split", "first"), dice=("dice", "first"), hd95_mm=("hd95_mm", "first"),
        reference_mm3=("reference_mm3", "first"), uncertainty=("uncertainty", "first"),
        status=("status", "first"), lesions=("lesion", "max"),
    )


def dice_summary(table: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Median Dice and HD95 with bootstrap 95 % CIs, on held-out (hidden-reference) and validation cases.

    ``held-out >= 6 mm`` keeps the lesions whose reference volume is at least a 6 mm sphere's.
    """
    cases = per_case(table)
    cases = cases[cases["status"].isin(["ok", "empty"]) & cases["dice"].notna()]
    groups = {
        "held-out (reference hidden)": cases[cases["split"] == "unlabelled"],
        "held-out >= 6 mm": cases[(cases["split"] == "unlabelled") & (cases["reference_mm3"] >= SIX_MM_SPHERE_MM3)],
        "validation patients": cases[cases["split"] == "validation"],
    }
    rows = []
    for name, group in groups.items():
        dice = group["dice"].to_numpy(float)
        hd = group["hd95_mm"].dropna().to_numpy(float)
        low, high = _bootstrap(dice, n_boot, seed)
        hd_low, hd_high = _bootstrap(hd, n_boot, seed)
        rows.append({
            "cases": name, "n": len(group),
            "median Dice": float(np.median(dice)) if len(dice) else np.nan, "Dice 95% CI": f"{low:.2f}-{high:.2f}",
            "median HD95 mm": float(np.median(hd)) if len(hd) else np.nan,
            "HD95 95% CI": f"{hd_low:.1f}-{hd_high:.1f}",
            "empty predictions": int((group["status"] == "empty").sum()),
        })
    return pd.DataFrame(rows)


def plot_training_curve(history: Sequence[dict[str, float]]) -> Figure:
    """Training loss (Dice + CE) and validation Dice against the optimizer step."""
    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot(1, 1, 1)
    if not history:
        ax.text(0.5, 0.5, "no training in this run (model brought along)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    steps = [p["step"] for p in history]
    ax.plot(steps, [p["loss"] for p in history], "o-", label="training loss (Dice + CE)")
    if any("validation_dice" in p for p in history):
        ax.plot(steps, [p.get("validation_dice", np.nan) for p in history], "s-", label="validation Dice")
    ax.set_xlabel("optimizer step")
    ax.set_ylim(0, max(1.05, max(p["loss"] for p in history) * 1.05))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pick_cases(table: pd.DataFrame) -> dict[str, str]:
    """Best, median and worst held-out case by Dice (model masks scored against the hidden reference)."""
    cases = per_case(table)
    cases = cases[(cases["split"] == "unlabelled") & cases["dice"].notna()].sort_values(["dice", "case_id"])
    if cases.empty:
        return {}
    ids = cases["case_id"].tolist()
    return {"best": ids[-1], "median": ids[len(ids) // 2], "worst": ids[0]}


def plot_cases(table: pd.DataFrame, cases_table: pd.DataFrame, picked: dict[str, str]) -> Figure:
    """The reference (green) and predicted (red) outlines on the slice through the reference's centre."""
    from pacs_workbench.core.display import window_limits

    fig = Figure(figsize=(3.2 * max(1, len(picked)), 3.4))
    rows = table.drop_duplicates("case_id").set_index("case_id")
    sources = cases_table.set_index("case_id")
    for i, (label, case) in enumerate(picked.items()):
        ax = fig.add_subplot(1, max(1, len(picked)), i + 1)
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(sources.loc[case, "image"])))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sources.loc[case, "mask"]))) > 0
        predicted = np.zeros_like(reference)
        if isinstance(rows.loc[case, "mask"], str) and rows.loc[case, "mask_source"] == "model":
            predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(rows.loc[case, "mask"]))) > 0
        z = int(np.round(np.argwhere(reference)[:, 0].mean())) if reference.any() else image.shape[0] // 2
        low, high = window_limits(image, (-1000.0, 400.0))
        ax.imshow(image[z], cmap="gray", vmin=low, vmax=high)
        if reference[z].any():
            ax.contour(reference[z], levels=[0.5], colors="lime", linewidths=1.2)
        if predicted[z].any():
            ax.contour(predicted[z], levels=[0.5], colors="red", linewidths=1.2, linestyles="--")
        score: Any = rows.loc[case, "dice"]
        ax.set_title(f"{label}: {case}\nDice {float(score):.2f}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def training_text(summary: dict[str, Any]) -> str:
    """What the model was trained on, and how long the run took (Markdown)."""
    config = summary.get("config") or {}
    if summary.get("model") == "external":
        return (f"A model brought along (SHA-256 `{summary['checkpoint_sha256'][:16]}...`) segmented "
                f"{summary['n_cases']} cases in {summary['inference_s']:.1f} s.")
    cached = "read from the cache (nothing changed)"
    origin = cached if summary.get("cached") else f"trained in {summary['train_s']:.1f} s"
    return (
        f"U-Net (channels {tuple(config.get('channels', ()))}, {config.get('patch')}^3 crops, "
        f"{config.get('iterations')} steps, seed {config.get('seed')}) on **{summary['n_labelled']}** cases of "
        f"**{summary['n_patients_labelled']}** patients ({summary['labelled_fraction']:.0%} of patients labelled; "
        f"the others' reference masks are hidden and only score the model), {origin}. Checkpoint SHA-256 "
        f"`{summary['checkpoint_sha256'][:16]}...`. Inference {summary['inference_s_per_volume']:.2f} s per volume "
        f"(4 test-time augmentations); {summary['n_seg_files']} DICOM SEG files written."
    )

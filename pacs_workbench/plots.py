"""Figures for the reports. Each function takes tables the stage modules produce and returns a Figure.

Figures never label anything with identifiers: pseudonymous keys, counts and distributions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
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


# --- preprocessing (03_preprocessing) --------------------------------------------------------------


def _slices_through(mask: np.ndarray, n: int) -> list[int]:
    """``n`` axial slice indices spread over the mask's extent (its middle slice when ``n`` is 1)."""
    z = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if z.size == 0:
        return [mask.shape[0] // 2]
    if n == 1:
        return [int(z[z.size // 2])]
    picks = np.quantile(z, np.linspace(0.15, 0.85, n)).round().astype(int)
    return sorted({int(v) for v in picks})


def _window(array: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        return float(window[0]), float(window[1])
    lo, hi = np.percentile(array, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def draw_slice(
    ax: Axes,
    image: np.ndarray,
    mask: np.ndarray | None,
    z: int,
    *,
    window: tuple[float, float] | None = None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    color: str = "#ff3b30",
) -> None:
    """One axial slice ``z`` of an (z, y, x) volume with the mask outlined in ``color``."""
    lo, hi = _window(image, window)
    extent = (0, image.shape[2] * spacing[0], image.shape[1] * spacing[1], 0)
    ax.imshow(image[z], cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
    if mask is not None and mask[z].any():
        ys = (np.arange(mask.shape[1]) + 0.5) * spacing[1]
        xs = (np.arange(mask.shape[2]) + 0.5) * spacing[0]
        ax.contour(xs, ys, mask[z].astype(float), levels=[0.5], colors=color, linewidths=1.2)
    ax.set_xticks([])
    ax.set_yticks([])


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
        picks = _slices_through(mask, n_slices)
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
    ``sample_after`` (output volume) that :func:`pacs_workbench.preprocess.preprocess_cases` records.
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


# --- radiomics model (04_radiomics_model) -----------------------------------------------------------

_MODEL_COLOURS = {"lightgbm": "#4c72b0", "radiomics_lr": "#dd8452", "clinical_lr": "#55a868"}


def plot_roc(predictions: pd.DataFrame, models: Sequence[str] = ("lightgbm", "radiomics_lr", "clinical_lr")) -> Figure:
    """Out-of-fold ROC curves of each model (repeats pooled)."""
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
    metrics: dict[str, Any], models: Sequence[str] = ("lightgbm", "clinical_lr")
) -> Figure:
    """Calibration curves and decision curves (net benefit) from ``metrics.json``."""
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


# --- SHAP review (05_shap_review) ------------------------------------------------------------------

_RISK_UP = "#d62728"  # contributions that raise the predicted risk
_RISK_DOWN = "#1f77b4"  # contributions that lower it
_UNSTABLE = "#ff7f0e"


def _short(name: str) -> str:
    return str(name).removeprefix("original_")


def _note_figure(text: str, size: tuple[float, float] = (6.0, 1.6)) -> Figure:
    """A figure that only says why there is nothing to draw."""
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.axis("off")
    return fig


def plot_shap_importance(importance: pd.DataFrame, top: int = 15) -> Figure:
    """Mean |SHAP| of the top features with their spread over folds; unstable features in orange.

    Parameters
    ----------
    importance
        :func:`pacs_workbench.explain.importance_table`.
    top
        Features shown.
    """
    if importance.empty:
        return _note_figure("no SHAP importance to show")
    rows = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.2))
    colors = [_UNSTABLE if u else "#4c72b0" for u in rows["unstable"]]
    y = np.arange(len(rows))
    ax.barh(y, rows["mean_abs_shap"], xerr=rows["mean_abs_shap_sd"], color=colors, ecolor="#555555", capsize=2)
    ax.set_yticks(y, [f"{_short(f)}  [{fam}]" for f, fam in zip(rows["feature"], rows["family"], strict=True)])
    ax.tick_params(axis="y", labelsize=8)
    for yi, (lo, hi) in enumerate(zip(rows["fold_rank_min"], rows["fold_rank_max"], strict=True)):
        ax.text(ax.get_xlim()[1], yi, f" ranks {int(lo)}-{int(hi)}", va="center", fontsize=7, color="#555555")
    ax.set_xlabel("mean |SHAP| (log-odds); error bar: SD over fold models")
    handles = [plt.Rectangle((0, 0), 1, 1, color="#4c72b0"), plt.Rectangle((0, 0), 1, 1, color=_UNSTABLE)]
    ax.legend(handles, ["stable", "unstable across folds"], fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_rank_stability(
    fold_importance: pd.DataFrame, importance: pd.DataFrame, top: int = 15, top_k: int = 10
) -> Figure:
    """Each top feature's rank in every fold model (dots) and its median rank (bar).

    Parameters
    ----------
    fold_importance
        :func:`pacs_workbench.explain.fold_importance`.
    importance
        :func:`pacs_workbench.explain.importance_table` (sets the order and the unstable flags).
    top, top_k
        Features shown; the rank a feature must reach to "rank high" (dashed line).
    """
    if importance.empty or fold_importance.empty:
        return _note_figure("no fold models to compare")
    rows = importance.head(top)
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.2))
    rng = np.random.default_rng(0)
    for yi, feature in enumerate(rows["feature"]):
        ranks = fold_importance.loc[fold_importance["feature"] == feature, "rank"].to_numpy(dtype=float)
        ax.scatter(ranks, yi + rng.uniform(-0.18, 0.18, ranks.size), s=12, alpha=0.6, color="#4c72b0")
        ax.plot([np.median(ranks)] * 2, [yi - 0.3, yi + 0.3], color="black", lw=2)
    ax.axvline(top_k + 0.5, color="#999999", ls="--", lw=1)
    ax.set_yticks(np.arange(len(rows)), [_short(f) for f in rows["feature"]], fontsize=8)
    for label, unstable in zip(ax.get_yticklabels(), rows["unstable"], strict=True):
        label.set_color(_UNSTABLE if unstable else "black")
    ax.invert_yaxis()
    ax.set_xlabel(f"rank within each fold model (1 = largest mean |SHAP|; dashed: top {top_k})")
    fig.tight_layout()
    return fig


def _swarm_offsets(values: np.ndarray, width: float = 0.38, bins: int = 60) -> np.ndarray:
    """Vertical offsets that spread points with similar values (a simple beeswarm)."""
    offsets = np.zeros(values.size)
    if values.size == 0:
        return offsets
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi + 1e-12, bins + 1)
    which = np.clip(np.digitize(values, edges) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    scale = width / max(1, counts.max())
    for b in np.flatnonzero(counts):
        members = np.flatnonzero(which == b)
        k = np.arange(members.size)
        offsets[members] = np.where(k % 2 == 0, 1, -1) * ((k + 1) // 2) * scale
    return offsets


def plot_beeswarm(expl: Any, importance: pd.DataFrame, top: int = 12) -> Figure:
    """Every case's SHAP value for the top features, coloured by the feature's value (low blue, high red).

    Parameters
    ----------
    expl
        :class:`pacs_workbench.explain.Explanations`.
    importance
        :func:`pacs_workbench.explain.importance_table` (sets which features and their order).
    top
        Features shown.
    """
    if importance.empty or expl.shap.empty:
        return _note_figure("no SHAP values to show")
    features = list(importance["feature"].head(top))
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(features) + 1.4))
    cmap = plt.get_cmap("coolwarm")
    for yi, feature in enumerate(features):
        values = expl.values[feature].to_numpy(dtype=float)
        shap_values = expl.shap[feature].to_numpy(dtype=float)
        keep = np.isfinite(values)  # rows whose fold model had the feature
        s, v = shap_values[keep], values[keep]
        lo, hi = np.nanpercentile(v, [5, 95]) if v.size else (0.0, 1.0)
        colour = np.clip((v - lo) / (hi - lo), 0, 1) if hi > lo else np.full(v.size, 0.5)
        ax.scatter(s, yi + _swarm_offsets(s), c=cmap(colour), s=9, alpha=0.8, linewidths=0)
    ax.axvline(0, color="#999999", lw=1)
    ax.set_yticks(np.arange(len(features)), [_short(f) for f in features], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SHAP value (log-odds; > 0 raises the predicted risk)")
    mappable = plt.cm.ScalarMappable(cmap=cmap)
    bar = fig.colorbar(mappable, ax=ax, ticks=[0, 1], fraction=0.03, pad=0.02)
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label("feature value", fontsize=8)
    fig.tight_layout()
    return fig


def plot_dependence(expl: Any, features: Sequence[str], partners: dict[str, str | None] | None = None) -> Figure:
    """SHAP value against feature value for each feature, coloured by its interacting feature.

    Parameters
    ----------
    expl
        :class:`pacs_workbench.explain.Explanations`.
    features
        Features to show (e.g. the top of the importance table).
    partners
        Feature -> the feature to colour by (see :func:`pacs_workbench.explain.interaction_partner`);
        missing or ``None``: one colour.
    """
    features = [f for f in features if f in expl.values.columns]
    if not features:
        return _note_figure("no features to show")
    ncols = min(3, len(features))
    nrows = int(np.ceil(len(features) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.2 * nrows), squeeze=False)
    for ax, feature in zip(axes.ravel(), features, strict=False):
        x = expl.values[feature].to_numpy(dtype=float)
        y = expl.shap[feature].to_numpy(dtype=float)
        keep = np.isfinite(x)
        partner = (partners or {}).get(feature)
        if partner is not None and partner in expl.values.columns:
            c = expl.values[partner].to_numpy(dtype=float)[keep]
            lo, hi = np.nanpercentile(c, [5, 95]) if np.isfinite(c).any() else (0.0, 1.0)
            points = ax.scatter(x[keep], y[keep], c=np.clip(c, lo, hi), cmap="coolwarm", s=12, alpha=0.8)
            bar = fig.colorbar(points, ax=ax, fraction=0.05, pad=0.02)
            bar.set_label(_short(partner), fontsize=7)
            bar.ax.tick_params(labelsize=6)
        else:
            ax.scatter(x[keep], y[keep], color="#4c72b0", s=12, alpha=0.8)
        ax.axhline(0, color="#999999", lw=0.8)
        ax.set_xlabel(_short(feature) + " (model input)", fontsize=8)
        ax.set_ylabel("SHAP value (log-odds)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(features) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_family_importance(families: pd.DataFrame) -> Figure:
    """Share of the SHAP held by each feature family (summed contributions), spread over folds.

    Parameters
    ----------
    families
        :func:`pacs_workbench.explain.family_importance`.
    """
    if families.empty:
        return _note_figure("no feature families to show")
    rows = families.iloc[::-1]
    total = float(families["mean_abs_shap"].sum()) or 1.0
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(rows) + 1.2))
    palette = {"shape": "#55a868", "first order": "#dd8452", "texture": "#8172b3", "clinical": "#4c72b0"}
    y = np.arange(len(rows))
    ax.barh(
        y, rows["share"], xerr=rows["fold_mean_abs_shap_sd"] / total, capsize=3, ecolor="#555555",
        color=[palette.get(f, "#999999") for f in rows["family"]],
    )  # fmt: skip
    ax.set_yticks(y, [f"{f} ({n} features)" for f, n in zip(rows["family"], rows["n_features"], strict=True)])
    for yi, (share, lo, hi) in enumerate(zip(rows["share"], rows["fold_rank_min"], rows["fold_rank_max"], strict=True)):
        ax.text(share, yi + 0.28, f"{share:.0%}, fold ranks {int(lo)}-{int(hi)}", fontsize=7, color="#333333")
    ax.set_xlabel("share of mean |summed SHAP| (error bar: SD over fold models)")
    ax.set_xlim(0, min(1.0, float(rows["share"].max()) * 1.35 + 0.05))
    fig.tight_layout()
    return fig


def _fmt_value(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3g}"


def draw_waterfall(ax: Axes, case: Any, top: int = 8) -> None:
    """One case's largest contributions, from the expected value to the case's output (log-odds).

    Parameters
    ----------
    ax
        Where to draw.
    case
        :class:`pacs_workbench.explain.CaseExplanation`.
    top
        Contributions shown one by one; the rest are summed into one bar.
    """
    table = case.contributions
    shown = table[table["shap"] != 0].head(top)
    rest = float(table["shap"].sum() - shown["shap"].sum())
    n_rest = len(table) - len(shown)
    labels = [f"{n_rest} other feature{'s' if n_rest != 1 else ''}"]
    widths = [rest]
    for row in shown.iloc[::-1].itertuples():
        value = row.raw_value if np.isfinite(row.raw_value) else row.value
        labels.append(f"{_short(str(row.feature))} = {_fmt_value(float(value))}")
        widths.append(float(row.shap))
    start = case.expected_value
    for yi, width in enumerate(widths):
        ax.barh(yi, width, left=start, color=_RISK_UP if width > 0 else _RISK_DOWN, height=0.6)
        ax.text(start + width, yi, f" {width:+.2f}" if width >= 0 else f"{width:+.2f} ", va="center",
                ha="left" if width >= 0 else "right", fontsize=7)  # fmt: skip
        start += width
    ax.axvline(case.expected_value, color="#999999", ls="--", lw=1)
    ax.axvline(case.raw_output, color="black", lw=1)
    ax.set_yticks(np.arange(len(widths)), labels, fontsize=7)
    ax.set_xlabel(f"log-odds: E[f(x)] = {case.expected_value:.2f} (dashed) to f(x) = {case.raw_output:.2f}", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    lo, hi = ax.get_xlim()
    pad = 0.15 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)


def _lesion_arrays(image_path: str, mask_path: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """The image and mask cropped around the lesion (in-plane), with the voxel spacing."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(image_path))
    volume = sitk.GetArrayFromImage(image).astype(float)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
    spacing = tuple(float(v) for v in image.GetSpacing())
    if mask.shape == volume.shape and mask.any():
        ys, xs = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
        margin = max(8, int(max(ys.size, xs.size)))
        y0, y1 = max(0, ys[0] - margin), min(mask.shape[1], ys[-1] + margin + 1)
        x0, x1 = max(0, xs[0] - margin), min(mask.shape[2], xs[-1] + margin + 1)
        volume, mask = volume[:, y0:y1, x0:x1], mask[:, y0:y1, x0:x1]
    return volume, mask, (spacing[0], spacing[1], spacing[2])


def plot_case_studies(review: Any, cases: pd.DataFrame | Sequence[str], *, top: int = 8, n_slices: int = 3) -> Figure:
    """Per case: its waterfall beside a few slices through the lesion with the mask outlined.

    Parameters
    ----------
    review
        :class:`pacs_workbench.explain.ShapReview`.
    cases
        Case keys, or :meth:`~pacs_workbench.explain.ShapReview.case_studies` (adds the category to
        each row title).
    top, n_slices
        Contributions in the waterfall; slices in the montage.

    Rows are titled with the pseudonymous case key, risk and outcome only.
    """
    if isinstance(cases, pd.DataFrame):
        ids = [str(c) for c in cases["case_id"]]
        category = dict(zip(ids, cases["category"], strict=True)) if "category" in cases.columns else {}
    else:
        ids, category = [str(c) for c in cases], {}
    if not ids:
        return _note_figure("no cases to show")
    fig = plt.figure(figsize=(4.6 + 1.9 * n_slices, 2.9 * len(ids)))
    grid = fig.add_gridspec(len(ids), 1 + n_slices, width_ratios=[2.4] + [1] * n_slices)
    for row, case_id in enumerate(ids):
        case = review.case(case_id)
        ax = fig.add_subplot(grid[row, 0])
        draw_waterfall(ax, case, top)
        outcome = "event" if case.label == 1 else ("no event" if case.label == 0 else "outcome unknown")
        head = f"{category[case_id]}: " if case_id in category else ""
        ax.set_title(f"{head}{case_id}  risk {case.risk:.2f}, {outcome}", fontsize=8, loc="left")
        image_path, mask_path = review.lesion(case_id)
        slices = [fig.add_subplot(grid[row, 1 + k]) for k in range(n_slices)]
        if not image_path:
            for k, slice_ax in enumerate(slices):
                slice_ax.axis("off")
                if k == 0:
                    slice_ax.text(0.5, 0.5, "lesion image\nnot available", ha="center", va="center", fontsize=8)
            continue
        volume, mask, spacing = _lesion_arrays(image_path, mask_path)
        picks = _slices_through(mask, n_slices)
        for k, slice_ax in enumerate(slices):
            if k >= len(picks):
                slice_ax.axis("off")
                continue
            draw_slice(slice_ax, volume, mask, picks[k], spacing=spacing)
            slice_ax.set_title(f"slice {picks[k] + 1}/{volume.shape[0]}", fontsize=7)
    fig.tight_layout()
    return fig


def plot_scanner_dependence(check: Any) -> Figure:
    """Mean SHAP of the vendor-sensitive features per vendor, one panel per model variant.

    Parameters
    ----------
    check
        :class:`pacs_workbench.explain.ScannerCheck`.
    """
    table = check.per_vendor
    if table.empty:
        return _note_figure(check.statement or "no scanner comparison to show", size=(8.0, 1.6))
    variants = list(dict.fromkeys(table["variant"]))
    features = list(dict.fromkeys(table["feature"]))
    vendors = sorted(table["vendor"].unique())
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 3.6), sharey=True, squeeze=False)
    width = 0.8 / max(1, len(vendors))
    colours = plt.get_cmap("tab10")
    for ax, variant in zip(axes[0], variants, strict=True):
        part = table[table["variant"] == variant]
        for k, vendor in enumerate(vendors):
            rows = part[part["vendor"] == vendor].set_index("feature").reindex(features)
            x = np.arange(len(features)) + (k - (len(vendors) - 1) / 2) * width
            ax.bar(x, rows["mean_shap"].fillna(0.0), width=width, color=colours(k), label=vendor)
        share = check.vendor_share.get(variant)
        ax.set_title(variant + (f"\nvendor explains {share:.1%} of these SHAP values" if share is not None else ""),
                     fontsize=9)  # fmt: skip
        ax.axhline(0, color="#999999", lw=0.8)
        ax.set_xticks(np.arange(len(features)), [_short(f) for f in features], rotation=35, ha="right", fontsize=7)
    axes[0][0].set_ylabel("mean SHAP per vendor (log-odds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_truth_check(check: Any) -> Figure:
    """Planted strength against the model's SHAP share for each signal group of feature families.

    Parameters
    ----------
    check
        :class:`pacs_workbench.explain.TruthCheck`.
    """
    groups = check.groups
    if groups.empty:
        return _note_figure("no ground truth to compare with")
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    x = np.arange(len(groups))
    ax.bar(x - 0.2, groups["planted_share"], width=0.4, color="#999999", label="planted (share of true log-odds SD)")
    ax.bar(x + 0.2, groups["shap_share"], width=0.4, color="#4c72b0", label="model (share of family SHAP)")
    names = [
        g + ("" if planted else "\n(no driver)") for g, planted in zip(groups["group"], groups["planted"], strict=True)
    ]
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("share")
    verdict = "found" if check.passed else "not (fully) found"
    ax.set_title(f"Planted signal {verdict}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

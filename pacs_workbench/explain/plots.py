"""Figures of the SHAP review: importance, stability, beeswarm, dependence, cases, checks, CNN saliency."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pacs_workbench.core.display import draw_slice, note_figure, slices_through
from pacs_workbench.core.fmt import MISSING, is_number
from pacs_workbench.explain.cases import CaseExplanation
from pacs_workbench.explain.families import short_name
from pacs_workbench.explain.review import ShapReview
from pacs_workbench.explain.saliency import METHOD_LABELS, SaliencyCase, SaliencyReview
from pacs_workbench.explain.scanner import ScannerCheck
from pacs_workbench.explain.shap import Explanations
from pacs_workbench.explain.truth import TruthCheck

_RISK_UP = "#d62728"  # contributions that raise the predicted risk
_RISK_DOWN = "#1f77b4"  # contributions that lower it
_UNSTABLE = "#ff7f0e"


def plot_shap_importance(importance: pd.DataFrame, top: int = 15) -> Figure:
    """Mean |SHAP| of the top features with their spread over folds; unstable features in orange.

    Parameters
    ----------
    importance
        :func:`~pacs_workbench.explain.importance.importance_table`.
    top
        Features shown.
    """
    if importance.empty:
        return note_figure("no SHAP importance to show")
    rows = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.2))
    colors = [_UNSTABLE if u else "#4c72b0" for u in rows["unstable"]]
    y = np.arange(len(rows))
    ax.barh(y, rows["mean_abs_shap"], xerr=rows["mean_abs_shap_sd"], color=colors, ecolor="#555555", capsize=2)
    ax.set_yticks(y, [f"{short_name(f)}  [{fam}]" for f, fam in zip(rows["feature"], rows["family"], strict=True)])
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
        :func:`~pacs_workbench.explain.importance.fold_importance`.
    importance
        :func:`~pacs_workbench.explain.importance.importance_table` (sets the order and the unstable flags).
    top, top_k
        Features shown; the rank a feature must reach to "rank high" (dashed line).
    """
    if importance.empty or fold_importance.empty:
        return note_figure("no fold models to compare")
    rows = importance.head(top)
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.2))
    rng = np.random.default_rng(0)
    for yi, feature in enumerate(rows["feature"]):
        ranks = fold_importance.loc[fold_importance["feature"] == feature, "rank"].to_numpy(dtype=float)
        ax.scatter(ranks, yi + rng.uniform(-0.18, 0.18, ranks.size), s=12, alpha=0.6, color="#4c72b0")
        ax.plot([np.median(ranks)] * 2, [yi - 0.3, yi + 0.3], color="black", lw=2)
    ax.axvline(top_k + 0.5, color="#999999", ls="--", lw=1)
    ax.set_yticks(np.arange(len(rows)), [short_name(f) for f in rows["feature"]], fontsize=8)
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


def plot_beeswarm(expl: Explanations, importance: pd.DataFrame, top: int = 12) -> Figure:
    """Every case's SHAP value for the top features, coloured by the feature's value (low blue, high red).

    Parameters
    ----------
    expl
        :class:`~pacs_workbench.explain.shap.Explanations`.
    importance
        :func:`~pacs_workbench.explain.importance.importance_table` (sets which features and their order).
    top
        Features shown.
    """
    if importance.empty or expl.shap.empty:
        return note_figure("no SHAP values to show")
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
    ax.set_yticks(np.arange(len(features)), [short_name(f) for f in features], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SHAP value (log-odds; > 0 raises the predicted risk)")
    mappable = plt.cm.ScalarMappable(cmap=cmap)
    bar = fig.colorbar(mappable, ax=ax, ticks=[0, 1], fraction=0.03, pad=0.02)
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label("feature value", fontsize=8)
    fig.tight_layout()
    return fig


def plot_dependence(
    expl: Explanations, features: Sequence[str], partners: dict[str, str | None] | None = None
) -> Figure:
    """SHAP value against feature value for each feature, coloured by its interacting feature.

    Parameters
    ----------
    expl
        :class:`~pacs_workbench.explain.shap.Explanations`.
    features
        Features to show (e.g. the top of the importance table).
    partners
        Feature -> the feature to colour by (see :func:`~pacs_workbench.explain.importance.interaction_partner`);
        missing or ``None``: one colour.
    """
    features = [f for f in features if f in expl.values.columns]
    if not features:
        return note_figure("no features to show")
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
            bar.set_label(short_name(partner), fontsize=7)
            bar.ax.tick_params(labelsize=6)
        else:
            ax.scatter(x[keep], y[keep], color="#4c72b0", s=12, alpha=0.8)
        ax.axhline(0, color="#999999", lw=0.8)
        ax.set_xlabel(short_name(feature) + " (model input)", fontsize=8)
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
        :func:`~pacs_workbench.explain.importance.family_importance`.
    """
    if families.empty:
        return note_figure("no feature families to show")
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
    # Three significant digits: raw feature values span many orders of magnitude.
    return f"{value:.3g}" if is_number(value) else MISSING


def draw_waterfall(ax: Axes, case: CaseExplanation, top: int = 8) -> None:
    """One case's largest contributions, from the expected value to the case's output (log-odds).

    Parameters
    ----------
    ax
        Where to draw.
    case
        :class:`~pacs_workbench.explain.cases.CaseExplanation`.
    top
        Contributions shown one by one; the rest are summed into one bar.
    """
    table = case.contributions
    shown = table[table["shap"] != 0].head(top)
    rest = float(table["shap"].sum() - shown["shap"].sum())
    n_rest = len(table) - len(shown)
    labels = [f"{n_rest} other feature{'s' if n_rest != 1 else ''}"]
    widths = [rest]
    for row in shown.iloc[::-1].to_dict(orient="records"):
        value = row["raw_value"] if np.isfinite(row["raw_value"]) else row["value"]
        labels.append(f"{short_name(str(row['feature']))} = {_fmt_value(float(value))}")
        widths.append(float(row["shap"]))
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


def plot_case_studies(
    review: ShapReview, cases: pd.DataFrame | Sequence[str], *, top: int = 8, n_slices: int = 3
) -> Figure:
    """Per case: its waterfall beside a few slices through the lesion with the mask outlined.

    Parameters
    ----------
    review
        :class:`~pacs_workbench.explain.review.ShapReview`.
    cases
        Case keys, or :meth:`~pacs_workbench.explain.review.ShapReview.case_studies` (adds the category to
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
        return note_figure("no cases to show")
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
        picks = slices_through(mask, n_slices)
        for k, slice_ax in enumerate(slices):
            if k >= len(picks):
                slice_ax.axis("off")
                continue
            draw_slice(slice_ax, volume, mask, picks[k], spacing=spacing)
            slice_ax.set_title(f"slice {picks[k] + 1}/{volume.shape[0]}", fontsize=7)
    fig.tight_layout()
    return fig


def plot_scanner_dependence(check: ScannerCheck) -> Figure:
    """Mean SHAP of the vendor-sensitive features per vendor, one panel per model variant.

    Parameters
    ----------
    check
        :class:`~pacs_workbench.explain.scanner.ScannerCheck`.
    """
    table = check.per_vendor
    if table.empty:
        return note_figure(check.statement or "no scanner comparison to show", size=(8.0, 1.6))
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
        ax.set_xticks(np.arange(len(features)), [short_name(f) for f in features], rotation=35, ha="right", fontsize=7)
    axes[0][0].set_ylabel("mean SHAP per vendor (log-odds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_truth_check(check: TruthCheck) -> Figure:
    """Planted strength against the model's SHAP share for each signal group of feature families.

    Parameters
    ----------
    check
        :class:`~pacs_workbench.explain.truth.TruthCheck`.
    """
    groups = check.groups
    if groups.empty:
        return note_figure("no ground truth to compare with")
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


def _draw_saliency(ax: Axes, case: SaliencyCase, method: str, saliency: SaliencyReview) -> None:
    """The crop's axial slice through the lesion centre with the map laid over it, or why it is not shown."""
    label = METHOD_LABELS.get(method, method)
    check = saliency.checks.get(method)
    if not saliency.shown(method):
        ax.axis("off")
        reason = (f"median |rank corr.| {check.median:.2f}\nwith randomized weights" if check
                  else "not computed")  # fmt: skip
        ax.text(0.5, 0.5, f"{label} not shown:\nfailed the\nrandomization check\n({reason})", ha="center",
                va="center", fontsize=7)  # fmt: skip
        return
    z = case.crop.shape[1] // 2
    values = case.maps[method][z]
    ax.imshow(case.crop[0, z], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    top = float(np.max(case.maps[method])) or 1.0
    ax.imshow(values / top, cmap="inferno", alpha=0.55, vmin=0, vmax=1, interpolation="bilinear")
    if case.mask[z].any():
        ax.contour(case.mask[z].astype(float), levels=[0.5], colors="#00c8ff", linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(label, fontsize=7)


def plot_saliency_cases(
    review: ShapReview, saliency: SaliencyReview, cases: pd.DataFrame | Sequence[str], *, top: int = 6,
    n_slices: int = 2,
) -> Figure:
    """Per held-out case: its SHAP waterfall, slices through the lesion, and the CNN's saliency maps.

    A map whose method failed the randomization check (:class:`~pacs_workbench.explain.saliency.SanityCheck`)
    is replaced by the reason. Rows are titled with the pseudonymous case key, the risks and the outcome only.
    """
    ids = [str(c) for c in (cases["case_id"] if isinstance(cases, pd.DataFrame) else cases)]
    ids = [c for c in ids if saliency.case(c) is not None]
    if not ids:
        return note_figure("no saliency maps: " + (" ".join(saliency.notes) or "no case with a CNN crop"))
    methods = list(saliency.checks)
    fig = plt.figure(figsize=(4.2 + 1.8 * (n_slices + len(methods)), 2.7 * len(ids)))
    grid = fig.add_gridspec(len(ids), 1 + n_slices + len(methods), width_ratios=[2.2] + [1] * (n_slices + len(methods)))
    explained = set(review.explanations.shap["case_id"].astype(str)) if review.available else set()
    for row, case_id in enumerate(ids):
        item = saliency.case(case_id)
        assert item is not None
        ax = fig.add_subplot(grid[row, 0])
        if case_id in explained:
            case = review.case(case_id)
            draw_waterfall(ax, case, top)
            outcome = "event" if case.label == 1 else ("no event" if case.label == 0 else "outcome unknown")
            ax.set_title(f"{case_id}  LightGBM risk {case.risk:.2f}, CNN risk {item.risk:.2f}, {outcome}", fontsize=8,
                         loc="left")  # fmt: skip
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{case_id}: no SHAP values", ha="center", va="center", fontsize=8)
        image_path, mask_path = review.lesion(case_id)
        slices = [fig.add_subplot(grid[row, 1 + k]) for k in range(n_slices)]
        if image_path:
            volume, mask, spacing = _lesion_arrays(image_path, mask_path)
            picks = slices_through(mask, n_slices)
            for k, slice_ax in enumerate(slices):
                if k < len(picks):
                    draw_slice(slice_ax, volume, mask, picks[k], spacing=spacing)
                    slice_ax.set_title(f"slice {picks[k] + 1}/{volume.shape[0]}", fontsize=7)
                else:
                    slice_ax.axis("off")
        else:
            for slice_ax in slices:
                slice_ax.axis("off")
            slices[0].text(0.5, 0.5, "lesion image\nnot available", ha="center", va="center", fontsize=8)
        for k, method in enumerate(methods):
            _draw_saliency(fig.add_subplot(grid[row, 1 + n_slices + k]), item, method, saliency)
    fig.tight_layout()
    return fig

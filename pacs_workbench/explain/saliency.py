"""Where the CNN looks: Grad-CAM and occlusion sensitivity for held-out cases, with a randomization check.

The modeling stage writes each outer fold's CNN to ``models/cnn/`` (see
:func:`pacs_workbench.radiomics.outputs.write_cnn_models`). For a case, :func:`run_saliency` loads the
network of the fold that held the case out (first repeat), and computes on the case's lesion crop:

- Grad-CAM (``monai.visualize.GradCAM``) at a ResNet stage (``backbone.layer2`` by default), upsampled to
  the crop and scaled to [0, 1];
- occlusion sensitivity (``monai.visualize.OcclusionSensitivity``): how far the predicted risk moves when
  a small cube around each voxel is blurred away, as ``|p - p_occluded|``.

A saliency map is only an explanation if it depends on what the network learned. The sanity check of
Adebayo et al. (2018, "Sanity checks for saliency maps") computes the same maps from a copy of the
network with randomized weights; :func:`sanity_check` reports the Spearman rank correlation of the
trained and the randomized map per case (of the absolute maps, so a sign flip does not count as a
difference). When the median is above ``max_rank_correlation`` (0.5 by default) the method fails: its
maps are not shown as explanations (:meth:`SaliencyReview.shown`).

Whether the network looks at the lesion: :func:`lesion_share` is the share of a map's mass inside the
lesion mask dilated by ``margin_mm`` (the lesion and its margin), beside the share a random map gets (the
mean over seeded uniform-noise maps, which is about the dilated mask's share of the crop).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage
from scipy.stats import spearmanr

from pacs_workbench.radiomics.cnn import build_network

METHODS = ("gradcam", "occlusion")
METHOD_LABELS = {"gradcam": "Grad-CAM", "occlusion": "occlusion sensitivity"}
MAX_RANK_CORRELATION = 0.5


class SaliencyError(ValueError):
    """Saliency cannot be computed (no CNN in the model folder, an unknown case)."""


# --- the CNN of a fold ---------------------------------------------------------------------------


@dataclass
class CnnFolds:
    """What ``models/cnn/`` holds: settings, crops (with ``row_index`` and ``case_id``) and the folds."""

    folder: Path
    settings: dict[str, Any]
    crops: NDArray[np.float32]
    index: pd.DataFrame
    folds: pd.DataFrame

    def network(self, repeat: int, fold: int) -> Any:
        """The trained network of one (repeat, outer fold), in eval mode on the CPU."""
        import torch

        net = build_network(int(self.settings["in_channels"]), self.settings["widths"], self.settings["dropout"])
        path = self.folder / f"r{int(repeat)}_f{int(fold)}.pt"
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.eval()

    def held_out_by(self, case_id: str) -> tuple[int, int]:
        """The (repeat, outer fold) of the first repeat whose test part held the case."""
        rows = self.index.loc[self.index["case_id"] == case_id, "row_index"]
        if rows.empty:
            raise SaliencyError(f"case {case_id} has no lesion crop in the CNN's folder")
        row = int(rows.iloc[0])
        ordered = self.folds.sort_values(["repeat", "outer_fold"])
        for repeat, fold, test_rows in zip(ordered["repeat"], ordered["outer_fold"], ordered["test_rows"], strict=True):
            if row in set(np.asarray(test_rows).tolist()):
                return int(repeat), int(fold)
        raise SaliencyError(f"case {case_id} is in no fold's test part")

    def crop(self, case_id: str) -> NDArray[np.float32]:
        position = int(np.flatnonzero(self.index["case_id"].to_numpy() == case_id)[0])
        return np.asarray(self.crops[position], dtype=np.float32)


def read_cnn_folds(model_dir: str | os.PathLike[str]) -> CnnFolds | None:
    """``models/cnn/`` of a modeling run, or ``None`` when the run trained no CNN."""
    folder = Path(model_dir) / "models" / "cnn"
    needed = [folder / n for n in ("settings.json", "crops.npy", "crops.parquet", "folds.parquet")]
    if not all(p.is_file() for p in needed):
        return None
    settings = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
    index = pd.read_parquet(folder / "crops.parquet")
    index["case_id"] = index["case_id"].astype(str)
    return CnnFolds(folder, settings, np.load(folder / "crops.npy"), index, pd.read_parquet(folder / "folds.parquet"))


def randomized_copy(network: Any, seed: int = 0) -> Any:
    """A copy of ``network`` with every weight re-drawn (layers' own initializers; others from a normal)."""
    import torch

    clone = copy.deepcopy(network)
    before = {name: p.detach().clone() for name, p in clone.named_parameters()}
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        for name, param in clone.named_parameters():
            if torch.equal(param, before[name]):  # a parameter no initializer touched
                param.copy_(torch.randn_like(param) * float(before[name].abs().mean().clamp(min=0.1)))
    return clone.eval()


# --- the maps ------------------------------------------------------------------------------------


def gradcam_map(network: Any, crop: NDArray[Any], layer: str = "backbone.layer2") -> NDArray[np.float64]:
    """Grad-CAM of the risk logit at ``layer``, upsampled to the crop, scaled to [0, 1] (all 0 when flat)."""
    import torch
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=network, target_layers=layer, postprocessing=lambda x: x)
    # Gradients flow to the layer even when no weight before it is trainable.
    x = torch.as_tensor(np.asarray(crop, dtype=np.float32)[None]).requires_grad_(True)
    result = cam(x, class_idx=0)
    values = np.asarray(result.detach().cpu().numpy()[0, 0], dtype=np.float64)
    top = float(values.max())
    return values / top if top > 0 else np.zeros_like(values)


def occlusion_map(network: Any, crop: NDArray[Any], mask_size: int = 8, overlap: float = 0.25) -> NDArray[np.float64]:
    """Occlusion sensitivity: ``|p - p_occluded|`` per voxel (a Gaussian-blurred cube of ``mask_size`` voxels)."""
    import torch
    from monai.visualize import OcclusionSensitivity

    x = torch.as_tensor(np.asarray(crop, dtype=np.float32)[None])
    size = min(int(mask_size), *x.shape[2:])
    occlusion = OcclusionSensitivity(network, mask_size=size, n_batch=32, overlap=overlap, activate=torch.sigmoid,
                                     verbose=False)  # fmt: skip
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MONAI's list indexing, deprecated in torch
        base = float(torch.sigmoid(network(x)).item())
        occluded, _ = occlusion(x)
    spatial = tuple(x.shape[2:])
    values = np.asarray(occluded.detach().cpu().numpy()[0], dtype=np.float64).reshape(-1, *spatial)[0]
    return np.abs(base - values)


def compute_map(method: str, network: Any, crop: NDArray[Any], **options: Any) -> NDArray[np.float64]:
    if method == "gradcam":
        return gradcam_map(network, crop, **{k: v for k, v in options.items() if k == "layer"})
    if method == "occlusion":
        return occlusion_map(network, crop, **{k: v for k, v in options.items() if k in {"mask_size", "overlap"}})
    raise SaliencyError(f"unknown saliency method {method!r} (known: {', '.join(METHODS)})")


def rank_correlation(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Spearman rank correlation of two maps' absolute values (NaN when either map is flat)."""
    x, y = np.abs(np.ravel(a)), np.abs(np.ravel(b))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def dilated_mask(mask: NDArray[Any], margin_mm: float, spacing_mm: float) -> NDArray[np.bool_]:
    """The lesion mask grown by ``margin_mm`` (a ball of that radius, on the crop's isotropic grid)."""
    radius = max(0, round(margin_mm / spacing_mm))
    lesion = np.asarray(mask) > 0.5
    if radius == 0:
        return lesion
    zz, yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1, -radius : radius + 1]
    ball = zz**2 + yy**2 + xx**2 <= radius**2
    return np.asarray(ndimage.binary_dilation(lesion, structure=ball), dtype=bool)


def lesion_share(
    saliency: NDArray[Any], region: NDArray[np.bool_], n_random: int = 20, seed: int = 0
) -> dict[str, float]:
    """The share of a map's mass inside ``region`` and the mean share of ``n_random`` uniform random maps."""
    values = np.abs(np.asarray(saliency, dtype=float))
    total = float(values.sum())
    share = float(values[region].sum() / total) if total > 0 else float("nan")
    rng = np.random.default_rng(seed)
    random_maps = rng.random((n_random, *values.shape))
    baseline = float(np.mean(random_maps[:, region].sum(axis=1) / random_maps.reshape(n_random, -1).sum(axis=1)))
    return {"share": share, "random_share": baseline, "ratio": share / baseline if baseline > 0 else float("nan")}


# --- the check and the review --------------------------------------------------------------------


@dataclass
class SanityCheck:
    """The randomization check of one method: rank correlations per case and the verdict."""

    method: str
    correlations: dict[str, float]
    max_rank_correlation: float = MAX_RANK_CORRELATION

    @property
    def median(self) -> float:
        # A flat map (NaN) says nothing about the weights: counted as not different.
        values = [1.0 if not np.isfinite(v) else abs(v) for v in self.correlations.values()]
        return float(np.median(values)) if values else float("nan")

    @property
    def passed(self) -> bool:
        return bool(self.correlations) and self.median <= self.max_rank_correlation

    def statement(self) -> str:
        label = METHOD_LABELS.get(self.method, self.method)
        if not self.correlations:
            return f"{label}: no case to check."
        verdict = (
            "differs clearly from the randomized network's: the maps depend on what the network learned and are "
            "shown as explanations"
            if self.passed
            else "does not differ clearly from the randomized network's: the maps are not shown as explanations"
        )
        return (
            f"{label}: median |Spearman rank correlation| between the trained and the randomized network's maps "
            f"{self.median:.2f} over {len(self.correlations)} case(s) (threshold {self.max_rank_correlation:.2f}); "
            f"the map {verdict}."
        )


def sanity_check(
    trained: dict[str, NDArray[Any]], randomized: dict[str, NDArray[Any]], method: str,
    max_rank_correlation: float = MAX_RANK_CORRELATION,
) -> SanityCheck:
    """Compare each case's map from the trained network with the map from its randomized copy."""
    correlations = {case: rank_correlation(trained[case], randomized[case]) for case in trained}
    return SanityCheck(method, correlations, max_rank_correlation)


@dataclass
class SaliencyCase:
    """One held-out case: its crop, lesion mask, risk and maps (trained network; randomized copy)."""

    case_id: str
    repeat: int
    fold: int
    crop: NDArray[np.float32]
    mask: NDArray[np.bool_]
    risk: float
    maps: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    random_maps: dict[str, NDArray[np.float64]] = field(default_factory=dict)


@dataclass
class SaliencyReview:
    """Saliency maps for a few held-out cases, the randomization checks and the lesion mass shares."""

    cases: list[SaliencyCase]
    checks: dict[str, SanityCheck]
    shares: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return bool(self.cases)

    def shown(self, method: str) -> bool:
        """Whether ``method``'s maps may be shown as explanations (it passed its randomization check)."""
        check = self.checks.get(method)
        return bool(check and check.passed)

    def case(self, case_id: str) -> SaliencyCase | None:
        return next((c for c in self.cases if c.case_id == case_id), None)

    def checks_table(self) -> pd.DataFrame:
        rows = [{"method": METHOD_LABELS.get(m, m), "median |rank correlation|": round(c.median, 3),
                 "threshold": c.max_rank_correlation, "cases": len(c.correlations),
                 "shown as explanation": c.passed} for m, c in self.checks.items()]  # fmt: skip
        return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()

    def describe(self) -> str:
        """Markdown: what was computed, the checks' verdicts and where the maps' mass lies."""
        if not self.available:
            return " ".join(self.notes) or "No saliency maps."
        parts = [
            f"Saliency of the CNN for {len(self.cases)} held-out case(s), each from the network of the outer fold "
            "that held it out (first repeat)."
        ]
        parts += [c.statement() for c in self.checks.values()]
        margin = self.settings.get("margin_mm", 0)
        for method in self.checks:
            part = self.shares[self.shares["method"] == method]
            if part.empty or not np.isfinite(part["share"]).any():
                continue
            share, random_share = float(part["share"].median()), float(part["random_share"].median())
            where = (
                "concentrates on the lesion and its margin" if share >= 1.5 * random_share
                else ("avoids the lesion" if share < random_share else "is spread about as a random map's")
            )  # fmt: skip
            parts.append(
                f"{METHOD_LABELS.get(method, method)} {where}: median {share:.0%} of its mass lies inside the lesion "
                f"mask dilated by {margin:g} mm, against {random_share:.0%} for a random map"
                + ("" if self.shown(method) else " (the map failed its check: this share is not an explanation)")
                + "."
            )
        parts += self.notes
        return " ".join(parts)


def run_saliency(
    model_dir: str | os.PathLike[str],
    case_ids: list[str] | pd.Series,
    *,
    methods: tuple[str, ...] = METHODS,
    layer: str = "backbone.layer2",
    mask_size: int = 8,
    overlap: float = 0.25,
    margin_mm: float = 3.0,
    max_rank_correlation: float = MAX_RANK_CORRELATION,
    seed: int = 0,
    predictions: pd.DataFrame | None = None,
) -> SaliencyReview:
    """Saliency maps, randomization checks and lesion mass shares for ``case_ids`` (held-out cases).

    Parameters
    ----------
    model_dir
        Output folder of :func:`pacs_workbench.radiomics.run_modeling` with ``models/cnn/``.
    case_ids
        The cases to explain (e.g. the SHAP review's case studies); those without a crop are noted.
    methods, layer, mask_size, overlap
        Which maps, Grad-CAM's layer, and the occlusion cube and its overlap.
    margin_mm
        How far the lesion mask is grown for the "lesion and margin" region.
    max_rank_correlation
        A method passes the randomization check when the median |rank correlation| is at most this.
    seed
        Seed of the randomized weights and of the random-map baseline.
    predictions
        ``predictions.parquet`` (for the CNN's risk of each case); read from ``model_dir`` when ``None``.
    """
    folds = read_cnn_folds(model_dir)
    if folds is None:
        return SaliencyReview([], {}, pd.DataFrame(), ["The modeling run trained no CNN: no saliency maps."])
    if predictions is None and (Path(model_dir) / "predictions.parquet").is_file():
        predictions = pd.read_parquet(Path(model_dir) / "predictions.parquet")
    spacing = float(folds.settings.get("crop_spacing_mm", 1.0))
    with_mask = bool(folds.settings.get("with_mask", True))
    options = {"layer": layer, "mask_size": mask_size, "overlap": overlap}
    notes: list[str] = []
    cases: list[SaliencyCase] = []
    networks: dict[tuple[int, int], tuple[Any, Any]] = {}
    for case_id in [str(c) for c in case_ids]:
        try:
            repeat, fold = folds.held_out_by(case_id)
        except SaliencyError as exc:
            notes.append(str(exc) + ".")
            continue
        if (repeat, fold) not in networks:
            trained = folds.network(repeat, fold)
            networks[(repeat, fold)] = (trained, randomized_copy(trained, seed))
        trained, random_net = networks[(repeat, fold)]
        crop = folds.crop(case_id)
        lesion = crop[1] > 0.5 if with_mask else np.zeros(crop.shape[1:], bool)
        risk = float("nan")
        if predictions is not None and "prob_cnn" in predictions.columns:
            match = predictions[(predictions["case_id"].astype(str) == case_id) & (predictions["repeat"] == repeat)]
            risk = float(match["prob_cnn"].iloc[0]) if len(match) else risk
        item = SaliencyCase(case_id, repeat, fold, crop, lesion, risk)
        for method in methods:
            item.maps[method] = compute_map(method, trained, crop, **options)
            item.random_maps[method] = compute_map(method, random_net, crop, **options)
        cases.append(item)
    if not with_mask:
        notes.append("The CNN was trained without the mask channel: the lesion region comes from no mask here.")
    checks = {}
    for m in methods:
        trained_maps = {c.case_id: c.maps[m] for c in cases}
        checks[m] = sanity_check(trained_maps, {c.case_id: c.random_maps[m] for c in cases}, m, max_rank_correlation)
    shares = lesion_shares(cases, methods, margin_mm, spacing, seed)
    settings = {"layer": layer, "mask_size": mask_size, "overlap": overlap, "margin_mm": margin_mm,
                "crop_spacing_mm": spacing, "seed": seed}  # fmt: skip
    return SaliencyReview(cases, checks, shares, notes, settings)


def lesion_shares(
    cases: list[SaliencyCase], methods: tuple[str, ...], margin_mm: float, spacing: float, seed: int
) -> pd.DataFrame:
    """Each case's and method's share of saliency mass on the lesion and its margin, against a random map's."""
    records = []
    for item in cases:
        region = dilated_mask(item.mask, margin_mm, spacing)
        for method in methods:
            share = lesion_share(item.maps[method], region, seed=seed) if region.any() else {
                "share": float("nan"), "random_share": float("nan"), "ratio": float("nan")}  # fmt: skip
            records.append({"case_id": item.case_id, "method": method, **share})
    return pd.DataFrame(records, columns=["case_id", "method", "share", "random_share", "ratio"])

"""CNN saliency: maps from the fold that held the case out, the randomization check, the lesion mass share."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from pacs_workbench.explain.plots import plot_saliency_cases
from pacs_workbench.explain.review import run_explain
from pacs_workbench.explain.saliency import (
    compute_map,
    dilated_mask,
    lesion_share,
    randomized_copy,
    rank_correlation,
    read_cnn_folds,
    run_saliency,
    sanity_check,
)
from pacs_workbench.radiomics.model import run_modeling
from tests.radiomics.fixtures import TINY_DEEP, lesion_cohort, lesion_config

CROP = 12


class _Square(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class WeightBlind(torch.nn.Module):
    """Risk = a * mean(x^2) + b: where it looks is fixed by the input; the weights only scale it."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.layer2 = _Square()
        self.head = torch.nn.Linear(1, 1)
        with torch.no_grad():
            self.head.weight.fill_(2.0)
            self.head.bias.fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.layer2(x).mean(dim=(1, 2, 3, 4))[:, None])


def _crops(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        crop = rng.random((2, CROP, CROP, CROP)).astype(np.float32) * 0.3
        crop[:, 4:8, 3:9, 5:9] += 0.7  # a bright lesion somewhere off centre
        crops.append(crop)
    return crops


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_the_check_fails_on_a_network_whose_maps_do_not_depend_on_its_weights(method) -> None:
    blind = WeightBlind().eval()
    randomized = randomized_copy(blind, seed=1)
    assert not torch.equal(blind.head.weight, randomized.head.weight)
    crops = {f"c{i}": c for i, c in enumerate(_crops())}
    options = {"mask_size": 4}
    trained = {k: compute_map(method, blind, c, **options) for k, c in crops.items()}
    random = {k: compute_map(method, randomized, c, **options) for k, c in crops.items()}
    check = sanity_check(trained, random, method)
    assert not check.passed and check.median > 0.9
    assert "not shown as explanations" in check.statement()


def test_the_check_passes_maps_that_differ() -> None:
    rng = np.random.default_rng(0)
    trained = {f"c{i}": rng.random((6, 6, 6)) for i in range(5)}
    random = {f"c{i}": rng.random((6, 6, 6)) for i in range(5)}
    check = sanity_check(trained, random, "gradcam")
    assert check.passed and check.median < 0.3
    assert "shown as explanations" in check.statement()
    # A flat map says nothing about the weights: it counts as not different.
    flat = sanity_check({"c0": np.zeros((4, 4, 4))}, {"c0": rng.random((4, 4, 4))}, "gradcam")
    assert np.isnan(rank_correlation(np.zeros(8), np.arange(8))) and not flat.passed


def test_lesion_share_against_a_random_map() -> None:
    mask = np.zeros((10, 10, 10), bool)
    mask[4:6, 4:6, 4:6] = True
    region = dilated_mask(mask, margin_mm=1.0, spacing_mm=1.0)
    assert region.sum() > mask.sum() and region[mask].all()
    on_lesion = np.where(region, 1.0, 0.0)
    share = lesion_share(on_lesion, region)
    assert share["share"] == pytest.approx(1.0)
    assert share["random_share"] == pytest.approx(region.mean(), rel=0.1)
    assert share["ratio"] > 10
    assert lesion_share(np.where(region, 0.0, 1.0), region)["share"] == 0.0


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("saliency")
    table = lesion_cohort(root / "cases", n_patients=24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_modeling(table, root / "model", lesion_config(repeats=1), deep=TINY_DEEP, progress=False,
                     save_package=False)  # fmt: skip
    table[["case_id", "image", "mask", "Manufacturer"]].to_parquet(root / "features.parquet")
    review = run_explain(root / "model", features_file=root / "features.parquet", progress=False)
    return {"root": root, "table": table, "review": review}


def test_maps_come_from_the_fold_that_held_the_case_out(cnn_run) -> None:
    model = cnn_run["root"] / "model"
    folds = read_cnn_folds(model)
    assert folds is not None
    cases = cnn_run["table"]["case_id"].head(4).tolist()
    saliency = run_saliency(model, [*cases, "unknown"], mask_size=4)
    assert [c.case_id for c in saliency.cases] == cases
    assert any("unknown" in note for note in saliency.notes)
    predictions = pd.read_parquet(model / "predictions.parquet")
    for item in saliency.cases:
        held = predictions[(predictions["case_id"] == item.case_id) & (predictions["repeat"] == 0)]
        assert int(held["outer_fold"].iloc[0]) == item.fold
        assert item.risk == pytest.approx(float(held["prob_cnn"].iloc[0]), abs=1e-9)
        record = folds.folds[(folds.folds["repeat"] == item.repeat) & (folds.folds["outer_fold"] == item.fold)]
        row = int(folds.index.loc[folds.index["case_id"] == item.case_id, "row_index"].iloc[0])
        assert row in set(record["test_rows"].iloc[0]) and row not in set(record["train_rows"].iloc[0])
        for method in ("gradcam", "occlusion"):
            assert item.maps[method].shape == (CROP, CROP, CROP)
            assert item.random_maps[method].shape == (CROP, CROP, CROP)
    assert set(saliency.shares["method"]) == {"gradcam", "occlusion"}
    assert set(saliency.checks) == {"gradcam", "occlusion"}
    text = saliency.describe()
    assert "randomized network" in text and "dilated by 3 mm" in text
    table = saliency.checks_table()
    assert list(table.columns) == ["median |rank correlation|", "threshold", "cases", "shown as explanation"]


def test_failed_maps_are_not_drawn(cnn_run) -> None:
    saliency = run_saliency(cnn_run["root"] / "model", cnn_run["table"]["case_id"].head(2).tolist(), mask_size=4)
    for check in saliency.checks.values():
        check.max_rank_correlation = -1.0  # nothing passes
    fig = plot_saliency_cases(cnn_run["review"], saliency, [c.case_id for c in saliency.cases])
    assert isinstance(fig, Figure)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sum("failed the\nrandomization check" in t for t in texts) == 4
    for check in saliency.checks.values():
        check.max_rank_correlation = 2.0  # everything passes
    fig = plot_saliency_cases(cnn_run["review"], saliency, [c.case_id for c in saliency.cases])
    assert not [t for ax in fig.axes for t in ax.texts if "randomization check" in t.get_text()]


def test_a_run_without_the_cnn_has_no_saliency(tmp_path) -> None:
    saliency = run_saliency(tmp_path, ["c1"])
    assert not saliency.available and "no CNN" in saliency.describe()

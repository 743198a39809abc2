"""Active-learning simulation: both strategies from the same start, curves per seed, an honest comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pacs_workbench.segment import SegmentationError
from pacs_workbench.segment.active import compare_strategies, curve_summary, simulate_active_learning
from pacs_workbench.segment.data import load_case
from tests.segment.fixtures import TINY, write_cases


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    frame = write_cases(tmp_path_factory.mktemp("active"), n_patients=7)
    return [load_case(row, with_reference=True) for _, row in frame.iterrows()]


def test_simulation_gives_a_curve_per_strategy_and_seed(volumes) -> None:
    pool, held_out = volumes[:5], volumes[5:]
    curves = simulate_active_learning(pool, held_out, initial=2, step=1, rounds=1, seeds=(0, 1), config=TINY)
    assert set(curves["strategy"]) == {"uncertainty", "random"}
    assert sorted(curves["n_labelled"].unique()) == [2, 3]
    assert len(curves) == 2 * 2 * 2
    start = curves[curves["round"] == 0].groupby("seed")["dice_median"].nunique()
    assert (start == 1).all(), "both strategies share the starting model"
    assert curves["dice_median"].between(0, 1).all()
    held = {c.case_id for c in held_out}
    picked = {c for s in curves["selected"] for c in s.split(",") if c}
    assert picked and not picked & held, "held-out cases are never selected"
    again = simulate_active_learning(pool, held_out, initial=2, step=1, rounds=1, seeds=(0, 1), config=TINY)
    pd.testing.assert_frame_equal(curves, again)
    summary = curve_summary(curves)
    assert set(summary.columns) >= {"strategy", "n_labelled", "mean", "std", "seeds"}
    assert (summary["seeds"] == 2).all()


def test_comparison_reports_either_outcome() -> None:
    rows = []
    for seed, (unc, rnd) in enumerate([(0.8, 0.6), (0.7, 0.65), (0.75, 0.6)]):
        for strategy, value in (("uncertainty", unc), ("random", rnd)):
            rows += [{"strategy": strategy, "seed": seed, "round": 0, "n_labelled": 2, "dice_median": 0.5},
                     {"strategy": strategy, "seed": seed, "round": 1, "n_labelled": 4, "dice_median": value}]
    curves = pd.DataFrame(rows)
    result = compare_strategies(curves)
    assert result["wins"] == 3 and result["verdict"].startswith("uncertainty sampling beat random")
    swapped = curves.assign(strategy=curves["strategy"].map({"uncertainty": "random", "random": "uncertainty"}))
    assert compare_strategies(swapped)["verdict"].startswith("random beat")
    noisy = curves.copy()
    noisy.loc[(noisy["strategy"] == "random") & (noisy["seed"] == 0) & (noisy["round"] == 1), "dice_median"] = 0.95
    assert compare_strategies(noisy)["verdict"].startswith("no clear difference")
    assert np.isclose(result["uncertainty"] - result["random"], np.mean(result["differences"]))


def test_simulation_needs_truth_and_a_held_out_set(volumes) -> None:
    with pytest.raises(SegmentationError, match="held-out set"):
        simulate_active_learning(volumes[:5], [], config=TINY)
    with pytest.raises(SegmentationError, match="overlaps"):
        simulate_active_learning(volumes[:5], volumes[4:], config=TINY)


def test_simulation_cases_split_by_patient_and_stay_small(tmp_path) -> None:
    from pacs_workbench.segment.active import simulation_cases

    frame = write_cases(tmp_path / "cases", n_patients=7)
    frame.loc[frame["case_id"] == "case06", "mask"] = None  # no truth: never in the simulation
    pool, held_out = simulation_cases(frame, pool_size=3, held_out_size=2)
    assert len(pool) == 3 and len(held_out) == 2
    ids = [c.case_id for c in [*pool, *held_out]]
    assert len(set(ids)) == 5 and "case06" not in ids
    assert all(c.reference is not None for c in [*pool, *held_out])


def test_simulation_rerun_reads_its_cache_and_a_changed_case_retrains(tmp_path, monkeypatch) -> None:
    import SimpleITK as sitk

    from pacs_workbench.segment import active

    frame = write_cases(tmp_path / "cases", n_patients=12)  # 8 held out, 4 in the pool
    options = {"seeds": 1, "rounds": 1, "iterations": 5, "cache_dir": tmp_path / "cache"}
    first = active.run_simulation(frame, **options)
    assert first is not None and len(list((tmp_path / "cache").glob("simulation-*.parquet"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun with nothing changed must not train")

    monkeypatch.setattr(active, "simulate_active_learning", no_training)
    again = active.run_simulation(frame, **options)
    assert again is not None
    pd.testing.assert_frame_equal(first, again)
    assert again.attrs == first.attrs
    # One voxel changed in one case: another key, so the simulation runs again.
    image = sitk.ReadImage(str(frame["image"].iloc[0]))
    image.SetPixel(0, 0, 0, image.GetPixel(0, 0, 0) + 1)
    sitk.WriteImage(image, str(frame["image"].iloc[0]))
    with pytest.raises(AssertionError, match="must not train"):
        active.run_simulation(frame, **options)

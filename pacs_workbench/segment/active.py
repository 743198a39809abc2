"""Active-learning simulation on cases whose truth is known: uncertainty-ranked selection against random.

Both strategies start, per seed, from the same small labelled set drawn from a pool of cases with
reference masks, and grow it by ``step`` cases per round. ``uncertainty`` takes the pool cases with
the highest test-time-augmentation uncertainty around the predicted lesions (the score the
worklist ranks by, :func:`~pacs_workbench.segment.run.uncertainty_score`); ``random`` draws them
with the seed's generator. After every round a fresh U-Net is trained on the labelled set and
scored by its median Dice on a fixed held-out set. The result is a label-efficiency curve per
strategy with its spread over seeds; :func:`compare_strategies` says whether uncertainty sampling
beat random on it (the mean Dice over the curve's points), without assuming that it does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pacs_workbench.core.files import names_a_file, write_atomic
from pacs_workbench.segment.data import CaseVolume, SegmentationError, load_case, read_cases
from pacs_workbench.segment.net import TrainConfig, dice, fit_unet, predict_probability
from pacs_workbench.segment.reuse import add_case_voxels
from pacs_workbench.segment.run import MIN_LESION_MM3, lesions_of, predict_lesions, uncertainty_score

STRATEGIES = ("uncertainty", "random")
CURVE_COLUMNS = ["strategy", "seed", "round", "n_labelled", "dice_median", "selected"]


def simulation_cases(
    cases: str | os.PathLike[str] | pd.DataFrame, *, pool_size: int = 16, held_out_size: int = 8, seed: int = 0
) -> tuple[list[CaseVolume], list[CaseVolume]]:
    """Pool and held-out cases for the simulation: cases with a reference mask, split by patient.

    Patients are ordered by a seeded hash of their pseudonym; the first patients' cases fill the
    held-out set (``held_out_size`` cases at most), the next ones the pool (``pool_size``), so
    no patient is in both and the sizes (and the cost) stay small whatever the cohort.
    """
    frame = read_cases(cases)
    frame = frame[frame["mask"].map(names_a_file)]
    order = sorted(frame["pseudo_patient_id"].astype(str).unique(),
                   key=lambda p: hashlib.sha256(f"active|{seed}|{p}".encode()).hexdigest())
    held_out: list[CaseVolume] = []
    pool: list[CaseVolume] = []
    for patient in order:
        rows = frame[frame["pseudo_patient_id"].astype(str) == patient]
        target = held_out if len(held_out) < held_out_size else pool
        if target is pool and len(pool) >= pool_size:
            break
        target.extend(load_case(row, with_reference=True) for _, row in rows.iterrows())
    return pool[:pool_size], held_out


def held_out_dice(network: Any, held_out: Sequence[CaseVolume], patch: int) -> float:
    """Median Dice of the network's lesion masks on ``held_out`` (same lesion rule as the stage)."""
    scores = []
    for case in held_out:
        probability = predict_probability(network, case.image, patch)
        scores.append(dice(lesions_of(probability, case.spacing, MIN_LESION_MM3) > 0, case.reference))
    return float(np.median(scores)) if scores else float("nan")


def _most_uncertain(network: Any, pool: Sequence[CaseVolume], patch: int, n: int) -> list[str]:
    scores = []
    for case in pool:
        stack, lesions = predict_lesions(network, case, patch, MIN_LESION_MM3)
        scores.append((-uncertainty_score(stack, lesions)[0], case.case_id))
    return [case_id for _, case_id in sorted(scores)[:n]]


def _fit_and_score(
    cases: dict[str, CaseVolume], labelled: Sequence[str], held_out: Sequence[CaseVolume], config: TrainConfig
) -> tuple[Any, float]:
    """A fresh U-Net trained on the labelled cases, and its median Dice on the held-out set."""
    network, _ = fit_unet([cases[c] for c in labelled], [], config, progress=False)
    return network, held_out_dice(network, held_out, config.patch)


def _run_strategy(
    strategy: str, cases: dict[str, CaseVolume], start: list[str], held_out: Sequence[CaseVolume],
    config: TrainConfig, rounds: int, step: int, rng: np.random.Generator, first: tuple[Any, float],
) -> list[dict[str, Any]]:
    """One strategy's rounds from ``start``; ``first`` is the starting set's model and score, shared by both."""
    labelled, rows = list(start), []
    network, score = first
    for number in range(rounds + 1):
        if number > 0:
            network, score = _fit_and_score(cases, labelled, held_out, config)
        rows.append({"strategy": strategy, "seed": config.seed, "round": number, "n_labelled": len(labelled),
                     "dice_median": score, "selected": ",".join(labelled[len(start):])})
        pool = sorted(set(cases) - set(labelled))
        if number == rounds or not pool:
            break
        take = min(step, len(pool))
        if strategy == "uncertainty":
            labelled += _most_uncertain(network, [cases[c] for c in pool], config.patch, take)
        else:
            labelled += [str(c) for c in rng.choice(pool, size=take, replace=False)]
    return rows


def simulate_active_learning(
    pool: Sequence[CaseVolume],
    held_out: Sequence[CaseVolume],
    *,
    initial: int = 2,
    step: int = 2,
    rounds: int = 3,
    seeds: Sequence[int] = (0, 1, 2),
    config: TrainConfig | dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Label-efficiency curves of uncertainty-ranked and random selection.

    Parameters
    ----------
    pool
        Cases with reference masks the simulation may "annotate" (their masks play the expert).
    held_out
        Cases with reference masks that only score each round's model (never selected).
    initial, step, rounds
        Labelled cases at the start, added per round, and the number of rounds.
    seeds
        One simulation per seed: it draws the starting set, the random picks and the training.
    config
        Training settings (:class:`~pacs_workbench.segment.net.TrainConfig`); small ones keep it cheap.

    Returns
    -------
    pandas.DataFrame
        One row per strategy, seed and round: ``n_labelled``, ``dice_median`` on the held-out set,
        ``selected`` (the case ids added after the start).

    Raises
    ------
    SegmentationError
        When a case lacks its reference mask, or the pool cannot fill the starting set.
    """
    cfg = TrainConfig.coerce(config)
    cases = {c.case_id: c for c in pool}
    if any(c.reference is None for c in [*pool, *held_out]):
        raise SegmentationError("active-learning simulation needs the truth: a case lacks its reference mask")
    if len(cases) < initial + 1 or not held_out:
        raise SegmentationError(
            f"active-learning simulation needs more than {initial} pool cases and a held-out set "
            f"(got {len(cases)} and {len(held_out)})"
        )
    if set(cases) & {c.case_id for c in held_out}:
        raise SegmentationError("active-learning simulation: the held-out set overlaps the pool")
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        seeded = replace(cfg, seed=int(seed))
        rng = np.random.default_rng(int(seed))
        start = [str(c) for c in rng.choice(sorted(cases), size=initial, replace=False)]
        first = _fit_and_score(cases, start, held_out, seeded)
        for strategy in STRATEGIES:
            rows.extend(_run_strategy(
                strategy, cases, start, held_out, seeded, rounds, step, np.random.default_rng(int(seed) + 1), first
            ))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


#: The simulation's small U-Net: a smaller crop and fewer channels than the stage's, so many rounds stay cheap.
SIMULATION_NETWORK = {"patch": 24, "channels": (8, 16)}


def run_simulation(
    cases: str | os.PathLike[str] | pd.DataFrame, *, seeds: int, rounds: int, iterations: int, threads: int = 1,
    seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame | None:
    """The notebook's simulation: two starting cases, two added per round, small networks.

    Returns the curves (:func:`simulate_active_learning`, with the pool and held-out sizes in
    ``attrs``), or ``None`` when ``seeds`` is 0 or the cases with reference masks are too few.
    With ``cache_dir``, the curves are kept under the content hash of the cases' arrays and the
    settings (:func:`simulation_key`): a rerun with nothing changed trains nothing.
    """
    pool, held_out = simulation_cases(cases, seed=seed) if seeds > 0 else ([], [])
    if len(pool) <= 2 or not held_out:
        return None
    config = {**SIMULATION_NETWORK, "iterations": iterations, "threads": threads}
    settings = {"initial": 2, "step": 2, "rounds": rounds, "seeds": seeds, "config": config}
    key = simulation_key(pool, held_out, settings)
    cached = Path(cache_dir) / f"simulation-{key[:16]}.parquet" if cache_dir else None
    if cached is not None and cached.is_file():
        curves = pd.read_parquet(cached)
    else:
        curves = simulate_active_learning(pool, held_out, initial=2, step=2, rounds=rounds, seeds=range(seeds),
                                          config=config)  # fmt: skip
        if cached is not None:
            write_atomic(cached, lambda temp: curves.to_parquet(temp, index=False))
    curves.attrs.update(pool=len(pool), held_out=len(held_out))
    return curves


def simulation_key(pool: Sequence[CaseVolume], held_out: Sequence[CaseVolume], settings: dict[str, Any]) -> str:
    """SHA-256 of the simulation's inputs: every case's id, voxels, reference mask and spacing, then the settings."""
    digest = hashlib.sha256()
    for role, group in (("pool", pool), ("held_out", held_out)):
        for case in group:
            digest.update(f"{role}|{case.case_id}|{case.spacing}|{case.image.shape}|{case.image.dtype}".encode())
            add_case_voxels(digest, case)
    digest.update(json.dumps(settings, sort_keys=True, default=list).encode())
    return digest.hexdigest()


def describe_simulation(curves: pd.DataFrame | None) -> str:
    """One sentence: the set sizes and what the comparison shows (or why there is no simulation)."""
    if curves is None:
        return "Too few cases with reference masks for the simulation (or it is switched off)."
    verdict = compare_strategies(curves)["verdict"]
    return f"{curves.attrs['pool']} pool and {curves.attrs['held_out']} held-out cases: **{verdict}**."


def curve_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, min and max of the held-out Dice per strategy and number labelled."""
    return (
        curves.groupby(["strategy", "n_labelled"])["dice_median"]
        .agg(mean="mean", std="std", min="min", max="max", seeds="count")
        .reset_index()
    )


def compare_strategies(curves: pd.DataFrame) -> dict[str, Any]:
    """Whether uncertainty sampling beat random: mean Dice over the rounds after the start, per seed.

    Returns the mean over seeds per strategy, the per-seed differences (uncertainty - random), how
    many seeds uncertainty won, and a sentence saying what the numbers show.
    """
    later = curves[curves["round"] > 0]
    per_seed = later.groupby(["seed", "strategy"])["dice_median"].mean().unstack("strategy")
    if per_seed.empty or not set(STRATEGIES) <= set(per_seed.columns):
        return {"uncertainty": float("nan"), "random": float("nan"), "differences": [], "wins": 0, "seeds": 0,
                "verdict": "no rounds after the start: nothing to compare"}
    differences = (per_seed["uncertainty"] - per_seed["random"]).tolist()
    wins, n = int(sum(d > 0 for d in differences)), len(differences)
    mean_diff = float(np.mean(differences))
    spread = float(np.std(differences, ddof=1)) if n > 1 else float("nan")
    if n > 1 and abs(mean_diff) <= spread:
        verdict = (f"no clear difference: uncertainty - random = {mean_diff:+.3f} Dice (SD {spread:.3f} over "
                   f"{n} seeds; uncertainty ahead in {wins})")
    else:
        better = "uncertainty sampling beat random" if mean_diff > 0 else "random beat uncertainty sampling"
        verdict = f"{better}: {mean_diff:+.3f} Dice on average over the rounds ({wins} of {n} seeds)"
    return {"uncertainty": float(per_seed["uncertainty"].mean()), "random": float(per_seed["random"].mean()),
            "differences": differences, "wins": wins, "seeds": n, "verdict": verdict}


def plot_curves(curves: pd.DataFrame, ax: Any = None) -> Any:
    """The label-efficiency curve: mean held-out Dice per strategy with its min-max band over seeds."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    summary = curve_summary(curves)
    for strategy in STRATEGIES:
        part = summary[summary["strategy"] == strategy]
        ax.plot(part["n_labelled"], part["mean"], marker="o", label=strategy)
        ax.fill_between(part["n_labelled"], part["min"], part["max"], alpha=0.2)
    ax.set_xlabel("labelled cases")
    ax.set_ylabel("median Dice, held out")
    ax.set_title(f"Active learning vs random ({curves['seed'].nunique()} seeds)")
    ax.legend()
    return ax

"""The segmentation stage on a synthetic extract: held-out Dice, cold and cached run times, inference speed.

Generates ``--patients`` synthetic patients (``pacs_workbench.synth.generate``) in
``benchmarks/_work/segment/patients-N/``, preprocesses them as ``03_preprocessing`` does (1 mm, lesion crops),
and runs :func:`pacs_workbench.segment.segment_cases` with ``--labelled-fraction`` of the patients
labelled (the others' reference masks hidden and used only for scoring): once cold (no
checkpoint), once cached. Prints the median held-out Dice (all nodules and those >= 6 mm) beside
a baseline in the same run (a fixed HU threshold, -400, with the same lesion rule), train plus
inference seconds cold and cached, and inference seconds per volume, against the targets
(Dice >= 0.80 on >= 6 mm, cold <= 120 s, inference <= 2 s per volume).

Then the active-learning simulation (:func:`pacs_workbench.segment.simulate_active_learning`) on
the same cases, all of whose truth is known: a third of the patients form a fixed held-out set,
the rest the pool; uncertainty-ranked and random selection each grow a labelled set of
``--al-initial`` cases by ``--al-step`` per round for ``--al-rounds`` rounds, over ``--al-seeds``
seeds, with a small U-Net (``--al-iterations`` steps, 24-voxel patches). It prints the mean and
range of the held-out median Dice per number of labelled cases and strategy, and whether
uncertainty sampling beat random (no target: it is reported as measured).

Usage: ``python benchmarks/bench_segment.py [--patients 30] [--labelled-fraction 0.4] [--iterations 300]
[--al-seeds 3] [--al-rounds 3] [--al-iterations 120]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from pacs_workbench.preprocess import preprocess_cases, scan_tree
from pacs_workbench.segment import (
    MIN_LESION_MM3,
    compare_strategies,
    curve_summary,
    dice,
    per_case,
    segment_cases,
    simulate_active_learning,
)
from pacs_workbench.segment.data import load_case
from pacs_workbench.segment.report import SIX_MM_SPHERE_MM3
from pacs_workbench.segment.run import lesions_of

WORK = Path(__file__).resolve().parent / "_work" / "segment"
#: As 03_preprocessing's defaults: 1 mm voxels, cropped to the lesion plus 10 mm.
PARAMS = {"target_spacing_mm": [1.0, 1.0, 1.0], "crop_margin_mm": 10.0}


def threshold_dice(cases: pd.DataFrame, held_out: set[str]) -> list[float]:
    """The baseline: HU > -400 in the crop, components under the minimum volume dropped."""
    scores = []
    for row in cases[cases["case_id"].isin(held_out)].itertuples():
        image = sitk.ReadImage(str(row.image))
        array = sitk.GetArrayFromImage(image)
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(row.mask))) > 0
        spacing = tuple(float(s) for s in image.GetSpacing())
        predicted = lesions_of((array > -400).astype(np.float32), (spacing[0], spacing[1], spacing[2]), MIN_LESION_MM3)
        scores.append(dice(predicted > 0, reference))
    return scores


def active_learning(cases: pd.DataFrame, args: argparse.Namespace) -> dict[str, object] | None:
    """The simulation on every case with a mask (held-out: a third of the patients, by hash); None when too few."""
    with_mask = cases[cases["mask"].notna()].sort_values("case_id")
    patients = sorted(with_mask["pseudo_patient_id"].astype(str).unique(),
                      key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    held_patients = set(patients[: max(1, len(patients) // 3)])
    held = with_mask["pseudo_patient_id"].astype(str).isin(held_patients)
    pool = [load_case(r, with_reference=True) for _, r in with_mask[~held].iterrows()]
    held_out = [load_case(r, with_reference=True) for _, r in with_mask[held].iterrows()]
    if len(pool) <= args.al_initial or not held_out:
        print(f"active learning: skipped ({len(pool)} pool and {len(held_out)} held-out cases are too few)")
        return None
    config = {"patch": 24, "channels": (8, 16), "iterations": args.al_iterations, "batch_size": 4,
              "learning_rate": 5e-3, "threads": args.threads}
    start = time.perf_counter()
    curves = simulate_active_learning(pool, held_out, initial=args.al_initial, step=args.al_step,
                                      rounds=args.al_rounds, seeds=range(args.al_seeds), config=config)
    seconds = time.perf_counter() - start
    summary = curve_summary(curves)
    verdict = compare_strategies(curves)
    print(f"\nactive learning: {len(pool)} pool cases, {len(held_out)} held out, {args.al_seeds} seeds, "
          f"{args.al_iterations} steps per model, {seconds:.0f} s")
    print(f"{'labelled':>9}{'uncertainty':>14}{'range':>14}{'random':>10}{'range':>14}")
    for n in sorted(summary["n_labelled"].unique()):
        part = summary[summary["n_labelled"] == n].set_index("strategy")
        cells = [f"{part.loc[s, 'mean']:10.3f}{part.loc[s, 'min']:7.3f}-{part.loc[s, 'max']:.3f}"
                 if s in part.index else f"{'':24}" for s in ("uncertainty", "random")]
        print(f"{n:9d}    {cells[0]}{cells[1]}")
    print(f"active learning: {verdict['verdict']}")
    return {"pool": len(pool), "held_out": len(held_out), "seconds": seconds, "seeds": args.al_seeds,
            "curve": summary.to_dict(orient="records"), **verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=30, help="synthetic patients (default 30)")
    parser.add_argument("--labelled-fraction", type=float, default=0.4, help="labelled share of patients")
    parser.add_argument("--iterations", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="preprocessing processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--al-seeds", type=int, default=3, help="active-learning seeds (default 3; 0 skips it)")
    parser.add_argument("--al-rounds", type=int, default=3, help="active-learning rounds (default 3)")
    parser.add_argument("--al-initial", type=int, default=2, help="labelled cases at the start (default 2)")
    parser.add_argument("--al-step", type=int, default=2, help="cases added per round (default 2)")
    parser.add_argument("--al-iterations", type=int, default=120, help="training steps per model (default 120)")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args()

    from pacs_workbench.synth import generate

    work = WORK / f"patients-{args.patients}"  # a smoke run does not reuse (or spoil) the full-size tree
    data = work / "data"
    if not (data / "dicom").is_dir():
        generate(data, patients=args.patients, seed=0)
    pre = work / "preprocessed"
    if not (pre / "cases.parquet").is_file():
        preprocess_cases(scan_tree(data / "dicom", progress=False).cases, pre, PARAMS, workers=args.workers,
                         progress=False)
    cases = pd.read_parquet(pre / "cases.parquet")
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    config = {"iterations": args.iterations}
    start = time.perf_counter()
    cold = segment_cases(cases, out, labelled_fraction=args.labelled_fraction, config=config,
                         threads=args.threads, progress=False)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = segment_cases(cases, out, labelled_fraction=args.labelled_fraction, config=config,
                           threads=args.threads, progress=False)
    assert cached.summary["cached"], "the rerun retrained"
    cached_s = time.perf_counter() - start
    table = per_case(cold.table)
    held = table[(table["split"] == "unlabelled") & table["dice"].notna()]
    big = held[held["reference_mm3"] >= SIX_MM_SPHERE_MM3]
    baseline_all = threshold_dice(cases, set(held["case_id"]))
    baseline_big = threshold_dice(cases, set(big["case_id"]))
    figures = {
        "patients": args.patients, "cases": len(cases), "labelled_fraction": args.labelled_fraction,
        "labelled_cases": cold.summary["n_labelled"], "held_out_cases": len(held), "held_out_6mm": len(big),
        "dice_median": float(held["dice"].median()), "dice_median_6mm": float(big["dice"].median()),
        "hd95_median_6mm": float(big["hd95_mm"].median()),
        "baseline_dice_median": float(np.median(baseline_all)),
        "baseline_dice_median_6mm": float(np.median(baseline_big)),
        "cold_s": cold_s, "train_s": cold.summary["train_s"], "cached_s": cached_s,
        "inference_s_per_volume": cold.summary["inference_s_per_volume"], "iterations": args.iterations,
    }
    print(f"{len(cases)} cases of {args.patients} synthetic patients; {cold.summary['n_labelled']} labelled cases "
          f"({args.labelled_fraction:.0%} of patients), {len(held)} held out ({len(big)} >= 6 mm)")
    print(f"{'':34}{'U-Net':>10}{'HU>-400':>10}{'ratio':>8}{'target':>12}")
    print(f"{'median Dice, held out':34}{figures['dice_median']:10.3f}{figures['baseline_dice_median']:10.3f}"
          f"{figures['dice_median'] / max(figures['baseline_dice_median'], 1e-9):8.2f}")
    print(f"{'median Dice, held out >= 6 mm':34}{figures['dice_median_6mm']:10.3f}"
          f"{figures['baseline_dice_median_6mm']:10.3f}"
          f"{figures['dice_median_6mm'] / max(figures['baseline_dice_median_6mm'], 1e-9):8.2f}{'>= 0.80':>12}")
    print(f"{'median HD95 mm, >= 6 mm':34}{figures['hd95_median_6mm']:10.2f}")
    print(f"{'train + inference s, cold':34}{cold_s:10.1f}{'':18}{'<= 120':>12}")
    print(f"{'train + inference s, cached':34}{cached_s:10.1f}{'':10}{cached_s / cold_s:8.3f}{'~0':>12}")
    print(f"{'inference s per volume (4 TTA)':34}{figures['inference_s_per_volume']:10.3f}{'':18}{'<= 2':>12}")
    figures["active_learning"] = active_learning(cases, args) if args.al_seeds > 0 else None
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()

"""The segmentation stage on a synthetic extract: held-out Dice, cold and cached run times, inference speed.

Generates ``--patients`` synthetic patients (``pacs_workbench.synth.generate``) in
``benchmarks/_work/segment/``, preprocesses them as ``03_preprocessing`` does (1 mm, lesion crops),
and runs :func:`pacs_workbench.segment.segment_cases` with ``--labelled-fraction`` of the patients
labelled (the others' reference masks hidden and used only for scoring): once cold (no
checkpoint), once cached. Prints the median held-out Dice (all nodules and those >= 6 mm) beside
a baseline in the same run (a fixed HU threshold, -400, with the same lesion rule), train plus
inference seconds cold and cached, and inference seconds per volume, against the targets
(Dice >= 0.80 on >= 6 mm, cold <= 120 s, inference <= 2 s per volume).

Usage: ``python benchmarks/bench_segment.py [--patients 30] [--labelled-fraction 0.4] [--iterations 300]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from pacs_workbench.preprocess import preprocess_cases, scan_tree
from pacs_workbench.segment import MIN_LESION_MM3, dice, per_case, segment_cases
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=30, help="synthetic patients (default 30)")
    parser.add_argument("--labelled-fraction", type=float, default=0.4, help="labelled share of patients")
    parser.add_argument("--iterations", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args()

    from pacs_workbench.synth import generate

    data = WORK / "data"
    if not (data / "dicom").is_dir():
        generate(data, patients=args.patients, seed=0)
    pre = WORK / "preprocessed"
    if not (pre / "cases.parquet").is_file():
        preprocess_cases(scan_tree(data / "dicom", progress=False).cases, pre, PARAMS, workers=args.workers,
                         progress=False)
    cases = pd.read_parquet(pre / "cases.parquet")
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    config = {"iterations": args.iterations}
    start = time.perf_counter()
    cold = segment_cases(cases, out, labelled_fraction=args.labelled_fraction, config=config,
                         workers=args.workers, progress=False)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    cached = segment_cases(cases, out, labelled_fraction=args.labelled_fraction, config=config,
                           workers=args.workers, progress=False)
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
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

"""The CNN and the hybrid on the demo: training time cold and cached, out-of-fold AUCs paired with LightGBM's.

Data: the demo's model table (``<demo>/features/model_table.parquet``, written by ``05_radiomics_model``)
when there is one (``--demo``, default ``data/demo``, what ``make demo`` leaves) and it has ``--patients``
patients; otherwise notebooks 01 to 03 of the demo pipeline run for ``--patients`` synthetic patients in
``benchmarks/_work/deep/patients-N/`` and the features and the model table are made as 05 makes them.

Then :func:`pacs_workbench.radiomics.run_modeling` runs as 05 runs it (ComBat by Manufacturer, age and
pack-years, ``--repeats`` x ``--outer-folds`` outer folds, the CNN settings of 05's parameters), in a
fresh folder under ``benchmarks/_work/deep/``, three times:

1. LightGBM and its baselines alone, cold: the reference cost;
2. with the CNN and the hybrid: LightGBM's folds come from the fold cache, so the time added is the crops,
   the CNN training and the hybrid over all folds and repeats, cold (target <= 150 s on 2 cores);
3. the same again: everything from the cache (about 0).

Beside the wall-clock times it prints the CPU seconds the folds took (summed over the worker processes):
on a machine shared with other work the wall clock grows with the load, the CPU seconds hardly.

It prints those times, the out-of-fold AUC with its patient-bootstrap CI of LightGBM, the CNN and the
hybrid, and the paired differences (cnn - lightgbm, hybrid - lightgbm) with bootstrap CIs and DeLong's p,
against the targets: CNN AUC >= 0.80, hybrid at least as good as LightGBM within the CI (the difference's CI
reaches 0 or above). The load average is printed beside the times: other work on the machine slows them.

``--synthetic N`` replaces the demo by N spheres of random size in noisy lung whose outcome follows the size
(no notebooks run): a smoke test of the script, whose figures say nothing about the demo.

Usage: ``python benchmarks/bench_deep.py [--patients 120] [--workers 2] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

from pacs_workbench.radiomics import (
    CLINICAL_COLUMNS,
    DeepConfig,
    ModelingConfig,
    extract_features,
    read_table,
    run_modeling,
    write_model_table,
)
from pacs_workbench.runner import discover_notebooks, prepare_demo_data, retarget_params, run_notebooks

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "deep"
REPO = HERE.parent
PARAMS_FILE = REPO / "notebooks" / "params" / "radiomics" / "ct_default.yaml"
COLD_TARGET_S = 150.0
CNN_AUC_TARGET = 0.80


def demo_table(demo: Path, patients: int, workers: int) -> tuple[pd.DataFrame, str]:
    """The model table of ``demo`` when it has ``patients`` patients, else one made in ``WORK``."""
    existing = demo / "features" / "model_table.parquet"
    marker = demo / "demo.json"
    if existing.is_file() and marker.is_file() and json.loads(marker.read_text()).get("patients") == patients:
        return read_table(existing), str(existing)
    root = WORK / f"patients-{patients}"
    data_dir = root / "data"
    table_file = data_dir / "features" / "model_table.parquet"
    if not table_file.is_file():
        print(f"deep: building the demo data for {patients} patients in {root}", file=sys.stderr, flush=True)
        prepare_demo_data(data_dir, patients=patients, seed=0)
        notebooks = [p for p in discover_notebooks() if p.stem[:2] in {"01", "02", "03"}]
        params = retarget_params(data_dir, notebooks)
        params_file = root / "params.yaml"
        params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        result = run_notebooks(params_file, root / "reports", notebooks=notebooks, base_dir=root)
        if not result.ok:
            raise SystemExit(f"deep: the demo notebooks failed; see {root / 'reports'}")
        cases = data_dir / "preprocessed" / "cases.parquet"
        features = extract_features(cases, PARAMS_FILE, data_dir / "features" / "features.parquet", workers=workers,
                                    progress=False)  # fmt: skip
        write_model_table(features, cases, data_dir / "cohort" / "cohort.parquet", data_dir / "features")
    return read_table(table_file), str(table_file)


def synthetic_table(n: int, folder: Path) -> tuple[pd.DataFrame, str]:
    """``n`` patients with one sphere each (1 mm voxels); the outcome follows the size (smoke runs only)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    radius = rng.uniform(2.5, 7.0, n)
    rows = []
    for i in range(n):
        zz, yy, xx = np.mgrid[0:24, 0:24, 0:24]
        mask = ((zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 <= radius[i] ** 2).astype(np.uint8)
        image = np.where(mask > 0, 30.0, -850.0) + rng.normal(0, 40, mask.shape)
        paths = []
        for name, array in (("image", image.astype(np.float32)), ("mask", mask)):
            path = folder / f"s{i:03d}_{name}.nii.gz"
            sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
            paths.append(str(path))
        rows.append({"case_id": f"s{i:03d}", "pseudo_patient_id": f"p{i:03d}", "image": paths[0], "mask": paths[1],
                     "Manufacturer": ["A", "B"][i % 2], "age_years": float(rng.normal(65, 8)),
                     "pack_years": float(rng.gamma(2, 15)), "original_shape_Diameter": 2 * radius[i] + rng.normal(0, 1),
                     "original_firstorder_Noise": float(rng.normal())})  # fmt: skip
    table = pd.DataFrame(rows)
    table["outcome"] = (radius + rng.normal(0, 0.8, n) > np.median(radius)).astype(int)
    return table, str(folder / "synthetic")


def timed(table: pd.DataFrame, out: Path, config: ModelingConfig, **kwargs: Any) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_modeling(table, out, config, progress=False, **kwargs)
    return summary, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--demo", type=Path, default=REPO / "data" / "demo", help="demo data folder (make demo)")
    parser.add_argument("--patients", type=int, default=120, help="synthetic patients (default 120, the demo)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="outer cross-validation repeats (05's default 2)")
    parser.add_argument("--outer-folds", type=int, default=5, help="outer folds (default 5)")
    parser.add_argument("--inner-folds", type=int, default=3, help="inner folds (default 3)")
    parser.add_argument("--bootstrap", type=int, default=500, help="patient-bootstrap resamples (default 500)")
    parser.add_argument("--epochs", type=int, default=DeepConfig.epochs, help="CNN epochs at most")
    parser.add_argument("--crop-size", type=int, default=DeepConfig.crop_size, help="crop edge in voxels")
    parser.add_argument("--synthetic", type=int, default=0, help="smoke test: N synthetic spheres instead of the demo")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args()

    if args.synthetic:
        table, source = synthetic_table(args.synthetic, WORK / f"synthetic-{args.synthetic}" / "volumes")
    else:
        table, source = demo_table(args.demo, args.patients, args.workers)
    config = ModelingConfig(
        label="outcome", group="pseudo_patient_id", id_col="case_id", batch="Manufacturer", clinical=CLINICAL_COLUMNS,
        repeats=args.repeats, outer_folds=args.outer_folds, inner_folds=args.inner_folds, n_boot=args.bootstrap,
    )  # fmt: skip
    deep = DeepConfig(crop_size=args.crop_size, epochs=args.epochs)
    out = WORK / (f"out-synthetic-{args.synthetic}" if args.synthetic else f"out-{args.patients}")
    shutil.rmtree(out, ignore_errors=True)
    load = [os.getloadavg()[0]]
    _, lightgbm_s = timed(table, out, config, workers=args.workers)
    load.append(os.getloadavg()[0])
    cold, cold_s = timed(table, out, config, workers=args.workers, deep=deep)
    load.append(os.getloadavg()[0])
    cached, cached_s = timed(table, out, config, workers=args.workers, deep=deep)
    load.append(os.getloadavg()[0])
    if cached["cache"]["deep"]["cnn_trained"] or cached["cache"]["fitted"]:
        raise SystemExit("deep: the cached rerun trained or fitted again")
    metrics = json.loads((out / "metrics.json").read_text())
    report = cold["cache"]["deep"]
    deep_cold_s = report["seconds"] + report["crops_seconds"]
    deep_cached_s = cached["cache"]["deep"]["seconds"] + cached["cache"]["deep"]["crops_seconds"]
    models = {name: metrics["models"][name] for name in ("lightgbm", "cnn", "hybrid")}
    comparisons = {key: metrics["comparisons"][key] for key in ("cnn_vs_lightgbm", "hybrid_vs_lightgbm")}

    print(f"{metrics['n']} patients ({metrics['n_events']} events) from {Path(source).parent.parent.name}; "
          f"{args.repeats} repeat(s) x {args.outer_folds} outer folds; CNN on {args.crop_size}^3 crops every "
          f"{deep.crop_spacing_mm:g} mm with the mask channel, <= {args.epochs} epochs; {args.workers} workers, "
          f"device {report['device']}; best epochs {report['best_epochs']}")
    print(f"{'step':46}{'seconds':>9}{'target':>10}")
    print(f"{'LightGBM + baselines, cold (reference)':46}{lightgbm_s:9.1f}")
    print(f"{'CNN + hybrid, all folds and repeats, cold':46}{deep_cold_s:9.1f}{'<= 150':>10}")
    print(f"{'  of which crops':46}{report['crops_seconds']:9.1f}")
    print(f"{'  CPU seconds of the folds (CNN + hybrid), summed':46}{report['fold_cpu_seconds']:9.1f}")
    print(f"{'  of which CNN training':46}{report['train_cpu_seconds']:9.1f}")
    print(f"{'CNN + hybrid, cached rerun':46}{deep_cached_s:9.1f}{'~0':>10}")
    print(f"{'whole run_modeling with the CNN: cold, cached':46}{cold_s:9.1f}{cached_s:9.1f}")
    print(f"load average (1 min) before and after each run: {', '.join(f'{v:.1f}' for v in load)}")
    print()
    print(f"{'model':12}{'AUC':>7}{'95% CI':>16}{'Brier':>8}{'cal. slope':>12}")
    for name, record in models.items():
        lo, hi = record["auc_ci"]
        print(f"{name:12}{record['auc']:7.3f}{f'{lo:.3f}-{hi:.3f}':>16}{record['brier']:8.3f}"
              f"{record['calibration_slope']:12.2f}")  # fmt: skip
    print()
    print(f"{'paired difference':20}{'dAUC':>8}{'95% CI (bootstrap)':>22}{'DeLong p':>10}")
    for key, c in comparisons.items():
        lo, hi = c["delta_auc_ci"]
        p = c["delong"].get("p_value") if c["delong"].get("applies") else None
        print(f"{key.replace('_vs_', ' - '):20}{c['delta_auc']:+8.3f}{f'{lo:+.3f} to {hi:+.3f}':>22}"
              f"{(f'{p:.3f}' if p is not None else 'n/a'):>10}")  # fmt: skip
    hybrid = comparisons["hybrid_vs_lightgbm"]
    checks = {
        "cold": deep_cold_s <= COLD_TARGET_S,
        "cnn_auc": models["cnn"]["auc"] >= CNN_AUC_TARGET,
        "hybrid_not_worse": hybrid["delta_auc_ci"][1] >= 0,
    }
    print()
    print(f"targets: CNN + hybrid cold <= {COLD_TARGET_S:.0f} s: {'met' if checks['cold'] else 'not met'}; "
          f"CNN AUC >= {CNN_AUC_TARGET}: {'met' if checks['cnn_auc'] else 'not met'}; hybrid >= LightGBM within "
          f"the CI: {'met' if checks['hybrid_not_worse'] else 'not met'}")
    if args.json:
        figures = {
            "benchmark": "deep", "patients": int(metrics["n_groups"]), "cases": int(metrics["n"]),
            "events": int(metrics["n_events"]), "repeats": args.repeats, "outer_folds": args.outer_folds,
            "workers": args.workers, "crop_size": args.crop_size, "epochs": args.epochs, "device": report["device"],
            "lightgbm_cold_s": lightgbm_s, "deep_cold_s": deep_cold_s, "deep_cached_s": deep_cached_s,
            "crops_s": report["crops_seconds"], "cnn_train_s": report["train_seconds"], "run_cold_s": cold_s,
            "fold_cpu_s": report["fold_cpu_seconds"], "cnn_train_cpu_s": report["train_cpu_seconds"],
            "run_cached_s": cached_s, "load_average": load, "best_epochs": report["best_epochs"],
            "auc": {k: v["auc"] for k, v in models.items()}, "auc_ci": {k: v["auc_ci"] for k, v in models.items()},
            "comparisons": {k: {"delta_auc": v["delta_auc"], "delta_auc_ci": v["delta_auc_ci"],
                                "delong_p": v["delong"].get("p_value")} for k, v in comparisons.items()},
            "targets": checks,
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

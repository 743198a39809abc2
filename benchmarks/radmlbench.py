"""Modeling stage against published results on the radMLBench radiomics datasets.

For each dataset in ``$PACS_WORKBENCH_REFERENCE/radmlbench/datasets/`` (gzip CSV: ``ID``,
``Target``, features) this runs :func:`pacs_workbench.radiomics.model.run_modeling`, the function behind
``pacs-workbench model``, with ``--label Target --group ID``, and prints the nested-CV AUC of the
LightGBM model (and of the L1 logistic baseline) beside ``auc_final_30x10cv`` from
``radmlbench_datasets_and_aucs.csv``: the best of 616 pipelines under repeated 10-fold CV, chosen
on the same folds that scored it, so an optimistic ceiling. A correct nested pipeline should land
at or a little below it (target: median difference within 0.05); landing more than 0.05 above it
on any dataset would point to leakage.

Usage::

    python benchmarks/radmlbench.py [--datasets Ahn2021,Song2020] [--repeats 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pacs_workbench.core.params import reference_dir
from pacs_workbench.radiomics import ModelingConfig, run_modeling

LEAK_MARGIN = 0.05


def published_aucs(folder: Path) -> dict[str, dict[str, Any]]:
    """Rows of radmlbench_datasets_and_aucs.csv for the datasets present, keyed by name."""
    with (folder / "radmlbench_datasets_and_aucs.csv").open(newline="", encoding="utf-8") as handle:
        rows = {r["dataset"]: r for r in csv.DictReader(handle)}
    return {name: row for name, row in rows.items() if (folder / "datasets" / f"{name}.gz").is_file()}


def run_dataset(
    folder: Path, name: str, out: Path, *, repeats: int, outer: int, inner: int, workers: int, seed: int
) -> dict[str, Any]:
    """Model one dataset; returns its AUCs, size and wall time."""
    config = ModelingConfig(
        label="Target",
        group="ID",
        id_col="ID",
        repeats=repeats,
        outer_folds=outer,
        inner_folds=inner,
        random_state=seed,
        n_boot=200,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every dataset triggers the EPV warning; it is in metrics.json
        summary = run_modeling(
            folder / "datasets" / f"{name}.gz", out / name, config, workers=workers, progress=False,
            save_models=False,
        )
    return {
        "lightgbm": summary["models"]["lightgbm"],
        "radiomics_lr": summary["models"]["radiomics_lr"],
        "ci": summary["auc_ci"],
        "n": summary["n"],
        "events": summary["n_events"],
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="", help="comma-separated dataset names (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="outer CV repeats (default 2)")
    parser.add_argument("--outer-folds", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes over folds (default 2)")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep each dataset's outputs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args(argv)

    ref = reference_dir()
    if ref is None:
        print("PACS_WORKBENCH_REFERENCE is not set; it must point at the shared reference folder", file=sys.stderr)
        return 2
    folder = ref / "radmlbench"
    published = published_aucs(folder)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] or sorted(published, key=str.lower)
    unknown = [n for n in names if n not in published]
    if unknown:
        print(f"unknown dataset(s): {', '.join(unknown)}", file=sys.stderr)
        return 2

    print(
        f"radMLBench: {len(names)} dataset(s), {args.repeats} repeat(s) x {args.outer_folds} outer x "
        f"{args.inner_folds} inner folds; published = auc_final_30x10cv (not nested, optimistic)"
    )
    header = (
        f"{'dataset':<28} {'n':>5} {'p':>6} {'events':>6} {'lightgbm':>9} {'95% CI':>13} "
        f"{'lasso_lr':>9} {'published':>9} {'diff':>7} {'secs':>6}"
    )
    print(header)
    print("-" * len(header))
    diffs: list[float] = []
    lr_diffs: list[float] = []
    above: list[str] = []
    records: list[dict[str, Any]] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for name in names:
            row = published[name]
            try:
                res = run_dataset(
                    folder, name, out, repeats=args.repeats, outer=args.outer_folds, inner=args.inner_folds,
                    workers=args.workers, seed=args.random_state,
                )
            except Exception as exc:  # one dataset failing must not hide the others
                print(f"{name:<28} failed: {type(exc).__name__}: {exc}", flush=True)
                failed.append(name)
                continue
            ref_auc = float(row["auc_final_30x10cv"])
            diff = res["lightgbm"] - ref_auc
            diffs.append(diff)
            lr_diffs.append(res["radiomics_lr"] - ref_auc)
            if diff > LEAK_MARGIN:
                above.append(name)
            lo, hi = res["ci"]
            records.append(
                {"dataset": name, "n": res["n"], "events": res["events"], "lightgbm": res["lightgbm"],
                 "ci": [lo, hi], "lasso_lr": res["radiomics_lr"], "published": ref_auc, "diff": diff,
                 "seconds": res["seconds"]}
            )  # fmt: skip
            print(
                f"{name:<28} {res['n']:>5} {row['p']:>6} {res['events']:>6} {res['lightgbm']:>9.3f} "
                f"{f'{lo:.2f}-{hi:.2f}':>13} {res['radiomics_lr']:>9.3f} {ref_auc:>9.3f} {diff:>+7.3f} "
                f"{res['seconds']:>6.0f}",
                flush=True,
            )
    if args.json:
        met = bool(diffs) and abs(float(np.median(diffs))) <= LEAK_MARGIN
        figures = {
            "benchmark": "radmlbench",
            "datasets": records,
            "failed": failed,
            "median_diff": float(np.median(diffs)) if diffs else None,
            "within_margin": int((np.abs(np.array(diffs)) <= LEAK_MARGIN).sum()) if diffs else 0,
            "above_margin": above,
            "margin": LEAK_MARGIN,
            "median_target_met": met,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    if not diffs:
        return 1
    d = np.array(diffs)
    print("-" * len(header))
    print(
        f"lightgbm - published: median {np.median(d):+.3f}, mean {d.mean():+.3f}, min {d.min():+.3f}, "
        f"max {d.max():+.3f}; within 0.05 of published: {int((np.abs(d) <= LEAK_MARGIN).sum())}/{d.size}"
    )
    print(f"lasso_lr - published: median {np.median(lr_diffs):+.3f}, max {max(lr_diffs):+.3f}")
    print(
        f"median target (|median diff| <= {LEAK_MARGIN}): {'met' if abs(np.median(d)) <= LEAK_MARGIN else 'NOT met'}; "
        f"datasets more than {LEAK_MARGIN} above published: {', '.join(above) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

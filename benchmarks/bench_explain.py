"""Speed of the explain stage: LightGBM ``pred_contrib`` against ``shap.TreeExplainer``, whole runs, cache.

Builds a radiomics-like table (``--cases`` cases, ``--features`` noisy features of which five carry
the outcome, a vendor shift), fits the modeling stage once (1 repeat of 5 outer folds, saved
models) in ``benchmarks/_work/explain/``, then times TreeSHAP on every fold's held-out cases with
both implementations (best of ``--repeat``), a whole :func:`pacs_workbench.explain.run_explain`
and its cached rerun. Prints seconds, cases per second and ratios against ``pred_contrib``, and
the largest difference between the two implementations.

Usage: ``python benchmarks/bench_explain.py [--cases 400] [--features 100] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import warnings
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd

from pacs_workbench.explain import run_explain
from pacs_workbench.explain.shap import fold_jobs, tree_shap
from pacs_workbench.radiomics import ModelingConfig, run_modeling

WORK = Path(__file__).resolve().parent / "_work" / "explain"


def make_table(n_cases: int, n_features: int, seed: int = 0) -> pd.DataFrame:
    """One case per patient; five informative features, the rest noise, every feature vendor-shifted."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, (n_cases, n_features))
    vendor = rng.integers(0, 3, n_cases)
    lp = values[:, :5] @ np.array([1.2, -1.0, 0.8, 0.6, -0.5])
    label = (rng.random(n_cases) < 1 / (1 + np.exp(-lp))).astype(int)
    classes = ["shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"]
    table = pd.DataFrame(values + 0.5 * vendor[:, None], columns=[
        f"original_{classes[j % len(classes)]}_F{j}" for j in range(n_features)
    ])  # fmt: skip
    table.insert(0, "Manufacturer", np.array(["SIEMENS", "GE MEDICAL SYSTEMS", "Philips"])[vendor])
    table.insert(0, "label", label)
    table.insert(0, "patient", [f"p{i}" for i in range(n_cases)])
    table.insert(0, "case_id", [f"c{i}" for i in range(n_cases)])
    return table


def _best(run: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=400, help="cases (default 400)")
    parser.add_argument("--features", type=int, default=100, help="candidate features (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is reported")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    config = ModelingConfig(
        label="label", group="patient", batch="Manufacturer", repeats=1, outer_folds=5, inner_folds=3, n_boot=100,
        corr_threshold=1.0, lightgbm_grid={"clf__max_depth": [3]},
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_modeling(make_table(args.cases, args.features), WORK / "model", config, progress=False)
    jobs = fold_jobs(WORK / "model")
    folds = [
        (lightgbm.Booster(model_file=job.booster), pd.read_parquet(job.test)) for job in jobs
    ]  # fmt: skip
    inputs = [(b, m[b.feature_name()]) for b, m in folds]
    n = sum(len(x) for _, x in inputs)

    def run(method: str) -> None:
        for booster, X in inputs:
            tree_shap(booster, X, method)

    native_s = _best(lambda: run("lightgbm"), args.repeat)
    package_s = _best(lambda: run("shap"), args.repeat)
    diff = max(float(np.max(np.abs(tree_shap(b, X, "lightgbm")[0] - tree_shap(b, X, "shap")[0]))) for b, X in inputs)
    out = WORK / "explain"
    full_s = _best(lambda: run_explain(WORK / "model", out, progress=False, use_cache=False), args.repeat)
    cached_s = _best(lambda: run_explain(WORK / "model", out, progress=False), args.repeat)
    rows = [
        {"step": "TreeSHAP, LightGBM pred_contrib", "seconds": native_s, "cases_per_s": n / native_s, "ratio": 1.0},
        {"step": "TreeSHAP, shap.TreeExplainer", "seconds": package_s, "cases_per_s": n / package_s,
         "ratio": package_s / native_s},
        {"step": f"run_explain ({len(jobs)} folds, load + SHAP + tables)", "seconds": full_s,
         "cases_per_s": n / full_s, "ratio": full_s / native_s},
        {"step": "run_explain, cached rerun", "seconds": cached_s, "cases_per_s": n / cached_s,
         "ratio": cached_s / native_s},
    ]  # fmt: skip
    print(f"{args.cases} cases, {args.features} candidate features, {len(jobs)} fold models, {n} explained cases")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"largest |pred_contrib - TreeExplainer| over all folds: {diff:.2e}")
    if args.json:
        figures = {
            "benchmark": "explain",
            "cases": args.cases,
            "features": args.features,
            "explained_cases": n,
            "rows": rows,
            "max_abs_difference": diff,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

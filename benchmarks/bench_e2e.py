"""End to end: the ``pacs-workbench demo`` pipeline's wall time per step, and how it grows with the cohort.

Runs what ``pacs-workbench demo`` runs (``prepare_demo_data``: the synthetic extract and a
project key, then ``run_notebooks``: every numbered notebook with papermill and its HTML),
from an empty folder under ``benchmarks/_work/e2e/`` (never ``data/demo``), with the default
parameters (``notebooks/params/default.yaml``, its ``data/demo`` paths pointed at that folder).
It times the extract and takes each notebook's duration from the run (``run.json``), first for
``--patients`` (default 120, the demo cohort), then for ``--factor`` times as many patients.

The scaled run would take about ``factor`` times as long as the first if cost grows linearly;
when that estimate exceeds ``--budget-minutes`` (default 30) the factor is lowered to the largest
whole number (at least 2) that fits, and the table says so. The table gives seconds per step at
both sizes, the time ratio, the patient ratio and their quotient (1.0: cost grows in proportion
to the cohort; above 1: faster than the cohort). Report only: there is no target.

Usage: ``python benchmarks/bench_e2e.py [--patients 120] [--factor 10] [--budget-minutes 30]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pacs_workbench.runner import discover_notebooks, prepare_demo_data, retarget_params, run_notebooks

WORK = Path(__file__).resolve().parent / "_work" / "e2e"
SYNTH_STEP = "synthetic extract + key"
# The notebook test's small cross-validation, for cohorts too small for the default one.
SMALL_MODEL = {"repeats": 1, "outer_folds": 3, "inner_folds": 2, "bootstrap": 100}


def write_params(
    target: Path, data_dir: Path, notebooks: list[Path], overrides: dict[str, dict[str, Any]] | None = None
) -> Path:
    """The default parameters, ``data/demo`` paths pointed at ``data_dir``, sections overlaid by ``overrides``."""
    params = retarget_params(data_dir, notebooks)
    for section, values in (overrides or {}).items():
        params.setdefault(section, {}).update(values)
    target.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return target


def run_pipeline(patients: int, seed: int, notebooks: list[Path], *, small_model: bool) -> dict[str, Any]:
    """The demo pipeline from an empty folder; seconds per step and in total."""
    root = WORK / f"patients_{patients}"
    shutil.rmtree(root, ignore_errors=True)
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    small = {"05_radiomics_model": SMALL_MODEL} if small_model else None
    params_file = write_params(root / "params.yaml", data_dir, notebooks, small)
    print(f"e2e: {patients} patients into {root}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    prepare_demo_data(data_dir, patients=patients, seed=seed)
    synth_s = time.perf_counter() - started
    result = run_notebooks(params_file, root / "reports", notebooks=notebooks, base_dir=root)
    total_s = time.perf_counter() - started
    record = json.loads((root / "reports" / "run.json").read_text(encoding="utf-8"))
    steps = {SYNTH_STEP: {"status": "ok", "seconds": round(synth_s, 1)}}
    for nb in record["notebooks"]:
        steps[nb["name"]] = {"status": nb["status"], "seconds": float(nb["duration_s"])}
    files = sum(1 for p in (data_dir / "dicom").rglob("*") if p.is_file())
    for nb in result.notebooks:
        print(f"  {nb.name}: {nb.status} in {nb.duration_s:.1f} s", file=sys.stderr, flush=True)
    return {
        "patients": patients,
        "dicom_files": files,
        "ok": result.ok,
        "steps": steps,
        "total_seconds": round(total_s, 1),
        "report": str((root / "reports" / "index.html").relative_to(WORK.parent.parent.parent)),
    }


def choose_factor(requested: float, base_seconds: float, budget_minutes: float) -> float:
    """The requested factor, or the largest whole one >= 2 whose linear estimate fits the budget."""
    if budget_minutes <= 0 or requested * base_seconds <= budget_minutes * 60:
        return requested
    return float(max(2, min(int(requested), int(budget_minutes * 60 // max(base_seconds, 1e-9)))))


def print_table(base: dict[str, Any], scaled: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Seconds per step at both sizes and the growth; returns the growth per step."""
    growth: dict[str, dict[str, float]] = {}
    steps = list(base["steps"])
    p0 = base["patients"]
    if scaled is None:
        print(f"{'step':28s} {'status':>7s} {f'{p0} pts s':>11s}")
        for step in steps:
            s = base["steps"][step]
            print(f"{step:28s} {s['status']:>7s} {s['seconds']:11.1f}")
        print(f"{'total (demo wall time)':28s} {'ok' if base['ok'] else 'FAILED':>7s} {base['total_seconds']:11.1f}")
        return growth
    p1 = scaled["patients"]
    patient_ratio = p1 / p0
    header = (
        f"{'step':28s} {f'{p0} pts s':>11s} {f'{p1} pts s':>11s} {'time ratio':>10s} "
        f"{'patient ratio':>13s} {'growth':>7s} {'status':>9s}"
    )
    print(header)
    print("-" * len(header))
    missing = {"status": "missing", "seconds": 0.0}
    rows = [(step, base["steps"][step], scaled["steps"].get(step, missing)) for step in steps]
    rows.append(
        (
            "total (demo wall time)",
            {"status": "ok" if base["ok"] else "failed", "seconds": base["total_seconds"]},
            {"status": "ok" if scaled["ok"] else "failed", "seconds": scaled["total_seconds"]},
        )
    )
    for step, a, b in rows:
        ratio = b["seconds"] / a["seconds"] if a["seconds"] > 0 else float("nan")
        growth[step] = {"time_ratio": ratio, "patient_ratio": patient_ratio, "growth": ratio / patient_ratio}
        status = a["status"] if a["status"] == b["status"] else f"{a['status']}/{b['status']}"
        print(
            f"{step:28s} {a['seconds']:11.1f} {b['seconds']:11.1f} {ratio:10.2f} {patient_ratio:13.2f} "
            f"{ratio / patient_ratio:7.2f} {status:>9s}"
        )
    print("growth = time ratio / patient ratio (1.0: linear in the cohort; < 1: fixed costs dominate)")
    return growth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, default=120, help="patients of the first run (default 120, the demo)")
    parser.add_argument("--factor", type=float, default=10.0, help="patients multiplier of the second run (default 10)")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=30.0,
        help="lower the factor when the linear estimate of the second run exceeds this (default 30; 0: never)",
    )
    parser.add_argument("--no-scaled", action="store_true", help="only the first run")
    parser.add_argument("--seed", type=int, default=0, help="synthetic extract seed (default 0)")
    parser.add_argument(
        "--notebooks", default="", help="comma-separated notebook stems to run (default: every numbered notebook)"
    )
    parser.add_argument(
        "--small-model", action="store_true", help="1 x 3 x 2 cross-validation, 100 bootstraps (for tiny cohorts)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the extracts too (the reports are always kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args(argv)

    available = discover_notebooks()
    wanted = [s.strip() for s in args.notebooks.split(",") if s.strip()]
    unknown = set(wanted) - {p.stem for p in available}
    if unknown:
        parser.error(f"unknown notebooks: {', '.join(sorted(unknown))}")
    notebooks = [p for p in available if not wanted or p.stem in wanted]
    load_start = os.getloadavg()[0]
    print(
        f"end to end ({', '.join(p.stem for p in notebooks)}): {args.patients} patients, seed {args.seed}, "
        f"{os.cpu_count()} cores, load average {load_start:.1f} at start",
        flush=True,
    )
    base = run_pipeline(args.patients, args.seed, notebooks, small_model=args.small_model)
    scaled = None
    factor = None
    if not args.no_scaled:
        factor = choose_factor(args.factor, base["total_seconds"], args.budget_minutes)
        if factor != args.factor:
            print(
                f"scaled run: {args.factor:g}x would take about {args.factor * base['total_seconds'] / 60:.0f} min "
                f"(linear estimate) > budget {args.budget_minutes:g} min; using {factor:g}x instead",
                flush=True,
            )
        scaled = run_pipeline(round(args.patients * factor), args.seed, notebooks, small_model=args.small_model)
    print(f"DICOM files: {base['dicom_files']}" + (f" vs {scaled['dicom_files']}" if scaled else ""))
    growth = print_table(base, scaled)
    load_end = os.getloadavg()[0]
    print(f"load average at end {load_end:.1f}")
    if args.json:
        figures = {
            "benchmark": "e2e",
            "notebooks": [p.stem for p in notebooks],
            "factor_requested": None if args.no_scaled else args.factor,
            "factor_used": factor,
            "budget_minutes": args.budget_minutes,
            "runs": [run for run in (base, scaled) if run is not None],
            "growth": growth,
            "ok": base["ok"] and (scaled is None or scaled["ok"]),
            "load_average": [load_start, load_end],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    if not args.keep:  # the extracts are large; the reports under benchmarks/_work/e2e/ stay for reading
        for run in (base, scaled):
            if run is not None:
                shutil.rmtree(WORK / f"patients_{run['patients']}" / "data", ignore_errors=True)
    return 0 if base["ok"] and (scaled is None or scaled["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())

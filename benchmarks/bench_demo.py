"""Warm rerun of the demo: ``pacs-workbench demo`` cold, again with nothing changed, and again with ``--force``.

Runs what ``pacs-workbench demo`` runs (the synthetic extract and key, every numbered notebook
with papermill, then the external site: its 01-03 and the validation of the demo's model package)
three times into one report folder under ``benchmarks/_work/demo/`` (never ``data/demo``), with
the default parameters pointed there:

* cold: from an empty folder;
* warm: again, nothing changed: every notebook and step is up to date and is not re-run
  (:mod:`pacs_workbench.runner.stamps`), so the wall time is the up-to-date checks and the run page;
* forced warm: again with ``force=True``: everything executes, on the notebooks' own
  content-hash caches (what a warm demo cost before the runner skipped unchanged notebooks).

The table gives each run's wall time, how many notebooks and steps executed and were reused,
the time of the up-to-date checks (hashing the inputs and outputs), then each notebook's
duration per run. Target: the warm rerun <= 60 s.

Usage: ``python benchmarks/bench_demo.py [--patients 120] [--external-patients N] [--notebooks LIST] [--json PATH]``
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

from bench_e2e import write_params  # the default parameters pointed at a folder, beside this script

from pacs_workbench.runner import discover_notebooks, prepare_demo_data, run_notebooks
from pacs_workbench.runner.demo import EXTERNAL_DIR, external_validation_step

WORK = Path(__file__).resolve().parent / "_work" / "demo"
WARM_TARGET_S = 60.0
RUNS = ("cold", "warm", "forced warm")
# The notebook tests' small cross-validation and training, for cohorts too small for the defaults.
SMALL = {
    "05_radiomics_model": {"repeats": 1, "outer_folds": 3, "inner_folds": 2, "bootstrap": 100, "cnn_epochs": 2},
    "04_segmentation": {"iterations": 40, "active_learning_seeds": 1, "active_learning_rounds": 1},
}


def run_once(
    root: Path, notebooks: list[Path], patients: int, external: int, seed: int, *, force: bool
) -> dict[str, Any]:
    """One demo run into ``root/reports``, as ``run_demo`` does it; its wall time and what ran."""
    data_dir = root / "data"
    started = time.perf_counter()
    prepare_demo_data(data_dir, patients, seed)
    steps = []
    if external > 0:
        package = data_dir / "model" / "package"
        steps.append(external_validation_step(data_dir / EXTERNAL_DIR, package, patients=external, seed=seed + 1,
                                              base_dir=root, force=force))  # fmt: skip
    result = run_notebooks(root / "params.yaml", root / "reports", notebooks=notebooks, base_dir=root,
                           followed_by=steps, force=force)  # fmt: skip
    wall = time.perf_counter() - started
    pages = [root / "reports" / "run.json", root / "reports" / EXTERNAL_DIR / "run.json"]
    records = [json.loads(page.read_text(encoding="utf-8")) for page in pages if page.is_file()]
    nested = records[1]["notebooks"] if external > 0 and len(records) > 1 else []
    # The external site's notebooks and validation count one by one; its row on the demo's page is their sum.
    units = [nb for nb in records[0]["notebooks"] if not (nested and nb["name"] == "07_external_validation")]
    units += [{**nb, "name": f"external {nb['name']}"} for nb in nested]
    return {
        "wall_s": round(wall, 1),
        "ok": result.ok,
        "executed": [nb["name"] for nb in units if nb["status"] != "not run" and not nb["reused_from"]],
        "reused": [nb["name"] for nb in units if nb["reused_from"]],
        "check_s": round(sum(float(r.get("up_to_date_check_s", 0.0)) for r in records), 2),
        "notebooks": {nb["name"]: _row(nb) for nb in units},
    }


def _row(record: dict[str, Any]) -> dict[str, Any]:
    """A notebook's status, seconds (a reused one's: those of the run that executed it) and whether reused."""
    return {"status": record["status"], "seconds": float(record["duration_s"]), "reused": bool(record["reused_from"])}


def print_table(runs: dict[str, dict[str, Any]]) -> None:
    """Each run's wall time and counts, then each notebook's seconds per run (reused: not executed)."""
    print(f"{'run':14s} {'wall s':>8s} {'executed':>9s} {'reused':>7s} {'checks s':>9s} {'status':>7s}")
    for name, run in runs.items():
        status = "ok" if run["ok"] else "FAILED"
        print(f"{name:14s} {run['wall_s']:8.1f} {len(run['executed']):9d} {len(run['reused']):7d} "
              f"{run['check_s']:9.2f} {status:>7s}")  # fmt: skip
    print()
    print(f"{'notebook':34s}" + "".join(f"{name + ' s':>15s}" for name in runs))
    for notebook in next(iter(runs.values()))["notebooks"]:
        cells = []
        for run in runs.values():
            row = run["notebooks"].get(notebook)
            cells.append("missing" if row is None else "reused" if row["reused"] else f"{row['seconds']:.1f}")
        print(f"{notebook:34s}" + "".join(f"{cell:>15s}" for cell in cells))
    warm = runs.get("warm")
    if warm is not None:
        verdict = "PASS" if warm["ok"] and warm["wall_s"] <= WARM_TARGET_S else "MISS"
        print(f"\nwarm rerun {warm['wall_s']:.1f} s (target <= {WARM_TARGET_S:.0f} s): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, default=120, help="patients of the extract (default 120, the demo)")
    parser.add_argument("--external-patients", type=int, default=None,
                        help="patients of the external site (default: half of --patients; 0: none)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="synthetic extract seed (default 0)")
    parser.add_argument("--notebooks", default="", help="comma-separated notebook stems (default: every one)")
    parser.add_argument("--keep", action="store_true", help="keep the extract (the reports are always kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args(argv)

    available = discover_notebooks()
    wanted = [s.strip() for s in args.notebooks.split(",") if s.strip()]
    if unknown := set(wanted) - {p.stem for p in available}:
        parser.error(f"unknown notebooks: {', '.join(sorted(unknown))}")
    notebooks = [p for p in available if not wanted or p.stem in wanted]
    external = args.patients // 2 if args.external_patients is None else args.external_patients
    if external and "05_radiomics_model" not in {p.stem for p in notebooks}:
        external = 0  # the external site is validated with 05's model package
    load_start = os.getloadavg()[0]
    print(f"demo ({', '.join(p.stem for p in notebooks)}): {args.patients} patients, external site {external}, "
          f"{os.cpu_count()} cores, load average {load_start:.1f} at start", flush=True)  # fmt: skip
    root = WORK / f"patients_{args.patients}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    write_params(root / "params.yaml", Path("data"), notebooks, SMALL if args.patients < 60 else None)
    runs = {}
    for name in RUNS:
        print(f"demo: {name} run", file=sys.stderr, flush=True)
        runs[name] = run_once(root, notebooks, args.patients, external, args.seed, force=name == "forced warm")
    print_table(runs)
    load_end = os.getloadavg()[0]
    print(f"load average at end {load_end:.1f}")
    ok = all(run["ok"] for run in runs.values())
    if args.json:
        figures = {
            "benchmark": "demo",
            "patients": args.patients,
            "external_patients": external,
            "notebooks": [p.stem for p in notebooks],
            "runs": runs,
            "warm_target_s": WARM_TARGET_S,
            "ok": ok,
            "load_average": [load_start, load_end],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    if not args.keep:  # the extract is large; the reports stay for reading
        shutil.rmtree(root / "data", ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

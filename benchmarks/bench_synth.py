"""Synthetic extract generation: wall and CPU time, serial against local worker processes.

Writes the extract for N patients (default 120, the demo size) under
benchmarks/_work/synth_<N>_w<workers>/ with ``workers=1`` (the baseline) and each other
worker count asked for, and prints one row per run: wall seconds, CPU seconds (this
process plus finished worker processes), files and MB written, files per second and the
wall-time ratio to the baseline. On a busy machine wall time follows the load; CPU
seconds do not. Usage::

    python benchmarks/bench_synth.py --patients 120 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

from pacs_workbench.synth import generate

WORK = Path(__file__).resolve().parent / "_work"


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args()

    counts = sorted(set(args.workers) | {1})
    rows = []
    for workers in counts:
        out = WORK / f"synth_{args.patients}_w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        summary = generate(out, patients=args.patients, seed=args.seed, workers=workers, progress=False)
        wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
        files = sum(summary["files"].values())
        rows.append((workers, wall, cpu, files, summary["bytes"] / 1e6))
    base = rows[0][1]
    print(f"synthetic extract, {args.patients} patients, seed {args.seed}")
    print(f"{'workers':>7} {'wall s':>8} {'cpu s':>8} {'files':>7} {'MB':>7} {'files/s':>8} {'vs 1':>6}")
    for workers, wall, cpu, files, mb in rows:
        print(f"{workers:>7} {wall:>8.1f} {cpu:>8.1f} {files:>7} {mb:>7.1f} {files / wall:>8.0f} {base / wall:>6.2f}")
    if args.json:
        figures = {
            "benchmark": "synth",
            "patients": args.patients,
            "runs": [
                {"workers": w, "wall_s": wall, "cpu_s": cpu, "files": files, "mb": mb, "files_per_s": files / wall,
                 "speedup": base / wall}
                for w, wall, cpu, files, mb in rows
            ],
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

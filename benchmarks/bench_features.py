"""Throughput of the radiomics feature stage: serial vs 2 local workers vs a cached rerun.

Writes N synthetic CT-like cases (a noisy soft-tissue sphere in a lung-like background, NIfTI)
to ``benchmarks/_work/features/``, extracts features with ``ct_default.yaml`` and prints
cases per minute with ratios against the serial run. Targets: >= 1.8x with 2 workers, and the
cached rerun >= 50x faster than the first (serial, cache-filling) run.

Usage: ``python benchmarks/bench_features.py [--cases 40] [--size 64] [--repeat 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from pacs_workbench.radiomics import PARAMS_DIR, extract_features

WORK = Path(__file__).resolve().parent / "_work" / "features"


def write_cases(folder: Path, n: int, size: int, seed: int = 0) -> pd.DataFrame:
    """``n`` spheres-with-noise volumes (size x size x size/2, 0.8 x 0.8 x 2 mm) and their masks."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size // 2, size, size)
    zz, yy, xx = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    dist = np.sqrt(((zz - centre[0]) * 2.0) ** 2 + ((yy - centre[1]) * 0.8) ** 2 + ((xx - centre[2]) * 0.8) ** 2)
    rows = []
    for i in range(n):
        radius = rng.uniform(0.25, 0.4) * size * 0.8
        inside = dist <= radius * (1 + 0.1 * np.sin(3 * np.arctan2(yy - centre[1], xx - centre[2])))
        image = rng.normal(-800, 60, shape)
        image[inside] = rng.normal(rng.uniform(0, 60), rng.uniform(20, 60), int(inside.sum()))
        img = sitk.GetImageFromArray(np.round(image).astype(np.int16))
        msk = sitk.GetImageFromArray(inside.astype(np.uint8))
        for item in (img, msk):
            item.SetSpacing((0.8, 0.8, 2.0))
        image_path, mask_path = folder / f"case{i:03d}_image.nii.gz", folder / f"case{i:03d}_mask.nii.gz"
        sitk.WriteImage(img, str(image_path))
        sitk.WriteImage(msk, str(mask_path))
        rows.append({"case_id": f"case{i:03d}", "image": str(image_path), "mask": str(mask_path)})
    return pd.DataFrame(rows)


def main() -> None:
    """Run the three measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=40, help="synthetic cases (default 40)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode; the best is reported (default 2)")
    parser.add_argument("--size", type=int, default=64, help="in-plane voxels per side (default 64)")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    cases = write_cases(WORK / "cases", args.cases, args.size)
    params = PARAMS_DIR / "ct_default.yaml"
    out = WORK / "features.parquet"

    # Best of --repeat runs per mode, serial and parallel interleaved: the machine is shared, and the
    # minimum is the least disturbed measurement. The first serial run fills the cache.
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    tables: dict[str, pd.DataFrame] = {}
    load_before = os.getloadavg()[0]

    def cpu_seconds() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def measure(name: str, **kwargs: object) -> None:
        cpu, start = cpu_seconds(), time.perf_counter()
        frame = extract_features(cases, params, progress=False, **kwargs)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        # Pool workers are reaped when the pool closes, so their CPU time is in RUSAGE_CHILDREN now.
        summary = {**frame.attrs["summary"], "cpu_seconds": cpu_seconds() - cpu}
        if name not in best or seconds < best[name][0]:
            best[name] = (seconds, summary)
        tables[name] = frame

    for repeat in range(args.repeat):
        if repeat == 0:
            measure("serial, 1 worker", out=out, workers=1)
        else:
            measure("serial, 1 worker", workers=1, cache="off")
        measure("parallel, 2 workers", workers=2, cache="off")
    for _ in range(args.repeat):
        measure("cached rerun", out=out, workers=1)

    reference = tables["serial, 1 worker"]
    for frame in tables.values():
        pd.testing.assert_frame_equal(reference, frame)
    runs = [(name, seconds, summary) for name, (seconds, summary) in best.items()]

    base = runs[0][1]
    print(
        f"\nradiomics features: {args.cases} cases, {args.size}x{args.size}x{args.size // 2} voxels, ct_default.yaml; "
        f"best of {args.repeat}; {os.cpu_count()} cores, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    # "busy" = summed per-case seconds / wall seconds: cases computed at once on average. Near 2 with
    # 2 workers means both were kept busy; a speed-up far below it means the cores were shared.
    # "cpu s" = CPU seconds of this process and its workers: equal CPU for serial and parallel means
    # the pool adds no work, so on two free cores the wall time halves.
    header = ("run", "seconds", "cases/min", "computed", "cached", "busy", "cpu s", "speed-up")
    print("{:24s} {:>9s} {:>10s} {:>9s} {:>7s} {:>5s} {:>7s} {:>9s}".format(*header))
    for name, seconds, summary in runs:
        busy = float(summary["compute_seconds"]) / seconds
        print(
            f"{name:24s} {seconds:9.2f} {60 * args.cases / seconds:10.1f} "
            f"{summary['computed']:9d} {summary['cached']:7d} {busy:5.2f} {summary['cpu_seconds']:7.2f} "
            f"{base / seconds:8.1f}x"
        )
    print(f"targets: 2 workers >= 1.8x (got {base / runs[1][1]:.2f}x); cached >= 50x (got {base / runs[2][1]:.0f}x)")
    breakdown = {name: time_breakdown(seconds, summary) for name, seconds, summary in runs}
    print_breakdown(breakdown)
    if args.json:
        keys = {"serial, 1 worker": "serial", "parallel, 2 workers": "parallel2", "cached rerun": "cached"}
        figures = {
            "benchmark": "features",
            "cases": args.cases,
            "size": args.size,
            "repeat": args.repeat,
            "runs": {
                keys[name]: {
                    "label": name,
                    "seconds": seconds,
                    "cases_per_min": 60 * args.cases / seconds,
                    "computed": int(summary["computed"]),
                    "cached": int(summary["cached"]),
                    "cpu_seconds": float(summary["cpu_seconds"]),
                    "speedup": base / seconds,
                }
                for name, seconds, summary in runs
            },
            "load_average": [load_before, os.getloadavg()[0]],
            "breakdown": {keys[name]: parts for name, parts in breakdown.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


def time_breakdown(seconds: float, summary: dict[str, Any]) -> dict[str, float]:
    """Where the wall time of one run went: the serial parts, and the compute phase per case.

    ``plan`` (read the table, hash the inputs, read the cache), ``assemble`` and ``write`` run
    in the calling process whatever the workers; in the compute phase, each worker builds its
    pyradiomics extractor once (``setup``), reads image and mask (``read``) and extracts
    (``extract``). ``executor`` is what the pool adds: compute wall time times the workers
    used, less the summed per-case seconds (process start-up, pickling, result transfer, idle
    workers at the end).
    """
    timings = summary.get("timings", {})
    compute = float(summary["compute_seconds"])
    setup, read = float(timings.get("setup_seconds", 0.0)), float(timings.get("read_seconds", 0.0))
    workers = max(1, int(timings.get("worker_processes", 1)))
    wall = float(timings.get("compute_wall_seconds", 0.0))
    return {
        "wall": seconds,
        "plan": float(timings.get("plan_seconds", 0.0)),
        "compute_wall": wall,
        "setup": setup,
        "read": read,
        "extract": compute - setup - read,
        "executor": max(0.0, wall * workers - compute) if compute else 0.0,
        "workers": workers,
        "assemble": float(timings.get("assemble_seconds", 0.0)),
        "write": float(timings.get("write_seconds", 0.0)),
    }


def print_breakdown(breakdown: dict[str, dict[str, float]]) -> None:
    """The breakdown table: serial parts in seconds, compute parts in summed worker seconds."""
    print("\nwhere the time went (seconds; setup, read, extract and executor summed over the workers)")
    columns = ("plan", "compute_wall", "setup", "read", "extract", "executor", "workers", "assemble", "write", "wall")
    print(f"{'run':24s}" + "".join(f"{c:>13s}" for c in columns))
    for name, parts in breakdown.items():
        cells = [f"{int(parts[c]):13d}" if c == "workers" else f"{parts[c]:13.2f}" for c in columns]
        print(f"{name:24s}" + "".join(cells))


if __name__ == "__main__":
    main()

"""Throughput of the preprocessing stage: header scan, serial vs 2 local workers, cached rerun.

Generates a synthetic extract (``pacs_workbench.synth.generate``) in
``benchmarks/_work/preprocess/``, scans it for cases, preprocesses every case to 1 mm
isotropic (linear, IBSI grid, 10 mm crop) serially and with 2 workers into separate folders,
then reruns the serial folder (everything cached). Prints cases per minute with ratios against
the serial run. With ``PACS_WORKBENCH_REFERENCE`` set it also times the IBSI CT phantom
(60 slices, 204 x 201): DICOM load, RTSTRUCT rasterization and a 2 mm resampling.

Usage: ``python benchmarks/bench_preprocess.py [--patients 12] [--repeat 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from pacs_workbench.preprocess import load_mask, load_series, preprocess_cases, preprocess_image, scan_tree

WORK = Path(__file__).resolve().parent / "_work" / "preprocess"
PARAMS = {"target_spacing_mm": [1.0, 1.0, 1.0], "crop_margin_mm": 10.0}


def _best(run: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def _fresh(folder: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, default=12, help="synthetic patients (default 12)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode; the best is reported (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args()

    from pacs_workbench.synth import generate

    data = WORK / "data"
    generate(data, patients=args.patients, seed=0)
    scan_s, scan = _best(lambda: scan_tree(data / "dicom", progress=False), args.repeat)
    cases = scan.cases
    n = len(cases)
    serial_dir, parallel_dir = WORK / "serial", WORK / "parallel"
    serial_s, _ = _best(
        lambda: preprocess_cases(cases, serial_dir, PARAMS, workers=1, progress=False),
        args.repeat, _fresh(serial_dir),
    )
    parallel_s, _ = _best(
        lambda: preprocess_cases(cases, parallel_dir, PARAMS, workers=2, progress=False),
        args.repeat, _fresh(parallel_dir),
    )
    cached_s, cached = _best(
        lambda: preprocess_cases(cases, serial_dir, PARAMS, workers=1, progress=False), args.repeat
    )
    assert bool(cached["cached"].all()), "rerun did not come from the cache"
    rows = [
        {"step": f"scan_tree ({scan.n_files} files)", "seconds": scan_s, "cases_per_min": float("nan"),
         "ratio": float("nan")},
        {"step": "preprocess, 1 worker", "seconds": serial_s, "cases_per_min": 60 * n / serial_s, "ratio": 1.0},
        {"step": "preprocess, 2 workers", "seconds": parallel_s, "cases_per_min": 60 * n / parallel_s,
         "ratio": serial_s / parallel_s},
        {"step": "rerun, all cached", "seconds": cached_s, "cases_per_min": 60 * n / cached_s,
         "ratio": serial_s / cached_s},
    ]
    reference = os.environ.get("PACS_WORKBENCH_REFERENCE")
    if reference:
        root = Path(reference) / "ibsi" / "ct_radiomics_phantom" / "dicom"
        load_s, image = _best(lambda: load_series(root / "image"), args.repeat)
        mask_s, mask = _best(lambda: load_mask(root / "mask" / "DCM_RS_00060.dcm", image), args.repeat)
        resample_s, _ = _best(
            lambda: preprocess_image(image, mask, {"target_spacing_mm": 2.0, "crop_margin_mm": None}),
            args.repeat,
        )
        for step, seconds in (("IBSI phantom: load 60 slices", load_s), ("IBSI phantom: rasterize RTSTRUCT", mask_s),
                              ("IBSI phantom: resample to 2 mm", resample_s)):
            rows.append({"step": step, "seconds": seconds, "cases_per_min": float("nan"), "ratio": float("nan")})
    print(f"{n} cases from {args.patients} synthetic patients")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.json:
        figures = {
            "benchmark": "preprocess",
            "patients": args.patients,
            "cases": n,
            "rows": [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""Index throughput from a PACS (Orthanc: DICOMweb and DIMSE) beside the folder crawl, local and Dask.

Generates a synthetic extract once (``pacs_workbench.synth.generate``, cached under
benchmarks/_work/), starts Orthanc on loopback with the DICOMweb plugin the way the test
fixture does (``tests/orthanc.py``: generated configuration in a temp folder, free ports),
loads the extract through its REST API (not timed) and times, in this process:

* ``build_index`` of the extract's folder with ``workers=1`` (the baseline), ``workers=2``
  and on a Dask ``LocalCluster`` with 2 single-threaded worker processes (cluster start-up
  not timed);
* ``build_index`` of ``dicomweb+http://...``: QIDO-RS for studies and series, WADO-RS
  series metadata for the full instance headers (the index's PACS path);
* the QIDO-RS instance search alone (``query_instances_dicomweb(metadata=False)``, paged,
  no index written): what a lighter query costs the PACS;
* ``build_index`` of ``dimse://ORTHANC@...``: C-FIND at study, series and image level.

Every timed run writes a fresh index. It prints instances, seconds, instances per second and
the ratio to the baseline as a table. Orthanc serves from one process on the same 2 cores,
so PACS figures say how fast the workbench can ask, not how fast a clinical PACS answers
(the rate limit is off here; keep it on against a clinical PACS). Usage::

    python benchmarks/bench_pacs.py --patients 8 [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests/orthanc.py holds the Orthanc start/stop logic

from pacs_workbench.cohort.index import build_index  # noqa: E402
from pacs_workbench.dicom.net.dicomweb import query_instances_dicomweb  # noqa: E402
from tests.orthanc import (  # noqa: E402
    OUR_AET,
    OrthancServer,
    find_dicomweb_plugin,
    find_orthanc,
    free_port,
    launch,
)

WORK = REPO / "benchmarks" / "_work"


def extract(patients: int) -> Path:
    """The synthetic extract for ``patients`` (generated once, then reused)."""
    from pacs_workbench.synth import generate

    out = WORK / f"pacs_extract_{patients}"
    marker = out / ".complete"
    if not marker.exists():
        shutil.rmtree(out, ignore_errors=True)
        generate(out, patients=patients, seed=11, progress=False)
        marker.write_text("ok")
    return out


def start(workdir: Path) -> OrthancServer:
    """Orthanc on loopback (as the test fixture starts it); exits with a message when not installed."""
    binary, plugin = find_orthanc(), find_dicomweb_plugin()
    if not (binary and plugin):
        sys.exit("Orthanc with the DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    server = OrthancServer(
        workdir=workdir,
        http_port=free_port(),
        dicom_port=free_port(),
        our_aet=OUR_AET,
        our_port=free_port(),
        binary=binary,
        plugin=plugin,
    )
    launch(server, binary, plugin)
    return server


def timed(run: Callable[[], int], repeat: int) -> tuple[int, float]:
    """Instances and the best wall-clock seconds of ``repeat`` runs."""
    best, count = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = run()
        best = min(best, time.perf_counter() - started)
    return count, best


def qido_only(url: str) -> int:
    """Instances found by the paged QIDO-RS instance search alone (no metadata, no index)."""
    return sum(1 for _ in query_instances_dicomweb(url, metadata=False, progress=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8, help="synthetic patients (default 8)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per phase; the best is shown (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    args = parser.parse_args(argv)

    data = extract(args.patients)
    files = sorted((data / "dicom").rglob("*.dcm"))
    scratch = Path(tempfile.mkdtemp(prefix="bench_pacs_", dir=WORK))
    print(
        f"PACS index benchmark: {args.patients} patients, {len(files)} instances, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    server = start(scratch / "orthanc")
    results: list[tuple[str, int, float]] = []
    runs = iter(range(1_000_000))

    def index(sources: list[str], workers: int = 1, scheduler: str | None = None) -> Callable[[], int]:
        def run() -> int:
            out = scratch / f"index_{next(runs)}"
            summary = build_index(sources, out, workers=workers, scheduler=scheduler, progress=False)
            shutil.rmtree(out, ignore_errors=True)
            return int(summary["instances"])

        return run

    try:
        started = time.perf_counter()
        server.upload(files)
        print(f"  loaded into Orthanc in {time.perf_counter() - started:.1f} s (not part of the table)", flush=True)
        folder = str(data / "dicom")
        phases: list[tuple[str, Callable[[], int]]] = [
            ("folder, workers=1 (baseline)", index([folder], workers=1)),
            ("folder, workers=2", index([folder], workers=2)),
        ]
        for label, run in phases:
            results.append((label, *timed(run, args.repeat)))
            print(f"  {label}: {results[-1][2]:.2f} s", file=sys.stderr, flush=True)
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster:
            label = "folder, Dask 2 workers"
            results.append((label, *timed(index([folder], scheduler=cluster.scheduler_address), args.repeat)))
            print(f"  {label}: {results[-1][2]:.2f} s", file=sys.stderr, flush=True)
        pacs_phases: list[tuple[str, Callable[[], int]]] = [
            ("DICOMweb: QIDO-RS + WADO-RS metadata", index([server.dicomweb_url], workers=1)),
            ("DICOMweb: QIDO-RS instances only*", lambda: qido_only(server.dicomweb_url)),
            ("DIMSE: C-FIND study/series/image", index([server.dimse_url], workers=1)),
        ]
        for label, run in pacs_phases:
            results.append((label, *timed(run, args.repeat)))
            print(f"  {label}: {results[-1][2]:.2f} s", file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    base = results[0][2] / max(results[0][1], 1)
    header = f"{'phase':40s} {'instances':>9s} {'wall s':>7s} {'inst/s':>7s} {'x baseline':>10s}"
    print(header)
    print("-" * len(header))
    for label, n, seconds in results:
        per_instance = seconds / max(n, 1)
        print(f"{label:40s} {n:9d} {seconds:7.2f} {n / seconds:7.0f} {base / per_instance:10.2f}")
    print("* rows from the search only (fewer attributes), no index written")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if args.json:
        figures = {
            "benchmark": "pacs",
            "patients": args.patients,
            "phases": [
                {"label": label, "instances": n, "wall_s": seconds, "instances_per_s": n / seconds,
                 "x_baseline": base / (seconds / max(n, 1))}
                for label, n, seconds in results
            ],
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

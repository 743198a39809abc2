"""Index throughput and memory: build_index against a plain pydicom loop.

Generates N small synthetic CT instances once (64x64, a realistic header with a private
block and a sequence; cached under benchmarks/_work/), then, in the same run, times

* ``loop``: a plain single-process pydicom loop: ``dcmread(stop_before_pixels=True)``,
  the same row dicts built with ``ds.get(keyword)``, one ``pandas.to_parquet``;
* ``build_index`` with ``workers=1`` and ``workers=2``;
* ``build_index`` on a Dask ``LocalCluster`` with 2 single-threaded worker processes
  (cluster start-up not timed);
* a rerun of ``build_index`` with nothing changed.

It prints wall-clock seconds, instances per second and the ratio to the loop, and the
CPU seconds of the phase's process tree with the same ratio (CPU time is what a busy,
shared machine does not distort).

Each phase runs in a fresh subprocess; the parent samples the memory of that process
and all its children (psutil, proportional set size: pages shared between forked workers
count once) and reports the peak. Usage::

    python benchmarks/bench_index.py --instances 10000
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

WORK = Path(__file__).resolve().parent / "_work"
PER_SERIES = 100
SERIES_PER_PATIENT = 4
_UID_BASE = 10**38  # "2.25.<39 digits>": fixed width, no leading zero
_PLACE_UID = f"2.25.{_UID_BASE}".encode()
_PLACE_NUMBER = b"000000"
_PLACE_Z = b"+0000.00"


# --- data --------------------------------------------------------------------------------------


def _series_template(series: int, patient: int, rng: np.random.Generator) -> bytes:
    """One series' file bytes with fixed-width placeholders for the per-slice values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(_PLACE_UID.decode())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = _PLACE_UID.decode()
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        setattr(ds, keyword, "20200101")
    for keyword in ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime"):
        setattr(ds, keyword, "101112")
    ds.AccessionNumber = f"ACC{patient:07d}"
    ds.Modality = "CT"
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = "Synthetic Hospital"
    ds.InstitutionAddress = "1 Example Street"
    ds.ReferringPhysicianName = "Synthetic^Referrer"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = f"Thorax 1.0 B70f {series}"
    ds.ManufacturerModelName = "SOMATOM Definition AS"
    ds.PatientName = f"Synthetic^Patient{patient}"
    ds.PatientID = f"BENCH{patient:06d}"
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "F"
    ds.PatientAge = "070Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.SpacingBetweenSlices = "1.0"
    ds.ProtocolName = "Chest routine"
    ds.ConvolutionKernel = ["B70f", "3"]
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = f"2.25.{_UID_BASE * 2 + patient}"
    ds.SeriesInstanceUID = f"2.25.{_UID_BASE * 3 + series}"
    ds.StudyID = "1"
    ds.SeriesNumber = series % 100 + 1
    ds.InstanceNumber = _PLACE_NUMBER.decode()
    ds.ImagePositionPatient = ["-100.00", "-100.00", _PLACE_Z.decode()]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = f"2.25.{_UID_BASE * 4 + patient}"
    ds.SliceLocation = _PLACE_Z.decode()
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 64
    ds.Columns = 64
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.add_new(0x00291010, "LO", "SIEMENS CT VA0  COAD")
    ds.add_new(0x00291011, "OB", rng.bytes(300))
    item = Dataset()
    item.CodeValue = "CTCHEST"
    item.CodingSchemeDesignator = "99LOCAL"
    item.CodeMeaning = "CT chest"
    ds.RequestAttributesSequence = Sequence([item])
    ds.PixelData = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def generate(n: int) -> Path:
    """N instances under benchmarks/_work/index_ct_<N>/ (reused when complete)."""
    root = WORK / f"index_ct_{n}"
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    written = 0
    series = 0
    while written < n:
        patient = series // SERIES_PER_PATIENT
        template = _series_template(series, patient, rng)
        folder = root / f"p{patient:05d}" / f"s{series:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(PER_SERIES, n - written)):
            data = template.replace(_PLACE_UID, f"2.25.{_UID_BASE + written}".encode())
            data = data.replace(_PLACE_NUMBER, f"{i + 1:06d}".encode())
            data = data.replace(_PLACE_Z, f"{-1.0 * i:+08.2f}".encode())
            (folder / f"{i + 1:04d}.dcm").write_bytes(data)
            written += 1
        series += 1
    marker.write_text(str(n))
    print(f"generated {n} instances in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return root


# --- phases (each in its own process) ----------------------------------------------------------


def _tree_cpu() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class _Clock:
    """Wall-clock and CPU seconds of one timed section.

    CPU time does not depend on what else runs on the machine, so its ratio to the loop
    stays meaningful on a shared, busy machine where wall-clock ratios do not.
    """

    def __enter__(self) -> _Clock:
        self._wall, self._cpu = time.perf_counter(), _tree_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _tree_cpu() - self._cpu


def _phase_loop(data: Path, out: Path) -> tuple[int, _Clock]:
    import pandas as pd

    from pacs_workbench.dicom.read import to_python
    from pacs_workbench.dicom.schema import KEYWORD_TAGS, RowSource, values_to_row

    keywords = list(KEYWORD_TAGS)
    rows: list[dict[str, Any]] = []
    with _Clock() as clock:
        for folder, _, files in os.walk(data):
            for name in files:
                path = os.path.join(folder, name)
                st = os.stat(path)
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                except Exception:
                    continue
                values = {k: to_python(ds.get(k)) for k in keywords}
                meta = ds.file_meta
                source = RowSource(path, st.st_size, st.st_mtime_ns, str(meta.get("TransferSyntaxUID", "")))
                rows.append(values_to_row(values, source))
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(out / "instances.parquet")
    return len(rows), clock


def _phase_index(data: Path, out: Path, workers: int, dask_workers: int) -> tuple[int, _Clock]:
    import pyarrow  # noqa: F401  (imported before the clock starts, as the loop imports pandas)

    from pacs_workbench.cohort.index import build_index

    if not dask_workers:
        with _Clock() as clock:
            summary = build_index([data], out, workers=workers, progress=False)
        return summary["instances"], clock
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=dask_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        # Cluster start-up and the workers' first imports are not part of indexing (forked
        # local workers inherit them; pyarrow imports pandas on its first conversion).
        with Client(cluster) as client:
            for module in ("pandas", "pacs_workbench.cohort.index"):
                client.run(importlib.import_module, module)
        with _Clock() as clock:
            summary = build_index([data], out, scheduler=cluster.scheduler_address, progress=False)
    return summary["instances"], clock


def _phase_rerun(data: Path, out: Path) -> tuple[int, _Clock]:
    from pacs_workbench.cohort.index import build_index

    build_index([data], out, workers=1, progress=False)
    with _Clock() as clock:
        summary = build_index([data], out, workers=1, progress=False)
    if summary["read"]:
        raise RuntimeError("the rerun read files although nothing changed")
    return summary["instances"], clock


def run_phase(args: argparse.Namespace) -> None:
    data, out = Path(args.data), Path(args.out)
    if args.phase == "loop":
        n, clock = _phase_loop(data, out)
    elif args.phase == "rerun":
        n, clock = _phase_rerun(data, out)
    else:
        n, clock = _phase_index(data, out, args.workers, args.dask_workers)
    print(json.dumps({"n": n, "elapsed": clock.wall, "cpu": clock.cpu}))


# --- driver ------------------------------------------------------------------------------------


def _tree_memory(process: psutil.Process) -> int:
    """Proportional set size of a process and its children (shared pages counted once)."""
    total = 0
    try:
        procs = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            continue
    return total


def measure(phase: str, data: Path, out: Path, **options: int) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--phase", phase, "--data", str(data), "--out", str(out)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        proc = psutil.Process(child.pid)
        while not stop.is_set():
            peak = max(peak, _tree_memory(proc))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    stop.set()
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"phase {phase} failed with exit code {child.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_mb"] = peak / 2**20
    return result


PHASES: dict[str, tuple[str, str, dict[str, int]]] = {
    "loop": ("pydicom loop (1 process)", "loop", {}),
    "workers1": ("build_index workers=1", "index", {"workers": 1}),
    "workers2": ("build_index workers=2", "index", {"workers": 2}),
    "dask2": ("build_index Dask 2 workers", "index", {"dask_workers": 2}),
    "rerun": ("rerun, nothing changed", "rerun", {}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000, help="synthetic instances (default 10000)")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the key figures to this JSON file")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--dask-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        run_phase(args)
        return 0
    chosen = [name.strip() for name in args.phases.split(",") if name.strip()]
    unknown = set(chosen) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")

    data = generate(args.instances)
    outs = WORK / f"index_out_{args.instances}"
    load_start = os.getloadavg()[0]
    print(
        f"index benchmark: {args.instances} instances, {os.cpu_count()} cores, "
        f"load average {load_start:.1f} at start",
        flush=True,
    )
    results = []
    names = []
    for name in PHASES:
        if name not in chosen:
            continue
        label, phase, options = PHASES[name]
        result = measure(phase, data, outs / name, **options)
        results.append((label, result))
        names.append(name)
        print(f"  {label}: {result['elapsed']:.2f} s", file=sys.stderr, flush=True)
    loop = results[0][1] if "loop" in chosen else None
    wall_base = loop["elapsed"] / loop["n"] if loop else float("nan")
    cpu_base = loop["cpu"] / loop["n"] if loop else float("nan")
    header = (
        f"{'phase':30s} {'instances':>9s} {'wall s':>7s} {'inst/s':>7s} {'x loop':>7s} "
        f"{'CPU s':>6s} {'CPU x loop':>10s} {'peak PSS MB':>11s}"
    )
    print(header)
    print("-" * len(header))
    for label, result in results:
        n = max(result["n"], 1)
        wall, cpu = result["elapsed"], result["cpu"]
        print(
            f"{label:30s} {result['n']:9d} {wall:7.2f} {n / wall:7.0f} {wall_base / (wall / n):7.2f} "
            f"{cpu:6.2f} {cpu_base / (cpu / n):10.2f} {result['peak_mb']:11.0f}"
        )
    load_end = os.getloadavg()[0]
    print(f"load average at end {load_end:.1f}")
    shutil.rmtree(outs, ignore_errors=True)
    if args.json:
        phases = {}
        for name, (label, result) in zip(names, results, strict=True):
            n = max(result["n"], 1)
            phases[name] = {
                "label": label,
                "instances": result["n"],
                "wall_s": result["elapsed"],
                "cpu_s": result["cpu"],
                "instances_per_s": n / result["elapsed"],
                "x_loop_wall": wall_base / (result["elapsed"] / n) if loop else None,
                "x_loop_cpu": cpu_base / (result["cpu"] / n) if loop and result["cpu"] > 0 else None,
                "peak_pss_mb": result["peak_mb"],
            }
        figures = {
            "benchmark": "index",
            "instances": args.instances,
            "cores": os.cpu_count(),
            "phases": phases,
            "load_average": [load_start, load_end],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

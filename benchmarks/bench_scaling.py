"""Scaling: cost of each data stage against cohort size, and its growth exponent.

For each ``--patients`` size (default 120, 360 and 1,200) the synthetic CT extract is made with
:func:`pacs_workbench.runner.prepare_demo_data` under ``benchmarks/_work/scaling/patients_N/data``
(stage ``synth``; made once, then reused: its first cost is kept in ``synth.json`` beside it and
reported with ``reused``), then the data stages run as the notebooks call them, with the
parameters of ``notebooks/params/default.yaml`` over each notebook's own defaults:

* ``index``: :func:`~pacs_workbench.cohort.build_index` on ``data/dicom`` (01_cohort);
* ``deid``: :func:`~pacs_workbench.deid.deidentify_folder` with ``data/project.key`` and the
  notebook's options (research default: OCR and blanking of burned-in text) (02_deid_audit);
* ``audit``: :func:`~pacs_workbench.deid.audit_folder` against the source with the planted PHI
  list ``data/truth/phi_values.txt`` (02_deid_audit);
* ``preprocess``: :func:`~pacs_workbench.preprocess.find_cases` and
  :func:`~pacs_workbench.preprocess.preprocess_cases` on the de-identified tree (03_preprocessing);
* ``features``: :func:`~pacs_workbench.radiomics.extract_features` with
  ``notebooks/params/radiomics/ct_default.yaml`` (05_radiomics_model).

Every stage writes into a folder of its own that is deleted first, so nothing is a cached rerun.
The smallest size runs on 2 local worker processes; from ``--dask-from`` patients on (default: every
size but the smallest) a ``dask.distributed.LocalCluster`` of 2 single-threaded worker processes on
loopback runs every stage (``scheduler=``). Per stage and size the table gives the items (files or
cases), wall seconds, CPU seconds of the whole process tree (this process, its live descendants such
as the Dask workers, and the children reaped during the stage), seconds per item and the load
average; then the growth exponent of each stage between consecutive sizes,
``log(t2/t1) / log(n2/n1)`` (1.0: linear in the cohort; below 1: sublinear), on wall and on CPU
seconds, and the least-squares slope over all sizes on a log-log scale. Report only: no target.

Usage::

    python benchmarks/bench_scaling.py [--patients 120 360 1200] [--dask-from N]
        [--json PATH] [--plot PATH]

``--json`` writes the figures (read by ``run_all.py``); ``--plot`` draws seconds per stage against
patients (:func:`plots.plot_scaling`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import itertools
import json
import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "scaling"
NOTEBOOKS = REPO / "notebooks"
RADIOMICS_PARAMS = NOTEBOOKS / "params" / "radiomics" / "ct_default.yaml"
STAGES = ("synth", "index", "deid", "audit", "preprocess", "features")
SEED = 0
WORKERS = 2


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Timing:
    """What one stage cost at one size."""

    stage: str
    items: int
    wall_s: float
    cpu_s: float
    load_before: float
    load_after: float
    reused: bool = False

    @property
    def s_per_item(self) -> float:
        return self.wall_s / self.items if self.items else float("nan")


def _tree_cpu() -> tuple[float, dict[int, float], float]:
    """CPU seconds of this process, of each live descendant (by pid), and of the reaped children.

    Returns
    -------
    tuple
        ``(own, descendants, reaped)``: user + system seconds of this process; the same for each
        live descendant (Dask nannies and workers, pool workers); and ``RUSAGE_CHILDREN``, which
        holds the children (and their own waited-for descendants) that ended and were waited for.
    """
    import psutil

    me = psutil.Process()
    own = me.cpu_times()
    live: dict[int, float] = {}
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # ended between the listing and the reading
            times = child.cpu_times()
            live[child.pid] = times.user + times.system
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.user + own.system, live, reaped.ru_utime + reaped.ru_stime


def _cpu_between(before: tuple[float, dict[int, float], float], after: tuple[float, dict[int, float], float]) -> float:
    """CPU seconds the process tree spent between two :func:`_tree_cpu` readings.

    A descendant alive at both readings adds its difference, one born since adds all it has; one
    that ended is in the reaped total with its whole life, so what it had spent before the first
    reading is taken off again. (A grandchild whose parent is not this process is reaped by that
    parent; its time reaches ``RUSAGE_CHILDREN`` only through a child that is itself reaped.)
    """
    own = after[0] - before[0]
    live = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in after[1].items())
    gone = sum(cpu for pid, cpu in before[1].items() if pid not in after[1])
    reaped = after[2] - before[2]
    return own + live + max(0.0, reaped - gone)


@contextlib.contextmanager
def measured(stage: str, sink: list[Timing]) -> Iterator[dict[str, Any]]:
    """Time the block as ``stage``; the block puts ``items`` (and ``reused``) into the yielded dict."""
    info: dict[str, Any] = {"items": 0, "reused": False}
    load_before = os.getloadavg()[0]
    cpu_before = _tree_cpu()
    started = time.perf_counter()
    yield info
    wall = time.perf_counter() - started
    cpu = _cpu_between(cpu_before, _tree_cpu())
    timing = Timing(stage, int(info["items"]), wall, cpu, load_before, os.getloadavg()[0], bool(info["reused"]))
    sink.append(timing)
    print(
        f"  {stage:<11s}{timing.items:>8d} items {wall:9.1f} s wall {cpu:9.1f} s CPU "
        f"{timing.s_per_item:9.4f} s/item  load {load_before:.2f} -> {timing.load_after:.2f}"
        + ("  (reused)" if timing.reused else ""),
        flush=True,
    )


# --- the extract --------------------------------------------------------------------------------


def make_extract(patients: int, sink: list[Timing]) -> Path:
    """The synthetic extract for ``patients`` (stage ``synth``); its first cost is kept beside it.

    :func:`~pacs_workbench.runner.prepare_demo_data` reuses an extract it made (its ``demo.json``
    marker); a reused one reports the wall and CPU seconds recorded in ``synth.json`` when it was
    made, flagged ``reused``, so reruns of the larger sizes still have a ``synth`` figure.
    """
    from pacs_workbench.runner import prepare_demo_data

    root = WORK / f"patients_{patients}"
    data_dir = root / "data"
    record = root / "synth.json"
    made = (data_dir / "demo.json").is_file()
    timings: list[Timing] = []
    with measured("synth", timings) as info:
        prepare_demo_data(data_dir, patients=patients, seed=SEED)
        info["items"] = count_files(data_dir / "dicom")
        info["reused"] = made
    timing = timings[0]
    if made and record.is_file():
        first = json.loads(record.read_text(encoding="utf-8"))
        timing.wall_s, timing.cpu_s = first["wall_s"], first["cpu_s"]
        timing.load_before, timing.load_after = first["load_before"], first["load_after"]
    else:
        record.write_text(json.dumps(asdict(timing), indent=2), encoding="utf-8")
    sink.append(timing)
    return data_dir


def count_files(folder: Path) -> int:
    """Regular files under ``folder``."""
    return sum(1 for p in folder.rglob("*") if p.is_file())


# --- the stages, as the notebooks call them -----------------------------------------------------


def notebook_defaults(stem: str) -> dict[str, Any]:
    """A notebook's parameters: its own defaults overlaid by ``default.yaml`` (shared, then its section)."""
    import papermill as pm

    from pacs_workbench.core.params import load_params, notebook_params

    values: dict[str, Any] = {}
    for name, spec in pm.inspect_notebook(str(NOTEBOOKS / f"{stem}.ipynb")).items():
        with contextlib.suppress(ValueError, SyntaxError):  # not a literal: the notebook computes it
            values[name] = ast.literal_eval(str(spec.get("default", "")))
    values.update(notebook_params(load_params(), stem))
    return values


def fresh(folder: Path) -> Path:
    """``folder``, emptied: a stage never reuses what an earlier run wrote."""
    for path in (folder, folder.with_name(folder.name + ".quarantine")):
        shutil.rmtree(path, ignore_errors=True)
    return folder


@dataclass
class Context:
    """One size's folders and how its stages run."""

    root: Path
    data: Path
    workers: int
    scheduler: str | None

    @property
    def deid(self) -> Path:
        return self.root / "deid"


def stage_index(ctx: Context, info: dict[str, Any]) -> None:
    """01_cohort: ``build_index`` on the extract's DICOM folder."""
    from pacs_workbench.cohort import build_index

    summary = build_index(
        [ctx.data / "dicom"], fresh(ctx.root / "index"), workers=ctx.workers, scheduler=ctx.scheduler, progress=False
    )
    info["items"] = int(summary["instances"]) + int(summary["errors"])


def stage_deid(ctx: Context, info: dict[str, Any]) -> None:
    """02_deid_audit: ``deidentify_folder`` with the project key and the notebook's options (OCR included)."""
    from pacs_workbench.deid import deidentify_folder

    options = notebook_defaults("02_deid_audit").get("options") or None
    summary = deidentify_folder(
        ctx.data / "dicom", fresh(ctx.deid), key_file=ctx.data / "project.key", options=options,
        workers=ctx.workers, scheduler=ctx.scheduler, progress=False,
    )  # fmt: skip
    info["items"] = int(summary["files"])
    info["note"] = f"{summary['written']} written, {summary['quarantined']} quarantined"


def stage_audit(ctx: Context, info: dict[str, Any]) -> None:
    """02_deid_audit: ``audit_folder`` of the de-identified tree against the source and the planted PHI."""
    from pacs_workbench.deid import audit_folder

    audit = audit_folder(
        ctx.deid, source=ctx.data / "dicom", phi_list=ctx.data / "truth" / "phi_values.txt",
        workers=ctx.workers, scheduler=ctx.scheduler, progress=False,
    )  # fmt: skip
    info["items"] = int(audit["files_checked"]) + int(audit.get("other_files_checked", 0))
    info["note"] = f"{audit['images_ocr_checked']} images OCR-checked, ok={audit['ok']}"


def stage_preprocess(ctx: Context, info: dict[str, Any]) -> None:
    """03_preprocessing: the cases of the de-identified tree, preprocessed with the notebook's parameters."""
    from pacs_workbench.preprocess import PreprocessParams, find_cases, preprocess_cases

    values = notebook_defaults("03_preprocessing")
    cases = find_cases(
        ctx.deid, key_file=values.get("key_file") or None, workers=ctx.workers, scheduler=ctx.scheduler, progress=False
    )
    result = preprocess_cases(
        cases, fresh(ctx.root / "preprocessed"), PreprocessParams.from_mapping(values),
        workers=ctx.workers, scheduler=ctx.scheduler, progress=False,
    )  # fmt: skip
    info["items"] = len(cases)
    info["note"] = f"{len(result)} rows"


def stage_features(ctx: Context, info: dict[str, Any]) -> None:
    """05_radiomics_model: ``extract_features`` with ``ct_default.yaml``, its cache in a fresh folder."""
    from pacs_workbench.radiomics import extract_features

    out = fresh(ctx.root / "features")
    features = extract_features(
        ctx.root / "preprocessed" / "cases.parquet", RADIOMICS_PARAMS, out / "features.parquet",
        workers=ctx.workers, scheduler=ctx.scheduler, progress=False,
    )  # fmt: skip
    summary = features.attrs["summary"]
    info["items"] = int(summary["cases"])
    info["note"] = f"{summary['computed']} computed, {summary['cached']} cached, {summary['failed']} failed"


DATA_STAGES: dict[str, Callable[[Context, dict[str, Any]], None]] = {
    "index": stage_index,
    "deid": stage_deid,
    "audit": stage_audit,
    "preprocess": stage_preprocess,
    "features": stage_features,
}


@contextlib.contextmanager
def parallelism(dask: bool) -> Iterator[str | None]:
    """``None`` (local processes), or the address of a 2-worker LocalCluster on loopback while it runs."""
    if not dask:
        yield None
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def run_size(patients: int, dask: bool) -> dict[str, Any]:
    """Every stage at one size; the figures of that size."""
    load_start = os.getloadavg()
    timings: list[Timing] = []
    notes: dict[str, str] = {}
    print(f"{patients} patients: load average {_load(load_start)} at start", flush=True)
    data_dir = make_extract(patients, timings)
    with parallelism(dask) as scheduler:
        path = f"Dask LocalCluster, {WORKERS} workers at {scheduler}" if scheduler else f"local, workers={WORKERS}"
        print(f"{patients} patients: {path}", flush=True)
        ctx = Context(WORK / f"patients_{patients}", data_dir, WORKERS, scheduler)
        for stage, run in DATA_STAGES.items():
            with measured(stage, timings) as info:
                run(ctx, info)
            notes[stage] = str(info.get("note", ""))
    load_end = os.getloadavg()
    print(f"{patients} patients: load average {_load(load_end)} at end", flush=True)
    return {
        "patients": patients,
        "path": "dask" if dask else "local",
        "path_detail": path,
        "load_average_start": list(load_start),
        "load_average_end": list(load_end),
        "stages": {t.stage: {**asdict(t), "s_per_item": t.s_per_item, "note": notes.get(t.stage, "")} for t in timings},
    }


def _load(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


# --- growth -------------------------------------------------------------------------------------


def exponent(n1: float, t1: float, n2: float, t2: float) -> float:
    """``log(t2/t1) / log(n2/n1)``: 1.0 when cost grows in proportion to size (NaN when undefined)."""
    if min(n1, n2, t1, t2) <= 0 or n1 == n2:
        return float("nan")
    return math.log(t2 / t1) / math.log(n2 / n1)


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``log t`` on ``log n`` (NaN with fewer than two usable points)."""
    logs = [(math.log(n), math.log(t)) for n, t in points if n > 0 and t > 0]
    if len({x for x, _ in logs}) < 2:
        return float("nan")
    mx = sum(x for x, _ in logs) / len(logs)
    my = sum(y for _, y in logs) / len(logs)
    return sum((x - mx) * (y - my) for x, y in logs) / sum((x - mx) ** 2 for x, _ in logs)


def growth(sizes: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage: the exponent between consecutive sizes and the log-log slope, on wall and CPU seconds."""
    ordered = sorted(sizes, key=lambda s: s["patients"])
    result: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        rows = [(s["patients"], s["stages"][stage]) for s in ordered if stage in s["stages"]]
        pairs = [
            {
                "from": n1,
                "to": n2,
                "wall": exponent(n1, a["wall_s"], n2, b["wall_s"]),
                "cpu": exponent(n1, a["cpu_s"], n2, b["cpu_s"]),
            }
            for (n1, a), (n2, b) in itertools.pairwise(rows)
        ]
        result[stage] = {
            "pairs": pairs,
            "slope_wall": slope([(n, r["wall_s"]) for n, r in rows]),
            "slope_cpu": slope([(n, r["cpu_s"]) for n, r in rows]),
        }
    return result


def print_tables(sizes: Sequence[dict[str, Any]], exponents: dict[str, dict[str, Any]]) -> None:
    """The cost table (size by stage) and the growth exponents."""
    header = f"{'patients':>8} {'path':<6} {'stage':<11}{'items':>8}{'wall s':>10}{'CPU s':>10}{'s/item':>10}  load"
    print("\n" + header + "\n" + "-" * (len(header) + 14))
    for size in sorted(sizes, key=lambda s: s["patients"]):
        for stage, r in size["stages"].items():
            print(
                f"{size['patients']:>8} {size['path']:<6} {stage:<11}{r['items']:>8}{r['wall_s']:>10.1f}"
                f"{r['cpu_s']:>10.1f}{r['s_per_item']:>10.4f}  {r['load_before']:.2f} -> {r['load_after']:.2f}"
                + ("  (reused; first run's cost)" if r["reused"] else "")
            )
        print(
            f"{size['patients']:>8} load average (1/5/15 min) {_load(size['load_average_start'])} at start, "
            f"{_load(size['load_average_end'])} at end"
        )
    steps = [f"{p['from']}->{p['to']}" for p in next(iter(exponents.values()))["pairs"]]
    header = f"{'stage':<11}" + "".join(f"{s + ' wall':>16}{s + ' CPU':>16}" for s in steps)
    header += f"{'slope wall':>12}{'slope CPU':>11}"
    print("\ngrowth exponent log(t2/t1)/log(n2/n1) (1.0: linear; < 1: sublinear); slope: least squares, log-log")
    print(header + "\n" + "-" * len(header))
    for stage, e in exponents.items():
        cells = "".join(f"{p['wall']:>16.2f}{p['cpu']:>16.2f}" for p in e["pairs"])
        print(f"{stage:<11}{cells}{e['slope_wall']:>12.2f}{e['slope_cpu']:>11.2f}")


# --- main ---------------------------------------------------------------------------------------


def write_outputs(sizes: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The figures as JSON (``--json``) and the plot (``--plot``); returns the figures."""
    figures = {
        "benchmark": "scaling",
        "seed": SEED,
        "workers": WORKERS,
        "dask_from": args.dask_from,
        "cores": os.cpu_count(),
        "sizes": sorted(sizes, key=lambda s: s["patients"]),
        "exponents": growth(sizes),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    if args.plot and len(sizes) >= 2:
        sys.path.insert(0, str(HERE))
        from plots import plot_scaling

        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_scaling([figures], args.plot.parent, args.plot.name)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run every size, print the tables, write ``--json`` and ``--plot``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, nargs="+", default=[120, 360, 1200], help="cohort sizes")
    parser.add_argument(
        "--dask-from",
        type=int,
        default=None,
        help="Dask from this many patients on (default: all but the smallest size)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--plot", type=Path, default=None, help="draw seconds per stage against patients (PNG)")
    parser.add_argument(
        "--resume", action="store_true", help="keep the sizes already in --json and run only the missing ones"
    )
    args = parser.parse_args(argv)
    patients = sorted(set(args.patients))
    if args.dask_from is None:
        args.dask_from = patients[1] if len(patients) > 1 else patients[0] + 1
    sizes: list[dict[str, Any]] = []
    if args.resume and args.json and args.json.is_file():
        sizes = [s for s in json.loads(args.json.read_text(encoding="utf-8"))["sizes"] if s["patients"] in patients]
        print(f"resumed: {', '.join(str(s['patients']) for s in sizes) or 'nothing'} from {args.json}", flush=True)
    print(f"scaling: {patients} patients, seed {SEED}, {os.cpu_count()} cores; Dask from {args.dask_from}", flush=True)
    for n in patients:
        if any(s["patients"] == n for s in sizes):
            continue
        sizes.append(run_size(n, dask=n >= args.dask_from))
        write_outputs(sizes, args)  # each size as it ends: a failure later keeps what was measured
    figures = write_outputs(sizes, args)
    print_tables(figures["sizes"], figures["exponents"])
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--extract-only"]:  # make the extracts ahead of a timed run
        for n in sys.argv[2:]:
            make_extract(int(n), [])
        sys.exit(0)
    sys.exit(main())

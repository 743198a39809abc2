"""Run every benchmark and write ``benchmarks/RESULTS.md`` (what ``make bench`` runs).

Each benchmark script runs in its own subprocess, one after the other. Its standard output
(the table it prints) goes into RESULTS.md verbatim; its key figures come from the small JSON
file it writes when given ``--json PATH``, and each
target's PASS/MISS line is computed from those figures. Nothing in RESULTS.md is typed in:
the machine description, date, commit and load averages are read at run time too.

Targets (the workbench's promises):

* index: ``build_index`` with 2 workers at least 2.5x the instances per second of a plain
  single-process pydicom loop over the same files, at 10k and at 100k instances (8x at 100k), and peak
  memory that does not grow with the number of files (peak at 100k at most 1.2x the peak
  at 10k, for every ``build_index`` phase);
* de-identification: at least 3x dicognito's files per second on the same files and
  workers on the full demo extract (120 patients, OCR of the burned-in screens included),
  and no planted PHI string left in the workbench's output;
* features: at least 1.8x the serial cases per minute with 2 workers, and a cached rerun
  at least 50x faster than the first run;
* segmentation: median held-out Dice >= 0.80 on nodules >= 6 mm with 40 % of patients
  labelled, inference <= 2 s per volume, training plus inference <= 120 s cold (the
  active-learning simulation beside it is reported, no target);
* listen: from the last instance of a study received to its SR stored in Orthanc, median
  <= 10 s and p95 <= 20 s per study, for one study and for five sent at once (warm model);
* warm rerun (``bench_demo.py``): ``pacs-workbench demo`` run again with nothing changed <= 60 s (every
  notebook up to date, not re-run); the cold run and a forced warm run are reported beside it;
* CNN and hybrid (``bench_deep.py``): training over all folds and repeats of the demo <= 150 s cold on
  2 cores (about 0 cached), CNN out-of-fold AUC >= 0.80, the hybrid at least as good as LightGBM within
  the CI of the paired difference;
* radMLBench: the script's own target (median AUC difference to the published value within
  0.05, no dataset more than 0.05 above it);
* end to end, synthetic extract, preprocessing, explain, PACS, scaling (cost of each data stage at
  120, 360 and 1,200 patients, the larger sizes on a Dask LocalCluster, and its growth exponent):
  reported, no target.

Usage::

    python benchmarks/run_all.py                     # the make bench sizes
    python benchmarks/run_all.py --with-radmlbench   # every radMLBench dataset (~20 min more)
    python benchmarks/run_all.py --only index,features --out /tmp/RESULTS.md
    python benchmarks/run_all.py --smoke --out /tmp/RESULTS.md   # tiny sizes: do the scripts run?
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from judges import (  # the targets and their judges, beside this script
    DEEP_CNN_AUC,
    DEEP_COLD_S,
    DEID_SPEEDUP,
    DEMO_WARM_S,
    FEATURES_CACHED,
    FEATURES_PARALLEL,
    INDEX_MEMORY_GROWTH,
    INDEX_SPEEDUP,
    INDEX_SPEEDUP_LARGEST,
    LISTEN_MEDIAN_S,
    LISTEN_P95_S,
    RADML_MARGIN,
    SEGMENT_COLD_S,
    SEGMENT_DICE,
    SEGMENT_INFERENCE_S,
    Benchmark,
    Run,
    Verdict,
    explain_summary,
    judge_deep,
    judge_deid,
    judge_demo,
    judge_e2e,
    judge_features,
    judge_index,
    judge_listen,
    judge_radml,
    judge_segment,
    pacs_summary,
    preprocess_summary,
    report_only,
    scaling_summary,
    synth_summary,
)
from results_page import describe_machine, render  # RESULTS.md, beside this script

from pacs_workbench.core.files import write_json_atomic, write_text_atomic
from pacs_workbench.runner.pages import git_commit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "RESULTS.md"
DEFAULT_JSON_DIR = HERE / "_work" / "results"
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference"

# A few small radMLBench datasets by default (the full set takes about 20 minutes).
RADML_DEFAULT = "Ahn2021,HNSCC,LNDb,Song2020"


# --- runs ---------------------------------------------------------------------------------------


def _pump(stream: IO[bytes], sink: IO[bytes] | None, chunks: list[bytes]) -> None:
    """Copy a child's output to ``sink`` as it comes (progress stays live) and keep it."""
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        chunks.append(chunk)
        if sink is not None:
            sink.write(chunk)
            sink.flush()


def _tail(text: str, lines: int = 15) -> str:
    """The last lines of a stream, progress-bar redraws (carriage returns) collapsed."""
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join([line for line in kept if line.strip()][-lines:])


def _others_running(script: str) -> list[int]:
    """Process ids of other runs of a benchmark script (they share its folders under benchmarks/_work/)."""
    import psutil

    mine = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info["pid"] not in mine and any(arg.endswith(f"benchmarks/{script}") for arg in cmdline):
            found.append(int(proc.info["pid"]))
    return found


def wait_for_others(script: str, limit_s: float) -> None:
    """Wait while another run of ``script`` is going: both would write the same work folders."""
    started = time.monotonic()
    while (others := _others_running(script)) and time.monotonic() - started < limit_s:
        print(f"waiting: {script} is already running (pids {others})", file=sys.stderr, flush=True)
        time.sleep(30)


def execute(run: Run, json_dir: Path, env: dict[str, str], *, echo: bool, timeout_s: float) -> None:
    """Run one benchmark script in a subprocess; fill in its output, exit code, time and figures."""
    json_path = json_dir / f"{Path(run.script).stem}_{re.sub(r'[^A-Za-z0-9]+', '_', run.label).strip('_')}.json"
    json_path.unlink(missing_ok=True)
    command = [sys.executable, str(HERE / run.script), *run.args]
    if run.json:
        command += ["--json", str(json_path)]
    print(f"\n=== {run.command}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    # Own session: a timeout ends the script together with the worker processes it started.
    child = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    out: list[bytes] = []
    err: list[bytes] = []
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, sys.stdout.buffer if echo else None, out), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, sys.stderr.buffer if echo else None, err), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        child.wait(timeout=timeout_s if timeout_s > 0 else None)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        err.append(f"\nstopped after the {timeout_s / 60:.0f} min timeout\n".encode())
    for pump in pumps:
        pump.join()
    run.seconds = time.perf_counter() - started
    run.returncode = child.returncode
    run.stdout = b"".join(out).decode("utf-8", "replace")
    run.stderr_tail = _tail(b"".join(err).decode("utf-8", "replace"))
    if run.json and json_path.is_file():
        try:
            run.figures = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            run.figures = None


def draw_plot(bench: Benchmark, folder: Path) -> str | None:
    """The benchmark's plot (:mod:`plots`) beside RESULTS.md, or ``None``; a failed plot is only reported."""
    sys.path.insert(0, str(HERE))
    from plots import PLOTS

    draw = PLOTS.get(bench.name)
    figures = [run.figures for run in bench.runs if run.figures]
    if draw is None or not figures:
        return None
    try:
        return draw(figures, folder)
    except Exception as exc:  # a plot is a convenience: RESULTS.md is written without it
        print(f"=== {bench.name}: no plot ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
        return None


def _takes_json(script: str) -> bool:
    """Whether a script documents a ``--json`` option (checked for scripts owned elsewhere)."""
    proc = subprocess.run(
        [sys.executable, str(HERE / script), "--help"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return proc.returncode == 0 and "--json" in proc.stdout


def _needs_dicognito() -> str:
    found = importlib.util.find_spec("dicognito") is not None
    return "" if found else "dicognito is not installed (a benchmark-only dependency: pip install dicognito)"


def _needs_orthanc() -> str:
    if shutil.which("Orthanc") is None:
        return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)"
    return ""


def _needs_orthanc_and_storescu() -> str:
    missing = "" if shutil.which("storescu") else "dcmtk's storescu is not installed (apt-get install dcmtk)"
    return _needs_orthanc() or missing


def _needs_reference(env: dict[str, str]) -> Callable[[], str]:
    def check() -> str:
        return "" if env.get("PACS_WORKBENCH_REFERENCE") else "PACS_WORKBENCH_REFERENCE is not set"

    return check


# --- the plan -----------------------------------------------------------------------------------


def plan(args: argparse.Namespace, env: dict[str, str]) -> list[Benchmark]:
    """Every benchmark with the sizes of this mode (``--smoke``: tiny), in the order RESULTS.md lists them."""
    sizes = _sizes(args)
    return [*_target_benchmarks(sizes), *_report_benchmarks(args.smoke), _radml_benchmark(sizes, env)]


def _sizes(args: argparse.Namespace) -> dict[str, Any]:
    """Each script's size arguments in this mode."""
    smoke = args.smoke
    index_sizes = [100, 200] if smoke else [10_000, 100_000]
    # Smoke: every phase once, then only what the memory comparison needs.
    index_phases = [[], ["--phases", "loop,workers1,workers2"]] if smoke else [[], []]
    deid_args = ["--patients", "1", "--repeat", "1"] if smoke else ["--patients", "120", "--repeat", "2"]
    features_args = ["--cases", "4", "--size", "24", "--repeat", "1"] if smoke else ["--cases", "40", "--repeat", "2"]
    e2e_args = (
        ["--patients", "1", "--factor", "2", "--budget-minutes", "0", "--notebooks", "01_cohort"]
        if smoke
        else ["--patients", "120", "--factor", str(args.e2e_factor), "--budget-minutes", str(args.e2e_budget)]
    )
    segment_args = (
        ["--patients", "3", "--iterations", "10", "--al-seeds", "1", "--al-rounds", "1", "--al-step", "1",
         "--al-iterations", "10"]
        if smoke
        else []
    )  # fmt: skip
    listen_args = ["--single", "1", "--batches", "1"] if smoke else []
    # Smoke: two patients through 01-03 (no model, so no external site); else the demo itself.
    demo_args = (
        ["--patients", "2", "--external-patients", "0", "--notebooks", "01_cohort,02_deid_audit,03_preprocessing"]
        if smoke
        else ["--patients", "120"]
    )
    deep_args = (
        ["--synthetic", "24", "--repeats", "1", "--outer-folds", "3", "--inner-folds", "2", "--bootstrap", "100",
         "--epochs", "2", "--crop-size", "12"]
        if smoke
        else []
    )  # fmt: skip
    radml: list[str] = []
    if args.with_radmlbench:
        radml = []
    elif smoke:
        radml = ["--datasets", "Fusco2022", "--repeats", "1", "--outer-folds", "3", "--inner-folds", "2"]
    else:
        radml = ["--datasets", RADML_DEFAULT]
    return {
        "index_sizes": index_sizes,
        "index_phases": index_phases,
        "deid": deid_args,
        "features": features_args,
        "e2e": e2e_args,
        "demo": demo_args,
        "segment": segment_args,
        "listen": listen_args,
        "deep": deep_args,
        "radml": radml,
    }


def _target_benchmarks(sizes: dict[str, Any]) -> list[Benchmark]:
    """The benchmarks with a target of the workbench's (PASS/MISS), radMLBench apart."""
    index_sizes, index_phases = sizes["index_sizes"], sizes["index_phases"]
    deid_args, features_args, e2e_args = sizes["deid"], sizes["features"], sizes["e2e"]
    segment_args = sizes["segment"]
    return [
        Benchmark(
            "index",
            "Index",
            f"build_index with 2 workers >= {INDEX_SPEEDUP}x the instances per second of a single-process pydicom "
            f"loop, at every size, and >= {INDEX_SPEEDUP_LARGEST}x at {index_sizes[-1]:,}; peak memory flat (every "
            f"build_index phase at most {INDEX_MEMORY_GROWTH}x from "
            f"{index_sizes[0]:,} to {index_sizes[-1]:,} instances)",
            [
                Run(f"{n} instances", "bench_index.py", ["--instances", str(n), *phases])
                for n, phases in zip(index_sizes, index_phases, strict=True)
            ],
            judge_index,
        ),
        Benchmark(
            "features",
            "Radiomics features",
            f"2 workers >= {FEATURES_PARALLEL}x the serial cases per minute; cached rerun >= {FEATURES_CACHED:.0f}x "
            "faster than the first run",
            [Run("features", "bench_features.py", features_args)],
            judge_features,
        ),
        Benchmark(
            "e2e",
            "End to end (pacs-workbench demo)",
            "report only: wall time per notebook at the demo cohort and at a multiple of it",
            [Run("e2e", "bench_e2e.py", e2e_args)],
            judge_e2e,
        ),
        Benchmark(
            "demo",
            "Warm rerun (pacs-workbench demo)",
            f"the demo run again with nothing changed <= {DEMO_WARM_S:.0f} s (cold and forced warm runs reported)",
            [Run("demo", "bench_demo.py", sizes["demo"])],
            judge_demo,
        ),
        Benchmark(
            "deid",
            "De-identification",
            f">= {DEID_SPEEDUP}x dicognito's files per second on the same files and workers; 0 planted PHI strings "
            "left in the workbench's output",
            [Run("deid", "bench_deid.py", deid_args)],
            judge_deid,
            _needs_dicognito,
        ),
        Benchmark(
            "segment",
            "Segmentation",
            f"median held-out Dice >= {SEGMENT_DICE} on nodules >= 6 mm; train + inference <= {SEGMENT_COLD_S:.0f} s "
            f"cold; inference <= {SEGMENT_INFERENCE_S:.0f} s per volume (active learning reported)",
            [Run("segment", "bench_segment.py", segment_args)],
            judge_segment,
        ),
        Benchmark(
            "listen",
            "Scoring incoming studies (pacs-workbench listen)",
            f"last instance received to SR stored in Orthanc, per study: median <= {LISTEN_MEDIAN_S:.0f} s and "
            f"p95 <= {LISTEN_P95_S:.0f} s, for 1 study and for 5 sent at once, warm model",
            [Run("listen", "bench_listen.py", sizes["listen"])],
            judge_listen,
            _needs_orthanc_and_storescu,
        ),
        Benchmark(
            "deep",
            "CNN and hybrid beside radiomics",
            f"CNN + hybrid training over all folds and repeats of the demo <= {DEEP_COLD_S:.0f} s cold (about 0 "
            f"cached); CNN out-of-fold AUC >= {DEEP_CNN_AUC}; hybrid at least as good as LightGBM within the CI",
            [Run("deep", "bench_deep.py", sizes["deep"])],
            judge_deep,
        ),
    ]


def _report_benchmarks(smoke: bool) -> list[Benchmark]:
    """The benchmarks that report figures without a target."""
    return [
        Benchmark(
            "synth",
            "Synthetic extract",
            "report only",
            [Run("synth", "bench_synth.py", ["--patients", "2" if smoke else "48", "--workers", "1", "2"])],
            report_only(synth_summary),
        ),
        Benchmark(
            "preprocess",
            "Preprocessing",
            "report only",
            [Run("preprocess", "bench_preprocess.py", ["--patients", "1" if smoke else "12"])],
            report_only(preprocess_summary),
        ),
        Benchmark(
            "explain",
            "Explain (TreeSHAP)",
            "report only",
            [
                Run(
                    "explain",
                    "bench_explain.py",
                    ["--cases", "100", "--features", "10", "--repeat", "1"] if smoke else [],
                )
            ],
            report_only(explain_summary),
        ),
        Benchmark(
            "scaling",
            "Scaling with the cohort",
            "report only: growth exponent of each data stage (1.0: linear in the patients)",
            [Run("scaling", "bench_scaling.py", ["--patients", "3", "6", "--dask-from", "6"] if smoke else [])],
            report_only(scaling_summary),
        ),
        Benchmark(
            "pacs",
            "Index from a PACS (Orthanc)",
            "report only",
            [Run("pacs", "bench_pacs.py", ["--patients", "1" if smoke else "8"])],
            report_only(pacs_summary),
            _needs_orthanc,
        ),
    ]


def _radml_benchmark(sizes: dict[str, Any], env: dict[str, str]) -> Benchmark:
    """Modeling against radMLBench's published AUCs (needs the reference data)."""
    radml = sizes["radml"]
    return Benchmark(
        "radmlbench",
        "Modeling against radMLBench",
        f"median LightGBM AUC - published AUC within {RADML_MARGIN}; no dataset more than {RADML_MARGIN} above "
        "the published AUC",
        [Run("radmlbench", "radmlbench.py", radml)],
        judge_radml,
        _needs_reference(env),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: do the scripts run? (figures mean nothing)")
    parser.add_argument("--only", default="", help="comma-separated benchmarks to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument(
        "--with-radmlbench", action="store_true", help=f"every radMLBench dataset (default: {RADML_DEFAULT})"
    )
    parser.add_argument("--e2e-factor", type=float, default=10.0, help="patients multiplier of the scaled demo run")
    parser.add_argument(
        "--e2e-budget", type=float, default=30.0, help="minutes the scaled demo run may take by linear estimate"
    )
    parser.add_argument("--timeout-minutes", type=float, default=240.0, help="per script run (0: none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (default benchmarks/RESULTS.md)")
    parser.add_argument("--json-dir", type=Path, default=DEFAULT_JSON_DIR, help="where the scripts' JSON figures go")
    parser.add_argument("--quiet", action="store_true", help="do not echo the scripts' output")
    args = parser.parse_args(argv)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not env.get("PACS_WORKBENCH_REFERENCE") and DEFAULT_REFERENCE.is_dir():
        env["PACS_WORKBENCH_REFERENCE"] = str(DEFAULT_REFERENCE)  # as .ci/run sets it
    benchmarks = plan(args, env)
    names = [b.name for b in benchmarks]
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = (only | skip) - set(names)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))} (known: {', '.join(names)})")
    chosen = [b for b in benchmarks if (not only or b.name in only) and b.name not in skip]

    args.json_dir.mkdir(parents=True, exist_ok=True)
    context: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "load_start": os.getloadavg(),
        "reference": env.get("PACS_WORKBENCH_REFERENCE", ""),
    }
    started = time.perf_counter()
    for bench in chosen:
        if bench.requires and (reason := bench.requires()):
            bench.verdict = Verdict("SKIPPED", reason)
            print(f"=== {bench.name}: skipped: {reason}", file=sys.stderr, flush=True)
            continue
        for run in bench.runs:
            if run.json is None:
                run.json = _takes_json(run.script)
            wait_for_others(run.script, args.timeout_minutes * 60)
            execute(run, args.json_dir, env, echo=not args.quiet, timeout_s=args.timeout_minutes * 60)
        bench.verdict = bench.judge(bench.runs)
        bench.plot = draw_plot(bench, args.out.parent)
        print(f"=== {bench.name}: {bench.verdict.status}: {bench.verdict.result}", file=sys.stderr, flush=True)
    context.update(
        ended=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        load_end=os.getloadavg(),
        seconds=time.perf_counter() - started,
    )
    write_text_atomic(args.out, render(chosen, context, describe_machine(), smoke=args.smoke))
    summary = {
        **context,
        "smoke": args.smoke,
        "benchmarks": {
            b.name: {
                "verdict": b.verdict.status if b.verdict else "SKIPPED",
                "result": b.verdict.result if b.verdict else "",
                "runs": [{"command": r.command, "exit": r.returncode, "seconds": r.seconds, "figures": r.figures}
                         for r in b.runs],
            }
            for b in chosen
        },
    }  # fmt: skip
    write_json_atomic(args.json_dir / "results.json", summary, indent=2, default=str)
    print(f"\nwrote {args.out}", file=sys.stderr)
    for bench in chosen:
        verdict = bench.verdict or Verdict("SKIPPED", "")
        print(f"{bench.name:12s} {verdict.status:9s} {verdict.result}")
    broken = [b.name for b in chosen if b.verdict and b.verdict.status in {"ERROR", "FAILED", "UNPARSED"}]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

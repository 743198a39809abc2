"""The benchmarks' targets and how ``run_all.py`` judges a benchmark's runs against them.

Each ``judge_*`` takes the runs of one benchmark (:class:`Run`: the command, its exit code, its
printed table and the figures of its ``--json`` file) and returns a :class:`Verdict`: PASS or
MISS against the target (the constants below), REPORT for a benchmark without one, ERROR when a
run failed or wrote no figures. The targets are described in ``run_all.py``'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

INDEX_SPEEDUP = 2.5
INDEX_SPEEDUP_LARGEST = 8.0  # at the largest size (100k instances in make bench)
INDEX_MEMORY_GROWTH = 1.2
DEID_SPEEDUP = 3.0
FEATURES_PARALLEL = 1.8
FEATURES_CACHED = 50.0
RADML_MARGIN = 0.05
SEGMENT_DICE = 0.80
SEGMENT_COLD_S = 120.0
SEGMENT_INFERENCE_S = 2.0
LISTEN_MEDIAN_S = 10.0
LISTEN_P95_S = 20.0
DEEP_COLD_S = 150.0
DEEP_CNN_AUC = 0.80
DEMO_WARM_S = 60.0

@dataclass
class Run:
    """One invocation of a benchmark script and what it left."""

    label: str
    script: str
    args: list[str]
    json: bool | None = True  # the script takes --json PATH (None: ask its --help)
    returncode: int | None = None
    seconds: float = 0.0
    stdout: str = ""
    stderr_tail: str = ""
    figures: dict[str, Any] | None = None

    @property
    def command(self) -> str:
        return " ".join(["python", f"benchmarks/{self.script}", *self.args])

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Verdict:
    """The outcome of a benchmark against its target."""

    status: str  # PASS, MISS, REPORT, FAILED, ERROR, UNPARSED
    result: str  # one line for the summary table
    details: list[str] = field(default_factory=list)




@dataclass
class Benchmark:
    """A benchmark: its runs, its target and how to judge the runs against it."""

    name: str
    title: str
    target: str
    runs: list[Run]
    judge: Callable[[list[Run]], Verdict]
    requires: Callable[[], str] | None = None  # returns why it cannot run here, or ""
    verdict: Verdict | None = None
    plot: str | None = None  # a PNG beside RESULTS.md (plots.py), when a curve says more


def incomplete(runs: list[Run]) -> Verdict | None:
    """An ERROR verdict when a run failed or left no figures, else None."""
    for run in runs:
        if not run.ok:
            return Verdict("ERROR", f"`{run.command}` exited with {run.returncode}", [f"```\n{run.stderr_tail}\n```"])
        if run.json and run.figures is None:
            return Verdict("ERROR", f"`{run.command}` wrote no figures")
    return None


def judge_index(runs: list[Run]) -> Verdict:
    """2-worker speed-up over the loop at every size; peak memory from the smallest to the largest size."""
    if failed := incomplete(runs):
        return failed
    figures = sorted((r.figures for r in runs if r.figures), key=lambda f: f["instances"])
    details, results = [], []
    fast = True
    for fig in figures:
        phases = fig["phases"]
        w2 = phases.get("workers2")
        if not w2 or w2.get("x_loop_wall") is None:
            return Verdict("ERROR", f"{fig['instances']} instances: no 2-worker or loop phase")
        target = INDEX_SPEEDUP_LARGEST if len(figures) >= 2 and fig is figures[-1] else INDEX_SPEEDUP
        fast &= w2["x_loop_wall"] >= target
        results.append(f"{w2['x_loop_wall']:.2f}x at {fig['instances']:,}")
        dask = phases.get("dask2")
        dask_text = f"; Dask 2 workers {dask['x_loop_wall']:.2f}x" if dask and dask.get("x_loop_wall") else ""
        details.append(
            f"{fig['instances']:,} instances: build_index with 2 workers {w2['x_loop_wall']:.2f}x the loop's "
            f"instances per second (wall clock; {w2['x_loop_cpu']:.2f}x per CPU second){dask_text}; "
            f"target >= {target}x: {'met' if w2['x_loop_wall'] >= target else 'not met'}"
        )
    flat: bool | None = None
    if len(figures) >= 2:
        small, large = figures[0], figures[-1]
        growths = []
        for name in ("workers1", "workers2", "dask2", "loop"):
            a, b = small["phases"].get(name), large["phases"].get(name)
            if not (a and b):
                continue
            growth = b["peak_pss_mb"] / a["peak_pss_mb"]
            if name != "loop":
                growths.append(growth)
            details.append(
                f"peak memory, {a['label']}: {a['peak_pss_mb']:.0f} MB at {small['instances']:,}, "
                f"{b['peak_pss_mb']:.0f} MB at {large['instances']:,} ({growth:.2f}x)"
                + (" (the baseline, for contrast)" if name == "loop" else "")
            )
        if growths:
            flat = max(growths) <= INDEX_MEMORY_GROWTH
            results.append(f"peak memory {max(growths):.2f}x from {small['instances']:,} to {large['instances']:,}")
            details.append(
                f"flat memory target (every build_index phase <= {INDEX_MEMORY_GROWTH}x): "
                f"{'met' if flat else 'not met'}"
            )
    if flat is None:
        details.append("flat memory not judged: needs runs at two sizes")
    status = "PASS" if fast and flat else "MISS"
    return Verdict(status, "2 workers vs loop: " + ", ".join(results), details)


def deid_rows(run: Run) -> list[dict[str, Any]]:
    """The rows of bench_deid.py's table, from the JSON it writes."""
    rows = (run.figures or {}).get("rows")
    return list(rows) if isinstance(rows, list) else []


def judge_deid(runs: list[Run]) -> Verdict:
    """Workbench vs dicognito files per second on all files; PHI left in the workbench's output."""
    if failed := incomplete(runs):
        return failed
    run = runs[0]
    rows = deid_rows(run)
    ours = {r["corpus"]: r for r in rows if r["tool"] == "workbench"}
    theirs = {r["corpus"]: r for r in rows if r["tool"] == "dicognito"}
    if "all files" not in ours:
        return Verdict("UNPARSED", "no workbench row for 'all files' in the figures")
    main = ours["all files"]
    leaks = sum(r["leaked"] for r in ours.values())
    details = [
        f"{corpus}: workbench {r['files_per_s']:.1f} files/s, {r['ratio']:.2f}x dicognito (wall clock; "
        f"{r['ratio_cpu']:.2f}x per CPU second); PHI strings left: workbench {r['leaked']} of {r['phi_strings']}, "
        f"dicognito {theirs[corpus]['leaked'] if corpus in theirs else '?'} of {r['phi_strings']}"
        for corpus, r in ours.items()
    ]
    fast, clean = main["ratio"] >= DEID_SPEEDUP, leaks == 0
    details.append(f"speed target (all files, >= {DEID_SPEEDUP}x): {'met' if fast else 'not met'}")
    details.append(f"leak target (0 PHI strings left on every corpus): {'met' if clean else 'not met'}")
    fig = run.figures or {}
    if fig.get("load_average"):
        before, after = fig["load_average"]
        details.append(
            f"{fig.get('patients', '?')} patients, {fig.get('workers', '?')} workers; load average (1 min) "
            f"{before:.2f} before, {after:.2f} after"
        )
    return Verdict(
        "PASS" if fast and clean else "MISS",
        f"{main['ratio']:.2f}x dicognito (all files); {leaks} PHI strings left",
        details,
    )


def judge_features(runs: list[Run]) -> Verdict:
    """2-worker speed-up and cached-rerun speed-up over the serial first run."""
    if failed := incomplete(runs):
        return failed
    fig = runs[0].figures or {}
    parallel, cached = fig["runs"]["parallel2"]["speedup"], fig["runs"]["cached"]["speedup"]
    fast, cache_ok = parallel >= FEATURES_PARALLEL, cached >= FEATURES_CACHED
    details = [
        f"2 workers: {parallel:.2f}x serial (target >= {FEATURES_PARALLEL}x: {'met' if fast else 'not met'}); "
        f"CPU seconds serial {fig['runs']['serial']['cpu_seconds']:.1f}, 2 workers "
        f"{fig['runs']['parallel2']['cpu_seconds']:.1f}",
        f"cached rerun: {cached:.0f}x the first run (target >= {FEATURES_CACHED:.0f}x: "
        f"{'met' if cache_ok else 'not met'})",
    ]
    return Verdict(
        "PASS" if fast and cache_ok else "MISS", f"2 workers {parallel:.2f}x; cached rerun {cached:.0f}x", details
    )


def judge_e2e(runs: list[Run]) -> Verdict:
    """Report only: the demo's wall time and its growth; FAILED when a notebook failed."""
    run = runs[0]
    fig = run.figures
    if fig is None:
        return Verdict("ERROR", f"`{run.command}` exited with {run.returncode}", [f"```\n{run.stderr_tail}\n```"])
    parts = [f"{r['patients']} patients {r['total_seconds'] / 60:.1f} min" for r in fig["runs"]]
    details = []
    if fig.get("factor_used") is not None and fig["factor_used"] != fig.get("factor_requested"):
        details.append(
            f"the second run used {fig['factor_used']:g}x the patients instead of {fig['factor_requested']:g}x: "
            f"the linear estimate of {fig['factor_requested']:g}x exceeded the {fig['budget_minutes']:g} min budget"
        )
    total = fig.get("growth", {}).get("total (demo wall time)")
    if total:
        parts.append(f"growth {total['growth']:.2f} (time ratio / patient ratio)")
    failed = [
        f"{r['patients']} patients: {name} {step['status']}"
        for r in fig["runs"]
        for name, step in r["steps"].items()
        if step["status"] != "ok"
    ]
    details.extend(failed)
    return Verdict("FAILED" if failed or not run.ok else "REPORT", "; ".join(parts), details)


def judge_demo(runs: list[Run]) -> Verdict:
    """The demo run again with nothing changed: PASS when it succeeded within :data:`DEMO_WARM_S`."""
    if failed := incomplete(runs):
        return failed
    fig = runs[0].figures or {}
    cold, warm, forced = (fig["runs"][name] for name in ("cold", "warm", "forced warm"))
    details = [
        f"{name}: {run['wall_s']:.1f} s, {len(run['executed'])} executed, {len(run['reused'])} reused, "
        f"up-to-date checks {run['check_s']:.2f} s"
        for name, run in fig["runs"].items()
    ]
    failed_runs = [name for name, run in fig["runs"].items() if not run["ok"]]
    details.extend(f"{name}: a notebook failed" for name in failed_runs)
    status = "PASS" if not failed_runs and warm["wall_s"] <= DEMO_WARM_S else "MISS"
    result = (
        f"{fig['patients']} patients: warm rerun {warm['wall_s']:.1f} s ({len(warm['executed'])} executed); "
        f"cold {cold['wall_s']:.0f} s, forced warm {forced['wall_s']:.0f} s"
    )
    return Verdict(status, result, details)


def judge_radml(runs: list[Run]) -> Verdict:
    """The script's own target: median difference within the margin, none above it."""
    if failed := incomplete(runs):
        return failed
    fig = runs[0].figures or {}
    n = len(fig["datasets"])
    met = bool(fig["median_target_met"]) and not fig["above_margin"] and not fig["failed"]
    details = [
        f"{n} datasets; median LightGBM - published {fig['median_diff']:+.3f}; within {RADML_MARGIN} of published: "
        f"{fig['within_margin']}/{n}; more than {RADML_MARGIN} above: {', '.join(fig['above_margin']) or 'none'}"
        + (f"; failed: {', '.join(fig['failed'])}" if fig["failed"] else "")
    ]
    return Verdict("PASS" if met else "MISS", f"median diff {fig['median_diff']:+.3f} over {n} datasets", details)


def judge_segment(runs: list[Run]) -> Verdict:
    """Dice on >= 6 mm nodules, cold seconds and inference per volume against the targets; AL reported."""
    if failed := incomplete(runs):
        return failed
    fig = runs[0].figures or {}
    dice, cold, per_volume = fig["dice_median_6mm"], fig["cold_s"], fig["inference_s_per_volume"]
    met = dice >= SEGMENT_DICE and cold <= SEGMENT_COLD_S and per_volume <= SEGMENT_INFERENCE_S
    result = f"Dice >= 6 mm {dice:.3f}, cold {cold:.0f} s, cached {fig['cached_s']:.1f} s, {per_volume:.2f} s/volume"
    active = fig.get("active_learning")
    details = [f"active learning: {active['verdict']}" if active else "active learning: not run"]
    return Verdict("PASS" if met else "MISS", result, details)


def judge_listen(runs: list[Run]) -> Verdict:
    """Median and p95 latency per study, for one study and for five at once, against the targets."""
    if failed := incomplete(runs):
        return failed
    rows = (runs[0].figures or {})["scenarios"]
    met = all(r["median_s"] <= LISTEN_MEDIAN_S and r["p95_s"] <= LISTEN_P95_S for r in rows)
    result = "; ".join(f"{r['label']}: median {r['median_s']:.1f} s, p95 {r['p95_s']:.1f} s" for r in rows)
    return Verdict("PASS" if met else "MISS", result)
def judge_deep(runs: list[Run]) -> Verdict:
    """CNN + hybrid cold seconds, the CNN's AUC and the hybrid's paired difference to LightGBM."""
    if failed := incomplete(runs):
        return failed
    fig = runs[0].figures or {}
    cold, auc, hybrid = fig["deep_cold_s"], fig["auc"], fig["comparisons"]["hybrid_vs_lightgbm"]
    cnn_diff = fig["comparisons"]["cnn_vs_lightgbm"]
    met = cold <= DEEP_COLD_S and auc["cnn"] >= DEEP_CNN_AUC and hybrid["delta_auc_ci"][1] >= 0
    result = (
        f"cold {cold:.0f} s, cached {fig['deep_cached_s']:.1f} s; AUC LightGBM {auc['lightgbm']:.3f}, "
        f"CNN {auc['cnn']:.3f}, hybrid {auc['hybrid']:.3f}"
    )
    details = [
        f"cnn - lightgbm {cnn_diff['delta_auc']:+.3f} (95% CI {cnn_diff['delta_auc_ci'][0]:+.3f} to "
        f"{cnn_diff['delta_auc_ci'][1]:+.3f}); hybrid - lightgbm {hybrid['delta_auc']:+.3f} (95% CI "
        f"{hybrid['delta_auc_ci'][0]:+.3f} to {hybrid['delta_auc_ci'][1]:+.3f})",
        f"cold <= {DEEP_COLD_S:.0f} s: {'met' if cold <= DEEP_COLD_S else 'not met'}; CNN AUC >= {DEEP_CNN_AUC}: "
        f"{'met' if auc['cnn'] >= DEEP_CNN_AUC else 'not met'}; hybrid >= LightGBM within the CI: "
        f"{'met' if hybrid['delta_auc_ci'][1] >= 0 else 'not met'}",
        f"load average during the runs: {', '.join(f'{v:.1f}' for v in fig['load_average'])}",
    ]
    return Verdict("PASS" if met else "MISS", result, details)


def report_only(summary: Callable[[dict[str, Any]], str]) -> Callable[[list[Run]], Verdict]:
    def judge(runs: list[Run]) -> Verdict:
        if failed := incomplete(runs):
            return failed
        return Verdict("REPORT", "; ".join(summary(r.figures or {}) for r in runs))

    return judge


def synth_summary(fig: dict[str, Any]) -> str:
    best = max(fig["runs"], key=lambda r: r["speedup"])
    workers = f"{best['workers']} worker" + ("s" if best["workers"] != 1 else "")
    return f"{fig['patients']} patients: {best['files_per_s']:.0f} files/s at best, with {workers}"


def preprocess_summary(fig: dict[str, Any]) -> str:
    rows = {r["step"]: r for r in fig["rows"]}
    two, cached = rows.get("preprocess, 2 workers"), rows.get("rerun, all cached")
    text = f"{fig['cases']} cases"
    if two:
        text += f": 2 workers {two['ratio']:.2f}x serial"
    if cached:
        text += f", cached rerun {cached['ratio']:.0f}x"
    return text


def explain_summary(fig: dict[str, Any]) -> str:
    rows = fig["rows"]
    return (
        f"TreeExplainer takes {rows[1]['ratio']:.1f}x LightGBM pred_contrib's time; "
        f"max |difference| {fig['max_abs_difference']:.1e}"
    )


def pacs_summary(fig: dict[str, Any]) -> str:
    rates = [
        f"{p['label'].split(':')[0]} {p['instances_per_s']:.0f} instances/s"
        for p in fig["phases"]
        if p["label"].startswith(("DICOMweb: QIDO-RS + WADO", "DIMSE"))
    ]
    return ", ".join(rates)


def scaling_summary(fig: dict[str, Any]) -> str:
    sizes = [size["patients"] for size in fig["sizes"]]
    slopes = ", ".join(f"{stage} {e['slope_wall']:.2f}/{e['slope_cpu']:.2f}" for stage, e in fig["exponents"].items())
    dask = [n for n, size in zip(sizes, fig["sizes"], strict=True) if size["path"] == "dask"]
    where = f"Dask from {min(dask):,}" if dask else "no Dask"
    return f"growth exponent wall/CPU, {sizes[0]:,} to {sizes[-1]:,} patients ({where}): {slopes}"

"""RESULTS.md as ``run_all.py`` writes it: the machine, the run's conditions, the summary and each benchmark.

:func:`render` takes the judged benchmarks (:class:`judges.Benchmark`) and the run's context;
:func:`describe_machine` reads the CPU, memory, system and package versions of this machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

from judges import Benchmark, Run, Verdict

PACKAGES = [
    "pydicom", "highdicom", "pynetdicom", "pyradiomics", "SimpleITK", "numpy", "pandas", "pyarrow", "duckdb",
    "scikit-learn", "lightgbm", "shap", "dask", "distributed", "papermill", "rapidocr-onnxruntime", "dicognito",
]  # fmt: skip


def describe_machine() -> dict[str, str]:
    """CPU model, cores, memory, OS, Python and key package versions, read from this machine."""
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    system = platform.platform()
    try:
        release = platform.freedesktop_os_release()
        system = f"{release.get('PRETTY_NAME', release.get('NAME', ''))}, Linux {platform.release()}"
    except OSError:
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return {
        "CPU": cpu,
        "Cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable by this process",
        "Memory": memory,
        "OS": system,
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "Packages": ", ".join(versions),
    }


def _duration(runs: list[Run]) -> str:
    seconds = sum(run.seconds for run in runs)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def render(benchmarks: list[Benchmark], context: dict[str, Any], machine: dict[str, str], *, smoke: bool) -> str:
    """RESULTS.md: machine, conditions, summary table, then each benchmark's table verbatim."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run_all.py` (`make bench`). Every figure below comes from the benchmark scripts' "
        "output in this run; the PASS/MISS lines are computed from the figures the scripts report.",
        "",
    ]
    if smoke:
        lines += ["**Smoke run: tiny sizes that prove the scripts run; the figures mean nothing.**", ""]
    lines += [
        f"- Date: {context['started']} to {context['ended']} (UTC); total {context['seconds'] / 60:.1f} min",
        f"- Commit: `{context['commit']}`",
        f"- Load average (1 / 5 / 15 min): {_load(context['load_start'])} at start, "
        f"{_load(context['load_end'])} at end, on {os.cpu_count()} cores. The machine is shared: wall-clock "
        "ratios suffer when other work runs; the tables also give CPU seconds where the script measures them.",
        f"- Reference data: {context['reference'] or 'not set (PACS_WORKBENCH_REFERENCE)'}",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in machine.items()],
        "",
        "## Summary",
        "",
        "| benchmark | target | result | verdict | runtime |",
        "|---|---|---|---|---|",
    ]
    for bench in benchmarks:
        verdict = bench.verdict or Verdict("SKIPPED", "not run")
        cells = [bench.title, bench.target, verdict.result, f"**{verdict.status}**", _duration(bench.runs)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    for bench in benchmarks:
        verdict = bench.verdict or Verdict("SKIPPED", "not run")
        lines += ["", f"## {bench.title}", "", f"Target: {bench.target}.", ""]
        for run in bench.runs:
            if run.returncode is None:
                continue
            lines += [
                f"`{run.command}` ({_duration([run])}, exit code {run.returncode})",
                "",
                "```",
                run.stdout.rstrip() or "(no output)",
                "```",
                "",
            ]
        if bench.plot:
            lines += [f"![{bench.title}]({bench.plot})", ""]
        lines.append(f"**{verdict.status}**: {verdict.result}")
        if verdict.details:
            lines.append("")
            lines += [detail if detail.startswith("```") else f"- {detail}" for detail in verdict.details]
    return "\n".join(lines) + "\n"

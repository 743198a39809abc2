"""Plots for RESULTS.md where a curve says more than a row (written by ``run_all.py``).

Each function takes the JSON figures of a benchmark's runs, draws one PNG beside RESULTS.md
and returns its file name (``None`` when the figures hold no curve, e.g. a single size):

* ``e2e``: wall seconds of every stage against the number of patients (log-log), so the
  slope is the growth exponent of the stage;
* ``scaling``: wall and CPU seconds of every data stage against the number of patients
  (log-log), one line per stage, so the slope is the stage's growth exponent;
* ``index``: instances per second and peak memory of every phase against the number of
  instances (flat memory is a flat line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Figures = Sequence[dict[str, Any]]


def _figure(ncols: int) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4), squeeze=False)
    return fig, axes[0]


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def plot_e2e(figures: Figures, folder: Path) -> str | None:
    """Seconds per stage against patients, log-log."""
    runs = [run for fig in figures for run in fig.get("runs", [])]
    if len({run["patients"] for run in runs}) < 2:
        return None
    runs.sort(key=lambda run: run["patients"])
    fig, (ax,) = _figure(1)
    for step in runs[0]["steps"]:
        points = [(r["patients"], r["steps"][step]["seconds"]) for r in runs if step in r["steps"]]
        if len(points) >= 2 and all(seconds > 0 for _, seconds in points):
            ax.plot(*zip(*points, strict=True), marker="o", label=step)
    ax.plot([r["patients"] for r in runs], [r["total_seconds"] for r in runs], "k--", marker="s", label="total")
    ax.set(xscale="log", yscale="log", xlabel="patients", ylabel="wall seconds", title="End to end: time per stage")
    ax.legend(fontsize=7)
    return _save(fig, folder / "e2e_time_vs_patients.png")


def plot_index(figures: Figures, folder: Path) -> str | None:
    """Instances per second and peak memory of every phase against instances."""
    sizes = sorted(figures, key=lambda fig: fig["instances"])
    if len(sizes) < 2:
        return None
    fig, (speed, memory) = _figure(2)
    for name in sizes[0]["phases"]:
        rows = [(f["instances"], f["phases"][name]) for f in sizes if name in f["phases"]]
        if len(rows) < 2:
            continue
        label = rows[0][1]["label"]
        xs = [n for n, _ in rows]
        speed.plot(xs, [phase["instances_per_s"] for _, phase in rows], marker="o", label=label)
        memory.plot(xs, [phase["peak_pss_mb"] for _, phase in rows], marker="o", label=label)
    speed.set(xscale="log", yscale="log", xlabel="instances", ylabel="instances per second", title="Index speed")
    memory.set(xscale="log", xlabel="instances", ylabel="peak PSS (MB)", title="Index peak memory", ylim=(0, None))
    speed.legend(fontsize=7)
    return _save(fig, folder / "index_scaling.png")


def plot_scaling(figures: Figures, folder: Path, name: str = "scaling_time_vs_patients.png") -> str | None:
    """Wall and CPU seconds per stage against patients, log-log; Dask sizes marked."""
    sizes = sorted((size for fig in figures for size in fig.get("sizes", [])), key=lambda size: size["patients"])
    if len({size["patients"] for size in sizes}) < 2:
        return None
    fig, (wall, cpu) = _figure(2)
    for stage in sizes[-1]["stages"]:
        rows = [(size["patients"], size["stages"][stage]) for size in sizes if stage in size["stages"]]
        if len(rows) < 2 or not all(r["wall_s"] > 0 and r["cpu_s"] > 0 for _, r in rows):
            continue
        xs = [n for n, _ in rows]
        wall.plot(xs, [r["wall_s"] for _, r in rows], marker="o", label=stage)
        cpu.plot(xs, [r["cpu_s"] for _, r in rows], marker="o", label=stage)
    dask = [size["patients"] for size in sizes if size.get("path") == "dask"]
    for ax, what in ((wall, "wall seconds"), (cpu, "CPU seconds (process tree)")):
        if dask:
            ax.axvspan(min(dask) * 0.9, max(dask) * 1.1, color="0.9", zorder=0, label="Dask LocalCluster")
        ax.set(xscale="log", yscale="log", xlabel="patients", ylabel=what, title=f"Scaling: {what} per stage")
    wall.legend(fontsize=7)
    return _save(fig, folder / name)


PLOTS: dict[str, Callable[[Figures, Path], str | None]] = {
    "e2e": plot_e2e,
    "index": plot_index,
    "scaling": plot_scaling,
}

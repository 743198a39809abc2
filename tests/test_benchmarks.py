"""The benchmark suite runs: ``benchmarks/run_all.py --smoke`` on tiny sizes writes a complete RESULTS.md.

No timing is asserted (the figures of a smoke run mean nothing); what is checked is that every
benchmark script ran, wrote its figures, and that RESULTS.md carries the machine description,
each script's table and a verdict per benchmark computed from the figures.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN_ALL = REPO / "benchmarks" / "run_all.py"
BENCHMARKS = [
    "index", "features", "e2e", "demo", "deid", "segment", "listen", "deep",
    "synth", "preprocess", "explain", "scaling", "pacs", "radmlbench",
]  # fmt: skip
VERDICTS = {"PASS", "MISS", "REPORT", "SKIPPED"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("bench")
    out, json_dir = root / "RESULTS.md", root / "json"
    proc = subprocess.run(
        [sys.executable, str(RUN_ALL), "--smoke", "--quiet", "--out", str(out), "--json-dir", str(json_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return {"proc": proc, "out": out, "json_dir": json_dir}


@pytest.mark.slow
def test_smoke_run_writes_results(smoke: dict[str, object]) -> None:
    proc = smoke["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    text = Path(str(smoke["out"])).read_text(encoding="utf-8")
    assert "Smoke run" in text
    for heading in ("## Machine", "## Summary", "| CPU |", "| Memory |", "| Python |", "Commit: `", "Load average"):
        assert heading in text, heading
    summary = json.loads((Path(str(smoke["json_dir"])) / "results.json").read_text(encoding="utf-8"))
    assert sorted(summary["benchmarks"]) == sorted(BENCHMARKS)
    for name, bench in summary["benchmarks"].items():
        assert bench["verdict"] in VERDICTS, (name, bench["verdict"], bench["result"])
        if bench["verdict"] == "SKIPPED":  # a missing optional tool (dicognito, Orthanc, reference data)
            assert "not" in bench["result"], bench["result"]
            continue
        for run in bench["runs"]:
            assert run["exit"] == 0, run
            # The table in RESULTS.md is the script's own output, verbatim.
            assert f"`{run['command']}`" in text


@pytest.mark.slow
def test_verdicts_follow_the_reported_figures(smoke: dict[str, object]) -> None:
    summary = json.loads((Path(str(smoke["json_dir"])) / "results.json").read_text(encoding="utf-8"))
    text = Path(str(smoke["out"])).read_text(encoding="utf-8")
    features = summary["benchmarks"]["features"]
    figures = features["runs"][0]["figures"]["runs"]
    parallel, cached = figures["parallel2"]["speedup"], figures["cached"]["speedup"]
    expected = "PASS" if parallel >= 1.8 and cached >= 50 else "MISS"
    assert features["verdict"] == expected
    assert f"2 workers {parallel:.2f}x; cached rerun {cached:.0f}x" in text
    index = summary["benchmarks"]["index"]
    sizes = sorted(run["figures"]["instances"] for run in index["runs"])
    assert sizes[0] < sizes[-1]
    rows = {run["figures"]["instances"]: run["figures"]["phases"] for run in index["runs"]}
    assert all(rows[n]["workers2"]["x_loop_wall"] > 0 for n in sizes)
    growth = rows[sizes[-1]]["workers2"]["peak_pss_mb"] / rows[sizes[0]]["workers2"]["peak_pss_mb"]
    assert re.search(rf"build_index workers=2: .*\({growth:.2f}x\)", text)
    e2e = summary["benchmarks"]["e2e"]["runs"][0]["figures"]
    assert [run["patients"] for run in e2e["runs"]] == [1, 2]
    assert all(run["ok"] for run in e2e["runs"])
    assert "01_cohort" in e2e["growth"]
    demo = summary["benchmarks"]["demo"]
    runs = demo["runs"][0]["figures"]["runs"]
    assert runs["warm"]["executed"] == [] and len(runs["warm"]["reused"]) == 3  # nothing changed: nothing re-run
    assert len(runs["cold"]["executed"]) == 3 and len(runs["forced warm"]["executed"]) == 3
    assert demo["verdict"] == ("PASS" if runs["warm"]["wall_s"] <= 60 else "MISS")
    scaling = summary["benchmarks"]["scaling"]
    assert scaling["verdict"] == "REPORT"
    assert "growth exponent wall/CPU, 3 to 6 patients (Dask from 6)" in scaling["result"]


@pytest.mark.slow
def test_scaling_reports_every_stage_at_every_size(tmp_path: Path) -> None:
    """bench_scaling.py at 3 and 6 patients (the larger on Dask): every stage timed, exponents finite."""
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_scaling.py"), "--patients", "3", "6", "--dask-from", "6",
         "--json", str(out), "--plot", str(tmp_path / "scaling.png")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    stages = ["synth", "index", "deid", "audit", "preprocess", "features"]
    assert [(s["patients"], s["path"]) for s in figures["sizes"]] == [(3, "local"), (6, "dask")]
    for size in figures["sizes"]:
        assert list(size["stages"]) == stages
        for stage in stages:
            row = size["stages"][stage]
            assert row["items"] > 0 and row["wall_s"] > 0 and row["cpu_s"] > 0, (size["patients"], stage, row)
    # More patients, more files and cases for every stage.
    small, large = figures["sizes"]
    assert all(large["stages"][s]["items"] > small["stages"][s]["items"] for s in stages)
    for stage in stages:
        e = figures["exponents"][stage]
        assert len(e["pairs"]) == 1 and (e["pairs"][0]["from"], e["pairs"][0]["to"]) == (3, 6)
        assert all(math.isfinite(v) for v in (e["slope_wall"], e["slope_cpu"], e["pairs"][0]["wall"]))
        assert e["slope_wall"] == pytest.approx(e["pairs"][0]["wall"])  # two sizes: the slope is the pair
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert "Dask LocalCluster" in proc.stdout and "growth exponent" in proc.stdout

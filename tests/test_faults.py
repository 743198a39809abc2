"""Faults: runs killed at random moments, a PACS that goes away mid-retrieve, a full disk, two runs at once.

Every run here is a real subprocess of the workbench (``python -m pacs_workbench`` or the
runner), killed with SIGKILL, together with everything it started, after a delay drawn
from a seeded random generator. The rerun must then give exactly what an uninterrupted
run gives (same table contents, same file bytes, same notebook statuses), leave no
temporary file behind, and account for every input. The full-disk tests mount a 2 MB
tmpfs (root only; skipped elsewhere unless ``CI=true``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pyarrow.parquet as pq
import pydicom
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from pacs_workbench.radiomics import PARAMS_DIR, features
from pacs_workbench.radiomics.cache import default_cache_dir
from tests import fault_helpers as fh
from tests.radiomics.fixtures import write_case

pytestmark = pytest.mark.slow

CT_PARAMS = PARAMS_DIR / "ct_default.yaml"
KILLS = 3  # interrupted attempts before the run that is allowed to finish


# --- shared inputs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-patient synthetic extract (about 50 DICOM files)."""
    from pacs_workbench.synth import generate

    out = tmp_path_factory.mktemp("extract")
    generate(out, patients=2, seed=1, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pacs_workbench.core.pseudonym import generate_key

    return generate_key(tmp_path_factory.mktemp("key") / "project.key")


@pytest.fixture(scope="module")
def cases_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve small image/mask cases (NIfTI) and their case table."""
    folder = tmp_path_factory.mktemp("cases")
    rows = []
    for i in range(12):
        image, mask = write_case(folder, f"c{i:02d}", radius=4.0 + (i % 5), seed=i)
        rows.append({"case_id": f"case{i:02d}", "image": image.name, "mask": mask.name, "pseudo_patient_id": f"P{i}"})
    table = folder / "cases.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def _bad_files(folder: Path, extract: Path) -> None:
    """Files no stage can use: empty, text, a truncated CT slice."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    ct = max((extract / "dicom").rglob("*.dcm"), key=lambda p: p.stat().st_size)
    data = ct.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 2])


def _timed_run(command: list[str]) -> float:
    """Run ``command`` to completion (the uninterrupted reference); returns its wall time."""
    start = time.monotonic()
    fh.run_ok(command, env=fh.env_for_subprocess())
    return time.monotonic() - start


def _kill_and_finish(command: list[str], seed: int, duration: float) -> list[float]:
    """Kill ``command`` ``KILLS`` times at seeded random moments within ``duration``, then let it finish.

    Returns the delays. At least one attempt must really have been killed, or the test proves nothing.
    """
    rng = random.Random(seed)
    env = fh.env_for_subprocess()
    delays = [round(rng.uniform(0.15, 0.9) * duration, 2) for _ in range(KILLS)]
    finished = [fh.kill_after(command, delay, env=env) is not None for delay in delays]
    assert not all(finished), f"every attempt finished before its kill ({delays} s)"
    fh.run_ok(command, env=env, codes=(0, 1))
    return delays


def _frame(path: Path, by: list[str]) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(by).reset_index(drop=True)


def _tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- killed runs -------------------------------------------------------------------------------------


def test_killed_index_runs_rerun_to_the_uninterrupted_index(extract: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for copy in range(4):  # enough files that a kill lands inside the crawl, not only in start-up
        shutil.copytree(extract / "dicom", src / f"copy{copy}")
    _bad_files(src / "junk", extract)
    files = {str(p) for p in src.rglob("*") if p.is_file()}
    reference, out = tmp_path / "reference", tmp_path / "index"
    duration = _timed_run([*fh.CLI, "index", str(src), "--out", str(reference), "--workers", "2"])

    delays = _kill_and_finish([*fh.CLI, "index", str(src), "--out", str(out), "--workers", "2"], 11, duration)

    for name in ("instances.parquet", "errors.parquet"):
        pd.testing.assert_frame_equal(_frame(out / name, ["path"]), _frame(reference / name, ["path"]), obj=name)
    instances, errors = pd.read_parquet(out / "instances.parquet"), pd.read_parquet(out / "errors.parquet")
    assert set(instances["path"]) | set(errors["path"]) == files, f"kills at {delays} s lost or added files"
    assert len(instances) + len(errors) == len(files)
    assert not fh.temp_leftovers(out), delays


def test_killed_deid_runs_rerun_to_the_same_bytes(extract: Path, key_file: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(extract / "dicom", src / "dicom")
    _bad_files(src / "junk", extract)
    inputs = sorted(_sha(p) for p in src.rglob("*") if p.is_file())
    reference, out = tmp_path / "reference", tmp_path / "deid"

    def command(dst: Path) -> list[str]:
        return [*fh.CLI, "deid", str(src), "--out", str(dst), "--key-file", str(key_file), "--workers", "2", "--quiet"]

    delays = _kill_and_finish(command(out), 12, _timed_run(command(reference)))

    skip = ("deid_log.parquet", "deid_actions.parquet")
    assert _tree(out, skip) == _tree(reference, skip), f"kills at {delays} s changed the output"
    quarantine, reference_quarantine = Path(f"{out}.quarantine"), Path(f"{reference}.quarantine")
    assert _tree(quarantine) == _tree(reference_quarantine)
    for name, key in (("deid_log.parquet", ["source_sha256"]), ("deid_actions.parquet", ["tag", "action"])):
        pd.testing.assert_frame_equal(_frame(out / name, key), _frame(reference / name, key), obj=name)
    log = pd.read_parquet(out / "deid_log.parquet")
    assert sorted(log["source_sha256"]) == inputs  # every input accounted for, once
    assert set(log["outcome"]) == {"written", "quarantined"}
    for relative in log.loc[log["outcome"] == "written", "output"]:
        ds = pydicom.dcmread(out / relative)
        if "PixelData" in ds:
            assert ds.pixel_array.size > 0
    assert not fh.temp_leftovers(out, quarantine), delays


def _planted_temp(folder: Path, name: str) -> Path:
    """A half-written file as a killed deid worker leaves it (its pid is gone)."""
    finished = subprocess.Popen([fh.PYTHON, "-c", "pass"])
    finished.wait()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.{finished.pid}-k1lled00.tmp"
    path.write_bytes(b"DICM half written")
    return path


def test_deid_rerun_removes_half_written_outputs_of_a_killed_run(extract: Path, key_file: Path, tmp_path: Path) -> None:
    src, dst = extract / "dicom", tmp_path / "deid"
    stale = _planted_temp(dst / "SOMEONE" / "1.2.3", "1.2.3.4.dcm")
    fh.run_ok([*fh.CLI, "deid", str(src), "--out", str(dst), "--key-file", str(key_file), "--workers", "1",
               "--quiet"], env=fh.env_for_subprocess())
    assert not stale.exists()
    assert not fh.temp_leftovers(dst)


def test_deid_rerun_removes_half_written_quarantine_files_of_a_killed_run(
    extract: Path, key_file: Path, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "deid"
    _bad_files(src, extract)
    stale = _planted_temp(Path(f"{dst}.quarantine"), "ab" * 32 + ".dcm")
    fh.run_ok([*fh.CLI, "deid", str(src), "--out", str(dst), "--key-file", str(key_file), "--workers", "1",
               "--quiet"], env=fh.env_for_subprocess())
    assert not stale.exists()
    assert not fh.temp_leftovers(Path(f"{dst}.quarantine"))


def _feature_tables(out: Path) -> dict[str, pd.DataFrame]:
    sidecars = features.sidecar_paths(out)
    return {
        "features": _frame(out, ["case_id"]),
        "diagnostics": _frame(sidecars["diagnostics"], ["case_id"]),
        "errors": _frame(sidecars["errors"], ["case_id"]),
    }


def _assert_cache_sound(cache: Path) -> int:
    entries = list(cache.rglob("*.json"))
    for entry in entries:
        content = json.loads(entry.read_text())
        assert content["key"] == entry.stem and isinstance(content["values"], dict), entry.name
    assert not fh.temp_leftovers(cache)
    return len(entries)


def test_killed_feature_runs_rerun_to_the_uninterrupted_table(cases_csv: Path, tmp_path: Path) -> None:
    def command(out: Path) -> list[str]:
        return [*fh.CLI, "features", str(cases_csv), "--params", str(CT_PARAMS), "--out", str(out), "--workers", "2"]

    reference, out = tmp_path / "reference" / "features.parquet", tmp_path / "run" / "features.parquet"
    delays = _kill_and_finish(command(out), 13, _timed_run(command(reference)))

    expected, got = _feature_tables(reference), _feature_tables(out)
    for name in expected:
        pd.testing.assert_frame_equal(got[name], expected[name], obj=f"{name} after kills at {delays} s")
    assert list(got["features"]["case_id"]) == sorted(pd.read_csv(cases_csv)["case_id"])
    assert got["features"]["error"].isna().all()
    assert _assert_cache_sound(default_cache_dir(out)) == 12
    assert not fh.temp_leftovers(out.parent), delays


def test_feature_rerun_removes_temporaries_of_a_killed_run_only(cases_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    features.extract_features(cases_csv, CT_PARAMS, out, workers=1, progress=False)
    finished = subprocess.Popen([fh.PYTHON, "-c", "pass"])
    finished.wait()
    cache_entry = next(default_cache_dir(out).rglob("*.json"))
    stale = [
        out.parent / f".features.parquet.{finished.pid}-k1lled00.tmp",
        cache_entry.parent / f".{cache_entry.name}.{finished.pid}-k1lled00.tmp",
    ]
    live = out.parent / f".features.parquet.{os.getpid()}-running.tmp"  # another run, still writing
    for path in [*stale, live]:
        path.write_bytes(b"half")
    frame = features.extract_features(cases_csv, CT_PARAMS, out, workers=1, progress=False)
    assert frame.attrs["summary"]["cached"] == 12
    assert not any(p.exists() for p in stale)
    assert live.exists()


# --- the notebook run ----------------------------------------------------------------------------------

RUN_SNIPPET = """
import sys
from pathlib import Path
from pacs_workbench.runner.run import run_notebooks
params, out, base, *notebooks = sys.argv[1:]
result = run_notebooks(params, out, notebooks=[Path(p) for p in notebooks], base_dir=Path(base))
sys.exit(0 if result.ok else 1)
"""


def _notebook(path: Path, title: str, body: str) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell(
        'data_dir: str = "data"  # where the results go\npause_s: float = 0.3  # seconds of work per step'
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {title}"), params, new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def small_run(tmp_path: Path) -> dict[str, Any]:
    """Two small notebooks (a few seconds of work each), their parameters and a command running them."""
    base = tmp_path / "base"
    (base / "nb").mkdir(parents=True)
    first = _notebook(
        base / "nb" / "01_make.ipynb",
        "Make",
        # A relative path parameter means the run's project root, as in the workbench's notebooks.
        "import json, time\nfrom pacs_workbench.core.params import project_path\nout = project_path(data_dir)\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "values = []\nfor i in range(6):\n    time.sleep(pause_s)\n    values.append(i * i)\n"
        "(out / 'squares.json').write_text(json.dumps(values))\nprint('sum', sum(values))",
    )
    second = _notebook(
        base / "nb" / "02_report.ipynb",
        "Report",
        "import json, time\nfrom pacs_workbench.core.params import project_path\ntime.sleep(pause_s)\n"
        "values = json.loads((project_path(data_dir) / 'squares.json').read_text())\n"
        "(project_path(data_dir) / 'total.json').write_text(json.dumps({'total': sum(values)}))\n"
        "print('total', sum(values))",
    )
    params = base / "params.yaml"
    params.write_text("shared:\n  data_dir: data\n  pause_s: 0.5\n")
    (base / "data" / "dicom").mkdir(parents=True)

    def command(out: Path) -> list[str]:
        return [fh.PYTHON, "-c", RUN_SNIPPET, str(params), str(out), str(base), str(first), str(second)]

    return {"base": base, "params": params, "command": command, "notebooks": [first, second]}


def _run_outcome(out: Path) -> dict[str, Any]:
    record = json.loads((out / "run.json").read_text())
    for ipynb in out.glob("*.ipynb"):
        nbformat.validate(nbformat.read(ipynb, as_version=4))
    return {
        "files": sorted(p.name for p in out.iterdir()),
        "statuses": [(nb["name"], nb["status"]) for nb in record["notebooks"]],
        "html": sorted(p.name for p in out.glob("*.html") if p.stat().st_size > 0),
    }


REPORT_FILES = sorted(
    [".run.lock", "01_make.html", "01_make.ipynb", "02_report.html", "02_report.ipynb", "index.html", "run.json",
     "stamps.json"]  # the up-to-date records (pacs_workbench.runner.stamps)
)  # fmt: skip


def test_killed_notebook_runs_rerun_to_the_same_reports(small_run: dict[str, Any], tmp_path: Path) -> None:
    base, command, out = small_run["base"], small_run["command"], tmp_path / "reports"
    env = fh.env_for_subprocess()
    rng = random.Random(14)
    # An uninterrupted run takes at least two kernel starts and 3.5 s of cell work.
    delays = [round(rng.uniform(1.5, 6.0), 2) for _ in range(2)]
    finished = [fh.kill_after(command(out), delay, env=env) is not None for delay in delays]
    assert not all(finished), f"every attempt finished before its kill ({delays} s)"
    fh.run_ok(command(out), env=env)

    outcome = _run_outcome(out)
    assert outcome["statuses"] == [("01_make", "ok"), ("02_report", "ok")], delays
    assert outcome["files"] == REPORT_FILES and outcome["html"] == ["01_make.html", "02_report.html", "index.html"]
    assert json.loads((base / "data" / "squares.json").read_text()) == [0, 1, 4, 9, 16, 25]
    assert json.loads((base / "data" / "total.json").read_text()) == {"total": 55}
    assert not fh.temp_leftovers(out), delays


def test_second_run_into_the_same_report_folder_fails_clearly(small_run: dict[str, Any], tmp_path: Path) -> None:
    base, out = small_run["base"], tmp_path / "reports"
    small_run["params"].write_text("shared:\n  data_dir: data\n  pause_s: 0.8\n")  # a run that holds the lock a while
    env = fh.env_for_subprocess()
    first = subprocess.Popen(small_run["command"](out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not _locked(out / ".run.lock"):
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.1)
        second = subprocess.run(
            [*fh.CLI, "run", "--params", str(small_run["params"]), "--out", str(out)],
            env=env, cwd=base, capture_output=True, text=True, timeout=300, check=False,
        )
        assert second.returncode == 2, second.stderr[-2000:]
        assert "another run is writing into" in second.stderr and "Traceback" not in second.stderr
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    outcome = _run_outcome(out)
    assert outcome["statuses"] == [("01_make", "ok"), ("02_report", "ok")]
    assert outcome["files"] == REPORT_FILES


def _locked(lock: Path) -> bool:
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


# --- two feature runs sharing one cache ------------------------------------------------------------------


def _reference_features(cases_csv: Path, folder: Path) -> pd.DataFrame:
    """The table of an uninterrupted serial run without a cache, as read back from its file."""
    out = folder / "reference" / "features.parquet"
    features.extract_features(cases_csv, CT_PARAMS, out, workers=1, cache="off", progress=False)
    return _frame(out, ["case_id"])


def test_two_feature_runs_sharing_a_cache_agree(cases_csv: Path, tmp_path: Path) -> None:
    expected = _reference_features(cases_csv, tmp_path)
    cache = tmp_path / "shared_cache"
    env = fh.env_for_subprocess()
    outs = [tmp_path / f"run{i}" / "features.parquet" for i in range(2)]
    runs = [
        subprocess.Popen(
            [*fh.CLI, "features", str(cases_csv), "--params", str(CT_PARAMS), "--out", str(out), "--cache", str(cache),
             "--workers", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for out in outs
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    for out in outs:
        pd.testing.assert_frame_equal(_frame(out, ["case_id"]), expected, obj=str(out.parent.name))
    assert _assert_cache_sound(cache) == 12


# --- a PACS that goes away mid-retrieve --------------------------------------------------------------------


def test_retrieve_interrupted_by_a_stopped_pacs_reports_the_missing_series_and_resumes(
    extract: Path, tmp_path: Path
) -> None:
    from pacs_workbench.dicom.net.retrieve import retrieve_series
    from tests.orthanc import restart, start_orthanc

    files = sorted((extract / "dicom").rglob("*.dcm"))
    headers = {f: pydicom.dcmread(f, stop_before_pixels=True) for f in files}
    selection = sorted({(str(h.StudyInstanceUID), str(h.SeriesInstanceUID)) for h in headers.values()})
    out = tmp_path / "raw"
    with start_orthanc(tmp_path / "orthanc", files) as server:
        # Slow enough (4 requests a second, one series at a time) that the stop lands mid-transfer.
        stopper = threading.Timer(1.5, server.stop)
        stopper.start()
        try:
            first = retrieve_series(
                server.dicomweb_url, selection, out, max_connections=1, rate_limit=4.0, retries=0,
                timeout=5, progress=False,
            )
        finally:
            stopper.join()
        assert not first.ok and first.missing, "the stop came too late to interrupt anything"
        assert first.fetched_series + first.already_complete + len(first.missing) == len(selection)
        for entry in first.missing:
            assert (entry["StudyInstanceUID"], entry["SeriesInstanceUID"]) in selection
            assert entry["errors"], entry
        reported = json.loads((out / "retrieve_summary.json").read_text())
        assert {m["SeriesInstanceUID"] for m in reported["missing"]} == {m["SeriesInstanceUID"] for m in first.missing}
        for path in out.rglob("*.dcm"):  # what arrived before the stop is complete
            pydicom.dcmread(path)
        assert not fh.temp_leftovers(out)

        restart(server)
        second = retrieve_series(server.dicomweb_url, selection, out, progress=False, timeout=20)
        assert second.ok, second.missing
        assert second.fetched_series >= len(first.missing)
    got = {p.stem: p for p in out.rglob("*.dcm")}
    assert set(got) == {str(h.SOPInstanceUID) for h in headers.values()}
    for source, header in headers.items():
        arrived = pydicom.dcmread(got[str(header.SOPInstanceUID)])
        original = pydicom.dcmread(source)
        if "PixelData" in original:
            assert arrived.PixelData == original.PixelData
    assert not fh.temp_leftovers(out)


# --- a full disk --------------------------------------------------------------------------------------------


def _complete_outputs(folder: Path) -> None:
    """Every file in ``folder`` is complete: DICOM re-reads with its pixels, Parquet and JSON parse."""
    for path in folder.rglob("*"):
        if not path.is_file() or path.name == "filler.bin":
            continue
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            if "PixelData" in ds:
                assert ds.pixel_array.size > 0, path.name
        elif path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def test_deid_on_a_full_disk_fails_clearly_and_leaves_nothing_half_written(
    extract: Path, key_file: Path, tmp_path: Path
) -> None:
    with fh.small_tmpfs(tmp_path / "disk", "2m") as disk:
        fh.fill_disk(disk, 300 * 1024)  # the extract de-identified needs about 900 kB
        dst = disk / "deid"
        done = subprocess.run(
            [*fh.CLI, "deid", str(extract / "dicom"), "--out", str(dst), "--quarantine", str(tmp_path / "q"),
             "--key-file", str(key_file), "--workers", "2", "--quiet"],
            env=fh.env_for_subprocess(), capture_output=True, text=True, timeout=300, check=False,
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "no space left on device" in done.stderr.lower(), done.stderr[-2000:]
        assert not fh.temp_leftovers(disk, tmp_path / "q")
        _complete_outputs(disk)


def test_features_on_a_full_disk_fail_clearly_and_recover(cases_csv: Path, tmp_path: Path) -> None:
    expected = _reference_features(cases_csv, tmp_path)
    with fh.small_tmpfs(tmp_path / "disk", "2m") as disk:
        fh.fill_disk(disk, 120 * 1024)  # twelve cache entries fit, the tables do not
        out = disk / "run" / "features.parquet"
        command = [*fh.CLI, "features", str(cases_csv), "--params", str(CT_PARAMS), "--out", str(out),
                   "--workers", "2"]
        done = subprocess.run(command, env=fh.env_for_subprocess(), capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        message = [line for line in done.stderr.splitlines() if "error:" in line]
        assert message and "No space left on device" in message[0] and "no output was replaced" in message[0]
        assert not fh.temp_leftovers(disk)
        assert not out.exists() and not any(p.exists() for p in features.sidecar_paths(out).values())
        _complete_outputs(disk)

        (disk / "filler.bin").unlink()  # space again: the rerun completes from the cache
        again = fh.run_ok(command, env=fh.env_for_subprocess())
        summary = json.loads(again.stdout)
        assert summary["failed"] == 0 and summary["cases"] == 12
        pd.testing.assert_frame_equal(_frame(out, ["case_id"]), expected)
        _complete_outputs(disk)

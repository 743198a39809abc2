"""Latency of ``pacs-workbench listen``: from the last instance of a study received to its SR stored in a PACS.

Develops a model package once from a small synthetic PACS (``tests/deploy/listen_fixtures.py``:
synthetic extract, preprocessing, a U-Net of the segmentation stage's architecture trained briefly,
features and a quick model; cached under ``benchmarks/_work/``), starts Orthanc on loopback as
the PACS (``tests/orthanc.py``) and ``pacs-workbench listen --store-to`` it as a subprocess, and
sends studies of the extract with dcmtk's ``storescu`` (CT images: the axial series and the
localizer). One study is scored first to warm the model (not counted). Then, per study:

* *received*: ``last_received`` of the study's ``state.json``, written by the listener when the
  study's last instance reached its disk;
* *stored*: the moment the study's SR is first seen in Orthanc (polled every 0.2 s).

The latency includes the quiet period after which a study counts as complete (``--quiet``).
Scenarios: one study at a time (``--single`` rounds) and five studies sent at once by five
storescu processes (``--batches`` rounds). It prints median, 95th percentile and maximum per
scenario, and with ``--json PATH`` writes them for ``benchmarks/run_all.py`` (target: median
<= 10 s and p95 <= 20 s per study). Usage::

    python benchmarks/bench_listen.py [--patients 10] [--single 3] [--batches 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import requests

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests/ holds the Orthanc start/stop logic and the package fixture

from pacs_workbench.core.files import write_json_atomic  # noqa: E402
from pacs_workbench.core.pseudonym import load_key, pseudonymize  # noqa: E402
from tests.deploy.listen_fixtures import develop_package  # noqa: E402
from tests.orthanc import free_port, start_orthanc  # noqa: E402

WORK = REPO / "benchmarks" / "_work"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
BATCH = 5


def package_for(patients: int) -> dict[str, Any]:
    """The developed package for ``patients`` (made once, then reused)."""
    root = WORK / f"listen_{patients}"
    if not (root / ".complete").is_file():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        print(f"developing a package from {patients} synthetic patients (once) ...", file=sys.stderr, flush=True)
        develop_package(root, patients=patients)
        (root / ".complete").write_text("ok\n", encoding="utf-8")
    return {"package": root / "model" / "package", "extract": root / "extract", "key_file": root / "project.key"}


def studies(extract: Path) -> list[tuple[str, list[Path]]]:
    """``(StudyInstanceUID, CT image files)`` of every study of the extract."""
    found = []
    for folder in sorted(p for p in (extract / "dicom").glob("*/*") if p.is_dir()):
        files, uid = [], ""
        for path in sorted(folder.rglob("*.dcm")):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if str(ds.SOPClassUID) == CT_IMAGE:
                files.append(path)
                uid = str(ds.StudyInstanceUID)
        if files:
            found.append((uid, files))
    return found


def start_listen(setup: dict[str, Any], out: Path, port: int, store_to: str, workers: int, quiet: float) -> Any:
    env = {**os.environ, "PACS_WORKBENCH_KEY_FILE": str(setup["key_file"])}
    command = [
        sys.executable, "-m", "pacs_workbench", "listen", "--package", str(setup["package"]), "--ae-title", "LISTEN",
        "--port", str(port), "--out", str(out), "--allow-ae", "BENCH", "--quiet-seconds", str(quiet),
        "--workers", str(workers), "--store-to", store_to,
    ]  # fmt: skip
    log = out.parent / "listen.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    while "listening on" not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise SystemExit(f"listen did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return process


def sr_studies(rest: str) -> set[str]:
    """StudyInstanceUIDs of the SR series Orthanc holds."""
    found = requests.post(f"{rest}/tools/find", json={"Level": "Series", "Query": {"Modality": "SR"}, "Expand": True},
                          timeout=30).json()  # fmt: skip
    return {str(s["ParentStudy"]) for s in found}


def orthanc_study_id(rest: str, uid: str) -> str:
    found = requests.post(f"{rest}/tools/lookup", data=uid, timeout=30).json()
    return next((str(item["ID"]) for item in found if item["Type"] == "Study"), "")


def study_state(out: Path, token: str) -> dict[str, Any]:
    """The listener's state of one study (``{}`` until it has one)."""
    try:
        state: dict[str, Any] = json.loads((out / "incoming" / token / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state


def round_latencies(
    batch: list[tuple[str, list[Path]]], port: int, rest: str, out: Path, key: bytes, timeout: float = 600.0
) -> list[float]:
    """Send ``batch`` at once (one storescu each) and return each study's latency in seconds."""
    command = ["storescu", "-aet", "BENCH", "-aec", "LISTEN", "127.0.0.1", str(port)]
    senders = [
        subprocess.Popen([*command, *map(str, files)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _, files in batch
    ]
    for sender in senders:
        if sender.wait(timeout=300) != 0:
            raise SystemExit("storescu failed")
    tokens = {uid: pseudonymize(key, uid, namespace="study", length=16) for uid, _ in batch}
    stored: dict[str, float] = {}
    unscored: dict[str, str] = {}  # a study listen could not score gets a logged reason and no SR, by design
    deadline = time.monotonic() + timeout
    while len(stored) + len(unscored) < len(batch) and time.monotonic() < deadline:
        have = sr_studies(rest)
        now = time.time()
        for uid, token in tokens.items():
            if uid in stored or uid in unscored:
                continue
            if (orthanc := orthanc_study_id(rest, uid)) and orthanc in have:
                stored[uid] = now
            elif (state := study_state(out, token)).get("status") == "failed":
                unscored[uid] = str(state.get("reason"))
        time.sleep(0.2)
    for uid, reason in unscored.items():
        print(f"study {tokens[uid]} not scored: {reason}", file=sys.stderr)
    if not stored or len(stored) + len(unscored) < len(batch):
        raise SystemExit(f"{len(batch) - len(stored)} SR(s) not stored within {timeout:.0f} s (see listen.log)")
    latencies = []
    for uid in stored:
        state = study_state(out, tokens[uid])
        if state.get("status") != "done":
            raise SystemExit(f"study {tokens[uid]}: {state.get('status')} ({state.get('reason')})")
        latencies.append(stored[uid] - float(state["last_received"]))
    return latencies


def summary(label: str, values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=float)
    return {
        "label": label, "studies": int(array.size), "median_s": float(np.median(array)),
        "p95_s": float(np.percentile(array, 95)), "max_s": float(array.max()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10, help="synthetic patients of the development extract")
    parser.add_argument("--single", type=int, default=3, help="rounds of one study")
    parser.add_argument("--batches", type=int, default=2, help=f"rounds of {BATCH} studies sent at once")
    parser.add_argument("--workers", type=int, default=2, help="listen --workers")
    parser.add_argument("--quiet", type=float, default=2.0, help="listen --quiet-seconds (part of the latency)")
    parser.add_argument("--json", type=Path, default=None, help="write the key figures here")
    args = parser.parse_args()
    setup = package_for(args.patients)
    queue = studies(setup["extract"])
    needed = 1 + args.single + BATCH * args.batches
    if len(queue) < needed:
        raise SystemExit(f"the extract has {len(queue)} studies; {needed} are needed (raise --patients)")
    key = load_key(setup["key_file"])
    run = WORK / "listen_run"
    import shutil

    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    port = free_port()
    with start_orthanc(run / "orthanc") as server:
        process = start_listen(setup, run / "out", port, server.dimse_url, args.workers, args.quiet)
        try:
            warm = round_latencies([queue.pop(0)], port, server.rest_url, run / "out", key)
            single = [v for _ in range(args.single) for v in round_latencies([queue.pop(0)], port, server.rest_url,
                                                                               run / "out", key)]  # fmt: skip
            batched: list[float] = []
            for _ in range(args.batches):
                batch = [queue.pop(0) for _ in range(BATCH)]
                batched += round_latencies(batch, port, server.rest_url, run / "out", key)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=300)
    rows = [summary("1 study", single), summary(f"{BATCH} studies at once", batched)]
    print(f"pacs-workbench listen: last instance received -> SR stored in Orthanc, per study "
          f"(quiet period {args.quiet:g} s included; --workers {args.workers}; warm model, first study "
          f"{warm[0]:.1f} s not counted; listen exited with {code})")  # fmt: skip
    print(f"{'scenario':<22}{'studies':>8}{'median s':>10}{'p95 s':>8}{'max s':>8}")
    for row in rows:
        print(f"{row['label']:<22}{row['studies']:>8}{row['median_s']:>10.2f}{row['p95_s']:>8.2f}{row['max_s']:>8.2f}")
    if args.json:
        write_json_atomic(args.json, {
            "patients": args.patients, "workers": args.workers, "quiet_s": args.quiet, "warmup_s": warm[0],
            "exit_code": code, "scenarios": rows, "single": single, "batched": batched,
        }, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()

"""``pacs-workbench listen`` end to end with clients nobody here wrote: dcmtk's storescu sends, Orthanc stores.

A package is developed from a small synthetic PACS (:func:`tests.deploy.listen_fixtures.develop_package`).
The listener runs as a real subprocess; storescu sends one study from an allowed AE title and
another from an AE title not on the allow-list. The SR must reach Orthanc, be valid for dciodvfy
and hold the risk that ``predict`` gives for the study when its cases are built, by the
preprocessing stage, from the SEG the listener sent; the refused study leaves nothing behind;
SIGTERM ends the listener with exit code 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
import pytest
import requests

from pacs_workbench.deploy import predict_cases
from pacs_workbench.deploy.report_sr import read_risk
from pacs_workbench.deploy.score_study import age_years
from pacs_workbench.preprocess import PreprocessParams, find_cases, preprocess_cases
from tests.deploy.listen_fixtures import develop_package
from tests.orthanc import free_port, start_orthanc

STORESCU = shutil.which("storescu")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
pytestmark = [pytest.mark.skipif(STORESCU is None, reason="dcmtk's storescu is not installed"), pytest.mark.slow]


@pytest.fixture(scope="module")
def developed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return develop_package(tmp_path_factory.mktemp("listen_dev"), patients=10)


def study_files(extract: Path, index: int) -> list[Path]:
    """The CT images (axial series and localizer) of the extract's ``index``-th study."""
    study = sorted(p for p in (extract / "dicom").glob("*/*") if p.is_dir())[index]
    files = sorted(study.rglob("*.dcm"))
    return [f for f in files if str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) == CT_IMAGE]


def send(files: list[Path], aet: str, port: int) -> subprocess.CompletedProcess[str]:
    assert STORESCU is not None
    command = [STORESCU, "-aet", aet, "-aec", "LISTEN", "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def start_listen(developed: dict[str, Any], out: Path, port: int, store_to: str) -> subprocess.Popen[bytes]:
    """The listener as a subprocess, once it says it listens (its log in ``out.parent/listen.log``)."""
    env = {**os.environ, "PACS_WORKBENCH_KEY_FILE": str(developed["key_file"])}
    command = [
        sys.executable, "-m", "pacs_workbench", "listen", "--package", str(developed["package"]), "--ae-title",
        "LISTEN", "--port", str(port), "--out", str(out), "--allow-ae", "MODALITY", "--quiet-seconds", "1",
        "--store-to", store_to,
    ]  # fmt: skip
    log = out.parent / "listen.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while "listening on" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"listen did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return process


def listener_states(out: Path) -> list[dict[str, Any]]:
    """The ``state.json`` of every study the listener holds under ``out``."""
    return [json.loads(p.read_text()) for p in sorted((out / "incoming").glob("*/state.json"))]


def wait_for_series(rest: str, modality: str, out: Path, timeout: float = 300.0) -> str:
    """The Orthanc id of the first instance of a ``modality`` series, once one is stored.

    Fails at once, with the listener's log, when a study the listener holds is ``failed``: the
    series will never come, and the reason is what the failure should show.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = requests.post(f"{rest}/tools/find", json={"Level": "Series", "Query": {"Modality": modality}},
                              timeout=30).json()  # fmt: skip
        if found:
            return str(requests.get(f"{rest}/series/{found[0]}/instances", timeout=30).json()[0]["ID"])
        if any(s.get("status") == "failed" for s in listener_states(out)):
            break
        time.sleep(0.5)
    log = (out.parent / "listen.log").read_text(errors="replace")[-3000:]
    raise AssertionError(f"no {modality} series reached Orthanc; studies: {listener_states(out)}\n{log}")


def predict_from_seg(developed: dict[str, Any], images: list[Path], seg: Path, work: Path) -> pd.DataFrame:
    """``predict`` on the study: cases from the SEG through the preprocessing stage, with the package's parameters."""
    tree = work / "tree"
    tree.mkdir(parents=True)
    for i, path in enumerate(images):
        shutil.copy(path, tree / f"{i:04d}.dcm")
    shutil.copy(seg, tree / "seg.dcm")
    package = developed["package"]
    params = json.loads((package / "preprocessing.json").read_text())["CT"]
    cases = find_cases(tree, key_file=developed["key_file"], progress=False)
    preprocess_cases(cases, work / "preprocessed", PreprocessParams.coerce(params), progress=False)
    header = pydicom.dcmread(images[0], stop_before_pixels=True)
    patient = str(cases["pseudo_patient_id"].iloc[0])
    cohort = pd.DataFrame([{"pseudo_patient_id": patient, "study_index": 0, "age_years": age_years(header),
                            "pack_years": float("nan")}])  # fmt: skip
    cohort.to_parquet(work / "cohort.parquet", index=False)
    predict_cases(package, work / "preprocessed" / "cases.parquet", work / "predicted", cohort=work / "cohort.parquet",
                  progress=False)  # fmt: skip
    return pd.read_parquet(work / "predicted" / "predictions.parquet")


def dciodvfy_errors(path: Path) -> list[str] | None:
    dciodvfy = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(Path(sys.executable).parent))
    if dciodvfy is None:
        return None
    proc = subprocess.run([dciodvfy, "-new", str(path)], capture_output=True, text=True)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_listen_scores_a_study_into_orthanc(developed: dict[str, Any], tmp_path: Path) -> None:
    images, other = study_files(developed["extract"], 0), study_files(developed["extract"], 3)
    out, port = tmp_path / "listen", free_port()
    with start_orthanc(tmp_path / "orthanc") as server:
        process = start_listen(developed, out, port, server.dimse_url)
        try:
            refused = send(other, "INTRUDER", port)
            sent = send(images, "MODALITY", port)
            assert sent.returncode == 0, sent.stderr
            sr_id = wait_for_series(server.rest_url, "SR", out)
            seg_id = wait_for_series(server.rest_url, "SEG", out)
            for name, orthanc_id in (("sr.dcm", sr_id), ("seg.dcm", seg_id)):
                stored = requests.get(f"{server.rest_url}/instances/{orthanc_id}/file", timeout=30)
                (tmp_path / name).write_bytes(stored.content)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
    log = (tmp_path / "listen.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    # The intruder was rejected and nothing it sent was kept: one study folder, the allowed one.
    assert refused.returncode != 0
    assert log.count("association rejected") == 1  # the intruder's, not the allowed sender's
    assert "association rejected: calling AE title not on the allow-list" in log
    studies = [p for p in (out / "incoming").iterdir() if p.is_dir()]
    assert len(studies) == 1 and not list(studies[0].glob("*.dcm"))  # scored, then released
    state = json.loads((studies[0] / "state.json").read_text())
    assert state["status"] == "done", state
    # The SR is valid, references the source study and holds predict's risk for the study.
    errors = dciodvfy_errors(tmp_path / "sr.dcm")
    assert not errors, "\n".join(errors or [])
    sr = pydicom.dcmread(tmp_path / "sr.dcm")
    source = pydicom.dcmread(images[0], stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    risk, group = read_risk(tmp_path / "sr.dcm")
    predicted = predict_from_seg(developed, images, tmp_path / "seg.dcm", tmp_path / "predict")
    assert len(predicted) == 1
    assert risk == pytest.approx(float(predicted["risk"].iloc[0]), abs=1e-9)
    assert group == predicted["risk_group"].iloc[0]
    # Logs carry the study pseudonym, never the patient's name or ID.
    assert str(source.PatientID) not in log and str(source.PatientName).split("^")[0] not in log

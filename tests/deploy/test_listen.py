"""The listener's SCP with dcmtk's storescu: allow-listed AEs kept per study, others rejected, state survives."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from pacs_workbench.deploy.listen_scp import STATE_FILE, StudyReceiver
from tests.preprocess.fixtures import make_series, write

KEY = b"k" * 32
STORESCU = shutil.which("storescu")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
pytestmark = pytest.mark.skipif(STORESCU is None, reason="dcmtk's storescu is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(files: list[Path], aet: str, port: int) -> subprocess.CompletedProcess[str]:
    assert STORESCU is not None
    command = [STORESCU, "-aet", aet, "-aec", "LISTEN", "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    return list(write(make_series(n=4, rows=16, cols=16, deidentified=True), tmp_path / "ct"))


def test_allowed_ae_study_over_two_associations_is_one_study(study: list[Path], tmp_path: Path) -> None:
    receiver = StudyReceiver(tmp_path / "out", "LISTEN", ["MODALITY"], KEY)
    port = _free_port()
    receiver.start(port=port)
    try:
        assert _send(study[:2], "MODALITY", port).returncode == 0
        assert _send(study[2:], "MODALITY", port).returncode == 0
    finally:
        receiver.stop()
    folders = [p for p in (tmp_path / "out" / "incoming").iterdir() if p.is_dir()]
    assert len(folders) == 1 and len(list(folders[0].glob("*.dcm"))) == len(study)
    assert receiver.complete_studies(quiet_s=3600) == []
    assert receiver.complete_studies(quiet_s=0) == folders
    # A restart finds the study received but not scored, from the state on disk.
    again = StudyReceiver(tmp_path / "out", "LISTEN", ["MODALITY"], KEY)
    assert again.complete_studies(quiet_s=0) == folders and (folders[0] / STATE_FILE).is_file()


def test_ae_not_on_the_allow_list_is_rejected_and_nothing_kept(study: list[Path], tmp_path: Path) -> None:
    receiver = StudyReceiver(tmp_path / "out", "LISTEN", ["MODALITY"], KEY)
    port = _free_port()
    receiver.start(port=port)
    try:
        result = _send(study, "INTRUDER", port)
    finally:
        receiver.stop()
    assert result.returncode != 0
    assert not list((tmp_path / "out" / "incoming").rglob("*"))


def test_disk_bound_refuses_instances_beyond_it(study: list[Path], tmp_path: Path) -> None:
    one = study[0].stat().st_size
    receiver = StudyReceiver(tmp_path / "out", "LISTEN", ["MODALITY"], KEY, max_bytes=int(one * 2.5))
    port = _free_port()
    receiver.start(port=port)
    try:
        _send(study, "MODALITY", port)
    finally:
        receiver.stop()
    assert len(list((tmp_path / "out" / "incoming").rglob("*.dcm"))) == 2


@pytest.mark.parametrize("protocol", ["dimse", "dicomweb"])
def test_results_reach_orthanc(protocol: str, study: list[Path], tmp_path: Path) -> None:
    import requests

    from pacs_workbench.deploy.listen_send import send_results
    from pacs_workbench.deploy.report_sr import LesionMeasurement, read_risk, write_measurement_report
    from tests.orthanc import start_orthanc

    sr = write_measurement_report(
        [str(p) for p in study], [LesionMeasurement(100.0, 5.0)], 0.25, "low", tmp_path / "sr.dcm",
        model_name="pacs-workbench risk model", model_version="ab" * 8,
    )  # fmt: skip
    with start_orthanc(tmp_path / "orthanc") as server:
        url = server.dimse_url if protocol == "dimse" else server.dicomweb_url
        assert send_results([sr], url) == 1
        ids = requests.get(f"{server.rest_url}/instances", timeout=30).json()
        assert len(ids) == 1
        back = requests.get(f"{server.rest_url}/instances/{ids[0]}/file", timeout=30).content
    (tmp_path / "back.dcm").write_bytes(back)
    assert read_risk(tmp_path / "back.dcm") == (0.25, "low")


def test_listener_scores_once_and_restart_picks_up_pending(study: list[Path], tmp_path: Path) -> None:
    from pacs_workbench.deploy.listen import Listener

    seen: list[int] = []

    def scorer(folder: Path) -> dict[str, object]:
        seen.append(len(list(folder.glob("*.dcm"))))
        if len(seen) == 1:
            raise ValueError("no series matches the cohort criteria")
        return {"sr": "sr.dcm"}

    out = tmp_path / "out"
    port = _free_port()
    receiver = StudyReceiver(out, "LISTEN", ["MODALITY"], KEY)
    receiver.start(port=port)
    assert _send(study, "MODALITY", port).returncode == 0
    receiver.stop()  # received, never scored: a restart must pick it up
    listener = Listener(StudyReceiver(out, "LISTEN", ["MODALITY"], KEY), scorer, quiet_s=0.0)
    thread = threading.Thread(target=listener.run, kwargs={"port": _free_port(), "interval_s": 0.05})
    thread.start()
    try:
        for _ in range(200):
            if seen:
                break
            threading.Event().wait(0.05)
    finally:
        listener.stop()
        thread.join(timeout=30)
    assert seen == [len(study)]
    state = next((out / "incoming").glob(f"*/{STATE_FILE}")).read_text(encoding="utf-8")
    assert '"failed"' in state and "cohort criteria" in state


def test_a_queued_study_is_queued_once(tmp_path: Path) -> None:
    """A study left queued by a stopped run is queued on the first poll, and no later poll queues it again."""
    from pacs_workbench.deploy.listen import Listener

    receiver = StudyReceiver(tmp_path / "out", "LISTEN", ["MODALITY"], KEY)
    folder = receiver.incoming / "study"
    folder.mkdir()
    (folder / STATE_FILE).write_text('{"status": "queued", "last_received": 0}', encoding="utf-8")
    listener = Listener(receiver, lambda _folder: {}, quiet_s=0.0)  # no workers started: the queue keeps it
    assert listener.poll() == 1
    assert listener.poll() == 0
    assert listener.queue.qsize() == 1


def test_a_study_is_not_complete_while_its_association_is_open(study: list[Path], tmp_path: Path) -> None:
    """However long a sender pauses inside its association, half a series is never handed to scoring."""
    import pydicom
    from pynetdicom import AE

    receiver = StudyReceiver(tmp_path / "out", "LISTEN", ["MODALITY"], KEY)
    port = _free_port()
    receiver.start(port=port)
    sender = AE(ae_title="MODALITY")
    sender.add_requested_context(CT_IMAGE_STORAGE)
    try:
        assoc = sender.associate("127.0.0.1", port, ae_title="LISTEN")
        assert assoc.is_established
        assert assoc.send_c_store(pydicom.dcmread(study[0])).Status == 0x0000
        assert receiver.complete_studies(quiet_s=0) == []  # quiet, but the sender has not said it is done
        assoc.release()
        folders = [p for p in (tmp_path / "out" / "incoming").iterdir() if p.is_dir()]
        for _ in range(100):  # the release reaches the receiver's thread shortly after
            if receiver.complete_studies(quiet_s=0):
                break
            threading.Event().wait(0.05)
        assert receiver.complete_studies(quiet_s=0) == folders
    finally:
        receiver.stop()


def test_instances_arriving_while_scored_get_the_study_scored_again_whole(study: list[Path], tmp_path: Path) -> None:
    from pacs_workbench.deploy.listen import Listener

    port = _free_port()
    seen: list[int] = []

    def scorer(folder: Path) -> dict[str, object]:
        seen.append(len(list(folder.glob("*.dcm"))))
        if len(seen) == 1:  # the rest of the study arrives while the first part is scored
            assert _send(study[2:], "MODALITY", port).returncode == 0
        return {"sr": "sr.dcm"}

    out = tmp_path / "out"
    listener = Listener(StudyReceiver(out, "LISTEN", ["MODALITY"], KEY), scorer, quiet_s=0.0)
    thread = threading.Thread(target=listener.run, kwargs={"port": port, "interval_s": 0.05})
    thread.start()
    try:
        threading.Event().wait(0.5)
        assert _send(study[:2], "MODALITY", port).returncode == 0
        for _ in range(400):
            if len(seen) >= 2:
                break
            threading.Event().wait(0.05)
    finally:
        listener.stop()
        thread.join(timeout=30)
    assert seen == [2, len(study)]
    state = json.loads(next((out / "incoming").glob(f"*/{STATE_FILE}")).read_text(encoding="utf-8"))
    assert state["status"] == "done" and not list((out / "incoming").rglob("*.dcm"))


def test_an_unreadable_state_is_logged_once_and_the_other_studies_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pacs_workbench.deploy.listen import Listener

    receiver = StudyReceiver(tmp_path / "out", "LISTEN", ["MODALITY"], KEY)
    for name, state in (("broken", "{not json"), ("study", '{"status": "receiving", "last_received": 0}')):
        (receiver.incoming / name).mkdir()
        (receiver.incoming / name / STATE_FILE).write_text(state, encoding="utf-8")
    listener = Listener(receiver, lambda _folder: {}, quiet_s=0.0)  # no workers started: the queue keeps it
    with caplog.at_level("ERROR", logger="pacs_workbench.listen"):
        assert listener.poll() == 1 and listener.poll() == 0
    assert listener.queue.get_nowait().name == "study"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("study broken: state.json unreadable (")

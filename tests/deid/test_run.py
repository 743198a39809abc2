"""Folder de-identification (pacs_workbench.deid.run): quarantine, logs, escrow, determinism, reruns and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from pacs_workbench.cli import main
from pacs_workbench.core.files import sha256_file
from pacs_workbench.core.pseudonym import generate_key
from pacs_workbench.deid.audit import audit_folder
from pacs_workbench.deid.engine import COUNT_FIELDS
from pacs_workbench.deid.instance import dataset_bytes
from pacs_workbench.deid.run import DeidRunError, deidentify_folder
from tests.deid.fixtures import (
    ALICE,
    BOB,
    StudySpec,
    study_datasets,
)


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_input_is_accounted_for(extract: dict) -> None:
    src, dst, root = extract["src"], extract["dst"], extract["root"]
    files = [p for p in src.rglob("*") if p.is_file()]
    log = pd.read_parquet(dst / "deid_log.parquet")
    assert len(log) == len(files) == extract["summary"]["files"]
    assert set(log["source_sha256"]) == {sha256_file(p) for p in files}
    assert {"source_sha256", "outcome", "output", "reason", *COUNT_FIELDS} <= set(log.columns)
    quarantined = log[log["outcome"] == "quarantined"]
    reasons = " | ".join(sorted(quarantined["reason"]))
    assert len(quarantined) == 3
    assert "not DICOM" in reasons and "truncated" in reasons and "could not be decoded" in reasons
    quarantine = root / "dst.quarantine"
    for sha in quarantined["source_sha256"]:
        assert (quarantine / f"{sha}.dcm").is_file() and (quarantine / f"{sha}.reason.txt").is_file()
    written = log[log["outcome"] == "written"]
    for rel in written["output"]:
        assert (dst / rel).is_file()
    assert written["n_pixel_boxes"].sum() > 0 and written["n_private_removed"].sum() > 0
    assert written["n_uid_replaced"].min() > 0 and written["n_dates_shifted"].sum() > 0


def test_output_names_are_pseudonymous(extract: dict) -> None:
    dst = extract["dst"]
    for path in dst.rglob("*.dcm"):
        parts = path.relative_to(dst).parts
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert list(parts) == [ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID + ".dcm"]
    names = " ".join(p.name for p in dst.rglob("*"))
    for phi in ("Kowalczyk", "MRN4471023", "ACC7781203", "20200115", "Okonkwo"):
        assert phi not in names
    assert len({p.parts[len(dst.parts)] for p in dst.rglob("*.dcm")}) == 2  # two patients
    for name in ("deid_log.parquet", "deid_actions.parquet", "deid_run.json"):
        data = (dst / name).read_bytes()
        for phi in ("Kowalczyk", "MRN4471023", "ACC7781203", "Okonkwo"):
            assert phi.encode() not in data
    actions = pd.read_parquet(dst / "deid_actions.parquet")
    assert list(actions.columns) == ["tag", "keyword", "action", "count"]
    assert ((actions["keyword"] == "PatientAddress") & (actions["action"] == "X")).any()


def test_escrow_mapping(extract: dict, tmp_path: Path) -> None:
    escrow = extract["root"] / "escrow.csv"
    assert oct(escrow.stat().st_mode & 0o777) == "0o600"
    table = pd.read_csv(escrow)
    assert set(table["kind"]) == {"PatientID", "AccessionNumber", "UID"}
    patients = table[table["kind"] == "PatientID"].set_index("original")["pseudonym"]
    assert patients[ALICE.mrn] != patients[BOB.mrn]
    with pytest.raises(DeidRunError, match="inside the output"):
        deidentify_folder(extract["src"], tmp_path / "d", key_file=extract["key"], mapping=tmp_path / "d" / "m.csv")
    with pytest.raises(DeidRunError, match="quarantine"):
        deidentify_folder(extract["src"], tmp_path / "d", key_file=extract["key"], quarantine=tmp_path / "d" / "q")
    with pytest.raises(DeidRunError, match="inside the source"):
        deidentify_folder(extract["src"], extract["src"] / "out", key_file=extract["key"])


def test_same_key_same_bytes_and_resume(extract: dict, tmp_path: Path) -> None:
    again = tmp_path / "again"
    deidentify_folder(extract["src"], again, key_file=extract["key"], workers=1, progress=False)
    assert _tree_digest(again) == _tree_digest(extract["dst"])
    # a run killed part way: outputs missing, a temporary file left behind; rerun finishes the job
    outputs = sorted(again.rglob("*.dcm"))
    for path in outputs[::2]:
        path.unlink()
    (outputs[1].parent / f".{outputs[1].name}.999-k1lled00.tmp").write_bytes(b"partial")
    deidentify_folder(extract["src"], again, key_file=extract["key"], workers=2, progress=False)
    assert _tree_digest(again) == _tree_digest(extract["dst"])
    # another key: other pseudonyms
    other_key = generate_key(tmp_path / "other.key")
    other = tmp_path / "other"
    deidentify_folder(extract["src"], other, key_file=other_key, progress=False)
    ours = {p.name for p in extract["dst"].iterdir() if p.is_dir()}
    theirs = {p.name for p in other.iterdir() if p.is_dir()}
    assert ours and theirs and not ours & theirs


def test_cli_end_to_end(extract: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "cli.key"
    assert main(["keygen", str(key)]) == 0
    out = tmp_path / "cli_out"
    rc = main(["deid", str(extract["src"]), "--out", str(out), "--key-file", str(key), "--workers", "1", "--quiet"])
    assert rc == 0
    capsys.readouterr()
    rc = main(["audit", str(out), "--phi-list", str(extract["phi"]), "--workers", "1", "--quiet", "--no-ocr"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"]
    (out / "leak.txt").write_text(f"{ALICE.last}^{ALICE.first}")
    assert main(["audit", str(out), "--phi-list", str(extract["phi"]), "--quiet", "--no-ocr"]) == 1
    assert main(["deid", str(extract["src"]), "--out", str(out), "--key-file", str(key), "--options", "nope"]) == 2
    os.environ.pop("PACS_WORKBENCH_KEY_FILE", None)


def test_duplicate_instances_and_split_pseudonyms(extract: dict, tmp_path: Path) -> None:
    ct = study_datasets(StudySpec(ALICE, "20200115", "ACC7781203"), n_ct=1)[0]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.dcm").write_bytes(dataset_bytes(ct))
    (src / "a_copy.dcm").write_bytes(dataset_bytes(ct))  # an identical copy is harmless
    ct.InstanceNumber = 7  # same SOP Instance UID and pixels, another header: the same instance
    (src / "b.dcm").write_bytes(dataset_bytes(ct))
    dst = tmp_path / "dst"
    summary = deidentify_folder(src, dst, key_file=extract["key"], progress=False)
    assert (summary["written"], summary["duplicate"], summary["quarantined"]) == (1, 2, 0)
    log = pd.read_parquet(dst / "deid_log.parquet")
    written = log[log["outcome"] == "written"].iloc[0]
    for _, row in log[log["outcome"] == "duplicate"].iterrows():  # each points at the written row
        assert row["output"] == written["output"] and written["source_sha256"] in row["reason"]
    assert len(list(dst.rglob("*.dcm"))) == 1
    # the same UID with other pixels cannot be the same instance: quarantined, with that reason
    arr = ct.pixel_array.copy()
    arr[0, 0] += 1
    ct.PixelData = arr.tobytes()
    (src / "c.dcm").write_bytes(dataset_bytes(ct))
    again = deidentify_folder(src, tmp_path / "dst2", key_file=extract["key"], progress=False)
    # whichever copy the fixed order picks, the other pixels cannot share its output
    assert again["written"] == 1 and again["quarantined"] in (1, 3)
    assert again["written"] + again["duplicate"] + again["quarantined"] == 4
    assert all("different pixels" in reason for reason in again["quarantine_reasons"])
    (src / "c.dcm").unlink()
    # the same patient under two keys in one folder: the audit sees one person split in two
    other = tmp_path / "other"
    deidentify_folder(src, other, key_file=generate_key(tmp_path / "k2.key"), progress=False)
    for path in other.rglob("*.dcm"):
        target = dst / path.relative_to(other)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    found = audit_folder(dst, source=src, ocr=False, progress=False)
    assert "pseudonym_split" in found["findings_by_category"]


def test_rerun_removes_only_temporaries_of_processes_that_are_gone(extract: dict, tmp_path: Path) -> None:
    dst, quarantine = tmp_path / "dst", tmp_path / "q"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = [folder / "x" / f".a.dcm.{finished.pid}-k1lled00.tmp" for folder in (dst, quarantine)]
    live = dst / "y" / f".b.dcm.{os.getpid()}-running.tmp"  # a concurrent run still writing
    for path in [*dead, live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    deidentify_folder(extract["src"], dst, key_file=extract["key"], quarantine=quarantine, progress=False)
    assert not any(p.exists() for p in dead)
    assert live.exists()


def test_the_deid_command_starts_without_the_notebook_libraries() -> None:
    # the command and its workers load the engine only; the notebook's tables, plots and
    # widgets load when a notebook asks for them
    code = (
        "import sys; from pacs_workbench.deid import deidentify_folder; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'ipywidgets') if m in sys.modules)); "
        "import pacs_workbench.deid as deid; "
        "print(all(callable(getattr(deid, name)) for name in deid.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"

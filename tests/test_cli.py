from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pacs_workbench.cli import build_parser, main

CONTRACT = ["synth", "index", "keygen", "predict", "listen", "run", "demo"]


def test_every_contract_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in CONTRACT:
        with pytest.raises(SystemExit) as stop:
            main([name, "--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert f"pacs-workbench {name}" in text
        assert len(text) > 200, f"{name} --help explains too little"


def test_python_dash_m_is_the_same_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pacs_workbench", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in CONTRACT:
        assert name in out


def test_missing_subcommand_is_an_error() -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([])
    assert stop.value.code == 2


REFUSALS = [
    (["keygen", "{tmp}/existing.key"], 1, "refusing to overwrite existing key file {tmp}/existing.key"),
    (["audit", "{tmp}/nothere"], 2, "audit: not a folder: {tmp}/nothere"),
    (
        ["deid", "{tmp}/nothere", "--out", "{tmp}/o", "--key-file", "{tmp}/nokey", "--quiet"],
        2,
        "deid: source not found: {tmp}/nothere",
    ),
    (
        ["features", "{tmp}/nothere.csv", "--params", "{tmp}/p.yaml", "--out", "{tmp}/f.parquet"],
        2,
        "features: case table not found: {tmp}/nothere.csv",
    ),
    (
        ["model", "{tmp}/table.csv", "--label", "a", "--group", "zz", "--out", "{tmp}/m"],
        2,
        "model: column(s) not in the table: zz",
    ),
    (
        ["index", "dicomweb+http://127.0.0.1:9/dicom-web", "--out", "{tmp}/idx"],
        2,
        "pacs-workbench index: error: PACS query failed (ConnectionError); the previous index is unchanged",
    ),
    (
        ["run", "--params", "{tmp}/nothere.yaml"],
        2,
        "pacs-workbench run: error: parameter file not found: {tmp}/nothere.yaml",
    ),
]


@pytest.mark.parametrize(("argv", "code", "message"), REFUSALS, ids=[r[0][0] for r in REFUSALS])
def test_errors_a_user_can_fix_are_one_line_and_an_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    (tmp_path / "existing.key").write_bytes(b"x")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == code
    assert capsys.readouterr().err.splitlines()[-1] == message.format(tmp=tmp_path)

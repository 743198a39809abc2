from __future__ import annotations

import subprocess
import sys

import pytest

from pacs_workbench.cli import build_parser, main

CONTRACT = ["synth", "index", "keygen", "run", "demo"]


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

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pacs_workbench.cli import main
from pacs_workbench.core.pseudonym import KeyFileError, generate_key, keyed_int, load_key, pseudonymize


def test_keygen_mode_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    assert main(["keygen", str(key_file)]) == 0
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    before = key_file.read_bytes()
    assert main(["keygen", str(key_file)]) == 1
    assert key_file.read_bytes() == before


def test_pseudonyms_stable_per_key_and_differ_between_keys(tmp_path: Path) -> None:
    k1 = load_key(generate_key(tmp_path / "a.key"))
    k2 = load_key(generate_key(tmp_path / "b.key"))
    assert pseudonymize(k1, "12345678") == pseudonymize(k1, " 12345678 ")
    assert pseudonymize(k1, "12345678") != pseudonymize(k2, "12345678")
    assert pseudonymize(k1, "12345678", "patient") != pseudonymize(k1, "12345678", "accession")
    assert len(pseudonymize(k1, "x")) == 16 and pseudonymize(k1, "x").isalnum()
    assert 0 <= keyed_int(k1, "x", "date", 365) < 365


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_file = generate_key(tmp_path / "k.key")
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_key(key_file)


def test_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = generate_key(tmp_path / "k.key")
    monkeypatch.setenv("PACS_WORKBENCH_KEY_FILE", str(key_file))
    assert load_key() == load_key(key_file)
    monkeypatch.delenv("PACS_WORKBENCH_KEY_FILE")
    with pytest.raises(KeyFileError, match="not set"):
        load_key()


def test_malformed_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not hex at all")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError, match="hex"):
        load_key(bad)

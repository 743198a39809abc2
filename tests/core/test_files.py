from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pacs_workbench.core.files import (
    json_ready,
    pid_alive,
    remove_stale_temp_files,
    temp_file_owner,
    write_atomic,
    write_text_atomic,
    write_together,
)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")

    def half_then_fail(temp: Path) -> None:
        temp.write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(2**22 + 12345)


def test_suffix_reaches_the_writer_and_stale_suffixed_temps_are_removed(tmp_path: Path) -> None:
    seen: list[str] = []
    target = tmp_path / "img.nii.gz"
    write_atomic(target, lambda temp: (seen.append(temp.name), temp.write_bytes(b"x")), suffix=".nii.gz")
    assert seen[0].endswith(".tmp.nii.gz")
    assert temp_file_owner(Path(seen[0])) == os.getpid()
    dead = 2**22 + 12345
    (tmp_path / f".img.nii.gz.{dead}-abc.tmp.nii.gz").write_bytes(b"half")
    spill = tmp_path / f".instances.parquet.{dead}-def.tmp"
    spill.mkdir()
    (spill / "spill.bin").write_bytes(b"0" * 10)
    live = tmp_path / f".other.{os.getpid()}-ghi.tmp"
    live.write_bytes(b"still writing")
    assert remove_stale_temp_files(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["img.nii.gz", live.name])


def test_json_ready_gives_strict_json() -> None:
    data = {1: np.float64("nan"), "a": [np.int64(3), np.array([1.5, np.inf])], "s": {"b", "a"}, "t": np.bool_(True)}
    assert json_ready(data) == {"1": None, "a": [3, [1.5, None]], "s": ["a", "b"], "t": True}
    json.dumps(json_ready(data), allow_nan=False)


def test_write_together_replaces_all_or_none(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    write_together([a, b], lambda temps: [t.write_text(t.name[:2]) for t in temps])
    assert a.read_text() == ".a" and b.read_text() == ".b"

    def second_fails(temps: list[Path]) -> None:
        temps[0].write_text("new a")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_together([a, b], second_fails)
    assert a.read_text() == ".a" and b.read_text() == ".b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]

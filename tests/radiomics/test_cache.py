"""The per-case cache: keys change with every input, entries round-trip, bad entries are misses."""

from __future__ import annotations

from pathlib import Path

from pacs_workbench.radiomics.cache import cache_file, cache_key, default_cache_dir, read_cache, write_cache


def test_key_depends_on_every_input() -> None:
    base = cache_key("a" * 64, "b" * 64, "c" * 64, "v3.1.0")
    others = {
        cache_key("x" * 64, "b" * 64, "c" * 64, "v3.1.0"),
        cache_key("a" * 64, "x" * 64, "c" * 64, "v3.1.0"),
        cache_key("a" * 64, "b" * 64, "x" * 64, "v3.1.0"),
        cache_key("a" * 64, "b" * 64, "c" * 64, "v3.2.0"),
    }
    assert base not in others and len(others) == 4


def test_entries_round_trip_and_foreign_or_broken_entries_are_misses(tmp_path: Path) -> None:
    assert default_cache_dir(tmp_path / "features.parquet") == tmp_path / "features.parquet.cache"
    key = cache_key("a" * 64, "b" * 64, "c" * 64, "v3.1.0")
    path = cache_file(tmp_path, key)
    assert path.parent.name == key[:2]
    write_cache(path, key, {"original_firstorder_Mean": 1.5})
    assert read_cache(path, key) == {"original_firstorder_Mean": 1.5}
    assert not list(path.parent.glob(".*.tmp"))
    assert read_cache(path, "another key") is None
    path.write_text("{not json")
    assert read_cache(path, key) is None
    assert read_cache(tmp_path / "missing.json", key) is None

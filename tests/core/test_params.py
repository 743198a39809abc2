from __future__ import annotations

from pathlib import Path

import pytest

from pacs_workbench.core.params import ParameterError, read_yaml_mapping


def test_read_yaml_mapping_names_the_file_in_each_error(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\nb: [x, y]\n")
    assert read_yaml_mapping(good, "good.yaml") == {"a": 1, "b": ["x", "y"]}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml_mapping(empty, "empty.yaml") == {}
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(ParameterError, match=r"broken\.yaml: not valid YAML"):
        read_yaml_mapping(broken, "broken.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ParameterError, match=r"list\.yaml: expected a mapping of sections, got list"):
        read_yaml_mapping(listed, "list.yaml", what="a mapping of sections")

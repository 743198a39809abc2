from __future__ import annotations

import re
from pathlib import Path

import pytest

from pacs_workbench.core.params import (
    HOME_ENV,
    REPO_ROOT,
    MissingInputError,
    ParameterError,
    project_path,
    project_paths,
    project_root,
    read_yaml_mapping,
    require_data,
    require_inputs,
)


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


def test_relative_paths_resolve_against_the_project_root_never_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data" / "demo").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # as a kernel started in notebooks/ or a script run from anywhere
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert project_root() == REPO_ROOT
    assert project_path("data/demo") == REPO_ROOT / "data" / "demo"
    monkeypatch.setenv(HOME_ENV, str(project))
    assert project_root() == project
    assert project_path("data/demo/dicom") == project / "data" / "demo" / "dicom"
    assert project_path("data/../data/demo") == project / "data" / "demo"
    assert project_path(str(elsewhere / "x")) == elsewhere / "x"  # absolute stays as given
    assert project_path("") is None and project_path(None) is None
    assert project_path("x", root=elsewhere) == elsewhere / "x"
    assert project_paths("data", "") == (project / "data", None)


def test_a_shipped_file_the_project_does_not_hold_is_the_workbench_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    shipped = "notebooks/params/radiomics/ct_default.yaml"
    assert project_path(shipped) == REPO_ROOT / shipped
    own = tmp_path / shipped
    own.parent.mkdir(parents=True)
    own.write_text("setting: {}\n")
    assert project_path(shipped) == own


def test_missing_inputs_stop_with_one_sentence_naming_what_to_run_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    (tmp_path / "data" / "demo" / "cohort").mkdir(parents=True)
    require_inputs("data/demo/cohort", "", None, run_first="01_cohort")  # present or unset: nothing to say
    with pytest.raises(MissingInputError) as missing:
        require_inputs("data/demo/cohort", "data/demo/deid", run_first="02_deid_audit")
    assert str(missing.value) == "data/demo/deid does not exist yet: run notebooks/02_deid_audit.ipynb first."
    # Jupyter shows the sentence alone, no traceback.
    assert missing.value._render_traceback_() == [f"MissingInputError: {missing.value}"]
    no_data = r"^There is no data yet \(data/demo/dicom does not exist\): `make demo` makes"
    with pytest.raises(MissingInputError, match=no_data):
        require_data("data/demo/dicom")
    outside = tmp_path.parent / "not-there"
    with pytest.raises(MissingInputError, match=re.escape(str(outside))):
        require_data(outside)

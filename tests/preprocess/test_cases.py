"""Case discovery: grouping by header, matching masks to series, pseudonyms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pacs_workbench.preprocess.cases import find_cases, scan_tree
from pacs_workbench.preprocess.qc import series_table
from tests.preprocess.fixtures import build_tree


def test_find_cases_groups_by_header_and_matches_masks(tree: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACS_WORKBENCH_KEY_FILE", raising=False)
    scan = scan_tree(tree["root"], progress=False)
    cases = scan.cases
    a_uid, b_uid = tree["a"][0].SeriesInstanceUID, tree["b"][0].SeriesInstanceUID
    assert sorted(cases.groupby("SeriesInstanceUID").size().items()) == sorted(
        [(a_uid, 2), (b_uid, 2), (tree["tilted"][0].SeriesInstanceUID, 1)]
    )
    assert set(cases.loc[cases.SeriesInstanceUID == a_uid, "mask_source"]) == {"SEG"}
    assert sorted(cases.loc[cases.SeriesInstanceUID == b_uid, "segment_number"]) == [1, 7]
    assert cases["case_id"].is_unique and cases["case_id"].str.match(r"^[0-9a-f]{10}_[0-9a-f]{6}$").all()
    assert cases["case_id"].tolist() == find_cases(tree["root"], progress=False)["case_id"].tolist()
    # Not de-identified and no key: per-scan pseudonyms, never the MRN.
    assert (cases["pseudo_patient_id_scope"] == "run").all()
    assert not cases["pseudo_patient_id"].str.contains("MRN").any()
    assert cases.groupby("SeriesInstanceUID")["pseudo_patient_id"].nunique().max() == 1
    masks = scan.masks.set_index("mask_source")
    assert (~scan.masks["matched"]).sum() == 1  # the orphan SEG
    assert masks.loc["RTSTRUCT"].query("SeriesInstanceUID == @a_uid")["reason"].str.contains("SEG").all()
    assert scan.n_not_dicom == 1 and scan.n_unreadable == 0
    series = series_table(scan)
    assert {"localizer", "tilt"} <= set(", ".join(series["flags"]).split(", "))
    assert "SeriesInstanceUID" not in series.columns and "series_folder" not in series.columns


def test_pseudonyms_from_key_or_deidentified_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacs_workbench.core.pseudonym import generate_key, load_key, pseudonymize

    key_file = generate_key(tmp_path / "project.key")
    monkeypatch.setenv("PACS_WORKBENCH_KEY_FILE", str(key_file))
    root = tmp_path / "raw"
    info = build_tree(root)
    cases = find_cases(root, progress=False)
    expected = pseudonymize(load_key(key_file), "MRN-A-5531", "patient")
    a_rows = cases[cases.SeriesInstanceUID == info["a"][0].SeriesInstanceUID]
    assert (a_rows["pseudo_patient_id"] == expected).all() and (a_rows["pseudo_patient_id_scope"] == "key").all()
    deid_root = tmp_path / "deid"
    build_tree(deid_root, deidentified=True)
    deid_cases = find_cases(deid_root, progress=False)
    assert (deid_cases["pseudo_patient_id_scope"] == "deid").all()
    assert set(deid_cases["pseudo_patient_id"]) == {"MRN-A-5531", "MRN-B-7700"}  # already pseudonyms there

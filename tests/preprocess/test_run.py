"""The cached, parallel run: caches, reruns, bad cases, unreadable files, empty runs, Dask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from pacs_workbench.preprocess.cases import find_cases
from pacs_workbench.preprocess.run import CASES_COLUMNS, preprocess_cases
from tests.preprocess.fixtures import array_of, make_seg, make_series, write


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.nii.gz")}


def test_preprocess_cases_writes_caches_and_redoes_only_what_changed(tree: dict[str, Any], tmp_path: Path) -> None:
    cases = find_cases(tree["root"], progress=False)
    out = tmp_path / "out"
    params = {"target_spacing_mm": [1.0, 1.0, 1.0], "crop_margin_mm": 3.0}
    first = preprocess_cases(cases, out, params, workers=2, progress=False)
    status = first.set_index("case_id")["status"]
    assert (status == "ok").sum() == 4 and (status == "excluded").sum() == 1
    excluded = first[first.status == "excluded"].iloc[0]
    assert excluded["stage"] == "series" and "gantry tilt" in excluded["reason"] and "tilt" in excluded["flags"]
    for row in first[first.status == "ok"].itertuples():
        image, mask = sitk.ReadImage(row.image), sitk.ReadImage(row.mask)
        assert image.GetSpacing() == pytest.approx((1, 1, 1)) and mask.GetSize() == image.GetSize()
        assert array_of(mask).sum() == row.mask_voxels_out > 0
        assert Path(row.image).name == f"{row.case_id}_image.nii.gz"
        assert [s["step"] for s in json.loads(row.steps)][:2] == ["load", "resample"]
    table = pd.read_csv(out / "cases.csv")
    assert list(table.columns[:3]) == ["case_id", "image", "mask"] and len(table) == 4
    assert {"SeriesInstanceUID", "mask_source", "pseudo_patient_id", "StudyDate", "Manufacturer"} <= set(table.columns)
    assert pd.read_parquet(out / "preprocess.parquet").shape[0] == 5
    # Nothing identifying in the outputs: no patient name, MRN, or source folder.
    for file in [out / "cases.csv", out / "preprocess.parquet", *sorted((out / "volumes").glob("*.json"))]:
        text = file.read_bytes()
        for secret in (b"Testperson", b"MRN-A-5531", b"MRN-B-7700", str(tree["root"]).encode()):
            assert secret not in text, (file.name, secret)

    before = _mtimes(out / "volumes")
    second = preprocess_cases(cases, out, params, workers=1, progress=False)
    assert second["cached"].all() and _mtimes(out / "volumes") == before
    assert second.drop(columns=["cached", "elapsed_s"]).equals(first.drop(columns=["cached", "elapsed_s"]))

    # An MR-only parameter cannot change CT cases: still nothing to do.
    third = preprocess_cases(cases, out, {**params, "normalization": "zscore"}, progress=False)
    assert third["cached"].all()

    # A parameter that matters redoes every case; a changed mask file only its own cases.
    fourth = preprocess_cases(cases, out, {**params, "crop_margin_mm": 5.0}, progress=False)
    assert not fourth["cached"].any()
    rt_path = cases.loc[cases.mask_source == "RTSTRUCT", "mask_path"].iloc[0]
    ds = pydicom.dcmread(rt_path)
    ds.StructureSetLabel = "edited"
    ds.save_as(rt_path)
    fifth = preprocess_cases(cases, out, {**params, "crop_margin_mm": 5.0}, progress=False)
    redone = set(fifth.loc[~fifth["cached"], "case_id"])
    assert redone == set(cases.loc[cases.mask_path == rt_path, "case_id"])


def test_bad_cases_are_accounted_for(tree: dict[str, Any], tmp_path: Path) -> None:
    folder = str(tree["root"] / "patient_a" / "study" / "ct")
    seg = next((tree["root"] / "patient_a" / "study" / "seg0").iterdir())
    cases = [
        ("good", folder, str(seg)),
        ("no-mask-file", folder, str(tmp_path / "missing.nii.gz")),
        ("bad id/../x", folder, str(seg)),
        ("empty-folder", str(tmp_path), str(seg)),
    ]
    (tmp_path / "junk.txt").write_text("x")
    result = preprocess_cases(cases, tmp_path / "out", {"target_spacing_mm": None}, progress=False)
    by_id = result.set_index("case_id")
    assert by_id.loc["good", "status"] == "ok"
    assert by_id.loc["bad id/../x", "status"] == "error" and "case_id" in by_id.loc["bad id/../x", "reason"]
    assert by_id.loc["empty-folder", "status"] == "excluded" and "no image files" in by_id.loc["empty-folder", "reason"]
    assert by_id.loc["no-mask-file", "status"] in ("excluded", "error")
    assert str(tmp_path) not in " ".join(result["reason"].fillna(""))
    # Provenance the tuples did not carry comes from the headers and the mask file.
    assert by_id.loc["good", "mask_source"] == "SEG" and by_id.loc["good", "Manufacturer"] == "SIEMENS"
    assert by_id.loc["good", "SeriesInstanceUID"] == tree["a"][0].SeriesInstanceUID
    # Native grid kept when no target spacing is given.
    good = sitk.ReadImage(by_id.loc["good", "image"])
    assert good.GetSpacing() == pytest.approx((0.7, 0.8, 2.5))


def test_truncated_file_is_reported_not_silently_dropped(tmp_path: Path) -> None:
    datasets = make_series(n=6)
    paths = write(datasets, tmp_path / "ct")
    mask = np.zeros((6, 12, 10), dtype=bool)
    mask[1:3, 3:6, 3:6] = True
    make_seg(datasets, mask).save_as(tmp_path / "seg.dcm")
    top = paths[-1]  # the highest slice: losing it leaves no gap to notice
    top.write_bytes(top.read_bytes()[:-100])
    result = preprocess_cases([("c1", str(tmp_path / "ct"), str(tmp_path / "seg.dcm"))], tmp_path / "out",
                                 {"target_spacing_mm": None}, progress=False)
    row = result.iloc[0]
    assert row["status"] == "ok" and row["n_slices"] == 5
    assert "unreadable_files" in row["flags"] and any("unreadable" in w for w in row["warnings"])


def test_no_cases_still_writes_empty_tables(tmp_path: Path) -> None:
    result = preprocess_cases([], tmp_path / "out", progress=False)
    assert result.empty and "status" in result.columns
    assert list(pd.read_csv(tmp_path / "out" / "cases.csv").columns) == CASES_COLUMNS


@pytest.mark.slow
def test_dask_cluster_gives_the_same_volumes(tree: dict[str, Any], tmp_path: Path) -> None:
    from distributed import LocalCluster

    cases = find_cases(tree["root"], progress=False)
    params = {"target_spacing_mm": [1.0, 1.0, 1.0], "interpolator": "bspline"}
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        remote = preprocess_cases(cases, tmp_path / "dask", params, scheduler=cluster.scheduler_address,
                                     progress=False)
    local = preprocess_cases(cases, tmp_path / "local", params, progress=False)
    assert remote["status"].tolist() == local["status"].tolist()
    for a, b in zip(remote[remote.status == "ok"].itertuples(), local[local.status == "ok"].itertuples(), strict=True):
        assert np.array_equal(array_of(sitk.ReadImage(a.image)), array_of(sitk.ReadImage(b.image)))
        assert np.array_equal(array_of(sitk.ReadImage(a.mask)), array_of(sitk.ReadImage(b.mask)))

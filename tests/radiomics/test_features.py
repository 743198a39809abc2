"""Feature extraction over many cases: columns and provenance, cache, failures, parallel runs, CLI.

Real pyradiomics on small synthetic spheres-with-noise volumes written as NIfTI, real process
pools and a real Dask LocalCluster on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk

from pacs_workbench.core.files import sha256_file
from pacs_workbench.radiomics import features
from pacs_workbench.radiomics.cache import default_cache_dir
from tests.radiomics.fixtures import CT_PARAMS, case_table, write_case


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return case_table(tmp_path_factory.mktemp("cases"))


@pytest.fixture(scope="module")
def serial(cases: pd.DataFrame) -> pd.DataFrame:
    return features.extract_features(cases, CT_PARAMS, workers=1, progress=False)


# --- many cases ------------------------------------------------------------------------------------


def test_table_columns_provenance_and_metadata(cases: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    frame = features.extract_features(cases, CT_PARAMS, out, progress=False)
    assert list(frame["case_id"]) == list(cases["case_id"])
    assert frame["error"].isna().all()
    carried = ("SeriesInstanceUID", "mask_source", "pseudo_patient_id", "Manufacturer")
    for column in (*carried, *features.PROVENANCE_COLUMNS):
        assert column in frame.columns, column
    assert "image" not in frame.columns and "mask" not in frame.columns
    assert not any(c.startswith("diagnostics_") for c in frame.columns)
    assert "original_firstorder_Mean" in frame.columns and "original_glcm_JointEntropy" in frame.columns
    assert frame["image_sha256"].iloc[0] == sha256_file(cases["image"].iloc[0])
    assert frame["params_sha256"].nunique() == 1
    assert set(frame["ibsi_corrections"]) == {"excess_kurtosis;pca_axes_sample_covariance"}
    # Larger spheres, larger volumes: values belong to their own case.
    assert frame["original_shape_VoxelVolume"].is_monotonic_increasing

    written = pd.read_parquet(out)
    pd.testing.assert_frame_equal(written, frame, check_dtype=False)
    schema_meta = pq.read_schema(out).metadata
    corrections = json.loads(schema_meta[features.CORRECTIONS_KEY])
    assert {c["id"] for c in corrections} >= {"excess_kurtosis", "pca_axes_sample_covariance"}
    meta = features.read_features_metadata(out)
    assert meta["params_sha256"] == frame["params_sha256"].iloc[0]
    assert meta["pyradiomics_version"].lstrip("v").startswith("3.")
    assert meta["params"]["setting"]["binWidth"] == 25

    sidecars = features.sidecar_paths(out)
    diagnostics = pd.read_parquet(sidecars["diagnostics"])
    assert len(diagnostics) == len(cases)
    assert "diagnostics_Mask-original_VoxelNum" in diagnostics.columns
    assert len(pd.read_parquet(sidecars["errors"])) == 0
    # Input paths (which may carry identifiers) never reach an output file.
    folder = str(Path(cases["image"].iloc[0]).parent).encode()
    for path in (out, *sidecars.values()):
        assert folder not in path.read_bytes()
        assert b"c0_image" not in path.read_bytes()


def test_cache_second_run_computes_nothing_and_one_changed_mask_recomputes_one(
    cases: pd.DataFrame, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    local = case_table(tmp_path / "in", n=4)
    out = tmp_path / "features.parquet"
    first = features.extract_features(local, CT_PARAMS, out, progress=False)
    assert first.attrs["summary"]["computed"] == 4 and first.attrs["summary"]["cached"] == 0
    assert default_cache_dir(out).is_dir()
    assert len(list(default_cache_dir(out).rglob("*.json"))) == 4

    second = features.extract_features(local, CT_PARAMS, out, progress=False)
    assert second.attrs["summary"]["computed"] == 0 and second.attrs["summary"]["cached"] == 4
    pd.testing.assert_frame_equal(first, second)

    # A new mask for case 2 (the same sphere dilated by one voxel): only that case is recomputed.
    mask_path = Path(str(local.loc[2, "mask"]))
    sitk.WriteImage(sitk.BinaryDilate(sitk.ReadImage(str(mask_path)), [1, 1, 1]), str(mask_path))
    third = features.extract_features(local, CT_PARAMS, out, progress=False)
    assert third.attrs["summary"]["computed"] == 1 and third.attrs["summary"]["cached"] == 3
    changed = third["case_id"] == "case02"
    volume = "original_shape_VoxelVolume"
    assert third.loc[changed, volume].item() > first.loc[changed, volume].item()
    pd.testing.assert_frame_equal(third[~changed], first[~changed])

    # Another parameter file is another key: everything is recomputed.
    other = tmp_path / "bw10.yaml"
    other.write_text(CT_PARAMS.read_text().replace("binWidth: 25", "binWidth: 10"))
    fourth = features.extract_features(local, other, out, progress=False)
    assert fourth.attrs["summary"]["computed"] == 4


def test_failing_cases_are_recorded_and_the_rest_continue(cases: pd.DataFrame, tmp_path: Path) -> None:
    image, _ = write_case(tmp_path, "ok", radius=5.0, seed=5)
    empty = sitk.Image(22, 22, 14, sitk.sitkUInt8)
    empty.CopyInformation(sitk.ReadImage(str(image)))
    sitk.WriteImage(empty, str(tmp_path / "empty_mask.nii.gz"))
    (tmp_path / "corrupt_image.nii.gz").write_bytes(b"not an image at all")
    broken = pd.DataFrame(
        [
            {"case_id": "missing", "image": str(tmp_path / "nope.nii.gz"), "mask": str(image)},
            {"case_id": "emptymask", "image": str(image), "mask": str(tmp_path / "empty_mask.nii.gz")},
            {"case_id": "corrupt", "image": str(tmp_path / "corrupt_image.nii.gz"), "mask": str(image)},
        ]
    )
    table = pd.concat([cases[["case_id", "image", "mask"]], broken], ignore_index=True)
    out = tmp_path / "features.parquet"
    frame = features.extract_features(table, CT_PARAMS, out, workers=2, progress=False)
    summary = frame.attrs["summary"]
    assert summary["cases"] == 7 and summary["failed"] == 3 and summary["succeeded"] == 4
    errors = frame.set_index("case_id")["error"]
    assert errors[cases["case_id"]].isna().all()
    assert errors["missing"] == "image file not found"
    assert "No labels found in this mask" in errors["emptymask"]
    assert "Unable to determine ImageIO reader" in errors["corrupt"] and "<image>" in errors["corrupt"]
    assert pd.isna(frame.set_index("case_id").loc["missing", "original_firstorder_Mean"])
    error_table = pd.read_parquet(features.sidecar_paths(out)["errors"])
    assert sorted(error_table["case_id"]) == ["corrupt", "emptymask", "missing"]
    assert not error_table["error"].str.contains(str(tmp_path), regex=False).any()
    assert not error_table["error"].str.contains("corrupt_image", regex=False).any()
    # Failures are not cached: a rerun tries them again, the good cases come from the cache.
    again = features.extract_features(table, CT_PARAMS, out, progress=False)
    assert again.attrs["summary"]["cached"] == 4 and again.attrs["summary"]["computed"] == 2


def test_cases_preprocessing_did_not_finish_are_recorded_not_computed(cases: pd.DataFrame) -> None:
    table = cases.assign(status="ok", stage="", reason="")
    excluded = ["excluded", "mask", "no mask file for the case", None, None]
    table.loc[1, ["status", "stage", "reason", "image", "mask"]] = excluded
    frame = features.extract_features(table, CT_PARAMS, progress=False)
    assert frame.attrs["summary"]["computed"] == len(cases) - 1
    assert frame.loc[1, "error"] == "not computed: preprocessing status 'excluded' (mask: no mask file for the case)"
    assert frame.loc[[0, 2, 3], "error"].isna().all()
    assert list(frame["status"]) == list(table["status"])  # carried through


def test_duplicate_case_ids_are_refused(cases: pd.DataFrame) -> None:
    doubled = pd.concat([cases, cases.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="unique"):
        features.extract_features(doubled, CT_PARAMS, progress=False)
    with pytest.raises(ValueError, match="mask"):
        features.extract_features(cases.drop(columns=["mask"]), CT_PARAMS, progress=False)


def test_two_workers_give_the_same_table(cases: pd.DataFrame, serial: pd.DataFrame) -> None:
    parallel = features.extract_features(cases, CT_PARAMS, workers=2, progress=False)
    assert parallel.attrs["summary"]["computed"] == len(cases)
    pd.testing.assert_frame_equal(parallel, serial)


def test_dask_local_cluster_gives_the_same_table(cases: pd.DataFrame, serial: pd.DataFrame) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        distributed = features.extract_features(cases, CT_PARAMS, scheduler=cluster.scheduler_address, progress=False)
    assert distributed.attrs["summary"]["computed"] == len(cases)
    pd.testing.assert_frame_equal(distributed, serial)


def test_cli_end_to_end(cases: pd.DataFrame, tmp_path: Path) -> None:
    # Relative paths in a CSV are resolved against the CSV's folder.
    table = cases.copy()
    for column in ("image", "mask"):
        table[column] = [Path(p).name for p in table[column]]
    folder = Path(cases["image"].iloc[0]).parent
    csv = folder / "cases_cli.csv"
    table.to_csv(csv, index=False)
    out = tmp_path / "run" / "features.parquet"
    command = [
        sys.executable, "-m", "pacs_workbench", "features", str(csv),
        "--params", str(CT_PARAMS), "--out", str(out), "--workers", "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["cases"] == len(cases) and summary["failed"] == 0 and summary["computed"] == len(cases)
    frame = pd.read_parquet(out)
    assert list(frame["case_id"]) == list(cases["case_id"])
    assert frame["SeriesInstanceUID"].tolist() == cases["SeriesInstanceUID"].tolist()
    assert (out.parent / "features.parquet.cache").is_dir()
    assert features.sidecar_paths(out)["diagnostics"].is_file()

    rerun = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["cached"] == len(cases)

    # An unusable parameter file stops the run before any case, with exit status 2.
    from pacs_workbench.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: -1\n")
    assert main(["features", str(csv), "--params", str(bad), "--out", str(tmp_path / "bad.parquet")]) == 2
    assert not (tmp_path / "bad.parquet").exists()

    # A failed case makes the exit status 1; the table still holds every case.
    table.loc[len(table)] = {**table.iloc[0].to_dict(), "case_id": "gone", "image": "gone.nii.gz"}
    table.to_csv(csv, index=False)
    failed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["failed"] == 1
    assert len(pd.read_parquet(out)) == len(cases) + 1

"""Tests for the radiomics feature stage (pacs_workbench.radiomics.features).

Real pyradiomics on small synthetic spheres-with-noise volumes written as NIfTI, the IBSI
reference phantoms from PACS_WORKBENCH_REFERENCE, real process pools and a real Dask
LocalCluster on loopback.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk

from pacs_workbench.core.params import ParameterError, reference_dir
from pacs_workbench.radiomics import features

CT_PARAMS = features.PARAMS_DIR / "ct_default.yaml"
REFERENCE = reference_dir()
needs_reference = pytest.mark.skipif(
    REFERENCE is None, reason="PACS_WORKBENCH_REFERENCE is not set (IBSI phantoms and reference values)"
)


def write_case(
    folder: Path, name: str, radius: float, seed: int, shape: tuple[int, int, int] = (14, 22, 22)
) -> tuple[Path, Path]:
    """A CT-like volume: noisy soft-tissue sphere in lung-like background; mask = the sphere."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    # Spacing (x, y, z) = (0.8, 0.8, 2.0) mm: distances in mm.
    dist = np.sqrt(((zz - centre[0]) * 2.0) ** 2 + ((yy - centre[1]) * 0.8) ** 2 + ((xx - centre[2]) * 0.8) ** 2)
    inside = dist <= radius
    image = rng.normal(-800, 60, shape)
    image[inside] = rng.normal(30 + 5 * seed, 40, inside.sum())
    img = sitk.GetImageFromArray(np.round(image).astype(np.int16))
    msk = sitk.GetImageFromArray(inside.astype(np.uint8))
    for item in (img, msk):
        item.SetSpacing((0.8, 0.8, 2.0))
        item.SetOrigin((-10.0, -12.0, 40.0))
    image_path, mask_path = folder / f"{name}_image.nii.gz", folder / f"{name}_mask.nii.gz"
    sitk.WriteImage(img, str(image_path))
    sitk.WriteImage(msk, str(mask_path))
    return image_path, mask_path


def case_table(folder: Path, n: int = 4) -> pd.DataFrame:
    rows = []
    for i in range(n):
        image, mask = write_case(folder, f"c{i}", radius=5.0 + i, seed=i)
        rows.append(
            {
                "case_id": f"case{i:02d}",
                "image": str(image),
                "mask": str(mask),
                "SeriesInstanceUID": f"2.25.{1000 + i}",
                "mask_source": "SEG" if i % 2 == 0 else "RTSTRUCT",
                "pseudo_patient_id": f"P{i:04d}",
                "Manufacturer": ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA"][i % 4],
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return case_table(tmp_path_factory.mktemp("cases"))


@pytest.fixture(scope="module")
def serial(cases: pd.DataFrame) -> pd.DataFrame:
    return features.extract_features(cases, CT_PARAMS, workers=1, progress=False)


# --- installation and parameter files ------------------------------------------------------------


def test_pyradiomics_install_runs_one_extraction(tmp_path: Path) -> None:
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    image, mask = write_case(tmp_path, "guard", radius=5.0, seed=1)
    extractor = RadiomicsFeatureExtractor(binWidth=25)
    extractor.disableAllFeatures()
    extractor.enableFeatureClassByName("firstorder")
    extractor.enableFeatureClassByName("glcm")
    result = extractor.execute(str(image), str(mask))
    assert math.isfinite(float(result["original_firstorder_Mean"]))
    assert float(result["original_glcm_JointEntropy"]) > 0
    voxels = int(sitk.GetArrayFromImage(sitk.ReadImage(str(mask))).sum())
    assert int(result["diagnostics_Mask-original_VoxelNum"]) == voxels


def test_shipped_param_files_validate_against_pyradiomics_schema() -> None:
    import pykwalify.core
    import yaml
    from radiomics import getParameterValidationFiles
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    files = {p.name: p for p in features.iter_param_files()}
    assert {"ct_default.yaml", "mr_default.yaml", "ibsi_phantom.yaml", "ibsi_config_a.yaml"} <= set(files)
    schema, funcs = getParameterValidationFiles()
    for path in files.values():
        data = yaml.safe_load(path.read_text())
        pykwalify.core.Core(source_data=data, schema_files=[schema], extensions=[funcs]).validate(raise_exception=True)
        assert "#" in path.read_text(), f"{path.name} carries no comments for the user"
        extractor = RadiomicsFeatureExtractor(str(path))  # pyradiomics' own loading path
        assert extractor.settings.get("voxelArrayShift", 0) == 0
        assert isinstance(features.load_radiomics_params(path).get("setting"), dict)


def test_invalid_param_file_is_rejected_with_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: -5\n")
    with pytest.raises(ParameterError, match=r"binWidth|schema"):
        features.load_radiomics_params(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("setting:\n  binwidht: 25\n")
    with pytest.raises(ParameterError, match="binwidht"):
        features.load_radiomics_params(typo)
    with pytest.raises(ParameterError, match="not found"):
        features.load_radiomics_params(tmp_path / "missing.yaml")


# --- IBSI ------------------------------------------------------------------------------------------


def _failures(table: pd.DataFrame) -> str:
    bad = table[table["status"] == "fail"]
    return bad[["ibsi_tag", "pyradiomics_feature", "value", "reference_value", "tolerance"]].to_string()


@needs_reference
def test_ibsi_digital_phantom_every_computed_feature_within_tolerance() -> None:
    table = features.check_ibsi_reference("phantom", REFERENCE)
    computed = table[table["status"] != "not computed"]
    # 267 phantom reference values map onto pyradiomics features (3D/2.5D, averaged/merged).
    assert len(computed) == 267
    assert (computed["status"] == "pass").all(), _failures(table)
    assert not (table["reason"] == "mapped feature missing from pyradiomics output").any()
    # Every row pyradiomics does not compute says why.
    assert (table.loc[table["status"] == "not computed", "reason"] != "").all()
    # Without the workbench's corrections exactly the documented deviations fail.
    raw_fail = {
        r.ibsi_tag
        for r in computed.itertuples()
        if not features.within_ibsi_tolerance(r.value_uncorrected, r.reference_value, r.tolerance)
    }
    assert raw_fail == {"stat_kurt", "morph_pca_min_axis", "morph_pca_least_axis"}


@pytest.mark.slow
@needs_reference
def test_ibsi_ct_phantom_configuration_a() -> None:
    table = features.check_ibsi_reference("A", REFERENCE)
    computed = table[table["status"] != "not computed"]
    # mapping_case1.csv: 149 non-diagnostic IBSI tags with a pyradiomics feature (shape, statistics,
    # intensity histogram, 2.5D GLCM/GLRLM averaged+merged, GLSZM, NGTDM, NGLDM).
    assert len(computed) == 149
    assert (computed["status"] == "pass").all(), _failures(table)
    excluded = table[table["status"] == "not computed"]
    assert (excluded["reason"] != "").all()
    assert not (excluded["reason"] == "mapped feature missing from pyradiomics output").any()
    # The per-slice 2D aggregations are the largest excluded group; they have no pyradiomics value.
    assert (excluded["aggregation"].str.startswith("2D")).sum() == 136


def test_ibsi_correct_kurtosis_and_axes() -> None:
    raw = {
        "original_firstorder_Kurtosis": 2.5,
        "wavelet-LLH_firstorder_Kurtosis": 4.0,
        "original_shape_MajorAxisLength": 10.0,
        "original_shape_MinorAxisLength": 8.0,
        "original_shape_Elongation": 0.8,
        "original_firstorder_Mean": 3.0,
    }
    fixed, applied = features.ibsi_correct(raw, n_voxels=5)
    assert fixed["original_firstorder_Kurtosis"] == pytest.approx(-0.5)
    assert fixed["wavelet-LLH_firstorder_Kurtosis"] == pytest.approx(1.0)
    assert fixed["original_shape_MajorAxisLength"] == pytest.approx(10.0 * math.sqrt(5 / 4))
    assert fixed["original_shape_Elongation"] == 0.8
    assert fixed["original_firstorder_Mean"] == 3.0
    assert applied == ["excess_kurtosis", "pca_axes_sample_covariance"]
    assert raw["original_firstorder_Kurtosis"] == 2.5  # input untouched
    # Output of extract_case carries its corrections and is never corrected twice.
    marked = {**fixed, features.CORRECTIONS_DIAGNOSTIC: ";".join(applied)}
    again, applied_again = features.ibsi_correct(marked, n_voxels=5)
    assert again == marked and applied_again == applied


def test_ibsi_correct_undoes_voxel_array_shift(tmp_path: Path) -> None:
    image, mask = write_case(tmp_path, "shift", radius=6.0, seed=3)
    plain = features.extract_case(image, mask, CT_PARAMS)
    shifted = features.extract_case(image, mask, CT_PARAMS, overrides={"voxelArrayShift": 1000})
    assert "energy_without_voxel_shift" in shifted[features.CORRECTIONS_DIAGNOSTIC]
    assert "energy_without_voxel_shift" not in plain[features.CORRECTIONS_DIAGNOSTIC]
    for name in ("Energy", "TotalEnergy", "RootMeanSquared"):
        key = f"original_firstorder_{name}"
        assert shifted[key] == pytest.approx(plain[key], rel=1e-9), key


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
    assert frame["image_sha256"].iloc[0] == features.hash_file(cases["image"].iloc[0])
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
    assert features.default_cache_dir(out).is_dir()
    assert len(list(features.default_cache_dir(out).rglob("*.json"))) == 4

    second = features.extract_features(local, CT_PARAMS, out, progress=False)
    assert second.attrs["summary"]["computed"] == 0 and second.attrs["summary"]["cached"] == 4
    pd.testing.assert_frame_equal(first, second)

    # A new mask for case 2 (the same sphere dilated by one voxel): only that case is recomputed.
    mask_path = Path(local.loc[2, "mask"])
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

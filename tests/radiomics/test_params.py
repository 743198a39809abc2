"""pyradiomics parameter files: the install runs, the shipped files validate, bad files are refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import SimpleITK as sitk

from pacs_workbench.core.params import ParameterError
from pacs_workbench.radiomics.params import iter_param_files, load_radiomics_params
from tests.radiomics.fixtures import write_case


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

    files = {p.name: p for p in iter_param_files()}
    assert {"ct_default.yaml", "mr_default.yaml", "ibsi_phantom.yaml", "ibsi_config_a.yaml"} <= set(files)
    schema, funcs = getParameterValidationFiles()
    for path in files.values():
        data = yaml.safe_load(path.read_text())
        pykwalify.core.Core(source_data=data, schema_files=[schema], extensions=[funcs]).validate(raise_exception=True)
        assert "#" in path.read_text(), f"{path.name} carries no comments for the user"
        extractor = RadiomicsFeatureExtractor(str(path))  # pyradiomics' own loading path
        assert extractor.settings.get("voxelArrayShift", 0) == 0
        assert isinstance(load_radiomics_params(path).get("setting"), dict)


def test_invalid_param_file_is_rejected_with_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: -5\n")
    with pytest.raises(ParameterError, match=r"binWidth|schema"):
        load_radiomics_params(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("setting:\n  binwidht: 25\n")
    with pytest.raises(ParameterError, match="binwidht"):
        load_radiomics_params(typo)
    with pytest.raises(ParameterError, match="not found"):
        load_radiomics_params(tmp_path / "missing.yaml")

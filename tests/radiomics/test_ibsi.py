"""IBSI consistency: the digital and CT phantoms against the reference values, and the corrections.

Real pyradiomics on the IBSI reference phantoms from PACS_WORKBENCH_REFERENCE.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.radiomics.features import extract_case
from pacs_workbench.radiomics.ibsi import (
    CORRECTIONS_DIAGNOSTIC,
    check_ibsi_reference,
    ibsi_correct,
    within_ibsi_tolerance,
)
from tests.radiomics.fixtures import CT_PARAMS, REFERENCE, needs_reference, write_case


def _failures(table: pd.DataFrame) -> str:
    bad = table[table["status"] == "fail"]
    return bad[["ibsi_tag", "pyradiomics_feature", "value", "reference_value", "tolerance"]].to_string()


@needs_reference
def test_ibsi_digital_phantom_every_computed_feature_within_tolerance() -> None:
    table = check_ibsi_reference("phantom", REFERENCE)
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
        if not within_ibsi_tolerance(r.value_uncorrected, r.reference_value, r.tolerance)
    }
    assert raw_fail == {"stat_kurt", "morph_pca_min_axis", "morph_pca_least_axis"}


@pytest.mark.slow
@needs_reference
def test_ibsi_ct_phantom_configuration_a() -> None:
    table = check_ibsi_reference("A", REFERENCE)
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
    fixed, applied = ibsi_correct(raw, n_voxels=5)
    assert fixed["original_firstorder_Kurtosis"] == pytest.approx(-0.5)
    assert fixed["wavelet-LLH_firstorder_Kurtosis"] == pytest.approx(1.0)
    assert fixed["original_shape_MajorAxisLength"] == pytest.approx(10.0 * math.sqrt(5 / 4))
    assert fixed["original_shape_Elongation"] == 0.8
    assert fixed["original_firstorder_Mean"] == 3.0
    assert applied == ["excess_kurtosis", "pca_axes_sample_covariance"]
    assert raw["original_firstorder_Kurtosis"] == 2.5  # input untouched
    # Output of extract_case carries its corrections and is never corrected twice.
    marked = {**fixed, CORRECTIONS_DIAGNOSTIC: ";".join(applied)}
    again, applied_again = ibsi_correct(marked, n_voxels=5)
    assert again == marked and applied_again == applied


def test_ibsi_correct_undoes_voxel_array_shift(tmp_path: Path) -> None:
    image, mask = write_case(tmp_path, "shift", radius=6.0, seed=3)
    plain = extract_case(image, mask, CT_PARAMS)
    shifted = extract_case(image, mask, CT_PARAMS, overrides={"voxelArrayShift": 1000})
    assert "energy_without_voxel_shift" in shifted[CORRECTIONS_DIAGNOSTIC]
    assert "energy_without_voxel_shift" not in plain[CORRECTIONS_DIAGNOSTIC]
    for name in ("Energy", "TotalEnergy", "RootMeanSquared"):
        key = f"original_firstorder_{name}"
        assert shifted[key] == pytest.approx(plain[key], rel=1e-9), key

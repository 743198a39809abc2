"""Reference or model masks per case, and ICC(3,1) agreement of features on the two."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pacs_workbench.radiomics.agreement import (
    agreement_summary,
    cases_with_masks,
    feature_agreement,
    icc_3_1,
    paired_cases,
)

# Shrout and Fleiss (1979), Table 2: six targets rated by four judges; ICC(3,1) = 0.71.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc_matches_shrout_and_fleiss() -> None:
    assert icc_3_1(SHROUT_FLEISS) == pytest.approx(0.7148, abs=1e-3)
    values = np.arange(10.0)
    assert icc_3_1(np.column_stack([values, values + 5])) == pytest.approx(1.0)  # consistency: offsets do not count
    assert np.isnan(icc_3_1(np.array([[1.0, 2.0]])))


def test_masks_per_case_and_the_pairs(tmp_path) -> None:
    paths = {}
    for name in ("a_ref", "b_ref", "b_model", "c_ref"):
        paths[name] = tmp_path / f"{name}.nii.gz"
        paths[name].write_bytes(b"x")
    cases = pd.DataFrame({"case_id": ["a", "b", "c"], "image": ["i"] * 3,
                          "mask": [str(paths["a_ref"]), str(paths["b_ref"]), str(paths["c_ref"])]})
    segmentation = pd.DataFrame({
        "case_id": ["a", "b", "b", "c"], "lesion": [1, 1, 2, 0],
        "mask_source": ["reference", "model", "model", "model"],
        "mask": [str(paths["a_ref"]), str(paths["b_model"]), str(paths["b_model"]), None],
        "status": ["ok", "ok", "ok", "empty"],
    })
    table = cases_with_masks(cases, segmentation)
    assert list(table["case_id"]) == ["a", "b"]
    assert list(table["mask_source"]) == ["reference", "model"]
    assert table.loc[1, "mask"] == str(paths["b_model"])
    assert table.attrs["left_out"] == [{"case_id": "c", "reason": "no mask for radiomics (segmentation status: empty)"}]
    on_reference, on_model = paired_cases(table)
    assert list(on_reference["case_id"]) == list(on_model["case_id"]) == ["b"]
    assert on_reference.loc[0, "mask"] == str(paths["b_ref"]) and on_model.loc[0, "mask"] == str(paths["b_model"])


def test_feature_agreement_flags_the_unstable_feature() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=20)
    reference = pd.DataFrame({"case_id": [f"c{i}" for i in range(20)], "original_shape_Volume": truth,
                              "original_glcm_Contrast": truth})
    model = reference.assign(original_shape_Volume=truth + rng.normal(0, 0.05, 20),
                             original_glcm_Contrast=rng.normal(size=20))
    agreement = feature_agreement(reference, model)
    by = agreement.set_index("feature")
    assert by.loc["original_shape_Volume", "good"] and not by.loc["original_glcm_Contrast", "good"]
    assert agreement["feature"].iloc[0] == "original_glcm_Contrast", "worst first"
    summary = agreement_summary(agreement)
    assert summary["features"] == 2 and summary["share_good"] == 0.5 and summary["cases"] == 20

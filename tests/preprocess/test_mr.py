"""Brain MR of the synthetic extract through preprocessing: an Enhanced MR study (Philips, frames feet to
head, a rescale slope) loads as the volume its frames describe, and every case gets N4 and a z-score within
the body/brain mask."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pacs_workbench.preprocess import find_cases, load_mask, preprocess_cases
from pacs_workbench.preprocess.image import body_mask
from pacs_workbench.preprocess.series import load_series
from pacs_workbench.synth import generate

SEED = 2  # 2 patients: Philips enhanced multi-frame and Siemens VE11 classic studies


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mr_pre") / "extract"
    generate(out, patients=2, seed=SEED, workers=1, progress=False, modality="MR")
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_enhanced_mr_study_loads_as_a_volume(extract: Path) -> None:
    series = [r for r in _rows(extract / "truth" / "series.csv") if r["enhanced"] == "1"]
    assert series and {r["vendor"] for r in series} == {"philips"}
    for row in series:
        (path,) = sorted((extract / row["series_dir"]).glob("*.dcm"))
        volume = load_series(path.parent)
        ds = pydicom.dcmread(path)
        frames = ds.PerFrameFunctionalGroupsSequence
        z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]
        slope = float(ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope)
        expected = ds.pixel_array[np.argsort(z)].astype(np.float32) * slope
        assert slope != 1.0  # Philips' rescale is applied
        np.testing.assert_allclose(sitk.GetArrayFromImage(volume), expected, rtol=1e-6)
        assert volume.GetOrigin()[2] == pytest.approx(min(z))
        assert volume.GetSpacing()[2] == pytest.approx(np.diff(sorted(z)).mean())
        if row["sequence"] == "T1C":
            lesion = next(r for r in _rows(extract / "truth" / "lesions.csv") if r["SeriesInstanceUID"]
                          == row["SeriesInstanceUID"])  # fmt: skip
            mask = sitk.GetArrayFromImage(load_mask(extract / lesion["seg_path"], volume))
            assert int(mask.sum()) == int(lesion["mask_voxels"])


def test_mr_cases_get_n4_and_a_zscore_within_the_brain(extract: Path, tmp_path: Path) -> None:
    cases = find_cases(extract / "dicom", progress=False)
    lesions = _rows(extract / "truth" / "lesions.csv")
    assert len(cases) == len(lesions) and set(cases["Modality"]) == {"MR"}
    params = {"target_spacing_mm": [2.0, 2.0, 2.0], "bias_field": "n4", "normalization": "zscore",
              "normalization_region": "body", "crop_margin_mm": None}  # fmt: skip
    result = preprocess_cases(cases, tmp_path / "out", params, workers=1, progress=False)
    assert (result["status"] == "ok").all(), result[["status", "reason"]]
    for _, row in result.iterrows():
        steps = {s["step"]: s for s in json.loads(row["steps"])}
        assert steps["bias_field"]["method"] == "n4" and steps["normalize"]["region"] == "body"
        image = sitk.ReadImage(row["image"])
        values = sitk.GetArrayFromImage(image)
        inside = body_mask(image)
        assert abs(float(values[inside].mean())) < 0.25 and 0.7 < float(values[inside].std()) < 1.3

"""Tests of the synthetic brain MR extract (``generate(..., modality="MR")``).

One small extract (5 imaging patients: Siemens XA and Philips enhanced multi-frame, GE, Canon
and Siemens VE11 classic, a Canon study with unhelpful series descriptions, both outcomes) is
generated once per module and checked for determinism, vendor habits, enhanced geometry, SEG
agreement, planted PHI, EHR and ground truth.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pacs_workbench.synth import generate
from pacs_workbench.synth.mr_phantom import HeadAnatomy, _bias_field
from pacs_workbench.synth.mr_plan import MR_OUTCOME_MODEL, plan_mr_cohort
from pacs_workbench.synth.mr_sequences import MR_SCANNERS

SEED = 6  # 5 patients: every scanner kind, an unhelpful-description study, a study without DWI, both outcomes
N_PATIENTS = 5
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _joined(value: object) -> str:
    return "\\".join(value) if isinstance(value, list | pydicom.multival.MultiValue) else str(value)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_mr") / "extract"
    summary = generate(out, patients=N_PATIENTS, seed=SEED, workers=1, progress=False, modality="MR")
    return out, summary


@pytest.fixture(scope="module")
def truth(extract: tuple[Path, dict]) -> dict[str, list[dict[str, str]]]:
    out, _ = extract
    return {name: _csv(out / "truth" / f"{name}.csv") for name in ("patients", "studies", "series", "lesions")}


def test_same_seed_gives_identical_files_serial_or_parallel(extract, tmp_path):
    out, summary = extract
    again = generate(tmp_path / "again", patients=N_PATIENTS, seed=SEED, workers=2, progress=False, modality="mr")
    assert again["files"] == summary["files"]
    assert _hashes(tmp_path / "again") == _hashes(out)


def test_mr_and_ct_extracts_of_one_seed_share_no_patient_or_uid(tmp_path, truth):
    generate(tmp_path / "ct", patients=2, seed=SEED, workers=1, progress=False)
    ct_studies = _csv(tmp_path / "ct" / "truth" / "studies.csv")
    assert {r["PatientID"] for r in ct_studies}.isdisjoint({r["PatientID"] for r in truth["studies"]})
    assert {r["AccessionNumber"] for r in ct_studies}.isdisjoint({r["AccessionNumber"] for r in truth["studies"]})
    assert {r["StudyInstanceUID"] for r in ct_studies}.isdisjoint({r["StudyInstanceUID"] for r in truth["studies"]})


def test_layout_summary_and_sequences(extract, truth):
    _, summary = extract
    assert summary["modality"] == "MR" and summary["patients"] == N_PATIENTS
    assert summary["studies"] == len(truth["studies"]) == len(truth["lesions"]) == summary["files"]["seg"]
    assert summary["files"]["mr_enhanced"] == summary["enhanced_series"] > 0
    assert summary["files"]["mr"] > 0 and summary["files"]["report"] == summary["studies"]
    for study in truth["studies"]:
        kinds = study["sequences"].split(";")
        assert kinds[:3] == ["T1", "T2", "FLAIR"] and kinds[-1] == "T1C"
        assert set(kinds) - {"T1", "T1C", "T2", "FLAIR"} in (set(), {"DWI", "ADC"})
    assert {(s["vendor"], s["enhanced"]) for s in truth["studies"]} >= {("siemens", "1"), ("philips", "1"),
                                                                       ("ge", "0"), ("canon", "0")}  # fmt: skip
    assert {s["MagneticFieldStrength"] for s in truth["studies"]} == {"1.5", "3.0"}
    assert any(s["unhelpful_descriptions"] == "1" for s in truth["studies"])
    assert any("DWI" not in s["sequences"] for s in truth["studies"])


def test_headers_carry_the_sequence_where_each_vendor_writes_it(extract, truth):
    out, _ = extract
    for row in truth["series"]:
        files = sorted((out / row["series_dir"]).glob("*.dcm"))
        assert len(files) == int(row["n_files"])
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        assert ds.Modality == "MR" and ds.SeriesInstanceUID == row["SeriesInstanceUID"]
        if row["enhanced"] == "1":
            assert ds.SOPClassUID == ENHANCED_MR and len(files) == 1 and "RepetitionTime" not in ds
            shared = ds.SharedFunctionalGroupsSequence[0]
            assert float(shared.MRTimingAndRelatedParametersSequence[0].RepetitionTime) == float(row["RepetitionTime"])
            assert float(shared.MREchoSequence[0].EffectiveEchoTime) == float(row["EchoTime"])
            inversion = shared.MRModifierSequence[0]
            assert (inversion.InversionRecovery == "YES") == (row["InversionTime"] != "")
            assert ("MRDiffusionSequence" in shared) == (row["sequence"] in ("DWI", "ADC"))
            assert ("ContrastBolusAgentSequence" in ds) == (row["sequence"] == "T1C")
            assert int(ds.NumberOfFrames) == len(ds.PerFrameFunctionalGroupsSequence)
        else:
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
            assert _joined(ds.ScanningSequence) == row["ScanningSequence"]
            assert float(ds.RepetitionTime) == float(row["RepetitionTime"])
            assert float(ds.MagneticFieldStrength) == float(row["MagneticFieldStrength"])
            agent = "ContrastBolusAgent" in ds
            assert agent == (row["sequence"] == "T1C" and row["vendor"] != "siemens")
        if row["sequence"] == "ADC":
            assert "ADC" in list(ds.ImageType) and ds.ImageType[0] == "DERIVED"


def test_unhelpful_descriptions_say_nothing_of_the_sequence(truth):
    unhelpful = {s["StudyInstanceUID"] for s in truth["studies"] if s["unhelpful_descriptions"] == "1"}
    rows = [r for r in truth["series"] if r["StudyInstanceUID"] in unhelpful]
    assert rows and {r["SeriesDescription"] for r in rows} == {"Ax 5mm"}
    assert len({r["sequence"] for r in rows}) >= 4


def test_enhanced_study_loads_as_a_volume_with_its_seg_mask(extract, truth):
    from pacs_workbench.preprocess import load_mask
    from pacs_workbench.preprocess.series import read_series

    out, _ = extract
    checked = {"1": 0, "0": 0}
    for lesion in truth["lesions"]:
        study = next(s for s in truth["studies"] if s["StudyInstanceUID"] == lesion["StudyInstanceUID"])
        image, report = read_series(out / study["seg_series_dir"])
        assert report.valid and image.GetSize() == (64, 64, int(study["n_slices"]))
        assert image.GetSpacing()[2] == pytest.approx(float(study["SpacingBetweenSlices"]))
        assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
        mask = sitk.GetArrayFromImage(load_mask(out / lesion["seg_path"], image))
        assert int(mask.sum()) == int(lesion["mask_voxels"]) > 0
        k, j, i = (round(float(lesion[c])) for c in ("center_k", "center_j", "center_i"))
        assert mask[max(k - 1, 0) : k + 2, max(j - 1, 0) : j + 2, max(i - 1, 0) : i + 2].any()
        volume = sitk.GetArrayFromImage(image)
        assert volume[mask > 0].mean() > np.median(volume[volume > 0])  # the lesion enhances
        checked[study["enhanced"]] += 1
    assert checked["1"] and checked["0"]


def test_bias_field_depends_on_the_coil():
    head = HeadAnatomy(a=72.0, b=88.0, c=76.0, ventricles=1.0)
    x = np.linspace(-70, 70, 41)[None, None, :]
    zero = np.zeros((1, 1, 1))
    spread = {}
    for scanner in [s for site in MR_SCANNERS for s in site]:
        bias = _bias_field(head, scanner, x, zero, zero, np.random.default_rng(0))
        spread[scanner.coil] = float(bias.max() / bias.min())
    assert spread["Head_64"] > spread["HeadNeck_20"] > spread["Head SPEEDER"] > 1.0


def test_phi_is_listed_and_planted(extract):
    out, _ = extract
    phi = (out / "truth" / "phi_values.txt").read_text().splitlines()
    assert len(phi) == len(set(phi)) > 30
    blobs = [p.read_bytes() + p.relative_to(out).as_posix().encode() for p in out.rglob("*")
             if p.is_file() and "truth" not in p.parts]  # fmt: skip
    assert not [v for v in phi if not any(v.encode() in blob for blob in blobs)]


def test_ehr_reports_and_outcome_model(extract, truth):
    from fhir.resources.R4B.bundle import Bundle

    out, _ = extract
    for path in sorted((out / "ehr" / "fhir").glob("*.json")):
        bundle = Bundle.model_validate(json.loads(path.read_text()))
        assert bundle.entry
    patients = {r["PatientID"]: r for r in truth["patients"]}
    for row in patients.values():
        drivers = {name: float(row[name]) for name, _ in MR_OUTCOME_MODEL.coef}
        assert float(row["linear_predictor"]) == pytest.approx(MR_OUTCOME_MODEL.linear_predictor(drivers), abs=1e-4)
    assert json.loads((out / "truth" / "model.json").read_text())["coefficients"] == dict(MR_OUTCOME_MODEL.coef)
    for study in truth["studies"]:
        text = (out / study["report_path"]).read_text()
        assert f"ACCESSION: {study['AccessionNumber']}" in text and " mm mass in the " in text


def test_outcome_follows_lesion_traits():
    plans = [p for p in plan_mr_cohort(800, 3) if p.base.has_imaging]
    outcome = np.array([p.outcome for p in plans])
    assert 0.25 <= outcome.mean() <= 0.6
    for trait in ("diameter_mm", "irregularity", "heterogeneity"):
        values = np.array([getattr(p.lesion, trait) for p in plans])
        assert values[outcome == 1].mean() > values[outcome == 0].mean()


def test_command_line_writes_an_mr_extract(tmp_path, capsys):
    from pacs_workbench.cli import main

    assert main(["synth", str(tmp_path / "mr"), "--patients", "1", "--seed", "4", "--modality", "mr"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["modality"] == "MR" and summary["files"]["seg"] == summary["studies"] >= 1
    assert "T1C" in (tmp_path / "mr" / "truth" / "series.csv").read_text()

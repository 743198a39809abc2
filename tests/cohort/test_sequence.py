"""MR sequence types from acquisition attributes (vocab.classify_sequence), the `sequence` criterion,
and the index columns of enhanced multi-frame MR, on hand-made rows and on the synthetic MR extract."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort import CohortCriteria, apply_criteria, build_index, load_series_table, unmapped_report
from pacs_workbench.cohort.vocab import classify_sequence, load_rules, normalize_series
from pacs_workbench.synth import generate

RULES = load_rules()["sequence"]


def _classify(**values: object) -> tuple[str | None, str | None, bool]:
    row = {
        "modality": "MR", "image_type": "ORIGINAL\\PRIMARY\\OTHER", "scanning_sequence": "", "echo_pulse": "",
        "acquisition_contrast": "", "repetition_time": None, "echo_time": None, "inversion_time": None,
        "b_value": None, "contrast": None, "protocol": "HEAD ROUTINE", "description": "Ax 5mm",
    }  # fmt: skip
    row.update(values)
    return classify_sequence(**row, rules=RULES)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"scanning_sequence": "SE", "repetition_time": 500, "echo_time": 10}, "T1"),
        ({"scanning_sequence": "SE", "repetition_time": 500, "echo_time": 10, "contrast": "yes"}, "T1C"),
        ({"scanning_sequence": "SE", "repetition_time": 5000, "echo_time": 100}, "T2"),
        ({"scanning_sequence": "SE\\IR", "repetition_time": 9000, "echo_time": 110, "inversion_time": 2500}, "FLAIR"),
        # IR-prepared gradient echoes are T1 whatever TR the vendor reports: MPRAGE (2 s), BRAVO (8 ms).
        ({"scanning_sequence": "GR\\IR", "repetition_time": 2000, "echo_time": 2.3, "inversion_time": 900}, "T1"),
        ({"scanning_sequence": "GR", "repetition_time": 8.4, "echo_time": 3.2}, "T1"),
        ({"scanning_sequence": "EP", "repetition_time": 5000, "echo_time": 80, "b_value": 1000}, "DWI"),
        ({"scanning_sequence": "EP\\SE", "repetition_time": 5000, "echo_time": 80}, "DWI"),  # b-value private (GE)
        ({"image_type": "DERIVED\\SECONDARY\\ADC", "scanning_sequence": "EP", "echo_time": 80}, "ADC"),
        ({"image_type": "DERIVED\\PRIMARY\\DIFFUSION\\ADC", "acquisition_contrast": "DIFFUSION", "b_value": 0}, "ADC"),
        # Enhanced MR: no Scanning Sequence; Acquisition Contrast and the functional-group timing decide.
        ({"acquisition_contrast": "FLUID_ATTENUATED", "echo_pulse": "SPIN", "repetition_time": 9000}, "FLAIR"),
        ({"acquisition_contrast": "T1", "echo_pulse": "GRADIENT", "contrast": "yes"}, "T1C"),
    ],
)
def test_sequence_from_attributes_when_descriptions_say_nothing(values: dict, expected: str) -> None:
    kind, source, conflict = _classify(**values)
    assert kind == expected
    assert source not in (None, "SeriesDescription", "ProtocolName") and not conflict


def test_descriptions_decide_only_when_attributes_do_not_and_disagreement_is_flagged() -> None:
    assert _classify(description="t2_tirm_tra_dark-fluid") == ("FLAIR", "SeriesDescription", False)
    assert _classify(description="t1_se_tra_KM")[0] == "T1C"
    assert _classify(description="T1WI_SE_AX+C", scanning_sequence="SE", repetition_time=480, echo_time=9)[0] == "T1C"
    assert _classify() == (None, None, False)
    kind, source, conflict = _classify(description="Ax T2 FLAIR", scanning_sequence="SE", repetition_time=4000,
                                       echo_time=100)  # fmt: skip
    assert (kind, source, conflict) == ("T2", "RepetitionTime", True)
    assert classify_sequence("CT", "", "", "", "", None, None, None, None, None, "", "T1", rules=RULES)[0] is None


def test_unmapped_report_lists_mr_series_without_a_sequence() -> None:
    frame = pd.DataFrame(
        {
            "Modality": ["MR", "MR", "MR"],
            "SeriesDescription": ["Ax 5mm", "Ax 5mm", "Ax T2 FLAIR"],
            "ProtocolName": ["HEAD ROUTINE"] * 3,
            "ImageType": ["ORIGINAL\\PRIMARY\\OTHER"] * 3,
            "ScanningSequence": ["SE", "", "SE"],
            "RepetitionTime": [500.0, None, 4000.0],
            "EchoTime": [10.0, None, 100.0],
            "BodyPartExamined": ["HEAD"] * 3,
        }
    )
    normalized = normalize_series(frame)
    assert list(normalized["sequence_norm"]) == ["T1", None, "T2"]
    report = unmapped_report(normalized)
    assert set(report["field"]) == {"sequence", "sequence_conflict"}
    assert "Ax 5mm" in report.loc[report["field"] == "sequence", "raw_value"].iloc[0]


@pytest.fixture(scope="module")
def mr_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("mr_cohort")
    generate(out / "extract", patients=5, seed=6, workers=2, progress=False, modality="MR")
    build_index([out / "extract" / "dicom"], out / "index", workers=2)
    return out, load_series_table(out / "index")


def test_synthetic_mr_sequences_normalize_to_the_truth(mr_index) -> None:
    out, series = mr_index
    truth = pd.read_csv(out / "extract" / "truth" / "series.csv")
    joined = truth.merge(series, on="SeriesInstanceUID", suffixes=("_truth", ""))
    assert len(joined) == len(truth)
    assert (joined["sequence"] == joined["sequence_norm"]).all()
    assert not joined["sequence_conflict"].any()
    # A study whose descriptions are all "Ax 5mm": every series typed from its attributes.
    unhelpful = joined[joined["SeriesDescription_truth"] == "Ax 5mm"]
    assert len(unhelpful) >= 4 and not unhelpful["sequence_source"].isin(["SeriesDescription", "ProtocolName"]).any()
    assert (joined.loc[joined["sequence"] == "T1C", "contrast_norm"] == "yes").all()
    assert (joined.loc[joined["sequence"] == "T2", "contrast_norm"] == "no").all()
    assert unmapped_report(series).empty


def test_enhanced_mr_rows_carry_geometry_and_timing_and_count_frames(mr_index) -> None:
    out, series = mr_index
    truth = pd.read_csv(out / "extract" / "truth" / "series.csv")
    enhanced = series[series["SeriesInstanceUID"].isin(truth.loc[truth["enhanced"] == 1, "SeriesInstanceUID"])]
    assert len(enhanced) > 0
    assert enhanced["SliceThickness"].notna().all() and enhanced["RepetitionTime"].notna().all()
    assert enhanced["MagneticFieldStrength"].eq(3.0).all()
    studies = pd.read_csv(out / "extract" / "truth" / "studies.csv")
    n_slices = dict(zip(studies["StudyInstanceUID"], studies["n_slices"], strict=True))
    assert (enhanced["n_instances"] == enhanced["StudyInstanceUID"].map(n_slices)).all()


def test_sequence_criterion_keeps_the_series_a_study_needs(mr_index) -> None:
    out, series = mr_index
    criteria = CohortCriteria.from_mapping({"modality": "MR", "sequence": "T1C", "slice_thickness_max": 6.0})
    kept, attrition = apply_criteria(series, criteria)
    studies = pd.read_csv(out / "extract" / "truth" / "studies.csv")
    assert set(kept["SeriesInstanceUID"]) == set(studies["SeriesInstanceUID"])
    assert "MR sequence: T1C" in set(attrition["criterion"])
    with pytest.raises(ValueError, match="sequence"):
        CohortCriteria.from_mapping({"sequence": "T3"})

"""Vocabulary normalization: body part, protocol, contrast, kernel class, thickness bins."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pacs_workbench.cohort import vocab


def _series(**columns: object) -> pd.DataFrame:
    return pd.DataFrame([columns])


@pytest.mark.parametrize(
    ("maker", "kernel", "expected"),
    [
        ("SIEMENS", "B31f", "soft"),
        ("SIEMENS", "B70f", "sharp"),
        ("SIEMENS", "Br40d\\3", "soft"),  # multi-valued: kernel first
        ("SIEMENS", "Bl57d", "sharp"),
        ("GE MEDICAL SYSTEMS", "STANDARD", "soft"),
        ("GE MEDICAL SYSTEMS", "LUNG", "sharp"),
        ("GE MEDICAL SYSTEMS", "BONE", "sharp"),
        ("Philips", "B", "soft"),
        ("Philips", "C", "soft"),
        ("Philips", "L", "sharp"),
        ("Philips", "YA", "sharp"),
        ("TOSHIBA", "FC08", "soft"),
        ("TOSHIBA", "FC13", "soft"),
        ("Canon Medical Systems", "FC52", "sharp"),
        ("Unknown Vendor", "SOFT", "soft"),
        ("Philips", "B70f", None),  # a Siemens name on a Philips scanner is not guessed
        ("SIEMENS", "", None),
    ],
)
def test_kernel_class_per_vendor(maker: str, kernel: str, expected: str | None) -> None:
    rules = vocab.load_rules()["kernel"]
    assert vocab.classify_kernel(maker, kernel, rules=rules) == expected


@pytest.mark.parametrize(
    ("agent", "route", "protocol", "description", "expected"),
    [
        ("Omnipaque 350", "", "", "", ("yes", "ContrastBolusAgent")),
        ("NONE", "", "", "CHEST C+", ("no", "ContrastBolusAgent")),
        ("", "IV", "", "", ("yes", "ContrastBolusRoute")),
        ("", "", "CHEST W/O", "", ("no", "ProtocolName")),
        ("", "", "", "CT THORAX W/ CONTRAST", ("yes", "SeriesDescription")),
        ("", "", "", "Chest C+ 2.0", ("yes", "SeriesDescription")),
        ("", "", "", "CHEST WITH", ("yes", "SeriesDescription")),
        ("", "", "", "CHEST NON CON", ("no", "SeriesDescription")),
        ("", "", "", "Thorax non-contrast", ("no", "SeriesDescription")),
        ("", "", "", "CHEST WITHOUT CONTRAST", ("no", "SeriesDescription")),
        ("", "", "", "ABD W AND W/O", (None, None)),  # both phases named: undecided
        ("", "", "", "Lung 1.0 B70f", (None, None)),
    ],
)
def test_contrast_from_several_attributes(
    agent: str, route: str, protocol: str, description: str, expected: tuple[str | None, str | None]
) -> None:
    value, source, _conflict = vocab.detect_contrast(agent, route, protocol, description)
    assert (value, source) == expected


def test_contrast_conflict_is_flagged() -> None:
    value, source, conflict = vocab.detect_contrast("Iomeron", "", "", "CHEST NON CON")
    assert (value, source, conflict) == ("yes", "ContrastBolusAgent", True)


@pytest.mark.parametrize(
    ("thickness", "label"),
    [(0.625, "<=1.5 mm"), ("1.5", "<=1.5 mm"), (1.25, "<=1.5 mm"), (2.0, "1.5-3 mm"), ("3", "1.5-3 mm"),
     (5.0, ">3 mm"), ("", None), ("abc", None), (None, None), (0, None)],
)  # fmt: skip
def test_slice_thickness_bins(thickness: object, label: str | None) -> None:
    assert vocab.bin_slice_thickness(thickness) == label


def test_normalize_series_keeps_raw_and_adds_norm_columns() -> None:
    frame = pd.DataFrame(
        [
            dict(Modality="CT", Manufacturer="SIEMENS", BodyPartExamined="CHEST", ProtocolName="Thorax Routine",
                 SeriesDescription="Thorax 1.0 B70f", ConvolutionKernel="B70f", SliceThickness="1.0"),
            dict(Modality="CT", Manufacturer="GE MEDICAL SYSTEMS", BodyPartExamined="", ProtocolName="CHEST W/O",
                 SeriesDescription="LUNG 1.25", ConvolutionKernel="LUNG", SliceThickness=1.25),
            dict(Modality="CT", Manufacturer="Philips", BodyPartExamined="THORAX", ProtocolName="Chest C+",
                 SeriesDescription="Chest C+ 2mm", ContrastBolusAgent="Iomeron 350", ConvolutionKernel="B",
                 SliceThickness="2"),
            dict(Modality="CT", Manufacturer="TOSHIBA", BodyPartExamined="LUNG", ProtocolName="LOW DOSE CHEST",
                 SeriesDescription="Lung 5.0 FC52", ConvolutionKernel="FC52", SliceThickness="5"),
            dict(Modality="CT", Manufacturer="SIEMENS", BodyPartExamined="CHEST", ProtocolName="Thorax Routine",
                 SeriesDescription="Topogram 0.6 T20s", ConvolutionKernel="T20s", SliceThickness="0.6"),
            dict(Modality="CT", Manufacturer="Canon Medical Systems", BodyPartExamined="CHEST_TO_PELVIS",
                 ProtocolName="CAP", SeriesDescription="Body 3.0 FC08", ConvolutionKernel="FC08",
                 SliceThickness="3"),
            dict(Modality="SEG", Manufacturer="pacs-workbench", SeriesDescription="Nodule 1"),
        ]
    )  # fmt: skip
    out = vocab.normalize_series(frame)
    assert list(out.columns[: len(frame.columns)]) == list(frame.columns)
    pd.testing.assert_frame_equal(out[frame.columns], frame)  # raw values untouched
    assert list(out["body_part_norm"]) == [
        "thorax", "thorax", "thorax", "lung", "thorax", "thorax, abdomen and pelvis", None,
    ]  # fmt: skip
    assert list(out["body_part_radlex"])[:4] == ["RID1243", "RID1243", "RID1243", "RID1301"]
    assert out.loc[1, "body_part_source"] == "ProtocolName"  # empty Body Part Examined
    assert list(out["protocol_norm"]) == [
        "CT chest",
        "CT chest without IV contrast",
        "CT chest with IV contrast",
        "CT chest low dose screening",
        "localizer",
        "CT chest, abdomen and pelvis",
        "segmentation",
    ]
    assert out.loc[1, "protocol_radlex"] == "RPID16"
    assert list(out["contrast_norm"])[:4] == ["no", "no", "yes", "no"]
    assert out.loc[0, "contrast_source"] == "no contrast attributes"  # the weakest evidence, named
    assert out.loc[4, "contrast_norm"] is None  # a localizer has no contrast phase to speak of
    assert list(out["kernel_norm"])[:4] == ["sharp", "sharp", "soft", "sharp"]
    assert list(out["slice_thickness_norm"])[:4] == ["<=1.5 mm", "<=1.5 mm", "1.5-3 mm", ">3 mm"]


def test_unmapped_report_lists_what_no_rule_matched() -> None:
    frame = pd.DataFrame(
        [
            dict(Modality="CT", Manufacturer="SIEMENS", BodyPartExamined="KNEE", SeriesDescription="Knee 1.0",
                 ConvolutionKernel="B30f", SliceThickness="1"),
            dict(Modality="CT", Manufacturer="Acme", BodyPartExamined="KNEE", SeriesDescription="Knee 1.0",
                 ConvolutionKernel="ZZ9", SliceThickness="n/a"),
            dict(Modality="SEG", SeriesDescription="Nodule 1"),
        ]
    )  # fmt: skip
    report = vocab.unmapped_report(vocab.normalize_series(frame))
    rows = {(r.field, r.raw_value): r.n_rows for r in report.itertuples()}
    assert rows[("body_part", "KNEE")] == 2
    assert rows[("kernel", "Acme | ZZ9")] == 1
    assert rows[("slice_thickness", "n/a")] == 1
    assert ("protocol", "CT |  | Knee 1.0") in rows
    assert not any(f == "body_part" and "Nodule" in str(v) for f, v in rows)  # a SEG has no anatomy
    counts = vocab.unmapped_report(vocab.normalize_series(frame), show_values=False)
    assert "raw_value" not in counts.columns
    assert dict(zip(counts["field"], counts["n_rows"], strict=True))["body_part"] == 2


def test_user_tables_extend_and_take_priority(tmp_path: Path) -> None:
    (tmp_path / "body_part.csv").write_text("pattern,radlex_id,radlex_term\nKNEE|GENOU,RID2743,knee\n")
    (tmp_path / "kernel.csv").write_text("manufacturer,pattern,kernel_class\nACME.*,ZZ[0-9],sharp\nSIEMENS,B70f,soft\n")
    frame = pd.DataFrame(
        [dict(Modality="CT", Manufacturer="Acme", BodyPartExamined="genou", ConvolutionKernel="ZZ9"),
         dict(Modality="CT", Manufacturer="SIEMENS", BodyPartExamined="CHEST", ConvolutionKernel="B70f")]
    )  # fmt: skip
    out = vocab.normalize_series(frame, user_tables=tmp_path)
    assert list(out["body_part_norm"]) == ["knee", "thorax"]  # built-in rows still apply
    assert list(out["kernel_norm"]) == ["sharp", "soft"]  # the user's rule wins
    report = vocab.unmapped_report(out)
    assert not set(report["field"]) & {"body_part", "kernel"}


def test_bad_user_table_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "kernel.csv").write_text("manufacturer,pattern,kernel_class\nACME,(unclosed,sharp\n")
    with pytest.raises(vocab.VocabularyError, match=r"kernel.csv row 2: invalid pattern"):
        vocab.normalize_series(pd.DataFrame([{"Modality": "CT"}]), user_tables=tmp_path)
    (tmp_path / "kernel.csv").write_text("manufacturer,pattern\nACME,ZZ\n")
    with pytest.raises(vocab.VocabularyError, match="lacks column"):
        vocab.load_rules(tmp_path)
    with pytest.raises(vocab.VocabularyError, match="not found"):
        vocab.load_rules(tmp_path / "nope")


def test_instance_table_maps_each_combination_once() -> None:
    row = dict(Modality="CT", Manufacturer="GE MEDICAL SYSTEMS", ConvolutionKernel="LUNG", SliceThickness="1.25")
    frame = pd.DataFrame([row] * 500 + [{**row, "ConvolutionKernel": "STANDARD"}] * 500)
    out = vocab.normalize_series(frame)
    assert out["kernel_norm"].value_counts().to_dict() == {"sharp": 500, "soft": 500}


def test_synthetic_vendors_agree_with_ground_truth() -> None:
    """Four vendors' headers, one vocabulary: contrast and kernel class match the truth."""
    import pydicom

    from tests.orthanc import cached_extract

    extract = cached_extract(patients=4, seed=3)
    studies = pd.read_csv(extract / "truth" / "studies.csv", dtype=str)
    rows = []
    for series_dir, contrast, lung_kernel in studies[["ct_series_dir", "contrast", "lung_kernel"]].itertuples(
        index=False
    ):
        first = sorted((extract / series_dir).glob("*.dcm"))[0]
        ds = pydicom.dcmread(first, stop_before_pixels=True)
        row = {k: str(ds.get(k)) for k in ("Modality", "Manufacturer", "BodyPartExamined", "ProtocolName",
                                           "SeriesDescription", "ContrastBolusAgent", "ConvolutionKernel",
                                           "SliceThickness") if ds.get(k) is not None}  # fmt: skip
        rows.append({**row, "truth_contrast": "yes" if contrast == "1" else "no",
                     "truth_kernel": "sharp" if lung_kernel == "1" else "soft"})  # fmt: skip
    out = vocab.normalize_series(pd.DataFrame(rows))
    assert (out["contrast_norm"] == out["truth_contrast"]).all()
    assert (out["kernel_norm"] == out["truth_kernel"]).all()
    assert out["body_part_norm"].isin(["thorax", "lung"]).all()
    assert out["protocol_norm"].str.startswith("CT chest").all()
    assert len(set(studies["Manufacturer"])) >= 2

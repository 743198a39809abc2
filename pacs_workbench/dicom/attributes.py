"""The one set of value coercers: DICOM element values to plain Python, the same way everywhere.

A value that cannot be read as asked gives ``None``, never a guess: an Integer String of ``"2.7"``
is not an integer, and a vector with one unreadable component is no vector. Multi-valued text is
joined with the DICOM value separator ``\\``.
"""

from __future__ import annotations

import math
from typing import Any


def to_text(value: Any) -> str | None:
    """Text with DICOM padding (spaces, NUL) stripped; ``None`` when empty.

    Multi-valued elements are joined with ``\\``; a list of empty values is ``None``.
    """
    if value is None:
        return None
    if _is_multivalue(value):
        parts = ["" if v is None else str(v).strip(" \0") for v in value]
        joined = "\\".join(parts)
        return joined if joined.strip("\\") else None
    text = str(value).strip(" \0")
    return text or None


def to_float(value: Any) -> float | None:
    """A finite float (the first value of a multi-valued element), or ``None``."""
    if _is_multivalue(value):
        value = value[0] if len(value) else None
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value.strip(" \0") if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_int(value: Any) -> int | None:
    """An integer (the first value of a multi-valued element), or ``None``.

    ``"3"`` and ``3.0`` are 3; ``"2.7"`` is ``None``, since a non-integral Integer String is an
    encoding error to report, not a value to truncate.
    """
    if _is_multivalue(value):
        value = value[0] if len(value) else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip(" \0")
        try:
            return int(text)
        except ValueError:
            value = text
    number = to_float(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def to_floats(value: Any, n: int | None = None) -> list[float] | None:
    """Every value as a finite float, or ``None`` when any is unreadable (or there are not ``n``)."""
    if value is None:
        return None
    items = list(value) if _is_multivalue(value) else [value]
    numbers = [to_float(v) for v in items]
    if not numbers or any(number is None for number in numbers):
        return None  # a partly unreadable vector would mislead more than a null
    if n is not None and len(numbers) != n:
        return None
    return [number for number in numbers if number is not None]


def _is_multivalue(value: Any) -> bool:
    # lists, tuples, pydicom's MultiValue and 1-d arrays; text and bytes are single values
    return hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, (str, bytes))

from __future__ import annotations

import math

import pytest
from pydicom.multival import MultiValue
from pydicom.valuerep import IS, DSfloat

from pacs_workbench.dicom.attributes import to_float, to_floats, to_int, to_text


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3), (" 3\0", 3), (3.0, 3), ("3.0", 3), ("2.7", None), (2.7, None), ("", None), (None, None), (True, None),
     (IS("12"), 12), (["4", "5"], 4), ([], None), ("x", None)],
)
def test_to_int_refuses_what_is_not_an_integer(value: object, expected: int | None) -> None:
    assert to_int(value) == expected


def test_to_float_is_finite_or_none() -> None:
    assert to_float(DSfloat("1.25")) == 1.25
    assert to_float(" 0.5 ") == 0.5
    assert to_float("nan") is None
    assert to_float(math.inf) is None
    assert to_float(MultiValue(DSfloat, ["0.7", "0.8"])) == pytest.approx(0.7)


def test_to_floats_all_or_nothing() -> None:
    assert to_floats(MultiValue(DSfloat, ["1", "0", "0"]), 3) == [1.0, 0.0, 0.0]
    assert to_floats(["1", "x", "0"]) is None
    assert to_floats(["1", "0"], 3) is None
    assert to_floats("2.5") == [2.5]
    assert to_floats(None) is None


def test_to_text_strips_padding_and_joins_values() -> None:
    assert to_text("CT \0") == "CT"
    assert to_text(["ORIGINAL", "PRIMARY", "AXIAL"]) == "ORIGINAL\\PRIMARY\\AXIAL"
    assert to_text(["", " "]) is None
    assert to_text("   ") is None

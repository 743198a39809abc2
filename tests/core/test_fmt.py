from __future__ import annotations

import numpy as np

from pacs_workbench.core.fmt import MISSING, format_number, is_number


def test_format_number_marks_missing_values_one_way() -> None:
    assert format_number(0.12345) == "0.123"
    assert format_number(np.float64(2), 1) == "2.0"
    assert format_number(3, 0) == "3"
    for missing in (None, float("nan"), np.nan, "0.5", True, float("inf")):
        assert format_number(missing) == MISSING
    assert not is_number(True)

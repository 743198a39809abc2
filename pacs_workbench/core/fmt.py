"""How reports and notebooks write numbers, and the one marker for a value that is missing."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

MISSING = "n/a"


def is_number(value: Any) -> bool:
    """A real, finite number (``bool`` is not one)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def format_number(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or :data:`MISSING` when it is not a finite number."""
    return f"{float(value):.{digits}f}" if is_number(value) else MISSING

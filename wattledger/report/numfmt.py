"""Numbers as people read them in reports: ``num`` (shared by the model's notes, render and plot)."""

from __future__ import annotations

import math


def num(x: float | None, digits: int = 4) -> str:
    """``digits`` significant digits; thousands grouped; small values positional, never ``1.38e-05``."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) < 1e-3:  # positional, not 1.38e-05: a short job's kWh is small and read by people
        decimals = digits - 1 - math.floor(math.log10(abs(x)))
        return f"{x:.{decimals}f}"
    return f"{x:.{digits}g}"

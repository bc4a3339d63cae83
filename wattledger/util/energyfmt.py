"""Energy and mass as people read them, and numbers for machines without float noise. Pure.

* ``energy_text(j, unit)``: joules in J, Wh or kWh; ``auto`` picks the unit
  for the size (under 1 Wh: J; under 1 kWh: Wh; else kWh), so a 0.2 s command
  reads ``6.73 J`` and a week of training ``412.6 kWh``.
* ``mass_text(g)``: grams of CO2e in g or kg.
* ``plain(x)``: a float as CSV wants it: rounded to 12 significant digits
  and printed as Python's shortest repr, so ``480.00000000000006`` is
  ``480.0`` and ``0.1 + 0.2`` is ``0.3``.
"""

from __future__ import annotations

import math

from wattledger.model.units import J_PER_KWH, J_PER_WH

JOULES_PER: dict[str, float] = {"J": 1.0, "Wh": J_PER_WH, "kWh": J_PER_KWH}
UNIT_CHOICES = ("auto", "J", "Wh", "kWh")


def pick_unit(energy_j: float) -> str:
    """The unit that suits a figure: J under 1 Wh, Wh under 1 kWh, else kWh."""
    size = abs(energy_j)
    if size < J_PER_WH:
        return "J"
    if size < J_PER_KWH:
        return "Wh"
    return "kWh"


def resolve_unit(unit: str, energy_j: float) -> str:
    """``unit`` itself, or the one ``auto`` picks for ``energy_j``; ValueError for anything else."""
    if unit == "auto":
        return pick_unit(energy_j)
    if unit not in JOULES_PER:
        raise ValueError(f"unit must be one of {', '.join(UNIT_CHOICES)}, got {unit!r}")
    return unit


def significant(x: float, digits: int = 4) -> str:
    """``digits`` significant digits, positional, thousands grouped from 10,000."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    if abs(x) >= 10_000:
        return f"{x:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def energy_text(energy_j: float, unit: str = "auto", digits: int = 4) -> str:
    """``energy_j`` in ``unit`` (or the one that suits it), e.g. ``6.734 J``, ``1.25 Wh``, ``412.6 kWh``."""
    chosen = resolve_unit(unit, energy_j)
    return f"{significant(energy_j / JOULES_PER[chosen], digits)} {chosen}"


def mass_text(grams: float, digits: int = 4) -> str:
    """Grams of CO2e in g, or kg from 1,000 g."""
    if abs(grams) >= 1000:
        return f"{significant(grams / 1000, digits)} kg"
    return f"{significant(grams, digits)} g"


def plain(x: float, digits: int = 12) -> str:
    """A float for CSV: rounded to ``digits`` significant digits, then Python's shortest repr.

    ``480.00000000000006`` -> ``480.0``, ``0.1 + 0.2`` -> ``0.3``, ``4.0`` stays ``4.0``; any CSV
    reader parses it back to the float it names.
    """
    if not math.isfinite(x):
        return str(x)
    return repr(float(f"{x:.{digits}g}"))

"""The footprint arithmetic, in one place (DESIGN.md, "Carbon and PUE"): IT energy -> facility energy -> CO2e.

    facility kWh = IT kWh x PUE
    gCO2e        = facility kWh x grid intensity (g/kWh)

``report`` applies it per hour (PUE and intensity of that hour); ``run``
applies it once, at the intensity and PUE it states.
"""

from __future__ import annotations

from wattledger.model.units import J_PER_KWH


def facility_kwh(it_j: float, pue: float) -> float:
    return it_j / J_PER_KWH * pue


def co2e_g(it_j: float, pue: float, g_per_kwh: float) -> float:
    return facility_kwh(it_j, pue) * g_per_kwh

"""The offline default: annual grid carbon intensity per zone, each with its source and year.

Figures are life-cycle-free direct emission factors of electricity generation
(g CO2e per kWh) as published annually. They are a fallback for when no live
or historical series is configured; reports say when they used one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StaticIntensity:
    zone: str
    g_per_kwh: float
    year: int
    source: str


_EMBER = "Ember / Our World in Data, carbon intensity of electricity generation"
_SEED = "Lacoste et al. (2019) / Strubell et al. seed figures"

TABLE: dict[str, StaticIntensity] = {
    z.zone: z
    for z in (
        StaticIntensity("WORLD", 480.0, 2023, _EMBER),
        StaticIntensity("CA-QC", 20.0, 2019, _SEED + ": Quebec"),
        StaticIntensity("US-IA", 736.6, 2019, _SEED + ": Iowa"),
        StaticIntensity("US", 369.0, 2023, _EMBER),
        StaticIntensity("CA", 128.0, 2023, _EMBER),
        StaticIntensity("CN", 582.0, 2023, _EMBER),
        StaticIntensity("IN", 713.0, 2023, _EMBER),
        StaticIntensity("DE", 381.0, 2023, _EMBER),
        StaticIntensity("FR", 56.0, 2023, _EMBER),
        StaticIntensity("GB", 238.0, 2023, _EMBER),
        StaticIntensity("JP", 485.0, 2023, _EMBER),
        StaticIntensity("AU", 548.0, 2023, _EMBER),
        StaticIntensity("BR", 98.0, 2023, _EMBER),
        StaticIntensity("NO", 30.0, 2023, _EMBER),
        StaticIntensity("SE", 41.0, 2023, _EMBER),
        StaticIntensity("PL", 662.0, 2023, _EMBER),
        StaticIntensity("ZA", 708.0, 2023, _EMBER),
        StaticIntensity("KR", 430.0, 2023, _EMBER),
    )
}


class UnknownZone(KeyError):
    pass


def lookup(zone: str) -> StaticIntensity:
    """The static figure for a zone (case-insensitive); UnknownZone lists the known ones."""
    found = TABLE.get(zone.upper())
    if found is None:
        raise UnknownZone(
            f"no static carbon intensity for zone {zone!r}; known zones: {', '.join(sorted(TABLE))}. "
            "Set [carbon] g_per_kwh to use your own figure."
        )
    return found

"""The offline default: annual grid carbon intensity per zone, each with its source and year.

Country figures are Ember's carbon intensity of electricity *generation* for
2023 as published by Our World in Data (grapher ``carbon-intensity-electricity``,
"Ember and Energy Institute"). They are life-cycle figures (g CO2e per kWh
generated, IPCC AR5 factors including upstream emissions), production-based
(imports not traced). The world figure is Ember's 2023 global average (Ember,
Global Electricity Review 2024: 480 g/kWh; Statista quotes the same series as 481).

Two sub-national figures come from the seed paper, Lacoste et al. (2019),
"Quantifying the Carbon Emissions of Machine Learning": Quebec 20 g/kWh and
Iowa 736.6 g/kWh, the two ends of the range it reports.

They are a fallback for when no live or historical series is configured;
reports say when they used one. ``lookup`` accepts sub-zones of a country
(``US-CAL-CISO`` falls back to ``US``) and says so in the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattledger.carbon.base import ACTUAL, IntensityPoint
from wattledger.util.timeutil import HOUR_NS


@dataclass(frozen=True)
class StaticIntensity:
    zone: str
    g_per_kwh: float
    year: int
    source: str
    asked_zone: str = ""  # the zone asked for when a parent zone answered

    def describe(self) -> str:
        via = f" (for {self.asked_zone})" if self.asked_zone and self.asked_zone != self.zone else ""
        year = f", {self.year}" if self.year else ""
        return f"static {self.zone}{via} {self.g_per_kwh:g} g/kWh{year}, {self.source}"


_EMBER = "Ember via Our World in Data, carbon intensity of electricity generation"
_EMBER_WORLD = "Ember, Global Electricity Review 2024 (world average)"
_SEED = "Lacoste et al. (2019), Quantifying the Carbon Emissions of Machine Learning"

TABLE: dict[str, StaticIntensity] = {
    z.zone: z
    for z in (
        StaticIntensity("WORLD", 480.0, 2023, _EMBER_WORLD),
        StaticIntensity("CA-QC", 20.0, 2019, _SEED + ": Quebec"),
        StaticIntensity("US-IA", 736.6, 2019, _SEED + ": Iowa"),
        StaticIntensity("US", 369.0, 2023, _EMBER),
        StaticIntensity("CA", 170.0, 2023, _EMBER),
        StaticIntensity("CN", 582.0, 2023, _EMBER),
        StaticIntensity("IN", 713.0, 2023, _EMBER),
        StaticIntensity("DE", 381.0, 2023, _EMBER),
        StaticIntensity("FR", 56.0, 2023, _EMBER),
        StaticIntensity("GB", 238.0, 2023, _EMBER),
        StaticIntensity("JP", 485.0, 2023, _EMBER),
        StaticIntensity("AU", 549.0, 2023, _EMBER),
        StaticIntensity("BR", 98.0, 2023, _EMBER),
        StaticIntensity("NO", 30.0, 2023, _EMBER),
        StaticIntensity("SE", 41.0, 2023, _EMBER),
        StaticIntensity("PL", 662.0, 2023, _EMBER),
        StaticIntensity("ZA", 708.0, 2023, _EMBER),
        StaticIntensity("KR", 430.0, 2023, _EMBER),
        StaticIntensity("AT", 111.0, 2023, _EMBER),
        StaticIntensity("BE", 138.0, 2023, _EMBER),
        StaticIntensity("CZ", 450.0, 2023, _EMBER),
        StaticIntensity("DK", 152.0, 2023, _EMBER),
        StaticIntensity("FI", 79.0, 2023, _EMBER),
        StaticIntensity("GR", 337.0, 2023, _EMBER),
        StaticIntensity("HU", 204.0, 2023, _EMBER),
        StaticIntensity("IE", 291.0, 2023, _EMBER),
        StaticIntensity("CL", 291.0, 2023, _EMBER),
        StaticIntensity("AR", 354.0, 2023, _EMBER),
    )
}


class UnknownZone(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def lookup(zone: str) -> StaticIntensity:
    """The static figure for a zone (case-insensitive), else for its nearest parent zone.

    ``US-CAL-CISO`` tries ``US-CAL-CISO``, ``US-CAL``, then ``US``. UnknownZone
    lists the known zones and says how to give your own figure.
    """
    asked = zone.strip().upper()
    parts = asked.split("-")
    for n in range(len(parts), 0, -1):
        found = TABLE.get("-".join(parts[:n]))
        if found is not None:
            if found.zone == asked:
                return found
            return StaticIntensity(found.zone, found.g_per_kwh, found.year, found.source, asked_zone=asked)
    raise UnknownZone(
        f"no static carbon intensity for zone {zone!r}; known zones: {', '.join(sorted(TABLE))}. "
        "Set [carbon] g_per_kwh (or WATTLEDGER_CARBON_G_PER_KWH) to use your own figure."
    )


class StaticProvider:
    """The table as a provider: the annual figure holds for every hour of the window.

    ``carbon sync`` does not store these points (reports apply the static
    figure directly and say so); the provider exists so code that wants a
    series for a window can treat every source alike.
    """

    name = "static"

    def __init__(self, zone: str, g_per_kwh: float | None = None) -> None:
        self.zone = zone
        self.g_per_kwh = g_per_kwh if g_per_kwh is not None else lookup(zone).g_per_kwh

    def fetch(self, since_ns: int, until_ns: int) -> list[IntensityPoint]:
        first = since_ns + (-since_ns) % HOUR_NS  # first whole hour at or after since
        return [
            IntensityPoint(t, self.g_per_kwh, self.zone, self.name, ACTUAL)
            for t in range(first, until_ns, HOUR_NS)
        ]

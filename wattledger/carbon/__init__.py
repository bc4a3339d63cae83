"""Grid carbon intensity providers and PUE.

One small interface (``IntensityProvider.fetch(since_ns, until_ns)``) in front
of: the static table (offline default), Electricity Maps, WattTime, the GB
Carbon Intensity API and a CSV file. ``make_provider`` builds the configured
one; ``intensity_now`` is the single figure ``wattledger run`` uses;
``fallback_intensity`` is what reports use where no series covers an hour.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from wattledger.carbon.base import (
    ACTUAL,
    FORECAST,
    KINDS,
    MARGINAL,
    CarbonProviderError,
    IntensityPoint,
    IntensityProvider,
)
from wattledger.carbon.static import StaticIntensity, StaticProvider, UnknownZone, lookup
from wattledger.config import CarbonSection, ConfigError

PROVIDERS = ("static", "electricitymaps", "watttime", "ukci", "csv")

__all__ = [
    "ACTUAL", "FORECAST", "KINDS", "MARGINAL", "PROVIDERS", "CarbonProviderError", "IntensityPoint",
    "IntensityProvider", "StaticIntensity", "UnknownZone", "check_zone", "fallback_intensity", "intensity_now",
    "make_provider",
]


def make_provider(
    carbon: CarbonSection,
    *,
    clock: Callable[[], int] = time.time_ns,
    sleep: Callable[[float], None] = time.sleep,
) -> IntensityProvider:
    """The provider ``[carbon] provider`` names, built from the [carbon] keys (tokens never logged)."""
    kind = carbon.provider.strip().lower()
    if kind == "static":
        return StaticProvider(carbon.zone, carbon.g_per_kwh)
    if kind == "electricitymaps":
        from wattledger.carbon.electricitymaps import ElectricityMaps

        return ElectricityMaps(carbon.zone, carbon.token, api_url=carbon.api_url, clock=clock, sleep=sleep)
    if kind == "watttime":
        from wattledger.carbon.watttime import WattTime

        return WattTime(carbon.zone, carbon.username, carbon.password, api_url=carbon.api_url, clock=clock,
                        sleep=sleep)
    if kind == "ukci":
        from wattledger.carbon.ukci import UkCarbonIntensity

        return UkCarbonIntensity(carbon.zone, api_url=carbon.api_url, clock=clock, sleep=sleep)
    if kind == "csv":
        from wattledger.carbon.csvfile import CsvFile

        return CsvFile(carbon.zone, carbon.csv_path)
    raise CarbonProviderError(f"[carbon] provider must be one of {', '.join(PROVIDERS)}, got {carbon.provider!r}")


def fallback_intensity(carbon: CarbonSection, zone: str | None = None) -> StaticIntensity:
    """The single figure for a zone: ``[carbon] g_per_kwh`` when set, else the static table.

    Raises UnknownZone (its message says how to fix it) when neither has one.
    """
    zone = zone or carbon.zone
    if carbon.g_per_kwh is not None:
        return StaticIntensity(zone.upper(), float(carbon.g_per_kwh), 0, "configured [carbon] g_per_kwh")
    return lookup(zone)


def check_zone(carbon: CarbonSection) -> None:
    """ConfigError when ``[carbon] zone`` can give no figure: the provider is static, no ``g_per_kwh`` is
    set, and the static table knows neither the zone nor a parent of it (``US-CAL-CISO`` -> ``US``).

    Live providers name zones their own way (WattTime regions, UK regions), so only they can judge theirs.
    """
    if carbon.provider.strip().lower() != "static" or carbon.g_per_kwh is not None:
        return
    try:
        lookup(carbon.zone)
    except UnknownZone as e:
        raise ConfigError(f"[carbon] zone: {e}") from None


def intensity_now(carbon: CarbonSection) -> tuple[float, str]:
    """(g CO2e per kWh, where it came from) for ``wattledger run``: the override or the static figure."""
    s = fallback_intensity(carbon)
    if s.year == 0:
        return s.g_per_kwh, f"configured [carbon] g_per_kwh for {s.zone}"
    return s.g_per_kwh, s.describe()

"""The dashboards' variable defaults (PUE, grid zone, fallback intensity): built in, or from a config.

Without a config the dashboards are the repository's ``dashboards/`` exactly;
``defaults_from_config`` gives the figures ``wattledger report`` would use.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattledger.carbon import fallback_intensity
from wattledger.carbon.static import TABLE as STATIC_TABLE
from wattledger.config import Config

DEFAULT_PUE = 1.58  # Uptime Institute, 2020 industry average (same default as [pue] value)


@dataclass(frozen=True)
class Defaults:
    """The variables' initial values; ``wattledger dashboards export --config`` takes them from the config."""

    pue: float = DEFAULT_PUE
    zone: str = "WORLD"
    fallback_g_per_kwh: float = STATIC_TABLE["WORLD"].g_per_kwh  # what the report falls back to for WORLD


def defaults_from_config(cfg: Config) -> Defaults:
    """PUE, zone and fallback intensity as the report would use them.

    Raises carbon's UnknownZone (its message says what to do) when the zone has
    no static figure and ``[carbon] g_per_kwh`` is not set.
    """
    zone = cfg.carbon.zone.upper()
    fallback = fallback_intensity(cfg.carbon, zone).g_per_kwh
    return Defaults(pue=cfg.pue.value, zone=zone, fallback_g_per_kwh=fallback)

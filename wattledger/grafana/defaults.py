"""The dashboards' variable defaults (PUE, grid zone, fallback intensity) and shared projects: built in, or from a config.

Without a config the dashboards are the repository's ``dashboards/`` exactly;
``defaults_from_config`` gives the figures ``wattledger report`` would use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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
    # [jobs] shared_projects as (project, users) pairs: the project panels merge those users only.
    shared_projects: tuple[tuple[str, tuple[str, ...]], ...] = ()


def shared_pairs(table: Mapping[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``[jobs] shared_projects`` in a stable, hashable order."""
    return tuple((name, tuple(sorted(set(users)))) for name, users in sorted(table.items()) if users)


def defaults_from_config(cfg: Config) -> Defaults:
    """PUE, zone and fallback intensity as the report would use them.

    Raises carbon's UnknownZone (its message says what to do) when the zone has
    no static figure and ``[carbon] g_per_kwh`` is not set.
    """
    zone = cfg.carbon.zone.upper()
    fallback = fallback_intensity(cfg.carbon, zone).g_per_kwh
    return Defaults(pue=cfg.pue.value, zone=zone, fallback_g_per_kwh=fallback,
                    shared_projects=shared_pairs(cfg.jobs.shared_projects))

"""The one rule that turns raw ``wl_carbon`` rows into one intensity per hour.

Readers of the same rows must agree on the figure of an hour: the report
(``report.model.intensity_series``) and the agent's Prometheus gauge
(``agent.exporter``) both call ``intensity_by_hour``. For each (provider,
time) the best kind wins (actual, then marginal, then forecast: InfluxDB may
keep a forecast beside the actual that replaced it); when several providers
cover an hour, the configured one (else the first by name); the hour's figure
is the mean of that provider's points in it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from wattledger.carbon.base import KIND_RANK
from wattledger.util.timeutil import hour_floor


def intensity_by_hour(rows: Iterable[Mapping[str, Any]], zone: str, prefer_provider: str) -> dict[int, tuple[float, str]]:
    """{hour start ns: (g CO2e/kWh, provider)} from raw rows (time_ns, zone, provider, kind, g_per_kwh)."""
    want = zone.upper()
    best: dict[tuple[str, int], tuple[int, float]] = {}  # (provider, time) -> (kind rank, value)
    for r in rows:
        if str(r.get("zone", "")).upper() != want or r.get("g_per_kwh") is None:
            continue
        key = (str(r.get("provider", "")), int(r["time_ns"]))
        rank = KIND_RANK.get(str(r.get("kind", "")), len(KIND_RANK))
        if key not in best or rank < best[key][0]:
            best[key] = (rank, float(r["g_per_kwh"]))
    per_hour: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (provider, t), (_, value) in best.items():
        per_hour[hour_floor(t)][provider].append(value)
    by_hour: dict[int, tuple[float, str]] = {}
    for bucket, providers in per_hour.items():
        provider = prefer_provider if prefer_provider in providers else min(providers)
        values = providers[provider]
        by_hour[bucket] = (math.fsum(values) / len(values), provider)
    return by_hour

"""Power Usage Effectiveness: facility energy = IT energy x PUE.

Either one configured constant (``[pue] value``, default 1.58: the Uptime
Institute's 2020 industry-average survey figure; hyperscale sites report about
1.1) or a measured ``wl_pue`` series (points with tag ``site`` and field
``pue``, written by whoever meters the facility). Like carbon intensity it is
applied when reading, per hour, so a corrected series changes past figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wattledger.util.timeutil import hour_floor

UPTIME_2020_AVERAGE = 1.58


@dataclass(frozen=True)
class PueSeries:
    """PUE per hour bucket where measured; ``constant`` elsewhere."""

    by_hour: Mapping[int, float]
    constant: float
    constant_source: str

    def at(self, bucket_ns: int) -> float:
        return self.by_hour.get(bucket_ns, self.constant)

    def describe(self, buckets: Iterable[int]) -> str:
        buckets = list(buckets)
        measured = sum(1 for b in buckets if b in self.by_hour)
        if not buckets or measured == 0:
            return f"{self.constant:g} ({self.constant_source})"
        if measured == len(buckets):
            return "wl_pue series (all hours)"
        return f"wl_pue series for {measured} of {len(buckets)} hours, else {self.constant:g} ({self.constant_source})"


def pue_series(
    rows: Iterable[Mapping[str, object]], *, site: str, constant: float, constant_source: str
) -> PueSeries:
    """Hourly mean of ``wl_pue`` rows (``time_ns``, ``site``, ``pue``) for one site ('' = any site).

    Values below 1 are impossible (facility energy below IT energy) and are ignored.
    """
    sums: dict[int, list[float]] = {}
    for r in rows:
        if site and r.get("site") != site:
            continue
        value = r.get("pue")
        if value is None or float(value) < 1.0:  # type: ignore[arg-type]
            continue
        acc = sums.setdefault(hour_floor(int(r["time_ns"])), [0.0, 0.0])  # type: ignore[call-overload]
        acc[0] += float(value)  # type: ignore[arg-type]
        acc[1] += 1
    return PueSeries({b: s / n for b, (s, n) in sums.items()}, constant, constant_source)

"""Which retention policy (v1 API) or bucket (v2 API) each point goes to: a fleet's tiers (model/tiers.py).

A sink with a ``Routing`` writes each point to the target of its tier: raw
ticks to ``raw``, the ledger's minute sums to ``minutes``, its hour sums to
``hours`` (docs/fleet.md); ``wl_carbon`` and ``wl_pue`` to every tier,
``wl_agent`` to raw. In the single layout every tier names the same target
and a point is written once.

A point older than its tier's retention would be refused by InfluxDB as a
whole batch's "partial write" (HTTP 400), which the deliverer would take
apart point by point. Such points are left out before sending and counted
(``expired``): after an outage longer than the raw retention, the raw ticks
of the outage are not sent, while the minute and hour sums that hold their
energy are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from wattledger.agent.sinks.base import Expired, WriteResult
from wattledger.config import Config, tier_keep_days, tier_targets
from wattledger.model.points import Point
from wattledger.model.tiers import RAW, TIERS, tiers_of

DAY_NS = 86_400 * 1_000_000_000
EDGE_NS = 10 * 60 * 1_000_000_000  # points this close to leaving a retention policy are left out too


@dataclass(frozen=True)
class Routing:
    targets: Mapping[str, str]  # tier -> retention policy or bucket ("" : the database's default policy)
    keep_days: Mapping[str, float] = field(default_factory=dict)  # tier -> days kept (0 or missing: forever)

    def split(self, points: Sequence[Point], now_ns: int) -> tuple[dict[str, list[Point]], int]:
        """The points per target (in order), and how many were left out as older than their tier keeps."""
        out: dict[str, list[Point]] = {}
        expired = 0
        oldest = {t: now_ns - int(d * DAY_NS) + EDGE_NS for t, d in self.keep_days.items() if d}
        single = not self.tiered
        for p in points:
            if single and p.tier != RAW:  # sums spooled before a switch to the single layout: the raw ticks
                continue                  # are in that one policy already, the sums would count them twice
            for target in dict.fromkeys(self.targets[t] for t in tiers_of(p.measurement, p.tier)
                                        if p.time_ns >= oldest.get(t, p.time_ns)):
                out.setdefault(target, []).append(p)
            if all(p.time_ns < oldest.get(t, p.time_ns) for t in tiers_of(p.measurement, p.tier)):
                expired += 1
        return out, expired

    @property
    def tiered(self) -> bool:
        return len(set(self.targets.values())) > 1


def routing(cfg: Config) -> Routing:
    """The routing ``cfg`` asks for ([influx] layout and retention, [sink] database/bucket)."""
    targets = tier_targets(cfg)
    tiered = len(set(targets.values())) > 1
    return Routing(targets, tier_keep_days(cfg) if tiered else {})  # single: the admin's own policy decides


def single(target: str = "") -> Routing:
    """Everything to one target: what a sink built without a layout does."""
    return Routing({t: target for t in TIERS})


def write_routed(routing: Routing, expired: Expired, points: list[Point],
                 write_one: Callable[[str, list[Point]], WriteResult]) -> WriteResult:
    """Write each target's points (a retention policy, a bucket) with ``write_one``, counting the points
    left out as older than their tier keeps; the first failure is the batch's (the parts written before
    are written again with the batch: harmless, the timestamps are explicit)."""
    groups, gone = routing.split(points, time.time_ns())
    expired.count(gone)
    for target, group in groups.items():
        result = write_one(target, group)
        if not result.ok:
            return result
    return WriteResult.success(204)

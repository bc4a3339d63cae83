"""What ``wattledger influx setup`` wants to exist, from the config. Pure.

For the tiered layout (model/tiers.py, docs/fleet.md): the database, one
retention policy (v2: one bucket, mapped by DBRP) per tier with the tier's
retention, ``raw`` the default one (unqualified InfluxQL such as the agent
dashboard's ``wl_agent`` reads it), and the ``wl_tier`` rows the dashboards
choose their tier from, in the default retention policy. For the single
layout: the database and the rows, every tier naming the one policy.

``Change`` is one thing setup did (or would do); a run that has none to
make says so, which is what makes it safe to run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wattledger.config import Config, Layout, tier_keep_days, tier_targets
from wattledger.model.tiers import RAW, TIER_TABLE, TIERS, TierRow, tier_rows


@dataclass(frozen=True)
class Policy:
    """A retention policy (v1) or bucket (v2) a tier is written to; ``days`` 0: kept forever."""

    tier: str
    name: str
    days: float
    default: bool

    @property
    def seconds(self) -> int:
        return int(round(self.days * 86400))


@dataclass(frozen=True)
class Wanted:
    database: str  # v1: the database; v2: the InfluxQL database name the DBRP mappings give the buckets
    tiered: bool
    policies: tuple[Policy, ...]  # tiered: raw, minutes, hours; single: none (the admin's own)

    def rows(self, default_rp: str) -> list[TierRow]:
        """The wl_tier rows; ``default_rp``: the policy every tier names in the single layout."""
        if self.tiered:
            return tier_rows({p.tier: p.days for p in self.policies}, {p.tier: p.name for p in self.policies})
        return tier_rows({t: 0.0 for t in TIERS}, {t: default_rp for t in TIERS})


def wanted(cfg: Config) -> Wanted:
    """The layout the config asks for ([sink] database or bucket, [influx])."""
    s = cfg.sink
    database = s.database or s.bucket
    if not database:
        raise ValueError("influx setup needs [sink] database (v1 API) or bucket (v2 API): give --influx-database "
                         "or --influx-bucket")
    if cfg.influx.layout is Layout.SINGLE:
        return Wanted(database, False, ())
    targets, keep = tier_targets(cfg), tier_keep_days(cfg)
    return Wanted(database, True, tuple(Policy(t, targets[t], keep[t], t == RAW) for t in TIERS))


def duration(days: float) -> str:
    """An InfluxQL duration for ``days`` (0: INF), in whole minutes."""
    if not days:
        return "INF"
    minutes = int(round(days * 1440))
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def parse_duration_s(text: str) -> int:
    """Seconds of an InfluxDB duration as SHOW RETENTION POLICIES prints it ("48h0m0s"; "0s": forever)."""
    total, number = 0, ""
    units = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
    for ch in text:
        if ch.isdigit():
            number += ch
        elif ch in units and number:
            total += int(number) * units[ch]
            number = ""
    return total


def row_lines(rows: list[TierRow]) -> list[str]:
    """The wl_tier rows as line protocol (string fields and an integer one, no tags: one series), made by
    influxdb-client's Point like every other line we write."""
    from influxdb_client import Point as LibPoint
    from influxdb_client.domain.write_precision import WritePrecision

    return [LibPoint(TIER_TABLE).field("scope", r.scope).field("tier", r.tier).field("res", r.res)
            .field("max_range_ms", r.max_range_ms).time(r.time_ms * 1_000_000, WritePrecision.NS)
            .to_line_protocol() for r in rows]


def row_key(time_ns: int, scope: str, tier: str, res: str, max_range_ms: int) -> tuple[int, str, str, str, int]:
    return (int(time_ns), str(scope), str(tier), str(res), int(max_range_ms))


@dataclass
class Change:
    what: str  # "created", "altered", "wrote", "granted", "deleted"
    detail: str

    def __str__(self) -> str:
        return f"{self.what} {self.detail}"


class Recorder:
    """Says each change the moment it is made (``on_change``), so a run that fails half way still tells
    what it did."""

    def __init__(self, on_change: Callable[[Change], None] | None = None) -> None:
        self.on_change = on_change

    def _did(self, what: str, detail: str) -> Change:
        change = Change(what, detail)
        if self.on_change is not None:
            self.on_change(change)
        return change

"""Which tier of a fleet's InfluxDB to read each part of a report's window from, host by host.

A tiered database (model/tiers.py, docs/fleet.md) holds each host's raw
ticks for days, its minute sums for months and its hour sums for years.
Each tier of a host is complete from its first point in the window to its
last bucket: the agent spools a bucket once it is final, in time order, so
a host whose last hour point is 10:00 has all its hours before 11:00. So,
per host, the report reads whole hours from the hours tier, whole minutes
around them from the minutes tier, and raw ticks at the edges
(``store.plan``, the ledger's own rule). Hosts differ (one lags behind its
InfluxDB, one started later, one's clock runs ahead): each host gets its own
plan, and hosts with the same plan are read together.

A database without the ``minutes`` and ``hours`` retention policies (the
single layout, or one that ``wattledger influx setup`` has not prepared) is
read as one tier: [sink] retention_policy, else its default.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wattledger.model.points import WL_NODE
from wattledger.model.tiers import HOURS, MINUTES, RAW
from wattledger.report.model import ReportError
from wattledger.store.plan import Plan, Segment, Span, plan
from wattledger.store.schema import HOUR, MINUTE, Level

Query = Callable[[str], list[dict[str, Any]]]
RP_OF: dict[Level | None, str] = {HOUR: HOURS, MINUTE: MINUTES, None: RAW}


@dataclass(frozen=True)
class Read:
    """One query's worth: ``rp`` over [lo, hi) for ``hosts`` (None: every host)."""

    rp: str
    lo_ns: int
    hi_ns: int
    hosts: tuple[str, ...] | None


@dataclass(frozen=True)
class Reads:
    reads: list[Read]
    since_ns: int  # what the reads cover (later than asked where only coarser sums are left)
    until_ns: int
    tiered: bool
    long_rp: str  # where wl_carbon and wl_pue are read (the longest-kept tier)


def layout(query: Query, want_tiered: bool, rp: str) -> tuple[bool, str]:
    """(tiered, the retention policy of the single layout) as the database really is (a server that cannot
    list its retention policies is taken to be laid out as the config says)."""
    try:
        names = {str(r.get("name")): bool(r.get("default")) for r in query("SHOW RETENTION POLICIES")}
    except ReportError as e:
        if "not found" in str(e):
            raise
        return want_tiered, HOURS if want_tiered else rp
    if want_tiered and {RAW, MINUTES, HOURS} <= names.keys():
        return True, HOURS
    return False, rp


def reads(query: Query, since_ns: int, until_ns: int, want_tiered: bool, rp: str, host_filter: str,
          jobs: bool = False) -> Reads:
    """The queries that cover [since, until) exactly, per group of hosts with the same plan; with ``jobs``
    (a report by job) hour sums, which have no job names, only where no minute sums are left."""
    tiered, long_rp = layout(query, want_tiered, rp)
    if not tiered:
        return Reads([Read(rp, since_ns, until_ns, None)], since_ns, until_ns, False, long_rp)
    window = f"time >= {since_ns} AND time < {until_ns}{host_filter}"
    spans: dict[str, dict[str, int]] = defaultdict(dict)
    for tier in (HOURS, MINUTES, RAW):
        for edge, fn in (("first", "first"), ("last", "last")):
            if tier == RAW and edge == "last":
                continue
            q = f'SELECT {fn}("energy_j") FROM "{tier}"."{WL_NODE}" WHERE {window} GROUP BY "host"'
            for row in query(q):
                spans[str(row.get("host") or "")][f"{tier}:{edge}"] = int(row["time"])
    groups: dict[tuple[Segment, ...], list[str]] = defaultdict(list)
    plans: dict[tuple[Segment, ...], Plan] = {}
    for host, found in spans.items():
        p = _host_plan(found, since_ns, until_ns, jobs)
        key = tuple(p.segments)
        groups[key].append(host)
        plans[key] = p
    out = [Read(RP_OF[s.level], s.lo_ns, s.hi_ns, tuple(sorted(hosts))) for key, hosts in groups.items()
           for s in key]
    covered = [plans[k] for k in groups if plans[k].segments]
    since = min((p.since_ns for p in covered), default=since_ns)
    until = max((p.until_ns for p in covered), default=until_ns)
    return Reads(out, since, until, True, long_rp)


GRID_NS = 10 * MINUTE.size_ns  # minute sums are read up to a 10-minute mark (raw ticks after it)


def _host_plan(found: dict[str, int], since_ns: int, until_ns: int, jobs: bool) -> Plan:
    """One host's plan. Its edges are rounded so that healthy hosts share one plan (and one query): a
    first point within a bucket (raw: a minute) of ``since`` means the tier holds the whole window's start,
    and minute sums are read up to a 10-minute mark, raw ticks after it (they are kept longer)."""
    def span(level: Level, tier: str) -> Span:
        if f"{tier}:first" not in found:
            return Span(level, 0, 0)
        first, end = found[f"{tier}:first"], found[f"{tier}:last"] + level.size_ns
        if level is MINUTE:
            end = max(end - end % GRID_NS, MINUTE.ceil(first))
        return Span(level, since_ns if first - since_ns < level.size_ns else first, end)

    raw_kept = found.get(f"{RAW}:first", until_ns)
    raw_kept = since_ns if raw_kept - since_ns < MINUTE.size_ns else raw_kept
    hours, minutes = span(HOUR, HOURS), span(MINUTE, MINUTES)
    if jobs and minutes.folded_ns:  # hours only before the first minute sum: they lose the job names
        hours = Span(HOUR, hours.kept_ns, min(hours.folded_ns, HOUR.ceil(minutes.kept_ns)))
    return plan(since_ns, until_ns, [hours, minutes], raw_kept)


def host_condition(hosts: Sequence[str] | None, quote: Callable[[str], str]) -> str:
    """The ``AND (...)`` keeping these hosts' points ("" for every host)."""
    if hosts is None:
        return ""
    return " AND (" + " OR ".join(f'"host" = {quote(h)}' for h in hosts) + ")"

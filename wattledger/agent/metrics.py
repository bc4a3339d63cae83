"""Cumulative counters for the Prometheus endpoint, folded from committed ticks. Pure: no I/O, no clock.

``Counters`` keeps, per series, the joules charged since the counters'
epoch (the first start of the exporter on this ledger):

* jobs: one series per (host, job, user, project, phase, component, device),
  the ``wl_job`` rows of every tick summed; the last time it was charged
  decides whether it is still exposed (``prune``);
* pools: one series per (host, component, device, source), from ``wl_node``;
  the node's total is their sum (``node_j``);
* the agent: ticks, its own CPU seconds, the last tick's figures.

A snapshot (``to_json`` / ``from_json``) lets a restarted agent continue the
same counters instead of starting again from zero (``agent.exporter``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wattledger.model.points import WL_AGENT, WL_JOB, WL_NODE, Point

JOB_LABELS = ("host", "job", "user", "project", "phase", "component", "device")
POOL_LABELS = ("host", "component", "device", "source")
SNAPSHOT_VERSION = 1
# wl_agent fields that are counts since the ledger was made (kept as they are) or per-tick figures.
AGENT_LIFETIME = ("delivered", "dropped")
AGENT_LAST = ("tick_s", "rss_bytes", "spooled", "write_errors")


@dataclass
class JobSeries:
    energy_j: float
    last_ns: int  # wall time of the last tick that charged it
    shown: bool = False  # exposed at least once (a new series is exposed at 0 first: see ``exposed``)


@dataclass
class PoolSeries:
    energy_j: float = 0.0
    power_w: float | None = None  # the last tick's
    idle_w: float | None = None


@dataclass
class Counters:
    jobs: dict[tuple[str, ...], JobSeries] = field(default_factory=dict)
    pools: dict[tuple[str, ...], PoolSeries] = field(default_factory=dict)
    ticks: int = 0
    agent_cpu_s: float = 0.0
    agent_last: dict[str, float] = field(default_factory=dict)
    last_tick_ns: int = 0  # wall time of the newest tick folded in
    pruned: int = 0  # job series no longer exposed (inactive longer than the window)

    def fold(self, points: Iterable[Point]) -> None:
        """Add one committed tick's points (wl_job, wl_node, wl_agent)."""
        for p in points:
            if p.measurement == WL_JOB:
                self._job(p)
            elif p.measurement == WL_NODE:
                self._pool(p)
            elif p.measurement == WL_AGENT:
                self._agent(p)
            self.last_tick_ns = max(self.last_tick_ns, p.time_ns)

    def _job(self, p: Point) -> None:
        energy_j = _finite(p.fields.get("energy_j"))
        key = tuple(str(p.tags.get(t, "")) for t in JOB_LABELS)
        series = self.jobs.get(key)
        if series is None:
            self.jobs[key] = JobSeries(energy_j, p.time_ns)
        else:
            series.energy_j += energy_j
            series.last_ns = max(series.last_ns, p.time_ns)

    def _pool(self, p: Point) -> None:
        key = tuple(str(p.tags.get(t, "")) for t in POOL_LABELS)
        series = self.pools.setdefault(key, PoolSeries())
        series.energy_j += _finite(p.fields.get("energy_j"))
        series.power_w = _optional(p.fields.get("power_w"))
        series.idle_w = _optional(p.fields.get("idle_w"))

    def _agent(self, p: Point) -> None:
        self.ticks += 1
        self.agent_cpu_s += _finite(p.fields.get("cpu_s"))
        for name in AGENT_LIFETIME + AGENT_LAST:
            value = _optional(p.fields.get(name))
            if value is not None:
                self.agent_last[name] = value

    def prune(self, now_ns: int, window_ns: int) -> None:
        """Stop exposing (and forget) job series not charged within the window before ``now_ns``."""
        stale = [k for k, s in self.jobs.items() if s.last_ns < now_ns - window_ns]
        for k in stale:
            del self.jobs[k]
        self.pruned += len(stale)

    def exposed(self) -> list[tuple[tuple[str, ...], float]]:
        """(labels, value) of every job series for one scrape. A series new since the last scrape is shown
        at 0 (the job's start): PromQL's ``increase()`` counts from a series' first sample, so without it
        the energy of a job's first ticks (up to a scrape interval) would never be counted."""
        out = []
        for key, s in self.jobs.items():
            out.append((key, s.energy_j if s.shown else 0.0))
            s.shown = True
        return out

    def node_j(self) -> dict[str, float]:
        """Energy per host: the sum of its pools."""
        out: dict[str, float] = {}
        for (host, *_), s in self.pools.items():
            out[host] = out.get(host, 0.0) + s.energy_j
        return out

    # -- snapshots ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({
            "version": SNAPSHOT_VERSION, "last_tick_ns": self.last_tick_ns, "ticks": self.ticks,
            "agent_cpu_s": self.agent_cpu_s,
            "jobs": [[*k, s.energy_j, s.last_ns] for k, s in self.jobs.items()],
            "pools": [[*k, s.energy_j] for k, s in self.pools.items()],
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Counters:
        """Counters from a snapshot; ValueError when it is not one this version wrote."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            raise ValueError("not a counter snapshot of this version")
        n_job, n_pool = len(JOB_LABELS), len(POOL_LABELS)
        return cls(
            # A restored series continues the one Prometheus knows: no 0 first (that would read as a reset).
            jobs={tuple(map(str, r[:n_job])): JobSeries(float(r[n_job]), int(r[n_job + 1]), shown=True)
                  for r in data["jobs"]},
            pools={tuple(map(str, r[:n_pool])): PoolSeries(float(r[n_pool])) for r in data["pools"]},
            ticks=int(data["ticks"]), agent_cpu_s=float(data["agent_cpu_s"]),
            last_tick_ns=int(data["last_tick_ns"]),
        )


def points_of_rows(measurement: str, rows: Iterable[Mapping[str, Any]]) -> list[Point]:
    """Ledger rows (``store.ledger.rows``) as points again, to fold ticks a snapshot missed."""
    out = []
    for r in rows:
        tags = {k: str(v) for k, v in r.items() if isinstance(v, str)}
        fields = {k: float(v) for k, v in r.items() if k != "time_ns" and isinstance(v, (int, float))}
        out.append(Point(measurement, tags, fields, int(r["time_ns"])))
    return out


def _finite(value: object) -> float:
    number = _optional(value)
    return number if number is not None else 0.0


def _optional(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None

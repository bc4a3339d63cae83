"""The data model (DESIGN.md, "Data model"): points as the ledger, the spool
and every sink see them.

A point is a measurement, string tags, float fields and an explicit timestamp
(interval end, integer nanoseconds) so that a resend overwrites instead of
duplicating. Empty tag values are left out (InfluxDB rejects ``tag=``).
Line protocol, with its escaping, is produced by influxdb-client's ``Point``;
we never format it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from influxdb_client import Point as _LibPoint

WL_NODE = "wl_node"
WL_JOB = "wl_job"
WL_CARBON = "wl_carbon"
WL_PUE = "wl_pue"
WL_AGENT = "wl_agent"
WL_EMBODIED = "wl_embodied"

# measurement -> (tags, fields), in the order DESIGN.md gives them.
# wl_job also carries ``source`` so that model estimates stay flagged on every
# per-job row (see docs/design-notes.md).
SCHEMA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    WL_NODE: (("host", "component", "device", "source"), ("energy_j", "power_w", "idle_w", "interval_s")),
    WL_JOB: (
        ("host", "job", "user", "project", "phase", "component", "device", "source"),
        ("energy_j", "dynamic_j", "static_j", "driver_s"),
    ),
    WL_CARBON: (("zone", "provider", "kind"), ("g_per_kwh",)),
    WL_PUE: (("site",), ("pue",)),
    WL_AGENT: (
        ("host",),
        ("tick_s", "cpu_s", "rss_bytes", "spooled", "delivered", "dropped", "write_errors"),
    ),
    # Embodied carbon charged per job and tick (docs/embodied.md): a measurement of its own, so that
    # wl_job stays energy (sum of a pool's jobs = its wl_node) and grams never mix with joules.
    # component "gpu" (device: the GPU pool) or "host" (device "host": the CPU sockets, DRAM, storage
    # and chassis, split by one driver, with each part as a field). Every field adds up over ticks.
    WL_EMBODIED: (
        ("host", "job", "user", "project", "phase", "component", "device"),
        ("embodied_g", "cpu_g", "dram_g", "storage_g", "chassis_g"),
    ),
}

# The fields of each measurement that add up over time: a sum over ticks means
# something (joules, seconds), so the ledger's rollups keep their sums, exactly
# (store/schema.py), and derive rates such as power at read time. A field added
# to SCHEMA and named here rolls up with no other code. Fields not named (power,
# idle power, intensities, the agent's gauges) are kept only with the raw ticks.
ADDITIVE: dict[str, tuple[str, ...]] = {
    WL_NODE: ("energy_j", "interval_s"),
    WL_JOB: ("energy_j", "dynamic_j", "static_j", "driver_s"),
    WL_EMBODIED: ("embodied_g", "cpu_g", "dram_g", "storage_g", "chassis_g"),
}


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, float]
    time_ns: int
    # Which tier of a fleet's InfluxDB the point belongs to (model/tiers.py): "raw" for a tick's points,
    # "minutes" / "hours" for the ledger's rollups. Not part of the line protocol: sinks route by it.
    tier: str = "raw"

    def clean_tags(self) -> dict[str, str]:
        """Tags with empty values left out (an empty tag value is a rejected line)."""
        return {k: v for k, v in self.tags.items() if v}

    def to_lib(self) -> _LibPoint:
        # Imported here, not at module level: influxdb-client (with its generated API
        # models) is ~40 MB of RSS that an agent keeping only the local ledger never needs.
        from influxdb_client import Point as _LibPoint
        from influxdb_client.domain.write_precision import WritePrecision

        p = _LibPoint(self.measurement)
        for tag, text in sorted(self.clean_tags().items()):
            p.tag(tag, text)
        for name, number in self.fields.items():
            p.field(name, float(number))
        return p.time(self.time_ns, WritePrecision.NS)

    def to_line(self) -> str:
        return self.to_lib().to_line_protocol()


def to_lines(points: Iterable[Point]) -> list[str]:
    return [p.to_line() for p in points]


@dataclass
class Batch:
    """Points plus the spool ids they came from (None for points not spooled)."""

    points: list[Point] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

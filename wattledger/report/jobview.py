"""A researcher's own view: one job's summary (``report --job TAG``). Pure.

For each (job, user) the report kept, ``job_summaries`` joins its row of the
report (IT energy by component, facility energy, CO2e and the intensity's
source) with what the source knows of its ticks (``JobTicks``): when it ran,
how long it was charged for, the GPU time it held, and the host's energy in
the same ticks, of which the job's share and the unused capacity (``_idle``)
are given.

* duration: the length of the ticks it was charged in (a job that paused for
  a day is not charged for the day), with the span first..last beside it;
* GPU-hours held: the tick length x each GPU the job was charged on (a held
  context under ``occupancy`` counts, idle or not; a MIG slice counts as a
  GPU);
* share of the host: its IT energy / every pool's energy in its ticks.

Run records (``wattledger run`` without the service) have no ticks in the
ledger: their span is the run's, and the host's energy is not known.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from wattledger.model.units import J_PER_KWH, NS_PER_S
from wattledger.report.model import Report, Row
from wattledger.util.timeutil import iso


@dataclass(frozen=True)
class JobTicks:
    """What a source knows of one user's job beyond its hourly energy."""

    user: str
    first_ns: int  # start of the first tick it was charged in
    last_ns: int  # end of the last
    active_s: float  # the length of the ticks it was charged in
    ticks: int
    gpu_s_held: float  # tick length x GPUs charged on
    host_j: float | None  # every pool's energy in those ticks; None: not known (run records)
    unused_j: float | None  # _idle's energy in them

    def merge(self, other: JobTicks) -> JobTicks:
        known = self.host_j is not None and other.host_j is not None
        return JobTicks(self.user, min(self.first_ns, other.first_ns), max(self.last_ns, other.last_ns),
                        self.active_s + other.active_s, self.ticks + other.ticks,
                        self.gpu_s_held + other.gpu_s_held,
                        (self.host_j or 0.0) + (other.host_j or 0.0) if known else None,
                        (self.unused_j or 0.0) + (other.unused_j or 0.0) if known else None)


def ticks_from_rows(rows: Iterable[dict[str, Any]]) -> list[JobTicks]:
    """``JobTicks`` from a source's summed rows (``Ledger.job_ticks``)."""
    return [JobTicks(str(r["user"] or ""), int(r["first_ns"]), int(r["last_ns"]), float(r["active_s"] or 0.0),
                     int(r["ticks"]), float(r["gpu_s_held"] or 0.0), float(r["host_j"] or 0.0),
                     float(r["unused_j"] or 0.0)) for r in rows]


def _t(row: dict[str, Any]) -> int:
    return int(row["time_ns"] if "time_ns" in row else row["time"])


def ticks_from_points(job_rows: Iterable[dict[str, Any]], node_rows: Iterable[dict[str, Any]],
                      idle_rows: Iterable[dict[str, Any]]) -> list[JobTicks]:
    """``JobTicks`` from raw rows (a source that cannot join, InfluxDB): the job's wl_job rows, the
    wl_node rows and ``_idle``'s wl_job rows of the same span. The same sums as ``Ledger.job_ticks``."""
    tick: dict[tuple[int, str], list[float]] = {}  # (time, host) -> [longest interval, energy]
    gpu_dt: dict[tuple[int, str, str], float] = {}
    for r in node_rows:
        key = (_t(r), str(r.get("host") or ""))
        dt, e = float(r.get("interval_s") or 0.0), float(r.get("energy_j") or 0.0)
        old = tick.setdefault(key, [0.0, 0.0])
        old[0], old[1] = max(old[0], dt), old[1] + e
        if r.get("component") == "gpu":
            gpu_dt[(key[0], key[1], str(r.get("device") or ""))] = dt
    idle: dict[tuple[int, str], float] = {}
    for r in idle_rows:
        key = (_t(r), str(r.get("host") or ""))
        idle[key] = idle.get(key, 0.0) + float(r.get("energy_j") or 0.0)
    ticks: dict[str, set[tuple[int, str]]] = {}
    gpus: dict[str, set[tuple[int, str, str]]] = {}
    for r in job_rows:
        user, key = str(r.get("user") or ""), (_t(r), str(r.get("host") or ""))
        if key in tick:
            ticks.setdefault(user, set()).add(key)
            if r.get("component") == "gpu":
                gpus.setdefault(user, set()).add((key[0], key[1], str(r.get("device") or "")))
    return [JobTicks(user, min(t - int(tick[(t, h)][0] * 1e9) for t, h in keys), max(t for t, _ in keys),
                     sum(tick[k][0] for k in keys), len(keys), sum(gpu_dt.get(g, 0.0) for g in gpus.get(user, ())),
                     sum(tick[k][1] for k in keys), sum(idle.get(k, 0.0) for k in keys))
            for user, keys in sorted(ticks.items())]


@dataclass
class JobSummary:
    job: str
    user: str
    row: Row
    ticks: JobTicks | None
    intensity_source: str
    pue: str

    @property
    def duration_s(self) -> float | None:
        return self.ticks.active_s if self.ticks is not None else None

    @property
    def gpu_hours(self) -> float | None:
        return self.ticks.gpu_s_held / 3600 if self.ticks is not None else None

    @property
    def host_share(self) -> float | None:
        t = self.ticks
        if t is None or t.host_j is None or t.host_j <= 0:
            return None
        return min(1.0, self.row.it_j / t.host_j)

    @property
    def unused_share(self) -> float | None:
        t = self.ticks
        if t is None or t.host_j is None or t.unused_j is None or t.host_j <= 0:
            return None
        return t.unused_j / t.host_j

    def to_dict(self) -> dict[str, Any]:
        r, t = self.row, self.ticks
        return {
            "job": self.job, "user": self.user,
            "first": iso(t.first_ns) if t else None, "last": iso(t.last_ns) if t else None,
            "duration_s": self.duration_s, "ticks": t.ticks if t else None,
            "energy_j": r.it_j, "energy_by_component_j": dict(sorted(r.it_j_by_component.items())),
            "facility_energy_j": r.facility_kwh * J_PER_KWH, "pue": self.pue,
            "co2e_g": r.g_co2e, "g_per_kwh": r.g_per_kwh, "intensity_source": self.intensity_source,
            "embodied_co2e_g": r.embodied_g, "total_co2e_g": r.total_g,
            "gpu_hours_held": self.gpu_hours, "host_energy_j": t.host_j if t else None,
            "host_share": self.host_share, "unused_capacity_share": self.unused_share,
            "estimated_j": r.estimated_it_j, "estimate": r.estimated_it_j > 0,
            "from_run_records_j": r.run_it_j,
        }


def job_summaries(report: Report, ticks: Sequence[JobTicks]) -> list[JobSummary]:
    """One summary per (job, user) row of a ``by="job"`` report, with that user's ticks."""
    if report.by != "job":
        raise ValueError("a job summary needs a report grouped by job")
    by_user: dict[str, JobTicks] = {}
    for t in ticks:
        by_user[t.user] = by_user[t.user].merge(t) if t.user in by_user else t
    return [JobSummary(row.key[0], row.key[1], row, by_user.get(row.key[1]), report.intensity_source(row),
                       report.pue) for row in report.rows]


def run_record_ticks(records: Iterable[dict[str, Any]], tag: str) -> list[JobTicks]:
    """``JobTicks`` of run records of ``tag``: their span, GPUs held for the whole run, host energy unknown."""
    out = []
    for r in records:
        if r.get("job") != tag or r.get("figures_from", "run") != "run":
            continue
        start, end = int(r.get("start_ns") or 0), int(r.get("end_ns") or 0)
        gpus = len((r.get("machine") or {}).get("gpus") or [])
        duration_s = max(0.0, (end - start) / NS_PER_S)
        out.append(JobTicks(str(r.get("user") or ""), start, end, duration_s, 1, gpus * duration_s, None, None))
    return out


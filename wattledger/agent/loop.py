"""The tick loop: collect -> pools -> attribute -> ledger -> sinks.

One tick, top to bottom (``Agent.tick``):

1. **collect**: read the GPUs (raw), the processes (CPU seconds per job, and
   the jobs of the GPUs' pids), the energy counters. Every reading is stamped
   with the monotonic clock; the wall clock only stamps the points.
2. **pools**: each source's readings become uniform ``PoolInput``s
   (``agent.pools``): energy delta with its own interval, drivers, holders.
3. **attribute**: per pool, the idle baseline (``accounting.idle``) and the
   pure ABC split (``accounting.attribution``) give ``wl_node`` and
   ``wl_job`` points.
4. **commit** (``Agent.commit``): the ledger (one transaction), the local
   sinks (stdout), delivery of spooled points to a remote sink, carbon sync,
   then one bounded piece of the ledger's compaction (``store.compact``) and,
   for a fleet's tiered InfluxDB, the export of what it folded into the spool
   (``store.exporter``).

The first read of every counter only sets the baseline, so ``run(ticks=N)``
primes once and then makes N ticks of data. SIGTERM (``stop()``) finishes
the current tick, flushes with a deadline and returns. ``agent.factory``
assembles an Agent from the config.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from wattledger.accounting.attribution import Pool, attribute
from wattledger.accounting.gpu import GpuPools
from wattledger.accounting.idle import IdleBaselines
from wattledger.agent.pools import CpuPools, PoolInput, gpu_inputs
from wattledger.agent.sinks.base import Sink
from wattledger.config import Config, configured_idle_w
from wattledger.model.activity import ProcSample
from wattledger.model.gpu import GpuSample
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_AGENT, WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergySample, ProbeResult
from wattledger.store.compact import Compactor
from wattledger.store.exporter import Exporter
from wattledger.store.ledger import Ledger
from wattledger.util.clock import SYSTEM_CLOCK, Clock
from wattledger.util.logonce import LogOnce

if TYPE_CHECKING:
    from wattledger.agent.delivery import Deliverer
    from wattledger.carbon.sync import PeriodicSync

log = logging.getLogger("wattledger.loop")


class EnergyReader(Protocol):
    name: str

    def read(self, read_ns: int) -> EnergySample: ...


class ProcReader(Protocol):
    name: str

    def read(self, read_ns: int, want_pids: Sequence[int] = ...) -> ProcSample: ...


class GpuReader(Protocol):
    name: str

    def read(self, read_ns: int) -> GpuSample: ...


@dataclass
class Sources:
    """What the agent reads every tick."""

    energy: list[EnergyReader]
    procs: ProcReader
    gpu: GpuReader | None = None


@dataclass
class TickResult:
    points: list[Point]
    pools: int = 0
    duration_s: float = 0.0


@dataclass
class Agent:
    cfg: Config
    ledger: Ledger
    sources: Sources
    idle: IdleBaselines
    host: str
    clock: Clock = SYSTEM_CLOCK
    local_sinks: list[Sink] = field(default_factory=list)  # written every tick (stdout)
    deliverer: Deliverer | None = None  # spooled points to a remote sink
    carbon_sync: PeriodicSync | None = None
    on_tick: Callable[[TickResult], None] | None = None
    compactor: Compactor | None = None  # the ledger's rollups and retention, a bounded piece per tick
    exporter: Exporter | None = None  # the rollups into the spool, for a fleet's tiered InfluxDB
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.reporter = LogOnce(log)
        self.cpu_pools = CpuPools()
        self.gpu_pools = GpuPools()
        self._me = psutil.Process()  # the agent's own cost, for wl_agent
        self._last_cpu_s = self._own_cpu_s()

    def _own_cpu_s(self) -> float:
        t = self._me.cpu_times()
        return t.user + t.system

    # -- 1. collect ------------------------------------------------------------
    def _read_energy(self, read_ns: int) -> list[EnergySample]:
        samples = []
        for c in self.sources.energy:
            try:
                s = c.read(read_ns)
            except OSError as e:
                self.reporter.problem(("read", c.name), f"{c.name}: read failed: {e}")
                continue
            self.reporter.cleared(("read", c.name), f"{c.name}: reading again")
            for f in s.failures:
                self.reporter.problem(("fail", f.source, f.detail), _problem_line(f))
            samples.append(s)
        return samples

    def _read_gpu(self, read_ns: int) -> GpuSample | None:
        if self.sources.gpu is None:
            return None
        try:
            sample = self.sources.gpu.read(read_ns)  # per-GPU failures come back in sample.failures
        except Exception as e:  # noqa: BLE001 - a GPU problem must never stop the CPU ledger
            self.reporter.problem(("read", "nvml"), f"nvml: read failed: {e!r}; GPU energy not measured",
                                  logging.ERROR)
            return None
        self.reporter.cleared(("read", "nvml"), "nvml: reading again")
        return sample

    # -- one tick --------------------------------------------------------------
    def tick(self) -> TickResult:
        started = time.monotonic()
        wall_ns, read_ns = self.clock.wall_ns(), self.clock.mono_ns()
        gpu_raw = self._read_gpu(read_ns)
        procs = self.sources.procs.read(read_ns, sorted(_gpu_pids(gpu_raw)))
        samples = self._read_energy(read_ns)
        gpu = self.gpu_pools.update(gpu_raw) if gpu_raw is not None else None
        inputs = self.cpu_pools.inputs(samples, procs) + gpu_inputs(gpu, procs.jobs_by_pid)
        points = [p for pool in inputs for p in self._charge(pool, wall_ns)]
        duration_s = time.monotonic() - started
        if not procs.baseline:
            points.append(self._agent_point(wall_ns, duration_s))
            self.idle.maybe_save()
        return TickResult(points, len(inputs), duration_s)

    def _charge(self, pool: PoolInput, wall_ns: int) -> list[Point]:
        """One pool: report its counter's events, resolve and learn its idle power, split it, make points."""
        self._report_counter(pool)
        c = pool.counter
        idle_w = self.idle.resolve(c.component, c.device, configured_idle_w(self.cfg, c.component, c.device),
                                   c.idle_power_w, wall_ns).power_w
        self.idle.observe(c.component, c.device, pool.energy_j / pool.interval_s, pool.activity)
        split = Pool(c.component, c.device, c.source, pool.energy_j, pool.interval_s, idle_w,
                     self.cfg.attribution.static_policy(c.component))
        return pool_points(self.host, split, attribute(split, pool.driver_s, pool.holders, pool.unexplained),
                           wall_ns)

    def _report_counter(self, pool: PoolInput) -> None:
        c = pool.counter
        if pool.reset:
            self.reporter.problem(("reset", c.component, c.device), f"{c.source} {c.device}: counter reset",
                                  logging.INFO)
        if pool.suspect:
            self.reporter.problem(("suspect", c.component, c.device),
                                  f"{c.source} {c.device}: tick as long as the counter's wrap "
                                  "period; a second wrap would go unseen: shorten --interval")

    def _agent_point(self, wall_ns: int, tick_s: float) -> Point:
        cpu_s = self._own_cpu_s()
        fields: dict[str, float] = {
            "tick_s": tick_s,
            "cpu_s": cpu_s - self._last_cpu_s,
            "rss_bytes": float(self._me.memory_info().rss),
        }
        self._last_cpu_s = cpu_s
        counts = self.ledger.spool_counts()
        fields.update({k: float(counts[k]) for k in ("spooled", "delivered", "dropped")})
        errors = 0 if self.deliverer is None else int(self.deliverer.stats().get("write_errors", 0))
        fields["write_errors"] = float(errors)
        return Point(WL_AGENT, {"host": self.host}, fields, wall_ns)

    def commit(self, result: TickResult) -> None:
        self.ledger.append(result.points)
        if self.carbon_sync is not None:
            self.carbon_sync.maybe_sync()  # in its own thread: a slow API never delays a tick
        for sink in self.local_sinks:
            if result.points:
                self._write_local(sink, result.points)
        if self.deliverer is not None:
            self.deliverer.step()
        if self.compactor is not None and result.points:
            self.compactor.step(max(p.time_ns for p in result.points))  # the tick's time is "now"
        if self.exporter is not None:
            self.exporter.step()  # what compaction folded, spooled for the next delivery
        if self.on_tick is not None:
            self.on_tick(result)

    def _write_local(self, sink: Sink, points: list[Point]) -> None:
        answer = sink.write(points)
        if answer.ok:
            self.reporter.cleared(("sink", sink.name), f"{sink.name}: writing again")
        else:
            self.reporter.problem(("sink", sink.name), f"{sink.name}: cannot write this tick's points "
                                  f"({answer.outcome.value}: {answer.detail}); they are in the ledger")

    # -- the service -----------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, ticks: int | None = None, interval_s: float | None = None) -> int:
        """Prime, then tick every interval until ``ticks`` ticks or stop(); returns ticks made."""
        interval_s = interval_s or self.cfg.agent.interval_s
        self.commit(self.tick())  # baseline: first counter reads make no energy
        made = 0
        next_at = time.monotonic() + interval_s
        while not self._stop.is_set() and (ticks is None or made < ticks):
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                break
            next_at += interval_s
            if next_at < time.monotonic():  # fell behind (suspend, overload): do not burst
                next_at = time.monotonic() + interval_s
            self.commit(self.tick())
            made += 1
        self.close(flush_s=min(10.0, max(1.0, interval_s)))
        return made

    def close(self, flush_s: float = 1.0) -> None:
        """Flush what is spooled (within ``flush_s``), save learned state, let the carbon sync finish."""
        if self.deliverer is not None:
            self.deliverer.flush(deadline_s=flush_s)
        self.idle.save()
        if self.carbon_sync is not None:
            self.carbon_sync.join(timeout_s=flush_s)


def _problem_line(f: ProbeResult) -> str:
    return f"{f.source}: {f.state.value}: {f.detail}. {f.fix}"


def _gpu_pids(sample: GpuSample | None) -> set[int]:
    """Every pid the GPUs reported (contexts and utilisation samples), to be named by the process reader."""
    pids: set[int] = set()
    for gpu in sample.gpus if sample is not None else ():
        for activity in [gpu.activity] + [m.activity for m in gpu.mig]:
            if activity is not None:
                pids.update(activity.memory_by_pid)
                pids.update(s.pid for s in activity.util or ())
    return pids


def pool_points(host: str, pool: Pool, charges: Mapping[JobKey, Any], wall_ns: int) -> list[Point]:
    """The wl_node point of one pool and a wl_job point per job charged, stamped ``wall_ns``."""
    node_tags = {"host": host, "component": pool.component, "device": pool.device, "source": pool.source}
    node_fields = {"energy_j": pool.energy_j, "power_w": pool.energy_j / pool.interval_s,
                   "interval_s": pool.interval_s}
    if pool.idle_power_w is not None:
        node_fields["idle_w"] = pool.idle_power_w
    points = [Point(WL_NODE, node_tags, node_fields, wall_ns)]
    for job, charge in sorted(charges.items()):
        points.append(Point(WL_JOB, job_tags(host, job, pool), {
            "energy_j": charge.energy_j, "dynamic_j": charge.dynamic_j,
            "static_j": charge.static_j, "driver_s": charge.driver_s}, wall_ns))
    return points


def job_tags(host: str, job: JobKey, pool: Pool) -> dict[str, str]:
    return {"host": host, "job": job.tag, "user": job.user, "project": job.project, "phase": job.phase,
            "component": pool.component, "device": pool.device, "source": pool.source}


def sum_job_energy(points: Sequence[Point], tag: str, user: str | None = None) -> dict[str, float]:
    """Energy per component charged to one job in these points."""
    out: dict[str, float] = {}
    for p in points:
        if p.measurement == WL_JOB and p.tags.get("job") == tag and (user is None or p.tags.get("user") == user):
            out[p.tags["component"]] = out.get(p.tags["component"], 0.0) + float(p.fields["energy_j"])
    return out

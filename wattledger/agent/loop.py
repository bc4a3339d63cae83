"""The tick loop: collect -> pools -> attribute -> ledger -> sinks.

One tick, top to bottom (``Agent.tick``):

1. **collect**: read the GPUs (raw), the energy counters, the processes (CPU
   seconds per job, and the jobs of the GPUs' pids). Every reading is stamped
   with the monotonic clock; the wall clock only stamps the points.
2. **pools**: each source's readings become uniform ``PoolInput``s
   (``agent.pools``): energy delta with its own interval, drivers, holders.
3. **attribute**: per pool, the idle baseline (``accounting.idle``) and the
   pure ABC split (``accounting.attribution``) give ``wl_node`` and
   ``wl_job`` points; the tag guard (``accounting.tags``) folds a user's tag
   sets over the daily cap into that user's ``_overflow``.
4. **commit** (``Agent.commit``): the ledger (one transaction: the points
   and the counters' readings they were measured up to, so that a restart
   can charge its gap to ``_unobserved``: ``agent.restart``), the local sinks
   (stdout), delivery of spooled points to a remote sink, carbon sync, then
   one bounded piece of the ledger's compaction (``store.compact``) and, for
   a fleet's tiered InfluxDB, the export of what it folded into the spool
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
from wattledger.accounting.gpu import GpuPools, allocated_gpus
from wattledger.accounting.idle import IdleBaselines
from wattledger.accounting.resume import CounterStore
from wattledger.accounting.tags import TagGuard
from wattledger.agent.pools import CpuPools, PoolInput, gpu_inputs
from wattledger.agent.restart import checkpoint
from wattledger.agent.sinks.base import Sink
from wattledger.config import Config, configured_idle_w
from wattledger.model.activity import ProcSample
from wattledger.model.gpu import GpuSample
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_AGENT, WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergySample, ProbeResult
from wattledger.store.compact import Compactor
from wattledger.store.jobinfo import settle_requested_ns
from wattledger.store.exporter import RollupExporter
from wattledger.store.ledger import Ledger
from wattledger.util.clock import SYSTEM_CLOCK, Clock
from wattledger.util.logonce import LogOnce

if TYPE_CHECKING:
    from wattledger.agent.delivery import Deliverer
    from wattledger.agent.embodied import EmbodiedCharger
    from wattledger.agent.exporter import Exporter
    from wattledger.carbon.sync import PeriodicSync
    from wattledger.model.slurm import SlurmJob
    from wattledger.store.jobinfo import JobInfoStore

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
    wall_ns: int = 0  # the tick's timestamp (every point's)
    slurm: Mapping[JobKey, SlurmJob] = field(default_factory=dict)  # Slurm jobs with a live process


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
    tags: TagGuard | None = None  # the per-user cap on tag sets per day ([jobs] max_tags_per_user_day)
    counters: CounterStore | None = None  # the counters' readings, committed with each tick to bridge a restart
    jobinfo: JobInfoStore | None = None  # Slurm jobs' details beside the ledger (store.jobinfo)
    exporter: Exporter | None = None  # the Prometheus endpoint ([prometheus] listen)
    embodied: EmbodiedCharger | None = None  # the hardware's embodied carbon per tick ([embodied])
    rollups: RollupExporter | None = None  # the ledger's rollups into the spool, for a fleet's tiered InfluxDB
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.reporter = LogOnce(log)
        self.guard = self.tags or TagGuard(self.cfg.jobs.max_tags_per_user_day)
        self.cpu_pools = CpuPools()
        self.gpu_pools = GpuPools()
        self._me = psutil.Process()  # the agent's own cost, for wl_agent
        self._settle_seen_ns = settle_requested_ns(self.ledger.path.parent)
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
        self._settle_if_asked()
        gpu_raw = self._read_gpu(read_ns)
        # The energy counters just before /proc/stat (the process reader's first read): the
        # energy and the busy time it is split by then cover the same interval, to within
        # microseconds, not the tens of milliseconds a /proc scan takes.
        samples = self._read_energy(read_ns)
        procs = self.sources.procs.read(read_ns, sorted(_gpu_pids(gpu_raw)))
        gpu = self.gpu_pools.update(gpu_raw) if gpu_raw is not None else None
        inputs = self.cpu_pools.inputs(samples, procs) + gpu_inputs(gpu, procs.jobs_by_pid,
                                                                    self._allocated(gpu_raw, procs))
        points = [p for pool in inputs for p in self._charge(pool, wall_ns)]
        points += self._embodied(inputs, wall_ns)
        duration_s = time.monotonic() - started
        if not procs.baseline:
            points.append(self._agent_point(wall_ns, duration_s))
            self.idle.maybe_save()
        self.guard.save()  # only when a new tag set was seen
        return TickResult(points, len(inputs), duration_s, wall_ns, procs.slurm)

    def _embodied(self, inputs: list[PoolInput], wall_ns: int) -> list[Point]:
        """The tick's embodied carbon (agent.embodied), folded like the energy by the tag cap."""
        if self.embodied is None:
            return []
        points = self.embodied.points(inputs, wall_ns, lambda job: self.guard.job(job, wall_ns))
        for uuid in sorted(self.embodied.unknown_gpus):
            self.reporter.problem(("embodied", uuid), f"embodied: GPU {uuid} appeared after the agent started and "
                                  "has no embodied figure: restart the agent to charge it", logging.INFO)
        return points

    def _settle_if_asked(self) -> None:
        """A Slurm Epilog asked (store.jobinfo.request_settle): read every process in this tick."""
        asked_ns = settle_requested_ns(self.ledger.path.parent)
        if asked_ns is not None and asked_ns != self._settle_seen_ns:
            self._settle_seen_ns = asked_ns
            request = getattr(self.sources.procs, "request_full_scan", None)
            if request is not None:
                request()

    def _allocated(self, gpu_raw: GpuSample | None, procs: ProcSample) -> dict[str, frozenset[JobKey]]:
        """The GPUs Slurm allocated to each running job ([slurm] hold_allocated_gpus: they hold them)."""
        if gpu_raw is None or not procs.slurm or not self.cfg.slurm.hold_allocated_gpus:
            return {}
        return allocated_gpus(gpu_raw.gpus, procs.slurm)

    def _charge(self, pool: PoolInput, wall_ns: int) -> list[Point]:
        """One pool: report its counter's events, resolve and learn its idle power, split it, make points."""
        self._report_counter(pool)
        c = pool.counter
        idle_w = None  # a restart's gap: nobody watched, so no static/dynamic split, and nothing to learn
        if not pool.unobserved:
            idle_w = self.idle.resolve(c.component, c.device, configured_idle_w(self.cfg, c.component, c.device),
                                       c.idle_power_w, wall_ns).power_w
            self.idle.observe(c.component, c.device, pool.energy_j / pool.interval_s, pool.activity)
        split = Pool(c.component, c.device, c.source, pool.energy_j, pool.interval_s, idle_w,
                     self.cfg.attribution.static_policy(c.component), pool.capacity_s)
        charges = attribute(split, pool.driver_s, pool.holders, pool.unexplained)
        return pool_points(self.host, split, self.guard.fold(charges, wall_ns), wall_ns)

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
        # The readings the tick was measured up to, committed with it (agent/restart.py).
        state = None if self.counters is None else checkpoint(self.counters, self.cpu_pools, self.gpu_pools,
                                                               self.sources.energy, result.wall_ns)
        result.points = self.ledger.append(result.points, state)  # as stored: every output shows the ledger's figures
        if self.jobinfo is not None and result.slurm:
            self._record_jobs(self.jobinfo, result)
        if self.exporter is not None:
            self.exporter.committed(result.points, result.wall_ns)
        if self.carbon_sync is not None:
            self.carbon_sync.maybe_sync()  # in its own thread: a slow API never delays a tick
        for sink in self.local_sinks:
            if result.points:
                self._write_local(sink, result.points)
        if self.deliverer is not None:
            self.deliverer.step()
        if self.compactor is not None and result.points:
            self.compactor.step(max(p.time_ns for p in result.points))  # the tick's time is "now"
        if self.rollups is not None:
            self.rollups.step()  # what compaction folded, spooled for the next delivery
        if self.on_tick is not None:
            self.on_tick(result)

    def _record_jobs(self, jobinfo: JobInfoStore, result: TickResult) -> None:
        try:
            jobinfo.record(self.host, result.wall_ns, result.slurm)
        except Exception as e:  # noqa: BLE001 - job details must never stop the ledger; said once
            self.reporter.problem("jobinfo", f"cannot record Slurm job details in the ledger ({e}); energy is "
                                  "still recorded, report --account/--partition and the Epilog miss them")
        else:
            self.reporter.cleared("jobinfo", "Slurm job details recorded again")

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
        if self.exporter is not None:
            self.exporter.close()
        if self.jobinfo is not None:
            self.jobinfo.close()


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

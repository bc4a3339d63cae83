"""The tick loop: collect -> attribute -> ledger -> sinks.

Each tick: read the processes (per-job CPU seconds), read every energy
collector (cumulative counters), turn counters into interval energy
(``counters``), split each pool's energy over jobs (``attribution``, pure),
write ``wl_node``/``wl_job``/``wl_agent`` points to the local ledger in one
transaction, print them when the stdout sink is on, and let the delivery
step send spooled points to a remote sink.

The first read of every counter only sets the baseline, so ``run(ticks=N)``
primes once and then makes N ticks of data. SIGTERM (``stop()``) finishes
the current tick, flushes with a deadline and returns.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from wattledger.accounting.attribution import Pool, StaticPolicy, attribute
from wattledger.config import Config
from wattledger.accounting.counters import CounterTracker
from wattledger.accounting.gpu import gpu_drivers, sm_busy_total, unexplained_job
from wattledger.accounting.idle import IdleBaselines, activity_fraction
from wattledger.model.jobs import SYSTEM_JOB, UNTAGGED, JobKey
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_AGENT, WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergyCounter, EnergySample, ProbeResult
from wattledger.collectors.estimate import EstimateCollector
from wattledger.collectors.nvml import TRANSIENT, GpuDeviceReading, GpuSample, NvmlCollector, problem_of
from wattledger.collectors.procs import ProcCollector
from wattledger.collectors.rapl import RaplCollector

log = logging.getLogger("wattledger.loop")


class ReportOnce:
    """Log each distinct problem once (and again only after it went away)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger
        self.active: set[tuple[str, ...]] = set()

    def problem(self, key: tuple[str, ...], message: str, level: int = logging.WARNING) -> None:
        if key not in self.active:
            self.active.add(key)
            self.logger.log(level, message)

    def cleared(self, key: tuple[str, ...], message: str = "") -> None:
        if key in self.active:
            self.active.discard(key)
            if message:
                self.logger.info(message)


def choose_energy_collectors(cfg: Config) -> tuple[list[Any], list[ProbeResult]]:
    """RAPL when it can be read; the model estimate when not (or when configured)."""
    probes: list[ProbeResult] = []
    collectors: list[Any] = []
    rapl = RaplCollector(cfg.agent.sysfs_root)
    rapl_probe = rapl.probe()
    probes.append(rapl_probe)
    if rapl_probe.ok and cfg.agent.estimate != "always":
        collectors.append(rapl)
    if cfg.agent.estimate == "always" or (cfg.agent.estimate == "auto" and not rapl_probe.ok):
        est = EstimateCollector(
            cfg.agent.procfs_root,
            cfg.estimate.cpu_idle_w_per_vcpu,
            cfg.estimate.cpu_max_w_per_vcpu,
            cfg.estimate.dram_w_per_gib,
        )
        probes.append(est.probe())
        collectors.append(est)
    return collectors, probes


def choose_gpu_collector(cfg: Config, nvml: Any = None) -> tuple[NvmlCollector | None, list[ProbeResult]]:
    """NVML when [agent] gpus = "auto" and it can read a GPU; rows: the probe, then one per GPU.

    A failure that may clear while the agent runs (the NVIDIA module not loaded
    yet at boot, an NVML error) keeps the collector: it probes again every
    ``reprobe_every`` reads and starts measuring when the GPUs appear. No
    library or no GPU at all means no collector.
    """
    if cfg.agent.gpus == "never":
        return None, []
    gpu = NvmlCollector(nvml)
    probe = gpu.probe()
    rows = [probe, *gpu.device_probes()]
    if not probe.ok and problem_of(probe) not in TRANSIENT:
        gpu.close()
        return None, rows
    return gpu, rows


def policy_for(cfg: Config, component: str) -> StaticPolicy:
    a = cfg.attribution
    name = {"cpu": a.cpu_static_policy, "dram": a.dram_static_policy, "gpu": a.gpu_static_policy}.get(
        component, a.cpu_static_policy
    )
    return StaticPolicy(name)


def configured_idle_w(cfg: Config, component: str, device: str) -> float | None:
    table = cfg.attribution.idle_power_w
    return table.get(f"{component}:{device}", table.get(component))


@dataclass
class TickResult:
    points: list[Point]
    pools: int = 0
    duration_s: float = 0.0


@dataclass
class Agent:
    cfg: Config
    ledger: Ledger
    out: TextIO | None = None  # stdout sink: line protocol of every tick
    energy_collectors: list[Any] | None = None
    procs: ProcCollector | None = None
    clock_ns: Callable[[], int] = time.time_ns
    host: str = ""
    deliverer: Any = None  # agent.delivery.Deliverer when a remote sink is configured
    gpu: NvmlCollector | None = None  # chosen with the energy collectors when those are not given
    on_tick: Callable[[TickResult], None] | None = None
    carbon_sync: Any = None  # carbon.sync.PeriodicSync; built from [carbon] sync_interval_s when None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.host = self.host or self.cfg.agent.host or socket.gethostname()
        self.reporter = ReportOnce()
        if self.energy_collectors is None:
            self.energy_collectors, probes = choose_energy_collectors(self.cfg)
            if self.gpu is None:
                self.gpu, _ = choose_gpu_collector(self.cfg)  # NVML logs its own problems once
            for p in probes:
                if not p.ok:
                    self.reporter.problem(("probe", p.source), f"{p.source}: {p.state.value}: {p.detail}. {p.fix}")
        if not self.energy_collectors:
            self.reporter.problem(("no-energy",), "no energy source: nothing will be measured (see `wattledger doctor`)",
                                  logging.ERROR)
        if self.procs is None:
            self.procs = ProcCollector(
                procfs_root=Path(self.cfg.agent.procfs_root),
                tag_vars=tuple(self.cfg.jobs.tag_vars),
                max_tag_chars=self.cfg.jobs.max_tag_chars,
                cgroup_root=Path(self.cfg.agent.cgroup_root),
                use_cgroups=self.cfg.jobs.use_cgroups,
            )
        self.tracker = CounterTracker()
        a = self.cfg.attribution  # P_idle: configured > model > learned > none (accounting/idle.py)
        self.idle = IdleBaselines.load(self.ledger.path.parent, a.idle_percentile, a.learn_idle)
        self._me = psutil.Process()  # the agent's own cost, for wl_agent
        self._last_cpu_s = self._own_cpu_s()
        self.primed = False
        if self.carbon_sync is None and self.cfg.carbon.sync_interval_s > 0:
            from wattledger.carbon.sync import PeriodicSync

            self.carbon_sync = PeriodicSync(self.cfg, self.ledger, clock=self.clock_ns, background=True)

    def _own_cpu_s(self) -> float:
        t = self._me.cpu_times()
        return t.user + t.system

    # -- one tick --------------------------------------------------------------
    def _read_energy(self, now_ns: int) -> list[EnergySample]:
        samples = []
        for c in self.energy_collectors or []:
            try:
                s = c.read(now_ns)
            except OSError as e:
                self.reporter.problem(("read", c.name), f"{c.name}: read failed: {e}")
                continue
            self.reporter.cleared(("read", c.name), f"{c.name}: reading again")
            for f in s.failures:
                self.reporter.problem(("fail", f.source, f.detail), f"{f.source}: {f.state.value}: {f.detail}. {f.fix}")
            samples.append(s)
        return samples

    def _read_gpu(self, now_ns: int) -> GpuSample | None:
        if self.gpu is None:
            return None
        try:
            sample = self.gpu.read(now_ns)  # per-GPU failures come back in sample.failures
        except Exception as e:  # noqa: BLE001 - a GPU problem must never stop the CPU ledger
            self.reporter.problem(("read", "nvml"), f"nvml: read failed: {e!r}; GPU energy not measured",
                                  logging.ERROR)
            return None
        self.reporter.cleared(("read", "nvml"), "nvml: reading again")
        return sample

    def tick(self) -> TickResult:
        started = time.monotonic()
        now_ns = self.clock_ns()
        assert self.procs is not None
        activity = self.procs.read(now_ns)
        samples = self._read_energy(now_ns)
        gpu_sample = self._read_gpu(now_ns)
        inputs: list[tuple[EnergyCounter, int, GpuDeviceReading | None]] = [
            (c, s.now_ns, None) for s in samples for c in s.counters]
        if gpu_sample is not None:
            inputs += [(r.counter, gpu_sample.now_ns, r) for r in gpu_sample.devices]
        job_of_pid = getattr(self.procs, "job_of_pid", lambda pid: JobKey(UNTAGGED, ""))
        points: list[Point] = []
        pools = 0
        for counter, at_ns, gpu_reading in inputs:
            delta = self.tracker.delta(counter, at_ns)
            if delta is None or activity.interval_s is None:
                continue
            interval_s, driver_s, holders = activity.interval_s, activity.driver_s, activity.holders
            unexplained = SYSTEM_JOB
            if gpu_reading is not None:
                if gpu_reading.interval_s is None:
                    continue  # first read of this GPU pool after a gap: baseline only
                interval_s = gpu_reading.interval_s
                driver_s, holders = gpu_drivers(gpu_reading, job_of_pid)
                unexplained = unexplained_job(gpu_reading)
            if delta.reset:
                self.reporter.problem(("reset", *counter.key), f"{counter.source} {counter.device}: counter reset",
                                      logging.INFO)
            if delta.suspect:
                self.reporter.problem(("suspect", *counter.key),
                                      f"{counter.source} {counter.device}: tick as long as the counter's wrap "
                                      "period; a second wrap would go unseen: shorten --interval")
            idle_w = self.idle.resolve(counter.component, counter.device,
                                       configured_idle_w(self.cfg, counter.component, counter.device),
                                       counter.idle_power_w, now_ns).power_w
            self.idle.observe(counter.component, counter.device, delta.energy_j / interval_s, activity_fraction(
                counter.component, activity.busy_s, activity.capacity_s, interval_s=interval_s,
                gpu_processes=None if gpu_reading is None else len(gpu_reading.processes),
                gpu_driver="" if gpu_reading is None else gpu_reading.driver,
                gpu_sm_busy_s=0.0 if gpu_reading is None else sm_busy_total(gpu_reading)))
            pool = Pool(counter.component, counter.device, counter.source, delta.energy_j,
                        interval_s, idle_w, policy_for(self.cfg, counter.component))
            points.extend(self._pool_points(pool, driver_s, holders, now_ns, unexplained))
            pools += 1
        self.primed = True
        duration_s = time.monotonic() - started
        if activity.interval_s is not None:
            points.append(self._agent_point(now_ns, duration_s))
            self.idle.maybe_save()
        return TickResult(points, pools, duration_s)

    def _pool_points(self, pool: Pool, driver_s: Mapping[JobKey, float], holders: Mapping[JobKey, float] | None,
                     now_ns: int, unexplained: JobKey = SYSTEM_JOB) -> list[Point]:
        charges = attribute(pool, driver_s, holders, unexplained)
        node_tags = {"host": self.host, "component": pool.component, "device": pool.device, "source": pool.source}
        node_fields = {"energy_j": pool.energy_j, "power_w": pool.energy_j / pool.interval_s,
                       "interval_s": pool.interval_s}
        if pool.idle_power_w is not None:
            node_fields["idle_w"] = pool.idle_power_w
        points = [Point(WL_NODE, node_tags, node_fields, now_ns)]
        for job, charge in sorted(charges.items()):
            points.append(Point(WL_JOB, job_tags(self.host, job, pool), {
                "energy_j": charge.energy_j, "dynamic_j": charge.dynamic_j,
                "static_j": charge.static_j, "driver_s": charge.driver_s}, now_ns))
        return points

    def _agent_point(self, now_ns: int, tick_s: float) -> Point:
        cpu_s = self._own_cpu_s()
        fields: dict[str, float] = {
            "tick_s": tick_s,
            "cpu_s": cpu_s - self._last_cpu_s,
            "rss_bytes": float(self._me.memory_info().rss),
        }
        self._last_cpu_s = cpu_s
        counts = self.ledger.spool_counts()
        fields.update({k: float(counts[k]) for k in ("spooled", "delivered", "dropped")})
        errors = 0
        if self.deliverer is not None:
            errors = int(self.deliverer.stats().get("write_errors", 0))
        fields["write_errors"] = float(errors)
        return Point(WL_AGENT, {"host": self.host}, fields, now_ns)

    def commit(self, result: TickResult) -> None:
        self.ledger.append(result.points)
        if self.carbon_sync is not None:
            self.carbon_sync.maybe_sync()  # in its own thread: a slow API never delays a tick
        if self.out is not None and result.points:
            self.out.write("".join(p.to_line() + "\n" for p in result.points))
            self.out.flush()
        if self.deliverer is not None:
            self.deliverer.step()
        if self.on_tick is not None:
            self.on_tick(result)

    # -- the service -----------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

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
        if self.deliverer is not None:
            self.deliverer.flush(deadline_s=min(10.0, max(1.0, interval_s)))
        self.idle.save()
        return made


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

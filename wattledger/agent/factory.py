"""Assembling an agent: which sources this host has, which sinks the config names, what runs beside the loop.

``build_agent`` is the one place an ``Agent`` is put together, for the
service (``wattledger agent``), for ``wattledger run`` (a temporary ledger:
no remote sink, no carbon sync) and for tests (which pass their own sources
and clock).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from wattledger.accounting.idle import IdleBaselines
from wattledger.accounting.resume import CounterStore, read_boot_id
from wattledger.accounting.tags import TagGuard
from wattledger.agent.embodied import EmbodiedCharger
from wattledger.agent.loop import Agent, EnergyReader, GpuReader, ProcReader, Sources, TickResult
from wattledger.agent.restart import restore
from wattledger.agent.sinks.base import Sink
from wattledger.agent.sinks.stdout import StdoutSink
from wattledger.carbon.embodied import UnknownArchetype, host_footprint
from wattledger.collectors.estimate import EstimateCollector
from wattledger.collectors.inventory import read_inventory
from wattledger.collectors.nvml import ABSENT, NO_GPU_HERE, TRANSIENT, NvmlCollector
from wattledger.collectors.procs import ProcCollector
from wattledger.collectors.rapl import RaplCollector
from wattledger.config import Config, ConfigError, Estimate, Gpus, Layout, how_to_set
from wattledger.model.embodied import HostFootprint
from wattledger.model.readings import ProbeResult, SourceState
from wattledger.store.compact import Compactor, Retention
from wattledger.store.jobinfo import JobInfoStore
from wattledger.store.exporter import RollupExporter
from wattledger.store.ledger import Ledger
from wattledger.util.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from collections.abc import Callable

    from wattledger.agent.delivery import Deliverer

log = logging.getLogger("wattledger.loop")


def choose_energy_collectors(cfg: Config) -> tuple[list[EnergyReader], list[ProbeResult]]:
    """RAPL when it can be read; the model estimate when not (or when configured)."""
    probes: list[ProbeResult] = []
    collectors: list[EnergyReader] = []
    rapl = RaplCollector(cfg.agent.sysfs_root)
    rapl_probe = rapl.probe()
    probes.append(rapl_probe)
    if rapl_probe.ok and cfg.agent.estimate is not Estimate.ALWAYS:
        collectors.append(rapl)
    if cfg.agent.estimate is Estimate.ALWAYS or (cfg.agent.estimate is Estimate.AUTO and not rapl_probe.ok):
        est = EstimateCollector(
            cfg.agent.procfs_root,
            cfg.estimate.cpu_idle_w_per_vcpu,
            cfg.estimate.cpu_max_w_per_vcpu,
            cfg.estimate.dram_w_per_gib,
        )
        probes.append(est.probe())
        collectors.append(est)
    return collectors, probes


def choose_gpu_collector(cfg: Config, nvml: Any = None, config_file: Path | None = None,
                         ) -> tuple[NvmlCollector | None, list[ProbeResult]]:
    """NVML when [agent] gpus = "auto" and it can read a GPU; rows: the probe, then one per GPU.

    A failure that may clear while the agent runs (the NVIDIA module not loaded
    yet at boot, an NVML error) keeps the collector: it probes again every
    ``reprobe_every`` reads and starts measuring when the GPUs appear. No
    library or no GPU at all means no collector. Where there may be no GPU at
    all, the fix says how to turn the probe off the way this command was
    configured (``config_file``: the file in use, None: the environment).
    """
    if cfg.agent.gpus is Gpus.NEVER:
        return None, []
    gpu = NvmlCollector(nvml)
    probe = gpu.probe()
    if probe.problem in NO_GPU_HERE:
        off = how_to_set("agent", "gpus", '"never"', config_file)
        probe = dataclasses.replace(probe, fix=f"{probe.fix}; on a host without NVIDIA GPUs {off}")
    rows = [probe, *gpu.device_probes()]
    if not probe.ok and probe.problem not in TRANSIENT:
        gpu.close()
        return None, rows
    return gpu, rows


def proc_collector(cfg: Config) -> ProcCollector:
    return ProcCollector(
        procfs_root=Path(cfg.agent.procfs_root),
        tag_vars=tuple(cfg.jobs.tag_vars),
        max_tag_chars=cfg.jobs.max_tag_chars,
        cgroup_root=Path(cfg.agent.cgroup_root),
        use_cgroups=cfg.jobs.use_cgroups,
        gpu_vars=tuple(cfg.slurm.gpu_vars),
    )


def host_sources(cfg: Config, config_file: Path | None = None) -> tuple[Sources, list[ProbeResult]]:
    """The sources this host offers, and the probes of those that are missing (to report once)."""
    energy, probes = choose_energy_collectors(cfg)
    gpu, gpu_rows = choose_gpu_collector(cfg, config_file=config_file)
    return Sources(energy, proc_collector(cfg), gpu), [p for p in probes + gpu_rows[:1] if not p.ok]


def absent(p: ProbeResult) -> bool:
    """A source this machine does not have (no RAPL zones; no NVIDIA library or GPU): normal, not a fault."""
    return p.state is SourceState.MISSING and (p.source == "rapl" or p.problem in ABSENT)


def build_agent(
    cfg: Config,
    ledger: Ledger,
    *,
    energy: list[EnergyReader] | None = None,
    procs: ProcReader | None = None,
    gpu: GpuReader | None = None,
    clock: Clock = SYSTEM_CLOCK,
    host: str = "",
    out: TextIO | None = None,
    deliverer: Deliverer | None = None,
    carbon_sync: bool = True,
    on_tick: Callable[[TickResult], None] | None = None,
    config_file: Path | None = None,
    absent_level: int = logging.INFO,
    bridge: bool = True,
    exporter: bool = False,
    rollups: bool | None = None,
) -> Agent:
    """An Agent for ``cfg``; sources not given are found on this host (missing ones reported once).

    ``out``: a stream for the stdout sink (every tick's points as line protocol).
    ``carbon_sync``: run ``[carbon] sync_interval_s`` beside the loop (off for
    ``wattledger run``, whose ledger is temporary).
    ``config_file``: the config file in use (None: defaults and environment), for the fixes' wording.
    ``absent_level``: the level of a source this machine does not have (``absent``); ``run`` passes
    DEBUG (its figures say ESTIMATE). Sources that are there but cannot be read are warnings.
    ``bridge``: commit the counters' readings with each tick and charge a restart's gap to
    ``_unobserved`` (accounting/resume.py); off where the ledger is temporary.
    ``exporter``: make the Prometheus endpoint when ``[prometheus] listen`` is set (the service;
    the caller starts it: ``agent.exporter.start()``).
    ``rollups``: spool the ledger's minute and hour sums for a fleet's tiered InfluxDB
    (None: when there is a deliverer and [influx] layout is "tiered").
    """
    missing: list[ProbeResult] = []
    if energy is None:
        found, missing = host_sources(cfg, config_file)
        energy, gpu = found.energy, gpu or found.gpu
        procs = procs or found.procs
    sources = Sources(energy, procs or proc_collector(cfg), gpu)
    a = cfg.attribution  # P_idle: configured > model > learned > none (accounting/idle.py)
    agent = Agent(
        cfg, ledger, sources, IdleBaselines.load(ledger.path.parent, a.idle_percentile, a.learn_idle),
        host or cfg.agent.host or socket.gethostname(), clock,
        local_sinks=[StdoutSink(out)] if out is not None else [], deliverer=deliverer,
        carbon_sync=_carbon_sync(cfg, ledger, clock) if carbon_sync else None, on_tick=on_tick,
        compactor=Compactor(ledger, retention(cfg)),
        tags=TagGuard.load(ledger.path.parent, cfg.jobs.max_tags_per_user_day),
        counters=CounterStore(read_boot_id(cfg.agent.procfs_root)) if bridge else None,
        jobinfo=JobInfoStore(ledger.path),
    )
    if agent.counters is not None:
        restore(agent.counters, ledger, agent.cpu_pools, agent.gpu_pools, energy)
    if cfg.embodied.enabled:
        _charge_embodied(agent, cfg, gpu, absent_level)
    tiered = deliverer is not None and cfg.influx.layout is Layout.TIERED
    _attach_outputs(agent, cfg, ledger, exporter, tiered if rollups is None else rollups)
    _report_missing(agent, missing, bool(energy), absent_level)
    return agent


def _attach_outputs(agent: Agent, cfg: Config, ledger: Ledger, prometheus: bool, rollups: bool) -> None:
    """The Prometheus endpoint ([prometheus] listen) and the rollups' export (a fleet's tiered InfluxDB)."""
    if prometheus and cfg.prometheus.listen:
        from wattledger.agent.exporter import Exporter

        agent.exporter = Exporter(cfg, ledger, agent.host)
    if rollups:
        agent.rollups = RollupExporter(ledger)


def _report_missing(agent: Agent, missing: list[ProbeResult], measuring: bool, absent_level: int) -> None:
    for p in missing:
        agent.reporter.problem(("probe", p.source), f"{p.source}: {p.state.value}: {p.detail}. {p.fix}",
                               absent_level if absent(p) else logging.WARNING)
    if not measuring:
        agent.reporter.problem(("no-energy",), "no energy source: nothing will be measured (see `wattledger doctor`)",
                               logging.ERROR)


def _charge_embodied(agent: Agent, cfg: Config, gpu: GpuReader | None, level: int) -> None:
    footprint, problems = host_embodied(cfg, gpu)
    agent.embodied = EmbodiedCharger(footprint, agent.host)
    for problem in problems:
        agent.reporter.problem(("inventory", problem), f"embodied: {problem}; that part is left out", level)


def host_embodied(cfg: Config, gpu: GpuReader | None) -> tuple[HostFootprint, tuple[str, ...]]:
    """This host's embodied footprint ([embodied]) from what it has, and what could not be read.

    Raises ConfigError for an archetype the table does not know.
    """
    info = getattr(gpu, "gpu_info", None)  # NVML names the GPUs; a scripted reader may not
    gpus = info() if callable(info) else ()
    inv = read_inventory(Path(cfg.agent.procfs_root), Path(cfg.agent.sysfs_root), tuple(gpus))
    try:
        return host_footprint(cfg.embodied, inv), inv.problems
    except UnknownArchetype as e:
        raise ConfigError(str(e)) from None


def retention(cfg: Config) -> Retention:
    """[ledger] retention in the compactor's terms (seconds)."""
    day_s = 86400.0
    return Retention(cfg.ledger.raw_days * day_s, cfg.ledger.minutes_days * day_s, cfg.ledger.hours_days * day_s)


def _carbon_sync(cfg: Config, ledger: Ledger, clock: Clock) -> Any:
    if cfg.carbon.sync_interval_s <= 0:
        return None
    from wattledger.carbon.sync import PeriodicSync

    return PeriodicSync(cfg, ledger, clock=clock.wall_ns, background=True)


def make_deliverer(cfg: Config, ledger: Ledger, sink: Sink) -> Deliverer:
    """Delivery of the ledger's spool to a remote sink; each tick spends at most a tenth of the
    interval (<= 1 s) sending, so an outage's backlog drains over ticks."""
    from wattledger.agent.delivery import Deliverer

    return Deliverer(ledger, sink, batch_points=cfg.sink.batch_points,
                     step_budget_s=min(1.0, 0.1 * cfg.agent.interval_s))

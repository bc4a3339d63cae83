"""``wattledger doctor``'s findings: what can be measured here, what cannot, why, and what to do.

Each check returns ``ProbeResult`` rows, in the order the command prints
them: energy sources (RAPL or the model), processes, cgroups, the sink,
GPUs, then each pool's idle baseline and where it comes from, the users over
the tag cap, the host's embodied footprint (each device's kgCO2e, its
range and its source), then the local ledger (retention, size, how far back
it goes, its expected size, losses, damaged files moved aside, the agent
holding it). Each thing is
said once: the collectors' own first-probe logs are DEBUG, the rows are the
report. A fix that is a setting is worded for the way the command was
configured (``config_file``: the file in use; None: the environment).
"""

from __future__ import annotations

from pathlib import Path

from wattledger.accounting.idle import LOW_ACTIVITY_FRACTION, MIN_LEARN_TICKS, BaselineSource, IdleBaselines
from wattledger.accounting.tags import read_usage
from wattledger.agent.factory import choose_energy_collectors, choose_gpu_collector, proc_collector
from wattledger.carbon.embodied import UnknownArchetype, host_footprint
from wattledger.collectors.inventory import read_inventory
from wattledger.collectors.procs import cgroup_v2_root
from wattledger.config import Config, ConfigError, SinkKind, configured_idle_w, how_to_set
from wattledger.model.embodied import G_PER_KG, SECONDS_PER_YEAR, Footprint, HostFootprint
from wattledger.model.inventory import GpuInfo
from wattledger.model.readings import ProbeResult, SourceState
from wattledger.store.errors import StorageError
from wattledger.store.ledger import LEDGER_FILE, Ledger
from wattledger.store.lock import holder
from wattledger.store.sizing import steady_bytes
from wattledger.util.clock import SYSTEM_CLOCK
from wattledger.util.timeutil import iso


def doctor_rows(cfg: Config, config_file: Path | None = None) -> list[ProbeResult]:
    gpus, gpu_info = gpu_rows_and_info(cfg, config_file)
    return [*energy_rows(cfg, config_file), proc_collector(cfg).probe(), cgroup_row(cfg), *sink_rows(cfg),
            *gpus, *idle_rows(cfg, config_file), *tag_rows(cfg), *embodied_rows(cfg, gpu_info, config_file),
            *ledger_rows(cfg)]


def measuring(rows: list[ProbeResult]) -> bool:
    """True when some energy source works (doctor's exit status)."""
    return any(r.ok for r in rows if r.source in ("rapl", "model", "nvml"))


def energy_rows(cfg: Config, config_file: Path | None = None) -> list[ProbeResult]:
    collectors, probes = choose_energy_collectors(cfg)
    if collectors:
        return probes
    return [*probes, ProbeResult("energy", SourceState.MISSING, "no energy source can be read",
                                 "see the RAPL line above, or " + how_to_set("agent", "estimate", '"auto"',
                                                                             config_file))]


def cgroup_row(cfg: Config) -> ProbeResult:
    cgroup = cgroup_v2_root(Path(cfg.agent.cgroup_root))
    if cgroup is not None:
        return ProbeResult("cgroup", SourceState.FOUND,
                           f"cgroup v2 at {cgroup}: job cgroups (Slurm, containers) give their jobs' CPU time")
    return ProbeResult("cgroup", SourceState.MISSING, f"no cgroup v2 hierarchy at {cfg.agent.cgroup_root}",
                       "tags still come from the environment and cgroup paths; CPU of children that "
                       "no parent reaps counts as _system")


def sink_rows(cfg: Config) -> list[ProbeResult]:
    """InfluxDB reachable, credentials accepted, database/bucket there (only when a sink is configured)."""
    if cfg.sink.kind is SinkKind.NONE and not cfg.sink.url:
        return []
    from wattledger.agent.sinks import check_connection
    from wattledger.agent.sinks.routing import routing

    try:
        route = routing(cfg)
    except ConfigError as e:
        return [ProbeResult("sink", SourceState.ERROR, str(e), "fix the [sink] and [influx] sections")]
    return [check_connection(cfg.sink, route)]


def gpu_rows_and_info(cfg: Config, config_file: Path | None = None) -> tuple[list[ProbeResult], tuple[GpuInfo, ...]]:
    """The NVML probe, then one row per GPU (docs/gpu.md explains each state), and each GPU's NVML name and
    memory (for the embodied footprint)."""
    gpu, rows = choose_gpu_collector(cfg, config_file=config_file)
    info: tuple[GpuInfo, ...] = ()
    if gpu is not None:
        info = gpu.gpu_info()
        gpu.close()
    return rows, info


def embodied_rows(cfg: Config, gpus: tuple[GpuInfo, ...] = (),
                  config_file: Path | None = None) -> list[ProbeResult]:
    """The host's embodied footprint: the total and its accrual rate, then each device's figure and source."""
    e = cfg.embodied
    if not e.enabled:
        return [ProbeResult("embodied", SourceState.FOUND, "embodied carbon is not charged ([embodied] enabled = "
                                                           "false)")]
    inv = read_inventory(Path(cfg.agent.procfs_root), Path(cfg.agent.sysfs_root), gpus)
    try:
        fp = host_footprint(e, inv)
    except UnknownArchetype as err:
        return [ProbeResult("embodied", SourceState.ERROR, str(err),
                            how_to_set("embodied", "archetype", '"NAME"', config_file) + " with a known name, "
                            "or leave it empty to use the detected hardware")]
    detail = "\n".join([footprint_summary(fp), *(device_line(fp, d) for d in fp.devices),
                        *(f"cannot read: {p}" for p in inv.problems)])
    if inv.problems:  # one row per source: the devices are its lines
        return [ProbeResult("embodied", SourceState.MISSING, detail, "the parts that could not be read are left "
                            "out; " + how_to_set("embodied", "device_kg", '{"storage" = KG}', config_file)
                            + " to give one")]
    return [ProbeResult("embodied", SourceState.FOUND, detail)]


def footprint_summary(fp: HostFootprint) -> str:
    lo = sum(d.kg_min if d.kg_min is not None else d.kg for d in fp.devices)
    hi = sum(d.kg_max if d.kg_max is not None else d.kg for d in fp.devices)
    per_h = fp.kg * G_PER_KG / (fp.lifetime_s / 3600)
    gpus = sum(1 for d in fp.devices if d.component == "gpu")
    per_gpu = f", {per_h / gpus:.1f} gCO2e per GPU-hour" if gpus else ""
    end = "end of life unknown ([embodied] in_service not set)" if fp.end_ns is None else \
        f"end of life {iso(fp.end_ns)[:10]}, then {fp.after_end.value}"
    return (f"host {fp.kg:,.0f} kgCO2e (Boavizta's range {lo:,.0f}-{hi:,.0f}) from {fp.basis}, over "
            f"{fp.lifetime_s / SECONDS_PER_YEAR:g} years: {per_h:.1f} gCO2e/h{per_gpu}; unused capacity: "
            f"{fp.unused.value}; {end}")


def device_line(fp: HostFootprint, d: Footprint) -> str:
    span = f" ({d.kg_min:,.4g}-{d.kg_max:,.4g})" if d.kg_min is not None and d.kg_max is not None else ""
    rate = d.kg * G_PER_KG / (fp.lifetime_s / 3600)
    return f"  {d.component}:{d.device} {d.kg:,.4g} kgCO2e{span}, {rate:.2f} g/h: {d.what}; source: {d.source}"


def idle_rows(cfg: Config, config_file: Path | None = None) -> list[ProbeResult]:
    """Each pool's idle baseline and where it comes from."""
    collectors, _ = choose_energy_collectors(cfg)
    state = IdleBaselines.load(cfg.state_dir, cfg.attribution.idle_percentile, cfg.attribution.learn_idle)
    rows = []
    for c in collectors:
        try:
            sample = c.read(SYSTEM_CLOCK.mono_ns())
        except OSError:
            continue  # the collector's own row says why
        for counter in sample.counters:
            b = state.resolve(counter.component, counter.device,
                              configured_idle_w(cfg, counter.component, counter.device), counter.idle_power_w)
            where = f"{counter.component}:{counter.device}"
            detail = f"{where} idle power {b.describe()}"
            if b.source is not BaselineSource.NONE:
                rows.append(ProbeResult("idle", SourceState.FOUND, detail))
                continue
            setting = how_to_set("attribution", "idle_power_w", f'{{"{where}" = WATTS}}', config_file)
            fix = (f"let the agent see {MIN_LEARN_TICKS} ticks with busy CPU < {LOW_ACTIVITY_FRACTION:.0%}, "
                   f"or {setting}")
            if not cfg.attribution.learn_idle:
                fix = f"[attribution] learn_idle is off: {setting}"
            rows.append(ProbeResult("idle", SourceState.MISSING, detail, fix))
    return rows


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _when(t_ns: int | None) -> str:
    return "none" if t_ns is None else iso(t_ns)


def ledger_rows(cfg: Config) -> list[ProbeResult]:
    """The local ledger: its retention, size, oldest tick and rollups, expected size; what went wrong."""
    path, led = cfg.state_dir / LEDGER_FILE, cfg.ledger
    keep = (f"keeps raw ticks {led.raw_days:g} d, minutes {led.minutes_days:g} d, hours and days "
            f"{led.hours_days:g} d ([ledger])")
    pid = holder(cfg.state_dir)
    rows = [ProbeResult("agent", SourceState.FOUND, f"agent PID {pid} holds {cfg.state_dir}" if pid else
                        f"no agent holds {cfg.state_dir} now")]
    if not path.exists():
        return rows + [ProbeResult("ledger", SourceState.MISSING, f"no ledger yet at {path}; {keep}",
                                   "start the agent (it creates the ledger), or pass --state-dir DIR")]
    try:
        ledger = Ledger(path, readonly=True)
        try:
            st = ledger.stats()
        finally:
            ledger.close()
    except StorageError as e:
        return rows + [ProbeResult("ledger", SourceState.ERROR, str(e))]
    o = st.oldest_ns
    rows += [ProbeResult("ledger", SourceState.FOUND, f"{path}: {_size(st.size_bytes)}; {keep}"),
             ProbeResult("ledger", SourceState.FOUND, f"oldest raw tick {_when(o.get('raw'))}; oldest rollups: "
                         f"minute {_when(o.get('1m'))}, hour {_when(o.get('1h'))}, day {_when(o.get('1d'))}")]
    if st.tick_s:
        steady = steady_bytes(st.rows_per_tick, st.tick_s, st.series, led.raw_days, led.minutes_days, led.hours_days)
        rows.append(ProbeResult("ledger", SourceState.FOUND, f"expected size at steady state ~{_size(steady)} at "
                                f"this host's rate ({st.rows_per_tick:.0f} rows a tick every {st.tick_s:.3g} s, "
                                f"{st.series} series)"))
    if st.lost_points:
        rows.append(ProbeResult("ledger", SourceState.ERROR, f"{st.lost_points} point(s) ({st.lost_ticks} ticks) "
                                "were measured but could not be written (disk full or I/O errors); they are lost",
                                "keep free space on the state directory's file system (the agent's log says when "
                                "it happened)"))
    for moved in sorted(p for p in cfg.state_dir.glob(f"{LEDGER_FILE}.corrupt-*") if not p.name.endswith("-wal")):
        rows.append(ProbeResult("ledger", SourceState.ERROR, f"a damaged ledger was moved aside: {moved}",
                                f"recover what it held: sqlite3 {moved} .recover | sqlite3 recovered.sqlite3; "
                                "then delete it"))
    return rows
def tag_rows(cfg: Config) -> list[ProbeResult]:
    """Users over today's cap on distinct tag sets, from the agent's saved budget (none saved today: no row)."""
    cap = cfg.jobs.max_tags_per_user_day
    users, over = read_usage(cfg.state_dir, cap, SYSTEM_CLOCK.wall_ns())
    if not users:
        return []
    if not over:
        return [ProbeResult("tags", SourceState.FOUND, f"{users} user(s) tagged jobs today (UTC), none over the "
                                                       f"cap of {cap} tag sets ([jobs] max_tags_per_user_day)")]
    return [ProbeResult(
        "tags", SourceState.ERROR,
        f"user {o.user} reached today's cap of {o.cap} distinct tag sets (job, project, phase); at least "
        f"{o.folded} more are charged to {o.user}'s _overflow job until midnight UTC",
        f"if {o.user} runs that many jobs on purpose, raise [jobs] max_tags_per_user_day (each tag set is "
        "InfluxDB series: docs/attribution.md, \"Cardinality\"); else ask them to reuse job tags")
        for o in over]

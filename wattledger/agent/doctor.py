"""``wattledger doctor``'s findings: what can be measured here, what cannot, why, and what to do.

Each check returns ``ProbeResult`` rows, in the order the command prints
them: energy sources (RAPL or the model), processes, cgroups, the sink,
GPUs, then each pool's idle baseline and where it comes from. Each thing is
said once: the collectors' own first-probe logs are DEBUG, the rows are the
report. A fix that is a setting is worded for the way the command was
configured (``config_file``: the file in use; None: the environment).
"""

from __future__ import annotations

from pathlib import Path

from wattledger.accounting.idle import LOW_ACTIVITY_FRACTION, MIN_LEARN_TICKS, BaselineSource, IdleBaselines
from wattledger.accounting.tags import read_usage
from wattledger.agent.factory import choose_energy_collectors, choose_gpu_collector, proc_collector
from wattledger.collectors.procs import cgroup_v2_root
from wattledger.config import Config, SinkKind, configured_idle_w, how_to_set
from wattledger.model.readings import ProbeResult, SourceState
from wattledger.util.clock import SYSTEM_CLOCK


def doctor_rows(cfg: Config, config_file: Path | None = None) -> list[ProbeResult]:
    return [*energy_rows(cfg, config_file), proc_collector(cfg).probe(), cgroup_row(cfg), *sink_rows(cfg),
            *gpu_rows(cfg, config_file), *idle_rows(cfg, config_file), *tag_rows(cfg)]


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

    return [check_connection(cfg.sink)]


def gpu_rows(cfg: Config, config_file: Path | None = None) -> list[ProbeResult]:
    """The NVML probe, then one row per GPU (docs/gpu.md explains each state)."""
    gpu, rows = choose_gpu_collector(cfg, config_file=config_file)
    if gpu is not None:
        gpu.close()
    return rows


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

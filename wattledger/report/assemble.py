"""What the two report sources share: ``Options``, energy cells from summed rows, and ``assemble``.

The ledger (ledger.py) and InfluxDB (influxql.py) each sum ``wl_job`` energy
per hour and tag set and read the raw ``wl_carbon`` and ``wl_pue`` points of
the window's hours; ``assemble`` turns those into the intensity and PUE
series and calls the pure ``build`` (model.py). So the InfluxDB report of the
same data equals the ledger's (tested against a real influxd).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from wattledger.carbon import fallback_intensity
from wattledger.carbon.pue import PueSeries, pue_series
from wattledger.config import Config
from wattledger.model.jobs import project_owner
from wattledger.model.units import HOUR_NS
from wattledger.report.model import (EmbodiedCell, EnergyCell, IntensitySeries, Report, ReportError, build,
                                     intensity_series)
from wattledger.report.runs import not_in, run_cells, run_embodied_cells
from wattledger.store.runs import Runs
from wattledger.util.timeutil import hour_floor

CELL_TAGS = ("job", "user", "project", "phase", "host", "source", "component")
EMBODIED_TAGS = ("job", "user", "project", "phase", "host", "component")  # wl_embodied (no source: not energy)
Cell = TypeVar("Cell", EnergyCell, EmbodiedCell)


@dataclass(frozen=True)
class Options:
    by: str = "job"
    zone: str | None = None  # default [carbon] zone
    pue: float | None = None  # constant override; default [pue] value / wl_pue
    host: str | None = None
    project: str | None = None  # keep only this project
    job: str | None = None  # keep only this job tag (of every user, unless ``user`` is given too)
    user: str | None = None  # keep only this user's energy
    account: str | None = None  # keep only Slurm jobs of this account (ledger only: store.jobinfo)
    partition: str | None = None  # keep only Slurm jobs of this partition (ledger only)
    per_host: bool = False  # also each row's part on each host (--per-host)

    @property
    def scheduler_filter(self) -> bool:
        """True when rows are kept by what Slurm said about their job (account, partition)."""
        return self.account is not None or self.partition is not None

    def equal(self) -> dict[str, str]:
        """The tags a row must have to be kept: host, project, job, user (those that were given)."""
        wanted = {"host": self.host or None, "project": self.project, "job": self.job, "user": self.user}
        return {tag: value for tag, value in wanted.items() if value is not None}


def energy_cell(bucket_ns: int, tags: Mapping[str, Any], energy_j: float) -> EnergyCell:
    """An EnergyCell from one summed row (a missing or NULL tag is "")."""
    text = {t: str(tags.get(t) or "") for t in CELL_TAGS}
    return EnergyCell(bucket_ns, text["job"], text["user"], text["project"], text["phase"], text["host"],
                      text["source"], energy_j, text["component"])


def energy_cells(sums: Iterable[tuple[int, tuple[str, ...], float]]) -> list[EnergyCell]:
    """EnergyCells from (bucket, CELL_TAGS values, energy_j) sums whose tags are already text (the ledger's):
    no dict per cell, which counts when a year at hourly intensity is a million cells."""
    return [EnergyCell(bucket, job, user, project, phase, host, source, energy_j, component)
            for bucket, (job, user, project, phase, host, source, component), energy_j in sums]


def embodied_cell(bucket_ns: int, tags: Mapping[str, Any], embodied_g: float) -> EmbodiedCell:
    """An EmbodiedCell from one summed wl_embodied row (a missing or NULL tag is "")."""
    text = {t: str(tags.get(t) or "") for t in EMBODIED_TAGS}
    return EmbodiedCell(bucket_ns, text["job"], text["user"], text["project"], text["phase"], text["host"],
                        embodied_g, text["component"])


def measured_seconds(rows: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Seconds of each hour that the agent measured, from ``wl_node`` ``interval_s`` summed per hour and pool.

    The best-covered pool of an hour stands for the host (a pool that failed a read covers less),
    at most the whole hour. The plot draws an hour with less than that as the part it is.
    """
    out: dict[int, float] = {}
    for r in rows:
        if r.get("interval_s") is not None:
            hour = int(r["time_ns"])
            out[hour] = min(float(HOUR_NS // 10**9), max(out.get(hour, 0.0), float(r["interval_s"])))
    return out


def shared_projects(cells: list[Cell], shared: Mapping[str, list[str]]) -> list[Cell]:
    """The cells, those of a project the admin shares with their user marked with its label: only
    they are grouped with the other users' energy of that project (``EnergyCell.owner``)."""
    if not shared:
        return cells
    out = []
    for c in cells:
        owner = project_owner(c.project, c.user, shared)
        out.append(dataclasses.replace(c, shared=owner) if c.project and owner != c.user else c)
    return out


def hour_window(since_ns: int, until_ns: int) -> tuple[int, int]:
    """The whole hours that the window's buckets span: carbon and PUE are read for all of them."""
    end = hour_floor(until_ns - 1) + HOUR_NS if until_ns > 0 else HOUR_NS
    return hour_floor(since_ns), end


def assemble(
    cfg: Config,
    opts: Options,
    cells: list[EnergyCell],
    carbon_rows: Iterable[Mapping[str, Any]],
    pue_rows: Iterable[Mapping[str, Any]],
    since_ns: int,
    until_ns: int,
    origin: str,
    runs: Runs | None = None,
    embodied: list[EmbodiedCell] | None = None,
    *,
    hours: Iterable[int] | None = None,
    measured: set[tuple[str, str, int]] | None = None,
) -> Report:
    """The report of these cells, with CI and PUE from the rows (or the config's and ``opts``' figures).

    ``runs``: `wattledger run` records to add where the source has no energy of theirs (report/runs.py).
    ``embodied``: the window's wl_embodied grams per hour and tag set.
    ``hours``: the hours with energy, when a cell may stand for several hours of one intensity and PUE
    (the ledger's long reads); ``measured``: then the (job, user, hour) the source has energy for,
    which run records must not repeat (None: the cells' own hours say it).
    """
    wanted = opts.equal()
    embodied = embodied or []
    if wanted:
        cells = [c for c in cells if all(getattr(c, tag) == value for tag, value in wanted.items())]
        embodied = [c for c in embodied if all(getattr(c, tag) == value for tag, value in wanted.items())]
    if runs is not None:
        embodied = embodied + not_in(run_embodied_cells(runs.records, since_ns, until_ns, wanted), cells, measured)
        cells = cells + not_in(run_cells(runs.records, since_ns, until_ns, wanted), cells, measured)
    cells = shared_projects(cells, cfg.jobs.shared_projects)
    embodied = shared_projects(embodied, cfg.jobs.shared_projects)
    intensity, pue = factors(cfg, opts, carbon_rows, pue_rows)
    report = build(cells, intensity, pue, by=opts.by, since_ns=since_ns, until_ns=until_ns, origin=origin,
                   embodied=embodied, hours=hours, per_host=opts.per_host)
    if runs is not None:
        report.runs_origin = str(runs.path)
    return report


def factors(cfg: Config, opts: Options, carbon_rows: Iterable[Mapping[str, Any]],
            pue_rows: Iterable[Mapping[str, Any]]) -> tuple[IntensitySeries, PueSeries]:
    """The intensity and PUE per hour that apply: from the rows, the config, or ``opts``' overrides."""
    zone = (opts.zone or cfg.carbon.zone).upper()
    intensity = intensity_series(carbon_rows, zone, prefer_provider=cfg.carbon.provider,
                                 fallback_fn=lambda: fallback_intensity(cfg.carbon, zone),
                                 configured_static=cfg.carbon.provider == "static")
    if opts.pue is not None:
        if opts.pue < 1.0:
            raise ReportError(f"--pue must be >= 1.0 (facility energy >= IT energy), got {opts.pue}")
        return intensity, PueSeries({}, opts.pue, "--pue")
    return intensity, pue_series(pue_rows, site=cfg.pue.site, constant=cfg.pue.value,
                                 constant_source="[pue] value")


def from_runs(cfg: Config, opts: Options, runs: Runs, since_ns: int, until_ns: int) -> Report:
    """A report of `wattledger run` records alone (no ledger here: a laptop, a workstation)."""
    return assemble(cfg, opts, [], [], [], since_ns, until_ns, f"runs file {runs.path}", runs)

"""What the two report sources share: ``Options``, energy cells from summed rows, and ``assemble``.

The ledger (ledger.py) and InfluxDB (influxql.py) each sum ``wl_job`` energy
per hour and tag set and read the raw ``wl_carbon`` and ``wl_pue`` points of
the window's hours; ``assemble`` turns those into the intensity and PUE
series and calls the pure ``build`` (model.py). So the InfluxDB report of the
same data equals the ledger's (tested against a real influxd).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wattledger.carbon import fallback_intensity
from wattledger.carbon.pue import PueSeries, pue_series
from wattledger.config import Config
from wattledger.model.units import HOUR_NS
from wattledger.report.model import EnergyCell, IntensitySeries, Report, ReportError, build, intensity_series
from wattledger.util.timeutil import hour_floor

CELL_TAGS = ("job", "user", "project", "phase", "host", "source", "component")


@dataclass(frozen=True)
class Options:
    by: str = "job"
    zone: str | None = None  # default [carbon] zone
    pue: float | None = None  # constant override; default [pue] value / wl_pue
    host: str | None = None
    project: str | None = None  # keep only this project
    job: str | None = None  # keep only this job tag (of every user, unless ``user`` is given too)
    user: str | None = None  # keep only this user's energy

    def equal(self) -> dict[str, str]:
        """The tags a row must have to be kept: host, project, job, user (those that were given)."""
        wanted = {"host": self.host or None, "project": self.project, "job": self.job, "user": self.user}
        return {tag: value for tag, value in wanted.items() if value is not None}


def energy_cell(bucket_ns: int, tags: Mapping[str, Any], energy_j: float) -> EnergyCell:
    """An EnergyCell from one summed row (a missing or NULL tag is "")."""
    text = {t: str(tags.get(t) or "") for t in CELL_TAGS}
    return EnergyCell(bucket_ns, text["job"], text["user"], text["project"], text["phase"], text["host"],
                      text["source"], energy_j, text["component"])


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
    hours: Iterable[int] | None = None,
) -> Report:
    """The report of these cells, with CI and PUE from the rows (or the config's and ``opts``' figures).

    ``hours``: the hours with energy, when a cell may stand for several hours of one intensity and PUE.
    """
    wanted = opts.equal()
    if wanted:
        cells = [c for c in cells if all(getattr(c, tag) == value for tag, value in wanted.items())]
    intensity, pue = factors(cfg, opts, carbon_rows, pue_rows)
    return build(cells, intensity, pue, by=opts.by, since_ns=since_ns, until_ns=until_ns, origin=origin,
                 hours=hours)


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

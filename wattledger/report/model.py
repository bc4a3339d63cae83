"""The report's pure core: hourly energy cells x PUE_b x CI_b, grouped (``build``).

The arithmetic (DESIGN.md, "Carbon and PUE"), per hour bucket b (UTC hours;
a point belongs to the hour its timestamp falls in)::

    IT kWh        = sum of wl_job energy_j in b / 3.6e6
    facility kWh  = IT kWh x PUE_b
    gCO2e         = facility kWh x CI_b

summed over the buckets of the window. PUE_b comes from a ``PueSeries``
(carbon/pue.py). CI_b is the mean of the ``wl_carbon`` points in b for the
zone, taking for each (provider, time) the best kind (actual, then marginal,
then forecast: InfluxDB may keep both a forecast and the actual that replaced
it) and, when several providers cover the hour, the configured one (else the
first by name): ``intensity_series``. An hour with no point uses the static
figure (``[carbon] g_per_kwh`` or the table) and every output says so: the
``F`` mark and footnote in the table, ``intensity_source`` and
``fallback_kwh`` in CSV and JSON.

The report also splits the host's energy into tagged jobs and the reserved
ones (``_untagged``, ``_system``, ``_idle``, ``_agent``, ``_unobserved``,
``_overflow``), and flags energy that came from the model estimate
(``source=model``) rather than a counter.

A project, and a phase inside one, is keyed by its owner as a job is by its
user (``--by project`` and ``--by phase`` group by (name, owner)): the user
who charged it, or the shared label of a project the admin lets several
users use (``[jobs] shared_projects``; ``model.jobs.project_owner``). So a
user who sets another's project name gets a row of their own, never a share
of the other's.

No I/O here: the sources (ledger.py, influxql.py) reduce their rows to
``EnergyCell``s and raw carbon/PUE rows (assemble.py); render.py and plot.py
present the ``Report``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wattledger.carbon.hourly import intensity_by_hour
from wattledger.carbon.pue import PueSeries
from wattledger.carbon.static import StaticIntensity, UnknownZone
from wattledger.model.jobs import AGENT, IDLE, OVERFLOW, SYSTEM, UNOBSERVED, UNTAGGED
from wattledger.carbon.footprint import facility_kwh
from wattledger.model.units import J_PER_KWH
from wattledger.report.numfmt import num
from wattledger.store.jobinfo import JobRecord
from wattledger.util.timeutil import iso

GROUPINGS: dict[str, tuple[str, ...]] = {
    "job": ("job", "user"),  # a job is (user, tag): two users' same tag are two jobs
    "user": ("user",),
    "project": ("project", "owner"),  # a project is (owner, name): see the module docstring
    "phase": ("phase", "owner"),
}
CATEGORIES = ("tagged", "untagged", "system", "idle", "agent", "unobserved", "overflow")
ALWAYS_SHOWN = CATEGORIES[:5]  # unobserved and overflow appear when they hold energy
RESERVED_CATEGORY = {UNTAGGED: "untagged", SYSTEM: "system", IDLE: "idle", AGENT: "agent",
                     UNOBSERVED: "unobserved", OVERFLOW: "overflow"}
# Energy from these sources is not a hardware measurement; the report flags it.
ESTIMATED_SOURCES = {"model": "estimate", "fake": "fake hardware"}


class ReportError(RuntimeError):
    """A report cannot be made; the message says why and what to do."""


def category(job: str) -> str:
    return RESERVED_CATEGORY.get(job, "tagged")


# -- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyCell:
    """wl_job energy summed over one hour bucket for one tag set."""

    bucket_ns: int
    job: str
    user: str
    project: str
    phase: str
    host: str
    source: str
    energy_j: float
    component: str = ""  # cpu, dram, gpu, ...
    shared: str = ""  # the shared label when the admin lets this user use the project name (assemble)

    @property
    def owner(self) -> str:
        """Whose project (and phase) this energy is: "" without a project, else the shared label or the user."""
        return (self.shared or self.user) if self.project else ""
    record: str = ""  # "run": from a `wattledger run` record, not the service's ledger


@dataclass(frozen=True)
class EmbodiedCell:
    """wl_embodied grams summed over one hour bucket for one tag set (docs/embodied.md).

    Embodied carbon is already CO2e: no PUE and no grid intensity apply to it.
    """

    bucket_ns: int
    job: str
    user: str
    project: str
    phase: str
    host: str
    embodied_g: float
    component: str = ""  # gpu, or host (CPU sockets, DRAM, storage and chassis)
    shared: str = ""

    @property
    def owner(self) -> str:
        return (self.shared or self.user) if self.project else ""


@dataclass(frozen=True)
class HourIntensity:
    g_per_kwh: float
    provider: str  # "static" for the fallback
    fallback: bool


@dataclass
class IntensitySeries:
    """CI per hour from wl_carbon, with the static figure (resolved on first need) elsewhere."""

    zone: str
    by_hour: Mapping[int, tuple[float, str]]
    fallback_fn: Callable[[], StaticIntensity]
    configured_static: bool = False
    _fallback: StaticIntensity | None = None

    @property
    def fallback(self) -> StaticIntensity:
        if self._fallback is None:
            try:
                self._fallback = self.fallback_fn()
            except UnknownZone as e:
                raise ReportError(
                    f"some hours have no wl_carbon intensity for zone {self.zone} and there is no static "
                    f"figure for it: {e}. Run `wattledger carbon sync`, or set [carbon] g_per_kwh."
                ) from None
        return self._fallback

    def at(self, bucket_ns: int) -> HourIntensity:
        found = self.by_hour.get(bucket_ns)
        if found is not None:
            return HourIntensity(found[0], found[1], False)
        return HourIntensity(self.fallback.g_per_kwh, "static", True)


def intensity_series(
    rows: Iterable[Mapping[str, Any]],
    zone: str,
    *,
    prefer_provider: str,
    fallback_fn: Callable[[], StaticIntensity],
    configured_static: bool = False,
) -> IntensitySeries:
    """Reduce raw wl_carbon rows (time_ns, zone, provider, kind, g_per_kwh) to one CI per hour
    (``carbon.hourly``: the rule the agent's Prometheus gauge uses too)."""
    want = zone.upper()
    by_hour = intensity_by_hour(rows, want, prefer_provider)
    return IntensitySeries(want, by_hour, fallback_fn, configured_static)


# -- the result ----------------------------------------------------------------------------------


@dataclass
class Row:
    key: tuple[str, ...]
    it_j: float = 0.0
    facility_kwh: float = 0.0
    g_co2e: float = 0.0
    fallback_it_j: float = 0.0
    estimated_it_j: float = 0.0
    providers: set[str] = field(default_factory=set)
    estimate_sources: set[str] = field(default_factory=set)
    it_j_by_component: dict[str, float] = field(default_factory=dict)
    run_it_j: float = 0.0  # of it_j, from `wattledger run` records
    embodied_g: float = 0.0  # the hardware's embodied carbon charged to the row (wl_embodied)
    embodied_g_by_component: dict[str, float] = field(default_factory=dict)  # gpu, host
    hosts: dict[str, Row] = field(default_factory=dict)  # the same figures per host (filled by ``build``)

    @property
    def it_kwh(self) -> float:
        return self.it_j / J_PER_KWH

    @property
    def total_g(self) -> float:
        """Operational (energy x PUE x intensity) plus embodied CO2e."""
        return self.g_co2e + self.embodied_g

    def add_embodied(self, grams: float, component: str) -> None:
        self.embodied_g += grams
        name = component or "other"
        self.embodied_g_by_component[name] = self.embodied_g_by_component.get(name, 0.0) + grams

    @property
    def it_kwh_by_component(self) -> dict[str, float]:
        return {c: j / J_PER_KWH for c, j in sorted(self.it_j_by_component.items())}

    @property
    def fallback_kwh(self) -> float:
        return self.fallback_it_j / J_PER_KWH

    @property
    def estimated_kwh(self) -> float:
        return self.estimated_it_j / J_PER_KWH

    @property
    def g_per_kwh(self) -> float | None:
        """The energy-weighted mean intensity this row was charged at (facility kWh basis)."""
        return self.g_co2e / self.facility_kwh if self.facility_kwh > 0 else None

    def add(self, it_j: float, pue: float, ci: HourIntensity, source: str, component: str = "",
            record: str = "") -> None:
        kwh = facility_kwh(it_j, pue)
        if record:
            self.run_it_j += it_j
        self.it_j += it_j
        name = component or "other"
        self.it_j_by_component[name] = self.it_j_by_component.get(name, 0.0) + it_j
        self.facility_kwh += kwh
        self.g_co2e += kwh * ci.g_per_kwh
        self.providers.add(ci.provider)
        if ci.fallback:
            self.fallback_it_j += it_j
        if source in ESTIMATED_SOURCES:
            self.estimated_it_j += it_j
            self.estimate_sources.add(source)


@dataclass
class Report:
    since_ns: int
    until_ns: int
    by: str
    zone: str
    origin: str
    rows: list[Row]
    total: Row
    categories: dict[str, float]  # category -> IT joules
    hours: list[int]  # buckets with energy
    fallback_hours: list[int]
    fallback: StaticIntensity | None  # the figure used where wl_carbon had nothing
    configured_static: bool
    pue: str  # how PUE was obtained
    series: dict[tuple[str, ...], dict[int, Row]]  # per row key, per hour (for plots)
    intensity_by_hour: dict[int, HourIntensity]
    jobs: dict[tuple[str, ...], JobRecord] = field(default_factory=dict)  # by=job: Slurm's details per row key
    runs_origin: str = ""  # the runs file whose records are in the report, if any
    embodied_categories: dict[str, float] = field(default_factory=dict)  # category -> embodied grams
    # --by job from the ledger: each job's whole life from its summary (first and last seen, GPU-seconds
    # held, peak power per component, embodied carbon), whatever the window; JSON only.
    lifetimes: list[dict[str, Any]] = field(default_factory=list)
    extra_notes: list[str] = field(default_factory=list)  # what a source has to say about its figures
    per_host: bool = False  # show each row's hosts (render, to_dict)
    # False when cells stood for several hours of one intensity and PUE (the ledger's long reads): the
    # figures are exact, but there is no per-hour ``series`` to plot.
    per_hour: bool = True

    @property
    def has_embodied(self) -> bool:
        """The window holds embodied carbon (a ledger of an agent with [embodied] on)."""
        return bool(self.embodied_categories)

    @property
    def columns(self) -> tuple[str, ...]:
        return GROUPINGS[self.by]

    @property
    def components(self) -> list[str]:
        """The components (cpu, dram, gpu, ...) with energy in this report, in a stable order."""
        return sorted(self.total.it_j_by_component)

    def intensity_source(self, row: Row) -> str:
        measured = sorted(p for p in row.providers if p != "static")
        parts = [f"wl_carbon:{'+'.join(measured)}"] if measured else []
        if row.fallback_it_j > 0 and self.fallback is not None:
            label = "static" if self.configured_static else "static fallback"
            parts.append(f"{label} {self.fallback.zone} {self.fallback.g_per_kwh:g} g/kWh")
        return " + ".join(parts) or "none"

    def notes(self) -> list[str]:
        out = []
        if self.fallback_hours and self.fallback is not None:
            how = ("[carbon] provider is static" if self.configured_static
                   else f"no wl_carbon point for zone {self.zone} in {len(self.fallback_hours)} of "
                        f"{len(self.hours)} hours (run `wattledger carbon sync`)")
            out.append(f"F = intensity from the {self.fallback.describe()}: {how}")
        if self.total.run_it_j > 0:
            out.append(f"R = measured by `wattledger run` (its records: {self.runs_origin or 'runs file'}), not by "
                       f"the service agent: {num(self.total.run_it_j / J_PER_KWH)} kWh")
        if self.total.estimated_it_j > 0:
            kinds = ", ".join(sorted(ESTIMATED_SOURCES[s] for s in self.total.estimate_sources))
            out.append(f"E = includes energy not measured by a counter ({kinds}: source="
                       f"{'/'.join(sorted(self.total.estimate_sources))}), "
                       f"{num(self.total.estimated_kwh)} kWh of {num(self.total.it_kwh)} kWh")
        return out + self.extra_notes

    def co2e_basis(self) -> dict[str, Any]:
        """What every gCO2e figure of this report was made with: the PUE and the intensity, per hour.

        ``pue`` and ``g_per_kwh`` are the energy-weighted means over the window (None: no energy);
        ``pue_source`` and ``intensity_source`` say where they came from.
        """
        t = self.total
        return {
            "formula": "g_co2e = it_kwh x pue x g_per_kwh, hour by hour",
            "pue": t.facility_kwh / t.it_kwh if t.it_j > 0 else None,
            "pue_source": self.pue,
            "g_per_kwh": t.g_per_kwh,
            "intensity_source": self.intensity_source(t),
        }

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data: what ``--format json`` prints (and CSV's rows)."""
        total = sum(self.categories.values())
        return {
            "since": iso(self.since_ns), "until": iso(self.until_ns), "by": self.by, "zone": self.zone,
            "origin": self.origin, "pue": self.pue, "co2e_basis": self.co2e_basis(),
            "rows": [self.row_dict(r) for r in self.rows],
            "total": {k: v for k, v in self.row_dict(self.total).items() if k not in self.columns and k != "category"},
            "host_energy": {
                c: {"kwh": j / J_PER_KWH, "share": (j / total if total > 0 else None)}
                for c, j in self.categories.items()
            },
            "unused_capacity": {"kwh": self.categories["idle"] / J_PER_KWH,
                                "share": self.categories["idle"] / total if total > 0 else None,
                                "what": "idle power no job used (_idle)"},
            "intensity": self._intensity_dict(),
            "embodied": self._embodied_dict(),
            "notes": self.notes(),
            **({"lifetimes": self.lifetimes} if self.lifetimes else {}),
        }

    def _embodied_dict(self) -> dict[str, Any]:
        total = sum(self.embodied_categories.values())
        return {"g_co2e": total, "by_category": dict(self.embodied_categories),
                "unused_capacity_g": self.embodied_categories.get("idle", 0.0),
                "what": "the hardware's embodied (manufacture, transport) carbon, amortised over its lifetime and "
                        "charged by occupancy (GPUs) and CPU share (CPU, DRAM, storage, chassis): docs/embodied.md"}

    def row_dict(self, r: Row) -> dict[str, Any]:
        """One row as plain data: its key columns, then its figures."""
        d: dict[str, Any] = dict(zip(self.columns, r.key))
        if self.by == "job":
            d["category"] = category(r.key[0])
            if r.key in self.jobs:
                d["slurm"] = slurm_dict(self.jobs[r.key])
        d.update(
            it_kwh=r.it_kwh, it_kwh_by_component=r.it_kwh_by_component, facility_kwh=r.facility_kwh, g_co2e=r.g_co2e, g_per_kwh=r.g_per_kwh,
            fallback_kwh=r.fallback_kwh, intensity_fallback=r.fallback_it_j > 0,
            intensity_source=self.intensity_source(r), estimated_kwh=r.estimated_kwh,
            estimate=r.estimated_it_j > 0, embodied_g_co2e=r.embodied_g,
            embodied_g_by_component=dict(sorted(r.embodied_g_by_component.items())), total_g_co2e=r.total_g,
        )
        if r.run_it_j > 0:
            d["from_run_records_kwh"] = r.run_it_j / J_PER_KWH
        if self.per_host:
            d["hosts"] = {h: {"it_kwh": x.it_kwh, "facility_kwh": x.facility_kwh, "g_co2e": x.g_co2e}
                          for h, x in sorted(r.hosts.items())}
        return d

    def _intensity_dict(self) -> dict[str, Any]:
        return {
            "hours": len(self.hours),
            "hours_from_wl_carbon": len(self.hours) - len(self.fallback_hours),
            "hours_static": len(self.fallback_hours),
            "static": None if self.fallback is None or not self.fallback_hours else {
                "zone": self.fallback.zone, "g_per_kwh": self.fallback.g_per_kwh, "year": self.fallback.year,
                "source": self.fallback.source, "why": "configured" if self.configured_static else "fallback",
            },
        }


def build(
    cells: Iterable[EnergyCell],
    intensity: IntensitySeries,
    pue: PueSeries,
    *,
    by: str,
    since_ns: int,
    until_ns: int,
    origin: str,
    embodied: Iterable[EmbodiedCell] = (),
    hours: Iterable[int] | None = None,
    per_host: bool = False,
) -> Report:
    """The pure core: hourly cells x PUE_b x CI_b, grouped; embodied grams added to their rows as they are.

    ``hours``: the hours that had energy, when given: a cell then may stand for several hours that share
    one intensity and PUE (the ledger's long reads), its ``bucket_ns`` being one of them, and there is no
    per-hour ``series`` (``Report.per_hour`` False: the plot needs a per-hour read). None: each cell is its
    hour. Run record cells (``record``) are always one hour each. ``per_host``: each row's part per host too.
    """
    if by not in GROUPINGS:
        raise ReportError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    cols = GROUPINGS[by]
    rows: dict[tuple[str, ...], Row] = {}
    series: dict[tuple[str, ...], dict[int, Row]] | None = defaultdict(dict) if hours is None else None
    total = Row(("TOTAL",))
    categories = {c: 0.0 for c in ALWAYS_SHOWN}
    hours_seen: set[int] = set()
    ci_by_hour: dict[int, HourIntensity] = {}
    for c in cells:
        if c.energy_j == 0:
            continue
        ci = ci_by_hour.get(c.bucket_ns)
        if ci is None:
            ci = ci_by_hour[c.bucket_ns] = intensity.at(c.bucket_ns)
        p = pue.at(c.bucket_ns)
        key = tuple(getattr(c, k) for k in cols)
        row = rows.setdefault(key, Row(key))
        row.add(c.energy_j, p, ci, c.source, c.component, c.record)
        if per_host:
            _add_to_hosts(c, p, ci, row, total)
        if series is not None:
            series[key].setdefault(c.bucket_ns, Row(key)).add(c.energy_j, p, ci, c.source, c.component, c.record)
        total.add(c.energy_j, p, ci, c.source, c.component, c.record)
        categories[category(c.job)] = categories.get(category(c.job), 0.0) + c.energy_j
        if hours is None or c.record:
            hours_seen.add(c.bucket_ns)
    if hours is not None:
        hours_seen |= set(hours)
        for b in hours_seen - ci_by_hour.keys():
            ci_by_hour[b] = intensity.at(b)
    fallback_hours = sorted(b for b in hours_seen if ci_by_hour[b].fallback)
    embodied_categories = _add_embodied(embodied, cols, rows, series, total)
    ordered = sorted(rows.values(), key=lambda r: (-r.total_g, -r.it_j, r.key))
    return Report(
        since_ns, until_ns, by, intensity.zone, origin, ordered, total, categories, sorted(hours_seen),
        fallback_hours, intensity.fallback if fallback_hours else None, intensity.configured_static,
        pue.describe(hours_seen), dict(series or {}), ci_by_hour, embodied_categories=embodied_categories,
        per_hour=series is not None, per_host=per_host,
    )


def _add_to_hosts(c: EnergyCell, pue_b: float, ci: HourIntensity, *rows: Row) -> None:
    """One cell's energy into each row's part on the cell's host (``--per-host``)."""
    for r in rows:
        r.hosts.setdefault(c.host, Row((*r.key, c.host))).add(c.energy_j, pue_b, ci, c.source, c.component,
                                                              c.record)


def _add_embodied(cells: Iterable[EmbodiedCell], cols: tuple[str, ...], rows: dict[tuple[str, ...], Row],
                  series: dict[tuple[str, ...], dict[int, Row]] | None, total: Row) -> dict[str, float]:
    """Embodied grams into their rows (a row with embodied carbon only is a row too); per category."""
    categories: dict[str, float] = {}
    for c in cells:
        if c.embodied_g == 0:
            continue
        key = tuple(getattr(c, k) for k in cols)
        rows.setdefault(key, Row(key)).add_embodied(c.embodied_g, c.component)
        if series is not None:
            series[key].setdefault(c.bucket_ns, Row(key)).add_embodied(c.embodied_g, c.component)
        total.add_embodied(c.embodied_g, c.component)
        categories[category(c.job)] = categories.get(category(c.job), 0.0) + c.embodied_g
    return categories


def slurm_dict(record: JobRecord) -> dict[str, Any]:
    """What Slurm said about a job, and when this host saw it run, as plain data."""
    s = record.slurm
    return {"id": s.display_id, "job_id": s.job_id, "name": s.name, "account": s.account,
            "partition": s.partition, "gpus": list(s.gpus), "host": record.host, "start": iso(record.first_ns),
            "end": iso(record.last_ns)}


@dataclass(frozen=True)
class PoolBaseline:
    """One pool's idle (static) power baseline, as a report lists it beside its figures.

    Plain data: the caller reads the agent's saved baselines (accounting/idle.py)
    and hands them to ``render``; ``description`` is their own wording
    (``3.50 W configured``, ``... learned from N ticks``).
    """

    component: str
    device: str
    power_w: float | None
    source: str  # configured, model, learned, none
    learn_ticks: int
    description: str

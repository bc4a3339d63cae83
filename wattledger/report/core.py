"""Energy, facility energy and CO2e per job / user / project / phase, from the ledger or InfluxDB.

The arithmetic (DESIGN.md, "Carbon and PUE"), per hour bucket b (UTC hours;
a point belongs to the hour its timestamp falls in)::

    IT kWh        = sum of wl_job energy_j in b / 3.6e6
    facility kWh  = IT kWh x PUE_b
    gCO2e         = facility kWh x CI_b

summed over the buckets of the window. PUE_b is the hourly mean of ``wl_pue``
(for ``[pue] site`` when set) or the configured constant. CI_b is the mean of
the ``wl_carbon`` points in b for the zone, taking for each (provider, time)
the best kind (actual, then marginal, then forecast: InfluxDB may keep both a
forecast and the actual that replaced it) and, when several providers cover
the hour, the configured one (else the first by name). An hour with no point
uses the static figure (``[carbon] g_per_kwh`` or the table) and every output
says so: the ``F`` mark and footnote in the table, ``intensity_source`` and
``fallback_kwh`` in CSV and JSON.

The report also splits the host's energy into tagged jobs and the reserved
ones (``_untagged``, ``_system``, ``_idle``, ``_agent``), and flags energy
that came from the model estimate (``source=model``) rather than a counter.

Both sources reduce to the same inputs (hourly energy cells, raw carbon and
PUE points) for one pure function, ``build``: the InfluxDB report of the
same data equals the ledger's (tested against a real influxd).
"""

from __future__ import annotations

import csv
import io
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wattledger.carbon import fallback_intensity
from wattledger.carbon.base import KIND_RANK
from wattledger.carbon.pue import PueSeries, pue_series
from wattledger.carbon.static import StaticIntensity, UnknownZone
from wattledger.util.timeutil import HOUR_NS, hour_floor, iso
from wattledger.config import Config
from wattledger.model.jobs import AGENT, IDLE, SYSTEM, UNTAGGED
from wattledger.model.points import WL_CARBON, WL_JOB, WL_PUE

J_PER_KWH = 3.6e6
GROUPINGS: dict[str, tuple[str, ...]] = {
    "job": ("job", "user"),  # a job is (user, tag): two users' same tag are two jobs
    "user": ("user",),
    "project": ("project",),
    "phase": ("phase",),
}
CATEGORIES = ("tagged", "untagged", "system", "idle", "agent")
_CATEGORY_OF = {UNTAGGED: "untagged", SYSTEM: "system", IDLE: "idle", AGENT: "agent"}
# Energy from these sources is not a hardware measurement; the report flags it.
ESTIMATED_SOURCES = {"model": "estimate", "fake": "fake hardware"}
CELL_TAGS = ("job", "user", "project", "phase", "host", "source", "component")


def _cell(bucket_ns: int, tags: Mapping[str, Any], energy_j: float) -> EnergyCell:
    """An EnergyCell from one summed row (a missing or NULL tag is "")."""
    text = {t: str(tags.get(t) or "") for t in CELL_TAGS}
    return EnergyCell(bucket_ns, text["job"], text["user"], text["project"], text["phase"], text["host"],
                      text["source"], energy_j, text["component"])


class ReportError(RuntimeError):
    """A report cannot be made; the message says why and what to do."""


def category(job: str) -> str:
    return _CATEGORY_OF.get(job, "tagged")


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
    """Reduce raw wl_carbon rows (time_ns, zone, provider, kind, g_per_kwh) to one CI per hour."""
    want = zone.upper()
    best: dict[tuple[str, int], tuple[int, float]] = {}  # (provider, time) -> (kind rank, value)
    for r in rows:
        if str(r.get("zone", "")).upper() != want or r.get("g_per_kwh") is None:
            continue
        key = (str(r.get("provider", "")), int(r["time_ns"]))
        rank = KIND_RANK.get(str(r.get("kind", "")), len(KIND_RANK))
        if key not in best or rank < best[key][0]:
            best[key] = (rank, float(r["g_per_kwh"]))
    per_hour: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (provider, t), (_, value) in best.items():
        per_hour[hour_floor(t)][provider].append(value)
    by_hour: dict[int, tuple[float, str]] = {}
    for bucket, providers in per_hour.items():
        provider = prefer_provider if prefer_provider in providers else min(providers)
        values = providers[provider]
        by_hour[bucket] = (math.fsum(values) / len(values), provider)
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

    @property
    def it_kwh(self) -> float:
        return self.it_j / J_PER_KWH

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

    def add(self, it_j: float, pue: float, ci: HourIntensity, source: str, component: str = "") -> None:
        kwh = it_j / J_PER_KWH * pue
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
        if self.total.estimated_it_j > 0:
            kinds = ", ".join(sorted(ESTIMATED_SOURCES[s] for s in self.total.estimate_sources))
            out.append(f"E = includes energy not measured by a counter ({kinds}: source="
                       f"{'/'.join(sorted(self.total.estimate_sources))}), "
                       f"{_num(self.total.estimated_kwh)} kWh of {_num(self.total.it_kwh)} kWh")
        return out

    def to_dict(self) -> dict[str, Any]:
        def row_dict(r: Row) -> dict[str, Any]:
            d: dict[str, Any] = dict(zip(self.columns, r.key))
            if self.by == "job":
                d["category"] = category(r.key[0])
            d.update(
                it_kwh=r.it_kwh, it_kwh_by_component=r.it_kwh_by_component, facility_kwh=r.facility_kwh, g_co2e=r.g_co2e, g_per_kwh=r.g_per_kwh,
                fallback_kwh=r.fallback_kwh, intensity_fallback=r.fallback_it_j > 0,
                intensity_source=self.intensity_source(r), estimated_kwh=r.estimated_kwh,
                estimate=r.estimated_it_j > 0,
            )
            return d

        total = sum(self.categories.values())
        return {
            "since": iso(self.since_ns), "until": iso(self.until_ns), "by": self.by, "zone": self.zone,
            "origin": self.origin, "pue": self.pue,
            "rows": [row_dict(r) for r in self.rows],
            "total": {k: v for k, v in row_dict(self.total).items() if k not in self.columns and k != "category"},
            "host_energy": {
                c: {"kwh": j / J_PER_KWH, "share": (j / total if total > 0 else None)}
                for c, j in self.categories.items()
            },
            "intensity": {
                "hours": len(self.hours),
                "hours_from_wl_carbon": len(self.hours) - len(self.fallback_hours),
                "hours_static": len(self.fallback_hours),
                "static": None if self.fallback is None or not self.fallback_hours else {
                    "zone": self.fallback.zone, "g_per_kwh": self.fallback.g_per_kwh, "year": self.fallback.year,
                    "source": self.fallback.source, "why": "configured" if self.configured_static else "fallback",
                },
            },
            "notes": self.notes(),
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
) -> Report:
    """The pure core: hourly cells x PUE_b x CI_b, grouped."""
    if by not in GROUPINGS:
        raise ReportError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    cols = GROUPINGS[by]
    rows: dict[tuple[str, ...], Row] = {}
    series: dict[tuple[str, ...], dict[int, Row]] = defaultdict(dict)
    total = Row(("TOTAL",))
    categories = {c: 0.0 for c in CATEGORIES}
    hours: set[int] = set()
    ci_by_hour: dict[int, HourIntensity] = {}
    for c in cells:
        if c.energy_j == 0:
            continue
        ci = ci_by_hour.get(c.bucket_ns)
        if ci is None:
            ci = ci_by_hour[c.bucket_ns] = intensity.at(c.bucket_ns)
        p = pue.at(c.bucket_ns)
        key = tuple(getattr(c, k) for k in cols)
        rows.setdefault(key, Row(key)).add(c.energy_j, p, ci, c.source, c.component)
        series[key].setdefault(c.bucket_ns, Row(key)).add(c.energy_j, p, ci, c.source, c.component)
        total.add(c.energy_j, p, ci, c.source, c.component)
        categories[category(c.job)] += c.energy_j
        hours.add(c.bucket_ns)
    fallback_hours = sorted(b for b in hours if ci_by_hour[b].fallback)
    ordered = sorted(rows.values(), key=lambda r: (-r.g_co2e, -r.it_j, r.key))
    return Report(
        since_ns, until_ns, by, intensity.zone, origin, ordered, total, categories, sorted(hours), fallback_hours,
        intensity.fallback if fallback_hours else None, intensity.configured_static, pue.describe(hours),
        dict(series), ci_by_hour,
    )


# -- reading the ledger ------------------------------------------------------------------------


def _hour_window(since_ns: int, until_ns: int) -> tuple[int, int]:
    """The whole hours that the window's buckets span: carbon and PUE are read for all of them."""
    end = hour_floor(until_ns - 1) + HOUR_NS if until_ns > 0 else HOUR_NS
    return hour_floor(since_ns), end


@dataclass(frozen=True)
class Options:
    by: str = "job"
    zone: str | None = None  # default [carbon] zone
    pue: float | None = None  # constant override; default [pue] value / wl_pue
    host: str | None = None
    project: str | None = None  # keep only this project


def _assemble(
    cfg: Config,
    opts: Options,
    cells: list[EnergyCell],
    carbon_rows: Iterable[Mapping[str, Any]],
    pue_rows: Iterable[Mapping[str, Any]],
    since_ns: int,
    until_ns: int,
    origin: str,
) -> Report:
    zone = (opts.zone or cfg.carbon.zone).upper()
    if opts.project is not None:
        cells = [c for c in cells if c.project == opts.project]
    intensity = intensity_series(carbon_rows, zone, prefer_provider=cfg.carbon.provider,
                                 fallback_fn=lambda: fallback_intensity(cfg.carbon, zone),
                                 configured_static=cfg.carbon.provider == "static")
    if opts.pue is not None:
        if opts.pue < 1.0:
            raise ReportError(f"--pue must be >= 1.0 (facility energy >= IT energy), got {opts.pue}")
        pue = PueSeries({}, opts.pue, "--pue")
    else:
        pue = pue_series(pue_rows, site=cfg.pue.site, constant=cfg.pue.value, constant_source="[pue] value")
    return build(cells, intensity, pue, by=opts.by, since_ns=since_ns, until_ns=until_ns, origin=origin)


def from_ledger(ledger: Any, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options()) -> Report:
    """Report from the local SQLite ledger (``Ledger``)."""
    h0, h1 = _hour_window(since_ns, until_ns)
    equal = {"host": opts.host} if opts.host else {}
    if opts.project is not None:
        equal["project"] = opts.project
    sums = ledger.hourly_sums(WL_JOB, "energy_j", CELL_TAGS, since_ns, until_ns, equal)
    cells = [_cell(int(r["time_ns"]), r, float(r["energy_j"])) for r in sums]
    return _assemble(cfg, opts, cells, ledger.rows(WL_CARBON, h0, h1), ledger.rows(WL_PUE, h0, h1),
                     since_ns, until_ns, f"ledger {ledger.path}")


# -- reading InfluxDB (InfluxQL over the v1 /query API) ------------------------------------------


class InfluxQL:
    """A minimal InfluxQL reader: POST /query, epoch=ns. Works with InfluxDB 1.x, 2.x (DBRP) and 3.x.

    Auth: ``token`` goes in ``Authorization: Token ...`` (2.x/3.x, or 1.8+'s
    ``user:password``); else ``username``/``password`` as 1.x form fields.
    """

    def __init__(self, url: str, database: str, *, token: str = "", username: str = "", password: str = "",
                 retention_policy: str = "", timeout_s: float = 30.0) -> None:
        if not url or not database:
            raise ReportError("--from-influx needs [sink] url and database (or bucket): set them in the config "
                              "or WATTLEDGER_SINK_URL / WATTLEDGER_SINK_DATABASE")
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.token, self.username, self.password = token, username, password
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, cfg: Config) -> "InfluxQL":
        s = cfg.sink
        return cls(s.url, s.database or s.bucket, token=s.token, username=s.username, password=s.password,
                   retention_policy=s.retention_policy, timeout_s=s.timeout_s)

    def query(self, q: str) -> list[dict[str, Any]]:
        """Rows of all series as dicts (the series' tags merged in); raises ReportError."""
        form = {"q": q, "db": self.database, "epoch": "ns"}
        if self.retention_policy:
            form["rp"] = self.retention_policy
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        elif self.username:
            form.update(u=self.username, p=self.password)
        req = urllib.request.Request(self.url + "/query", data=urllib.parse.urlencode(form).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            hint = " (check [sink] token/username/password)" if e.code in (401, 403) else ""
            raise ReportError(f"InfluxDB {self.url} answered HTTP {e.code} to a query{hint}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ReportError(f"cannot reach InfluxDB at {self.url}: {getattr(e, 'reason', e)}") from None
        out: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise ReportError(f"InfluxDB query failed: {result['error']}")
            if result.get("partial"):
                raise ReportError("InfluxDB returned a partial result (max-row-limit); use a shorter --since")
            for s in result.get("series") or []:
                for values in s.get("values") or []:
                    row = dict(zip(s["columns"], values))
                    row.update(s.get("tags") or {})
                    out.append(row)
        return out


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


QUERY_SPAN_NS = 7 * 24 * HOUR_NS  # one query per week of hours keeps answers small


def from_influx(client: InfluxQL, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options()) -> Report:
    """The same report from InfluxDB: hourly sums come from GROUP BY time(1h), the rest is shared."""
    zone = (opts.zone or cfg.carbon.zone).upper()
    host = f' AND "host" = {_quote(opts.host)}' if opts.host else ""
    if opts.project is not None:
        host += f' AND "project" = {_quote(opts.project)}' if opts.project else ' AND "project" = \'\''
    cells: list[EnergyCell] = []
    first = client.query(f'SELECT first("energy_j") FROM "{WL_JOB}" WHERE time >= {since_ns} AND time < {until_ns}{host}')
    # Start at the first point: a life cycle asks from 1970, and empty weeks cost a query each.
    start = max(since_ns, hour_floor(int(first[0]["time"]))) if first else until_ns
    while start < until_ns:
        stop = min(until_ns, hour_floor(start) + QUERY_SPAN_NS)
        group = ", ".join(f'"{t}"' for t in CELL_TAGS)
        rows = client.query(
            f'SELECT sum("energy_j") AS "energy_j" FROM "{WL_JOB}" WHERE time >= {start} AND time < {stop}{host} '
            f"GROUP BY time(1h), {group} fill(none)"
        )
        cells += [
            _cell(int(r["time"]), r, float(r["energy_j"])) for r in rows if r.get("energy_j") is not None
        ]
        start = stop
    h0, h1 = _hour_window(since_ns, until_ns)
    carbon = client.query(
        f'SELECT "g_per_kwh", "zone", "provider", "kind" FROM "{WL_CARBON}" '
        f'WHERE time >= {h0} AND time < {h1} AND "zone" = {_quote(zone)}'
    )
    pue = client.query(f'SELECT "pue", "site" FROM "{WL_PUE}" WHERE time >= {h0} AND time < {h1}')
    for r in carbon + pue:
        r["time_ns"] = int(r.pop("time"))
    origin = f"InfluxDB {client.url} db {client.database}"
    return _assemble(cfg, opts, cells, carbon, pue, since_ns, until_ns, origin)


# -- the life-cycle model ------------------------------------------------------------------------

SEARCH, TRAIN, INFERENCE = "search", "train", "inference"


@dataclass
class Lifecycle:
    """CT + T + e*I from measured phases (Strubell et al.'s and Lacoste et al.'s accounting).

    Energies are facility kWh (IT x PUE), as the footprint EC = energy incl. PUE.
    I is the measured inference energy divided by the number of inferences it
    served; the projection assumes future inferences cost the same, at the same
    mean intensity as the measured ones.
    """

    project: str
    report: Report
    inferences_count: int | None
    expected_inferences: int

    def _phase(self, phase: str) -> Row | None:
        for r in self.report.rows:
            if r.key == (phase,):
                return r
        return None

    @property
    def ct(self) -> Row | None:
        return self._phase(SEARCH)

    @property
    def t(self) -> Row | None:
        return self._phase(TRAIN)

    @property
    def inference(self) -> Row | None:
        return self._phase(INFERENCE)

    def per_inference(self) -> tuple[float, float] | None:
        """(facility kWh, gCO2e) of one inference, or None when it cannot be known."""
        r = self.inference
        if r is None or not self.inferences_count:
            return None
        return r.facility_kwh / self.inferences_count, r.g_co2e / self.inferences_count

    def check(self) -> None:
        if self.inference is not None and not self.inferences_count and self.expected_inferences:
            raise ReportError("the project has inference energy: give --inferences-count N (how many inferences "
                              "that energy served) to get the per-inference cost I")
        if self.expected_inferences and self.inference is None:
            raise ReportError(f"no energy with phase={INFERENCE} for project {self.project}: cannot project "
                              f"{self.expected_inferences} inferences (tag runs WATTLEDGER_PHASE=inference)")
        if self.inferences_count is not None and self.inferences_count <= 0:
            raise ReportError("--inferences-count must be a positive number of inferences")

    def projected(self) -> tuple[float, float]:
        """(facility kWh, gCO2e) of CT + T + e*I."""
        kwh = sum(r.facility_kwh for r in (self.ct, self.t) if r is not None)
        g = sum(r.g_co2e for r in (self.ct, self.t) if r is not None)
        per = self.per_inference()
        if self.expected_inferences and per is not None:
            kwh += self.expected_inferences * per[0]
            g += self.expected_inferences * per[1]
        return kwh, g

    def to_dict(self) -> dict[str, Any]:
        def part(r: Row | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {"it_kwh": r.it_kwh, "facility_kwh": r.facility_kwh, "g_co2e": r.g_co2e,
                    "intensity_fallback": r.fallback_it_j > 0, "estimate": r.estimated_it_j > 0}

        per = self.per_inference()
        kwh, g = self.projected()
        other = [r for r in self.report.rows if r.key[0] not in (SEARCH, TRAIN, INFERENCE)]
        return {
            "project": self.project, "since": iso(self.report.since_ns), "until": iso(self.report.until_ns),
            "zone": self.report.zone, "pue": self.report.pue,
            "search_CT": part(self.ct), "train_T": part(self.t), "inference_measured": part(self.inference),
            "inferences_count": self.inferences_count,
            "per_inference_I": None if per is None else {"facility_kwh": per[0], "g_co2e": per[1]},
            "expected_inferences": self.expected_inferences,
            "lifecycle": {"facility_kwh": kwh, "g_co2e": g,
                          "formula": "CT + T + e*I" if self.expected_inferences else "CT + T"},
            "other_phases": {(r.key[0] or "(none)"): part(r) for r in other},
            "notes": self.report.notes(),
        }


def lifecycle(report: Report, project: str, inferences_count: int | None, expected_inferences: int) -> Lifecycle:
    if report.by != "phase":
        raise ReportError("the life-cycle model needs a report grouped by phase")
    lc = Lifecycle(project, report, inferences_count, expected_inferences)
    lc.check()
    return lc


# -- presenting ----------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) < 1e-3:  # positional, not 1.38e-05: a short job's kWh is small and read by people
        decimals = digits - 1 - math.floor(math.log10(abs(x)))
        return f"{x:.{decimals}f}"
    return f"{x:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, *rows]:
        cells = [str(v).rjust(w) if i >= right_from else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return out


def _marks(report: Report, r: Row) -> str:
    return ("F" if r.fallback_it_j > 0 else "") + ("E" if r.estimated_it_j > 0 else "")


def format_table(report: Report) -> str:
    cols = report.columns
    lines = [
        f"Energy and CO2e by {report.by}, {iso(report.since_ns)} .. {iso(report.until_ns)}  ({report.origin})",
        f"zone {report.zone}; PUE {report.pue}",
        "",
    ]
    if not report.rows:
        lines.append("No wl_job energy in this window. Is the agent running (`wattledger doctor`)? "
                     "Try a longer --since.")
        return "\n".join(lines) + "\n"
    # One IT kWh column per component when there is more than one (cpu, dram, gpu).
    parts = report.components if len(report.components) > 1 else []

    def split(r: Row) -> list[str]:
        return [_num(r.it_j_by_component.get(c, 0.0) / J_PER_KWH) for c in parts]

    header = [*cols, "IT kWh", *(f"{c} kWh" for c in parts), "facility kWh", "gCO2e", "g/kWh", ""]
    body = [[*(v or "(none)" for v in r.key), _num(r.it_kwh), *split(r), _num(r.facility_kwh), _num(r.g_co2e),
             _num(r.g_per_kwh, 3), _marks(report, r)] for r in report.rows]
    t = report.total
    body.append(["TOTAL", *[""] * (len(cols) - 1), _num(t.it_kwh), *split(t), _num(t.facility_kwh),
                 _num(t.g_co2e), _num(t.g_per_kwh, 3), _marks(report, t)])
    lines += _table(header, body, right_from=len(cols))
    total_j = sum(report.categories.values())
    lines.append("")
    lines.append("Host energy: " + ", ".join(
        f"{c} {_num(j / J_PER_KWH)} kWh ({100 * j / total_j:.1f}%)" for c, j in report.categories.items()
    ) if total_j > 0 else "Host energy: none")
    measured = len(report.hours) - len(report.fallback_hours)
    providers = sorted({ci.provider for ci in report.intensity_by_hour.values() if not ci.fallback})
    lines.append(f"Carbon intensity: wl_carbon ({', '.join(providers) or 'none'}) for {measured} of "
                 f"{len(report.hours)} hours")
    lines += report.notes()
    return "\n".join(lines) + "\n"


def format_csv(report: Report) -> str:
    buf = io.StringIO()
    extra = ["category"] if report.by == "job" else []
    parts = [f"{c}_kwh" for c in report.components]
    fields = [*report.columns, *extra, "it_kwh", *parts, "facility_kwh", "g_co2e", "g_per_kwh", "fallback_kwh",
              "intensity_fallback", "intensity_source", "estimated_kwh", "estimate"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for d in report.to_dict()["rows"]:
        by_component = d.pop("it_kwh_by_component")
        d.update({f"{c}_kwh": by_component.get(c, 0.0) for c in report.components})
        w.writerow({k: ("" if d[k] is None else d[k]) for k in fields})
    return buf.getvalue()


def format_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def format_lifecycle(lc: Lifecycle, fmt: str) -> str:
    d = lc.to_dict()
    if fmt == "json":
        return json.dumps(d, indent=2) + "\n"
    per = lc.per_inference()
    kwh, g = lc.projected()
    rows: list[tuple[str, float | None, float | None]] = [
        ("CT  architecture search (phase search)", *((lc.ct.facility_kwh, lc.ct.g_co2e) if lc.ct else (None, None))),
        ("T   training (phase train)", *((lc.t.facility_kwh, lc.t.g_co2e) if lc.t else (None, None))),
        ("    inference measured (phase inference)",
         *((lc.inference.facility_kwh, lc.inference.g_co2e) if lc.inference else (None, None))),
        (f"I   per inference (/ {lc.inferences_count})" if lc.inferences_count else "I   per inference",
         *(per if per else (None, None))),
        (f"CT + T + e*I, e = {lc.expected_inferences:,}", kwh, g),
    ]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["part", "facility_kwh", "g_co2e"])
        for name, k, gg in rows:
            w.writerow([" ".join(name.split()), "" if k is None else k, "" if gg is None else gg])
        return buf.getvalue()
    lines = [
        f"Life cycle of project {lc.project}, measured {d['since']} .. {d['until']}; zone {d['zone']}; "
        f"PUE {d['pue']}",
        "",
        *_table(["", "facility kWh", "gCO2e"],
                [[n, "unmeasured" if k is None else _num(k, 6), "unmeasured" if gg is None else _num(gg, 6)]
                 for n, k, gg in rows], right_from=1),
    ]
    if d["other_phases"]:
        lines.append("Other phases (not in the model): " + ", ".join(
            f"{p} {_num(v['facility_kwh'])} kWh" for p, v in d["other_phases"].items()))
    lines += d["notes"]
    return "\n".join(lines) + "\n"


def render(report: Report, fmt: str) -> str:
    if fmt == "table":
        return format_table(report)
    if fmt == "csv":
        return format_csv(report)
    if fmt == "json":
        return format_json(report)
    raise ReportError(f"--format must be table, csv or json, got {fmt!r}")


# -- plotting ------------------------------------------------------------------------------------


def plot(report: Report, path: str, *, top: int = 5) -> None:
    """A PNG of the top rows' facility energy and CO2e per hour (matplotlib, Agg backend)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.dates import DateFormatter
    except ImportError:
        raise ReportError(
            "--plot needs matplotlib: pip install 'wattledger[plot]' (or pip install matplotlib)"
        ) from None
    from datetime import datetime, timedelta, timezone

    if not report.hours:
        raise ReportError("nothing to plot: no wl_job energy in this window")
    hours = report.hours
    xs = [datetime.fromtimestamp(h / 1e9, tz=timezone.utc) for h in hours]
    leaders = report.rows[:top]
    rest = report.rows[top:]

    def label(r: Row) -> str:
        # Matplotlib hides legend labels that start with "_": name reserved jobs by what they are.
        head = f"{category(r.key[0])} ({r.key[0]})" if report.by == "job" and r.key[0] in _CATEGORY_OF else None
        parts = [head or r.key[0] or "(none)", *(v for v in r.key[1:] if v)]
        return " / ".join(parts)

    def per_hour(keys: list[tuple[str, ...]], attr: str) -> list[float]:
        return [sum(getattr(report.series[k][h], attr) for k in keys if h in report.series.get(k, {}))
                for h in hours]

    stacks = [(label(r), [r.key]) for r in leaders]
    if rest:
        stacks.append((f"{len(rest)} others", [r.key for r in rest]))
    fig, (ax_e, ax_c) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, constrained_layout=True)
    width = timedelta(hours=0.9)
    tab10 = plt.get_cmap("tab10")
    colors = [tab10(i) for i in range(10)]
    for ax, attr, ylabel in ((ax_e, "facility_kwh", "facility kWh per hour"), (ax_c, "g_co2e", "gCO2e per hour")):
        bottom = [0.0] * len(hours)
        for i, (name, keys) in enumerate(stacks):
            v = per_hour(keys, attr)
            color = "0.75" if rest and i == len(stacks) - 1 else colors[i % len(colors)]
            ax.bar(xs, v, width=width, bottom=bottom, label=name, color=color, align="edge")
            bottom = [b + x for b, x in zip(bottom, v)]
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    ax_ci = ax_c.twinx()
    ci = [report.intensity_by_hour[h].g_per_kwh for h in hours]
    # A step per hour, drawn across the whole hour (the last one too).
    ax_ci.step([*xs, xs[-1] + timedelta(hours=1)], [*ci, ci[-1]], where="post", color="black", linewidth=1.3,
               label="grid intensity, g/kWh (right axis)")
    fallback = [(x + timedelta(minutes=30), c) for x, h, c in zip(xs, hours, ci) if report.intensity_by_hour[h].fallback]
    if fallback:
        ax_ci.scatter([x for x, _ in fallback], [c for _, c in fallback], marker="x", color="red", zorder=5,
                      label="hour at the static figure (no wl_carbon)")
    ax_ci.set_ylabel("grid intensity g/kWh")
    ax_ci.set_ylim(bottom=0, top=max(ci) * 1.15)
    handles, labels = ax_e.get_legend_handles_labels()
    more_h, more_l = ax_ci.get_legend_handles_labels()
    fig.legend(handles + more_h, labels + more_l, loc="outside right upper", fontsize=8,
               title=f"top {report.by}s", title_fontsize=9, frameon=False)
    fig.suptitle(f"Energy and CO2e by {report.by}, zone {report.zone}, PUE {report.pue}\n"
                 f"{iso(report.since_ns)} .. {iso(report.until_ns)}: {_num(report.total.facility_kwh)} facility kWh, "
                 f"{_num(report.total.g_co2e / 1000)} kg CO2e", fontsize=10)
    ax_c.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M", tz=timezone.utc))
    ax_c.set_xlabel("UTC")
    for lbl in ax_c.get_xticklabels():
        lbl.set_rotation(30)
        lbl.set_horizontalalignment("right")
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""A report from InfluxDB: a minimal InfluxQL client over the v1 ``/query`` API, and ``from_influx``.

InfluxQL is the language InfluxDB 1.x, 2.x (through DBRP mappings) and 3.x
all answer. ``from_influx`` sums ``wl_job`` energy with ``GROUP BY time(1h)``
and reads the raw ``wl_carbon`` and ``wl_pue`` points; the rest is the
ledger's arithmetic (assemble.py), so both sources give the same report.
In a fleet's tiered database every host's energy is read from its hour,
minute and raw tiers as that host's data allows (tiers.py), so a report over
a hundred hosts and a year reads hour sums, and a job that ran on several
hosts is summed over all of them (one row; ``--per-host`` splits it).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from wattledger.config import Config, Layout
from wattledger.model.points import WL_CARBON, WL_EMBODIED, WL_JOB, WL_NODE, WL_PUE
from wattledger.model.tiers import HOURS
from wattledger.report import tiers
from wattledger.model.units import HOUR_NS
from wattledger.report.assemble import (CELL_TAGS, EMBODIED_TAGS, Options, assemble, embodied_cell, energy_cell,
                                        hour_window, measured_seconds)
from wattledger.report.jobview import JobTicks, ticks_from_points
from wattledger.report.model import EmbodiedCell, EnergyCell, Report, ReportError
from wattledger.store.runs import Runs
from wattledger.util.influxql import string_literal
from wattledger.util.redact import redact_text, redact_url
from wattledger.util.timeutil import hour_floor

QUERY_SPAN_NS = 7 * 24 * HOUR_NS  # one query per week of hours keeps answers small


class InfluxQL:
    """A minimal InfluxQL reader: POST /query, epoch=ns. Works with InfluxDB 1.x, 2.x (DBRP) and 3.x.

    Auth: ``token`` goes in ``Authorization: Token ...`` (2.x/3.x, or 1.8+'s
    ``user:password``); else ``username``/``password`` as 1.x form fields.
    """

    def __init__(self, url: str, database: str, *, token: str = "", username: str = "", password: str = "",
                 retention_policy: str = "", timeout_s: float = 30.0, tiered: bool = True) -> None:
        """``tiered``: read the fleet's tiers when the database has them ([influx] layout = "tiered")."""
        if not url or not database:
            raise ReportError("--from-influx needs [sink] url and database (or bucket): set them in the config "
                              "or WATTLEDGER_SINK_URL / WATTLEDGER_SINK_DATABASE")
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.token, self.username, self.password = token, username, password
        self.timeout_s = timeout_s
        self.tiered = tiered

    @classmethod
    def from_config(cls, cfg: Config) -> "InfluxQL":
        s = cfg.sink
        return cls(s.url, s.database or s.bucket, token=s.token, username=s.username, password=s.password,
                   retention_policy=s.retention_policy, timeout_s=s.timeout_s,
                   tiered=cfg.influx.layout is Layout.TIERED)

    def query(self, q: str) -> list[dict[str, Any]]:
        """Rows of all series as dicts (the series' tags merged in); raises ReportError."""
        return _rows(self._post(q))

    def _post(self, q: str) -> Any:
        """The decoded JSON answer to one query (sources are qualified with their retention policy)."""
        form = {"q": q, "db": self.database, "epoch": "ns"}
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        elif self.username:
            form.update(u=self.username, p=self.password)
        req = urllib.request.Request(self.url + "/query", data=urllib.parse.urlencode(form).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            hint = " (check [sink] token/username/password)" if e.code in (401, 403) else ""
            raise ReportError(f"InfluxDB {redact_url(self.url)} answered HTTP {e.code} to a query{hint}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ReportError(f"cannot reach InfluxDB at {redact_url(self.url)}: "
                              f"{redact_text(str(getattr(e, 'reason', e)))}") from None


def _rows(body: Any) -> list[dict[str, Any]]:
    """Every series' values as dicts, its tags merged in; an error or a partial answer raises ReportError."""
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


def from_influx(client: InfluxQL, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options(),
                runs: Runs | None = None) -> Report:
    """The same report from InfluxDB: hourly sums come from GROUP BY time(1h), the rest is shared."""
    if opts.scheduler_filter:
        raise ReportError("--account and --partition need the ledger: Slurm job details are kept beside each "
                          "host's ledger, not in InfluxDB; run the report on the node without --from-influx")
    zone = (opts.zone or cfg.carbon.zone).upper()
    host = f' AND "host" = {string_literal(opts.host)}' if opts.host else ""
    plan = tiers.reads(client.query, since_ns, until_ns, client.tiered, client.retention_policy, host,
                       jobs=opts.by == "job" or opts.job is not None)
    cells: list[EnergyCell] = []
    embodied: list[EmbodiedCell] = []
    for read in plan.reads:
        where = _tag_filter(opts) + tiers.host_condition(read.hosts, string_literal)
        cells += _energy_cells(client, _source(read.rp, WL_JOB), read.lo_ns, read.hi_ns, where)
        embodied += _embodied_cells(client, _source(read.rp, WL_EMBODIED), read.lo_ns, read.hi_ns, where)
    h0, h1 = hour_window(plan.since_ns, plan.until_ns)
    carbon = client.query(
        f'SELECT "g_per_kwh", "zone", "provider", "kind" FROM {_source(plan.long_rp, WL_CARBON)} '
        f'WHERE time >= {h0} AND time < {h1} AND "zone" = {string_literal(zone)}'
    )
    pue = client.query(f'SELECT "pue", "site" FROM {_source(plan.long_rp, WL_PUE)} WHERE time >= {h0} AND time < {h1}')
    for r in carbon + pue:
        r["time_ns"] = int(r.pop("time"))
    origin = (f"InfluxDB {redact_url(client.url)} db {client.database}"
              + (" (tiers raw, minutes, hours)" if plan.tiered else ""))
    report = assemble(cfg, opts, cells, carbon, pue, plan.since_ns, plan.until_ns, origin, runs, embodied)
    if plan.tiered and opts.by == "job" and any(r.rp == HOURS for r in plan.reads):
        report.extra_notes.append("energy kept only as hour sums (older than [influx] minutes_days) has no job "
                                  "name: it shows as job '' per user, project and phase")
    return report


def _source(rp: str, measurement: str) -> str:
    return f'"{rp}"."{measurement}"' if rp else f'"{measurement}"'


def _tag_filter(opts: Options) -> str:
    """The ``AND ...`` that keeps only ``opts``' host, project, job and user ("" for none).

    An empty value matches a missing tag: InfluxDB stores no empty tags (points.py).
    """
    return "".join(f' AND "{tag}" = {string_literal(value)}' if value else f' AND "{tag}" = \'\''
                   for tag, value in opts.equal().items())


def _energy_cells(client: InfluxQL, source: str, since_ns: int, until_ns: int, where: str) -> list[EnergyCell]:
    """wl_job energy per hour and tag set from ``source``, a week of hours per query (from its first point)."""
    rows = _hourly(client, source, "energy_j", CELL_TAGS, since_ns, until_ns, where)
    return [energy_cell(int(r["time"]), r, float(r["energy_j"])) for r in rows]


def _embodied_cells(client: InfluxQL, source: str, since_ns: int, until_ns: int, where: str) -> list[EmbodiedCell]:
    """wl_embodied grams per hour and tag set from ``source``, a week of hours per query (from its first point)."""
    rows = _hourly(client, source, "embodied_g", EMBODIED_TAGS, since_ns, until_ns, where)
    return [embodied_cell(int(r["time"]), r, float(r["embodied_g"])) for r in rows]


def _hourly(client: InfluxQL, source: str, field: str, tags: tuple[str, ...], since_ns: int, until_ns: int,
            where: str) -> list[dict[str, Any]]:
    """SUM(field) per hour and tag set of ``source`` (a measurement, qualified with its retention policy),
    a week of hours per query, from its first point on (a life cycle asks from 1970, and empty weeks would
    cost a query each)."""
    first = client.query(f'SELECT first("{field}") FROM {source} WHERE time >= {since_ns} AND '
                         f'time < {until_ns}{where}')
    start = max(since_ns, hour_floor(int(first[0]["time"]))) if first else until_ns
    rows: list[dict[str, Any]] = []
    group = ", ".join(f'"{t}"' for t in tags)
    while start < until_ns:
        stop = min(until_ns, hour_floor(start) + QUERY_SPAN_NS)
        rows += client.query(f'SELECT sum("{field}") AS "{field}" FROM {source} WHERE time >= {start} AND '
                             f'time < {stop}{where} GROUP BY time(1h), {group} fill(none)')
        start = stop
    return [r for r in rows if r.get(field) is not None]


def influx_measured_seconds(client: InfluxQL, report: Report, host: str | None = None) -> dict[int, float]:
    """Seconds of each hour of the report's window the agent measured (``assemble.measured_seconds``),
    from the report's first hour with energy on (a life cycle's window starts in 1970)."""
    rows: list[dict[str, Any]] = []
    where = f' AND "host" = {string_literal(host)}' if host else ""
    until_ns = report.until_ns
    start = max(report.since_ns, report.hours[0]) if report.hours else until_ns
    while start < until_ns:
        stop = min(until_ns, start + QUERY_SPAN_NS)
        rows += client.query(
            f'SELECT sum("interval_s") AS "interval_s" FROM "{WL_NODE}" WHERE time >= {start} AND time < {stop}'
            f'{where} GROUP BY time(1h), "host", "component", "device" fill(none)'
        )
        start = stop
    for r in rows:
        r["time_ns"] = int(r.pop("time"))
    return measured_seconds(rows)


def job_ticks(client: InfluxQL, since_ns: int, until_ns: int, opts: Options) -> list[JobTicks]:
    """What InfluxDB knows of ``opts.job``'s ticks, per user: its rows, and the nodes' and ``_idle``'s
    rows of its span, joined here (InfluxQL has no joins)."""
    if opts.job is None:
        return []
    jobs = client.query(f'SELECT "energy_j" FROM "{WL_JOB}" WHERE time >= {since_ns} AND time < {until_ns}'
                        f'{_tag_filter(opts)} GROUP BY "user", "host", "component", "device"')
    if not jobs:
        return []
    first, last = min(int(r["time"]) for r in jobs), max(int(r["time"]) for r in jobs)
    span = f"time >= {first} AND time <= {last}"
    nodes = client.query(f'SELECT "energy_j", "interval_s" FROM "{WL_NODE}" WHERE {span} '
                         'GROUP BY "host", "component", "device"')
    idle = client.query(f'SELECT "energy_j" FROM "{WL_JOB}" WHERE {span} AND "job" = \'_idle\' GROUP BY "host"')
    return ticks_from_points(jobs, nodes, idle)

"""The Grafana dashboards, built as plain dicts (pure: no I/O).

Why a generator rather than hand-edited JSON: the five dashboards share their
variables, filters and the one CO2e rule, and the tests need the exact query
text of every panel to run it against a real InfluxDB. ``dashboards/*.json`` at
the repo root is ``render()`` of these dicts (a test keeps them in sync);
``wattledger dashboards export|push`` writes or uploads the same (export.py,
push.py; the variables' defaults from a config: defaults.py).

Choices that hold for every panel:

- The datasource is a *variable* (``${datasource}``, type ``datasource``,
  query ``influxdb``) so file provisioning works; ``__inputs`` only works with
  the UI import.
- Queries are raw InfluxQL, the language InfluxDB 1.x, 2.x (through DBRP
  mappings) and 3.x all answer. No Flux.
- Energy is IT energy as measured. PUE (``$pue``) and grid intensity
  (``wl_carbon``) are applied here, at read time, so a corrected intensity
  history or PUE changes past figures (DESIGN.md, "Data model").
- Power is energy over time (``sum(energy_j) / bucket seconds``), never a mean
  of ``power_w`` across devices, so stacked components add up to the host.
- CO2e = sum over UTC hours of energy_kWh x PUE x intensity_g/kWh. InfluxQL
  cannot join measurements, so each CO2e panel runs two queries (facility kWh
  per hour from ``wl_job``/``wl_node``; intensity per hour from
  ``wl_carbon``) and multiplies them with Grafana transformations
  (``joinByField`` inner on Time, ``calculateField`` binary ``*``). The hourly
  intensity is the rule of ``wattledger report``: the mean of the zone's
  points (one provider and kind) in that UTC hour, else the static figure
  (``$ci_fallback``, via ``fill()``). The intensity query reads one hour
  beyond each end of the range so the first and last hours see all their
  points, as the report does.
- ``$pue`` is one constant. ``wattledger report`` uses a ``wl_pue`` series
  where one exists; the Carbon dashboard shows that series.
- A project, and a phase inside one, is its user's (``report --by project``
  keys it by owner): the project and phase panels group by user as well, and
  merge several users' energy under one name only for the projects the
  admin shares (``[jobs] shared_projects``, through ``--config``).
- The resolution follows the range (docs/fleet.md): hidden variables pick,
  from the ``wl_tier`` rows ``wattledger influx setup`` writes, the tier
  (``$tier``: the retention policy raw, minutes or hours) whose retention
  reaches the start of the range and the ``GROUP BY time($res)`` bucket
  (``$res_s`` seconds) that keeps every series under ~2,000 points. Panels
  that need the job tag use ``$jtier``/``$jres``, which never pick the hours
  tier (it keeps no job names). The CO2e chain groups by UTC hour at any
  range (one point per hour: 2,160 at 90 days). ``wl_agent`` and the
  Devices table read the default retention policy (raw).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from wattledger.grafana.defaults import Defaults
from wattledger.model.jobs import AGENT, IDLE, OVERFLOW, SYSTEM, UNOBSERVED, UNTAGGED, shared_label
from wattledger.model.points import WL_AGENT, WL_CARBON, WL_EMBODIED, WL_JOB, WL_NODE, WL_PUE
from wattledger.model.tiers import MAX_POINTS, TIER_EPOCH_MS, TIER_TABLE
from wattledger.model.units import J_PER_KWH
from wattledger.util.influxql import string_literal

Dashboard = dict[str, Any]
Panel = dict[str, Any]

SCHEMA_VERSION = 39  # Grafana 10.4 / 11; newer Grafana migrates it on load
TAG = "wattledger"
DATASOURCE_NAME = "wattledger"  # the provisioned datasource's name (dashboards/provisioning)
DATASOURCE_UID = "wattledger-influxdb"
DS: dict[str, str] = {"type": "influxdb", "uid": "${datasource}"}

# Joules per kWh as the queries write it: the integer literal 3600000 (the committed dashboards/*.json).
KWH_J = f"{J_PER_KWH:.0f}"

# Filters shared by the panels (InfluxQL; Grafana substitutes the variables).
HOST_FILTER = '"host" =~ /^$host$/'
JOB_FILTER = f"\"job\" = '$job' AND \"user\" =~ /^$user$/ AND {HOST_FILTER}"
LEDGER_FILTER = f'"user" =~ /^$user$/ AND "project" =~ /^$project$/ AND "phase" =~ /^$phase$/ AND {HOST_FILTER}'
CARBON_FILTER = "\"zone\" = '$zone' AND \"provider\" = '$provider' AND \"kind\" = '$kind'"

# Reserved jobs (DESIGN.md, "Attribution"); user tags never start with "_" (jobs.sanitise_tag).
ENERGY_CLASSES: tuple[tuple[str, str], ...] = (
    ("tagged", "\"job\" !~ /^_/"),
    ("untagged", f"\"job\" = '{UNTAGGED}'"),
    ("system", f"\"job\" = '{SYSTEM}'"),
    ("idle", f"\"job\" = '{IDLE}'"),
    ("agent", f"\"job\" = '{AGENT}'"),
    ("unobserved", f"\"job\" = '{UNOBSERVED}'"),
    ("overflow", f"\"job\" = '{OVERFLOW}'"),
)


FACILITY_KWH = "facility_kwh"
G_PER_KWH = "g_per_kwh"
CO2E = "CO2e"
CO2E_CUMULATIVE = "CO2e cumulative"
EMBODIED_G = "embodied_g"
TOTAL_CO2E = "total CO2e"


# -- small builders ----------------------------------------------------------------


def target(ref_id: str, query: str, alias: str = "", table: bool = False) -> dict[str, Any]:
    """One raw InfluxQL query of a panel."""
    t: dict[str, Any] = {
        "refId": ref_id,
        "datasource": DS,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        t["alias"] = alias
    return t


def _field_config(unit: str, decimals: int | None = None, **custom: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "custom": custom} if custom else {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"defaults": defaults, "overrides": []}


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    grid: tuple[int, int, int, int],
    field_config: dict[str, Any],
    options: dict[str, Any],
    transformations: list[dict[str, Any]] | None = None,
    interval: str = "",
) -> Panel:
    x, y, w, h = grid
    p: Panel = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": field_config,
        "options": options,
    }
    if transformations:
        p["transformations"] = transformations
    if interval:
        p["interval"] = interval
    return p


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    grid: tuple[int, int, int, int],
    unit: str,
    stack: bool = False,
    transformations: list[dict[str, Any]] | None = None,
    interval: str = "",
    bars: bool = False,
) -> Panel:
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "fillOpacity": 40 if stack or bars else 10}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return _panel(
        "timeseries",
        title,
        description,
        targets,
        grid,
        _field_config(unit, **custom),
        {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
         "tooltip": {"mode": "multi", "sort": "desc"}},
        transformations,
        interval,
    )


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    grid: tuple[int, int, int, int],
    unit: str,
    calcs: str = "sum",
    transformations: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
) -> Panel:
    """A stat panel; ``calcs`` is the reducer Grafana applies to each field."""
    return _panel(
        "stat",
        title,
        description,
        targets,
        grid,
        _field_config(unit, decimals),
        {"reduceOptions": {"calcs": [calcs], "fields": "", "values": False},
         "colorMode": "value", "graphMode": "none", "textMode": "auto"},
        transformations,
    )


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    grid: tuple[int, int, int, int],
    unit: str = "none",
    transformations: list[dict[str, Any]] | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> Panel:
    fc = _field_config(unit)
    fc["overrides"] = overrides or []
    return _panel("table", title, description, targets, grid, fc, {"showHeader": True}, transformations)


def piechart(
    title: str, description: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int], unit: str
) -> Panel:
    return _panel(
        "piechart",
        title,
        description,
        targets,
        grid,
        _field_config(unit),
        {"reduceOptions": {"calcs": ["sum"], "fields": "", "values": False},
         "pieType": "donut", "displayLabels": ["name", "percent"],
         "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]}},
    )


def bargauge(
    title: str, description: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int], unit: str,
    transformations: list[dict[str, Any]] | None = None,
) -> Panel:
    return _panel(
        "bargauge",
        title,
        description,
        targets,
        grid,
        _field_config(unit),
        {"reduceOptions": {"calcs": ["sum"], "fields": "", "values": False},
         "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True},
        transformations,
    )


def text(title: str, content: str, grid: tuple[int, int, int, int]) -> Panel:
    x, y, w, h = grid
    return {
        "type": "text",
        "title": title,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "options": {"mode": "markdown", "content": content},
    }


# -- variables ---------------------------------------------------------------------


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "InfluxDB",
        "type": "datasource",
        "query": "influxdb",
        "current": {"selected": False, "text": DATASOURCE_NAME, "value": DATASOURCE_UID},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "multi": False,
        "includeAll": False,
        "options": [],
    }


def query_variable(
    name: str, label: str, query: str, multi: bool = False, description: str = "", hide: int = 0
) -> dict[str, Any]:
    """A variable filled from InfluxDB. Multi-value ones offer All as the regex ``.*``
    (which also matches points without that tag, e.g. jobs without a project)."""
    v: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change: new jobs appear without a reload
        "sort": 1,
        "regex": "",
        "hide": hide,
        "multi": multi,
        "includeAll": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
        "options": [],
    }
    if multi:
        v["allValue"] = ".*"
    if description:
        v["description"] = description
    return v


def textbox_variable(name: str, label: str, value: str, description: str) -> dict[str, Any]:
    """A free-text dashboard variable with a default value."""
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": value,
        "current": {"selected": False, "text": value, "value": value},
        "options": [{"selected": True, "text": value, "value": value}],
        "hide": 0,
        "description": description,
    }


def pue_variable(defaults: Defaults) -> dict[str, Any]:
    return textbox_variable(
        "pue", "PUE", f"{defaults.pue:g}",
        "Power usage effectiveness of the site: facility energy = IT energy x PUE. "
        "1.58 is the Uptime Institute 2020 industry average; use your site's figure "
        "(wl_pue on the Carbon dashboard shows any measured series).",
    )


def carbon_variables(defaults: Defaults) -> list[dict[str, Any]]:
    zone = query_variable("zone", "Grid zone", f'SHOW TAG VALUES FROM "{WL_CARBON}" WITH KEY = "zone"',
                          description="Grid zone of wl_carbon whose intensity is applied.")
    zone["current"] = {"selected": False, "text": defaults.zone, "value": defaults.zone}
    fallback = f"{defaults.fallback_g_per_kwh:g}"
    return [
        zone,
        query_variable("provider", "Intensity provider",
                       f"SHOW TAG VALUES FROM \"{WL_CARBON}\" WITH KEY = \"provider\" WHERE \"zone\" = '$zone'"),
        query_variable("kind", "Intensity kind",
                       f"SHOW TAG VALUES FROM \"{WL_CARBON}\" WITH KEY = \"kind\" WHERE \"zone\" = '$zone' "
                       "AND \"provider\" = '$provider'",
                       description="actual (average), forecast, or marginal (a different signal)."),
        textbox_variable(
            "ci_fallback", "Fallback g/kWh", fallback,
            "g CO2e/kWh for hours without a wl_carbon point: the static figure for your zone "
            "([carbon] g_per_kwh, else wattledger's static table), as `wattledger report` uses. "
            "`wattledger dashboards export --config` fills in yours.",
        ),
    ]


# Hidden variables that choose the tier and the bucket for the range (model/tiers.py, docs/fleet.md):
# variable name of the tier -> (its scope in wl_tier, the bucket variable; its length in seconds is "<bucket>_s").
TIER_VARIABLES = {"tier": ("all", "res"), "jtier": ("jobs", "jres")}
J = "jtier"  # panels that need the job tag


def src(measurement: str, tier: str = "tier") -> str:
    """A measurement in the retention policy the ``tier`` variable chose."""
    return f'"${tier}"."{measurement}"'


def tier_variables(tier: str = "tier") -> list[dict[str, Any]]:
    """The tier, its bucket and the bucket's seconds for the range: the first wl_tier row (of the scope) whose
    retention reaches back to ``${__from}`` and whose bucket keeps the range under MAX_POINTS points."""
    scope, res = TIER_VARIABLES[tier]
    where = (f"WHERE \"scope\" = '{scope}' AND time >= now() - ${{__from}}ms + {TIER_EPOCH_MS}ms "
             "AND \"max_range_ms\" >= ${__to} - ${__from} LIMIT 1")
    what = {tier: '"tier"', res: '"res"', f"{res}_s": f'"max_range_ms" / {MAX_POINTS * 1000}'}
    out = []
    for name, field in what.items():
        v = query_variable(name, name, f'SELECT {field} FROM "{TIER_TABLE}" {where}', hide=2,
                           description="Chosen from the time range (docs/fleet.md); `wattledger influx setup` "
                                       "writes the rows it reads.")
        out.append(v)
    return out


def host_variable(measurement: str = WL_NODE) -> dict[str, Any]:
    return query_variable("host", "Host", f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "host"', multi=True)


# -- the CO2e chain ------------------------------------------------------------------


def intensity_per_hour_query(tier: str = "tier") -> str:
    """Grid intensity per UTC hour: the mean of the hour's points, else the fallback figure."""
    return (
        f'SELECT mean("g_per_kwh") AS "{G_PER_KWH}" FROM {src(WL_CARBON, tier)} WHERE {CARBON_FILTER} '
        "AND time >= ${__from}ms - 1h AND time < ${__to}ms + 1h GROUP BY time(1h) fill($ci_fallback)"
    )


def facility_kwh_per_hour_query(measurement: str, where: str, tier: str = "tier") -> str:
    return (
        f'SELECT sum("energy_j") / {KWH_J} * $pue AS "{FACILITY_KWH}" FROM {src(measurement, tier)} '
        f"WHERE {where} AND $timeFilter GROUP BY time(1h) fill(0)"
    )


def _users_regex(users: Iterable[str]) -> str:
    """An InfluxQL regex literal matching exactly these user names."""
    alternatives = "|".join(re.escape(u).replace("/", "\\/") for u in sorted(users))
    return f"/^({alternatives})$/"


def owned_targets(tag: str, where: str, shared: tuple[tuple[str, tuple[str, ...]], ...]) -> list[dict[str, Any]]:
    """Facility kWh per ``tag`` (project or phase) and owner: never another user's energy under a name.

    A: energy without a project, per ``tag`` (nobody's name). B: energy with a
    project, per ``tag`` and user ("p1 (alice)"), leaving out the shared
    projects' users. Then one query per shared project: its users' energy
    together ("p1 (alice+bob)"), the rule of ``model.jobs.project_owner``.
    """
    head = f'SELECT sum("energy_j") / {KWH_J} * $pue AS "facility_kwh" FROM {src(WL_JOB)} WHERE {where}'
    not_shared = "".join(f' AND ("project" != {string_literal(p)} OR "user" !~ {_users_regex(users)})'
                         for p, users in shared)
    targets = [
        target("A", f"{head} AND \"project\" = '' AND $timeFilter GROUP BY \"{tag}\"", alias=f"$tag_{tag}"),
        target("B", f"{head} AND \"project\" != ''{not_shared} AND $timeFilter GROUP BY \"{tag}\", \"user\"",
               alias=f"$tag_{tag} ($tag_user)"),
    ]
    for i, (project, users) in enumerate(shared):
        targets.append(target(
            _ref_id(2 + i),
            f'{head} AND "project" = {string_literal(project)} AND "user" =~ {_users_regex(users)} '
            f'AND $timeFilter GROUP BY "{tag}"', alias=f"$tag_{tag} ({shared_label(users)})"))
    return targets


def _ref_id(i: int) -> str:
    """Grafana's query letters: A..Z, then AA, AB..."""
    return chr(ord("A") + i) if i < 26 else _ref_id(i // 26 - 1) + chr(ord("A") + i % 26)


def co2e_transformations(cumulative: bool) -> list[dict[str, Any]]:
    """facility kWh per hour x g/kWh per hour -> g CO2e per hour (and its running total).

    ``inner`` join: an outer join leaves ``undefined`` cells that turn the
    product and the running total into NaN. Binary operands are field names
    (strings): the form Grafana 11 reads and Grafana 12+ still accepts.
    """
    steps: list[dict[str, Any]] = [
        {"id": "joinByField", "options": {"byField": "Time", "mode": "inner"}},
        {
            "id": "calculateField",
            "options": {
                "mode": "binary",
                "binary": {"left": FACILITY_KWH, "operator": "*", "right": G_PER_KWH},
                "alias": CO2E,
            },
        },
    ]
    keep = ["Time", CO2E]
    if cumulative:
        steps.append(
            {
                "id": "calculateField",
                "options": {"mode": "cumulativeFunctions", "cumulative": {"field": CO2E, "reducer": "sum"},
                            "alias": CO2E_CUMULATIVE},
            }
        )
        keep.append(CO2E_CUMULATIVE)
    steps.append({"id": "filterFieldsByName", "options": {"include": {"names": keep}}})
    return steps


def name_untagged(label: str) -> dict[str, Any]:
    """Grafana names a series whose tag is empty (no user: _system, _idle, _agent) just "Value"."""
    return {"id": "renameByRegex", "options": {"regex": "^Value$", "renamePattern": f"(no {label})"}}


def co2e_targets(measurement: str, where: str, tier: str = "tier") -> list[dict[str, Any]]:
    return [
        target("A", facility_kwh_per_hour_query(measurement, where, tier), alias=FACILITY_KWH),
        target("B", intensity_per_hour_query(tier), alias=G_PER_KWH),
    ]


def embodied_per_hour_query(where: str, tier: str = "tier") -> str:
    """Embodied grams per UTC hour (fill(0): the same hours as the facility kWh, so an inner join keeps all)."""
    return (f'SELECT sum("embodied_g") AS "{EMBODIED_G}" FROM {src(WL_EMBODIED, tier)} WHERE {where} '
            "AND $timeFilter GROUP BY time(1h) fill(0)")


def total_targets(measurement: str, where: str, tier: str = "tier") -> list[dict[str, Any]]:
    return [*co2e_targets(measurement, where, tier),
            target("C", embodied_per_hour_query(where, tier), alias=EMBODIED_G)]


def total_transformations() -> list[dict[str, Any]]:
    """Per hour: facility kWh x g/kWh (operational) + embodied grams = total gCO2e."""
    return [
        {"id": "joinByField", "options": {"byField": "Time", "mode": "inner"}},
        {"id": "calculateField", "options": {
            "mode": "binary", "binary": {"left": FACILITY_KWH, "operator": "*", "right": G_PER_KWH}, "alias": CO2E}},
        {"id": "calculateField", "options": {
            "mode": "binary", "binary": {"left": CO2E, "operator": "+", "right": EMBODIED_G}, "alias": TOTAL_CO2E}},
        {"id": "filterFieldsByName", "options": {"include": {"names": ["Time", TOTAL_CO2E]}}},
    ]


def embodied_panels(where: str, y: int, tier: str = "tier") -> list[Panel]:
    """A job's (or a selection's) embodied carbon and its total with the operational CO2e, in a row at ``y``."""
    grams = f'SELECT sum("embodied_g") AS "{EMBODIED_G}" FROM {src(WL_EMBODIED, tier)} WHERE {where} AND $timeFilter'
    parts = ", ".join(f'sum("{p}_g") AS "{p}"' for p in ("cpu", "dram", "storage", "chassis"))
    res = TIER_VARIABLES[tier][1]
    return [
        stat("Embodied carbon", "The hardware's manufacture and transport (Boavizta), spread over its lifetime and "
                              "charged per tick: each GPU to the jobs holding it, the CPU sockets, DRAM, storage "
                              "and chassis by CPU share (docs/embodied.md). No PUE or intensity applies.",
             [target("A", grams, alias=EMBODIED_G)], (0, y, 6, 4), "massg"),
        stat("Total CO2e", "Operational CO2e (facility kWh x the zone's intensity, hour by hour) plus embodied "
                           "CO2e: what wattledger report shows as total gCO2e.",
             total_targets(WL_JOB, where, tier), (6, y, 6, 4), "massg", transformations=total_transformations()),
        timeseries("Embodied carbon per bucket", "Embodied grams per bucket of the range's resolution: GPUs held, "
                                                 "and the host's parts (CPU sockets, DRAM, storage, chassis) by "
                                                 "CPU share.",
                   [target("A", f'SELECT sum("embodied_g") AS "gpu" FROM {src(WL_EMBODIED, tier)} WHERE {where} AND '
                                f"\"component\" = 'gpu' AND $timeFilter GROUP BY time(${res}) fill(0)", alias="$col"),
                    target("B", f'SELECT {parts} FROM {src(WL_EMBODIED, tier)} WHERE {where} AND '
                                f"\"component\" = 'host' AND $timeFilter GROUP BY time(${res}) fill(0)",
                           alias="$col")],
                   (12, y, 12, 4), "massg", stack=True, bars=True),
    ]


def _kwh(where: str, measurement: str = WL_JOB, pue: bool = False, alias: str = "", tier: str = "tier") -> str:
    factor = " * $pue" if pue else ""
    name = alias or ("facility_kwh" if pue else "it_kwh")
    return (f'SELECT sum("energy_j") / {KWH_J}{factor} AS "{name}" FROM {src(measurement, tier)} '
            f"WHERE {where} AND $timeFilter")


def _power_w(measurement: str, where: str, group_by: str = "", tier: str = "tier") -> str:
    """Mean power per bucket from energy: stacked series add up to the host."""
    res = TIER_VARIABLES[tier][1]
    by = f"time(${res}), {group_by}" if group_by else f"time(${res})"
    return (f'SELECT sum("energy_j") / ${res}_s AS "power_w" FROM {src(measurement, tier)} '
            f"WHERE {where} AND $timeFilter GROUP BY {by} fill(0)")


def _dashboard(uid: str, title: str, description: str, variables: list[dict[str, Any]],
               panels: list[Panel], time_from: str = "now-24h") -> Dashboard:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "",
        "refresh": "1m",
        "links": [{"type": "dashboards", "tags": [TAG], "asDropdown": True, "title": "wattledger",
                   "includeVars": False, "keepTime": True}],
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": panels,
    }


# -- the five dashboards ---------------------------------------------------------------


def host_embodied_panels(where: str, y: int) -> list[Panel]:
    """The host's embodied carbon in the range, and by job (``_idle``: unused capacity), in a row at ``y``."""
    grams = f'SELECT sum("embodied_g") AS "{EMBODIED_G}" FROM {{}} WHERE {where} AND $timeFilter'
    return [
        stat("Embodied carbon", "The host's embodied carbon accrued in the range (kg / lifetime per second of "
                                "each device; docs/embodied.md), whoever it was charged to.",
             [target("A", grams.format(src(WL_EMBODIED)), alias=EMBODIED_G)], (0, y, 6, 8), "massg"),
        bargauge("Embodied carbon by job", "Embodied grams per job over the range; _idle is unused capacity: "
                                           "hardware nobody used.",
                 [target("A", f'{grams.format(src(WL_EMBODIED, J))} GROUP BY "job"', alias="$tag_job")],
                 (6, y, 18, 8), "massg"),
    ]


def overview(defaults: Defaults = Defaults()) -> Dashboard:
    node = job_rows = HOST_FILTER
    panels: list[Panel] = [
        stat("IT energy", "Energy the host's measured sources (RAPL, NVML, model) report in the range.",
             [target("A", _kwh(node, WL_NODE), alias="it_kwh")], (0, 0, 6, 4), "kwatth"),
        stat("Facility energy", "IT energy x $pue: what the building drew for this host.",
             [target("A", _kwh(node, WL_NODE, pue=True), alias="facility_kwh")], (6, 0, 6, 4), "kwatth"),
        stat("Mean host power", "IT energy / the range's length.",
             [target("A", f'SELECT sum("energy_j") / $__range_s AS "power_w" FROM {src(WL_NODE)} '
                          f"WHERE {node} AND $timeFilter", alias="power_w")], (12, 0, 6, 4), "watt"),
        stat("Tagged share", "Share of the host's energy charged to tagged jobs (the rest is untagged, "
                             "system, idle and the agent).",
             [target("A", f'SELECT sum("energy_j") AS "tagged_j" FROM {src(WL_JOB)} WHERE {job_rows} '
                          "AND \"job\" !~ /^_/ AND $timeFilter", alias="tagged_j"),
              target("B", f'SELECT sum("energy_j") AS "all_j" FROM {src(WL_JOB)} WHERE {job_rows} '
                          "AND $timeFilter", alias="all_j")],
             (18, 0, 6, 4), "percentunit",
             transformations=[
                 {"id": "joinByField", "options": {"byField": "Time", "mode": "inner"}},
                 {"id": "calculateField", "options": {
                     "mode": "binary",
                     "binary": {"left": "tagged_j", "operator": "/", "right": "all_j"},
                     "alias": "tagged share"}},
                 {"id": "filterFieldsByName", "options": {"include": {"names": ["tagged share"]}}},
             ]),
        timeseries("Host power by component",
                   "Mean power per bucket (energy / bucket length), stacked: the top line is the host.",
                   [target("A", _power_w(WL_NODE, node, '"component"'), alias="$tag_component")],
                   (0, 4, 12, 9), "watt", stack=True),
        timeseries("Where the energy went",
                   "The same energy split by the ledger: tagged jobs, untagged processes, system "
                   "(kernel, processes gone before they were seen), idle (static power nobody used), "
                   "and wattledger itself.",
                   [target(chr(ord("A") + i), _power_w(WL_JOB, f"{job_rows} AND {cond}"), alias=name)
                    for i, (name, cond) in enumerate(ENERGY_CLASSES)],
                   (12, 4, 12, 9), "watt", stack=True),
        piechart("Energy shares", "Tagged, untagged, system, idle and agent energy over the range.",
                 [target(chr(ord("A") + i), _kwh(f"{job_rows} AND {cond}", alias=name), alias=name)
                  for i, (name, cond) in enumerate(ENERGY_CLASSES)],
                 (0, 13, 8, 8), "kwatth"),
        bargauge("Energy by component", "IT energy per component (cpu, dram, gpu, ...) over the range.",
                 [target("A", f'SELECT sum("energy_j") / {KWH_J} AS "it_kwh" FROM {src(WL_NODE)} '
                              f'WHERE {node} AND $timeFilter GROUP BY "component"', alias="$tag_component")],
                 (8, 13, 8, 8), "kwatth"),
        table("Devices", "Last reading of each measured device; source says how it was measured "
                         "(model estimates are flagged as such).",
              [target("A", f'SELECT last("power_w") AS "power_w", last("idle_w") AS "idle_w" FROM "{WL_NODE}" '
                           f'WHERE {node} AND $timeFilter GROUP BY "host", "component", "device", "source"',
                      table=True)],
              (16, 13, 8, 8), "watt"),
        *host_embodied_panels(node, 21),
    ]
    return _dashboard("wattledger-overview", "wattledger / Overview",
                      "Host power by component and how the ledger split it.",
                      [datasource_variable(), host_variable(), pue_variable(defaults), *tier_variables(),
                       *tier_variables(J)], panels)


def job(defaults: Defaults = Defaults()) -> Dashboard:
    where = JOB_FILTER
    panels: list[Panel] = [
        stat("IT energy", "Energy charged to this job (all its devices, on every host it ran on).",
             [target("A", _kwh(where, tier=J), alias="it_kwh")], (0, 0, 6, 4), "kwatth"),
        stat("Facility energy", "IT energy x $pue.",
             [target("A", _kwh(where, pue=True, tier=J), alias="facility_kwh")], (6, 0, 6, 4), "kwatth"),
        stat("CO2e", "Sum over UTC hours of facility kWh x the zone's intensity in that hour.",
             co2e_targets(WL_JOB, where, J), (12, 0, 6, 4), "massg", transformations=co2e_transformations(False)),
        stat("Device time", "Seconds of the job's cost driver (CPU seconds, GPU SM-busy seconds).",
             [target("A", f'SELECT sum("driver_s") AS "driver_s" FROM {src(WL_JOB, J)} WHERE {where} '
                          'AND $timeFilter',
                     alias="driver_s")], (18, 0, 6, 4), "s"),
        *embodied_panels(where, 4, J),
        timeseries("Power by component", "Mean power charged to the job per bucket, by component.",
                   [target("A", _power_w(WL_JOB, where, '"component"', J), alias="$tag_component")],
                   (0, 8, 12, 8), "watt", stack=True),
        timeseries("Energy per hour", "IT and facility (x $pue) energy per UTC hour.",
                   [target("A", f'SELECT sum("energy_j") / {KWH_J} AS "it_kwh", '
                                f'sum("energy_j") / {KWH_J} * $pue AS "facility_kwh" FROM {src(WL_JOB, J)} '
                                f"WHERE {where} AND $timeFilter GROUP BY time(1h) fill(0)", alias="$col")],
                   (12, 8, 12, 8), "kwatth", bars=True),
        timeseries("CO2e per hour and cumulative",
                   "g CO2e per UTC hour (facility kWh x intensity) and its running total over the range.",
                   co2e_targets(WL_JOB, where, J), (0, 16, 24, 9), "massg",
                   transformations=co2e_transformations(True)),
        table("Breakdown by host", "Energy of the job per host and component (a job that ran on several hosts "
                                   "has a line per host): dynamic follows its driver, static is its share of "
                                   "idle power.",
              [target("A", f'SELECT sum("energy_j") / {KWH_J} AS "it_kwh", '
                           f'sum("dynamic_j") / {KWH_J} AS "dynamic_kwh", '
                           f'sum("static_j") / {KWH_J} AS "static_kwh", sum("driver_s") AS "driver_s" '
                           f'FROM {src(WL_JOB, J)} WHERE {where} AND $timeFilter '
                           'GROUP BY "host", "user", "component", "source"', table=True)],
              (0, 25, 24, 7), "none", overrides=[
                  {"matcher": {"id": "byRegexp", "options": "/_kwh$/"},
                   "properties": [{"id": "unit", "value": "kwatth"}]},
              ]),
    ]
    variables = [
        datasource_variable(),
        query_variable("job", "Job", f'SHOW TAG VALUES FROM "{WL_JOB}" WITH KEY = "job"',
                       description="The job tag (WATTLEDGER_JOB, Slurm id, container). Names starting "
                                   "with _ are the ledger's own: _untagged, _system, _idle, _agent."),
        query_variable("user", "User", f"SHOW TAG VALUES FROM \"{WL_JOB}\" WITH KEY = \"user\" WHERE \"job\" = '$job'",
                       multi=True, description="A job is (user, tag): two users' jobs with one tag stay apart."),
        host_variable(WL_JOB),
        pue_variable(defaults),
        *carbon_variables(defaults),
        *tier_variables(J),
    ]
    return _dashboard("wattledger-job", "wattledger / Job",
                      "One job's energy, facility energy (x PUE), CO2e and embodied CO2e, over time and in total.",
                      variables, panels, time_from="now-7d")


def ledger(defaults: Defaults = Defaults()) -> Dashboard:
    where = LEDGER_FILTER
    by_job = (f'SELECT sum("energy_j") / {KWH_J} AS "it_kwh", sum("energy_j") / {KWH_J} * $pue '
              f'AS "facility_kwh" FROM {src(WL_JOB, J)} WHERE {where} AND $timeFilter '
              'GROUP BY "user", "project", "phase", "job"')
    job_link = [{"title": "Job page",
                 "url": "/d/wattledger-job/?var-job=${__value.text}&${__url_time_range}"}]

    def by(tag: str, y: int, x: int) -> Panel:
        return bargauge(f"Facility energy by {tag}", f"IT energy x $pue, per {tag}, over the range.",
                        [target("A", f'SELECT sum("energy_j") / {KWH_J} * $pue AS "facility_kwh" '
                                     f'FROM {src(WL_JOB)} WHERE {where} AND $timeFilter GROUP BY "{tag}"',
                                alias=f"$tag_{tag}")], (x, y, 8, 8), "kwatth",
                        transformations=[name_untagged(tag)])

    def owned(tag: str, y: int, x: int) -> Panel:
        return bargauge(f"Facility energy by {tag}",
                        f"IT energy x $pue, per {tag} and owner, over the range: a project is its user's "
                        "(shared by several users only where the admin says so).",
                        owned_targets(tag, where, defaults.shared_projects), (x, y, 8, 8), "kwatth",
                        transformations=[name_untagged(tag)])

    panels: list[Panel] = [
        by("user", 0, 0), owned("project", 0, 8), owned("phase", 0, 16),
        stat("CO2e of the selection", "All jobs of the selected users, projects and phases: sum over UTC "
                                      "hours of facility kWh x the zone's intensity. For a table per user, "
                                      "project or phase: wattledger report --by user.",
             co2e_targets(WL_JOB, where), (0, 8, 8, 4), "massg", transformations=co2e_transformations(False)),
        stat("Facility energy of the selection", "IT energy x $pue of the selected users, projects and phases.",
             [target("A", _kwh(where, pue=True), alias="facility_kwh")], (0, 12, 8, 4), "kwatth"),
        timeseries("Power by user", "Mean power charged to each user's jobs, stacked.",
                   [target("A", _power_w(WL_JOB, where, '"user"'), alias="$tag_user")],
                   (8, 8, 16, 8), "watt", stack=True, transformations=[name_untagged("user")]),
        *embodied_panels(where, 16),
        table("Ledger", "Energy per user, project, phase and job over the range (facility = IT x $pue). "
                        "Click a job for its page.",
              [target("A", by_job, table=True)], (0, 20, 24, 10), "kwatth", overrides=[
                  {"matcher": {"id": "byName", "options": "job"},
                   "properties": [{"id": "links", "value": job_link}]},
              ]),
    ]
    variables = [
        datasource_variable(),
        query_variable("user", "User", f'SHOW TAG VALUES FROM "{WL_JOB}" WITH KEY = "user"', multi=True),
        query_variable("project", "Project", f'SHOW TAG VALUES FROM "{WL_JOB}" WITH KEY = "project"', multi=True,
                       description="WATTLEDGER_PROJECT; All also matches jobs without one."),
        query_variable("phase", "Phase", f'SHOW TAG VALUES FROM "{WL_JOB}" WITH KEY = "phase"', multi=True,
                       description="WATTLEDGER_PHASE: search, train, inference or free text."),
        host_variable(WL_JOB),
        pue_variable(defaults),
        *carbon_variables(defaults),
        *tier_variables(),
        *tier_variables(J),
    ]
    return _dashboard("wattledger-ledger", "wattledger / Ledger",
                      "Energy, facility energy and CO2e by user, project, phase and job.", variables, panels,
                      time_from="now-30d")


def carbon(defaults: Defaults = Defaults()) -> Dashboard:
    panels: list[Panel] = [
        timeseries("Grid carbon intensity", "Every provider and kind stored for the zone.",
                   [target("A", f'SELECT mean("g_per_kwh") FROM {src(WL_CARBON)} WHERE "zone" = \'$zone\' '
                                'AND $timeFilter GROUP BY time($res), "provider", "kind" fill(none)',
                           alias="$tag_provider ($tag_kind)")],
                   (0, 0, 16, 8), "none"),
        stat("Intensity in range", "Mean, min and max of the selected provider and kind (g CO2e/kWh).",
             [target("A", f'SELECT mean("g_per_kwh") AS "mean", min("g_per_kwh") AS "min", '
                          f'max("g_per_kwh") AS "max" FROM {src(WL_CARBON)} WHERE {CARBON_FILTER} AND $timeFilter',
                     alias="$col")],
             (16, 0, 8, 4), "none", calcs="lastNotNull", decimals=1),
        text("PUE applied", "Facility energy on these dashboards is IT energy x **${pue}** "
                            "(the `pue` variable).\n\nHours without a wl_carbon point use **${ci_fallback}** "
                            "g/kWh (the `ci_fallback` variable), as `wattledger report` uses the static figure.",
             (16, 4, 8, 4)),
        timeseries("Measured PUE", "wl_pue series per site, when the site publishes one.",
                   [target("A", f'SELECT mean("pue") FROM {src(WL_PUE)} WHERE $timeFilter '
                                'GROUP BY time($res), "site" fill(none)', alias="$tag_site")],
                   (0, 8, 12, 8), "none"),
        stat("Host CO2e", "All selected hosts: sum over UTC hours of facility kWh x intensity.",
             co2e_targets(WL_NODE, HOST_FILTER), (12, 8, 12, 4), "massg",
             transformations=co2e_transformations(False)),
        stat("Hours with an intensity point",
             "UTC hours of the range that have a wl_carbon point for the selected zone, provider and kind; "
             "the others use the fallback figure. `wattledger carbon sync` fills them in.",
             [target("A", 'SELECT count("g") AS "hours" FROM (SELECT mean("g_per_kwh") AS "g" '
                          f'FROM {src(WL_CARBON)} WHERE {CARBON_FILTER} AND $timeFilter GROUP BY time(1h) fill(none))',
                     alias="hours")],
             (12, 12, 12, 4), "none", calcs="lastNotNull"),
        timeseries("Host CO2e per hour and cumulative",
                   "g CO2e per UTC hour of the selected hosts and its running total.",
                   co2e_targets(WL_NODE, HOST_FILTER), (0, 16, 24, 9), "massg",
                   transformations=co2e_transformations(True)),
    ]
    return _dashboard("wattledger-carbon", "wattledger / Carbon intensity and PUE",
                      "Grid carbon intensity, PUE, and the host's CO2e.",
                      [datasource_variable(), host_variable(), pue_variable(defaults), *carbon_variables(defaults),
                       *tier_variables()], panels,
                      time_from="now-7d")


def agent(defaults: Defaults = Defaults()) -> Dashboard:
    where = HOST_FILTER

    def series(select: str, group: str = "time($res), \"host\"", fill: str = "fill(none)") -> str:
        return f'SELECT {select} FROM "{WL_AGENT}" WHERE {where} AND $timeFilter GROUP BY {group} {fill}'

    counters = ("delivered", "dropped", "write_errors")
    panels: list[Panel] = [
        stat("Spooled now", "Points waiting in the local spool for the sink.",
             [target("A", f'SELECT last("spooled") AS "spooled" FROM "{WL_AGENT}" WHERE {where} AND $timeFilter '
                          'GROUP BY "host"', alias="$tag_host")], (0, 0, 6, 4), "none", calcs="lastNotNull"),
        stat("Dropped in range", "Spooled points dropped because the spool was full (lost for the sink; "
                                 "still in the local ledger).",
             [target("A", f'SELECT spread("dropped") AS "dropped" FROM "{WL_AGENT}" WHERE {where} AND $timeFilter '
                          'GROUP BY "host"', alias="$tag_host")], (6, 0, 6, 4), "none"),
        stat("Write errors in range", "Failed writes to the sink (counter restarts with the agent).",
             [target("A", 'SELECT sum("d") AS "write_errors" FROM (SELECT non_negative_difference("write_errors") '
                          f'AS "d" FROM "{WL_AGENT}" WHERE {where} AND $timeFilter GROUP BY "host") '
                          'GROUP BY "host"', alias="$tag_host")], (12, 0, 6, 4), "none"),
        stat("Agent CPU", "wattledger's own CPU time as a share of one core over the range.",
             [target("A", f'SELECT sum("cpu_s") / $__range_s * 100 AS "cpu_pct" FROM "{WL_AGENT}" '
                          f'WHERE {where} AND $timeFilter GROUP BY "host"', alias="$tag_host")],
             (18, 0, 6, 4), "percent", decimals=2),
        timeseries("Tick duration", "Time one tick's work took (mean and max per bucket).",
                   [target("A", series('mean("tick_s") AS "mean", max("tick_s") AS "max"'),
                           alias="$tag_host $col")], (0, 4, 12, 8), "s"),
        timeseries("Agent CPU", "CPU seconds per second of wall time, as % of one core.",
                   [target("A", series('sum("cpu_s") * 100 / $res_s AS "cpu_pct"'),
                           alias="$tag_host")], (12, 4, 12, 8), "percent"),
        timeseries("Memory (RSS)", "Resident memory of the agent.",
                   [target("A", series('max("rss_bytes") AS "rss_bytes"'), alias="$tag_host")],
                   (0, 12, 12, 8), "bytes"),
        timeseries("Spool", "Points waiting in the spool.",
                   [target("A", series('last("spooled") AS "spooled"'), alias="$tag_host")],
                   (12, 12, 12, 8), "none"),
        timeseries("Delivery", "Points delivered, dropped, and write errors per bucket (from the counters).",
                   [target("A", series(", ".join(f'non_negative_difference(max("{c}")) AS "{c}"' for c in counters)),
                           alias="$tag_host $col")], (0, 20, 24, 8), "none", bars=True),
    ]
    return _dashboard("wattledger-agent", "wattledger / Agent health",
                      "Is the agent keeping up: tick time, its own CPU and memory, the spool and delivery.",
                      [datasource_variable(), query_variable("host", "Host",
                                                             f'SHOW TAG VALUES FROM "{WL_AGENT}" WITH KEY = "host"',
                                                             multi=True), *tier_variables()],
                      panels, time_from="now-6h")


BUILDERS = {
    "wattledger-overview.json": overview,
    "wattledger-job.json": job,
    "wattledger-ledger.json": ledger,
    "wattledger-carbon.json": carbon,
    "wattledger-agent.json": agent,
}


def all_dashboards(defaults: Defaults = Defaults()) -> dict[str, Dashboard]:
    """file name -> dashboard, in a stable order."""
    return {name: build(defaults) for name, build in BUILDERS.items()}


def render(dashboard: Dashboard) -> str:
    """The exact text of an exported dashboard file (stable: sorted keys, 2-space indent)."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def panels(dashboard: Dashboard) -> Iterable[Panel]:
    """Every panel, including those nested in rows."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])

"""The Overview and Job dashboards for a Prometheus datasource (the agent's ``/metrics``), as plain dicts.

Same panels as their InfluxDB twins (dashboards.py) where Prometheus can say
the same thing, from the exporter's series (agent/exporter.py):
``wattledger_job_energy_joules_total``, ``wattledger_pool_energy_joules_total``,
``wattledger_node_energy_joules_total`` and the gauges
``wattledger_pue_ratio`` and ``wattledger_grid_intensity_grams_per_kwh``.

The CO2e rule is the one of every other reader: energy x PUE x grid
intensity, with PUE and intensity those of the hour the energy was used. The
agent's gauges carry the current hour's figures (wl_pue / wl_carbon by the
report's rule, else ``[pue] value`` and the static intensity), so PromQL
multiplies each step's energy by the gauges at that step and sums the steps::

    sum(sum_over_time((
        sum by (host) ((L - L offset $energy_step) >= 0 or (clamp_min(P - L offset $energy_step, 0) + L) or L)
                    L: last_over_time(E{...}[1h]), P: max_over_time(E{...}[$energy_step])
      * on (host) group_left () max by (host) (last_over_time(wattledger_pue_ratio[1h]))
      * on (host) group_left () max by (host) (last_over_time(wattledger_grid_intensity_grams_per_kwh[1h]))
    )[$__range:$energy_step])) / 3600000

A step's energy is the counter's difference over the step, not
``increase()``: increase() extrapolates each window to its edges, which over
many short windows (and at a job's first scrape) adds or drops energy; the
differences add up to what the counters counted (a step with a reset counts
the gain up to the peak plus the new value, a new series its whole value). IT and facility energy are the same
sum without the gauges, so facility / IT is the PUE. ``$energy_step``
(default 1m, at least one scrape interval) bounds how far a step can straddle
an hour. Prometheus keeps the gauges as the agent saw them: a later ``carbon
sync`` that corrects an hour changes the report and the InfluxDB dashboards,
not Prometheus' history (docs/prometheus.md).

The series need ``honor_labels: true`` in the scrape config: without it
Prometheus renames the agent's ``job`` label (the wattledger job) to
``exported_job`` and these queries find no job.
"""

from __future__ import annotations

from typing import Any

from wattledger.grafana.dashboards import (
    KWH_J, TAG, Dashboard, Panel, _dashboard, bargauge, piechart, stat, table, textbox_variable, timeseries,
)
from wattledger.grafana.defaults import Defaults
from wattledger.model.jobs import AGENT, IDLE, SYSTEM, UNTAGGED

DATASOURCE_UID = "wattledger-prometheus"
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
JOB_E = "wattledger_job_energy_joules_total"
POOL_E = "wattledger_pool_energy_joules_total"
NODE_E = "wattledger_node_energy_joules_total"
PUE = "wattledger_pue_ratio"
CI = "wattledger_grid_intensity_grams_per_kwh"
DEFAULT_STEP = "1m"

HOST = 'host=~"$host"'
JOB = 'job="$job", user=~"$user", host=~"$host"'
CLASSES: tuple[tuple[str, str], ...] = (
    ("tagged", 'job!~"_.*"'),
    ("untagged", f'job="{UNTAGGED}"'),
    ("system", f'job="{SYSTEM}"'),
    ("idle", f'job="{IDLE}"'),
    ("agent", f'job="{AGENT}"'),
)


def kwh(metric: str, labels: str, by: str = "") -> str:
    """IT kWh per group over the dashboard's range: the steps' energy summed (see ``step_j``)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (sum_over_time(({step_j(metric, labels, by or 'host')})[$__range:$energy_step])) / {KWH_J}"


def power_w(metric: str, labels: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{labels}}}[$__rate_interval]))"


def step_j(metric: str, labels: str, by: str = "host") -> str:
    """Joules of each ``$energy_step``, without increase()'s extrapolation, so that the steps of a range add
    up to what the counters counted:

    * the counter's last value minus its last value one step earlier; "last value" is the newest sample
      within an hour (``last_over_time``), so a step in which the agent was restarting (its series stale
      for a scrape or two) still counts;
    * a counter reset within the step (it went down): what it gained before the reset (its peak in the step
      above the last value, or nothing if every sample in the step is after the reset), plus its new value;
    * a series born within the step (nothing a step earlier): its whole value.
    """
    series = f"{metric}{{{labels}}}"
    now = f"last_over_time({series}[1h])"
    before = f"last_over_time({series}[1h] offset $energy_step)"
    peak = f"max_over_time({series}[$energy_step])"
    return f"sum by ({by}) (({now} - {before}) >= 0 or (clamp_min({peak} - {before}, 0) + {now}) or {now})"


def per_step(metric: str, labels: str, *, intensity: bool) -> str:
    """Joules of each step x PUE (x intensity), per host: the CO2e rule's inner term."""
    term = f"{step_j(metric, labels)}\n  * on (host) group_left () {gauge(PUE)}"
    if intensity:
        term += f"\n  * on (host) group_left () {gauge(CI)}"
    return term


def gauge(metric: str) -> str:
    """A per-host hourly figure at each step: its last value within the hour, so that a scrape missed
    (an agent restart) does not drop the step's energy from the product."""
    return f"max by (host) (last_over_time({metric}[1h]))"


def facility_kwh(metric: str, labels: str) -> str:
    """Facility kWh over the range: each step's energy x that step's PUE, summed."""
    return f"sum(sum_over_time(({per_step(metric, labels, intensity=False)})[$__range:$energy_step])) / {KWH_J}"


def co2e_g(metric: str, labels: str) -> str:
    """g CO2e over the range: each step's energy x PUE x intensity, summed (the rule above)."""
    return f"sum(sum_over_time(({per_step(metric, labels, intensity=True)})[$__range:$energy_step])) / {KWH_J}"


def co2e_g_per_step(metric: str, labels: str) -> str:
    """g CO2e of each step (a time series)."""
    return f"sum({per_step(metric, labels, intensity=True)}) / {KWH_J}"


def target(ref_id: str, expr: str, legend: str = "", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"refId": ref_id, "datasource": DS, "expr": expr, "editorMode": "code",
                         "range": not instant, "instant": instant}
    if legend:
        t["legendFormat"] = legend
    return t


def _prom(panel: Panel) -> Panel:
    """A panel built by dashboards.py's helpers, pointed at the Prometheus datasource."""
    panel["datasource"] = DS
    return panel


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
        "current": {"selected": False, "text": "wattledger-prometheus", "value": DATASOURCE_UID},
        "hide": 0, "refresh": 1, "regex": "", "multi": False, "includeAll": False, "options": [],
    }


def label_variable(name: str, label: str, query: str, multi: bool = False, description: str = "") -> dict[str, Any]:
    v: dict[str, Any] = {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
        "refresh": 2, "sort": 1, "regex": "", "hide": 0, "multi": multi, "includeAll": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {}, "options": [],
    }
    if multi:
        v["allValue"] = ".*"
    if description:
        v["description"] = description
    return v


def step_variable() -> dict[str, Any]:
    return textbox_variable(
        "energy_step", "Energy step", DEFAULT_STEP,
        "Energy is summed, and multiplied by PUE and grid intensity, per step of this length: at least a "
        "scrape interval (the gauges change once an hour). Totals count whole steps up to the range's end.")


def host_variable() -> dict[str, Any]:
    return label_variable("host", "Host", f"label_values({NODE_E}, host)", multi=True)


def overview(defaults: Defaults = Defaults()) -> Dashboard:
    panels: list[Panel] = [
        stat("IT energy", "Energy the host's measured sources report in the range.",
             [target("A", kwh(NODE_E, HOST), "it_kwh", instant=True)], (0, 0, 6, 4), "kwatth"),
        stat("Facility energy", "IT energy x the PUE of the hour it was used (wattledger_pue_ratio).",
             [target("A", facility_kwh(NODE_E, HOST), "facility_kwh", instant=True)], (6, 0, 6, 4), "kwatth"),
        stat("Host CO2e", "Energy x PUE x grid intensity of the hour it was used, summed over the range.",
             [target("A", co2e_g(NODE_E, HOST), "CO2e", instant=True)], (12, 0, 6, 4), "massg"),
        stat("Tagged share", "Share of the host's energy charged to tagged jobs (the rest is untagged, "
                             "system, idle and the agent).",
             [target("A", f"{kwh(JOB_E, HOST + ', ' + CLASSES[0][1])} / {kwh(JOB_E, HOST)}", "tagged share",
                     instant=True)], (18, 0, 6, 4), "percentunit"),
        timeseries("Host power by component",
                   "Mean power per step from the pools' energy counters, stacked: the top line is the host.",
                   [target("A", power_w(POOL_E, HOST, "component"), "{{component}}")], (0, 4, 12, 9), "watt",
                   stack=True, interval=""),
        timeseries("Where the energy went",
                   "The same energy split by the ledger: tagged jobs, untagged processes, system, idle (static "
                   "power nobody used), and wattledger itself.",
                   [target(chr(ord("A") + i), power_w(JOB_E, f"{HOST}, {cond}"), name)
                    for i, (name, cond) in enumerate(CLASSES)], (12, 4, 12, 9), "watt", stack=True, interval=""),
        piechart("Energy shares", "Tagged, untagged, system, idle and agent energy over the range.",
                 [target(chr(ord("A") + i), kwh(JOB_E, f"{HOST}, {cond}"), name, instant=True)
                  for i, (name, cond) in enumerate(CLASSES)], (0, 13, 8, 8), "kwatth"),
        bargauge("Energy by component", "IT energy per component (cpu, dram, gpu, ...) over the range.",
                 [target("A", kwh(POOL_E, HOST, "component"), "{{component}}", instant=True)],
                 (8, 13, 8, 8), "kwatth"),
        table("Devices", "Last power and idle power of each measured pool; source says how it was measured.",
              [target("A", f"wattledger_pool_power_watts{{{HOST}}}", instant=True),
               target("B", f"wattledger_pool_idle_watts{{{HOST}}}", instant=True)],
              (16, 13, 8, 8), "watt"),
    ]
    return _dashboard("wattledger-prom-overview", "wattledger / Overview (Prometheus)",
                      "Host power by component and how the ledger split it, from the agent's /metrics.",
                      [datasource_variable(), host_variable(), step_variable()],
                      [_prom(p) for p in panels])


def job(defaults: Defaults = Defaults()) -> Dashboard:
    panels: list[Panel] = [
        stat("IT energy", "Energy charged to this job (all its devices) in the range.",
             [target("A", kwh(JOB_E, JOB), "it_kwh", instant=True)], (0, 0, 6, 4), "kwatth"),
        stat("Facility energy", "IT energy x the PUE of the hour it was used.",
             [target("A", facility_kwh(JOB_E, JOB), "facility_kwh", instant=True)], (6, 0, 6, 4), "kwatth"),
        stat("CO2e", "Energy x PUE x grid intensity of the hour it was used, summed over the range.",
             [target("A", co2e_g(JOB_E, JOB), "CO2e", instant=True)], (12, 0, 6, 4), "massg"),
        stat("Mean power", "The job's energy in the range / the range's length.",
             [target("A", f"{kwh(JOB_E, JOB)} * {KWH_J} / $__range_s", "power_w", instant=True)],
             (18, 0, 6, 4), "watt"),
        timeseries("Power by component", "Mean power charged to the job, by component.",
                   [target("A", power_w(JOB_E, JOB, "component"), "{{component}}")], (0, 4, 12, 8), "watt",
                   stack=True, interval=""),
        timeseries("CO2e per step", "g CO2e of each $energy_step (energy x PUE x intensity).",
                   [target("A", co2e_g_per_step(JOB_E, JOB), "CO2e")], (12, 4, 12, 8), "massg", bars=True,
                   interval="$energy_step"),
        table("Breakdown by device", "IT energy of the job per host, user and device over the range.",
              [target("A", kwh(JOB_E, JOB, "host, user, component, device"), instant=True)],
              (0, 12, 24, 7), "kwatth"),
    ]
    variables = [
        datasource_variable(),
        label_variable("job", "Job", f"label_values({JOB_E}, job)",
                       description="The job tag (WATTLEDGER_JOB, slurm-<id>, container). Only jobs charged within "
                                   "the agent's [prometheus] active_window_s are listed."),
        label_variable("user", "User", f'label_values({JOB_E}{{job="$job"}}, user)', multi=True),
        label_variable("host", "Host", f"label_values({JOB_E}, host)", multi=True),
        step_variable(),
    ]
    return _dashboard("wattledger-prom-job", "wattledger / Job (Prometheus)",
                      "One job's energy, facility energy (x PUE) and CO2e, from the agent's /metrics.",
                      variables, [_prom(p) for p in panels], time_from="now-7d")


BUILDERS = {
    "prometheus/wattledger-prom-overview.json": overview,
    "prometheus/wattledger-prom-job.json": job,
}


def all_dashboards(defaults: Defaults = Defaults()) -> dict[str, Dashboard]:
    """file name (under the export directory) -> dashboard."""
    return {name: build(defaults) for name, build in BUILDERS.items()}


__all__ = ["BUILDERS", "DATASOURCE_UID", "DS", "TAG", "all_dashboards", "co2e_g", "facility_kwh", "job", "kwh",
           "overview"]

"""One job's summary (``report --job TAG``) as text, CSV or JSON. Pure.

The table is for the researcher: energy in the unit that suits its size (J,
Wh or kWh; ``--unit`` fixes it), CO2e in g or kg, and each figure's source.
CSV and JSON keep fixed units (kWh, g) with the unit in the column name, and
CSV numbers carry no float noise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from wattledger.model.units import J_PER_KWH
from wattledger.report.jobview import JobSummary
from wattledger.report.model import Report
from wattledger.util.energyfmt import energy_text, mass_text, plain
from wattledger.util.jsontext import json_document
from wattledger.util.timeutil import iso


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _marks(s: JobSummary) -> list[str]:
    r = s.row
    out = []
    if r.fallback_it_j > 0:
        out.append("F: some hours' intensity is the static figure")
    if r.estimated_it_j > 0:
        out.append(f"E: {energy_text(r.estimated_it_j)} of it is a model ESTIMATE (no counter)")
    if r.run_it_j > 0:
        out.append(f"R: {energy_text(r.run_it_j)} of it from `wattledger run` records")
    return out


def _share_text(s: JobSummary, unit: str) -> str:
    t = s.ticks
    if s.host_share is None or t is None or t.host_j is None:
        return "not known (figures from `wattledger run` records: the host's energy was not kept)"
    unused = f"; unused capacity {100 * s.unused_share:.1f}%" if s.unused_share is not None else ""
    return f"{100 * s.host_share:.1f}% of the {energy_text(t.host_j, unit)} the host used in its ticks{unused}"


def summary_lines(s: JobSummary, unit: str, per_host: bool = False) -> list[str]:
    """The lines of one job's summary; ``unit`` is J, Wh, kWh or auto; ``per_host``: each host's part."""
    r, t = s.row, s.ticks
    parts = ", ".join(f"{c} {energy_text(j, unit)}" for c, j in sorted(r.it_j_by_component.items()))
    g_per_kwh = f"{r.g_per_kwh:.4g} g/kWh" if r.g_per_kwh is not None else "-"
    lines = [f"Job {s.job}, user {s.user or '(none)'}"]
    if t is not None:
        lines.append(f"  ran              {iso(t.first_ns)} .. {iso(t.last_ns)}, charged for "
                     f"{duration_text(t.active_s)} ({t.ticks:,} tick{'s' if t.ticks != 1 else ''})")
    lines += [
        f"  energy (IT)      {energy_text(r.it_j, unit):<12} {parts}",
        f"  facility energy  {energy_text(r.facility_kwh * J_PER_KWH, unit):<12} (x PUE: {s.pue})",
        f"  CO2e             {mass_text(r.g_co2e):<12} at {g_per_kwh} ({s.intensity_source})",
        *([f"  embodied CO2e    {mass_text(r.embodied_g):<12} the hardware's share: GPUs held, CPU share of the "
           "rest (docs/embodied.md)",
           f"  total CO2e       {mass_text(r.total_g):<12} {100 * r.embodied_g / r.total_g:.0f}% embodied"]
          if r.embodied_g > 0 else []),
        f"  GPU-hours held   {s.gpu_hours:.4g}" if s.gpu_hours is not None else "  GPU-hours held   -",
        f"  share of host    {_share_text(s, unit)}",
    ]
    lines += [f"  {m}" for m in _marks(s)]
    if per_host:  # a job that ran on several hosts: each host's part of it
        lines += [f"  on host {h:<10} {energy_text(x.it_j, unit):<12} CO2e {mass_text(x.g_co2e)}"
                  for h, x in sorted(r.hosts.items())]
    return lines


def format_jobs(report: Report, summaries: Sequence[JobSummary], fmt: str, unit: str = "auto") -> str:
    """The summaries in ``fmt`` (table, csv, json)."""
    if fmt == "json":  # the report's own document, and the summaries beside its rows
        return json_document({**report.to_dict(), "jobs": [s.to_dict() for s in summaries]})
    if fmt == "csv":
        return _csv(report, summaries)
    head = f"One job's energy and CO2e, {iso(report.since_ns)} .. {iso(report.until_ns)}  ({report.origin})"
    if not summaries:
        return head + "\n\nNo energy for this job in this window: check the tag (`wattledger report` lists " \
                      "the jobs) or try a longer --since.\n"
    blocks = ["\n".join(summary_lines(s, unit, report.per_host)) for s in summaries]
    return "\n\n".join([head, *blocks]) + "\n" + ("\n" + "\n".join(report.notes()) + "\n" if report.notes() else "")


def _csv(report: Report, summaries: Sequence[JobSummary]) -> str:
    comps = report.components
    fields = ["job", "user", "first", "last", "duration_s", "ticks", "it_kwh", *(f"{c}_kwh" for c in comps),
              "facility_kwh", "g_co2e", "embodied_g_co2e", "total_g_co2e", "g_per_kwh", "intensity_source",
              "gpu_hours_held", "host_share",
              "unused_capacity_share", "estimated_kwh", "from_run_records_kwh"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for s in summaries:
        d = s.to_dict()
        row: dict[str, Any] = {k: d.get(k) for k in ("job", "user", "first", "last", "duration_s", "ticks",
                                                      "g_co2e", "g_per_kwh", "intensity_source", "gpu_hours_held",
                                                      "host_share")}
        row.update(it_kwh=s.row.it_kwh, facility_kwh=s.row.facility_kwh, estimated_kwh=s.row.estimated_kwh,
                   embodied_g_co2e=s.row.embodied_g, total_g_co2e=s.row.total_g,
                   unused_capacity_share=s.unused_share, from_run_records_kwh=s.row.run_it_j / J_PER_KWH,
                   **{f"{c}_kwh": s.row.it_j_by_component.get(c, 0.0) / J_PER_KWH for c in comps})
        w.writerow({k: "" if v is None else plain(v) if isinstance(v, float) else v for k, v in row.items()})
    return buf.getvalue()

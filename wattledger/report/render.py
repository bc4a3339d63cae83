"""A report as text: a table for people, CSV and JSON for programs (and the life-cycle model the same three ways).

Pure: a ``Report`` (or ``Lifecycle``) in, a string out. The idle baselines a
ledger report lists come in as data (``PoolBaseline``), never by editing the
rendered text.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from wattledger.model.units import J_PER_KWH
from wattledger.report.lifecycle import Lifecycle
from wattledger.report.model import PoolBaseline, Report, ReportError, Row
from wattledger.report.numfmt import num
from wattledger.util.timeutil import iso

FORMATS = ("table", "csv", "json")


def render(report: Report, fmt: str, idle_baselines: Sequence[PoolBaseline] = ()) -> str:
    """The report in ``fmt`` (table, csv or json); the baselines go in the table and JSON, not CSV."""
    if fmt == "table":
        return format_table(report, idle_baselines)
    if fmt == "csv":
        return format_csv(report)
    if fmt == "json":
        return format_json(report, idle_baselines)
    raise ReportError(f"--format must be table, csv or json, got {fmt!r}")


# -- table ---------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, *rows]:
        cells = [str(v).rjust(w) if i >= right_from else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return out


def _marks(r: Row) -> str:
    return ("F" if r.fallback_it_j > 0 else "") + ("E" if r.estimated_it_j > 0 else "")


def format_table(report: Report, idle_baselines: Sequence[PoolBaseline] = ()) -> str:
    lines = [
        f"Energy and CO2e by {report.by}, {iso(report.since_ns)} .. {iso(report.until_ns)}  ({report.origin})",
        f"zone {report.zone}; PUE {report.pue}",
        "",
    ]
    if not report.rows:
        lines.append("No wl_job energy in this window. Is the agent running (`wattledger doctor`)? "
                     "Try a longer --since.")
    else:
        lines += _rows_table(report)
        lines.append("")
        lines.append(_host_energy_line(report))
        lines.append(_intensity_line(report))
        lines += report.notes()
    return "\n".join(lines) + "\n" + _baselines_text(idle_baselines)


def _rows_table(report: Report) -> list[str]:
    """One line per row and TOTAL; one IT kWh column per component when there is more than one (cpu, dram, gpu)."""
    cols = report.columns
    parts = report.components if len(report.components) > 1 else []

    def split(r: Row) -> list[str]:
        return [num(r.it_j_by_component.get(c, 0.0) / J_PER_KWH) for c in parts]

    header = [*cols, "IT kWh", *(f"{c} kWh" for c in parts), "facility kWh", "gCO2e", "g/kWh", ""]

    def line(key: Sequence[str], r: Row) -> list[str]:
        return [*key, num(r.it_kwh), *split(r), num(r.facility_kwh), num(r.g_co2e), num(r.g_per_kwh, 3), _marks(r)]

    body = []
    for r in report.rows:
        body.append(line([v or "(none)" for v in r.key], r))
        if report.per_host:  # one indented line per host under its row: a job across hosts stays one row
            body += [line([f"  host {h}", *[""] * (len(cols) - 1)], x) for h, x in sorted(r.hosts.items())]
    t = report.total
    body.append(["TOTAL", *[""] * (len(cols) - 1), num(t.it_kwh), *split(t), num(t.facility_kwh),
                 num(t.g_co2e), num(t.g_per_kwh, 3), _marks(t)])
    return _table(header, body, right_from=len(cols))


def _host_energy_line(report: Report) -> str:
    total_j = sum(report.categories.values())
    if total_j > 0:
        return "Host energy: " + ", ".join(
            f"{c} {num(j / J_PER_KWH)} kWh ({100 * j / total_j:.1f}%)" for c, j in report.categories.items())
    return "Host energy: none"


def _intensity_line(report: Report) -> str:
    measured = len(report.hours) - len(report.fallback_hours)
    providers = sorted({ci.provider for ci in report.intensity_by_hour.values() if not ci.fallback})
    return (f"Carbon intensity: wl_carbon ({', '.join(providers) or 'none'}) for {measured} of "
            f"{len(report.hours)} hours")


def _baselines_text(baselines: Sequence[PoolBaseline]) -> str:
    if not baselines:
        return ""
    lines = [f"  {b.component}:{b.device}  {b.description}" for b in baselines]
    return "\nIdle (static) power baselines, split by the static policy:\n" + "\n".join(lines) + "\n"


# -- csv and json --------------------------------------------------------------------------------


def format_csv(report: Report) -> str:
    buf = io.StringIO()
    extra = ["category"] if report.by == "job" else []
    parts = [f"{c}_kwh" for c in report.components]
    host = ["host"] if report.per_host else []
    fields = [*report.columns, *extra, *host, "it_kwh", *parts, "facility_kwh", "g_co2e", "g_per_kwh",
              "fallback_kwh", "intensity_fallback", "intensity_source", "estimated_kwh", "estimate"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for d, row in zip(report.to_dict()["rows"], report.rows):
        by_component = d.pop("it_kwh_by_component")
        d.update({f"{c}_kwh": by_component.get(c, 0.0) for c in report.components}, host="")
        w.writerow({k: ("" if d[k] is None else d[k]) for k in fields})
        for name, x in sorted(row.hosts.items()) if report.per_host else ():  # the row's hosts, after it
            part = {**report.row_dict(x), **dict(zip(report.columns, row.key)), "host": name}
            split = part.pop("it_kwh_by_component")
            part.update({f"{c}_kwh": split.get(c, 0.0) for c in report.components})
            w.writerow({k: ("" if part.get(k) is None else part.get(k)) for k in fields})
    return buf.getvalue()


def format_json(report: Report, idle_baselines: Sequence[PoolBaseline] = ()) -> str:
    doc = report.to_dict()
    if idle_baselines:
        doc["idle_baselines"] = [_baseline_dict(b) for b in idle_baselines]
    return json.dumps(doc, indent=2) + "\n"


def _baseline_dict(b: PoolBaseline) -> dict[str, Any]:
    return {"component": b.component, "device": b.device, "power_w": b.power_w, "source": b.source,
            "learn_ticks": b.learn_ticks}


# -- the life-cycle model ------------------------------------------------------------------------


def format_lifecycle(lc: Lifecycle, fmt: str) -> str:
    d = lc.to_dict()
    if fmt == "json":
        return json.dumps(d, indent=2) + "\n"
    rows = _lifecycle_rows(lc)
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
                [[n, "unmeasured" if k is None else num(k, 6), "unmeasured" if gg is None else num(gg, 6)]
                 for n, k, gg in rows], right_from=1),
    ]
    if d["other_phases"]:
        lines.append("Other phases (not in the model): " + ", ".join(
            f"{p} {num(v['facility_kwh'])} kWh" for p, v in d["other_phases"].items()))
    lines += d["notes"]
    return "\n".join(lines) + "\n"


def _lifecycle_rows(lc: Lifecycle) -> list[tuple[str, float | None, float | None]]:
    """(part, facility kWh, gCO2e) of CT, T, the measured inference, I and the projection; None if unmeasured."""
    per = lc.per_inference()
    kwh, g = lc.projected()
    return [
        ("CT  architecture search (phase search)", *((lc.ct.facility_kwh, lc.ct.g_co2e) if lc.ct else (None, None))),
        ("T   training (phase train)", *((lc.t.facility_kwh, lc.t.g_co2e) if lc.t else (None, None))),
        ("    inference measured (phase inference)",
         *((lc.inference.facility_kwh, lc.inference.g_co2e) if lc.inference else (None, None))),
        (f"I   per inference (/ {lc.inferences_count})" if lc.inferences_count else "I   per inference",
         *(per if per else (None, None))),
        (f"CT + T + e*I, e = {lc.expected_inferences:,}", kwh, g),
    ]

"""A report as text: a table for people, CSV and JSON for programs (and the life-cycle model the same three ways).

Pure: a ``Report`` (or ``Lifecycle``) in, a string out. The idle baselines a
ledger report lists come in as data (``PoolBaseline``), never by editing the
rendered text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from wattledger.model.jobs import IDLE
from wattledger.model.units import J_PER_KWH
from wattledger.report.lifecycle import Lifecycle
from wattledger.report.model import PoolBaseline, Report, ReportError, Row, slurm_dict
from wattledger.report.numfmt import num
from wattledger.util.energyfmt import JOULES_PER, plain, resolve_unit
from wattledger.util.jsontext import json_document
from wattledger.util.timeutil import iso

FORMATS = ("table", "csv", "json")


def render(report: Report, fmt: str, idle_baselines: Sequence[PoolBaseline] = (), unit: str = "kWh") -> str:
    """The report in ``fmt`` (table, csv or json); the baselines go in the table and JSON, not CSV.

    ``unit``: the table's energy unit (J, Wh, kWh, or auto: by the total's size); CSV and JSON stay in kWh.
    """
    if fmt == "table":
        return format_table(report, idle_baselines, unit)
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
    return ("F" if r.fallback_it_j > 0 else "") + ("E" if r.estimated_it_j > 0 else "") + ("R" if r.run_it_j > 0 else "")


def _labels(report: Report, key: tuple[str, ...]) -> list[str]:
    """A row's key cells as the table shows them: ``_idle`` (no user) is the unused capacity."""
    if report.by == "job" and key[0] == IDLE and not key[1]:
        return [IDLE, "(unused capacity)"]
    return [v or "(none)" for v in key]


def format_table(report: Report, idle_baselines: Sequence[PoolBaseline] = (), unit: str = "kWh") -> str:
    lines = [
        f"Energy and CO2e by {report.by}, {iso(report.since_ns)} .. {iso(report.until_ns)}  ({report.origin})",
        f"zone {report.zone}; PUE {report.pue}",
        "",
    ]
    if not report.rows:
        lines.append("No wl_job energy in this window. Is the agent running (`wattledger doctor`)? "
                     "Try a longer --since.")
    else:
        lines += _rows_table(report, resolve_unit(unit, report.total.it_j))
        lines.append(basis_line(report.co2e_basis()))
        lines.append("")
        lines.append(_host_energy_line(report))
        lines.append(_unused_line(report))
        if report.has_embodied:
            lines.append(embodied_line(report))
        lines.append(_intensity_line(report))
        lines += report.notes()
    return "\n".join(lines) + "\n" + _baselines_text(idle_baselines)


def _rows_table(report: Report, unit: str = "kWh") -> list[str]:
    """One line per row and TOTAL; one IT energy column per component when there is more than one (cpu, dram, gpu)."""
    cols = report.columns
    parts = report.components if len(report.components) > 1 else []
    per = JOULES_PER[unit]

    def split(r: Row) -> list[str]:
        return [num(r.it_j_by_component.get(c, 0.0) / per) for c in parts]

    slurm = _slurm_columns(report)
    embodied = report.has_embodied

    def carbon(r: Row) -> list[str]:
        return [num(r.embodied_g), num(r.total_g)] if embodied else []

    header = [*cols, *slurm, f"IT {unit}", *(f"{c} {unit}" for c in parts), f"facility {unit}", "gCO2e", "g/kWh",
              *(["embodied gCO2e", "total gCO2e"] if embodied else []), ""]

    def line(labels: Sequence[str], r: Row) -> list[str]:
        return [*labels, num(r.it_j / per), *split(r), num(r.facility_kwh * J_PER_KWH / per), num(r.g_co2e),
                num(r.g_per_kwh, 3), *carbon(r), _marks(r)]

    body = []
    for r in report.rows:
        body.append(line([*_labels(report, r.key), *_slurm_cells(report, r, slurm)], r))
        if report.per_host:  # one indented line per host under its row: a job across hosts stays one row
            blank = [""] * (len(cols) - 1 + len(slurm))
            body += [line([f"  host {h}", *blank], x) for h, x in sorted(r.hosts.items())]
    t = report.total
    body.append(["TOTAL", *[""] * (len(cols) + len(slurm) - 1), num(t.it_j / per), *split(t),
                 num(t.facility_kwh * J_PER_KWH / per),
                 num(t.g_co2e), num(t.g_per_kwh, 3), *carbon(t), _marks(t)])
    return _table(header, body, right_from=len(cols) + len(slurm))


def embodied_line(report: Report) -> str:
    """What the embodied column is, and how much of it no job used."""
    total = sum(report.embodied_categories.values())
    idle = report.embodied_categories.get("idle", 0.0)
    share = f" ({100 * idle / total:.1f}%)" if total > 0 else ""
    return (f"Embodied carbon: {num(total)} gCO2e, unused capacity (_idle) {num(idle)} g{share}: the hardware's "
            "manufacture and transport (Boavizta), spread over its lifetime and charged by GPU occupancy and CPU "
            "share; no PUE or grid intensity applies. total gCO2e = gCO2e + embodied (docs/embodied.md).")


SLURM_COLUMNS = ("slurm id", "account", "partition", "start", "end")
_SLURM_KEYS = ("id", "account", "partition", "start", "end")


def _slurm_columns(report: Report) -> tuple[str, ...]:
    """A --by job report of jobs Slurm ran (sacct's view): their id, account, partition, start and end."""
    return SLURM_COLUMNS if report.by == "job" and report.jobs else ()


def _slurm_cells(report: Report, row: Row, columns: Sequence[str]) -> list[str]:
    if not columns:
        return []
    record = report.jobs.get(row.key)
    found = slurm_dict(record) if record is not None else None
    return [str(found[k]) if found else "" for k in _SLURM_KEYS]


def basis_line(basis: dict[str, Any]) -> str:
    """The footer under every CO2e figure: the PUE and the intensity it was made with (``co2e_basis``)."""
    pue, ci = basis["pue"], basis["g_per_kwh"]
    source = basis["pue_source"]
    pue_text = source if pue is None or source.startswith(f"{pue:g} ") else f"{num(pue, 3)} on average, {source}"
    ci_text = "none" if ci is None else f"{num(ci)} g/kWh on average"
    return (f"CO2e basis: PUE {pue_text}, grid intensity {ci_text} ({basis['intensity_source']}); "
            "gCO2e = IT kWh x PUE x intensity, hour by hour (facility kWh = IT kWh x PUE; --pue 1 counts "
            "IT energy alone).")


def _host_energy_line(report: Report) -> str:
    total_j = sum(report.categories.values())
    if total_j > 0:
        return "Host energy: " + ", ".join(
            f"{c} {num(j / J_PER_KWH)} kWh ({100 * j / total_j:.1f}%)" for c, j in report.categories.items())
    return "Host energy: none"


def _unused_line(report: Report) -> str:
    total_j = sum(report.categories.values())
    idle_j = report.categories["idle"]
    share = f", {100 * idle_j / total_j:.1f}% of the host's energy" if total_j > 0 else ""
    return (f"Unused capacity (_idle): {num(idle_j / J_PER_KWH)} kWh{share}: idle power no job used, "
            "reported rather than spread (docs/attribution.md)")


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

# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection):
# = + - @ (and tab and CR, which some spreadsheets strip before looking).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula (OWASP, "CSV Injection").

    Text that starts with a formula character gets a leading ``'`` so it is shown
    as the text it is; the csv module quotes the cell where it needs to. Numbers
    are written as numbers: a negative figure is data, not a formula.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value



def format_csv(report: Report) -> str:
    buf = io.StringIO()
    extra = ["category"] if report.by == "job" else []
    slurm = [f"slurm_{k}" for k in _SLURM_KEYS] if _slurm_columns(report) else []
    parts = [f"{c}_kwh" for c in report.components]
    host = ["host"] if report.per_host else []
    fields = [*report.columns, *extra, *slurm, *host, "it_kwh", *parts, "facility_kwh", "g_co2e", "embodied_g_co2e",
              "total_g_co2e", "g_per_kwh", "fallback_kwh", "intensity_fallback", "intensity_source", "estimated_kwh",
              "estimate"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for d, row in zip(report.to_dict()["rows"], report.rows):
        d.pop("embodied_g_by_component")
        by_component = d.pop("it_kwh_by_component")
        d.update({f"{c}_kwh": by_component.get(c, 0.0) for c in report.components}, host="")
        found = d.pop("slurm", None)
        d.update({f"slurm_{k}": (found[k] if found else "") for k in _SLURM_KEYS} if slurm else {})
        w.writerow({k: _csv_value(d[k]) for k in fields})
        for name, x in sorted(row.hosts.items()) if report.per_host else ():  # the row's hosts, after it
            part = {**report.row_dict(x), **dict(zip(report.columns, row.key)), "host": name}
            split = part.pop("it_kwh_by_component")
            part.update({f"{c}_kwh": split.get(c, 0.0) for c in report.components})
            w.writerow({k: _csv_value(part.get(k)) for k in fields})
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    """None as an empty cell; a float without float noise (``480``, not ``480.00000000000006``); text
    that would start a formula neutralised (``csv_cell``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return plain(value)
    return csv_cell(value)


def format_json(report: Report, idle_baselines: Sequence[PoolBaseline] = ()) -> str:
    doc = report.to_dict()
    if idle_baselines:
        doc["idle_baselines"] = [_baseline_dict(b) for b in idle_baselines]
    return json_document(doc)


def _baseline_dict(b: PoolBaseline) -> dict[str, Any]:
    return {"component": b.component, "device": b.device, "power_w": b.power_w, "source": b.source,
            "learn_ticks": b.learn_ticks}


# -- the life-cycle model ------------------------------------------------------------------------


def format_lifecycle(lc: Lifecycle, fmt: str) -> str:
    """The life cycle as JSON, CSV or a table; with embodied carbon in the window, two more columns
    (embodied and total gCO2e) in the CSV and the table."""
    d = lc.to_dict()
    if fmt == "json":
        return json_document(d)
    embodied = lc.report.has_embodied
    rows = [r if embodied else r[:3] for r in _lifecycle_rows(lc)]
    extra = ["embodied_g_co2e", "total_g_co2e"] if embodied else []
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["part", "facility_kwh", "g_co2e", *extra])
        for name, *figures in rows:
            w.writerow([_csv_value(" ".join(str(name).split())), *(_csv_value(f) for f in figures)])
        return buf.getvalue()
    header = ["", "facility kWh", "gCO2e", *(["embodied gCO2e", "total gCO2e"] if embodied else [])]
    lines = [
        f"Life cycle of project {lc.project} ({lc.owner or 'no owner'}), measured {d['since']} .. {d['until']}; zone {d['zone']}; "
        f"PUE {d['pue']}",
        "",
        *_table(header, [[name, *("unmeasured" if f is None else num(f, 6) for f in figures)]
                         for name, *figures in rows], right_from=1),
    ]
    lines.append(basis_line(d["co2e_basis"]))
    if embodied:
        lines.append("Embodied: each part's share of the hardware's footprint (docs/embodied.md); I's is the "
                     "inference phase's divided by --inferences-count.")
    if d["other_phases"]:
        lines.append("Other phases (not in the model): " + ", ".join(
            f"{p} {num(v['facility_kwh'])} kWh" for p, v in d["other_phases"].items()))
    lines += d["notes"]
    return "\n".join(lines) + "\n"


LifecycleRow = tuple[str, float | None, float | None, float | None, float | None]


def _part(r: Row | None) -> tuple[float | None, float | None, float | None, float | None]:
    return (r.facility_kwh, r.g_co2e, r.embodied_g, r.total_g) if r is not None else (None, None, None, None)


def _lifecycle_rows(lc: Lifecycle) -> list[LifecycleRow]:
    """(part, facility kWh, gCO2e, embodied gCO2e, total gCO2e) of CT, T, the measured inference, I and the
    projection; None if unmeasured."""
    per, per_embodied = lc.per_inference(), lc.per_inference_embodied()
    kwh, g = lc.projected()
    embodied = lc.projected_embodied()
    per_row = (per[0], per[1], per_embodied or 0.0, per[1] + (per_embodied or 0.0)) if per else (None,) * 4
    return [
        ("CT  architecture search (phase search)", *_part(lc.ct)),
        ("T   training (phase train)", *_part(lc.t)),
        ("    inference measured (phase inference)", *_part(lc.inference)),
        (f"I   per inference (/ {lc.inferences_count})" if lc.inferences_count else "I   per inference", *per_row),
        (f"CT + T + e*I, e = {lc.expected_inferences:,}", kwh, g, embodied, g + embodied),
    ]

"""A report from the local SQLite ledger (store/ledger.py): exact wl_job sums per intensity class, raw carbon
and PUE rows.

The intensity and PUE of every hour of the window are worked out first
(``assemble.factors``); hours with the same pair form one class, and the
ledger sums wl_job energy per (class, tag set), reading whole days, hours,
minutes and raw ticks as the range allows (store/sums.py). A year at a
constant intensity is then a few hundred sums instead of millions of hourly
cells, and the figures equal those of the raw ticks: each class's energy is
charged at its own intensity and PUE, which is the per-hour rule. With
``hourly`` (plots) every hour is its own class. A ``--by job`` report also
lists each job's whole life from the ledger's per-job summary (``lifetimes``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from wattledger.config import Config
from wattledger.model.points import WL_CARBON, WL_JOB, WL_PUE
from wattledger.model.units import J_PER_KWH
from wattledger.report.assemble import CELL_TAGS, Options, assemble, energy_cell, factors, hour_window
from wattledger.report.model import Report
from wattledger.store.ledger import Ledger
from wattledger.util.timeutil import iso


def from_ledger(ledger: Ledger, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options(),
                *, hourly: bool = False) -> Report:
    """The report of the window from the ledger (the caller opens and closes it)."""
    h0, h1 = hour_window(since_ns, until_ns)
    carbon, pue_rows = ledger.rows(WL_CARBON, h0, h1), ledger.rows(WL_PUE, h0, h1)
    intensity, pue = factors(cfg, opts, carbon, pue_rows)

    def hour_class(hour: int) -> Hashable:
        """Hours with the same intensity (None: the static figure) and PUE are charged alike."""
        return hour if hourly else (intensity.by_hour.get(hour), pue.at(hour))

    sums = ledger.sums(WL_JOB, "energy_j", CELL_TAGS, since_ns, until_ns, opts.equal(), hour_class)
    cells = [energy_cell(bucket, dict(zip(CELL_TAGS, values)), energy_j) for bucket, values, energy_j in sums.cells]
    plan = sums.plan
    since, until = (plan.since_ns, plan.until_ns) if plan is not None and plan.segments else (since_ns, until_ns)
    report = assemble(cfg, opts, cells, carbon, pue_rows, since, until, f"ledger {ledger.path}", hours=sums.hours)
    if opts.by == "job":
        report.lifetimes = lifetimes(ledger.job_summary(opts.equal()), {r.key for r in report.rows})
    return report


def lifetimes(summary: list[dict[str, Any]], keys: set[tuple[str, ...]]) -> list[dict[str, Any]]:
    """Each (job, user)'s life from the ledger's per-job summary: first and last seen, ticks, GPU-seconds
    held, peak power per component, all its energy; for the jobs in ``keys``."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for s in summary:
        key = (str(s["job"]), str(s["user"]))
        if key not in keys:
            continue
        life = out.setdefault(key, {"job": key[0], "user": key[1], "first_ns": s["first_ns"], "last_ns": s["last_ns"],
                                    "gpu_seconds_held": 0.0, "peak_w": {}, "energy_kwh": 0.0})
        life["first_ns"] = min(life["first_ns"], s["first_ns"])
        life["last_ns"] = max(life["last_ns"], s["last_ns"])
        if s["component"] == "gpu":
            life["gpu_seconds_held"] += float(s["held_s"])
        if s["peak_w"] is not None:
            peak = life["peak_w"]
            peak[s["component"]] = max(peak.get(s["component"], 0.0), float(s["peak_w"]))
        life["energy_kwh"] += float(s["energy_j"] or 0.0) / J_PER_KWH
    return [{**{k: v for k, v in life.items() if not k.endswith("_ns")}, "first_seen": iso(life["first_ns"]),
             "last_seen": iso(life["last_ns"])} for _, life in sorted(out.items())]

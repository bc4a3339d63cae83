"""A report from the local SQLite ledger (store/ledger.py): exact wl_job sums per intensity class, raw carbon
and PUE rows.

The intensity and PUE of every hour of the window are worked out first
(``assemble.factors``); hours with the same pair form one class, and the
ledger sums wl_job energy per (class, tag set), reading whole days, hours,
minutes and raw ticks as the range allows (store/sums.py). A year at a
constant intensity is then a few hundred sums instead of millions of hourly
cells, and the figures equal those of the raw ticks: each class's energy is
charged at its own intensity and PUE, which is the per-hour rule. With
``hourly`` (plots) every hour is its own class.
"""

from __future__ import annotations

from collections.abc import Hashable

from wattledger.config import Config
from wattledger.model.points import WL_CARBON, WL_JOB, WL_PUE
from wattledger.model.units import HOUR_NS
from wattledger.report.assemble import CELL_TAGS, Options, assemble, energy_cell, factors, hour_window
from wattledger.report.model import Report
from wattledger.store.ledger import Ledger


def from_ledger(ledger: Ledger, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options(),
                *, hourly: bool = False) -> Report:
    """The report of the window from the ledger (the caller opens and closes it)."""
    h0, h1 = hour_window(since_ns, until_ns)
    carbon, pue_rows = ledger.rows(WL_CARBON, h0, h1), ledger.rows(WL_PUE, h0, h1)
    intensity, pue = factors(cfg, opts, carbon, pue_rows)
    classes: dict[int, Hashable] = {}
    for hour in range(h0, h1, HOUR_NS):
        found = intensity.by_hour.get(hour)  # None: the static figure, the same for every such hour
        classes[hour] = hour if hourly else (found, pue.at(hour))
    sums = ledger.sums(WL_JOB, "energy_j", CELL_TAGS, since_ns, until_ns, opts.equal(),
                       lambda h: classes.get(h, h))
    cells = [energy_cell(bucket, dict(zip(CELL_TAGS, values)), energy_j) for bucket, values, energy_j in sums.cells]
    plan = sums.plan
    since, until = (plan.since_ns, plan.until_ns) if plan is not None and plan.segments else (since_ns, until_ns)
    return assemble(cfg, opts, cells, carbon, pue_rows, since, until, f"ledger {ledger.path}", hours=sums.hours)

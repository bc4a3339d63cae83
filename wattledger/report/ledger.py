"""A report from the local SQLite ledger (store/ledger.py): hourly sums of wl_job, raw carbon and PUE rows."""

from __future__ import annotations

from wattledger.config import Config
from wattledger.model.points import WL_CARBON, WL_JOB, WL_NODE, WL_PUE
from wattledger.report.assemble import CELL_TAGS, Options, assemble, energy_cell, hour_window, measured_seconds
from wattledger.report.model import Report
from wattledger.store.ledger import Ledger


def from_ledger(ledger: Ledger, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options()) -> Report:
    """The report of the window from the ledger (the caller opens and closes it)."""
    h0, h1 = hour_window(since_ns, until_ns)
    sums = ledger.hourly_sums(WL_JOB, "energy_j", CELL_TAGS, since_ns, until_ns, opts.equal())
    cells = [energy_cell(int(r["time_ns"]), r, float(r["energy_j"])) for r in sums]
    return assemble(cfg, opts, cells, ledger.rows(WL_CARBON, h0, h1), ledger.rows(WL_PUE, h0, h1),
                    since_ns, until_ns, f"ledger {ledger.path}")


def ledger_measured_seconds(ledger: Ledger, report: Report, host: str | None = None) -> dict[int, float]:
    """Seconds of each hour of the report's window the agent measured (``assemble.measured_seconds``)."""
    sums = ledger.hourly_sums(WL_NODE, "interval_s", ("host", "component", "device"), report.since_ns,
                              report.until_ns, {"host": host} if host else None)
    return measured_seconds(sums)

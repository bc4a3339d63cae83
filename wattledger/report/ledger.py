"""A report from the local SQLite ledger (store/ledger.py): hourly sums of wl_job, raw carbon and PUE rows."""

from __future__ import annotations

from wattledger.config import Config
from wattledger.model.points import WL_CARBON, WL_JOB, WL_PUE
from wattledger.report.assemble import CELL_TAGS, Options, assemble, energy_cell, hour_window
from wattledger.report.model import Report
from wattledger.report.jobview import JobTicks, ticks_from_rows
from wattledger.store.ledger import Ledger
from wattledger.store.runs import Runs


def from_ledger(ledger: Ledger, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options(),
                runs: Runs | None = None) -> Report:
    """The report of the window from the ledger (the caller opens and closes it), with ``runs``' records."""
    h0, h1 = hour_window(since_ns, until_ns)
    sums = ledger.hourly_sums(WL_JOB, "energy_j", CELL_TAGS, since_ns, until_ns, opts.equal())
    cells = [energy_cell(int(r["time_ns"]), r, float(r["energy_j"])) for r in sums]
    return assemble(cfg, opts, cells, ledger.rows(WL_CARBON, h0, h1), ledger.rows(WL_PUE, h0, h1),
                    since_ns, until_ns, f"ledger {ledger.path}", runs)


def job_ticks(ledger: Ledger, since_ns: int, until_ns: int, opts: Options) -> list[JobTicks]:
    """What the ledger knows of ``opts.job``'s ticks, per user (``report --job``)."""
    if opts.job is None:
        return []
    equal = {k: v for k, v in opts.equal().items() if k != "job"}
    return ticks_from_rows(ledger.job_ticks(opts.job, since_ns, until_ns, equal))

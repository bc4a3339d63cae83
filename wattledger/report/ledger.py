"""A report from the local SQLite ledger (store/ledger.py): hourly sums of wl_job, raw carbon and PUE rows.

A ``--by job`` report also carries what Slurm said about each job that ran in
the window (``store.jobinfo``: id, account, partition, first and last tick),
and ``--account`` / ``--partition`` keep only the jobs Slurm put there.
"""

from __future__ import annotations

import sqlite3

from wattledger.config import Config
from wattledger.model.points import WL_CARBON, WL_EMBODIED, WL_JOB, WL_NODE, WL_PUE
from wattledger.report.assemble import (CELL_TAGS, EMBODIED_TAGS, Cell, Options, assemble, embodied_cell, energy_cell,
                                        hour_window, measured_seconds)
from wattledger.report.jobview import JobTicks, ticks_from_rows
from wattledger.report.model import EmbodiedCell, EnergyCell, Report
from wattledger.store.jobinfo import JobFilter, JobInfoStore, JobRecord
from wattledger.store.ledger import Ledger
from wattledger.store.runs import Runs


def from_ledger(ledger: Ledger, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options(),
                runs: Runs | None = None) -> Report:
    """The report of the window from the ledger (the caller opens and closes it), with ``runs``' records."""
    h0, h1 = hour_window(since_ns, until_ns)
    sums = ledger.hourly_sums(WL_JOB, "energy_j", CELL_TAGS, since_ns, until_ns, opts.equal())
    cells = [energy_cell(int(r["time_ns"]), r, float(r["energy_j"])) for r in sums]
    embodied = embodied_cells(ledger, since_ns, until_ns, opts)
    records = scheduler_jobs(ledger, opts, since_ns, until_ns) if opts.by == "job" or opts.scheduler_filter else []
    if opts.scheduler_filter:
        cells, embodied = only_jobs(cells, records), only_jobs(embodied, records)
    report = assemble(cfg, opts, cells, ledger.rows(WL_CARBON, h0, h1), ledger.rows(WL_PUE, h0, h1),
                      since_ns, until_ns, f"ledger {ledger.path}", runs, embodied)
    if opts.by == "job":
        report.jobs = {r.key: r for r in records}
    return report


def embodied_cells(ledger: Ledger, since_ns: int, until_ns: int, opts: Options) -> list[EmbodiedCell]:
    """wl_embodied grams per hour and tag set; none from a ledger an agent older than embodied carbon
    wrote and no newer one has opened yet (read-only, it has no wl_embodied table)."""
    try:
        grams = ledger.hourly_sums(WL_EMBODIED, "embodied_g", EMBODIED_TAGS, since_ns, until_ns, opts.equal())
    except sqlite3.OperationalError as e:
        if f"no such table: {WL_EMBODIED}" not in str(e):
            raise
        return []
    return [embodied_cell(int(r["time_ns"]), r, float(r["embodied_g"])) for r in grams]


def scheduler_jobs(ledger: Ledger, opts: Options, since_ns: int, until_ns: int) -> list[JobRecord]:
    """The Slurm jobs of the ledger that ran in the window and match the options' filters."""
    store = JobInfoStore(ledger.path, readonly=True)
    try:
        return store.records(JobFilter(host=opts.host or None, tag=opts.job, user=opts.user, account=opts.account,
                                       partition=opts.partition, since_ns=since_ns, until_ns=until_ns))
    finally:
        store.close()


def only_jobs(cells: list[Cell], records: list[JobRecord]) -> list[Cell]:
    """The cells of these jobs only (by tag and user)."""
    keep = {r.key for r in records}
    return [c for c in cells if (c.job, c.user) in keep]


def ledger_measured_seconds(ledger: Ledger, report: Report, host: str | None = None) -> dict[int, float]:
    """Seconds of each hour of the report's window the agent measured (``assemble.measured_seconds``)."""
    sums = ledger.hourly_sums(WL_NODE, "interval_s", ("host", "component", "device"), report.since_ns,
                              report.until_ns, {"host": host} if host else None)
    return measured_seconds(sums)


def job_ticks(ledger: Ledger, since_ns: int, until_ns: int, opts: Options) -> list[JobTicks]:
    """What the ledger knows of ``opts.job``'s ticks, per user (``report --job``)."""
    if opts.job is None:
        return []
    equal = {k: v for k, v in opts.equal().items() if k != "job"}
    return ticks_from_rows(ledger.job_ticks(opts.job, since_ns, until_ns, equal))

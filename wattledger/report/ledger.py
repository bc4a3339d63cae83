"""A report from the local SQLite ledger (store/ledger.py): exact sums per intensity class, raw carbon and
PUE rows.

The intensity and PUE of every hour of the window are worked out first
(``assemble.factors``); hours with the same pair form one class, and the
ledger sums wl_job energy per (class, tag set), reading whole days, hours,
minutes and raw ticks as the range allows (store/sums.py). A year at a
constant intensity is then a few hundred sums instead of millions of hourly
cells, and the figures equal those of the raw ticks: each class's energy is
charged at its own intensity and PUE, which is the per-hour rule. wl_embodied
grams need no intensity: they are read at the coarsest resolution outright.
With ``hourly`` (plots) every hour is its own class.

A ``--by job`` report also lists each job's whole life from the ledger's
per-job summaries (``lifetimes``) and carries what Slurm said about each job
that ran in the window (``store.jobinfo``: id, account, partition, first and
last tick); ``--account`` / ``--partition`` keep only the jobs Slurm put
there. ``report --job`` reads the job's ticks (duration, host energy in them,
GPU time held) from the ledger's ``job_tick`` series (store/jobtick.py), at
the coarsest resolution too.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from wattledger.config import Config
from wattledger.model.points import WL_CARBON, WL_EMBODIED, WL_JOB, WL_NODE, WL_PUE
from wattledger.model.units import J_PER_KWH
from wattledger.report.assemble import (CELL_TAGS, EMBODIED_TAGS, Cell, Options, assemble, embodied_cell,
                                        energy_cells, factors, hour_window, measured_seconds)
from wattledger.report.jobview import JobTicks, ticks_from_rows
from wattledger.report.model import Report
from wattledger.report.runs import run_cells
from wattledger.store.jobinfo import JobFilter, JobInfoStore, JobRecord
from wattledger.store.ledger import Ledger
from wattledger.store.runs import Runs
from wattledger.util.timeutil import iso


def from_ledger(ledger: Ledger, cfg: Config, since_ns: int, until_ns: int, opts: Options = Options(),
                runs: Runs | None = None, *, hourly: bool = False) -> Report:
    """The report of the window from the ledger (the caller opens and closes it), with ``runs``' records."""
    h0, h1 = hour_window(since_ns, until_ns)
    carbon, pue_rows = ledger.rows(WL_CARBON, h0, h1), ledger.rows(WL_PUE, h0, h1)
    intensity, pue = factors(cfg, opts, carbon, pue_rows)

    def hour_class(hour: int) -> Hashable:
        """Hours with the same intensity (None: the static figure) and PUE are charged alike."""
        return hour if hourly else (intensity.by_hour.get(hour), pue.at(hour))

    sums = ledger.sums(WL_JOB, "energy_j", CELL_TAGS, since_ns, until_ns, opts.equal(), hour_class)
    cells = energy_cells(sums.cells)
    grams = ledger.sums(WL_EMBODIED, "embodied_g", EMBODIED_TAGS, since_ns, until_ns, opts.equal(),
                        None if hourly else _one_class)
    embodied = [embodied_cell(bucket, dict(zip(EMBODIED_TAGS, values)), g) for bucket, values, g in grams.cells]
    records = scheduler_jobs(ledger, opts, since_ns, until_ns) if opts.by == "job" or opts.scheduler_filter else []
    if opts.scheduler_filter:
        cells, embodied = only_jobs(cells, records), only_jobs(embodied, records)
    plan = sums.plan
    since, until = (plan.since_ns, plan.until_ns) if plan is not None and plan.segments else (since_ns, until_ns)
    measured = None if runs is None or hourly else _measured_hours(ledger, runs, since_ns, until_ns, opts)
    report = assemble(cfg, opts, cells, carbon, pue_rows, since, until, f"ledger {ledger.path}", runs, embodied,
                      hours=None if hourly else sums.hours, measured=measured)
    if opts.by == "job":
        report.jobs = {r.key: r for r in records}
        keys = {r.key for r in report.rows}
        jobs = {key[0] for key in keys} if len(keys) < 30000 else None  # (SQLite's bound-variable limit)
        report.lifetimes = lifetimes(ledger.job_summary(opts.equal(), jobs=jobs),
                                     ledger.job_summary(opts.equal(), WL_EMBODIED, jobs), keys)
    return report


def _one_class(hour: int) -> Hashable:
    """Embodied grams take no intensity: every hour is alike (whole days are read wherever they are kept)."""
    return 0


def _measured_hours(ledger: Ledger, runs: Runs, since_ns: int, until_ns: int, opts: Options
                    ) -> set[tuple[str, str, int]]:
    """The (job, user, hour) the ledger has energy for, of the jobs that run records in the window name:
    their own figures win over the records' (report/runs.py ``not_in``)."""
    have: set[tuple[str, str, int]] = set()
    for job, user in sorted({(c.job, c.user) for c in run_cells(runs.records, since_ns, until_ns, opts.equal())}):
        rows = ledger.hourly_sums(WL_JOB, "energy_j", ("job", "user"), since_ns, until_ns,
                                  {**opts.equal(), "job": job, "user": user})
        have.update((job, user, int(r["time_ns"])) for r in rows)
    return have


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


def lifetimes(summary: list[dict[str, Any]], embodied: list[dict[str, Any]], keys: set[tuple[str, ...]]
              ) -> list[dict[str, Any]]:
    """Each (job, user)'s life from the ledger's per-job summaries: first and last seen, GPU-seconds held,
    peak power per component, all its energy and embodied carbon; for the jobs in ``keys``."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for s in summary:
        life = _life(out, s, keys)
        if life is None:
            continue
        if s["component"] == "gpu":
            life["gpu_seconds_held"] += float(s["held_s"])
        if s["peak_w"] is not None:
            peak = life["peak_w"]
            peak[s["component"]] = max(peak.get(s["component"], 0.0), float(s["peak_w"]))
        life["energy_kwh"] += float(s["energy_j"] or 0.0) / J_PER_KWH
    for s in embodied:
        life = _life(out, s, keys)
        if life is not None:
            life["embodied_g_co2e"] += float(s["embodied_g"] or 0.0)
    return [{**{k: v for k, v in life.items() if not k.endswith("_ns")}, "first_seen": iso(life["first_ns"]),
             "last_seen": iso(life["last_ns"])} for _, life in sorted(out.items())]


def _life(out: dict[tuple[str, ...], dict[str, Any]], s: dict[str, Any], keys: set[tuple[str, ...]]
          ) -> dict[str, Any] | None:
    """The life of the summary row's (job, user), started or widened by the row (None: not a wanted job)."""
    key = (str(s["job"]), str(s["user"]))
    if key not in keys:
        return None
    life = out.setdefault(key, {"job": key[0], "user": key[1], "first_ns": s["first_ns"], "last_ns": s["last_ns"],
                                "gpu_seconds_held": 0.0, "peak_w": {}, "energy_kwh": 0.0, "embodied_g_co2e": 0.0})
    life["first_ns"] = min(life["first_ns"], s["first_ns"])
    life["last_ns"] = max(life["last_ns"], s["last_ns"])
    return life

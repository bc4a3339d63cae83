#!/usr/bin/env python3
"""A simulated year of a fleet's rollups in one real InfluxDB: series and tag values at steady state (issue 15).

Series cardinality depends on which tag sets exist in the shards a database
keeps, not on how many points each holds. So each host here runs the real
agent's store path (ledger append, the ``Compactor``, the rollup
``RollupExporter``, the ``Deliverer`` and the v1 sink with the tiers' routing)
with **one tick a day** that charges every job active that day on every
pool it uses: the minute, hour and raw points that reach InfluxDB carry
exactly the tag sets a year of 1 s ticks would (a job active for three days
has points on three days, in every tier whose retention still holds them),
with far fewer points. Time is the last ``--days`` days before now, so
InfluxDB's retention policies treat the data as they would a year of real
ticks (the sink leaves out points older than their tier keeps, as the agent
does).

The default job churn (docs/fleet.md, "Series budget"): 10,000 jobs per host
a year (27 a day), lasting 17.5 h on average (exponential; about 20 running
at a time); 30 users a host, 2 projects each, 4 phases; each job on both CPU
packages and DRAM pools and on 0, 1, 2, 4 or 8 GPUs (20/40/20/10/10 %).
Every tenth job runs on four hosts at once (a multi-node Slurm job). Pools:
2 CPU packages, 2 DRAM, 8 GPUs per host. Embodied carbon is on, as by
default: ``wl_embodied`` rows per job and GPU held, and per job for the
host's parts.

Measured at the end, on influxd 1.6 with its defaults (``max-series-per-
database`` 1,000,000, ``max-values-per-tag`` 100,000): ``SHOW SERIES EXACT
CARDINALITY``, series per retention policy (``SELECT count`` per series is
too slow; ``SHOW SERIES`` per policy is counted), distinct ``job`` values,
points the server refused, and the budget the formula in docs/fleet.md gives.

    .venv/bin/python benchmarks/fleet_year.py                      # 100 hosts, 365 days, the defaults
    .venv/bin/python benchmarks/fleet_year.py --hosts 10 --days 60  # a quicker look
    .venv/bin/python benchmarks/fleet_year.py --minutes-days 90     # another retention
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402
from tests.fleet_sim import PHASES, RESERVED  # noqa: E402
from tests.influx_server import InfluxServer  # noqa: E402
from wattledger.agent.delivery import Deliverer  # noqa: E402
from wattledger.agent.provision import setup  # noqa: E402
from wattledger.agent.sinks import make_sink  # noqa: E402
from wattledger.agent.sinks.influx_v1 import InfluxV1Sink  # noqa: E402
from wattledger.agent.sinks.routing import routing  # noqa: E402
from wattledger.config import Config  # noqa: E402
from wattledger.model.points import WL_EMBODIED, WL_JOB, WL_NODE, Point  # noqa: E402
from wattledger.model.units import DAY_NS, HOUR_NS, NS_PER_S  # noqa: E402
from wattledger.store.compact import Compactor, Retention  # noqa: E402
from wattledger.store.exporter import RollupExporter  # noqa: E402
from wattledger.store.ledger import Ledger  # noqa: E402

GPU_SHARES = ((0, 0.2), (1, 0.4), (2, 0.2), (4, 0.1), (8, 0.1))


@dataclass(frozen=True)
class Job:
    tag: str
    user: str
    project: str
    phase: str
    start_day: int
    end_day: int  # inclusive
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Churn:
    jobs_per_year: float = 10_000
    mean_hours: float = 17.5
    users: int = 30
    projects_per_user: int = 2
    multi_node_every: int = 10  # every n-th job also runs on the next three hosts


def jobs_of(hosts: int, days: int, churn: Churn, seed: int = 15) -> list[list[Job]]:
    """Each host's jobs over ``days``: arrivals, lengths, owners and GPUs from one seeded generator."""
    rng = random.Random(seed)
    out: list[list[Job]] = [[] for _ in range(hosts)]
    per_day = churn.jobs_per_year / 365.0
    for h in range(hosts):
        t = rng.expovariate(per_day)
        n = 0
        while t < days:
            length = min(rng.expovariate(1 / churn.mean_hours) / 24.0, 30.0)
            user = rng.randrange(churn.users)
            k = rng.choices([g for g, _ in GPU_SHARES], [w for _, w in GPU_SHARES])[0]
            gpus = tuple(sorted(rng.sample(range(8), k)))
            job = Job(f"slurm-{h}{n:06d}", f"u{h % 10}-{user}", f"p{user}-{rng.randrange(churn.projects_per_user)}",
                      rng.choice(PHASES), int(t), int(t + length), gpus)
            n += 1
            out[h].append(job)
            if n % churn.multi_node_every == 0:
                for other in range(1, 4):
                    out[(h + other) % hosts].append(job)
            t += rng.expovariate(per_day)
    return out


def day_points(host: str, jobs: list[Job], day: int, stamp_ns: int) -> list[Point]:
    """One tick for ``day``: every active job on its pools, the reserved jobs, the pools' wl_node points."""
    active = [j for j in jobs if j.start_day <= day <= j.end_day]
    pools = [("cpu", "package-0"), ("cpu", "package-1"), ("dram", "package-0"), ("dram", "package-1")] + [
        ("gpu", f"GPU-{g}") for g in range(8)]
    out: list[Point] = []
    for component, device in pools:
        source = "nvml" if component == "gpu" else "rapl"
        base = {"host": host, "component": component, "device": device, "source": source}
        holders = [j for j in active if component != "gpu" or int(device[4:]) in j.gpus]
        charged = [(j.tag, j.user, j.project, j.phase) for j in holders] + [
            (r, "alice" if r == "_untagged" else "", "", "") for r in (RESERVED if component != "gpu" else ("_idle",))]
        for tag, user, project, phase in charged:
            out.append(Point(WL_JOB, {**base, "job": tag, "user": user, "project": project, "phase": phase},
                             {"energy_j": 1.0, "dynamic_j": 0.5, "static_j": 0.5, "driver_s": 1.0}, stamp_ns))
        out.append(Point(WL_NODE, base, {"energy_j": float(len(charged)), "power_w": 1.0, "interval_s": 1.0},
                         stamp_ns))
    return out + embodied_points(host, active, stamp_ns)


def embodied_points(host: str, active: list[Job], stamp_ns: int) -> list[Point]:
    """The day's wl_embodied rows as the agent makes them: one per (job, GPU it holds), one per job for the
    host's parts (CPU sockets, DRAM, storage, chassis), and _idle's for the GPUs nobody held."""
    held = {g for j in active for g in j.gpus}
    out = []
    for tag, user, project, phase, gpus in [(j.tag, j.user, j.project, j.phase, j.gpus) for j in active] + [
            ("_idle", "", "", "", tuple(g for g in range(8) if g not in held))]:
        job = {"host": host, "job": tag, "user": user, "project": project, "phase": phase}
        out += [Point(WL_EMBODIED, {**job, "component": "gpu", "device": f"GPU-{g}"}, {"embodied_g": 1.0}, stamp_ns)
                for g in gpus]
        out.append(Point(WL_EMBODIED, {**job, "component": "host", "device": "host"},
                         {"embodied_g": 1.0, "cpu_g": 0.25, "dram_g": 0.25, "storage_g": 0.25, "chassis_g": 0.25},
                         stamp_ns))
    return out


MEASURE_TIMEOUT_S = 1800.0  # a year of 100 hosts: one count over the hours tier reads every shard


def measure(server: InfluxServer, db: str) -> dict[str, Any]:
    """Series as influxd's index counts them (what max-series-per-database limits: SHOW STATS numSeries, and
    SHOW SERIES counted), per retention policy, and the distinct job tag values (max-values-per-tag)."""
    index = server.num_series(db)
    listed = len(server.query("SHOW SERIES", db, MEASURE_TIMEOUT_S)["results"][0]["series"][0]["values"])
    per_rp = {}
    for rp in ("raw", "minutes", "hours"):
        keys: set[tuple[str, str]] = set()
        for m in ("wl_job", "wl_node", "wl_embodied"):
            field = "embodied_g" if m == "wl_embodied" else "energy_j"
            q = f'SELECT count("{field}") FROM "{rp}"."{m}" GROUP BY *'
            res = server.query(q, db, MEASURE_TIMEOUT_S)["results"][0]
            keys.update((m, json.dumps(s.get("tags"), sort_keys=True)) for s in res.get("series", []) or [])
        per_rp[rp] = len(keys)
    jobs = server.query('SHOW TAG VALUES FROM "wl_job" WITH KEY = "job"', db, MEASURE_TIMEOUT_S)["results"][0]
    return {"series_index": index, "series_listed": listed, "series_by_rp": per_rp,
            "job_values": sum(len(s["values"]) for s in jobs.get("series", []) or [])}


def formula(hosts: int, churn: Churn, raw_days: float, minutes_days: float, days: float = 365) -> dict[str, float]:
    """docs/fleet.md's budget: series per tier at steady state (or after ``days``), from the churn."""
    raw_days, minutes_days = min(raw_days, days), min(minutes_days, days)
    per_day = churn.jobs_per_year / 365.0
    running = per_day * churn.mean_hours / 24.0
    gpus = sum(k * w for k, w in GPU_SHARES)
    comps = 2 + (1 - GPU_SHARES[0][1])  # cpu and dram always, gpu for 80 % of the jobs
    share = 1 + 3 / churn.multi_node_every  # each host also runs its neighbours' multi-node jobs
    # wl_job: a series per pool (raw) or component (rollups); wl_embodied: one per GPU held and one for the
    # host's parts (raw), one per component, gpu and host (rollups).
    raw = (running + per_day * (raw_days + 1)) * share * ((4 + gpus) + (gpus + 1))
    minutes = (running + per_day * (minutes_days + 1)) * share * (comps + (comps - 1))
    # Hours: a series per (user, project, phase, component) a host has seen; of C = users x projects x
    # phases choices, n jobs show C (1 - e^-n/C); the multi-node jobs of the three neighbours bring theirs.
    combos = churn.users * churn.projects_per_user * len(PHASES)
    n = churn.jobs_per_year * days / 365

    def seen(jobs: float) -> float:
        return combos * (1 - math.exp(-jobs / combos))

    hours = (seen(n) + 3 * seen(n / churn.multi_node_every)) * (comps + (comps - 1))
    fixed = 12 + 4 * 3 + 12  # wl_node pools; reserved jobs per component at hours; raw reserved per pool
    return {"raw": raw * hosts, "minutes": minutes * hosts, "hours": hours * hosts, "fixed": fixed * hosts,
            "total": (raw + minutes + hours + fixed) * hosts, "per_host_year": raw + minutes + hours + fixed,
            "job_values": (running + per_day * (max(raw_days, minutes_days) + 1)) * hosts}


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.dir or tempfile.mkdtemp(prefix="fleet-year-"))
    server = InfluxServer(root / "influxd")
    server.start(timeout_s=900 if args.measure_only else 30)  # a year's shards and index take minutes to open
    try:
        return remeasure(server, root, args) if args.measure_only else simulate(server, root, args)
    finally:
        server.stop()


def remeasure(server: InfluxServer, root: Path, args: argparse.Namespace, db: str = "fleet_year") -> dict[str, Any]:
    """``--measure-only``: the figures of a finished simulation in ``--dir`` (its influxd data and ledgers),
    without simulating again. Delivered and refused points come from the ledgers' lifetime counters; the
    simulation's own time and the points the sink left out as too old are not kept, so they read None."""
    ledgers = sorted(root.glob("host-*.sqlite3"))
    if len(ledgers) != args.hosts:
        raise SystemExit(f"--measure-only: {root} holds {len(ledgers)} host ledgers, not --hosts {args.hosts}; "
                         "run the simulation first (without --measure-only) or give the --hosts it ran with")
    delivered = refused = 0
    for path in ledgers:
        ledger = Ledger(path, spool=True)
        counts = ledger.spool_counts()
        delivered, refused = delivered + counts["delivered"], refused + counts["rejected"]
        ledger.close()
    churn = Churn(jobs_per_year=args.jobs_per_year)
    plans = jobs_of(args.hosts, args.days, churn)
    return figures(server, db, args, churn, plans, delivered=delivered, refused=refused, expired=None,
                   seconds=None, cpu_s=None)


def figures(server: InfluxServer, db: str, args: argparse.Namespace, churn: Churn, plans: list[list[Job]],
            **run: int | None) -> dict[str, Any]:
    """The run's figures (``run``: delivered, refused, expired, seconds, cpu_s), influxd's series counted
    now, and the formula's budget for the same fleet."""
    return {"hosts": args.hosts, "days": args.days, "raw_days": args.raw_days, "minutes_days": args.minutes_days,
            "jobs": sum(len(j) for j in plans), **run, **measure(server, db),
            "formula": formula(args.hosts, churn, args.raw_days, args.minutes_days, args.days)}


def simulate(server: InfluxServer, root: Path, args: argparse.Namespace, db: str = "fleet_year") -> dict[str, Any]:
    cfg = Config()
    cfg.sink.url, cfg.sink.database = server.url, db
    cfg.influx.raw_days, cfg.influx.minutes_days = args.raw_days, args.minutes_days
    setup(cfg)
    churn = Churn(jobs_per_year=args.jobs_per_year)
    plans = jobs_of(args.hosts, args.days, churn)
    now = time.time_ns()
    start = now - now % DAY_NS - args.days * DAY_NS
    sink = make_sink(cfg.sink, routing(cfg))
    assert isinstance(sink, InfluxV1Sink)  # the default [sink]: its expired counter is read below
    refused = delivered = 0
    t0, cpu0 = time.monotonic(), time.process_time()
    for h, jobs in enumerate(plans):
        name = f"host-{h:03d}"
        ledger = Ledger(root / f"{name}.sqlite3", spool=True, spool_max_rows=10_000_000)
        compactor, exporter = Compactor(ledger, Retention()), RollupExporter(ledger, max_buckets=10_000)
        deliverer = Deliverer(ledger, sink, batch_points=5000)
        for day in range(args.days):
            stamp = start + day * DAY_NS + 12 * HOUR_NS + h * NS_PER_S
            ledger.append(day_points(name, jobs, day, stamp))
            if day % args.settle_days == args.settle_days - 1 or day == args.days - 1:
                # fold, export and deliver what is final (the agent does it every tick; here every few
                # simulated days, well inside the ledger's retention of minutes, so nothing is pruned first)
                compactor.catch_up(stamp + DAY_NS // 2)
                while exporter.step().points:
                    pass
                deliverer.flush(60)
        stats = deliverer.stats()
        refused += stats["rejected_points"]
        delivered += stats["delivered_points"]
        ledger.close()
        if args.verbose:
            print(f"{name}: {len(jobs)} jobs, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return figures(server, db, args, churn, plans, delivered=delivered, refused=refused,
                   expired=sink.expired.points, seconds=round(elapsed),
                   cpu_s=round(cpu))


def markdown(r: dict[str, Any]) -> str:
    f = r["formula"]
    return "\n".join([
        f"{r['hosts']} hosts, {r['days']} days, {r['jobs']:,} job runs (multi-node runs counted per host); "
        f"[influx] raw_days {r['raw_days']:g}, minutes_days {r['minutes_days']:g}, hours forever.",
        "",
        "| | raw | minutes | hours | whole database (influxd's index) | job tag values |",
        "|---|---:|---:|---:|---:|---:|",
        f"| measured | {r['series_by_rp']['raw']:,} | {r['series_by_rp']['minutes']:,} | "
        f"{r['series_by_rp']['hours']:,} | {r['series_index']:,} | {r['job_values']:,} |",
        f"| formula (docs/fleet.md) | {f['raw']:,.0f} | {f['minutes']:,.0f} | {f['hours']:,.0f} | "
        f"{f['total']:,.0f} | {f['job_values']:,.0f} |",
        "",
        f"Points delivered {r['delivered']:,}, refused by the server {r['refused']:,}"
        + (f", left out as older than their tier {r['expired']:,}; {r['seconds']} s ({r['cpu_s']} s CPU in the "
           "simulator). " if r["seconds"] is not None else " (measured again with --measure-only). "),
        "Limits of influxd's defaults: 1,000,000 series per database, 100,000 values per tag.",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--jobs-per-year", type=float, default=10_000)
    ap.add_argument("--raw-days", type=float, default=Config().influx.raw_days)
    ap.add_argument("--minutes-days", type=float, default=Config().influx.minutes_days)
    ap.add_argument("--settle-days", type=int, default=7, help="fold, export and deliver every this many days")
    ap.add_argument("--dir", help="work directory (ledgers, influxd data) [default: a new temp dir]")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--measure-only", action="store_true",
                    help="measure the finished simulation in --dir again (restarts its influxd), simulate nothing")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.measure_only and not args.dir:
        ap.error("--measure-only needs the --dir of a finished run")
    result = run(args)
    result["machine"] = machine_line()
    print(markdown(result))
    print(f"\nMachine: {result['machine']}. Command: python benchmarks/fleet_year.py "
          f"--hosts {args.hosts} --days {args.days} --minutes-days {args.minutes_days:g}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

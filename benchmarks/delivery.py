#!/usr/bin/env python3
"""Delivery throughput from a backlog into a real InfluxDB, and the agent's memory while it drains.

The situation it models: InfluxDB was away for an hour while the agent kept
ticking every second on a server with 100 jobs, so the spool holds one
wl_node, 100 wl_job and one wl_agent point per tick (3,600 ticks: 367,200
points, 360,000 of them wl_job). Then InfluxDB comes back.

It starts Debian's influxd on loopback (tests/influx_server.py), fills a
fresh ledger's spool tick by tick, then measures:

1. ``flush``: draining the whole backlog as fast as it goes (points/s), with
   the process RSS sampled every 20 ms (peak and after), for each sink
   setting given (gzip on and off);
2. ``step``: with the per-tick time budget the CLI uses at 1 s ticks
   (0.1 s), how long each step takes while a backlog is there (how much a
   tick is delayed) and how many points one step moves;

and checks that InfluxDB holds exactly the points that were spooled.

    .venv/bin/python benchmarks/delivery.py                 # the full hour
    .venv/bin/python benchmarks/delivery.py --ticks 600     # a quicker look

Prints a Markdown section for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.influx_server import InfluxServer  # noqa: E402
from benchmarks.machine import machine_line  # noqa: E402
from wattledger.agent.delivery import Deliverer  # noqa: E402
from wattledger.store.ledger import Ledger  # noqa: E402
from wattledger.model.points import WL_AGENT, WL_JOB, WL_NODE, Point  # noqa: E402
from wattledger.agent.sinks import InfluxV1Sink  # noqa: E402

T0 = 1_700_000_000_000_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class RssSampler:
    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s = every_s
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def tick_points(tick: int, jobs: int) -> list[Point]:
    t = T0 + tick * 1_000_000_000
    node = {"host": "gpu-server-01", "component": "cpu", "device": "package-0", "source": "rapl"}
    pts = [Point(WL_NODE, node, {"energy_j": 180.0, "power_w": 180.0, "idle_w": 40.0, "interval_s": 1.0}, t)]
    for j in range(jobs):
        tags = {**node, "job": f"experiment-{j:03d}", "user": f"user{j % 17}", "project": f"proj{j % 5}",
                "phase": ("search", "train", "inference")[j % 3]}
        e = 180.0 / jobs
        pts.append(Point(WL_JOB, tags, {"energy_j": e, "dynamic_j": e * 0.8, "static_j": e * 0.2,
                                        "driver_s": 0.02 * (j % 7)}, t))
    pts.append(Point(WL_AGENT, {"host": "gpu-server-01"}, {"tick_s": 0.004, "cpu_s": 0.003,
                                                           "rss_bytes": 5e7, "spooled": float(tick)}, t))
    return pts


def fill(ledger: Ledger, ticks: int, jobs: int) -> tuple[int, float]:
    started = time.perf_counter()
    n = 0
    for tick in range(ticks):
        pts = tick_points(tick, jobs)
        ledger.append(pts)
        n += len(pts)
    return n, time.perf_counter() - started


def count_in_influx(server: InfluxServer, db: str) -> int:
    total = 0
    for m, field in ((WL_NODE, "energy_j"), (WL_JOB, "energy_j"), (WL_AGENT, "tick_s")):
        rows = server.series_values(f"SELECT count({field}) FROM {m}", db)
        total += int(rows[0]["count"]) if rows else 0
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ticks", type=int, default=3600, help="ticks of backlog (1 s each) [3600: one hour]")
    ap.add_argument("--jobs", type=int, default=100, help="jobs charged per tick [100]")
    ap.add_argument("--batch-points", type=int, default=5000, help="points per write ([sink] batch_points) [5000]")
    ap.add_argument("--budget-s", type=float, default=0.1, help="step budget (the CLI's at 1 s ticks) [0.1]")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="wl-bench-delivery-") as tmp:
        server = InfluxServer(Path(tmp) / "influxd")
        server.start()
        results = []
        try:
            for gzip in (True, False):
                db = f"bench_{'gzip' if gzip else 'plain'}"
                server.create_db(db)
                ledger = Ledger(Path(tmp) / f"{db}.sqlite3", spool=True, spool_max_rows=10_000_000)
                n, fill_s = fill(ledger, args.ticks, args.jobs)
                sink = InfluxV1Sink(server.url, db, gzip=gzip, timeout_s=30)
                d = Deliverer(ledger, sink, batch_points=args.batch_points)
                rss_before = rss_bytes()
                with RssSampler() as rss:
                    started = time.perf_counter()
                    cpu0 = time.process_time()
                    drained = d.flush(deadline_s=3600)
                    elapsed = time.perf_counter() - started
                    cpu_s = time.process_time() - cpu0
                stored = count_in_influx(server, db)
                assert drained and stored == n, (drained, stored, n)
                results.append({"gzip": gzip, "points": n, "fill_s": fill_s, "drain_s": elapsed, "cpu_s": cpu_s,
                                "rate": n / elapsed, "rss_before": rss_before, "rss_peak": rss.peak,
                                "rss_after": rss_bytes(), "writes": d.stats()["writes"]})
                sink.close()
                ledger.close()

            # Steps under the per-tick budget while a backlog waits.
            db = "bench_steps"
            server.create_db(db)
            ledger = Ledger(Path(tmp) / "steps.sqlite3", spool=True, spool_max_rows=10_000_000)
            step_ticks = min(args.ticks, 600)
            fill(ledger, step_ticks, args.jobs)
            sink = InfluxV1Sink(server.url, db, gzip=True, timeout_s=30)
            d = Deliverer(ledger, sink, batch_points=args.batch_points, step_budget_s=args.budget_s)
            step_s: list[float] = []
            moved: list[int] = []
            while ledger.spool_counts()["spooled"] and len(step_s) < 30:
                before = ledger.spool_counts()["delivered"]
                t = time.perf_counter()
                d.step()
                step_s.append(time.perf_counter() - t)
                moved.append(ledger.spool_counts()["delivered"] - before)
            sink.close()
            ledger.close()
        finally:
            server.stop()

    mib = 1024 * 1024
    cmd = "cd " + str(ROOT) + " && .venv/bin/python benchmarks/delivery.py " + shlex.join(sys.argv[1:])
    out = ["## Delivery (issue 4)", "",
           f"Backlog: {args.ticks} ticks x (1 wl_node + {args.jobs} wl_job + 1 wl_agent) = "
           f"{results[0]['points']:,} points spooled in the SQLite ledger, drained by `Deliverer.flush` through "
           f"the influx_v1 sink (batches of {args.batch_points}) into Debian's influxd 1.6 on loopback, same machine.",
           "", f"Machine: {machine_line()}. Command: `{cmd.strip()}`", "",
           "| gzip | points | drain s | points/s | agent CPU s | RSS before MiB | RSS peak MiB | RSS after MiB "
           "| writes | spool fill s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        out.append(f"| {'on' if r['gzip'] else 'off'} | {r['points']:,} | {r['drain_s']:.1f} | {r['rate']:,.0f} | "
                   f"{r['cpu_s']:.1f} | {r['rss_before'] / mib:.1f} | {r['rss_peak'] / mib:.1f} | "
                   f"{r['rss_after'] / mib:.1f} | {r['writes']} | {r['fill_s']:.1f} |")
    out += ["", f"Per-tick steps with a backlog (budget {args.budget_s} s, as the CLI sets at 1 s ticks): "
            f"{len(step_s)} steps, each took median {statistics.median(step_s) * 1000:.0f} ms, "
            f"max {max(step_s) * 1000:.0f} ms, and moved median {statistics.median(moved):,.0f} points "
            f"(one tick of this server makes {args.jobs + 2} points).", "",
            "InfluxDB's own CPU (the same cores) is part of the drain time; InfluxDB checked to hold exactly "
            "the spooled points after each run."]
    print("\n".join(out))


if __name__ == "__main__":
    main()

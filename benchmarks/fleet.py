#!/usr/bin/env python3
"""A fleet of N agents ticking every second into one real influxd on this machine (issue 15).

Each simulated host is the real agent minus its hardware readers
(tests/fleet_sim.py ``SimHost``): its own SQLite ledger and outbox, the
agent's compactor, the rollup exporter, the deliverer and the v1 sink with
the tiers' routing, driven through ``Agent.commit`` once a second with a
realistic tick (``FleetStream``: 2 CPU packages, 2 DRAM, 8 GPUs; 50 jobs at a
time on the CPU and DRAM pools plus the ledger's own four; a job per busy
GPU; 236 energy points a tick, like benchmarks/ledger_year.py's server, plus
the embodied carbon of each job (59 wl_embodied points) and the wl_agent
point: 296 a tick; jobs turn over every ``--job-ticks`` ticks; the first two slots of each group of four
hosts run the same multi-node Slurm job). Hosts' clocks are skewed by up to
±``--skew`` seconds. The hosts are spread over ``--workers`` processes (the
GIL), ticking on the wall clock; influxd (Debian's 1.6) is started on
loopback with the tiered layout made by ``wattledger influx setup``.

Measured: points delivered per second (sustained), each host's backlog
(spooled points) every 10 s and its trend, ticks a worker could not make on
time, influxd's CPU and RSS (from /proc), the agents' CPU per host, the
series influxd's index holds; then, after every host has flushed, that
InfluxDB holds every point exactly once: per host and measurement, the
count of raw points equals the ledger's rows, and the count of minute and
hour points equals the ledger's exported buckets.

    .venv/bin/python benchmarks/fleet.py --hosts 100 --seconds 600
    .venv/bin/python benchmarks/fleet.py --hosts 20 --seconds 60     # a quick look
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402
from benchmarks.overhead import process_cpu_s, rss_mb  # noqa: E402
from tests.fleet_sim import FleetStream, SimHost  # noqa: E402
from tests.influx_server import InfluxServer  # noqa: E402
from wattledger.agent.provision import setup  # noqa: E402
from wattledger.agent.sinks import make_sink  # noqa: E402
from wattledger.agent.sinks.routing import routing  # noqa: E402
from wattledger.config import Config  # noqa: E402
from wattledger.model.points import WL_AGENT, WL_EMBODIED  # noqa: E402
from wattledger.model.units import NS_PER_S  # noqa: E402
from wattledger.store import export  # noqa: E402
from wattledger.store.schema import HOUR, MINUTE, raw_table, series_table  # noqa: E402

DB = "fleet"


def fleet_cfg(url: str, interval_s: float) -> Config:
    cfg = Config()
    cfg.sink.url, cfg.sink.database = url, DB
    cfg.agent.interval_s = interval_s
    return cfg


def host_names(n: int) -> list[str]:
    return [f"gpu-{i:03d}" for i in range(n)]


def stream_of(args: argparse.Namespace) -> FleetStream:
    return FleetStream(host_names(args.hosts), cpus=2, gpus=8, slots=50, job_ticks=args.job_ticks,
                       multi_node=2, group=4, interval_s=args.interval)


def worker(w: int, args: argparse.Namespace, url: str, start_at: float, out: Any) -> None:
    """Tick this worker's hosts every interval until ``args.seconds`` are over, then flush and count."""
    cfg = fleet_cfg(url, args.interval)
    stream = stream_of(args)
    names = host_names(args.hosts)[w::args.workers]
    hosts = [SimHost.start(n, Path(args.dir) / n, cfg, make_sink(cfg.sink, routing(cfg)),
                           skew_ns=int(((zlib.crc32(n.encode()) % 2001) / 1000 - 1) * args.skew * NS_PER_S)) for n in names]
    backlog: dict[str, list[int]] = {n: [] for n in names}
    late = tick = 0
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        due = t0 + (tick + 1) * args.interval
        now = time.time_ns()
        for h in hosts:
            h.commit(stream.points(h.name, tick, now + h.skew_ns))
        if tick % int(10 / args.interval) == 0:
            for h in hosts:
                backlog[h.name].append(h.ledger.spool_counts()["spooled"])
        tick += 1
        left = due - time.monotonic()
        if left > 0:
            time.sleep(left)
        else:
            late += 1
    cpu = time.process_time() - cpu0
    done = {h.name: h.settle(time.time_ns() + 2 * 60 * NS_PER_S, deadline_s=600) for h in hosts}
    counts = {h.name: ledger_counts(h) for h in hosts}
    delivered = sum(h.ledger.spool_counts()["delivered"] for h in hosts)
    for h in hosts:
        h.close()
    out.put({"worker": w, "hosts": names, "ticks": tick, "late": late, "cpu_s": cpu,
             "commit_cpu_s": sum(h.commit_cpu_s for h in hosts), "backlog": backlog,
             "flushed": done, "counts": counts, "delivered": delivered})


def ledger_counts(h: SimHost) -> dict[str, int]:
    """What InfluxDB must hold for this host: raw rows per measurement, exported minute and hour points."""
    db = h.ledger.connection()
    out = {}
    for m in export.EXPORTED:
        out[f"raw:{m}"] = db.execute(f"SELECT COUNT(*) FROM {raw_table(m)} r JOIN {series_table(m)} s "
                                     "ON s.id = r.series WHERE s.host = ?", (h.name,)).fetchone()[0]
    out[f"raw:{WL_AGENT}"] = db.execute(f"SELECT COUNT(*) FROM {WL_AGENT}").fetchone()[0]
    for level, tier in ((MINUTE, "minutes"), (HOUR, "hours")):
        mark = min(export.exported(db, m, level) or 0 for m in export.EXPORTED)
        for p in export.points_between(db, level, 0, mark):
            out[f"{tier}:{p.measurement}"] = out.get(f"{tier}:{p.measurement}", 0) + 1
    return out


def influx_counts(server: InfluxServer) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for tier, measurements in (("raw", (*export.EXPORTED, WL_AGENT)), ("minutes", export.EXPORTED),
                               ("hours", export.EXPORTED)):
        for m in measurements:
            field = {WL_AGENT: "tick_s", WL_EMBODIED: "embodied_g"}.get(m, "energy_j")
            for r in server.series_values(f'SELECT count("{field}") FROM "{tier}"."{m}" GROUP BY "host"', DB):
                out.setdefault(r["host"], {})[f"{tier}:{m}"] = int(r["count"])
    return out



def slope_per_min(samples: list[int], every_s: float) -> float:
    """Least-squares trend of a backlog, points a minute (0 for fewer than 3 samples)."""
    if len(samples) < 3:
        return 0.0
    xs = [i * every_s / 60 for i in range(len(samples))]
    mx, my = statistics.fmean(xs), statistics.fmean(samples)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, samples)) / den if den else 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = InfluxServer(Path(args.dir) / "influxd")
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        setup(fleet_cfg(server.url, args.interval))
        out: Any = mp.get_context("fork").Queue()
        start_at = time.time() + 5
        procs = [mp.get_context("fork").Process(target=worker, args=(w, args, server.url, start_at, out))
                 for w in range(args.workers)]
        for p in procs:
            p.start()
        samples = []
        time.sleep(max(0.0, start_at - time.time()))
        c0, t0 = process_cpu_s(pid), time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            time.sleep(5)
            samples.append((time.monotonic() - t0, process_cpu_s(pid) - c0, rss_mb(pid)[0]))
        influx_cpu = process_cpu_s(pid) - c0
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        return summarise(args, server, results, influx_cpu, samples)
    finally:
        server.stop()


def summarise(args: argparse.Namespace, server: InfluxServer, results: list[dict[str, Any]], influx_cpu: float,
              samples: list[tuple[float, float, float]]) -> dict[str, Any]:
    remote = influx_counts(server)
    mismatched = {}
    backlog: dict[str, list[int]] = {}
    for r in results:
        backlog.update(r["backlog"])
        for host, want in r["counts"].items():
            got = {k: v for k, v in remote.get(host, {}).items()}
            if {k: v for k, v in want.items() if v} != {k: v for k, v in got.items() if v}:
                mismatched[host] = {"ledger": want, "influx": got}
    series = server.num_series(DB)
    slopes = {h: slope_per_min(b, 10) for h, b in backlog.items()}
    per_tick = len(stream_of(args).points(host_names(args.hosts)[0], 0, 0)) + 1  # + the wl_agent point
    ticks = sum(r["ticks"] for r in results) / len(results)
    late = sum(r["late"] for r in results)
    delivered = sum(r["delivered"] for r in results)
    return {
        "hosts": args.hosts, "workers": args.workers, "seconds": args.seconds, "interval_s": args.interval,
        "ticks_per_host": ticks, "late_ticks": late, "points_per_tick": per_tick,
        "points_per_s_offered": args.hosts * per_tick / args.interval,
        "points_per_s_delivered": delivered / args.seconds,
        "backlog_max": max(max(b) for b in backlog.values() if b),
        "backlog_end_max": max(b[-1] for b in backlog.values() if b),
        "backlog_slope_max_per_min": max(slopes.values()),
        "growing_hosts": sorted(h for h, s in slopes.items() if s > per_tick / args.interval),
        "influxd_cpu_pct": 100 * influx_cpu / args.seconds,
        "influxd_rss_mb_max": max(s[2] for s in samples) if samples else 0.0,
        "agent_cpu_pct_per_host": 100 * sum(r["commit_cpu_s"] for r in results) / args.seconds / args.hosts,
        "simulator_cpu_pct_per_host": 100 * sum(r["cpu_s"] - r["commit_cpu_s"] for r in results) / args.seconds
        / args.hosts,
        "series": series,
        "all_flushed": all(all(r["flushed"].values()) for r in results),
        "exactly_once_hosts": args.hosts - len(mismatched), "mismatched": mismatched,
        "machine": machine_line(),
    }


def markdown(r: dict[str, Any]) -> str:
    return "\n".join([
        f"| {r['hosts']} | {r['seconds']} | {r['ticks_per_host']:.0f} | {r['late_ticks']} | "
        f"{r['points_per_s_offered']:,.0f} | {r['points_per_s_delivered']:,.0f} | {r['backlog_max']:,} | "
        f"{r['backlog_end_max']:,} | {r['backlog_slope_max_per_min']:+,.0f} | {r['influxd_cpu_pct']:.0f} | "
        f"{r['influxd_rss_mb_max']:.0f} | {r['agent_cpu_pct_per_host']:.2f} | "
        f"{r['simulator_cpu_pct_per_host']:.2f} | {r['series']:,} | "
        f"{r['exactly_once_hosts']}/{r['hosts']} |",
    ])


HEADER = ("| hosts | s | ticks/host | late ticks | points/s offered | points/s delivered | backlog max | "
          "backlog at end (max) | backlog trend (max, /min) | influxd CPU % | influxd RSS MB | agent CPU %/host | "
          "simulator CPU %/host | series | exactly once |\n|" + "---:|" * 15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--job-ticks", type=int, default=300, help="ticks a job holds its slot (churn)")
    ap.add_argument("--skew", type=float, default=5.0, help="hosts' clocks are off by up to this many seconds")
    ap.add_argument("--dir", help="ledgers and influxd data [default: a new temp dir]")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    args.dir = args.dir or tempfile.mkdtemp(prefix="fleet-")
    result = run(args)
    print(HEADER)
    print(markdown(result))
    print(f"\nMachine: {result['machine']}. Command: python benchmarks/fleet.py --hosts {args.hosts} "
          f"--seconds {args.seconds:g} --workers {args.workers}")
    if result["mismatched"]:
        print("mismatched:", json.dumps(result["mismatched"], indent=1)[:3000])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

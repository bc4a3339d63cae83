"""What the Prometheus endpoint costs with 100 active jobs: per operation, and for the whole agent.

1. Per operation, in this process (``Exporter`` over a temporary ledger, ticks
   shaped as the agent makes them: 100 tagged jobs and the reserved ones on
   ``--pools`` pools): the tick path (``committed``: a reference queued), a
   scrape after one tick and after 15 ticks (prometheus-client's text
   exposition of every family, as the HTTP handler makes it), the periodic
   snapshot into the ledger, and the size of one scrape.
2. The whole agent (``wattledger agent --interval 1``, model energy where
   there is no RAPL, ``occupancy`` static policy so that every job with a
   live process is charged every tick: 100 active jobs) over 100 tagged
   sleeping processes and ``--idle`` untagged ones, as benchmarks/overhead.py
   measures it, but with CPU from ``/proc/<pid>/stat`` (every thread: the
   scrapes are answered on threads of their own, which schedstat's main
   thread leaves out) over a window after a warm-up, RSS. Three runs: the endpoint off; on and scraped every second;
   on and scraped every 15 s (Prometheus' usual interval).

    .venv/bin/python benchmarks/prometheus_cost.py --markdown
    .venv/bin/python benchmarks/prometheus_cost.py --no-agent     # part 1 only (seconds)

Targets: the agent stays within its overhead figures (RESULTS.md, issue 6:
<= 1% of one core at 1 s ticks with 2,000 processes, <= 80 MB RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import machine  # noqa: E402
from benchmarks.overhead import IdleProcesses, agent_ticks, host_busy_ticks, process_cpu_s, rss_mb  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
JOBS = 100


# -- 1. per operation ----------------------------------------------------------------------------------
def tick_points(t: int, pools: int) -> list[Any]:
    from wattledger.model.points import WL_AGENT, WL_JOB, WL_NODE, Point

    points = []
    for p in range(pools):
        comp, dev = ("cpu", "dram")[p % 2], f"package-{p // 2}"
        points.append(Point(WL_NODE, {"host": "bench", "component": comp, "device": dev, "source": "rapl"},
                            {"energy_j": 50.0, "power_w": 50.0, "idle_w": 10.0, "interval_s": 1.0}, t))
        for j in [f"bench-{i}" for i in range(JOBS)] + ["_idle", "_system", "_agent"]:
            points.append(Point(WL_JOB, {"host": "bench", "job": j, "user": "u", "project": "p", "phase": "train",
                                         "component": comp, "device": dev, "source": "rapl"},
                                {"energy_j": 0.4, "dynamic_j": 0.3, "static_j": 0.1, "driver_s": 0.01}, t))
    points.append(Point(WL_AGENT, {"host": "bench"}, {"tick_s": 0.002, "cpu_s": 0.001, "rss_bytes": 4e7,
                                                      "spooled": 0.0, "delivered": 0.0, "dropped": 0.0,
                                                      "write_errors": 0.0}, t))
    return points


def per_operation(pools: int, repeats: int) -> dict[str, float]:
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from wattledger.agent.exporter import Exporter
    from wattledger.config import Config
    from wattledger.store.ledger import Ledger

    with tempfile.TemporaryDirectory(prefix="wl-prom-bench-") as tmp:
        ledger = Ledger.in_state_dir(Path(tmp))
        exporter = Exporter(Config(), ledger, "bench")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(exporter)
        t0 = 1_800_000_000_000_000_000
        ticks = [tick_points(t0 + i * 1_000_000_000, pools) for i in range(repeats * 16 + 2)]
        commit_us: list[float] = []
        scrape1_ms: list[float] = []
        scrape15_ms: list[float] = []
        size = 0
        i = 0
        for r in range(repeats):
            for n, out in ((1, scrape1_ms), (15, scrape15_ms)):
                for _ in range(n):
                    c = time.perf_counter()
                    exporter.committed(ticks[i], t0 + i * 1_000_000_000)
                    commit_us.append(1e6 * (time.perf_counter() - c))
                    i += 1
                c = time.process_time()
                body = generate_latest(registry)
                out.append(1e3 * (time.process_time() - c))
                size = len(body)
        c = time.process_time()
        for _ in range(repeats):
            exporter.snapshot()
        snapshot_ms = 1e3 * (time.process_time() - c) / repeats
        series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
        ledger.close()
    return {"pools": pools, "job_series": (JOBS + 3) * pools, "series_per_scrape": series, "scrape_bytes": size,
            "commit_us_median": statistics.median(commit_us), "commit_us_max": max(commit_us),
            "scrape_after_1_tick_ms": statistics.median(scrape1_ms[1:]),
            "scrape_after_15_ticks_ms": statistics.median(scrape15_ms[1:]), "snapshot_ms": snapshot_ms}


# -- 2. the whole agent ----------------------------------------------------------------------------------
class TaggedSleepers:
    """JOBS sleeping processes, each its own tagged job, in one session killed together."""

    def __enter__(self) -> "TaggedSleepers":
        script = "\n".join(f"WATTLEDGER_JOB=bench-{i} sleep 100000 &" for i in range(JOBS)) + "\nwait\n"
        self.proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
        time.sleep(2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def scraper(url: str, every_s: float, stop: threading.Event, count: list[int]) -> None:
    while not stop.wait(every_s):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
            count[0] += 1
        except OSError:
            pass


def whole_agent(label: str, listen: str, scrape_s: float | None, warmup_s: float, window_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wl-prom-agent-") as tmp:
        cfg = Path(tmp) / "c.toml"
        cfg.write_text(f'[agent]\nstate_dir = "{tmp}"\ninterval_s = 1.0\ngpus = "never"\n'
                       '[attribution]\ncpu_static_policy = "occupancy"\ndram_static_policy = "occupancy"\n'
                       + (f'[prometheus]\nlisten = "{listen}"\n' if listen else ""))
        p = subprocess.Popen([PY, "-m", "wattledger.cli.main", "agent", "--config", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stop, count = threading.Event(), [0]
        thread = None
        try:
            time.sleep(warmup_s)
            if p.poll() is not None:
                raise RuntimeError(f"agent exited: {p.stderr.read() if p.stderr else ''}")
            if scrape_s is not None:
                thread = threading.Thread(target=scraper, args=(f"http://{listen}/metrics", scrape_s, stop, count))
                thread.start()
            start, busy0, t0 = process_cpu_s(p.pid), host_busy_ticks(), time.monotonic()
            time.sleep(window_s)
            used, elapsed = process_cpu_s(p.pid) - start, time.monotonic() - t0
            busy = (host_busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK") / elapsed
            rss, hwm = rss_mb(p.pid)
            active = _active_jobs(listen) if listen else None
        finally:
            stop.set()
            if thread is not None:
                thread.join()
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
        ticks = agent_ticks(Path(tmp))
    return {"run": label, "cpu_pct_of_core": 100 * used / elapsed, "rss_mb": rss, "peak_rss_mb": hwm,
            "scrapes": count[0], "active_jobs": active, "host_busy_cpus": busy, **ticks}


def _active_jobs(listen: str) -> float | None:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("wattledger_exporter_active_jobs{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": machine(), "operations": per_operation(args.pools, args.repeats)}
    print(json.dumps(report["operations"]), file=sys.stderr, flush=True)
    if args.no_agent:
        return report
    runs = []
    with TaggedSleepers(), IdleProcesses(args.idle):
        from tests.influx_server import free_port

        listen = f"127.0.0.1:{free_port()}"
        for label, on, every in (("endpoint off", "", None), ("on, scraped every 1 s", listen, 1.0),
                                 ("on, scraped every 15 s", listen, 15.0)):
            runs.append(whole_agent(label, on, every, args.warmup, args.seconds))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    report.update(runs=runs, idle=args.idle, seconds=args.seconds, warmup=args.warmup)
    return report


def markdown(report: dict[str, Any], command: str) -> str:
    m, o = report["machine"], report["operations"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}.",
        f"Command: `{command}`",
        "",
        f"Per operation ({JOBS} tagged jobs + 3 reserved on {o['pools']} pools: {o['job_series']} job series, "
        f"{o['series_per_scrape']} series and {o['scrape_bytes'] / 1024:.0f} KiB per scrape):",
        "",
        "| tick path: `committed` (median / max) | scrape after 1 tick | scrape after 15 ticks | snapshot to the ledger |",
        "|---:|---:|---:|---:|",
        f"| {o['commit_us_median']:.1f} / {o['commit_us_max']:.0f} us | {o['scrape_after_1_tick_ms']:.1f} ms CPU "
        f"| {o['scrape_after_15_ticks_ms']:.1f} ms CPU | {o['snapshot_ms']:.1f} ms CPU |",
    ]
    if report.get("runs"):
        lines += [
            "",
            f"The whole agent, 1 s ticks, {JOBS} tagged sleeping jobs + {report['idle']:,} idle processes, occupancy "
            f"policy (every job charged every tick); CPU over {report['seconds']:g} s after {report['warmup']:g} s:",
            "",
            "| run | agent CPU (% of a core) | RSS / peak (MB) | tick mean / max (ms) | scrapes | jobs exposed "
            "| rest of the machine busy (CPUs) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["runs"]:
            lines.append(f"| {r['run']} | {r['cpu_pct_of_core']:.2f} | {r['rss_mb']:.0f} / {r['peak_rss_mb']:.0f} "
                         f"| {r['mean_tick_ms']:.1f} / {r['max_tick_ms']:.1f} | {r['scrapes']} "
                         f"| {'-' if r['active_jobs'] is None else int(r['active_jobs'])} | {r['host_busy_cpus']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", type=int, default=4, help="pools per tick in part 1 (2 packages + 2 DRAM)")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--idle", type=int, default=1900, help="untagged idle processes beside the 100 jobs")
    ap.add_argument("--seconds", type=float, default=65.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--no-agent", action="store_true", help="part 1 only")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    report = run(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    command = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    print(markdown(report, command) if args.markdown else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

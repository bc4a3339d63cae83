"""Agent overhead with thousands of idle processes, beside a naive psutil poller.

For each size N (default 2,000 and 5,000) the benchmark starts N extra idle
processes (``sleep``), then, one after the other on the same processes:

* runs the real agent (``wattledger agent --interval 1``, model energy where
  there is no RAPL, the local SQLite ledger, no sink) for ``--seconds`` and
  measures its CPU time (``/proc/<pid>/schedstat``, ns) over the steady-state
  window after a warm-up, and its RSS (VmRSS, VmHWM);
* runs a naive poller that reads the same attributes of every process every
  second with psutil (ppid, uids, cpu_times, create_time, environ, plus the
  cgroup file) and measures it the same way.

The window is long enough (default 65 s) to hold one of the agent's periodic
full scans (every 60 ticks). The figure is the ratio of the two CPU costs.

    .venv/bin/python benchmarks/overhead.py                 # 2,000 and 5,000
    .venv/bin/python benchmarks/overhead.py --sizes 0       # idle machine only
    .venv/bin/python benchmarks/overhead.py --markdown      # a RESULTS.md section

Targets (DESIGN.md, issue 6): <= 1% of one core at 2,000, <= 3% at 5,000,
<= 80 MB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

POLLER = r"""
import os, sys, time
import psutil
interval = float(sys.argv[1])
attrs = ["pid", "ppid", "uids", "cpu_times", "create_time", "environ"]
next_at = time.monotonic()
while True:
    for p in psutil.process_iter(attrs):
        try:
            with open(f"/proc/{p.info['pid']}/cgroup", "rb") as f:
                f.read()
        except OSError:
            pass
    next_at += interval
    time.sleep(max(0.0, next_at - time.monotonic()))
"""


@dataclass
class Cost:
    who: str
    extra_processes: int
    processes: int
    window_s: float
    cpu_s: float
    cpu_pct_of_core: float
    rss_mb: float
    peak_rss_mb: float
    startup_cpu_s: float
    host_busy_cpus: float = 0.0  # how busy the whole machine was in the window (/proc/stat)


def count_processes() -> int:
    return sum(1 for p in os.listdir("/proc") if p.isdigit())


def cpu_ns(pid: int) -> int:
    """Time on CPU, ns, from schedstat (finer than stat's 10 ms ticks)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def process_cpu_s(pid: int) -> float:
    """Time on CPU, s, of the whole process: every thread, those that have exited included (stat's utime +
    stime, 10 ms ticks). schedstat (``cpu_ns``) is the main thread's alone: it misses, e.g., the threads
    prometheus-client starts to answer each scrape."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6]


def rss_mb(pid: int) -> tuple[float, float]:
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


class IdleProcesses:
    """N sleeping processes in their own session, killed together."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "IdleProcesses":
        if self.n <= 0:
            return self
        before = count_processes()
        script = f'i=0; while [ $i -lt {self.n} ]; do sleep 100000 & i=$((i+1)); done; wait'
        self.proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
        deadline = time.monotonic() + 300
        while count_processes() < before + self.n and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # let the spawner settle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            time.sleep(1)


def measure(cmd: list[str], who: str, extra: int, warmup_s: float, window_s: float,
            env: dict[str, str] | None = None) -> Cost:
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(warmup_s)
        if p.poll() is not None:
            raise RuntimeError(f"{who} exited early: {p.stderr.read() if p.stderr else ''}")
        startup = cpu_ns(p.pid)
        busy0 = host_busy_ticks()
        t0 = time.monotonic()
        time.sleep(window_s)
        used = cpu_ns(p.pid) - startup
        elapsed = time.monotonic() - t0
        busy = (host_busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK") / elapsed
        rss, hwm = rss_mb(p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return Cost(who, extra, count_processes(), round(elapsed, 1), used / 1e9, 100 * used / 1e9 / elapsed, rss, hwm,
                startup / 1e9, busy)


def agent_cmd(state_dir: Path, interval_s: float) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, WATTLEDGER_AGENT_STATE_DIR=str(state_dir), WATTLEDGER_AGENT_GPUS="never")
    env.pop("WATTLEDGER_CONFIG", None)
    return [PY, "-m", "wattledger.cli.main", "agent", "--interval", str(interval_s)], env


def collector_profile(reads: int = 130, gap_s: float = 0.1) -> dict[str, float]:
    """The procs collector alone, in this process: CPU ms of the first read (every
    process identified), of steady reads, and of the periodic full scans."""
    sys.path.insert(0, str(REPO))
    from wattledger.collectors.procs import ProcCollector

    c = ProcCollector(procfs_root=Path("/proc"))
    steady: list[float] = []
    full: list[float] = []
    first = 0.0
    for i in range(reads):
        t = time.process_time()
        s = c.read(time.time_ns())
        ms = 1e3 * (time.process_time() - t)
        if i == 0:
            first = ms
        elif s.full_scan:
            full.append(ms)
        elif i > 5:
            steady.append(ms)
        time.sleep(gap_s)
    return {"first_read_ms": first, "steady_read_ms": sum(steady) / max(1, len(steady)),
            "full_scan_ms": sum(full) / max(1, len(full))}


def agent_ticks(state_dir: Path) -> dict[str, float]:
    """What the agent says of itself (wl_agent): mean tick duration and ticks made."""
    import sqlite3

    db = sqlite3.connect(str(state_dir / "ledger.sqlite3"))
    n, mean_tick, max_tick = db.execute("SELECT COUNT(*), AVG(tick_s), MAX(tick_s) FROM wl_agent").fetchone()
    db.close()
    return {"ticks": float(n or 0), "mean_tick_ms": 1e3 * (mean_tick or 0), "max_tick_ms": 1e3 * (max_tick or 0)}


def run(sizes: list[int], window_s: float, warmup_s: float, interval_s: float, poller: bool) -> dict:
    results: list[dict] = []
    for n in sizes:
        with IdleProcesses(n), tempfile.TemporaryDirectory(prefix="wl-overhead-") as tmp:
            cmd, env = agent_cmd(Path(tmp), interval_s)
            a = measure(cmd, "agent", n, warmup_s, window_s, env)
            row: dict[str, Any] = {"agent": asdict(a), "agent_ticks": agent_ticks(Path(tmp)), "collector": collector_profile()}
            if poller:
                q = measure([PY, "-c", POLLER, str(interval_s)], "psutil poller", n, warmup_s, window_s)
                row["poller"] = asdict(q)
                row["ratio"] = q.cpu_s / a.cpu_s if a.cpu_s > 0 else float("inf")
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return {"machine": machine(), "interval_s": interval_s, "window_s": window_s, "warmup_s": warmup_s,
            "results": results}


def markdown(report: dict, command: str) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}. "
        f"Ticks every {report['interval_s']:g} s; CPU over a {report['window_s']:g} s window after "
        f"{report['warmup_s']:g} s of warm-up"
        + (" (one of the agent's periodic full scans, every 60 ticks, inside it)" if report["window_s"] >= 60 else "")
        + ". The rest of the machine was "
        + ", ".join(f"{r['agent']['host_busy_cpus']:.2f}" for r in report["results"])
        + " CPUs busy during the agent's windows.",
        f"Command: `{command}`",
        "",
        "| extra idle processes | processes | agent CPU (% of a core) | agent RSS / peak (MB) "
        "| agent tick mean / max (ms) | psutil poller CPU (% of a core) | poller RSS (MB) | poller / agent "
        "| collector read: first / steady / full scan (CPU ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        a, t = r["agent"], r["agent_ticks"]
        q = r.get("poller")
        poll = f"{q['cpu_pct_of_core']:.2f} | {q['rss_mb']:.0f} | {r['ratio']:.0f}x" if q else "- | - | -"
        c = r["collector"]
        lines.append(f"| {a['extra_processes']:,} | {a['processes']:,} | {a['cpu_pct_of_core']:.2f} "
                     f"| {a['rss_mb']:.0f} / {a['peak_rss_mb']:.0f} | {t['mean_tick_ms']:.1f} / {t['max_tick_ms']:.1f} "
                     f"| {poll} | {c['first_read_ms']:.0f} / {c['steady_read_ms']:.2f} / {c['full_scan_ms']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    ap.add_argument("--seconds", type=float, default=65.0, help="measurement window per run")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds before the window (start-up, first scan)")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--no-poller", action="store_true")
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    ap.add_argument("--markdown", action="store_true", help="print a RESULTS.md section")
    args = ap.parse_args()
    report = run(args.sizes, args.seconds, args.warmup, args.interval, not args.no_poller)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(markdown(report, "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]))
          if args.markdown else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

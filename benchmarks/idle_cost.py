"""The agent's own cost on an otherwise idle machine at 1 s ticks (issue 3).

Runs the real agent (``wattledger agent --interval 1``; model energy where there
is no RAPL, the SQLite ledger, no sink) with no extra processes, and measures
its CPU time (``/proc/<pid>/schedstat``) over a window after warm-up, its RSS,
and how busy the rest of the machine was meanwhile (an "idle" machine that
is not idle is said so). Uses the harness of ``benchmarks/overhead.py``.

    .venv/bin/python benchmarks/idle_cost.py [--seconds 65] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import machine  # noqa: E402
from benchmarks.overhead import REPO, agent_cmd, agent_ticks, count_processes, measure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=65.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wl-idle-cost-") as tmp:
        cmd, env = agent_cmd(Path(tmp), args.interval)
        cost = measure(cmd, "agent", 0, args.warmup, args.seconds, env)
        ticks = agent_ticks(Path(tmp))
    report: dict[str, Any] = {"machine": machine(), "processes": count_processes(), "agent": asdict(cost), "agent_ticks": ticks}
    if not args.markdown:
        print(json.dumps(report, indent=2))
        return
    m = report["machine"]
    command = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    print("\n".join([
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; "
        f"{cost.processes} processes; the rest of the machine was {cost.host_busy_cpus:.3f} CPUs busy "
        "during the window.",
        f"Command: `{command}`",
        "",
        "| ticks | window (s) | agent CPU (% of a core) | CPU per tick (ms) | RSS / peak (MB) "
        "| tick mean / max (ms) | start-up CPU (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {ticks['ticks']:.0f} | {cost.window_s:.0f} | {cost.cpu_pct_of_core:.2f} "
        f"| {1e3 * cost.cpu_s / (cost.window_s / args.interval):.2f} | {cost.rss_mb:.0f} / {cost.peak_rss_mb:.0f} "
        f"| {ticks['mean_tick_ms']:.1f} / {ticks['max_tick_ms']:.1f} | {cost.startup_cpu_s:.2f} |",
    ]))


if __name__ == "__main__":
    main()

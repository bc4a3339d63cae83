"""Fairness: does the same work cost the same whoever runs beside it? Every static policy, side by side.

A live fake powercap tree (tests/live_powercap.py) draws, like a real
package, P = idle_w + per_vcpu_w x busy vCPUs of this machine (and a
constant DRAM power). A tagged job does a fixed amount of work, N CPU-seconds
(``--work``), in three scenarios:

* alone;
* beside one tagged neighbour burning a CPU at 100%;
* beside four such neighbours (on a 2-vCPU machine they and the job share
  the CPUs, so the job takes longer in wall time for the same CPU seconds).

The real pipeline (RAPL collector over the tree, the process reader over
this machine's /proc, attribution, points) ticks every second, four agents
fed by the same reads, one per static policy (``capacity``, ``proportional``,
``occupancy``, ``idle``). The job's charge is the sum of its ``wl_job`` rows
(CPU and DRAM). Under ``capacity`` it should not depend on the neighbours
(target: at most 3% between the three scenarios); the model's truth for its
c CPU seconds is per_vcpu_w x c + (idle_w + dram_w) x c / ncpu.

    .venv/bin/python benchmarks/fairness.py [--work 5] [--repeat 1] [--markdown]

Timing noise: the machine's own load (other users) runs beside the job in
every scenario and is charged to its owners; the job's CPU seconds are its
own (``/proc/<pid>/schedstat``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.accuracy import SharedEnergy, SharedProcs, _keep_points  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from tests.clocks import FakeClock  # noqa: E402
from tests.live_powercap import LinearModel, LivePowercap, busy_reader  # noqa: E402
from wattledger.agent.factory import build_agent  # noqa: E402
from wattledger.agent.loop import Agent  # noqa: E402
from wattledger.collectors.rapl import RaplCollector  # noqa: E402
from wattledger.config import Config, Estimate, Gpus  # noqa: E402
from wattledger.model.points import WL_JOB, Point  # noqa: E402
from wattledger.model.policies import StaticPolicy  # noqa: E402
from wattledger.store.ledger import Ledger  # noqa: E402

POLICIES = ("capacity", "proportional", "occupancy", "idle")
SCENARIOS = {"alone": 0, "beside 1 x 100%": 1, "beside 4 x 100%": 4}
WORK = "import sys, time\nend = time.process_time() + float(sys.argv[1])\nwhile time.process_time() < end: pass\n"
SPIN = "while True: pass\n"
TAG = "fixed-work"
NEIGHBOURS = {f"neighbour-{i}" for i in range(max(SCENARIOS.values()))}


def agents(tree: Path, model: LinearModel, tmp: Path, now: list[int]) -> tuple[list[Agent], dict[str, list[Point]]]:
    """One agent per policy, all fed by one read of the tree and of /proc per tick."""
    energy = SharedEnergy(RaplCollector(tree))
    procs = SharedProcs()
    points: dict[str, list[Point]] = {p: [] for p in POLICIES}
    out = []
    for policy in POLICIES:
        cfg = Config()
        cfg.agent.estimate, cfg.agent.gpus = Estimate.NEVER, Gpus.NEVER
        cfg.attribution.cpu_static_policy = cfg.attribution.dram_static_policy = StaticPolicy(policy)
        cfg.attribution.idle_power_w = model.idle_config()
        out.append(build_agent(cfg, Ledger.in_state_dir(tmp / policy), energy=[energy], procs=procs,
                               clock=FakeClock(lambda: now[0]), host="bench",
                               on_tick=partial(_keep_points, points[policy])))
    return out, points


def scenario(tree: Path, model: LinearModel, neighbours: int, work_s: float, tick_s: float) -> dict[str, Any]:
    """Run the fixed work beside ``neighbours`` spinning neighbours; the job's charge under every policy."""
    now = [time.time_ns()]
    with tempfile.TemporaryDirectory(prefix="wl-fairness-") as tmp:
        agent_list, points = agents(tree, model, Path(tmp), now)
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN], env=dict(os.environ, WATTLEDGER_JOB=f"neighbour-{i}"))
                    for i in range(neighbours)]
        try:
            time.sleep(0.5)
            for a in agent_list:
                a.commit(a.tick())
            started = time.monotonic()
            job = subprocess.Popen([sys.executable, "-c", WORK, str(work_s)], env=dict(os.environ, WATTLEDGER_JOB=TAG))
            cpu_s = _tick_until_done(agent_list, job, now, tick_s)
            wall_s = time.monotonic() - started
        finally:
            for p in spinners:
                p.kill()
                p.wait()
    charged = {policy: sum(p.fields["energy_j"] for p in pts if p.measurement == WL_JOB and p.tags["job"] == TAG)
               for policy, pts in points.items()}
    cpu_rows = [p for p in points["capacity"] if p.measurement == WL_JOB and p.tags["component"] == "cpu"]
    seen_s = sum(p.fields["driver_s"] for p in cpu_rows if p.tags["job"] == TAG)
    # what else kept the machine busy: everything but the job and its neighbours, in vCPUs
    others_s = sum(p.fields["driver_s"] for p in cpu_rows if p.tags["job"] != TAG and p.tags["job"] not in NEIGHBOURS)
    return {"neighbours": neighbours, "cpu_s": cpu_s, "seen_cpu_s": seen_s, "wall_s": wall_s, "charged_j": charged,
            "others_vcpus": others_s / wall_s,
            "true_j": model.true_charge_j(cpu_s, os.cpu_count() or 1)}


def _tick_until_done(agent_list: list[Agent], job: subprocess.Popen[bytes], now: list[int], tick_s: float) -> float:
    """Tick every ``tick_s`` until the job exits (its zombie read once more); its CPU seconds."""
    cpu_ns = 0
    next_at = time.monotonic() + tick_s
    while True:
        time.sleep(max(0.0, min(0.02, next_at - time.monotonic())))
        info = os.waitid(os.P_PID, job.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        done = info is not None and info.si_pid == job.pid
        if done or time.monotonic() >= next_at:
            with open(f"/proc/{job.pid}/schedstat") as f:
                cpu_ns = int(f.read().split()[0])
            now[0] = time.time_ns()
            for a in agent_list:
                a.commit(a.tick())
            next_at += tick_s
        if done:
            job.wait()
            return cpu_ns / 1e9


def run(work_s: float, repeat: int, tick_s: float) -> dict[str, Any]:
    model = LinearModel()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wl-fair-tree-") as tmp, LivePowercap(Path(tmp) / "sysfs", model) as tree:
        for _ in range(repeat):
            for name, n in SCENARIOS.items():
                results.append({"scenario": name, **scenario(tree.root, model, n, work_s, tick_s)})
    spread = {}
    for policy in POLICIES:
        per_cpu = [r["charged_j"][policy] / r["cpu_s"] for r in results]  # J per CPU-second: same work, same cost?
        spread[policy] = 100 * (max(per_cpu) - min(per_cpu)) / statistics.fmean(per_cpu)
    return {"machine": machine(), "work_s": work_s, "tick_s": tick_s, "repeat": repeat, "model": model.__dict__,
            "busy_source": busy_reader()[0], "results": results, "spread_pct": spread}


def markdown(report: dict[str, Any], command: str) -> str:
    m, model = report["machine"], report["model"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}. Tree: "
        f"{model['idle_w']:g} W + {model['per_vcpu_w']:g} W per busy vCPU (busy from {report['busy_source']}), "
        f"DRAM {model['dram_w']:g} W; ticks of {report['tick_s']:g} s; the job burns {report['work_s']:g} CPU-s.",
        f"Command: `{command}`",
        "",
        "| scenario | job CPU s | wall s | others busy (vCPU) | truth J | " + " | ".join(f"{p} J" for p in POLICIES)
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(POLICIES),
    ]
    for r in report["results"]:
        lines.append(f"| {r['scenario']} | {r['cpu_s']:.2f} | {r['wall_s']:.1f} | {r['others_vcpus']:.2f} "
                     f"| {r['true_j']:.1f} | "
                     + " | ".join(f"{r['charged_j'][p]:.1f}" for p in POLICIES) + " |")
    lines += ["", "Spread of the job's charge per CPU-second across the scenarios (max - min) / mean: " + ", ".join(
        f"{p} {report['spread_pct'][p]:.1f}%" for p in POLICIES) + " (target for capacity: <= 3%)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=float, default=5.0, help="CPU-seconds of work the job does")
    ap.add_argument("--repeat", type=int, default=1, help="run the three scenarios this many times")
    ap.add_argument("--tick", type=float, default=1.0, help="seconds between ticks")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    report = run(args.work, args.repeat, args.tick)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    cmd = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    print(markdown(report, cmd) if args.markdown else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

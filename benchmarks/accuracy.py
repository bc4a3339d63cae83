"""Attribution accuracy: CPU jobs with known duty cycles beside background load.

Three tagged jobs burn one core at 100%, 50% and 25% duty (100 ms periods),
and a fourth tagged job gets its 25% from short-lived children (one forked
child of ~25 ms every 100 ms, each reaped before the next), beside an
untagged background burner (20%) and whatever else the machine runs. The real pipeline (procs collector over this machine's /proc, the
energy collector, attribution, the ledger's points) runs at 1 s ticks, once
per static policy (four agents fed by the same reads in the same ticks).

Truth, per tick: each job's CPU time from ``/proc/<pid>/schedstat`` (ns on
CPU, read at the tick; for the spawner, plus its children's CPU as its own
``getrusage(RUSAGE_CHILDREN)`` reports it after each reap), the host's busy time, and the pool's energy and
static part as measured. The true charge of job j in tick t is

* capacity:     D_t * cpu_j,t / busy_t + S_t * cpu_j,t / (ncpu * dt_t)
* proportional: E_t * cpu_j,t / busy_t
* idle:         D_t * cpu_j,t / busy_t
* occupancy:    D_t * cpu_j,t / busy_t + S_t / H_t   (H_t: jobs holding a process)

and the error of a job's share is |sum measured - sum true| / sum E, in
percentage points. Target: <= 2 pp.

    .venv/bin/python benchmarks/accuracy.py [--seconds 30] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import machine  # noqa: E402
from wattledger.config import Config, Estimate  # noqa: E402
from wattledger.model.policies import StaticPolicy  # noqa: E402
from wattledger.store.ledger import Ledger  # noqa: E402
from tests.clocks import FakeClock  # noqa: E402
from wattledger.agent.factory import build_agent, choose_energy_collectors  # noqa: E402
from wattledger.agent.loop import TickResult  # noqa: E402
from wattledger.model.points import WL_JOB, WL_NODE, Point  # noqa: E402
from wattledger.collectors.procs import ProcCollector  # noqa: E402
from wattledger.model.activity import ProcSample  # noqa: E402

BURNER = r"""
import sys, time
duty, period = float(sys.argv[1]), 0.1
while True:
    slot = time.monotonic()
    while time.monotonic() - slot < period * duty:
        pass
    rest = period - (time.monotonic() - slot)
    if rest > 0:
        time.sleep(rest)
"""
SPAWNER = r"""
import os, resource, sys, time
duty, out, period = float(sys.argv[1]), sys.argv[2], 0.1
while True:
    slot = time.monotonic()
    pid = os.fork()
    if pid == 0:
        end = time.process_time() + period * duty
        while time.process_time() < end:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out + ".tmp", "w") as f:
        f.write(repr(ru.ru_utime + ru.ru_stime))
    os.replace(out + ".tmp", out)
    rest = period - (time.monotonic() - slot)
    if rest > 0:
        time.sleep(rest)
"""
POLICIES = ("capacity", "proportional", "occupancy", "idle")


def _keep_points(sink: list[Point], result: TickResult) -> None:
    sink.extend(result.points)


class SharedProcs:
    """One procs read per tick, shared by the agents (same timestamp)."""

    name = "procfs"

    def __init__(self) -> None:
        self.inner = ProcCollector(procfs_root=Path("/proc"))
        self.now_ns: int | None = None
        self.sample: ProcSample | None = None

    def read(self, read_ns: int, want_pids: Any = ()) -> ProcSample:
        if read_ns != self.now_ns:
            self.now_ns, self.sample = read_ns, self.inner.read(read_ns, want_pids)
        assert self.sample is not None
        return self.sample


class SharedEnergy:
    """One energy read per tick, shared likewise."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.now_ns: int | None = None
        self.sample: Any = None

    def read(self, now_ns: int) -> Any:
        if now_ns != self.now_ns:
            self.now_ns, self.sample = now_ns, self.inner.read(now_ns)
        return self.sample


@dataclass
class Job:
    tag: str
    duty: float
    proc: subprocess.Popen
    children_file: Path | None = None  # the spawner's report of its reaped children's CPU

    def cpu_ns(self) -> int:
        with open(f"/proc/{self.proc.pid}/schedstat") as f:
            own = int(f.read().split()[0])
        if self.children_file is None:
            return own
        try:
            return own + int(float(self.children_file.read_text()) * 1e9)
        except (OSError, ValueError):
            return own


def start(tag: str, script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], env=dict(os.environ, WATTLEDGER_JOB=tag))


def run(seconds: float, duties: list[float], spawner: float, background: float, estimate: str) -> dict[str, Any]:
    base = Config()
    base.agent.estimate = Estimate(estimate)
    collectors, probes = choose_energy_collectors(base)
    if not collectors:
        raise SystemExit("no energy source: " + "; ".join(p.detail for p in probes))
    energy = [SharedEnergy(c) for c in collectors]
    procs = SharedProcs()
    now = [time.time_ns()]
    points: dict[str, list[Point]] = {p: [] for p in POLICIES}
    agents = []
    tmp = tempfile.TemporaryDirectory(prefix="wl-accuracy-")
    for policy in POLICIES:
        cfg = Config()
        cfg.agent.estimate = Estimate(estimate)
        cfg.attribution.cpu_static_policy = cfg.attribution.dram_static_policy = StaticPolicy(policy)
        agents.append(build_agent(cfg, Ledger.in_state_dir(Path(tmp.name) / policy), energy=list(energy),
                                  procs=procs, clock=FakeClock(lambda: now[0]), host="bench",
                                  on_tick=partial(_keep_points, points[policy])))
    jobs = [Job(f"duty-{int(d * 100)}", d, start(f"duty-{int(d * 100)}", BURNER, str(d))) for d in duties]
    if spawner > 0:
        out = Path(tmp.name) / "spawner-children"
        tag = f"short-lived-{int(spawner * 100)}"
        jobs.append(Job(tag, spawner, start(tag, SPAWNER, str(spawner), str(out)), out))
    env = {k: v for k, v in os.environ.items() if k not in ("WATTLEDGER_JOB", "SLURM_JOB_ID")}
    bg = subprocess.Popen([sys.executable, "-c", BURNER, str(background)], env=env) if background > 0 else None
    truth_cpu: dict[str, list[float]] = {j.tag: [] for j in jobs}
    ticks: list[ProcSample] = []
    try:
        time.sleep(1.0)  # burners started
        last = {j.tag: j.cpu_ns() for j in jobs}
        now[0] = time.time_ns()
        for a in agents:
            a.commit(a.tick())
        next_at = time.monotonic() + 1.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += 1.0
            cpu = {j.tag: j.cpu_ns() for j in jobs}
            now[0] = time.time_ns()
            for a in agents:
                a.commit(a.tick())
            for tag in cpu:
                truth_cpu[tag].append((cpu[tag] - last[tag]) / 1e9)
            last = cpu
            assert procs.sample is not None
            ticks.append(procs.sample)
    finally:
        for p in [j.proc for j in jobs] + ([bg] if bg else []):
            p.kill()
            p.wait()
        tmp.cleanup()
    return evaluate(points, ticks, truth_cpu, jobs, seconds, background)


def evaluate(points: dict[str, list[Point]], ticks: list[ProcSample], truth_cpu: dict[str, list[float]],
             jobs: list[Job], seconds: float, background: float) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "seconds": seconds, "background_duty": background, "policies": {}}
    times = sorted({p.time_ns for p in points["proportional"] if p.measurement == WL_NODE})
    for policy, pts in points.items():
        pools = sorted({(p.tags["component"], p.tags["device"]) for p in pts if p.measurement == WL_NODE})
        rows: list[dict[str, Any]] = []
        for component, device in pools:
            node = {p.time_ns: p for p in pts if p.measurement == WL_NODE and p.tags["component"] == component
                    and p.tags["device"] == device}
            static = {t: 0.0 for t in times}
            for p in pts:
                if p.measurement == WL_JOB and p.tags["component"] == component and p.tags["device"] == device:
                    static[p.time_ns] = static.get(p.time_ns, 0.0) + p.fields["static_j"]
            energy_total = sum(n.fields["energy_j"] for n in node.values())
            for j in jobs:
                measured = sum(p.fields["energy_j"] for p in pts if p.measurement == WL_JOB
                               and p.tags["job"] == j.tag and p.tags["component"] == component
                               and p.tags["device"] == device)
                true = 0.0
                for i, t in enumerate(times):
                    if t not in node or i >= len(ticks):
                        continue
                    e, s, sample = node[t].fields["energy_j"], static[t], ticks[i]
                    cpu_share = truth_cpu[j.tag][i] / sample.busy_s if sample.busy_s > 0 else 0.0
                    if policy == "proportional":
                        true += e * cpu_share
                    elif policy == "idle":
                        true += (e - s) * cpu_share
                    elif policy == "capacity":  # the idle draw at the rate of the vCPU-seconds it used
                        capacity_s = sample.ncpu * node[t].fields["interval_s"]
                        true += (e - s) * cpu_share + s * truth_cpu[j.tag][i] / capacity_s
                    else:
                        true += (e - s) * cpu_share + s / max(1, len(sample.holders))
                rows.append({"pool": f"{component}:{device}", "job": j.tag, "duty": j.duty,
                             "cpu_s": sum(truth_cpu[j.tag]), "true_share_pct": 100 * true / energy_total,
                             "measured_share_pct": 100 * measured / energy_total,
                             "error_pp": 100 * abs(measured - true) / energy_total})
        out["policies"][policy] = {"rows": rows, "max_error_pp": max(r["error_pp"] for r in rows)}
    out["ticks"] = len(ticks)
    out["busy_cpus_mean"] = sum(s.busy_s for s in ticks) / max(1e-9, sum(s.capacity_s / s.ncpu for s in ticks))
    return out


def markdown(report: dict[str, Any], command: str) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}. "
        f"{report['ticks']} ticks of 1 s; host busy {report['busy_cpus_mean']:.2f} CPUs on average "
        f"(jobs + untagged {int(100 * report['background_duty'])}% burner + the machine's own load).",
        f"Command: `{command}`",
        "",
        "| policy | pool | job | CPU s (nominal) | true share % | measured share % | error (pp) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for policy, res in report["policies"].items():
        for r in res["rows"]:
            lines.append(f"| {policy} | {r['pool']} | {r['job']} | {r['cpu_s']:.2f} ({r['duty'] * report['ticks']:.1f}) "
                         f"| {r['true_share_pct']:.2f} "
                         f"| {r['measured_share_pct']:.2f} | {r['error_pp']:.2f} |")
    lines.append("")
    lines.append("Largest error per policy: " + ", ".join(
        f"{p} {r['max_error_pp']:.2f} pp" for p, r in report["policies"].items()) + " (target <= 2 pp).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--duties", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    ap.add_argument("--spawner", type=float, default=0.25,
                    help="duty of the tagged job made of short-lived children (0: none)")
    ap.add_argument("--background", type=float, default=0.2, help="duty of the untagged background burner")
    ap.add_argument("--estimate", default="auto", choices=["auto", "always", "never"],
                    help="energy source: RAPL when readable (auto), else the model")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    report = run(args.seconds, args.duties, args.spawner, args.background, args.estimate)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    cmd = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    print(markdown(report, cmd) if args.markdown else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

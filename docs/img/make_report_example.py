"""Regenerate docs/img/report-example.png (and print the matching table) from a synthetic ledger.

    .venv/bin/python docs/img/make_report_example.py

The ledger is SYNTHETIC but shaped like a real week-end on a 4-GPU server:
two days at 5-minute ticks, an architecture search, two trainings, a model
served for inference, an untagged notebook, idle GPUs, the kernel and the
agent; carbon intensity for zone DE with a daily curve (midday solar dip) and
the last three hours missing, so the static fallback shows.

Its embodied carbon (``wl_embodied``) is charged by the agent's own code
(``accounting.embodied``, ``agent.embodied``) from the pinned Boavizta table
for a host of 4 H100 SXM 80GB, 2 AMD EPYC 7R13, 512 GiB of DRAM, two 3.84 TB
SSDs and a rack chassis: each GPU to the job holding it, the rest by CPU
share (``HOST_CPU_S``: vCPU-seconds per second of each job). docs/embodied.md's
worked example is this ledger; tests/test_embodied_docs.py checks it.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

from wattledger import report as rp
from wattledger.accounting.embodied import DeviceUse, accrual_g, charge_tick
from wattledger.agent.embodied import embodied_points
from wattledger.carbon.embodied import host_footprint
from wattledger.model.embodied import HostFootprint
from wattledger.model.inventory import GIB, Disk, GpuInfo, HostInventory
from wattledger.model.jobs import AGENT_JOB, SYSTEM_JOB, JobKey, untagged
from wattledger.model.policies import StaticPolicy
from wattledger.model.units import HOUR_NS
from wattledger.report.plot import plot
from wattledger.util.timeutil import parse_iso_ns
from wattledger.config import Config
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_CARBON, WL_JOB, WL_NODE, Point

START = parse_iso_ns("2024-03-09T00:00:00Z")
HOURS = 48
TICK_S = 300
GPU_IDLE_W = 55.0

# (job, user, project, phase, gpu, first hour, last hour, watts)
RUNS = [
    ("nas-cifar", "carol", "tinynet", "search", "3", 0, 12, 240.0),
    ("resnet50-sweep", "alice", "vision", "train", "0", 2, 30, 290.0),
    ("resnet50-sweep", "alice", "vision", "train", "1", 2, 30, 280.0),
    ("bert-finetune", "bob", "nlp", "train", "2", 10, 22, 265.0),
    ("tinynet-serve", "carol", "tinynet", "inference", "3", 30, 48, 110.0),
]


VCPUS = 64
HOST_CPU_S = {"run": 2.0, "notebook": 1.0, "system": 0.5, "agent": 0.01}  # vCPUs busy, per job kind


def footprint() -> HostFootprint:
    """The synthetic host's devices, priced by the pinned table (as `wattledger doctor` would show them)."""
    inv = HostInventory("AMD EPYC 7R13 48-Core Processor", 2, 512 * GIB,
                        (Disk("nvme0n1", 3_840_000_000_000, False), Disk("nvme1n1", 3_840_000_000_000, False)),
                        tuple(GpuInfo(gpu, "NVIDIA H100 80GB HBM3", 81_559 * 1024**2) for gpu in "0123"))
    return host_footprint(Config().embodied, inv)


def embodied_tick(fp: HostFootprint, t: int, holders: dict[str, JobKey], cpu: dict[JobKey, float]) -> list[Point]:
    """One tick's wl_embodied points: GPUs by occupancy, the host's parts by CPU seconds over vCPU-seconds."""
    uses = []
    for d in fp.devices:
        g = accrual_g(d.kg, fp.lifetime_s, TICK_S, t, fp.end_ns, fp.after_end)
        if d.component == "gpu":
            held = {holders[d.device]: 1.0} if d.device in holders else {}
            uses.append(DeviceUse("gpu", d.device, g, held, held, TICK_S, StaticPolicy.OCCUPANCY))
        else:
            uses.append(DeviceUse(d.component, d.device, g, cpu, None, VCPUS * TICK_S, StaticPolicy.CAPACITY))
    return embodied_points("gpu01", charge_tick(uses, fp.unused), t)


def points() -> list[Point]:
    out: list[Point] = []
    host = "gpu01"
    fp = footprint()
    for tick in range(HOURS * 3600 // TICK_S):
        t = START + (tick + 1) * TICK_S * 10**9
        hour = tick * TICK_S / 3600

        pools: dict[tuple[str, str, str], float] = {}

        def add(job: str, user: str, project: str, phase: str, component: str, device: str, watts: float,
                source: str) -> None:
            e = watts * TICK_S
            out.append(Point(WL_JOB, {"host": host, "job": job, "user": user, "project": project, "phase": phase,
                                      "component": component, "device": device, "source": source},
                             {"energy_j": e, "dynamic_j": e * 0.8, "static_j": e * 0.2, "driver_s": TICK_S}, t))
            pools[(component, device, source)] = pools.get((component, device, source), 0.0) + e

        busy: dict[str, JobKey] = {}
        cpu: dict[JobKey, float] = {SYSTEM_JOB: HOST_CPU_S["system"] * TICK_S, AGENT_JOB: HOST_CPU_S["agent"] * TICK_S}
        for job, user, project, phase, gpu, h0, h1, watts in RUNS:
            if h0 <= hour < h1:
                wobble = 1 + 0.06 * math.sin(tick / 7.0 + int(gpu))
                add(job, user, project, phase, "gpu", gpu, watts * wobble, "nvml")
                add(job, user, project, phase, "cpu", "package-0", 18.0, "rapl")
                busy[gpu] = key = JobKey(job, user, project, phase)
                cpu[key] = cpu.get(key, 0.0) + HOST_CPU_S["run"] * TICK_S
        for gpu in "0123":
            if gpu not in busy:
                add("_idle", "", "", "", "gpu", gpu, GPU_IDLE_W, "nvml")
        if 9 <= hour % 24 < 18:  # a notebook without a tag during the day
            add("_untagged", "dave", "", "", "cpu", "package-0", 22.0, "rapl")
            cpu[untagged("dave")] = HOST_CPU_S["notebook"] * TICK_S
        add("_idle", "", "", "", "cpu", "package-0", 38.0, "rapl")
        add("_system", "", "", "", "cpu", "package-0", 9.0, "rapl")
        add("_agent", "", "", "", "cpu", "package-0", 0.4, "rapl")
        out += embodied_tick(fp, t, busy, cpu)
        out += [Point(WL_NODE, {"host": host, "component": c, "device": d, "source": src},
                      {"energy_j": e, "power_w": e / TICK_S, "interval_s": TICK_S}, t)
                for (c, d, src), e in sorted(pools.items())]  # each pool is the sum of its jobs
    for h in range(HOURS - 3):  # the newest three hours are not synced yet
        local = (h + 1) % 24  # CET
        g = 380 + 110 * math.cos((local - 19) / 24 * 2 * math.pi) - 90 * math.exp(-((local - 13) ** 2) / 8)
        out.append(Point(WL_CARBON, {"zone": "DE", "provider": "electricitymaps", "kind": "actual"},
                         {"g_per_kwh": round(g, 1)}, START + h * HOUR_NS))
    return out


def main() -> int:
    out_png = Path(__file__).with_name("report-example.png")
    cfg = Config()
    cfg.carbon.zone = "DE"
    cfg.carbon.provider = "electricitymaps"
    with tempfile.TemporaryDirectory() as d:
        ledger = Ledger(Path(d) / "ledger.sqlite3")
        ledger.append(points())
        r = rp.from_ledger(ledger, cfg, START, START + HOURS * HOUR_NS)
        r.origin = "synthetic ledger"
        sys.stdout.write(rp.format_table(r))
        plot(r, str(out_png))
        lc = rp.from_ledger(ledger, cfg, START, START + HOURS * HOUR_NS, rp.Options(by="phase", project="tinynet"))
        lc.origin = "synthetic ledger"
        sys.stdout.write("\n" + rp.format_lifecycle(rp.lifecycle(lc, "tinynet", 250_000, 50_000_000), "table"))
        ledger.close()
    print(f"\nwrote {out_png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

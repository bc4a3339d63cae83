"""A simulated fleet for tests and benchmarks/fleet.py: each host's tick stream, and the real agent commit path.

``FleetStream`` makes each host's points for a tick, as the agent's
attribution would: per host ``cpus`` CPU packages and as many DRAM pools,
``gpus`` GPUs; on every CPU and DRAM pool the host's ``slots`` jobs plus
``_untagged``, ``_system``, ``_agent`` and ``_idle``; on each GPU the job of
one slot, or ``_idle``. Jobs churn: slot s of a host runs a job for
``job_ticks`` ticks (staggered by slot), then the next job takes it. The
first ``multi_node`` slots of a host are shared by its group of ``group``
hosts: the same Slurm job (tag and user) runs on all of them, as a
multi-node job does. Everything is a pure function of (seed, host, tick),
so a test can make the same stream twice (with and without clock skew).

``SimHost`` is one agent without its readers: its own ledger (a real SQLite
file), the agent's compactor, rollup exporter and deliverer with a real sink,
driven through ``Agent.commit``, the code path of every real tick.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wattledger.accounting.idle import IdleBaselines
from wattledger.agent.factory import make_deliverer, retention
from wattledger.agent.loop import Agent, Sources, TickResult
from wattledger.agent.sinks.base import Sink
from wattledger.collectors.procs import ProcCollector
from wattledger.config import Config
from wattledger.model.points import WL_AGENT, WL_EMBODIED, WL_JOB, WL_NODE, Point
from wattledger.model.units import NS_PER_S
from wattledger.store.compact import Compactor
from wattledger.store.exporter import RollupExporter
from wattledger.store.ledger import LEDGER_FILE, Ledger

RESERVED = ("_untagged", "_system", "_agent", "_idle")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
PROJECTS = ("vision", "nlp", "speech", "rl", "")
PHASES = ("train", "search", "inference", "")


def _u(*parts: object) -> int:
    """A stable pseudo-random 64-bit number of the parts."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class Job:
    tag: str
    user: str
    project: str
    phase: str


@dataclass
class FleetStream:
    hosts: Sequence[str]
    cpus: int = 2
    gpus: int = 8
    slots: int = 50
    job_ticks: int = 3600
    multi_node: int = 2
    group: int = 4
    interval_s: float = 1.0
    seed: int = 15
    embodied: bool = True  # wl_embodied rows, as an agent with [embodied] on (the default) makes them
    _tags: dict[tuple[str, ...], dict[str, str]] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict)

    def job(self, host: str, slot: int, tick: int) -> Job:
        """The job in ``slot`` of ``host`` at ``tick``: shared by the host's group for multi-node slots."""
        if not self._index:
            self._index.update({h: i for i, h in enumerate(self.hosts)})
        i = self._index[host]
        offset = slot * self.job_ticks // max(1, self.slots)  # staggered: slots do not all turn over at once
        epoch = (tick + offset) // self.job_ticks
        owner = f"g{i // self.group}" if slot < self.multi_node else host
        n = _u(self.seed, owner, slot, epoch)
        tag = f"slurm-{n % 10_000_000}" if slot < self.multi_node else f"job-{owner}-{slot}-{epoch}"
        return Job(tag, USERS[n % len(USERS)], PROJECTS[(n >> 8) % len(PROJECTS)], PHASES[(n >> 16) % len(PHASES)])

    def _tag(self, host: str, job: str, user: str, project: str, phase: str, component: str, device: str,
             source: str) -> dict[str, str]:
        key = (host, job, user, project, phase, component, device, source)
        found = self._tags.get(key)
        if found is None:
            found = self._tags[key] = {"host": host, "job": job, "user": user, "project": project, "phase": phase,
                                       "component": component, "device": device, "source": source}
            if not source:  # wl_embodied has no source tag
                del found["source"]
        return found

    def pools(self) -> list[tuple[str, str, str]]:
        return ([("cpu", f"package-{c}", "rapl") for c in range(self.cpus)]
                + [("dram", f"package-{c}", "rapl") for c in range(self.cpus)]
                + [("gpu", f"GPU-{g}", "nvml") for g in range(self.gpus)])

    def points(self, host: str, tick: int, stamp_ns: int, interval_s: float | None = None) -> list[Point]:
        """One tick of ``host`` (the ``tick``-th), stamped ``stamp_ns`` (the host's own clock), covering
        ``interval_s`` (default: the stream's)."""
        jobs = [self.job(host, s, tick) for s in range(self.slots)]
        out: list[Point] = []
        dt = interval_s or self.interval_s
        for p, (component, device, source) in enumerate(self.pools()):
            node = {"host": host, "component": component, "device": device, "source": source}
            watts = {"cpu": 180.0, "dram": 20.0, "gpu": 300.0}[component] * (0.5 + (_u(self.seed, host, p, tick) % 997)
                                                                             / 1994.0)
            energy = round(watts * dt, 3)
            out.append(Point(WL_NODE, node, {"energy_j": energy, "power_w": energy / dt, "interval_s": dt},
                             stamp_ns))
            if component == "gpu":
                slot = (p - 2 * self.cpus) % max(1, self.slots)
                j = jobs[slot] if (_u(self.seed, host, p, tick // 60) % 4) else None  # a quarter of GPUs idle
                tags = (self._tag(host, j.tag, j.user, j.project, j.phase, component, device, source) if j
                        else self._tag(host, "_idle", "", "", "", component, device, source))
                out.append(Point(WL_JOB, tags, {"energy_j": energy, "dynamic_j": energy * 0.8,
                                                "static_j": energy * 0.2, "driver_s": dt}, stamp_ns))
                continue
            share = energy / (len(jobs) + len(RESERVED))
            for j in jobs:
                out.append(Point(WL_JOB, self._tag(host, j.tag, j.user, j.project, j.phase, component, device, source),
                                 {"energy_j": share, "dynamic_j": share * 0.7, "static_j": share * 0.3,
                                  "driver_s": dt / len(jobs)}, stamp_ns))
            for r in RESERVED:
                user = "alice" if r == "_untagged" else ""
                out.append(Point(WL_JOB, self._tag(host, r, user, "", "", component, device, source),
                                 {"energy_j": share, "dynamic_j": share, "static_j": 0.0, "driver_s": 0.0},
                                 stamp_ns))
        return out + (self._embodied(host, jobs, out, stamp_ns, dt) if self.embodied else [])

    def _embodied(self, host: str, jobs: list[Job], points: list[Point], stamp_ns: int, dt: float) -> list[Point]:
        """wl_embodied as the agent charges it: each GPU's grams to its job (or _idle), the host's parts to
        every job by its CPU share (here equal), one row per (job, GPU) and one per job for the host."""
        out = []
        for p in points:
            if p.measurement == WL_JOB and p.tags["component"] == "gpu":
                t = p.tags
                out.append(Point(WL_EMBODIED, self._tag(host, t["job"], t["user"], t["project"], t["phase"], "gpu",
                                                        t["device"], ""), {"embodied_g": 0.005 * dt}, stamp_ns))
        part = 0.01 * dt / (len(jobs) + 1)
        for j in [*jobs, Job("_idle", "", "", "")]:
            out.append(Point(WL_EMBODIED, self._tag(host, j.tag, j.user, j.project, j.phase, "host", "host", ""),
                             {"embodied_g": part, "cpu_g": part / 2, "dram_g": part / 4, "storage_g": part / 8,
                              "chassis_g": part / 8}, stamp_ns))
        return out


@dataclass
class SimHost:
    """One agent of the fleet, minus its readers: ledger, compactor, exporter, deliverer, real sink."""

    name: str
    agent: Agent
    ledger: Ledger
    skew_ns: int = 0
    commit_cpu_s: float = 0.0
    ticks: int = 0

    @classmethod
    def start(cls, name: str, state_dir: Path, cfg: Config, sink: Sink | None, skew_ns: int = 0) -> "SimHost":
        state_dir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(state_dir / LEDGER_FILE, spool=sink is not None, spool_max_rows=cfg.spool.max_rows)
        procs = ProcCollector(procfs_root=state_dir / "no-proc")
        agent = Agent(cfg, ledger, Sources([], procs), IdleBaselines.load(state_dir, 5.0, False), name,
                      deliverer=None if sink is None else make_deliverer(cfg, ledger, sink),
                      compactor=Compactor(ledger, retention(cfg)),
                      rollups=None if sink is None else RollupExporter(ledger))
        return cls(name, agent, ledger, skew_ns)

    def commit(self, points: list[Point], agent_point: bool = True) -> None:
        """One tick through ``Agent.commit`` (ledger, delivery, compaction, rollup export), timed."""
        cpu0 = time.process_time()
        if agent_point and points:
            counts = self.ledger.spool_counts()
            points = points + [Point(WL_AGENT, {"host": self.name}, {
                "tick_s": 0.0, "cpu_s": self.commit_cpu_s, "spooled": float(counts["spooled"]),
                "delivered": float(counts["delivered"]), "dropped": float(counts["dropped"])},
                points[0].time_ns)]
        self.agent.commit(TickResult(points))
        self.commit_cpu_s += time.process_time() - cpu0
        self.ticks += 1

    def settle(self, now_ns: int, deadline_s: float = 60.0) -> bool:
        """Fold, export and deliver everything that is final by ``now_ns`` (the end of a simulated run)."""
        assert self.agent.compactor is not None
        self.agent.compactor.catch_up(now_ns)
        while self.agent.rollups is not None:
            done = self.agent.rollups.step()
            if not (done.points or done.buckets or done.resent):
                break
        return self.flush(deadline_s)

    def flush(self, deadline_s: float = 30.0) -> bool:
        return self.agent.deliverer.flush(deadline_s) if self.agent.deliverer is not None else True

    def close(self) -> None:
        self.ledger.close()


def run_ticks(stream: FleetStream, hosts: Sequence[SimHost], start_ns: int, ticks: int) -> Iterator[int]:
    """Tick every host ``ticks`` times from ``start_ns`` (true time; each host adds its skew); yields each tick."""
    step = int(stream.interval_s * NS_PER_S)
    for k in range(ticks):
        t = start_ns + (k + 1) * step
        for h in hosts:
            h.commit(stream.points(h.name, k, t + h.skew_ns))
        yield k

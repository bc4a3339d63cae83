"""The chaos run of issue 17: real agent processes killed with SIGKILL at random, one disk-full episode,
one influxd outage, tagged CPU burners on a live fake powercap tree; then the books are checked.

``run_chaos`` drives it and returns its figures (``ChaosFigures``); ``check`` compares the ledger with the
counter and with InfluxDB. tests/test_chaos.py runs it in CI; ``benchmarks/chaos.py`` runs it with its
own seed and prints the figures that benchmarks/RESULTS.md records.

What it proves, and how:

* **Σ jobs = the counter's delta.** The tree's counter stands still until the first agent has read it
  (its baseline) and again after the last agent's last reads, so ``last_uj - first_uj`` is exactly
  what the agents had to charge. Every ``wl_job`` row, ``_unobserved`` (the restarts' gaps) included,
  must add up to it, and so must the ``wl_node`` rows.
* **No tick twice.** For the one pool, tick times are distinct and each tick's interval ends where the
  previous one did: the intervals tile the run from the first tick to the last read.
* **InfluxDB = ledger.** Every raw ``wl_node`` and ``wl_job`` row is in InfluxDB with the same time,
  tags and energy, and InfluxDB holds no point the ledger does not (a duplicate write would be a second
  point only if its time or tags differed; both are compared).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.fake_powercap import FakePowercap
from tests.full_disk import checkpoint, fill
from tests.influx_server import InfluxServer
from wattledger.model.points import WL_JOB, WL_NODE
from wattledger.store.errors import StorageError
from wattledger.store.ledger import LEDGER_FILE, Ledger

DB = "chaos"
UNOBSERVED = "_unobserved"
POWER_W = 60.0
INTERVAL_S = 0.2
BURNERS = {"chaos-a": 0.5, "chaos-b": 0.25}  # job tag -> duty cycle
BURNER = r"""
import sys, time
duty = float(sys.argv[1])
while True:
    slot = time.monotonic()
    while time.monotonic() - slot < 0.1 * duty:
        pass
    time.sleep(0.1 * (1 - duty))
"""


@dataclass
class Plan:
    """What happens when: kills, and the cycles that start and end the disk-full and outage episodes."""

    kills: int = 30
    seed: int = 17
    disk_full: tuple[int, int] = (8, 10)  # filled during cycle 8 (after its agent is up), freed in cycle 10
    outage: tuple[int, int] = (15, 22)  # influxd stopped in cycle 15, started again in cycle 22
    up_s: tuple[float, float] = (0.4, 2.0)  # how long an agent runs after its first new row
    down_s: tuple[float, float] = (0.1, 0.8)  # how long nobody watches


@dataclass
class ChaosFigures:
    kills: int = 0
    run_s: float = 0.0
    counted_j: float = 0.0
    node_j: float = 0.0
    jobs_j: float = 0.0
    unobserved_j: float = 0.0
    per_job_j: dict[str, float] = field(default_factory=dict)
    node_ticks: int = 0
    gap_rows: int = 0
    duplicate_ticks: int = 0
    covered_s: float = 0.0
    span_s: float = 0.0
    ledger_points: int = 0
    influx_points: int = 0
    missing_in_influx: int = 0
    extra_in_influx: int = 0
    disk_full_s: float = 0.0
    disk_full_logged: bool = False
    quarantined: int = 0  # ledgers moved aside as damaged (none expected)
    outage_s: float = 0.0
    lost_points: int = 0
    dropped_points: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the parts --------------------------------------------------------------------------------------------


@contextmanager
def small_fs(where: Path, size: str = "32m") -> Iterator[Path]:
    """A small tmpfs to hold the state dir (so it can be filled); raises ``OSError`` where none mounts."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"cannot mount a tmpfs at {where}: {r.stderr.strip() or r.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def start_burners() -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
    return [subprocess.Popen([sys.executable, "-c", BURNER, str(duty)], env={**env, "WATTLEDGER_JOB": tag},
                             stdin=subprocess.DEVNULL)
            for tag, duty in BURNERS.items()]


def write_config(path: Path, influx: InfluxServer) -> Path:
    path.write_text(f'[agent]\nestimate = "never"\ngpus = "never"\n\n'
                    f'[sink]\nkind = "influx_v1"\nurl = "{influx.url}"\ndatabase = "{DB}"\n\n'
                    '[influx]\nlayout = "single"\n')  # one database, raw points: what the books compare
    return path


class Agents:
    """Starts the agent as the service would (a process of its own), one log file per start."""

    def __init__(self, logs: Path, config: Path, state: Path, sysfs: Path) -> None:
        self.logs, self.config, self.state, self.sysfs = logs, config, state, sysfs
        self.n = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
        log = open(self.logs / f"agent-{self.n}.log", "wb")
        self.n += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wattledger.cli.main", "agent", "--config", str(self.config),
             "--interval", str(INTERVAL_S), "--state-dir", str(self.state), "--sysfs-root", str(self.sysfs)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()
        return self.proc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def current_log(self) -> str:
        return (self.logs / f"agent-{self.n - 1}.log").read_text(errors="replace")

    def log_text(self) -> str:
        return "".join((self.logs / f"agent-{i}.log").read_text(errors="replace") for i in range(self.n))


# -- reading the ledger, read-only ------------------------------------------------------------------------


def ledger_rows(state: Path, measurement: str) -> list[dict[str, Any]]:
    path = state / LEDGER_FILE
    if not path.exists():
        return []
    try:
        ledger = Ledger(path, readonly=True)
    except StorageError:  # the agent is creating it
        return []
    try:
        return ledger.rows(measurement)
    except StorageError as e:  # its tables are not there yet
        if "no such table" not in str(e):
            raise
        return []
    finally:
        ledger.close()


def spooled(state: Path) -> int:
    ledger = Ledger(state / LEDGER_FILE, readonly=True)
    try:
        return ledger.spool_counts()["spooled"]
    finally:
        ledger.close()


def wait_until(what: str, ready: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"chaos: {what} within {timeout_s} s")


def wait_for_new_rows(state: Path, timeout_s: float = 60.0) -> None:
    before = len(ledger_rows(state, WL_NODE))
    wait_until("a new wl_node row", lambda: len(ledger_rows(state, WL_NODE)) > before, timeout_s)


# -- the run ----------------------------------------------------------------------------------------------


class Episodes:
    """The disk-full and outage episodes, started and ended by cycle number."""

    def __init__(self, plan: Plan, fs: Path, state: Path, influx: InfluxServer, figures: ChaosFigures) -> None:
        self.plan, self.fs, self.state, self.influx, self.figures = plan, fs, state, influx, figures
        self.filler: Path | None = None
        self.full_since = self.out_since = 0.0

    @property
    def disk_full(self) -> bool:
        return self.filler is not None

    def before_kill(self, cycle: int) -> None:
        """Called while the cycle's agent runs, before it is killed."""
        if cycle == self.plan.disk_full[0]:
            checkpoint(self.state / LEDGER_FILE)
            self.filler, self.full_since = fill(self.fs), time.monotonic()
        if cycle == self.plan.disk_full[1] and self.filler is not None:
            self.filler.unlink()
            self.filler = None
            self.figures.disk_full_s = time.monotonic() - self.full_since
            wait_for_new_rows(self.state)  # the held ticks are written, and a new one
        if cycle == self.plan.outage[0]:
            self.influx.stop()
            self.out_since = time.monotonic()
        if cycle == self.plan.outage[1]:
            self.influx.start()
            self.figures.outage_s = time.monotonic() - self.out_since

    def end(self) -> None:
        if self.filler is not None:
            self.filler.unlink()
            self.filler = None
        if self.influx.proc is None:
            self.influx.start()


def run_cycles(plan: Plan, agents: Agents, episodes: Episodes, rng: random.Random) -> None:
    for cycle in range(1, plan.kills + 1):
        time.sleep(rng.uniform(*plan.up_s))
        episodes.before_kill(cycle)
        agents.kill()
        time.sleep(rng.uniform(*plan.down_s))  # the counter keeps counting; nobody watches
        agents.start()
        if episodes.disk_full:  # nothing reaches the ledger: wait until the agent has met the full disk
            wait_until("the agent says the disk is full", lambda: "disk full" in agents.current_log())
        else:
            wait_for_new_rows(agents.state)


def finish(agents: Agents, rapl: FakePowercap) -> int:
    """Stand the counter still, let the agent read it twice more and deliver everything, stop it."""
    last_uj = rapl.stop()
    wait_for_new_rows(agents.state)
    wait_for_new_rows(agents.state)
    wait_until("the spool drained", lambda: spooled(agents.state) == 0, timeout_s=300.0)
    rc = agents.stop()
    if rc != 0:
        raise AssertionError(f"chaos: the last agent stopped with {rc}; see {agents.logs}")
    return last_uj


def run_chaos(work: Path, plan: Plan = Plan()) -> ChaosFigures:
    """Run the chaos plan under ``work`` (a temp dir); needs root for the tmpfs, and influxd."""
    figures = ChaosFigures(kills=plan.kills)
    influx = InfluxServer(work / "influx")
    influx.start()
    burners: list[subprocess.Popen[bytes]] = []
    try:
        influx.create_db(DB)
        burners = start_burners()
        with small_fs(work / "small") as fs:
            state = fs / "state"
            rapl = FakePowercap(work / "sys")
            agents = Agents(work, write_config(work / "config.toml", influx), state, work / "sys")
            episodes = Episodes(plan, fs, state, influx, figures)
            first_uj = rapl.total_uj  # still until the first agent has read it (its baseline)
            started = time.monotonic()
            try:
                agents.start()
                wait_for_new_rows(state)
                rapl.run(POWER_W)
                run_cycles(plan, agents, episodes, random.Random(plan.seed))
                episodes.end()
                last_uj = finish(agents, rapl)
            finally:
                rapl.stop()
                episodes.end()
                if agents.proc is not None and agents.proc.poll() is None:
                    agents.proc.kill()
                    agents.proc.wait(timeout=30)
            figures.run_s = time.monotonic() - started
            figures.counted_j = (last_uj - first_uj) / 1e6
            logs = agents.log_text()
            figures.disk_full_logged = "held in memory" in logs
            figures.quarantined = logs.count("moved it aside")
            shutil.copytree(state, work / "state-after", ignore=shutil.ignore_patterns("filler"))
            check(state, influx, figures)
    finally:
        for b in burners:
            b.kill()
            b.wait(timeout=30)
        influx.stop()
    return figures


# -- the books --------------------------------------------------------------------------------------------

TAGS = ("host", "component", "device", "source", "job", "user")


def point_key(measurement: str, row: dict[str, Any]) -> tuple[Any, ...]:
    tags = ("host", "component", "device", "source") + (("job", "user") if measurement == WL_JOB else ())
    return (measurement, int(row["time_ns"] if "time_ns" in row else row["time"]), *(row.get(t) or "" for t in tags),
            round(float(row["energy_j"]), 6))


def influx_points(influx: InfluxServer, measurement: str) -> list[dict[str, Any]]:
    return influx.series_values(f'SELECT energy_j FROM "{measurement}" GROUP BY *', DB)


def check(state: Path, influx: InfluxServer, figures: ChaosFigures) -> None:
    """Fill in the figures that compare the ledger with the counter and with InfluxDB."""
    nodes, jobs = ledger_rows(state, WL_NODE), ledger_rows(state, WL_JOB)
    figures.node_j = math.fsum(float(r["energy_j"]) for r in nodes)
    figures.jobs_j = math.fsum(float(r["energy_j"]) for r in jobs)
    per_job: dict[str, float] = {}
    for r in jobs:
        per_job[str(r["job"])] = per_job.get(str(r["job"]), 0.0) + float(r["energy_j"])
    figures.per_job_j = {k: round(v, 6) for k, v in sorted(per_job.items())}
    figures.unobserved_j = per_job.get(UNOBSERVED, 0.0)
    figures.gap_rows = sum(1 for r in jobs if r["job"] == UNOBSERVED)
    times = [int(r["time_ns"]) for r in nodes]
    figures.node_ticks = len(times)
    figures.duplicate_ticks = len(times) - len(set(times))
    figures.covered_s = math.fsum(float(r["interval_s"]) for r in nodes)
    figures.span_s = (max(times) - min(times)) / 1e9 + float(nodes[0]["interval_s"]) if nodes else 0.0
    ours = Counter(point_key(m, r) for m, rows in ((WL_NODE, nodes), (WL_JOB, jobs)) for r in rows)
    theirs = Counter(point_key(m, r) for m in (WL_NODE, WL_JOB) for r in influx_points(influx, m))
    figures.ledger_points, figures.influx_points = sum(ours.values()), sum(theirs.values())
    figures.missing_in_influx = sum((ours - theirs).values())
    figures.extra_in_influx = sum((theirs - ours).values())
    ledger = Ledger(state / LEDGER_FILE, readonly=True)
    try:
        stats, counts = ledger.stats(), ledger.spool_counts()
    finally:
        ledger.close()
    figures.lost_points, figures.dropped_points = stats.lost_points, counts["dropped"]

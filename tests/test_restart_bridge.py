"""The energy between a stop and the restart is charged, to ``_unobserved`` (issue 17, item 4).

Before: ten kill/restart cycles left 4.4 s of a 46.5 s window uncovered (9.6%
of the energy charged to nobody). Now each counter's last reading is saved
with its monotonic stamp and the boot id (accounting/resume.py); the agent
that starts next charges the gap's measured energy to ``_unobserved`` in a
``wl_node`` row that covers the gap. The first test kills real agent
processes with SIGKILL over a live fake powercap tree and checks that every
joule the counter counted is charged exactly once, and that the intervals
cover the whole run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests import fake_nvml as F
from tests.clocks import FakeClock
from tests.fake_nvml import FakeGpu, FakeNvml, Load
from tests.fake_powercap import FakePowercap
from wattledger.agent.factory import build_agent
from wattledger.agent.loop import Agent
from wattledger.collectors.estimate import EstimateCollector
from wattledger.collectors.nvml import NvmlCollector
from wattledger.config import Config, Gpus
from wattledger.model.activity import ProcSample
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergyCounter, EnergySample
from wattledger.store.ledger import Ledger

SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC
JOB = JobKey("train", "alice")
UNOBSERVED = "_unobserved"  # the reserved job of the gap (model/jobs.py)


# -- real processes, SIGKILL ---------------------------------------------------------------------------


def ledger_rows(state: Path, measurement: str) -> list[dict[str, Any]]:
    if not (state / "ledger.sqlite3").exists():
        return []
    db = sqlite3.connect(f"file:{state / 'ledger.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM {measurement} ORDER BY time_ns")]
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def wait_for_rows(state: Path, more_than: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = len(ledger_rows(state, WL_NODE))
        if n > more_than:
            return n
        time.sleep(0.05)
    raise AssertionError(f"no new wl_node row within {timeout_s} s")


def start_agent(tmp_path: Path, state: Path, sysfs: Path, n: int) -> subprocess.Popen[bytes]:
    config = tmp_path / "config.toml"
    config.write_text('[agent]\nestimate = "never"\ngpus = "never"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")}
    log = open(tmp_path / f"agent-{n}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "wattledger.cli.main", "agent", "--config", str(config),
                             "--interval", "0.2", "--state-dir", str(state), "--sysfs-root", str(sysfs)],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)


@pytest.mark.slow
def test_kill_9_and_restart_charges_every_joule_once(tmp_path: Path) -> None:
    state, sysfs = tmp_path / "state", tmp_path / "sys"
    rapl = FakePowercap(sysfs)
    first_uj = rapl.total_uj  # static until the first agent has read it (its baseline)
    agent = start_agent(tmp_path, state, sysfs, 0)
    cycles = 4
    try:
        rows = wait_for_rows(state, 0)
        rapl.run(power_w=40.0)
        rng = random.Random(17)
        for n in range(1, cycles + 1):
            time.sleep(rng.uniform(0.3, 1.2))
            agent.send_signal(signal.SIGKILL)
            assert agent.wait(timeout=30) == -signal.SIGKILL
            time.sleep(rng.uniform(0.3, 1.0))  # the counter keeps counting; nobody watches
            rows = len(ledger_rows(state, WL_NODE))
            agent = start_agent(tmp_path, state, sysfs, n)
            rows = wait_for_rows(state, rows)
        last_uj = rapl.stop()
        wait_for_rows(state, wait_for_rows(state, rows))  # two more ticks: the last reads see the final value
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        rapl.stop()
        if agent.poll() is None:  # a failed step must not leave the agent running
            agent.kill()
            agent.wait(timeout=30)

    nodes, jobs = ledger_rows(state, WL_NODE), ledger_rows(state, WL_JOB)
    counted_j = (last_uj - first_uj) / 1e6
    assert counted_j > 40.0  # the run was long enough to mean something
    assert math.fsum(float(r["energy_j"]) for r in nodes) == pytest.approx(counted_j, rel=1e-9)
    assert math.fsum(float(r["energy_j"]) for r in jobs) == pytest.approx(counted_j, rel=1e-9)
    gaps = [r for r in nodes if float(r["energy_j"]) > 0
            and not any(j["time_ns"] == r["time_ns"] and j["job"] != UNOBSERVED for j in jobs)]
    unobserved = [j for j in jobs if j["job"] == UNOBSERVED]
    assert len(gaps) == len(unobserved) == cycles  # one gap row per restart, all of it _unobserved
    assert math.fsum(float(j["energy_j"]) for j in unobserved) == pytest.approx(
        math.fsum(float(r["energy_j"]) for r in gaps), rel=1e-12)
    assert all(float(r["interval_s"]) >= 0.3 for r in gaps)  # each covers at least the time the agent was down
    # The intervals cover the whole run: from the first tick's start to the last read, nothing missing.
    covered_s = math.fsum(float(r["interval_s"]) for r in nodes)
    span_s = (int(nodes[-1]["time_ns"]) - int(nodes[0]["time_ns"])) / 1e9 + float(nodes[0]["interval_s"])
    assert covered_s == pytest.approx(span_s, abs=0.05)
    logs = [(tmp_path / f"agent-{n}.log").read_text() for n in range(1, cycles + 1)]
    assert all("resuming 1 counter(s) from the tick of" in text for text in logs)


# -- in process: the commit race, a reboot, the wrap limit, the model, GPUs ------------------------------


class Procs:
    """One busy job; the first read is the reader's baseline, as the real reader's is."""

    name = "procfs"

    def __init__(self) -> None:
        self.last: int | None = None

    def read(self, read_ns: int, want_pids: object = ()) -> ProcSample:
        dt = 0.0 if self.last is None else (read_ns - self.last) / SEC
        self.last = read_ns
        return ProcSample(read_ns, dt == 0.0, 2 * dt, 4 * dt, 4, {JOB: 2 * dt} if dt else {}, {JOB: 1.0})


class Counter:
    """A RAPL-like counter at 50 W of fake time, wrapping at ``wrap_uj``."""

    name = "fake"

    def __init__(self, wrap_uj: int = 10**15) -> None:
        self.wrap_uj = wrap_uj

    def read(self, read_ns: int) -> EnergySample:
        total = (read_ns - T0) // SEC * 50_000_000
        return EnergySample(read_ns, (EnergyCounter("cpu", "package-0", "fake", total % self.wrap_uj, self.wrap_uj),))


def make(state: Path, now: list[int], energy: Sequence[object] | None = None, cfg: Config | None = None,
         gpu: NvmlCollector | None = None) -> tuple[Agent, list[Point]]:
    cfg = cfg or Config()
    cfg.agent.gpus = Gpus.NEVER
    points: list[Point] = []
    agent = build_agent(cfg, Ledger.in_state_dir(state), energy=list(energy or [Counter()]),  # type: ignore[arg-type]
                        procs=Procs(), clock=FakeClock(lambda: now[0]), host="h", gpu=gpu,
                        on_tick=lambda r: points.extend(r.points), carbon_sync=False)
    return agent, points


def ticks(agent: Agent, now: list[int], n: int, step_s: int = 1) -> None:
    for _ in range(n):
        agent.commit(agent.tick())
        now[0] += step_s * SEC


def charged_j(state: Path, job: str | None = None) -> float:
    ledger = Ledger.in_state_dir(state)
    rows = ledger.rows(WL_JOB)
    ledger.close()
    return math.fsum(float(r["energy_j"]) for r in rows if job is None or r["job"] == job)


def test_a_tick_measured_but_never_committed_is_charged_once(tmp_path: Path) -> None:
    """The readings go into the ledger in the tick's own transaction: a tick read and then lost with the
    agent (killed before its commit) leaves the previous tick's readings, so its energy is in the gap."""
    now = [T0]
    a, _ = make(tmp_path, now)
    ticks(a, now, 5)  # reads at T0 .. T0+4 s, committed
    a.tick()  # read at T0+5 s, then killed before the commit
    now[0] += 10 * SEC
    b, _ = make(tmp_path, now)
    ticks(b, now, 3)  # reads at T0+15 .. T0+17 s
    assert charged_j(tmp_path) == pytest.approx(17 * 50.0)  # from the first read to the last, once
    assert charged_j(tmp_path, UNOBSERVED) == pytest.approx(11 * 50.0)  # T0+4 (committed) .. T0+15


def test_ticks_held_through_a_full_disk_and_lost_with_the_agent_are_charged_once(tmp_path: Path) -> None:
    """Ticks that a full disk kept in memory (store/guard.py) die with the agent; the readings the ledger
    holds are its newest committed tick's, so every one of the held ticks' joules is in the gap."""
    from wattledger.store.errors import Fault, StorageError
    from wattledger.store.guard import GuardedLedger

    now = [T0]
    cfg = Config()
    cfg.agent.gpus = Gpus.NEVER
    ledger = GuardedLedger(tmp_path / "ledger.sqlite3")
    a = build_agent(cfg, ledger, energy=[Counter()], procs=Procs(),
                    clock=FakeClock(lambda: now[0]), host="h", carbon_sync=False)
    ticks(a, now, 4)  # reads at T0 .. T0+3 s, committed
    full = StorageError(Fault.FULL, ledger.path, "write", "database or disk is full")
    real_write = Ledger.write
    Ledger.write = lambda *args, **kw: (_ for _ in ()).throw(full)  # type: ignore[method-assign]
    try:
        ticks(a, now, 3)  # T0+4 .. T0+6 s: measured, held in memory
        assert ledger.held_points > 0
    finally:
        Ledger.write = real_write  # type: ignore[method-assign]
    # killed here: the held ticks are lost with it
    now[0] += 10 * SEC
    b, _ = make(tmp_path, now)
    ticks(b, now, 3)  # reads at T0+17 .. T0+19 s
    assert charged_j(tmp_path) == pytest.approx(19 * 50.0)
    assert charged_j(tmp_path, UNOBSERVED) == pytest.approx(14 * 50.0)  # T0+3 (committed) .. T0+17


def test_a_reboot_starts_fresh_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [T0]
    a, _ = make(tmp_path, now)
    ticks(a, now, 3)
    ledger = Ledger.in_state_dir(tmp_path)
    data = json.loads(ledger.get_meta("counters") or "{}")
    assert data["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert data["clock"] == "CLOCK_MONOTONIC"
    data["boot_id"] = "00000000-0000-0000-0000-000000000000"  # as if the machine had rebooted
    ledger.set_meta("counters", json.dumps(data))
    ledger.close()
    now[0] += 30 * SEC
    caplog.set_level(logging.INFO, logger="wattledger")
    b, points = make(tmp_path, now)
    ticks(b, now, 2)
    assert charged_j(tmp_path, UNOBSERVED) == 0.0
    said = [r.getMessage() for r in caplog.records if "rebooted" in r.getMessage()]
    assert said == ["counters start fresh: the machine rebooted since the agent last ran (boot id changed); "
                    "the energy between the last tick before that and now is not known"]


def test_a_gap_longer_than_the_wrap_period_allows_is_not_bridged(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    now = [T0]
    wrap = 1000 * 50_000_000  # 1000 s at 50 W
    a, _ = make(tmp_path, now, [Counter(wrap)])
    ticks(a, now, 3)
    now[0] += 2000 * SEC  # two wraps could hide in here
    b, _ = make(tmp_path, now, [Counter(wrap)])
    ticks(b, now, 3)
    assert charged_j(tmp_path, UNOBSERVED) == 0.0
    assert "may have wrapped more than once" in caplog.text
    now[0] += 500 * SEC  # under 0.9 x 1000 s: bridged, across one wrap
    c, _ = make(tmp_path, now, [Counter(wrap)])
    ticks(c, now, 2)
    assert charged_j(tmp_path, UNOBSERVED) == pytest.approx(501 * 50.0)


def fake_procfs(root: Path, busy_ticks: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    user = busy_ticks
    (root / "stat").write_text(f"cpu  {user} 0 0 100000 0 0 0 0 0 0\ncpu0 {user} 0 0 100000 0 0 0 0 0 0\n"
                               "cpu1 0 0 0 0 0 0 0 0 0 0\n")
    (root / "meminfo").write_text("MemTotal:        8388608 kB\n")


def test_the_model_estimate_is_bridged_from_the_kernels_busy_time(tmp_path: Path) -> None:
    """The model's counters are its own integral: checkpoint/resume carry it over, and the gap is integrated
    from the busy time /proc/stat counted meanwhile, as a hardware counter would have counted it."""
    proc, state = tmp_path / "proc", tmp_path / "state"
    clk_tck = os.sysconf("SC_CLK_TCK")
    fake_procfs(proc, 0)
    now = [T0]
    model = EstimateCollector(proc, 1.0, 11.0, 0.5)
    a, _ = make(state, now, [model])
    ticks(a, now, 3)  # reads at T0 .. T0+2 s, idle
    fake_procfs(proc, 16 * clk_tck)  # while no agent runs: 16 busy CPU-seconds (of 18) until T0+11 s
    now[0] += 8 * SEC
    b, _ = make(state, now, [EstimateCollector(proc, 1.0, 11.0, 0.5)])
    ticks(b, now, 2)  # reads at T0+11, T0+12 s
    # 2 vCPUs x 1 W + busy CPUs x 10 W, and 8 GiB x 0.5 W = 4 W of DRAM: 12 s in all, 9 of them the gap.
    assert charged_j(state) == pytest.approx(12 * (2 * 1.0 + 4.0) + 16 * 10.0, rel=1e-6)
    assert charged_j(state, UNOBSERVED) == pytest.approx(9 * (2 * 1.0 + 4.0) + 16 * 10.0, rel=1e-6)


def test_gpu_energy_across_a_restart_goes_to_unobserved(tmp_path: Path) -> None:
    gib = 1 << 30
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: 2 * gib})], start_us=T0 // 1000)
    cfg = Config()
    cfg.attribution.idle_power_w = {"gpu": 60.0}
    now = [T0]

    def agent() -> tuple[Agent, list[Point]]:
        now[0] = fake.now_ns
        cfg.agent.gpus = Gpus.AUTO
        return make(tmp_path, now, [Counter()], cfg, NvmlCollector(fake))

    a, _ = agent()
    a.commit(a.tick())
    fake.step(2.0, {0: Load(300.0, {101: 80})})
    now[0] = fake.now_ns
    a.commit(a.tick())
    fake.step(5.0, {0: Load(200.0, {101: 50})})  # the agent is down for these 5 s
    b, points = agent()
    b.commit(b.tick())
    fake.step(1.0, {0: Load(300.0, {101: 80})})
    now[0] = fake.now_ns
    b.commit(b.tick())
    gap = [p for p in points if p.measurement == WL_NODE and p.tags["device"] == "GPU-a"][0]
    assert gap.fields["energy_j"] == pytest.approx(1000.0) and gap.fields["interval_s"] == pytest.approx(5.0)
    gpu_jobs = [p for p in points if p.measurement == WL_JOB and p.tags["device"] == "GPU-a"]
    assert {p.tags["job"] for p in gpu_jobs if p.time_ns == gap.time_ns} == {UNOBSERVED}
    ledger = Ledger.in_state_dir(tmp_path)
    gpu_j = math.fsum(float(r["energy_j"]) for r in ledger.rows(WL_JOB) if r["component"] == "gpu")
    assert gpu_j == pytest.approx(600.0 + 1000.0 + 300.0)  # every GPU joule of the run, once
    assert F  # the fake NVML module, as the GPU tests use it

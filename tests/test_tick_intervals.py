"""Intervals come from the monotonic clock and from each counter's own reads (issue 12).

* The wall clock stepped by -1 h and +1 h between ticks (NTP, ``date -s``)
  moves timestamps only: energies, power, intervals and the learned idle
  power are those of an agent whose wall clock never moved.
* A RAPL zone that cannot be read for one tick: the next tick's delta spans
  both ticks, and so do its ``interval_s``, ``power_w`` and the activity that
  splits it; the jobs still add up to the counter.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests.clocks import FakeClock
from tests.conftest import FIXTURES
from wattledger.agent.factory import build_agent
from wattledger.collectors.rapl import RaplCollector
from wattledger.config import Config, Gpus
from wattledger.model.activity import ProcSample
from wattledger.model.jobs import JobKey
from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergyCounter, EnergySample
from wattledger.store.ledger import Ledger

SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC
HOUR = 3600 * SEC
JOB = JobKey("train", "alice")


class ScriptedProcs:
    """``busy`` CPU seconds per tick second, all of them one job's, on 4 CPUs."""

    name = "procfs"

    def __init__(self, busy_per_s: list[float]) -> None:
        self.busy_per_s = busy_per_s
        self.last: int | None = None
        self.i = 0

    def read(self, read_ns: int, want_pids: object = ()) -> ProcSample:
        dt = 0.0 if self.last is None else (read_ns - self.last) / SEC
        busy = 0.0
        if self.last is not None:
            busy = self.busy_per_s[self.i % len(self.busy_per_s)] * dt
            self.i += 1
        self.last = read_ns
        return ProcSample(read_ns, dt == 0.0, busy, 4 * dt, 4, {JOB: busy} if busy else {}, {JOB: 1.0})


class LinearPower:
    """A CPU package drawing 20 W + 30 W per busy CPU, on the monotonic clock it is read with."""

    name = "fake"

    def __init__(self, procs: ScriptedProcs) -> None:
        self.procs = procs
        self.uj = 0.0
        self.last: int | None = None

    def read(self, read_ns: int) -> EnergySample:
        if self.last is not None:
            dt = (read_ns - self.last) / SEC
            busy = self.procs.busy_per_s[(self.procs.i) % len(self.procs.busy_per_s)]
            self.uj += (20.0 + 30.0 * busy) * dt * 1e6
        self.last = read_ns
        return EnergySample(read_ns, (EnergyCounter("cpu", "package-0", "fake", int(self.uj)),))


def run(tmp_path: Path, wall_steps_ns: dict[int, int], ticks: int = 40) -> tuple[list[Point], dict[str, object]]:
    """Tick once a second on the monotonic clock; ``wall_steps_ns``: tick -> wall clock step before it."""
    mono = [T0]
    clock = FakeClock(lambda: mono[0])
    busy = [0.02, 0.02, 0.02, 1.5]  # mostly idle (the idle power is learned), now and then busy
    procs = ScriptedProcs(busy)
    cfg = Config()
    cfg.agent.gpus = Gpus.NEVER
    points: list[Point] = []
    agent = build_agent(cfg, Ledger.in_state_dir(tmp_path), energy=[LinearPower(procs)], procs=procs, clock=clock,
                        host="h", on_tick=lambda r: points.extend(r.points))
    agent.commit(agent.tick())
    for i in range(ticks):
        clock.wall_offset_ns += wall_steps_ns.get(i, 0)
        mono[0] += SEC
        agent.commit(agent.tick())
    agent.idle.save()
    return points, agent.idle.to_json()


def figures(points: list[Point]) -> list[tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, float], ...]]]:
    """Everything but the timestamps (and the agent's own timings)."""
    return [(p.measurement, tuple(sorted(p.tags.items())), tuple(sorted(p.fields.items())))
            for p in points if p.measurement in (WL_NODE, WL_JOB)]


def test_a_wall_clock_step_moves_timestamps_only(tmp_path: Path) -> None:
    steady, steady_idle = run(tmp_path / "steady", {})
    stepped, stepped_idle = run(tmp_path / "stepped", {10: -HOUR, 25: +HOUR})
    assert figures(stepped) == figures(steady)
    assert stepped_idle == steady_idle
    nodes = [p for p in stepped if p.measurement == WL_NODE]
    assert all(p.fields["interval_s"] == pytest.approx(1.0) for p in nodes)
    assert "idle_w" in nodes[-1].fields and nodes[-1].fields["idle_w"] == pytest.approx(20.0 + 30.0 * 0.02, rel=0.02)
    # the timestamps did follow the wall clock: one hour back at tick 10, forward again at 25
    times = [p.time_ns for p in nodes]
    assert times[10] - times[9] == SEC - HOUR and times[25] - times[24] == SEC + HOUR


def test_a_rapl_zone_unreadable_for_one_tick_is_charged_over_both(tmp_path: Path) -> None:
    root = tmp_path / "sysfs"
    shutil.copytree(FIXTURES / "sysfs-intel-2s", root, symlinks=True)
    zones = root / "class" / "powercap"
    cfg = Config()
    cfg.attribution.idle_power_w = {"cpu": 40.0, "dram": 2.0}
    mono = [T0]
    a, b = JobKey("a", "alice"), JobKey("b", "bob")
    drivers = iter([{}, {a: 1.0}, {b: 3.0}])  # tick 1: only a ran; tick 2: only b

    class Procs:
        name = "procfs"

        def read(self, read_ns: int, want_pids: object = ()) -> ProcSample:
            d = next(drivers)
            return ProcSample(read_ns, not d, sum(d.values()), 8.0, 4, d, {j: 1.0 for j in d})

    points: list[Point] = []
    agent = build_agent(cfg, Ledger.in_state_dir(tmp_path / "state"), energy=[RaplCollector(root)], procs=Procs(),
                        clock=FakeClock(lambda: mono[0]), host="h", on_tick=lambda r: points.extend(r.points))

    def add(zone: str, uj: int) -> None:
        f = zones / zone / "energy_uj"
        f.write_text(str(int(f.read_text()) + uj) + "\n")

    agent.commit(agent.tick())
    # tick 1 (2 s): package-0 cannot be read (its file is gone); the other zones can
    add("intel-rapl:0", 150_000_000)
    add("intel-rapl:1", 140_000_000)
    hidden = zones / "intel-rapl:0" / "energy_uj"
    hidden.rename(hidden.with_name("energy_uj.away"))
    mono[0] += 2 * SEC
    agent.commit(agent.tick())
    hidden.with_name("energy_uj.away").rename(hidden)
    # tick 2 (2 s): readable again
    add("intel-rapl:0", 130_000_000)
    add("intel-rapl:1", 120_000_000)
    mono[0] += 2 * SEC
    agent.commit(agent.tick())
    last = max(p.time_ns for p in points)
    node = next(p for p in points if p.measurement == WL_NODE and p.tags["device"] == "package-0"
                and p.tags["component"] == "cpu" and p.time_ns == last)
    assert node.fields["energy_j"] == pytest.approx(280.0)  # 150 J + 130 J: both ticks
    assert node.fields["interval_s"] == pytest.approx(4.0)  # the two-tick span
    assert node.fields["power_w"] == pytest.approx(70.0)  # 280 J / 4 s, not / 2 s
    jobs = [p for p in points if p.measurement == WL_JOB and p.tags["device"] == "package-0"
            and p.tags["component"] == "cpu" and p.time_ns == last]
    assert math.fsum(p.fields["energy_j"] for p in jobs) == pytest.approx(280.0, rel=1e-12)
    static = {p.tags["job"]: p.fields["static_j"] for p in jobs}
    assert math.fsum(static.values()) == pytest.approx(40.0 * 4.0)  # idle power over the two-tick span
    dynamic = {p.tags["job"]: p.fields["dynamic_j"] for p in jobs}
    assert dynamic["a"] / dynamic["b"] == pytest.approx(1.0 / 3.0)  # both ticks' activity splits it
    other = [p for p in points if p.measurement == WL_NODE and p.tags["device"] == "package-1"
             and p.tags["component"] == "cpu"]
    assert [p.fields["interval_s"] for p in other] == [pytest.approx(2.0), pytest.approx(2.0)]

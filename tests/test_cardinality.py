"""The cardinality guard: a per-user cap on distinct tag sets per day (issue 17, item 6).

The reproduction, against a real influxd with ``max-series-per-database=40``:
45 processes with unique tags from one user (mallory), then a legitimate new
job (alice's). Before the guard every mallory tag was a new series, InfluxDB
refused new series past 40, and alice's job lost all its points (set aside
for good after one WARNING). With the guard mallory's tag sets past the cap
go to ``mallory/_overflow``, alice's points all arrive, nothing is set aside,
and every joule is still charged (the jobs add up to the counter).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tests.clocks import FakeClock
from tests.influx_server import InfluxServer
from wattledger.agent.factory import build_agent, make_deliverer
from wattledger.agent.sinks.influx_v1 import InfluxV1Sink
from wattledger.cli.main import main
from wattledger.config import Config, Gpus
from wattledger.model.activity import ProcSample
from wattledger.model.jobs import AGENT_JOB, SYSTEM_JOB, JobKey, untagged
from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.model.readings import EnergyCounter, EnergySample
from wattledger.store.ledger import Ledger

SEC = 1_000_000_000
T0 = 1_000 * SEC
DB = "wl_cardinality"
MALLORY = [JobKey(f"spam-{i:02d}", "mallory") for i in range(45)]
LEGIT = JobKey("legit", "alice", "thesis", "train")


class Procs:
    """Read 1 is the baseline; reads 2..: mallory's 45 uniquely tagged processes; from read 6 on alice's new job too."""

    name = "procfs"

    def __init__(self) -> None:
        self.tick = 0

    def read(self, read_ns: int, want_pids: object = ()) -> ProcSample:
        self.tick += 1
        if self.tick == 1:
            return ProcSample(read_ns, True, 0.0, 0.0, 4, {}, {})
        charged = {job: 0.05 for job in MALLORY}
        if self.tick >= 6:
            charged[LEGIT] = 1.0
        charged[untagged("bob")] = 0.1
        charged[AGENT_JOB] = 0.01
        busy = sum(charged.values()) + 0.2  # 0.2 s nobody explains: _system's
        return ProcSample(read_ns, False, busy, 4.0, 4, charged, {job: 1.0 for job in charged})


class Counter:
    name = "fake"

    def __init__(self) -> None:
        self.uj = 0

    def read(self, read_ns: int) -> EnergySample:
        self.uj += 55_000_000  # 55 J per tick
        return EnergySample(read_ns, (EnergyCounter("cpu", "package-0", "fake", self.uj),))


@pytest.fixture
def small_influxd(tmp_path: Path) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path / "influxd", data={"max-series-per-database": 40})
    server.start()
    server.create_db(DB)
    yield server
    server.stop()


def run_agent(server: InfluxServer, state: Path, cap: int | None, ticks: int = 10) -> tuple[list[Point], Ledger]:
    cfg = Config()
    cfg.agent.gpus = Gpus.NEVER
    if cap is not None:
        cfg.jobs.max_tags_per_user_day = cap
    ledger = Ledger.in_state_dir(state, spool=True)
    mono = [T0]
    clock = FakeClock(lambda: mono[0])
    clock.wall_offset_ns = time.time_ns() - T0  # today, for doctor's "today"
    points: list[Point] = []
    agent = build_agent(cfg, ledger, energy=[Counter()], procs=Procs(), clock=clock, host="h",
                        deliverer=make_deliverer(cfg, ledger, InfluxV1Sink(server.url, DB, gzip=False)),
                        on_tick=lambda r: points.extend(r.points), carbon_sync=False)
    agent.commit(agent.tick())
    for _ in range(ticks):
        mono[0] += SEC
        agent.commit(agent.tick())
    agent.close(flush_s=10)
    return points, ledger


def legit_points_in_influx(server: InfluxServer) -> int:
    rows = server.series_values(f"SELECT energy_j FROM {WL_JOB} WHERE \"job\" = 'legit'", DB)
    return len(rows)


@pytest.mark.influx
def test_without_a_low_cap_the_legit_job_loses_its_points(small_influxd: InfluxServer, tmp_path: Path) -> None:
    """The issue's failure, kept as a check of the harness: the default cap (200) does not stop 45 tags."""
    points, ledger = run_agent(small_influxd, tmp_path / "s", cap=None)
    legit_made = sum(1 for p in points if p.measurement == WL_JOB and p.tags["job"] == "legit")
    assert legit_made == 6
    assert legit_points_in_influx(small_influxd) == 0  # all 6 lost: over InfluxDB's series limit
    assert ledger.spool_counts()["rejected"] > 0


@pytest.mark.influx
def test_the_guard_keeps_one_users_tags_from_exhausting_the_series_limit(
        small_influxd: InfluxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "s"
    caplog.set_level(logging.WARNING, logger="wattledger")
    points, ledger = run_agent(small_influxd, state, cap=5)
    jobs = [p for p in points if p.measurement == WL_JOB]
    # mallory: 5 tag sets of her own, then _overflow; alice's new job keeps its tags.
    assert {p.tags["job"] for p in jobs if p.tags["user"] == "mallory"} == {
        *(j.tag for j in MALLORY[:5]), "_overflow"}
    assert sum(1 for p in jobs if p.tags["job"] == "legit") == 6
    assert legit_points_in_influx(small_influxd) == 6  # 6 of 6 arrived
    counts = ledger.spool_counts()
    assert counts["rejected"] == 0 and counts["spooled"] == 0
    # Folding renames, it never loses: per tick the jobs add up to the counter.
    for t in sorted({p.time_ns for p in points if p.measurement == WL_NODE}):
        node = sum(float(p.fields["energy_j"]) for p in points if p.measurement == WL_NODE and p.time_ns == t)
        charged = sum(float(p.fields["energy_j"]) for p in jobs if p.time_ns == t)
        assert charged == pytest.approx(node, rel=1e-12)
    # Told once in the log...
    told = [r for r in caplog.records if "max_tags_per_user_day" in r.getMessage()]
    assert len(told) == 1 and "mallory" in told[0].getMessage()
    # ... and by doctor, from the agent's saved budget.
    config = tmp_path / "c.toml"
    config.write_text(f'[agent]\nstate_dir = "{state}"\ngpus = "never"\n[jobs]\nmax_tags_per_user_day = 5\n')
    r = CliRunner().invoke(main, ["doctor", "--config", str(config), "--sysfs-root", str(tmp_path)],
                           env={k: v for k, v in os.environ.items() if not k.startswith("WATTLEDGER_")})
    assert "user mallory reached today's cap of 5 distinct tag sets" in r.output, r.output
    assert "at least 40 more are charged to mallory's _overflow" in r.output


def test_a_restart_keeps_todays_budget(tmp_path: Path) -> None:
    from wattledger.accounting.tags import TagGuard

    now = time.time_ns()
    guard = TagGuard.load(tmp_path, cap=2)
    got = [guard.job(JobKey(f"t{i}", "u"), now).tag for i in range(4)]
    assert got == ["t0", "t1", "_overflow", "_overflow"]
    assert guard.save()
    again = TagGuard.load(tmp_path, cap=2)
    assert again.job(JobKey("t9", "u"), now).tag == "_overflow"  # not a fresh budget
    assert again.job(JobKey("t1", "u"), now).tag == "t1"  # admitted before the restart
    assert again.job(JobKey("t9", "u"), now + 86_400 * SEC).tag == "t9"  # a new UTC day, a new budget


jobs_strategy = st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from([f"j{i}" for i in range(12)]),
                                   st.sampled_from(["", "p1", "p2"]), st.sampled_from(["", "train"]),
                                   st.floats(0, 100), st.floats(0, 10)), max_size=60)


@given(ticks=st.lists(jobs_strategy, max_size=6), cap=st.integers(1, 6))
def test_folding_conserves_energy_and_bounds_tag_sets(ticks: list, cap: int) -> None:
    from wattledger.accounting.attribution import Charge
    from wattledger.accounting.tags import TagGuard

    guard = TagGuard(cap)
    seen: dict[str, set[tuple[str, str, str]]] = {}
    for i, tick in enumerate(ticks):
        charges: dict[JobKey, Charge] = {SYSTEM_JOB: Charge(1.0, 0.5, 0.0)}
        for user, tag, project, phase, dyn, static in tick:
            charges[JobKey(tag, user, project, phase)] = Charge(dyn, static, 1.0)
        folded = guard.fold(charges, T0 + i * SEC)
        assert sum(c.energy_j for c in folded.values()) == pytest.approx(sum(c.energy_j for c in charges.values()))
        assert folded[SYSTEM_JOB] == charges[SYSTEM_JOB]  # reserved jobs are never counted or folded
        for job in folded:
            if job.tag != "_overflow" and not job.reserved:
                assert job in charges  # an admitted job keeps its own row, unchanged
                seen.setdefault(job.user, set()).add((job.tag, job.project, job.phase))
    assert all(len(s) <= cap for s in seen.values())

"""The whole agent (the CLI, as a service runs it) into a real InfluxDB: counts, conservation, outage, crash.

The RAPL counters come from a copy of a fixture tree whose ``energy_uj``
files a thread keeps advancing (with wrap), so every tick has energy to
charge. InfluxDB must end up holding exactly what the local ledger holds:
every tick once, nothing lost across an outage or a SIGKILL, nothing doubled.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.influx_server import InfluxServer
from wattledger.store.ledger import Ledger

pytestmark = [pytest.mark.influx, pytest.mark.slow]

FIXTURE = Path(__file__).parent / "fixtures" / "sysfs-intel-2s"
POOLS = 4  # 2 packages + 2 DRAM in that fixture


class MovingRapl:
    """A private copy of the fixture whose counters advance ~20-60 W per zone while running."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(FIXTURE, root, symlinks=True)
        self.files = sorted(root.rglob("energy_uj"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._rng = random.Random(4)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for f in self.files:
                wrap = int((f.parent / "max_energy_range_uj").read_text()) + 1
                value = (int(f.read_text()) + self._rng.randint(400_000, 1_200_000)) % wrap
                tmp = f.with_name("energy_uj.tmp")
                tmp.write_text(f"{value}\n")
                os.replace(tmp, f)

    def __enter__(self) -> "MovingRapl":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def rapl(tmp_path: Path) -> Iterator[MovingRapl]:
    with MovingRapl(tmp_path / "sysfs") as moving:
        yield moving


def agent_cmd(state: Path, rapl: MovingRapl, url: str, db: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wattledger.cli.main", "agent", "--interval", "0.2", "--state-dir", str(state),
            "--sysfs-root", str(rapl.root), "--influx-url", url, "--influx-database", db, *extra]


# These tests write into a plain database: the single layout (the tiered one is tests/test_fleet_*.py's).
AGENT_ENV = {"WATTLEDGER_AGENT_GPUS": "never", "WATTLEDGER_INFLUX_LAYOUT": "single"}


def run_agent(cmd: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **AGENT_ENV)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    assert r.returncode == 0, r.stderr
    return r


def start_agent(cmd: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, **AGENT_ENV)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def spool_state(state: Path) -> tuple[int, int]:
    """(spooled, delivered) read-only, while the agent may be writing."""
    path = state / "ledger.sqlite3"
    if not path.exists():
        return 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        (spooled,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key = 'delivered'").fetchone()
        return int(spooled), int(row[0]) if row else 0
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0
    finally:
        db.close()


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def influx_rows(server: InfluxServer, db: str, measurement: str) -> list[dict]:
    return server.series_values(f"SELECT energy_j FROM {measurement} GROUP BY *", db)


def ledger_rows(state: Path, measurement: str) -> list[dict]:
    led = Ledger.in_state_dir(state)
    try:
        return led.rows(measurement)
    finally:
        led.close()


def series_key(row: dict, tags: tuple[str, ...]) -> tuple[object, ...]:
    return (row.get("time", row.get("time_ns")), *((row.get(t) or "") for t in tags))


NODE_TAGS = ("host", "component", "device", "source")
JOB_TAGS = ("host", "job", "user", "project", "phase", "component", "device", "source")


def assert_influx_equals_ledger(server: InfluxServer, db: str, state: Path) -> tuple[int, int]:
    """Every ledger row in InfluxDB exactly once, with the same energy; nothing else there."""
    totals = []
    for measurement, tags in (("wl_node", NODE_TAGS), ("wl_job", JOB_TAGS)):
        local = {series_key(r, tags): r["energy_j"] for r in ledger_rows(state, measurement)}
        assert len(local) == len(ledger_rows(state, measurement)), "the ledger itself holds a duplicate"
        remote_rows = influx_rows(server, db, measurement)
        remote_keys = Counter(series_key(r, tags) for r in remote_rows)
        assert not [k for k, n in remote_keys.items() if n > 1]
        remote = {series_key(r, tags): r["energy_j"] for r in remote_rows}
        assert set(remote) == set(local), (len(remote), len(local))
        for k, e in local.items():
            assert remote[k] == pytest.approx(e, rel=1e-12, abs=1e-12)
        totals.append(len(local))
    spool = Ledger.in_state_dir(state)
    try:
        assert spool.spool_counts()["spooled"] == 0
    finally:
        spool.close()
    return totals[0], totals[1]


def test_agent_ticks_into_influxdb_counted_and_conserved(influxd: InfluxServer, rapl: MovingRapl,
                                                         tmp_path: Path) -> None:
    db, ticks = "e2e_ticks", 8
    influxd.create_db(db)
    state = tmp_path / "state"
    run_agent(agent_cmd(state, rapl, influxd.url, db, "--ticks", str(ticks)))

    (row,) = influxd.series_values("SELECT count(energy_j) FROM wl_node", db)
    assert row["count"] == ticks * POOLS
    (row,) = influxd.series_values("SELECT count(tick_s) FROM wl_agent", db)
    assert row["count"] == ticks
    node_by_tick: dict[int, float] = defaultdict(float)
    job_by_tick: dict[int, float] = defaultdict(float)
    for r in influxd.series_values("SELECT energy_j FROM wl_node", db):
        node_by_tick[r["time"]] += r["energy_j"]
    for r in influxd.series_values("SELECT energy_j FROM wl_job", db):
        job_by_tick[r["time"]] += r["energy_j"]
    assert len(node_by_tick) == ticks
    assert all(e > 0 for e in node_by_tick.values())
    assert set(job_by_tick) == set(node_by_tick)
    for t, e in node_by_tick.items():
        assert job_by_tick[t] == pytest.approx(e, rel=1e-9)
    assert assert_influx_equals_ledger(influxd, db, state)[0] == ticks * POOLS
    # wl_agent reports the spool: the last tick saw everything before it delivered.
    agent_rows = influxd.series_values("SELECT delivered, spooled, write_errors FROM wl_agent", db)
    assert agent_rows[-1]["delivered"] > 0 and agent_rows[-1]["write_errors"] == 0


def test_outage_loses_nothing_and_doubles_nothing(fresh_influxd: InfluxServer, rapl: MovingRapl,
                                                  tmp_path: Path) -> None:
    db, ticks = "e2e_outage", 30
    fresh_influxd.create_db(db)
    state = tmp_path / "state"
    proc = start_agent(agent_cmd(state, rapl, fresh_influxd.url, db, "--ticks", str(ticks)))
    try:
        wait_for("two ticks delivered", lambda: spool_state(state)[1] >= 2 * POOLS)
        fresh_influxd.stop()
        wait_for("four ticks spooled", lambda: spool_state(state)[0] >= 4 * POOLS)
        fresh_influxd.start()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "not available" in err and "resumed" in err  # logged once each, and it came back by itself
    assert err.count("not available") == 1
    (row,) = fresh_influxd.series_values("SELECT count(energy_j) FROM wl_node", db)
    assert row["count"] == ticks * POOLS
    assert assert_influx_equals_ledger(fresh_influxd, db, state)[0] == ticks * POOLS
    errors = fresh_influxd.series_values("SELECT max(write_errors) FROM wl_agent", db)[0]["max"]
    assert errors >= 1


def spooled(state: Path) -> int:
    led = Ledger.in_state_dir(state)
    try:
        return led.spool_counts()["spooled"]
    finally:
        led.close()


def test_sigkill_and_restart_loses_nothing_and_doubles_nothing(fresh_influxd: InfluxServer, rapl: MovingRapl,
                                                               tmp_path: Path) -> None:
    db = "e2e_crash"
    fresh_influxd.create_db(db)
    state = tmp_path / "state"
    # 1: killed while delivering normally.
    proc = start_agent(agent_cmd(state, rapl, fresh_influxd.url, db))
    wait_for("some delivery", lambda: spool_state(state)[1] >= 2 * POOLS)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # 2: killed during an outage, with a backlog in the spool.
    delivered_before = spool_state(state)[1]
    proc = start_agent(agent_cmd(state, rapl, fresh_influxd.url, db))
    wait_for("delivery after the restart", lambda: spool_state(state)[1] > delivered_before)
    fresh_influxd.stop()
    wait_for("three ticks spooled", lambda: spool_state(state)[0] >= 3 * POOLS)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert spooled(state) >= 3 * POOLS
    fresh_influxd.start()
    # 3: a clean run on the same state dir sends the backlog.
    run_agent(agent_cmd(state, rapl, fresh_influxd.url, db, "--ticks", "3"))
    n_node, n_job = assert_influx_equals_ledger(fresh_influxd, db, state)
    assert n_node >= 4 * POOLS and n_node % POOLS == 0 and n_job > 0


KILL_AFTER_ACCEPTED = """
import os, signal, sys
from wattledger.agent.delivery import Deliverer
from wattledger.store.ledger import Ledger
from wattledger.model.points import Point
from wattledger.agent.sinks import InfluxV1Sink

url, db, state, mode = sys.argv[1:5]
ledger = Ledger.in_state_dir(state, spool=True)
if mode == "append":
    ledger.append([Point("wl_node", {"host": "h", "component": "cpu", "device": f"package-{i % 2}", "source": "rapl"},
                         {"energy_j": float(i)}, 1_700_000_000_000_000_000 + (i // 2) * 10**9) for i in range(40)])

class KilledAfterTheServerSaidYes(InfluxV1Sink):
    def write(self, points):
        result = super().write(points)
        if mode == "append":
            os.kill(os.getpid(), signal.SIGKILL)  # the 2xx arrived; mark_delivered never runs
        return result

Deliverer(ledger, KilledAfterTheServerSaidYes(url, db), batch_points=40).step()
print(ledger.spool_counts())
"""


def test_killed_between_the_servers_yes_and_marking_delivered(influxd: InfluxServer, tmp_path: Path) -> None:
    """The one window a crash can hit: the batch is resent on restart and overwrites itself, not doubled."""
    db = "e2e_window"
    influxd.create_db(db)
    state = str(tmp_path / "state")
    first = subprocess.run([sys.executable, "-c", KILL_AFTER_ACCEPTED, influxd.url, db, state, "append"],
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert spooled(Path(state)) == 40
    assert influxd.series_values("SELECT count(energy_j) FROM wl_node", db)[0]["count"] == 40  # it did arrive
    again = subprocess.run([sys.executable, "-c", KILL_AFTER_ACCEPTED, influxd.url, db, state, "resume"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "'spooled': 0, 'delivered': 40" in again.stdout
    assert influxd.series_values("SELECT count(energy_j) FROM wl_node", db)[0]["count"] == 40
    assert assert_influx_equals_ledger(influxd, db, Path(state))[0] == 40

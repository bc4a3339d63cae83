"""Issue 17, item 7: a full spool drops whole ticks, oldest first, logs each overflow episode once with its
counts, and ``wattledger resend`` replays a range from the ledger into InfluxDB, idempotently.

Before: rows were dropped one by one (InfluxDB got a wl_node without all its wl_job rows), silently, and
there was no way to resend a range.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.influx_server import InfluxServer
from tests.test_delivery import ScriptedSink
from wattledger.agent.delivery import Deliverer
from wattledger.agent.sinks import InfluxV1Sink
from wattledger.model.points import WL_AGENT, WL_JOB, WL_NODE, Point
from wattledger.store.ledger import LEDGER_FILE, Ledger

T0 = 1_709_596_800 * 10**9
SEC = 10**9
REPO = Path(__file__).resolve().parent.parent
JOBS = 5  # per tick: 1 wl_node, 5 wl_job, 1 wl_agent


def tick(i: int) -> list[Point]:
    t = T0 + i * SEC + 250_000_000
    pool = {"host": "h", "component": "cpu", "device": "package-0", "source": "rapl"}
    e = 10.0 + i
    points = [Point(WL_NODE, pool, {"energy_j": e, "power_w": e, "interval_s": 1.0}, t)]
    points += [Point(WL_JOB, {**pool, "job": f"j{k}", "user": "u"}, {"energy_j": e / JOBS, "dynamic_j": e / JOBS,
                                                                    "static_j": 0.0, "driver_s": 0.2}, t)
               for k in range(JOBS)]
    return points + [Point(WL_AGENT, {"host": "h"}, {"tick_s": 0.01, "cpu_s": 0.01, "rss_bytes": 3e7,
                                                     "spooled": 0.0, "delivered": 0.0, "dropped": 0.0,
                                                     "write_errors": 0.0}, t)]


def test_a_full_spool_drops_whole_ticks_oldest_first_and_logs_the_episode_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    ledger = Ledger(tmp_path / LEDGER_FILE, spool=True, spool_max_rows=50)  # 7 ticks and a bit
    for i in range(30):
        ledger.append(tick(i))
        per_tick = Counter(p.time_ns for p in ledger.pending(10_000).points)
        assert set(per_tick.values()) == {JOBS + 2}, per_tick  # never part of a tick
    kept = sorted({p.time_ns for p in ledger.pending(10_000).points})
    assert kept == [tick(i)[0].time_ns for i in range(23, 30)]  # the newest 7 ticks, the oldest went
    assert ledger.spool_counts()["dropped"] == 23 * (JOBS + 2)
    starts = [r for r in caplog.records if "spool full" in r.getMessage()]
    assert len(starts) == 1  # once per episode, not once per tick
    Deliverer(ledger, ScriptedSink()).flush(deadline_s=5)  # the sink is back: the spool empties
    ledger.append(tick(30))  # a write that drops nothing ends the episode
    ends = [r.getMessage() for r in caplog.records if "spool overflow over" in r.getMessage()]
    assert len(ends) == 1
    assert "23 tick(s), 161 point(s)" in ends[0] and "wattledger resend --since" in ends[0]


def resend_args(message: str) -> list[str]:
    """The `wattledger resend ...` command an overflow episode's last line gives."""
    found = re.search(r"wattledger (resend --since \S+ --until \S+)", message)
    assert found, message
    return shlex.split(found.group(1))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    # A plain database with 2024's points: the single layout (the tiered one is tests/test_fleet_*.py's).
    env = dict(os.environ, PYTHONPATH=str(REPO), WATTLEDGER_INFLUX_LAYOUT="single")
    return subprocess.run([sys.executable, "-m", "wattledger.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def influx_job_rows(server: InfluxServer, db: str) -> list[dict[str, object]]:
    return server.series_values("SELECT energy_j FROM wl_job GROUP BY *", db)


@pytest.mark.influx
@pytest.mark.slow
def test_resend_replays_the_dropped_range_into_influxdb_and_twice_is_harmless(
        influxd: InfluxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = "resend_range"
    influxd.create_db(db)
    caplog.set_level(logging.WARNING)
    ledger = Ledger(tmp_path / LEDGER_FILE, spool=True, spool_max_rows=70)
    for i in range(40):  # InfluxDB "away": nothing delivered, the spool overflows
        ledger.append(tick(i))
    Deliverer(ledger, InfluxV1Sink(influxd.url, db)).flush(deadline_s=30)
    ledger.append(tick(40))
    Deliverer(ledger, InfluxV1Sink(influxd.url, db)).flush(deadline_s=30)
    ledger.close()
    assert len(influx_job_rows(influxd, db)) == 11 * JOBS  # 10 ticks fitted in the spool, plus the last one
    end = next(r.getMessage() for r in caplog.records if "spool overflow over" in r.getMessage())
    args = resend_args(end)
    common = ["--state-dir", str(tmp_path), "--influx-url", influxd.url, "--influx-database", db]
    dry = cli(*args, *common, "--dry-run")
    assert dry.returncode == 0 and f"resend: {30 * (JOBS + 2)} point(s)" in dry.stdout, dry.stdout + dry.stderr
    for _ in range(2):  # the second time only overwrites the same points with the same values
        r = cli(*args, *common)
        assert r.returncode == 0, r.stderr
        assert f"{30 * (JOBS + 2)} of {30 * (JOBS + 2)} point(s) sent" in r.stdout
        rows = influx_job_rows(influxd, db)
        keys = Counter((row["time"], row["job"]) for row in rows)
        assert len(rows) == 41 * JOBS and set(keys.values()) == {1}
    # InfluxDB now equals the ledger, value for value.
    reader = Ledger(tmp_path / LEDGER_FILE, readonly=True)
    local = {(r["time_ns"], r["job"]): r["energy_j"] for r in reader.rows(WL_JOB)}
    remote = {(r["time"], r["job"]): r["energy_j"] for r in influx_job_rows(influxd, db)}
    assert remote == local
    (count,) = influxd.series_values("SELECT count(tick_s) FROM wl_agent", db)
    assert count["count"] == 41


def test_resend_stops_with_a_resume_time_when_the_server_is_gone(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    for i in range(5):
        ledger.append(tick(i))
    ledger.close()
    r = cli("resend", "--state-dir", str(tmp_path), "--since", "2024-03-05", "--until", "2024-03-06",
            "--influx-url", "http://127.0.0.1:9", "--influx-database", "x")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "resume with --since 2024-03-05T00:00:00Z" in r.stderr, r.stderr


def test_resend_needs_a_sink_and_says_so() -> None:
    r = cli("resend", "--since", "1h", "--state-dir", "/nonexistent")
    assert r.returncode != 0 and "Traceback" not in r.stderr

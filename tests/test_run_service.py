"""`wattledger run` beside a running service agent: it says so, and its figures are the service's own
ledger rows for the run's tag (one truth, not two), short commands included."""

from __future__ import annotations

import json
import math
import os
import pwd
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wattledger.model.points import WL_AGENT, WL_EMBODIED, WL_JOB, WL_NODE
from wattledger.store.errors import StorageError
from wattledger.store.ledger import Ledger

BUSY = "import sys, time\nend = time.process_time() + float(sys.argv[1])\nwhile time.process_time() < end: pass\n"


def wl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattledger.cli.main", *args], capture_output=True, text=True,
                          timeout=180)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A real agent (model estimate, 1 s ticks) writing its ledger in a state dir, as the service would."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[agent]\nestimate = "always"\ngpus = "never"\ninterval_s = 1.0\nstate_dir = "{tmp_path}/state"\n')
    proc = subprocess.Popen([sys.executable, "-m", "wattledger.cli.main", "agent", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger_path = tmp_path / "state" / "ledger.sqlite3"
    deadline = time.monotonic() + 60
    try:
        while not (ledger_path.exists() and _ticks(ledger_path)):
            assert proc.poll() is None and time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.2)
        yield cfg, ledger_path
    finally:  # a failed start must not leave the agent running after the test
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _ticks(path: Path) -> int:
    """The agent's ticks in its ledger; 0 while the file exists but its tables are not made yet."""
    ledger = Ledger(path, readonly=True)
    try:
        return len(ledger.rows(WL_AGENT))
    except (sqlite3.OperationalError, StorageError) as e:  # the file exists, its schema is not committed yet
        assert "no such table" in str(e), e
        return 0
    finally:
        ledger.close()


@pytest.mark.slow
@pytest.mark.parametrize("cpu_s", [0.05, 1.5])
def test_run_takes_its_figures_from_the_service_ledger(service: tuple[Path, Path], cpu_s: float) -> None:
    cfg, ledger_path = service
    tag = f"beside-service-{cpu_s:g}"
    r = wl("run", "--config", str(cfg), "--no-record", "--json", "-t", tag, "--", sys.executable, "-c", BUSY, str(cpu_s))
    assert r.returncode == 0, r.stderr
    assert "the service agent is running" in r.stderr and str(ledger_path) in r.stderr
    out = json.loads(r.stdout)
    assert out["figures_from"] == f"service ledger {ledger_path}"
    ledger = Ledger(ledger_path, readonly=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    rows = [row for row in ledger.rows(WL_JOB) if row["job"] == tag and row["user"] == user]
    embodied = [row for row in ledger.rows(WL_EMBODIED) if row["job"] == tag and row["user"] == user]
    ledger.close()
    assert rows, "the service charged nothing to the run's tag"
    assert math.isclose(out["energy_j"], math.fsum(float(row["energy_j"]) for row in rows), rel_tol=1e-9)
    # and its embodied carbon is the service's wl_embodied rows for the tag (issue 16)
    assert embodied and out["embodied_g"] > 0
    assert math.isclose(out["embodied_g"], math.fsum(float(row["embodied_g"]) for row in embodied),
                        rel_tol=1e-9, abs_tol=1e-9 * len(embodied))  # rows are kept in nano-grams
    assert math.isclose(out["total_co2e_g"], out["co2e_g"] + out["embodied_g"], rel_tol=1e-12)
    # the service saw the command's CPU (through the holder even when it was shorter than a tick)
    cpu_seen = math.fsum(float(row["driver_s"]) for row in rows if row["component"] == "cpu")
    assert cpu_seen >= 0.8 * cpu_s, (cpu_seen, out)


def test_a_stale_service_ledger_is_said_and_not_used(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[agent]\nestimate = "always"\ngpus = "never"\nstate_dir = "{tmp_path}/state"\n')
    r = wl("agent", "--config", str(cfg), "--ticks", "1", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite3", readonly=True)
    (last,) = ledger.rows(WL_NODE)[-1:]
    ledger.close()
    # stale: older than 3 of its ticks + 2 s (its one tick spans the first, slow, scan of /proc)
    time.sleep(max(0.0, (int(last["time_ns"]) - time.time_ns()) / 1e9 + 3 * float(last["interval_s"]) + 2.5))
    r = wl("run", "--config", str(cfg), "--no-record", "--json", "-t", "alone", "--", "true")
    assert r.returncode == 0, r.stderr
    assert "measuring here instead" in r.stderr and json.loads(r.stdout)["figures_from"] == "run"


def test_a_run_older_than_the_services_raw_ticks_keeps_its_own_figures(tmp_path: Path) -> None:
    """Compaction folds raw ticks older than [ledger] raw_days into rollups: the service's rows of a run
    that started before them are gone, so service_points says so (None) instead of giving a part."""
    from tests.test_ledger_rollups import T0, tick
    from wattledger.agent.service import Service, service_points
    from wattledger.model.units import HOUR_NS, NS_PER_S
    from wattledger.store.compact import Compactor, Retention

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    for i in range(3 * 60):
        ledger.append(tick(T0 + i * 60 * NS_PER_S, [10.0, 20.0, 30.0], [[1, 1, 0, 0]] * 3, interval_s=60.0))
    Compactor(ledger, Retention(raw_s=3600.0, minutes_s=7200.0)).catch_up(T0 + 3 * HOUR_NS)
    kept = ledger.raw_kept_ns()
    ledger.close()
    assert kept > T0
    svc = Service(tmp_path / "ledger.sqlite3", 60.0, T0 + 3 * HOUR_NS)
    assert service_points(svc, "train", "alice", T0 + 10 * NS_PER_S, T0 + 3 * HOUR_NS) is None
    recent = service_points(svc, "train", "alice", kept, T0 + 3 * HOUR_NS)
    assert recent and {p.tags["job"] for p in recent if p.measurement == WL_JOB} == {"train"}

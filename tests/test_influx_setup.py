"""Issue 15: ``wattledger influx setup`` against the real influxd (1.x API) and the InfluxDB 2 fake (v2 API):
it creates what the tiered layout needs, says what it created, and a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_influx2 import FakeInflux2
from tests.influx_server import InfluxServer
from wattledger.model.tiers import TIER_TABLE

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "wattledger.cli.main", "influx", "setup", *args],
                          capture_output=True, text=True, timeout=120, env=full)


def state(server: InfluxServer, db: str) -> tuple[list[Any], list[Any]]:
    """Everything setup manages on a 1.x server: the retention policies and the wl_tier rows."""
    rps = server.query("SHOW RETENTION POLICIES", db)["results"][0]["series"][0]["values"]
    rows = server.query(f'SELECT * FROM "{TIER_TABLE}"', db)["results"][0]["series"][0]["values"]
    return rps, rows


@pytest.mark.influx
def test_v1_setup_creates_the_tiers_and_a_second_run_changes_nothing(influxd: InfluxServer) -> None:
    db = "setup_twice"
    first = cli("--influx-url", influxd.url, "--influx-database", db)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"influx setup: created database '{db}'",
        "influx setup: created retention policy 'raw' (2d, default)",
        "influx setup: created retention policy 'minutes' (20d)",
        "influx setup: created retention policy 'hours' (INF)",
        "influx setup: wrote 16 wl_tier rows (the dashboards' tier choice) into 'raw'",
        f"influx setup: {influxd.url} (tiered layout): 5 change(s)",
    ]
    rps, rows = state(influxd, db)
    assert {(r[0], r[1], r[4]) for r in rps} >= {("raw", "48h0m0s", True), ("minutes", "480h0m0s", False),
                                                  ("hours", "0s", False)}
    second = cli("--influx-url", influxd.url, "--influx-database", db)
    assert second.returncode == 0, second.stderr
    assert second.stdout == f"influx setup: {influxd.url} (tiered layout): nothing to change, everything is in place\n"
    assert state(influxd, db) == (rps, rows)


@pytest.mark.influx
def test_v1_setup_follows_a_changed_retention_and_grants(influxd: InfluxServer, tmp_path: Path) -> None:
    db = "setup_change"
    assert cli("--influx-url", influxd.url, "--influx-database", db).returncode == 0
    influxd.query("CREATE USER wl_agent WITH PASSWORD 'x'")
    config = tmp_path / "config.toml"
    config.write_text('[influx]\nraw_days = 1.5\nminutes_days = 10\nhours_days = 800\n')
    r = cli("--config", str(config), "--influx-url", influxd.url, "--influx-database", db, "--grant-write", "wl_agent")
    assert r.returncode == 0, r.stderr
    assert "altered retention policy 'raw': 48h0m0s -> 36h" in r.stdout
    assert "altered retention policy 'minutes': 480h0m0s -> 10d" in r.stdout
    assert "altered retention policy 'hours': 0s -> 800d" in r.stdout
    assert "deleted 16 old wl_tier row(s)" in r.stdout and "granted WRITE on 'setup_change' to 'wl_agent'" in r.stdout
    grants = influxd.query('SHOW GRANTS FOR "wl_agent"')["results"][0]["series"][0]["values"]
    assert [db, "WRITE"] in grants
    again = cli("--config", str(config), "--influx-url", influxd.url, "--influx-database", db,
                "--grant-write", "wl_agent")
    assert "nothing to change" in again.stdout, again.stdout
    missing = cli("--influx-url", influxd.url, "--influx-database", db, "--grant-read", "nobody")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "InfluxDB user 'nobody' does not exist" in missing.stderr


@pytest.mark.influx
def test_single_layout_rows_name_the_default_policy(influxd: InfluxServer) -> None:
    db = "setup_single"
    r = cli("--influx-url", influxd.url, "--influx-database", db, env={"WATTLEDGER_INFLUX_LAYOUT": "single"})
    assert r.returncode == 0, r.stderr
    assert "retention policy" not in r.stdout
    _, rows = state(influxd, db)
    columns = influxd.query(f'SELECT * FROM "{TIER_TABLE}"', db)["results"][0]["series"][0]["columns"]
    assert {dict(zip(columns, row))["tier"] for row in rows} == {"autogen"}


def test_setup_errors_are_one_line() -> None:
    r = cli("--influx-url", "http://127.0.0.1:9", "--influx-database", "x")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "cannot reach InfluxDB" in r.stderr
    r = cli("--influx-url", "http://127.0.0.1:9")
    assert r.returncode != 0 and "Traceback" not in r.stderr


@pytest.fixture
def influx2() -> Iterator[FakeInflux2]:
    server = FakeInflux2(buckets=())
    yield server
    server.close()


def test_v2_setup_makes_buckets_and_dbrp_mappings_and_a_second_run_changes_nothing(influx2: FakeInflux2) -> None:
    args = ("--influx-url", influx2.url, "--influx-bucket", "wl", "--influx-org", influx2.org)
    env = {"WATTLEDGER_SINK_TOKEN": influx2.token}
    first = cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "created bucket 'wl_raw' (2 d)" in first.stdout and "created bucket 'wl_hours' (forever)" in first.stdout
    assert "created DBRP wl/raw -> bucket 'wl_raw' (default)" in first.stdout
    assert influx2.retention == {"wl_raw": 2 * 86400, "wl_minutes": 20 * 86400, "wl_hours": 0}
    assert sorted((m["database"], m["retention_policy"], m["default"]) for m in influx2.dbrps) == [
        ("wl", "hours", False), ("wl", "minutes", False), ("wl", "raw", True)]
    assert len([ln for ln in influx2.bucket_lines["wl_raw"] if ln.startswith(TIER_TABLE)]) == 16
    made = influx2.mutations
    second = cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "nothing to change" in second.stdout and influx2.mutations == made


def test_v2_setup_needs_an_org_and_a_token(influx2: FakeInflux2) -> None:
    r = cli("--influx-url", influx2.url, "--influx-bucket", "wl")
    assert r.returncode == 1 and "needs --influx-org and --influx-token" in r.stderr
    r = cli("--influx-url", influx2.url, "--influx-bucket", "wl", "--influx-org", influx2.org, "--influx-token", "bad")
    assert r.returncode == 1 and "refused the token" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.influx
def test_doctor_says_to_run_setup_when_the_tiers_are_missing(influxd: InfluxServer) -> None:
    from wattledger.agent.sinks import check_connection
    from wattledger.agent.sinks.routing import routing
    from wattledger.config import Config

    db = "setup_missing"
    influxd.create_db(db)
    cfg = Config()
    cfg.sink.url, cfg.sink.database = influxd.url, db
    row = check_connection(cfg.sink, routing(cfg))
    assert row.state.value == "missing" and "wattledger influx setup" in row.fix
    assert "'raw', 'minutes', 'hours'" in row.detail or "'hours', 'minutes', 'raw'" in row.detail


def test_v2_setup_takes_the_default_mapping_from_the_compose_stacks_autogen(influx2: FakeInflux2) -> None:
    """deploy/compose.yaml's InfluxDB maps wattledger/autogen (default) to its bucket; setup makes raw the
    default so that unqualified InfluxQL (wl_agent, the wl_tier rows) reads the raw tier."""
    influx2.buckets.add("wl")
    influx2.dbrps.append({"id": "0" * 15 + "a", "orgID": influx2.org_id, "bucketID": "b", "database": "wl",
                          "retention_policy": "autogen", "default": True})
    r = cli("--influx-url", influx2.url, "--influx-bucket", "wl", "--influx-org", influx2.org,
            env={"WATTLEDGER_SINK_TOKEN": influx2.token})
    assert r.returncode == 0, r.stderr
    assert "altered DBRP wl/autogen: no longer the default" in r.stdout
    assert [m["retention_policy"] for m in influx2.dbrps if m["default"]] == ["raw"]

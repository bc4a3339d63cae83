"""The v1 sink against a real InfluxDB 1.x (Debian's influxd on loopback): every answer class for real."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from tests.influx_server import CONFIG, InfluxServer, free_port
from wattledger.config import SinkSection
from wattledger.agent.delivery import Deliverer
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_NODE, WL_PUE, Point
from wattledger.agent.sinks import InfluxV1Sink, Outcome, check_connection, make_sink
from wattledger.model.readings import SourceState

pytestmark = pytest.mark.influx

T0 = 1_700_000_000_000_000_000
_db_counter = iter(range(10_000))


def node_points(n: int, device: str = "package-0") -> list[Point]:
    return [
        Point(WL_NODE, {"host": "h1", "component": "cpu", "device": device, "source": "rapl"},
              {"energy_j": 1.5 * i, "power_w": 1.5 * i, "interval_s": 1.0}, T0 + i * 1_000_000_000)
        for i in range(n)
    ]


@pytest.fixture
def db(influxd: InfluxServer) -> str:
    name = f"v1_{next(_db_counter)}"
    influxd.create_db(name)
    return name


def test_points_arrive_with_their_values(influxd: InfluxServer, db: str) -> None:
    sink = InfluxV1Sink(influxd.url, db)
    points = node_points(5)
    assert sink.write(points).outcome is Outcome.OK
    rows = influxd.series_values("SELECT energy_j, power_w, interval_s FROM wl_node", db)
    assert [r["time"] for r in rows] == [p.time_ns for p in points]
    assert [r["energy_j"] for r in rows] == [p.fields["energy_j"] for p in points]
    assert all(r["interval_s"] == 1.0 for r in rows)
    # A resend is idempotent: same series and timestamps overwrite.
    assert sink.write(points).ok
    (row,) = influxd.series_values("SELECT count(energy_j) FROM wl_node", db)
    assert row["count"] == 5
    sink.close()


def test_gzip_off_and_retention_policy(influxd: InfluxServer, db: str) -> None:
    influxd.query(f'CREATE RETENTION POLICY "week" ON "{db}" DURATION 100000h REPLICATION 1')
    sink = InfluxV1Sink(influxd.url, db, retention_policy="week", gzip=False)
    assert sink.write(node_points(3)).ok
    assert influxd.series_values('SELECT count(energy_j) FROM "week".wl_node', db)[0]["count"] == 3
    assert influxd.series_values("SELECT count(energy_j) FROM wl_node", db) == []  # not in the default rp
    assert check_connection(SinkSection(url=influxd.url, database=db, retention_policy="week")).ok
    missing_rp = check_connection(SinkSection(url=influxd.url, database=db, retention_policy="month"))
    assert missing_rp.state is SourceState.MISSING and "retention policy 'month'" in missing_rp.detail


def test_missing_database_is_misconfigured_and_doctor_says_how_to_fix(influxd: InfluxServer) -> None:
    sink = InfluxV1Sink(influxd.url, "no_such_db")
    result = sink.write(node_points(1))
    assert result.outcome is Outcome.MISCONFIGURED and result.status == 404
    assert 'database not found: "no_such_db"' in result.detail
    probe = check_connection(SinkSection(url=influxd.url, database="no_such_db"))
    assert probe.state is SourceState.MISSING
    assert "CREATE DATABASE \"no_such_db\"" in probe.fix
    assert check_connection(SinkSection(url=influxd.url, database="_internal_absent")).state is SourceState.MISSING


def test_field_type_conflict_is_rejected_and_isolated(influxd: InfluxServer, db: str, tmp_path: Path) -> None:
    """A real 400: wl_pue.pue was first written as a string; our float point for it is bad data."""
    http = urllib3.PoolManager(retries=False)
    resp = http.request("POST", f"{influxd.url}/write?db={db}&precision=ns", body=f'wl_pue,site=s pue="x" {T0}')
    assert resp.status == 204
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    good = node_points(30)
    bad = Point(WL_PUE, {"site": "s"}, {"pue": 1.5}, T0 + 1)
    ledger.append(good[:7] + [bad] + good[7:])
    sink = InfluxV1Sink(influxd.url, db)
    assert sink.write([bad]).outcome is Outcome.REJECTED
    d = Deliverer(ledger, sink, step_budget_s=30)
    d.step()
    counts = ledger.spool_counts()
    assert (counts["spooled"], counts["delivered"], counts["rejected"]) == (0, 30, 1)
    assert influxd.series_values("SELECT count(energy_j) FROM wl_node", db)[0]["count"] == 30


def _auth_server(root: Path, extra_http: str = "") -> InfluxServer:
    server = InfluxServer(root)
    server.config.write_text(
        CONFIG.format(root=root, http_port=server.http_port, rpc_port=server.rpc_port).replace(
            "auth-enabled = false", "auth-enabled = true\n  " + extra_http
        )
    )
    server.start()
    return server


@pytest.fixture
def auth_influxd(tmp_path: Path) -> Iterator[InfluxServer]:
    """A private influxd with authentication on and a 4 kB body limit; users admin:pw and bob:b (no rights)."""
    server = _auth_server(tmp_path / "influxd-auth", "max-body-size = 4000")
    server.query("CREATE USER admin WITH PASSWORD 'pw' WITH ALL PRIVILEGES")  # allowed: no users yet
    http = urllib3.PoolManager(retries=False)
    admin = urllib3.make_headers(basic_auth="admin:pw")
    for q in ("CREATE DATABASE wl", "CREATE USER bob WITH PASSWORD 'b'"):
        assert http.request("POST", f"{server.url}/query?q={urllib.parse.quote(q)}", headers=admin).status == 200
    yield server
    server.stop()


def test_credentials_401_and_403(auth_influxd: InfluxServer) -> None:
    url = auth_influxd.url
    ok = InfluxV1Sink(url, "wl", username="admin", password="pw")
    assert ok.write(node_points(2)).ok
    wrong = InfluxV1Sink(url, "wl", username="admin", password="nope").write(node_points(1))
    assert (wrong.outcome, wrong.status) == (Outcome.UNAUTHORIZED, 401)
    anonymous = InfluxV1Sink(url, "wl").write(node_points(1))
    assert anonymous.outcome is Outcome.UNAUTHORIZED
    no_rights = InfluxV1Sink(url, "wl", username="bob", password="b").write(node_points(1))
    assert (no_rights.outcome, no_rights.status) == (Outcome.UNAUTHORIZED, 403)
    assert "not authorized to write" in no_rights.detail

    assert check_connection(SinkSection(url=url, database="wl", username="admin", password="pw")).ok
    bad = check_connection(SinkSection(url=url, database="wl", username="admin", password="nope"))
    assert bad.state is SourceState.PERMISSION_DENIED and "WATTLEDGER_SINK_PASSWORD" in bad.fix
    assert "nope" not in bad.detail + bad.fix
    bob = check_connection(SinkSection(url=url, database="wl", username="bob", password="b"))
    assert bob.state is SourceState.MISSING and "GRANT WRITE" in bob.fix


def test_413_from_a_real_body_limit_is_split_by_the_deliverer(auth_influxd: InfluxServer, tmp_path: Path) -> None:
    sink = InfluxV1Sink(auth_influxd.url, "wl", username="admin", password="pw", gzip=False)
    points = node_points(200)  # ~100 bytes a line: 20 kB against a 4 kB limit
    assert sink.write(points).outcome is Outcome.TOO_LARGE
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    ledger.append(points)
    d = Deliverer(ledger, sink, step_budget_s=30)
    d.step()
    assert ledger.spool_counts()["spooled"] == 0
    assert d.stats()["splits"] >= 4
    admin = urllib3.make_headers(basic_auth="admin:pw")
    q = urllib.parse.urlencode({"db": "wl", "q": "SELECT count(energy_j) FROM wl_node"})
    resp = urllib3.PoolManager().request("GET", f"{auth_influxd.url}/query?{q}", headers=admin)
    assert b'"count"],"values":[["1970-01-01T00:00:00Z",200]]' in resp.data


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = InfluxV1Sink(url, "wl", timeout_s=2).write(node_points(1))
    assert result.outcome is Outcome.RETRY and result.status is None
    probe = check_connection(SinkSection(url=url, database="wl"))
    assert probe.state is SourceState.MISSING and "cannot reach" in probe.detail and "/ping" in probe.fix


def test_not_influxdb(tmp_path: Path) -> None:
    from tests.fake_influx2 import FakeInflux2

    other = FakeInflux2()  # answers /ping, but /query is not there
    try:
        probe = check_connection(SinkSection(url=other.url, database="wl"))
        assert probe.state is SourceState.ERROR
    finally:
        other.close()
    make_sink(SinkSection(url="http://127.0.0.1:9", database="x"))  # constructing never connects

"""The v2 sink (influxdb-client, SYNCHRONOUS, no retries) against a local server that answers like InfluxDB 2."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_influx2 import FakeInflux2, Scripted
from tests.influx_server import free_port
from wattledger.config import SinkKind, SinkSection
from wattledger.agent.delivery import Deliverer
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.agent.sinks import InfluxV2Sink, Outcome, Sink, check_connection, make_sink
from wattledger.model.readings import SourceState

T0 = 1_700_000_000_000_000_000


def node_point(i: int, device: str = "package-0") -> Point:
    return Point(WL_NODE, {"host": "h1", "component": "cpu", "device": device, "source": "rapl"},
                 {"energy_j": 10.0 + i, "power_w": 10.0 + i, "interval_s": 1.0}, T0 + i * 1_000_000_000)


_open: list[Sink] = []


@pytest.fixture
def fake() -> Iterator[FakeInflux2]:
    server = FakeInflux2()
    yield server
    while _open:
        _open.pop().close()
    server.close()


def opened(sink: Sink | None) -> Sink:
    assert sink is not None
    _open.append(sink)
    return sink


def sink_for(fake: FakeInflux2, **kw: object) -> Sink:
    args: dict[str, object] = {"bucket": "wl", "org": fake.org, "token": fake.token, "timeout_s": 5.0, "gzip": True}
    args.update(kw)
    return opened(InfluxV2Sink(fake.url, **args))  # type: ignore[arg-type]


def test_the_real_request_reaches_the_server(fake: FakeInflux2) -> None:
    sink = sink_for(fake, gzip=True)
    points = [node_point(i) for i in range(3)]
    result = sink.write(points)
    assert result.outcome is Outcome.OK
    (req,) = fake.writes()
    assert req.method == "POST"
    assert req.path == "/api/v2/write"
    assert req.query == {"org": ["wl-org"], "bucket": ["wl"], "precision": ["ns"]}
    assert req.headers["authorization"] == "Token secret-token"
    assert req.headers["content-encoding"] == "gzip"
    assert gzip.decompress(req.raw_body).decode() == req.body
    assert req.body.split("\n") == [p.to_line() for p in points]
    assert fake.lines == [p.to_line() for p in points]


def test_without_gzip_the_body_is_plain_line_protocol(fake: FakeInflux2) -> None:
    sink = sink_for(fake, gzip=False)
    assert sink.write([node_point(0)]).ok
    (req,) = fake.writes()
    assert "content-encoding" not in req.headers
    assert req.raw_body.decode() == node_point(0).to_line()


def test_400_is_rejected_with_the_servers_message(fake: FakeInflux2) -> None:
    fake.respond(Scripted(400, '{"code":"invalid","message":"unable to parse \'x\': bad timestamp"}'))
    result = sink_for(fake).write([node_point(0)])
    assert result.outcome is Outcome.REJECTED
    assert result.status == 400
    assert result.detail == "invalid: unable to parse 'x': bad timestamp"


def test_401_wrong_token_is_unauthorized(fake: FakeInflux2) -> None:
    result = sink_for(fake, token="wrong").write([node_point(0)])
    assert result.outcome is Outcome.UNAUTHORIZED
    assert result.status == 401
    assert "unauthorized access" in result.detail
    assert fake.lines == []


def test_403_is_unauthorized(fake: FakeInflux2) -> None:
    fake.respond(Scripted(403, '{"code":"forbidden","message":"insufficient permissions for write"}'))
    assert sink_for(fake).write([node_point(0)]).outcome is Outcome.UNAUTHORIZED


def test_unknown_bucket_is_misconfigured_not_bad_data(fake: FakeInflux2) -> None:
    result = sink_for(fake, bucket="nope").write([node_point(0)])
    assert result.outcome is Outcome.MISCONFIGURED
    assert result.status == 404
    assert 'bucket "nope" not found' in result.detail


def test_413_is_too_large(fake: FakeInflux2) -> None:
    fake.max_body_bytes = 200
    result = sink_for(fake).write([node_point(i) for i in range(10)])
    assert result.outcome is Outcome.TOO_LARGE
    assert result.status == 413


def test_429_carries_retry_after(fake: FakeInflux2) -> None:
    fake.respond(Scripted(429, '{"code":"too many requests","message":"slow down"}', {"Retry-After": "7"}))
    result = sink_for(fake).write([node_point(0)])
    assert result.outcome is Outcome.RETRY
    assert result.status == 429
    assert result.retry_after_s == 7.0


def test_503_is_retry_and_the_sink_does_not_retry_by_itself(fake: FakeInflux2) -> None:
    fake.respond(Scripted(503, '{"code":"unavailable","message":"shutting down"}'))
    result = sink_for(fake).write([node_point(0)])
    assert result.outcome is Outcome.RETRY
    assert result.status == 503
    assert result.retry_after_s is None
    assert len(fake.writes()) == 1  # exactly one request: the spool owns retries
    assert fake.lines == []


def test_timeout_is_retry_without_status(fake: FakeInflux2) -> None:
    fake.respond(Scripted(204, delay_s=1.5))
    started = time.monotonic()
    result = sink_for(fake, timeout_s=0.3).write([node_point(0)])
    assert result.outcome is Outcome.RETRY
    assert result.status is None
    assert time.monotonic() - started < 1.4
    assert len(fake.writes()) == 1


def test_connection_refused_is_retry(fake: FakeInflux2) -> None:
    sink = InfluxV2Sink(f"http://127.0.0.1:{free_port()}", bucket="wl", org="o", token="t", timeout_s=2)
    _open.append(sink)
    result = sink.write([node_point(0)])
    assert result.outcome is Outcome.RETRY
    assert result.status is None
    assert "Connection" in result.detail or "refused" in result.detail.lower()


def test_make_sink_from_config_and_check_connection(fake: FakeInflux2) -> None:
    cfg = SinkSection(url=fake.url, bucket="wl", org=fake.org, token=fake.token)
    sink = opened(make_sink(cfg))
    assert isinstance(sink, InfluxV2Sink)
    assert sink.write([node_point(0)]).ok
    probe = check_connection(cfg)
    assert probe.state is SourceState.FOUND, probe
    assert "bucket 'wl'" in probe.detail and "v2.7.11-fake" in probe.detail

    bad_token = check_connection(SinkSection(url=fake.url, bucket="wl", org=fake.org, token="wrong"))
    assert bad_token.state is SourceState.PERMISSION_DENIED
    assert "WATTLEDGER_SINK_TOKEN" in bad_token.fix
    assert "wrong" not in bad_token.detail + bad_token.fix  # never echo a token

    no_bucket = check_connection(SinkSection(url=fake.url, bucket="other", org=fake.org, token=fake.token))
    assert no_bucket.state is SourceState.MISSING
    assert "influx bucket create --name other --org wl-org" in no_bucket.fix

    down = check_connection(SinkSection(kind=SinkKind.INFLUX_V2, url=f"http://127.0.0.1:{free_port()}", bucket="wl"))
    assert down.state is SourceState.MISSING
    assert "cannot reach" in down.detail


def test_v1_8_compatibility_from_v1_style_keys(fake: FakeInflux2) -> None:
    """kind=influx_v2 with database/rp/username/password: bucket db/rp, token user:password (1.8+)."""
    fake.buckets.add("telegraf/autogen")
    fake.token = "alice:pw"
    sink = opened(make_sink(SinkSection(kind=SinkKind.INFLUX_V2, url=fake.url, database="telegraf",
                                        retention_policy="autogen", username="alice", password="pw")))
    assert sink.write([node_point(0)]).ok
    (req,) = fake.writes()
    assert req.query["bucket"] == ["telegraf/autogen"]
    assert req.query["org"] == ["-"]
    assert req.headers["authorization"] == "Token alice:pw"


def test_deliverer_over_the_v2_sink_handles_each_answer(fake: FakeInflux2, tmp_path: Path) -> None:
    """End to end through HTTP: 503, 429+Retry-After, 413, a poison line (400), then everything is there once."""
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    points = [node_point(i) for i in range(40)]
    poison = Point(WL_JOB, {"host": "h1", "job": "poison", "component": "cpu", "device": "package-0"},
                   {"energy_j": 1.0}, T0)
    ledger.append(points[:20] + [poison] + points[20:])
    now = [0.0]
    d = Deliverer(ledger, sink_for(fake), clock=lambda: now[0], rng=lambda: 0.5, batch_points=1000,
                  step_budget_s=1e9, sleep=lambda s: now.__setitem__(0, now[0] + s))
    fake.respond(Scripted(503, '{"code":"unavailable","message":"x"}'),
                 Scripted(429, '{"code":"too many requests","message":"x"}', {"Retry-After": "30"}))
    d.step()  # 503
    assert ledger.spool_counts()["spooled"] == 41 and fake.lines == []
    now[0] += 5
    d.step()  # 429, Retry-After 30
    assert d.backing_off_s == pytest.approx(30.0)
    now[0] += 29
    d.step()
    assert len(fake.writes()) == 2  # still waiting for Retry-After
    fake.max_body_bytes = 2000
    fake.reject_line = lambda line: "job=poison" in line
    now[0] += 1.5
    d.step()
    counts = ledger.spool_counts()
    assert counts["spooled"] == 0 and counts["delivered"] == 40 and counts["rejected"] == 1
    assert set(fake.lines) == {p.to_line() for p in points}
    assert d.stats()["write_errors"] >= 3

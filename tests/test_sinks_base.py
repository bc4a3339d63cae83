"""Outcome classification, Retry-After, line encoding, the stdout sink and sink selection from config."""

from __future__ import annotations

import email.utils
import io
import math
from pathlib import Path

import pytest

from wattledger.config import ConfigError, SinkKind, SinkSection, load
from wattledger.model.points import WL_NODE, Point
from wattledger.agent.sinks import (
    InfluxV1Sink, InfluxV2Sink, Outcome, StdoutSink, check_connection, classify, make_sink, parse_retry_after,
    resolve_kind,
)
from wattledger.agent.sinks.base import MAX_RETRY_AFTER_S, encode_lines
from wattledger.model.readings import SourceState


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK), (204, Outcome.OK),
        (400, Outcome.REJECTED), (422, Outcome.REJECTED),
        (401, Outcome.UNAUTHORIZED), (403, Outcome.UNAUTHORIZED),
        (404, Outcome.MISCONFIGURED), (405, Outcome.MISCONFIGURED), (301, Outcome.MISCONFIGURED),
        (413, Outcome.TOO_LARGE),
        (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY), (502, Outcome.RETRY),
        (503, Outcome.RETRY), (504, Outcome.RETRY),
    ],
)
def test_status_table(status: int, outcome: Outcome) -> None:
    assert classify(status).outcome is outcome


def test_error_bodies_of_v1_and_v2() -> None:
    assert classify(400, b'{"code":"invalid","message":"partial write: x"}').detail == "invalid: partial write: x"
    assert classify(400, b'{"error":"field type conflict"}\n').detail == "field type conflict"
    assert classify(400, b"", {"X-Influxdb-Error": "unable to parse"}).detail == "unable to parse"
    assert len(classify(500, b"x" * 10_000).detail) <= 300


def test_retry_after_seconds_date_and_garbage() -> None:
    assert classify(429, b"", {"Retry-After": "12"}).retry_after_s == 12.0
    assert classify(503, b"", {"retry-after": "3"}).retry_after_s == 3.0
    assert classify(503, b"").retry_after_s is None
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now_s=now) == pytest.approx(42.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=now) == 0.0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("nan") is None
    assert parse_retry_after("99999999") == MAX_RETRY_AFTER_S


def test_encode_lines_rejects_points_that_cannot_be_stored() -> None:
    good = Point(WL_NODE, {"host": "h", "user": ""}, {"energy_j": 1.5}, 7)
    assert encode_lines([good]) == ["wl_node,host=h energy_j=1.5 7"]  # empty tag left out
    nan_only = Point(WL_NODE, {"host": "h"}, {"energy_j": math.nan}, 8)
    result = encode_lines([good, nan_only])
    assert not isinstance(result, list) and result.outcome is Outcome.REJECTED and "point 1" in result.detail
    not_a_number = Point(WL_NODE, {"host": "h"}, {"energy_j": "lots"}, 9)  # type: ignore[dict-item]
    result = encode_lines([not_a_number])
    assert not isinstance(result, list) and result.outcome is Outcome.REJECTED


def test_stdout_sink_prints_line_protocol() -> None:
    out = io.StringIO()
    sink = StdoutSink(out)
    p = Point(WL_NODE, {"host": "h x", "component": "cpu"}, {"energy_j": 2.0}, 5)
    assert sink.write([p, p]).ok
    assert out.getvalue() == "wl_node,component=cpu,host=h\\ x energy_j=2 5\n" * 2
    out.close()
    assert sink.write([p]).outcome is Outcome.RETRY  # closed stream: keep, try later
    assert sink.probe().ok


def test_make_sink_by_kind_and_inference() -> None:
    assert make_sink(SinkSection()) is None
    assert isinstance(make_sink(SinkSection(kind=SinkKind.STDOUT)), StdoutSink)
    v1 = make_sink(SinkSection(url="http://127.0.0.1:1", database="wl"))
    assert isinstance(v1, InfluxV1Sink) and v1.remote
    v2 = make_sink(SinkSection(url="http://127.0.0.1:1", bucket="b", org="o", token="t"))
    assert isinstance(v2, InfluxV2Sink) and v2.remote
    v2.close()
    assert resolve_kind(SinkSection(url="http://x", token="t")) == "influx_v2"
    assert resolve_kind(SinkSection(kind=SinkKind.INFLUX_V1, url="http://x", bucket="b")) == "influx_v1"


@pytest.mark.parametrize(
    ("cfg", "says"),
    [
        (SinkSection(url="http://x"), "--influx-database"),
        (SinkSection(kind=SinkKind.INFLUX_V1, url="http://x"), "needs a database"),
        (SinkSection(kind=SinkKind.INFLUX_V1, database="d"), "needs a url"),
        (SinkSection(kind=SinkKind.INFLUX_V2, url="http://x"), "needs a bucket"),
        (SinkSection(kind=SinkKind.INFLUX_V1, url="http://x", database="d", timeout_s=0), "timeout_s"),
        (SinkSection(kind=SinkKind.INFLUX_V1, url="http://x", database="d", batch_points=0), "batch_points"),
    ],
)
def test_make_sink_says_what_is_missing(cfg: SinkSection, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        make_sink(cfg)
    probe = check_connection(cfg)
    assert probe.state is SourceState.ERROR and says in probe.detail


def test_sink_settings_from_file_and_environment(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[sink]\nkind = "influx_v1"\nurl = "http://127.0.0.1:8086"\ndatabase = "wl"\n'
                    'retention_policy = "week"\nusername = "u"\ngzip = false\nbatch_points = 100\n')
    cfg = load(conf, environ={"WATTLEDGER_SINK_PASSWORD": "pw", "WATTLEDGER_SINK_TIMEOUT_S": "3"})
    sink = make_sink(cfg.sink)
    assert isinstance(sink, InfluxV1Sink)
    assert sink.retention_policy == "week" and not sink.gzip
    url = sink._write_url(sink.routing.targets["raw"])  # no layout given: every tier to the one policy
    assert "rp=week" in url and "db=wl" in url and "precision=ns" in url
    assert cfg.sink.password == "pw" and cfg.sink.timeout_s == 3.0 and cfg.sink.batch_points == 100


def test_no_sink_is_reported_not_an_error() -> None:
    probe = check_connection(SinkSection())
    assert probe.state is SourceState.MISSING and "local ledger" in probe.detail and "--influx-url" in probe.fix


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("DOMAIN\\alice", False), ('say "hi", a=b', False), ("ü€😀", False), ("a\\b\\c", False),
        ("a\\", True), ("a\\ b", True), ("a\\,b", True), ("a\\=b", True), ("a\\\\b", True),
        ("x\ny", True), ("tab\t", True), ("nul\x00", True), ("del\x7f", True),
    ],
)
def test_tag_values_line_protocol_cannot_carry_are_refused_unsent(value: str, refused: bool) -> None:
    p = Point(WL_NODE, {"host": "h", "user": value}, {"energy_j": 1.0}, 1)
    result = encode_lines([p])
    if refused:
        assert not isinstance(result, list) and result.outcome is Outcome.REJECTED
        assert result.status is None and "tag 'user'" in result.detail
    else:
        assert isinstance(result, list) and len(result) == 1

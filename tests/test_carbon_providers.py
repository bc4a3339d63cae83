"""Providers against loopback fakes that answer with each API's recorded response shapes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_carbon_apis import FIXTURES, FakeCarbonAPIs, fixture
from wattledger import config as config_mod
from wattledger.carbon import CarbonProviderError, make_provider
from wattledger.carbon.base import ACTUAL, FORECAST, LBS_PER_MWH_TO_G_PER_KWH, MARGINAL
from wattledger.carbon.csvfile import CsvFile
from wattledger.carbon.electricitymaps import ElectricityMaps
from wattledger.util.timeutil import HOUR_NS, parse_iso_ns
from wattledger.carbon.ukci import UkCarbonIntensity
from wattledger.carbon.watttime import WattTime

NOW = parse_iso_ns("2024-03-05T12:00:00Z")
DAY = 24 * HOUR_NS
EM_TOKEN = "em-secret-token-123"
WT_PASSWORD = "wt-secret-pass-456"


@pytest.fixture
def fake() -> Iterator[FakeCarbonAPIs]:
    with FakeCarbonAPIs(em_token=EM_TOKEN, wt_password=WT_PASSWORD) as f:
        yield f


@pytest.fixture
def sleeps() -> list[float]:
    return []


def em(fake: FakeCarbonAPIs, sleeps: list[float], zone: str = "DE", token: str = EM_TOKEN) -> ElectricityMaps:
    return ElectricityMaps(zone, token, api_url=fake.url, clock=lambda: NOW, sleep=sleeps.append, timeout_s=5)


def wt(fake: FakeCarbonAPIs, sleeps: list[float], region: str = "CAISO_NORTH", password: str = WT_PASSWORD,
       clock: list[int] | None = None) -> WattTime:
    now = clock if clock is not None else [NOW]
    return WattTime(region, "alice", password, api_url=fake.url, clock=lambda: now[0], sleep=sleeps.append,
                    timeout_s=5)


# -- Electricity Maps --------------------------------------------------------------------------


def test_em_history_and_latest_in_the_last_day(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    points = em(fake, sleeps).fetch(NOW - DAY, NOW)
    history = fixture("electricitymaps_history.json")["history"]
    expected = {parse_iso_ns(e["datetime"]): float(e["carbonIntensity"]) for e in history
                if e["carbonIntensity"] is not None}
    expected[parse_iso_ns(fixture("electricitymaps_latest.json")["datetime"])] = 301.0  # latest wins
    assert {p.time_ns: p.g_per_kwh for p in points} == expected
    assert len(points) == 23  # the hour with carbonIntensity null is skipped, not zeroed
    assert parse_iso_ns(history[5]["datetime"]) not in {p.time_ns for p in points}
    assert {(p.zone, p.provider, p.kind) for p in points} == {("DE", "electricitymaps", ACTUAL)}
    assert [p.time_ns for p in points] == sorted(p.time_ns for p in points)
    assert all(r.headers.get("auth-token") == EM_TOKEN for r in fake.requests)
    assert {r.query["zone"] for r in fake.requests} == {"DE"}
    assert not sleeps


def test_em_past_range_is_cut_into_ten_day_requests(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    since, until = parse_iso_ns("2024-02-01T00:00:00Z"), parse_iso_ns("2024-02-12T00:00:00Z")
    points = em(fake, sleeps).fetch(since, until)
    calls = fake.seen("em_past_range")
    assert len(calls) == 2
    spans = [parse_iso_ns(c.query["end"]) - parse_iso_ns(c.query["start"]) for c in calls]
    assert max(spans) <= 10 * DAY and sum(spans) == until - since
    assert len(points) == 11 * 24  # the inclusive boundary hour counted once
    assert points[0].time_ns == since and points[-1].time_ns == until - HOUR_NS
    assert not fake.seen("em_history")


def test_em_wrong_token_is_401_with_advice_and_no_retry(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    with pytest.raises(CarbonProviderError) as e:
        em(fake, sleeps, token="not-the-token").fetch(NOW - DAY, NOW)
    assert e.value.status == 401
    assert "[carbon] token" in str(e.value)
    assert "not-the-token" not in str(e.value)
    assert len(fake.requests) == 1 and not sleeps


def test_em_unknown_zone_is_404_naming_the_zone_key(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    with pytest.raises(CarbonProviderError) as e:
        em(fake, sleeps, zone="XX-NOWHERE").fetch(NOW - DAY, NOW)
    assert e.value.status == 404
    assert "[carbon] zone" in str(e.value)


def test_em_rate_limit_waits_retry_after_then_succeeds(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    fake.queue("em_history", 429, {"message": "Too many requests"}, headers={"Retry-After": "7"})
    points = em(fake, sleeps).fetch(NOW - DAY, NOW)
    assert len(points) == 23
    assert sleeps == [7.0]
    assert len(fake.seen("em_history")) == 2


def test_em_long_retry_after_is_handed_back_not_slept(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    fake.queue("em_history", 429, {"message": "quota"}, headers={"Retry-After": "3600"})
    with pytest.raises(CarbonProviderError) as e:
        em(fake, sleeps).fetch(NOW - DAY, NOW)
    assert e.value.status == 429 and e.value.retry_after_s == 3600
    assert not sleeps


def test_em_server_errors_are_retried_with_backoff(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    fake.queue("em_history", 503, "upstream down", times=2)
    assert len(em(fake, sleeps).fetch(NOW - DAY, NOW)) == 23
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] > 0
    fake.queue("em_history", 502, "bad gateway", times=3)
    with pytest.raises(CarbonProviderError) as e:
        em(fake, []).fetch(NOW - DAY, NOW)
    assert e.value.status == 502 and "server error" in str(e.value)


def test_em_needs_a_token() -> None:
    with pytest.raises(CarbonProviderError, match="WATTLEDGER_CARBON_TOKEN"):
        ElectricityMaps("DE", "")


# -- WattTime ----------------------------------------------------------------------------------


def test_wt_login_then_historical_converted_to_g_per_kwh(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    since, until = parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T06:00:00Z")
    points = wt(fake, sleeps).fetch(since, until)
    data = fixture("watttime_historical.json")["data"]
    assert len(points) == len(data) == 72
    for p, e in zip(points, data):
        assert p.time_ns == parse_iso_ns(e["point_time"])
        assert p.g_per_kwh == pytest.approx(e["value"] * 0.45359237)
    assert points[0].g_per_kwh == pytest.approx(data[0]["value"] * 0.4536, rel=1e-4)  # the brief's 0.4536
    assert {(p.zone, p.provider, p.kind) for p in points} == {("CAISO_NORTH", "watttime", MARGINAL)}
    login, = fake.seen("wt_login")
    assert login.headers["authorization"].startswith("Basic ")
    hist, = fake.seen("wt_historical")
    assert hist.headers["authorization"] == f"Bearer {fake.wt_token}"
    assert hist.query["signal_type"] == "co2_moer" and hist.query["region"] == "CAISO_NORTH"
    assert LBS_PER_MWH_TO_G_PER_KWH == pytest.approx(0.4536, rel=1e-4)


def test_wt_token_is_reused_and_renewed_after_401(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    p = wt(fake, sleeps)
    window = (parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T01:00:00Z"))
    p.fetch(*window)
    p.fetch(*window)
    assert len(fake.seen("wt_login")) == 1
    fake.queue("wt_historical", 401, {"error": "token expired"})
    assert len(p.fetch(*window)) == 12
    assert len(fake.seen("wt_login")) == 2


def test_wt_token_expires_after_its_lifetime(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    clock = [NOW]
    p = wt(fake, sleeps, clock=clock)
    window = (parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T01:00:00Z"))
    p.fetch(*window)
    clock[0] += 31 * 60 * 10**9
    p.fetch(*window)
    assert len(fake.seen("wt_login")) == 2


def test_wt_bad_password_and_region_outside_plan(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    window = (parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T01:00:00Z"))
    with pytest.raises(CarbonProviderError) as e:
        wt(fake, sleeps, password="wrong-password-789").fetch(*window)
    assert e.value.status == 401 and "username and password" in str(e.value)
    assert "wrong-password-789" not in str(e.value)
    with pytest.raises(CarbonProviderError) as e:
        wt(fake, sleeps, region="PJM_NJ").fetch(*window)
    assert e.value.status == 403 and "CAISO_NORTH" in str(e.value)


def test_wt_rate_limited_login_waits(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    fake.queue("wt_login", 429, {"error": "slow down"}, headers={"Retry-After": "2"})
    window = (parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T01:00:00Z"))
    assert len(wt(fake, sleeps).fetch(window[0], window[1])) == 12
    assert sleeps == [2.0]


def test_wt_long_windows_are_cut_at_30_days(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    since = parse_iso_ns("2024-01-20T00:00:00Z")
    points = wt(fake, sleeps).fetch(since, NOW)
    calls = fake.seen("wt_historical")
    assert len(calls) == 2
    assert all(parse_iso_ns(c.query["end"]) - parse_iso_ns(c.query["start"]) <= 30 * DAY for c in calls)
    assert len(points) == 72


def test_wt_needs_credentials() -> None:
    with pytest.raises(CarbonProviderError, match="WATTLEDGER_CARBON_USERNAME"):
        WattTime("CAISO_NORTH", "", "")


# -- GB Carbon Intensity -----------------------------------------------------------------------


def test_ukci_national_actual_where_measured_else_forecast(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    since, until = parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T06:00:00Z")
    points = UkCarbonIntensity("GB", api_url=fake.url, sleep=sleeps.append).fetch(since, until)
    data = fixture("ukci_intensity_range.json")["data"]
    assert len(points) == 12
    for p, e in zip(points, data):
        assert p.time_ns == parse_iso_ns(e["from"])
        if e["intensity"]["actual"] is None:
            assert (p.kind, p.g_per_kwh) == (FORECAST, e["intensity"]["forecast"])
        else:
            assert (p.kind, p.g_per_kwh) == (ACTUAL, e["intensity"]["actual"])
    assert [p.kind for p in points].count(FORECAST) == 3
    call, = fake.seen("ukci_range")
    assert call.path == "/intensity/2024-03-05T00:01Z/2024-03-05T06:00Z"


def test_ukci_regional_is_forecast_only(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    since, until = parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T03:00:00Z")
    points = UkCarbonIntensity("gb-13", api_url=fake.url, sleep=sleeps.append).fetch(since, until)
    assert len(points) == 6
    assert {(p.zone, p.provider, p.kind) for p in points} == {("GB-13", "ukci", FORECAST)}
    assert points[0].g_per_kwh == 170
    assert fake.seen("ukci_regional_range")[0].path.endswith("/regionid/13")


def test_ukci_zone_must_be_gb_or_a_region() -> None:
    with pytest.raises(CarbonProviderError, match="GB-<regionid>"):
        UkCarbonIntensity("FR")
    with pytest.raises(CarbonProviderError, match="out of range"):
        UkCarbonIntensity("GB-99")


def test_ukci_bad_region_and_long_windows(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    with pytest.raises(CarbonProviderError) as e:
        UkCarbonIntensity("GB-7", api_url=fake.url, sleep=sleeps.append).fetch(NOW - DAY, NOW)
    assert e.value.status == 400 and "regionid" in str(e.value)
    UkCarbonIntensity("GB", api_url=fake.url, sleep=sleeps.append).fetch(NOW - 30 * DAY, NOW)
    assert len(fake.seen("ukci_range")) == 3  # 13 + 13 + 4 days


def test_ukci_recovers_from_a_500(fake: FakeCarbonAPIs, sleeps: list[float]) -> None:
    fake.queue("ukci_range", 500, {"error": {"code": "500", "message": "Internal"}})
    since = parse_iso_ns("2024-03-05T00:00:00Z")
    assert len(UkCarbonIntensity("GB", api_url=fake.url, sleep=sleeps.append).fetch(since, since + HOUR_NS)) == 2
    assert len(sleeps) == 1


def test_unreachable_server_is_reported(sleeps: list[float]) -> None:
    from tests.influx_server import free_port

    p = UkCarbonIntensity("GB", api_url=f"http://127.0.0.1:{free_port()}", sleep=sleeps.append)
    with pytest.raises(CarbonProviderError, match="cannot reach"):
        p.fetch(NOW - HOUR_NS, NOW)
    assert len(sleeps) == 2


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_reads_iso_and_unix_times() -> None:
    points = CsvFile("site-a", FIXTURES / "own_series.csv").read()
    assert [(p.time_ns, p.g_per_kwh) for p in points] == [
        (parse_iso_ns("2024-03-05T00:00:00Z"), 210.5),
        (parse_iso_ns("2024-03-05T01:00:00Z"), 198.0),
        (parse_iso_ns("2024-03-05T02:00:00Z"), 187.25),
        (parse_iso_ns("2024-03-05T03:00:00Z"), 240.0),
    ]
    assert {(p.provider, p.kind) for p in points} == {("csv", ACTUAL)}
    window = CsvFile("site-a", FIXTURES / "own_series.csv").fetch(
        parse_iso_ns("2024-03-05T01:00:00Z"), parse_iso_ns("2024-03-05T03:00:00Z"))
    assert [p.g_per_kwh for p in window] == [198.0, 187.25]


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,g_per_kwh\n2024-03-05T00:00Z,100\nyesterday,120\n")
    with pytest.raises(CarbonProviderError, match="line 3"):
        CsvFile("Z", bad).read()
    bad.write_text("time,value\n2024-03-05T00:00Z,100\n")
    with pytest.raises(CarbonProviderError, match="header"):
        CsvFile("Z", bad).read()
    with pytest.raises(CarbonProviderError, match="csv_path"):
        CsvFile("Z", tmp_path / "missing.csv").read()


# -- configuration and secrets -----------------------------------------------------------------


def test_make_provider_from_config_and_env(fake: FakeCarbonAPIs, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[carbon]\nprovider = "electricitymaps"\nzone = "DE"\napi_url = "{fake.url}"\n')
    cfg = config_mod.load(path, environ={"WATTLEDGER_CARBON_TOKEN": EM_TOKEN})
    p = make_provider(cfg.carbon, clock=lambda: NOW)
    assert p.name == "electricitymaps"
    assert len(p.fetch(NOW - DAY, NOW)) == 23
    for name in ("static", "ukci", "csv", "watttime"):
        cfg.carbon.provider = name
        cfg.carbon.zone = "GB" if name in ("ukci", "static") else "CAISO_NORTH"
        cfg.carbon.csv_path = str(FIXTURES / "own_series.csv")
        cfg.carbon.username, cfg.carbon.password = "alice", WT_PASSWORD
        assert make_provider(cfg.carbon).name == name
    cfg.carbon.provider = "nope"
    with pytest.raises(CarbonProviderError, match="provider must be one of"):
        make_provider(cfg.carbon)


def test_secrets_never_reach_logs_or_errors(
    fake: FakeCarbonAPIs, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """Even a server that echoes the credentials back must not get them into our logs."""
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    fake.queue("em_history", 503, {"message": f"upstream failed for token {EM_TOKEN}"})
    fake.queue("em_history", 429, {"message": f"quota for {EM_TOKEN}"}, headers={"Retry-After": "1"})
    em(fake, sleeps).fetch(NOW - DAY, NOW)
    fake.queue("em_latest", 401, {"message": f"Invalid authentication token {EM_TOKEN}"})
    fake.queue("em_history", 401, {"message": f"Invalid authentication token {EM_TOKEN}"})
    try:
        em(fake, sleeps).fetch(NOW - DAY, NOW)
    except CarbonProviderError as e:
        errors.append(str(e))
    window = (parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T01:00:00Z"))
    fake.queue("wt_historical", 500, {"error": f"bearer {fake.wt_token} rejected"})
    wt(fake, sleeps).fetch(*window)
    fake.queue("wt_login", 401, {"error": f"bad password {WT_PASSWORD}"})
    try:
        wt(fake, sleeps).fetch(*window)
    except CarbonProviderError as e:
        errors.append(str(e))
    assert len(errors) == 2
    text = caplog.text + "\n".join(errors) + json.dumps([r.getMessage() for r in caplog.records])
    assert "***" in text  # the echoes were there, and scrubbed
    for secret in (EM_TOKEN, WT_PASSWORD, fake.wt_token):
        assert secret not in text


def test_wt_api_warnings_are_logged_once(fake: FakeCarbonAPIs, sleeps: list[float],
                                         caplog: pytest.LogCaptureFixture) -> None:
    body = fixture("watttime_historical.json")
    body["meta"]["warnings"] = [{"type": "EXAMPLE_WARNING", "message": "This is just an example"}]
    fake.queue("wt_historical", 200, body, times=2)
    p = wt(fake, sleeps)
    window = (parse_iso_ns("2024-03-05T00:00:00Z"), parse_iso_ns("2024-03-05T01:00:00Z"))
    caplog.set_level(logging.WARNING)
    p.fetch(*window)
    p.fetch(*window)
    assert caplog.text.count("This is just an example") == 1

"""carbon sync into the ledger: intensity-stamped points, backfill replacing forecasts, the periodic syncer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_carbon_apis import FakeCarbonAPIs, fixture
from wattledger.carbon.base import KIND_RANK
from wattledger.carbon import CarbonProviderError, fallback_intensity, intensity_now
from wattledger.carbon.static import TABLE, StaticProvider, UnknownZone, lookup
from wattledger.carbon.sync import PeriodicSync, sync
from wattledger.util.timeutil import HOUR_NS, NS_PER_S, BadTime, parse_iso_ns, parse_when
from wattledger.carbon.ukci import UkCarbonIntensity
from wattledger.config import Config
from wattledger.store.ledger import Ledger
from wattledger.model.points import WL_CARBON

T0 = parse_iso_ns("2024-03-05T00:00:00Z")
NOW = parse_iso_ns("2024-03-05T06:00:00Z")


@pytest.fixture
def fake() -> Iterator[FakeCarbonAPIs]:
    with FakeCarbonAPIs() as f:
        yield f


def ukci_cfg(fake: FakeCarbonAPIs, **carbon: object) -> Config:
    cfg = Config()
    cfg.carbon.provider = "ukci"
    cfg.carbon.zone = "GB"
    cfg.carbon.api_url = fake.url
    for k, v in carbon.items():
        setattr(cfg.carbon, k, v)
    return cfg


def forecast_only() -> dict:
    body = fixture("ukci_intensity_range.json")
    for e in body["data"]:
        e["intensity"]["actual"] = None
    return body


def test_sync_writes_points_at_the_intensity_time_and_backfill_replaces_forecasts(
    fake: FakeCarbonAPIs, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3", spool=True)
    cfg = ukci_cfg(fake)
    fake.queue("ukci_range", 200, forecast_only())
    first = sync(cfg, ledger, since_ns=T0, until_ns=NOW, now_ns=NOW)
    assert (first.written, first.kinds, first.first_ns) == (12, ("forecast",), T0)
    rows = ledger.rows(WL_CARBON)
    assert [r["time_ns"] for r in rows] == [T0 + i * 1800 * NS_PER_S for i in range(12)]
    assert {r["kind"] for r in rows} == {"forecast"}

    second = sync(cfg, ledger, since_ns=T0, until_ns=NOW, now_ns=NOW)  # actuals have arrived
    assert second.kinds == ("actual", "forecast")
    all_rows = ledger.rows(WL_CARBON)
    # As in InfluxDB, kind is part of the point's identity: the forecasts stay, each
    # re-synced forecast replaced its own older value, and readers prefer the actual.
    assert len([r for r in all_rows if r["kind"] == "forecast"]) == 12
    best: dict[int, dict] = {}
    for r in all_rows:
        if r["time_ns"] not in best or KIND_RANK[r["kind"]] < KIND_RANK[best[r["time_ns"]]["kind"]]:
            best[r["time_ns"]] = r
    rows = [best[t] for t in sorted(best)]
    assert len(rows) == 12
    data = fixture("ukci_intensity_range.json")["data"]
    for r, e in zip(rows, data):
        actual = e["intensity"]["actual"]
        assert (r["kind"], r["g_per_kwh"]) == (("actual", actual) if actual is not None
                                               else ("forecast", e["intensity"]["forecast"]))
        assert (r["zone"], r["provider"]) == ("GB", "ukci")
    # Everything was spooled for the remote sink, with the intensity's own timestamps.
    pending = ledger.pending()
    assert len(pending.points) == 24
    assert {p.time_ns for p in pending.points} == {r["time_ns"] for r in rows}
    assert all(p.to_line().startswith("wl_carbon,kind=") for p in pending.points)


def test_other_providers_and_zones_are_kept_apart(fake: FakeCarbonAPIs, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    sync(ukci_cfg(fake), ledger, since_ns=T0, until_ns=NOW, now_ns=NOW)
    sync(ukci_cfg(fake, zone="GB-13"), ledger, since_ns=T0, until_ns=NOW, now_ns=NOW)
    rows = ledger.rows(WL_CARBON)
    assert len(rows) == 24
    assert {r["zone"] for r in rows} == {"GB", "GB-13"}


def test_unattended_sync_rereads_the_last_day_before_its_cursor(fake: FakeCarbonAPIs, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    cfg = ukci_cfg(fake)
    first = sync(cfg, ledger, now_ns=NOW)
    assert first.since_ns == NOW - 24 * HOUR_NS and first.until_ns == NOW
    later = NOW + 2 * HOUR_NS
    second = sync(cfg, ledger, now_ns=later)
    assert second.since_ns == NOW - 24 * HOUR_NS  # 24 h before where the first stopped
    assert second.until_ns == later


def test_static_provider_has_nothing_to_store(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    result = sync(Config(), ledger, now_ns=NOW)
    assert result.written == 0 and "static" in result.skipped
    assert ledger.rows(WL_CARBON) == []


def test_periodic_sync_runs_on_its_interval_and_logs_each_failure_once(
    fake: FakeCarbonAPIs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    cfg = ukci_cfg(fake, sync_interval_s=600.0)
    provider = UkCarbonIntensity("GB", api_url=fake.url, sleep=lambda s: None)
    ps = PeriodicSync(cfg, ledger, provider=provider)
    assert ps.enabled
    assert ps.maybe_sync(NOW) is not None
    assert ps.maybe_sync(NOW + 10 * NS_PER_S) is None  # not due
    n = len(fake.requests)
    caplog.set_level(logging.WARNING)
    fake.queue("ukci_range", 503, "down", times=6)
    assert ps.maybe_sync(NOW + 601 * NS_PER_S) is None
    assert ps.maybe_sync(NOW + 1202 * NS_PER_S) is None
    assert len(fake.requests) == n + 6
    failures = [r for r in caplog.records if "carbon sync failed" in r.getMessage()]
    assert len(failures) == 1  # the same problem is logged once
    fake.queue("ukci_range", 429, "quota", headers={"Retry-After": "3600"})
    assert ps.maybe_sync(NOW + 1803 * NS_PER_S) is None
    assert ps.next_ns == NOW + 1803 * NS_PER_S + 3600 * NS_PER_S  # Retry-After beats the interval
    assert ps.maybe_sync(NOW + 2500 * NS_PER_S) is None and len(fake.seen("ukci_range")) == n + 7
    assert ps.maybe_sync(ps.next_ns) is not None


def test_periodic_sync_off_by_default_and_for_static(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    assert not PeriodicSync(Config(), ledger).enabled
    cfg = Config()
    cfg.carbon.sync_interval_s = 60
    assert not PeriodicSync(cfg, ledger).enabled  # static: nothing to sync
    cfg.carbon.provider = "electricitymaps"  # but no token
    caplog.set_level(logging.ERROR)
    assert not PeriodicSync(cfg, ledger).enabled
    assert "WATTLEDGER_CARBON_TOKEN" in caplog.text


# -- the static table and the single figure for `run` -----------------------------------------


def test_static_table_has_the_seed_figures_and_a_world_average() -> None:
    assert (lookup("CA-QC").g_per_kwh, lookup("CA-QC").year) == (20.0, 2019)
    assert (lookup("us-ia").g_per_kwh, lookup("US-IA").year) == (736.6, 2019)
    assert lookup("WORLD").g_per_kwh == pytest.approx(480, abs=5)
    for z in ("US", "CN", "IN", "DE", "FR", "GB", "JP"):
        s = TABLE[z]
        assert 10 < s.g_per_kwh < 1000 and s.year >= 2019 and s.source
    assert TABLE["FR"].g_per_kwh < TABLE["DE"].g_per_kwh < TABLE["IN"].g_per_kwh


def test_sub_zones_fall_back_to_their_country_and_say_so() -> None:
    s = lookup("US-CAL-CISO")
    assert s.zone == "US" and s.asked_zone == "US-CAL-CISO"
    assert "for US-CAL-CISO" in s.describe()
    with pytest.raises(UnknownZone, match="g_per_kwh"):
        lookup("CAISO_NORTH")


def test_intensity_now_for_run() -> None:
    cfg = Config()
    cfg.carbon.zone = "US-IA"
    g, why = intensity_now(cfg.carbon)
    assert g == 736.6 and "Lacoste" in why and "2019" in why
    cfg.carbon.g_per_kwh = 123.0
    assert intensity_now(cfg.carbon) == (123.0, "configured [carbon] g_per_kwh for US-IA")
    cfg.carbon.g_per_kwh = None
    cfg.carbon.zone = "CAISO_NORTH"
    with pytest.raises(UnknownZone):
        intensity_now(cfg.carbon)
    assert fallback_intensity(cfg.carbon, "fr").g_per_kwh == 56.0


def test_static_provider_series() -> None:
    pts = StaticProvider("DE").fetch(T0 + 1, T0 + 3 * HOUR_NS)
    assert [p.time_ns for p in pts] == [T0 + HOUR_NS, T0 + 2 * HOUR_NS]
    assert {p.g_per_kwh for p in pts} == {381.0}


def test_when_forms() -> None:
    now = parse_iso_ns("2024-03-05T12:00:00Z")
    assert parse_when("2h", now) == now - 2 * HOUR_NS
    assert parse_when("30m", now) == now - 1800 * NS_PER_S
    assert parse_when("7d", now) == now - 7 * 24 * HOUR_NS
    assert parse_when("1w", now) == now - 7 * 24 * HOUR_NS
    assert parse_when("now", now) == now
    assert parse_when("2024-03-05", now) == parse_iso_ns("2024-03-05T00:00:00Z")
    assert parse_when("2024-03-05T13:00+01:00", now) == now
    assert parse_when("2024-03-05T12:00:00.000Z", now) == now
    with pytest.raises(BadTime, match="30m"):
        parse_when("yesterday", now)


def test_provider_errors_carry_status() -> None:
    e = CarbonProviderError("x", status=429, retry_after_s=3.0)
    assert (e.status, e.retry_after_s) == (429, 3.0)


def test_agent_loop_syncs_in_the_background(fake: FakeCarbonAPIs, tmp_path: Path) -> None:
    from tests.clocks import FakeClock
    from wattledger.agent.factory import build_agent
    from wattledger.agent.loop import TickResult

    ledger = Ledger(tmp_path / "l.sqlite3")
    cfg = ukci_cfg(fake, sync_interval_s=300.0)
    agent = build_agent(cfg, ledger, energy=[], clock=FakeClock(lambda: NOW))
    assert agent.carbon_sync is not None and agent.carbon_sync.background
    agent.commit(TickResult([]))
    agent.carbon_sync.join(10)
    assert len(ledger.rows(WL_CARBON)) == 12  # NOW - 24 h .. NOW: the recorded half hours
    agent.commit(TickResult([]))  # not due again: no new request
    agent.carbon_sync.join(10)
    assert len(fake.seen("ukci_range")) == 1
    assert build_agent(Config(), ledger, energy=[]).carbon_sync is None  # off by default


def test_docs_table_matches_the_static_table() -> None:
    import re

    text = (Path(__file__).parent.parent / "docs" / "carbon.md").read_text()
    section = text[text.index("### Static table"):text.index("## Configuration")]
    documented = {z: float(g) for z, g in re.findall(r"\| ([A-Z]{2,5}(?:-[A-Z]{2})?) \| ([\d.]+) ", section)}
    assert documented == {z: s.g_per_kwh for z, s in TABLE.items()}

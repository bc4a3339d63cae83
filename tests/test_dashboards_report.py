"""The CO2e a job's dashboard shows equals `wattledger report`'s for the same job, range and settings.

Both apply the same rule: per UTC hour, facility kWh (IT x PUE) x the zone's
intensity (mean of the hour's wl_carbon points, else the static figure), summed.
The dashboard side runs the job page's CO2e panel as Grafana would (queries on
a real InfluxDB, transformations in @grafana/data); the report side reads the
SQLite ledger holding the same points, and InfluxDB. Data and hand-worked
figures: tests/test_dashboards_queries.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.test_dashboards_queries import (  # noqa: F401  (influx_url is a fixture)
    ALICE_CO2E_TOTAL,
    DB,
    POINTS,
    RANGE,
    influx_url,
    run_panel,
)
from wattledger.grafana import dashboards as dash
from wattledger.config import Config
from wattledger.store.ledger import Ledger
from wattledger.report import InfluxQL, Options, from_influx, from_ledger

pytestmark = pytest.mark.influx


def report_config() -> Config:
    cfg = Config()
    cfg.carbon.zone = "DE"
    cfg.carbon.provider = "electricitymaps"  # the provider the dashboard's variable selects
    return cfg


def dashboard_co2e(url: str, user: str) -> float:
    dashboard = dash.job()
    panel = next(p for p in dash.panels(dashboard) if p["title"] == "CO2e")
    return run_panel(url, dashboard, panel, {"user": [user], "host": "$__all"}).reduced(dash.CO2E, "sum")


def test_job_co2e_equals_report_from_ledger(influx_url: str, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.append(POINTS)
    since, until = RANGE.from_ms * 1_000_000, RANGE.to_ms * 1_000_000
    report = from_ledger(ledger, report_config(), since, until, Options(by="job"))
    ledger.close()
    row = next(r for r in report.rows if r.key == ("train-a", "alice"))
    shown = dashboard_co2e(influx_url, "alice")
    assert math.isclose(shown, row.g_co2e, rel_tol=1e-3), (shown, row.g_co2e)
    assert math.isclose(row.g_co2e, ALICE_CO2E_TOTAL, rel_tol=1e-9)  # both equal the hand-worked figure
    assert row.fallback_kwh == pytest.approx(180_000 / 3.6e6)  # hour 3 used the static figure, flagged


def test_job_co2e_equals_report_from_influx(influx_url: str) -> None:
    since, until = RANGE.from_ms * 1_000_000, RANGE.to_ms * 1_000_000
    report = from_influx(InfluxQL(influx_url, DB), report_config(), since, until, Options(by="job"))
    for user in ("alice", "bob"):
        row = next(r for r in report.rows if r.key == ("train-a", user))
        shown = dashboard_co2e(influx_url, user)
        assert math.isclose(shown, row.g_co2e, rel_tol=1e-3), (user, shown, row.g_co2e)


def dashboard_embodied(url: str, user: str) -> tuple[float, float]:
    """(Embodied carbon, Total CO2e) the job page shows for train-a and one user."""
    dashboard = dash.job()
    panels = {p["title"]: p for p in dash.panels(dashboard)}
    chosen = {"user": [user], "host": "$__all"}
    embodied = run_panel(url, dashboard, panels["Embodied carbon"], chosen).rows()[0][dash.EMBODIED_G]
    total = run_panel(url, dashboard, panels["Total CO2e"], chosen).reduced(dash.TOTAL_CO2E, "sum")
    return float(embodied), total


@pytest.mark.parametrize("source", ["ledger", "influx"])
def test_job_embodied_and_total_equal_report(influx_url: str, tmp_path: Path, source: str) -> None:
    """The embodied and total panels against the real influxd equal `report` within 0.1% (issue 16)."""
    since, until = RANGE.from_ms * 1_000_000, RANGE.to_ms * 1_000_000
    if source == "ledger":
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        ledger.append(POINTS)
        report = from_ledger(ledger, report_config(), since, until, Options(by="job"))
        ledger.close()
    else:
        report = from_influx(InfluxQL(influx_url, DB), report_config(), since, until, Options(by="job"))
    for user, embodied_g in (("alice", 21 * 2.0 + 12 * 3.0), ("bob", 21 * 0.2)):
        row = next(r for r in report.rows if r.key == ("train-a", user))
        assert math.isclose(row.embodied_g, embodied_g, rel_tol=1e-9)  # the hand-worked figure
        shown_embodied, shown_total = dashboard_embodied(influx_url, user)
        assert math.isclose(shown_embodied, row.embodied_g, rel_tol=1e-3), (user, shown_embodied, row.embodied_g)
        assert math.isclose(shown_total, row.total_g, rel_tol=1e-3), (user, shown_total, row.total_g)
        assert row.total_g > row.g_co2e

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
from typing import Any

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
from wattledger.report.model import Report

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


# Every embodied panel of every dashboard, as test_dashboards_queries.test_panel_numbers selects it, and the
# report of the same selection: the overview looks at host gpu1, the job page at train-a (all users and
# hosts), the ledger page at everything.
SELECTIONS: dict[str, tuple[dict[str, Any], Options]] = {
    "wattledger-overview": ({}, Options(by="job", host="gpu1")),
    "wattledger-job": ({"host": "$__all"}, Options(by="job", job="train-a")),
    "wattledger-ledger": ({"host": "$__all"}, Options(by="job")),
}
EMBODIED_PANELS = [(d["uid"], p["title"]) for d in dash.all_dashboards().values() for p in dash.panels(d)
                   if "mbodied" in p["title"] or p["title"] == "Total CO2e"]


def shown(run: Any, title: str) -> dict[str, float]:
    """What an embodied panel shows: one figure, or one per job, or one per hour (GPUs + the host's parts)."""
    if title == "Embodied carbon":
        return {"": float(run.rows()[0][dash.EMBODIED_G])}
    if title == "Total CO2e":
        return {"": run.reduced(dash.TOTAL_CO2E, "sum")}
    if title == "Embodied carbon by job":
        return {r["job"]: float(r[dash.EMBODIED_G]) for r in run.rows()}
    assert title == "Embodied carbon per bucket", title
    per_hour: dict[str, float] = {}  # the buckets (the range's resolution) summed per hour, as report has them

    def add(time_ms: object, grams: float) -> None:
        hour = str(int(str(time_ms)) // 3_600_000 * 3_600_000)
        per_hour[hour] = per_hour.get(hour, 0.0) + grams

    for r in run.rows("A"):
        add(r["time"], float(r["gpu"]))
    for r in run.rows("B"):
        add(r["time"], sum(float(r[p]) for p in ("cpu", "dram", "storage", "chassis")))
    return per_hour


def reported(report: Report, title: str) -> dict[str, float]:
    """The same figures from `wattledger report`: its TOTAL row, its rows by job, its rows per hour."""
    out: dict[str, float] = {}
    if title == "Embodied carbon":
        return {"": report.total.embodied_g}
    if title == "Total CO2e":
        return {"": report.total.total_g}
    if title == "Embodied carbon by job":
        for row in report.rows:
            out[row.key[0]] = out.get(row.key[0], 0.0) + row.embodied_g
        return {job: g for job, g in out.items() if g > 0}
    for hours in report.series.values():
        for bucket_ns, row in hours.items():
            out[str(bucket_ns // 1_000_000)] = out.get(str(bucket_ns // 1_000_000), 0.0) + row.embodied_g
    return out


@pytest.mark.parametrize("source", ["ledger", "influx"])
def test_every_embodied_panel_equals_report(influx_url: str, tmp_path: Path, source: str) -> None:
    """Each dashboard's embodied panels (overview, job, ledger pages) on the real influxd show what `report`
    prints for the same selection, within 0.1% (issue 16)."""
    since, until = RANGE.from_ms * 1_000_000, RANGE.to_ms * 1_000_000
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.append(POINTS)
    dashboards = {d["uid"]: d for d in dash.all_dashboards().values()}
    for uid, title in EMBODIED_PANELS:
        selection, opts = SELECTIONS[uid]
        hourly = title == "Embodied carbon per bucket"  # the report's per-hour series, as `report --plot` reads it
        report = (from_ledger(ledger, report_config(), since, until, opts, hourly=hourly) if source == "ledger" else
                  from_influx(InfluxQL(influx_url, DB), report_config(), since, until, opts))
        panel = next(p for p in dash.panels(dashboards[uid]) if p["title"] == title)
        got, want = shown(run_panel(influx_url, dashboards[uid], panel, selection), title), reported(report, title)
        assert set(got) >= set(want) and want, (uid, title, got, want)
        for key, grams in got.items():
            assert math.isclose(grams, want.get(key, 0.0), rel_tol=1e-3, abs_tol=1e-9), (uid, title, key, got, want)
    ledger.close()
    assert sorted(EMBODIED_PANELS) == [
        ("wattledger-job", "Embodied carbon"), ("wattledger-job", "Embodied carbon per bucket"),
        ("wattledger-job", "Total CO2e"), ("wattledger-ledger", "Embodied carbon"),
        ("wattledger-ledger", "Embodied carbon per bucket"), ("wattledger-ledger", "Total CO2e"),
        ("wattledger-overview", "Embodied carbon"), ("wattledger-overview", "Embodied carbon by job")]

"""The report from a real InfluxDB (influxd 1.x, InfluxQL) equals the report from the ledger."""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.influx_server import InfluxServer
from tests.test_report import (
    H0,
    H3,
    HOUR_NS,
    KWH,
    MIN,
    carbon_points_backfill,
    carbon_points_first,
    energy_points,
    job,
    lifecycle_ledger,
    lifecycle_points,
    make_cfg,
    make_ledger,
)
from wattledger import report as rp
from wattledger.model.points import WL_PUE, Point, to_lines

pytestmark = pytest.mark.influx


def write(server: InfluxServer, db: str, points: Sequence[Point]) -> None:
    body = "\n".join(to_lines(points)).encode()
    req = urllib.request.Request(f"{server.url}/write?db={db}&precision=ns", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def same(a: rp.Report, b: rp.Report) -> None:
    assert [r.key for r in a.rows] == [r.key for r in b.rows]
    for x, y in zip([*a.rows, a.total], [*b.rows, b.total]):
        assert x.it_j == pytest.approx(y.it_j, rel=1e-12)
        assert x.facility_kwh == pytest.approx(y.facility_kwh, rel=1e-12)
        assert x.g_co2e == pytest.approx(y.g_co2e, rel=1e-12)
        assert x.fallback_it_j == pytest.approx(y.fallback_it_j, rel=1e-12)
        assert x.estimated_it_j == pytest.approx(y.estimated_it_j, rel=1e-12)
    assert a.categories == pytest.approx(b.categories, rel=1e-12)
    assert (a.hours, a.fallback_hours, a.pue) == (b.hours, b.fallback_hours, b.pue)
    da, db_ = a.to_dict(), b.to_dict()
    assert [r["intensity_source"] for r in da["rows"]] == [r["intensity_source"] for r in db_["rows"]]
    assert da["intensity"] == db_["intensity"] and da["notes"] == db_["notes"]


@pytest.fixture
def db(influxd: InfluxServer, request: pytest.FixtureRequest) -> str:
    name = "wl_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    influxd.create_db(name)
    return name


def test_influx_report_equals_ledger_report(influxd: InfluxServer, db: str, tmp_path: Path) -> None:
    pue = [Point(WL_PUE, {"site": "dc1"}, {"pue": 1.3}, H0 + HOUR_NS)]
    ledger = make_ledger(tmp_path, pue)
    # InfluxDB gets the same points the spool would deliver: the forecast and, later, the actual that
    # replaced it (a different kind tag, so InfluxDB keeps both; readers must prefer the actual).
    write(influxd, db, energy_points())
    write(influxd, db, carbon_points_first())
    write(influxd, db, carbon_points_backfill())
    write(influxd, db, pue)
    kinds = influxd.series_values('SELECT g_per_kwh, kind FROM wl_carbon WHERE zone = \'DE\' '
                                  'AND provider = \'electricitymaps\'', db)
    assert sorted(r["kind"] for r in kinds if r["time"] == H0 + HOUR_NS) == ["actual", "forecast"]

    cfg = make_cfg()
    cfg.pue.site = "dc1"
    client = rp.InfluxQL(influxd.url, db)
    for by in ("job", "user", "project", "phase"):
        opts = rp.Options(by=by)
        from_ledger = rp.from_ledger(ledger, cfg, H0, H3, opts)
        from_influx = rp.from_influx(client, cfg, H0, H3, opts)
        same(from_influx, from_ledger)
    r = rp.from_influx(client, cfg, H0, H3)
    # Hand-computed with PUE 1.3 in H1: alice 225 + 2*1.3*300 + 571.5, bob 1.3*300, rest as before.
    assert r.total.g_co2e == pytest.approx(225 + 780 + 571.5 + 390 + 285.75 + 57.15 + 5.715)
    assert r.origin.startswith("InfluxDB http://127.0.0.1:")
    # A window that does not start on the hour, and a host filter, agree too.
    same(rp.from_influx(client, cfg, H0 + 30 * MIN, H3, rp.Options(host="gpu01")),
         rp.from_ledger(ledger, cfg, H0 + 30 * MIN, H3, rp.Options(host="gpu01")))


def test_influx_lifecycle_over_all_history_and_many_weeks(influxd: InfluxServer, db: str, tmp_path: Path) -> None:
    ledger = lifecycle_ledger(tmp_path)
    late = [job(H0 + 20 * 24 * HOUR_NS, "serve-2", 0.25 * KWH, user="carol", project="gpt-mini", phase="inference")]
    ledger.append(late)
    write(influxd, db, [*energy_points(), *carbon_points_first(), *carbon_points_backfill(), *late,
                        *lifecycle_points()])
    cfg = make_cfg()
    opts = rp.Options(by="phase", project="gpt-mini")
    until = H0 + 30 * 24 * HOUR_NS
    a = rp.from_influx(rp.InfluxQL(influxd.url, db), cfg, 0, until, opts)
    b = rp.from_ledger(ledger, cfg, 0, until, opts)
    same(a, b)
    lc = rp.lifecycle(a, "gpt-mini", 2000, 10_000)
    assert lc.inference is not None and lc.inference.it_kwh == pytest.approx(0.75)


def test_influx_errors_are_explained(influxd: InfluxServer) -> None:
    with pytest.raises(rp.ReportError, match="url and database"):
        rp.InfluxQL("", "")
    with pytest.raises(rp.ReportError, match="database not found|query failed"):
        rp.from_influx(rp.InfluxQL(influxd.url, "no_such_db"), make_cfg(), H0, H3)
    from tests.influx_server import free_port

    with pytest.raises(rp.ReportError, match="cannot reach InfluxDB"):
        rp.from_influx(rp.InfluxQL(f"http://127.0.0.1:{free_port()}", "x"), make_cfg(), H0, H3)


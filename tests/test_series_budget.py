"""Issue 15: the series a fleet makes, measured on the real influxd (a small version of benchmarks/fleet_year.py).

Two hosts, 40 days of the default job churn through the real store path (ledger, compactor, exporter,
deliverer, tiered sink), one tick a day: the tiers keep the tags docs/fleet.md says, the server refuses
nothing, and the series it counts stay within the budget formula (the 100-host year is the benchmark's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks.fleet_year import simulate
from tests.influx_server import InfluxServer
from wattledger.config import Config

pytestmark = [pytest.mark.influx, pytest.mark.slow]


def test_a_small_fleet_stays_within_the_series_budget(influxd: InfluxServer, tmp_path: Path) -> None:
    defaults = Config().influx
    args = argparse.Namespace(hosts=2, days=40, jobs_per_year=10_000, raw_days=defaults.raw_days,
                              minutes_days=defaults.minutes_days, verbose=False, settle_days=7)
    r = simulate(influxd, tmp_path, args, db="series_budget")
    assert r["refused"] == 0 and r["delivered"] > 0
    f = r["formula"]
    by_rp = r["series_by_rp"]
    assert r["series_index"] <= f["total"]
    assert by_rp["minutes"] <= f["minutes"] and by_rp["hours"] <= f["hours"] * 1.1
    assert by_rp["minutes"] > 0.6 * f["minutes"]  # the formula is an estimate, not a loose bound
    assert r["job_values"] <= f["job_values"] * 1.1

    def tags(q: str) -> list[dict[str, str]]:
        answer = influxd.query(q, "series_budget")["results"][0]
        return [s.get("tags") or {} for s in answer.get("series", []) or []]

    hourly = tags('SELECT count("energy_j") FROM "hours"."wl_job" GROUP BY *')
    assert hourly and all(t.get("job", "").startswith("_") or not t.get("job") for t in hourly)
    assert all(not t.get("device") for t in hourly + tags('SELECT count("energy_j") FROM "minutes"."wl_job" '
                                                            'GROUP BY *'))
    assert any(t.get("device") for t in tags('SELECT count("energy_j") FROM "raw"."wl_job" GROUP BY *'))
    json.dumps(r)  # the benchmark's JSON

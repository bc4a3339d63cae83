"""``report --per-host``: a row keeps its total and lists each host's part (table, CSV, JSON); the CLI flag."""

from __future__ import annotations

import csv
import io
import json

from wattledger import report as rp
from wattledger.carbon.pue import PueSeries
from wattledger.carbon.static import StaticIntensity
from wattledger.report.model import EnergyCell, IntensitySeries, build
from wattledger.report.render import render

H = 3600 * 10**9


def two_host_report() -> rp.Report:
    cells = [EnergyCell(0, "slurm-7", "alice", "p", "train", "node-a", "rapl", 3.6e6, "cpu"),
             EnergyCell(0, "slurm-7", "alice", "p", "train", "node-b", "rapl", 7.2e6, "cpu"),
             EnergyCell(H, "slurm-7", "alice", "p", "train", "node-b", "nvml", 3.6e6, "gpu"),
             EnergyCell(0, "solo", "bob", "", "", "node-a", "rapl", 1.8e6, "cpu")]
    ci = IntensitySeries("DE", {0: (100.0, "x"), H: (200.0, "x")}, lambda: StaticIntensity("DE", 300.0, 2023, "t"))
    r = build(cells, ci, PueSeries({}, 1.5, "test"), by="job", since_ns=0, until_ns=2 * H, origin="test",
              per_host=True)
    return r


def test_a_job_on_two_hosts_is_one_row_with_its_hosts_under_it() -> None:
    r = two_host_report()
    (job,) = [row for row in r.rows if row.key == ("slurm-7", "alice")]
    assert job.it_kwh == 4.0 and {h: x.it_kwh for h, x in job.hosts.items()} == {"node-a": 1.0, "node-b": 3.0}
    assert job.hosts["node-b"].g_co2e == 2.0 * 1.5 * 100 + 1.0 * 1.5 * 200
    table = render(r, "table").splitlines()
    at = next(i for i, line in enumerate(table) if line.startswith("slurm-7"))
    assert table[at + 1].startswith("  host node-a") and table[at + 2].startswith("  host node-b")
    rows = list(csv.DictReader(io.StringIO(render(r, "csv"))))
    assert [(x["job"], x["host"], float(x["it_kwh"])) for x in rows] == [
        ("slurm-7", "", 4.0), ("slurm-7", "node-a", 1.0), ("slurm-7", "node-b", 3.0), ("solo", "", 0.5),
        ("solo", "node-a", 0.5)]
    doc = json.loads(render(r, "json"))
    assert doc["rows"][0]["hosts"]["node-b"]["it_kwh"] == 3.0


def test_without_the_flag_nothing_changes() -> None:
    r = two_host_report()
    r.per_host = False
    assert "host node-a" not in render(r, "table") and "hosts" not in json.loads(render(r, "json"))["rows"][0]
    assert "host" not in next(csv.reader(io.StringIO(render(r, "csv"))))

"""A researcher's own view: `report --job TAG` on a ledger of 30 jobs, units, CSV without float noise,
unused capacity in every report, and `wattledger run` records in reports with their source marked."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from wattledger.cli.main import main
from wattledger.model.points import WL_JOB, WL_NODE, Point
from wattledger.store.ledger import Ledger
from wattledger.store.runs import append_run
from wattledger.util.energyfmt import energy_text, pick_unit, plain
from wattledger.util.timeutil import iso

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
TICK_S = 5.0
TICKS = 120  # 10 minutes
WINDOW = ["--since", "2023-11-14", "--until", "2023-11-16", "--zone", "FR", "--pue", "1.5"]


def _job(t: int, job: str, user: str, component: str, device: str, energy_j: float) -> Point:
    return Point(WL_JOB, {"host": "gpu01", "job": job, "user": user, "project": "", "phase": "",
                          "component": component, "device": device, "source": "rapl" if component != "gpu" else "nvml"},
                 {"energy_j": energy_j, "dynamic_j": energy_j, "static_j": 0.0, "driver_s": 1.0}, t)


def _node(t: int, component: str, device: str, energy_j: float) -> Point:
    return Point(WL_NODE, {"host": "gpu01", "component": component, "device": device,
                           "source": "rapl" if component != "gpu" else "nvml"},
                 {"energy_j": energy_j, "power_w": energy_j / TICK_S, "interval_s": TICK_S}, t)


@pytest.fixture
def ledger_of_30_jobs(tmp_path: Path) -> Path:
    """30 jobs of 3 users, 10 minutes of 5 s ticks; job-07 (alice) ran ticks 20..79 on CPU and GPU-0."""
    ledger = Ledger.in_state_dir(tmp_path)
    points: list[Point] = []
    for i in range(TICKS):
        t = T0 + int((i + 1) * TICK_S * 1e9)
        cpu_jobs = {f"job-{k:02d}": 2.0 for k in range(30) if (i + k) % 3 == 0}
        if 20 <= i < 80:
            cpu_jobs["job-07"] = 10.0
            points.append(_job(t, "job-07", "alice", "gpu", "GPU-0", 300.0))
        for job, e in sorted(cpu_jobs.items()):
            points.append(_job(t, job, ["alice", "bob", "carol"][(int(job[4:]) + 2) % 3], "cpu", "package-0", e))
        idle_cpu = 100.0
        points.append(_job(t, "_idle", "", "cpu", "package-0", idle_cpu))
        points.append(_job(t, "_idle", "", "gpu", "GPU-0", 0.0 if 20 <= i < 80 else 250.0))
        points.append(_node(t, "cpu", "package-0", sum(cpu_jobs.values()) + idle_cpu))
        points.append(_node(t, "gpu", "GPU-0", 300.0 if 20 <= i < 80 else 250.0))
    ledger.append(points)
    ledger.close()
    return tmp_path


def report(state: Path, *args: str) -> str:
    r = CliRunner().invoke(main, ["report", "--config", "/dev/null", "--state-dir", str(state), "--no-runs",
                                  *WINDOW, *args])
    assert r.exit_code == 0, r.output
    return r.output


def test_report_job_prints_one_jobs_summary(ledger_of_30_jobs: Path) -> None:
    out = report(ledger_of_30_jobs, "--job", "job-07")
    assert "Job job-07, user alice" in out
    assert out.count("\nJob ") == 1  # one of the 30 jobs
    assert "job-08" not in out and "job-06" not in out
    energy_j = 60 * 10.0 + 60 * 300.0 + 2.0 * sum(1 for i in range(TICKS) if (i + 7) % 3 == 0 and not 20 <= i < 80)
    assert f"energy (IT)      {energy_text(energy_j)}" in out
    assert "gpu 5.000 Wh" in out  # 60 ticks x 300 J = 18 kJ
    assert f"facility energy  {energy_text(energy_j * 1.5)}" in out
    assert "GPU-hours held   0.08333" in out  # 60 ticks x 5 s on one GPU
    ticks = 60 + sum(1 for i in range(TICKS) if (i + 7) % 3 == 0 and not 20 <= i < 80)
    assert f"charged for {ticks * 5 / 60:.3g} min ({ticks} ticks)" in out
    assert "share of host" in out and "unused capacity" in out
    assert "CO2e" in out and "static" in out  # FR's static intensity, said where it came from


def test_report_job_json_has_the_summary_and_the_shares(ledger_of_30_jobs: Path) -> None:
    d = json.loads(report(ledger_of_30_jobs, "--job", "job-07", "--format", "json"))
    assert [(r["job"], r["user"]) for r in d["rows"]] == [("job-07", "alice")]
    (job,) = d["jobs"]
    in_run = range(20, 80)
    host_j = sum(2.0 * sum(1 for k in range(30) if (i + k) % 3 == 0 and k != 7) + 10.0 + 100.0 + 300.0
                 for i in in_run)
    others = [i for i in range(TICKS) if (i + 7) % 3 == 0 and i not in in_run]
    host_j += sum(2.0 * sum(1 for k in range(30) if (i + k) % 3 == 0) + 100.0 + 250.0 for i in others)
    assert job["host_energy_j"] == pytest.approx(host_j)
    assert job["host_share"] == pytest.approx(job["energy_j"] / host_j)
    unused_j = 100.0 * (60 + len(others)) + 250.0 * len(others)
    assert job["unused_capacity_share"] == pytest.approx(unused_j / host_j)
    assert job["gpu_hours_held"] == pytest.approx(60 * 5 / 3600)
    assert job["duration_s"] == pytest.approx((60 + len(others)) * 5)
    assert job["first"] == iso(T0 + int((min(others[0], 20)) * 5e9))


def test_units_follow_the_size_or_the_unit_option(ledger_of_30_jobs: Path) -> None:
    assert pick_unit(10.0) == "J" and pick_unit(3600.0) == "Wh" and pick_unit(3.6e6) == "kWh"
    out = report(ledger_of_30_jobs, "--job", "job-07", "--unit", "J")
    assert "gpu 18,000 J" in out
    table = report(ledger_of_30_jobs, "--unit", "Wh")
    header = next(line for line in table.splitlines() if line.startswith("job "))
    assert "IT Wh" in header and "IT kWh" not in header


def test_csv_numbers_carry_no_float_noise(ledger_of_30_jobs: Path) -> None:
    assert plain(480.00000000000006) == "480.0" and plain(0.1 + 0.2) == "0.3" and plain(4.0) == "4.0"
    for args in (("--format", "csv"), ("--format", "csv", "--job", "job-07")):
        rows = list(csv.reader(io.StringIO(report(ledger_of_30_jobs, *args))))
        for row in rows[1:]:
            for cell in row:
                try:
                    value = float(cell)
                except ValueError:
                    continue
                # 12 significant digits at most: no 0.30000000000000004 (whole numbers: counts, as ints)
                assert cell == plain(value) or cell == str(int(value)), cell


def test_every_report_shows_unused_capacity(ledger_of_30_jobs: Path) -> None:
    table = report(ledger_of_30_jobs)
    assert "Unused capacity (_idle):" in table
    assert any(line.startswith("_idle") and "(unused capacity)" in line for line in table.splitlines())
    d = json.loads(report(ledger_of_30_jobs, "--format", "json"))
    assert d["unused_capacity"]["kwh"] == pytest.approx(d["host_energy"]["idle"]["kwh"])


def _record(job: str, start_ns: int, energy_j: float, figures_from: str = "run") -> dict[str, object]:
    return {"job": job, "user": "alice", "project": "", "phase": "", "start_ns": start_ns,
            "end_ns": start_ns + 2_000_000_000, "duration_s": 2.0, "energy_j": energy_j,
            "energy_by_component_j": {"cpu": energy_j * 0.75, "dram": energy_j * 0.25},
            "source_by_component": {"cpu": "model", "dram": "model"}, "figures_from": figures_from,
            "machine": {"host": "laptop", "gpus": []}}


def test_run_records_appear_in_report_marked(ledger_of_30_jobs: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    append_run(runs, _record("probe", T0 + 10**9, 36.0))
    append_run(runs, _record("probe", T0 + 60 * 10**9, 36.0))
    append_run(runs, _record("from-service", T0, 99.0, figures_from="service ledger /var/lib/wattledger"))
    base = ["report", "--config", "/dev/null", "--state-dir", str(ledger_of_30_jobs), "--runs-file", str(runs), *WINDOW]
    out = CliRunner().invoke(main, base).output
    probe = next(line for line in out.splitlines() if line.startswith("probe"))
    assert probe.rstrip().endswith("ER")  # estimate, from run records
    assert "R = measured by `wattledger run`" in out and str(runs) in out
    assert "from-service" not in out  # already in the service's ledger: not counted twice
    d = json.loads(CliRunner().invoke(main, [*base, "--format", "json", "--job", "probe"]).output)
    assert d["rows"][0]["from_run_records_kwh"] == pytest.approx(72.0 / 3.6e6)
    assert d["jobs"][0]["duration_s"] == pytest.approx(4.0) and d["jobs"][0]["host_share"] is None
    text = CliRunner().invoke(main, [*base, "--job", "probe"]).output
    assert "R: 72.00 J of it from `wattledger run` records" in text and "share of host    not known" in text


def test_report_reads_run_records_alone_where_there_is_no_ledger(tmp_path: Path) -> None:
    runs = tmp_path / "runs.jsonl"
    append_run(runs, _record("laptop-run", T0, 18.0))
    r = CliRunner().invoke(main, ["report", "--config", "/dev/null", "--state-dir", str(tmp_path / "none"),
                                  "--runs-file", str(runs), *WINDOW, "--format", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["origin"] == f"runs file {runs}" and d["rows"][0]["job"] == "laptop-run"


@pytest.mark.influx
def test_the_job_summary_from_influxdb_equals_the_ledgers(ledger_of_30_jobs: Path, influxd: object) -> None:
    """The same points in a real influxd: `report --job --from-influx` gives the same summary."""
    from tests.influx_server import InfluxServer
    from tests.test_report_influx import write
    from wattledger.model.points import SCHEMA

    assert isinstance(influxd, InfluxServer)
    influxd.create_db("wl_job_view")
    ledger = Ledger.in_state_dir(ledger_of_30_jobs)
    points = [Point(m, {t: str(r[t] or "") for t in SCHEMA[m][0]},
                    {f: float(r[f]) for f in SCHEMA[m][1] if r[f] is not None}, int(r["time_ns"]))
              for m in (WL_JOB, WL_NODE) for r in ledger.rows(m)]
    ledger.close()
    write(influxd, "wl_job_view", points)
    from_ledger = json.loads(report(ledger_of_30_jobs, "--job", "job-07", "--format", "json"))["jobs"]
    r = CliRunner().invoke(main, ["report", "--config", "/dev/null", "--no-runs", *WINDOW, "--job", "job-07",
                                  "--format", "json", "--from-influx", "--influx-url", influxd.url,
                                  "--influx-database", "wl_job_view"])
    assert r.exit_code == 0, r.output
    from_influx = json.loads(r.output)["jobs"]
    assert len(from_influx) == len(from_ledger) == 1
    for key, value in from_ledger[0].items():
        if isinstance(value, float):
            assert from_influx[0][key] == pytest.approx(value, rel=1e-9), key
        elif key != "intensity_source":
            assert from_influx[0][key] == value, key

"""`wattledger run` on a machine without RAPL: non-zero energy, flagged as a model estimate; its share of the
hardware's embodied carbon beside the operational CO2e, in its output and its record."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from wattledger.agent.runner import Measured
from wattledger.model.points import Point

BUSY_3S = "import time\nt = time.time()\nwhile time.time() - t < 3: pass\n"
# The same loop, writing the CPU time it got (on a loaded machine it may get less than 3 s).
BUSY_3S_REPORTING = BUSY_3S + "import os, sys\nt = os.times()\nopen(sys.argv[1], 'w').write(str(t.user + t.system))\n"


def wl(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattledger.cli.main", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_run_demo_reports_model_estimate(tmp_path: Path) -> None:
    cpu_file = tmp_path / "cpu_s"
    r = wl("run", "-t", "demo", "--json", "--", sys.executable, "-c", BUSY_3S_REPORTING, str(cpu_file))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("job", "duration_s", "energy_j", "energy_by_component_j", "pue", "facility_energy_j",
                "carbon_g_per_kwh", "co2e_g", "source"):
        assert key in out
    assert out["job"] == "demo" and out["source"] == "model" and out["estimated"] is True
    assert 2.5 < out["duration_s"] < 20
    # at least the dynamic power of the CPU time it got under the default model (4.26 - 0.71 W per vCPU)
    child_cpu_s = float(cpu_file.read_text())
    assert child_cpu_s > 0.5
    assert out["energy_by_component_j"]["cpu"] >= 0.9 * 3.55 * child_cpu_s
    assert out["facility_energy_j"] == out["energy_j"] * 1.58
    assert abs(out["co2e_g"] - out["energy_j"] / 3.6e6 * 1.58 * out["carbon_g_per_kwh"]) < 1e-12


def test_run_text_and_exit_code() -> None:
    r = wl("run", "-t", "fails", "--", sys.executable, "-c", "import sys; sys.exit(3)")
    assert r.returncode == 3
    assert "job fails" in r.stdout and "ESTIMATE" in r.stdout


def test_run_missing_command_says_so() -> None:
    r = wl("run", "-t", "x", "--", "/nonexistent/cmd")
    assert r.returncode != 0 and "cannot start" in r.stderr


def test_agent_stdout_sink_over_fixture(tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "sysfs-intel-2s"
    r = wl("agent", "--ticks", "3", "--interval", "0.2", "--sink", "stdout", "--sysfs-root", str(fixture),
           "--state-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    measurements = [ln.split(",", 1)[0] for ln in lines]
    assert measurements.count("wl_node") == 3 * 4  # 3 ticks x 4 pools (2 packages, 2 DRAM)
    assert measurements.count("wl_agent") == 3
    assert set(measurements) <= {"wl_node", "wl_job", "wl_agent", "wl_embodied"}
    assert measurements.count("wl_embodied") >= 3  # each tick charges the host's embodied carbon (issue 16)
    assert "source=rapl" in lines[0]
    assert (tmp_path / "ledger.sqlite3").exists()


def test_run_without_any_energy_source_says_nothing_was_measured(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[agent]\nestimate = "never"\ngpus = "never"\n')
    r = wl("run", "--config", str(cfg), "--sysfs-root", str(tmp_path), "-t", "x", "--json", "--",
           sys.executable, "-c", "pass")
    assert r.returncode == 0
    assert "nothing was measured" in r.stderr
    out = json.loads(r.stdout)
    assert out["energy_j"] is None and out["co2e_g"] is None and out["source"] == "none"


def test_options_go_before_the_command_and_unknown_ones_are_errors() -> None:
    r = wl("run", "--tga", "x", "--", "true")
    assert r.returncode == 2 and "No such option '--tga'" in r.stderr
    # after the command's name everything is the command's: its own options are not ours
    r = wl("run", "--no-record", "--json", sys.executable, "-c", "import sys; sys.exit(5)", "--tag")
    assert r.returncode == 5 and json.loads(r.stdout)["exit_code"] == 5


def test_exit_127_when_not_found_and_126_when_not_executable(tmp_path: Path) -> None:
    r = wl("run", "--no-record", "--", "no-such-command-anywhere")
    assert r.returncode == 127 and "command not found" in r.stderr
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    r = wl("run", "--no-record", "--", str(script))
    assert r.returncode == 126 and "not executable" in r.stderr
    r = wl("run", "--no-record", "--", str(tmp_path))
    assert r.returncode == 126 and "a directory" in r.stderr


def test_a_command_shorter_than_a_tick_is_measured() -> None:
    """The field report: `run --interval 5 -- <3 s loop>` printed 0 J; `true` uses under a millisecond."""
    for cmd in ([sys.executable, "-c", BUSY_3S], ["true"]):
        out = json.loads(wl("run", "--no-record", "--json", "--interval", "5", "-t", "short", "--", *cmd).stdout)
        assert out["energy_j"] > 0 and out["energy_by_component_j"]["cpu"] > 0, out
        assert out["estimated"] is True and out["cpu_s"] is not None


def test_a_figure_below_the_counters_resolution_says_so() -> None:
    from wattledger.agent.runner import summary_text

    r = {"job": "j", "user": "u", "duration_s": 0.01, "cpu_s": 0.0, "exit_code": 0, "energy_j": 0.0,
         "energy_kwh": 0.0, "energy_by_component_j": {}, "below_resolution_j": {"cpu": 0.02, "dram": 0.01},
         "pue": 1.58, "facility_energy_j": 0.0, "co2e_g": 0.0, "carbon_g_per_kwh": 480, "carbon_source": "static",
         "source_by_component": {"cpu": "rapl", "dram": "rapl"}}
    text = summary_text(r)
    assert "< 0.03000 J: below the counters' resolution" in text and "cpu < 0.02000 J" in text
    assert " 0.0 J" not in text


def test_run_keeps_a_record_that_report_shows(tmp_path: Path) -> None:
    runs = tmp_path / "data" / "runs.jsonl"
    r = wl("run", "--runs-file", str(runs), "-t", "kept", "--", sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert f"record        {runs}" in r.stdout
    (line,) = runs.read_text().splitlines()
    rec = json.loads(line)
    assert rec["kind"] == "wattledger-run" and rec["job"] == "kept" and rec["figures_from"] == "run"
    assert rec["energy_j"] > 0 and rec["source"] == "model" and rec["carbon_g_per_kwh"] > 0
    assert rec["machine"]["energy"] == "model" and rec["machine"]["vcpus"] >= 1 and "cpu_model" in rec["machine"]
    assert rec["versions"]["wattledger"] and rec["versions"]["python"] and rec["static_policy"]["cpu"] == "capacity"
    assert oct(runs.parent.stat().st_mode & 0o777) == "0o700"
    wl("run", "--no-record", "--runs-file", str(runs), "-t", "not-kept", "--", "true")
    assert len(runs.read_text().splitlines()) == 1
    rep = wl("report", "--config", "/dev/null", "--state-dir", str(tmp_path / "no-ledger"), "--runs-file", str(runs),
             "--since", "1h")
    assert rep.returncode == 0, rep.stderr
    line = next(x for x in rep.stdout.splitlines() if x.startswith("kept"))
    assert line.rstrip().endswith("ER") and "R = measured by `wattledger run`" in rep.stdout
    # its embodied carbon too (issue 16): the record says how it was made, and report adds it to the row
    assert rec["embodied_g"] > 0 and rec["total_co2e_g"] == rec["co2e_g"] + rec["embodied_g"]
    assert math.isclose(sum(rec["embodied_by_part_g"].values()), rec["embodied_g"], rel_tol=1e-12)
    assert rec["embodied_basis"]["table"].startswith("boaviztapi 2.5.0 (table ")
    assert rec["embodied_basis"]["lifetime_years"] == 4.0 and rec["embodied_basis"]["unused"] == "idle"
    rep = wl("report", "--config", "/dev/null", "--state-dir", str(tmp_path / "no-ledger"), "--runs-file", str(runs),
             "--since", "1h", "--format", "json")
    (row,) = [r for r in json.loads(rep.stdout)["rows"] if r["job"] == "kept"]
    assert math.isclose(row["embodied_g_co2e"], rec["embodied_g"], rel_tol=1e-9)
    assert math.isclose(row["total_g_co2e"], row["g_co2e"] + rec["embodied_g"], rel_tol=1e-9)


CHASSIS_KG = 1000.0  # the host's only embodied figure in the test below: ~7.9 mg per second of the host


def test_run_shows_its_share_of_the_embodied_carbon_and_the_total(tmp_path: Path) -> None:
    """Operational, embodied and total CO2e (issue 16). A CPU job's share of the host's parts is the host's
    accrual x its CPU seconds / the vCPU-seconds the host offered: ~ rate x cpu_s / ncpu."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[embodied]\ndevice_kg = { cpu = 0.0, dram = 0.0, storage = 0.0, chassis = %r }\n' % CHASSIS_KG)
    r = wl("run", "--config", str(cfg), "--no-record", "--json", "-t", "share", "--", sys.executable, "-c",
           BUSY_3S.replace("< 3", "< 1.5"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    parts = out["embodied_by_part_g"]
    assert set(parts) == {"gpu", "cpu", "dram", "storage", "chassis"}
    assert parts["gpu"] == parts["cpu"] == parts["dram"] == parts["storage"] == 0.0
    rate_g_per_s = CHASSIS_KG * 1000 / (4 * 365.25 * 86400)
    expected_g = rate_g_per_s * out["cpu_s"] / (os.cpu_count() or 1)
    assert 0.6 * expected_g <= parts["chassis"] <= 1.1 * expected_g, (parts, expected_g, out["cpu_s"])
    assert out["embodied_g"] == parts["chassis"] and out["total_co2e_g"] == out["co2e_g"] + out["embodied_g"]
    text = wl("run", "--config", str(cfg), "--no-record", "-t", "share", "--", "true").stdout
    embodied = next(line for line in text.splitlines() if line.startswith("  embodied CO2e "))
    total = next(line for line in text.splitlines() if line.startswith("  total CO2e "))
    assert " g   chassis " in embodied and "docs/embodied.md" in embodied and "operational + embodied" in total
    cfg.write_text("[embodied]\nenabled = false\n")  # not charged: no figure, never 0 g
    out = json.loads(wl("run", "--config", str(cfg), "--no-record", "--json", "-t", "off", "--", "true").stdout)
    assert out["embodied_g"] is None and out["total_co2e_g"] is None and out["co2e_g"] > 0
    text = wl("run", "--config", str(cfg), "--no-record", "-t", "off", "--", "true").stdout
    assert "CO2e" in text and "embodied" not in text and "total CO2e" not in text


def test_the_runs_figures_are_its_own_rows() -> None:
    """summary() takes the job's wl_embodied rows alone, per part, and adds them to the operational CO2e."""
    from wattledger.agent.runner import summary, summary_text

    tags = {"host": "h", "project": "", "phase": ""}
    node = Point("wl_node", {"host": "h", "component": "gpu", "device": "GPU-0", "source": "nvml"},
                 {"energy_j": 7.2e6, "interval_s": 5.0}, 5)
    job = Point("wl_job", {**tags, "job": "mine", "user": "u", "component": "gpu", "device": "GPU-0",
                           "source": "nvml"}, {"energy_j": 3.6e6}, 5)
    mine_gpu = Point("wl_embodied", {**tags, "job": "mine", "user": "u", "component": "gpu", "device": "GPU-0"},
                     {"embodied_g": 2.0}, 5)
    mine_host = Point("wl_embodied", {**tags, "job": "mine", "user": "u", "component": "host", "device": "host"},
                      {"embodied_g": 0.75, "cpu_g": 0.05, "dram_g": 0.2, "storage_g": 0.1, "chassis_g": 0.4}, 5)
    others = [Point("wl_embodied", {**tags, "job": j, "user": u, "component": "gpu", "device": "GPU-0"},
                    {"embodied_g": 9.0}, 5) for j, u in (("_idle", ""), ("mine", "someone-else"), ("theirs", "u"))]
    m = Measured(0, 5.0, [node, job, mine_gpu, mine_host, *others])
    r = summary(m, job="mine", user="u", cmd=["x"], pue=1.5, g_per_kwh=100.0, intensity_source="static")
    assert r["co2e_g"] == 150.0  # 1 kWh x 1.5 x 100 g/kWh
    assert r["embodied_by_part_g"] == {"gpu": 2.0, "cpu": 0.05, "dram": 0.2, "storage": 0.1, "chassis": 0.4}
    assert math.isclose(r["embodied_g"], 2.75) and math.isclose(r["total_co2e_g"], 152.75)
    lines = summary_text(r).splitlines()
    assert lines[4].startswith("  embodied CO2e 2.750 g   gpu 2.000 g  cpu 0.05000 g  dram 0.2000 g")
    assert lines[5] == "  total CO2e    152.8 g   operational + embodied, 2% embodied"
    assert summary(Measured(0, 5.0, [node, job]), job="mine", user="u", cmd=["x"], pue=1.5, g_per_kwh=100.0,
                   intensity_source="static")["embodied_g"] is None  # no wl_embodied at all: not charged


def test_the_default_runs_file_is_in_the_users_data_dir(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"))
    r = wl("run", "-t", "xdg", "--", "true", env=env)
    path = tmp_path / "xdg" / "wattledger" / "runs.jsonl"
    assert r.returncode == 0 and path.exists() and f"record        {path}" in r.stdout

"""`wattledger run` on a machine without RAPL: non-zero energy, flagged as a model estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_the_default_runs_file_is_in_the_users_data_dir(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"))
    r = wl("run", "-t", "xdg", "--", "true", env=env)
    path = tmp_path / "xdg" / "wattledger" / "runs.jsonl"
    assert r.returncode == 0 and path.exists() and f"record        {path}" in r.stdout

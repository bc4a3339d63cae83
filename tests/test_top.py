from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from wattledger.cli.main import main

from wattledger.report.top import latest_tick, render


def test_latest_tick_power_per_job() -> None:
    node = [
        {"time_ns": 1, "component": "cpu", "device": "package-0", "interval_s": 2.0, "power_w": 10.0},
        {"time_ns": 2, "component": "cpu", "device": "package-0", "interval_s": 2.0, "power_w": 50.0},
        {"time_ns": 2, "component": "gpu", "device": "GPU-1", "interval_s": 2.0, "power_w": 300.0},
    ]
    jobs = [
        {"time_ns": 1, "job": "old", "user": "a", "component": "cpu", "device": "package-0", "energy_j": 20.0, "source": "rapl"},
        {"time_ns": 2, "job": "train", "user": "a", "component": "cpu", "device": "package-0", "energy_j": 80.0, "source": "rapl"},
        {"time_ns": 2, "job": "train", "user": "a", "component": "gpu", "device": "GPU-1", "energy_j": 500.0, "source": "nvml"},
        {"time_ns": 2, "job": "_idle", "user": "", "component": "gpu", "device": "GPU-1", "energy_j": 100.0, "source": "nvml"},
        {"time_ns": 2, "job": "_system", "user": "", "component": "cpu", "device": "package-0", "energy_j": 20.0, "source": "rapl"},
    ]
    t, rows, host_w = latest_tick(jobs, node)
    assert t == 2 and host_w == 350.0
    assert [r.job for r in rows] == ["train", "_idle", "_system"]
    assert rows[0].power_w == {"cpu": 40.0, "gpu": 250.0}
    # jobs add up to the host
    assert sum(r.total_w for r in rows) == host_w
    text = render(t, rows, host_w, ["cpu", "gpu"])
    assert "train" in text and "290.00" in text and "old" not in text


def test_idle_is_shown_as_unused_capacity() -> None:
    node = [{"time_ns": 2, "component": "cpu", "device": "package-0", "interval_s": 1.0, "power_w": 10.0}]
    jobs = [{"time_ns": 2, "job": "_idle", "user": "", "component": "cpu", "device": "package-0", "energy_j": 7.0,
             "source": "rapl"},
            {"time_ns": 2, "job": "a", "user": "u", "component": "cpu", "device": "package-0", "energy_j": 3.0,
             "source": "rapl"}]
    t, rows, host_w = latest_tick(jobs, node)
    line = next(x for x in render(t, rows, host_w, ["cpu"]).splitlines() if x.startswith("_idle"))
    assert "unused capacity" in line and "7.00" in line


def test_freshness_tells_stale_from_live() -> None:
    from wattledger.report.top import freshness, status_line

    t = 1_700_000_000_000_000_000
    assert freshness(t, 5.0, t + 3 * 10**9) == (False, 3.0)
    assert freshness(t, 5.0, t + 13 * 10**9) == (True, 13.0)  # > 2 ticks + 2 s
    assert status_line(t, 5.0, t + 2 * 10**9).startswith("live: tick at ")
    assert status_line(t, 5.0, t + 90 * 10**9).startswith("STALE: the last tick was 90 s ago")


def test_top_says_stale_once_the_agent_stopped(tmp_path: Path) -> None:
    """A real agent ticks a few times and exits; `top --once` says live at first, then stale and since when."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[agent]\nestimate = "always"\ngpus = "never"\n')  # the model: energy every tick, here too
    r = subprocess.run([sys.executable, "-m", "wattledger.cli.main", "agent", "--config", str(cfg), "--ticks", "2",
                        "--interval", "0.2", "--state-dir", str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    stopped = time.monotonic()
    args = ["top", "--once", "--config", "/dev/null", "--state-dir", str(tmp_path)]
    first = CliRunner().invoke(main, args).output
    if time.monotonic() - stopped < 2.0:  # a slow machine may have taken longer than the grace
        assert first.startswith("live: tick at "), first
    time.sleep(max(0.0, 3.0 - (time.monotonic() - stopped)))
    later = CliRunner().invoke(main, args).output
    assert later.startswith("STALE: the last tick was "), later
    assert "the agent seems stopped" in later

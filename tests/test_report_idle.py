"""report shows each pool's idle baseline and where it came from (issue 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def wl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattledger.cli.main", *args], capture_output=True, text=True,
                          timeout=120)


def test_report_lists_idle_baselines(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[agent]\nestimate = "always"\ngpus = "never"\n[attribution]\nidle_power_w = {dram = 3.5}\n')
    r = wl("agent", "--config", str(cfg), "--ticks", "2", "--interval", "0.2", "--state-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = wl("report", "--config", str(cfg), "--state-dir", str(tmp_path), "--format", "json")
    assert r.returncode == 0, r.stderr
    baselines = {(b["component"], b["source"]): b["power_w"] for b in json.loads(r.stdout)["idle_baselines"]}
    assert baselines[("dram", "configured")] == 3.5
    assert ("cpu", "model") in baselines  # the estimate's own idle figure
    table = wl("report", "--config", str(cfg), "--state-dir", str(tmp_path)).stdout
    assert "Idle (static) power baselines" in table and "3.50 W configured" in table

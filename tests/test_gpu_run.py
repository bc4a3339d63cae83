"""`wattledger run` charges GPU energy to the command it runs (real pynvml over the fake driver).

The GPU here is "live" (tests/fake_nvml_live.py): its users are the real
tagged processes that carry a marker in their environment, found in /proc as
NVML finds a GPU's processes; a user's SM utilisation is its CPU
utilisation, and the energy counter follows the wall clock. The CLI, the
agent, the identity code (pid -> WATTLEDGER_JOB from /proc/<pid>/environ) and
pynvml's ctypes code are all the real ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.fake_nvml_driver import real_pynvml
from tests.fake_nvml_live import MARKER, TOKEN, LiveGpuNvml
from wattledger.cli.main import main


def test_run_charges_the_gpu_energy_of_its_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[agent]\ngpus = "auto"\n[attribution]\nidle_power_w = { gpu = 60.0 }\n')
    monkeypatch.setenv(MARKER, TOKEN)  # the command inherits it; this process's /proc environ does not change
    fake = LiveGpuNvml()
    busy = "import time\nt = time.time()\nwhile time.time() - t < 2.0: pass\n"
    with real_pynvml(fake):
        result = CliRunner().invoke(main, ["run", "--config", str(cfg), "-t", "gpu-demo", "--interval", "0.25",
                                           "--json", "--", sys.executable, "-c", busy])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert "nvml" in out["source"].split(",")
    gpu_j = out["energy_by_component_j"]["gpu"]
    total_j = (fake.gpus[0].energy_mj - (fake.first_mj or 0)) / 1000.0
    # The command held the GPU for ~2 s (60 W idle, up to 300 W busy): it is charged
    # that energy (the dynamic part by its SM time, the static part by occupancy), and
    # never more than the counter measured over the whole run.
    assert fake.busy_energy_j > 150.0
    assert 0.85 * fake.busy_energy_j <= gpu_j <= total_j + 1e-6
    assert out["energy_j"] == pytest.approx(sum(out["energy_by_component_j"].values()))
    assert out["source_by_component"]["gpu"] == "nvml"


def test_run_text_says_which_parts_are_measured_and_which_estimated(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MARKER, TOKEN)
    with real_pynvml(LiveGpuNvml()):
        result = CliRunner().invoke(main, ["run", "-t", "gpu-demo", "--interval", "0.25", "--",
                                           sys.executable, "-c", "import time; time.sleep(0.6)"])
    assert result.exit_code == 0, result.output
    source = next(line for line in result.output.splitlines() if line.strip().startswith("source"))
    assert "gpu nvml" in source
    if "model" in source:  # this host has no RAPL: CPU and DRAM are the model's estimate
        assert "cpu, dram model ESTIMATE" in source

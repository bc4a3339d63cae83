"""`wattledger run` charges GPU energy to the command it runs (real pynvml over the fake driver).

The GPU here is "live": its users are the real processes that carry a marker
in their environment (found in /proc, as NVML finds a GPU's processes), its
energy counter advances with the wall clock (idle power, or busy power while
a user exists), and each user is 100% SM-busy. The CLI, the agent, the
identity code (pid -> WATTLEDGER_JOB from /proc/<pid>/environ) and pynvml's
ctypes code are all the real ones.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from tests.fake_nvml import SAMPLE_PERIOD_US, FakeGpu, FakeNvml, UtilSample
from tests.fake_nvml_driver import real_pynvml
from wattledger.agent.cli import main

MARKER = "WATTLEDGER_TEST_ON_FAKE_GPU"
GIB = 1 << 30


class LiveGpuNvml(FakeNvml):
    """One GPU used by the live processes whose environment has MARKER=1."""

    def __init__(self, idle_w: float = 60.0, busy_w: float = 300.0) -> None:
        super().__init__([FakeGpu("GPU-live-0")], start_us=time.time_ns() // 1000)
        self.idle_w, self.busy_w = idle_w, busy_w
        self.users: set[int] = set()
        self.busy_energy_j = 0.0
        self.first_mj: int | None = None

    def _users_now(self) -> set[int]:
        found = set()
        for p in psutil.process_iter():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(MARKER) == "1":
                    found.add(p.pid)
            except (psutil.Error, OSError):
                continue
        return found

    def _sync(self) -> None:
        now_us = time.time_ns() // 1000
        gpu = self.gpus[0]
        dt_s = max(0, now_us - self.now_us) / 1e6
        power_w = self.busy_w if self.users else self.idle_w
        gpu.add_energy_j(power_w * dt_s)
        if self.users:
            self.busy_energy_j += power_w * dt_s
        t = self.now_us + SAMPLE_PERIOD_US
        while t <= now_us:
            gpu.samples.extend(UtilSample(pid=pid, timeStamp=t, smUtil=100, memUtil=30, encUtil=0, decUtil=0)
                               for pid in sorted(self.users))
            t += SAMPLE_PERIOD_US
        self.now_us = now_us
        self.users = self._users_now()
        gpu.compute = {pid: GIB for pid in self.users}

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self._sync()
        value = super().nvmlDeviceGetTotalEnergyConsumption(handle)
        if self.first_mj is None:
            self.first_mj = value
        return value

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._sync()
        return super().nvmlDeviceGetComputeRunningProcesses(handle)


def test_run_charges_the_gpu_energy_of_its_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[agent]\ngpus = "auto"\n[attribution]\nidle_power_w = { gpu = 60.0 }\n')
    monkeypatch.setenv(MARKER, "1")  # the command inherits it; this process's /proc environ does not change
    fake = LiveGpuNvml()
    busy = "import time\nt = time.time()\nwhile time.time() - t < 2.0: time.sleep(0.01)\n"
    with real_pynvml(fake):
        result = CliRunner().invoke(main, ["run", "--config", str(cfg), "-t", "gpu-demo", "--interval", "0.25",
                                           "--json", "--", sys.executable, "-c", busy])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert "nvml" in out["source"].split(",")
    gpu_j = out["energy_by_component_j"]["gpu"]
    total_j = (fake.gpus[0].energy_mj - (fake.first_mj or 0)) / 1000.0
    # The command held the GPU for ~2 s at 300 W: it is charged that busy energy (the
    # dynamic part by its SM time, the static part by occupancy), and never more than
    # the counter measured over the whole run.
    assert fake.busy_energy_j > 300.0
    assert 0.85 * fake.busy_energy_j <= gpu_j <= total_j + 1e-6
    assert out["energy_j"] == pytest.approx(sum(out["energy_by_component_j"].values()))
    assert out["source_by_component"]["gpu"] == "nvml"


def test_run_text_says_which_parts_are_measured_and_which_estimated(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MARKER, "1")
    with real_pynvml(LiveGpuNvml()):
        result = CliRunner().invoke(main, ["run", "-t", "gpu-demo", "--interval", "0.25", "--",
                                           sys.executable, "-c", "import time; time.sleep(0.6)"])
    assert result.exit_code == 0, result.output
    source = next(line for line in result.output.splitlines() if line.strip().startswith("source"))
    assert "gpu nvml" in source
    if "model" in source:  # this host has no RAPL: CPU and DRAM are the model's estimate
        assert "cpu, dram model ESTIMATE" in source

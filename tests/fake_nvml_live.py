"""A fake GPU whose users are real processes (for end-to-end tests of `run` and the trace recorder).

``LiveGpuNvml`` is a FakeNvml with one GPU that follows the wall clock and
/proc instead of a script: its users are the live processes that have both
``WATTLEDGER_TEST_ON_FAKE_GPU=1`` and a ``WATTLEDGER_JOB`` in their
environment (found as NVML finds a GPU's processes: by host pid); each user's
SM utilisation is its CPU utilisation (so a CPU busy loop with a duty cycle
stands in for a GPU kernel loop); power is idle + (busy - idle) x the summed
utilisation (capped at 1), re-measured every 100 ms at most; the energy
counter integrates that power.

Served through tests/fake_nvml_driver.py, the real pynvml reads it. Each
process that loads it has its own instance (its counter starts at 0 there).

``tests/nvml_site/sitecustomize.py`` installs one in any Python process
started with ``WATTLEDGER_TEST_LIVE_GPU=1`` and that directory on PYTHONPATH,
so a subprocess (the agent) sees a GPU too.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import psutil

from tests.fake_nvml import SAMPLE_PERIOD_US, FakeGpu, FakeNvml, UtilSample

MARKER = "WATTLEDGER_TEST_ON_FAKE_GPU"
# The value a user process carries in MARKER: one per test session (inherited by the
# processes it starts, which read the same fake GPU), so that the tests of another
# checkout running on the same machine are not this fake GPU's users.
TOKEN = os.environ.setdefault("WATTLEDGER_TEST_FAKE_GPU_TOKEN", uuid.uuid4().hex)
UTIL_WINDOW_US = 100_000  # users and utilisation are re-measured at most this often
GIB = 1 << 30


class LiveGpuNvml(FakeNvml):
    """One GPU used by the live, tagged processes that carry MARKER=TOKEN."""

    def __init__(self, idle_w: float = 60.0, busy_w: float = 300.0, uuid: str = "GPU-live-0") -> None:
        super().__init__([FakeGpu(uuid, name="LIVE FAKE GPU (tests/fake_nvml_live.py)")],
                         start_us=time.time_ns() // 1000)
        self.idle_w, self.busy_w = idle_w, busy_w
        self.util: dict[int, float] = {}          # pid -> utilisation over the last window
        self._cpu_s: dict[int, float] = {}        # pid -> CPU seconds at the last window's end
        self._window_us = self.now_us
        self.power_w = idle_w                     # power from the last window on
        self.busy_energy_j = 0.0                  # energy while any user existed
        self.first_mj: int | None = None          # the counter at its first read

    def _users_now(self) -> dict[int, float]:
        found: dict[int, float] = {}
        for p in psutil.process_iter():
            try:
                env = p.environ()
                if env.get(MARKER) == TOKEN and env.get("WATTLEDGER_JOB"):
                    t = p.cpu_times()
                    found[p.pid] = t.user + t.system
            except (psutil.Error, OSError):
                continue
        return found

    def _sync(self) -> None:
        """Integrate energy up to now; every UTIL_WINDOW_US re-measure the users and their utilisation."""
        now_us = time.time_ns() // 1000
        gpu = self.gpus[0]
        dt_s = max(0, now_us - self.now_us) / 1e6
        gpu.add_energy_j(self.power_w * dt_s)
        if self.util:
            self.busy_energy_j += self.power_w * dt_s
        self.now_us = now_us
        window_s = (now_us - self._window_us) / 1e6
        if window_s * 1e6 < UTIL_WINDOW_US:
            return
        users = self._users_now()
        util = {pid: min(1.0, max(0.0, (cpu - self._cpu_s.get(pid, cpu)) / window_s)) for pid, cpu in users.items()}
        t = self._window_us + SAMPLE_PERIOD_US
        while t <= now_us:
            gpu.samples.extend(UtilSample(pid=pid, timeStamp=t, smUtil=round(100 * u), memUtil=round(30 * u),
                                          encUtil=0, decUtil=0) for pid, u in sorted(util.items()) if u > 0)
            t += SAMPLE_PERIOD_US
        gpu.samples = gpu.samples[-2000:]
        self.util, self._cpu_s, self._window_us = util, users, now_us
        self.power_w = self.idle_w + (self.busy_w - self.idle_w) * min(1.0, sum(util.values()))
        gpu.compute = {pid: GIB for pid in users}
        gpu.power_mw = gpu.power_instant_mw = int(self.power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self._sync()
        value = super().nvmlDeviceGetTotalEnergyConsumption(handle)
        if self.first_mj is None:
            self.first_mj = value
        return value

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._sync()
        return super().nvmlDeviceGetComputeRunningProcesses(handle)

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[UtilSample]:  # noqa: N803
        self._sync()
        return super().nvmlDeviceGetProcessUtilization(handle, timeStamp)

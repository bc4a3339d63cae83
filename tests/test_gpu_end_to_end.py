"""The collector and the agent against a GPU: the real one when this host has one.

On a host where NVML finds a GPU (the lent H100: its image has pytest,
hypothesis, torch, nvidia-ml-py, click and psutil) these run against the real
driver with a PyTorch job:

    PYTHONPATH=. python3 -m pytest -q tests/test_gpu_end_to_end.py

Elsewhere (CI) the same tests run against the live fake GPU
(tests/fake_nvml_live.py, served to the real pynvml by the fake driver) with
a CPU busy loop as the job, so the tests themselves are known to work before
device time is spent on them. The test ids say which ran. They check the
driver's counter moves with work, a tagged process is listed and busy, and
the agent charges it, with jobs summing to the GPU's wl_node row every tick.
The trace recorder (`benchmarks/gpu_trace.py record`) measures the rest.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fake_nvml_driver import real_pynvml
from tests.fake_nvml_live import MARKER, TOKEN, LiveGpuNvml
from wattledger.config import Config
from wattledger.store.ledger import Ledger
from wattledger.agent.factory import build_agent
from wattledger.model.points import WL_JOB, WL_NODE, Point
from tests.nvml_pools import PoolReader as NvmlCollector  # reader + GPU accounting: per-pool figures
from wattledger.model.gpu import SOURCE


def _gpu_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver: no GPU here
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


BURN_TORCH = """
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
torch.cuda.synchronize()
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    torch.matmul(a, b)
    torch.cuda.synchronize()
"""

BURN_CPU = """
import sys, time
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    pass
"""


@dataclass
class Gpu:
    kind: str  # "real" or "live-fake"
    burn: str  # the job's program
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(params=["real" if _gpu_count() else "live-fake"])
def gpu(request: pytest.FixtureRequest) -> Iterator[Gpu]:
    if request.param == "real":
        pytest.importorskip("torch")
        yield Gpu("real", BURN_TORCH, {"CUDA_VISIBLE_DEVICES": "0"})
        return
    with real_pynvml(LiveGpuNvml()):
        yield Gpu("live-fake", BURN_CPU, {MARKER: TOKEN})


def test_every_gpu_is_read_and_its_counter_moves(gpu: Gpu) -> None:
    c = NvmlCollector()
    probe = c.probe()
    assert probe.ok, probe
    first = {r.device: r for r in c.read(time.monotonic_ns()).devices}
    time.sleep(1.0)
    second = c.read(time.monotonic_ns())
    c.close()
    assert not second.failures, second.failures
    for r in second.devices:
        assert r.counter.source == SOURCE or r.counter.source.startswith("nvml")
        delta_j = (r.counter.counter_uj - first[r.device].counter.counter_uj) / 1e6
        assert r.interval_s is not None and 0.9 < r.interval_s < 3.0
        power_w = delta_j / r.interval_s
        assert 5.0 < power_w < 2000.0, (r.device, power_w)  # an idle or busy GPU, not a unit error


def test_a_tagged_job_is_listed_busy_and_charged(gpu: Gpu, tmp_path: Path) -> None:
    env = dict(os.environ, WATTLEDGER_JOB="real-gpu-test", **gpu.env)
    job = subprocess.Popen([sys.executable, "-c", gpu.burn, "6"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        points: list[Point] = []
        agent = build_agent(Config(), Ledger.in_state_dir(tmp_path), on_tick=lambda r: points.extend(r.points))
        agent.commit(agent.tick())
        for _ in range(4):
            time.sleep(1.0)
            agent.commit(agent.tick())
    finally:
        job.wait(timeout=60)
    gpu_jobs = [p for p in points if p.measurement == WL_JOB and p.tags["component"] == "gpu"]
    mine = [p for p in gpu_jobs if p.tags["job"] == "real-gpu-test"]
    assert mine, sorted({p.tags["job"] for p in gpu_jobs})
    assert math.fsum(p.fields["dynamic_j"] for p in mine) > 0  # it kept the SMs busy
    assert math.fsum(p.fields["driver_s"] for p in mine) > 1.0  # SM-busy seconds over 4 s of matmuls
    for node in (p for p in points if p.measurement == WL_NODE and p.tags["component"] == "gpu"):
        same = [p for p in gpu_jobs if p.time_ns == node.time_ns and p.tags["device"] == node.tags["device"]]
        assert math.fsum(p.fields["energy_j"] for p in same) == pytest.approx(node.fields["energy_j"], rel=1e-9)

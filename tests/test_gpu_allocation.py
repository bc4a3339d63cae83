"""GPUs that Slurm allocated to a job are held by it (occupancy policy) even while it has no context on them.

The fake NVML (tests/fake_nvml.py) through the real collector and the real
tick loop; the job's allocation arrives as the process reader reports it
(``ProcSample.slurm``, from SLURM_JOB_GPUS / CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.clocks import FakeClock
from tests.conftest import NvmlApi
from tests.fake_nvml import FakeGpu, FakeMig, FakeNvml, Load
from tests.test_gpu_loop import GIB, T0, FakeCpu
from wattledger.accounting.gpu import allocated_gpus
from wattledger.agent.factory import build_agent
from wattledger.agent.loop import Agent
from wattledger.collectors.nvml import NvmlCollector
from wattledger.config import Config
from wattledger.model.activity import ProcSample
from wattledger.model.gpu import GpuActivity, GpuReading, MigReading
from wattledger.model.jobs import IDLE_JOB, JobKey
from wattledger.model.points import WL_JOB, Point
from wattledger.model.slurm import SlurmJob
from wattledger.store.ledger import Ledger

RUNNING = JobKey("slurm-7", "alice")  # holds a context on GPU-a
WAITING = JobKey("slurm-8", "bob")    # allocated GPU-b (index 1) and GPU-a by UUID, no context yet


class SlurmProcs:
    """The process reader's view: both jobs live, with their Slurm allocations."""

    name = "procfs"

    def __init__(self, allocations: dict[JobKey, SlurmJob]) -> None:
        self.allocations = allocations
        self.last_ns: int | None = None

    def read(self, read_ns: int, want_pids: Sequence[int] = ()) -> ProcSample:
        interval = None if self.last_ns is None else (read_ns - self.last_ns) / 1e9
        self.last_ns = read_ns
        jobs = {pid: RUNNING if pid == 101 else JobKey("_untagged", "") for pid in want_pids}
        return ProcSample(read_ns, interval is None, 0.0, 2 * (interval or 0), 2, {}, {RUNNING: 1.0, WAITING: 1.0},
                          jobs, slurm=self.allocations)


def run(tmp_path: Path, api: NvmlApi, allocations: dict[JobKey, SlurmJob], hold: bool = True) -> list[Point]:
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: 4 * GIB}), FakeGpu("GPU-b")], start_us=T0 // 1000)
    cfg = Config()
    cfg.attribution.idle_power_w = {"gpu": 60.0, "cpu": 10.0}
    cfg.slurm.hold_allocated_gpus = hold
    points: list[Point] = []
    agent: Agent = build_agent(cfg, Ledger.in_state_dir(tmp_path), energy=[FakeCpu()], procs=SlurmProcs(allocations),
                               clock=FakeClock(lambda: fake.now_ns), host="gpu01", gpu=NvmlCollector(api(fake)),
                               on_tick=lambda r: points.extend(r.points))
    agent.commit(agent.tick())
    fake.step(2.0, {0: Load(300.0, {101: 100}), 1: Load(70.0)})
    agent.commit(agent.tick())
    return points


def charged(points: list[Point], device: str) -> dict[str, dict[str, float]]:
    out = {p.tags["job"]: dict(p.fields) for p in points
           if p.measurement == WL_JOB and p.tags["component"] == "gpu" and p.tags["device"] == device}
    return out


def test_an_allocated_gpu_without_a_context_is_the_jobs_static_energy(tmp_path: Path, nvml_api: NvmlApi) -> None:
    points = run(tmp_path, nvml_api, {WAITING: SlurmJob("8", gpus=("1",))})
    b = charged(points, "GPU-b")
    # 140 J in 2 s: 120 J static (60 W idle) is the allocated job's; the 20 J above idle nobody ran: _idle
    assert b["slurm-8"]["static_j"] == pytest.approx(120.0) and b["slurm-8"]["dynamic_j"] == 0
    assert b[IDLE_JOB.tag]["energy_j"] == pytest.approx(20.0)
    assert math.fsum(f["energy_j"] for f in b.values()) == pytest.approx(140.0)


def test_without_the_rule_an_unused_allocated_gpu_is_idle(tmp_path: Path, nvml_api: NvmlApi) -> None:
    points = run(tmp_path, nvml_api, {WAITING: SlurmJob("8", gpus=("1",))}, hold=False)
    assert set(charged(points, "GPU-b")) == {IDLE_JOB.tag}


def test_allocated_and_context_holders_share_static_as_jobs(tmp_path: Path, nvml_api: NvmlApi) -> None:
    """On GPU-a one job runs (a context) and another is allocated it by UUID: one holder each."""
    points = run(tmp_path, nvml_api, {RUNNING: SlurmJob("7", gpus=("0",)), WAITING: SlurmJob("8", gpus=("GPU-a",))})
    a = charged(points, "GPU-a")
    assert a["slurm-7"]["static_j"] == pytest.approx(60.0) and a["slurm-8"]["static_j"] == pytest.approx(60.0)
    assert a["slurm-7"]["dynamic_j"] == pytest.approx(600.0 - 120.0)  # all the work is the running job's
    assert math.fsum(f["energy_j"] for f in a.values()) == pytest.approx(600.0)


def _mig_gpu() -> GpuReading:
    nobody = GpuActivity({}, True, None)
    return GpuReading("GPU-m", 1000, None, None, (MigReading("MIG-1", 1, 3, 3, nobody),
                                                  MigReading("MIG-2", 2, 4, 4, nobody)), 7, index=2)


def test_ids_map_to_pools() -> None:
    plain = GpuReading("GPU-p", 1000, None, GpuActivity({}, True, None), index=0)
    found = allocated_gpus([plain, _mig_gpu()], {
        JobKey("slurm-1"): SlurmJob("1", gpus=("0",)),          # NVML index 0
        JobKey("slurm-2"): SlurmJob("2", gpus=("MIG-2",)),      # one MIG instance by UUID
        JobKey("slurm-3"): SlurmJob("3", gpus=("2",)),          # a whole MIG GPU: all its pools
        JobKey("slurm-4"): SlurmJob("4", gpus=("9", "GPU-x")),  # ids this node does not have
    })
    assert found == {
        "GPU-p": frozenset({JobKey("slurm-1")}),
        "MIG-1": frozenset({JobKey("slurm-3")}),
        "MIG-2": frozenset({JobKey("slurm-2"), JobKey("slurm-3")}),
        "GPU-m/unallocated": frozenset({JobKey("slurm-3")}),
    }


def test_the_collector_reports_nvml_indices(nvml_api: NvmlApi) -> None:
    fake = FakeNvml([FakeGpu("GPU-a"), FakeGpu("GPU-b", mig_mode=1, mig=[FakeMig("MIG-b1", 1, 7, 7)])],
                    start_us=T0 // 1000)
    collector = NvmlCollector(nvml_api(fake))
    assert collector.probe().ok
    sample = collector.read(T0)
    assert [(g.uuid, g.index) for g in sample.gpus] == [("GPU-a", 0), ("GPU-b", 1)]

"""GPU cost drivers and the ABC split of GPU pools: ratios, fallbacks, conservation."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import NvmlApi
from tests.fake_nvml import FakeGpu, FakeMig, FakeNvml, Load
from wattledger.accounting.attribution import Charge, Pool, StaticPolicy, attribute
from wattledger.accounting.counters import CounterTracker
from tests.nvml_pools import PoolReader
from wattledger.accounting.gpu import gpu_drivers, measure_for, unexplained_job
from wattledger.model.jobs import IDLE_JOB, SYSTEM_JOB, JobKey
from wattledger.model.readings import EnergyCounter
from wattledger.model.gpu import GpuDeviceReading, GpuProcess

GIB = 1 << 30
A = JobKey("train-a", "alice")
B = JobKey("train-b", "bob")


def reading(procs: list[GpuProcess], driver: str = "sm", interval_s: float | None = 2.0) -> GpuDeviceReading:
    return GpuDeviceReading(EnergyCounter("gpu", "GPU-x", "nvml", 0), tuple(procs), driver == "sm", interval_s)


def jobs(mapping: dict[int, JobKey]) -> dict[int, JobKey]:
    return mapping  # pids not in it are JobKey("_untagged", "")


@pytest.mark.parametrize("skew_us", [0, 3_000], ids=["same-timestamps", "stamped-3ms-apart"])
def test_sm_busy_75_25_splits_dynamic_energy_3_to_1(nvml_api: NvmlApi, skew_us: int) -> None:
    fake = FakeNvml([FakeGpu("GPU-x", compute={101: 1 * GIB, 102: 7 * GIB}, sample_skew_us=skew_us)])
    c = PoolReader(nvml_api(fake))
    c.read(fake.now_ns)
    fake.step(1.0, {0: Load(300.0, {101: 75, 102: 25})})
    r = c.read(fake.now_ns).devices[0]
    driver_s, holders = gpu_drivers(r, jobs({101: A, 102: B}))
    assert driver_s == pytest.approx({A: 0.75, B: 0.25})
    charges = attribute(Pool("gpu", "GPU-x", "nvml", 300.0, 1.0, 60.0, StaticPolicy.OCCUPANCY), driver_s, holders)
    assert charges[A].dynamic_j / charges[B].dynamic_j == pytest.approx(3.0)
    assert charges[A].dynamic_j + charges[B].dynamic_j == pytest.approx(240.0)
    # static follows occupancy: memory held, 1:7 (not the SM split)
    assert charges[A].static_j == pytest.approx(60.0 / 8) and charges[B].static_j == pytest.approx(60.0 * 7 / 8)


def test_two_pids_of_one_job_add_up() -> None:
    r = reading([GpuProcess(1, 0.5, GIB), GpuProcess(2, 0.25, GIB), GpuProcess(3, 0.25, 2 * GIB)])
    driver_s, holders = gpu_drivers(r, jobs({1: A, 2: A, 3: B}))
    assert driver_s == pytest.approx({A: 0.75, B: 0.25})
    assert holders == pytest.approx({A: 0.5, B: 0.5})


def test_memory_fallback_when_no_utilisation() -> None:
    r = reading([GpuProcess(1, None, GIB), GpuProcess(2, None, 3 * GIB)], driver="memory")
    driver_s, holders = gpu_drivers(r, jobs({1: A, 2: B}))
    assert driver_s == pytest.approx({A: 0.5, B: 1.5})  # memory share x 2 s interval
    assert holders == pytest.approx({A: 0.25, B: 0.75})
    assert measure_for(r).value == "memory"


def test_equal_fallback_when_memory_unknown() -> None:
    r = reading([GpuProcess(1, None, None), GpuProcess(2, None, GIB)], driver="equal")
    driver_s, holders = gpu_drivers(r, jobs({1: A, 2: B}))
    assert driver_s == pytest.approx({A: 1.0, B: 1.0})
    assert holders == pytest.approx({A: 0.5, B: 0.5})
    assert measure_for(r).value == "equal"


def test_idle_holders_get_the_energy_by_memory_when_nothing_was_busy() -> None:
    r = reading([GpuProcess(1, 0.0, GIB), GpuProcess(2, 0.0, 3 * GIB)])
    driver_s, _ = gpu_drivers(r, jobs({1: A, 2: B}))
    assert driver_s == pytest.approx({A: 0.5, B: 1.5})


def test_exited_busy_process_is_charged_dynamic_but_holds_nothing() -> None:
    r = reading([GpuProcess(1, 1.0, None, holds_context=False), GpuProcess(2, 0.0, GIB)])
    driver_s, holders = gpu_drivers(r, jobs({1: A, 2: B}))
    assert driver_s == pytest.approx({A: 1.0})
    assert holders == pytest.approx({B: 1.0})


def test_nobody_on_the_gpu_static_to_idle_dynamic_to_system() -> None:
    driver_s, holders = gpu_drivers(reading([]), jobs({}))
    assert driver_s == {} and holders == {}
    charges = attribute(Pool("gpu", "GPU-x", "nvml", 100.0, 1.0, 60.0, StaticPolicy.OCCUPANCY), driver_s, holders)
    assert charges[IDLE_JOB].static_j == pytest.approx(60.0)
    assert charges[SYSTEM_JOB].dynamic_j == pytest.approx(40.0)


# -- conservation, as a property over random scripts --------------------------------------

PIDS = [101, 102, 103, 104]
JOB_OF = {101: A, 102: A, 103: B, 104: JobKey("_untagged", "carol")}

tick_st = st.fixed_dictionaries({
    "dt_s": st.floats(0.05, 30.0),
    "power_w": st.floats(0.0, 1000.0),
    "instant_w": st.floats(0.0, 1000.0),
    "holders": st.dictionaries(st.sampled_from(PIDS), st.one_of(st.none(), st.integers(0, 80 * GIB)), max_size=4),
    "sm": st.dictionaries(st.sampled_from(PIDS), st.integers(0, 100), max_size=4),
    "reset": st.booleans(),
    "lost": st.booleans(),
})
gpu_st = st.fixed_dictionaries({
    "energy": st.booleans(),
    "util": st.booleans(),
    "instant": st.booleans(),
    "idle_w": st.one_of(st.none(), st.floats(0.0, 400.0)),
    "policy": st.sampled_from(list(StaticPolicy)),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpus=st.lists(gpu_st, min_size=1, max_size=3), ticks=st.lists(st.lists(tick_st, min_size=3, max_size=3),
                                                                       min_size=1, max_size=8))
def test_jobs_sum_to_the_counter_delta_for_any_script(gpus: list[dict], ticks: list[list[dict]]) -> None:
    fakes = []
    for i, spec in enumerate(gpus):
        unsupported = set()
        if not spec["energy"]:
            unsupported.add("nvmlDeviceGetTotalEnergyConsumption")
        if not spec["util"]:
            unsupported.add("nvmlDeviceGetProcessUtilization")
        if not spec["instant"]:
            unsupported.add("power_instant")
        fakes.append(FakeGpu(f"GPU-{i}", energy_mj=10**9, unsupported=unsupported))
    fake = FakeNvml(fakes)
    c = PoolReader(fake)
    tracker = CounterTracker()
    job_of_pid = jobs(JOB_OF)
    for r in c.read(fake.now_ns).devices:
        tracker.delta(r.counter, fake.now_ns)
    for tick in ticks:
        loads = {}
        for i, (fake_gpu, t) in enumerate(zip(fakes, tick)):
            fake_gpu.compute = dict(t["holders"])
            fake_gpu.lost = t["lost"]
            if t["reset"]:
                fake_gpu.energy_mj = 0
            loads[i] = Load(t["power_w"], t["sm"], t["instant_w"])
        fake.step(tick[0]["dt_s"], loads)
        s = c.read(fake.now_ns)
        assert {f.devices[0] for f in s.failures} == {f_gpu.uuid for f_gpu in fakes if f_gpu.lost}
        for r in s.devices:
            d = tracker.delta(r.counter, s.read_ns)
            if d is None or r.interval_s is None:
                continue
            assert d.energy_j >= 0
            # no absurd energy: never more than the scripted peak power over the interval (+1 mJ rounding)
            assert d.energy_j <= 1000.0 * r.interval_s * 1.0001 + 1e-3
            g = gpus[int(r.device.split("-")[1])]
            driver_s, holders = gpu_drivers(r, job_of_pid)
            assert all(v >= 0 and math.isfinite(v) for v in (*driver_s.values(), *holders.values()))
            pool = Pool("gpu", r.device, r.counter.source, d.energy_j, r.interval_s, g["idle_w"], g["policy"])
            charges = attribute(pool, driver_s, holders)
            total = math.fsum(ch.energy_j for ch in charges.values())
            assert total == pytest.approx(d.energy_j, rel=1e-9, abs=1e-9)
            assert all(ch.dynamic_j >= -1e-9 and ch.static_j >= -1e-9 for ch in charges.values())


@settings(max_examples=60, deadline=None)
@given(layout=st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 7]), st.integers(1, 3)), min_size=1, max_size=4),
       steps=st.lists(st.floats(0.0, 700.0), min_size=1, max_size=5))
def test_mig_pools_sum_to_the_parent_for_any_layout(layout: list[tuple[int, int]], steps: list[float]) -> None:
    migs = []
    used = 0
    for gi, (slices, cis) in enumerate(layout):
        if used + slices > 7:
            break
        used += slices
        for ci in range(min(cis, slices)):
            migs.append(FakeMig(f"MIG-{gi}-{ci}", gi_id=gi, gi_slices=slices, ci_slices=1, ci_id=ci))
    parent = FakeGpu("GPU-m", mig_mode=1, mig=migs)
    fake = FakeNvml([parent])
    c = PoolReader(fake)
    tracker = CounterTracker()
    for r in c.read(fake.now_ns).devices:
        tracker.delta(r.counter, fake.now_ns)
    for power_w in steps:
        before = parent.energy_mj
        fake.step(1.0, {0: Load(power_w)})
        s = c.read(fake.now_ns)
        maybe = [tracker.delta(r.counter, s.read_ns) for r in s.devices]
        deltas = [d for d in maybe if d is not None]
        assert len(deltas) == len(maybe) and all(d.energy_j >= 0 for d in deltas)
        assert math.fsum(d.energy_j for d in deltas) == pytest.approx((parent.energy_mj - before) / 1000.0,
                                                                      abs=1e-6)


def test_unexplained_gpu_energy_is_idle_when_nobody_was_on_it_and_system_when_unknown() -> None:
    nobody = reading([])
    assert unexplained_job(nobody) == IDLE_JOB
    unknown = GpuDeviceReading(EnergyCounter("gpu", "GPU-x", "nvml", 0), (), False, 2.0, processes_seen=False)
    assert unexplained_job(unknown) == SYSTEM_JOB
    pool = Pool("gpu", "GPU-x", "nvml", 130.0, 2.0, None, StaticPolicy.OCCUPANCY)
    assert attribute(pool, *gpu_drivers(nobody, jobs({})), unexplained_job(nobody)) == {
        IDLE_JOB: Charge(dynamic_j=130.0, static_j=0.0, driver_s=0.0)}

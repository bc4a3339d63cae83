"""The collector over the real pynvml (tests/fake_nvml_driver.py) equals the collector over the fake module.

The fake module and the fake driver answer from the same FakeNvml state; one
goes through pynvml's ctypes wrappers, the other does not. Any difference is
a place where our fake module misdescribes pynvml, or where we misuse it.
Also here: what an older libnvidia-ml without some symbols does to us.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fake_nvml import FakeGpu, FakeNvml, Load
from tests.fake_nvml_driver import FakeNvmlDriver, real_pynvml
from tests.nvml_pools import PoolReader as NvmlCollector  # reader + GPU accounting: per-pool figures
from wattledger.model.gpu import SOURCE_POWER, GpuPoolSample as GpuSample

GIB = 1 << 30
PIDS = (101, 102, 103)


def test_pynvml_resolves_every_symbol_it_needs_from_the_driver() -> None:
    import pynvml

    fake = FakeNvml([FakeGpu("GPU-a", compute={101: GIB}, graphics={102: None})])
    with real_pynvml(fake) as driver:
        c = NvmlCollector(driver.pynvml)
        c.read(fake.now_ns)
        fake.step(1.0, {0: Load(200.0, {101: 50})})
        s = c.read(fake.now_ns)
        looked_up = set(pynvml._nvmlGetFunctionPointer_cache)
        c.close()
    assert {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetProcessUtilization",
            "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetHandleByIndex_v2"} <= looked_up
    procs = {p.pid: p for p in s.devices[0].processes}
    assert procs[101].sm_busy_s == pytest.approx(0.5) and procs[101].used_memory_bytes == GIB
    assert procs[102].used_memory_bytes is None  # NVML_VALUE_NOT_AVAILABLE came back as None
    assert s.devices[0].counter.counter_uj == 200_000_000
    assert pynvml.nvmlLib is None or not isinstance(pynvml.nvmlLib, FakeNvmlDriver)  # restored


step_st = st.fixed_dictionaries({
    "dt_s": st.sampled_from([0.5, 1.0, 2.5]),
    "power_w": st.lists(st.floats(50.0, 700.0), min_size=2, max_size=2),
    "sm": st.lists(st.dictionaries(st.sampled_from(PIDS), st.integers(0, 100), max_size=3), min_size=2, max_size=2),
    "holders": st.lists(st.dictionaries(st.sampled_from(PIDS), st.one_of(st.none(), st.integers(0, 8 * GIB)),
                                        max_size=3), min_size=2, max_size=2),
    "lost": st.lists(st.booleans(), min_size=2, max_size=2),
    "reset": st.booleans(),
    "error": st.sampled_from([None, ("nvmlDeviceGetComputeRunningProcesses", 4),
                              ("nvmlDeviceGetProcessUtilization", 3), ("nvmlDeviceGetTotalEnergyConsumption", 999)]),
})


def _gpus(counterless: bool, empty_success: bool) -> list[FakeGpu]:
    return [FakeGpu("GPU-a", energy_mj=10_000_000, util_empty_is_success=empty_success),
            FakeGpu("GPU-b", unsupported={"nvmlDeviceGetTotalEnergyConsumption"} if counterless else set())]


def _script(fake: FakeNvml, step: dict[str, Any]) -> None:
    for i, gpu in enumerate(fake.gpus):
        gpu.lost = step["lost"][i] and i == 1  # GPU-b comes and goes; GPU-a stays
        gpu.compute = dict(step["holders"][i])
        gpu.errors.clear()
    if step["reset"]:
        fake.gpus[0].energy_mj = 0
    if step["error"] is not None:
        fn, code = step["error"]
        fake.gpus[0].errors[fn] = code
    fake.step(step["dt_s"], {i: Load(step["power_w"][i], step["sm"][i]) for i in range(2)})


def _comparable(sample: GpuSample) -> tuple[Any, ...]:
    return sample.devices, tuple((f.state, f.detail, f.devices) for f in sample.failures)


@settings(max_examples=60)
@given(steps=st.lists(step_st, min_size=1, max_size=8), counterless=st.booleans(), empty_success=st.booleans())
def test_real_pynvml_and_the_fake_module_give_the_collector_the_same_readings(
        steps: list[dict[str, Any]], counterless: bool, empty_success: bool) -> None:
    direct = FakeNvml(_gpus(counterless, empty_success))
    through = copy.deepcopy(direct)
    a = NvmlCollector(direct)
    with real_pynvml(through) as driver:
        b = NvmlCollector(driver.pynvml)
        assert a.probe() == b.probe()
        assert _comparable(a.read(direct.now_ns)) == _comparable(b.read(through.now_ns))
        for step in steps:
            _script(direct, step)
            _script(through, step)
            assert _comparable(a.read(direct.now_ns)) == _comparable(b.read(through.now_ns))
        b.close()


class OldDriver(FakeNvmlDriver):
    """A libnvidia-ml without some symbols (an older driver than nvidia-ml-py expects)."""

    missing: frozenset[str] = frozenset()

    def __getattr__(self, name: str) -> Any:
        if name in type(self).missing:
            raise AttributeError(name)
        return super().__getattr__(name)


def _with_old_driver(missing: set[str], fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> Any:
    import pynvml

    cls = type("Old", (OldDriver,), {"missing": frozenset(missing)})
    driver = cls(fake)
    monkeypatch.setattr(pynvml, "nvmlLib", driver)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    return pynvml


def test_a_driver_without_the_v3_process_lists_still_measures_energy(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """pynvml raises NVMLLibraryMismatchError for an unversioned call whose symbol is missing."""
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: GIB})])
    nvml = _with_old_driver({"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetGraphicsRunningProcesses_v3"},
                            fake, monkeypatch)
    c = NvmlCollector(nvml)
    with caplog.at_level(logging.WARNING, "wattledger.collectors.nvml"):
        assert c.probe().ok
        for _ in range(3):
            fake.step(1.0, {0: Load(150.0, {101: 100})})
            s = c.read(fake.now_ns)
            assert not s.failures
    # energy is measured; the busy pid is still seen through the utilisation samples
    assert s.devices[0].counter.counter_uj == 450_000_000
    assert [(p.pid, p.holds_context) for p in s.devices[0].processes] == [(101, False)]
    assert sum("ComputeRunningProcesses" in m for m in caplog.messages) == 1


def test_a_driver_without_the_energy_counter_symbol_integrates_power(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([FakeGpu("GPU-a", power_instant_mw=200_000)])
    nvml = _with_old_driver({"nvmlDeviceGetTotalEnergyConsumption"}, fake, monkeypatch)
    c = NvmlCollector(nvml)
    assert "integrating power" in c.probe().detail
    c.read(fake.now_ns)
    fake.step(2.0, {0: Load(200.0)})
    r = c.read(fake.now_ns).devices[0]
    assert r.counter.source == SOURCE_POWER and r.counter.counter_uj == pytest.approx(400e6)


def test_the_cost_benchmark_runs_and_subtracts_the_fake_drivers_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/nvml_cost.py (a benchmark, not a timed test): it runs, and ours <= total."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "nvml_cost.py"
    spec = importlib.util.spec_from_file_location("nvml_cost", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "nvml_cost", mod)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "READS", 5)
    r = mod.measure(2, 3)
    assert 0 < r["mean_ms"] <= r["total_ms"]


def test_samples_arriving_between_pynvmls_two_calls_are_a_race_not_a_failure() -> None:
    """pynvml sizes the utilisation buffer, then fills it; a sample in between makes the fill
    answer INSUFFICIENT_SIZE. The collector asks again instead of dropping the GPU's tick."""
    from tests.fake_nvml import UtilSample

    fake = FakeNvml([FakeGpu("GPU-a", compute={101: GIB})])
    calls = {"n": 0}

    def grow_between_calls(fn: str, gpu: FakeGpu) -> None:
        if fn == "nvmlDeviceGetProcessUtilization":
            calls["n"] += 1
            if calls["n"] == 2:  # the fill call of the first query of the read below
                gpu.samples.append(UtilSample(pid=101, timeStamp=fake.now_us, smUtil=100, memUtil=0,
                                              encUtil=0, decUtil=0))

    with real_pynvml(fake) as driver:
        c = NvmlCollector(driver.pynvml)
        c.read(fake.now_ns)
        fake.step(1.0, {0: Load(200.0, {101: 50})})
        calls["n"] = 0
        fake.before_call = grow_between_calls
        s = c.read(fake.now_ns)
        c.close()
    assert calls["n"] >= 4  # sized, refused, sized again, filled
    assert not s.failures and s.devices[0].interval_s == pytest.approx(1.0)
    assert s.devices[0].processes[0].sm_busy_s == pytest.approx(0.5)  # the late sample repeats a timestamp


def test_a_buffer_that_never_fits_is_an_error_after_a_few_tries() -> None:
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: GIB}), FakeGpu("GPU-b")])
    c = NvmlCollector(fake)
    assert c.probe().ok
    fake.gpus[0].errors["nvmlDeviceGetProcessUtilization"] = 7
    fake.calls.clear()
    s = c.read(fake.now_ns)
    assert [r.device for r in s.devices] == ["GPU-b"]
    assert s.failures and "NVML error 7" in s.failures[0].detail
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == 3 + 1  # three tries on GPU-a, one on GPU-b


def test_an_unexpected_error_while_probing_utilisation_fails_that_gpu_not_the_probe() -> None:
    fake = FakeNvml([FakeGpu("GPU-a", errors={"nvmlDeviceGetProcessUtilization": 999}), FakeGpu("GPU-b")])
    result = NvmlCollector(fake).probe()
    assert result.ok and result.devices == ("GPU-b",) and "1 failed" in result.detail


def test_the_fake_module_path_retries_the_race_too() -> None:
    fake = FakeNvml([FakeGpu("GPU-a", compute={101: GIB})])
    c = NvmlCollector(fake)
    c.read(fake.now_ns)
    fake.step(1.0, {0: Load(200.0, {101: 50})})
    fake.gpus[0].errors_once["nvmlDeviceGetProcessUtilization"] = 7
    fake.gpus[0].errors_once["nvmlDeviceGetComputeRunningProcesses"] = 7
    s = c.read(fake.now_ns)
    assert not s.failures and s.devices[0].processes[0].sm_busy_s == pytest.approx(0.5)

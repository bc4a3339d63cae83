"""NvmlCollector over the fake NVML: energy, processes, utilisation, fallbacks, failures."""

from __future__ import annotations

import logging
import sys

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests import fake_nvml as F
from tests.conftest import NvmlApi
from tests.fake_nvml import FakeGpu, FakeMig, FakeNvml, Load
from wattledger.accounting.counters import CounterTracker
from wattledger.model.readings import EnergyCounter, SourceState
from tests.nvml_pools import PoolReader
from wattledger.collectors.nvml import NvmlCollector
from wattledger.accounting.gpu import measure_for, mig_shares, sm_busy_seconds
from wattledger.model.gpu import SOURCE_MIG, SOURCE_POWER, UNALLOCATED_SUFFIX, GpuDeviceReading, GpuPoolSample, Measure
from wattledger.model.gpu import SOURCE
from wattledger.model.readings import Problem as NvmlProblem

GIB = 1 << 30


# Every collector test runs twice: on the fake module, and on the real pynvml over
# the fake driver (tests/fake_nvml_driver.py), which answers the same through ctypes.
_api: NvmlApi = lambda fake: fake  # noqa: E731 - set per test by the fixture below


@pytest.fixture(autouse=True)
def _each_binding(nvml_api: NvmlApi) -> None:
    global _api
    _api = nvml_api


def over(fake: FakeNvml) -> PoolReader:
    return PoolReader(_api(fake))


def started(*gpus: FakeGpu) -> tuple[FakeNvml, PoolReader]:
    fake = FakeNvml(gpus)
    c = over(fake)
    assert c.probe().ok
    return fake, c


def delta_j(tracker: CounterTracker, counter: EnergyCounter, now_ns: int) -> float:
    """The interval energy of a read that is not the first (so there is a delta)."""
    d = tracker.delta(counter, now_ns)
    assert d is not None
    return d.energy_j


def by_device(sample: GpuPoolSample) -> dict[str, GpuDeviceReading]:
    return {r.device: r for r in sample.devices}


# -- probe states ----------------------------------------------------------------

@pytest.mark.parametrize("code,problem,state", [
    (F.NVML_ERROR_LIBRARY_NOT_FOUND, NvmlProblem.LIBRARY_MISSING, SourceState.MISSING),
    (F.NVML_ERROR_DRIVER_NOT_LOADED, NvmlProblem.DRIVER_NOT_LOADED, SourceState.MISSING),
    (F.NVML_ERROR_NO_PERMISSION, NvmlProblem.NO_PERMISSION, SourceState.PERMISSION_DENIED),
    (F.NVML_ERROR_UNKNOWN, NvmlProblem.ERROR, SourceState.ERROR),
])
def test_init_failures_are_typed_states(code: int, problem: NvmlProblem, state: SourceState) -> None:
    c = over(FakeNvml([FakeGpu("GPU-a")], init_error=code))
    result = c.probe()
    assert result.state is state
    assert result.problem is problem
    assert result.fix
    sample = c.read(1)
    assert sample.devices == () and sample.failures == (result,)


def test_no_gpu_is_missing() -> None:
    result = over(FakeNvml([])).probe()
    assert result.problem is NvmlProblem.NO_GPU and result.state is SourceState.MISSING


def test_python_package_missing_is_library_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    result = NvmlCollector().probe()
    assert result.problem is NvmlProblem.LIBRARY_MISSING
    assert "nvidia-ml-py" in result.detail


def test_probe_lists_each_gpu_and_its_capabilities() -> None:
    old = FakeGpu("GPU-old", name="Tesla P100", unsupported={"nvmlDeviceGetTotalEnergyConsumption",
                                                              "nvmlDeviceGetProcessUtilization"})
    fake, c = started(FakeGpu("GPU-new"), old)
    rows = c.device_probes()
    assert [r.devices for r in rows] == [("GPU-new",), ("GPU-old",)]
    assert "energy counter" in rows[0].detail and "SM utilisation" in rows[0].detail
    assert "integrating power" in rows[1].detail and "split by memory" in rows[1].detail


def test_one_gpu_lost_at_probe_others_measured() -> None:
    lost = FakeGpu("GPU-b", lost=True)
    fake, c = started(FakeGpu("GPU-a"), lost)
    probe = c.collector.last_probe
    assert probe is not None and probe.devices == ("GPU-a",)
    assert "1 failed" in probe.detail and "GPU lost" in probe.detail
    assert c.device_probes()[1].problem is NvmlProblem.GPU_LOST


# -- energy ----------------------------------------------------------------------------

def test_counter_is_mj_converted_to_integer_uj() -> None:
    fake, c = started(FakeGpu("GPU-a", energy_mj=123_456))
    counter = c.read(fake.now_ns).devices[0].counter
    assert counter.counter_uj == 123_456_000 and isinstance(counter.counter_uj, int)
    assert (counter.component, counter.device, counter.source) == ("gpu", "GPU-a", SOURCE)
    assert counter.wrap_uj is None


def test_counter_reset_gives_the_energy_since_reset_not_negative() -> None:
    fake, c = started(FakeGpu("GPU-a", energy_mj=5_000_000))
    tracker = CounterTracker()
    s = c.read(fake.now_ns)
    assert tracker.delta(s.devices[0].counter, s.read_ns) is None
    fake.step(1.0, {0: Load(200.0)})
    s = c.read(fake.now_ns)
    assert delta_j(tracker, s.devices[0].counter, s.read_ns) == pytest.approx(200.0)
    fake.gpus[0].energy_mj = 0  # driver reload
    fake.step(1.0, {0: Load(150.0)})
    s = c.read(fake.now_ns)
    d = tracker.delta(s.devices[0].counter, s.read_ns)
    assert d is not None and d.reset and d.energy_j == pytest.approx(150.0)


def test_power_integration_prefers_the_instant_field_and_is_flagged() -> None:
    gpu = FakeGpu("GPU-a", unsupported={"nvmlDeviceGetTotalEnergyConsumption"})
    fake, c = started(gpu)
    assert c.read(fake.now_ns).devices[0].counter.counter_uj == 0  # first read adds nothing
    fake.step(2.0, {0: Load(power_w=100.0, power_instant_w=300.0)})
    r = c.read(fake.now_ns).devices[0]
    assert r.counter.source == SOURCE_POWER
    # trapezoid between 60 W (the fake's initial instant power) and 300 W over 2 s
    assert r.counter.counter_uj == pytest.approx((60 + 300) / 2 * 2.0 * 1e6)


def test_power_integration_falls_back_to_the_averaged_power(caplog: pytest.LogCaptureFixture) -> None:
    gpu = FakeGpu("GPU-a", power_mw=100_000,
                  unsupported={"nvmlDeviceGetTotalEnergyConsumption", "power_instant"})
    fake, c = started(gpu)
    with caplog.at_level(logging.INFO, "wattledger.collectors.nvml"):
        c.read(fake.now_ns)
        fake.step(1.0, {0: Load(power_w=100.0)})
        r = c.read(fake.now_ns).devices[0]
    assert r.counter.source == SOURCE_POWER
    assert r.counter.counter_uj == pytest.approx(100.0 * 1e6)
    assert sum("no instantaneous power field" in m for m in caplog.messages) == 1


# -- processes and utilisation ---------------------------------------------------------

def test_sm_busy_seconds_from_utilisation_samples() -> None:
    fake, c = started(FakeGpu("GPU-a", compute={101: 2 * GIB, 102: 6 * GIB}))
    first = c.read(fake.now_ns).devices[0]
    assert first.interval_s is None and all(p.sm_busy_s is None for p in first.processes)
    fake.step(2.0, {0: Load(300.0, {101: 75, 102: 25})})
    r = c.read(fake.now_ns).devices[0]
    assert r.util_available and r.interval_s == pytest.approx(2.0)
    procs = {p.pid: p for p in r.processes}
    assert procs[101].sm_busy_s == pytest.approx(1.5)
    assert procs[102].sm_busy_s == pytest.approx(0.5)
    assert procs[102].used_memory_bytes == 6 * GIB


def test_last_seen_timestamp_means_samples_are_not_counted_twice() -> None:
    fake, c = started(FakeGpu("GPU-a", compute={101: GIB}))
    c.read(fake.now_ns)
    fake.step(1.0, {0: Load(300.0, {101: 100})})
    assert c.read(fake.now_ns).devices[0].processes[0].sm_busy_s == pytest.approx(1.0)
    fake.step(1.0, {0: Load(80.0, {101: 0})})  # idle: no new samples -> NOT_FOUND
    assert c.read(fake.now_ns).devices[0].processes[0].sm_busy_s == 0.0


def test_empty_success_quirk_counts_as_no_samples() -> None:
    fake, c = started(FakeGpu("GPU-a", compute={101: GIB}, util_empty_is_success=True))
    c.read(fake.now_ns)
    fake.step(1.0)
    s = c.read(fake.now_ns)
    assert not s.failures and s.devices[0].processes[0].sm_busy_s == 0.0


def test_processes_appear_and_leave_between_reads() -> None:
    fake, c = started(FakeGpu("GPU-a", compute={101: GIB}))
    c.read(fake.now_ns)
    fake.gpus[0].compute[102] = GIB
    fake.step(1.0, {0: Load(300.0, {101: 50, 102: 50})})
    assert {p.pid for p in c.read(fake.now_ns).devices[0].processes} == {101, 102}
    # 101 was busy during this interval, then exited before the read: still charged, not a holder
    fake.step(1.0, {0: Load(300.0, {101: 80, 102: 20})})
    del fake.gpus[0].compute[101]
    procs = {p.pid: p for p in c.read(fake.now_ns).devices[0].processes}
    assert procs[101].holds_context is False and procs[101].sm_busy_s == pytest.approx(0.8)
    assert procs[102].holds_context is True


def test_graphics_processes_count_and_a_pid_in_both_lists_once() -> None:
    fake, c = started(FakeGpu("GPU-a", compute={101: GIB}, graphics={101: GIB, 103: 2 * GIB}))
    procs = c.read(fake.now_ns).devices[0].processes
    assert [(p.pid, p.used_memory_bytes) for p in procs] == [(101, GIB), (103, 2 * GIB)]


def test_utilisation_not_supported_falls_back_to_memory_then_equal(caplog: pytest.LogCaptureFixture) -> None:
    gpu = FakeGpu("GPU-a", compute={101: GIB, 102: 3 * GIB}, unsupported={"nvmlDeviceGetProcessUtilization"})
    fake, c = started(gpu)
    with caplog.at_level(logging.INFO, "wattledger.collectors.nvml"):
        r = c.read(fake.now_ns).devices[0]
    assert measure_for(r) is Measure.MEMORY and all(p.sm_busy_s is None for p in r.processes)
    gpu.compute = {101: None, 102: None}  # e.g. memory not reported
    fake.step(1.0)
    assert measure_for(c.read(fake.now_ns).devices[0]) is Measure.EQUAL


def test_process_list_without_permission_is_logged_once_and_energy_still_read(
        caplog: pytest.LogCaptureFixture) -> None:
    gpu = FakeGpu("GPU-a", compute={101: GIB}, errors={"nvmlDeviceGetComputeRunningProcesses": F.NVML_ERROR_NO_PERMISSION})
    fake, c = started(gpu)
    with caplog.at_level(logging.WARNING, "wattledger.collectors.nvml"):
        for _ in range(3):
            fake.step(1.0)
            s = c.read(fake.now_ns)
            assert not s.failures and s.devices[0].processes == ()
    assert sum("nvmlDeviceGetComputeRunningProcesses" in m for m in caplog.messages) == 1


# -- failures ---------------------------------------------------------------------------

def test_gpu_lost_mid_run_is_reported_once_and_the_others_continue(caplog: pytest.LogCaptureFixture) -> None:
    fake, c = started(FakeGpu("GPU-a"), FakeGpu("GPU-b"))
    tracker = CounterTracker()
    for r in c.read(fake.now_ns).devices:
        tracker.delta(r.counter, fake.now_ns)
    fake.gpus[1].lost = True
    with caplog.at_level(logging.WARNING, "wattledger.collectors.nvml"):
        for _ in range(3):
            fake.step(1.0, {0: Load(100.0), 1: Load(100.0)})
            s = c.read(fake.now_ns)
            assert [r.device for r in s.devices] == ["GPU-a"]
            assert len(s.failures) == 1
            f = s.failures[0]
            assert f.problem is NvmlProblem.GPU_LOST and f.devices == ("GPU-b",)
            assert f.state is SourceState.ERROR and "dmesg" in f.fix
            assert delta_j(tracker, s.devices[0].counter, s.read_ns) == pytest.approx(100.0)
    assert sum("GPU lost" in m for m in caplog.messages) == 1
    # It comes back: the first read after the gap is a baseline (no interval), then normal.
    fake.gpus[1].lost = False
    fake.step(1.0, {0: Load(100.0), 1: Load(100.0)})
    back = by_device(c.read(fake.now_ns))
    assert back["GPU-b"].interval_s is None
    fake.step(1.0, {0: Load(100.0), 1: Load(100.0)})
    assert by_device(c.read(fake.now_ns))["GPU-b"].interval_s == pytest.approx(1.0)


def test_integrated_power_does_not_bridge_a_gap() -> None:
    gpu = FakeGpu("GPU-a", unsupported={"nvmlDeviceGetTotalEnergyConsumption"})
    fake, c = started(gpu)
    c.read(fake.now_ns)
    fake.step(1.0, {0: Load(100.0)})
    before = c.read(fake.now_ns).devices[0].counter.counter_uj
    gpu.lost = True
    fake.step(100.0, {0: Load(100.0)})
    assert c.read(fake.now_ns).failures
    gpu.lost = False
    fake.step(1.0, {0: Load(100.0)})
    assert c.read(fake.now_ns).devices[0].counter.counter_uj == before  # nothing invented for the gap


def test_unexpected_error_on_one_call_fails_that_gpu_only() -> None:
    fake, c = started(FakeGpu("GPU-a"), FakeGpu("GPU-b"))
    fake.gpus[0].errors["nvmlDeviceGetTotalEnergyConsumption"] = F.NVML_ERROR_UNKNOWN
    s = c.read(fake.now_ns)
    assert [r.device for r in s.devices] == ["GPU-b"]
    assert s.failures[0].problem is NvmlProblem.ERROR


# -- MIG -----------------------------------------------------------------------------------

def mig_gpu() -> FakeGpu:
    return FakeGpu("GPU-m", mig_mode=F.NVML_DEVICE_MIG_ENABLE, max_mig=7, mig=[
        FakeMig("MIG-a", gi_id=1, gi_slices=3, ci_slices=3, compute={201: 10 * GIB}),
        FakeMig("MIG-b", gi_id=2, gi_slices=2, ci_slices=2, compute={202: 5 * GIB}),
    ])


def test_mig_shares_by_slices() -> None:
    shares = mig_shares({"a": (1, 3, 3), "b": (2, 2, 2)}, 7)
    assert shares == pytest.approx({"a": 3 / 7, "b": 2 / 7})
    # two compute instances of one 4-slice GPU instance (1 + 3 compute slices)
    shares = mig_shares({"c1": (5, 4, 1), "c3": (5, 4, 3)}, 7)
    assert shares == pytest.approx({"c1": 4 / 7 * 1 / 4, "c3": 4 / 7 * 3 / 4})


def test_mig_instances_are_pools_and_conserve_the_parent_energy() -> None:
    fake, c = started(mig_gpu())
    tracker = CounterTracker()
    s = c.read(fake.now_ns)
    assert [r.device for r in s.devices] == ["MIG-a", "MIG-b", "GPU-m" + UNALLOCATED_SUFFIX]
    for r in s.devices:
        assert tracker.delta(r.counter, s.read_ns) is None
    fake.step(1.0, {0: Load(350.0)})
    s = c.read(fake.now_ns)
    deltas = {r.device: delta_j(tracker, r.counter, s.read_ns) for r in s.devices}
    assert sum(deltas.values()) == pytest.approx(350.0)
    assert deltas["MIG-a"] == pytest.approx(150.0) and deltas["MIG-b"] == pytest.approx(100.0)
    r = by_device(s)["MIG-a"]
    assert r.counter.source == SOURCE_MIG and r.parent == "GPU-m"
    assert measure_for(r) is Measure.MEMORY and r.processes[0].pid == 201  # no per-process util on MIG


def test_mig_new_instance_share_goes_to_unallocated_for_its_first_read() -> None:
    gpu = mig_gpu()
    fake, c = started(gpu)
    tracker = CounterTracker()

    def deltas() -> dict[str, float | None]:
        s = c.read(fake.now_ns)
        out = {}
        for r in s.devices:
            d = tracker.delta(r.counter, s.read_ns)
            out[r.device] = None if d is None else d.energy_j
        return out

    deltas()
    fake.step(1.0, {0: Load(700.0)})
    deltas()
    gpu.mig.append(FakeMig("MIG-c", gi_id=3, gi_slices=2, ci_slices=2, parent=gpu))
    fake.step(1.0, {0: Load(700.0)})
    d = deltas()
    assert d["MIG-c"] is None  # first read: baseline
    assert sum(v for v in d.values() if v) == pytest.approx(700.0)  # nothing lost
    fake.step(1.0, {0: Load(700.0)})
    d = deltas()
    assert d["MIG-c"] == pytest.approx(200.0) and sum(v or 0.0 for v in d.values()) == pytest.approx(700.0)


# -- SM-busy seconds from samples -----------------------------------------------------------

def test_sm_busy_short_burst_is_not_stretched_to_the_interval() -> None:
    """One 100% sample of a short job next to a steady 50% job over a 5 s tick."""
    steady = [(1, 1_000_000 + k * 200_000, 50) for k in range(1, 26)]
    burst = [(2, 3_000_000, 100)]
    busy = sm_busy_seconds(steady + burst, 1_000_000, 5.0)
    assert busy[1] == pytest.approx(2.5)
    assert busy[2] == pytest.approx(0.2)  # one sampling period, not 5 s


def test_sm_busy_idle_gaps_count_as_idle() -> None:
    # samples every 0.2 s for 1 s, then nothing for 3 s, then one more
    samples = [(1, k * 200_000, 100) for k in range(1, 6)] + [(1, 4_200_000, 100)]
    assert sm_busy_seconds(samples, 0, 5.0)[1] == pytest.approx(1.2)


def test_sm_busy_single_sample_stands_for_the_interval() -> None:
    assert sm_busy_seconds([(7, 123, 40)], 0, 2.0) == {7: pytest.approx(0.8)}
    # a previous read's timestamp gives the sample its span, capped at the interval
    assert sm_busy_seconds([(7, 5_000_000, 40)], 4_500_000, 2.0) == {7: pytest.approx(0.2)}
    assert sm_busy_seconds([(7, 9_000_000, 100)], 1_000_000, 2.0) == {7: pytest.approx(2.0)}


def test_a_gpu_lost_at_discovery_is_found_again_later() -> None:
    fake, c = started(FakeGpu("GPU-a"), FakeGpu("GPU-b", lost=True))
    c.reprobe_every = 3
    assert [r.device for r in c.read(fake.now_ns).devices] == ["GPU-a"]
    fake.gpus[1].lost = False
    seen = set()
    for _ in range(3):
        fake.step(1.0)
        seen |= {r.device for r in c.read(fake.now_ns).devices}
    assert seen == {"GPU-a", "GPU-b"}


def test_sm_busy_samples_of_different_pids_a_few_ms_apart_do_not_shorten_each_other() -> None:
    """Two jobs at 50 % for 5 s whose samples the driver stamps 3 ms apart: 2.5 s each."""
    period = 200_000
    a = [(1, 1_000_000 + k * period, 50) for k in range(1, 26)]
    b = [(2, 1_000_000 + k * period + 3_000, 50) for k in range(1, 26)]
    busy = sm_busy_seconds(a + b, 1_000_000, 5.0)
    assert busy[1] == pytest.approx(2.5) and busy[2] == pytest.approx(2.5)


@given(
    utils=st.lists(st.lists(st.integers(0, 100), min_size=1, max_size=30), min_size=1, max_size=4),
    offsets_us=st.lists(st.integers(0, 199_999), min_size=4, max_size=4),
    interval_s=st.sampled_from([1.0, 5.0, 10.0]),
)
def test_sm_busy_does_not_depend_on_when_within_a_period_each_pid_is_sampled(
        utils: list[list[int]], offsets_us: list[int], interval_s: float) -> None:
    assume(any(len(series) >= 2 for series in utils))  # a period to measure (else spans reach back to the last read)
    period, start = 200_000, 10_000_000
    aligned, shifted = [], []
    for pid, series in enumerate(utils, 1):
        for k, pct in enumerate(series, 1):
            aligned.append((pid, start + k * period, pct))
            shifted.append((pid, start + k * period + offsets_us[pid - 1], pct))
    a = sm_busy_seconds(aligned, start, interval_s)
    b = sm_busy_seconds(shifted, start, interval_s)
    assert a == pytest.approx(b)
    assert all(0.0 <= v <= interval_s for v in b.values())


# -- transient failures: the next good read charges the gap -------------------------------------

def test_a_transient_error_is_bridged_by_the_next_read() -> None:
    fake, c = started(FakeGpu("GPU-a", compute={101: GIB}))
    tracker = CounterTracker()
    s = c.read(fake.now_ns)
    tracker.delta(s.devices[0].counter, s.read_ns)
    fake.step(1.0, {0: Load(300.0, {101: 100})})
    fake.gpus[0].errors_once["nvmlDeviceGetComputeRunningProcesses"] = F.NVML_ERROR_UNKNOWN  # after the energy read
    assert c.read(fake.now_ns).failures
    fake.step(1.0, {0: Load(100.0, {101: 25})})
    r = c.read(fake.now_ns).devices[0]
    assert r.interval_s == pytest.approx(2.0)  # spans the failed read
    assert r.processes[0].sm_busy_s == pytest.approx(1.25)  # both seconds' samples, none lost
    assert delta_j(tracker, r.counter, fake.now_ns) == pytest.approx(400.0)


def test_a_long_run_of_failures_ends_in_a_baseline() -> None:
    fake, c = started(FakeGpu("GPU-a", compute={101: GIB}))
    c.bridge_gap_s = 5.0
    c.read(fake.now_ns)
    fake.gpus[0].errors["nvmlDeviceGetTotalEnergyConsumption"] = F.NVML_ERROR_UNKNOWN
    for _ in range(7):
        fake.step(1.0, {0: Load(300.0, {101: 100})})
        assert c.read(fake.now_ns).failures
    fake.gpus[0].errors.clear()
    fake.step(1.0, {0: Load(300.0, {101: 100})})
    assert c.read(fake.now_ns).devices[0].interval_s is None  # 8 s: too long to charge by one read
    fake.step(1.0, {0: Load(300.0, {101: 100})})
    assert c.read(fake.now_ns).devices[0].interval_s == pytest.approx(1.0)

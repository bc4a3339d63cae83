from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattledger.accounting.counters import CounterTracker
from wattledger.model.readings import EnergyCounter


def c(value: int, wrap: int | None = None, source: str = "rapl") -> EnergyCounter:
    return EnergyCounter("cpu", "package-0", source, value, wrap)


def test_first_read_gives_no_delta() -> None:
    assert CounterTracker().delta(c(5_000_000), 1) is None


def test_wrap_and_reset() -> None:
    t = CounterTracker()
    t.delta(c(9_000_000, wrap=10_000_000), 1_000_000_000)
    d = t.delta(c(500_000, wrap=10_000_000), 2_000_000_000)
    assert d is not None and d.wrapped and d.energy_j == pytest.approx(1.5)
    # a 64-bit NVML-like counter going down: a reset, counted from zero
    t.delta(c(900_000_000, source="nvml"), 1_000_000_000)
    r = t.delta(c(2_000_000, source="nvml"), 2_000_000_000)
    assert r is not None and r.reset and r.energy_j == pytest.approx(2.0)


def test_interval_near_wrap_period_is_suspect() -> None:
    t = CounterTracker()
    t.delta(c(0, wrap=100_000_000), 0)  # wraps every 100 J
    d = t.delta(c(95_000_000, wrap=100_000_000), 1_000_000_000)  # 95 W over 1 s: 0.95 of the period
    assert d is not None and d.suspect


@given(
    start=st.integers(0, 2**32 - 1),
    steps=st.lists(st.integers(0, 2**31), min_size=1, max_size=20),
)
def test_wrapping_counter_deltas_sum_to_true_energy(start: int, steps: list[int]) -> None:
    """Any sequence of increments smaller than the range is recovered exactly through wraps."""
    wrap = 2**32
    t = CounterTracker()
    t.delta(c(start, wrap), 0)
    value, total_uj = start, 0
    for i, step in enumerate(steps, 1):
        value = (value + step) % wrap
        d = t.delta(c(value, wrap), i * 10**9)
        assert d is not None
        total_uj += round(d.energy_j * 1e6)
    assert total_uj == sum(steps)

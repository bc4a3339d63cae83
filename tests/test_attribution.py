from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattledger.accounting.attribution import Pool, StaticPolicy, attribute
from wattledger.model.jobs import IDLE_JOB, SYSTEM_JOB, JobKey

A, B = JobKey("a", "alice"), JobKey("b", "bob")


def pool(energy_j: float, idle_w: float | None, policy: StaticPolicy, interval_s: float = 1.0) -> Pool:
    return Pool("cpu", "package-0", "rapl", energy_j, interval_s, idle_w, policy)


def test_dynamic_by_driver_static_by_policy() -> None:
    p = pool(100.0, 40.0, StaticPolicy.PROPORTIONAL)
    ch = attribute(p, {A: 3.0, B: 1.0})
    assert ch[A].dynamic_j == pytest.approx(45.0) and ch[B].dynamic_j == pytest.approx(15.0)
    assert ch[A].static_j == pytest.approx(30.0) and ch[B].static_j == pytest.approx(10.0)

    ch = attribute(pool(100.0, 40.0, StaticPolicy.IDLE), {A: 3.0, B: 1.0})
    assert ch[IDLE_JOB].static_j == 40.0 and ch[A].static_j == 0.0

    ch = attribute(pool(100.0, 40.0, StaticPolicy.OCCUPANCY), {A: 3.0, B: 1.0}, holders={A: 1.0, B: 1.0})
    assert ch[A].static_j == pytest.approx(20.0) and ch[B].static_j == pytest.approx(20.0)


def test_nothing_running_goes_to_reserved_jobs() -> None:
    ch = attribute(pool(50.0, 30.0, StaticPolicy.PROPORTIONAL), {})
    assert ch[IDLE_JOB].energy_j == 30.0 and ch[SYSTEM_JOB].energy_j == 20.0


def test_static_capped_at_measured_energy() -> None:
    ch = attribute(pool(10.0, 40.0, StaticPolicy.IDLE), {A: 1.0})
    assert ch[IDLE_JOB].static_j == 10.0 and ch.get(A) is None


jobs = st.sampled_from([A, B, JobKey("c", "alice"), SYSTEM_JOB, JobKey("_agent")])


@given(
    energy_j=st.floats(0, 1e6, allow_nan=False),
    idle_w=st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False)),
    interval_s=st.floats(0.01, 3600, allow_nan=False),
    policy=st.sampled_from(list(StaticPolicy)),
    drivers=st.dictionaries(jobs, st.floats(0, 1e4, allow_nan=False)),
    holders=st.one_of(st.none(), st.dictionaries(jobs, st.floats(0, 1e12, allow_nan=False))),
)
def test_conservation(energy_j: float, idle_w: float | None, interval_s: float, policy: StaticPolicy,
                      drivers: dict[JobKey, float], holders: dict[JobKey, float] | None) -> None:
    p = pool(energy_j, idle_w, policy, interval_s)
    ch = attribute(p, drivers, holders)
    assert math.fsum(c.energy_j for c in ch.values()) == pytest.approx(energy_j, rel=1e-9, abs=1e-9)
    assert all(c.dynamic_j >= -1e-9 and c.static_j >= -1e-9 for c in ch.values())

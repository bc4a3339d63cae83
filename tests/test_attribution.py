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


def test_capacity_charges_the_capacity_rate_and_keeps_unused_on_idle() -> None:
    """A 4-vCPU package idling at 40 W over 1 s: capacity 4 vCPU-s, rate 10 J per vCPU-s used."""
    p = Pool("cpu", "package-0", "rapl", 100.0, 1.0, 40.0, StaticPolicy.CAPACITY, capacity_s=4.0)
    ch = attribute(p, {A: 1.0, B: 0.5})
    assert ch[A].static_j == pytest.approx(10.0) and ch[B].static_j == pytest.approx(5.0)
    assert ch[IDLE_JOB].static_j == pytest.approx(25.0)  # 2.5 vCPU-s nobody used: unused capacity
    assert ch[A].dynamic_j == pytest.approx(40.0) and ch[B].dynamic_j == pytest.approx(20.0)
    alone = attribute(p, {A: 1.0})
    assert alone[A].static_j == ch[A].static_j  # the same use costs the same, with or without B


def test_capacity_over_subscribed_drivers_share_the_whole_static() -> None:
    p = Pool("cpu", "package-0", "rapl", 100.0, 1.0, 40.0, StaticPolicy.CAPACITY, capacity_s=1.0)
    ch = attribute(p, {A: 1.5, B: 0.5})  # counting noise: more CPU seconds than the tick had
    assert ch[A].static_j == pytest.approx(30.0) and ch[B].static_j == pytest.approx(10.0)
    assert IDLE_JOB not in ch


def test_a_quiet_tick_does_not_give_the_agent_the_hosts_idle_power() -> None:
    """The field report: 1 ms of agent CPU in a quiet tick made _agent pay 10.65 W under proportional."""
    agent, system = JobKey("_agent"), SYSTEM_JOB
    for policy in (StaticPolicy.PROPORTIONAL, StaticPolicy.OCCUPANCY, StaticPolicy.CAPACITY):
        p = Pool("cpu", "package-0", "rapl", 11.0, 1.0, 10.65, policy, capacity_s=2.0)
        ch = attribute(p, {agent: 0.001, system: 0.01})
        assert ch[agent].static_j == pytest.approx(10.65 * 0.001 / 2.0), policy
        assert ch[system].static_j == pytest.approx(10.65 * 0.01 / 2.0), policy
        assert ch[IDLE_JOB].static_j == pytest.approx(10.65 * (1 - 0.011 / 2.0)), policy
    # with a real job beside them, proportional gives that job the rest (and the house still only its own)
    p = Pool("cpu", "package-0", "rapl", 11.0, 1.0, 10.65, StaticPolicy.PROPORTIONAL, capacity_s=2.0)
    ch = attribute(p, {agent: 0.001, A: 0.5})
    assert ch[agent].static_j == pytest.approx(10.65 * 0.001 / 2.0)
    assert ch[A].static_j == pytest.approx(10.65 * (1 - 0.001 / 2.0))
    assert IDLE_JOB not in ch

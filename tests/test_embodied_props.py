"""Embodied carbon is conserved, as properties: for every device and tick, whatever the drivers and
holders (zeros, house jobs, junk weights included), the jobs and ``_idle`` add up to the device's
accrual; full absorption only moves grams between jobs; a device accrues kg / lifetime per second
and nothing past its end of life under "stop"."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from wattledger.accounting.embodied import (DeviceUse, absorb, absorbs, accrual_g, charge, charge_tick,
                                            parent_shares)
from wattledger.model.jobs import AGENT_JOB, IDLE_JOB, SYSTEM_JOB, UNOBSERVED_JOB, JobKey, untagged
from wattledger.model.policies import AfterLife, StaticPolicy, Unused
from wattledger.model.units import NS_PER_S

jobs = st.one_of(
    st.sampled_from([SYSTEM_JOB, IDLE_JOB, AGENT_JOB, UNOBSERVED_JOB, untagged("alice"), untagged("bob")]),
    st.builds(JobKey, st.sampled_from(["a", "b", "sweep", "slurm-1"]), st.sampled_from(["alice", "bob", ""])),
)
weights = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    st.floats(min_value=1e-300, max_value=1e-6),
    st.sampled_from([-1.0, math.inf, math.nan, 1e300]),  # junk a caller might pass: never creates carbon
)
grams = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e4, allow_nan=False))
uses = st.builds(
    DeviceUse,
    component=st.sampled_from(["gpu", "cpu", "dram", "storage", "chassis"]),
    device=st.sampled_from(["GPU-0", "GPU-1", "MIG-a", "package-0", "host"]),
    accrual_g=grams,
    driver_s=st.dictionaries(jobs, weights, max_size=6),
    holders=st.one_of(st.none(), st.dictionaries(jobs, weights, max_size=6)),
    capacity_s=st.floats(min_value=0.0, max_value=1e5, allow_nan=False),
    policy=st.sampled_from([StaticPolicy.OCCUPANCY, StaticPolicy.CAPACITY]),
    unobserved=st.booleans(),
)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9 * max(1.0, abs(b)))


@settings(max_examples=500, deadline=None)
@given(tick=st.lists(uses, max_size=8, unique_by=lambda u: u.key), unused=st.sampled_from(list(Unused)))
def test_jobs_and_idle_add_up_to_every_devices_accrual(tick: list[DeviceUse], unused: Unused) -> None:
    charged = charge_tick(tick, unused)
    for use in tick:
        parts = charged[use.key]
        assert close(math.fsum(parts.values()), use.accrual_g), (use, parts)
        assert all(g >= -1e-9 * max(1.0, use.accrual_g) for g in parts.values()), parts
        if use.unobserved and use.accrual_g > 0:  # a restart's gap: nobody watched
            assert set(parts) <= {UNOBSERVED_JOB}


@settings(max_examples=300, deadline=None)
@given(tick=st.lists(uses, min_size=1, max_size=8, unique_by=lambda u: u.key))
def test_absorption_moves_unused_capacity_to_the_users_jobs_only(tick: list[DeviceUse]) -> None:
    kept = charge_tick(tick, Unused.IDLE)
    absorbed = absorb(kept)
    users = {j for parts in kept.values() for j, g in parts.items() if absorbs(j) and g > 0}
    for key, parts in kept.items():
        after = absorbed[key]
        assert close(math.fsum(after.values()), math.fsum(parts.values()))
        for job, g in after.items():
            if not absorbs(job):  # the house, _unobserved: never more than they were charged
                assert g <= parts.get(job, 0.0) + 1e-12
        if users and parts.get(IDLE_JOB, 0.0) > 0:  # someone worked this tick: nothing stays unused
            assert IDLE_JOB not in after


@settings(max_examples=300, deadline=None)
@given(use=uses)
def test_the_house_pays_only_for_its_own_use(use: DeviceUse) -> None:
    parts = charge(use)
    limit = max(use.capacity_s, math.fsum(w for w in use.driver_s.values() if math.isfinite(w) and w > 0))
    for job in (SYSTEM_JOB, AGENT_JOB):
        d = use.driver_s.get(job, 0.0)
        own = use.accrual_g * d / limit if math.isfinite(d) and d > 0 and limit > 0 else 0.0
        assert parts.get(job, 0.0) <= own + 1e-9 * max(1.0, use.accrual_g)


@settings(max_examples=300, deadline=None)
@given(kg=st.floats(min_value=0.0, max_value=1e5), years=st.floats(min_value=0.5, max_value=30.0),
       interval_s=st.floats(min_value=1e-3, max_value=86400.0),
       wall_s=st.integers(min_value=10**9, max_value=2 * 10**9), end_s=st.integers(min_value=10**9, max_value=2 * 10**9))
def test_a_device_accrues_its_footprint_over_its_life_and_no_more(kg: float, years: float, interval_s: float,
                                                                   wall_s: int, end_s: int) -> None:
    life_s = years * 365.25 * 86400
    wall_ns, end_ns = wall_s * NS_PER_S, end_s * NS_PER_S
    rate = kg * 1000 / life_s
    assert close(accrual_g(kg, life_s, interval_s, wall_ns), rate * interval_s)
    assert close(accrual_g(kg, life_s, interval_s, wall_ns, end_ns, AfterLife.CONTINUE), rate * interval_s)
    stop = accrual_g(kg, life_s, interval_s, wall_ns, end_ns, AfterLife.STOP)
    live_s = min(interval_s, max(0.0, end_s - (wall_s - interval_s)))
    assert math.isclose(stop, rate * live_s, rel_tol=1e-9, abs_tol=rate * 1e-6)  # a microsecond of the wall clock
    if wall_s - interval_s >= end_s:
        assert stop == 0.0


def test_ticks_add_up_to_the_footprint_over_the_lifetime() -> None:
    life_s = 4 * 365.25 * 86400
    tick_s = 5.0
    end_ns = int(life_s * NS_PER_S)
    total = math.fsum(accrual_g(575.1, life_s, tick_s, int((i + 1) * tick_s * NS_PER_S), end_ns)
                      for i in range(int(life_s / tick_s) + 1000))  # 1,000 ticks past the end: nothing more
    assert math.isclose(total, 575_100.0, rel_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(accrual=grams, shares=st.dictionaries(st.sampled_from(["MIG-a", "MIG-b", "MIG-c"]),
                                             st.floats(min_value=0.0, max_value=1.0), max_size=3))
def test_mig_pools_add_up_to_their_gpu(accrual: float, shares: dict[str, float]) -> None:
    total = sum(shares.values())
    scaled = {k: v / total for k, v in shares.items()} if total > 1 else shares
    parts = parent_shares(accrual, scaled, "GPU-0/unallocated")
    assert close(math.fsum(parts.values()), accrual)
    assert parts["GPU-0/unallocated"] >= -1e-9 * max(1.0, accrual)


def test_a_gpu_goes_to_its_holders_and_a_socket_by_cpu_share() -> None:
    alice, bob = JobKey("train", "alice"), JobKey("eval", "bob")
    gpu = DeviceUse("gpu", "GPU-0", 10.0, {alice: 3.0}, {alice: 1.0, bob: 1.0}, 5.0, StaticPolicy.OCCUPANCY)
    assert charge(gpu) == {alice: 5.0, bob: 5.0}  # holding reserves it, busy or not
    cpu = DeviceUse("cpu", "package-0", 8.0, {alice: 10.0, bob: 30.0, SYSTEM_JOB: 2.0}, None, 80.0,
                    StaticPolicy.CAPACITY)
    parts = charge(cpu)
    assert parts[alice] == 1.0 and parts[bob] == 3.0 and parts[SYSTEM_JOB] == 0.2
    assert math.isclose(parts[IDLE_JOB], 3.8)  # 38 of 80 vCPU-seconds unused
    absorbed = absorb({cpu.key: parts})[cpu.key]
    assert IDLE_JOB not in absorbed and absorbed[SYSTEM_JOB] == 0.2
    assert math.isclose(absorbed[alice], 1.0 + 3.8 / 4) and math.isclose(absorbed[bob], 3.0 + 3.8 * 3 / 4)
    empty = DeviceUse("gpu", "GPU-1", 10.0, {}, {}, 5.0, StaticPolicy.OCCUPANCY)
    both = absorb({gpu.key: charge(gpu), empty.key: charge(empty)})
    assert both[empty.key] == {alice: 5.0, bob: 5.0}  # an unheld GPU is carried by the tick's users
    assert charge_tick([empty], Unused.ABSORB)[empty.key] == {IDLE_JOB: 10.0}  # nobody at all: unused

"""Conservation, as properties: for every pool and policy, whatever the drivers, holders,
energies and idle powers (zeros, reserved jobs, junk weights included), the jobs'
charges add up to the pool's energy, and nothing is charged where the policy says not."""

from __future__ import annotations

import math
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from wattledger.accounting.attribution import Pool, StaticPolicy, attribute
from wattledger.config import Config, Estimate, Gpus
from wattledger.model.jobs import AGENT_JOB, IDLE_JOB, SYSTEM_JOB, JobKey, untagged
from wattledger.store.ledger import Ledger
from wattledger.agent.factory import build_agent
from wattledger.model.points import WL_JOB, WL_NODE, Point

jobs = st.one_of(
    st.sampled_from([SYSTEM_JOB, IDLE_JOB, AGENT_JOB, untagged("alice"), untagged("bob")]),
    st.builds(JobKey, st.sampled_from(["a", "b", "sweep", "slurm-1"]), st.sampled_from(["alice", "bob", ""])),
)
weights = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    st.floats(min_value=1e-300, max_value=1e-6),
    st.sampled_from([-1.0, math.inf, math.nan, 1e300]),  # junk a caller might pass: never creates energy
)
energies = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
idle_powers = st.one_of(st.none(), st.just(0.0), st.floats(min_value=0.0, max_value=1e4, allow_nan=False))


def usable(w: float) -> bool:
    return math.isfinite(w) and w > 0


@settings(max_examples=400, deadline=None)
@given(
    energy_j=energies,
    idle_w=idle_powers,
    interval_s=st.floats(min_value=1e-3, max_value=3600.0),
    policy=st.sampled_from(list(StaticPolicy)),
    component=st.sampled_from(["cpu", "dram", "gpu"]),
    drivers=st.dictionaries(jobs, weights, max_size=8),
    holders=st.one_of(st.none(), st.dictionaries(jobs, weights, max_size=8)),
)
def test_every_pool_and_policy_conserves_energy(energy_j: float, idle_w: float | None, interval_s: float,
                                                policy: StaticPolicy, component: str, drivers: dict[JobKey, float],
                                                holders: dict[JobKey, float] | None) -> None:
    pool = Pool(component, "dev0", "fake", energy_j, interval_s, idle_w, policy)
    charges = attribute(pool, drivers, holders)
    tol = 1e-9 * max(1.0, energy_j)
    assert math.isclose(math.fsum(c.energy_j for c in charges.values()), energy_j, rel_tol=1e-12, abs_tol=tol)
    assert math.isclose(math.fsum(c.static_j for c in charges.values()), pool.static_j, rel_tol=1e-12, abs_tol=tol)
    assert 0.0 <= pool.static_j <= energy_j
    for job, c in charges.items():
        assert c.dynamic_j >= -tol and c.static_j >= -tol, (job, c)
        assert c.driver_s >= 0

    driven = {j for j, w in drivers.items() if usable(w)}
    for job, c in charges.items():
        if c.dynamic_j > tol:
            assert job in driven or (not driven and job == SYSTEM_JOB)
    guests = {j for j in driven if not j.house}  # _system and _agent pay only for their own use
    if policy is StaticPolicy.IDLE:
        assert all(c.static_j == 0 for j, c in charges.items() if j != IDLE_JOB)
        assert math.isclose(charges[IDLE_JOB].static_j if IDLE_JOB in charges else 0.0, pool.static_j)
    elif policy is StaticPolicy.CAPACITY:
        for job, c in charges.items():
            if c.static_j > tol:
                assert job in driven or job == IDLE_JOB
    elif policy is StaticPolicy.PROPORTIONAL:
        for job, c in charges.items():
            if c.static_j > tol:
                assert job in driven or (not guests and job == IDLE_JOB)
    else:
        holding = {j for j, w in holders.items() if usable(w)} if holders is not None else driven
        holding_guests = {j for j in holding if not j.house}
        for job, c in charges.items():
            if c.static_j > tol:
                assert (job in holding_guests or (job.house and job in driven)
                        or (not holding_guests and job == IDLE_JOB))


@given(drivers=st.dictionaries(jobs, st.floats(min_value=0.001, max_value=100.0), min_size=1, max_size=6),
       energy_j=st.floats(min_value=1.0, max_value=1e5))
def test_proportional_without_idle_power_is_a_pure_driver_share(drivers: dict[JobKey, float], energy_j: float) -> None:
    charges = attribute(Pool("cpu", "p0", "fake", energy_j, 1.0, None), drivers)
    total = math.fsum(drivers.values())
    for job, w in drivers.items():
        assert math.isclose(charges[job].energy_j, energy_j * w / total, rel_tol=1e-9)


def test_the_real_agent_conserves_every_pool_on_this_machine(tmp_path: Path) -> None:
    """Real procs collector over this machine's /proc, model energy: every tick's wl_job
    rows add up to its wl_node row, for each pool and policy."""
    for policy in ("capacity", "proportional", "occupancy", "idle"):
        cfg = Config()
        cfg.agent.estimate = Estimate.ALWAYS
        cfg.agent.gpus = Gpus.NEVER
        cfg.attribution.cpu_static_policy = cfg.attribution.dram_static_policy = StaticPolicy(policy)
        points: list[Point] = []
        agent = build_agent(cfg, Ledger.in_state_dir(tmp_path / policy), on_tick=lambda r: points.extend(r.points))
        agent.commit(agent.tick())
        for _ in range(3):
            end = time.monotonic() + 0.15
            while time.monotonic() < end:  # some CPU of our own
                pass
            agent.commit(agent.tick())
        nodes = [p for p in points if p.measurement == WL_NODE]
        assert len(nodes) == 6  # cpu and dram, three ticks
        for node in nodes:
            key = (node.time_ns, node.tags["component"], node.tags["device"])
            charged = [p.fields["energy_j"] for p in points if p.measurement == WL_JOB
                       and (p.time_ns, p.tags["component"], p.tags["device"]) == key]
            assert math.isclose(math.fsum(charged), node.fields["energy_j"], rel_tol=1e-9), (policy, key)
        agent_rows = [p for p in points if p.measurement == WL_JOB and p.tags["job"] == "_agent"
                      and p.tags["component"] == "cpu"]
        assert sum(p.fields["driver_s"] for p in agent_rows) > 0  # the agent is charged its own CPU


# -- capacity (time-driven ABC) ------------------------------------------------------------------

capacities = st.one_of(st.none(), st.floats(min_value=1e-3, max_value=1e5), st.sampled_from([0.0, -1.0, math.nan]))


@settings(max_examples=400, deadline=None)
@given(
    energy_j=energies,
    idle_w=idle_powers,
    interval_s=st.floats(min_value=1e-3, max_value=3600.0),
    capacity_s=capacities,
    drivers=st.dictionaries(jobs, weights, max_size=8),
)
def test_capacity_charges_the_rate_and_leaves_the_rest_on_idle(energy_j: float, idle_w: float | None,
                                                               interval_s: float, capacity_s: float | None,
                                                               drivers: dict[JobKey, float]) -> None:
    """Under capacity: sum of jobs + _idle = the pool's energy; every job pays S * d / max(C, sum d)
    for its own use, reserved jobs included, and only _idle holds what nobody used."""
    pool = Pool("cpu", "package-0", "fake", energy_j, interval_s, idle_w, StaticPolicy.CAPACITY, capacity_s)
    charges = attribute(pool, drivers)
    tol = 1e-9 * max(1.0, energy_j)
    assert math.isclose(math.fsum(c.energy_j for c in charges.values()), energy_j, rel_tol=1e-12, abs_tol=tol)
    assert math.isclose(math.fsum(c.static_j for c in charges.values()), pool.static_j, rel_tol=1e-12, abs_tol=tol)
    used = {j: w for j, w in drivers.items() if usable(w)}
    limit = max(pool.capacity, math.fsum(used.values()))
    for job, c in charges.items():
        assert c.static_j >= -tol and c.dynamic_j >= -tol
        if job == IDLE_JOB:  # its own use (a junk driver) plus the unused capacity: checked below
            continue
        assert math.isclose(c.static_j, pool.static_j * used.get(job, 0.0) / limit, rel_tol=1e-9, abs_tol=tol), job
    unused = pool.static_j * max(0.0, 1.0 - math.fsum(used.values()) / limit) if limit > 0 else pool.static_j
    own = pool.static_j * used.get(IDLE_JOB, 0.0) / limit if limit > 0 else 0.0
    idle_static = charges[IDLE_JOB].static_j if IDLE_JOB in charges else 0.0
    assert math.isclose(idle_static, unused + own, rel_tol=1e-9, abs_tol=tol + pool.static_j * 1e-9)


@settings(max_examples=300, deadline=None)
@given(
    energy_j=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    idle_w=st.floats(min_value=0.0, max_value=1e3, allow_nan=False),
    capacity_s=st.one_of(st.none(), st.floats(min_value=1e-3, max_value=64.0)),
    policy=st.sampled_from(list(StaticPolicy)),
    house=st.dictionaries(st.sampled_from([SYSTEM_JOB, AGENT_JOB]), st.floats(min_value=0.0, max_value=1e3),
                          max_size=2),
    guests=st.dictionaries(st.builds(JobKey, st.sampled_from(["a", "b", "c"]), st.sampled_from(["alice", "bob"])),
                           weights, max_size=4),
    holders=st.one_of(st.none(), st.dictionaries(jobs, weights, max_size=6)),
)
def test_no_house_job_absorbs_idle_it_did_not_use(energy_j: float, idle_w: float, capacity_s: float | None,
                                                  policy: StaticPolicy, house: dict[JobKey, float],
                                                  guests: dict[JobKey, float],
                                                  holders: dict[JobKey, float] | None) -> None:
    """_system and _agent pay at most the capacity rate for their own use, under every policy."""
    pool = Pool("cpu", "package-0", "fake", energy_j, 1.0, idle_w, policy, capacity_s)
    drivers = {**guests, **house}
    charges = attribute(pool, drivers, holders)
    used = math.fsum(w for w in drivers.values() if usable(w))
    limit = max(pool.capacity, used)
    for job in (SYSTEM_JOB, AGENT_JOB):
        own = pool.static_j * house.get(job, 0.0) / limit if limit > 0 else 0.0
        got = charges[job].static_j if job in charges else 0.0
        assert got <= own * (1 + 1e-9) + 1e-9 * max(1.0, energy_j), (job, got, own)


@settings(max_examples=200, deadline=None)
@given(
    own_s=st.floats(min_value=0.01, max_value=1.0),
    neighbours=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=6),
    ncpu=st.integers(min_value=8, max_value=64),
    idle_w=st.floats(min_value=1.0, max_value=500.0),
)
def test_under_capacity_a_jobs_static_charge_does_not_depend_on_its_neighbours(
        own_s: float, neighbours: list[float], ncpu: int, idle_w: float) -> None:
    """The same use costs the same static energy alone or beside any neighbours (while they fit the capacity)."""
    job = JobKey("mine", "alice")
    energy_j = idle_w + 10.0 * (own_s + sum(neighbours))

    def static_of(drivers: dict[JobKey, float]) -> float:
        pool = Pool("cpu", "package-0", "fake", energy_j, 1.0, idle_w, StaticPolicy.CAPACITY, float(ncpu))
        return attribute(pool, drivers)[job].static_j

    alone = static_of({job: own_s})
    crowded = static_of({job: own_s, **{JobKey(f"n{i}", "bob"): d for i, d in enumerate(neighbours)}})
    assert math.isclose(alone, crowded, rel_tol=1e-12)
    assert math.isclose(alone, idle_w * own_s / ncpu, rel_tol=1e-12)

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
    if policy is StaticPolicy.IDLE:
        assert all(c.static_j == 0 for j, c in charges.items() if j != IDLE_JOB)
        assert math.isclose(charges[IDLE_JOB].static_j if IDLE_JOB in charges else 0.0, pool.static_j)
    elif policy is StaticPolicy.PROPORTIONAL:
        for job, c in charges.items():
            if c.static_j > tol:
                assert job in driven or (not driven and job == IDLE_JOB)
    else:
        holding = {j for j, w in holders.items() if usable(w)} if holders is not None else driven
        for job, c in charges.items():
            if c.static_j > tol:
                assert job in holding or (not holding and job == IDLE_JOB)


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
    for policy in ("proportional", "occupancy", "idle"):
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

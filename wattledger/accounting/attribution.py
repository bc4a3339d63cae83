"""Activity-Based Costing of one pool over one interval. Pure: no I/O, no clock.

A pool is one measured energy source over one interval (a CPU package, its
DRAM, a GPU). Its energy E is split into

* static  S = min(E, P_idle * dt)   (P_idle configured, learned, or modelled)
* dynamic D = E - S

D goes to jobs in proportion to their cost driver in the interval (CPU seconds
for CPU and DRAM pools, SM-busy seconds for GPUs). S follows the pool's static
policy:

* ``capacity`` (time-driven ABC; CPU and DRAM default): S is the cost of the
  pool's capacity C over the interval (vCPU-seconds for a CPU package and its
  DRAM, one device-second per second for a GPU or MIG slice). A job pays at
  the capacity rate for what it used, S_j = S * d_j / C; what no job used
  stays on ``_idle`` as *unused capacity*. A job's charge therefore does not
  depend on who else ran (Kaplan & Anderson: unused capacity is reported, not
  spread). When the drivers add up to more than C (counting noise) the rate
  is S / sum(d): nothing is left unused and nothing is created;
* ``proportional``: like D (by driver): busy jobs share the whole idle draw;
* ``occupancy``: among jobs *holding* the device (a GPU context, a live
  process), weighted by their holding weight (e.g. GPU memory; equal if all
  weights are equal); the GPU default;
* ``idle``: all of it to the reserved job ``_idle``.

The house's jobs, ``_system`` and ``_agent``, never absorb idle power that
others left: under ``proportional`` and ``occupancy`` they pay the capacity
rate for their own use (as under ``capacity``), and the rest is split among
the other jobs (or left on ``_idle``). Without that, the agent's 1 ms of CPU
in a quiet tick took the whole host's idle draw.

Whatever cannot be placed goes to a reserved job and never disappears: dynamic
energy with no driver at all goes to ``_system`` (busy, but nothing we saw
explains it) unless the caller names another job (``unexplained``: a GPU on
which NVML saw no process at all was idle, so its energy is ``_idle``'s),
static energy with no driver / no holder goes to ``_idle``.

Invariant (tested as a property): for every pool, sum of the returned
``energy_j`` equals the pool's E to float rounding.

``capacity_cost_split`` charges any cost of a pool's capacity by a static
policy: the idle draw here, and each device's embodied carbon
(``accounting.embodied``), so both follow one rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from wattledger.model.jobs import IDLE_JOB, SYSTEM_JOB, JobKey
from wattledger.model.policies import StaticPolicy

__all__ = ["Charge", "Pool", "StaticPolicy", "attribute", "capacity_cost_split", "capacity_fractions",
           "capacity_split"]


@dataclass(frozen=True)
class Pool:
    component: str
    device: str
    source: str
    energy_j: float
    interval_s: float
    idle_power_w: float | None  # None: no baseline known -> everything is dynamic
    policy: StaticPolicy = StaticPolicy.PROPORTIONAL
    # The pool's capacity over the interval, in driver units: vCPU-seconds for a CPU package
    # and its DRAM (ncpu x interval). None: one device (a GPU, a MIG slice): interval_s.
    capacity_s: float | None = None

    @property
    def capacity(self) -> float:
        """Capacity over the interval in driver-seconds (``capacity_s``, else one device: ``interval_s``)."""
        if self.capacity_s is not None and math.isfinite(self.capacity_s) and self.capacity_s > 0:
            return self.capacity_s
        return self.interval_s

    @property
    def static_j(self) -> float:
        if self.idle_power_w is None or self.energy_j <= 0:
            return 0.0
        return min(self.energy_j, max(0.0, self.idle_power_w) * self.interval_s)

    @property
    def dynamic_j(self) -> float:
        return self.energy_j - self.static_j


@dataclass(frozen=True)
class Charge:
    """What one job is charged from one pool for one interval."""

    dynamic_j: float
    static_j: float
    driver_s: float

    @property
    def energy_j(self) -> float:
        return self.dynamic_j + self.static_j


def _split(amount_j: float, weights: Mapping[JobKey, float], fallback: JobKey) -> dict[JobKey, float]:
    """Split amount by weights; all to ``fallback`` when no weight is positive.

    The last share is computed as the remainder so the parts add up to the
    whole (no energy created or lost by rounding).
    """
    positive = {job: w for job, w in weights.items() if w > 0 and math.isfinite(w)}
    if amount_j == 0:
        return {}
    if not positive:
        return {fallback: amount_j}
    total_w = math.fsum(positive.values())
    jobs = sorted(positive)
    shares: dict[JobKey, float] = {}
    given = 0.0
    for job in jobs[:-1]:
        share = amount_j * (positive[job] / total_w)
        shares[job] = share
        given += share
    shares[jobs[-1]] = amount_j - given
    return shares


def _usable(weights: Mapping[JobKey, float]) -> dict[JobKey, float]:
    return {job: w for job, w in weights.items() if w > 0 and math.isfinite(w)}


def capacity_fractions(driver_s: Mapping[JobKey, float], capacity_s: float) -> dict[JobKey, float]:
    """The fraction of a pool's capacity each job used: d_j / max(C, sum(d)). Pure.

    The fractions add up to at most 1; 1 minus their sum is the unused
    capacity. Drivers that are zero, negative or not finite use nothing.
    When the drivers add up to more than ``capacity_s`` (counting noise) they
    are the capacity, so the fractions still add up to 1 at most.
    """
    used = _usable(driver_s)
    limit = max(capacity_s if math.isfinite(capacity_s) else 0.0, math.fsum(used.values()))
    if limit <= 0:
        return {}
    return {job: d / limit for job, d in used.items()}


def capacity_split(amount: float, driver_s: Mapping[JobKey, float], capacity_s: float,
                   unused: JobKey = IDLE_JOB) -> dict[JobKey, float]:
    """``amount`` (a cost of the whole capacity) charged at the capacity rate; the rest on ``unused``.

    Each job gets amount * d_j / max(C, sum(d)); ``unused`` gets the
    remainder, so the parts add up to ``amount``.
    """
    if amount == 0:
        return {}
    shares = {job: amount * f for job, f in capacity_fractions(driver_s, capacity_s).items()}
    rest = amount - math.fsum(shares.values())
    if rest > 0 or not shares:
        shares[unused] = shares.get(unused, 0.0) + rest
    elif rest < 0:  # rounding only: take it off the largest share
        top = max(shares, key=lambda j: shares[j])
        shares[top] += rest
    return shares


def capacity_cost_split(amount: float, policy: StaticPolicy, driver_s: Mapping[JobKey, float],
                        holders: Mapping[JobKey, float] | None, capacity_s: float) -> dict[JobKey, float]:
    """A cost of keeping a pool's capacity ready (its idle draw, its embodied carbon) by a static policy.

    The house's jobs pay only for their own use (the capacity rate); what no
    job used or held stays on ``_idle``. The parts add up to ``amount``.
    """
    if amount == 0:
        return {}
    if policy is StaticPolicy.IDLE:
        return {IDLE_JOB: amount}
    if policy is StaticPolicy.CAPACITY:
        return capacity_split(amount, driver_s, capacity_s)
    fractions = capacity_fractions(driver_s, capacity_s)
    shares = {job: amount * f for job, f in fractions.items() if job.house}
    rest = amount - math.fsum(shares.values())
    if policy is StaticPolicy.OCCUPANCY:
        weights = holders if holders is not None else {job: 1.0 for job in _usable(driver_s)}
    else:
        weights = driver_s
    for job, share in _split(rest, {j: w for j, w in weights.items() if not j.house}, IDLE_JOB).items():
        shares[job] = shares.get(job, 0.0) + share
    return shares


def _static_split(pool: Pool, driver_s: Mapping[JobKey, float],
                  holders: Mapping[JobKey, float] | None) -> dict[JobKey, float]:
    """The static energy by the pool's policy; the house's jobs pay only for their own use."""
    return capacity_cost_split(pool.static_j, pool.policy, driver_s, holders, pool.capacity)


def attribute(
    pool: Pool,
    driver_s: Mapping[JobKey, float],
    holders: Mapping[JobKey, float] | None = None,
    unexplained: JobKey = SYSTEM_JOB,
) -> dict[JobKey, Charge]:
    """Charge one pool's interval energy to jobs.

    ``driver_s``: each job's cost driver in the interval (seconds), including
    reserved jobs (``_system`` for unexplained busy time, ``_agent``).
    ``holders``: jobs holding the device and their weight, for the occupancy
    policy (defaults to the jobs with a positive driver, equally weighted).
    The pool's ``capacity`` sets the capacity rate (capacity policy, and the
    house's jobs under every policy but ``idle``).
    ``unexplained``: who gets dynamic energy when no job has a driver.
    """
    dynamic = _split(pool.dynamic_j, driver_s, unexplained)
    static = _static_split(pool, driver_s, holders)
    charges: dict[JobKey, Charge] = {}
    for job in set(dynamic) | set(static):
        charges[job] = Charge(
            dynamic_j=dynamic.get(job, 0.0),
            static_j=static.get(job, 0.0),
            driver_s=max(0.0, float(driver_s.get(job, 0.0))),
        )
    return charges

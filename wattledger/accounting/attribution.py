"""Activity-Based Costing of one pool over one interval. Pure: no I/O, no clock.

A pool is one measured energy source over one interval (a CPU package, its
DRAM, a GPU). Its energy E is split into

* static  S = min(E, P_idle * dt)   (P_idle configured, learned, or modelled)
* dynamic D = E - S

D goes to jobs in proportion to their cost driver in the interval (CPU seconds
for CPU and DRAM pools, SM-busy seconds for GPUs). S follows the pool's static
policy:

* ``proportional``: like D (by driver);
* ``occupancy``: among jobs *holding* the device (a GPU context, a live
  process), weighted by their holding weight (e.g. GPU memory; equal if all
  weights are equal);
* ``idle``: all of it to the reserved job ``_idle``.

Whatever cannot be placed goes to a reserved job and never disappears: dynamic
energy with no driver at all goes to ``_system`` (busy, but nothing we saw
explains it) unless the caller names another job (``unexplained``: a GPU on
which NVML saw no process at all was idle, so its energy is ``_idle``'s),
static energy with no driver / no holder goes to ``_idle``.

Invariant (tested as a property): for every pool, sum of the returned
``energy_j`` equals the pool's E to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from wattledger.model.jobs import IDLE_JOB, SYSTEM_JOB, JobKey
from wattledger.model.policies import StaticPolicy

__all__ = ["Charge", "Pool", "StaticPolicy", "attribute"]


@dataclass(frozen=True)
class Pool:
    component: str
    device: str
    source: str
    energy_j: float
    interval_s: float
    idle_power_w: float | None  # None: no baseline known -> everything is dynamic
    policy: StaticPolicy = StaticPolicy.PROPORTIONAL

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
    ``unexplained``: who gets dynamic energy when no job has a driver.
    """
    dynamic = _split(pool.dynamic_j, driver_s, unexplained)
    static_j = pool.static_j
    if pool.policy is StaticPolicy.PROPORTIONAL:
        static = _split(static_j, driver_s, IDLE_JOB)
    elif pool.policy is StaticPolicy.OCCUPANCY:
        if holders is None:
            holders = {job: 1.0 for job, d in driver_s.items() if d > 0 and math.isfinite(d)}
        static = _split(static_j, holders, IDLE_JOB)
    else:
        static = {IDLE_JOB: static_j} if static_j else {}
    charges: dict[JobKey, Charge] = {}
    for job in set(dynamic) | set(static):
        charges[job] = Charge(
            dynamic_j=dynamic.get(job, 0.0),
            static_j=static.get(job, 0.0),
            driver_s=max(0.0, float(driver_s.get(job, 0.0))),
        )
    return charges

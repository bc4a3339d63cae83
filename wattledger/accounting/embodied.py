"""Embodied carbon per tick: each device's accrual, charged to jobs like a cost of its capacity. Pure.

A device's footprint (kgCO2e, ``model.embodied``) accrues at kg / lifetime
per second. Over one tick, the accrual of each device is a cost pool, and it
is charged by the drivers and holders that charge the tick's energy
(``attribution.capacity_cost_split``, the rule of idle power):

* a GPU (or each MIG instance, by its slices) ``occupancy``: to the jobs
  holding it, by holding weight; the house's jobs pay for their own use only;
* the CPU sockets, DRAM, storage and chassis ``capacity``: by CPU seconds
  over the host's vCPU-seconds (time-driven ABC);
* what no job used stays on ``_idle`` (unused capacity), unless
  ``[embodied] unused = "absorb"``: then the jobs of the tick carry it
  (``absorb``); a restart's gap goes to ``_unobserved`` whole.

Invariant (tested as a property): for every device and tick the parts add up
to the accrual, and ``absorb`` moves grams between jobs, never creates them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wattledger.accounting.attribution import capacity_cost_split
from wattledger.model.embodied import G_PER_KG
from wattledger.model.jobs import IDLE, IDLE_JOB, UNOBSERVED, UNOBSERVED_JOB, JobKey
from wattledger.model.policies import AfterLife, StaticPolicy, Unused
from wattledger.model.units import NS_PER_S

DeviceKey = tuple[str, str]  # (component, device)


def accrual_g(kg: float, lifetime_s: float, interval_s: float, wall_ns: int, end_ns: int | None = None,
              after_end: AfterLife = AfterLife.STOP) -> float:
    """The grams a device of ``kg`` accrues over the interval that ends at ``wall_ns``.

    kg x 1000 / lifetime_s per second. With an end of life (``end_ns``) and
    ``after_end = stop``, only the part of the interval before it accrues.
    """
    if not (kg > 0 and lifetime_s > 0 and interval_s > 0) or not math.isfinite(kg * interval_s / lifetime_s):
        return 0.0
    live_s = interval_s
    if end_ns is not None and after_end is AfterLife.STOP:
        live_s = min(interval_s, max(0.0, (end_ns - wall_ns) / NS_PER_S + interval_s))
    return kg * G_PER_KG / lifetime_s * live_s


@dataclass(frozen=True)
class DeviceUse:
    """One device over one interval: its accrual and who drove or held it."""

    component: str
    device: str
    accrual_g: float
    driver_s: Mapping[JobKey, float]
    holders: Mapping[JobKey, float] | None  # occupancy: the holders' weights (None: the jobs with a driver)
    capacity_s: float  # driver-seconds the device offered (vCPU-seconds; a GPU: the interval)
    policy: StaticPolicy
    unobserved: bool = False  # a restart's gap: nobody watched, all of it to _unobserved

    @property
    def key(self) -> DeviceKey:
        return (self.component, self.device)


def charge(use: DeviceUse) -> dict[JobKey, float]:
    """One device's accrual split among jobs (grams); the parts add up to the accrual."""
    if use.accrual_g == 0:
        return {}
    if use.unobserved:
        return {UNOBSERVED_JOB: use.accrual_g}
    return capacity_cost_split(use.accrual_g, use.policy, use.driver_s, use.holders, use.capacity_s)


def absorbs(job: JobKey) -> bool:
    """Whether a job carries unused capacity under full absorption: users' work, not the house's."""
    return not job.house and job.tag not in (IDLE, UNOBSERVED)


def spread(amount: float, weights: Mapping[JobKey, float]) -> dict[JobKey, float]:
    """``amount`` by positive weights, the last share the remainder (the parts add up to ``amount``)."""
    usable = {j: w for j, w in weights.items() if w > 0 and math.isfinite(w)}
    total = math.fsum(usable.values())
    jobs = sorted(usable)
    out: dict[JobKey, float] = {}
    for job in jobs[:-1]:
        out[job] = amount * usable[job] / total
    if jobs:
        out[jobs[-1]] = amount - math.fsum(out.values())
    return out


def _carriers(shares: Mapping[JobKey, float]) -> dict[JobKey, float]:
    return {j: g for j, g in shares.items() if absorbs(j) and g > 0 and math.isfinite(g)}


def absorb(charges: Mapping[DeviceKey, Mapping[JobKey, float]]) -> dict[DeviceKey, dict[JobKey, float]]:
    """Full absorption: each device's ``_idle`` grams go to the users' jobs that device charged, in
    proportion to their charge; a device no such job used gives them to the users' jobs of the whole
    tick (by their charge over all devices); only a tick without any stays on ``_idle``."""
    host: dict[JobKey, float] = {}
    for shares in charges.values():
        for job, g in _carriers(shares).items():
            host[job] = host.get(job, 0.0) + g
    out: dict[DeviceKey, dict[JobKey, float]] = {}
    for key, shares in charges.items():
        moved = dict(shares)
        idle_g = moved.get(IDLE_JOB, 0.0)
        weights = _carriers(shares) or host
        if idle_g > 0 and weights:
            del moved[IDLE_JOB]
            for job, g in spread(idle_g, weights).items():
                moved[job] = moved.get(job, 0.0) + g
        out[key] = moved
    return out


def charge_tick(uses: Sequence[DeviceUse], unused: Unused = Unused.IDLE) -> dict[DeviceKey, dict[JobKey, float]]:
    """Every device's accrual of one tick, split among jobs (grams per job, per device)."""
    charges = {use.key: charge(use) for use in uses}
    return absorb(charges) if unused is Unused.ABSORB else charges


def parent_shares(accrual: float, shares: Mapping[str, float], rest: str) -> dict[str, float]:
    """A GPU's accrual among its MIG pools by their slice shares; ``rest`` (the unallocated slices)
    gets the remainder, so the pools add up to the GPU's accrual."""
    out = {device: accrual * max(0.0, share) for device, share in shares.items() if device != rest}
    out[rest] = accrual - math.fsum(out.values())
    return out

"""CPU and DRAM cost drivers: what the processes explain, plus ``_system`` for the rest. Pure, plus a carry.

The process reader reports the host's busy CPU time and what each job's
processes explain. The difference, interrupts, kernel work, processes that
came and went unseen, is ``_system``'s. CPU time the reader finds late (a
cold process read at a later tick) is charged to its job when found; the
``_system`` time that stood in for it is then paid back from the next ticks'
``_system`` (a carry bounded by one tick's capacity), so over time nothing
is counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from wattledger.model.jobs import SYSTEM_JOB, JobKey

# Rounding noise between the host's busy time and the sum of per-job seconds (both
# come from whole clock ticks) is not _system's: below this many seconds it is none.
RESIDUAL_EPS_S = 1e-9


def system_residual(busy_s: float, charged_s: Mapping[JobKey, float], carry_s: float,
                    capacity_s: float) -> tuple[float, float]:
    """(``_system`` seconds for this tick, the carry left for the next). ``carry_s`` <= 0."""
    residual = busy_s - math.fsum(charged_s.values()) + carry_s
    if residual > RESIDUAL_EPS_S:
        return residual, 0.0
    if residual > -RESIDUAL_EPS_S:
        return 0.0, 0.0
    return 0.0, max(residual, -capacity_s)


@dataclass
class CpuDrivers:
    """Per-job CPU seconds for one tick, ``_system``'s residual included (keeps the carry)."""

    carry_s: float = 0.0

    def drivers(self, busy_s: float, charged_s: Mapping[JobKey, float], capacity_s: float) -> dict[JobKey, float]:
        system_s, self.carry_s = system_residual(busy_s, charged_s, self.carry_s, capacity_s)
        driver_s = dict(charged_s)
        if system_s > 0:
            driver_s[SYSTEM_JOB] = driver_s.get(SYSTEM_JOB, 0.0) + system_s
        return driver_s

"""Each source's readings -> one uniform ``PoolInput`` per pool and tick.

A pool is one measured energy source over one interval (a CPU package, its
DRAM, a GPU or MIG instance). Whatever the source, the loop gets the same
thing for each: the energy, the interval it covers, each job's cost driver,
who holds the device, who takes energy no job explains, and how busy the
device was (for idle learning). The loop is then a straight map over pools.

* ``CpuPools``: RAPL or model counters (deltas and their own intervals from
  ``accounting.counters``) with the process reader's CPU seconds per job
  (``accounting.cpu`` adds ``_system``). A counter that could not be read for
  a tick keeps that tick's activity aside: its next delta spans both ticks
  and is split by both ticks' activity, with both ticks' interval.
* ``gpu_inputs``: GPU pools from ``accounting.gpu`` (deltas, intervals and
  per-process activity), their pids mapped to jobs by the process reader.

A delta whose previous reading was saved by the agent before a restart
(``accounting.resume``) spans the time no agent ran: no process is known for
it, so the pool has no drivers and all its energy goes to ``_unobserved``
(``unobserved_input``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wattledger.accounting.counters import CounterDelta, CounterKey, CounterTracker, counter_key
from wattledger.accounting.cpu import CpuDrivers
from wattledger.accounting.gpu import gpu_activity_fraction, gpu_drivers, unexplained_job
from wattledger.model.activity import ProcSample
from wattledger.model.gpu import GpuPoolSample
from wattledger.model.jobs import SYSTEM_JOB, UNOBSERVED_JOB, JobKey
from wattledger.model.readings import EnergyCounter, EnergySample


@dataclass(frozen=True)
class PoolInput:
    """One pool for one tick, ready for ``attribution.attribute``."""

    counter: EnergyCounter  # which counter (component, device, source) and its reading
    energy_j: float
    interval_s: float
    driver_s: Mapping[JobKey, float]
    holders: Mapping[JobKey, float] | None  # None: the jobs with a driver, equally
    unexplained: JobKey = SYSTEM_JOB  # who gets dynamic energy when no job has a driver
    activity: float | None = None  # how busy the device was (0..1) for idle learning; None: unknown
    capacity_s: float | None = None  # driver-seconds the pool offered (vCPU-s); None: one device, interval_s
    reset: bool = False
    suspect: bool = False
    unobserved: bool = False  # a restart's gap: no activity, no idle baseline, all energy to _unobserved
    parent: str = ""  # a MIG pool's physical GPU (UUID); "" for a whole GPU and the CPU pools
    share: float = 1.0  # the fraction of the physical device this pool stands for (MIG: its slices)

    @property
    def component(self) -> str:
        return self.counter.component

    @property
    def device(self) -> str:
        return self.counter.device

    @property
    def source(self) -> str:
        return self.counter.source


@dataclass
class _CpuActivity:
    """CPU activity over one or more ticks (summed while a counter could not be read)."""

    driver_s: dict[JobKey, float]
    busy_s: float
    capacity_s: float
    holders: Mapping[JobKey, float]
    ncpu: int = 1

    def then(self, later: _CpuActivity) -> _CpuActivity:
        driver_s = dict(self.driver_s)
        for job, s in later.driver_s.items():
            driver_s[job] = driver_s.get(job, 0.0) + s
        return _CpuActivity(driver_s, self.busy_s + later.busy_s, self.capacity_s + later.capacity_s,
                            later.holders, later.ncpu)

    def capacity_over(self, interval_s: float) -> float:
        """vCPU-seconds the CPUs offered over the counter's interval: ncpu x interval_s.

        Not /proc/stat's total: it moves in 10 ms clock ticks per CPU, 5% of a 0.1 s interval.
        """
        return self.ncpu * interval_s

    @property
    def fraction(self) -> float | None:
        return self.busy_s / self.capacity_s if self.capacity_s > 0 else None


@dataclass
class CpuPools:
    """CPU and DRAM pools from energy samples and the process reader's activity."""

    tracker: CounterTracker = field(default_factory=CounterTracker)
    drivers: CpuDrivers = field(default_factory=CpuDrivers)
    _known: set[CounterKey] = field(default_factory=set)
    _waiting: dict[CounterKey, _CpuActivity] = field(default_factory=dict)

    def inputs(self, samples: Sequence[EnergySample], procs: ProcSample) -> list[PoolInput]:
        activity = None
        if not procs.baseline:
            activity = _CpuActivity(self.drivers.drivers(procs.busy_s, procs.charged_s, procs.capacity_s),
                                    procs.busy_s, procs.capacity_s, procs.holders, procs.ncpu)
        read: set[CounterKey] = set()
        out: list[PoolInput] = []
        for sample in samples:
            for counter in sample.counters:
                key = counter_key(counter)
                read.add(key)
                delta = self.tracker.delta(counter, sample.read_ns)
                spanned = self._spanned(key, activity)
                if delta is not None and delta.restored:
                    out.append(unobserved_input(counter, delta.energy_j, delta.interval_s, delta.reset))
                elif delta is not None and spanned is not None:
                    out.append(_cpu_input(counter, delta, spanned))
        self._set_aside(self._known - read, activity)
        self._known |= read
        return out

    def _spanned(self, key: CounterKey, activity: _CpuActivity | None) -> _CpuActivity | None:
        """This tick's activity, after that of the ticks in which this counter could not be read."""
        earlier = self._waiting.pop(key, None)
        if activity is None:
            return None
        return activity if earlier is None else earlier.then(activity)

    def _set_aside(self, unread: Iterable[CounterKey], activity: _CpuActivity | None) -> None:
        for key in unread:
            if activity is not None:
                earlier = self._waiting.get(key)
                self._waiting[key] = activity if earlier is None else earlier.then(activity)


def _cpu_input(counter: EnergyCounter, delta: CounterDelta, activity: _CpuActivity) -> PoolInput:
    return PoolInput(counter, delta.energy_j, delta.interval_s, activity.driver_s, activity.holders,
                     activity=activity.fraction if counter.component in ("cpu", "dram") else None,
                     capacity_s=activity.capacity_over(delta.interval_s), reset=delta.reset, suspect=delta.suspect)


def unobserved_input(counter: EnergyCounter, energy_j: float, interval_s: float, reset: bool = False) -> PoolInput:
    """A restart's gap: the counter's energy while no agent ran, charged whole to _unobserved."""
    return PoolInput(counter, energy_j, interval_s, {}, {}, UNOBSERVED_JOB, None, reset=reset, unobserved=True)


def gpu_inputs(sample: GpuPoolSample | None, jobs_by_pid: Mapping[int, JobKey],
               allocated: Mapping[str, frozenset[JobKey]] | None = None) -> list[PoolInput]:
    """GPU pools with an interval (a baseline read charges nothing), drivers by job; ``allocated``:
    the jobs Slurm gave each pool (``accounting.gpu.allocated_gpus``), holders under occupancy."""
    out: list[PoolInput] = []
    for r in sample.devices if sample is not None else ():
        if r.interval_s is None or not math.isfinite(r.energy_j):
            continue
        if r.unobserved:
            gap = unobserved_input(r.counter, r.energy_j, r.interval_s, r.reset)
            out.append(dataclasses.replace(gap, parent=r.parent, share=r.share))
            continue
        driver_s, holders = gpu_drivers(r, jobs_by_pid, (allocated or {}).get(r.device, ()))
        out.append(PoolInput(r.counter, r.energy_j, r.interval_s, driver_s, holders, unexplained_job(r),
                             gpu_activity_fraction(r), reset=r.reset, parent=r.parent, share=r.share))
    return out

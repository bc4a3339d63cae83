"""GPU accounting: raw NVML readings -> GPU pools -> cost drivers. Pure functions plus one state holder.

From the reader's raw ``GpuSample`` (``collectors.nvml``) to what
``attribution.attribute`` needs, in three steps:

1. **Energy per pool** (``GpuPools.update``, the only state here): the
   counter's delta since the pool's previous good read, with its own
   interval (``counters.CounterTracker``, the one place intervals are made).
   A GPU without an energy counter has its power integrated
   (``integrate_power``, trapezoids) into a counter of our own, flagged
   ``nvml-power``. With MIG enabled, each MIG instance is a pool that gets
   the parent's delta in proportion to its slices (``mig_shares``); slices no
   instance owns form ``<uuid>/unallocated``, and an instance new this read
   leaves its share there for one read. A failed read is *bridged*: the
   counter keeps counting and the reader's utilisation cursor did not move,
   so the next good read within ``bridge_gap_s`` charges the whole gap. A
   lost GPU, a GPU whose power we integrate (nothing to integrate across the
   gap) and longer gaps start again from a baseline.
2. **Activity per process** (``gpu_processes``): SM-busy seconds from the
   utilisation samples, each weighted by the time it covers
   (``sm_busy_seconds``).
3. **Cost drivers per job** (``gpu_drivers``), by the one rule that picks the
   measure (``measure_for``):

   * driver (dynamic energy): SM-busy seconds per job when utilisation was
     read and someone was busy; else used memory held (memory share x
     interval) when every holder's memory is known; else equal shares among
     the processes holding a context (interval / n each). Every measure keeps
     the unit "seconds of the GPU", so ``wl_job.driver_s`` stays comparable.
   * holders (static energy, ``occupancy`` policy, the GPU default): jobs
     holding a context now, weighted by used memory when every holder's is
     known, else equally.
   * who gets dynamic energy no job explains (``unexplained_job``): ``_idle``
     when NVML listed the GPU's processes and none ran, ``_system`` when NVML
     would not list them.

NVML reports host pids; the caller maps them to jobs (``jobs_by_pid``, built
by the process reader for exactly these pids) so that two processes of one
job add up.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wattledger.accounting.counters import CounterDelta, CounterTracker, SavedReading
from wattledger.model.gpu import (
    COMPONENT,
    SOURCE,
    SOURCE_MIG,
    SOURCE_MIG_POWER,
    SOURCE_POWER,
    UNALLOCATED_SUFFIX,
    GpuActivity,
    GpuDeviceReading,
    GpuPoolSample,
    GpuProcess,
    GpuReading,
    GpuSample,
    Measure,
)
from wattledger.model.jobs import IDLE_JOB, SYSTEM_JOB, JobKey, untagged
from wattledger.model.readings import EnergyCounter, Problem
from wattledger.model.slurm import SlurmJob
from wattledger.model.units import NS_PER_S, UJ_PER_J, US_PER_S

DEFAULT_BRIDGE_GAP_S = 60.0


# -- step 1: energy per pool ------------------------------------------------------------------


def integrate_power(last: tuple[int, float] | None, read_ns: int, power_w: float) -> float:
    """Energy (J) since the last (read_ns, power_w) point by the trapezoid rule; 0 on a first point."""
    if last is None or read_ns <= last[0]:
        return 0.0
    return (last[1] + power_w) / 2.0 * (read_ns - last[0]) / NS_PER_S


def mig_shares(slots: Mapping[str, tuple[int, int, int]], total_slices: int) -> dict[str, float]:
    """Each MIG device's fraction of the physical GPU: (gi_id, gi_slices, ci_slices) per UUID.

    A GPU instance owns gi_slices of the GPU's total_slices; its compute
    instances (the MIG devices) share that by their own slice counts. What no
    instance owns is left over (1 - sum), for the unallocated pool.
    """
    by_gi: dict[int, list[tuple[str, int, int]]] = {}
    for uuid, (gi_id, gi_slices, ci_slices) in slots.items():
        by_gi.setdefault(gi_id, []).append((uuid, gi_slices, ci_slices))
    gi_total = sum(members[0][1] for members in by_gi.values())
    total = max(total_slices, gi_total, 1)
    shares: dict[str, float] = {}
    for members in by_gi.values():
        gi_frac = members[0][1] / total
        ci_total = sum(max(ci, 0) for _, _, ci in members)
        for uuid, _, ci in members:
            shares[uuid] = gi_frac * (ci / ci_total if ci_total else 1.0 / len(members))
    return shares


def split_uj(delta_uj: int, shares: Mapping[str, float], rest: str) -> dict[str, int]:
    """Integer micro-joules per pool by share; ``rest`` gets what the shares leave (exact sum)."""
    parts = {uuid: int(delta_uj * frac) for uuid, frac in shares.items()}
    parts[rest] = parts.get(rest, 0) + delta_uj - sum(parts.values())
    return parts


@dataclass
class _GpuState:
    """What accounting remembers of one physical GPU between reads."""

    integrated_uj: float = 0.0                       # our counter, when the GPU has none
    last_power: tuple[int, float] | None = None      # (read_ns, W)
    pool_uj: dict[str, int] = field(default_factory=dict)  # MIG: each pool's cumulative share
    mig_slots: frozenset[str] = frozenset()          # MIG instances at the previous read
    failing_since_ns: int | None = None              # first failed read of a run of failures
    integrated: bool = False                         # the last good read had no energy counter


class GpuPools:
    """Turns each raw GpuSample into GPU pools with energy deltas, intervals and per-process activity."""

    def __init__(self, bridge_gap_s: float = DEFAULT_BRIDGE_GAP_S) -> None:
        self.bridge_gap_s = bridge_gap_s
        self._tracker = CounterTracker()
        self._gpus: dict[str, _GpuState] = {}

    def snapshot(self) -> list[SavedReading]:
        """The GPUs' energy counters' last readings (integrated power has nothing to bridge a restart with)."""
        return [r for r in self._tracker.snapshot() if r.key[0] == SOURCE]

    def restore(self, readings: list[SavedReading]) -> None:
        """Readings from before a restart: each GPU's next delta is the gap's energy (flagged unobserved)."""
        self._tracker.restore([r for r in readings if r.key[0] == SOURCE])

    def update(self, sample: GpuSample) -> GpuPoolSample:
        for failure in sample.failures:
            if failure.devices and failure.devices[0] in self._gpus:
                self._failed(self._gpus[failure.devices[0]], failure.devices[0], failure.problem, sample.read_ns)
        devices: list[GpuDeviceReading] = []
        for gpu in sample.gpus:
            devices.extend(self._pools(gpu, sample.read_ns))
        return GpuPoolSample(sample.read_ns, tuple(devices), sample.failures)

    def _failed(self, state: _GpuState, uuid: str, problem: Problem | None, read_ns: int) -> None:
        if problem is Problem.GPU_LOST or state.integrated:
            # A lost GPU may come back reset; integrated power has nothing for the gap:
            # the first read after it is a baseline (the gap is not charged).
            self._forget(state, uuid)
        elif state.failing_since_ns is None:
            state.failing_since_ns = read_ns

    def _forget(self, state: _GpuState, uuid: str) -> None:
        """Make the GPU's next read a baseline: no interval, nothing integrated or split across the gap."""
        self._tracker.forget((SOURCE, COMPONENT, uuid))
        self._tracker.forget((SOURCE_POWER, COMPONENT, uuid))
        state.last_power = None
        state.failing_since_ns = None

    def _pools(self, gpu: GpuReading, read_ns: int) -> list[GpuDeviceReading]:
        state = self._gpus.setdefault(gpu.uuid, _GpuState())
        if state.failing_since_ns is not None and read_ns - state.failing_since_ns > self.bridge_gap_s * NS_PER_S:
            self._forget(state, gpu.uuid)  # too long to charge by what this read shows
        state.failing_since_ns = None
        counter = self._counter(gpu, state, read_ns)
        delta = self._tracker.delta(counter, read_ns)
        if gpu.activity is not None:
            return [_device(counter, gpu.activity, delta)]
        return self._mig_pools(gpu, state, counter, delta)

    def _counter(self, gpu: GpuReading, state: _GpuState, read_ns: int) -> EnergyCounter:
        if gpu.energy_mj is not None:
            state.integrated = False
            return EnergyCounter(COMPONENT, gpu.uuid, SOURCE, gpu.energy_mj * 1000)
        power_w = gpu.power_w or 0.0
        state.integrated = True
        state.integrated_uj += integrate_power(state.last_power, read_ns, power_w) * UJ_PER_J
        state.last_power = (read_ns, power_w)
        return EnergyCounter(COMPONENT, gpu.uuid, SOURCE_POWER, int(state.integrated_uj))

    def _mig_pools(self, gpu: GpuReading, state: _GpuState, parent: EnergyCounter,
                   delta: CounterDelta | None) -> list[GpuDeviceReading]:
        source = SOURCE_MIG if parent.source == SOURCE else SOURCE_MIG_POWER
        unallocated = gpu.uuid + UNALLOCATED_SUFFIX
        # A pool new this read has no previous reading: its share goes to the
        # unallocated pool for this one read, so nothing is lost.
        old = {m.uuid: (m.gi_id, m.gi_slices, m.ci_slices) for m in gpu.mig if m.uuid in state.mig_slots}
        shares = mig_shares(old, gpu.mig_total_slices)
        if delta is not None:
            parts = split_uj(int(round(delta.energy_j * UJ_PER_J)), shares, unallocated)
            for uuid, part_uj in parts.items():
                state.pool_uj[uuid] = state.pool_uj.get(uuid, 0) + part_uj
        else:
            parts = {}
        out: list[GpuDeviceReading] = []
        for m in gpu.mig:
            counter = EnergyCounter(COMPONENT, m.uuid, source, state.pool_uj.setdefault(m.uuid, 0))
            pool_delta = _part(delta, parts.get(m.uuid)) if m.uuid in state.mig_slots else None
            out.append(_device(counter, m.activity, pool_delta, parent=gpu.uuid, share=shares.get(m.uuid, 0.0)))
        state.mig_slots = frozenset(m.uuid for m in gpu.mig)
        counter = EnergyCounter(COMPONENT, unallocated, source, state.pool_uj.setdefault(unallocated, 0))
        nobody = GpuActivity({}, True, None)
        rest = max(0.0, 1.0 - math.fsum(shares.values()))
        out.append(_device(counter, nobody, _part(delta, parts.get(unallocated)), parent=gpu.uuid, share=rest))
        return out


def _part(parent: CounterDelta | None, part_uj: int | None) -> CounterDelta | None:
    """One MIG pool's piece of the parent's delta (same interval, reset and suspect flags)."""
    if parent is None or part_uj is None:
        return None
    return CounterDelta(part_uj / UJ_PER_J, parent.interval_s, parent.wrapped, parent.reset, parent.suspect,
                        parent.restored)


def _device(counter: EnergyCounter, activity: GpuActivity, delta: CounterDelta | None,
            parent: str = "", share: float = 1.0) -> GpuDeviceReading:
    interval_s = None if delta is None else delta.interval_s
    return GpuDeviceReading(
        counter=counter, processes=gpu_processes(activity, interval_s), util_available=activity.util is not None,
        interval_s=interval_s, parent=parent, processes_seen=activity.processes_listed,
        energy_j=0.0 if delta is None else delta.energy_j, reset=delta is not None and delta.reset,
        unobserved=delta is not None and delta.restored, share=share,
    )


# -- step 2: activity per process ---------------------------------------------------------------


def gpu_processes(activity: GpuActivity, interval_s: float | None) -> tuple[GpuProcess, ...]:
    """Each pid's SM-busy seconds in the interval (None without utilisation or interval) and memory."""
    util = activity.util
    measured = util is not None and interval_s is not None
    busy: dict[int, float] = {}
    if util is not None and interval_s:
        busy = sm_busy_seconds([(s.pid, s.timestamp_us, s.sm_percent) for s in util],
                               activity.util_since_us, interval_s)
    memory = activity.memory_by_pid
    pids = set(memory) | {s.pid for s in util or ()}
    return tuple(GpuProcess(pid, busy.get(pid, 0.0) if measured else None, memory.get(pid),
                            holds_context=pid in memory) for pid in sorted(pids))


def sm_busy_seconds(
    samples: list[tuple[int, int, int]], prev_seen_us: int, interval_s: float
) -> dict[int, float]:
    """SM-busy seconds per pid in one interval from NVML utilisation samples.

    ``samples`` are (pid, timestamp_us, smUtil %) newer than ``prev_seen_us``
    (the newest timestamp of the previous read, 0 if none). Each sample is
    weighted by the time it covers: the gap to the same pid's previous sample,
    capped at the sampling period (the median gap between consecutive samples
    of one pid, over all pids), because a long gap is time in which the
    driver had nothing to report for that pid: idle. A pid's first sample in
    the read covers one period. Gaps are taken per pid, never across pids,
    so samples of different processes taken a few milliseconds apart do not
    shorten each other's spans. With no pid having two samples (nothing to
    measure a period with), a sample covers the time since ``prev_seen_us``
    (the whole interval on a first read). Spans and totals are capped at the
    interval.

    Why not "mean smUtil x interval": a pid with one sample in the interval
    (it started or stopped near a tick, or ran one short burst) would be
    charged as if it had run the whole interval; see docs/gpu.md.
    """
    if not samples:
        return {}
    by_pid: dict[int, list[tuple[int, int]]] = {}
    for pid, ts, pct in samples:
        by_pid.setdefault(pid, []).append((ts, pct))
    for series in by_pid.values():
        series.sort()
    gaps = [b[0] - a[0] for series in by_pid.values() for a, b in zip(series, series[1:]) if b[0] > a[0]]
    period_us = statistics.median(gaps) if gaps else None
    return {pid: _busy_s(series, period_us, prev_seen_us, interval_s) for pid, series in by_pid.items()}


def _busy_s(series: list[tuple[int, int]], period_us: float | None, prev_seen_us: int, interval_s: float) -> float:
    """One pid's busy seconds: each sample's utilisation x the span it covers (see sm_busy_seconds)."""
    interval_us = interval_s * US_PER_S
    total_us = 0.0
    previous: int | None = None
    for ts, pct in series:
        if previous is not None:
            span = min(ts - previous, period_us) if period_us is not None else 0.0
        elif period_us is not None:
            span = period_us
        elif 0 < prev_seen_us < ts:
            span = ts - prev_seen_us
        else:
            span = interval_us
        total_us += pct / 100.0 * min(max(span, 0.0), interval_us)
        previous = ts
    return min(total_us / US_PER_S, interval_s)


# -- step 3: cost drivers per job ----------------------------------------------------------------


def _finite_nonneg(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) and x > 0 else 0.0


def _memory_known(holding: Iterable[GpuProcess]) -> bool:
    return all(p.used_memory_bytes is not None and p.used_memory_bytes > 0 for p in holding)


def measure_for(reading: GpuDeviceReading) -> Measure:
    """The one rule for which activity measure splits a GPU pool's dynamic energy (module docstring)."""
    if reading.util_available and any(_finite_nonneg(p.sm_busy_s) for p in reading.processes):
        return Measure.SM
    holding = [p for p in reading.processes if p.holds_context]
    if not holding:
        return Measure.NONE
    return Measure.MEMORY if _memory_known(holding) else Measure.EQUAL


def gpu_drivers(
    reading: GpuDeviceReading, jobs_by_pid: Mapping[int, JobKey], allocated: Collection[JobKey] = ()
) -> tuple[dict[JobKey, float], dict[JobKey, float]]:
    """(driver_s per job, holders weight per job) for one GPU pool reading.

    ``allocated``: jobs the scheduler gave this GPU (``allocated_gpus``); they hold it
    (occupancy policy) even without a context on it: see ``_holders``."""
    jobs = {p.pid: jobs_by_pid.get(p.pid, untagged("")) for p in reading.processes}
    holding = [p for p in reading.processes if p.holds_context]
    interval_s = reading.interval_s if reading.interval_s and reading.interval_s > 0 else 1.0
    if measure_for(reading) is Measure.SM:
        driver_s: dict[JobKey, float] = {}
        for p in reading.processes:
            busy = _finite_nonneg(p.sm_busy_s)
            if busy:
                _add(driver_s, jobs[p.pid], busy)
    else:
        driver_s = _shares(holding, jobs, interval_s)
    return driver_s, _holders(holding, jobs, allocated)


def _holders(holding: list[GpuProcess], jobs: Mapping[int, JobKey], allocated: Collection[JobKey]) -> dict[JobKey, float]:
    """Who holds the pool, for the occupancy policy: the jobs with a context (weighted by memory, or
    equally), and the jobs the scheduler allocated it to. Without allocations: the context holders'
    shares of 1. With them, every holding job counts as one (context holders keep their memory
    ratio among themselves) and an allocated job without a context is one more."""
    holders = {jobs[p.pid] for p in holding}
    extra = [job for job in allocated if job not in holders]
    if not extra:
        return _shares(holding, jobs, 1.0)
    out = _shares(holding, jobs, float(len(holders)))
    for job in sorted(extra):
        out[job] = 1.0
    return out


def allocated_gpus(gpus: Sequence[GpuReading], slurm: Mapping[JobKey, SlurmJob]) -> dict[str, frozenset[JobKey]]:
    """Pool device -> the jobs Slurm allocated it to, from each job's GPU ids (``SlurmJob.gpus``).

    An id is a GPU's NVML index (Slurm's node-global GPU id: gres.conf's order, which AutoDetect=nvml
    takes from NVML) or a UUID (``GPU-...``, ``MIG-...`` in CUDA_VISIBLE_DEVICES). A whole GPU in MIG
    mode is all of its pools (every instance and its unallocated slices); a MIG UUID is that instance.
    """
    pools_of: dict[str, tuple[str, ...]] = {}
    for g in gpus:
        whole = (g.uuid,) if not g.mig_enabled else tuple(m.uuid for m in g.mig) + (g.uuid + UNALLOCATED_SUFFIX,)
        pools_of[g.uuid] = whole
        if g.index is not None:
            pools_of[str(g.index)] = whole
        for m in g.mig:
            pools_of[m.uuid] = (m.uuid,)
    out: dict[str, set[JobKey]] = {}
    for job, info in slurm.items():
        for gpu_id in info.gpus:
            for pool in pools_of.get(gpu_id, ()):
                out.setdefault(pool, set()).add(job)
    return {pool: frozenset(jobs) for pool, jobs in out.items()}


def sm_busy_total(reading: GpuDeviceReading) -> float:
    """The pool's SM-busy seconds in the interval, all processes together (0.0 without utilisation)."""
    return math.fsum(_finite_nonneg(p.sm_busy_s) for p in reading.processes)


def unexplained_job(reading: GpuDeviceReading) -> JobKey:
    """Who gets the pool's dynamic energy when no job has a driver (see the module docstring)."""
    return IDLE_JOB if reading.processes_seen else SYSTEM_JOB


def gpu_activity_fraction(reading: GpuDeviceReading) -> float | None:
    """How busy the pool was (0..1) for idle learning: 0 with nobody on it, SM-busy share with
    utilisation, else unknown. A GPU whose contexts are held but idle (a notebook kernel left
    open) counts as idle, so it still teaches the baseline."""
    if not reading.processes:
        return 0.0
    if reading.util_available and reading.interval_s:
        return sm_busy_total(reading) / reading.interval_s
    return None


def _add(into: dict[JobKey, float], job: JobKey, value: float) -> None:
    into[job] = into.get(job, 0.0) + value


def _shares(holding: list[GpuProcess], jobs: Mapping[int, JobKey], total: float) -> dict[JobKey, float]:
    """total split by used memory when every holder's memory is known and > 0, else equally."""
    out: dict[JobKey, float] = {}
    if not holding:
        return out
    if _memory_known(holding):
        mem_total = math.fsum(float(p.used_memory_bytes or 0) for p in holding)
        for p in holding:
            _add(out, jobs[p.pid], total * float(p.used_memory_bytes or 0) / mem_total)
    else:
        for p in holding:
            _add(out, jobs[p.pid], total / len(holding))
    return out

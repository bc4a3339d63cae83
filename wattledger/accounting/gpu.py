"""Cost drivers of one GPU pool for one interval. Pure: no I/O, no clock.

``attribution.attribute`` splits a pool given each job's driver (seconds) and
the jobs holding the device. For a GPU pool this module turns the processes
NVML saw into those two mappings:

* driver (dynamic energy): SM-busy seconds per job, the best measure of who
  kept the GPU busy. When per-process utilisation is not available (MIG,
  some boards) or no process was busy, the fallback is GPU memory held
  (memory share x interval), then equal shares among the processes holding a
  context (interval / n each). Every fallback keeps the unit "seconds of the
  GPU", so ``wl_job.driver_s`` stays comparable across pools.
* holders (static energy, ``occupancy`` policy, the GPU default): jobs that
  hold a context now, weighted by used memory when every holder's memory is
  known, else equally. A GPU that nobody holds sends its static energy to
  ``_idle`` (``attribute`` does that when holders is empty).
* who gets dynamic energy no job explains (``unexplained_job``): ``_idle``
  when NVML listed the GPU's processes and none ran (a GPU nobody uses is
  idle, whatever its power; before an idle baseline is known all of its
  energy counts as dynamic), ``_system`` when NVML would not list them.

NVML reports host pids; ``job_of_pid`` maps them to jobs (the procs
collector's ``ProcCollector.job_of_pid``), so two processes of one job add up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from wattledger.model.jobs import IDLE_JOB, SYSTEM_JOB, JobKey
from wattledger.collectors.nvml import DRIVER_SM, GpuDeviceReading, GpuProcess


def _add(into: dict[JobKey, float], job: JobKey, value: float) -> None:
    into[job] = into.get(job, 0.0) + value


def _finite_nonneg(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) and x > 0 else 0.0


def gpu_drivers(
    reading: GpuDeviceReading, job_of_pid: Callable[[int], JobKey]
) -> tuple[dict[JobKey, float], dict[JobKey, float]]:
    """(driver_s per job, holders weight per job) for one GPU pool reading."""
    procs = reading.processes
    holding = [p for p in procs if p.holds_context]
    jobs = {p.pid: job_of_pid(p.pid) for p in procs}
    interval_s = reading.interval_s if reading.interval_s and reading.interval_s > 0 else 1.0

    driver_s: dict[JobKey, float] = {}
    if reading.driver == DRIVER_SM:
        for p in procs:
            busy = _finite_nonneg(p.sm_busy_s)
            if busy:
                _add(driver_s, jobs[p.pid], busy)
    if not driver_s:
        driver_s = _shares(holding, jobs, interval_s)

    holders = _shares(holding, jobs, 1.0)
    return driver_s, holders


def sm_busy_total(reading: GpuDeviceReading) -> float:
    """The pool's SM-busy seconds in the interval, all processes together (0.0 without utilisation)."""
    return math.fsum(_finite_nonneg(p.sm_busy_s) for p in reading.processes)


def unexplained_job(reading: GpuDeviceReading) -> JobKey:
    """Who gets the pool's dynamic energy when no job has a driver (see the module docstring)."""
    return IDLE_JOB if reading.processes_seen else SYSTEM_JOB


def _shares(holding: list[GpuProcess], jobs: dict[int, JobKey], total: float) -> dict[JobKey, float]:
    """total split by used memory when every holder's memory is known and > 0, else equally."""
    if not holding:
        return {}
    mems = [p.used_memory_bytes for p in holding]
    out: dict[JobKey, float] = {}
    if all(m is not None and m > 0 for m in mems):
        mem_total = math.fsum(float(m) for m in mems if m is not None)
        for p in holding:
            _add(out, jobs[p.pid], total * float(p.used_memory_bytes or 0) / mem_total)
    else:
        for p in holding:
            _add(out, jobs[p.pid], total / len(holding))
    return out


def effective_driver(reading: GpuDeviceReading) -> str:
    """Which measure ``gpu_drivers`` used for the dynamic split (for logs and the trace report)."""
    if reading.driver == DRIVER_SM and any(_finite_nonneg(p.sm_busy_s) for p in reading.processes):
        return "sm"
    holding = [p for p in reading.processes if p.holds_context]
    if not holding:
        return "none"
    if all(p.used_memory_bytes is not None and p.used_memory_bytes > 0 for p in holding):
        return "memory"
    return "equal"

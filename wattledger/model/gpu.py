"""GPU readings: what the NVML reader returns (raw) and what accounting makes of it (per pool).

Raw, from ``collectors.nvml`` (one ``GpuSample`` per read, stamped with the
monotonic ``read_ns``):

* ``GpuReading``: one physical GPU (by UUID): its cumulative energy counter
  in mJ (``energy_mj``), or, on boards without one, its power now
  (``power_w``); the activity of the GPU, or of each MIG instance.
* ``GpuActivity``: who holds a context (pid -> used memory) and the per-pid
  SM-utilisation samples the driver returned since ``util_since_us`` (None
  when utilisation is not available on this pool).

Per pool, from ``accounting.gpu`` (what attribution needs):

* ``GpuDeviceReading``: one pool (a GPU, a MIG instance, or a MIG GPU's
  unallocated slices) with its cumulative counter, its interval and each
  process's SM-busy seconds (``GpuProcess``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from wattledger.model.readings import EnergyCounter, ProbeResult

COMPONENT = "gpu"
SOURCE = "nvml"                     # the driver's energy counter
SOURCE_POWER = "nvml-power"         # power integrated by us: less accurate, flagged
SOURCE_MIG = "nvml-mig"             # a MIG instance's slice share of the counter
SOURCE_MIG_POWER = "nvml-power-mig"  # ... of the integrated power
UNALLOCATED_SUFFIX = "/unallocated"


class Measure(str, enum.Enum):
    """Which GPU activity measure splits a pool's dynamic energy (docs/gpu.md)."""

    SM = "sm"          # per-process SM-busy seconds
    MEMORY = "memory"  # used GPU memory held
    EQUAL = "equal"    # equal shares among the processes holding a context
    NONE = "none"      # nobody held the GPU


# -- raw readings (collectors.nvml) ------------------------------------------------


@dataclass(frozen=True)
class UtilSample:
    pid: int
    timestamp_us: int  # the driver's own timestamp
    sm_percent: int    # 0..100


@dataclass(frozen=True)
class GpuActivity:
    """Who used one pool: contexts now, and the utilisation samples since ``util_since_us``.

    ``processes_listed`` is False when NVML would not list the processes (both
    lists NOT_SUPPORTED or NO_PERMISSION): an empty ``memory_by_pid`` then
    means "unknown", not "idle". ``util`` is None when per-process
    utilisation is not available here (MIG, some boards).
    """

    memory_by_pid: Mapping[int, int | None]  # pid -> used GPU memory in bytes (None: not reported)
    processes_listed: bool
    util: tuple[UtilSample, ...] | None
    util_since_us: int = 0  # the newest sample timestamp of the previous good read (0: none)


@dataclass(frozen=True)
class MigReading:
    uuid: str
    gi_id: int
    gi_slices: int
    ci_slices: int
    activity: GpuActivity


@dataclass(frozen=True)
class GpuReading:
    """One physical GPU as read: exactly one of energy_mj / power_w is set."""

    uuid: str
    energy_mj: int | None
    power_w: float | None
    activity: GpuActivity | None  # None on a MIG GPU (each instance has its own)
    mig: tuple[MigReading, ...] = ()
    mig_total_slices: int = 0  # the GPU's slice count (MIG mode only)
    index: int | None = None  # NVML's device index (what Slurm's GPU ids name; None: not known)

    @property
    def mig_enabled(self) -> bool:
        return self.activity is None


@dataclass(frozen=True)
class GpuSample:
    read_ns: int  # monotonic
    gpus: tuple[GpuReading, ...]
    failures: tuple[ProbeResult, ...] = ()  # one per GPU that failed this read (devices=(uuid,))


# -- per pool (accounting.gpu) --------------------------------------------------------


@dataclass(frozen=True)
class GpuProcess:
    """One host process on one GPU pool during the interval.

    ``sm_busy_s``: the interval's SM-busy seconds of the pid (its samples
    weighted by the time each covers, accounting.gpu.sm_busy_seconds); 0.0
    when utilisation is available and the pid had no samples (idle); None
    when utilisation is not available at all (MIG, unsupported board).
    ``holds_context``: the pid is in a running-process list now (a pid only
    seen in utilisation samples has already exited but was busy this interval).
    """

    pid: int
    sm_busy_s: float | None
    used_memory_bytes: int | None
    holds_context: bool = True


@dataclass(frozen=True)
class GpuDeviceReading:
    """One GPU pool for one interval, ready for attribution.

    ``util_available``: per-process SM utilisation was read for this pool.
    ``energy_j`` and ``interval_s`` are the counter's delta since the pool's
    previous good read (``interval_s`` None on a baseline read, when nothing
    is charged). ``processes_seen`` is False when NVML would not list the
    processes: empty ``processes`` then means "unknown", not "idle".
    """

    counter: EnergyCounter
    processes: tuple[GpuProcess, ...]
    util_available: bool
    interval_s: float | None = None
    parent: str = ""  # MIG pools: the physical GPU's UUID
    processes_seen: bool = True
    energy_j: float = 0.0
    reset: bool = False  # the counter went down since the previous read (driver reload)
    unobserved: bool = False  # the interval is a restart's gap: no process was watched (energy to _unobserved)
    share: float = 1.0  # the fraction of the physical GPU this pool stands for (MIG: its slices of this read)

    @property
    def device(self) -> str:
        return self.counter.device


@dataclass(frozen=True)
class GpuPoolSample:
    """Every GPU pool of one read, after accounting; failures as the reader reported them."""

    read_ns: int
    devices: tuple[GpuDeviceReading, ...]
    failures: tuple[ProbeResult, ...] = field(default_factory=tuple)

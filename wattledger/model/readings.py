"""What a source offers (``ProbeResult``) and what it read (``EnergyCounter``, ``EnergySample``).

Every reading is stamped with ``read_ns``: the agent's *monotonic* clock at
the read (``time.monotonic_ns``), never the wall clock, so an NTP step or a
manual clock change cannot make an interval negative or huge. Points are
stamped with the wall clock by the loop, separately.

Energy collectors return cumulative counters in micro-joules
(``counter_uj``) plus the value at which a counter wraps;
``accounting.counters`` turns them into interval deltas.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SourceState(str, enum.Enum):
    """What a probe found. Anything but FOUND is a reported state, never a zero."""

    FOUND = "found"
    MISSING = "missing"                  # hardware or interface not present
    PERMISSION_DENIED = "permission denied"
    NOT_SUPPORTED = "not supported"      # present, but cannot give what we need
    ERROR = "error"                      # present, failed in an unexpected way


class Problem(str, enum.Enum):
    """Why a source (or one device of it) cannot be read: the failure states worth a name.

    ``SourceState`` says how bad it is; ``Problem`` says what it is, so that
    code decides on the kind (probe again? a baseline after it?) without
    reading message text.
    """

    LIBRARY_MISSING = "library missing"
    DRIVER_NOT_LOADED = "driver not loaded"
    NO_PERMISSION = "no permission"
    NOT_SUPPORTED = "not supported"
    GPU_LOST = "GPU lost"
    NO_GPU = "no GPU"
    ERROR = "error"


@dataclass(frozen=True)
class ProbeResult:
    """What a source offers on this host, or why it does not."""

    source: str                          # e.g. "rapl", "nvml", "procfs", "estimate"
    state: SourceState
    detail: str                          # what was found / what failed
    fix: str = ""                        # what an admin can do about it
    devices: tuple[str, ...] = ()        # devices the source measures, when found (or the one that failed)
    problem: Problem | None = None       # the named kind of failure, when the source names one

    @property
    def ok(self) -> bool:
        return self.state is SourceState.FOUND


@dataclass(frozen=True)
class EnergyCounter:
    """One cumulative energy counter as read from hardware (or a model).

    ``counter_uj`` is the raw cumulative value in micro-joules; it may wrap at
    ``wrap_uj`` (RAPL: ``max_energy_range_uj`` + 1) or reset to a smaller value
    (NVML after a driver reload). ``wrap_uj`` is None when the counter does not
    wrap in practice (64-bit).
    """

    component: str                       # cpu | dram | gpu | psys | ...
    device: str                          # package-0, GPU UUID, ...
    source: str                          # rapl | nvml | model | fake
    counter_uj: int
    wrap_uj: int | None = None
    # Static (idle) power of this device when the source knows it (a model
    # does; hardware counters do not). None means "learn or configure".
    idle_power_w: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.component, self.device)


@dataclass(frozen=True)
class EnergySample:
    """Everything one energy collector read at one instant (``read_ns``: monotonic)."""

    read_ns: int
    counters: tuple[EnergyCounter, ...]
    # Devices that were expected but failed this read, with the reason.
    failures: tuple[ProbeResult, ...] = ()

"""The collector protocol and the value types every collector returns.

A collector has a ``name``, a ``probe()`` that says what is there (and, when it
is not, why and what to do), and a ``read(now_ns)`` that returns cumulative
readings. Energy collectors return cumulative counters in micro-joules
(``counter_uj``) plus the value at which the counter wraps; ``agent.counters``
turns them into interval deltas. Activity collectors (processes, GPU
processes) return the activity of the interval per job, because identifying
a process across ticks (pid reuse, exits, reaped children) needs per-pid state
that only the collector has.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class SourceState(str, enum.Enum):
    """What a probe found. Anything but FOUND is a reported state, never a zero."""

    FOUND = "found"
    MISSING = "missing"                  # hardware or interface not present
    PERMISSION_DENIED = "permission denied"
    NOT_SUPPORTED = "not supported"      # present, but cannot give what we need
    ERROR = "error"                      # present, failed in an unexpected way


@dataclass(frozen=True)
class ProbeResult:
    """What a source offers on this host, or why it does not."""

    source: str                          # e.g. "rapl", "nvml", "procfs", "estimate"
    state: SourceState
    detail: str                          # what was found / what failed
    fix: str = ""                        # what an admin can do about it
    devices: tuple[str, ...] = ()        # devices the source measures, when found

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
    """Everything one energy collector read at one instant."""

    now_ns: int
    counters: tuple[EnergyCounter, ...]
    # Devices that were expected but failed this read, with the reason.
    failures: tuple[ProbeResult, ...] = ()


@runtime_checkable
class Collector(Protocol):
    name: str

    def probe(self) -> ProbeResult: ...

    def read(self, now_ns: int) -> object: ...


@dataclass(frozen=True)
class ReadError(Exception):
    """A read that failed in a way the loop should report (once) and carry on."""

    result: ProbeResult

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"{self.result.source}: {self.result.state.value}: {self.result.detail}"


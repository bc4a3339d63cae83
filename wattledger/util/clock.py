"""The two clocks the agent reads: monotonic for intervals, wall for timestamps.

Every interval (a counter's delta, a tick's length, a GPU's gap) is measured
on the monotonic clock, which never jumps; the wall clock only stamps points
(and so the ledger and InfluxDB), so an NTP step or a manual clock change
moves timestamps but never makes an interval negative or huge.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def wall_ns(self) -> int:
        """Nanoseconds since the epoch (for timestamps)."""
        ...

    def mono_ns(self) -> int:
        """Nanoseconds on a clock that only moves forward (for intervals)."""
        ...


class SystemClock:
    def wall_ns(self) -> int:
        return time.time_ns()

    def mono_ns(self) -> int:
        return time.monotonic_ns()


SYSTEM_CLOCK = SystemClock()

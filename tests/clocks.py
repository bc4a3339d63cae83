"""A clock for tests: the wall and monotonic clocks from one scripted source.

``now`` is called once per tick (by ``wall_ns``, which the loop reads first);
``mono_ns`` returns the same instant. ``wall_offset_ns`` moves the wall clock
alone, as an NTP step or an admin's ``date -s`` would.
"""

from __future__ import annotations

from collections.abc import Callable


class FakeClock:
    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now
        self._last: int | None = None
        self.wall_offset_ns = 0

    def wall_ns(self) -> int:
        self._last = self._now()
        return self._last + self.wall_offset_ns

    def mono_ns(self) -> int:
        return self._now() if self._last is None else self._last

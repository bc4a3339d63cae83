"""Report each distinct problem once, and again only after it cleared.

A problem that repeats every tick (an unreachable server, an unwritable
file, a GPU that stopped answering) is logged when it starts, then stays
quiet while it lasts (optionally at DEBUG), and its end is logged when it
clears; if it comes back, it is logged again. Problems are told apart by a
hashable key (a string, or a tuple such as ``("read", "rapl")``).

    once = LogOnce(log)
    once.problem(("read", name), f"{name}: read failed: {e}")       # WARNING by default
    once.cleared(("read", name), f"{name}: reading again")           # INFO, only if it was active
    once.problem("rejected", "... set aside; later ones are only counted")  # never cleared: once ever

Messages may use %-style ``args`` (logged lazily, as ``logging`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable


class LogOnce:
    """The set of problems currently reported, and the logger they go to."""

    def __init__(self, logger: logging.Logger, *, repeat_level: int | None = None) -> None:
        """``repeat_level``: log repeats of an active problem at this level (e.g. DEBUG); None: not at all."""
        self.logger = logger
        self.repeat_level = repeat_level
        self._active: set[Hashable] = set()

    def problem(self, key: Hashable, message: str, level: int = logging.WARNING, *args: object) -> bool:
        """Log ``message`` if ``key`` is not already reported; True when it was logged now."""
        if key in self._active:
            if self.repeat_level is not None:
                self.logger.log(self.repeat_level, message, *args)
            return False
        self._active.add(key)
        self.logger.log(level, message, *args)
        return True

    def cleared(self, key: Hashable, message: str = "", *args: object, level: int = logging.INFO) -> bool:
        """Forget ``key``; log ``message`` (when given) if it was reported. True when it was active."""
        if key not in self._active:
            return False
        self._active.discard(key)
        if message:
            self.logger.log(level, message, *args)
        return True

    def cleared_where(self, match: Callable[[Hashable], bool], message: str = "", *args: object,
                      level: int = logging.INFO) -> bool:
        """Forget every active key ``match`` accepts; log ``message`` once if there was any."""
        stale = [k for k in self._active if match(k)]
        if not stale:
            return False
        self._active.difference_update(stale)
        if message:
            self.logger.log(level, message, *args)
        return True

    def clear_all(self, message: str = "", *args: object, level: int = logging.INFO) -> bool:
        """Forget every problem (e.g. after a success); log ``message`` if any was active."""
        return self.cleared_where(lambda _k: True, message, *args, level=level)

    def active(self, key: Hashable | None = None) -> bool:
        """Is ``key`` reported now (or, without a key, is any problem)?"""
        return bool(self._active) if key is None else key in self._active

    @property
    def keys(self) -> Iterable[Hashable]:
        return frozenset(self._active)

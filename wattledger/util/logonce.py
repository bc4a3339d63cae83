"""Log each problem once: one line when it starts, one when it clears, nothing in between.

A keyed problem (``("read", "rapl")``, ``("fail", uuid, "GPU lost")``) is logged
the first time it is reported and then only counted until ``cleared`` says
it went away; a problem that comes back after that is logged again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable


class LogOnce:
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.active: set[Hashable] = set()

    def problem(self, key: Hashable, message: str, level: int = logging.WARNING) -> bool:
        """Log ``message`` unless ``key`` is already active; True when it was logged."""
        if key in self.active:
            return False
        self.active.add(key)
        self.logger.log(level, message)
        return True

    def cleared(self, key: Hashable, message: str = "", level: int = logging.INFO) -> bool:
        """The problem went away: log ``message`` (if any) once; True when it was active."""
        if key not in self.active:
            return False
        self.active.discard(key)
        if message:
            self.logger.log(level, message)
        return True

    def cleared_where(self, match: Callable[[Hashable], bool], message: str = "",
                      level: int = logging.INFO) -> bool:
        """Clear every active key that ``match`` accepts; log ``message`` once if any was."""
        stale = {k for k in self.active if match(k)}
        if not stale:
            return False
        self.active -= stale
        if message:
            self.logger.log(level, message)
        return True

"""Retry timing, in one place: exponential backoff with jitter, and the server's Retry-After.

Used by the deliverer (``agent.delivery``: spooled points to InfluxDB), the
intensity APIs' client (``carbon.http``) and the sinks' answer classifier
(``agent.sinks.base``). Pure arithmetic over an injected clock and random
source, so tests drive it without sleeping.

- ``backoff_s(failures, base_s, max_s)``: "equal jitter": the cap doubles
  with each consecutive failure (``base_s``, ``2 * base_s``, ... up to
  ``max_s``) and the wait is uniform in [cap/2, cap), so many clients spread
  out but none retries at once.
- ``parse_retry_after(value)``: RFC 9110 Retry-After, either delta-seconds or
  an HTTP date, as seconds from now; capped, because a bogus
  ``Retry-After: 86400`` must not silence delivery for a day.
- ``Backoff``: the consecutive-failure count and the time of the next
  attempt, for a caller that is polled (the deliverer's ``step``).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable

# The longest server-requested wait honoured by default (15 min).
MAX_RETRY_AFTER_S = 900.0


def backoff_s(failures: int, base_s: float, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``failures`` consecutive failures (>= 1): equal jitter under a doubling cap."""
    cap_s = min(max_s, base_s * 2 ** min(max(failures, 1) - 1, 30))
    return cap_s * (0.5 + 0.5 * rng())


def parse_retry_after(value: str | None, now_s: float | None = None,
                      cap_s: float = MAX_RETRY_AFTER_S) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), in [0, cap_s].

    None when there is no header or it cannot be read (then the caller's own
    backoff applies). ``now_s`` is the wall clock for HTTP dates (default: now).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap_s)


class Backoff:
    """When the next attempt is due, after how many consecutive failures.

    ``failed(retry_after_s)`` schedules the next attempt (never sooner than
    the server asked); ``succeeded()`` clears it; ``due()`` says whether an
    attempt may be made now; ``allow_now()`` drops the wait (e.g. a last try
    at shutdown) without forgetting the failure count.
    """

    def __init__(self, base_s: float = 1.0, max_s: float = 300.0, *,
                 clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] = random.random) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._clock = clock
        self._rng = rng
        self.failures = 0
        self.next_at = float("-inf")

    def failed(self, retry_after_s: float | None = None) -> float:
        """Count a failure and schedule the next attempt; returns the wait in seconds."""
        self.failures += 1
        delay_s = backoff_s(self.failures, self.base_s, self.max_s, self._rng)
        if retry_after_s is not None:
            delay_s = max(delay_s, retry_after_s)
        self.next_at = self._clock() + delay_s
        return delay_s

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = float("-inf")

    def allow_now(self) -> None:
        self.next_at = float("-inf")

    def due(self) -> bool:
        return self._clock() >= self.next_at

    @property
    def wait_s(self) -> float:
        """Seconds until the next attempt is due (0 when it is due)."""
        return max(0.0, self.next_at - self._clock())

"""Time at the edges: the WHEN forms users type, and the ISO-8601 forms APIs speak.

Everything inside is integer nanoseconds since the epoch, UTC. A time written
without a zone is taken as UTC, so the same command gives the same answer on
every host whatever its local zone.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from wattledger.model.units import HOUR_NS, NS_PER_S

__all__ = ["HOUR_NS", "NS_PER_S", "BadTime", "hour_floor", "iso", "parse_iso_ns", "parse_when"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadTime(ValueError):
    pass


def parse_iso_ns(text: str) -> int:
    """ISO-8601 (``2024-03-05``, ``2024-03-05T10:00Z``, ``...+01:00``, ``.000Z``) to ns, UTC if no zone."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise BadTime(f"not an ISO-8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    # Exact integer arithmetic: a float timestamp loses nanoseconds.
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


def parse_when(text: str, now_ns: int) -> int:
    """``now``, a relative age (``30m``, ``2h``, ``7d``, ``1w``: that long before now) or ISO-8601."""
    s = text.strip()
    if s.lower() == "now":
        return now_ns
    m = _RELATIVE.match(s)
    if m:
        return now_ns - int(float(m.group(1)) * _UNIT_S[m.group(2).lower()] * NS_PER_S)
    try:
        return parse_iso_ns(s)
    except BadTime:
        raise BadTime(
            f"cannot read time {text!r}: use ISO-8601 (2024-03-05, 2024-03-05T10:00Z) "
            "or an age such as 30m, 2h, 7d, 1w"
        ) from None


def iso(time_ns: int, *, minutes: bool = False) -> str:
    """UTC ISO-8601 with a Z; ``minutes`` gives the ``YYYY-MM-DDTHH:MMZ`` form some APIs want."""
    dt = datetime.fromtimestamp(time_ns // NS_PER_S, tz=timezone.utc)
    if minutes:
        return dt.strftime("%Y-%m-%dT%H:%MZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def hour_floor(time_ns: int) -> int:
    return time_ns - time_ns % HOUR_NS
